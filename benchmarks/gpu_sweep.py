"""Throughput of a scheduled sweep on one machine's GPUs: trials/hour and GPU utilisation.

Runs ``tune-batchdyn sweep`` (our scheduler, Ray) on the synthetic-image ResNet-20 space with
several trials per GPU, samples ``nvidia-smi`` once a second while it runs, and prints trials
and trial-epochs per hour of wall time (Ray's start and every trial's data generation
included) with the GPU's mean utilisation over the same time. Without a GPU it runs the same
path on the CPU (``--gpus-per-trial 0``, no utilisation); CI tests its parsing and figures
(tests/test_gpu_sweep_benchmark.py), not a whole run.

    python benchmarks/gpu_sweep.py                          # 4 trials per GPU, 120 trial-epochs
    python benchmarks/gpu_sweep.py --gpus-per-trial 0.125 --budget 400
    python benchmarks/gpu_sweep.py --time-budget 300          # at most five minutes
    python benchmarks/gpu_sweep.py --gpus-per-trial 0 --budget 4 \\
        --set epochs=2 --set 'dataset_options={"preset": "small", "n_train": 512}'   # CPU
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from tune_batchdyn.records.io import read_records

#: nvidia-smi fields sampled, in this order.
SMI_FIELDS = "utilization.gpu,memory.used"


def sample_gpus(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """Append (mean utilisation %, total memory MiB) over the visible GPUs once a second."""
    while not stop.wait(1.0):
        out = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False).stdout
        samples.extend(parse_smi(out))


def parse_smi(text: str) -> list[tuple[float, float]]:
    """One (mean utilisation, summed memory) sample from nvidia-smi's CSV rows, one per GPU."""
    rows = [[float(cell) for cell in line.split(",")] for line in text.splitlines()
            if line.strip() and "N/A" not in line]
    if not rows:
        return []
    return [(sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows))]


def throughput(records: pd.DataFrame, wall_s: float) -> dict[str, float]:
    """Trials and trial-epochs per hour of sweep wall time."""
    hours = wall_s / 3600.0
    return {"trials": records["trial_id"].nunique(), "trial_epochs": len(records),
            "trials_per_hour": records["trial_id"].nunique() / hours,
            "trial_epochs_per_hour": len(records) / hours}


def measure(args: argparse.Namespace, out: Path) -> int:
    """Run the sweep, sampling the GPUs meanwhile, and print its throughput; the exit status."""
    command = [sys.executable, "-m", "tune_batchdyn.cli", "sweep", "--space", args.space,
               "--budget", str(args.budget), "--out", str(out)]
    if args.gpus_per_trial > 0:
        command += ["--gpus-per-trial", str(args.gpus_per_trial)]
    if args.time_budget is not None:
        command += ["--time-budget", str(args.time_budget)]
    for override in args.set:
        command += ["--set", override]
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_gpus, args=(samples, stop), daemon=True)
    if shutil.which("nvidia-smi") and args.gpus_per_trial > 0:
        sampler.start()
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    returncode = subprocess.run(command, check=False).returncode
    wall = time.perf_counter() - start
    stop.set()
    if returncode != 0:  # the sweep has said why (e.g. no GPU here: --gpus-per-trial 0)
        return returncode
    figures = throughput(read_records(out), wall)
    print(f"\nwall {wall:.0f} s: {figures['trials']} trials, {figures['trial_epochs']} "
          f"trial-epochs; {figures['trials_per_hour']:.0f} trials/hour, "
          f"{figures['trial_epochs_per_hour']:.0f} trial-epochs/hour")
    if samples:
        utilisation = sum(s[0] for s in samples) / len(samples)
        memory = max(s[1] for s in samples)
        print(f"GPU utilisation {utilisation:.0f}% (mean of {len(samples)} one-second samples), "
              f"memory up to {memory:.0f} MiB")
    else:
        print("GPU utilisation: not sampled (no GPU per trial, or no nvidia-smi)")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="synthetic_resnet20")
    parser.add_argument("--gpus-per-trial", type=float, default=0.25)
    parser.add_argument("--budget", type=int, default=120, help="trial-epochs")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="end the sweep after this long, keeping what it trained")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--out", default=None,
                        help="keep the records here (.parquet, or .csv without pyarrow)")
    args = parser.parse_args()
    if args.out:
        sys.exit(measure(args, Path(args.out)))
    with tempfile.TemporaryDirectory(prefix="gpu-sweep-") as folder:
        status = measure(args, Path(folder) / "records.parquet")
    sys.exit(status)


if __name__ == "__main__":
    main()
