"""seqbook_lib.scan: parallel scans against the loop, and the loop against
closed forms (float64, forward and backward)."""

import pytest
import torch
from helpers import assert_same_forward_backward

from seqbook_lib._checks import check_sequence
from seqbook_lib.scan import (
    METHODS,
    affine_compose,
    associative_scan,
    linear_recurrence,
    linear_recurrence_loop,
    log_space_linear_recurrence,
    sequential_scan,
)

LENGTHS = [1, 2, 7, 8, 33]


def matmul_op(a, b):
    """Non-commutative: the prefix x_0 @ x_1 @ ... @ x_t."""
    return a @ b


def random_elems(name, T, dim, gen):
    """(op, elems) of one kind, time in ``dim`` of a (3, T, 4)-like shape."""
    if name == "matmul":  # (3, T, 2, 2) or (T, 3, 2, 2): 2x2 matrices
        shape = [3, 2, 2]
        shape.insert(dim, T)
        # near the identity, so that products of 33 stay of order one
        x = torch.eye(2) + 0.3 * torch.randn(shape, generator=gen)
        return matmul_op, x
    shape = [3, 4]
    shape.insert(dim % 3, T)
    x = torch.randn(shape, generator=gen)
    if name == "add":
        return torch.add, x
    if name == "mul":
        return torch.mul, 1 + 0.2 * x
    if name == "max":
        return torch.maximum, x
    # the linear-recurrence pair
    a = torch.rand(shape, generator=gen)
    return affine_compose, (a, x)


OPS = ["add", "mul", "max", "affine", "matmul"]


def run_scan(scan, op, dim, **kwargs):
    """The scan as a function of the tensors, for the comparisons."""

    def run(*xs):
        elems = xs if len(xs) > 1 else xs[0]
        return scan(op, elems, dim, **kwargs)

    return run


# time first, in the middle, and counted from the end (not for the matrices,
# whose last two dimensions are the matrix itself)
OP_DIMS = [(name, dim) for name in OPS for dim in (0, 1, -2)]
OP_DIMS.remove(("matmul", -2))


@pytest.mark.parametrize("name, dim", OP_DIMS)
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("method", METHODS)
def test_associative_scan_equals_loop(name, dim, T, method):
    gen = torch.Generator().manual_seed(T)
    op, elems = random_elems(name, T, dim, gen)
    inputs = list(elems) if isinstance(elems, tuple) else [elems]
    assert_same_forward_backward(
        run_scan(associative_scan, op, dim, method=method),
        run_scan(sequential_scan, op, dim),
        inputs,
    )


@pytest.mark.parametrize("scan", [sequential_scan, associative_scan])
@pytest.mark.parametrize("T", [1, 7, 33])
def test_scans_are_inclusive(scan, T):
    """Against torch's own cumulative ops: y_t includes x_t (an exclusive
    scan, or one shifted by a step, fails here)."""
    x = torch.randn(2, T, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scan(torch.add, x, 1), x.cumsum(1))
    torch.testing.assert_close(scan(torch.mul, x, 1), x.cumprod(1))
    torch.testing.assert_close(
        scan(torch.maximum, x, 1), x.cummax(1).values
    )


