"""per_sample_gram: the fast path against brute-force per-sample gradients (float64).

BackPACK habit: every quantity computed twice, brute force with autograd/torch.func and the
fast path, over a table of models and settings.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import exact_gram, per_sample_gram
from tune_batchdyn.measures.conv_gradients import ConvCall, shifted_windows_pay_off
from tune_batchdyn.measures.factors import conv_call
from tune_batchdyn.measures.gram_products import (
    GramSum,
    choose_product,
    conv_materialised_gram,
    factor_sizes,
    ghost_gram,
    materialised_gram,
    summed,
    symmetric_gram,
)
from tune_batchdyn.measures.positions import Factor

CLASSES = 3


pytestmark = pytest.mark.usefixtures("float64_default")


# --- small models --------------------------------------------------------------------------


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(),
                         nn.Linear(7, CLASSES))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, padding=1, padding_mode="reflect"),
        nn.GroupNorm(3, 6),
        nn.Tanh(),
        nn.Conv2d(6, 4, 2, padding="same", dilation=2, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, CLASSES),
    )


def conv_ghost_net() -> nn.Module:
    """A 1×1 convolution on 2×2 pixels with many channels: the ghost product is cheaper."""
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Conv2d(32, 32, 1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(32 * 2 * 2, CLASSES))


def conv1d_net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding="same"), nn.ReLU(),
                         nn.Conv1d(4, 4, 3, 2, padding=1, padding_mode="circular"),
                         nn.Flatten(), nn.LayerNorm(20), nn.Linear(20, CLASSES))


def depthwise_net() -> nn.Module:
    """Grouped and depthwise stride-1 convolutions, fed channels_last inputs."""
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Tanh(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="replicate"),
                         nn.Flatten(), nn.Linear(8 * 5 * 5, CLASSES))


class _Block(nn.Module):
    """Residual block without batch-norm (GroupNorm instead), in-place ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(2, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(2, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def resnet8_no_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.GroupNorm(2, 4), nn.ReLU(inplace=True),
        _Block(4, 4, 1), _Block(4, 8, 2), _Block(8, 8, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES),
    )


class SequenceNet(nn.Module):
    """Embedding (with padding index) + sequence Linear + LayerNorm + RMSNorm, one Linear
    applied twice (its calls' positions add up)."""

    def __init__(self, wide: bool = False) -> None:
        super().__init__()
        width = 40 if wide else 5
        self.embed = nn.Embedding(13, width, padding_idx=0)
        self.proj = nn.Linear(width, 48 if wide else 6)
        self.norm = nn.LayerNorm(self.proj.out_features)
        self.mix = nn.Linear(self.proj.out_features, self.proj.out_features)
        self.rms = nn.RMSNorm(self.proj.out_features)
        self.head = nn.Linear(self.proj.out_features, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.proj(self.embed(tokens))))
        h = torch.tanh(self.mix(torch.tanh(self.mix(h))))
        return self.head(self.rms(h).mean(dim=1))


