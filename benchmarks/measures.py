"""Cost of the measures against one training step and against straightforward baselines.

Everything is measured in one run, on the CPU with a fixed number of torch threads (default 1,
printed in the header) or on a GPU (``--device cuda``: timers wait for the queued kernels, and
the Gram table adds how far each Gram is from the same model's Gram on the CPU); each time
is the minimum over ``--repeats`` runs after a warm-up (the minimum is the least disturbed by
other processes on a shared machine; the Gram and the training step it is divided by are timed
in turn, ABAB...). Three tables:

1. Gram F̃ of a batch of 128 (training mode, as during training): time / one training step
   (forward + backward + SGD-momentum step; targets <= 1.5 MLPs, <= 2.0 conv nets), and the
   speed-up against torch.func per-sample gradients (vmap over grad) accumulated per layer
   (target >= 1.5x), against BackPACK's BatchGrad (when installed: ``pip install -e
   ".[bench]"``) and against a per-sample loop of autograd calls; and the time of c_k from
   that Gram (its eigenvalues), on a GPU also with the Gram moved to the CPU first. For
   batch-norm models the vmap baseline runs on a copy whose batch-norm keeps no running
   statistics (vmap cannot update them), which only changes its numbers, not its cost.
2. λmax to a relative tolerance of 1e-2 (eval mode, as the seed): Hessian-vector products
   and time / training step for ours (Lanczos, residual rule), our power iteration, and
   PyHessian-style power iteration (stop when θ changes by < 1e-2, relative), with each
   result's error against a tight reference (Lanczos to 1e-7); plus the products the
   PyHessian-style iteration needs before its estimate is really within 1e-2 (known only with
   the reference, searched up to 40); the block Hessian of the last layer (the seed's cheaper
   variant, error against its own reference); ours cold from 8 start vectors (products mean
   and range, the largest error, how many stopped more than 1e-2 off); and the ms per product
   of the two HVP implementations.
3. network_quality on resnet20/resnet56: time / training step, and batched EVBMF against a
   per-matrix SVD + scipy.optimize.minimize_scalar implementation (the RMSGD reference code's
   approach), on the largest layers (64×576 unfoldings) and on all layers.

    python benchmarks/measures.py                # all tables, 1 thread
    python benchmarks/measures.py --threads 2 --repeats 5 --tables gram
    python benchmarks/measures.py --device cuda  # the same tables on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn
from torch.func import functional_call, grad, vmap

from tune_batchdyn.measures import (
    ConvergenceWarning,
    hessian_top_eigenvalue,
    network_quality,
    per_sample_gram,
    truncated_condition,
)
from tune_batchdyn.measures.evbmf import evbmf_batched
from tune_batchdyn.measures.hvp import make_hvp, vector_dtype
from tune_batchdyn.measures.quality import unfold_weight
from tune_batchdyn.train.models import build_model

T = TypeVar("T")

BATCH = 128
#: (label, model name, input shape)
GRAM_CASES = (
    ("mlp 64-500-500-10", "mlp", (64,)),
    ("mlp 784-500-500-10", "mlp", (1, 28, 28)),
    ("cnn 32x32", "cnn", (3, 32, 32)),
    ("resnet20 32x32 BN", "resnet20", (3, 32, 32)),
)
HESSIAN_CASES = GRAM_CASES[0:1] + GRAM_CASES[2:]
#: Start vectors (seeds 0..N-1) of the cold λmax spread row.
START_SEEDS = 8
#: Where models and batches live (``--device``).
DEVICE = torch.device("cpu")


def clock() -> float:
    """Wall time once the accelerator's queued work has finished (CUDA kernels run
    asynchronously, so an unsynchronised timer would see only their launches)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def best_run(fn: Callable[[], T], repeats: int) -> tuple[T, float]:
    """``fn``'s result and its minimum wall time over ``repeats`` calls (fn is seeded: every
    call does the same work), timed like the training step it is divided by."""
    times = []
    for _ in range(max(1, repeats)):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return result, min(times)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time over ``repeats`` calls after one warm-up call."""
    fn()
    return best_run(fn, repeats)[1]


def interleaved_best(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Minimum wall time of each function, the functions called in turn (ABAB...), so that
    they all see the same load on a shared machine."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = clock()
            fn()
            best[k] = min(best[k], clock() - start)
    return best


def make_case(name: str, shape: tuple[int, ...], seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    model = build_model(name, shape, 10)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *shape, generator=generator)
    y = torch.randint(0, 10, (BATCH,), generator=generator)
    return model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """Forward + backward + SGD step (momentum 0.9) of a copy of the model."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def training_step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       repeats: int) -> float:
    return best_time(training_step(model, x, y), repeats)


