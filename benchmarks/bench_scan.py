"""Forward + backward time of the scan-based layers against their step loops.

    python benchmarks/bench_scan.py [--quick] [--rounds N] [--threads N]
                                    [--lengths T ...] [--default-malloc]

float32, 2 CPU threads by default, at T = 256, 1024 and 4096 (``--lengths``
picks others, e.g. ``--quick --rounds 1 --lengths 16 32`` for a smoke run):

* ``MinGRU`` (B=4, I=H=64) with ``mode="parallel"`` (the log-space scan:
  one cumsum and one logcumsumexp over T) against ``mode="sequential"``
  (T dependent steps), and ``nn.GRU`` at the same sizes (batch_first) as
  the reference recurrent layer;
* ``SelectiveSSM`` (B=4, D=64, N=16) with ``mode="scan"`` (the
  work-efficient associative scan over the (B, T, D, N) states) against
  ``mode="sequential"``.

No targets: the rows show how the parallel forms scale with T compared to
a loop whose cost is T times the per-step overhead. On a shared machine
timings drift, so the variants are timed alternately for a few rounds and
the fastest median of each is kept. When a GPU is present the same rows are
timed there too.

The SSM's (B, T, D, N) tensors are 16 MiB at T=1024 and 64 MiB at T=4096,
blocks that glibc's malloc hands back to the operating system when freed;
like ``bench_attention.py`` (see its docstring), the script restarts itself
with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` raised, for
every row; ``--default-malloc`` keeps glibc's defaults.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

# _timing sits next to this script, which is run directly, not as a module.
sys.path.insert(0, os.path.dirname(__file__))

from _timing import bench_arguments, machine_line, time_fwd_bwd  # noqa: E402
from bench_attention import MALLOC_ENV, restart_with_malloc_env  # noqa: E402

from seqbook_lib.minrnn import MinGRU  # noqa: E402
from seqbook_lib.ssm import SelectiveSSM  # noqa: E402

LENGTHS = (256, 1024, 4096)
B, H = 4, 64  # batch and hidden size (MinGRU, nn.GRU), channels (SSM)
N = 16  # SSM state size per channel
VARIANTS = ("mingru_par", "mingru_seq", "gru", "ssm_scan", "ssm_seq")


def runners(device, T):
    """{variant: function building a fresh graph and returning its output}
    for one sequence length."""
    gen = torch.Generator().manual_seed(T)
    x = torch.randn(B, T, H, generator=gen).to(device).requires_grad_(True)
    torch.manual_seed(0)
    mingru = MinGRU(H, H).to(device)
    gru = nn.GRU(H, H, batch_first=True).to(device)
    ssm = SelectiveSSM(H, N).to(device)
    return {
        "mingru_par": lambda: mingru(x, mode="parallel")[0],
        "mingru_seq": lambda: mingru(x, mode="sequential")[0],
        "gru": lambda: gru(x)[0],
        "ssm_scan": lambda: ssm(x, mode="scan")[0],
        "ssm_seq": lambda: ssm(x, mode="sequential")[0],
    }


def bench(device, lengths, rounds: int, min_run_time: float) -> dict:
    """{T: {variant: fastest median ms}} for each T in ``lengths``."""
    results = {}
    for T in lengths:
        run = runners(device, T)
        times = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name in VARIANTS:
                times[name].append(time_fwd_bwd(run[name], min_run_time))
        results[T] = {name: min(ts) for name, ts in times.items()}
    return results


def report(results: dict) -> None:
    """One row per T: the times in ms and the ratios."""
    header = (
        f"{'T':>5}  {'minGRU par':>10} {'minGRU seq':>10} {'seq/par':>7}"
        f"  {'nn.GRU':>8} {'par/GRU':>7}"
        f"  {'SSM scan':>9} {'SSM seq':>9} {'seq/scan':>8}"
    )
    print(header)
    for T, r in results.items():
        print(
            f"{T:>5}  {r['mingru_par']:>10.2f} {r['mingru_seq']:>10.2f}"
            f" {r['mingru_seq'] / r['mingru_par']:>7.1f}"
            f"  {r['gru']:>8.2f} {r['mingru_par'] / r['gru']:>7.2f}"
            f"  {r['ssm_scan']:>9.2f} {r['ssm_seq']:>9.2f}"
            f" {r['ssm_seq'] / r['ssm_scan']:>8.1f}"
        )


def main():
    parser = bench_arguments(__doc__)
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (default 2)"
    )
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=list(LENGTHS),
        metavar="T",
        help="sequence lengths (default 256 1024 4096)",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc settings",
    )
    args = parser.parse_args()
    if not args.default_malloc:
        restart_with_malloc_env()
    tuned = all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())
    malloc = " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
    min_run_time = 0.3 if args.quick else 1.5
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        print(machine_line(device))
        print(f"B={B}, I=H=D={H}, N={N}, float32, forward + backward, ms")
        print(f"malloc: {malloc if tuned else 'default'}")
        report(bench(device, args.lengths, args.rounds, min_run_time))
        print()


if __name__ == "__main__":
    main()