def inputs_for(name: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    shapes = {"mlp": (batch, 3, 4), "cnn": (batch, 2, 6, 6), "conv1d": (batch, 2, 9),
              "resnet8": (batch, 3, 8, 8), "conv-ghost": (batch, 3, 4, 4)}
    if name.startswith("sequence"):
        return torch.randint(0, 13, (batch, 4), generator=generator)
    if name == "depthwise":
        x = torch.randn(batch, 4, 5, 5, generator=generator)
        return x.contiguous(memory_format=torch.channels_last)
    return torch.randn(*shapes[name], generator=generator)


MODELS = {"mlp": mlp, "cnn": cnn, "conv1d": conv1d_net, "conv-ghost": conv_ghost_net,
          "depthwise": depthwise_net,
          "resnet8": resnet8_no_bn,
          "sequence": SequenceNet, "sequence-wide": lambda: SequenceNet(wide=True)}


def per_sample_jacobian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Brute force: J (B × P) of ∇θ ℓ(yᵢ, f(xᵢ)) by torch.func, one sample at a time."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g.reshape(len(x), -1) for g in grads.values()], dim=1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- fast path == brute force ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch", [1, 7])
def test_gram_equals_brute_force_per_sample_gradients(name: str, batch: int) -> None:
    generator = torch.Generator().manual_seed(sorted(MODELS).index(name) * 10 + batch)
    torch.manual_seed(3)
    model = MODELS[name]()
    x = inputs_for(name, batch, generator)
    y = torch.randint(0, CLASSES, (batch,), generator=generator)
    jacobian = per_sample_jacobian(model, x, y)
    gram = per_sample_gram(model, x, y)
    assert gram.dtype == torch.float64 and gram.shape == (batch, batch)
    assert relative_error(gram, jacobian @ jacobian.T) < 1e-8
    assert relative_error(exact_gram(model, x, y), jacobian @ jacobian.T) < 1e-8


def test_gram_with_frozen_parameters_leaves_them_out() -> None:
    torch.manual_seed(0)
    model = cnn()
    model[0].weight.requires_grad_(False)
    model[3].bias.requires_grad_(False)
    model[7].weight.requires_grad_(False)
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, CLASSES, (5,))
    jacobian = per_sample_jacobian(model, x, y)
    assert relative_error(per_sample_gram(model, x, y), jacobian @ jacobian.T) < 1e-8


def test_custom_per_sample_loss() -> None:
    torch.manual_seed(1)
    model = mlp()
    x, y = torch.randn(6, 3, 4), torch.randn(6, CLASSES)

    def squared(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out - target) ** 2).sum(dim=1)

    params = {n: p.detach() for n, p in model.named_parameters()}
    grads = vmap(grad(lambda p, xi, yi: squared(functional_call(model, p, (xi[None],)),
                                                yi[None]).sum()),
                 in_dims=(None, 0, 0))(params, x, y)
    jacobian = torch.cat([g.reshape(6, -1) for g in grads.values()], dim=1)
    assert relative_error(per_sample_gram(model, x, y, squared), jacobian @ jacobian.T) < 1e-8


# --- the two products and the cost rule ---------------------------------------------------


