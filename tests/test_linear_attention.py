"""seqbook_lib.linear_attention: the causal forms against each other and
against the formula written out, the non-causal form, the layer (float64)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_forward_backward, perturb

from seqbook_lib.linear_attention import (
    FORMS,
    LinearAttention,
    causal_linear_attention,
    chunked_causal_linear_attention,
    elu_feature_map,
    linear_attention,
    recurrent_linear_attention,
)

EPS = 1e-6


def features(T, gen, B=2, h=3, d=4, dv=5, S=None):
    """phi(q) (B, h, T, d), phi(k) (B, h, S, d), v (B, h, S, dv)."""
    S = T if S is None else S
    q = elu_feature_map(torch.randn(B, h, T, d, generator=gen))
    k = elu_feature_map(torch.randn(B, h, S, d, generator=gen))
    v = torch.randn(B, h, S, dv, generator=gen)
    return q, k, v


def explicit(q, k, v, causal):
    """y_i = sum_j w_ij v_j / (sum_j w_ij + eps), w_ij = phi(q_i).phi(k_j),
    j <= i when causal: one query and one key at a time."""
    L, S = q.shape[-2], k.shape[-2]
    ys = []
    for i in range(L):
        num = torch.zeros(q.shape[:-2] + v.shape[-1:])
        den = torch.zeros(q.shape[:-2] + (1,))
        for j in range(i + 1 if causal else S):
            w = (q[..., i, :] * k[..., j, :]).sum(-1, keepdim=True)
            num = num + w * v[..., j, :]
            den = den + w
        ys.append(num / (den + EPS))
    return torch.stack(ys, dim=-2)


def recurrent(q, k, v):
    return recurrent_linear_attention(q, k, v)[0]


def chunked(chunk_size):
    def run(q, k, v):
        return chunked_causal_linear_attention(q, k, v, chunk_size)

    return run


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize(
    "form",
    [recurrent, chunked(1), chunked(3), chunked(4), chunked(33), chunked(64)],
    ids=["recurrent", "chunk1", "chunk3", "chunk4", "chunk33", "chunk64"],
)
def test_causal_forms_are_equal(T, form):
    gen = torch.Generator().manual_seed(T)
    assert_same_forward_backward(
        form, causal_linear_attention, list(features(T, gen))
    )


@pytest.mark.parametrize(
    "form, reference",
    [
        (recurrent, causal_linear_attention),
        (chunked(3), causal_linear_attention),
        (causal_linear_attention, causal_linear_attention),
        (linear_attention, linear_attention),
    ],
    ids=["recurrent", "chunk3", "causal", "non_causal"],
)
def test_batch_dimensions_broadcast(form, reference):
    """Keys and values shared by the batch (batch size 1) give what the
    same keys and values repeated for every example give."""
    q, k, v = features(7, torch.Generator().manual_seed(6))
    shared = k[:1], v[:1]  # (1, h, T, d), (1, h, T, dv)
    repeated = [x.expand(2, -1, -1, -1) for x in shared]
    out = form(q, *shared)
    assert out.shape == (2, 3, 7, 5)
    torch.testing.assert_close(out, reference(q, *repeated))


@pytest.mark.parametrize("T", [1, 7])
def test_causal_is_the_formula(T):
    q, k, v = features(T, torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        causal_linear_attention(q, k, v), explicit(q, k, v, causal=True)
    )


@pytest.mark.parametrize("L, S", [(1, 1), (7, 7), (5, 9), (9, 2)])
def test_non_causal_is_the_formula(L, S):
    q, k, v = features(L, torch.Generator().manual_seed(2), S=S)
    assert_same_forward_backward(
        linear_attention,
        lambda q, k, v: explicit(q, k, v, causal=False),
        [q, k, v],
    )


def test_non_causal_is_the_last_causal_row():
    """Query T-1 of causal attention sees every key."""
    q, k, v = features(6, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        causal_linear_attention(q, k, v)[..., -1, :],
        linear_attention(q[..., -1:, :], k, v)[..., 0, :],
    )


def test_recurrent_state_carries_over():
    q, k, v = features(10, torch.Generator().manual_seed(4))
    whole, (S, z) = recurrent_linear_attention(q, k, v)
    first, state = recurrent_linear_attention(
        q[..., :4, :], k[..., :4, :], v[..., :4, :]
    )
    second, (S2, z2) = recurrent_linear_attention(
        q[..., 4:, :], k[..., 4:, :], v[..., 4:, :], state
    )
    torch.testing.assert_close(torch.cat([first, second], -2), whole)
    torch.testing.assert_close(S2, S)
    torch.testing.assert_close(z2, z)
    # the final state is the sum over all steps
    torch.testing.assert_close(S, k.transpose(-2, -1) @ v)
    torch.testing.assert_close(z, k.sum(-2))


def test_elu_feature_map_is_positive():
    x = torch.tensor([-30.0, -1.0, 0.0, 2.0])
    expected = torch.stack([x[0].exp(), x[1].exp(), x[2] + 1, x[3] + 1])
    torch.testing.assert_close(elu_feature_map(x), expected)
    assert (elu_feature_map(x) > 0).all()


# -- the layer ----------------------------------------------------------------


def make_layer(causal=True, form="parallel", seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = LinearAttention(8, 2, causal=causal, form=form, **kwargs)
    perturb(layer.parameters(), scale=0.3)
    return layer


def with_form(layer, form):
    other = copy.deepcopy(layer)
    other.form = form
    return other


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("form", ["chunked", "recurrent"])
def test_layer_forms_are_equal(T, form):
    layer = make_layer(chunk_size=4)
    x = torch.randn(3, T, 8, generator=torch.Generator().manual_seed(T))
    out, _ = assert_same_forward_backward(with_form(layer, form), layer, [x])
    assert out.shape == (3, T, 8)


def test_layer_is_multi_head_linear_attention():
    """The projections, the feature map, each head on its own, the output
    projection: written out with the formula."""
    for causal in (True, False):
        layer = make_layer(causal=causal, seed=1)
        x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))
        q, k, v = F.linear(x, layer.qkv.weight, layer.qkv.bias).chunk(3, -1)
        heads = []
        for hd in range(2):
            part = slice(4 * hd, 4 * hd + 4)
            phi_q = elu_feature_map(q[..., part])
            phi_k = elu_feature_map(k[..., part])
            heads.append(explicit(phi_q, phi_k, v[..., part], causal))
        expected = layer.out_proj(torch.cat(heads, dim=-1))
        torch.testing.assert_close(layer(x), expected)


def test_layer_is_causal():
    layer = make_layer(seed=2)
    x = torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[:, 5:] += 1.0
    for form in FORMS:
        a, b = layer(x, form=form), layer(changed, form=form)
        torch.testing.assert_close(a[:, :5], b[:, :5], atol=0, rtol=0)
        assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_step_equals_recurrent_forward():
    layer = make_layer(seed=3)
    x = torch.randn(2, 7, 8, generator=torch.Generator().manual_seed(3))
    full = layer(x, form="recurrent")
    state = None
    for t in range(7):
        y, state = layer.step(x[:, t], state)
        torch.testing.assert_close(y, full[:, t], atol=1e-12, rtol=0)
    S, z = state
    assert S.shape == (2, 2, 4, 4) and z.shape == (2, 2, 4)


def test_repr():
    assert "8, num_heads=2, causal=True, form='chunked', chunk_size=3" in repr(
        make_layer(form="chunked", chunk_size=3)
    )


# -- errors -------------------------------------------------------------------


def test_function_errors():
    q, k, v = features(5, torch.Generator().manual_seed(5))
    with pytest.raises(
        ValueError,
        match=r"causal attention needs as many queries as keys \(L == S\), "
        r"and at least one, got L=3 and S=5",
    ):
        causal_linear_attention(q[..., :3, :], k, v)
    for causal in (causal_linear_attention, chunked(2), recurrent):
        with pytest.raises(ValueError, match="got L=0 and S=0"):
            causal(q[..., :0, :], k[..., :0, :], v[..., :0, :])
    with pytest.raises(
        ValueError,
        match=r"key \(\.\.\., S, E\) and value \(\.\.\., S, Ev\) "
        r"must have the same S",
    ):
        linear_attention(q, k, v[..., :4, :])
    with pytest.raises(
        ValueError, match=r"query \(\.\.\., L, E\) and key .* same E"
    ):
        linear_attention(q, k[..., :3], v)
    with pytest.raises(
        ValueError, match=r"value must have at least 2 dimensions"
    ):
        linear_attention(q, k, torch.randn(5))
    with pytest.raises(ValueError, match=r"batch dimensions .* broadcast"):
        recurrent_linear_attention(q, k[:1, :2], v)
    with pytest.raises(ValueError, match="must share one dtype"):
        causal_linear_attention(q, k.float(), v)
    with pytest.raises(
        ValueError, match="chunk_size must be a positive int, got 0"
    ):
        chunked_causal_linear_attention(q, k, v, 0)
    with pytest.raises(TypeError, match=r"state must be a pair \(S, z\)"):
        recurrent_linear_attention(q, k, v, torch.zeros(2, 3, 4, 5))
    with pytest.raises(
        ValueError,
        match=r"state\[0\] \(S\) must have shape \(\.\.\., d, dv\) = "
        r"\(2, 3, 4, 5\), got \(2, 3, 5, 4\)",
    ):
        recurrent_linear_attention(
            q, k, v, (torch.zeros(2, 3, 5, 4), torch.zeros(2, 3, 4))
        )


def test_layer_errors():
    with pytest.raises(
        ValueError,
        match="embed_dim must be divisible by num_heads, "
        "got embed_dim=8 and num_heads=3",
    ):
        LinearAttention(8, 3)
    with pytest.raises(
        ValueError,
        match="non-causal linear attention has only form 'parallel', "
        "got form='recurrent'",
    ):
        LinearAttention(8, 2, causal=False, form="recurrent")
    with pytest.raises(ValueError, match=r"form must be one of \["):
        LinearAttention(8, 2, form="cumsum")
    layer = make_layer()
    with pytest.raises(
        ValueError,
        match=r"x must have 3 dimensions \(B, T, E\), got shape \(7, 8\)",
    ):
        layer(torch.randn(7, 8))
    with pytest.raises(
        ValueError,
        match=r"size 8 in dimension -1 \(embed_dim\), got shape \(2, 7, 6\)",
    ):
        layer(torch.randn(2, 7, 6))
    with pytest.raises(
        ValueError,
        match=r"x must have at least one time step \(T >= 1 in \(B, T, E\)\)",
    ):
        layer(torch.randn(2, 0, 8))
    with pytest.raises(ValueError, match=r"x_t must have 2 dimensions"):
        layer.step(torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="step\\(\\) runs causal attention"):
        make_layer(causal=False).step(torch.randn(2, 8))
