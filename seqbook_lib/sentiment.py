"""Sentiment classification of reviews: a bidirectional LSTM, its training
loop and ``predict``.

The pipeline of the IMDB chapter::

    review text --encode_reviews--> token ids, head and tail kept   (L_b,)
    a batch of similar lengths --pad_batch--> tokens (B, T), lengths (B,)
    --BiLSTMClassifier--> logits (B, 2) --softmax--> P(positive)

:func:`train_classifier` and :func:`predict` work with any model whose
``forward(tokens, lengths)`` returns class logits (B, C), e.g. the library's
:class:`~seqbook_lib.transformer.TransformerClassifier` as well.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import (
    check_choice,
    check_lengths,
    check_positive_int,
    check_probability,
    check_rank,
    check_token_ids,
)
from .pooling import masked_max, masked_mean
from .schedule import cosine_lr
from .text import Vocab, length_bucketed_batches, pad_batch, tokenize

POOLINGS = ("last", "max", "mean", "max+mean")


# --- from text to ids ----------------------------------------------------------


def head_and_tail(ids: Sequence[int], max_len: int) -> list[int]:
    """``ids`` if at most ``max_len`` long, else its first ``max_len // 2``
    and its last ``max_len - max_len // 2`` ids.

    A review often states its verdict at the start or in the last lines;
    keeping both ends loses less than cutting the tail off.
    """
    check_positive_int("max_len", max_len)
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    head = max_len // 2
    return ids[:head] + ids[len(ids) - (max_len - head):]


class Reviews(NamedTuple):
    """Encoded reviews: one 1-D id tensor per review, and the labels."""

    ids: list[torch.Tensor]
    labels: torch.Tensor  # (N,) int64

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return torch.tensor([len(x) for x in self.ids], dtype=torch.long)

    def subset(self, index: Sequence[int]) -> "Reviews":
        return Reviews([self.ids[i] for i in index], self.labels[list(index)])


def encode_reviews(
    texts: Sequence[str], vocab: Vocab, max_len: int, labels=None
) -> Reviews:
    """Tokenize, map to ids and cut each text to ``max_len`` ids (head and
    tail). A text without any token becomes the single id ``<unk>``."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one str")
    if vocab.unk_id is None or vocab.pad_id != 0:
        raise ValueError(
            "the vocabulary needs '<pad>' at id 0 and an '<unk>' token, "
            f"got pad_id={vocab.pad_id}, unk_id={vocab.unk_id}"
        )
    ids = [
        torch.tensor(
            head_and_tail(vocab.encode(tokenize(t)), max_len) or
            [vocab.unk_id]
        )
        for t in texts
    ]
    if labels is None:
        labels = torch.zeros(len(ids), dtype=torch.long)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (len(ids),):
        raise ValueError(
            f"expected one label per text, i.e. {len(ids)}, "
            f"got labels of shape {tuple(labels.shape)}"
        )
    return Reviews(ids, labels)


class IMDBSplits(NamedTuple):
    """The encoded reviews of :func:`prepare_imdb` and how they were cut."""

    vocab: Vocab
    train: Reviews  # the training reviews minus the validation ones
    val: Reviews  # carved at random from the training reviews
    test: Reviews
    train_index: list[int]  # rows of the training split in ``train``
    val_index: list[int]  # rows of the training split in ``val``


