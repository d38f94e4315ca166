"""Parallel prefix scans, and the linear recurrence they make parallel.

An inclusive scan of ``x_0, x_1, ..., x_{T-1}`` under a binary operator
``op`` (written ``o``) returns every prefix combination

    y_t = x_0 o x_1 o ... o x_t,        t = 0 .. T-1.

A loop computes it in T - 1 dependent steps (:func:`sequential_scan`). When
``o`` is *associative*, ``(a o b) o c = a o (b o c)``, the brackets can be
placed anywhere, and :func:`associative_scan` does the same work in
O(log T) steps, each a single vectorised ``op`` over many positions at once:

* ``method="doubling"`` (Hillis & Steele): at step k every position t >= 2^k
  combines with the one 2^k before it. log2 T steps, O(T log T) work.
* ``method="work_efficient"`` (the odd-even recursion, Blelloch-style):
  combine neighbours pairwise, scan the half-length sequence recursively,
  then fill in the even positions. About 2 log2 T steps, O(T) work.

The operator need not be commutative: ``op(earlier, later)``.

The scan that matters for sequence models is the first-order linear
recurrence

    h_t = a_t * h_{t-1} + b_t                                          (1)

of a diagonal state-space model, minGRU/minLSTM or linear attention. One
step of (1) is the affine map ``h -> a h + b``; composing two of them, first
``(a1, b1)`` then ``(a2, b2)``, gives again an affine map,

    (a1, b1) o (a2, b2) = (a1 * a2,  a2 * b1 + b2),

and function composition is associative. The scan of the pairs therefore
yields, at every t, the map from h_{-1} to h_t, whose ``b`` part is h_t when
h_{-1} = 0 (:func:`linear_recurrence`). An initial state h0 folds into the
first step: ``b_0 <- a_0 * h0 + b_0``.

For positive ``a`` and ``b`` the recurrence can also be solved in log space
(:func:`log_space_linear_recurrence`, Heinsen 2023): with
``a*_t = sum_{s<=t} log a_s``,

    log h_t = a*_t + log( h0 + sum_{s<=t} exp(log b_s - a*_s) ),       (2)

one ``cumsum`` and one ``logcumsumexp``; minGRU and minLSTM (Feng et al.
2024, "Were RNNs All We Needed?") train this way.

The loop references :func:`sequential_scan` and :func:`linear_recurrence_loop`
define what the parallel versions must compute; the tests compare them.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._checks import check_choice, check_tensor, shape_str

METHODS = ("work_efficient", "doubling")


# --------------------------------------------------------------------- checks


# ----------------------------------------------------------- slicing helpers


def _normalise_dim(name: str, x: torch.Tensor, dim: int) -> int:
    """``dim`` as a non-negative index into ``x``'s dimensions."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ValueError(f"dim must be an int, got {dim!r}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim {dim} is out of range for {name} of shape "
            f"{shape_str(x.shape)}"
        )
    return dim % x.dim()


def _take(xs: tuple, dims: tuple, start, stop=None, step=None) -> tuple:
    """``x[start:stop:step]`` along each tensor's own scan dimension."""
    return tuple(
        x[(slice(None),) * d + (slice(start, stop, step),)]
        for x, d in zip(xs, dims)
    )


def _cat(parts: list[tuple], dims: tuple) -> tuple:
    """Concatenate tuples of tensors along each one's scan dimension."""
    return tuple(
        torch.cat([p[i] for p in parts], dim=d) for i, d in enumerate(dims)
    )


def _interleave(even: tuple, odd: tuple, dims: tuple) -> tuple:
    """``e0, o0, e1, o1, ...`` along the scan dimension; ``even`` has as
    many entries as ``odd`` or one more."""
    out = []
    for e, o, d in zip(even, odd, dims):
        n = o.shape[d]
        pairs = torch.stack([e.narrow(d, 0, n), o], dim=d + 1)
        merged = pairs.flatten(d, d + 1)  # (..., 2n, ...)
        if e.shape[d] > n:
            merged = torch.cat([merged, e.narrow(d, n, 1)], dim=d)
        out.append(merged)
    return tuple(out)