@pytest.mark.parametrize("method", METHODS)
def test_matrix_prefix_is_ordered_products(method):
    """y_t = x_0 @ ... @ x_t, written out: the operator's order is kept."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 2, generator=gen)
    y = associative_scan(matmul_op, x, 0, method=method)
    expected = x[0]
    for t in range(1, 5):
        expected = expected @ x[t]
        torch.testing.assert_close(y[t], expected)
    assert not torch.allclose(y[4], x[4] @ x[3] @ x[2] @ x[1] @ x[0])


def test_tuple_elems_give_a_tuple_and_tensor_a_tensor():
    x = torch.randn(4, 3)
    assert isinstance(associative_scan(torch.add, x), torch.Tensor)
    out = associative_scan(affine_compose, (x.sigmoid(), x))
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == out[1].shape == (4, 3)


# -- the linear recurrence ----------------------------------------------------


def recurrence_inputs(T, with_h0, gen, shape=(3, 4)):
    """a in (0, 1), b of both signs, (B, T, ...) and optionally h0."""
    B, *rest = shape
    a = torch.rand(B, T, *rest, generator=gen)
    b = torch.randn(B, T, *rest, generator=gen)
    h0 = torch.randn(B, *rest, generator=gen) if with_h0 else None
    return a, b, h0


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
@pytest.mark.parametrize("method", METHODS)
def test_linear_recurrence_equals_loop(T, with_h0, method):
    a, b, h0 = recurrence_inputs(T, with_h0, torch.Generator().manual_seed(T))
    inputs = [a, b] + ([h0] if with_h0 else [])
    assert_same_forward_backward(
        lambda *args: linear_recurrence(*args, method=method),
        linear_recurrence_loop,
        inputs,
    )


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_loop_is_the_closed_form(with_h0):
    """h_t = (prod_{s<=t} a_s) h0 + sum_{s<=t} (prod_{s<r<=t} a_r) b_s."""
    gen = torch.Generator().manual_seed(2)
    a, b, h0 = recurrence_inputs(6, with_h0, gen, shape=(2, 3))
    h = linear_recurrence_loop(a, b, h0)
    for t in range(6):
        expected = torch.zeros(2, 3)
        if with_h0:
            expected = a[:, : t + 1].prod(1) * h0
        for s in range(t + 1):
            expected = expected + a[:, s + 1 : t + 1].prod(1) * b[:, s]
        torch.testing.assert_close(h[:, t], expected)


@pytest.mark.parametrize("dim", [0, 2, -1])
def test_linear_recurrence_along_other_dims(dim):
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(5, 6, 7, generator=gen)
    b = torch.randn(5, 6, 7, generator=gen)
    h0 = torch.randn(b.movedim(dim, 0).shape[1:], generator=gen)
    assert_same_forward_backward(
        lambda a, b, h0: linear_recurrence(a, b, h0, dim=dim),
        lambda a, b, h0: linear_recurrence_loop(a, b, h0, dim=dim),
        [a, b, h0],
    )


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("with_h0", [False, True], ids=["zero_h0", "h0"])
def test_log_space_recurrence_equals_loop(T, with_h0):
    gen = torch.Generator().manual_seed(T)
    a, b, h0 = recurrence_inputs(T, with_h0, gen)
    b = b.abs() + 0.01  # log space needs b > 0 ...
    inputs = [a.log(), b.log()]
    if with_h0:
        inputs.append(h0.abs() + 0.01)  # ... and h0 > 0

    def loop(log_a, log_b, *h0):
        return linear_recurrence_loop(log_a.exp(), log_b.exp(), *h0)

    assert_same_forward_backward(log_space_linear_recurrence, loop, inputs)


def test_log_space_float32_over_long_sequences():
    """Strong decay over 4096 steps: the products underflow float32 (the
    log-space scan never forms them), and the result stays within a few
    1e-4 (relative; 2.5e-4 measured) of the float64 loop: the cancellation
    of a*_t."""
    gen = torch.Generator().manual_seed(4)
    T = 4096
    log_a = -torch.rand(2, T, 8, generator=gen)  # a in (1/e, 1)
    log_b = torch.randn(2, T, 8, generator=gen)
    assert log_a.sum(1).min() < -1500  # exp underflows even in float64
    h32 = log_space_linear_recurrence(log_a.float(), log_b.float())
    h64 = linear_recurrence_loop(log_a.exp(), log_b.exp())
    assert torch.isfinite(h32).all()
    torch.testing.assert_close(h32.double(), h64, rtol=1e-3, atol=0)


# -- errors -------------------------------------------------------------------


def test_scan_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"method must be one of"):
        associative_scan(torch.add, x, method="blelloch")
    with pytest.raises(TypeError, match="op must be callable, got int"):
        associative_scan(3, x)
    with pytest.raises(TypeError, match="elems must be a tensor or a"):
        associative_scan(torch.add, [])
    with pytest.raises(
        ValueError, match=r"dim 2 is out of range for elems\[0\] of shape"
    ):
        associative_scan(torch.add, x, 2)
    with pytest.raises(
        ValueError,
        match=r"same size in dimension 0 \(the scan axis\), "
        r"got shapes \(4, 3\), \(5, 3\)",
    ):
        associative_scan(affine_compose, (x, torch.randn(5, 3)))
    with pytest.raises(ValueError, match="expected at least one step"):
        sequential_scan(torch.add, torch.randn(0, 3))
    with pytest.raises(ValueError, match="op must return a tuple of 2"):
        associative_scan(lambda p, q: p[0] + q[0], (x, x))


def test_recurrence_errors():
    a, b = torch.rand(2, 5, 3), torch.randn(2, 5, 3)
    with pytest.raises(
        ValueError,
        match=r"expected a and b of the same shape, "
        r"got \(2, 5, 3\) and \(2, 4, 3\)",
    ):
        linear_recurrence(a, b[:, :4])
    with pytest.raises(
        ValueError,
        match=r"expected h0 of shape \(2, 3\) .* got \(2, 5\)",
    ):
        linear_recurrence_loop(a, b, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least one time step"):
        linear_recurrence(a[:, :0], b[:, :0])
    with pytest.raises(
        ValueError, match=r"expected log_a and log_b of the same shape"
    ):
        log_space_linear_recurrence(a, b[..., :2])
    with pytest.raises(
        ValueError, match=r"expected h0 > 0 everywhere .* got minimum 0"
    ):
        log_space_linear_recurrence(a.log(), b.abs().log(), torch.zeros(2, 3))


def test_check_sequence():
    check_sequence("x", torch.randn(2, 1, 3), 3, "d_model")
    with pytest.raises(
        ValueError, match=r"x must have 3 dimensions \(B, T, D\), got shape"
    ):
        check_sequence("x", torch.randn(2, 3), 3, "d_model", "(B, T, D)")
    with pytest.raises(
        ValueError,
        match=r"size 3 in dimension -1 \(d_model\), got shape \(2, 4, 5\)",
    ):
        check_sequence("x", torch.randn(2, 4, 5), 3, "d_model")
    with pytest.raises(
        ValueError,
        match=r"x must have at least one time step \(T >= 1 in \(B, T, F\)\)"
        r", got shape \(2, 0, 3\)",
    ):
        check_sequence("x", torch.randn(2, 0, 3), 3, "d_model")
