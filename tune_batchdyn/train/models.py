"""Models of the seeds; input shape and number of classes come from the dataset.

- ``mlp``: the seed's two hidden layers of 500 (ReLU).
- ``cnn``: a small two-block convolutional net (conv, batch-norm, ReLU, max-pool).
- ``resnet{8,20,32,56,110}``: CIFAR-style ResNet of He et al. (2016): 3 stages of 16/32/64
  channels, n = 6k+2 layers, identity shortcuts with zero-padded channels (option A).
- ``densenet``: a small DenseNet (3 dense blocks of 6 layers, growth rate 12, compression 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures.model_state import preserved_state
from tune_batchdyn.user_code import MODEL_FORM, checked_callable, is_import_path

RESNET_DEPTHS = (8, 20, 32, 56, 110)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model (initialisation follows the global torch seed).

    ``name`` may name a user's function as ``"package.module:function"``: it is called as
    ``function(input_shape, num_classes)`` (the shape of one input, without the batch
    dimension) and returns an ``nn.Module`` mapping a batch of inputs to class logits.
    """
    if is_import_path(name):
        model = checked_callable("model", name, MODEL_FORM, input_shape, num_classes)(
            input_shape, num_classes)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model={name!r} returned a {type(model).__name__}, not a "
                              "torch.nn.Module.")
        return model
    channels = input_shape[0]
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes)
    if name == "cnn":
        return SmallCNN(channels, input_shape[1:], num_classes)
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in RESNET_DEPTHS:
        return CifarResNet(int(name[6:]), channels, num_classes)
    if name == "densenet":
        return SmallDenseNet(channels, num_classes)
    accepted = ["mlp", "cnn", *(f"resnet{d}" for d in RESNET_DEPTHS), "densenet"]
    raise ConfigError(f"model={name!r} is not accepted; use one of: {', '.join(accepted)}.")


def probe_model(name: str, model: nn.Module, inputs: torch.Tensor, num_classes: int) -> None:
    """Raise a one-line ``ConfigError`` unless ``model`` has trainable parameters and maps
    ``inputs`` (a few training inputs) to float logits ``[N, num_classes]`` in eval mode and
    in training mode (some models, like torchvision's Inception, return auxiliary outputs
    while training): one forward pass in each, without gradients, inside ``preserved_state``
    (modes, buffers and random generators as before), so the trial trains as if it had not
    run."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model={name!r} has no trainable parameters.")
    for training in (False, True):
        mode = "training" if training else "eval"
        try:
            with preserved_state(model, inputs), torch.no_grad():
                model.train(training)
                outputs = model(inputs)
        except Exception as err:  # the user's forward pass, on inputs it does not expect
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(f"model={name!r} failed in {mode} mode on inputs of shape "
                              f"{tuple(inputs.shape)} ({inputs.dtype}): {type(err).__name__}: "
                              f"{first_line}") from err
        expected = (len(inputs), num_classes)
        if not (isinstance(outputs, torch.Tensor) and outputs.is_floating_point()
                and tuple(outputs.shape) == expected):
            got = (f"a {outputs.dtype} tensor of shape {tuple(outputs.shape)}"
                   if isinstance(outputs, torch.Tensor) else f"a {type(outputs).__name__}")
            raise ConfigError(f"model={name!r} returned {got} for {len(inputs)} inputs in "
                              f"{mode} mode; expected class logits, a float tensor of shape "
                              f"{list(expected)}.")


class MLP(nn.Sequential):
    """The seed's MLP: two hidden layers of ``hidden`` ReLU units."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 500) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class SmallCNN(nn.Sequential):
    """Two conv-batch-norm-ReLU-pool stages (16, 32 channels) and a 128-unit head: a CPU-sized
    conv net."""

    def __init__(self, channels: int, spatial: tuple[int, ...], num_classes: int) -> None:
        h, w = (s // 4 for s in spatial)
        super().__init__(
            nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * h * w, 128), nn.ReLU(), nn.Linear(128, num_classes))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        pad = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, pad, self.extra_channels - pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32×32 inputs (He et al. 2016): 3 stages of 16/32/64 channels with
    (depth − 2)/6 basic blocks each."""

    def __init__(self, depth: int, channels: int, num_classes: int) -> None:
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(channels, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _DenseLayer(nn.Module):
    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class _Transition(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(nn.BatchNorm2d(in_planes), nn.ReLU(),
                         nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.AvgPool2d(2))


class SmallDenseNet(nn.Module):
    """A small DenseNet: 3 dense blocks of ``layers_per_block`` layers (growth rate
    ``growth``) joined by transitions of compression 0.5."""

    def __init__(self, channels: int, num_classes: int, growth: int = 12,
                 layers_per_block: int = 6) -> None:
        super().__init__()
        planes = 2 * growth
        modules: list[nn.Module] = [nn.Conv2d(channels, planes, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                modules.append(_DenseLayer(planes, growth))
                planes += growth
            if block < 2:
                modules.append(_Transition(planes, planes // 2))
                planes //= 2
        modules += [nn.BatchNorm2d(planes), nn.ReLU()]
        self.features = nn.Sequential(*modules)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(out, 1))
