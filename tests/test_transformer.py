"""seqbook_lib.transformer: positional encoding, encoder layer (vs torch, float64), classifier."""

import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_same_forward_backward, perturbed_copy
from seqbook_lib.attention import causal_mask, padding_mask
from seqbook_lib.transformer import (
    SinusoidalPositionalEncoding,
    TransformerClassifier,
    TransformerEncoder,
    TransformerEncoderLayer,
)

# ---------------------------------------------------------------------- positional encoding


@pytest.mark.parametrize("d_model", [1, 4, 5])
def test_positional_encoding_values(d_model):
    pe = SinusoidalPositionalEncoding(d_model, max_len=7)
    x = torch.randn(2, 6, d_model)
    out = pe(x)
    for t in range(6):
        for f in range(d_model):
            angle = t / 10000 ** ((f - f % 2) / d_model)
            expected = math.sin(angle) if f % 2 == 0 else math.cos(angle)
            torch.testing.assert_close(
                out[:, t, f] - x[:, t, f], torch.full((2,), expected), atol=1e-12, rtol=0
            )
    torch.testing.assert_close(pe(x[0]), out[0])  # unbatched (T, E)


def test_positional_encoding_is_a_buffer_outside_the_state_dict_and_dropout_works():
    pe = SinusoidalPositionalEncoding(4, max_len=10, dropout=0.5)
    assert list(pe.state_dict()) == [] and [n for n, _ in pe.named_buffers()] == ["pe"]
    assert pe.to(torch.float32).pe.dtype == torch.float32
    pe.to(torch.float64)
    x = torch.randn(3, 5, 4)
    torch.manual_seed(0)
    a = pe(x)
    torch.manual_seed(0)
    b = pe(x)
    assert torch.equal(a, b) and (a == 0).any()
    pe.eval()
    torch.testing.assert_close(pe(x), x + pe.pe[:5])


@pytest.mark.parametrize(
    "make, x, match",
    [
        (
            lambda: SinusoidalPositionalEncoding(4, max_len=5),
            torch.randn(2, 6, 4),
            r"T=6 exceeds max_len=5",
        ),
        (
            lambda: SinusoidalPositionalEncoding(4),
            torch.randn(2, 6, 3),
            r"x must have size 4 in dimension -1 \(d_model\)",
        ),
        (
            lambda: SinusoidalPositionalEncoding(4),
            torch.randn(4),
            r"x must have 2 or 3 dimensions \(B, T, E\) or \(T, E\)",
        ),
        (lambda: SinusoidalPositionalEncoding(0), None, r"d_model must be a positive int, got 0"),
    ],
)
def test_positional_encoding_errors(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


# ------------------------------------------------------------------------- encoder layer


def make_layers(
    d_model, nhead, ff, norm_first, activation, batch_first, bias, torch_to_ours, dropout=0.0
):
    ours = TransformerEncoderLayer(
        d_model,
        nhead,
        ff,
        dropout,
        activation,
        batch_first=batch_first,
        norm_first=norm_first,
        bias=bias,
    )
    theirs = nn.TransformerEncoderLayer(
        d_model,
        nhead,
        ff,
        dropout,
        activation,
        batch_first=batch_first,
        norm_first=norm_first,
        bias=bias,
    )
    return perturbed_copy(ours, theirs, torch_to_ours)  # non-trivial LayerNorms


@pytest.mark.filterwarnings("ignore:Support for mismatched")  # torch's warning for bool + float masks
@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    nhead=st.sampled_from([1, 2]),
    head_dim=st.integers(1, 3),
    norm_first=st.booleans(),
    activation=st.sampled_from(["relu", "gelu"]),
    batch_first=st.booleans(),
    bias=st.booleans(),
    train=st.booleans(),
    torch_to_ours=st.booleans(),
    src_mask=st.sampled_from([None, "bool", "float", "bool3d", "causal"]),
    kpm=st.sampled_from([None, "bool", "float"]),
    seed=st.integers(0, 2**16),
)
def test_encoder_layer_matches_torch(
    B,
    T,
    nhead,
    head_dim,
    norm_first,
    activation,
    batch_first,
    bias,
    train,
    torch_to_ours,
    src_mask,
    kpm,
    seed,
):
    gen = torch.Generator().manual_seed(seed)
    d_model = nhead * head_dim
    ours, theirs = make_layers(
        d_model, nhead, 7, norm_first, activation, batch_first, bias, torch_to_ours
    )
    ours.train(train)
    theirs.train(train)
    kwargs = {}
    if src_mask == "bool":
        m = torch.rand(T, T, generator=gen) < 0.4  # True = blocked; key 0 always allowed
        m[:, 0] = False
        kwargs["src_mask"] = m
    elif src_mask == "float":
        kwargs["src_mask"] = torch.randn(T, T, generator=gen)
    elif src_mask == "bool3d":
        m = torch.rand(B * nhead, T, T, generator=gen) < 0.4
        m[..., 0] = False
        kwargs["src_mask"] = m
    elif src_mask == "causal":
        kwargs["src_mask"] = ~causal_mask(T)
        kwargs["is_causal"] = True
    if kpm == "bool":
        kwargs["src_key_padding_mask"] = ~padding_mask(torch.randint(1, T + 1, (B,), generator=gen), T)
    elif kpm == "float":
        kwargs["src_key_padding_mask"] = torch.randn(B, T, generator=gen)
    x = torch.randn(*((B, T) if batch_first else (T, B)), d_model, generator=gen)
    assert_same_forward_backward(ours, theirs, [x], kwargs_ours=kwargs, kwargs_theirs=kwargs)
    assert ours.attn_weights is None


