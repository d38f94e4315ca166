"""seqbook_lib.warmup: the inverse-square-root (Noam) warm-up schedule."""

import pytest
import torch

from seqbook_lib.warmup import inverse_sqrt_warmup


def test_rises_linearly_peaks_at_warmup_then_decays_as_inverse_sqrt():
    d, w = 512, 4000
    lrs = [inverse_sqrt_warmup(s, d, w) for s in range(3 * w)]
    peak = (d * w) ** -0.5
    assert max(lrs) == pytest.approx(peak) and lrs.index(max(lrs)) == w - 1  # n = step + 1 = warmup
    assert lrs[:w] == pytest.approx([d**-0.5 * (s + 1) * w**-1.5 for s in range(w)])
    assert lrs[4 * w - 1 - w] == pytest.approx(d**-0.5 * (3 * w) ** -0.5)
    assert inverse_sqrt_warmup(4 * w - 1, d, w) == pytest.approx(peak / 2)  # n = 4 w: half the peak
    assert all(a < b for a, b in zip(lrs[: w - 1], lrs[1:w]))
    assert all(a > b for a, b in zip(lrs[w - 1 :], lrs[w:]))


def test_as_a_lambdalr_factor():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: inverse_sqrt_warmup(s, 16, 10))
    seen = []
    for _ in range(30):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * inverse_sqrt_warmup(s, 16, 10) for s in range(30)])


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 16, 10), r"step must be an int >= 0, got -1"),
        ((1.5, 16, 10), r"step must be an int >= 0, got 1.5"),
        ((0, 0, 10), r"d_model must be a positive int, got 0"),
        ((0, 16, 0), r"warmup must be a positive int, got 0"),
    ],
)
def test_errors(args, match):
    with pytest.raises(ValueError, match=match):
        inverse_sqrt_warmup(*args)


def test_docstring_example():
    import doctest

    import seqbook_lib.warmup as warmup_module

    result = doctest.testmod(warmup_module)
    assert result.attempted == 1 and result.failed == 0
