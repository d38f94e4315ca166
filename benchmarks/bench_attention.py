"""Forward + backward time of seqbook_lib's attention against torch's.

    python benchmarks/bench_attention.py [--quick] [--rounds N] [--threads N]

float32, B=32, h=4 heads, L=S=256, head size d=64 (E = h*d = 256), 2 CPU
threads by default. The library has two ways to compute attention, and the
rows time them separately, each against the torch code that does the same work:

1. ``scaled_dot_product_attention(q, k, v)`` -- the teaching version. It spells
   out softmax(Q K^T * scale) V and returns the (L, S) weights, so it builds
   and stores that matrix; torch's ``F.scaled_dot_product_attention`` runs a
   fused (flash) kernel that never does. Target: at most 2.0x.
2. ``scaled_dot_product_attention(q, k, v, need_weights=False)`` -- the path
   ``MultiHeadAttention(need_weights=False)`` takes for its attention core: our
   argument checks, then torch's fused kernel. Against the bare
   ``F.scaled_dot_product_attention`` this measures our overhead. Target: 1.1x.
3. ``MultiHeadAttention`` against ``nn.MultiheadAttention``, whole modules
   (projections included), self-attention, with need_weights=False (both take
   the fused kernel; target 1.1x) and with need_weights=True (both build the
   weights; ours with the teaching version; no target, for information).
4. With a causal mask (no targets, for information): the fused kernel skips
   the blocks above the diagonal, the teaching version cannot.

On a shared machine timings drift, so ours and torch's are timed alternately
for a few rounds and the fastest median of each is kept. When a GPU is present
the rows are timed there too (ratios only, no targets).

Memory allocator. At this shape one (B, h, L, S) float32 matrix is exactly
32 MiB, and glibc's malloc hands blocks of 32 MiB and more straight back to the
operating system when they are freed. The teaching version then page-faults
on about 110 MB of fresh memory in every step (measured: ~28k minor faults per
forward + backward), which costs as much as a third of its time on this
machine and has nothing to do with attention. PyTorch's CPU tuning guide
recommends an allocator that keeps such blocks (jemalloc, tcmalloc); this
script gets the same effect from glibc by restarting itself with
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set (on Linux with
glibc). Both sides run under the same setting; ``--default-malloc`` turns it off.
"""

from __future__ import annotations

import os
import platform
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(
    0, os.path.dirname(__file__)
)  # for _timing, when run as a script

from _timing import bench_arguments, run_on_devices, time_fwd_bwd  # noqa: E402

from seqbook_lib.attention import (
    MultiHeadAttention,
    scaled_dot_product_attention,
)  # noqa: E402

SHAPE = dict(B=32, h=4, L=256, d=64)
TARGETS_CPU = {
    "SDPA teaching (weights) vs fused": 2.0,
    "SDPA need_weights=False vs fused": 1.1,
    "MHA need_weights=False vs torch": 1.1,
}


def time_pair(run_ours, run_theirs, rounds, min_run_time):
    """Fastest-of-``rounds`` median times (ms) of ours and torch's, timed alternately."""
    t_ours, t_theirs = [], []
    for _ in range(rounds):
        t_ours.append(time_fwd_bwd(run_ours, min_run_time))
        t_theirs.append(time_fwd_bwd(run_theirs, min_run_time))
    return min(t_ours), min(t_theirs)


def cases(device):
    """(row name, our callable, torch's callable); each returns a tensor to sum and backpropagate."""
    B, h, L, d = SHAPE["B"], SHAPE["h"], SHAPE["L"], SHAPE["d"]
    E = h * d
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(B, h, L, d, generator=gen).to(device).requires_grad_(True)
        for _ in range(3)
    )
    x = torch.randn(B, L, E, generator=gen).to(device).requires_grad_(True)
    ours = MultiHeadAttention(E, h, batch_first=True).to(device)
    theirs = nn.MultiheadAttention(E, h, batch_first=True).to(device)
    theirs.load_state_dict(ours.state_dict())
    blocked = torch.ones(L, L, dtype=torch.bool, device=device).triu(
        1
    )  # nn.MultiheadAttention: True = blocked

    fused = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    return [
        (
            "SDPA teaching (weights) vs fused",
            lambda: scaled_dot_product_attention(q, k, v)[0],
            fused,
        ),
        (
            "SDPA need_weights=False vs fused",
            lambda: scaled_dot_product_attention(q, k, v, need_weights=False)[
                0
            ],
            fused,
        ),
        (
            "MHA need_weights=False vs torch",
            lambda: ours(x, x, x, need_weights=False)[0],
            lambda: theirs(x, x, x, need_weights=False)[0],
        ),
        (
            "MHA need_weights=True vs torch",
            lambda: ours(x, x, x, need_weights=True)[0],
            lambda: theirs(x, x, x, need_weights=True)[0],
        ),
        (
            "SDPA teaching causal vs fused",
            lambda: scaled_dot_product_attention(q, k, v, is_causal=True)[0],
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        ),
        (
            "MHA causal mask, no weights",
            lambda: ours(x, x, x, attn_mask=blocked, need_weights=False)[0],
            lambda: theirs(x, x, x, attn_mask=blocked, need_weights=False)[0],
        ),
    ]


def bench(device, rounds, min_run_time):
    return [
        (name, *time_pair(a, b, rounds, min_run_time))
        for name, a, b in cases(device)
    ]


MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}


def restart_with_malloc_env() -> None:
    """Re-run this script with glibc's malloc keeping large blocks (see the module docstring)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    sys.stdout.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.argv],
        {**os.environ, **MALLOC_ENV},
    )


def main():
    parser = bench_arguments(__doc__)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads (the targets are for 2)",
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
    min_run_time = 0.3 if args.quick else 1.5
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    shape = ", ".join(f"{k}={v}" for k, v in SHAPE.items())
    malloc = (
        " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
        if tuned
        else "default"
    )
    header = [
        f"shape: {shape}, float32, forward + backward",
        f"malloc: {malloc}",
    ]
    run_on_devices(bench, TARGETS_CPU, args.rounds, min_run_time, header)


if __name__ == "__main__":
    main()
