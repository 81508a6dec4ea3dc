"""Every shipped ``searchspaces/*.toml``: loads for both backends, with the seeds' grids."""

import itertools
import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from ray.tune.search.variant_generator import generate_variants

from tune_batchdyn.space import (
    SEARCHSPACES_DIR,
    grid_search_space,
    load_space,
    read_space,
    shipped_spaces,
    suggest,
)
from tune_batchdyn.space.files import resolve_space_path
from tune_batchdyn.strategies import parse_strategy
from tune_batchdyn.strategies.dynamic_sampling import DynamicSampling
from tune_batchdyn.train import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEED_BATCHES = [8, 16, 32, 64, 128, 256, 512]           # fisher-measures §4.1: 8..512
SEED_LRS = [0.025, 0.05, 0.1, 0.2, 0.4]                 # 0.025..0.4
RESNET_DYNAMIC = ["s16-to-256", "s16-to-256-MS", "s32-to-128", "s32-to-128-MS", "s32-to-512",
                  "s32-to-512-MS", "s128-to-512", "s128-to-512-MS", "s512-to-32"]
#: name -> configurations in the grid (the product of the grid lengths, counted by hand)
GRID_SIZES = {
    "abs_cifar100_resnet20": 5 * 5,
    "cifar100_resnet110": 7 * 5,
    "cifar10_densenet": 6 * 5,
    "cifar10_resnet110": 7 * 5,
    "cifar10_resnet110_dynamic": 9,
    "digits_mlp": 4 * 5,
    "digits_mlp_dynamic": 9,
    "digits_mlp_smoke": 2 * 2,
    "mnist_mlp": 11 * 8,
    "nqm": 7 * 3,
    "svhn_resnet110": 7 * 5,
    "synthetic_cnn": 7 * 9,
    "synthetic_mlp": 7 * 9,
    "synthetic_resnet20": 5 * 5,
}
NAMES = sorted(GRID_SIZES)


def test_the_shipped_files_are_the_listed_ones():
    assert sorted(shipped_spaces()) == NAMES
    assert all(p.parent == SEARCHSPACES_DIR for p in shipped_spaces().values())


def test_the_loader_finds_every_source_file_by_name():
    source = sorted((Path(__file__).resolve().parents[1] / "searchspaces").glob("*.toml"))
    assert [p.stem for p in source] == sorted(shipped_spaces())
    for path in source:
        assert resolve_space_path(path.stem).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_file_starts_with_its_source_and_cost(name):
    text = (SEARCHSPACES_DIR / f"{name}.toml").read_text()
    header = text.split("\n\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert "§" in header and "Cost" in header


@pytest.mark.parametrize("name", NAMES)
def test_ray_variants_count_the_grid_and_are_trial_configs(name):
    space = read_space(name)
    variants = [config for _, config in generate_variants(load_space(name, backend="ray"))]
    assert len(variants) == space.grid_size == GRID_SIZES[name]
    assert len({json.dumps(v, sort_keys=True) for v in variants}) == len(variants)
    for config in variants:
        TrialConfig.from_dict(config)


@pytest.mark.parametrize("name", NAMES)
def test_optuna_grid_sampler_visits_the_same_configurations(name):
    space = load_space(name, backend="optuna")
    assert all(isinstance(d, CategoricalDistribution) for d in space.distributions.values())
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid_search_space(space)))
    configs = []

    def objective(trial):
        configs.append(suggest(trial, space))
        return 0.0

    study.optimize(objective)
    ray_configs = [c for _, c in generate_variants(load_space(name, backend="ray"))]
    assert sorted(json.dumps(c, sort_keys=True) for c in configs) \
        == sorted(json.dumps(c, sort_keys=True) for c in ray_configs)


