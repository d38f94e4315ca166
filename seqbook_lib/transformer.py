"""The Transformer encoder (Vaswani et al. 2017): positions, layers, a
stack of them, a classifier.

* :class:`SinusoidalPositionalEncoding` -- fixed sin/cos position signals added
  to the embeddings, since attention itself ignores order.
* :class:`TransformerLayerBase` -- the submodules every Transformer layer
  has, with torch's names: attention, the feed-forward block, one LayerNorm
  and one Dropout per sub-layer (the decoder layers of
  :mod:`seqbook_lib.encoder_decoder` and :mod:`seqbook_lib.causal_lm` are
  built on it too).
* :class:`TransformerEncoderLayer` -- self-attention and a feed-forward block,
  each wrapped in a residual connection and layer norm; interchangeable with
  ``torch.nn.TransformerEncoderLayer``.
* :class:`LayerStack` -- N copies of a layer and an optional final
  LayerNorm; :class:`TransformerEncoder` is the stack of encoder layers,
  interchangeable with ``torch.nn.TransformerEncoder``.
* :class:`TransformerClassifier` -- token ids -> embeddings + positions -> N
  encoder layers -> masked mean (or CLS) pooling -> class logits.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_bool_mask,
    check_choice,
    check_lengths,
    check_positive_int,
    check_probability,
    check_rank,
    check_size,
    check_token_batch,
)
from .attention import MultiHeadAttention, padding_mask

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class SinusoidalPositionalEncoding(nn.Module):
    """Add the fixed position signal of Vaswani et al. (2017) to (B, T, E)
    embeddings.

        PE(t, 2i)   = sin(t / 10000^(2i / E))
        PE(t, 2i+1) = cos(t / 10000^(2i / E))

    Each pair of features is a clock of its own frequency, from one turn per
    2*pi positions (i = 0) down to one turn per 10000 * 2*pi positions, so
    PE(t + k) is a fixed linear function (a rotation) of PE(t).

    The table ``pe`` (max_len, E) is a non-persistent buffer: it moves with
    ``.to()`` but is not saved in the state dict (it is recomputed, not
    learnt).
    ``forward`` returns ``dropout(x + PE[:T])``.
    """

    def __init__(
        self, d_model: int, max_len: int = 5000, dropout: float = 0.0
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("max_len", max_len)
        check_probability("dropout", dropout)
        self.d_model, self.max_len = d_model, max_len
        self.dropout = nn.Dropout(dropout)
        # t    (T, 1)
        position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        # 2i    (ceil(E/2),)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
        # t / 10000^(2i/E)    (T, ceil(E/2))
        angle = position / 10000.0 ** (two_i / d_model)
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(angle)  # even features
        # odd features (one fewer when E is odd)
        pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
        pe = pe.to(torch.get_default_dtype())
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, E) or (T, E) -> x + PE[:T], same shape."""
        check_rank("x", x, (2, 3), "(B, T, E) or (T, E)")
        check_size("x", x, -1, self.d_model, "d_model")
        T = x.shape[-2]
        if T > self.max_len:
            raise ValueError(
                f"sequence length T={T} exceeds max_len={self.max_len} of "
                f"the positional encoding (input shape {tuple(x.shape)}); "
                "build it with a larger max_len"
            )
        return self.dropout(x + self.pe[:T].to(x.dtype))  # (B, T, E) + (T, E)


def _activation(activation):
    """'relu', 'gelu' or a callable -> the function."""
    if isinstance(activation, str):
        check_choice("activation", activation, list(_ACTIVATIONS))
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(
            "activation must be 'relu', 'gelu' or a callable, "
            f"got {type(activation).__name__}"
        )
    return activation


class TransformerLayerBase(nn.Module):
    """The submodules of a Transformer layer, with torch's names, made in
    torch's order (one seed, the same weights as torch's layer):

        <attentions>     a MultiHeadAttention for each name in the class's
                         ``attentions``: ("self_attn",) for an encoder layer,
                         ("self_attn", "multihead_attn") for a decoder layer
        linear1, dropout, linear2
                         FFN(x) = linear2(dropout(activation(linear1(x))))
        norm1 .. norm<n>, dropout1 .. dropout<n>
                         one LayerNorm and one Dropout per sub-layer,
                         n = len(attentions) + 1 (the attentions and FFN)

    plus ``activation``, ``norm_first`` and ``attn_weights`` (None until a
    forward call keeps weights). The arguments are those of
    ``torch.nn.TransformerEncoderLayer``; a subclass adds ``forward``.
    """

    attentions: tuple[str, ...] = ("self_attn",)

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        *,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("dim_feedforward", dim_feedforward)
        check_probability("dropout", dropout)
        activation = _activation(activation)
        factory = {"device": device, "dtype": dtype}
        for name in self.attentions:
            attention = MultiHeadAttention(
                d_model, nhead, dropout, bias, batch_first=batch_first,
                **factory,
            )
            setattr(self, name, attention)
        E, ff = d_model, dim_feedforward
        self.linear1 = nn.Linear(E, ff, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff, E, bias=bias, **factory)
        self.norm_first = norm_first
        sublayers = range(1, len(self.attentions) + 2)  # 1 .. n
        for i in sublayers:
            norm = nn.LayerNorm(E, eps=layer_norm_eps, bias=bias, **factory)
            setattr(self, f"norm{i}", norm)
        for i in sublayers:
            setattr(self, f"dropout{i}", nn.Dropout(dropout))
        self.activation = activation
        self.attn_weights: torch.Tensor | None = None


