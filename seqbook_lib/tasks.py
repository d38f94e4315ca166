"""Synthetic sequence tasks that need memory, and a small model to learn them.

- :func:`delayed_recall` -- remember a marked symbol while distractor symbols
  of the same alphabet stream past; at step t the symbol lies t steps back.
- :func:`adding_problem` -- add the two marked numbers of a long sequence
  (the task of Hochreiter & Schmidhuber, 1997).
- :class:`RecurrentClassifier` -- a ``torch.nn`` RNN, LSTM or GRU with a
  linear read-out at every step.
- :func:`train_recall`, :func:`recall_accuracy` -- fit a classifier on delayed
  recall and score it at every delay.

The models use ``torch.nn``'s fused layers because chapters train them; the
book's own layers (:mod:`seqbook_lib.rnn`) load their state dicts unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_positive_int, check_rank, check_size

_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator or None, "
            f"got {type(generator).__name__}"
        )


class RecallBatch(NamedTuple):
    """A batch of the delayed-recall task."""

    inputs: torch.Tensor  # (B, T, S + 1): one-hot symbol, then the marker
    tokens: torch.Tensor  # (B, T) symbol ids in 0..S-1
    target: torch.Tensor  # (B,) the marked symbol, tokens[:, 0]


def delayed_recall(
    batch_size: int, seq_len: int, n_symbols: int = 8, generator=None
) -> RecallBatch:
    """Sequences that start with a marked symbol followed by distractors.

    Step 0 shows a symbol s drawn uniformly from ``n_symbols`` (S) with the
    marker channel set to 1; steps 1..T-1 show further symbols from the same
    alphabet with the marker at 0. The class to predict at *every* step t is
    s, which by then lies t steps back: reading the output at step t tests a
    delay of t. The distractors use the same input channels as the symbol,
    so a model cannot ignore them by zeroing some input weights.

    Returns a :class:`RecallBatch` with ``inputs`` (B, T, S + 1) in the
    default float dtype, ``tokens`` (B, T) and ``target`` (B,).
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("n_symbols", n_symbols)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be at least 2, got {n_symbols}")
    _check_generator(generator)
    tokens = torch.randint(
        n_symbols, (batch_size, seq_len), generator=generator
    )  # (B, T)
    marker = torch.zeros(batch_size, seq_len, 1)  # (B, T, 1)
    marker[:, 0] = 1.0
    symbols = F.one_hot(tokens, n_symbols).to(marker.dtype)  # (B, T, S)
    inputs = torch.cat([symbols, marker], dim=-1)  # (B, T, S + 1)
    return RecallBatch(inputs, tokens, tokens[:, 0])


def adding_problem(
    batch_size: int, seq_len: int, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem: sum the two marked numbers of a sequence.

    Channel 0 holds numbers drawn from U(0, 1); channel 1 marks exactly two
    steps with 1, one in the first half (t < T // 2) and one in the second.
    The target is the sum of the two marked numbers.

    Returns ``inputs`` (B, T, 2) and ``target`` (B,).
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    _check_generator(generator)
    half = seq_len // 2
    values = torch.rand(batch_size, seq_len, generator=generator)  # (B, T)
    first = torch.randint(half, (batch_size,), generator=generator)
    second = torch.randint(half, seq_len, (batch_size,), generator=generator)
    marker = torch.zeros_like(values)  # (B, T)
    rows = torch.arange(batch_size)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]  # (B,)
    return torch.stack([values, marker], dim=-1), target


class RecurrentClassifier(nn.Module):
    """A one-layer recurrent network with a class read-out at every step.

        h_t = cell(x_t, h_{t-1})          (torch.nn RNN, LSTM or GRU)
        logits_t = W_out h_t + b_out

    ``kind`` is "rnn" (tanh), "lstm" or "gru". ``forward(inputs)`` takes
    (B, T, I) and returns the logits (B, T, C) and the hidden states
    (B, T, H). The layer is ``self.rnn`` (batch_first) and the read-out
    ``self.head``.
    """

    def __init__(
        self, kind: str, input_size: int, hidden_size: int, num_classes: int
    ):
        super().__init__()
        check_choice("kind", kind, list(_LAYERS))
        check_positive_int("num_classes", num_classes)
        self.kind = kind
        self.rnn = _LAYERS[kind](input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, inputs: torch.Tensor):
        check_rank("inputs", inputs, (3,), "(B, T, I)")
        check_size("inputs", inputs, -1, self.rnn.input_size, "input_size")
        hidden, _ = self.rnn(inputs)  # (B, T, H)
        return self.head(hidden), hidden  # (B, T, C), (B, T, H)


def _recall_size(model: RecurrentClassifier) -> int:
    """The number of symbols S a classifier for delayed recall expects."""
    n_symbols = model.head.out_features
    if model.rnn.input_size != n_symbols + 1:
        raise ValueError(
            "a delayed-recall model needs input_size = num_classes + 1 "
            f"= {n_symbols + 1}, got input_size {model.rnn.input_size}"
        )
    return n_symbols


def train_recall(
    model: RecurrentClassifier,
    steps: int,
    seq_len: int,
    batch_size: int = 128,
    lr: float = 1e-2,
    max_norm: float = 1.0,
    last_only: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` on :func:`delayed_recall` with Adam; return the losses.

    The loss is the cross-entropy averaged over every step, so each delay
    0..T-1 is trained equally; with ``last_only=True`` only the final step
    counts, i.e. the one delay T - 1. Gradients are clipped to the norm
    ``max_norm``. Batches come from a generator seeded with ``seed``; a tqdm
    bar shows the progress unless ``progress=False``.
    """
    check_positive_int("steps", steps)
    n_symbols = _recall_size(model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    bar = tqdm(
        range(steps), desc=f"{model.kind} training", disable=not progress
    )
    for _ in bar:
        batch = delayed_recall(batch_size, seq_len, n_symbols, generator)
        logits, _ = model(batch.inputs)  # (B, T, S)
        if last_only:
            logits = logits[:, -1:]  # (B, 1, S)
        target = batch.target[:, None].expand(logits.shape[:2])  # (B, T')
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def recall_accuracy(
    model: RecurrentClassifier,
    seq_len: int,
    n_sequences: int = 1000,
    seed: int = 1234,
) -> torch.Tensor:
    """Accuracy at every delay: a (T,) tensor, entry t for delay t."""
    n_symbols = _recall_size(model)
    generator = torch.Generator().manual_seed(seed)
    batch = delayed_recall(n_sequences, seq_len, n_symbols, generator)
    model.eval()
    logits, _ = model(batch.inputs)  # (B, T, S)
    correct = logits.argmax(-1) == batch.target[:, None]  # (B, T)
    return correct.float().mean(0)
