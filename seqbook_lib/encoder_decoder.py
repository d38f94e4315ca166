"""The Transformer encoder-decoder (Vaswani et al. 2017): a decoder layer,
the two stacks, and a model for translation-like tasks.

The encoder reads the whole source at once; the decoder writes the target
one token at a time, attending to what it wrote (causally) and to the
encoder's output, the *memory*:

    memory = Encoder(Emb_src[x] * sqrt(E) + PE)                (B, S, E)
    y      = Decoder(Emb_tgt[y_in] * sqrt(E) + PE, memory)     (B, T, E)
    logits = y W_o^T + b_o                                     (B, T, V)

A decoder layer (post-norm, ``norm_first=False``, as in the paper):

    x = LayerNorm1(x + Dropout1(SelfAttention(x)))       query t: keys <= t
    x = LayerNorm2(x + Dropout2(CrossAttention(x, memory)))  real keys only
    x = LayerNorm3(x + Dropout3(FFN(x)))

and pre-norm (``norm_first=True``): x = x + Dropout(Sublayer(LayerNorm(x)))
for each of the three. Cross-attention takes its queries from the decoder
and its keys and values from the memory; source padding is masked out of
its keys.

- :class:`TransformerDecoderLayer` -- interchangeable with
  ``torch.nn.TransformerDecoderLayer``; its submodules are those of
  :class:`~seqbook_lib.transformer.TransformerLayerBase`.
- :class:`TransformerDecoder` -- N copies of a decoder layer and an optional
  final LayerNorm, like torch's stack; the encoder's stack is
  :class:`seqbook_lib.transformer.TransformerEncoder` (re-exported here).
- :class:`Transformer` -- both stacks, interchangeable with
  ``torch.nn.Transformer`` (which always has the final norms;
  ``final_norm=False`` drops them).
- :class:`TransformerSeq2Seq` -- embeddings, positions, the Transformer and
  a read-out, with the interface of :class:`seqbook_lib.seq2seq.Seq2Seq`:
  teacher-forced ``forward``, and ``greedy_decode`` and ``beam_search``
  returning :class:`~seqbook_lib.seq2seq.Hypothesis` objects -- Seq2Seq's
  own generation code, run on the same step interface.

Masks follow ``torch.nn.MultiheadAttention``: boolean **True = may NOT
attend** (see :mod:`seqbook_lib.attention`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from ._checks import (
    check_index,
    check_lengths,
    check_positive_int,
    check_rank,
    check_token_batch,
    check_token_ids,
    shape_str,
)
from .attention import causal_mask, padding_mask
from .seq2seq import Seq2Seq
from .transformer import (
    LayerStack,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
    TransformerLayerBase,
)

__all__ = [
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
    "TransformerSeq2Seq",
    "label_smoothed_cross_entropy",
]


# ---------------------------------------------------------- the decoder layer


class TransformerDecoderLayer(TransformerLayerBase):
    """Self-attention, cross-attention and feed-forward, each with residual
    and LayerNorm, like ``torch.nn.TransformerDecoderLayer``.

    Post-norm (``norm_first=False``)::

        x = norm1(x + dropout1(self_attn(x, x, x)))
        x = norm2(x + dropout2(multihead_attn(x, memory, memory)))
        x = norm3(x + dropout3(FFN(x)))

    Pre-norm (``norm_first=True``)::

        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(multihead_attn(norm2(x), memory, memory))
        x = x + dropout3(FFN(norm3(x)))

    with FFN(x) = linear2(dropout(activation(linear1(x)))). The submodules
    carry torch's names, in torch's order -- ``self_attn`` and
    ``multihead_attn`` (our :class:`MultiHeadAttention`), ``linear1``,
    ``dropout``, ``linear2``, ``norm1``..``norm3``,
    ``dropout1``..``dropout3`` -- so state dicts load both ways.

    **batch_first defaults to True** (torch's default is False); arguments
    after ``activation`` are keyword-only.

    ``forward(..., need_weights=True)`` keeps the per-head weights of the
    call, detached: ``attn_weights`` (B, h, T, T) of the self-attention and
    ``cross_attn_weights`` (B, h, T, S) of the cross-attention; otherwise
    both are None. The return value is torch's: the output tensor alone.
    """

    attentions = ("self_attn", "multihead_attn")
    # (B, h, T, S), kept by forward(..., need_weights=True)
    cross_attn_weights: torch.Tensor | None = None

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
        need_weights: bool = False,
    ) -> torch.Tensor:
        """tgt (B, T, E), memory (B, S, E) -> (B, T, E).

        ``tgt_mask`` (T, T) and ``memory_mask`` (T, S) (or (B*h, ., .)),
        ``tgt_key_padding_mask`` (B, T), ``memory_key_padding_mask``
        (B, S): bool with **True = may NOT attend**, or float added, as in
        :class:`MultiHeadAttention`. ``tgt_is_causal`` and
        ``memory_is_causal`` are torch's hints (they need the mask too).
        """
        x = tgt
        # torch's stacks pass tgt_is_causal=None for "not said"
        self_args = (tgt_mask, tgt_key_padding_mask, bool(tgt_is_causal))
        cross_args = (
            memory, memory_mask, memory_key_padding_mask, memory_is_causal
        )
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), *self_args, need_weights)
            x = x + self._mha_block(self.norm2(x), *cross_args, need_weights)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, *self_args, need_weights))
            x = self.norm2(x + self._mha_block(x, *cross_args, need_weights))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, weights):
        """dropout1(SelfAttention(x)), (B, T, E) -> (B, T, E)."""
        out, self.attn_weights = _attend(  # (B, h, T, T)
            self.self_attn, x, x, attn_mask, key_padding_mask, is_causal,
            weights,
        )
        return self.dropout1(out)

    def _mha_block(
        self, x, memory, attn_mask, key_padding_mask, is_causal, weights
    ):
        """dropout2(CrossAttention(x, memory)), (B, T, E) -> (B, T, E)."""
        out, self.cross_attn_weights = _attend(  # (B, h, T, S)
            self.multihead_attn, x, memory, attn_mask, key_padding_mask,
            is_causal, weights,
        )
        return self.dropout2(out)

    def _ff_block(self, x):
        """dropout3(linear2(dropout(activation(linear1(x))))),
        position-wise."""
        hidden = self.dropout(self.activation(self.linear1(x)))  # (B, T, F)
        return self.dropout3(self.linear2(hidden))


def _attend(attn, x, memory, attn_mask, key_padding_mask, is_causal, weights):
    """attn(x, memory, memory) with torch's arguments (memory = x for
    self-attention) -> (output (B, T, E), per-head weights (B, h, T, S)
    detached, or None unless ``weights``)."""
    out, w = attn(
        x, memory, memory, key_padding_mask, weights, attn_mask,
        average_attn_weights=False, is_causal=is_causal,
    )
    return out, None if w is None else w.detach()


# ------------------------------------------------------------------ the stacks


class TransformerDecoder(LayerStack):
    """N decoder layers and an optional final LayerNorm, like
    ``torch.nn.TransformerDecoder`` (``layers.0`` .. ``layers.{N-1}``,
    ``norm``); every layer reads the same memory:

        x = norm(layer_N(... layer_1(tgt, memory) ..., memory))

    ``forward(tgt, memory, ...)`` takes the arguments of
    :meth:`TransformerDecoderLayer.forward` (torch's names and order) and
    gives them to every layer: tgt (B, T, E), memory (B, S, E)
    -> (B, T, E). With ``need_weights=True`` each layer keeps its
    ``attn_weights`` and ``cross_attn_weights``.
    """

    def __init__(self, decoder_layer, num_layers: int, norm=None):
        super().__init__(decoder_layer, num_layers, norm)


class Transformer(nn.Module):
    """The encoder and decoder stacks, interchangeable with
    ``torch.nn.Transformer``:

        memory = encoder(src)                (B, S, E)
        output = decoder(tgt, memory)        (B, T, E)

    Same arguments (the first seven in torch's order; the rest
    keyword-only: ``final_norm`` and, in ``layer_options``, those of the
    layers -- ``layer_norm_eps``, ``batch_first``, ``norm_first``,
    ``bias``, ``device``, ``dtype``, see
    :class:`~seqbook_lib.transformer.TransformerLayerBase`), same parameter
    names (``encoder.layers.i...``, ``encoder.norm``,
    ``decoder.layers.i...``, ``decoder.norm``) and torch's initialisation:
    Xavier-uniform for every matrix. No embeddings, no positions, no
    read-out -- those are :class:`TransformerSeq2Seq`'s.

    torch always ends each stack with a LayerNorm; that is right for
    pre-norm layers, whose output is otherwise unnormalised, and an extra
    one after post-norm layers. ``final_norm=False`` leaves both out (then
    ``encoder.norm`` and ``decoder.norm`` are None, as in torch's stacks
    built with ``norm=None``). **batch_first defaults to True.**
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        *,
        final_norm: bool = True,
        **layer_options,
    ):
        super().__init__()
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation)
        encoder_layer = TransformerEncoderLayer(*layer_args, **layer_options)
        decoder_layer = TransformerDecoderLayer(*layer_args, **layer_options)

        def final(layer):
            """A fresh LayerNorm like the new layer's own (same eps, bias,
            device and dtype), or None."""
            return copy.deepcopy(layer.norm1) if final_norm else None

        self.encoder = TransformerEncoder(
            encoder_layer, num_encoder_layers, final(encoder_layer)
        )
        self.decoder = TransformerDecoder(
            decoder_layer, num_decoder_layers, final(decoder_layer)
        )
        self.d_model, self.nhead = d_model, nhead
        self.batch_first = encoder_layer.self_attn.batch_first
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> torch.Tensor:
        """src (B, S, E), tgt (B, T, E) -> (B, T, E); the masks as in
        torch (True = may NOT attend)."""
        memory = self.encoder(
            src,
            mask=src_mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=src_is_causal,
        )  # (B, S, E)
        return self.decoder(  # (B, T, E); the arguments in torch's order
            tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
            memory_key_padding_mask, tgt_is_causal, memory_is_causal,
        )


