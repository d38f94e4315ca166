"""A causal (decoder-only) Transformer language model, in the manner of GPT
and minGPT, with a KV cache for generation.

Each position t sees the tokens 1..t only, and predicts token t + 1:

    h_0    = Emb[x_t] (+ P[t])                       (B, T, E)
    a_l    = h_{l-1} + CausalSelfAttention(LN_1(h_{l-1}))
    h_l    = a_l + MLP(LN_2(a_l)),   MLP(z) = W_2 GELU(W_1 z + b_1) + b_2
    logits = LN_f(h_L) W_head^T                       (B, T, V)

with pre-norm blocks (LayerNorm before each sub-layer, as in GPT-2) and a
final LayerNorm LN_f. Where positions come in (``positions``):

* ``"learned"``: P is a trained table (context, E), as in GPT-2;
* ``"sinusoidal"``: P is the fixed table of
  :class:`~seqbook_lib.transformer.SinusoidalPositionalEncoding`;
* ``"rotary"``: no P; every block rotates its queries and keys by their
  position (:class:`RotaryEmbedding`), so that the score q_m . k_n depends
  on the offset m - n only.

KV cache. Because attention is causal, the keys and values of tokens
1..t-1 are the same at every later step. Generation keeps them
(:class:`KVCache`) and runs each new token alone: its query attends over
the cached keys, and its own key and value are appended. The cache holds

    2 * num_layers * B * T * E   numbers

(keys and values of every layer, for B sequences of T tokens), e.g.
``KVCache.bytes_for(...)``; in exchange a step costs O(T E) per layer
instead of a full pass over the prefix.

- :class:`RotaryEmbedding` -- rotary position embedding (RoPE).
- :class:`KVCache` -- the per-layer keys and values of the tokens so far.
- :func:`causal_self_attention` -- causal multi-head attention with
  optional rotary positions and cache, on a MultiHeadAttention's weights.
- :class:`DecoderBlock` -- one pre-norm block; interchangeable with
  ``torch.nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``
  run with a causal mask.
- :class:`TransformerLM` -- embeddings, blocks, final norm, head;
  ``forward`` with or without a cache, ``step`` and ``generate``.
- :func:`count_parameters` -- the model's parameter count, by formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._checks import (
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_probability,
    check_rank,
    check_sampling,
    check_size,
    check_token_ids,
    shape_str,
)
from .attention import scaled_dot_product_attention
from .charlm import next_char_probs
from .transformer import SinusoidalPositionalEncoding, TransformerLayerBase

__all__ = [
    "RotaryEmbedding",
    "KVCache",
    "DecoderBlock",
    "causal_self_attention",
    "TransformerLM",
    "count_parameters",
]

POSITIONS = ("learned", "sinusoidal", "rotary")


# ------------------------------------------------------------ rotary positions


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) for one head of size
    d (even).

    The features of a query or key at position t go in pairs
    (x_{2i}, x_{2i+1}), i = 0 .. d/2 - 1, and pair i is turned by the angle
    t * theta_i, theta_i = base^(-2i/d) (the frequencies of the sinusoidal
    encoding):

        x'_{2i}   = x_{2i} cos(t theta_i) - x_{2i+1} sin(t theta_i)
        x'_{2i+1} = x_{2i} sin(t theta_i) + x_{2i+1} cos(t theta_i)

    A rotation keeps lengths, and turning q by m theta and k by n theta
    changes their dot product only through m - n:

        R(m) q . R(n) k = q . R(n - m) k.

    Attention scores then see relative positions only; nothing is added to
    the embeddings. The tables ``cos`` and ``sin`` (max_len, d/2) are
    non-persistent buffers, like the sinusoidal encoding's.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        check_positive_int("head_dim", head_dim)
        check_positive_int("max_len", max_len)
        if head_dim % 2:
            raise ValueError(
                "rotary embedding needs an even head_dim (features rotate "
                f"in pairs), got head_dim={head_dim}"
            )
        if isinstance(base, bool) or not isinstance(base, (int, float)) or (
            base <= 1
        ):
            raise ValueError(f"base must be a number > 1, got {base!r}")
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        # t    (max_len, 1)
        t = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
        # theta_i = base^(-2i/d)    (d/2,)
        two_i = torch.arange(0, head_dim, 2, dtype=torch.float64)
        theta = base ** (-two_i / head_dim)
        angle = t * theta  # t theta_i    (max_len, d/2)
        dtype = torch.get_default_dtype()
        self.register_buffer("cos", angle.cos().to(dtype), persistent=False)
        self.register_buffer("sin", angle.sin().to(dtype), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x (..., T, d) at positions offset .. offset + T - 1 -> rotated x,
        same shape."""
        if x.dim() < 2:
            raise ValueError(
                "x must have at least 2 dimensions (..., T, head_dim), "
                f"got shape {shape_str(x.shape)}"
            )
        check_size("x", x, -1, self.head_dim, "head_dim")
        check_nonnegative_int("offset", offset)
        T = x.shape[-2]
        if offset + T > self.max_len:
            raise ValueError(
                f"positions {offset}..{offset + T - 1} exceed max_len="
                f"{self.max_len} of the rotary embedding"
            )
        cos = self.cos[offset : offset + T].to(x.dtype)  # (T, d/2)
        sin = self.sin[offset : offset + T].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]  # (..., T, d/2) each
        rotated = torch.stack(
            [even * cos - odd * sin, even * sin + odd * cos], dim=-1
        )  # (..., T, d/2, 2)
        return rotated.flatten(-2)  # pairs back in place    (..., T, d)


