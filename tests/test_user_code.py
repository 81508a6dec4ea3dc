"""A user's own model and dataset, named "module:function": trials, sweeps' checks, errors."""

import logging
import math
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from tune_batchdyn.cli import main
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.train import TrialConfig, run_trial

USER_MODULE = '''
import numpy as np
import torch
from torch import nn


class Scale(nn.Module):
    """A module that owns a parameter and has no per-sample rule in per_sample_gram."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.weight


def make_net(input_shape, num_classes):
    n = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 16), Scale(16), nn.ReLU(),
                         nn.Linear(16, num_classes))


def make_linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


def blobs(data_seed, n=300, dim=6, classes=3, **extra):
    rng = np.random.default_rng(data_seed)
    centres = rng.normal(size=(classes, dim)) * 2.0
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim))
    out = {"train_x": x[:200], "train_y": y[:200], "val_x": x[200:250], "val_y": y[200:250],
           "test_x": x[250:], "test_y": y[250:]}
    out.update(extra)
    return out


def images(data_seed):
    generator = torch.Generator().manual_seed(data_seed)
    x = torch.randn(120, 1, 8, 8, generator=generator)
    y = torch.arange(120) % 4
    return {"train_x": x[:80], "train_y": y[:80], "val_x": x[80:100], "val_y": y[80:100],
            "test_x": x[100:], "test_y": y[100:], "num_classes": 5, "augmentation": "crop"}


def tokens(data_seed):
    rng = np.random.default_rng(data_seed)
    y = rng.integers(0, 2, size=160)
    x = rng.integers(0, 10, size=(160, 6)) + 10 * y[:, None]  # class 1 uses ids 10..19
    return {"train_x": x[:100], "train_y": y[:100], "val_x": x[100:130], "val_y": y[100:130],
            "test_x": x[130:], "test_y": y[130:]}


class MeanEmbedding(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.out = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.out(self.embed(x).mean(dim=1))


def make_bag(input_shape, num_classes):
    return MeanEmbedding(num_classes)


def pixels(data_seed):
    rng = np.random.default_rng(data_seed)
    x = rng.integers(0, 256, size=(60, 1, 4, 4), dtype=np.uint8)
    y = np.arange(60) % 3
    return {"train_x": x[:40], "train_y": y[:40], "val_x": x[40:50], "val_y": y[40:50],
            "test_x": x[50:], "test_y": y[50:], "num_classes": np.int64(3)}


def two_logits(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 2))


def expects_100(input_shape, num_classes):
    return nn.Sequential(nn.Linear(100, num_classes))


class Pair(nn.Module):
    def __init__(self, n, k):
        super().__init__()
        self.linear = nn.Linear(n, k)

    def forward(self, x):
        return self.linear(x), x


def pair(input_shape, num_classes):
    return Pair(int(np.prod(input_shape)), num_classes)


class AuxWhileTraining(Pair):
    def forward(self, x):
        logits = self.linear(x)
        return (logits, logits.detach()) if self.training else logits


def aux_while_training(input_shape, num_classes):
    return AuxWhileTraining(int(np.prod(input_shape)), num_classes)


def frozen(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes)
                         ).requires_grad_(False)


class Noisy(nn.Module):
    def __init__(self, n, k):
        super().__init__()
        self.linear = nn.Linear(n, k)

    def forward(self, x):
        return self.linear(x + 0.01 * torch.randn_like(x))


def noisy(input_shape, num_classes):
    return Noisy(int(np.prod(input_shape)), num_classes)


class TiedModules(nn.Module):
    def __init__(self, n, k):
        super().__init__()
        self.enc = nn.Linear(n, n, bias=False)
        self.dec = nn.Linear(n, n, bias=False)
        self.dec.weight = self.enc.weight
        self.head = nn.Linear(n, k)

    def forward(self, x):
        return self.head(self.dec(torch.tanh(self.enc(x))))


def tied_modules(input_shape, num_classes):
    return TiedModules(int(np.prod(input_shape)), num_classes)


LOADS = []


def counted_blobs(data_seed):
    LOADS.append(data_seed)
    return blobs(data_seed)


def no_labels(data_seed):
    return {"train_x": np.zeros((4, 2)), "val_x": np.zeros((4, 2)), "test_x": np.zeros((4, 2))}


def not_a_mapping(data_seed):
    return [1, 2, 3]


def no_module(input_shape, num_classes):
    return "a string"


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``usermod`` importable from a temporary folder, forgotten afterwards."""
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "usermod"
    sys.modules.pop("usermod", None)


def quick(**fields):
    defaults = dict(dataset="usermod:blobs", model="usermod:make_linear", epochs=2,
                    batch_size=32, lr=0.1, measure_every=2, measures=("fisher", "quality"))
    return TrialConfig(**{**defaults, **fields})


def test_user_model_and_dataset_train_and_report_every_measure(user_module, caplog):
    config = quick(model="usermod:make_net", measures=("fisher", "quality", "hessian"))
    with caplog.at_level(logging.INFO, logger="tune_batchdyn"):
        trajectory = run_trial(config)
    assert len(trajectory) == 2
    last = trajectory.iloc[-1]
    assert last["val_error"] < 0.2  # well-separated blobs
    for column in ("ck_bar", "lk", "noise_scale", "quality_q", "hessian_top"):
        assert math.isfinite(last[column]), column
    # the Scale module has no per-sample rule: torch.func computes it, and the trial says so
    assert "2 (Scale)" in caplog.text and "torch.func" in caplog.text


def test_user_dataset_options_reach_the_function(user_module):
    trajectory = run_trial(quick(dataset_options={"n": 400, "classes": 5}, epochs=1))
    assert math.isfinite(trajectory.iloc[-1]["val_error"])
    from tune_batchdyn.train.data import load_data

    data = load_data("usermod:blobs", options={"n": 400, "classes": 5})
    assert data.n_train == 200 and data.num_classes == 5 and data.input_shape == (6,)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    # used as given: no normalisation
    expected = np.asarray(__import__("usermod").blobs(0, n=400, classes=5)["train_x"])
    assert torch.allclose(data.train_x, torch.as_tensor(expected, dtype=torch.float32))


def test_user_images_with_augmentation_and_num_classes(user_module):
    trajectory = run_trial(quick(dataset="usermod:images", model="usermod:make_linear"))
    assert len(trajectory) == 2
    from tune_batchdyn.train.data import load_data

    data = load_data("usermod:images")
    assert data.num_classes == 5 and data.augmentation == "crop"


def test_integer_inputs_stay_token_ids_for_an_embedding_model(user_module):
    from tune_batchdyn.train.data import load_data

    data = load_data("usermod:tokens")
    assert data.train_x.dtype == torch.int64 and data.input_shape == (6,)
    trajectory = run_trial(quick(dataset="usermod:tokens", model="usermod:make_bag", epochs=3,
                                 batch_size=20))
    last = trajectory.iloc[-1]
    assert math.isfinite(last["ck_bar"]) and math.isfinite(last["lk"])
    assert last["val_error"] < 0.2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "nosuchmodule:f"}, "model='nosuchmodule:f': cannot import module "
                                      "'nosuchmodule'"),
        ({"model": "usermod:missing"}, "model='usermod:missing': module 'usermod' has no "
                                       "attribute 'missing'"),
        ({"model": "usermod:NOT_CALLABLE"}, "names an int, not a function"),
        ({"model": ":f"}, "an import path has the form 'package.module:function'"),
        ({"model": "usermod:no_labels"}, "model='usermod:no_labels' cannot be called as "
                                         "function(input_shape, num_classes)"),
        ({"dataset": "usermod:make_net"}, "dataset='usermod:make_net' cannot be called as "
                                          "function(data_seed, **dataset_options)"),
        ({"dataset_options": {"n": 10, "colour": "red"}}, None),  # **extra takes it
        ({"dataset": "usermod:images", "dataset_options": {"n": 10}},
         "got an unexpected keyword argument 'n'"),
        ({"model": "resnet7"}, "or your own as 'package.module:function'"),
    ],
)
def test_bad_import_paths_fail_at_construction(user_module, fields, message):
    if message is None:
        quick(**fields)  # accepted
        return
    with pytest.raises(ConfigError) as info:
        quick(**fields)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "usermod:no_module"}, "model='usermod:no_module' returned a str, not a "
                                         "torch.nn.Module"),
        ({"dataset": "usermod:not_a_mapping"}, "returned a list; return a mapping with keys "
                                               "train_x"),
        ({"dataset": "usermod:no_labels"}, "returned no train_y, val_y, test_y"),
        ({"dataset_options": {"num_classes": 2}}, "num_classes=2; use an integer above the "
                                                  "largest label (2)"),
        ({"dataset_options": {"augmentation": "flip"}}, "augmentation='flip' is not accepted; "
                                                        "use one of: 'none', 'crop'"),
        ({"dataset_options": {"augmentation": "crop"}}, "augmentation='crop' needs images "
                                                        "[N, C, H, W]"),
        ({"dataset_options": {"train_y": [0] * 7}}, "train_x has shape (200, 6) and train_y "
                                                    "(7,)"),
        ({"dataset_options": {"val_y": [0.5] * 50}}, "val_y must hold integer class labels"),
        ({"dataset_options": {"val_y": ["cat"] * 50}}, "val_y holds <U3 values; accepted: an "
                                                       "array or tensor of numbers"),
        ({"dataset_options": {"test_x": [[0, 0, 0]] * 50}}, "different input shapes"),
        ({"dataset_options": {"val_x": [[float("nan")] * 6] * 50}}, "val_x holds NaN or "
                                                                     "infinite values"),
    ],
)
def test_bad_user_data_or_model_fail_at_trial_start_naming_the_problem(user_module, fields,
                                                                       message):
    # the extra keys go through blobs' **extra into its returned mapping
    options = fields.pop("dataset_options", {})
    config = quick(**fields)
    config = config.replace(dataset_options=options) if options else config
    with pytest.raises(ConfigError) as info:
        run_trial(config)
    assert message in str(info.value)


def test_command_line_imports_from_its_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "cwdmod.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    try:
        status = main(["train", "--dataset", "cwdmod:blobs", "--model", "cwdmod:make_linear",
                       "--epochs", "1", "--batch-size", "32"])
    finally:
        sys.modules.pop("cwdmod", None)
    assert status == 0
    assert "training cwdmod:blobs/cwdmod:make_linear" in capsys.readouterr().out
    # processes started from here (local Ray workers) find it too
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/somewhere/else"]


def space_naming(folder, model: str):
    """A space file whose [fixed] table names the user's dataset and ``model``."""
    path = folder / "space.toml"
    path.write_text(textwrap.dedent(f"""
        [search]
        metric = "val_error"
        mode = "min"

        [fixed]
        dataset = "usermod:blobs"
        model = "{model}"

        [params]
        lr = {{ grid = [0.05, 0.1] }}
    """))
    return path


def test_user_code_in_a_search_space_is_checked_before_any_trial(user_module, tmp_path):
    from tune_batchdyn.space import load_space

    space_file = space_naming(tmp_path, "usermod:make_nett")
    with pytest.raises(ConfigError) as info:
        load_space(str(space_file), backend="optuna")
    assert "module 'usermod' has no attribute 'make_nett'" in str(info.value)
    assert str(space_file) in str(info.value)


def test_uint8_pixels_become_floats_and_numpy_num_classes_is_accepted(user_module):
    from tune_batchdyn.train.data import load_data

    data = load_data("usermod:pixels")
    assert data.train_x.dtype == torch.float32 and data.num_classes == 3
    assert float(data.train_x.max()) > 1.0  # used as given: no scaling


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("usermod:two_logits", "returned a torch.float32 tensor of shape (2, 2) for 2 inputs "
                               "in eval mode; expected class logits, a float tensor of shape "
                               "[2, 3]"),
        ("usermod:expects_100", "failed in eval mode on inputs of shape (2, 6) "
                                "(torch.float32): RuntimeError: mat1 and mat2 shapes cannot be "
                                "multiplied"),
        ("usermod:pair", "returned a tuple for 2 inputs in eval mode"),
        ("usermod:aux_while_training", "returned a tuple for 2 inputs in training mode"),
        ("usermod:frozen", "model='usermod:frozen' has no trainable parameters"),
    ],
)
def test_a_model_returning_the_wrong_thing_fails_in_one_line_at_trial_start(user_module, model,
                                                                             message):
    with pytest.raises(ConfigError) as info:
        run_trial(quick(model=model))
    assert message in str(info.value)


def test_sweeps_and_objectives_probe_user_code_before_any_trial(user_module, tmp_path, capsys):
    from tune_batchdyn.cli._checks import check_user_code
    from tune_batchdyn.optuna import make_objective
    from tune_batchdyn.space import read_space

    space_file = space_naming(tmp_path, "usermod:two_logits")
    space = read_space(str(space_file))  # the names import: accepted at reading
    space.check_trials({})  # the names import and take the contract's arguments
    with pytest.raises(ConfigError, match="space.toml: model='usermod:two_logits' returned a "
                                          "torch.float32 tensor of shape \\(2, 2\\)"):
        check_user_code(space, {})  # what sweep and record run before the first trial
    check_user_code(space, {"model": "usermod:make_linear"})
    assert capsys.readouterr().out == ""
    # the trials' log lines stay in their workers: the fallback is said here, once
    check_user_code(space, {"model": "usermod:make_net"})
    assert capsys.readouterr().out == (
        "note: model='usermod:make_net': no per-sample rule for 2 (Scale); torch.func "
        "computes their share of C̄K/LK (slower)\n")
    assert space.user_code_configs({"model": "mlp", "dataset": "digits"}) == []
    with pytest.raises(ConfigError, match="returned no train_y"):
        make_objective({"lr": [0.1]}, dataset="usermod:no_labels", model="usermod:make_net")
    with pytest.raises(ConfigError, match="model='usermod:mpl': module 'usermod' has no "
                                          "attribute 'mpl'"):
        make_objective({"lr": [0.1]}, dataset="usermod:blobs", model="usermod:mpl")


def test_ray_trainables_refuse_functions_of_the_running_script(user_module):
    from tune_batchdyn.tune import make_trainable

    sys.modules["__main__"].make_test_net = __import__("usermod").make_net
    try:
        with pytest.raises(ConfigError, match="Ray's workers do not import the running script"):
            make_trainable(dataset="usermod:blobs", model="__main__:make_test_net")
    finally:
        del sys.modules["__main__"].make_test_net
    with pytest.raises(ConfigError, match="returned a torch.float32 tensor of shape \\(2, 2\\)"):
        make_trainable(dataset="usermod:blobs", model="usermod:two_logits")


def test_import_failures_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "raising_mod.py").write_text("raise RuntimeError('no config file')\n")
    (tmp_path / "broken_mod.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path, message in [
        ("raising_mod:f", "importing module 'raising_mod' raised RuntimeError: no config file"),
        ("broken_mod:f", "importing module 'broken_mod' raised SyntaxError"),
        ("./mymodels.py:f", "names a file; name the module instead"),
    ]:
        with pytest.raises(ConfigError) as info:
            TrialConfig(model=path)
        assert message in str(info.value)


def test_resuming_a_checkpoint_of_a_changed_model_is_refused(tmp_path, monkeypatch):
    module = tmp_path / "changing.py"
    module.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = TrialConfig(dataset="changing:blobs", model="changing:make_net", epochs=2,
                         measures=("quality",), checkpoint_dir=str(tmp_path / "ck"))
    try:
        run_trial(config.replace(epochs=1))
        module.write_text(USER_MODULE.replace("nn.Linear(n, 16)", "nn.Linear(n, 24)")
                          .replace("Scale(16)", "Scale(24)").replace("nn.Linear(16,",
                                                                     "nn.Linear(24,"))
        sys.modules.pop("changing")
        with pytest.raises(ConfigError, match="holds the weights of another model than "
                                              "model='changing:make_net' builds now") as info:
            run_trial(config.replace(epochs=1))
        assert str(info.value).endswith(" … Use a new checkpoint_dir.")  # cut between words
    finally:
        sys.modules.pop("changing", None)


def test_a_weight_used_outside_its_module_is_refused_at_the_first_measurement(user_module,
                                                                              tmp_path,
                                                                              monkeypatch):
    (tmp_path / "tiedmod.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Tied(nn.Module):
            def __init__(self, n, k):
                super().__init__()
                self.enc = nn.Linear(n, 8, bias=False)
                self.head = nn.Linear(n, k)

            def forward(self, x):
                return self.head(torch.tanh(self.enc(x)) @ self.enc.weight)

        def make(input_shape, num_classes):
            return Tied(input_shape[0], num_classes)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match="module 'enc' \\(Linear\\) add up to"):
            run_trial(quick(model="tiedmod:make"))
        assert len(run_trial(quick(model="tiedmod:make", measures=("quality",)))) == 2
    finally:
        sys.modules.pop("tiedmod", None)


def test_the_probe_leaves_random_generators_and_modes_as_they_were(user_module):
    from tune_batchdyn.train.models import build_model, probe_model

    model, inputs = build_model("usermod:noisy", (6,), 3), torch.randn(2, 6)
    state = torch.get_rng_state()
    probe_model("usermod:noisy", model, inputs, 3)  # its forward draws noise
    assert torch.equal(torch.get_rng_state(), state) and model.training


def test_tied_modules_are_refused_before_any_trial_unless_fisher_is_off(user_module, tmp_path):
    from tune_batchdyn.train.engine import check_user_code

    config = quick(model="usermod:tied_modules")
    with pytest.raises(ConfigError, match="tied weights.*in a trial: measures without 'fisher'"):
        check_user_code(config)
    assert check_user_code(config.replace(measures=("quality",))) == []
    assert check_user_code(config.replace(model="usermod:make_net")) == ["2 (Scale)"]
    assert len(run_trial(config.replace(measures=("quality",)))) == 2


def test_dataset_options_reach_the_function_as_given(user_module):
    from tune_batchdyn.train.data import load_data

    data = load_data("usermod:blobs", options={"n": np.int64(300), "classes": 3})
    assert data.n_train == 200  # np.int64 arrives as a number, not as the string "300"


def test_inputs_mixing_token_ids_and_numbers_are_refused(user_module):
    with pytest.raises(ConfigError, match="the inputs mix token ids and numbers \\(train_x "
                                          "torch.int64, val_x torch.float64"):
        run_trial(quick(dataset_options={"train_x": [[1] * 6] * 200}))


def test_make_objective_loads_user_data_once_or_not_at_all_when_told(user_module):
    from tune_batchdyn.optuna import make_objective

    loads = __import__("usermod").LOADS
    make_objective({"lr": [0.1]}, dataset="usermod:counted_blobs", model="usermod:make_net")
    assert len(loads) == 1
    # the sweep command checked every combination of its space already
    make_objective({"lr": [0.1]}, dataset="usermod:counted_blobs", model="usermod:make_net",
                   check_code=False)
    assert len(loads) == 1