# ----------------------------------------------------------------- the model


class TransformerSeq2Seq(nn.Module):
    """A Transformer encoder-decoder over token ids, with the interface of
    :class:`~seqbook_lib.seq2seq.Seq2Seq`:

        memory = Encoder(Emb_src[src] * sqrt(E) + PE)     padding masked
        y      = Decoder(Emb_tgt[tgt_in] * sqrt(E) + PE, memory)
        logits = head(y)                                  (B, T, V_tgt)

    The stacks are a :class:`Transformer` (``self.transformer``, post-norm
    unless ``norm_first``, ReLU unless ``activation``), positions one
    :class:`SinusoidalPositionalEncoding` shared by both sides, with
    ``dropout`` on the sums. Every matrix starts Xavier-uniform (the
    embeddings too, so that after the factor sqrt(E) they match the
    positions' scale); the padding rows of the embeddings start at 0.
    ``tie_weights=True`` shares ``head.weight`` with the target embedding.

    Teacher forcing: ``forward(src, src_lengths, tgt_in)`` with
    ``tgt_in = BOS y_1 .. y_{T-1}`` returns ``(logits, weights)``, the
    logits of y_1 .. y_T; ``weights`` is None unless ``need_weights``.
    The decoder needs no target padding mask: padding comes after EOS, and
    the causal mask already keeps the real positions from seeing it.

    Generation: ``greedy_decode`` and ``beam_search`` are Seq2Seq's own,
    which need of a model only its step interface, offered here too:

        encoder(src, src_lengths)         -> memory, mask, state
        decoder(token, state, memory, mask) -> logits, state, weights

    The state of a sequence is the target ids fed so far; each step runs
    the decoder over all of them (no cache: the targets here are short).
    The :class:`~seqbook_lib.seq2seq.Hypothesis` objects' ``attention``
    (len(tokens), S_b) is the cross-attention of the last decoder layer,
    averaged over its heads. Generation leaves the train/eval mode alone:
    call ``model.eval()`` first.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        embed_dim: int,
        num_heads: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        ff_dim: int,
        dropout: float = 0.1,
        pad_idx: int = 0,
        *,
        bos_idx: int,
        eos_idx: int,
        max_len: int = 256,
        norm_first: bool = False,
        activation="relu",
        final_norm: bool = True,
        tie_weights: bool = False,
    ):
        super().__init__()
        for name, value in (
            ("src_vocab", src_vocab),
            ("tgt_vocab", tgt_vocab),
            ("embed_dim", embed_dim),
            ("max_len", max_len),
        ):
            check_positive_int(name, value)
        check_index("pad_idx", pad_idx, min(src_vocab, tgt_vocab))
        check_index("bos_idx", bos_idx, tgt_vocab)
        check_index("eos_idx", eos_idx, tgt_vocab)
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.embed_dim, self.max_len = embed_dim, max_len
        self.pad_idx, self.bos_idx, self.eos_idx = pad_idx, bos_idx, eos_idx
        E = embed_dim
        self.src_embedding = nn.Embedding(src_vocab, E, padding_idx=pad_idx)
        self.tgt_embedding = nn.Embedding(tgt_vocab, E, padding_idx=pad_idx)
        self.pos_encoding = SinusoidalPositionalEncoding(E, max_len, dropout)
        self.transformer = Transformer(
            E, num_heads, num_encoder_layers, num_decoder_layers, ff_dim,
            dropout, activation, norm_first=norm_first,
            final_norm=final_norm,
        )
        self.head = nn.Linear(E, tgt_vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.src_embedding.weight[pad_idx].zero_()
            self.tgt_embedding.weight[pad_idx].zero_()
        if tie_weights:
            self.head.weight = self.tgt_embedding.weight

    # --- the two halves ---------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths):
        """src (B, S), src_lengths (B,) -> ``(memory, padding)``:
        memory (B, S, E) and padding (B, S), **True at the padding**
        (a key_padding_mask)."""
        check_token_batch("src", src, self.src_vocab, self.max_len, "S")
        B, S = src.shape
        lengths = check_lengths(src_lengths, B, S)
        padding = ~padding_mask(lengths, S, device=src.device)  # (B, S)
        x = self._embed(self.src_embedding, src)  # (B, S, E)
        memory = self.transformer.encoder(x, src_key_padding_mask=padding)
        return memory, padding

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        padding: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        """tgt_in (B, T), memory (B, S, E), padding (B, S) or None
        -> ``(logits (B, T, V), weights)``.

        ``weights`` is None, or with ``need_weights`` the cross-attention
        weights (B, num_decoder_layers, h, T, S), detached.
        """
        check_rank("tgt_in", tgt_in, (2,), "(B, T)")
        check_token_ids("tgt_in", tgt_in, self.tgt_vocab)
        B, T = tgt_in.shape
        if T == 0 or T > self.max_len or B != memory.shape[0]:
            raise ValueError(
                f"tgt_in must have shape (B, T) with B = {memory.shape[0]} "
                f"and 1 <= T <= max_len = {self.max_len}, "
                f"got {shape_str(tgt_in.shape)}"
            )
        x = self._embed(self.tgt_embedding, tgt_in)  # (B, T, E)
        decoder = self.transformer.decoder
        y = decoder(
            x,
            memory,
            tgt_mask=~causal_mask(T, device=tgt_in.device),  # keys j > t
            memory_key_padding_mask=padding,
            tgt_is_causal=True,
            need_weights=need_weights,
        )  # (B, T, E)
        weights = None
        if need_weights:  # (B, layers, h, T, S)
            weights = torch.stack(
                [layer.cross_attn_weights for layer in decoder.layers], dim=1
            )
        return self.head(y), weights

    def _embed(self, embedding, ids):
        """dropout(Emb[ids] * sqrt(E) + PE), (B, T) -> (B, T, E)."""
        return self.pos_encoding(embedding(ids) * math.sqrt(self.embed_dim))

    # --- teacher forcing --------------------------------------------------

    def forward(
        self, src, src_lengths, tgt_in, need_weights: bool = False
    ):
        """src (B, S), src_lengths (B,), tgt_in (B, T)
        -> ``(logits (B, T, V), weights)``, weights None or
        (B, num_decoder_layers, h, T, S)."""
        memory, padding = self.encode(src, src_lengths)
        return self.decode(tgt_in, memory, padding, need_weights)

    @torch.no_grad()
    def cross_attention_weights(self, src, src_lengths, tgt_in):
        """The cross-attention weights of every decoder layer and head,
        (B, num_decoder_layers, h, T, S), under teacher forcing. Each row
        sums to 1 over the real source positions (in eval mode)."""
        return self(src, src_lengths, tgt_in, need_weights=True)[1]

    # --- generation: Seq2Seq's code on Seq2Seq's step interface -----------

    def encoder(self, src: torch.Tensor, src_lengths):
        """The start of generation, as ``Seq2Seq.encoder`` gives it:
        src (B, S), src_lengths (B,) -> ``(memory (B, S, E), mask (B, S)
        True = real token, state)``; the state is the target ids fed so
        far, none yet: (B, 0)."""
        memory, padding = self.encode(src, src_lengths)
        no_ids = src.new_zeros(src.shape[0], 0)  # (B, 0)
        return memory, ~padding, no_ids

    def decoder(self, token, state, memory, mask):
        """One generation step, as ``Seq2Seq.decoder`` takes it: token (B,)
        fed after the ids ``state`` (B, t), memory (B, S, E), mask (B, S)
        True = real token -> ``(logits (B, V), state (B, t + 1), weights
        (B, S))``.

        The decoder runs over all t + 1 ids (no cache: the targets here are
        short); ``weights`` are the new position's cross-attention in the
        last layer, averaged over its heads.
        """
        ids = torch.cat([state, token[:, None]], dim=1)  # (B, t + 1)
        logits, weights = self.decode(ids, memory, ~mask, need_weights=True)
        # weights (B, layers, h, t + 1, S) -> last layer, new position
        return logits[:, -1], ids, weights[:, -1, :, -1].mean(dim=1)

    def _check_max_len(self, max_len) -> None:
        check_positive_int("max_len", max_len)
        if max_len > self.max_len:
            raise ValueError(
                f"max_len={max_len} exceeds the model's max_len="
                f"{self.max_len} positions"
            )

    def greedy_decode(self, src, src_lengths, max_len) -> list:
        """:meth:`seqbook_lib.seq2seq.Seq2Seq.greedy_decode`: the most
        probable token at every step, one
        :class:`~seqbook_lib.seq2seq.Hypothesis` per source sentence;
        ``max_len`` at most the model's ``max_len``."""
        self._check_max_len(max_len)
        return Seq2Seq.greedy_decode(self, src, src_lengths, max_len)

    def beam_search(
        self, src, src_lengths, beam_size, max_len, length_penalty=0.0
    ) -> list:
        """:meth:`seqbook_lib.seq2seq.Seq2Seq.beam_search` (GNMT's length
        penalty, a finished hypothesis gives up its place; beam_size 1 is
        greedy decoding); ``max_len`` at most the model's ``max_len``."""
        self._check_max_len(max_len)
        return Seq2Seq.beam_search(
            self, src, src_lengths, beam_size, max_len, length_penalty
        )

    _beam_one = Seq2Seq._beam_one  # what Seq2Seq.beam_search calls