# --- 1. Gram ---------------------------------------------------------------------------------


def vmap_gram(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Baseline: torch.func per-sample gradients, Gram accumulated parameter by parameter."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    gram = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)
    for g in grads.values():
        rows = g.reshape(len(x), -1).to(torch.float64)
        gram.addmm_(rows, rows.T)
    return gram


def backpack_gram(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | str:
    """Baseline: BackPACK's BatchGrad on a copy of the model (per-sample gradients of the summed
    loss, from each layer's hooks), Gram accumulated per parameter; or why it cannot run."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad
    except ImportError:
        return "BackPACK not installed (pip install -e \".[bench]\")"
    twin = extend(copy.deepcopy(model))
    loss = extend(nn.CrossEntropyLoss(reduction="sum"))

    def gram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        twin.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # its notes on batch-norm in training mode
            warnings.simplefilter("ignore", UserWarning)
            with backpack(BatchGrad()):
                loss(twin(x), y).backward()
        result = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)
        for p in twin.parameters():
            rows = p.grad_batch.reshape(len(x), -1).to(torch.float64)
            result.addmm_(rows, rows.T)
        return result

    return gram


def loop_gram(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Baseline: one autograd call per sample (the seed's approach), Gram per parameter."""
    params = list(model.parameters())
    rows = [torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1],
                                                reduction="sum"), params)
            for i in range(len(x))]
    gram = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)
    for k in range(len(params)):
        block = torch.stack([r[k].reshape(-1) for r in rows]).to(torch.float64)
        gram.addmm_(block, block.T)
    return gram