def test_encoder_layer_state_dict_names_and_dropout():
    """Dropout is reproducible under a seed and off in eval mode.

    (Not compared draw-for-draw with torch: torch computes in (T, B, E) memory
    layout internally, so its dropout1 pairs random numbers with other elements.)
    """
    ours, theirs = make_layers(6, 2, 8, False, "relu", True, True, True, dropout=0.3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 4, 6)
    kpm = torch.tensor([[False] * 4, [False, False, True, True]])
    torch.manual_seed(5)
    a = ours(x, src_key_padding_mask=kpm)
    torch.manual_seed(5)
    b = ours(x, src_key_padding_mask=kpm)
    assert torch.equal(a, b)
    ours.eval()
    theirs.eval()
    assert not torch.allclose(a, ours(x, src_key_padding_mask=kpm))
    with torch.no_grad():  # torch's own eval fast path: equal up to float64 rounding
        torch.testing.assert_close(
            ours(x, src_key_padding_mask=kpm), theirs(x, src_key_padding_mask=kpm)
        )


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_attention_weights_for_plotting(norm_first):
    layer = TransformerEncoderLayer(6, 3, 8, 0.0, norm_first=norm_first).eval()
    x = torch.randn(2, 5, 6)
    kpm = ~padding_mask([5, 3], 5)
    out = layer(x, src_key_padding_mask=kpm, need_weights=True)
    w = layer.attn_weights
    assert isinstance(out, torch.Tensor) and w.shape == (2, 3, 5, 5) and not w.requires_grad
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    assert (w[1, :, :, 3:] == 0).all()
    torch.testing.assert_close(out, layer(x, src_key_padding_mask=kpm))  # fused path: same numbers
    assert layer.attn_weights is None


def test_encoder_layer_errors():
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'gelu'\], got 'tanh'"):
        TransformerEncoderLayer(4, 2, activation="tanh")
    with pytest.raises(TypeError, match=r"activation must be 'relu', 'gelu' or a callable, got int"):
        TransformerEncoderLayer(4, 2, activation=3)
    with pytest.raises(
        ValueError, match=r"embed_dim must be divisible by num_heads, got embed_dim=5, num_heads=2"
    ):
        TransformerEncoderLayer(5, 2)
    layer = TransformerEncoderLayer(4, 2, 8)
    with pytest.raises(ValueError, match=r"query must have size 4 in dimension -1 \(embed_dim\)"):
        layer(torch.randn(2, 3, 5))
    with pytest.raises(
        ValueError, match=r"key_padding_mask must have shape \(B, S\) = \(2, 3\), got \(3, 2\)"
    ):
        layer(torch.randn(2, 3, 4), src_key_padding_mask=torch.zeros(3, 2, dtype=torch.bool))


# -------------------------------------------------------------------------- encoder stack


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch, for norm_first layers
@pytest.mark.parametrize("norm_first, final_norm", [(False, False), (True, True)])
def test_encoder_stack_matches_torch(norm_first, final_norm):
    torch.manual_seed(0)
    args, kw = (6, 2, 10, 0.0, "gelu"), {"batch_first": True, "norm_first": norm_first}
    final = (lambda: nn.LayerNorm(6)) if final_norm else (lambda: None)
    ours = TransformerEncoder(TransformerEncoderLayer(*args, **kw), 3, final())
    theirs = nn.TransformerEncoder(nn.TransformerEncoderLayer(*args, **kw), 3, final())
    perturbed_copy(ours, theirs, torch_to_ours=False)  # the copies now differ from each other
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert not torch.equal(ours.layers[0].linear1.weight, ours.layers[1].linear1.weight)
    x = torch.randn(2, 5, 6)
    kwargs = {"mask": ~causal_mask(5), "src_key_padding_mask": ~padding_mask([5, 3], 5)}
    assert_same_forward_backward(ours, theirs, [x], kwargs_ours=kwargs, kwargs_theirs=kwargs)
    with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 0"):
        TransformerEncoder(TransformerEncoderLayer(*args), 0)


# ----------------------------------------------------------------------------- classifier


