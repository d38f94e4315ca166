"""seqbook_lib.encoder_decoder: decoder layer and stacks vs torch (float64), masks, decoding consistency."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import (
    assert_beam_is_exhaustive_search,
    assert_same_forward_backward,
    perturb,
    perturbed_copy,
    seq2seq_batch,
    sequence_log_prob,
)
from seqbook_lib.attention import causal_mask, padding_mask
from seqbook_lib.encoder_decoder import (
    Transformer,
    TransformerDecoderLayer,
    TransformerSeq2Seq,
)
from seqbook_lib.seq2seq import Hypothesis

PAD, BOS, EOS = 0, 1, 2

# torch warns that its nested-tensor fast path is off for norm_first layers
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")


# ------------------------------------------------------------------------ decoder layer


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize(
    "activation, batch_first, bias, torch_to_ours",
    [("relu", True, True, True), ("gelu", False, True, False), ("relu", True, False, False)],
)
@pytest.mark.parametrize("memory_mask", [None, "bool"])
def test_decoder_layer_matches_torch(norm_first, activation, batch_first, bias, torch_to_ours, memory_mask):
    B, T, S, d_model, nhead = 3, 4, 5, 6, 2
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    args = (d_model, nhead, 7, 0.0, activation)
    kw = {"batch_first": batch_first, "norm_first": norm_first, "bias": bias}
    ours, theirs = perturbed_copy(
        TransformerDecoderLayer(*args, **kw), nn.TransformerDecoderLayer(*args, **kw), torch_to_ours
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    lengths = torch.tensor([5, 2, 4])
    kwargs = {
        "tgt_mask": ~causal_mask(T),
        "tgt_is_causal": True,
        "memory_key_padding_mask": ~padding_mask(lengths, S),
        "tgt_key_padding_mask": ~padding_mask(torch.tensor([4, 4, 3]), T),
    }
    if memory_mask == "bool":
        m = torch.rand(T, S, generator=gen) < 0.3
        m[:, 0] = False  # every query keeps a real key
        kwargs["memory_mask"] = m
    tgt = torch.randn(*((B, T) if batch_first else (T, B)), d_model, generator=gen)
    memory = torch.randn(*((B, S) if batch_first else (S, B)), d_model, generator=gen)
    assert_same_forward_backward(ours, theirs, [tgt, memory], kwargs_ours=kwargs, kwargs_theirs=kwargs)
    assert ours.attn_weights is None and ours.cross_attn_weights is None


def test_decoder_layer_keeps_attention_weights_when_asked():
    layer = TransformerDecoderLayer(6, 3, 8, 0.0).eval()
    tgt, memory = torch.randn(2, 4, 6), torch.randn(2, 5, 6)
    kpm = ~padding_mask([5, 2], 5)
    out = layer(tgt, memory, tgt_mask=~causal_mask(4), memory_key_padding_mask=kpm, need_weights=True)
    assert layer.attn_weights.shape == (2, 3, 4, 4) and layer.cross_attn_weights.shape == (2, 3, 4, 5)
    assert (layer.attn_weights.triu(1) == 0).all()  # causal
    assert (layer.cross_attn_weights[1, ..., 2:] == 0).all()  # padded memory
    torch.testing.assert_close(layer.cross_attn_weights.sum(-1), torch.ones(2, 3, 4))
    torch.testing.assert_close(out, layer(tgt, memory, tgt_mask=~causal_mask(4), memory_key_padding_mask=kpm))


def test_decoder_layer_errors():
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'gelu'\], got 'tanh'"):
        TransformerDecoderLayer(4, 2, activation="tanh")
    layer = TransformerDecoderLayer(4, 2, 8)
    with pytest.raises(ValueError, match=r"key must have size 4 in dimension -1 \(kdim\)"):
        layer(torch.randn(2, 3, 4), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"query, key and value must have the same batch size"):
        layer(torch.randn(2, 3, 4), torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\) = \(2, 5\), got \(2, 3\)"):
        layer(torch.randn(2, 3, 4), torch.randn(2, 5, 4), memory_key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------- the stacks


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("final_norm", [True, False])
def test_transformer_matches_torch(norm_first, final_norm):
    """With final_norm=True against torch.nn.Transformer as it is; with False against torch's
    stacks without their final LayerNorms (encoder.norm = decoder.norm = None)."""
    torch.manual_seed(0)
    args = (6, 2, 2, 3, 10, 0.0, "gelu")
    ours = Transformer(*args, norm_first=norm_first, final_norm=final_norm)
    theirs = nn.Transformer(*args, batch_first=True, norm_first=norm_first)
    if not final_norm:
        theirs.encoder.norm = theirs.decoder.norm = None
    perturbed_copy(ours, theirs, torch_to_ours=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    gen = torch.Generator().manual_seed(2)
    src, tgt = torch.randn(3, 5, 6, generator=gen), torch.randn(3, 4, 6, generator=gen)
    src_pad = ~padding_mask([5, 1, 3], 5)
    kwargs = {
        "tgt_mask": ~causal_mask(4),
        "tgt_is_causal": True,
        "src_key_padding_mask": src_pad,
        "memory_key_padding_mask": src_pad,
    }
    assert_same_forward_backward(ours, theirs, [src, tgt], kwargs_ours=kwargs, kwargs_theirs=kwargs)


def test_transformer_layers_start_different_and_xavier():
    model = Transformer(8, 2, 2, 2, 16, 0.0)
    a, b = (model.decoder.layers[i].linear1.weight for i in range(2))
    assert not torch.equal(a, b)
    bound = (6 / (8 + 16)) ** 0.5
    assert a.abs().max() <= bound and (model.encoder.layers[0].self_attn.in_proj_bias == 0).all()


# ----------------------------------------------------------------------------- the model


def build(seed=0, V_src=13, V_tgt=7, max_len=16, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"dropout": 0.0, "pad_idx": PAD, "bos_idx": BOS, "eos_idx": EOS, "max_len": max_len, **kwargs}
    model = TransformerSeq2Seq(V_src, V_tgt, 8, 2, 2, 2, 16, **kwargs)
    perturb(model.parameters(), torch.Generator().manual_seed(seed))
    return model.eval()


def batch(B=4, S=6, T=5, V_src=13, V_tgt=7, seed=1, lengths=(6, 3, 1, 5)):
    gen = torch.Generator().manual_seed(seed)
    return seq2seq_batch(torch.tensor(lengths[:B]), S, T, V_src, V_tgt, gen, PAD, BOS)


@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_follows_the_equations(norm_first):
    model = build(norm_first=norm_first)
    src, lengths, tgt_in = batch()
    logits, weights = model(src, lengths, tgt_in)
    assert logits.shape == (4, 5, 7) and weights is None
    pad = ~padding_mask(lengths, 6)
    scale = 8**0.5
    x = model.src_embedding(src) * scale + model.pos_encoding.pe[:6]
    y = model.tgt_embedding(tgt_in) * scale + model.pos_encoding.pe[:5]
    out = model.transformer(
        x, y, tgt_mask=~causal_mask(5), src_key_padding_mask=pad, memory_key_padding_mask=pad
    )
    torch.testing.assert_close(logits, model.head(out))


def test_padding_in_the_source_changes_nothing():
    model = build(seed=2)
    src, lengths, tgt_in = batch(seed=3)
    logits, w = model(src, lengths, tgt_in, need_weights=True)
    for b, n in enumerate(lengths.tolist()):  # each sentence alone, unpadded
        alone, w_alone = model(src[b : b + 1, :n], lengths[b : b + 1], tgt_in[b : b + 1], need_weights=True)
        torch.testing.assert_close(alone[0], logits[b])
        torch.testing.assert_close(w_alone[0], w[b, ..., :n])
        assert (w[b, ..., n:] == 0).all()
    wider = torch.cat([src, torch.full((4, 3), PAD)], dim=1)
    noisy = wider.clone()
    pad = torch.arange(9)[None] >= lengths[:, None]
    noisy[pad] = torch.randint(3, 13, (int(pad.sum()),))  # real ids behind the lengths
    for padded in (wider, noisy):
        torch.testing.assert_close(model(padded, lengths, tgt_in)[0], logits)
    greedy = model.greedy_decode(src, lengths, 6)
    assert [h.tokens for h in model.greedy_decode(noisy, lengths, 6)] == [h.tokens for h in greedy]


def test_cross_attention_weights():
    model = build(seed=4)
    src, lengths, tgt_in = batch(seed=5)
    w = model.cross_attention_weights(src, lengths, tgt_in)
    assert w.shape == (4, 2, 2, 5, 6) and not w.requires_grad
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 2, 2, 5))
    torch.testing.assert_close(model(src, lengths, tgt_in)[0], model(src, lengths, tgt_in, need_weights=True)[0])


def test_the_step_interface_is_teacher_forcing_one_position_at_a_time():
    """encoder/decoder as Seq2Seq's generation code calls them: the state is the ids fed so far."""
    model = build(seed=12)
    src, lengths, tgt_in = batch(seed=13)
    logits, w = model(src, lengths, tgt_in, need_weights=True)
    memory, mask, state = model.encoder(src, lengths)
    assert state.shape == (4, 0) and torch.equal(mask, padding_mask(lengths, 6))
    for t in range(tgt_in.shape[1]):
        step_logits, state, weights = model.decoder(tgt_in[:, t], state, memory, mask)
        torch.testing.assert_close(step_logits, logits[:, t])
        torch.testing.assert_close(weights, w[:, -1, :, t].mean(1))  # last layer, mean of heads
    assert torch.equal(state, tgt_in)