def _as_tuple(op: Callable, elems):
    """Normalise ``elems`` to a tuple of tensors and ``op`` to a function of
    tuples; also return how to give the result back (tensor or tuple)."""
    if not callable(op):
        raise TypeError(f"op must be callable, got {type(op).__name__}")
    if isinstance(elems, torch.Tensor):

        def op_tuple(a, b):
            return (op(a[0], b[0]),)

        return op_tuple, (elems,), lambda ys: ys[0]
    if not isinstance(elems, (tuple, list)) or not elems:
        raise TypeError(
            "elems must be a tensor or a non-empty tuple of tensors, "
            f"got {type(elems).__name__}"
        )
    for i, x in enumerate(elems):
        check_tensor(f"elems[{i}]", x)
    n = len(elems)

    def op_checked(a, b):
        c = op(a, b)
        if not isinstance(c, (tuple, list)) or len(c) != n:
            raise ValueError(
                f"op must return a tuple of {n} tensors, like its inputs, "
                f"got {type(c).__name__}"
            )
        return tuple(c)

    return op_checked, tuple(elems), tuple


def _scan_dims(xs: tuple, dim: int) -> tuple[tuple, int]:
    """Each tensor's scan dimension, and the common length T along it."""
    dims = tuple(
        _normalise_dim(f"elems[{i}]", x, dim) for i, x in enumerate(xs)
    )
    lengths = {x.shape[d] for x, d in zip(xs, dims)}
    if len(lengths) != 1:
        shapes = ", ".join(shape_str(x.shape) for x in xs)
        raise ValueError(
            f"expected every element of elems to have the same size in "
            f"dimension {dim} (the scan axis), got shapes {shapes}"
        )
    T = lengths.pop()
    if T == 0:
        raise ValueError(
            f"expected at least one step along dimension {dim}, "
            f"got shape {shape_str(xs[0].shape)}"
        )
    return dims, T


# ---------------------------------------------------------------------- scans


def sequential_scan(op: Callable, elems, dim: int = 0):
    """Inclusive scan by a plain loop: ``y_0 = x_0``,
    ``y_t = op(y_{t-1}, x_t)``.

    ``elems`` is a tensor or a tuple of tensors, all of the same length T
    along ``dim``; ``op`` takes and returns the same structure, with size 1
    along ``dim``. Returns the T prefixes, shaped like ``elems``. T - 1
    dependent steps: this is the reference the parallel scan must equal.
    """
    op, xs, give_back = _as_tuple(op, elems)
    dims, T = _scan_dims(xs, dim)
    acc = _take(xs, dims, 0, 1)
    ys = [acc]
    for t in range(1, T):
        acc = op(acc, _take(xs, dims, t, t + 1))
        ys.append(acc)
    return give_back(_cat(ys, dims))


def associative_scan(
    op: Callable, elems, dim: int = 0, method: str = "work_efficient"
):
    """Inclusive scan ``y_t = x_0 o x_1 o ... o x_t`` in O(log T)
    vectorised steps.

    ``op(a, b)`` must be associative; it is called on slices of ``elems``
    along ``dim`` (a tensor, or a tuple of tensors, of equal length there),
    ``a`` from earlier positions, ``b`` from later ones, and must combine
    them position by position, returning the same structure and shapes.
    The result equals :func:`sequential_scan` up to rounding (the brackets
    differ).

    ``method="doubling"``: ``y <- y[t - 2^k] o y[t]`` for k = 0, 1, ...;
    ``method="work_efficient"``: the odd-even recursion (see the module
    docstring).
    """
    check_choice("method", method, METHODS)
    op, xs, give_back = _as_tuple(op, elems)
    dims, T = _scan_dims(xs, dim)
    if method == "doubling":
        ys = _doubling_scan(op, xs, dims, T)
    else:
        ys = _odd_even_scan(op, xs, dims, T)
    return give_back(ys)


def _doubling_scan(op, xs, dims, T) -> tuple:
    """Hillis-Steele: after the step with offset d, position t holds the
    combination of positions max(0, t - 2d + 1) .. t."""
    offset = 1
    while offset < T:
        head = _take(xs, dims, 0, offset)  # already complete
        tail = op(_take(xs, dims, 0, T - offset), _take(xs, dims, offset))
        xs = _cat([head, tail], dims)
        offset *= 2
    return xs