@pytest.mark.parametrize("groups,positions,p,q", [(1, 1, 5, 4), (2, 6, 3, 4), (3, 9, 2, 1)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("block", [7, 2**24])
def test_ghost_and_materialised_products_agree(groups, positions, p, q, bias, block) -> None:
    generator = torch.Generator().manual_seed(groups * 100 + positions)
    a = torch.randn(5, groups, positions, p, generator=generator)
    g = torch.randn(5, groups, positions, q, generator=generator)
    with_ones = torch.cat([a, torch.ones(5, groups, positions, int(bias))], dim=-1)
    psi = torch.einsum("bktq,bktp->bkqp", g, with_ones).reshape(5, -1)
    factor = Factor(a, g, bias=bias)
    assert relative_error(ghost_gram(factor, block), psi @ psi.T) < 1e-12
    assert relative_error(materialised_gram(factor, block), psi @ psi.T) < 1e-12


@pytest.mark.parametrize("rows", [1, 2, 7, 128])
@pytest.mark.parametrize("columns", [3, 256, 700])
def test_symmetric_gram_equals_the_full_product(rows, columns) -> None:
    """The split product (wide x) and the one product (narrow x) both give x xᵀ in float64,
    from float32 input too."""
    x = torch.randn(rows, columns, generator=torch.Generator().manual_seed(rows + columns))
    x32 = x.to(torch.float32)
    gram = symmetric_gram(x32)
    assert gram.dtype == torch.float64
    reference = x32.to(torch.float64) @ x32.to(torch.float64).T
    assert relative_error(gram, reference) < 1e-14


@pytest.mark.parametrize("block_elements", [2**24, 5 * 12])  # one pool, or flushed often
def test_gram_sum_pools_narrow_gradients_into_the_same_gram(block_elements) -> None:
    """Narrow ψ of several dtypes (pooled), a wide ψ (its own product) and a B×B share add up
    to Σ ψψᵀ + share, whatever the pool's flushes."""
    generator = torch.Generator().manual_seed(5)
    narrow = [torch.randn(5, columns, generator=generator, dtype=dtype)
              for columns, dtype in ((4, torch.float32), (7, torch.float64), (12, torch.float32))]
    wide = torch.randn(5, GramSum.POOL_MAX_COLUMNS, generator=generator)
    share = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    total = GramSum(5, torch.device("cpu"), block_elements)
    for psi in (narrow[0], wide, narrow[1]):
        total.add_gradients(psi)
    total.add(share)
    total.add_gradients(narrow[2])
    expected = share + sum(p.double() @ p.double().T for p in (*narrow, wide))
    assert relative_error(total.total(), expected) < 1e-13


def test_wide_one_position_ghost_product_equals_materialised() -> None:
    """An MLP-sized Linear (p, q ≥ 256) takes the split products of the ghost fast path."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(9, 1, 1, 300, generator=generator)
    g = torch.randn(9, 1, 1, 260, generator=generator)
    factor = Factor(a, g, bias=True)
    assert relative_error(ghost_gram(factor), materialised_gram(factor)) < 1e-12


CONV_SETTINGS = [  # (channels, outputs, size, kernel, stride, dilation, groups, bias)
    (3, 4, (7, 7), (3, 3), (1, 1), (1, 1), 1, True),
    (4, 6, (9, 8), (3, 2), (2, 2), (1, 1), 2, False),  # strided: the grouped convolution
    (2, 3, (10, 9), (3, 3), (1, 1), (2, 2), 1, True),
    (4, 4, (9, 9), (3, 3), (2, 1), (1, 2), 4, True),  # unequal strides, dilated, grouped
    (4, 6, (11, 10), (3, 3), (3, 3), (2, 1), 2, True),
    (3, 5, (1, 12), (1, 3), (1, 2), (1, 1), 1, True),  # a Conv1d as height 1
]


@pytest.mark.parametrize("setting", CONV_SETTINGS)
@pytest.mark.parametrize("calls", [1, 2])
def test_conv_products_equal_per_sample_weight_gradients(setting, calls) -> None:
    channels, outputs, size, kernel, stride, dilation, groups, bias = setting
    generator = torch.Generator().manual_seed(sum(size) + calls)
    weight_shape = (outputs, channels // groups, *kernel)
    parts, psi = [], 0
    for _ in range(calls):
        x = torch.randn(4, channels, *size, generator=generator)
        out_size = [(n - d * (k - 1) - 1) // s + 1
                    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True)]
        g = torch.randn(4, outputs, *out_size, generator=generator)
        parts.append(ConvCall(x, g, kernel, stride, dilation, groups, True, bias))
        rows = [torch.nn.grad.conv2d_weight(x[i : i + 1], weight_shape, g[i : i + 1],
                                            stride=stride, dilation=dilation, groups=groups)
                .reshape(-1) for i in range(4)]
        per_call = torch.stack(rows)
        if bias:
            per_call = torch.cat([per_call, g.sum(dim=(2, 3))], dim=1)
        psi = psi + per_call
    expected = psi @ psi.T
    assert relative_error(conv_materialised_gram(parts), expected) < 1e-12
    grouped = summed(part.grouped_weight_gradients() for part in parts)  # a GPU's path
    if bias:
        grouped = torch.cat([grouped, summed(part.bias_gradients() for part in parts)], dim=1)
    assert relative_error(symmetric_gram(grouped), expected) < 1e-12
    factor = Factor(torch.cat([c.factor().activations for c in parts], dim=2),
                    torch.cat([c.factor().output_grads for c in parts], dim=2), bias=bias)
    assert relative_error(ghost_gram(factor), expected) < 1e-12


@pytest.mark.parametrize("make,deferred", [
    (lambda: nn.Conv2d(3, 4, 3, padding=(1, 2)), (1, 2)),  # zeros, symmetric: left as is
    (lambda: nn.Conv2d(3, 4, 3, padding="same", dilation=2), (2, 2)),
    (lambda: nn.Conv2d(3, 4, (2, 3), padding="same"), (0, 0)),  # even kernel: asymmetric
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (0, 0)),
    (lambda: nn.Conv1d(3, 4, 3, padding=2, stride=2), (0, 2)),
])
def test_conv_padding_left_to_the_products_gives_the_same_gram(make, deferred) -> None:
    """Symmetric zero padding is passed to the grouped convolution and im2col instead of
    copied into a padded input; every product gives the Gram of the eagerly padded call."""
    module = make()
    generator = torch.Generator().manual_seed(11)
    shape = (4, 3, 9) if isinstance(module, nn.Conv1d) else (4, 3, 7, 8)
    x = torch.randn(*shape, generator=generator)
    g = torch.randn(module(x).shape, generator=generator)
    call = conv_call(module, x, g)
    assert call.padding == deferred
    eager = ConvCall(call.padded_input, call.output_grads, call.kernel_size, call.stride,
                     call.dilation, call.groups, call.weight, call.bias)
    expected = conv_materialised_gram([eager])
    weights = call.grouped_weight_gradients()
    psi = torch.cat([weights, call.bias_gradients()], dim=1)
    assert relative_error(symmetric_gram(psi), expected) < 1e-12
    assert relative_error(ghost_gram(call.factor()), expected) < 1e-12
    assert relative_error(conv_materialised_gram([call]), expected) < 1e-12


@pytest.mark.parametrize("stride,channels,device,windows", [
    ((1, 1), 3, "cpu", True), ((1, 1), 12, "cpu", True), ((1, 1), 64, "cpu", True),
    ((1, 1), 16, "cpu", False), ((1, 1), 32, "cpu", False), ((2, 2), 3, "cpu", False),
    ((1, 2), 3, "cpu", False), ((1, 1), 3, "cuda", False), ((2, 2), 3, "cuda", False),
    ((1, 1), 3, "mps", False),
])
def test_shifted_windows_where_they_were_measured_faster(stride, channels, device,
                                                           windows) -> None:
    assert shifted_windows_pay_off(stride, channels, torch.device(device)) is windows


@pytest.mark.parametrize("block", [3, 2**24])
def test_one_hot_products_agree(block: int) -> None:
    generator = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 6, (4, 5), generator=generator)
    g = torch.randn(4, 1, 5, 3, generator=generator)
    dense = F.one_hot(indices, 6).to(torch.float64).unsqueeze(1)
    psi = torch.einsum("bktq,bktp->bkqp", g, dense).reshape(4, -1)
    factor = Factor(indices, g, one_hot=True)
    assert relative_error(ghost_gram(factor, block), psi @ psi.T) < 1e-12
    assert relative_error(materialised_gram(factor, block), psi @ psi.T) < 1e-12


@pytest.mark.parametrize("positions,d_in,d_out,expected", [
    (1, 784, 500, "ghost"),  # MLP layer: (AAᵀ) ⊙ (GGᵀ)
    (4, 512, 512, "ghost"),  # short sequence, wide layer: T²(d_in + d_out) < d_in·d_out
    (64, 32, 32, "materialise"),  # long sequence, narrow layer
    (1024, 144, 16, "materialise"),  # conv on 32×32 pixels
])
def test_product_choice_follows_cost(positions, d_in, d_out, expected) -> None:
    shape = (128, 1, positions)
    factor = Factor(torch.zeros(()).expand(*shape, d_in), torch.zeros(()).expand(*shape, d_out))
    assert choose_product(factor_sizes(factor)) == expected


# --- batch-norm in training mode -----------------------------------------------------------


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 4)
        self.bn1d = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)), inplace=True)
        return self.out(torch.tanh(self.bn1d(self.fc(h.flatten(1)))))


def bookkeeping_jacobian(model: BatchNormNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Independent per-module book-keeping: retained output gradients, per-sample parameter
    gradients from conv2d_weight, Gᵢᵀ aᵢ and Σ x̂ ⊙ g written out by hand."""
    conv_out = model.conv(x)
    conv_out.retain_grad()
    mean = conv_out.mean(dim=(0, 2, 3), keepdim=True)
    var = conv_out.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x_hat = ((conv_out - mean) / torch.sqrt(var + model.bn.eps)).detach()
    bn_out = model.bn(conv_out)
    bn_out.retain_grad()
    flat = F.relu(bn_out).flatten(1)
    fc_out = model.fc(flat)
    fc_out.retain_grad()
    mean1, var1 = fc_out.mean(0), fc_out.var(0, unbiased=False)
    x_hat1 = ((fc_out - mean1) / torch.sqrt(var1 + model.bn1d.eps)).detach()
    bn1d_out = model.bn1d(fc_out)
    bn1d_out.retain_grad()
    hidden = torch.tanh(bn1d_out)
    out = model.out(hidden)
    out.retain_grad()
    F.cross_entropy(out, y, reduction="sum").backward()
    rows = []
    for i in range(len(x)):
        conv_w = torch.nn.grad.conv2d_weight(x[i : i + 1], model.conv.weight.shape,
                                             conv_out.grad[i : i + 1])
        rows.append(torch.cat([
            conv_w.reshape(-1), conv_out.grad[i].sum(dim=(1, 2)),
            (x_hat[i] * bn_out.grad[i]).sum(dim=(1, 2)), bn_out.grad[i].sum(dim=(1, 2)),
            torch.outer(fc_out.grad[i], flat[i].detach()).reshape(-1), fc_out.grad[i],
            x_hat1[i] * bn1d_out.grad[i], bn1d_out.grad[i],
            torch.outer(out.grad[i], hidden[i].detach()).reshape(-1), out.grad[i],
        ]))
    model.zero_grad()
    return torch.stack(rows)


def test_batch_norm_training_mode_decomposition() -> None:
    torch.manual_seed(0)
    model = BatchNormNet()
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, CLASSES, (8,))
    gram = per_sample_gram(model, x, y)  # the first call: checked, layer by layer
    unchecked = per_sample_gram(model, x, y)  # later calls: batch-norm ψ pooled (GramSum)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    jacobian = bookkeeping_jacobian(model, x, y)
    model.load_state_dict(state)
    assert relative_error(gram, jacobian @ jacobian.T) < 1e-8
    assert relative_error(unchecked, jacobian @ jacobian.T) < 1e-8
    # 1ᵀF̃1 = ‖batch gradient of the summed loss‖²
    batch_grad = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"),
                                     list(model.parameters()))
    model.load_state_dict(state)
    squared_norm = sum(float((g**2).sum()) for g in batch_grad)
    assert gram.sum().item() == pytest.approx(squared_norm, rel=1e-10)
    # the exact ∂ℓᵢ/∂θ differs (batch statistics couple samples) but has the same sum
    exact = exact_gram(model, x, y)
    assert exact.sum().item() == pytest.approx(squared_norm, rel=1e-10)
    assert relative_error(exact, gram) > 1e-3


