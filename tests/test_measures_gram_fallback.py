"""per_sample_gram on what module hooks alone cannot handle: the torch.func fallback (nested
outputs, recurrent states, keyword masks, sequence-first tensors) and the check that catches
a dimension mistaken for the batch. Reference: one autograd backward per sample (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import per_sample_gram

CLASSES = 3


pytestmark = pytest.mark.usefixtures("float64_default")


def loop_gram(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """JJᵀ from one backward per sample, each on that sample alone (eval-free models only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    jacobian = torch.stack(rows)
    return jacobian @ jacobian.T


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class LastState(nn.Module):
    """A recurrent classifier reading the final hidden state: LSTM's (out, (h, c)) is a nested
    output, GRU's h is (layers, B, H) even with batch_first."""

    def __init__(self, cell: type[nn.RNNBase], batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cell(3, 4, num_layers=2, batch_first=batch_first)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x if self.batch_first else x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


class Attention(nn.Module):
    """Multi-head attention, batch-first or sequence-first, with a padding mask passed by
    keyword (batch-sized) or not."""

    def __init__(self, batch_first: bool = True, masked: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.batch_first, self.masked = batch_first, masked
        self.encoder = nn.TransformerEncoderLayer(4, 2, 8, dropout=dropout,
                                                  batch_first=batch_first)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.masked:
            mask = torch.zeros(x.shape[:2], dtype=torch.bool)
            mask[:, -1] = True
        h = self.encoder(x if self.batch_first else x.transpose(0, 1), src_key_padding_mask=mask)
        return self.head((h if self.batch_first else h.transpose(0, 1))[:, 0])


CASES = {
    "lstm-final-state": (lambda: LastState(nn.LSTM), (5, 6, 3)),
    "gru-final-state": (lambda: LastState(nn.GRU), (5, 6, 3)),
    "lstm-sequence-first": (lambda: LastState(nn.LSTM, batch_first=False), (5, 6, 3)),
    "attention-key-padding-mask": (lambda: Attention(masked=True), (5, 4, 4)),
    "attention-sequence-first": (lambda: Attention(batch_first=False), (5, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fallback_equals_per_sample_backward(name: str) -> None:
    torch.manual_seed(sorted(CASES).index(name))
    build, shape = CASES[name]
    model = build().eval()
    x, y = torch.randn(*shape), torch.randint(0, CLASSES, (shape[0],))
    expected = loop_gram(model, x, y)
    gram = per_sample_gram(model, x, y, unsupported="torch.func", check=True)
    assert relative_error(gram, expected) < 1e-8


def test_fallback_refuses_random_modules_by_name() -> None:
    model = Attention(dropout=0.5).train()
    x, y = torch.randn(4, 5, 4), torch.randint(0, CLASSES, (4,))
    with pytest.raises(ConfigError, match="module 'encoder.self_attn' \\(MultiheadAttention\\) "
                                          "draws random numbers.*eval mode or use exact=True"):
        per_sample_gram(model, x, y, unsupported="torch.func")


def test_pruned_layers_go_to_the_fallback() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, CLASSES))
    nn.utils.prune.random_unstructured(model[0], "weight", amount=0.5)
    x, y = torch.randn(7, 5), torch.randint(0, CLASSES, (7,))
    with pytest.raises(ConfigError, match="'0' of type Linear .*pruned by torch.nn.utils.prune"):
        per_sample_gram(model, x, y)
    gram = per_sample_gram(model, x, y, unsupported="torch.func")
    assert relative_error(gram, loop_gram(model, x, y)) < 1e-8


def test_a_forward_hook_that_changes_an_output_is_differentiated_through() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, CLASSES))
    model[0].register_forward_hook(lambda module, args, out: 3.0 * out + 1.0)
    x, y = torch.randn(7, 5), torch.randint(0, CLASSES, (7,))
    assert relative_error(per_sample_gram(model, x, y), loop_gram(model, x, y)) < 1e-8


class Positions(nn.Module):
    """Token plus learned position embeddings: the positions torch.arange(T) are shared by
    all samples, not per-sample, though their size equals B when T = B."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(10, 4)
        self.positions = nn.Embedding(8, 4)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x) + self.positions(torch.arange(x.shape[1]))
        return self.head(torch.tanh(h).mean(dim=1))


def test_a_dimension_mistaken_for_the_batch_is_caught_by_the_check() -> None:
    torch.manual_seed(3)
    model = Positions()
    x, y = torch.randint(0, 10, (4, 4)), torch.randint(0, CLASSES, (4,))  # T = B
    exact = per_sample_gram(model, x, y, exact=True)
    assert relative_error(per_sample_gram(model, x, y, check=False), exact) > 1e-2
    for check in (True, None):  # None: the first call on this model checks
        with pytest.raises(ConfigError, match="samples are not measured independently.*"
                                              "torch.arange\\(T\\) with T = B.*exact=True"):
            per_sample_gram(Positions(), x, y, check=check)
    with pytest.raises(ConfigError, match="Embedding has shape \\(6,\\).*exact=True"):
        per_sample_gram(model, torch.randint(0, 10, (4, 6)), y)  # T != B: said at once


def test_sequence_first_attention_with_as_many_positions_as_samples_is_caught() -> None:
    torch.manual_seed(4)
    model = Attention(batch_first=False).eval()
    x, y = torch.randn(4, 4, 4), torch.randint(0, CLASSES, (4,))
    with pytest.raises(ConfigError, match="samples are not measured independently"):
        per_sample_gram(model, x, y, unsupported="torch.func")


def test_the_check_runs_once_per_model_by_default() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, CLASSES))
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.randn(6, 5), torch.randint(0, CLASSES, (6,))
    first = per_sample_gram(model, x, y)
    assert len(calls) == 3  # the batch, then the batch and a sub-batch in eval mode
    assert torch.equal(per_sample_gram(model, x, y), first) and len(calls) == 4


def test_inference_mode_is_refused_and_inference_tensors_accepted() -> None:
    model = nn.Sequential(nn.Linear(5, CLASSES))
    y = torch.randint(0, CLASSES, (3,))
    with torch.inference_mode():
        x = torch.randn(3, 5)
        with pytest.raises(ConfigError, match="outside torch.inference_mode"):
            per_sample_gram(model, x, y)
    assert relative_error(per_sample_gram(model, x, y), loop_gram(model, x.clone(), y)) < 1e-8


def test_the_check_leaves_a_diverged_model_to_give_nan() -> None:
    model = nn.Sequential(nn.Linear(5, CLASSES))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    gram = per_sample_gram(model, torch.randn(4, 5), torch.randint(0, CLASSES, (4,)))
    assert gram.shape == (4, 4) and not bool(torch.isfinite(gram).all())
