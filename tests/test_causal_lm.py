"""seqbook_lib.causal_lm: KV cache = full pass, causality, the block vs torch (float64), RoPE, generation."""

import pytest
import torch
import torch.nn as nn

from helpers import assert_same_forward_backward, perturb, perturbed_copy
from seqbook_lib.attention import causal_mask
from seqbook_lib.causal_lm import (
    DecoderBlock,
    KVCache,
    RotaryEmbedding,
    TransformerLM,
    count_parameters,
)

POSITIONS = ["learned", "sinusoidal", "rotary"]
V, E, H, L, CONTEXT = 11, 8, 2, 2, 12


def make_lm(positions="learned", seed=0, **kwargs):
    torch.manual_seed(seed)
    model = TransformerLM(V, E, H, L, CONTEXT, positions, **kwargs)
    perturb(p for name, p in model.named_parameters() if "norm" in name)  # non-trivial LayerNorms
    return model.eval()


def random_ids(B=3, T=CONTEXT, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("chunks", [[5, 1, 1, 1, 1, 1, 1, 1], [1] * CONTEXT, [3, 4, 5]])
def test_cached_decoding_equals_the_full_forward(positions, chunks):
    model = make_lm(positions)
    ids = random_ids()
    full = model(ids)
    cache = model.new_cache(3)
    parts, start = [], 0
    for n in chunks:
        parts.append(model(ids[:, start : start + n], cache))
        start += n
        assert cache.length == start
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-12, rtol=0)
    assert cache.nbytes == KVCache.bytes_for(L, 3, CONTEXT, E, torch.float64) == 2 * L * 3 * CONTEXT * E * 8


@pytest.mark.parametrize("positions", POSITIONS)
def test_step_is_forward_of_one_token(positions):
    model = make_lm(positions)
    ids = random_ids(T=6)
    cache = model.new_cache(3)
    model(ids[:, :5], cache)
    torch.testing.assert_close(model.step(ids[:, 5], cache), model(ids)[:, 5], atol=1e-12, rtol=0)
    assert cache.length == 6 and all(k.shape == (3, H, 6, E // H) for k in cache.keys)


def test_cache_in_float32_and_its_size():
    model = make_lm("rotary").float()
    ids = random_ids(T=7)
    cache = model.new_cache(3)
    out = torch.cat([model(ids[:, :4], cache), model(ids[:, 4:], cache)], dim=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(ids), atol=1e-5, rtol=1e-5)
    assert cache.nbytes == KVCache.bytes_for(L, 3, 7, E) == 2 * L * 3 * 7 * E * 4
    assert repr(cache) == f"KVCache(num_layers=2, batch_size=3, length=7, nbytes={cache.nbytes})"


# ---------------------------------------------------------------------------- causality


@pytest.mark.parametrize("positions", POSITIONS)
def test_changing_token_t_leaves_earlier_logits_exactly_unchanged(positions):
    model = make_lm(positions, seed=3)
    ids = random_ids(seed=4)
    logits = model(ids)
    for t in (0, 4, CONTEXT - 1):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        other = model(changed)
        assert torch.equal(other[:, :t], logits[:, :t]), t
        assert not torch.allclose(other[:, t], logits[:, t])


# ------------------------------------------------------------------ the block vs torch


def make_blocks(ff, bias, seed, torch_to_ours):
    torch.manual_seed(seed)
    ours = DecoderBlock(6, 2, ff, bias=bias)
    theirs = nn.TransformerEncoderLayer(
        6, 2, 4 * 6 if ff is None else ff, 0.0, "gelu", batch_first=True, norm_first=True, bias=bias
    )
    return perturbed_copy(ours, theirs, torch_to_ours)


@pytest.mark.parametrize("ff, bias, torch_to_ours", [(None, True, True), (7, True, False), (5, False, True)])
@pytest.mark.parametrize("T", [1, 5])
def test_decoder_block_equals_torch_pre_norm_gelu_layer_with_a_causal_mask(ff, bias, torch_to_ours, T):
    ours, theirs = make_blocks(ff, bias, 7, torch_to_ours)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, T, 6)
    causal = {"src_mask": ~causal_mask(T), "is_causal": True}
    assert_same_forward_backward(ours, theirs, [x], kwargs_theirs=causal)


def test_decoder_block_dropout_is_reproducible_and_off_in_eval():
    block = DecoderBlock(6, 2, dropout=0.3)
    x = torch.randn(2, 4, 6)
    torch.manual_seed(1)
    a = block(x)
    torch.manual_seed(1)
    assert torch.equal(a, block(x))
    block.eval()
    assert not torch.allclose(a, block(x))
    assert torch.equal(block(x), block(x))


# ------------------------------------------------------------------------------- RoPE


def test_rotary_scores_depend_only_on_the_offset():
    rope = RotaryEmbedding(6, max_len=20)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    Q = rope(q.expand(20, 6))  # the same query at every position
    K = rope(k.expand(20, 6))
    scores = Q @ K.T  # scores[m, n] = R(m) q . R(n) k
    for m in range(20):
        for n in range(20):
            shift = min(m, n)
            torch.testing.assert_close(scores[m, n], scores[m - shift, n - shift], atol=1e-12, rtol=0)
    assert not torch.allclose(scores[0, 1], scores[1, 0])  # the sign of m - n matters
    torch.testing.assert_close(scores[0, 0], q @ k)  # position 0: no rotation


def test_rotary_keeps_norms_and_continues_at_an_offset():
    rope = RotaryEmbedding(4, max_len=9, base=100.0)
    x = torch.randn(2, 3, 9, 4)  # (B, h, T, d)
    y = rope(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])
    torch.testing.assert_close(rope(x[..., 5:, :], offset=5), y[..., 5:, :])
    # pair i of position t turned by t * base^(-2i/d)
    t, i = 3, 1
    angle = torch.tensor(t * 100.0 ** (-2 * i / 4))
    c, s = angle.cos(), angle.sin()
    a, b = x[..., t, 2 * i], x[..., t, 2 * i + 1]
    torch.testing.assert_close(y[..., t, 2 * i], a * c - b * s)
    torch.testing.assert_close(y[..., t, 2 * i + 1], a * s + b * c)
    assert list(rope.state_dict()) == [] and rope.float().cos.dtype == torch.float32


