import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.train import TrialConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "imagenet", "dataset='imagenet' is not accepted; use one of: 'digits'"),
        ("model", "vgg", "model='vgg' is not accepted"),
        ("lr", -0.1, "lr=-0.1 is not accepted; use a finite number > 0"),
        ("lr", float("nan"), "lr=nan is not accepted"),
        ("batch_size", 0, "batch_size=0 is not accepted; use an integer >= 1"),
        ("batch_size", 32.5, "batch_size=32.5 is not accepted"),
        ("epochs", True, "epochs=True is not accepted"),
        ("momentum", 1.0, "momentum=1.0 is not accepted; use a number in [0.0, 1.0)"),
        ("weight_decay", -1e-4, "weight_decay=-0.0001 is not accepted"),
        ("lr_milestones", (0.75, 0.5), "must be increasing"),
        ("lr_milestones", (0.5, 1.5), "lr_milestones=1.5 is not accepted"),
        ("lr_milestones", "0.5", "lr_milestones='0.5' is not accepted; use a list of budget "
                                 "fractions in (0, 1), e.g. [0.5, 0.75]"),
        ("measures", ("fisher", "magic"), "measures='magic' is not accepted"),
        ("measures", "fisher", "measures='fisher' is not accepted; use a list of names"),
        ("device", "tpu", "device='tpu' is not accepted; use one of: 'auto', 'cpu', 'cuda'"),
        ("seed", -1, "seed=-1 is not accepted"),
        ("strategy", "s32-to", "strategy='s32-to' is not accepted"),
    ],
)
def test_bad_field_names_field_value_and_accepted(field, value, message):
    with pytest.raises(ConfigError, match=None) as info:
        TrialConfig(**{field: value})
    assert message in str(info.value)


@pytest.mark.parametrize(("dataset", "model", "options", "message"), [
    ("digits", "mlp", {"presett": "large"}, "dataset_options={'presett': 'large'} is not "
                                            "accepted for digits; use {}"),
    ("synthetic", "mlp", {"preset": "huge"}, "dataset_options.preset='huge' is not accepted"),
    ("synthetic", "cnn", {"colour": 1}, "unknown synthetic dataset_options ['colour']"),
    ("cifar10", "resnet20", {"preset": "large"}, "is not accepted for cifar10; use {}"),
    ("nqm", "nqm", {"dims": 10}, "unknown nqm dataset_options ['dims']"),
])
def test_dataset_options_are_checked_when_the_config_is_made(dataset, model, options, message):
    """So a space with a typo in them is refused at reading, before any trial starts."""
    with pytest.raises(ConfigError) as info:
        TrialConfig(dataset=dataset, model=model, dataset_options=options)
    assert message in str(info.value)


def test_nqm_dataset_needs_nqm_model():
    with pytest.raises(ConfigError, match="use dataset='nqm' with model='nqm'"):
        TrialConfig(dataset="nqm", model="mlp")


def test_from_dict_round_trip_and_unknown_keys():
    config = TrialConfig(dataset="synthetic", model="cnn", lr=0.05, batch_size=64,
                         lr_milestones=(0.3, 0.6), dataset_options={"n_train": 100})
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown TrialConfig field\(s\) \['batchsize'\]"):
        TrialConfig.from_dict({"batchsize": 32})


def test_from_dict_takes_numpy_scalars_as_the_numbers_they_hold():
    import numpy as np

    config = TrialConfig.from_dict({"epochs": np.int64(20), "batch_size": np.int32(64),
                                    "lr": np.float32(0.5)})
    assert (config.epochs, config.batch_size, config.lr) == (20, 64, 0.5)
    assert type(config.epochs) is int


def test_a_schedule_given_as_a_list_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match=r"written as a string, strategy='\[32,64\]'"):
        TrialConfig(strategy=[32, 64])
    assert TrialConfig(strategy="[32,64]").strategy == "[32,64]"
