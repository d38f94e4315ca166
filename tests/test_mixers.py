"""seqbook_lib.mixers: one model with its sequence layer swapped. Every
mixer is causal; softmax attention equals torch's with copied weights; the
parameter budget is met (float64)."""

import pytest
import torch
from helpers import assert_same_forward_backward

from seqbook_lib.mixers import (
    KINDS,
    AttentionMixer,
    MixerBlock,
    MixerLM,
    make_mixer,
    width_for,
)

V, D, T = 11, 16, 9


def model(kind, seed=0, **kwargs):
    torch.manual_seed(seed)
    return MixerLM(kind, V, D, num_layers=2, max_len=64, **kwargs).double()


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_every_parameter_trains(kind):
    lm = model(kind)
    ids = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    logits = lm(ids)
    assert logits.shape == (3, T, V) and logits.dtype == torch.float64
    logits.logsumexp(-1).sum().backward()
    frozen = [n for n, p in lm.named_parameters() if p.grad is None]
    assert not frozen, f"no gradient for {frozen}"


@pytest.mark.parametrize("kind", KINDS)
def test_causal_future_tokens_change_nothing_before_them(kind):
    lm = model(kind).eval()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (2, T), generator=gen)
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % V
    with torch.no_grad():
        a, b = lm(ids), lm(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-12)
    assert (a[:, 5] - b[:, 5]).abs().max() > 1e-6  # and position 5 does see


class TorchCausalAttention(torch.nn.Module):
    """torch.nn.MultiheadAttention with a causal mask, named like ours."""

    def __init__(self, d, heads):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        blocked = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return self.attn(x, x, x, attn_mask=blocked, need_weights=False)[0]


def test_attention_without_rotary_equals_torch():
    torch.manual_seed(0)
    ours = AttentionMixer(D, 2, max_len=32, rotary=False).double()
    theirs = TorchCausalAttention(D, 2).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, T, D, dtype=torch.float64)
    assert_same_forward_backward(ours, theirs, [x])


def test_rotary_attention_is_the_language_models_attention():
    # the mixer runs the attention of seqbook_lib.causal_lm's blocks
    from seqbook_lib.causal_lm import DecoderBlock, RotaryEmbedding

    torch.manual_seed(0)
    ours = AttentionMixer(D, 2, max_len=32).double()
    block = DecoderBlock(D, 2).double()
    block.self_attn.load_state_dict(ours.attn.state_dict())
    x = torch.randn(2, T, D, dtype=torch.float64)
    rotary = RotaryEmbedding(D // 2, 32).double()
    torch.testing.assert_close(ours(x), block._attend(x, rotary, None, 0))


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_scan_and_loop_give_the_same_model(kind):
    lm = model(kind)
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(3))

    def run(mode):
        for block in lm.blocks:
            block.mixer.rnn.mode = mode
        return lm(ids)

    torch.testing.assert_close(run("parallel"), run("sequential"))


def test_block_is_the_residual_formula():
    torch.manual_seed(0)
    block = MixerBlock("gru", D).double()
    x = torch.randn(2, T, D, dtype=torch.float64)
    a = x + block.mixer.rnn(block.norm1(x))[0]
    mlp = block.linear2(torch.nn.functional.gelu(block.linear1(block.norm2(a))))
    torch.testing.assert_close(block(x), a + mlp)


@pytest.mark.parametrize("kind", KINDS)
def test_width_for_meets_the_budget(kind):
    def size(d):
        m = MixerLM(kind, V, d, num_layers=2)
        return sum(p.numel() for p in m.parameters())

    d = width_for(kind, 20_000, V)
    assert d % 8 == 0 and size(d) <= 20_000 < size(d + 8)


def test_width_for_too_small_a_budget():
    with pytest.raises(ValueError, match="too small"):
        width_for("lstm", 100, V)


def test_clear_errors():
    lm = model("gru")
    with pytest.raises(ValueError, match="kind"):
        MixerLM("transformer", V, D)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        lm(torch.zeros(T, dtype=torch.long))
    with pytest.raises(ValueError):
        lm(torch.full((1, T), V))  # token id out of range
    with pytest.raises(ValueError, match="at least one time step"):
        lm(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="2 \\* num_heads"):
        make_mixer("attention", 18, num_heads=2)
