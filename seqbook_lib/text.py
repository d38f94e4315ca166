"""From raw text to padded batches of token ids.

The path every text chapter walks::

    "I didn't like it.<br /><br />Boring!"
        --tokenize-->  ["i", "didn't", "like", "it", ".", "boring", "!"]
        --Vocab.encode-->  [12, 503, 40, 11, 2, 371, 30]
        --pad_batch-->  LongTensor (B, T) plus the lengths (B,)

and :func:`length_bucketed_batches` groups reviews of similar length into the
same batch, so that little of each padded batch is padding.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ._checks import check_integer_dtype, check_positive_int, shape_str

# An IMDB line break: "<br />", "<br/>" or "<br>" (any case, any spacing).
_BREAK = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
# A word is a run of letters/digits, possibly with inner apostrophes ("don't",
# "rock'n'roll"); any other visible character is a token of its own.
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case words and punctuation marks.

    Steps: lower-case, replace the ``<br />`` tags of the IMDB reviews by
    spaces, then take words (apostrophes inside a word are kept) and single
    punctuation characters as tokens. A plain regular expression, no
    linguistics: good enough for a bag-of-words or a recurrent classifier.

    >>> tokenize("I didn't like it.<br /><br />Boring!")
    ['i', "didn't", 'like', 'it', '.', 'boring', '!']
    >>> tokenize("10/10 -- 'Casablanca'...")
    ['10', '/', '10', '-', '-', "'", 'casablanca', "'", '.', '.', '.']
    >>> tokenize("")
    []
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(_BREAK.sub(" ", text.lower()))


class Vocab:
    """A two-way map between tokens and integer ids.

    ``itos[i]`` is the token of id ``i`` ("index to string") and ``stoi`` the
    inverse dictionary. The special tokens come first, so with the default
    ``specials`` the padding token ``"<pad>"`` has id 0 and the unknown token
    ``"<unk>"`` id 1; tokens missing from the vocabulary encode to the unknown
    id. A vocabulary without ``"<unk>"`` (a character vocabulary, say) refuses
    unknown tokens instead.

    Word level::

        vocab = Vocab.build(tokenize(t) for t in texts)
        ids = vocab.encode(tokenize("a fine film"))

    Character level (every character is known, no specials)::

        vocab = Vocab.build([text], specials=())   # a str: a sequence of chars
        ids = vocab.encode("to be")                # list of 5 ids
        "".join(vocab.decode(ids))                 # "to be"
    """

    PAD = "<pad>"
    UNK = "<unk>"

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        for token in itos:
            if not isinstance(token, str):
                raise TypeError(
                    "tokens must be str, "
                    f"got {type(token).__name__} ({token!r})"
                )
        stoi = {token: i for i, token in enumerate(itos)}
        if len(stoi) != len(itos):
            repeated = sorted(t for t, n in Counter(itos).items() if n > 1)
            raise ValueError(
                f"tokens must be unique, got repeated tokens {repeated[:10]}"
            )
        self.itos = itos
        self.stoi = stoi

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Iterable[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
    ) -> "Vocab":
        """Count the tokens of ``token_lists`` and keep the frequent ones.

        Order of ids: the ``specials`` as given, then the other tokens by
        descending count, ties broken alphabetically, so that the same corpus
        always gives the same ids. Tokens seen fewer than ``min_freq`` times
        are dropped; ``max_size`` caps ``len(vocab)``, specials included.

        ``token_lists`` is an iterable of token sequences (one per document).
        Beware: a flat list of words is a list of strings, i.e. of character
        sequences, and would give a character vocabulary.
        """
        check_positive_int("min_freq", min_freq)
        specials = list(specials)
        if max_size is not None:
            check_positive_int("max_size", max_size)
            if max_size < len(specials):
                raise ValueError(
                    "max_size counts the specials and must be at least "
                    f"{len(specials)} "
                    f"(the number of specials {specials}), got {max_size}"
                )
        counts: Counter = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in specials:
            counts.pop(special, None)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [token for token, n in ranked if n >= min_freq]
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(specials + kept)

    # --- lookups -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token) -> bool:
        return token in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.itos[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"Vocab(size={len(self)}, itos=[{head}{more}])"

    @property
    def pad_id(self) -> int | None:
        """Id of ``"<pad>"``, or ``None`` when the vocabulary has none."""
        return self.stoi.get(self.PAD)

    @property
    def unk_id(self) -> int | None:
        """Id of ``"<unk>"``, or ``None`` when the vocabulary has none."""
        return self.stoi.get(self.UNK)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; unknown tokens get :attr:`unk_id` (an error
        without one)."""
        unk = self.unk_id
        if unk is not None:
            return [self.stoi.get(token, unk) for token in tokens]
        tokens = list(tokens)
        try:
            return [self.stoi[token] for token in tokens]
        except KeyError as err:
            raise ValueError(
                f"token {err.args[0]!r} is not in the vocabulary, "
                "which has no "
                f"{self.UNK!r} token to stand for unknown tokens"
            ) from None

    def decode(self, ids) -> list[str]:
        """Tokens of ``ids`` (ints, or a 1-D integer tensor); joining them is
        the caller's choice."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(
                    "ids must be a 1-D tensor, "
                    f"got shape {shape_str(ids.shape)}"
                )
            ids = ids.tolist()
        size = len(self.itos)
        tokens = []
        for i in ids:
            if (
                not isinstance(i, int)
                or isinstance(i, bool)
                or not 0 <= i < size
            ):
                raise ValueError(
                    f"ids must be ints in 0..{size - 1}, got {i!r}"
                )
            tokens.append(self.itos[i])
        return tokens

    # --- saving with a model -------------------------------------------------

    def to_json(self) -> str:
        """The vocabulary as a JSON string (the list of tokens in id order)."""
        return json.dumps({"itos": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(
            data.get("itos"), list
        ):
            raise ValueError(
                'expected a JSON object {"itos": [token, ...]}, '
                "got something else"
            )
        return cls(data["itos"])

    def save(self, path) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "Vocab":
        """Read a vocabulary written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def pad_batch(
    sequences: Sequence, pad_id: int = 0, batch_first: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of token ids of different lengths into one tensor.

    Returns ``(padded, lengths)``: ``padded[b, t]`` is token ``t`` of sequence
    ``b`` for ``t < lengths[b]`` and ``pad_id`` after it; shape (B, T) with
    T = max length, or (T, B) when ``batch_first=False``. ``sequences`` are
    lists of ints or 1-D integer tensors, none of them empty.
    """
    if not isinstance(pad_id, int) or isinstance(pad_id, bool):
        raise TypeError(f"pad_id must be an int, got {type(pad_id).__name__}")
    if len(sequences) == 0:
        raise ValueError(
            "pad_batch needs at least one sequence, got an empty batch"
        )
    tensors = []
    for b, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError(
                f"sequence {b} is empty; "
                "every sequence needs at least one token"
            )
        seq = torch.as_tensor(seq)
        if seq.dim() != 1:
            raise ValueError(
                f"sequence {b} must be 1-D, got shape {shape_str(seq.shape)}"
            )
        check_integer_dtype(f"sequence {b}", seq, "integer token ids")
        tensors.append(seq)
    lengths = torch.tensor(
        [len(seq) for seq in tensors], dtype=torch.long
    )  # (B,)
    padded = torch.full(
        (len(tensors), int(lengths.max())),
        pad_id,
        dtype=torch.long,
        device=tensors[0].device,
    )  # (B, T)
    for b, seq in enumerate(tensors):
        padded[b, : len(seq)] = seq
    if not batch_first:
        padded = padded.t().contiguous()  # (T, B)
    return padded, lengths


def length_bucketed_batches(
    lengths,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    bucket_size_multiplier: int = 50,
) -> list[list[int]]:
    """Batches of indices whose sequences have similar lengths.

    Padding a batch to its longest member wastes the compute spent on the pad
    positions. Sorting the whole data set by length would remove the waste but
    also the randomness of training. The compromise: (1) shuffle the indices,
    (2) cut them into chunks of ``batch_size * bucket_size_multiplier``,
    (3) sort each chunk by length and cut it into batches, (4) shuffle the
    order of the batches. Every index appears exactly once; only the last
    batch may be smaller than ``batch_size``.

    With ``shuffle=False`` steps (1) and (4) are skipped: the chunks are runs
    of consecutive indices and the result is the same on every call. With
    ``shuffle=True`` pass a seeded ``torch.Generator`` to reproduce an epoch.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(
            f"lengths must be 1-D, got shape {shape_str(lengths.shape)}"
        )
    if lengths.numel():
        check_integer_dtype("lengths", lengths)
    check_positive_int("batch_size", batch_size)
    check_positive_int("bucket_size_multiplier", bucket_size_multiplier)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator, "
            f"got {type(generator).__name__}"
        )

    n = lengths.numel()
    order = (
        torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    )
    chunk = batch_size * bucket_size_multiplier
    batches = []
    for start in range(0, n, chunk):
        idx = order[start : start + chunk]
        by_length = torch.sort(lengths[idx], stable=True).indices
        idx = idx[by_length].tolist()
        batches.extend(
            idx[i : i + batch_size] for i in range(0, len(idx), batch_size)
        )
    if shuffle:
        batches = [
            batches[i]
            for i in torch.randperm(len(batches), generator=generator).tolist()
        ]
    return batches
