"""Epoch time of our training loop against a plain DataLoader loop, measured in one run.

Both loops train the same model (same initialisation) with the same batch size and SGD settings
for one epoch over the same training split; ours gathers batches from tensors on the device,
the baseline iterates ``torch.utils.data.DataLoader(TensorDataset(...), shuffle=True)`` and
steps a default-built ``torch.optim.SGD`` (ours uses the fused kernels). Each
time is the median of ``--repeats`` epochs after one warm-up epoch. Measures are switched off
in both; a second table gives the cost of leaving C̄K/LK on (every 50 iterations, as the seed,
and every iteration) as the ratio of epoch times with and without. Ratio < 1: ours is faster.

    python benchmarks/engine.py                 # digits/mlp and synthetic/cnn on CPU
    python benchmarks/engine.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from tune_batchdyn.train import TrialConfig
from tune_batchdyn.train.engine import Trial

CASES = (("digits", "mlp"), ("synthetic", "cnn"))


def our_epoch(trial: Trial) -> float:
    start = time.perf_counter()
    trial._train_epoch()
    return time.perf_counter() - start


def textbook_optimizer(trial: Trial) -> torch.optim.SGD:
    """``torch.optim.SGD`` as a plain script makes it (default implementation), same settings."""
    config = trial.config
    return torch.optim.SGD(trial.model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def dataloader_epoch(trial: Trial, loader: DataLoader, optimizer: torch.optim.SGD) -> float:
    """The textbook loop: DataLoader batches, host-to-device copy, mean loss, backward, step."""
    model, device = trial.model, trial.device
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    # same bookkeeping as ours: validation and test error once per epoch
    trial.error(trial.data.val_x, trial.data.val_y)
    trial.error(trial.data.test_x, trial.data.test_y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(dataset: str, model: str, batch_size: int, device: str, repeats: int) -> tuple:
    config = TrialConfig(dataset=dataset, model=model, batch_size=batch_size, lr=0.01,
                         epochs=100, measures=(), device=device)
    ours_trial, base_trial = Trial(config), Trial(config)
    cpu = ours_trial.data.to("cpu")
    loader = DataLoader(TensorDataset(cpu.train_x, cpu.train_y), batch_size=batch_size,
                        shuffle=True, pin_memory=ours_trial.device.type == "cuda")
    optimizer = textbook_optimizer(base_trial)
    our_epoch(ours_trial), dataloader_epoch(base_trial, loader, optimizer)  # warm-up
    ours, base = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        ours.append(our_epoch(ours_trial))
        base.append(dataloader_epoch(base_trial, loader, optimizer))
    return statistics.median(ours), statistics.median(base)


def measure_overhead(dataset: str, model: str, batch_size: int, every: int, device: str,
                     repeats: int) -> tuple[float, float]:
    """Epoch time with C̄K/LK measured every ``every`` iterations, and without measures."""
    base = dict(dataset=dataset, model=model, batch_size=batch_size, lr=0.01, epochs=100,
                device=device)
    plain = Trial(TrialConfig(**base, measures=()))
    measured = Trial(TrialConfig(**base, measures=("fisher",), measure_every=every))
    our_epoch(plain), our_epoch(measured)  # warm-up
    with_m, without = [], []
    for _ in range(repeats):
        with_m.append(our_epoch(measured))
        without.append(our_epoch(plain))
    return statistics.median(with_m), statistics.median(without)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="32,128,512")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'case':<16}{'batch':>6}{'ours s/epoch':>14}{'DataLoader s/epoch':>20}{'ratio':>8}")
    worst = 0.0
    for dataset, model in CASES:
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            ours, base = measure(dataset, model, batch_size, args.device, args.repeats)
            worst = max(worst, ours / base)
            print(f"{dataset + '/' + model:<16}{batch_size:>6}{ours:>14.3f}{base:>20.3f}"
                  f"{ours / base:>8.2f}", flush=True)
    print(f"worst ratio ours/DataLoader: {worst:.2f}")
    print("\nC̄K/LK left on: epoch time with / without measures (batch 128)")
    print(f"{'case':<16}{'every':>6}{'with s':>10}{'without s':>11}{'ratio':>8}")
    for dataset, model in CASES:
        for every in (50, 1):
            with_m, without = measure_overhead(dataset, model, 128, every, args.device,
                                               args.repeats)
            print(f"{dataset + '/' + model:<16}{every:>6}{with_m:>10.3f}{without:>11.3f}"
                  f"{with_m / without:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
