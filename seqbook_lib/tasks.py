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


# -- token-level recall tasks (Part V) ----------------------------------------
#
# Both tasks are token sequences for a causal model with a (B, T) ->
# (B, T, V) interface (e.g. :class:`seqbook_lib.mixers.MixerLM`). Each batch
# holds ``ids`` (B, T) and ``labels`` (B, T): the token a model should
# predict at each position, or IGNORE where nothing is scored, so loss and
# accuracy count the answer positions only.

IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index


class TokenBatch(NamedTuple):
    """A batch of a token task: inputs and the answers to score."""

    ids: torch.Tensor  # (B, T) input token ids
    labels: torch.Tensor  # (B, T) answer ids, IGNORE where not scored


def _check_tokens_fit(name: str, n: int, available: int, what: str) -> None:
    if n > available:
        raise ValueError(f"{name}={n} needs at least {n} {what}, but the "
                         f"vocabulary holds only {available}")


def selective_copy_vocab(n_symbols: int) -> int:
    """Vocabulary size of :func:`selective_copying`: blank, separator and
    ``n_symbols`` data tokens."""
    check_positive_int("n_symbols", n_symbols)
    return n_symbols + 2


def selective_copying(
    batch_size: int,
    n_tokens: int,
    region_len: int,
    n_symbols: int = 8,
    generator=None,
) -> TokenBatch:
    """Selective copying (Gu & Dao, 2023): copy the data tokens scattered
    among blanks, in order, after a separator.

    Token 0 is the blank (noise), token 1 the separator, tokens
    2..n_symbols+1 the data. A sequence is a region of ``region_len``
    positions holding ``n_tokens`` data tokens at random distinct positions
    (blanks elsewhere), then the separator, then the data tokens again
    except the last (the model sees its previous answers: teacher forcing):

        ids    = region (L) | SEP | d_1 .. d_{n-1}        T = L + n
        labels = IGNORE (L) | d_1 | d_2 .. d_n

    Where the data tokens sit varies from sequence to sequence, so a layer
    that weighs the past by distance alone cannot pick them out.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_tokens", n_tokens)
    check_positive_int("region_len", region_len)
    check_positive_int("n_symbols", n_symbols)
    _check_generator(generator)
    if n_tokens > region_len:
        raise ValueError(f"n_tokens={n_tokens} data tokens do not fit in a "
                         f"region of region_len={region_len} positions")
    B, n, L = batch_size, n_tokens, region_len
    data = 2 + torch.randint(n_symbols, (B, n), generator=generator)  # (B, n)
    # n distinct positions per row, kept in increasing order
    scores = torch.rand(B, L, generator=generator)  # (B, L)
    where = scores.topk(n, dim=1).indices.sort(dim=1).values  # (B, n)
    region = torch.zeros(B, L, dtype=torch.long)  # (B, L) blanks
    region.scatter_(1, where, data)
    sep = torch.ones(B, 1, dtype=torch.long)  # (B, 1)
    ids = torch.cat([region, sep, data[:, :-1]], dim=1)  # (B, L + n)
    labels = torch.cat(
        [torch.full((B, L), IGNORE, dtype=torch.long), data], dim=1
    )  # (B, L + n)
    return TokenBatch(ids, labels)


def mqar_vocab(n_keys: int, n_values: int) -> int:
    """Vocabulary size of :func:`mqar`: keys then values."""
    check_positive_int("n_keys", n_keys)
    check_positive_int("n_values", n_values)
    return n_keys + n_values


def mqar(
    batch_size: int,
    n_pairs: int,
    seq_len: int,
    n_keys: int = 32,
    n_values: int = 32,
    generator=None,
) -> TokenBatch:
    """Multi-query associative recall (Arora et al., 2023, Zoology).

    Keys are tokens 0..n_keys-1, values n_keys..n_keys+n_values-1. A
    sequence lists ``n_pairs`` key-value pairs (distinct keys, random
    values), then queries: keys drawn uniformly from the listed ones, each
    followed by its value, until ``seq_len`` tokens:

        ids    = k_1 v_1 .. k_n v_n | q_1 a_1 q_2 a_2 ..     T = seq_len
        labels = IGNORE  ..  IGNORE | a_1  -  a_2  -  ..

    The label at a query's position is its value a_i (the value paired with
    q_i); every other position is IGNORE. The number of queries is
    (seq_len - 2 n_pairs) / 2, so seq_len - 2 n_pairs must be even and
    positive; fixing seq_len while varying n_pairs changes how much there is
    to remember, not how long the sequence is.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_pairs", n_pairs)
    check_positive_int("seq_len", seq_len)
    check_positive_int("n_keys", n_keys)
    check_positive_int("n_values", n_values)
    _check_generator(generator)
    _check_tokens_fit("n_pairs", n_pairs, n_keys, "distinct keys")
    rest = seq_len - 2 * n_pairs
    if rest < 2 or rest % 2:
        raise ValueError(
            "seq_len - 2 * n_pairs must be even and at least 2 (room for "
            f"query-answer pairs), got seq_len={seq_len}, n_pairs={n_pairs}"
        )
    B, n, m = batch_size, n_pairs, rest // 2
    keys = torch.rand(B, n_keys, generator=generator).argsort(dim=1)[:, :n]
    values = n_keys + torch.randint(n_values, (B, n), generator=generator)
    pick = torch.randint(n, (B, m), generator=generator)  # (B, m) pair index
    queries = keys.gather(1, pick)  # (B, m)
    answers = values.gather(1, pick)  # (B, m)
    context = torch.stack([keys, values], dim=2).flatten(1)  # (B, 2n)
    asked = torch.stack([queries, answers], dim=2).flatten(1)  # (B, 2m)
    ids = torch.cat([context, asked], dim=1)  # (B, T)
    labels = torch.full_like(ids, IGNORE)  # (B, T)
    labels[:, 2 * n::2] = answers  # at each query position
    return TokenBatch(ids, labels)


def _check_task(task) -> None:
    if not callable(task):
        raise TypeError("task must be a function (batch_size, generator) -> "
                        f"TokenBatch, got {type(task).__name__}")


def train_token_task(
    model: nn.Module,
    task,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_norm: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train a token model on ``task`` with Adam; return the losses.

    ``task(batch_size, generator)`` returns a :class:`TokenBatch`; the model
    maps ids (B, T) to logits (B, T, V). The loss is the cross-entropy at
    the answer positions only (labels != IGNORE). The learning rate decays
    linearly to 10% over the steps; gradients are clipped to ``max_norm``.
    Batches come from a generator seeded with ``seed``.
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    _check_task(task)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 1.0 - 0.9 * i / steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), disable=not progress):
        batch = task(batch_size, generator)
        logits = model(batch.ids)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(),
                               ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def token_accuracy(
    model: nn.Module, task, n_sequences: int = 500, seed: int = 1234
) -> float:
    """Fraction of answer positions (labels != IGNORE) where the model's
    most likely token is the label, on ``n_sequences`` fresh sequences."""
    check_positive_int("n_sequences", n_sequences)
    _check_task(task)
    batch = task(n_sequences, torch.Generator().manual_seed(seed))
    model.eval()
    predicted = model(batch.ids).argmax(-1)  # (B, T)
    scored = batch.labels != IGNORE  # (B, T)
    if not scored.any():
        raise ValueError("the task's labels score no position")
    return (predicted[scored] == batch.labels[scored]).float().mean().item()