# -------------------------------------------------------------------- parameter count


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("tie, ff", [(False, None), (True, None), (False, 10)])
def test_parameter_count_formula(positions, tie, ff):
    model = TransformerLM(V, E, H, 3, CONTEXT, positions, ff_dim=ff, tie_weights=tie)
    n = sum(p.numel() for p in model.parameters())
    assert n == count_parameters(V, E, 3, CONTEXT, positions, ff, tie)
    blocks = 3 * (12 * E**2 + 13 * E) if ff is None else None
    if blocks is not None:
        expected = V * E + blocks + 2 * E + (0 if tie else V * E) + (CONTEXT * E if positions == "learned" else 0)
        assert n == expected
    assert (model.head.weight is model.token_embedding.weight) == tie


def test_gpt2_initialisation_and_gradients_reach_every_parameter():
    model = make_lm("learned", dropout=0.1).train()
    w = model.blocks[0].linear2.weight
    assert abs(w.std().item() - 0.02 / (2 * L) ** 0.5) < 0.004
    ids = random_ids()
    nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.zeros(2, CONTEXT + 1, dtype=torch.long)), r"ids has T=13 positions, more than the context of 12"),
        (lambda m: m(torch.zeros(5, dtype=torch.long)), r"ids must have 2 dimensions \(B, T\), got shape \(5,\)"),
        (lambda m: m(torch.zeros(2, 3)), r"ids must hold integer token ids, got dtype torch.float64"),
        (lambda m: m(torch.full((2, 3), V)), r"ids must hold token ids in 0..10 \(vocab_size 11\)"),
        (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), r"at least one token per sequence, got shape \(2, 0\)"),
        (
            lambda m: m(torch.zeros(2, 3, dtype=torch.long), m.new_cache(3)),
            r"cache holds batch_size=3 sequences, but ids has B=2 \(shape \(2, 3\)\)",
        ),
        (lambda m: m(torch.zeros(2, 3, dtype=torch.long), KVCache(3, 2)), r"cache has 3 layers, the model 2"),
        (lambda m: m.step(torch.zeros(2, 1, dtype=torch.long), m.new_cache(2)), r"token must have 1 dimensions \(B,\)"),
        (lambda m: m.generate(torch.zeros(1, 4, dtype=torch.long), 10), r"feed 13 positions to the model, more than its context of 12"),
        (lambda m: m.generate(torch.zeros(1, 4, dtype=torch.long), -1), r"length must be an int >= 0, got -1"),
        (lambda m: m.generate(torch.zeros(1, 4, dtype=torch.long), 2, temperature=0), r"temperature must be a number > 0, got 0"),
        (lambda m: m.generate(torch.zeros(1, 4, dtype=torch.long), 2, top_k=12), r"top_k must be None or an int in 1..11"),
        (lambda m: m.generate(torch.zeros(4, dtype=torch.long), 2), r"prompt_ids must have 2 dimensions \(B, P\)"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_lm())


