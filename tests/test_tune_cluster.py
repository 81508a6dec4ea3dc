"""The same run on a two-node Ray cluster (head + one worker node on this machine, started
with ``ray.cluster_utils.Cluster``, as ``ray start --head`` / ``ray start --address`` would):
the driver joins by address, trials land on both nodes, results go to one shared
storage_path. Slow (a cluster starts in ~15-30 s); tests/test_tune_ray.py covers the same
code path on one node."""

import json
import sys

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
from ray import cloudpickle, tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tune_batchdyn.predict.synthetic import synthetic_records  # noqa: E402
from tune_batchdyn.tune import (  # noqa: E402
    DecisionsCallback,
    DynamicSamplingSearcher,
    MeasureScheduler,
    make_replay_trainable,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_a_two_node_cluster_runs_the_sweep_on_both_nodes(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        records = synthetic_records(n_configs=6, n_seeds=2, epochs=6, seed=1)
        first = records.groupby("trial_id").first()
        grid = [{"lr": float(r["config/lr"]), "batch_size": int(r["config/batch_size"]),
                 "seed": int(r["config/seed"]), "epochs": 6} for _, r in first.iterrows()]
        replay = make_replay_trainable(records)
        nodes = tmp_path / "nodes.jsonl"

        def located(config):
            with open(nodes, "a") as handle:
                handle.write(json.dumps(ray.get_runtime_context().get_node_id()) + "\n")
            replay(config)

        searcher = DynamicSamplingSearcher(grid, max_planned=0)
        scheduler = MeasureScheduler(history=searcher.history, reroute=False)
        lines = []
        tune.run(located, metric="val_error", mode="min", search_alg=searcher,
                 scheduler=scheduler, num_samples=-1, resources_per_trial={"cpu": 1},
                 storage_path=str(tmp_path / "shared"), name="cluster", verbose=0,
                 callbacks=[DecisionsCallback(scheduler, echo=lines.append)])
        used = set(pd.read_json(nodes, lines=True)[0])
        assert used == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert (tmp_path / "shared" / "cluster" / "decisions.csv").exists()
        assert lines[-1].startswith("decisions: stopped=")
    finally:
        ray.shutdown()
        cluster.shutdown()