@pytest.mark.parametrize("name", ["cifar10_resnet110", "cifar100_resnet110", "svhn_resnet110"])
def test_resnet_grids_are_the_seeds(name):
    space = read_space(name)
    assert list(space.params["batch_size"].values) == SEED_BATCHES
    assert list(space.params["lr"].values) == SEED_LRS
    epochs = 40 if name.startswith("svhn") else 320
    assert space.constants["epochs"] == epochs
    assert space.constants["lr_milestones"] == [0.5, 0.75]
    assert space.constants["lr_decay_factor"] == 10 and space.constants["momentum"] == 0.9
    assert list(space.search.dynamic) == RESNET_DYNAMIC
    assert space.search.beacons == (16, 32, 64, 128, 256, 512) and space.search.beacon_lr == 0.1


def test_densenet_grid_drops_batch_512_as_the_seed_did():
    space = read_space("cifar10_densenet")
    assert list(space.params["batch_size"].values) == SEED_BATCHES[:-1]
    assert list(space.params["lr"].values) == SEED_LRS


def test_mnist_grid_is_powers_of_two():
    space = read_space("mnist_mlp")
    assert list(space.params["batch_size"].values) == [2 ** k for k in range(1, 12)]
    assert list(space.params["lr"].values) == pytest.approx([0.00625 * 2 ** k for k in range(8)])
    assert space.params["lr"].values[-1] == 0.8 and space.constants["epochs"] == 40


def test_synthetic_grids_are_the_seeds_batches_by_sqrt2_spaced_rates():
    for name in ("synthetic_cnn", "synthetic_mlp"):
        space = read_space(name)
        assert space.grid_size >= 60
        assert list(space.params["batch_size"].values) == SEED_BATCHES
        lrs = space.params["lr"].values
        assert lrs == pytest.approx([0.025 * 2 ** (k / 2) for k in range(9)], rel=5e-3)
        assert set(SEED_LRS) <= set(lrs)


def test_gpu_sweep_is_resnet20_on_32x32_synthetic_images():
    space = read_space("synthetic_resnet20")
    assert space.constants["model"] == "resnet20"
    assert space.constants["dataset_options"] == {"preset": "large"}
    assert list(space.params["batch_size"].values) == SEED_BATCHES[2:]
    assert list(space.params["lr"].values) == SEED_LRS


def test_cpu_demo_sizes():
    demo, smoke = read_space("digits_mlp"), read_space("digits_mlp_smoke")
    assert 12 <= demo.grid_size <= 20 and demo.constants["epochs"] == 20
    assert demo.constants["dataset"] == "digits"
    assert smoke.grid_size == 4 and smoke.constants["epochs"] == 3
    nqm = read_space("nqm")
    assert nqm.constants["dataset"] == nqm.constants["model"] == "nqm"


@pytest.mark.parametrize("name", ["cifar10_resnet110_dynamic", "digits_mlp_dynamic"])
def test_dynamic_files_grid_strategy_over_the_family(name):
    space = read_space(name)
    assert list(space.params["strategy"].values) == RESNET_DYNAMIC == list(space.search.dynamic)
    assert space.constants["lr"] == 0.1
    assert all(isinstance(parse_strategy(s), DynamicSampling) for s in RESNET_DYNAMIC)


def test_abs_comparison_grids_the_five_strategies_by_batch_size():
    space = read_space("abs_cifar100_resnet20")
    names = [s if isinstance(s, str) else s["name"] for s in space.params["strategy"].values]
    assert names == ["fixed", "fb", "gg", "abs", "absa"]
    assert list(space.params["batch_size"].values) == [128, 256, 512, 1024, 2048]
    assert space.constants["epochs"] == 160 and space.constants["lr"] == 0.1
    cells = {(json.dumps(c["strategy"], sort_keys=True), c["batch_size"])
             for _, c in generate_variants(load_space("abs_cifar100_resnet20"))}
    expected = itertools.product([json.dumps(s, sort_keys=True)
                                  for s in space.params["strategy"].values],
                                 [128, 256, 512, 1024, 2048])
    assert cells == set(expected)
