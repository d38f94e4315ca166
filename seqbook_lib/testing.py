"""Comparing a from-scratch module with its PyTorch counterpart.

Two implementations of one computation agree when, holding the same weights
and fed the same inputs, they give the same outputs and, for one and the same
upstream gradient, the same gradients of the inputs and of every parameter,
matched by name. Equal outputs alone are not enough: a detached tensor gives
the right numbers and wrong gradients. In float64 two correct
implementations agree to about 1e-12, while a wrong gate or a missing term
shows up as a difference of order one.

- :func:`flat_tensors` -- the tensors of a nested output such as an LSTM's
  ``(output, (h_n, c_n))``, in order.
- :func:`clone_inputs` -- fresh leaf copies of the inputs, so that each side
  collects its own input gradients.
- :func:`max_difference` -- the largest absolute difference over outputs and
  gradients, as one number (the chapters print it).
- :func:`assert_same_forward_backward` -- the same comparison as an
  assertion with tolerances (the unit tests use it).

The upstream gradient is drawn in float64 from a seeded generator and cast to
each output's dtype, so both sides, and every run, see the same one.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


def flat_tensors(out) -> list[torch.Tensor]:
    """The tensors of a nested tuple/list output, in order (None skipped).

    ``(output, (h_n, c_n))`` gives ``[output, h_n, c_n]``. Anything other
    than a tensor, ``None``, a tuple or a list raises ``TypeError``.
    """
    return _flat(out, "output")


def _flat(out, where: str) -> list[torch.Tensor]:
    if out is None:
        return []
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        result = []
        for i, item in enumerate(out):
            result.extend(_flat(item, f"{where}[{i}]"))
        return result
    raise TypeError(
        f"{where} must be a tensor, None or a tuple/list of them, "
        f"got {type(out).__name__}"
    )


def clone_inputs(inputs: Sequence) -> list:
    """Fresh leaf copies of the floating-point tensors (requires_grad),
    others as they are.

    ``inputs`` is the list (or tuple) of positional arguments; tuples inside
    it, such as an LSTM state ``(h, c)``, are copied element by element.
    """
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(
            "inputs must be a list or tuple of positional arguments, got "
            f"{type(inputs).__name__}; wrap a single input as [x]"
        )
    copies = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            copies.append(x.detach().clone().requires_grad_(True))
        elif isinstance(x, tuple):
            copies.append(tuple(clone_inputs(x)))
        else:
            copies.append(x)
    return copies


def max_difference(
    ours: nn.Module,
    theirs: nn.Module,
    x: torch.Tensor,
    *args,
    run_ours: Callable | None = None,
    run_theirs: Callable | None = None,
    seed: int = 0,
) -> float:
    """Largest |ours - theirs| over the outputs, the gradient of the input
    ``x`` and the gradients of all parameters (matched by name).

    Each side runs as ``module(x, *args)``, or as ``run_ours(module, x)``
    and ``run_theirs(module, x)`` where given (to pack the input for
    PyTorch, say). The other ``args`` (an initial state) are passed as they
    are: only ``x`` gets a gradient. The gradients of both modules are reset
    first. The result is NaN if a compared value is NaN.
    """
    _check_pair(ours, theirs, x, run_ours, run_theirs)

    def run_plain(module, x):
        return module(x, *args)

    ours.zero_grad()
    theirs.zero_grad()
    x_ours, x_theirs = clone_inputs([x, x])  # fresh leaves, shaped like x
    outs_ours = flat_tensors((run_ours or run_plain)(ours, x_ours))
    outs_theirs = flat_tensors((run_theirs or run_plain)(theirs, x_theirs))
    _check_same_structure(outs_ours, outs_theirs, ValueError)
    if not outs_ours:
        raise ValueError("the outputs hold no tensor to compare")
    _backward_same_upstream(outs_ours, outs_theirs, seed)

    pairs = list(zip(outs_ours, outs_theirs))
    if x_ours.requires_grad:  # a floating-point x
        pairs.append((_grad(x_ours), _grad(x_theirs)))
    for _, p_ours, p_theirs in _named_parameters(ours, theirs, ValueError):
        pairs.append((_grad(p_ours), _grad(p_theirs)))
    differences = [_largest_abs_difference(a, b) for a, b in pairs]
    if any(math.isnan(d) for d in differences):
        return math.nan
    return max(differences)


def assert_same_forward_backward(
    ours: Callable,
    theirs: Callable,
    inputs: Sequence,
    *,
    kwargs_ours: dict | None = None,
    kwargs_theirs: dict | None = None,
    atol: float = 1e-10,
    rtol: float = 1e-8,
    seed: int = 0,
):
    """Outputs, input gradients and parameter gradients agree between two
    callables.

    ``ours``/``theirs`` are modules or functions called as
    ``f(*inputs, **kwargs)`` on fresh leaf copies of ``inputs`` (see
    :func:`clone_inputs`); the comparison is meant for float64 inputs.
    Parameter gradients are compared, by name, when both are modules.
    Any disagreement -- number or shapes of the outputs, values, gradients,
    parameter names -- raises ``AssertionError``. Returns the two outputs
    for further checks.
    """
    for name, f in (("ours", ours), ("theirs", theirs)):
        if not callable(f):
            raise TypeError(
                f"{name} must be a module or function, "
                f"got {type(f).__name__}"
            )
    a_in = clone_inputs(inputs)
    b_in = clone_inputs(inputs)
    out_a = ours(*a_in, **(kwargs_ours or {}))
    out_b = theirs(*b_in, **(kwargs_theirs or {}))
    ta, tb = flat_tensors(out_a), flat_tensors(out_b)
    _check_same_structure(ta, tb, AssertionError)
    for i, (x, y) in enumerate(zip(ta, tb)):
        torch.testing.assert_close(
            x, y, atol=atol, rtol=rtol, msg=lambda m: f"output {i}: {m}"
        )

    _backward_same_upstream(ta, tb, seed)

    leaves_a = [x for x in _tensors_in(a_in) if x.requires_grad]
    leaves_b = [x for x in _tensors_in(b_in) if x.requires_grad]
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b)):
        torch.testing.assert_close(
            _grad(x),
            _grad(y),
            atol=atol,
            rtol=rtol,
            msg=lambda m: f"grad of input {i}: {m}",
        )

    if isinstance(ours, nn.Module) and isinstance(theirs, nn.Module):
        named = _named_parameters(ours, theirs, AssertionError)
        for name, pa, pb in named:
            torch.testing.assert_close(
                _grad(pa),
                _grad(pb),
                atol=atol,
                rtol=rtol,
                msg=lambda m: f"grad of {name}: {m}",
            )
    return out_a, out_b


def _backward_same_upstream(
    outs_ours: Sequence[torch.Tensor],
    outs_theirs: Sequence[torch.Tensor],
    seed: int = 0,
) -> None:
    """Back-propagate one random upstream gradient through both outputs.

    One standard-normal tensor per output, shaped like ``outs_ours[k]``,
    drawn in float64 from a generator seeded with ``seed`` and cast to the
    output's dtype; each side's loss is ``sum_k (out_k * upstream_k).sum()``
    over the outputs that require grad. A side with none is left alone.
    """
    gen = torch.Generator().manual_seed(seed)
    upstream = []
    for out in outs_ours:
        g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        upstream.append(g.to(out.dtype) if out.is_floating_point() else g)
    for outs in (outs_ours, outs_theirs):
        terms = [
            (out * g).sum()
            for out, g in zip(outs, upstream)
            if out.requires_grad
        ]
        if terms:
            sum(terms).backward()


# -- checks and small pieces ------------------------------------------------


def _check_pair(ours, theirs, x, run_ours, run_theirs) -> None:
    """The arguments of :func:`max_difference` have the right types."""
    for name, module in (("ours", ours), ("theirs", theirs)):
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"{name} must be a torch.nn.Module (its parameter gradients "
                f"are compared by name), got {type(module).__name__}"
            )
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    for name, run in (("run_ours", run_ours), ("run_theirs", run_theirs)):
        if run is not None and not callable(run):
            raise TypeError(
                f"{name} must be a function (module, x) -> output or None, "
                f"got {type(run).__name__}"
            )


def _check_same_structure(outs_a, outs_b, error: type[Exception]) -> None:
    """Both sides returned as many tensors, pairwise of the same shape."""
    if len(outs_a) != len(outs_b):
        raise error(
            "outputs of different structure: ours returned "
            f"{len(outs_a)} tensors, theirs {len(outs_b)}"
        )
    for i, (a, b) in enumerate(zip(outs_a, outs_b)):
        if a.shape != b.shape:
            raise error(
                f"outputs of different structure: tensor {i} has shape "
                f"{tuple(a.shape)} in ours, {tuple(b.shape)} in theirs"
            )


def _named_parameters(ours, theirs, error: type[Exception]) -> list:
    """``(name, ours' parameter, theirs')`` for every name, in ours' order."""
    pa, pb = dict(ours.named_parameters()), dict(theirs.named_parameters())
    if pa.keys() != pb.keys():
        raise error(
            f"parameter names differ: {sorted(pa)} vs {sorted(pb)}"
        )
    for name in pa:
        if pa[name].shape != pb[name].shape:
            raise error(
                f"parameter {name} has shape {tuple(pa[name].shape)} in "
                f"ours, {tuple(pb[name].shape)} in theirs"
            )
    return [(name, pa[name], pb[name]) for name in pa]


def _tensors_in(inputs) -> list[torch.Tensor]:
    """The tensors among nested tuple/list inputs, others ignored."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, (tuple, list)):
        return [t for item in inputs for t in _tensors_in(item)]
    return []


def _grad(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, or zeros shaped like ``t`` where no gradient reached it."""
    return torch.zeros_like(t) if t.grad is None else t.grad


def _largest_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| (0 for empty tensors; equal infinities count as 0)."""
    if a.numel() == 0:
        return 0.0
    if not a.is_floating_point():  # integer or bool outputs
        a, b = a.double(), b.double()
    diff = torch.where(a == b, 0.0, (a - b).abs())  # a's shape
    if diff.isnan().any():
        return math.nan
    return diff.max().item()
