"""seqbook_lib.attention against torch (float64, forward and backward) and explicit formulas."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_same_forward_backward, copy_weights
from seqbook_lib.attention import (
    AdditiveAttention,
    MultiHeadAttention,
    causal_mask,
    masked_softmax,
    padding_mask,
    scaled_dot_product_attention,
)

FEW = settings(max_examples=25, deadline=None)


def ours_output(*args, **kwargs):
    """Our function's output only, to line up with torch's single tensor."""
    return scaled_dot_product_attention(*args, **kwargs)[0]


def random_bool_mask(shape, gen, p_keep=0.6):
    """True (may attend) with probability p_keep; whole rows may come out False."""
    return torch.rand(shape, generator=gen) < p_keep


def random_float_mask(shape, gen):
    """Finite offsets with some -inf entries (removed keys)."""
    mask = torch.randn(shape, generator=gen)
    return mask.masked_fill(torch.rand(shape, generator=gen) < 0.3, float("-inf"))


# ------------------------------------------------------------ scaled dot-product attention


@FEW
@given(
    batch=st.sampled_from(
        [
            ((), (), ()),
            ((3,), (3,), (3,)),
            ((2, 3), (2, 3), (2, 3)),
            ((2, 1), (1, 3), (2, 3)),
            ((2, 3), (3,), (1, 1)),
        ]
    ),
    L=st.integers(1, 5),
    S=st.integers(1, 6),
    E=st.integers(1, 5),
    Ev=st.integers(1, 4),
    mask_kind=st.sampled_from(["none", "bool", "float", "causal", "bool_rows", "float_bcast"]),
    scale=st.sampled_from([None, 0.3, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_sdpa_matches_torch(batch, L, S, E, Ev, mask_kind, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    bq, bk, bv = batch
    q = torch.randn(*bq, L, E, generator=gen)
    k = torch.randn(*bk, S, E, generator=gen)
    v = torch.randn(*bv, S, Ev, generator=gen)
    out_batch = torch.broadcast_shapes(bq, bk, bv)
    kwargs = {"scale": scale}
    if mask_kind == "bool":  # fully masked rows may occur: both sides give 0 there
        kwargs["attn_mask"] = random_bool_mask(out_batch + (L, S), gen)
    elif mask_kind == "float":
        kwargs["attn_mask"] = random_float_mask(out_batch + (L, S), gen)
    elif mask_kind == "causal":
        kwargs["is_causal"] = True
    elif mask_kind == "bool_rows":  # (L, S) broadcast over every batch dimension
        kwargs["attn_mask"] = random_bool_mask((L, S), gen)
    elif mask_kind == "float_bcast":  # (1, S): one offset per key for every query
        kwargs["attn_mask"] = random_float_mask((1, S), gen)
    assert_same_forward_backward(
        ours_output, F.scaled_dot_product_attention, [q, k, v], kwargs_ours=kwargs, kwargs_theirs=kwargs
    )
    # the fused path of our function gives the same numbers
    assert_same_forward_backward(
        ours_output,
        ours_output,
        [q, k, v],
        kwargs_ours=kwargs,
        kwargs_theirs={**kwargs, "need_weights": False},
    )


def test_sdpa_weights_are_the_softmax_of_scaled_scores():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 4, 3, generator=gen),
        torch.randn(2, 5, 3, generator=gen),
        torch.randn(2, 5, 2, generator=gen),
    )
    allowed = random_bool_mask((4, 5), gen)
    allowed[:, 0] = True
    out, w = scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=0.7)
    for b in range(2):
        for i in range(4):
            s = [0.7 * float(q[b, i] @ k[b, j]) if allowed[i, j] else -math.inf for j in range(5)]
            z = sum(math.exp(x) for x in s)
            expected = torch.tensor([math.exp(x) / z for x in s])
            torch.testing.assert_close(w[b, i], expected, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(out[b, i], expected @ v[b], atol=1e-12, rtol=1e-12)
    assert (w[:, ~allowed] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_fully_masked_rows_give_zero_output_and_zero_gradient(kind):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 4, generator=gen, requires_grad=True) for _ in range(3))
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[1] = False  # query 1 may attend to nothing
    mask = allowed if kind == "bool" else torch.zeros(3, 3).masked_fill(~allowed, float("-inf"))
    out, w = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (out[:, 1] == 0).all() and (w[:, 1] == 0).all()
    torch.testing.assert_close(w[:, [0, 2]].sum(-1), torch.ones(2, 2))
    (out.sum() + w.sum()).backward()
    assert torch.isfinite(q.grad).all() and (q.grad[:, 1] == 0).all()
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_masked_softmax_empty_and_partial_rows():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    allowed = torch.tensor([[True, False, True], [False, False, False]])
    w = masked_softmax(scores, allowed)
    e1, e3 = math.exp(1.0), math.exp(3.0)
    torch.testing.assert_close(w, torch.tensor([[e1 / (e1 + e3), 0.0, e3 / (e1 + e3)], [0.0, 0.0, 0.0]]))


def test_sdpa_dropout_reproducible_and_equal_to_torch_under_a_seed():
    gen = torch.Generator().manual_seed(2)
    q, k, v = (
        torch.randn(2, 3, 6, 4, generator=gen),
        torch.randn(2, 3, 7, 4, generator=gen),
        torch.randn(2, 3, 7, 5, generator=gen),
    )
    p = 0.4
    torch.manual_seed(123)
    out1, w1 = scaled_dot_product_attention(q, k, v, dropout_p=p)
    torch.manual_seed(123)
    out2, w2 = scaled_dot_product_attention(q, k, v, dropout_p=p)
    torch.manual_seed(123)
    ref = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    assert torch.equal(out1, out2) and torch.equal(w1, w2)
    torch.testing.assert_close(out1, ref)
    # the weights are the dropped-out ones: 0 or the clean weight / (1 - p); out = w V
    _, clean = scaled_dot_product_attention(q, k, v)
    kept = w1 != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(w1[kept], clean[kept] / (1 - p))
    torch.testing.assert_close(out1, w1 @ v)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (
            (torch.randn(4), torch.randn(5, 4), torch.randn(5, 4)),
            {},
            r"query must have at least 2 dimensions",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 3), torch.randn(5, 4)),
            {},
            r"same E.*\(3, 4\) and \(5, 3\)",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(6, 2)),
            {},
            r"same S.*\(5, 4\) and \(6, 2\)",
        ),
        (
            (torch.randn(2, 3, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4)),
            {},
            r"batch dimensions.*must broadcast",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"attn_mask": torch.ones(3, 5, dtype=torch.int64)},
            r"attn_mask must be bool.*got dtype torch.int64",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"attn_mask": torch.zeros(3, 5, dtype=torch.float32)},
            r"attn_mask must be bool.*torch.float64.*got dtype torch.float32",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"attn_mask": torch.ones(3, 4, dtype=torch.bool)},
            r"broadcast to .*\(3, 5\), got shape \(3, 4\)",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"attn_mask": torch.ones(2, 3, 5, dtype=torch.bool)},
            r"broadcast to .*\(3, 5\), got shape \(2, 3, 5\)",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"attn_mask": torch.ones(3, 5, dtype=torch.bool), "is_causal": True},
            r"not both",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4)),
            {"dropout_p": 1.5},
            r"dropout_p must be.*1.5",
        ),
        (
            (torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 4, dtype=torch.float32)),
            {},
            r"share one dtype",
        ),
        (
            (torch.randn(3, 4), torch.ones(5, 4, dtype=torch.int64), torch.randn(5, 4)),
            {},
            r"key must be a floating",
        ),
    ],
)
def test_sdpa_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(*args, **kwargs)


def test_sdpa_scale_type_error():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="scale must be a number"):
        scaled_dot_product_attention(x, x, x, scale="0.5")


# ------------------------------------------------------------------------------ masks


def test_causal_and_padding_masks():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert torch.equal(causal_mask(2, 3), torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool))
    assert torch.equal(
        padding_mask([3, 1], 4), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    )
    assert torch.equal(padding_mask(torch.tensor([2]), 2), torch.ones(1, 2, dtype=torch.bool))
    # our causal mask == torch's is_causal; ~mask == nn.MultiheadAttention's attn_mask
    q = torch.randn(4, 3)
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, q, q, attn_mask=causal_mask(4)),
        F.scaled_dot_product_attention(q, q, q, is_causal=True),
    )
    assert torch.equal(~causal_mask(4), nn.Transformer.generate_square_subsequent_mask(4).isinf())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: causal_mask(0), r"size must be a positive int, got 0"),
        (lambda: padding_mask([3, 5], 4), r"every length must lie in 1..4.*\[3, 5\]"),
        (lambda: padding_mask([0, 2], 4), r"every length must lie in 1..4"),
        (lambda: padding_mask([[1, 2]], 4), r"lengths must be 1-D"),
        (lambda: padding_mask([1.0, 2.0], 4), r"lengths must hold integers"),
    ],
)
def test_mask_helper_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------- multi-head attention


class SelfAttention(nn.Module):
    """Calls an attention module with query = key = value (the same tensor object)."""

    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x, **kwargs):
        return self.mha(x, x, x, **kwargs)


def make_pair(E, h, bias, batch_first, kdim=None, vdim=None, dropout=0.0, torch_to_ours=True):
    ours = MultiHeadAttention(E, h, dropout, bias, batch_first=batch_first, kdim=kdim, vdim=vdim)
    theirs = nn.MultiheadAttention(E, h, dropout, bias, kdim=kdim, vdim=vdim, batch_first=batch_first)
    if torch_to_ours:
        copy_weights(theirs, ours)
    else:
        copy_weights(ours, theirs)
    return ours, theirs


@pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask"
)  # torch's, for bool + float masks
@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    L=st.integers(1, 5),
    S=st.integers(1, 5),
    h=st.sampled_from([1, 2, 3]),
    head_dim=st.integers(1, 3),
    mode=st.sampled_from(["self", "cross", "cross_kv_dims", "unbatched_self", "unbatched_cross"]),
    bias=st.booleans(),
    batch_first=st.booleans(),
    need_weights=st.booleans(),
    average=st.booleans(),
    kpm_kind=st.sampled_from([None, "bool", "float"]),
    am_kind=st.sampled_from([None, "bool2d", "float2d", "bool3d", "float3d"]),
    torch_to_ours=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mha_matches_torch(
    B,
    L,
    S,
    h,
    head_dim,
    mode,
    bias,
    batch_first,
    need_weights,
    average,
    kpm_kind,
    am_kind,
    torch_to_ours,
    seed,
):
    gen = torch.Generator().manual_seed(seed)
    E = h * head_dim
    batched = not mode.startswith("unbatched")
    kdim, vdim = (4, 5) if mode == "cross_kv_dims" else (None, None)
    if mode.endswith("self"):
        S = L
    ours, theirs = make_pair(E, h, bias, batch_first, kdim, vdim, torch_to_ours=torch_to_ours)

    def layout(T, size):
        if not batched:
            return (T, size)
        return (B, T, size) if batch_first else (T, B, size)

    kwargs = {"need_weights": need_weights, "average_attn_weights": average}
    # masks never block key 0, so no query row is fully masked (torch gives NaN there)
    kpm_shape = (B, S) if batched else (S,)
    if kpm_kind == "bool":
        kpm = torch.rand(kpm_shape, generator=gen) < 0.4  # True = ignore
        kpm[..., 0] = False
        kwargs["key_padding_mask"] = kpm
    elif kpm_kind == "float":
        kpm = random_float_mask(kpm_shape, gen)
        kpm[..., 0] = 0.5
        kwargs["key_padding_mask"] = kpm
    if am_kind is not None:
        n = B * h if batched else h
        shape = (L, S) if am_kind.endswith("2d") else (n, L, S)
        if am_kind.startswith("bool"):
            am = torch.rand(shape, generator=gen) < 0.4  # True = blocked
            am[..., 0] = False
        else:
            am = random_float_mask(shape, gen)
            am[..., 0] = -1.0
        kwargs["attn_mask"] = am

    if mode.endswith("self"):
        x = torch.randn(*layout(L, E), generator=gen)
        a, b = SelfAttention(ours), SelfAttention(theirs)
        out, _ = assert_same_forward_backward(a, b, [x], kwargs_ours=kwargs, kwargs_theirs=kwargs)
    else:
        q = torch.randn(*layout(L, E), generator=gen)
        k = torch.randn(*layout(S, kdim or E), generator=gen)
        v = torch.randn(*layout(S, vdim or E), generator=gen)
        out, _ = assert_same_forward_backward(
            ours, theirs, [q, k, v], kwargs_ours=kwargs, kwargs_theirs=kwargs
        )
    attn_output, weights = out
    assert attn_output.shape == layout(L, E)
    if not need_weights:
        assert weights is None
    else:
        heads = () if average else (h,)
        assert weights.shape == ((B,) if batched else ()) + heads + (L, S)


def test_mha_state_dicts_load_both_ways():
    for kwargs in ({}, {"bias": False}, {"kdim": 3, "vdim": 5}, {"bias": False, "kdim": 3}):
        ours = MultiHeadAttention(6, 2, **kwargs)
        theirs = nn.MultiheadAttention(6, 2, **kwargs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert {n: p.shape for n, p in ours.named_parameters()} == {
            n: p.shape for n, p in theirs.named_parameters()
        }
        copy_weights(theirs, ours)
        copy_weights(ours, theirs)
    ours = MultiHeadAttention(6, 2, bias=False)
    assert ours.in_proj_bias is None and ours.out_proj.bias is None


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"kdim": 3, "vdim": 5}])
def test_mha_project_is_the_input_projection_of_forward(kwargs):
    """project(q, k, v) = the stacked W^Q, W^K, W^V (+ b): what forward feeds the heads."""
    mha = MultiHeadAttention(6, 2, **kwargs)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, generator=gen)
    key, value = torch.randn(2, 5, mha.kdim, generator=gen), torch.randn(2, 5, mha.vdim, generator=gen)
    weights = mha.in_proj_weight.chunk(3) if mha.in_proj_weight is not None else (
        mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    )
    biases = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
    for got, inp, w, b in zip(mha.project(x, key, value), (x, key, value), weights, biases):
        torch.testing.assert_close(got, F.linear(inp, w, b))
    if mha.in_proj_weight is not None:  # self-attention: one product with the stacked matrix
        expected = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        torch.testing.assert_close(torch.cat(mha.project(x, x, x), -1), expected)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_dropout_matches_torch_under_a_seed(need_weights):
    ours, theirs = make_pair(6, 2, True, True, dropout=0.3)
    x = torch.randn(2, 5, 6)
    kpm = torch.tensor([[False] * 5, [False, False, False, True, True]])
    results = []
    for module in (ours, ours, theirs):
        torch.manual_seed(7)
        results.append(
            module(x, x, x, key_padding_mask=kpm, need_weights=need_weights, average_attn_weights=False)
        )
    (o1, w1), (o2, w2), (o3, w3) = results
    assert torch.equal(o1, o2)
    torch.testing.assert_close(o1, o3)
    if need_weights:  # the dropped-out weights, as torch returns them
        torch.testing.assert_close(w1, w3)
        assert (w1 == 0).any() and not torch.allclose(w1.sum(-1), torch.ones(2, 2, 5))
    ours.eval()
    out_a, _ = ours(x, x, x)
    out_b, _ = ours(x, x, x)
    assert torch.equal(out_a, out_b)  # no dropout in eval mode


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_mha_is_causal_hint(need_weights, mask_kind):
    ours, theirs = make_pair(6, 3, True, True)
    x = torch.randn(2, 5, 6)
    blocked = ~causal_mask(5)
    mask = blocked if mask_kind == "bool" else torch.zeros(5, 5).masked_fill(blocked, float("-inf"))
    kwargs = {"attn_mask": mask, "is_causal": True, "need_weights": need_weights}
    assert_same_forward_backward(
        SelfAttention(ours), SelfAttention(theirs), [x], kwargs_ours=kwargs, kwargs_theirs=kwargs
    )
    # the hint changes nothing: same numbers as the mask alone
    no_hint = {**kwargs, "is_causal": False}
    assert_same_forward_backward(
        SelfAttention(ours), SelfAttention(ours), [x], kwargs_ours=kwargs, kwargs_theirs=no_hint
    )
    with pytest.raises(ValueError, match="needs attn_mask"):
        ours(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="not the causal mask"):
        ours(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.bool), is_causal=True)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_masked_rows_give_zero(need_weights):
    ours, theirs = make_pair(4, 2, True, True)
    x = torch.randn(2, 3, 4, requires_grad=True)
    kpm = torch.tensor([[False, False, False], [True, True, True]])  # sequence 1: every key ignored
    out, w = ours(x, x, x, key_padding_mask=kpm, need_weights=need_weights)
    expected = ours.out_proj.bias.expand(3, 4)  # attention output 0, then W^O 0 + b^O
    torch.testing.assert_close(out[1], expected)
    if need_weights:
        assert (w[1] == 0).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    ref, _ = theirs(x, x, x, key_padding_mask=kpm, need_weights=False)
    torch.testing.assert_close(out, ref)


def test_mha_key_padding_and_attn_mask_conventions():
    """True in key_padding_mask = ignore: those keys get weight exactly 0."""
    ours = MultiHeadAttention(4, 2)
    x = torch.randn(2, 4, 4)
    kpm = torch.tensor([[False, False, True, True], [False, False, False, True]])
    _, w = ours(x, x, x, key_padding_mask=kpm, average_attn_weights=False)  # (B, h, L, S)
    assert (w[0, :, :, 2:] == 0).all() and (w[1, :, :, 3] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 4))
    _, w = ours(x, x, x, attn_mask=~causal_mask(4))
    assert (w.triu(1) == 0).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda m, x: m(x[0, 0], x[0, 0], x[0, 0]),
            r"query must have 2 or 3 dimensions.*got shape \(4,\)",
        ),
        (lambda m, x: m(x, x[0], x), r"key must have 3 dimensions"),
        (lambda m, x: m(x[..., :3], x, x), r"query must have size 4 in dimension -1 \(embed_dim\)"),
        (lambda m, x: m(x, x[:, :2], x), r"key and value must have the same number S"),
        (lambda m, x: m(x, x[:1], x[:1]), r"same batch size"),
        (
            lambda m, x: m(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
            r"key_padding_mask must have shape \(B, S\) = \(2, 3\), got \(2, 4\)",
        ),
        (
            lambda m, x: m(x, x, x, key_padding_mask=torch.zeros(2, 3, dtype=torch.int64)),
            r"key_padding_mask must be bool \(True = ignore this key\).*got dtype torch.int64",
        ),
        (
            lambda m, x: m(x, x, x, key_padding_mask=torch.zeros(2, 3, dtype=torch.float32)),
            r"key_padding_mask must be bool.*got dtype torch.float32",
        ),
        (
            lambda m, x: m(x, x, x, attn_mask=torch.zeros(3, 4, dtype=torch.bool)),
            r"attn_mask must have shape \(L, S\) = \(3, 3\), got \(3, 4\)",
        ),
        (
            lambda m, x: m(x, x, x, attn_mask=torch.zeros(2, 3, 3, dtype=torch.bool)),
            r"attn_mask must have shape \(B\*h, L, S\) = \(4, 3, 3\), got \(2, 3, 3\)",
        ),
        (
            lambda m, x: m(x, x, x, attn_mask=torch.zeros(3, dtype=torch.bool)),
            r"attn_mask must have 2 or 3 dimensions \(L, S\) or \(B\*h, L, S\), got shape \(3,\)",
        ),
        (
            lambda m, x: m(x, x, x, attn_mask=torch.zeros(3, 3, dtype=torch.int32)),
            r"attn_mask must be bool \(True = blocked\).*got dtype torch.int32",
        ),
        (
            lambda m, x: m(x[0], x[0], x[0], key_padding_mask=torch.zeros(2, 3, dtype=torch.bool)),
            r"key_padding_mask must have shape \(S,\) for unbatched input = \(3,\)",
        ),
    ],
)
def test_mha_errors(call, match):
    m = MultiHeadAttention(4, 2)
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=match):
        call(m, x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"embed_dim": 6, "num_heads": 4},
            r"embed_dim must be divisible by num_heads, got embed_dim=6, num_heads=4",
        ),
        ({"embed_dim": 0, "num_heads": 1}, r"embed_dim must be a positive int"),
        ({"embed_dim": 4, "num_heads": 2, "dropout": -0.1}, r"dropout must be a number in \[0, 1\]"),
    ],
)
def test_mha_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


# ---------------------------------------------------------------------- additive attention


def additive_by_loops(attn, query, keys, values, mask):
    """e_ij = v^T tanh(W_q q_i + W_k k_j), softmax over allowed j, c_i = sum_j a_ij v_j; plain loops."""
    Wq, Wk, v = attn.W_q.weight.detach(), attn.W_k.weight.detach(), attn.v.weight[0].detach()
    B, L, _ = query.shape
    S = keys.shape[1]
    context = torch.zeros(B, L, values.shape[-1])
    weights = torch.zeros(B, L, S)
    for b in range(B):
        for i in range(L):
            e = [float(v @ torch.tanh(Wq @ query[b, i] + Wk @ keys[b, j])) for j in range(S)]
            allowed = [j for j in range(S) if mask is None or mask[b, j]]
            z = sum(math.exp(e[j]) for j in allowed)
            for j in allowed:
                weights[b, i, j] = math.exp(e[j]) / z
                context[b, i] += weights[b, i, j] * values[b, j]
    return context, weights


@pytest.mark.parametrize("single_query", [True, False])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("sizes", [(2, 3, 4, 5, 3, 2), (3, 1, 2, 3, 4, 1)])
def test_additive_attention_against_explicit_loops(single_query, masked, sizes):
    B, L, Q, K, S, V = sizes
    torch.manual_seed(sum(sizes))
    attn = AdditiveAttention(Q, K, hidden_size=6)
    query = torch.randn(B, Q) if single_query else torch.randn(B, L, Q)
    keys, values = torch.randn(B, S, K), torch.randn(B, S, V)
    mask = padding_mask(torch.randint(1, S + 1, (B,)), S) if masked else None
    context, weights = attn(query, keys, values, mask)
    q3 = query.unsqueeze(1) if single_query else query
    ref_c, ref_w = additive_by_loops(attn, q3, keys, values, mask)
    if single_query:
        ref_c, ref_w = ref_c.squeeze(1), ref_w.squeeze(1)
    torch.testing.assert_close(context, ref_c, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(weights, ref_w, atol=1e-12, rtol=1e-12)


def test_additive_attention_masked_keys_get_zero_and_padding_is_invisible():
    torch.manual_seed(3)
    attn = AdditiveAttention(3, 4, 5)
    query, keys, values = torch.randn(2, 2, 3), torch.randn(2, 6, 4), torch.randn(2, 6, 3)
    mask = padding_mask([4, 2], 6)
    context, weights = attn(query, keys, values, mask)
    assert (weights[~mask.unsqueeze(1).expand(2, 2, 6)] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2))
    garbage_k, garbage_v = keys.clone(), values.clone()
    garbage_k[~mask] = 1e6
    garbage_v[~mask] = -1e9
    context2, weights2 = attn(query, garbage_k, garbage_v, mask)
    assert torch.equal(weights, weights2)
    torch.testing.assert_close(context, context2, atol=1e-12, rtol=0)
    # same as attending to the unpadded prefix only
    c0, _ = attn(query[:1], keys[:1, :4], values[:1, :4])
    torch.testing.assert_close(context[:1], c0)


def test_additive_attention_empty_row_gives_zero():
    attn = AdditiveAttention(2, 2, 3)
    query, keys, values = torch.randn(2, 2), torch.randn(2, 3, 2), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    context, weights = attn(query, keys, values, mask)
    assert (context[1] == 0).all() and (weights[1] == 0).all()
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))


@pytest.mark.parametrize("masked", [False, True])
def test_additive_attention_gradcheck(masked):
    torch.manual_seed(4)
    attn = AdditiveAttention(3, 2, 4)
    query = torch.randn(2, 2, 3, requires_grad=True)
    keys = torch.randn(2, 4, 2, requires_grad=True)
    values = torch.randn(2, 4, 3, requires_grad=True)
    mask = padding_mask([4, 2], 4) if masked else None
    params = [attn.W_q.weight, attn.W_k.weight, attn.v.weight]

    def fn(query, keys, values, wq, wk, wv):
        return torch.func.functional_call(
            attn, {"W_q.weight": wq, "W_k.weight": wk, "v.weight": wv}, (query, keys, values, mask)
        )

    inputs = (query, keys, values, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a, q, k, v: a(q[0], k, v), r"query must have 2 or 3 dimensions.*got shape \(3,\)"),
        (lambda a, q, k, v: a(q[:, :2], k, v), r"query must have size 3 in dimension -1 \(query_size\)"),
        (lambda a, q, k, v: a(q, k[0], v), r"keys must have 3 dimensions \(B, S, K\)"),
        (lambda a, q, k, v: a(q, k[..., :1], v), r"keys must have size 2 in dimension -1 \(key_size\)"),
        (lambda a, q, k, v: a(q, k, v[:, :3]), r"must agree on B and S.*\(2, 3, 5\)"),
        (lambda a, q, k, v: a(q[:1], k, v), r"must agree on B and S"),
        (
            lambda a, q, k, v: a(q, k, v, torch.ones(2, 4, dtype=torch.int64)),
            r"mask must be bool \(True = may attend\), got dtype torch.int64",
        ),
        (
            lambda a, q, k, v: a(q, k, v, torch.ones(4, 2, dtype=torch.bool)),
            r"mask must have shape \(B, S\) = \(2, 4\), got \(4, 2\)",
        ),
    ],
)
def test_additive_attention_errors(call, match):
    a = AdditiveAttention(3, 2, 4)
    q, k, v = torch.randn(2, 3), torch.randn(2, 4, 2), torch.randn(2, 4, 5)
    with pytest.raises(ValueError, match=match):
        call(a, q, k, v)