def test_greedy_decode_is_the_argmax_of_teacher_forcing_on_its_own_output():
    model = build(seed=6)
    src, lengths, _ = batch(seed=7)
    hyps = model.greedy_decode(src, lengths, max_len=8)
    assert len(hyps) == 4 and all(isinstance(h, Hypothesis) for h in hyps)
    for b, h in enumerate(hyps):
        one = (src[b : b + 1], lengths[b : b + 1])
        logits, w = model(*one, torch.tensor([[BOS] + h.tokens[:-1]]), need_weights=True)
        assert logits[0].argmax(-1).tolist() == h.tokens
        assert h.score == pytest.approx(sequence_log_prob(model, *one, h.tokens), abs=1e-10)
        assert EOS not in h.tokens[:-1] and (h.tokens[-1] == EOS or len(h.tokens) == 8)
        n = int(lengths[b])
        assert h.attention.shape == (len(h.tokens), n)
        torch.testing.assert_close(h.attention, w[0, -1].mean(0)[:, :n])  # last layer, mean of heads


@pytest.mark.parametrize("seed", range(3))
def test_beam_size_one_is_greedy_and_wider_beams_score_consistently(seed):
    model = build(seed=10 + seed)
    src, lengths, _ = batch(seed=20 + seed)
    greedy = model.greedy_decode(src, lengths, max_len=7)
    beam1 = model.beam_search(src, lengths, beam_size=1, max_len=7)
    beam3 = model.beam_search(src, lengths, beam_size=3, max_len=7)
    for b, (g, h1, h3) in enumerate(zip(greedy, beam1, beam3)):
        assert g.tokens == h1.tokens
        assert g.score == pytest.approx(h1.score, abs=1e-10)
        torch.testing.assert_close(g.attention, h1.attention)
        one = (src[b : b + 1], lengths[b : b + 1])
        assert h3.score == pytest.approx(sequence_log_prob(model, *one, h3.tokens), abs=1e-10)
        assert h3.score <= 0 and h3.attention.shape == (len(h3.tokens), int(lengths[b]))


