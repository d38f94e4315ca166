"""Tests of seqbook_lib.schedule: warm-up and cosine decay."""

import pytest

from seqbook_lib.schedule import cosine_lr


def test_cosine_lr():
    steps, peak, warm = 110, 0.1, 10
    lrs = [cosine_lr(s, steps, peak, warm, 0.01) for s in range(steps)]
    assert lrs[:warm] == pytest.approx([peak * (s + 1) / warm
                                        for s in range(warm)])
    assert lrs[warm] == pytest.approx(peak)
    assert lrs[warm + 50] == pytest.approx((peak + 0.01) / 2)
    assert cosine_lr(steps, steps, peak, warm, 0.01) == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))


def test_cosine_lr_as_a_lambdalr_factor():
    """With peak 1 and no final rate it falls from 1 to 0."""
    assert cosine_lr(0, 100, 1.0) == 1.0
    assert cosine_lr(50, 100, 1.0) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 1.0) == pytest.approx(0.0, abs=1e-15)
