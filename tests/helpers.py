"""Comparison helpers shared by the unit tests.

``assert_same_forward_backward`` runs two modules (ours and torch's) on the
same inputs in float64, compares the outputs, back-propagates the same random
upstream gradient through both and compares the gradients of the inputs and of
every parameter, by name.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def flat_tensors(out) -> list[torch.Tensor]:
    """The tensors of a nested tuple/list output, in order (None skipped)."""
    if out is None:
        return []
    if isinstance(out, torch.Tensor):
        return [out]
    result = []
    for item in out:
        result.extend(flat_tensors(item))
    return result


def clone_inputs(inputs: Sequence) -> list:
    """Fresh leaf copies of the floating-point tensors (requires_grad), others as they are."""
    copies = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            copies.append(x.detach().clone().requires_grad_(True))
        elif isinstance(x, tuple):
            copies.append(tuple(clone_inputs(x)))
        else:
            copies.append(x)
    return copies


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
    """Outputs, input gradients and parameter gradients agree between two callables.

    ``ours``/``theirs`` are modules or functions called as ``f(*inputs, **kwargs)``.
    Returns the two outputs for further checks.
    """
    a_in = clone_inputs(inputs)
    b_in = clone_inputs(inputs)
    out_a = ours(*a_in, **(kwargs_ours or {}))
    out_b = theirs(*b_in, **(kwargs_theirs or {}))
    ta, tb = flat_tensors(out_a), flat_tensors(out_b)
    assert len(ta) == len(tb), f"{len(ta)} output tensors vs {len(tb)}"
    for i, (x, y) in enumerate(zip(ta, tb)):
        torch.testing.assert_close(
            x, y, atol=atol, rtol=rtol, msg=lambda m: f"output {i}: {m}"
        )

    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in ta]
    loss_a = sum((x * g).sum() for x, g in zip(ta, grads) if x.requires_grad)
    loss_b = sum((y * g).sum() for y, g in zip(tb, grads) if y.requires_grad)
    if isinstance(loss_a, torch.Tensor):
        loss_a.backward()
        loss_b.backward()

    leaves_a = [x for x in flat_tensors(a_in) if x.requires_grad]
    leaves_b = [x for x in flat_tensors(b_in) if x.requires_grad]
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b)):
        ga = torch.zeros_like(x) if x.grad is None else x.grad
        gb = torch.zeros_like(y) if y.grad is None else y.grad
        torch.testing.assert_close(
            ga,
            gb,
            atol=atol,
            rtol=rtol,
            msg=lambda m: f"grad of input {i}: {m}",
        )

    if isinstance(ours, torch.nn.Module) and isinstance(
        theirs, torch.nn.Module
    ):
        pa = dict(ours.named_parameters())
        pb = dict(theirs.named_parameters())
        assert pa.keys() == pb.keys(), (
            f"parameter names differ: {sorted(pa)} vs {sorted(pb)}"
        )
        for name in pa:
            ga = (
                pa[name].grad
                if pa[name].grad is not None
                else torch.zeros_like(pa[name])
            )
            gb = (
                pb[name].grad
                if pb[name].grad is not None
                else torch.zeros_like(pb[name])
            )
            torch.testing.assert_close(
                ga,
                gb,
                atol=atol,
                rtol=rtol,
                msg=lambda m: f"grad of {name}: {m}",
            )
    return out_a, out_b


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Load ``src``'s state dict into ``dst`` strictly (names and shapes must match)."""
    dst.load_state_dict(src.state_dict(), strict=True)


def paired_modules(
    ours_cls, theirs_cls, *args, ours_first=True, seed=0, **kwargs
):
    """Our module and torch's, built with the same arguments and holding the
    same weights, copied ours -> torch's (``ours_first``) or the other way."""
    torch.manual_seed(seed)
    ours = ours_cls(*args, **kwargs)
    theirs = theirs_cls(*args, **kwargs)
    if ours_first:
        copy_weights(ours, theirs)
    else:
        copy_weights(theirs, ours)
    return ours, theirs


def random_state(lstm: bool, shape, gen: torch.Generator):
    """A random recurrent state of ``shape``: ``(h, c)`` for an LSTM, else ``h``."""
    h = torch.randn(shape, generator=gen)
    return (h, torch.randn(shape, generator=gen)) if lstm else h