def test_exact_gram_with_batch_norm_equals_autograd_jacobian() -> None:
    torch.manual_seed(2)
    model = BatchNormNet()
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, CLASSES, (5,))
    params = list(model.parameters())
    losses = F.cross_entropy(model(x), y, reduction="none")
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], params,
                                                                   retain_graph=True)])
            for i in range(5)]
    jacobian = torch.stack(rows)
    assert relative_error(per_sample_gram(model, x, y, exact=True), jacobian @ jacobian.T) < 1e-8


# --- the model is left exactly as it was ---------------------------------------------------


def test_model_state_is_unchanged() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True),
                          nn.Dropout(0.3), nn.Flatten(), nn.Linear(48, CLASSES))
    model[5].bias.requires_grad_(False)
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.randn(6, 2, 6, 6), torch.randint(0, CLASSES, (6,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    statistics = [model[1].running_mean, model[1].running_var]
    versions_before = [b._version for b in statistics]
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                    for m in model.modules()]
    rng_before = torch.get_rng_state()
    for mixed_modes in (False, True):  # training mode (running stats change), then mixed
        model.train()
        model[1].train(not mixed_modes)
        modes_before = [m.training for m in model.modules()]
        for exact in (False, True):
            per_sample_gram(model, x, y, exact=exact)
        assert [m.training for m in model.modules()] == modes_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # restored without a version change, so a graph that saved them (batch-norm in eval mode)
    # is not invalidated (num_batches_tracked: batch-norm's own forward increments it)
    assert [b._version for b in statistics] == versions_before
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, True, False]
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 0.5))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()] == hooks_before
    assert torch.equal(torch.get_rng_state(), rng_before)
    # the user's hook still runs on each forward: one per measurement, two more for the
    # check that the first call on this model makes (the batch and a sub-batch in eval mode)
    assert len(calls) == 4 + 2


