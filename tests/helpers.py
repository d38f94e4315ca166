"""Helpers shared by the unit tests.

The comparison of a module with torch's -- ``assert_same_forward_backward``
and its pieces ``flat_tensors`` and ``clone_inputs`` -- lives in
:mod:`seqbook_lib.testing`, where the chapters use it too; it is re-exported
here so that the tests import everything from one place. Below: building
pairs of modules with the same (perturbed) weights, random recurrent states,
and the batches, scores and exhaustive search of the sequence-to-sequence
models' tests (``Seq2Seq`` and ``TransformerSeq2Seq`` share their
generation code).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from seqbook_lib.testing import (
    assert_same_forward_backward,
    clone_inputs,
    flat_tensors,
)

__all__ = [
    "all_outputs",
    "assert_beam_is_exhaustive_search",
    "assert_same_forward_backward",
    "clone_inputs",
    "copy_weights",
    "flat_tensors",
    "paired_modules",
    "perturb",
    "perturbed_copy",
    "random_state",
    "seq2seq_batch",
    "sequence_log_prob",
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


def perturb(parameters, generator=None, scale=0.1):
    """Add ``scale`` * N(0, 1) noise to each parameter, in place, so that
    LayerNorms and zero biases are non-trivial; the noise comes from
    ``generator``, else from torch's global RNG."""
    with torch.no_grad():
        for p in parameters:
            p.add_(scale * torch.randn(p.shape, generator=generator))


def perturbed_copy(ours, theirs, torch_to_ours: bool):
    """Perturb the weights of one side (torch's when ``torch_to_ours``) and
    copy them strictly into the other; return ``(ours, theirs)``."""
    source, target = (theirs, ours) if torch_to_ours else (ours, theirs)
    perturb(source.parameters())
    copy_weights(source, target)
    return ours, theirs


# --- sequence-to-sequence models ---------------------------------------------


def seq2seq_batch(lengths, S, T, V_src, V_tgt, gen, pad=0, bos=1):
    """Random source ids (B, S), padded past each of ``lengths`` (B,), and
    target inputs (B, T) starting with ``bos``; real ids are 3 and up."""
    B = len(lengths)
    src = torch.randint(3, V_src, (B, S), generator=gen)
    src[torch.arange(S)[None] >= lengths[:, None]] = pad
    tgt_in = torch.randint(3, V_tgt, (B, T), generator=gen)
    tgt_in[:, 0] = bos
    return src, lengths, tgt_in


def sequence_log_prob(model, src, lengths, tokens):
    """log p(tokens | src) under teacher forcing, for one source sentence."""
    tgt_in = torch.tensor([[model.bos_idx] + tokens[:-1]])
    logits, _ = model(src, lengths, tgt_in)
    logp = torch.log_softmax(logits[0], -1)
    return logp[torch.arange(len(tokens)), torch.tensor(tokens)].sum().item()


def all_outputs(V, max_len, eos):
    """Every sequence a decoder can emit: those ending in ``eos`` and those
    of ``max_len`` tokens that max_len cut off."""
    others = [v for v in range(V) if v != eos]
    for n in range(1, max_len + 1):
        for prefix in itertools.product(others, repeat=n - 1):
            yield list(prefix) + [eos]
    yield from (list(p) for p in itertools.product(others, repeat=max_len))


def assert_beam_is_exhaustive_search(model, src, lengths, V, max_len, alpha):
    """With room for every prefix, beam search returns the best of all
    sequences by score / lp, lp = ((5 + n) / 6) ** alpha; returns it."""
    best = model.beam_search(
        src, lengths, beam_size=V**max_len, max_len=max_len,
        length_penalty=alpha,
    )[0]
    lp = lambda n: ((5 + n) / 6) ** alpha  # noqa: E731
    scored = [
        (sequence_log_prob(model, src, lengths, y) / lp(len(y)), y)
        for y in all_outputs(V, max_len, model.eos_idx)
    ]
    top_score, top = max(scored)
    assert best.tokens == top
    assert best.score / lp(len(best.tokens)) == pytest.approx(
        top_score, abs=1e-10
    )
    return best