class TransformerEncoderLayer(TransformerLayerBase):
    """Self-attention and feed-forward, each with residual and LayerNorm,
    like torch's layer.

    Post-norm (``norm_first=False``, the 2017 paper):

        x = LayerNorm1(x + Dropout1(SelfAttention(x)))
        x = LayerNorm2(x + Dropout2(FFN(x)))

    Pre-norm (``norm_first=True``, easier to train deep):

        x = x + Dropout1(SelfAttention(LayerNorm1(x)))
        x = x + Dropout2(FFN(LayerNorm2(x)))

    with FFN(x) = linear2(Dropout(activation(linear1(x)))). The submodules
    carry torch's names -- ``self_attn`` (our :class:`MultiHeadAttention`),
    ``linear1``, ``linear2``, ``norm1``, ``norm2``, ``dropout``,
    ``dropout1``, ``dropout2`` -- so state dicts load both ways.

    **batch_first defaults to True** (torch's default is False). Arguments
    after ``activation`` are keyword-only; the first five match torch's
    positions.

    Attention weights: ``forward(..., need_weights=True)`` stores the per-head
    weights of this call, detached, in ``self.attn_weights`` (B, h, T, T), for
    plotting; otherwise ``attn_weights`` is None. The return value is always
    torch's: the output tensor alone.
    """

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> torch.Tensor:
        """src (B, T, E) -> (B, T, E); the masks are those of
        :class:`MultiHeadAttention`.

        ``src_mask`` (T, T) or (B*h, T, T) and ``src_key_padding_mask``
        (B, T): bool with **True = may NOT attend** (torch's convention), or
        float added.
        ``is_causal`` is torch's hint (needs ``src_mask``).
        """
        x = src
        attn_args = (src_mask, src_key_padding_mask, is_causal, need_weights)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), *attn_args)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, *attn_args))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(
        self, x, attn_mask, key_padding_mask, is_causal, need_weights
    ):
        """Dropout1(SelfAttention(x)); keeps the per-head weights when
        asked."""
        out, weights = self.self_attn(
            x,
            x,
            x,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=False,
            is_causal=is_causal,
        )
        # (B, h, T, T)
        self.attn_weights = None if weights is None else weights.detach()
        return self.dropout1(out)

    def _ff_block(self, x):
        """Dropout2(linear2(Dropout(activation(linear1(x))))): position-wise,
        (B, T, E) -> (B, T, E)."""
        hidden = self.dropout(self.activation(self.linear1(x)))  # (B, T, F)
        return self.dropout2(self.linear2(hidden))


class LayerStack(nn.Module):
    """``num_layers`` copies of one layer and an optional final LayerNorm,
    the frame of torch's Transformer stacks: submodules ``layers.0`` ..
    ``layers.{N-1}`` and ``norm`` (None for none).

    The copies are independent (``copy.deepcopy``, as in torch): they start
    equal, and training makes them differ.
    """

    def __init__(
        self, layer: nn.Module, num_layers: int, norm: nn.Module | None = None
    ):
        super().__init__()
        check_positive_int("num_layers", num_layers)
        self.layers = nn.ModuleList(
            copy.deepcopy(layer) for _ in range(num_layers)
        )
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """norm(layer_N(... layer_1(x, *args, **kwargs) ..., *args,
        **kwargs)): the same extra arguments go to every layer."""
        for layer in self.layers:
            x = layer(x, *args, **kwargs)
        return x if self.norm is None else self.norm(x)


class TransformerEncoder(LayerStack):
    """N encoder layers and an optional final LayerNorm, like
    ``torch.nn.TransformerEncoder`` (``layers.0`` .. ``layers.{N-1}``,
    ``norm``):

        x = norm(layer_N(... layer_1(src)))
    """

    def __init__(
        self,
        encoder_layer: nn.Module,
        num_layers: int,
        norm: nn.Module | None = None,
    ):
        super().__init__(encoder_layer, num_layers, norm)

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor:
        """src (B, S, E) -> (B, S, E); the masks go to every layer.
        With ``need_weights`` each layer keeps its ``attn_weights``."""
        return super().forward(
            src,
            src_mask=mask,
            src_key_padding_mask=src_key_padding_mask,
            is_causal=bool(is_causal),
            need_weights=need_weights,
        )


