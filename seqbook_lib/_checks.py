"""Argument checks shared by the library's modules.

Each raises ``ValueError`` with a message naming what was expected and what
was given, so that a reader sees "expected input of shape (T, B, 3), got
(5, 2, 4)" instead of a matmul traceback from deep inside PyTorch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


def shape_str(shape: Iterable) -> str:
    """``(5, 2, 4)`` for a shape, with ``None`` entries written as ``*``."""
    parts = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_positive_int(name: str, value) -> None:
    """``value`` is an int > 0 (bools are refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _is_int(value) -> bool:
    """An int, and not a bool (``True`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_nonnegative_int(name: str, value) -> None:
    """``value`` is an int >= 0 (bools are refused)."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def check_index(name: str, value, size: int) -> None:
    """``value`` is an int in ``0 .. size - 1``, e.g. a special token's id
    in a vocabulary of ``size`` entries (bools are refused)."""
    if not _is_int(value) or not 0 <= value < size:
        raise ValueError(
            f"{name} must be an int in 0..{size - 1}, got {value!r}"
        )


def check_choice(name: str, value, choices: Sequence) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {list(choices)}, got {value!r}"
        )


def check_probability(name: str, value) -> None:
    """``value`` is a number in [0, 1]."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_tensor(name: str, x) -> None:
    """``x`` is a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}"
        )


def check_rank(
    name: str, x: torch.Tensor, ranks: Sequence[int], meaning: str = ""
) -> None:
    """``x.dim()`` is one of ``ranks``; ``meaning`` describes the layouts,
    e.g. "(T, B, I) or (T, I)"."""
    check_tensor(name, x)
    if x.dim() not in ranks:
        allowed = " or ".join(str(r) for r in ranks)
        hint = f" {meaning}" if meaning else ""
        raise ValueError(
            f"{name} must have {allowed} dimensions{hint}, "
            f"got shape {shape_str(x.shape)}"
        )


def check_size(
    name: str, x: torch.Tensor, dim: int, expected: int, what: str = ""
) -> None:
    """``x.shape[dim] == expected``; ``what`` names the size, e.g.
    "input_size"."""
    if x.shape[dim] != expected:
        label = f" ({what})" if what else ""
        raise ValueError(
            f"{name} must have size {expected} in dimension {dim}{label}, "
            f"got shape {shape_str(x.shape)}"
        )


def check_shape(name: str, x: torch.Tensor, expected: Sequence) -> None:
    """``x.shape`` equals ``expected``; ``None`` in ``expected`` matches any
    size."""
    check_tensor(name, x)
    ok = x.dim() == len(expected) and all(
        e is None or s == e for s, e in zip(x.shape, expected)
    )
    if not ok:
        raise ValueError(
            f"{name} must have shape {shape_str(expected)}, "
            f"got {shape_str(x.shape)}"
        )


def check_lengths(lengths, batch: int, max_len: int) -> torch.Tensor:
    """Validate per-sequence ``lengths`` and return them as a CPU int64 tensor.

    ``lengths`` is 1-D with one entry per sequence, each in ``1 .. max_len``.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(
            "lengths must be 1-D with one entry per sequence, "
            f"i.e. shape ({batch},), "
            f"got shape {shape_str(lengths.shape)}"
        )
    check_integer_dtype("lengths", lengths)
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if batch and (lengths.min() < 1 or lengths.max() > max_len):
        raise ValueError(
            f"every length must lie in 1..{max_len} "
            "(the padded sequence length), "
            f"got {lengths.tolist()}"
        )
    return lengths


def check_layout(name: str, x, expected: Sequence[int], layout: str) -> None:
    """``x.shape == expected``; the message also names the symbolic
    ``layout``, e.g. "(L*D, B, H)"."""
    check_tensor(name, x)
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {layout} = {shape_str(expected)}, "
            f"got {shape_str(x.shape)}"
        )


def check_token_ids(name: str, x, vocab_size: int) -> None:
    """``x`` is an integer tensor of token ids, each in
    ``0 .. vocab_size - 1``."""
    check_tensor(name, x)
    check_integer_dtype(name, x, "integer token ids")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(
            f"{name} must hold token ids in 0..{vocab_size - 1} "
            f"(vocab_size {vocab_size}), "
            f"got values from {int(x.min())} to {int(x.max())}"
        )


def check_token_batch(
    name: str, ids, vocab_size: int, max_len: int, length: str = "T"
) -> None:
    """``ids`` is a (B, ``length``) tensor of token ids in
    ``0 .. vocab_size - 1`` with at most ``max_len`` positions (a model's
    table of positions)."""
    check_rank(name, ids, (2,), f"(B, {length})")
    check_token_ids(name, ids, vocab_size)
    if ids.shape[1] > max_len:
        raise ValueError(
            f"{name} has {length}={ids.shape[1]} positions, "
            f"more than max_len={max_len}"
        )


def check_mask_dtype(
    name: str, mask, float_dtype: torch.dtype, bool_meaning: str
) -> None:
    """``mask`` is a boolean tensor or a float tensor of ``float_dtype``
    (added to scores).

    ``bool_meaning`` states what ``True`` means for this mask, e.g.
    "True = may attend"; it goes into the message so the caller sees the
    convention next to the error.
    """
    check_tensor(name, mask)
    if mask.dtype != torch.bool and mask.dtype != float_dtype:
        raise ValueError(
            f"{name} must be bool ({bool_meaning}) or {float_dtype} "
            "(added to the scores), "
            f"got dtype {mask.dtype}"
        )


def check_integer_dtype(name: str, x: torch.Tensor, what="integers") -> None:
    """``x`` has an integer dtype (not float, bool or complex)."""
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold {what}, got dtype {x.dtype}")


def check_bool_mask(
    name: str, mask, expected: Sequence, layout: str, meaning: str
) -> None:
    """``mask`` is a bool tensor of shape ``expected``, written ``layout``
    (e.g. "(B, T)"); ``meaning`` says what True means, e.g. "True = real
    token", and goes into the message."""
    check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must be bool ({meaning}), got dtype {mask.dtype}"
        )
    check_layout(name, mask, expected, layout)


def check_sampling(temperature, top_k, vocab_size: int, generator) -> None:
    """The arguments of drawing tokens from a model's prediction:
    ``temperature`` a number > 0, ``top_k`` None or an int in
    ``1 .. vocab_size``, ``generator`` a ``torch.Generator`` or None."""
    number = isinstance(temperature, (int, float))
    if not number or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(
            f"temperature must be a number > 0, got {temperature!r}"
        )
    top_k_ok = top_k is None or (_is_int(top_k) and 1 <= top_k <= vocab_size)
    if not top_k_ok:
        raise ValueError(
            f"top_k must be None or an int in 1..{vocab_size} "
            f"(the vocabulary size), got {top_k!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator or None, "
            f"got {type(generator).__name__}"
        )


def check_sequence(
    name: str, x, size: int, what: str, layout: str = "(B, T, F)"
) -> None:
    """``x`` is a batch-first sequence (B, T, ``size``) with T >= 1, as the
    scan-based layers (minGRU/minLSTM, the SSM, linear attention) take it;
    ``what`` names the feature size, e.g. "input_size", and ``layout`` the
    dimensions, e.g. "(B, T, I)"."""
    check_rank(name, x, (3,), layout)
    check_size(name, x, -1, size, what)
    if x.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one time step (T >= 1 in {layout}), "
            f"got shape {shape_str(x.shape)}"
        )