def fixed_distribution_model(probs):
    """A model whose every step predicts the same distribution ``probs`` over V = len(probs)."""
    model = build(seed=0, V_tgt=len(probs))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(probs).log())
    return model


# p(EOS) = 0.25, p(3) = 0.7 at every step, whatever the source and the prefix
FIXED = [0.025, 0.025, 0.25, 0.7]


@pytest.mark.parametrize("length_penalty", [0.0, 0.7, 3.0])
@pytest.mark.parametrize("kind", ["random", "fixed"])
def test_wide_beam_is_exhaustive_search(length_penalty, kind):
    """With room for every prefix, beam search returns the best of all sequences by score / lp."""
    V, max_len = 4, 5 if kind == "fixed" else 3
    model = build(seed=31, V_tgt=V) if kind == "random" else fixed_distribution_model(FIXED)
    src, lengths = torch.tensor([[3, 4, 0]]), torch.tensor([2])
    best = assert_beam_is_exhaustive_search(model, src, lengths, V, max_len, length_penalty)
    lp = lambda n: ((5 + n) / 6) ** length_penalty  # noqa: E731
    greedy = model.greedy_decode(src, lengths, max_len)[0]
    assert best.score / lp(len(best.tokens)) >= greedy.score / lp(len(greedy.tokens)) - 1e-12