class TransformerClassifier(nn.Module):
    """A Transformer encoder that reads token ids and predicts one class per
    sequence.

        x = Embedding(tokens) * sqrt(E) + PE          (B, T, E)
        x = EncoderLayer_N(... EncoderLayer_1(x))      padding keys masked out
        z = mean of x over the real tokens            (pooling="mean")
          or x at a learnt CLS token put in front     (pooling="cls")
        logits = z W^T + b                             (B, num_classes)

    The encoder layers are post-norm :class:`TransformerEncoderLayer` s with
    batch_first=True and ReLU. Which tokens are real: pass ``lengths`` (B,),
    or a boolean ``mask`` (B, T) with **True = real token** (as
    :func:`padding_mask` builds it); with neither, every token different from
    ``pad_idx`` is real.
    Padding never influences the logits: padded keys get attention weight 0 and
    padded positions are left out of the pooling.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        num_classes: int,
        dim_feedforward: int,
        dropout: float,
        max_len: int,
        pad_idx: int = 0,
        pooling: str = "mean",
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("num_layers", num_layers),
            ("num_classes", num_classes),
            ("max_len", max_len),
        ):
            check_positive_int(name, value)
        check_choice("pooling", pooling, ["mean", "cls"])
        if not isinstance(pad_idx, int) or not 0 <= pad_idx < vocab_size:
            raise ValueError(
                f"pad_idx must be an int in 0..{vocab_size - 1}, "
                f"got {pad_idx!r}"
            )
        self.vocab_size, self.d_model = vocab_size, d_model
        self.max_len = max_len
        self.pad_idx, self.pooling = pad_idx, pooling
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_idx)
        if pooling == "cls":
            self.cls_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        positions = max_len + (pooling == "cls")  # room for the CLS token
        self.pos_encoding = SinusoidalPositionalEncoding(
            d_model, positions, dropout
        )
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                d_model, nhead, dim_feedforward, dropout, batch_first=True
            )
            for _ in range(num_layers)
        )
        self.head = nn.Linear(d_model, num_classes)

    def forward(
        self, tokens, lengths=None, mask=None, need_weights: bool = False
    ):
        """tokens (B, T) -> logits (B, num_classes).

        With ``need_weights=True`` returns ``(logits, weights)``, ``weights``
        (B, num_layers, h, T', T') detached, per layer and head, T' = T (+1 for
        the CLS token, at position 0). Rows sum to 1 over the real tokens (in
        eval mode; dropout in training mode rescales them).
        """
        # (B, T), True = real token
        keep = self._token_mask(tokens, lengths, mask)
        x = self.embedding(tokens) * math.sqrt(self.d_model)  # (B, T, E)
        if self.pooling == "cls":
            B = tokens.shape[0]
            cls = self.cls_token.expand(B, 1, -1)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + T, E)
            # the CLS token is always real
            keep = torch.cat([keep.new_ones(B, 1), keep], dim=1)
        x = self.pos_encoding(x)
        # nn.MultiheadAttention's convention: True = ignore this key
        ignore = ~keep
        weights = []
        for layer in self.layers:
            x = layer(
                x, src_key_padding_mask=ignore, need_weights=need_weights
            )
            weights.append(layer.attn_weights)
        logits = self.head(self._pool(x, keep))  # (B, E) -> (B, num_classes)
        if need_weights:
            # (B, num_layers, h, T', T')
            return logits, torch.stack(weights, dim=1)
        return logits

    def _pool(self, x, keep):
        """The CLS position, or the mean over the real tokens:
        (B, T, E) -> (B, E)."""
        if self.pooling == "cls":
            return x[:, 0]
        # (B, T, 1): 1 for real tokens, 0 for padding
        w = keep.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(dim=1) / w.sum(dim=1)  # sum_t w_t x_t / sum_t w_t

    def _token_mask(self, tokens, lengths, mask) -> torch.Tensor:
        """The (B, T) boolean mask of real tokens, from lengths, mask, or
        pad_idx."""
        check_token_batch("tokens", tokens, self.vocab_size, self.max_len)
        B, T = tokens.shape
        if lengths is not None and mask is not None:
            raise ValueError("give lengths or mask, not both")
        if lengths is not None:
            check_lengths(lengths, B, T)
            return padding_mask(lengths, T, device=tokens.device)
        if mask is None:
            mask = tokens != self.pad_idx
        else:
            meaning = "True = real token"
            check_bool_mask("mask", mask, (B, T), "(B, T)", meaning)
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"sequences {empty} have no real token (all padding); "
                "every sequence needs one"
            )
        return mask
