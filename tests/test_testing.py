"""seqbook_lib.testing: the comparisons catch deliberately wrong modules.

Each wrong module below gets one thing wrong -- the forward pass, the
gradient of a parameter, the gradient of the input, the parameter names or
the structure of the output -- and the checks must notice exactly that.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqbook_lib.cells import LSTMCell, RNNCell
from seqbook_lib.rnn import LSTM
from seqbook_lib.testing import (
    assert_same_forward_backward,
    clone_inputs,
    flat_tensors,
    max_difference,
)

I, O = 3, 2  # input and output size of the linear maps below


def linear_pair(seed=0):
    """An nn.Linear and an exact copy: the same weights, the same code."""
    torch.manual_seed(seed)
    ours = nn.Linear(I, O)
    return ours, copy.deepcopy(ours)


class DetachedWeight(nn.Linear):
    """Right outputs; no gradient reaches ``weight``."""

    def forward(self, x):
        return F.linear(x, self.weight.detach(), self.bias)


class DetachedInput(nn.Linear):
    """Right outputs and parameter gradients; none reaches the input."""

    def forward(self, x):
        return F.linear(x.detach(), self.weight, self.bias)


class RenamedLinear(nn.Module):
    """nn.Linear's computation with its weight under another name."""

    def __init__(self, linear):
        super().__init__()
        self.w = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x):
        return F.linear(x, self.w, self.bias)


class TwoOutputs(nn.Linear):
    """Returns ``(y, y)`` where nn.Linear returns ``y``."""

    def forward(self, x):
        y = super().forward(x)
        return y, y


def wrong_copy(linear, cls):
    wrong = cls(I, O)
    wrong.load_state_dict(linear.state_dict())
    return wrong


@pytest.fixture
def x():
    return torch.randn(4, I, generator=torch.Generator().manual_seed(1))


# -- flat_tensors and clone_inputs ------------------------------------------


def test_flat_tensors_keeps_order_and_skips_none():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert flat_tensors(a) == [a]
    assert flat_tensors(None) == []
    flat = flat_tensors((a, (b, None), [c]))
    assert [t is s for t, s in zip(flat, (a, b, c))] == [True] * 3


@pytest.mark.parametrize(
    "bad, where",
    [("abc", "output"), ({"h": torch.zeros(1)}, "output"),
     ((torch.zeros(1), 3), r"output\[1\]")],
    ids=["str", "dict", "int-inside"],
)
def test_flat_tensors_refuses_other_types(bad, where):
    with pytest.raises(TypeError, match=where + " must be a tensor"):
        flat_tensors(bad)


def test_clone_inputs_gives_fresh_leaves():
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    lengths = torch.tensor([2, 1])
    copies = clone_inputs([x, (h, c), lengths, None])
    x2, (h2, c2), lengths2, none = copies
    for new, old in [(x2, x), (h2, h), (c2, c)]:
        assert new is not old and new.is_leaf and new.requires_grad
        assert torch.equal(new, old)
    assert lengths2 is lengths and none is None  # not floating: as they are
    assert not x.requires_grad  # the originals are untouched


def test_clone_inputs_wants_a_list_of_arguments():
    with pytest.raises(TypeError, match=r"wrap a single input as \[x\]"):
        clone_inputs(torch.randn(2, 3))


# -- assert_same_forward_backward -------------------------------------------


def test_assert_same_passes_for_a_copy_and_returns_outputs(x):
    ours, theirs = linear_pair()
    out_ours, out_theirs = assert_same_forward_backward(ours, theirs, [x])
    assert out_ours.shape == out_theirs.shape == (4, O)


def test_assert_same_catches_a_wrong_forward(x):
    ours, theirs = linear_pair()
    with torch.no_grad():
        ours.bias[0] += 1e-6  # far above the tolerance of 1e-10
    with pytest.raises(AssertionError, match="output 0"):
        assert_same_forward_backward(ours, theirs, [x])


def test_assert_same_catches_a_detached_weight(x):
    ours, theirs = linear_pair()
    with pytest.raises(AssertionError, match="grad of weight"):
        assert_same_forward_backward(
            wrong_copy(ours, DetachedWeight), theirs, [x]
        )


def test_assert_same_catches_a_detached_input(x):
    ours, theirs = linear_pair()
    with pytest.raises(AssertionError, match="grad of input 0"):
        assert_same_forward_backward(
            wrong_copy(ours, DetachedInput), theirs, [x]
        )


def test_assert_same_catches_renamed_parameters(x):
    ours, theirs = linear_pair()
    with pytest.raises(AssertionError, match="parameter names differ"):
        assert_same_forward_backward(RenamedLinear(ours), theirs, [x])


def test_assert_same_catches_a_different_structure(x):
    ours, theirs = linear_pair()
    with pytest.raises(AssertionError, match="ours returned 2 tensors"):
        assert_same_forward_backward(
            wrong_copy(ours, TwoOutputs), theirs, [x]
        )