# -------------------------------------------------------------------- KV cache


class KVCache:
    """The keys and values of every layer for the tokens seen so far.

    ``keys[l]`` and ``values[l]`` are (B, h, T, d) tensors (None before the
    first token), d = E / h. A :class:`TransformerLM` fills the cache when
    it is passed to ``forward``: each call appends the keys and values of
    its tokens, so the next call continues the sequences at position
    ``length``. Keys are stored rotated when the model uses rotary
    positions.

    ``nbytes`` is the memory the cache holds now, 2 * L * B * T * E numbers
    of the model's dtype; :meth:`bytes_for` gives it before any tensor
    exists.
    """

    def __init__(self, num_layers: int, batch_size: int):
        check_positive_int("num_layers", num_layers)
        check_positive_int("batch_size", batch_size)
        self.num_layers, self.batch_size = num_layers, batch_size
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def layer_length(self, layer: int) -> int:
        """How many positions layer ``layer`` holds."""
        k = self.keys[layer]
        return 0 if k is None else k.shape[-2]

    @property
    def length(self) -> int:
        """How many positions the cache holds (those of the last layer,
        which is updated last)."""
        return self.layer_length(self.num_layers - 1)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the stored tensors; None while empty."""
        return None if self.keys[0] is None else self.keys[0].dtype

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v (B, h, T_new, d) to layer ``layer``; return all its
        keys and values, (B, h, T_old + T_new, d) each."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)
            v = torch.cat([self.values[layer], v], dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored keys and values."""
        return sum(
            t.nelement() * t.element_size()
            for t in self.keys + self.values
            if t is not None
        )

    @staticmethod
    def bytes_for(
        num_layers: int,
        batch_size: int,
        length: int,
        embed_dim: int,
        dtype: torch.dtype = torch.float32,
    ) -> int:
        """2 * L * B * T * E * (bytes per number): the cache of ``length``
        tokens for ``batch_size`` sequences."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * batch_size * length * embed_dim * itemsize

    def __repr__(self) -> str:
        return (
            f"KVCache(num_layers={self.num_layers}, "
            f"batch_size={self.batch_size}, length={self.length}, "
            f"nbytes={self.nbytes})"
        )


# ---------------------------------------------------------------- the block


class DecoderBlock(TransformerLayerBase):
    """One pre-norm block of a causal language model:

        x = x + Dropout1(CausalSelfAttention(LayerNorm1(x)))
        x = x + Dropout2(MLP(LayerNorm2(x)))
        MLP(z) = linear2(Dropout(GELU(linear1(z))))

    Query t attends to keys s <= t only. The submodules are those of
    :class:`~seqbook_lib.transformer.TransformerLayerBase`, with the names
    of ``torch.nn.TransformerEncoderLayer`` -- ``self_attn`` (our
    :class:`~seqbook_lib.attention.MultiHeadAttention`), ``linear1``,
    ``linear2``, ``norm1``, ``norm2``, ``dropout``, ``dropout1``,
    ``dropout2`` -- so state dicts load both ways, and the block computes
    what that layer computes with ``norm_first=True, activation="gelu"``
    and ``src_mask = ~causal_mask(T)``.

    The block keeps its weights in ``self_attn`` but applies the heads
    itself (q, k, v = ``self_attn.project(x, x, x)``, split; out =
    out_proj(heads)): between the projection and the scores it may rotate
    q and k (``rotary``) and prepend cached keys and values (``cache``),
    which MultiHeadAttention's forward does not offer. With neither it is
    plain causal multi-head attention.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        *,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ):
        check_positive_int("embed_dim", embed_dim)
        ff_dim = 4 * embed_dim if ff_dim is None else ff_dim
        check_positive_int("ff_dim", ff_dim)
        super().__init__(
            embed_dim, num_heads, ff_dim, dropout, "gelu",
            layer_norm_eps=layer_norm_eps, norm_first=True, bias=bias,
        )
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = self.self_attn.head_dim

    def forward(
        self,
        x: torch.Tensor,
        rotary: RotaryEmbedding | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, E) -> (B, T, E).

        With a ``cache`` the T tokens continue the cached ones (positions
        ``cache.layer_length(layer)`` onwards), and their keys and values
        are appended to entry ``layer``.
        """
        check_rank("x", x, (3,), "(B, T, E)")
        check_size("x", x, -1, self.embed_dim, "embed_dim")
        attn = self._attend(self.norm1(x), rotary, cache, layer)
        x = x + self.dropout1(attn)
        x = x + self.dropout2(self._mlp(self.norm2(x)))
        return x

    def _attend(self, x, rotary, cache, layer):
        """Causal multi-head self-attention, (B, T, E) -> (B, T, E)."""
        return causal_self_attention(
            self.self_attn, x, rotary, cache, layer, self.training
        )

    def _mlp(self, x):
        """linear2(Dropout(GELU(linear1(x)))), position-wise, (B, T, E)."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def causal_self_attention(
    mha,
    x: torch.Tensor,
    rotary: RotaryEmbedding | None = None,
    cache: KVCache | None = None,
    layer: int = 0,
    training: bool = False,
) -> torch.Tensor:
    """Causal self-attention with the weights of ``mha`` (a
    :class:`~seqbook_lib.attention.MultiHeadAttention`), x (B, T, E) ->
    (B, T, E).

    q, k, v = ``mha.project(x, x, x)``, split into heads; ``rotary`` turns
    q and k by their positions; ``cache`` prepends the keys and values of
    earlier positions (entry ``layer``) and keeps the new ones. Query i, at
    position past + i, attends to keys j <= past + i.
    """
    B, T, E = x.shape
    h = mha.num_heads
    d = E // h
    # (B, T, E) -> (B, T, h, d) -> (B, h, T, d), for q, k and v
    q, k, v = (
        t.view(B, T, h, d).transpose(1, 2) for t in mha.project(x, x, x)
    )
    past = 0 if cache is None else cache.layer_length(layer)
    if rotary is not None:  # turn q and k by their positions
        q, k = rotary(q, past), rotary(k, past)
    if cache is not None:  # keys, values of all S = past + T positions
        k, v = cache.update(layer, k, v)  # (B, h, S, d)
    S = k.shape[-2]
    allowed = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(
        past
    )  # (T, S)
    out, _ = scaled_dot_product_attention(
        q, k, v, attn_mask=allowed,
        dropout_p=mha.dropout if training else 0.0,
        need_weights=False,
    )  # (B, h, T, d)
    out = out.transpose(1, 2).reshape(B, T, E)  # concat(heads)
    return mha.out_proj(out)


