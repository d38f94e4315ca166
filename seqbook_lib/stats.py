"""Comparing two models honestly: summaries over seeds and a paired test.

A claim that one model beats another rests either on several training runs
(``over_seeds``: mean and range) or, for two fixed models scored on the same
examples, on a test of the paired predictions (``mcnemar``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch


class SeedSummary(NamedTuple):
    """Mean, lowest and highest value of one figure over training seeds."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} (range {self.low:.3f}-{self.high:.3f}, {self.n} seeds)"


def over_seeds(values: Sequence[float]) -> SeedSummary:
    """Mean and range of a figure measured once per seed."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("over_seeds needs at least one value, got none")
    return SeedSummary(sum(values) / len(values), min(values), max(values),
                       len(values))


def separated(a: SeedSummary, b: SeedSummary, margin: float = 0.0) -> bool:
    """True when every seed of ``a`` lies above every seed of ``b`` by more
    than ``margin``: the ranges separate, and ``a`` wins."""
    return a.low > b.high + margin


class McNemar(NamedTuple):
    """Counts of the examples only one model gets right, and the p-value."""

    only_a: int  # a right, b wrong
    only_b: int  # b right, a wrong
    p_value: float  # two-sided, exact


def mcnemar(correct_a: torch.Tensor, correct_b: torch.Tensor) -> McNemar:
    """McNemar's exact test of two classifiers scored on the same examples.

    Only the discordant examples carry information: under the hypothesis
    that both models are equally accurate, each of the n = only_a + only_b
    discordant examples is equally likely to favour either model, so
    only_a ~ Binomial(n, 1/2) and

        p = min(1, 2 * P(X <= min(only_a, only_b))),  X ~ Binomial(n, 1/2).

    ``correct_a``, ``correct_b``: boolean tensors (N,), True where the model
    is right.
    """
    for name, c in (("correct_a", correct_a), ("correct_b", correct_b)):
        if not isinstance(c, torch.Tensor) or c.dtype != torch.bool or c.dim() != 1:
            raise ValueError(
                f"{name} must be a 1-D bool tensor, got "
                f"{type(c).__name__} {getattr(c, 'dtype', '')} "
                f"{tuple(getattr(c, 'shape', ()))}"
            )
    if correct_a.shape != correct_b.shape:
        raise ValueError(
            "correct_a and correct_b must score the same examples, got "
            f"{tuple(correct_a.shape)} and {tuple(correct_b.shape)}"
        )
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((correct_b & ~correct_a).sum())
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    p = min(1.0, 2 * tail / 2**n)  # exact integers, then one division
    return McNemar(only_a, only_b, p)