# ---------------------------------------------------------- the training loss


def label_smoothed_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    smoothing: float,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Cross-entropy against a smoothed target (Szegedy et al. 2016): the
    one-hot target y is mixed with the uniform distribution over the K
    classes,

        q_k = (1 - eps) [k = y] + eps / K,
        loss = -sum_k q_k log p_k
             = (1 - eps) (-log p_y) + eps * mean_k (-log p_k),

    averaged over the positions whose target is not ``ignore_index``.
    ``smoothing=0`` is the plain cross-entropy. Equal to
    ``F.cross_entropy(logits.transpose(1, 2), target,
    ignore_index=ignore_index, label_smoothing=eps)``.

    logits (B, T, K), target (B, T) -> a scalar.
    """
    check_rank("logits", logits, (3,), "(B, T, K)")
    if target.shape != logits.shape[:2]:
        raise ValueError(
            f"target must have shape (B, T) = {shape_str(logits.shape[:2])}, "
            f"got {shape_str(target.shape)}"
        )
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, (int, float))
        or not 0.0 <= smoothing < 1.0
    ):
        raise ValueError(
            f"smoothing must be a number in [0, 1), got {smoothing!r}"
        )
    log_p = torch.log_softmax(logits, dim=-1)  # (B, T, K)
    keep = target != ignore_index  # (B, T)
    safe = target.masked_fill(~keep, 0)  # any class; masked out below
    nll = -log_p.gather(-1, safe[..., None])[..., 0]  # (B, T): -log p_y
    uniform = -log_p.mean(dim=-1)  # (B, T): mean_k -log p_k
    per_position = (1.0 - smoothing) * nll + smoothing * uniform
    return per_position[keep].sum() / keep.sum()
