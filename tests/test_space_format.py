"""The TOML declaration: tables, distribution forms, TrialConfig checks, [search], errors."""

import subprocess
import sys
import textwrap

import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.space import Param, SearchSettings, files, load_space, read_space

GOOD = """
[search]
metric = "val_error"
mode = "min"
[fixed]
dataset = "digits"
model = "mlp"
epochs = 20
[params]
batch_size = { grid = [8, 16, 32, 64, 128, 256, 512] }
lr = { grid = [0.025, 0.05, 0.1, 0.2, 0.4] }
"""


def write(tmp_path, text, name="space.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def failure(tmp_path, text, name="bad_space.toml"):
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        read_space(path)
    return str(info.value)


def test_example_of_the_brief_reads_into_params_constants_and_settings(tmp_path):
    space = read_space(write(tmp_path, GOOD))
    assert space.constants == {"dataset": "digits", "model": "mlp", "epochs": 20}
    assert space.params["batch_size"] == Param("grid", (8, 16, 32, 64, 128, 256, 512))
    assert space.params["lr"] == Param("grid", (0.025, 0.05, 0.1, 0.2, 0.4))
    assert space.grid_size == 7 * 5
    assert space.num_trials == 35
    assert space.search == SearchSettings(metric="val_error", mode="min", num_samples=1,
                                          beacons=(8, 16, 32, 64, 128, 256, 512))
    assert space.path == tmp_path / "space.toml"


def test_every_range_form_reads_with_its_bounds(tmp_path):
    space = read_space(write(tmp_path, """
        [params]
        lr = { loguniform = [0.001, 1] }
        momentum = { uniform = [0, 0.95] }
        epochs = { randint = [5, 20] }
        batch_size = { lograndint = [8, 512] }
        model = { choice = ["mlp", "cnn"] }
        """))
    assert space.params["lr"] == Param("loguniform", (0.001, 1.0))
    assert isinstance(space.params["lr"].values[1], float)
    assert space.params["momentum"] == Param("uniform", (0.0, 0.95))
    assert space.params["epochs"] == Param("randint", (5, 20))
    assert space.params["batch_size"] == Param("lograndint", (8, 512))
    assert space.params["model"] == Param("choice", ("mlp", "cnn"))
    assert space.grid_size == 1  # no grid: one sampled configuration per repeat


def test_search_settings_defaults_and_explicit_values(tmp_path):
    space = read_space(write(tmp_path, """
        [fixed]
        lr = 0.2
        batch_size = 64
        """))
    assert space.params == {}
    assert space.search == SearchSettings(beacon_lr=0.2)  # beacon lr defaults to the fixed lr
    space = read_space(write(tmp_path, """
        [search]
        metric = "test_error"
        mode = "max"
        num_samples = 3
        budget = 400
        beacons = [16, 512]
        beacon_lr = 0.1
        dynamic = ["s16-to-256", "s32-to-512-MS", "[32,64,64,128,256]", {name = "s32-to-128"}]
        [params]
        batch_size = { grid = [8, 16, 512] }
        """))
    assert space.search == SearchSettings(
        metric="test_error", mode="max", num_samples=3, budget=400, beacons=(16, 512),
        beacon_lr=0.1,
        dynamic=("s16-to-256", "s32-to-512-MS", "[32,64,64,128,256]", {"name": "s32-to-128"}))
    assert space.num_trials == 3 * 3


def test_shipped_name_resolves_to_its_file():
    space = read_space("digits_mlp")
    assert space.path.name == "digits_mlp.toml"
    assert read_space("digits_mlp.toml").path == space.path


@pytest.mark.parametrize(("key", "line", "problem"), [
    ("lr", "lr = { grid = [] }", "grid takes a non-empty list"),
    ("lr", "lr = { choice = 0.1 }", "choice takes a non-empty list"),
    ("lr", "lr = { grid = [0.1, 0.2, 0.1] }", "values must be distinct; repeated: 0.1"),
    ("lr", "lr = { loguniform = [0, 1] }", "loguniform needs low > 0"),
    ("lr", "lr = { loguniform = [0.1] }", "loguniform takes a list [low, high]"),
    ("lr", "lr = { uniform = [0.1, 0.2, 0.3] }", "uniform takes a list [low, high]"),
    ("lr", "lr = { uniform = [0.5, 0.5] }", "low=0.5 must be less than high=0.5"),
    ("lr", "lr = { uniform = [0.5, 0.1] }", "low=0.5 must be less than high=0.1"),
    ("lr", "lr = { uniform = [0.1, inf] }", "bounds must be finite numbers"),
    ("lr", 'lr = { uniform = ["a", 1] }', "bounds must be finite numbers"),
    ("epochs", "epochs = { randint = [1.5, 3] }", "randint bounds must be integers"),
    ("epochs", "epochs = { randint = [true, 3] }", "randint bounds must be integers"),
    ("batch_size", "batch_size = { lograndint = [0, 8] }", "lograndint needs low >= 1"),
    ("lr", "lr = { normal = [0.1, 0.01] }", "a table with one of the keys grid, choice"),
    ("lr", "lr = { grid = [0.1], choice = [0.2] }", "a table with one of the keys"),
    ("lr", "lr = 0.1", "fixed values go in [fixed]"),
])
def test_bad_distribution_form_names_file_key_and_accepted_forms(tmp_path, key, line, problem):
    message = failure(tmp_path, f"[params]\n{line}\n")
    assert "bad_space.toml" in message
    assert f"[params] {key} = " in message
    assert problem in message
    assert f"{key} = {{ grid = [v1, v2, ...] }}" in message  # the accepted forms
    assert f"{key} = {{ loguniform = [low, high] }} (0 < low < high)" in message


@pytest.mark.parametrize(("key", "line", "pair"), [
    ("lr", "lr = { grid = [1, 0.5, 1.0] }", "1 and 1.0"),
    ("strategy", 'strategy = { choice = ["gg", "fixed", { name = "gg" }] }',
     "'gg' and {'name': 'gg'}"),
    ("weight_decay", "weight_decay = { grid = [0, 0.0005, 0.0] }", "0 and 0.0"),
])
def test_listed_values_that_configure_the_same_trial_are_refused(tmp_path, key, line, pair):
    message = failure(tmp_path, f"[params]\n{line}\n")
    assert f"[params] {key} = " in message
    assert f"{pair} configure the same trial" in message
    assert f"list each {key} once" in message


@pytest.mark.parametrize("table", ["fixed", "params"])
def test_unknown_key_names_file_key_and_accepted_keys(tmp_path, table):
    value = '"x"' if table == "fixed" else '{ grid = ["x"] }'
    message = failure(tmp_path, f"[{table}]\nlearning_rate = {value}\n")
    assert "bad_space.toml" in message
    assert f"unknown [{table}] key(s) ['learning_rate']" in message
    assert "dataset, model, strategy, lr, batch_size, epochs" in message


def test_unknown_table_and_unknown_search_key(tmp_path):
    message = failure(tmp_path, "[hyperparams]\nlr = 0.1\n")
    assert "bad_space.toml" in message and "['hyperparams']" in message
    assert "[search], [fixed], [params]" in message
    message = failure(tmp_path, "[search]\nmetrics = 'val_error'\n")
    assert "bad_space.toml" in message and "unknown [search] key(s) ['metrics']" in message
    assert "'metric', 'mode', 'num_samples', 'budget', 'beacons'" in message


def test_field_in_both_tables_is_refused(tmp_path):
    message = failure(tmp_path, "[fixed]\nlr = 0.1\n[params]\nlr = { grid = [0.1, 0.2] }\n")
    assert "bad_space.toml" in message and "['lr'] are in both [fixed] and [params]" in message


@pytest.mark.parametrize(("text", "expected"), [
    ('[fixed]\nmodel = "vgg"\n', ["model='vgg' is not accepted; use one of: 'mlp'"]),
    ('[fixed]\ndataset = "nqm"\n', ["dataset='nqm' with model='mlp'"]),
    ("[fixed]\nmomentum = 1.5\n", ["momentum=1.5 is not accepted"]),
    ("[fixed]\nlr_milestones = [0.75, 0.5]\n", ["lr_milestones=(0.75, 0.5) must be increasing"]),
    ("[params]\nbatch_size = { grid = [8, 0, 32] }\n",
     ["[params] batch_size = 0: ", "batch_size=0 is not accepted; use an integer >= 1"]),
    ("[params]\nbatch_size = { randint = [0, 64] }\n", ["batch_size=0 is not accepted"]),
    ("[params]\nlr = { uniform = [0.1, 2e308] }\n", ["bounds must be finite"]),
    ('[params]\nmodel = { choice = ["mlp", "vgg"] }\n',
     ["[params] model = 'vgg': ", "model='vgg' is not accepted"]),
    ('[params]\nstrategy = { grid = ["fixed", "s32-to"] }\n',
     ["[params] strategy = 's32-to': ", "strategy='s32-to' is not accepted"]),
    ('[params]\nstrategy = { grid = [{ name = "gg", max_batch = -1 }] }\n',
     ["strategy 'gg': max_batch=-1 is not accepted"]),
    ("[fixed]\nmeasures = 3\n", ["measures", "TypeError"]),
])
def test_bad_value_fails_at_load_with_trial_configs_message(tmp_path, text, expected):
    message = failure(tmp_path, text)
    assert message.startswith(str(tmp_path / "bad_space.toml") + ": ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(("line", "expected"), [
    ('metric = "val_eror"', "[search] metric='val_eror' is not accepted; use one of: epoch"),
    ('mode = "median"', "[search] mode='median' is not accepted; use 'min' or 'max'"),
    ("num_samples = 0", "[search] num_samples=0 is not accepted"),
    ("budget = 2.5", "[search] budget=2.5 is not accepted"),
    ("beacons = [16, 16]", "[search] beacons=[16, 16] is not accepted"),
    ("beacons = [0]", "[search] beacons=[0] is not accepted"),
    ("beacon_lr = -1", "[search] beacon_lr=-1 is not accepted"),
    ('dynamic = ["abs"]', "[search] dynamic='abs' is not accepted; use a list of dynamic"),
    ('dynamic = "s32-to-512"', "[search] dynamic='s32-to-512' is not accepted"),
    ('dynamic = ["s32-to-512-XX"]', "[search] dynamic: strategy='s32-to-512-XX'"),
    ('dynamic = ["s32-to-512"]', "dynamic='s32-to-512' is not accepted; use schedules of at most "
                                 "4 stages: a stage lasts at least one epoch and the space has "
                                 "trials of 4 epochs"),
])
def test_bad_search_setting_names_file_and_key(tmp_path, line, expected):
    message = failure(tmp_path, f"[search]\n{line}\n[params]\nepochs = {{ grid = [6, 4] }}\n")
    assert "bad_space.toml" in message
    assert expected in message


