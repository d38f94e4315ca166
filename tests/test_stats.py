"""Tests of seqbook_lib.stats: seed summaries and McNemar's exact test."""

import math

import pytest
import torch

from seqbook_lib.stats import mcnemar, over_seeds, separated


def _correct(pattern):
    return torch.tensor([c == "1" for c in pattern])


def test_mcnemar_counts_and_exact_p_value():
    # a right on 1 discordant example, b right on 9; 5 ties of each kind.
    a = _correct("1" * 5 + "0" * 5 + "1" + "0" * 9)
    b = _correct("1" * 5 + "0" * 5 + "0" + "1" * 9)
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b) == (1, 9)
    # P(X <= 1) for X ~ Binomial(10, 1/2) is (1 + 10) / 1024, two-sided x2.
    assert result.p_value == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar(b, a).p_value == result.p_value  # symmetric


def test_mcnemar_agrees_with_the_normal_approximation_for_many_examples():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20_000, generator=g) < 0.88
    b = torch.rand(20_000, generator=g) < 0.87
    result = mcnemar(a, b)
    n = result.only_a + result.only_b
    z = (abs(result.only_a - result.only_b) - 1) / math.sqrt(n)
    normal = math.erfc(z / math.sqrt(2))  # two-sided, continuity-corrected
    assert result.p_value == pytest.approx(normal, rel=0.05)


def test_mcnemar_of_identical_predictions_is_one():
    a = _correct("1101")
    assert mcnemar(a, a) == (0, 0, 1.0)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="bool tensor"):
        mcnemar(torch.tensor([1, 0]), _correct("10"))
    with pytest.raises(ValueError, match="same examples"):
        mcnemar(_correct("10"), _correct("101"))


def test_over_seeds_and_separated():
    s = over_seeds([0.8, 0.9, 0.85])
    assert s.mean == pytest.approx(0.85) and (s.low, s.high, s.n) == (0.8, 0.9, 3)
    assert str(s) == "0.850 (range 0.800-0.900, 3 seeds)"
    assert separated(over_seeds([0.95, 0.97]), s)
    assert not separated(over_seeds([0.95, 0.97]), s, margin=0.06)
    assert not separated(s, over_seeds([0.7, 0.81]))  # ranges overlap
    with pytest.raises(ValueError, match="at least one"):
        over_seeds([])