def test_assert_same_refuses_bad_arguments(x):
    ours, theirs = linear_pair()
    with pytest.raises(TypeError, match="ours must be a module or function"):
        assert_same_forward_backward("linear", theirs, [x])
    with pytest.raises(TypeError, match="inputs must be a list or tuple"):
        assert_same_forward_backward(ours, theirs, x)


# -- max_difference ---------------------------------------------------------


def test_identical_modules_differ_by_exactly_zero(x):
    ours, theirs = linear_pair()
    assert max_difference(ours, theirs, x) == 0.0


def test_perturbed_weight_gives_the_known_difference():
    ours, theirs = linear_pair()
    ours.bias = None
    theirs.bias = None
    with torch.no_grad():
        theirs.weight[0, 0] += 0.5
    x = torch.tensor([[10.0, 1.0, -2.0]])  # (1, I)
    # Output 0 moves by 0.5 * x[0, 0] = 5. The gradient of x moves by
    # 0.5 * upstream[0, 0], far less for a standard normal draw, and the
    # weight's gradient upstream.T @ x does not depend on the weight.
    for seed in (0, 1, 2):
        err = max_difference(ours, theirs, x, seed=seed)
        assert err == pytest.approx(5.0, rel=1e-12)


def test_gradient_bugs_are_caught_though_outputs_agree(x):
    ours, theirs = linear_pair()
    for cls in (DetachedWeight, DetachedInput):
        wrong = wrong_copy(ours, cls)
        with torch.no_grad():
            torch.testing.assert_close(wrong(x), theirs(x), atol=0, rtol=0)
        assert max_difference(wrong, theirs, x) > 0.01


def test_extra_arguments_reach_both_sides():
    gen = torch.Generator().manual_seed(2)
    x, h0 = torch.randn(3, 5, generator=gen), torch.randn(3, 4, generator=gen)
    state = (h0, torch.randn(3, 4, generator=gen))
    for ours, theirs, s in [(RNNCell(5, 4), nn.RNNCell(5, 4), h0),
                            (LSTMCell(5, 4), nn.LSTMCell(5, 4), state)]:
        theirs.load_state_dict(ours.state_dict())
        assert max_difference(ours, theirs, x, s) < 1e-12
        # h0 matters: a different state on one side only is noticed
        other = s.flip(0) if torch.is_tensor(s) else (s[0].flip(0), s[1])
        assert max_difference(
            ours, theirs, x, run_theirs=lambda m, x: m(x, other)
        ) > 0.01


def test_each_side_can_run_its_own_way():
    """The library's masked path against torch's packed path."""
    gen = torch.Generator().manual_seed(3)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 2, generator=gen)  # (B, T, I)
    ours = LSTM(2, 3, num_layers=2, batch_first=True)
    theirs = nn.LSTM(2, 3, num_layers=2, batch_first=True)
    theirs.load_state_dict(ours.state_dict())

    def packed(module, x):
        seqs = pack_padded_sequence(x, lengths, batch_first=True,
                                    enforce_sorted=False)
        out, state = module(seqs)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=5)
        return out, state

    err = max_difference(ours, theirs, x,
                         run_ours=lambda m, x: m(x, lengths=lengths),
                         run_theirs=packed)
    assert err < 1e-12
    # without the lengths the padding leaks into the states
    assert max_difference(ours, theirs, x, run_theirs=packed) > 1e-3


def test_nan_is_reported(x):
    ours, theirs = linear_pair()
    with torch.no_grad():
        ours.bias[1] = float("nan")
    assert math.isnan(max_difference(ours, theirs, x))


def test_max_difference_refuses_different_structures(x):
    ours, theirs = linear_pair()
    with pytest.raises(ValueError, match="ours returned 2 tensors, theirs 1"):
        max_difference(wrong_copy(ours, TwoOutputs), theirs, x)
    with pytest.raises(ValueError, match=r"shape \(4, 2\) in ours, \(4, 3\)"):
        max_difference(ours, nn.Linear(I, 3), x)
    with pytest.raises(ValueError, match="parameter names differ"):
        max_difference(RenamedLinear(ours), theirs, x)
    with pytest.raises(ValueError, match="no tensor to compare"):
        max_difference(ours, theirs, x, run_ours=lambda m, x: None,
                       run_theirs=lambda m, x: None)


def test_max_difference_refuses_bad_arguments(x):
    ours, theirs = linear_pair()
    with pytest.raises(TypeError, match="ours must be a torch.nn.Module"):
        max_difference(F.relu, theirs, x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        max_difference(ours, theirs, x.tolist())
    with pytest.raises(TypeError, match="run_theirs must be a function"):
        max_difference(ours, theirs, x, run_theirs="packed")