@pytest.mark.parametrize(("line", "expected"), [
    ("beacons = [16, 48]", "[search] beacons=[16, 48] is not accepted; use batch sizes the "
                           "space runs: [8, 16, 32, 64, 128, 256, 512]"),
    ("beacon_lr = 0.3", "[search] beacon_lr=0.3 is not accepted; use one of the lrs the space "
                        "runs: [0.025, 0.05, 0.1, 0.2, 0.4]"),
])
def test_beacons_the_grid_never_runs_are_refused(tmp_path, line, expected):
    assert expected in failure(tmp_path, GOOD.replace('mode = "min"', f'mode = "min"\n{line}'))


def test_a_space_of_dynamic_schedules_names_beacons_run_elsewhere(tmp_path):
    text = GOOD.replace('mode = "min"', 'mode = "min"\nbeacons = [16, 48]\nbeacon_lr = 0.3')
    text = text.replace("[params]", '[params]\nstrategy = { grid = ["s16-to-256", "s32-to-512"] }')
    assert read_space(write(tmp_path, text)).search.beacons == (16, 48)


def test_toml_syntax_error_and_missing_file_name_the_file(tmp_path):
    message = failure(tmp_path, "[params]\nlr = { grid = [0.1, \n")
    assert "bad_space.toml: not valid TOML" in message
    with pytest.raises(ConfigError, match="'no_such_space' is not a file nor a shipped space; "
                                          "use a path to a .toml file or one of: .*digits_mlp"):
        read_space("no_such_space")


