"""Shared timing helper for the benchmark scripts (not a test).

Times forward + backward of a callable with ``torch.utils.benchmark`` and
returns the median in milliseconds.
"""

from __future__ import annotations

import argparse
import platform
from typing import Callable

import torch
import torch.utils.benchmark as benchmark


def time_fwd_bwd(
    fn: Callable[[], torch.Tensor], min_run_time: float = 2.0
) -> float:
    """Median wall time in ms of ``fn().sum().backward()`` (``fn`` builds a fresh graph)."""

    def step():
        out = fn()
        out.sum().backward()

    step()  # warm-up: allocations, oneDNN primitive caches
    timer = benchmark.Timer(
        stmt="step()",
        globals={"step": step},
        num_threads=torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def machine_line(device: torch.device) -> str:
    """One line naming the hardware and software that produced a figure."""
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        hw = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"device={device.type} ({hw}); torch {torch.__version__}; python {platform.python_version()}"


def report(
    rows: list[tuple[str, float, float]], target: dict[str, float]
) -> bool:
    """Print name, ours, torch, ratio and target per row; True when every ratio meets its target."""
    ok = True
    print(
        f"{'benchmark':<34}{'ours ms':>10}{'torch ms':>10}{'ratio':>8}{'target':>8}"
    )
    for name, ours, ref in rows:
        ratio = ours / ref
        limit = target.get(name)
        flag = "" if limit is None or ratio <= limit else "  MISSED"
        ok &= flag == ""
        limit_s = f"{limit:.2f}" if limit is not None else "-"
        print(
            f"{name:<34}{ours:>10.2f}{ref:>10.2f}{ratio:>8.2f}{limit_s:>8}{flag}"
        )
    return ok


def run_on_devices(
    bench, targets_cpu, rounds: int, min_run_time: float, header=()
) -> bool:
    """Time ``bench(device, rounds, min_run_time)`` rows on the CPU, then on CUDA when present.

    Prints the machine line (and any ``header`` lines) before each table; only
    the CPU rows have targets. Returns True when every CPU target is met.
    """
    cpu = torch.device("cpu")
    print(machine_line(cpu))
    for line in header:
        print(line)
    ok = report(bench(cpu, rounds, min_run_time), targets_cpu)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print()
        print(machine_line(gpu))
        report(bench(gpu, rounds, min_run_time), {})
    print()
    print("all CPU targets met" if ok else "some CPU targets missed")
    return ok


def bench_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes: ``--quick`` and ``--rounds``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="shorter timing runs (noisier)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating timing rounds per row",
    )
    return parser