def _odd_even_scan(op, xs, dims, T) -> tuple:
    """Combine pairs (x_0 o x_1, x_2 o x_3, ...), scan those recursively --
    they are the prefixes at the odd positions -- then get each even
    position 2k >= 2 as prefix_{2k-1} o x_{2k}."""
    if T == 1:
        return xs
    pairs = op(_take(xs, dims, 0, T - 1, 2), _take(xs, dims, 1, None, 2))
    odd = _odd_even_scan(op, pairs, dims, T // 2)  # y_1, y_3, ...
    n_even = (T + 1) // 2  # y_0, y_2, ...
    even = _take(xs, dims, 0, 1)
    if n_even > 1:
        later = op(
            _take(odd, dims, 0, n_even - 1), _take(xs, dims, 2, None, 2)
        )
        even = _cat([even, later], dims)
    return _interleave(even, odd, dims)


# --------------------------------------------------------- linear recurrence


def affine_compose(first, second):
    """The pair operator of h -> a h + b: apply ``first`` then ``second``.

        (a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)
    """
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, torch.addcmul(b2, a2, b1)


def _check_recurrence(a, b, h0, dim, names=("a", "b")) -> int:
    """``a`` and ``b`` have the same shape, ``h0`` that shape without the
    time dimension; return ``dim`` as a non-negative index."""
    na, nb = names
    check_tensor(na, a)
    check_tensor(nb, b)
    if a.shape != b.shape:
        raise ValueError(
            f"expected {na} and {nb} of the same shape, got "
            f"{shape_str(a.shape)} and {shape_str(b.shape)}"
        )
    d = _normalise_dim(nb, b, dim)
    if b.shape[d] == 0:
        raise ValueError(
            f"expected at least one time step in dimension {dim}, "
            f"got shape {shape_str(b.shape)}"
        )
    if h0 is not None:
        check_tensor("h0", h0)
        expected = b.shape[:d] + b.shape[d + 1:]
        if h0.shape != expected:
            raise ValueError(
                f"expected h0 of shape {shape_str(expected)} ({nb}'s shape "
                f"without the time dimension {dim}), "
                f"got {shape_str(h0.shape)}"
            )
    return d


def linear_recurrence(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    dim: int = 1,
    method: str = "work_efficient",
) -> torch.Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` by an associative scan.

    ``a`` and ``b`` have one shape, e.g. (B, T, ...) with time in ``dim``
    (default 1, batch first); ``h0`` (``b``'s shape without ``dim``) is the
    state before step 0, zeros when None. Returns h, shaped like ``b``:
    the ``b`` part of the scan of the pairs under :func:`affine_compose`.
    """
    d = _check_recurrence(a, b, h0, dim)
    if h0 is not None:  # b_0 <- a_0 h0 + b_0
        a_0, b_0 = a.narrow(d, 0, 1), b.narrow(d, 0, 1)
        first = torch.addcmul(b_0, a_0, h0.unsqueeze(d))
        b = torch.cat([first, b.narrow(d, 1, b.shape[d] - 1)], dim=d)
    _, h = associative_scan(affine_compose, (a, b), dim=d, method=method)
    return h


def linear_recurrence_loop(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """The reference: ``h_t = a_t * h_{t-1} + b_t`` one step at a time.

    Same arguments and result as :func:`linear_recurrence`.
    """
    d = _check_recurrence(a, b, h0, dim)
    h = h0
    hs = []
    for a_t, b_t in zip(a.unbind(d), b.unbind(d)):
        h = b_t if h is None else torch.addcmul(b_t, a_t, h)
        hs.append(h)
    return torch.stack(hs, dim=d)


def log_space_linear_recurrence(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    h0: torch.Tensor | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` for positive a, b, from their logs
    (Heinsen's log-space scan).

        a*_t    = sum_{s<=t} log a_s                         (cumsum)
        log h_t = a*_t + logcumsumexp_t(log b - a*)          (h0 = 0)
        log h_t = logaddexp(log h_t, a*_t + log h0)          (h0 > 0)

    ``log_a`` and ``log_b`` have one shape, time in ``dim``; ``h0`` is the
    initial state itself (not its log), strictly positive, or None for
    zeros. Returns h (not log h), shaped like ``log_b``.

    Products of many a_t < 1 never underflow here, because they stay sums
    of logs; but ``log b - a*`` grows with t and ``a*_t`` cancels it again,
    so in float32 over thousands of strongly decaying steps the result
    loses relative precision (about eps * |a*_t|).
    """
    d = _check_recurrence(log_a, log_b, h0, dim, names=("log_a", "log_b"))
    if h0 is not None and not bool((h0 > 0).all()):
        raise ValueError(
            "expected h0 > 0 everywhere (log space holds positive states; "
            "pass None for a zero state), "
            f"got minimum {h0.min().item():.3g}"
        )
    a_star = torch.cumsum(log_a, dim=d)  # log of a_0 * ... * a_t
    log_h = a_star + torch.logcumsumexp(log_b - a_star, dim=d)
    if h0 is not None:
        log_h = torch.logaddexp(log_h, a_star + h0.log().unsqueeze(d))
    return log_h.exp()
