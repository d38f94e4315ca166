"""seqbook_lib.ssm: the selective SSM's scan against its loop and against
the equations written out; the Mamba-style block (float64)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_forward_backward, perturb

from seqbook_lib.ssm import MambaBlock, SelectiveSSM

D_MODEL, N = 6, 4


def make(seed=0, **kwargs):
    """A perturbed S6 layer in scan mode with Delta of order 0.1 .. 1 (so
    the state both decays and takes in input), and a sequential copy."""
    torch.manual_seed(seed)
    kwargs = {"dt_min": 0.1, "dt_max": 1.0, **kwargs}
    scan = SelectiveSSM(D_MODEL, N, **kwargs)
    perturb(scan.parameters(), scale=0.2)
    sequential = copy.deepcopy(scan)
    sequential.mode = "sequential"
    return scan, sequential


def by_the_equations(layer, x, h0):
    """Delta, B, C from the projections, then the recurrence, one channel
    and one step at a time."""
    R = layer.dt_rank
    proj = x @ layer.x_proj.weight.T  # (B, T, R + 2N)
    low, Bm, Cm = proj[..., :R], proj[..., R : R + N], proj[..., R + N :]
    delta = F.softplus(low @ layer.dt_proj.weight.T + layer.dt_proj.bias)
    A = -torch.exp(layer.A_log)  # (D, N)
    h = torch.zeros(x.shape[0], D_MODEL, N) if h0 is None else h0.clone()
    y = torch.zeros_like(x)
    for t in range(x.shape[1]):
        for d in range(D_MODEL):
            dt = delta[:, t, d : d + 1]  # (B, 1)
            x_td = x[:, t, d : d + 1]  # (B, 1)
            h[:, d] = torch.exp(dt * A[d]) * h[:, d] + dt * x_td * Bm[:, t]
            read = (h[:, d] * Cm[:, t]).sum(-1)  # (B,)
            y[:, t, d] = read + layer.D[d] * x[:, t, d]
    return y, h


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_scan_equals_sequential(T, with_h0):
    scan, sequential = make()
    gen = torch.Generator().manual_seed(T)
    x = torch.randn(3, T, D_MODEL, generator=gen)
    inputs = [x]
    if with_h0:
        inputs.append(torch.randn(3, D_MODEL, N, generator=gen))
    out, _ = assert_same_forward_backward(scan, sequential, inputs)
    y, h_n = out
    assert y.shape == (3, T, D_MODEL) and h_n.shape == (3, D_MODEL, N)


@pytest.mark.parametrize("mode", ["scan", "sequential"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_modes_compute_the_equations(mode, with_h0):
    layer, _ = make(seed=1, mode=mode)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, D_MODEL, generator=gen)
    h0 = torch.randn(2, D_MODEL, N, generator=gen) if with_h0 else None
    y, h_n = layer(x, h0)
    y_ref, h_ref = by_the_equations(layer, x, h0)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h_n, h_ref)


def test_step_equals_sequential():
    layer, _ = make(seed=2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, D_MODEL, generator=gen)
    h0 = torch.randn(2, D_MODEL, N, generator=gen)
    for start in (None, h0):
        y, h_n = layer(x, start, mode="sequential")
        h = start
        for t in range(6):
            y_t, h = layer.step(x[:, t], h)
            torch.testing.assert_close(y_t, y[:, t], atol=1e-12, rtol=0)
        torch.testing.assert_close(h, h_n, atol=1e-12, rtol=0)


def test_continuing_from_h_n_equals_one_pass():
    layer, _ = make(seed=3)
    x = torch.randn(2, 20, D_MODEL, generator=torch.Generator().manual_seed(3))
    whole, h_whole = layer(x)
    first, h = layer(x[:, :9])
    second, h_end = layer(x[:, 9:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    torch.testing.assert_close(h_end, h_whole)


def test_initialisation():
    """S4D-real A_n = -(n + 1) in every channel, D = 1, Delta in
    [dt_min, dt_max] for a zero input, so 0 < A_bar < 1."""
    torch.manual_seed(4)
    layer = SelectiveSSM(32, 8, dt_min=1e-3, dt_max=0.1)
    A = -torch.exp(layer.A_log)
    torch.testing.assert_close(A, -torch.arange(1.0, 9).expand(32, 8))
    torch.testing.assert_close(layer.D, torch.ones(32))
    assert layer.dt_rank == 2  # ceil(32 / 16)
    delta, _, _ = layer.selection(torch.zeros(1, 32))
    assert (delta >= 1e-3 - 1e-12).all() and (delta <= 0.1 + 1e-12).all()
    assert delta.max() / delta.min() > 5  # spread over the range
    x = torch.randn(2, 3, 32)
    A_bar, _ = layer.discretise(*layer.selection(x)[:2], x)
    assert ((A_bar > 0) & (A_bar < 1)).all()


def test_delta_selects_what_to_keep():
    """A large Delta resets the state to the new input (A_bar -> 0); a
    tiny Delta keeps the old state (A_bar -> 1) and takes in almost
    nothing."""
    layer = SelectiveSSM(2, 3)
    x_t = torch.randn(1, 2)
    h = torch.randn(1, 2, 3)
    _, B, _ = layer.selection(x_t)
    A_bar, Bx = layer.discretise(torch.full((1, 2), 50.0), B, x_t)
    torch.testing.assert_close(A_bar * h + Bx, Bx, atol=1e-15, rtol=0)
    A_bar, Bx = layer.discretise(torch.full((1, 2), 1e-9), B, x_t)
    torch.testing.assert_close(A_bar * h + Bx, h, atol=1e-7, rtol=0)


def test_gradients_reach_every_parameter():
    layer, _ = make(seed=5)
    y, h = layer(torch.randn(2, 7, D_MODEL))
    (y.sum() + h.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- the block ----------------------------------------------------------------


def make_block(seed=0):
    torch.manual_seed(seed)
    block = MambaBlock(4, d_state=3, d_conv=3, expand=2)
    perturb(block.parameters(), scale=0.2)
    return block


@pytest.mark.parametrize("T", [1, 7, 33])
def test_block_scan_equals_sequential(T):
    block = make_block()
    sequential = copy.deepcopy(block)
    sequential.ssm.mode = "sequential"
    x = torch.randn(2, T, 4, generator=torch.Generator().manual_seed(T))
    out, _ = assert_same_forward_backward(block, sequential, [x])
    assert out.shape == (2, T, 4)


def test_block_is_causal():
    block = make_block(seed=1)
    x = torch.randn(2, 10, 4, generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 6:] += 1.0
    a, b = block(x), block(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_block_conv_sees_d_conv_steps():
    """Changing the input at step 3 changes what the block feeds the S6
    layer (the convolution's output) at steps 3 .. 3 + d_conv - 1 only;
    the SSM then carries it on."""
    block = make_block(seed=2)  # d_conv = 3
    seen = []
    block.ssm.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[:, 3] += 1.0
    block(x), block(changed)
    differs = (seen[0] - seen[1]).abs().amax(dim=(0, 2)) > 0  # (T,)
    assert differs.tolist() == [False] * 3 + [True] * 3 + [False] * 2


# -- errors -------------------------------------------------------------------


def test_errors():
    layer = SelectiveSSM(D_MODEL, N)
    with pytest.raises(
        ValueError,
        match=r"x must have 3 dimensions \(B, T, D\), got shape \(5, 6\)",
    ):
        layer(torch.randn(5, 6))
    with pytest.raises(
        ValueError,
        match=r"size 6 in dimension -1 \(d_model\), got shape \(2, 5, 4\)",
    ):
        layer(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="at least one time step"):
        layer(torch.randn(2, 0, 6))
    with pytest.raises(
        ValueError,
        match=r"h0 must have shape \(B, D, N\) = \(2, 6, 4\), got \(2, 6\)",
    ):
        layer(torch.randn(2, 5, 6), torch.zeros(2, 6))
    with pytest.raises(
        ValueError, match=r"h must have shape \(B, D, N\) = \(2, 6, 4\)"
    ):
        layer.step(torch.randn(2, 6), torch.zeros(2, 4, 6))
    with pytest.raises(ValueError, match=r"x_t must have 2 dimensions"):
        layer.step(torch.randn(2, 1, 6))
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \['scan', 'sequential'\], got 'parallel'",
    ):
        layer(torch.randn(2, 5, 6), mode="parallel")
    with pytest.raises(
        ValueError, match="expected 0 < dt_min <= dt_max, got dt_min=0.5"
    ):
        SelectiveSSM(4, dt_min=0.5, dt_max=0.1)
    with pytest.raises(
        ValueError, match="d_state must be a positive int, got 0"
    ):
        SelectiveSSM(4, 0)
    with pytest.raises(
        ValueError,
        match=r"size 4 in dimension -1 \(d_model\), got shape \(2, 5, 3\)",
    ):
        MambaBlock(4)(torch.randn(2, 5, 3))
    with pytest.raises(
        ValueError,
        match=r"x must have at least one time step \(T >= 1 in \(B, T, d\)\)",
    ):
        MambaBlock(4)(torch.randn(2, 0, 4))
