"""The Ray Tune and Optuna forms of one declaration: types, bounds, sampling, grid expansion."""

import itertools
import json
import textwrap

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search import sample
from ray.tune.search.variant_generator import generate_variants

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.space import (
    OptunaSpace,
    grid_search_space,
    load_space,
    parse_space,
    read_space,
    suggest,
)
from tune_batchdyn.space.optuna_form import grid_points
from tune_batchdyn.space.params import describe_trials
from tune_batchdyn.train import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

MIXED = """
[search]
num_samples = 2
[fixed]
dataset = "digits"
model = "mlp"
lr_milestones = [0.5, 0.75]
[params]
batch_size = { grid = [8, 16, 32, 64, 128, 256, 512] }
strategy = { grid = ["fixed", { name = "gg", max_batch = 1024 }] }
lr = { loguniform = [0.001, 1.0] }
momentum = { uniform = [0.5, 0.99] }
epochs = { randint = [2, 4] }
hessian_samples = { lograndint = [16, 256] }
model = { choice = ["mlp", "cnn"] }
"""
GG = {"name": "gg", "max_batch": 1024}


@pytest.fixture
def mixed(tmp_path):
    text = textwrap.dedent(MIXED).replace('model = "mlp"\n', "")
    path = tmp_path / "mixed.toml"
    path.write_text(text)
    return path


def test_ray_form_has_constants_grids_and_domains(mixed):
    space = load_space(mixed, backend="ray")
    assert space["dataset"] == "digits"
    assert space["lr_milestones"] == [0.5, 0.75]
    assert space["batch_size"] == {"grid_search": [8, 16, 32, 64, 128, 256, 512]}
    assert space["strategy"] == {"grid_search": ["fixed", GG]}
    lr, momentum, epochs, samples, model = (space[k] for k in
                                            ("lr", "momentum", "epochs", "hessian_samples",
                                             "model"))
    assert isinstance(lr, sample.Float) and isinstance(lr.get_sampler(), sample.LogUniform)
    assert (lr.lower, lr.upper) == (0.001, 1.0)
    assert isinstance(momentum, sample.Float) and isinstance(momentum.get_sampler(),
                                                             sample.Uniform)
    assert (momentum.lower, momentum.upper) == (0.5, 0.99)
    # Ray's randint excludes its upper bound; the TOML's [2, 4] includes 4.
    assert isinstance(epochs, sample.Integer) and (epochs.lower, epochs.upper) == (2, 5)
    assert isinstance(samples.get_sampler(), sample.LogUniform)
    assert (samples.lower, samples.upper) == (16, 257)
    assert isinstance(model, sample.Categorical) and model.categories == ["mlp", "cnn"]


def test_ray_integer_ranges_reach_both_declared_bounds(mixed):
    epochs = load_space(mixed)["epochs"]
    drawn = set(np.asarray(epochs.sample(size=300, random_state=np.random.RandomState(0))))
    assert drawn == {2, 3, 4}


def test_ray_variants_expand_the_grid_and_build_trial_configs(mixed):
    param_space = load_space(mixed, backend="ray")
    variants = [config for _, config in generate_variants(param_space)]
    assert len(variants) == 7 * 2 == read_space(mixed).grid_size
    assert read_space(mixed).num_trials == 7 * 2 * 2
    pairs = {(v["batch_size"], json.dumps(v["strategy"])) for v in variants}
    assert pairs == set(itertools.product([8, 16, 32, 64, 128, 256, 512],
                                          ['"fixed"', json.dumps(GG)]))
    for config in variants:
        assert 0.001 <= config["lr"] <= 1.0 and 0.5 <= config["momentum"] <= 0.99
        assert config["epochs"] in (2, 3, 4) and 16 <= config["hessian_samples"] <= 256
        TrialConfig.from_dict(config)


def test_ray_form_hands_out_copies(mixed):
    space = read_space(mixed)
    first = space.to_ray()
    first["lr_milestones"].append(0.9)
    first["strategy"]["grid_search"][1]["max_batch"] = 1
    assert space.to_ray()["lr_milestones"] == [0.5, 0.75]
    assert space.to_ray()["strategy"]["grid_search"][1] == GG


