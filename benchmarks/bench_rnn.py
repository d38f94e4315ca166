"""Forward + backward time of seqbook_lib's RNN layers against torch.nn's.

    python benchmarks/bench_rnn.py [--quick] [--rounds N]

float32, default thread count. Targets (CPU): LSTM layer at most 1.5x
``nn.LSTM`` (which runs a fused oneDNN kernel on CPU), GRU layer at most 1.1x
``nn.GRU``. On a shared machine timings drift, so ours and torch's are timed
alternately for a few rounds and the fastest median of each is kept. When a
GPU is present the same rows are timed there too (ratios only, no targets).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

# _timing sits next to this script, which is run directly, not as a module.
sys.path.insert(0, os.path.dirname(__file__))

from _timing import bench_arguments, run_on_devices, time_fwd_bwd

from seqbook_lib.rnn import GRU, LSTM, RNN

SHAPE = {"B": 64, "T": 200, "I": 100, "H": 128}
TARGETS_CPU = {
    "LSTM layer B=64 T=200 I=100 H=128": 1.5,
    "GRU layer B=64 T=200 I=100 H=128": 1.1,
}


def cases(B, T, I, H):
    """(row name, our module class, torch's class, extra kwargs, use lengths)."""
    size = f"B={B} T={T} I={I} H={H}"
    return [
        (f"LSTM layer {size}", LSTM, nn.LSTM, {}, False),
        (f"GRU layer {size}", GRU, nn.GRU, {}, False),
        (f"RNN layer {size}", RNN, nn.RNN, {}, False),
        (
            f"biLSTM ragged {size}",
            LSTM,
            nn.LSTM,
            {"bidirectional": True},
            True,
        ),
    ]


def time_pair(ours, theirs, x, lengths, rounds, min_run_time):
    """Fastest-of-``rounds`` median times (ms) of ours and torch's, timed alternately."""
    pack = nn.utils.rnn.pack_padded_sequence
    unpack = nn.utils.rnn.pad_packed_sequence

    def run_ours():
        return ours(x, lengths=lengths)[0]

    def run_theirs():
        if lengths is None:
            return theirs(x)[0]
        packed = pack(x, lengths, enforce_sorted=False)
        return unpack(theirs(packed)[0], total_length=x.shape[0])[0]

    t_ours, t_theirs = [], []
    for _ in range(rounds):
        t_ours.append(time_fwd_bwd(run_ours, min_run_time))
        t_theirs.append(time_fwd_bwd(run_theirs, min_run_time))
    return min(t_ours), min(t_theirs)


def bench(device, rounds, min_run_time):
    B, T, I, H = SHAPE["B"], SHAPE["T"], SHAPE["I"], SHAPE["H"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=gen).to(device).requires_grad_(True)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T
    rows = []
    for name, ours_cls, theirs_cls, kwargs, ragged in cases(B, T, I, H):
        ours = ours_cls(I, H, **kwargs).to(device)
        theirs = theirs_cls(I, H, **kwargs).to(device)
        theirs.load_state_dict(ours.state_dict())
        rows.append(
            (
                name,
                *time_pair(
                    ours,
                    theirs,
                    x,
                    lengths if ragged else None,
                    rounds,
                    min_run_time,
                ),
            )
        )
    return rows


def main():
    parser = bench_arguments(__doc__)
    args = parser.parse_args()
    min_run_time = 0.3 if args.quick else 1.5

    torch.manual_seed(0)
    run_on_devices(bench, TARGETS_CPU, args.rounds, min_run_time)


if __name__ == "__main__":
    main()