# --- what cannot be decomposed ---------------------------------------------------------------


class Scaled(nn.Module):
    """A module with its own parameter and a Linear inside: no per-sample rule."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6))
        self.inner = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.scale)


def test_unsupported_module_raises_naming_its_type() -> None:
    model = nn.Sequential(nn.Linear(4, 6), Scaled(), nn.Linear(6, CLASSES))
    with pytest.raises(ConfigError, match="Scaled"):
        per_sample_gram(model, torch.randn(3, 4), torch.randint(0, CLASSES, (3,)))


def test_torch_func_fallback_for_unsupported_module() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), Scaled(), nn.ReLU(), nn.Linear(6, CLASSES))
    x, y = torch.randn(5, 4), torch.randint(0, CLASSES, (5,))
    jacobian = per_sample_jacobian(model, x, y)
    gram = per_sample_gram(model, x, y, unsupported="torch.func")
    assert relative_error(gram, jacobian @ jacobian.T) < 1e-8


def test_tied_weights_need_exact_mode() -> None:
    torch.manual_seed(5)
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, nn.Tanh(), second, nn.Tanh(), nn.Linear(4, CLASSES))
    x, y = torch.randn(4, 4), torch.randint(0, CLASSES, (4,))
    with pytest.raises(ConfigError, match="tied"):
        per_sample_gram(model, x, y)
    jacobian = per_sample_jacobian(model, x, y)
    assert relative_error(per_sample_gram(model, x, y, exact=True), jacobian @ jacobian.T) < 1e-8


class ChangesInputLater(nn.Module):
    """Multiplies the second layer's input in place after that layer used it."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.third = (nn.Linear(4, 4), nn.Linear(4, CLASSES),
                                               nn.Linear(4, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))
        out = self.second(h)
        return out + self.third(h.mul_(2.0))


