"""Helpers shared by the unit tests.

The comparison of a module with torch's -- ``assert_same_forward_backward``
and its pieces ``flat_tensors`` and ``clone_inputs`` -- lives in
:mod:`seqbook_lib.testing`, where the chapters use it too; it is re-exported
here so that the tests import everything from one place. Below: building
pairs of modules with the same weights, and random recurrent states.
"""

from __future__ import annotations

import torch

from seqbook_lib.testing import (
    assert_same_forward_backward,
    clone_inputs,
    flat_tensors,
)

__all__ = [
    "assert_same_forward_backward",
    "clone_inputs",
    "copy_weights",
    "flat_tensors",
    "paired_modules",
    "random_state",
]


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