def without_running_stats(model: nn.Module) -> nn.Module:
    """A copy whose batch-norm layers use batch statistics only (what vmap can run)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return twin


def distance_from_cpu_gram(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """‖F̃_device − F̃_cpu‖ / ‖F̃_cpu‖ for the same weights and batch (float32 forward and
    backward on both; cuDNN may run convolutions in TF32)."""
    on_device = per_sample_gram(model, x, y).cpu()
    on_cpu = per_sample_gram(copy.deepcopy(model).cpu(), x.cpu(), y.cpu())
    return float((on_device - on_cpu).norm() / on_cpu.norm())


def gram_table(repeats: int) -> None:
    print("\n1. Per-sample gradient Gram, B = 128, training mode")
    print(f"{'model':<20} {'step ms':>8} {'gram ms':>8} {'gram/step':>9} "
          f"{'vmap ms':>8} {'speed-up':>8} {'BackPACK':>8} {'speed-up':>8} "
          f"{'loop ms':>8} {'speed-up':>8} {'c_k ms':>7}"
          + ("" if DEVICE.type == "cpu" else f" {'on CPU':>7} vs CPU rel"))
    notes = set()
    for label, name, shape in GRAM_CASES:
        model, x, y = make_case(name, shape)
        model.train()
        step, ours = interleaved_best(
            [training_step(model, x, y), lambda m=model, x=x, y=y: per_sample_gram(m, x, y)],
            repeats)
        twin = without_running_stats(model)
        base = best_time(lambda m=twin, x=x, y=y: vmap_gram(m, x, y), max(1, repeats // 2))
        backpack = backpack_gram(model)
        if isinstance(backpack, str):
            notes.add(backpack)
            backpack_cells = f"{'-':>8} {'-':>8}"
        else:
            other = best_time(lambda g=backpack, x=x, y=y: g(x, y), max(1, repeats // 2))
            backpack_cells = f"{1e3 * other:8.1f} {other / ours:7.1f}x"
        loop = best_time(lambda m=model, x=x, y=y: loop_gram(m, x, y), 1)
        gram = per_sample_gram(model, x, y)
        condition = best_time(lambda g=gram: truncated_condition(g), repeats)
        on_cpu = ("" if DEVICE.type == "cpu" else
                  f" {1e3 * best_time(lambda g=gram: truncated_condition(g.cpu()), repeats):7.2f}"
                  f" {distance_from_cpu_gram(model, x, y):10.1e}")
        print(f"{label:<20} {1e3 * step:8.1f} {1e3 * ours:8.1f} {ours / step:9.2f} "
              f"{1e3 * base:8.1f} {base / ours:7.1f}x {backpack_cells} "
              f"{1e3 * loop:8.1f} {loop / ours:7.1f}x {1e3 * condition:7.2f}{on_cpu}")
    for note in sorted(notes):
        print(f"  {note}")


# --- 2. Hessian ------------------------------------------------------------------------------


def pyhessian_power(product: Callable, start: torch.Tensor, tol: float, max_iter: int,
                    reference: float) -> tuple[float, int, float, int | None]:
    """PyHessian's rule: stop when |θ_k − θ_{k−1}| / (|θ_{k−1}| + 1e-6) < tol. Returns its θ,
    its product count and time, and — iterating on past its stop, up to ``max_iter`` — the
    first product count whose θ was really within tol of the reference."""
    vector, previous, stopped, accurate_at = start, None, None, None
    begin = clock()
    for step in range(1, max_iter + 1):
        out = product(vector)
        value = float(vector @ out)
        if accurate_at is None and abs(value - reference) <= tol * abs(reference):
            accurate_at = step
        if (stopped is None and previous is not None
                and abs(value - previous) / (abs(previous) + 1e-6) < tol):
            stopped = (value, step, clock() - begin)
        if stopped is not None and accurate_at is not None:
            break
        previous, vector = value, out / out.norm()
    if stopped is None:
        stopped = (value, max_iter, clock() - begin)
    return (*stopped, accurate_at)


def pyhessian_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  reference: float) -> tuple[float, int, float, int | None]:
    """`pyhessian_power` from start vector 0 on the model's eval-mode Hessian; its time
    includes building the graph the products differentiate."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    graph_start = clock()
    product = make_hvp(model, x, y, None, params)
    graph = clock() - graph_start
    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(sum(p.numel() for p in params), generator=generator,
                         dtype=vector_dtype(params)).to(params[0].device)
    value, count, elapsed, accurate_at = pyhessian_power(product, vector / vector.norm(),
                                                         1e-2, 40, reference)
    model.train()
    return value, count, graph + elapsed, accurate_at


def hvp_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
           repeats: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    product = make_hvp(model, x, y, None, params, method)
    vector = torch.randn(sum(p.numel() for p in params), dtype=vector_dtype(params),
                         device=params[0].device)
    elapsed = best_time(lambda: product(vector), repeats)
    model.train()
    return 1e3 * elapsed


def trained_briefly(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 30) -> None:
    """A few SGD steps on the batch, so the spectrum is not that of the initialisation."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def last_layer(model: nn.Module) -> nn.Module:
    """The last module (in registration order) that owns parameters: the block Hessian's."""
    return [m for m in model.modules() if list(m.parameters(recurse=False))][-1]