def test_cache_errors_after_use():
    model = make_lm()
    cache = model.new_cache(1)
    model(torch.zeros(1, 10, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"ids has T=3 positions after 10 cached positions, more than the context of 12"):
        model(torch.zeros(1, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"cache holds torch.float64 tensors, the model is torch.float32"):
        model.float()(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(TypeError, match=r"cache must be a KVCache or None, got list"):
        model(torch.zeros(1, 1, dtype=torch.long), [])


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"positions must be one of \['learned', 'sinusoidal', 'rotary'\], got 'alibi'"):
        TransformerLM(V, E, H, L, CONTEXT, "alibi")
    with pytest.raises(ValueError, match=r"embed_dim must be divisible by num_heads, got embed_dim=8, num_heads=3"):
        TransformerLM(V, E, 3, L, CONTEXT)
    with pytest.raises(ValueError, match=r"rotary embedding needs an even head_dim .* got head_dim=3"):
        TransformerLM(V, 6, 2, L, CONTEXT, "rotary")
    with pytest.raises(ValueError, match=r"context must be a positive int, got 0"):
        TransformerLM(V, E, H, L, 0)
    rope = RotaryEmbedding(4, 5)
    with pytest.raises(ValueError, match=r"positions 3..5 exceed max_len=5 of the rotary embedding"):
        rope(torch.randn(3, 4), offset=3)
    with pytest.raises(ValueError, match=r"x must have size 4 in dimension -1 \(head_dim\)"):
        rope(torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"x must have size 8 in dimension -1 \(embed_dim\)"):
        DecoderBlock(8, 2)(torch.randn(1, 3, 6))


# ---------------------------------------------------------------------------- generation


@pytest.mark.parametrize("positions", POSITIONS)
def test_generate_is_deterministic_and_the_cache_changes_no_token(positions):
    model = make_lm(positions, seed=5).train()
    prompt = random_ids(B=2, T=3, seed=6)

    def run(use_cache, temperature=1.0, top_k=None):
        gen = torch.Generator().manual_seed(42)
        return model.generate(prompt, 9, temperature, top_k, gen, use_cache=use_cache)

    out = run(True)
    assert out.shape == (2, 12) and torch.equal(out[:, :3], prompt)
    assert model.training  # mode restored
    assert torch.equal(out, run(True))
    assert torch.equal(out, run(False))
    assert torch.equal(run(True, 0.7, 3), run(False, 0.7, 3))
    # top_k=1 is greedy: every new token is the argmax of the full pass over what came before
    greedy = run(True, top_k=1)
    with torch.no_grad():
        logits = model.eval()(greedy[:, :-1])
    assert torch.equal(greedy[:, 3:], logits[:, 2:].argmax(-1))
    assert torch.equal(model.generate(prompt, 0), prompt)
