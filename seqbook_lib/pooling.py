"""Pooling over time that ignores padding: masked mean and masked max.

A classifier that reads a padded batch of recurrent (or attention) outputs
``x`` of shape (B, T, H) often summarizes each sequence by one vector (B, H):
the mean or the maximum of its outputs over time. Over the *real* steps only:

    mean_b = (1 / L_b) * sum_{t < L_b} x[b, t]
    max_b  = max_{t < L_b} x[b, t]              (per feature)

Taken over all T steps instead, the padding changes both: the mean is diluted
by the padded steps and the maximum picks up their values (e.g. the zeros a
masked recurrent layer writes there, which win whenever a feature is negative
on every real step).

The valid steps are given either as ``lengths`` (B,) -- steps ``0 .. L_b - 1``
are real -- or as a boolean ``mask`` (B, T), True = real step (the convention
of :func:`seqbook_lib.attention.padding_mask`). Padded entries of ``x`` never
reach the result or its gradient, even when they hold NaN or inf.

Time-major outputs (T, B, H), e.g. of :class:`seqbook_lib.rnn.LSTM` without
``batch_first``, are pooled as
``masked_mean(output.transpose(0, 1), lengths)``.
"""

from __future__ import annotations

import torch

from ._checks import (
    check_bool_mask,
    check_lengths,
    check_rank,
)


def valid_steps(x: torch.Tensor, lengths=None, mask=None) -> torch.Tensor:
    """The (B, T, 1) bool mask of the real steps, True = real.

    Checks ``x`` (B, T, H) and that exactly one of ``lengths`` (B,) and
    ``mask`` (B, T) is given.
    """
    check_rank("x", x, (3,), "(B, T, H)")
    if not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor, got dtype {x.dtype}"
        )
    B, T = x.shape[:2]
    if (lengths is None) == (mask is None):
        raise ValueError(
            "give exactly one of lengths (B,) and mask (B, T), got "
            + ("neither" if lengths is None else "both")
        )
    if lengths is not None:
        lengths = check_lengths(lengths, B, T).to(x.device)
        steps = torch.arange(T, device=x.device)
        mask = steps < lengths[:, None]  # (B, T)
    else:
        check_bool_mask("mask", mask, (B, T), "(B, T)", "True = real step")
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                "every sequence needs at least one real step (a True in "
                f"its mask row), got none in rows {empty}"
            )
    return mask.unsqueeze(-1)  # (B, T, 1)


def masked_mean(x: torch.Tensor, lengths=None, *, mask=None) -> torch.Tensor:
    """Mean of ``x`` (B, T, H) over each sequence's real steps: (B, H).

    ``mean_b = sum_{t real} x[b, t] / (number of real steps of b)``.
    """
    valid = valid_steps(x, lengths, mask)  # (B, T, 1)
    total = torch.where(valid, x, 0.0).sum(dim=1)  # (B, H)
    count = valid.sum(dim=1)  # (B, 1)
    return total / count


def masked_max(x: torch.Tensor, lengths=None, *, mask=None) -> torch.Tensor:
    """Maximum of ``x`` (B, T, H) over each sequence's real steps: (B, H).

    ``max_b = max_{t real} x[b, t]``, feature by feature. Padded steps are
    set to -inf before the maximum, so they never win. The gradient goes to
    the step that holds the maximum (as with ``Tensor.max``).
    """
    valid = valid_steps(x, lengths, mask)  # (B, T, 1)
    filled = torch.where(valid, x, float("-inf"))
    return filled.max(dim=1).values  # (B, H)