def test_optuna_form_has_distribution_classes_bounds_and_constants(mixed):
    space = load_space(mixed, backend="optuna")
    assert isinstance(space, OptunaSpace)
    assert space.constants == {"dataset": "digits", "lr_milestones": [0.5, 0.75]}
    dists = space.distributions
    assert dists["batch_size"] == CategoricalDistribution([8, 16, 32, 64, 128, 256, 512])
    assert dists["strategy"] == CategoricalDistribution(["fixed", json.dumps(GG, sort_keys=True)])
    assert dists["lr"] == FloatDistribution(0.001, 1.0, log=True)
    assert dists["momentum"] == FloatDistribution(0.5, 0.99)
    assert dists["epochs"] == IntDistribution(2, 4)
    assert dists["hessian_samples"] == IntDistribution(16, 256, log=True)
    assert dists["model"] == CategoricalDistribution(["mlp", "cnn"])


def test_suggest_on_real_trials_stays_inside_the_declared_space(mixed):
    space = read_space(mixed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        config = suggest(trial, space)
        assert config["dataset"] == "digits" and config["lr_milestones"] == [0.5, 0.75]
        assert config["batch_size"] in (8, 16, 32, 64, 128, 256, 512)
        assert config["strategy"] in ("fixed", GG)
        assert 0.001 <= config["lr"] <= 1.0 and 0.5 <= config["momentum"] <= 0.99
        assert config["epochs"] in (2, 3, 4) and isinstance(config["epochs"], int)
        assert 16 <= config["hessian_samples"] <= 256
        assert config["model"] in ("mlp", "cnn")
        TrialConfig.from_dict(config)
        seen.add(json.dumps(config["strategy"]))
        study.tell(trial, 0.0)
    assert seen == {'"fixed"', json.dumps(GG)}  # the table choice comes back decoded


def test_ask_with_fixed_distributions_and_config_round_trip(mixed):
    space = load_space(mixed, backend="optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask(dict(space.distributions))
        config = space.config(trial.params)
        assert set(config) == set(space.constants) | set(space.distributions)
        assert config["strategy"] in ("fixed", GG)
        study.tell(trial, 0.0)


def test_grid_sampler_enumerates_exactly_the_product(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent("""
        [fixed]
        dataset = "digits"
        [params]
        batch_size = { grid = [8, 16, 32, 64, 128, 256, 512] }
        lr = { grid = [0.025, 0.05, 0.1, 0.2, 0.4] }
        strategy = { choice = ["fixed", { name = "gg", max_batch = 1024 }] }
        """))
    space = load_space(path, backend="optuna")
    grid = grid_search_space(space)
    assert grid["batch_size"] == [8, 16, 32, 64, 128, 256, 512]
    assert grid["lr"] == [0.025, 0.05, 0.1, 0.2, 0.4]
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    configs = []

    def objective(trial):
        configs.append(suggest(trial, space))
        return 0.0

    study.optimize(objective)  # GridSampler stops the study once the grid is exhausted
    keys = [(c["batch_size"], c["lr"], json.dumps(c["strategy"])) for c in configs]
    assert len(keys) == 7 * 5 * 2 == len(set(keys))
    assert set(keys) == set(itertools.product([8, 16, 32, 64, 128, 256, 512],
                                              [0.025, 0.05, 0.1, 0.2, 0.4],
                                              ['"fixed"', json.dumps(GG)]))


def test_grid_search_space_refuses_ranges(mixed):
    with pytest.raises(ConfigError, match=r"mixed.toml: \[params\] epochs, hessian_samples, lr, "
                                          r"momentum are ranges; GridSampler needs"):
        grid_search_space(read_space(mixed))


def test_string_choice_equal_to_a_tables_json_text_is_refused():
    # data_dir is a field TrialConfig does not check, so both values pass the load-time check
    space = parse_space({"params": {"data_dir": {"grid": [{"a": 1}, '{"a": 1}']}}})
    assert space.to_ray()["data_dir"] == {"grid_search": [{"a": 1}, '{"a": 1}']}
    with pytest.raises(ConfigError, match=r"<space>: \[params\] data_dir: the string "
                                          r"value\(s\) \['\{\"a\": 1\}'\]"):
        space.to_optuna()


def test_optuna_grid_points_cross_only_the_grid_fields(mixed):
    """``grid`` is every value on both backends, ``choice`` and ranges sampled per trial: the
    points Optuna enqueues hold the grid fields only (before, a range anywhere meant no points
    and a choice field was crossed like a grid)."""
    space = load_space(mixed, backend="optuna")
    assert space.grid_fields == ("batch_size", "strategy")
    points = grid_points(space)
    assert len(points) == 7 * 2 == read_space(mixed).grid_size
    assert {tuple(point) for point in points} == {("batch_size", "strategy")}
    decoded = {(space.config(p)["batch_size"], json.dumps(space.config(p)["strategy"]))
               for p in points}
    assert decoded == set(itertools.product([8, 16, 32, 64, 128, 256, 512],
                                            ['"fixed"', json.dumps(GG)]))
    assert grid_points(parse_space({"params": {"lr": {"choice": [0.1, 0.2]}}})) == [{}]


@pytest.mark.parametrize("params", [
    {"batch_size": {"grid": [32, 64, 128, 256]}, "lr": {"loguniform": [0.05, 0.2]}},
    {"lr": {"choice": [0.05, 0.1, 0.2]}},
    {"batch_size": {"grid": [32, 128]}, "lr": {"grid": [0.1, 0.2]},
     "momentum": {"choice": [0.0, 0.9]}},
])
@pytest.mark.parametrize("num_samples", [1, 2])
def test_ray_and_the_optuna_sweep_run_the_same_grid_values(params, num_samples):
    """The review's spaces: per grid point, as many trials on Optuna's queue as Ray's
    variants (grid_size × num_samples), the other fields sampled on both."""
    from tune_batchdyn.cli._sweep_optuna import grid_queue

    space = parse_space({"search": {"num_samples": num_samples},
                         "fixed": {"dataset": "nqm", "model": "nqm"}, "params": params})
    grid = [key for key, p in params.items() if "grid" in p]
    ray_points = sorted(tuple(config[key] for key in grid)
                        for _ in range(num_samples)
                        for _, config in generate_variants(space.to_ray()))
    queue = grid_queue(space)
    optuna_points = sorted(tuple(point[key] for key in grid) for point, _, _ in queue)
    assert optuna_points == ray_points
    assert len(queue) == space.num_trials
    assert {key for point, _, _ in queue for key in point} == set(grid)
    assert len({key for _, key, _ in queue}) == len(queue)  # each repeat enqueued once


def test_the_sweep_header_says_what_runs(mixed):
    space = read_space(mixed)
    assert describe_trials(space.params, space.search.num_samples) == (
        "28 trials: 14 grid configurations × 2 samples; sampled per trial: lr, momentum, "
        "epochs, hessian_samples, model")
    choice = parse_space({"params": {"lr": {"choice": [0.05, 0.1, 0.2]}}})
    assert describe_trials(choice.params, 1) == (
        "1 trial: 1 grid configuration × 1 sample; sampled per trial: lr")
    assert describe_trials(space.params, 1, held={"batch_size": 64, "lr": 0.1}) == (
        "2 trials: 2 grid configurations × 1 sample; sampled per trial: momentum, epochs, "
        "hessian_samples, model")
    grid_only = parse_space({"params": {"lr": {"grid": [0.05, 0.1]}}, "search": {"num_samples": 3}})
    assert describe_trials(grid_only.params, 3) == (
        "6 trials: 2 grid configurations × 3 samples; nothing is sampled, so each sample repeats "
        "its grid configuration, seed included (a seed grid repeats with other seeds)")