def test_in_place_change_of_a_used_input_raises_naming_the_module() -> None:
    model = ChangesInputLater()
    with pytest.raises(ConfigError, match="'second'.*modified in place"):
        per_sample_gram(model, torch.randn(3, 4), torch.randint(0, CLASSES, (3,)))


def test_in_place_change_of_an_output_leaves_gram_and_model_output_alone() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 6),
                          nn.Hardtanh(inplace=True), nn.Linear(6, CLASSES))
    x, y = torch.randn(5, 4), torch.randint(0, CLASSES, (5,))
    before = model(x)
    jacobian = per_sample_jacobian(model, x, y)
    assert relative_error(per_sample_gram(model, x, y), jacobian @ jacobian.T) < 1e-8
    assert torch.equal(model(x), before)


def test_bad_inputs_raise_config_errors() -> None:
    model = mlp()
    x, y = torch.randn(4, 3, 4), torch.randint(0, CLASSES, (4,))
    with pytest.raises(ConfigError, match="one loss per sample"):
        per_sample_gram(model, x, y, lambda out, t: F.cross_entropy(out, t))
    with pytest.raises(ConfigError, match="unsupported"):
        per_sample_gram(model, x, y, unsupported="skip")
    with pytest.raises(ConfigError, match="has shape \\(8, 3\\); expected the batch \\(4\\) "
                                          "as its first dimension"):
        per_sample_gram(Merged(), torch.randn(4, 2, 3), torch.randint(0, CLASSES, (4,)))