def test_missing_tomllib_says_python_311_is_needed(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.setattr(files, "tomllib", None)
    with pytest.raises(ConfigError, match=r"space.toml: reading a search-space file needs "
                                          r"Python 3.11 or newer"):
        read_space(path)


def test_unknown_backend_is_refused_before_reading(tmp_path):
    with pytest.raises(ConfigError, match=r"backend='tensorflow' is not accepted; use one of: "
                                          r"'ray', 'optuna'"):
        load_space(tmp_path / "not_even_there.toml", backend="tensorflow")


def test_importing_the_package_imports_neither_ray_nor_optuna():
    code = ("import sys, tune_batchdyn.space; "
            "print('ray' in sys.modules, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_reading_a_space_needs_neither_ray_nor_optuna(monkeypatch):
    for module in ("ray", "optuna"):
        monkeypatch.setitem(sys.modules, module, None)  # any import of it now fails
    space = read_space("digits_mlp")
    assert space.grid_size == 20
    with pytest.raises(ImportError):
        space.to_ray()


def test_a_grid_too_large_to_materialise_is_refused_with_its_size(tmp_path):
    """Every grid point is materialised (Ray's grid search, Optuna's queue): 10^7 would fill
    memory silently, so the file is refused at reading, naming the sizes."""
    hundred = ", ".join(str(i) for i in range(1, 101))
    message = failure(tmp_path, f"""
        [fixed]
        dataset = "digits"
        [params]
        batch_size = {{ grid = [{hundred}] }}
        epochs = {{ grid = [{hundred}] }}
        seed = {{ grid = [{hundred}] }}
        """)
    assert "the [params] grids make 1,000,000 configurations (batch_size 100 × epochs 100 × " \
           "seed 100); at most 100,000 are accepted" in message
