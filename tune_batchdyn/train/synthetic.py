"""The ``synthetic`` dataset: a seeded, image-shaped classification task with label noise.

It is the offline stand-in for the seeds' image benchmarks, so it must separate good from bad
batch-size / learning-rate configurations. Each class owns a few smooth random *prototypes*
(low-resolution Gaussian fields upsampled to the image size). A sample is a random prototype of
its class, shifted by a few pixels, blended with a prototype of another class (a distractor of
random strength) and covered in pixel noise; a fraction of the *training* labels is then replaced
by random classes. Validation and test labels are clean, so test error measures generalisation.
``data_seed`` picks the task (prototypes); the split sizes and difficulty are options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.train.augment import random_crop


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and difficulty of the synthetic task (``dataset_options`` of a trial)."""

    n_train: int = 8_000
    n_val: int = 2_000
    n_test: int = 10_000
    classes: int = 10
    channels: int = 3
    image_size: int = 16
    prototypes: int = 8
    prototype_resolution: int = 4
    max_shift: int = 3
    distractor: float = 1.0
    pixel_noise: float = 1.5
    label_noise: float = 0.2

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SyntheticSpec:
        """Build from ``dataset_options``: a ``preset`` ("small", "large") plus overrides."""
        options = dict(options)
        preset = options.pop("preset", "small")
        if preset not in PRESETS:
            raise ConfigError(f"dataset_options.preset={preset!r} is not accepted; use one of: "
                              f"{', '.join(map(repr, PRESETS))}.")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown synthetic dataset_options {unknown}; accepted: "
                              f"{['preset', *known]}.")
        spec = cls(**{**PRESETS[preset], **options})
        spec.validate()
        return spec

    def validate(self) -> None:
        for name in ("n_train", "n_val", "n_test", "classes", "channels", "image_size",
                     "prototypes", "prototype_resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset_options.{name}={value!r} is not accepted; use an "
                                  "integer >= 1.")
        if self.classes < 2:
            raise ConfigError(f"dataset_options.classes={self.classes!r} is not accepted; use "
                              "an integer >= 2.")
        for name in ("distractor", "pixel_noise", "label_noise"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= (1 if name == "label_noise"
                                                                          else 10):
                raise ConfigError(f"dataset_options.{name}={value!r} is not accepted; use a "
                                  "number in [0, 1]" + ("." if name == "label_noise" else
                                                        " (or up to 10)."))
        if not 0 <= self.max_shift < self.image_size:
            raise ConfigError(f"dataset_options.max_shift={self.max_shift!r} is not accepted; "
                              f"use an integer in [0, {self.image_size - 1}].")


PRESETS: dict[str, dict[str, Any]] = {
    "small": {},
    "large": {"n_train": 50_000, "n_val": 5_000, "n_test": 10_000, "image_size": 32,
              "prototype_resolution": 6, "max_shift": 4},
}


def make_synthetic(spec: SyntheticSpec, data_seed: int) -> dict[str, torch.Tensor]:
    """Generate the splits on the CPU: ``{train,val,test}_{x,y}``, x float32 NCHW, y int64."""
    gen = torch.Generator().manual_seed(10_007 * data_seed + 17)
    low = torch.randn(spec.classes * spec.prototypes, spec.channels, spec.prototype_resolution,
                      spec.prototype_resolution, generator=gen)
    protos = F.interpolate(low, size=(spec.image_size, spec.image_size), mode="bicubic",
                           align_corners=False)
    protos = protos / protos.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    protos = protos.view(spec.classes, spec.prototypes, *protos.shape[1:])
    out: dict[str, torch.Tensor] = {}
    for split, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        x, y = _sample(spec, protos, n, gen)
        if split == "train" and spec.label_noise > 0:
            flip = torch.rand(n, generator=gen) < spec.label_noise
            y = torch.where(flip, torch.randint(spec.classes, (n,), generator=gen), y)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def _sample(spec: SyntheticSpec, protos: torch.Tensor, n: int,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(spec.classes, (n,), generator=gen)
    which = torch.randint(spec.prototypes, (n,), generator=gen)
    other = (y + torch.randint(1, spec.classes, (n,), generator=gen)) % spec.classes
    other_which = torch.randint(spec.prototypes, (n,), generator=gen)
    strength = spec.distractor * torch.rand(n, 1, 1, 1, generator=gen)
    x = protos[y, which] + strength * protos[other, other_which]
    x = random_crop(x, spec.max_shift, gen)
    x = x + spec.pixel_noise * torch.randn(x.shape, generator=gen)
    return x.float().contiguous(), y