def make_classifier(pooling, num_layers=2):
    torch.manual_seed(11)
    model = TransformerClassifier(
        vocab_size=13,
        d_model=8,
        nhead=2,
        num_layers=num_layers,
        num_classes=3,
        dim_feedforward=16,
        dropout=0.1,
        max_len=9,
        pad_idx=0,
        pooling=pooling,
    )
    return model.eval()


def logits_one_sequence(model, seq):
    """The classifier's equations for one unpadded sequence (1, T), step by step."""
    x = model.embedding(seq) * math.sqrt(model.d_model)
    if model.pooling == "cls":
        x = torch.cat([model.cls_token, x], dim=1)
    x = x + model.pos_encoding.pe[: x.shape[1]]
    for layer in model.layers:
        x = layer(x)
    pooled = x[:, 0] if model.pooling == "cls" else x.mean(dim=1)
    return model.head(pooled)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_pooling_and_padding_invariance(pooling):
    model = make_classifier(pooling)
    lengths = [5, 2, 7]
    tokens = torch.zeros(3, 7, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, :n] = torch.randint(1, 13, (n,))
    logits = model(tokens, lengths=lengths)
    assert logits.shape == (3, 3)
    for b, n in enumerate(lengths):  # each sequence alone, no padding at all
        torch.testing.assert_close(logits[b], logits_one_sequence(model, tokens[b : b + 1, :n])[0])
    more_padding = torch.cat([tokens, torch.zeros(3, 2, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(more_padding, lengths=lengths), logits)
    torch.testing.assert_close(model(more_padding), logits)  # mask from pad_idx
    torch.testing.assert_close(model(tokens, mask=padding_mask(lengths, 7)), logits)
    # garbage (non-pad) tokens behind the lengths change nothing either
    noisy = tokens.clone()
    noisy[tokens == 0] = 5
    torch.testing.assert_close(model(noisy, lengths=lengths), logits)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_attention_weights(pooling):
    model = make_classifier(pooling, num_layers=3)
    lengths = [4, 2]
    tokens = torch.randint(1, 13, (2, 6))
    logits, w = model(tokens, lengths=lengths, need_weights=True)
    extra = 1 if pooling == "cls" else 0
    T = 6 + extra
    assert w.shape == (2, 3, 2, T, T)
    torch.testing.assert_close(logits, model(tokens, lengths=lengths))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 2, T))
    for b, n in enumerate(lengths):
        assert (w[b, ..., n + extra :] == 0).all()  # padded keys get weight 0
        assert (w[b, ..., : n + extra] > 0).all()


def test_classifier_backward_reaches_every_parameter_but_the_pad_embedding():
    model = make_classifier("cls").train()
    tokens = torch.randint(1, 13, (3, 5))
    tokens[0, 3:] = 0
    model(tokens).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert (model.embedding.weight.grad[0] == 0).all()
    assert model.embedding.weight.grad[tokens[1, 0]].abs().sum() > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(2, 4)), r"tokens must hold integer token ids, got dtype torch.float64"),
        (lambda m: m(torch.ones(2, 10, dtype=torch.long)), r"T=10 positions, more than max_len=9"),
        (lambda m: m(torch.ones(4, dtype=torch.long)), r"tokens must have 2 dimensions \(B, T\)"),
        (lambda m: m(torch.full((2, 3), 13)), r"token ids in 0..12"),
        (
            lambda m: m(
                torch.ones(2, 3, dtype=torch.long),
                lengths=[1, 2],
                mask=torch.ones(2, 3, dtype=torch.bool),
            ),
            r"lengths or mask, not both",
        ),
        (
            lambda m: m(torch.ones(2, 3, dtype=torch.long), lengths=[1, 4]),
            r"every length must lie in 1..3",
        ),
        (
            lambda m: m(torch.ones(2, 3, dtype=torch.long), lengths=[1, 2, 3]),
            r"lengths must be 1-D.*\(2,\)",
        ),
        (
            lambda m: m(torch.ones(2, 3, dtype=torch.long), mask=torch.ones(2, 3)),
            r"mask must be bool \(True = real token\)",
        ),
        (
            lambda m: m(torch.ones(2, 3, dtype=torch.long), mask=torch.ones(3, 2, dtype=torch.bool)),
            r"mask must have shape \(B, T\) = \(2, 3\), got \(3, 2\)",
        ),
        (lambda m: m(torch.tensor([[1, 2], [0, 0]])), r"sequences \[1\] have no real token"),
    ],
)
def test_classifier_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_classifier("mean"))


def test_classifier_constructor_errors():
    with pytest.raises(ValueError, match=r"pooling must be one of \['mean', 'cls'\], got 'max'"):
        TransformerClassifier(10, 4, 2, 1, 2, 8, 0.0, 5, pooling="max")
    with pytest.raises(ValueError, match=r"pad_idx must be an int in 0..9, got 10"):
        TransformerClassifier(10, 4, 2, 1, 2, 8, 0.0, 5, pad_idx=10)
