"""seqbook_lib.minrnn: minGRU and minLSTM, the log-space scan against the
step loop and against the paper's equations (float64)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_forward_backward, perturb

from seqbook_lib.minrnn import MinGRU, MinLSTM, g, log_g

CLASSES = [MinGRU, MinLSTM]


def make(cls, I=3, H=5, bias=True, seed=0):
    """A layer with perturbed weights (non-trivial biases) in parallel
    mode, and a copy with the same weights in sequential mode."""
    torch.manual_seed(seed)
    parallel = cls(I, H, bias=bias)
    perturb(parallel.parameters(), scale=0.5)
    sequential = copy.deepcopy(parallel)
    sequential.mode = "sequential"
    return parallel, sequential


def by_the_equations(layer, x, h0):
    """The paper's equations, written out with a loop, from layer.proj."""
    H = layer.hidden_size
    pre = F.linear(x, layer.proj.weight, layer.proj.bias)  # (B, T, G*H)
    h = torch.zeros(x.shape[0], H) if h0 is None else h0
    hs = []
    for t in range(x.shape[1]):
        if isinstance(layer, MinGRU):
            z = torch.sigmoid(pre[:, t, :H])
            h_tilde = g(pre[:, t, H:])
            h = (1 - z) * h + z * h_tilde
        else:
            f = torch.sigmoid(pre[:, t, :H])
            i = torch.sigmoid(pre[:, t, H : 2 * H])
            h_tilde = g(pre[:, t, 2 * H :])
            h = f / (f + i) * h + i / (f + i) * h_tilde
        hs.append(h)
    return torch.stack(hs, dim=1)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_parallel_equals_sequential(cls, T, with_h0, bias):
    parallel, sequential = make(cls, bias=bias)
    gen = torch.Generator().manual_seed(T)
    x = 2 * torch.randn(4, T, 3, generator=gen)
    inputs = [x] + ([torch.rand(4, 5, generator=gen) + 0.1] if with_h0 else [])
    out, _ = assert_same_forward_backward(parallel, sequential, inputs)
    output, h_n = out
    assert output.shape == (4, T, 5) and h_n.shape == (4, 5)
    torch.testing.assert_close(h_n, output[:, -1], atol=0, rtol=0)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_modes_compute_the_papers_equations(cls, mode, with_h0):
    layer, _ = make(cls, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = 2 * torch.randn(3, 9, 3, generator=gen)
    h0 = torch.rand(3, 5, generator=gen) + 0.1 if with_h0 else None
    output, _ = layer(x, h0, mode=mode)
    torch.testing.assert_close(output, by_the_equations(layer, x, h0))
    assert (output > 0).all()  # positive candidates keep h positive


@pytest.mark.parametrize("cls", CLASSES)
def test_step_equals_sequential(cls):
    layer, _ = make(cls, seed=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 3, generator=gen)
    h0 = torch.rand(2, 5, generator=gen) + 0.1
    for start in (None, h0):
        output, h_n = layer(x, start, mode="sequential")
        h = start
        for t in range(7):
            h = layer.step(x[:, t], h)
            torch.testing.assert_close(h, output[:, t], atol=1e-12, rtol=0)
        torch.testing.assert_close(h, h_n, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_continuing_from_h_n_equals_one_pass(cls):
    """Splitting a sequence and passing h_n on gives the same states."""
    layer, _ = make(cls, seed=4)
    x = torch.randn(2, 20, 3, generator=torch.Generator().manual_seed(4))
    whole, _ = layer(x)
    first, h = layer(x[:, :8])
    second, _ = layer(x[:, 8:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


@pytest.mark.parametrize("cls", CLASSES)
def test_long_sequence_parallel_equals_sequential(cls):
    parallel, sequential = make(cls, seed=5)
    x = 3 * torch.randn(2, 1000, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(parallel(x)[0], sequential(x)[0])


def test_g_and_log_g():
    x = torch.tensor([-60.0, -2.0, -1e-9, 0.0, 1e-9, 0.5, 3.0, 80.0])
    expected = torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    torch.testing.assert_close(g(x), expected)
    torch.testing.assert_close(log_g(x), expected.log())
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(log_g(x).sum(), x)
    assert torch.isfinite(grad).all()  # no NaN from the branch not taken
    expected_grad = torch.where(x >= 0, 1 / (x + 0.5), 1 - torch.sigmoid(x))
    torch.testing.assert_close(grad, expected_grad.detach())
    torch.testing.assert_close(g(torch.tensor([0.0])), torch.tensor([0.5]))


@pytest.mark.parametrize("cls", CLASSES)
def test_parameters_and_repr(cls):
    layer = cls(3, 5, bias=False, mode="sequential")
    gates = 2 if cls is MinGRU else 3
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {"proj.weight": (gates * 5, 3)}
    assert f"{cls.__name__}(\n  3, 5, bias=False, mode='sequential'" in repr(
        layer
    )


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_shapes_are_rejected(cls):
    layer = cls(3, 5)
    with pytest.raises(
        ValueError,
        match=r"input must have 3 dimensions \(B, T, I\), got shape \(7, 3\)",
    ):
        layer(torch.randn(7, 3))
    with pytest.raises(
        ValueError,
        match=r"size 3 in dimension -1 \(input_size\), got shape \(2, 7, 4\)",
    ):
        layer(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="at least one time step"):
        layer(torch.randn(2, 0, 3))
    with pytest.raises(
        ValueError,
        match=r"h0 must have shape \(B, H\) = \(2, 5\), got \(5,\)",
    ):
        layer(torch.randn(2, 7, 3), torch.ones(5))
    with pytest.raises(
        ValueError, match=r"x_t must have 2 dimensions \(B, I\)"
    ):
        layer.step(torch.randn(2, 1, 3))
    with pytest.raises(
        ValueError, match=r"h must have shape \(B, H\) = \(2, 5\), got"
    ):
        layer.step(torch.randn(2, 3), torch.ones(3, 5))


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_arguments_are_rejected(cls):
    layer = cls(3, 5)
    x = torch.randn(2, 7, 3)
    with pytest.raises(ValueError, match=r"expected h0 > 0 everywhere"):
        layer(x, torch.zeros(2, 5))
    layer(x, torch.zeros(2, 5), mode="sequential")  # fine step by step
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \['parallel', 'sequential'\], got 'scan'",
    ):
        layer(x, mode="scan")
    with pytest.raises(ValueError, match="mode must be one of"):
        cls(3, 5, mode="loop")
    with pytest.raises(
        ValueError, match="hidden_size must be a positive int, got 0"
    ):
        cls(3, 0)


@pytest.mark.parametrize("cls", CLASSES)
def test_gradients_agree_at_zero_pre_activation(cls):
    """Without bias a zero input makes every pre-activation exactly 0, where
    g switches branch: both modes must use the same one-sided slope."""
    parallel, sequential = make(cls, bias=False, seed=6)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(6))
    x[:, 2] = 0.0
    assert_same_forward_backward(parallel, sequential, [x])