def test_length_penalty_prefers_longer_outputs():
    """EOS at once scores log 0.25 = -1.39, five 3s 5 log 0.7 = -1.78; lp(5) = (10/6)^alpha tips the
    balance between alpha = 0.35 and 0.7."""
    model = fixed_distribution_model(FIXED)
    src, lengths = torch.tensor([[3, 3]]), torch.tensor([2])
    for alpha, expected in [(0.0, [EOS]), (0.35, [EOS]), (0.7, [3] * 5), (3.0, [3] * 5)]:
        best = model.beam_search(src, lengths, beam_size=3, max_len=5, length_penalty=alpha)[0]
        assert best.tokens == expected, alpha
    assert best.score == pytest.approx(5 * torch.tensor(0.7).log().item())


def test_a_finished_hypothesis_gives_up_its_place_in_the_beam():
    """Beam 3, p(3) = 0.4 > p(EOS) = 0.3 > p(4) = 0.25 at every step. Step 1 keeps [3], [EOS], [4]:
    [EOS] is finished, two places are left; step 2 keeps [3, 3] and [3, EOS]: one place is left."""
    model = fixed_distribution_model([0.025, 0.025, 0.3, 0.4, 0.25])
    src, lengths = torch.tensor([[3, 3]]), torch.tensor([2])
    rows, decode = [], model.decode

    def counting_decode(tgt_in, *args, **kwargs):
        rows.append(tgt_in.shape[0])
        return decode(tgt_in, *args, **kwargs)

    model.decode = counting_decode
    best = model.beam_search(src, lengths, beam_size=3, max_len=4)[0]
    assert rows == [1, 2, 1, 1]  # alive hypotheses per step, each run over its whole prefix
    assert best.tokens == [EOS]  # log 0.3 beats 2 log 0.4 + log 0.3 and 4 log 0.4