# ------------------------------------------------------------------- the model


def count_parameters(
    vocab_size: int,
    embed_dim: int,
    num_layers: int,
    context: int,
    positions: str = "learned",
    ff_dim: int | None = None,
    tie_weights: bool = False,
) -> int:
    """The number of parameters of a :class:`TransformerLM`, by formula.

    Per block, with F = ff_dim (4E by default):
    attention 3E^2 + 3E (W_in, b_in) + E^2 + E (W_out, b_out), MLP
    2EF + F + E, two LayerNorms 4E. Around the blocks: the token table VE,
    the position table context * E (learned positions only), the final
    LayerNorm 2E and the head VE (none when tied to the token table):

        V E + [context E] + L (4E^2 + 2EF + F + 9E) + 2E + [V E]

    With F = 4E the blocks hold L (12 E^2 + 13 E): GPT's "12 L E^2".
    """
    E, V = embed_dim, vocab_size
    F_ = 4 * E if ff_dim is None else ff_dim
    block = 4 * E * E + 2 * E * F_ + F_ + 9 * E
    total = V * E + num_layers * block + 2 * E
    if positions == "learned":
        total += context * E
    if not tie_weights:
        total += V * E
    return total


class TransformerLM(nn.Module):
    """A decoder-only Transformer language model (GPT-style, pre-norm):
    ids (B, T) -> next-token logits (B, T, V).

        x      = dropout(token_embedding[ids] + positions)    (B, T, E)
        x      = block_L(... block_1(x))                       causal
        logits = head(norm(x))                                 (B, T, V)

    ``positions``: "learned" (``pos_embedding``, a (context, E) table),
    "sinusoidal" (``pos_encoding``, fixed) or "rotary" (``rotary``, applied
    to q and k in every block). ``context`` is the longest sequence the
    model reads. The head has no bias; ``tie_weights=True`` makes it share
    the token table (``head.weight is token_embedding.weight``).

    Initialisation as in GPT-2: weights N(0, 0.02), biases 0, and the two
    projections that write into the residual stream (``out_proj`` and
    ``linear2``) N(0, 0.02 / sqrt(2 L)), so that the sum of 2L residual
    branches starts with the scale of one.

    Incremental decoding: ``cache = model.new_cache(B)``, then
    ``model(ids_chunk, cache)`` for each chunk (the prompt at once, then one
    token at a time) gives the logits of the chunk's positions, the same
    numbers as one pass over the whole sequence.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        context: int,
        positions: str = "learned",
        dropout: float = 0.0,
        *,
        ff_dim: int | None = None,
        tie_weights: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("num_layers", num_layers),
            ("context", context),
        ):
            check_positive_int(name, value)
        check_choice("positions", positions, POSITIONS)
        check_probability("dropout", dropout)
        if embed_dim % num_heads:
            raise ValueError(
                "embed_dim must be divisible by num_heads, "
                f"got embed_dim={embed_dim}, num_heads={num_heads}"
            )
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.num_heads, self.num_layers = num_heads, num_layers
        self.context, self.positions = context, positions
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        if positions == "learned":
            self.pos_embedding = nn.Embedding(context, embed_dim)
        elif positions == "sinusoidal":
            self.pos_encoding = SinusoidalPositionalEncoding(
                embed_dim, context
            )
        else:
            self.rotary = RotaryEmbedding(embed_dim // num_heads, context)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                embed_dim, num_heads, ff_dim, dropout,
                layer_norm_eps=layer_norm_eps,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        self._init_weights()
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def _init_weights(self) -> None:
        """GPT-2: N(0, 0.02), zero biases; residual projections scaled
        down by sqrt(2 L)."""
        residual_std = 0.02 / math.sqrt(2 * self.num_layers)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.self_attn.in_proj_weight, std=0.02)
            nn.init.normal_(block.self_attn.out_proj.weight, std=residual_std)
            nn.init.normal_(block.linear2.weight, std=residual_std)

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences."""
        return KVCache(self.num_layers, batch_size)

    def forward(
        self, ids: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V).

        With a ``cache``, ids continue the cached sequences: they sit at
        positions ``cache.length`` .. ``cache.length + T - 1``, attend to
        the cached tokens too, and their keys and values are added to the
        cache.
        """
        past = self._check_forward(ids, cache)
        T = ids.shape[1]
        x = self.token_embedding(ids)  # (B, T, E)
        if self.positions == "learned":
            pos = torch.arange(past, past + T, device=ids.device)  # (T,)
            x = x + self.pos_embedding(pos)  # (B, T, E) + (T, E)
        elif self.positions == "sinusoidal":
            x = x + self.pos_encoding.pe[past : past + T].to(x.dtype)
        x = self.dropout(x)
        rotary = self.rotary if self.positions == "rotary" else None
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, cache, layer)  # (B, T, E)
        return self.head(self.norm(x))  # (B, T, V)

    def step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decoding step: token (B,) -> logits (B, V) of the next one,
        the token's keys and values added to ``cache``."""
        check_rank("token", token, (1,), "(B,)")
        return self(token.unsqueeze(1), cache)[:, 0]  # (B, 1, V) -> (B, V)

    def _check_forward(self, ids, cache) -> int:
        """Validate ids (B, T) and the cache; return the cached length."""
        check_rank("ids", ids, (2,), "(B, T)")
        check_token_ids("ids", ids, self.vocab_size)
        B, T = ids.shape
        if T == 0:
            raise ValueError(
                "ids must hold at least one token per sequence, "
                f"got shape {shape_str(ids.shape)}"
            )
        past = 0
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(
                    "cache must be a KVCache or None, "
                    f"got {type(cache).__name__}"
                )
            if cache.num_layers != self.num_layers:
                raise ValueError(
                    f"cache has {cache.num_layers} layers, the model "
                    f"{self.num_layers}; make it with model.new_cache(B)"
                )
            if cache.batch_size != B:
                raise ValueError(
                    f"cache holds batch_size={cache.batch_size} sequences, "
                    f"but ids has B={B} (shape {shape_str(ids.shape)})"
                )
            dtype = self.token_embedding.weight.dtype
            if cache.dtype is not None and cache.dtype != dtype:
                raise ValueError(
                    f"cache holds {cache.dtype} tensors, the model is "
                    f"{dtype}"
                )
            past = cache.length
        if past + T > self.context:
            where = f" after {past} cached positions" if past else ""
            raise ValueError(
                f"ids has T={T} positions{where}, more than the context of "
                f"{self.context} positions"
            )
        return past

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """``prompt_ids`` (B, P) followed by ``length`` new tokens: (B,
        P + length).

        Each new token is drawn from
        :func:`~seqbook_lib.charlm.next_char_probs` (temperature, top-k)
        of the model's prediction and fed back in. ``use_cache=True`` reads
        the prompt in one call and then runs one token per step against the
        :class:`KVCache`; ``use_cache=False`` runs the whole sequence again
        at every step (same tokens, more work). Everything fed must fit in
        the context: P + length - 1 <= context. ``top_k=1`` is greedy
        decoding; a seeded ``torch.Generator`` draws the same tokens again.
        The model runs in eval mode, and is put back in its mode after.
        """
        self._check_generate(prompt_ids, length, temperature, top_k, generator)
        was_training = self.training
        self.eval()
        try:
            ids = prompt_ids
            cache = self.new_cache(ids.shape[0]) if use_cache else None
            logits = self(ids, cache)[:, -1]  # (B, V)
            for i in range(length):
                probs = next_char_probs(logits, temperature, top_k)  # (B, V)
                nxt = torch.multinomial(probs, 1, generator=generator)
                ids = torch.cat([ids, nxt], dim=1)  # (B, P + i + 1)
                if i + 1 < length:  # the last token need not be read
                    out = self(nxt, cache) if use_cache else self(ids)
                    logits = out[:, -1]
        finally:
            self.train(was_training)
        return ids

    def _check_generate(self, prompt_ids, length, temperature, top_k, gen):
        check_rank("prompt_ids", prompt_ids, (2,), "(B, P)")
        check_token_ids("prompt_ids", prompt_ids, self.vocab_size)
        check_nonnegative_int("length", length)
        P = prompt_ids.shape[1]
        if P == 0:
            raise ValueError(
                "prompt_ids must hold at least one token per sequence, "
                f"got shape {shape_str(prompt_ids.shape)}"
            )
        if P + max(length, 1) - 1 > self.context:
            raise ValueError(
                f"a prompt of {P} tokens and {length} new ones feed "
                f"{P + max(length, 1) - 1} positions to the model, more "
                f"than its context of {self.context}"
            )
        check_sampling(temperature, top_k, self.vocab_size, gen)
