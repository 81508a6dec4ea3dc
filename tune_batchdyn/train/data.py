"""Datasets as tensors on the training device.

A batch of any size is an index gather (``data.train_x[idx]``), so a strategy can change the
batch size at any step for free, and there is no DataLoader, worker or collate overhead.
Splits are fixed by ``data_seed``; inputs are normalised per channel with training statistics.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tune_batchdyn.errors import ConfigError, check_choice, is_int
from tune_batchdyn.train.augment import RECIPES
from tune_batchdyn.train.synthetic import SyntheticSpec, make_synthetic
from tune_batchdyn.user_code import (
    DATASET_FORM,
    IMPORT_FORM,
    checked_callable,
    is_import_path,
)

#: torchvision datasets: (class name, augmentation recipe, validation samples held out).
TORCHVISION = {
    "mnist": ("MNIST", "none", 5_000),
    "fashion-mnist": ("FashionMNIST", "none", 5_000),
    "cifar10": ("CIFAR10", "crop-flip", 5_000),
    "cifar100": ("CIFAR100", "crop-flip", 5_000),
    "svhn": ("SVHN", "crop", 5_000),
}


@dataclass
class DeviceData:
    """The three splits of one dataset, as tensors on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augmentation: str = "none"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    def to(self, device: torch.device | str) -> DeviceData:
        moved = {k: getattr(self, k).to(device) for k in
                 ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return DeviceData(self.name, **moved, num_classes=self.num_classes,
                          augmentation=self.augmentation)


def check_data_dir(dataset: str, data_dir: str | None) -> None:
    """A torchvision dataset needs ``data_dir``: checked by sweeps before any trial starts
    (each trial would otherwise fail on it, several times under Ray's retries)."""
    if dataset in TORCHVISION and data_dir is None:
        raise ConfigError(f"dataset={dataset!r} needs data_dir (train: --data-dir DIR; sweep, "
                          "record: --set data_dir=DIR): the folder that holds (or will hold, "
                          "with download) its torchvision files.")


def check_dataset_options(dataset: str, options: Mapping[str, Any]) -> None:
    """``ConfigError`` for ``dataset_options`` a built-in dataset does not take, checked when a
    config is made, so a sweep refuses a typo before any trial: none for digits and the
    torchvision sets, ``SyntheticSpec``'s for synthetic, the NQM's for nqm. A user's dataset
    takes its own, checked when it loads."""
    if dataset == "digits" or dataset in TORCHVISION:
        if options:
            raise ConfigError(f"dataset_options={dict(options)!r} is not accepted for "
                              f"{dataset}; use {{}}.")
    elif dataset == "synthetic":
        SyntheticSpec.from_options(options)
    elif dataset == "nqm":
        from tune_batchdyn.train.nqm_trial import check_nqm_options

        check_nqm_options(options)


def load_data(dataset: str, *, data_seed: int = 0, options: Mapping[str, Any] | None = None,
              data_dir: str | None = None, download: bool = False,
              device: torch.device | str = "cpu") -> DeviceData:
    """Load ``dataset`` (see ``TrialConfig.dataset``) onto ``device``."""
    options = dict(options or {})
    key = json.dumps(options, sort_keys=True, default=str)
    check_dataset_options(dataset, options)
    if dataset == "digits":
        data = _digits(data_seed)
    elif dataset == "synthetic":
        data = _synthetic(data_seed, key)
    elif is_import_path(dataset):
        data = _user_dataset(dataset, data_seed, options)
    elif dataset in TORCHVISION:
        data = _torchvision(dataset, data_seed, data_dir, download)
    else:
        raise ConfigError(f"dataset={dataset!r} has no tensor data; use one of: 'digits', "
                          f"'synthetic', {', '.join(map(repr, TORCHVISION))}, or your own as "
                          f"{IMPORT_FORM}.")
    return data.to(device)


@functools.lru_cache(maxsize=4)
def _digits(data_seed: int) -> DeviceData:
    """scikit-learn's bundled 8×8 digits: a stratified 60/20/20 split (1077/360/360)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0
    y = bunch.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=720, stratify=y, random_state=data_seed)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=360, stratify=y_rest, random_state=data_seed)
    return _normalised("digits", x_train, y_train, x_val, y_val, x_test, y_test, 10, "none")


@functools.lru_cache(maxsize=4)
def _synthetic(data_seed: int, options_key: str) -> DeviceData:
    spec = SyntheticSpec.from_options(json.loads(options_key))
    splits = {k: v.numpy() for k, v in make_synthetic(spec, data_seed).items()}
    return _normalised("synthetic", splits["train_x"], splits["train_y"], splits["val_x"],
                       splits["val_y"], splits["test_x"], splits["test_y"], spec.classes, "none")


def torchvision_splits(dataset: str, data_dir: str | None, download: bool) -> tuple[Any, Any]:
    """The torchvision train and test sets of ``dataset`` under ``data_dir`` (fetched first
    with ``download``); ``ConfigError`` naming the folder when its files are not there. Sweeps
    call it once on the driver before any trial starts."""
    import torchvision

    check_data_dir(dataset, data_dir)
    root = os.path.expanduser(data_dir)
    cls = getattr(torchvision.datasets, TORCHVISION[dataset][0])
    try:
        if dataset == "svhn":
            return tuple(cls(root, split=s, download=download) for s in ("train", "test"))
        return tuple(cls(root, train=t, download=download) for t in (True, False))
    except RuntimeError as err:
        raise ConfigError(f"dataset={dataset!r}: no torchvision files under {root!r} ({err}). "
                          "Pass --download (download=True) to fetch them.") from err


def _torchvision(dataset: str, data_seed: int, data_dir: str | None,
                 download: bool) -> DeviceData:
    _, augmentation, n_val = TORCHVISION[dataset]
    train, test = torchvision_splits(dataset, data_dir, download)
    if dataset == "svhn":
        x_train, y_train = train.data, np.asarray(train.labels)
        x_test, y_test = test.data, np.asarray(test.labels)
    else:
        x_train, y_train = _as_nchw(train.data), np.asarray(train.targets)
        x_test, y_test = _as_nchw(test.data), np.asarray(test.targets)
    rng = np.random.default_rng(data_seed)
    order = rng.permutation(len(y_train))
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_train = np.asarray(x_train, dtype=np.float32) / 255.0
    x_test = np.asarray(x_test, dtype=np.float32) / 255.0
    classes = int(max(y_train.max(), y_test.max()) + 1)
    return _normalised(dataset, x_train[train_idx], y_train[train_idx], x_train[val_idx],
                       y_train[val_idx], x_test, y_test, classes, augmentation)


#: The arrays a user's dataset function returns.
SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def _user_dataset(path: str, data_seed: int, options: dict[str, Any]) -> DeviceData:
    """A user's dataset: ``function(data_seed, **dataset_options)`` returns a mapping with
    ``SPLITS`` (arrays or tensors: inputs of any shape ``[N, ...]``, integer class labels
    ``[N]``), and optionally ``num_classes`` (default: the largest label + 1) and
    ``augmentation`` (an ``augment.RECIPES`` name for NCHW images; default "none"). Inputs are
    used as given (no normalisation): int32/int64 inputs (token ids) as int64, others (uint8
    pixels, floats) as float32. Called on every trial start, not cached, so a redefined
    function takes effect (cache in the function, if loading is slow)."""
    field = f"dataset={path!r}"
    result = checked_callable("dataset", path, DATASET_FORM, data_seed, **options)(
        data_seed, **options)
    if not isinstance(result, Mapping):
        raise ConfigError(f"{field} returned a {type(result).__name__}; return a mapping with "
                          f"keys {', '.join(SPLITS)} (and optionally num_classes, augmentation).")
    missing = [key for key in SPLITS if key not in result]
    if missing:
        raise ConfigError(f"{field} returned no {', '.join(missing)}; return a mapping with keys "
                          f"{', '.join(SPLITS)} (and optionally num_classes, augmentation).")
    arrays = {key: _cpu_tensor(field, key, result[key]) for key in SPLITS}
    for split in ("train", "val", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if y.ndim != 1 or x.ndim < 2 or len(x) != len(y) or len(y) == 0:
            raise ConfigError(f"{field}: {split}_x has shape {tuple(x.shape)} and {split}_y "
                              f"{tuple(y.shape)}; accepted: inputs [N, ...] and labels [N], "
                              "N > 0 alike.")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or int(y.min()) < 0:
            raise ConfigError(f"{field}: {split}_y must hold integer class labels >= 0 "
                              f"(got {y.dtype}).")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ConfigError(f"{field}: {split}_x holds NaN or infinite values.")
    shapes = {tuple(arrays[f"{split}_x"].shape[1:]) for split in ("train", "val", "test")}
    if len(shapes) != 1:
        raise ConfigError(f"{field}: train_x, val_x and test_x have different input shapes "
                          f"{sorted(shapes)}.")
    largest = max(int(arrays[key].max()) for key in ("train_y", "val_y", "test_y"))
    classes = result.get("num_classes", largest + 1)
    classes = classes.item() if isinstance(classes, np.generic) else classes
    if not is_int(classes) or classes <= largest:
        raise ConfigError(f"{field}: num_classes={classes!r}; use an integer above the largest "
                          f"label ({largest}).")
    augmentation = result.get("augmentation", "none")
    check_choice(f"{field}: augmentation", augmentation, tuple(RECIPES))
    if augmentation != "none" and len(shapes.pop()) != 3:
        raise ConfigError(f"{field}: augmentation={augmentation!r} needs images [N, C, H, W].")
    kinds = {split: arrays[f"{split}_x"].dtype in (torch.int32, torch.int64)
             for split in ("train", "val", "test")}
    if len(set(kinds.values())) > 1:
        dtypes = ", ".join(f"{split}_x {arrays[f'{split}_x'].dtype}" for split in kinds)
        raise ConfigError(f"{field}: the inputs mix token ids and numbers ({dtypes}); give all "
                          "three splits int32/int64 token ids, or all numbers.")
    tokens = kinds["train"]
    if augmentation != "none" and tokens:
        raise ConfigError(f"{field}: augmentation={augmentation!r} needs float images, but "
                          f"train_x holds {arrays['train_x'].dtype}.")
    inputs = torch.long if tokens else torch.float32
    return DeviceData(path, *(arrays[key].to(inputs if key.endswith("_x") else torch.long)
                              for key in SPLITS), num_classes=classes, augmentation=augmentation)


def _cpu_tensor(field: str, key: str, values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    array = np.array(values)  # a copy: pandas and memory-mapped arrays may be read-only
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{field}: {key} holds {array.dtype} values; accepted: an array or "
                          "tensor of numbers.")
    return torch.from_numpy(array)


def _as_nchw(images: Any) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:  # N H W (greyscale)
        return array[:, None]
    return array.transpose(0, 3, 1, 2)  # N H W C -> N C H W


def _normalised(name: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                y_val: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, classes: int,
                augmentation: str) -> DeviceData:
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-8

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) / std).astype(np.float32))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64))

    return DeviceData(name, tensor(x_train), labels(y_train), tensor(x_val), labels(y_val),
                      tensor(x_test), labels(y_test), classes, augmentation)