def eigenvector_estimate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The eigenvector estimate a trial keeps from its last λmax (tol 1e-2)."""
    return hessian_top_eigenvalue(model, x, y, return_info=True).vector


def later_rows(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: float,
               previous: torch.Tensor, repeats: int) -> None:
    """λmax 50 SGD steps later, as the next measurement of a trial: cold (random start) and
    warm-started from the previous measurement's eigenvector (what trials do); each the best
    of ``repeats`` runs (seeded: the same work every run), like the step it is divided by."""
    trained_briefly(model, x, y, steps=50)
    reference = hessian_top_eigenvalue(model, x, y, tol=1e-7, max_iter=300)
    start_seed_row(label, model, x, y, step, reference, method="50 later, cold")
    for name, start in (("cold", None), ("warm-started", previous)):
        result, elapsed = best_run(lambda start=start: hessian_top_eigenvalue(
            model, x, y, start=start, return_info=True), repeats)
        error = abs(result.eigenvalue - reference) / abs(reference)
        print(f"{label:<20} {'50 steps later, ' + name:<24} {result.n_hvp:5d} {error:8.1e} "
              f"{1e3 * elapsed:8.0f} {elapsed / step:6.1f}")


def start_seed_row(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: float,
                   reference: float, seeds: int = START_SEEDS,
                   method: str = "ours lanczos") -> None:
    """Cold λmax from ``seeds`` start vectors: products mean (min-max), the largest error,
    and how many stopped more than tol off (on another eigenvalue: the residual rule bounds
    the distance to *an* eigenvalue, not to the top one)."""
    counts, errors, times = [], [], []
    for seed in range(seeds):
        begin = clock()
        result = hessian_top_eigenvalue(model, x, y, seed=seed, return_info=True)
        times.append(clock() - begin)
        counts.append(result.n_hvp)
        errors.append(abs(result.eigenvalue - reference) / abs(reference))
    missed = sum(error > 1e-2 for error in errors)
    mean_time = sum(times) / seeds
    print(f"{label:<20} {f'{method}, {seeds} starts':<24} {sum(counts) / seeds:5.1f} "
          f"{max(errors):8.1e} {1e3 * mean_time:8.0f} {mean_time / step:6.1f}  "
          f"(products {min(counts)}-{max(counts)}; {missed} of {seeds} off by > 1e-2)")


def hessian_table(repeats: int) -> None:
    print("\n2. Top Hessian eigenvalue to tol 1e-2 (eval mode), B = 128, after 30 SGD steps")
    print(f"{'model':<20} {'method':<24} {'HVPs':>5} {'rel.err':>8} {'ms':>8} {'/step':>6}")
    for label, name, shape in HESSIAN_CASES:
        model, x, y = make_case(name, shape)
        trained_briefly(model, x, y)
        step = training_step_time(model, x, y, repeats)
        reference = hessian_top_eigenvalue(model, x, y, tol=1e-7, max_iter=300)
        rows = []
        for method in ("lanczos", "power"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                result, elapsed = best_run(
                    lambda m=method, model=model, x=x, y=y: hessian_top_eigenvalue(
                        model, x, y, method=m, max_iter=300, return_info=True), repeats)
            name_ = f"ours {method}" + ("" if result.converged else " (not conv.)")
            rows.append((name_, result.n_hvp, result.eigenvalue, elapsed))
        runs = [pyhessian_run(model, x, y, reference) for _ in range(max(1, repeats))]
        value, count, elapsed, accurate_at = min(runs, key=lambda run: run[2])  # fastest
        rows.append(("PyHessian-style power", count, value, elapsed))
        last = [p for p in last_layer(model).parameters()]
        block_reference = hessian_top_eigenvalue(model, x, y, tol=1e-7, max_iter=300,
                                                 params=last)
        block, elapsed = best_run(
            lambda model=model, x=x, y=y, last=last: hessian_top_eigenvalue(
                model, x, y, params=last, return_info=True), repeats)
        for method_name, count, value, elapsed_ in rows:
            error = abs(value - reference) / abs(reference)
            print(f"{label:<20} {method_name:<24} {count:5d} {error:8.1e} "
                  f"{1e3 * elapsed_:8.0f} {elapsed_ / step:6.1f}")
        error = abs(block.eigenvalue - block_reference) / abs(block_reference)
        print(f"{label:<20} {'ours lanczos, last layer':<24} {block.n_hvp:5d} {error:8.1e} "
              f"{1e3 * elapsed:8.0f} {elapsed / step:6.1f}")
        start_seed_row(label, model, x, y, step, reference)
        print(f"{'':<20} PyHessian-style power needs "
              f"{accurate_at if accurate_at is not None else '> 40'} HVPs to be within 1e-2")
        later_rows(label, model, x, y, step, eigenvector_estimate(model, x, y), repeats)
        double = hvp_ms(model, x, y, "double_backward", repeats)
        forward = hvp_ms(model, x, y, "forward_over_reverse", max(1, repeats // 2))
        print(f"{'':<20} ms per HVP: double backward {double:.1f}, "
              f"forward-over-reverse {forward:.1f}; training step {1e3 * step:.1f}")


# --- 3. quality ------------------------------------------------------------------------------


def reference_evbmf_values(matrix: np.ndarray) -> np.ndarray:
    """Per-matrix SVD + scipy bounded scalar minimisation of the EVB free energy."""
    y = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    rows, cols = y.shape
    gamma = np.linalg.svd(y, compute_uv=False)
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    start = math.ceil(rows / (1 + alpha)) - 1
    lower = max(gamma[start] ** 2 / (cols * x_bar), np.mean(gamma[start:] ** 2) / cols)
    upper = np.sum(gamma**2) / (rows * cols)

    def energy(sigma2: float) -> float:
        x = gamma**2 / (cols * sigma2)
        big, small = x[x > x_bar], x[x <= x_bar]
        tau = 0.5 * (big - (1 + alpha) + np.sqrt((big - (1 + alpha)) ** 2 - 4 * alpha))
        return float(np.sum(small - np.log(small)) + np.sum(big - tau)
                     + np.sum(np.log((tau + 1) / big)) + alpha * np.sum(np.log(tau / alpha + 1)))

    sigma2 = minimize_scalar(energy, bounds=(lower, upper), method="bounded").x
    kept = gamma[gamma > math.sqrt(cols * sigma2 * x_bar)]
    ratio = (rows + cols) * sigma2 / kept**2
    return kept / 2 * (1 - ratio + np.sqrt((1 - ratio) ** 2
                                           - 4 * rows * cols * sigma2**2 / kept**4))


def unfoldings(model: nn.Module) -> list[torch.Tensor]:
    matrices = []
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            weight = module.weight.detach()
            modes = ("matrix",) if weight.dim() == 2 else ("input", "output")
            matrices += [unfold_weight(weight, mode) for mode in modes]
    return matrices


def batched_by_shape(matrices: list[torch.Tensor]) -> None:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for matrix in matrices:
        groups.setdefault(tuple(matrix.shape), []).append(matrix)
    for same in groups.values():
        evbmf_batched(torch.stack(same))


def quality_table(repeats: int) -> None:
    print("\n3. network_quality (EVBMF of every Linear/Conv weight, both conv unfoldings)")
    print(f"{'model':<10} {'layers':>6} {'Q ms':>8} {'Q/step':>7} | {'matrices':<16} "
          f"{'batched ms':>10} {'SVD+scipy ms':>12} {'speed-up':>8}")
    for name in ("resnet20", "resnet56"):
        model, x, y = make_case(name, (3, 32, 32))
        trained_briefly(model, x, y, steps=20)
        step = training_step_time(model, x, y, repeats)
        ours = best_time(lambda m=model: network_quality(m), repeats)
        layers = len(network_quality(model)["layers"])
        matrices = unfoldings(model)
        largest = [m for m in matrices if tuple(m.shape) == (64, 576)]
        for label, chosen in ((f"{len(largest)} of 64x576", largest),
                              (f"all {len(matrices)}", matrices)):
            batched = best_time(lambda c=chosen: batched_by_shape(c), repeats)
            arrays = [m.double().cpu().numpy() for m in chosen]
            reference = best_time(lambda a=arrays: [reference_evbmf_values(m) for m in a],
                                  max(1, repeats // 2))
            head = (f"{name:<10} {layers:6d} {1e3 * ours:8.1f} {ours / step:7.2f}"
                    if label.startswith(str(len(largest))) else " " * 34)
            print(f"{head} | {label:<16} {1e3 * batched:10.1f} {1e3 * reference:12.1f} "
                  f"{reference / batched:7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", nargs="+", default=["gram", "hessian", "quality"],
                        choices=["gram", "hessian", "quality"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    where = (torch.cuda.get_device_name() if DEVICE.type == "cuda"
             else f"CPU, torch.set_num_threads({args.threads})")
    print(f"torch {torch.__version__}, {where}, best of {args.repeats} after a warm-up")
    tables = {"gram": gram_table, "hessian": hessian_table, "quality": quality_table}
    for table in args.tables:
        tables[table](args.repeats)


if __name__ == "__main__":
    main()