def test_sequence_first_positions_layers_are_turned_batch_first() -> None:
    generator = torch.Generator().manual_seed(9)
    model = TimeMajor()
    x = torch.randn(4, 3, 3, generator=generator)
    y = torch.randint(0, CLASSES, (4,), generator=generator)
    jacobian = per_sample_jacobian(model, x, y)
    assert relative_error(per_sample_gram(model, x, y), jacobian @ jacobian.T) < 1e-8


class TimeMajor(nn.Module):
    """Feeds its Linear and LayerNorm (T, B, d) tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 5)
        self.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.norm(self.linear(x.transpose(0, 1))))
        return self.head(h.mean(dim=0))


class Merged(nn.Module):
    """Feeds its Linear a (B·T, d) tensor: no dimension of it is the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(-1, 3)).view(x.shape[0], -1, CLASSES).mean(dim=1)


class FunctionallyTied(nn.Module):
    """An LM-style tie: the encoder's weight is reused by a matrix product outside its module."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 6, bias=False)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mid(self.enc(x))) @ self.enc.weight)


@pytest.mark.parametrize("name", ["mlp", "cnn", "sequence", "batch_norm"])
def test_check_passes_and_changes_nothing_where_every_use_is_seen(name: str) -> None:
    generator = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    if name == "batch_norm":  # training mode: the decomposition still adds up exactly
        model, x = BatchNormNet(), torch.randn(6, 2, 6, 6, generator=generator)
    else:
        model, x = MODELS[name](), inputs_for(name, 6, generator)
    y = torch.randint(0, CLASSES, (6,), generator=generator)
    plain = per_sample_gram(model, x, y)
    assert torch.equal(per_sample_gram(model, x, y, check=True), plain)


def test_check_names_the_layer_whose_weight_is_used_outside_it() -> None:
    torch.manual_seed(7)
    model = FunctionallyTied()
    x, y = torch.randn(5, 4), torch.randint(0, CLASSES, (5,))
    hooks_only = per_sample_gram(model, x, y, check=False)  # misses the functional use
    jacobian = per_sample_jacobian(model, x, y)
    assert relative_error(hooks_only, jacobian @ jacobian.T) > 1e-2
    for check in (True, None):  # None: the first call on a model checks
        with pytest.raises(ConfigError, match="module 'enc' \\(Linear\\) add up to .* a "
                                              "parameter of it is also used outside"):
            per_sample_gram(FunctionallyTied(), x, y, check=check)
    assert relative_error(per_sample_gram(model, x, y, exact=True), jacobian @ jacobian.T) < 1e-8


class Shift(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.randn(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


def test_check_accepts_a_layer_whose_batch_gradient_cancels() -> None:
    """A shift before training-mode batch-norm has a zero batch gradient: both sums are
    rounding, which the per-sample scale of the layer bounds."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(4, 5), Shift(5), nn.BatchNorm1d(5), nn.Tanh(),
                          nn.Linear(5, CLASSES))
    x, y = torch.randn(16, 4), torch.randint(0, CLASSES, (16,))
    gram = per_sample_gram(model, x, y, unsupported="torch.func", check=True)
    assert gram.trace() > 0