def test_tied_weights_float32_and_gradients():
    model = build(seed=8, tie_weights=True, dropout=0.1, V_src=7).float().train()
    assert model.head.weight is model.tgt_embedding.weight
    src, lengths, tgt_in = batch(seed=9, V_src=7)
    logits, _ = model(src, lengths, tgt_in)
    assert logits.dtype == torch.float32
    F.cross_entropy(logits.flatten(0, 1), torch.roll(tgt_in, -1, 1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert (model.src_embedding.weight.grad[PAD] == 0).all()


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, s, l, t: m(s[0], l, t), r"src must have 2 dimensions \(B, S\), got shape \(6,\)"),
        (lambda m, s, l, t: m(s.double(), l, t), r"src must hold integer token ids, got dtype torch.float64"),
        (lambda m, s, l, t: m(s, torch.tensor([7, 1, 1, 1]), t), r"every length must lie in 1..6"),
        (lambda m, s, l, t: m(s, l[:2], t), r"lengths must be 1-D with one entry per sequence, i.e. shape \(4,\)"),
        (lambda m, s, l, t: m(s, l, t[:2]), r"tgt_in must have shape \(B, T\) with B = 4 and 1 <= T <= max_len = 16, got \(2, 5\)"),
        (lambda m, s, l, t: m(s, l, t[:, :0]), r"got \(4, 0\)"),
        (lambda m, s, l, t: m(s, l, t + 7), r"tgt_in must hold token ids in 0..6 \(vocab_size 7\)"),
        (lambda m, s, l, t: m(s, l, t[:, 0]), r"tgt_in must have 2 dimensions \(B, T\)"),
        (lambda m, s, l, t: m(torch.ones(4, 17, dtype=torch.long), l, t), r"src has S=17 positions, more than max_len=16"),
        (lambda m, s, l, t: m.greedy_decode(s, l, 17), r"max_len=17 exceeds the model's max_len=16 positions"),
        (lambda m, s, l, t: m.greedy_decode(s, l, 0), r"max_len must be a positive int, got 0"),
        (lambda m, s, l, t: m.beam_search(s, l, 0, 5), r"beam_size must be a positive int, got 0"),
        (lambda m, s, l, t: m.beam_search(s, l, 2, 5, -1.0), r"length_penalty must be a non-negative number, got -1.0"),
    ],
)
def test_model_errors(call, match):
    src, lengths, tgt_in = batch()
    with pytest.raises(ValueError, match=match):
        call(build(), src, lengths, tgt_in)


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"bos_idx must be an int in 0..6, got 7"):
        build(bos_idx=7)
    with pytest.raises(ValueError, match=r"pad_idx must be an int in 0..6, got -1"):
        build(pad_idx=-1)
    with pytest.raises(ValueError, match=r"embed_dim must be divisible by num_heads, got embed_dim=8, num_heads=3"):
        TransformerSeq2Seq(5, 5, 8, 3, 1, 1, 8, bos_idx=1, eos_idx=2)
    with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 0"):
        TransformerSeq2Seq(5, 5, 8, 2, 0, 1, 8, bos_idx=1, eos_idx=2)
    with pytest.raises(TypeError, match=r"bos_idx"):
        TransformerSeq2Seq(5, 5, 8, 2, 1, 1, 8)


# ----------------------------------------------------------------------- the training loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_label_smoothed_cross_entropy_matches_torch(smoothing):
    from seqbook_lib.encoder_decoder import label_smoothed_cross_entropy

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    target = torch.randint(1, 7, (3, 5), generator=gen)
    target[1, 3:] = PAD
    target[2, 1:] = PAD
    ours = lambda x: label_smoothed_cross_entropy(x, target, smoothing, ignore_index=PAD)
    theirs = lambda x: F.cross_entropy(x.transpose(1, 2), target, ignore_index=PAD, label_smoothing=smoothing)
    assert_same_forward_backward(ours, theirs, [logits])
    # the equation, written out for one position: q = (1 - eps) one-hot + eps / K
    q = torch.full((7,), smoothing / 7, dtype=torch.float64)
    q[target[0, 0]] += 1 - smoothing
    one = label_smoothed_cross_entropy(logits[:1, :1], target[:1, :1], smoothing)
    torch.testing.assert_close(one, -(q * logits[0, 0].log_softmax(-1)).sum())


def test_label_smoothed_cross_entropy_errors():
    from seqbook_lib.encoder_decoder import label_smoothed_cross_entropy

    logits, target = torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"smoothing must be a number in \[0, 1\), got 1.0"):
        label_smoothed_cross_entropy(logits, target, 1.0)
    with pytest.raises(ValueError, match=r"target must have shape \(B, T\) = \(2, 3\), got \(2, 4\)"):
        label_smoothed_cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"logits must have 3 dimensions \(B, T, K\)"):
        label_smoothed_cross_entropy(logits[0], target, 0.1)
