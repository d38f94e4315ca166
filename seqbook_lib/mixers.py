"""One model, its sequence layer swapped: residual stacks of token mixers.

Part V compares recurrent layers, linear attention, a selective state-space
layer and softmax attention inside the same network, so that the layer that
mixes information across time is the only thing that differs:

    x_0    = Emb[ids]                                        (B, T, d)
    x_l'   = x_{l-1} + Mixer_l(LN_1(x_{l-1}))                across time
    x_l    = x_l' + MLP(LN_2(x_l')),  MLP(z) = W_2 GELU(W_1 z)  per position
    logits = LN_f(x_L) W_head^T                              (B, T, V)

Every mixer maps (B, T, d) -> (B, T, d) and is causal (output t depends on
inputs 0..t only), so the same model is a language model or a tagger:

    "lstm", "gru"          torch.nn.LSTM / torch.nn.GRU, hidden size d
    "mingru", "minlstm"    :mod:`seqbook_lib.minrnn`, hidden size d (scan)
    "linear"               :class:`~seqbook_lib.linear_attention.LinearAttention`
    "mamba"                :class:`~seqbook_lib.ssm.MambaBlock` (S6 inside)
    "attention"            causal softmax attention with rotary positions
                           (:func:`~seqbook_lib.causal_lm.causal_self_attention`)

Only softmax attention gets positions (rotary, in the scores): the
recurrent layers and the SSM's convolution see order by construction, and
linear attention has none, as in Katharopoulos et al. (2020).

- :class:`RecurrentMixer`, :class:`AttentionMixer` -- adapters to (B, T, d).
- :func:`make_mixer` -- a mixer by kind.
- :class:`MixerBlock` -- one pre-norm residual block.
- :class:`MixerLM` -- embedding, blocks, final norm, head.
- :func:`width_for` -- the widest model of a kind within a parameter budget.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_positive_int,
    check_rank,
    check_token_ids,
)
from .attention import MultiHeadAttention
from .causal_lm import RotaryEmbedding, causal_self_attention
from .linear_attention import LinearAttention
from .minrnn import MinGRU, MinLSTM
from .ssm import MambaBlock

__all__ = [
    "KINDS",
    "RecurrentMixer",
    "AttentionMixer",
    "make_mixer",
    "MixerBlock",
    "MixerLM",
    "width_for",
]

KINDS = ("lstm", "gru", "mingru", "minlstm", "linear", "mamba", "attention")
RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "mingru": MinGRU,
             "minlstm": MinLSTM}


class RecurrentMixer(nn.Module):
    """A recurrent layer of hidden size d as a mixer: keeps its output
    sequence, drops the final state. (B, T, d) -> (B, T, d)."""

    def __init__(self, kind: str, d_model: int):
        super().__init__()
        check_choice("kind", kind, tuple(RECURRENT))
        extra = {"batch_first": True} if kind in ("lstm", "gru") else {}
        self.kind = kind
        self.rnn = RECURRENT[kind](d_model, d_model, **extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, d)
        return out


class AttentionMixer(nn.Module):
    """Causal multi-head softmax self-attention; ``rotary=True`` turns q and
    k by their positions (up to ``max_len``). (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, num_heads: int, max_len: int,
                 rotary: bool = True):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads)
        head_dim = d_model // num_heads
        self.rotary = RotaryEmbedding(head_dim, max_len) if rotary else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_self_attention(self.attn, x, self.rotary,
                                     training=self.training)


def make_mixer(kind: str, d_model: int, *, num_heads: int = 2,
               d_state: int = 16, max_len: int = 1024) -> nn.Module:
    """The mixer ``kind`` (one of :data:`KINDS`) of width ``d_model``;
    ``num_heads`` for the attentions, ``d_state`` for the SSM, ``max_len``
    for the rotary table."""
    check_choice("kind", kind, KINDS)
    check_positive_int("d_model", d_model)
    if kind in RECURRENT:
        return RecurrentMixer(kind, d_model)
    if kind == "linear":
        return LinearAttention(d_model, num_heads)
    if kind == "mamba":
        return MambaBlock(d_model, d_state=d_state)
    if d_model % (2 * num_heads):
        raise ValueError(
            "softmax attention with rotary positions needs d_model divisible "
            f"by 2 * num_heads, got d_model={d_model}, num_heads={num_heads}"
        )
    return AttentionMixer(d_model, num_heads, max_len)


class MixerBlock(nn.Module):
    """x = x + Mixer(LN_1(x)); x = x + MLP(LN_2(x)), MLP of width
    ``mlp_ratio * d`` with GELU. (B, T, d) -> (B, T, d)."""

    def __init__(self, kind: str, d_model: int, mlp_ratio: int = 2,
                 **mixer_kwargs):
        super().__init__()
        check_positive_int("mlp_ratio", mlp_ratio)
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = make_mixer(kind, d_model, **mixer_kwargs)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, mlp_ratio * d_model)
        self.linear2 = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))  # across time
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class MixerLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, vocab_size): embedding,
    ``num_layers`` :class:`MixerBlock` s of one ``kind``, final LayerNorm and
    a linear head. Output t sees tokens 0..t."""

    def __init__(self, kind: str, vocab_size: int, d_model: int,
                 num_layers: int = 2, mlp_ratio: int = 2, **mixer_kwargs):
        super().__init__()
        check_choice("kind", kind, KINDS)
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("num_layers", num_layers)
        self.kind, self.vocab_size, self.d_model = kind, vocab_size, d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            MixerBlock(kind, d_model, mlp_ratio, **mixer_kwargs)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        check_rank("ids", ids, (2,), "(B, T)")
        check_token_ids("ids", ids, self.vocab_size)
        if ids.shape[1] == 0:
            raise ValueError("ids must have at least one time step (T >= 1 "
                             f"in (B, T)), got shape {tuple(ids.shape)}")
        x = self.embedding(ids)  # (B, T, d)
        for block in self.blocks:
            x = block(x)  # (B, T, d)
        return self.head(self.norm(x))  # (B, T, V)


def width_for(kind: str, budget: int, vocab_size: int, num_layers: int = 2,
              multiple: int = 8, **model_kwargs) -> int:
    """The largest width d (a multiple of ``multiple``) whose
    :class:`MixerLM` of this ``kind`` has at most ``budget`` parameters:
    the way Part V gives every architecture the same budget."""
    check_positive_int("budget", budget)
    check_positive_int("multiple", multiple)

    def size(d):
        model = MixerLM(kind, vocab_size, d, num_layers, **model_kwargs)
        return sum(p.numel() for p in model.parameters())

    if size(multiple) > budget:
        raise ValueError(
            f"budget={budget} is too small for a {kind!r} model: the "
            f"narrowest one (d_model={multiple}) has {size(multiple)} "
            f"parameters"
        )
    d = multiple
    while size(d + multiple) <= budget:
        d += multiple
    return d