def prepare_imdb(
    imdb,
    max_len: int,
    vocab_size: int = 30_000,
    min_freq: int = 2,
    val_size: int = 5_000,
    seed: int = 0,
) -> IMDBSplits:
    """Split, build the vocabulary and encode the IMDB reviews.

    ``imdb`` maps "train" and "test" to columns "text" and "label" (as
    :func:`seqbook_lib.data.load_imdb` returns). ``val_size`` training
    reviews, drawn with ``seed``, become the validation split; the
    vocabulary (``vocab_size`` tokens at most, specials included, each seen
    ``min_freq`` times or more) is counted on the remaining training reviews
    only, so neither validation nor test text leaks into any choice.
    """
    texts, labels = imdb["train"]["text"], imdb["train"]["label"]
    if not 0 < val_size < len(texts):
        raise ValueError(
            f"val_size must lie in 1..{len(texts) - 1}, got {val_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=generator).tolist()
    val_index, train_index = order[:val_size], order[val_size:]
    vocab = Vocab.build(
        (tokenize(texts[i]) for i in train_index),
        min_freq=min_freq, max_size=vocab_size,
    )
    encoded = encode_reviews(texts, vocab, max_len, labels)
    test = encode_reviews(
        imdb["test"]["text"], vocab, max_len, imdb["test"]["label"]
    )
    return IMDBSplits(
        vocab, encoded.subset(train_index), encoded.subset(val_index), test,
        train_index, val_index,
    )


# --- the model -----------------------------------------------------------------


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x`` (B, T, F) within its own length; the
    padding stays where it is.

    ``[a, b, c, pad]`` with length 3 becomes ``[c, b, a, pad]``. Applied
    twice it gives ``x`` back.
    """
    B, T = x.shape[:2]
    steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    last = lengths.to(x.device).unsqueeze(1) - 1  # (B, 1)
    index = torch.where(steps <= last, last - steps, steps)  # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM -> pooling over time -> linear.

        e_t = dropout(Embedding(token_t))                     (B, T, E)
        ->h_t = LSTM_fwd(e_1 .. e_t)                          (B, T, H)
        <-h_t = LSTM_bwd(e_L .. e_t)   (from the last real token back)
        z = pool([->h_t ; <-h_t] over t < L)                 (B, P)
        logits = W dropout(z) + b                             (B, C)

    ``pooling`` is "last" (the two directions' final states: ->h at the last
    real token and <-h at the first, P = 2H), "max" or "mean" over the real
    steps (P = 2H), or "max+mean" (both, P = 4H). ``dropout`` applies to the
    pooled vector, ``embedding_dropout`` to the embedded tokens (in training
    mode only).

    The two directions are two ``torch.nn.LSTM`` s: the backward one reads
    each review reversed within its length, so padding never reaches it and
    the results do not depend on how the batch was padded. (One
    ``nn.LSTM(bidirectional=True)`` would read the padding first in the
    backward direction; ``pack_padded_sequence`` avoids that but is several
    times slower on a CPU.)
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_size: int = 128,
        num_classes: int = 2,
        pooling: str = "max+mean",
        dropout: float = 0.5,
        pad_idx: int = 0,
        embedding_dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embed_dim", embed_dim),
            ("hidden_size", hidden_size),
            ("num_classes", num_classes),
        ):
            check_positive_int(name, value)
        check_choice("pooling", pooling, POOLINGS)
        check_probability("dropout", dropout)
        check_probability("embedding_dropout", embedding_dropout)
        if not isinstance(pad_idx, int) or not 0 <= pad_idx < vocab_size:
            raise ValueError(
                f"pad_idx must be an int in 0..{vocab_size - 1}, "
                f"got {pad_idx!r}"
            )
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim, pad_idx)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.lstm_fwd = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.lstm_bwd = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        features = 2 * hidden_size * (2 if pooling == "max+mean" else 1)
        self.classifier = nn.Linear(features, num_classes)

    def states(self, tokens, lengths) -> torch.Tensor:
        """The hidden states [->h_t ; <-h_t] (B, T, 2H); zero past each
        length."""
        check_rank("tokens", tokens, (2,), "(B, T)")
        B, T = tokens.shape
        check_token_ids("tokens", tokens, self.embedding.num_embeddings)
        lengths = check_lengths(lengths, B, T).to(tokens.device)
        e = self.embedding_dropout(self.embedding(tokens))  # (B, T, E)
        h_fwd, _ = self.lstm_fwd(e)  # (B, T, H)
        h_bwd, _ = self.lstm_bwd(reverse_padded(e, lengths))  # reversed
        h = torch.cat([h_fwd, reverse_padded(h_bwd, lengths)], dim=-1)
        real = torch.arange(T, device=h.device) < lengths.unsqueeze(1)
        return torch.where(real.unsqueeze(-1), h, 0.0)  # (B, T, 2H)

    def pool(self, h, lengths) -> torch.Tensor:
        """One vector per review from its states ``h`` (B, T, 2H)."""
        if self.pooling == "max":
            return masked_max(h, lengths)  # (B, 2H)
        if self.pooling == "mean":
            return masked_mean(h, lengths)  # (B, 2H)
        if self.pooling == "max+mean":
            return torch.cat(
                [masked_max(h, lengths), masked_mean(h, lengths)], dim=-1
            )  # (B, 4H)
        H = h.shape[-1] // 2
        last = (lengths.to(h.device) - 1).view(-1, 1, 1).expand(-1, 1, H)
        h_fwd_last = h[..., :H].gather(1, last).squeeze(1)  # (B, H)
        return torch.cat([h_fwd_last, h[:, 0, H:]], dim=-1)  # (B, 2H)

    def forward(self, tokens, lengths) -> torch.Tensor:
        """Class logits (B, C) for ``tokens`` (B, T) with ``lengths``
        (B,)."""
        lengths = torch.as_tensor(lengths)
        z = self.pool(self.states(tokens, lengths), lengths)
        return self.classifier(self.dropout(z))  # (B, C)


class BagOfWordsClassifier(nn.Module):
    """Logistic regression on the bag of words: the baseline to beat.

        f_v = (count of token v in the review) / L       (B, V), implicit
        logits = f W + b                                 (B, C)

    ``nn.EmbeddingBag`` in "mean" mode computes ``f W`` without building
    the (B, V) count matrix: it averages the rows of W of the review's
    tokens (padding excluded). Word order plays no part.
    """

    def __init__(self, vocab_size: int, num_classes: int = 2,
                 pad_idx: int = 0):
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("num_classes", num_classes)
        self.weights = nn.EmbeddingBag(
            vocab_size, num_classes, mode="mean", padding_idx=pad_idx
        )
        nn.init.zeros_(self.weights.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, tokens, lengths) -> torch.Tensor:
        check_rank("tokens", tokens, (2,), "(B, T)")
        check_token_ids("tokens", tokens, self.weights.num_embeddings)
        check_lengths(lengths, *tokens.shape)
        return self.weights(tokens) + self.bias  # (B, C)


# --- training and prediction ---------------------------------------------------


def _batches(reviews: Reviews, batch_size, generator=None, shuffle=False):
    """Padded (tokens, lengths, labels) batches of similar lengths."""
    for index in length_bucketed_batches(
        reviews.lengths, batch_size, shuffle=shuffle, generator=generator
    ):
        tokens, lengths = pad_batch([reviews.ids[i] for i in index])
        yield tokens, lengths, reviews.labels[index]


@torch.no_grad()
def predict_logits(model, reviews: Reviews, batch_size: int = 256):
    """Logits (N, C) of every review, in the order of ``reviews``."""
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = reviews.lengths
    out = [None] * len(reviews.ids)
    for index in length_bucketed_batches(lengths, batch_size, shuffle=False):
        tokens, lens = pad_batch([reviews.ids[i] for i in index])
        logits = model(tokens.to(device), lens.to(device)).cpu()
        for i, row in zip(index, logits):
            out[i] = row
    model.train(was_training)
    return torch.stack(out)


def accuracy(model, reviews: Reviews, batch_size: int = 256) -> float:
    """Share of ``reviews`` whose most likely class is their label."""
    predicted = predict_logits(model, reviews, batch_size).argmax(dim=1)
    return (predicted == reviews.labels).double().mean().item()


def predict(
    model, vocab: Vocab, texts: Sequence[str], max_len: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """P(positive) (N,) for each of ``texts``: class 1 of the softmax."""
    reviews = encode_reviews(texts, vocab, max_len)
    return predict_logits(model, reviews, batch_size).softmax(dim=1)[:, 1]


def train_classifier(
    model: nn.Module,
    train: Reviews,
    val: Reviews,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    clip: float = 1.0,
    warmup: int = 100,
    average_from: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Train ``model`` with Adam, a cosine learning rate and gradient
    clipping; return the best model on ``val`` and the per-epoch history.

    Each epoch reads ``train`` in batches of similar lengths, in random
    order (seeded by ``generator``), and ends with the accuracy on ``val``.
    With ``average_from`` in [0, 1) a running average of the weights
    (``torch.optim.swa_utils.AveragedModel``) is kept from that fraction of
    the steps on, and competes with the epochs' models on ``val``. The
    candidate with the best validation accuracy is returned (in eval mode):
    the test set never takes part in any choice.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if average_from is not None and not 0 <= average_from < 1:
        raise ValueError(
            f"average_from must lie in [0, 1) or be None, got {average_from}"
        )
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(
        model.parameters(), lr=lr, weight_decay=weight_decay
    )
    steps = epochs * math.ceil(len(train.ids) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr(s, steps, 1.0, min(warmup, steps // 2))
    )
    averaged = None
    if average_from is not None:
        averaged = torch.optim.swa_utils.AveragedModel(model)
    best, best_acc, history, step = None, -1.0, [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        seen = correct = total_loss = 0
        bar = tqdm(
            _batches(train, batch_size, generator, shuffle=True),
            total=math.ceil(len(train.ids) / batch_size),
            desc=f"epoch {epoch}/{epochs}", disable=not progress,
        )
        for tokens, lengths, labels in bar:
            logits = model(tokens.to(device), lengths.to(device))
            loss = F.cross_entropy(logits, labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            step += 1
            if averaged is not None and step >= average_from * steps:
                averaged.update_parameters(model)
            n = len(labels)
            seen += n
            total_loss += loss.item() * n
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            # refresh=False: shown at the bar's next timed redraw, so the
            # number of redraws does not grow with the number of batches
            bar.set_postfix(loss=f"{total_loss / seen:.3f}",
                            acc=f"{correct / seen:.3f}", refresh=False)
        record = {"epoch": epoch, "train_loss": total_loss / seen,
                  "train_acc": correct / seen,
                  "val_acc": accuracy(model, val, 256)}
        if averaged is not None and averaged.n_averaged.item() > 0:
            record["val_acc_averaged"] = accuracy(averaged.module, val, 256)
        history.append(record)
        for candidate, acc in ((model, record["val_acc"]),
                               (getattr(averaged, "module", None),
                                record.get("val_acc_averaged", -1.0))):
            if acc > best_acc:
                best, best_acc = copy.deepcopy(candidate), acc
    return best.eval(), history
