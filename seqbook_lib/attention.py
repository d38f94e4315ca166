"""Attention: scaled dot-product, multi-head and additive (Bahdanau)
attention, and masks.

Attention mixes the rows of a value matrix V with weights that say how well
each query matches each key:

    Attention(Q, K, V) = softmax(Q K^T * scale + M) V,    scale = 1 / sqrt(E)

    Q (..., L, E)   L queries        K (..., S, E)   S keys
    V (..., S, Ev)  one value per key
    ->  output (..., L, Ev), weights (..., L, S)

Two mask conventions meet in PyTorch, and this module keeps both, each where
PyTorch uses it:

* ``scaled_dot_product_attention`` (ours and ``torch.nn.functional``'s), the
  helpers :func:`causal_mask` and :func:`padding_mask`, and
  :class:`AdditiveAttention`:
  boolean ``True`` = **may attend**.
* :class:`MultiHeadAttention` (like ``torch.nn.MultiheadAttention``):
  boolean ``True`` = **may NOT attend** (``key_padding_mask`` True marks
  padding, ``attn_mask`` True marks a blocked query-key pair).  Convert with
  ``~mask``.

Float masks mean the same everywhere: they are *added* to the scores, so ``0``
keeps a key and ``-inf`` removes it.

A query row whose keys are all masked has no distribution to normalise. Here
such a row gets weights 0 and output 0, with zero gradient (torch 2.13's
``scaled_dot_product_attention`` does the same on the CPU;
``nn.MultiheadAttention`` with ``need_weights=True`` returns NaN there).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_bool_mask,
    check_layout,
    check_lengths,
    check_mask_dtype,
    check_positive_int,
    check_probability,
    check_rank,
    check_size,
    check_tensor,
    shape_str,
)

# ----------------------------------------------------------------------- masks


def causal_mask(
    size: int, key_size: int | None = None, *, device=None
) -> torch.Tensor:
    """Boolean (size, key_size) mask, **True = may attend**: query i sees
    keys j <= i.

    ``key_size`` defaults to ``size``. This is the convention of
    ``torch.nn.functional.scaled_dot_product_attention`` and of our
    :func:`scaled_dot_product_attention`; for ``nn.MultiheadAttention``'s
    (and our :class:`MultiHeadAttention`'s) ``attn_mask``, where True means
    *blocked*, pass ``~causal_mask(T)``.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    check_positive_int("size", size)
    key_size = size if key_size is None else key_size
    check_positive_int("key_size", key_size)
    return torch.ones(size, key_size, dtype=torch.bool, device=device).tril()


def padding_mask(lengths, max_len: int, *, device=None) -> torch.Tensor:
    """Boolean (B, max_len) mask, **True = real token (may attend)**,
    False = padding.

    Row b is True in positions ``0 .. lengths[b] - 1``. This is SDPA's
    convention (use it as ``mask[:, None, None, :]``, shape (B, 1, 1, S), for
    batched heads). ``nn.MultiheadAttention``'s ``key_padding_mask`` uses the
    opposite convention (True = ignore): pass
    ``~padding_mask(lengths, max_len)`` there.

    >>> padding_mask([3, 1], 4).int()
    tensor([[1, 1, 1, 0],
            [1, 0, 0, 0]], dtype=torch.int32)
    """
    check_positive_int("max_len", max_len)
    lengths_t = torch.as_tensor(lengths)
    lengths_t = check_lengths(lengths_t, lengths_t.numel(), max_len)
    positions = torch.arange(max_len)  # (S,)
    return (positions[None, :] < lengths_t[:, None]).to(device)  # (B, S)


def masked_softmax(
    scores: torch.Tensor, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax over the last dimension, restricted to the allowed keys.

        w_ij = exp(s_ij) / sum_{j' allowed} exp(s_ij')   for allowed j,
        w_ij = 0                                          otherwise

    ``allowed`` is boolean (True = may attend), broadcastable to ``scores``;
    scores already equal to -inf (from a float mask) count as masked too. A row
    with no allowed key gets all-zero weights (and zero gradient) instead of
    0/0 = NaN.
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # exp(-inf) = 0
    # (..., L, 1): True where no key is left
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    if not empty.any():
        return torch.softmax(scores, dim=-1)
    # any finite row will do; it is zeroed below
    scores = scores.masked_fill(empty, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)


# ------------------------------------------------ scaled dot-product attention


def _check_qkv(query, key, value) -> torch.Size:
    """Validate (..., L, E), (..., S, E), (..., S, Ev); return the broadcast
    batch shape."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, x)
        if x.dim() < 2:
            raise ValueError(
                f"{name} must have at least 2 dimensions (..., T, E), "
                f"got shape {shape_str(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor, got dtype {x.dtype}"
            )
    if not query.dtype == key.dtype == value.dtype:
        raise ValueError(
            "query, key and value must share one dtype, got "
            f"{query.dtype}, {key.dtype}, {value.dtype}"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query (..., L, E) and key (..., S, E) must have the same E, "
            f"got shapes {shape_str(query.shape)} and {shape_str(key.shape)}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"key (..., S, E) and value (..., S, Ev) must have the same S, "
            f"got shapes {shape_str(key.shape)} and {shape_str(value.shape)}"
        )
    try:
        return torch.broadcast_shapes(
            query.shape[:-2], key.shape[:-2], value.shape[:-2]
        )
    except RuntimeError:
        raise ValueError(
            "the batch dimensions (...) of query, key and value must "
            f"broadcast, got shapes {shape_str(query.shape)}, "
            f"{shape_str(key.shape)}, {shape_str(value.shape)}"
        ) from None


def _check_broadcast_mask(name, mask, target, dtype, bool_meaning) -> None:
    """``mask`` broadcasts to ``target`` (without enlarging it) and has a
    mask dtype."""
    check_mask_dtype(name, mask, dtype, bool_meaning)
    ok = mask.dim() <= len(target) and all(
        m in (1, t) for m, t in zip(reversed(mask.shape), reversed(target))
    )
    if not ok:
        raise ValueError(
            f"{name} must broadcast to the attention weights' shape "
            f"(..., L, S) = {shape_str(target)}, "
            f"got shape {shape_str(mask.shape)}"
        )


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    need_weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T * scale + M) V, spelled out; returns
    ``(output, weights)``.

    The arguments and the output are those of
    ``torch.nn.functional.scaled_dot_product_attention`` (same names, same
    order -- ``dropout_p`` before ``is_causal`` -- and the same numbers):

        query (..., L, E), key (..., S, E), value (..., S, Ev)
        -> output (..., L, Ev)

    The batch dimensions ``...`` broadcast. ``weights`` (..., L, S) are the
    attention weights that multiplied V.

    Args:
        attn_mask: broadcastable to (..., L, S).
            Boolean: **True = may attend**.
            Float (the dtype of ``query``): added to the scores (0 keeps,
            -inf removes).
        dropout_p: dropout on the weights, applied whenever > 0 (this is a
            function, it knows no train/eval mode -- like torch's).
        is_causal: query i attends to keys j <= i (the top-left triangle of
            (L, S)); not allowed together with ``attn_mask``.
        scale: multiplies Q K^T; default 1 / sqrt(E).
        need_weights: False returns ``(output, None)`` computed by torch's
            fused kernel, which never builds the (L, S) matrix -- same
            numbers, faster.

    Rows with no allowed key (all False or all -inf) get weights 0 and output
    0, with zero gradient (torch 2.13's function does the same on the CPU).

    Under dropout the returned weights are the *dropped-out* weights, the ones
    that multiplied V (as ``nn.MultiheadAttention`` returns them): each kept
    weight is divided by (1 - dropout_p), so a row sums to 1 only in
    expectation.
    """
    batch = _check_qkv(query, key, value)
    check_probability("dropout_p", dropout_p)
    is_number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if scale is not None and not is_number:
        raise TypeError(
            f"scale must be a number or None, got {type(scale).__name__}"
        )
    L, S = query.shape[-2], key.shape[-2]
    if is_causal and attn_mask is not None:
        raise ValueError(
            "give either attn_mask or is_causal=True, not both (as in torch)"
        )
    if attn_mask is not None:
        _check_broadcast_mask(
            "attn_mask", attn_mask, batch + (L, S), query.dtype,
            "True = may attend",
        )

    # the fused kernel: same equation, no (L, S) matrix in memory
    if not need_weights:
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
            is_causal=is_causal, scale=scale,
        )
        return output, None

    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    # s_ij = scale * q_i . k_j    (..., L, S)
    scores = (query * scale) @ key.transpose(-2, -1)
    if is_causal:  # j <= i only
        allowed = causal_mask(L, S, device=scores.device)
        weights = masked_softmax(scores, allowed)
    elif attn_mask is None:
        weights = torch.softmax(scores, dim=-1)  # w_ij = softmax_j(s_ij)
    elif attn_mask.dtype == torch.bool:
        weights = masked_softmax(scores, attn_mask)  # over allowed keys only
    else:
        weights = masked_softmax(scores + attn_mask)  # softmax(S + M)
    if dropout_p > 0:
        # zero some w_ij, scale the rest by 1/(1-p)
        weights = F.dropout(weights, p=dropout_p)
    output = weights @ value  # o_i = sum_j w_ij v_j    (..., L, Ev)
    return output, weights


# -------------------------------------------------------- multi-head attention


def _is_causal_pattern(attn_mask: torch.Tensor, L: int, S: int) -> bool:
    """True when ``attn_mask`` (MHA convention) blocks exactly the keys
    j > i in every (L, S) slice."""
    # (L, S), True above the diagonal
    blocked = ~causal_mask(L, S, device=attn_mask.device)
    if attn_mask.dtype == torch.bool:
        return bool((attn_mask == blocked).all())
    additive = torch.zeros(
        L, S, dtype=attn_mask.dtype, device=attn_mask.device
    )
    additive = additive.masked_fill(blocked, float("-inf"))
    return bool((attn_mask == additive).all())


def _check_causal_hint(
    is_causal: bool, attn_mask: torch.Tensor | None, L: int, S: int
) -> None:
    """``is_causal=True`` needs ``attn_mask``, and that mask must be the
    causal one."""
    if not is_causal:
        return
    if attn_mask is None:
        raise ValueError(
            "is_causal=True is a hint that needs attn_mask (the causal mask) "
            "too, as in torch"
        )
    if not _is_causal_pattern(attn_mask, L, S):
        raise ValueError(
            "is_causal=True but attn_mask is not the causal mask "
            "(True/-inf exactly above the diagonal)"
        )


def _to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean MHA mask (True = blocked) as a float mask (-inf = blocked);
    float masks pass unchanged."""
    if mask.dtype != torch.bool:
        return mask
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(mask, float("-inf"))


class MultiHeadAttention(nn.Module):
    """Multi-head attention, interchangeable with
    ``torch.nn.MultiheadAttention``.

        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V),   i = 1..h
        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O

    Each head works on E/h features. The projections of all heads are stored
    stacked, with torch's names and shapes, so state dicts load both ways:

        in_proj_weight (3E, E)   rows [W^Q; W^K; W^V]
                                 (None when kdim/vdim != E; then
                                 q_proj_weight (E, E),
                                 k_proj_weight (E, kdim),
                                 v_proj_weight (E, vdim))
        in_proj_bias   (3E,)     (None when bias=False)
        out_proj       Linear(E, E, bias=bias), i.e. W^O

    **batch_first defaults to True** here (torch's default is False). The
    arguments after ``bias`` are keyword-only, because torch's positional order
    (``add_bias_kv``, ``add_zero_attn``, ...) is not supported.

    **Mask convention -- the opposite of scaled_dot_product_attention's!**
    As in ``nn.MultiheadAttention``, a boolean ``key_padding_mask`` or
    ``attn_mask`` marks with **True the keys that may NOT be attended**
    (padding, future positions). Float masks are added to the scores. Use
    ``~padding_mask(lengths, S)`` and ``~causal_mask(T)`` from this module.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        *,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(
                "embed_dim must be divisible by num_heads, "
                f"got embed_dim={embed_dim}, num_heads={num_heads}"
            )
        check_probability("dropout", dropout)
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        check_positive_int("kdim", self.kdim)
        check_positive_int("vdim", self.vdim)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self._qkv_same_embed_dim = self.kdim == self.vdim == embed_dim

        factory = {"device": device, "dtype": dtype}
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(
                torch.empty(3 * E, E, **factory)
            )
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(E, E, **factory))
            self.k_proj_weight = nn.Parameter(
                torch.empty(E, self.kdim, **factory)
            )
            self.v_proj_weight = nn.Parameter(
                torch.empty(E, self.vdim, **factory)
            )
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * E, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(E, E, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: Xavier-uniform projections, zero biases."""
        for w in (
            self.in_proj_weight,
            self.q_proj_weight,
            self.k_proj_weight,
            self.v_proj_weight,
        ):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(attn_output, attn_weights)`` exactly as
        ``nn.MultiheadAttention`` does.

        Shapes (batch_first=True; with False the first two dimensions swap;
        unbatched input drops B):

            query (B, L, E), key (B, S, kdim), value (B, S, vdim)
                -> attn_output (B, L, E)
            key_padding_mask (B, S)
                -- bool, **True = IGNORE this key**, or float added
            attn_mask (L, S) or (B*h, L, S)
                -- bool, **True = blocked**, or float added
            attn_weights (B, L, S) averaged over heads, (B, h, L, S) with
                average_attn_weights=False, None with need_weights=False.

        ``need_weights=False`` runs torch's fused attention kernel (fast);
        ``need_weights=True`` runs our spelled-out
        :func:`scaled_dot_product_attention`.
        Dropout acts on the weights in training mode, and the returned weights
        are the dropped-out ones (as torch's).

        ``is_causal`` is a *hint*, as in torch: it requires ``attn_mask`` and
        promises that it is the causal mask (we check the promise; torch does
        not). The mask is what is applied; the hint only lets the fused kernel
        skip it when ``need_weights=False`` and there is no key_padding_mask.

        Query rows whose keys are all masked give output 0 (torch: 0 with
        need_weights=False, NaN with need_weights=True).
        """
        batched = self._check_inputs(query, key, value)
        if not batched:  # (L, E) -> (1, L, E)
            query, key, value = (x.unsqueeze(0) for x in (query, key, value))
        elif not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (
                x.transpose(0, 1) for x in (query, key, value)
            )
        B, L, E = query.shape
        S = key.shape[1]
        mask = self._merge_masks(
            key_padding_mask, attn_mask, B, L, S, batched, query.dtype
        )
        _check_causal_hint(is_causal, attn_mask, L, S)
        use_causal_kernel = (
            is_causal and key_padding_mask is None and not need_weights
        )

        # (B, L, E), (B, S, E), (B, S, E)
        q, k, v = self._project(query, key, value)
        h, d = self.num_heads, self.head_dim
        q = q.view(B, L, h, d).transpose(1, 2)  # (B, L, E) -> (B, h, L, E/h)
        k = k.view(B, S, h, d).transpose(1, 2)  # (B, S, E) -> (B, h, S, E/h)
        v = v.view(B, S, h, d).transpose(1, 2)  # (B, S, E) -> (B, h, S, E/h)
        out, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if use_causal_kernel else mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=use_causal_kernel,
            need_weights=need_weights,
        )  # out (B, h, L, E/h), weights (B, h, L, S) or None
        # (B, h, L, E/h) -> (B, L, h, E/h) -> (B, L, E)
        out = out.transpose(1, 2).reshape(B, L, E)
        out = self.out_proj(out)  # concat(heads) W^O + b^O

        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, h, L, S) -> (B, L, S)
        if not batched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)  # back to (L, B, E)
        return out, weights

    def project(self, query, key, value):
        """The input projections of all heads, as ``forward`` computes them
        first: query (..., E), key (..., kdim), value (..., vdim)
        -> q, k, v (..., E) each, not yet split into heads.

        For modules that keep these weights but apply the heads themselves,
        e.g. :class:`seqbook_lib.causal_lm.DecoderBlock`, which rotates q and
        k and caches k and v. Pass one tensor three times for
        self-attention (one matrix product).
        """
        return self._project(query, key, value)

    def _project(self, query, key, value):
        """q = query W^Q + b^Q, k = key W^K + b^K, v = value W^V + b^V
        (all heads at once)."""
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        if not self._qkv_same_embed_dim:
            return (
                F.linear(query, self.q_proj_weight, b_q),
                F.linear(key, self.k_proj_weight, b_k),
                F.linear(value, self.v_proj_weight, b_v),
            )
        if query is key and key is value:  # self-attention: one matmul
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            return qkv.chunk(3, dim=-1)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)  # (E, E) each
        return (
            F.linear(query, w_q, b_q),
            F.linear(key, w_k, b_k),
            F.linear(value, w_v, b_v),
        )

    def _check_inputs(self, query, key, value) -> bool:
        """Validate ranks and sizes; return whether the input is batched."""
        check_rank(
            "query", query, (2, 3), "(B, L, E) / (L, B, E) or unbatched (L, E)"
        )
        like_query = f"(like query, {query.dim()}-D)"
        check_rank("key", key, (query.dim(),), like_query)
        check_rank("value", value, (query.dim(),), like_query)
        for name, x, size, what in (
            ("query", query, self.embed_dim, "embed_dim"),
            ("key", key, self.kdim, "kdim"),
            ("value", value, self.vdim, "vdim"),
        ):
            check_size(name, x, -1, size, what)
        batched = query.dim() == 3
        seq_dim = 1 if batched and self.batch_first else 0
        if key.shape[seq_dim] != value.shape[seq_dim]:
            raise ValueError(
                "key and value must have the same number S of elements, "
                f"got shapes {shape_str(key.shape)} and "
                f"{shape_str(value.shape)}"
            )
        if batched:
            b_dim = 0 if self.batch_first else 1
            sizes = (query.shape[b_dim], key.shape[b_dim], value.shape[b_dim])
            if len(set(sizes)) != 1:
                raise ValueError(
                    "query, key and value must have the same batch size "
                    f"in dimension {b_dim}, got shapes "
                    f"{shape_str(query.shape)}, {shape_str(key.shape)}, "
                    f"{shape_str(value.shape)}"
                )
        return batched

    def _merge_masks(
        self, key_padding_mask, attn_mask, B, L, S, batched, dtype
    ):
        """One mask (B or 1, h or 1, L or 1, S) in SDPA's convention, or None.

        MHA's booleans mean True = blocked; SDPA's mean True = may attend. Two
        boolean masks combine with "and" (after ~); any float mask turns the
        other into a float mask too, and the two are added.
        """
        h = self.num_heads
        masks = []
        if key_padding_mask is not None:
            check_mask_dtype(
                "key_padding_mask", key_padding_mask, dtype,
                "True = ignore this key",
            )
            if batched:
                expected, layout = (B, S), "(B, S)"
            else:
                expected, layout = (S,), "(S,) for unbatched input"
            check_layout(
                "key_padding_mask", key_padding_mask, expected, layout
            )
            # (B, S) -> (B, 1, 1, S)
            masks.append(key_padding_mask.reshape(B, 1, 1, S))
        if attn_mask is not None:
            check_mask_dtype("attn_mask", attn_mask, dtype, "True = blocked")
            check_rank("attn_mask", attn_mask, (2, 3), "(L, S) or (B*h, L, S)")
            n = B * h if batched else h
            if attn_mask.dim() == 2:
                check_layout("attn_mask", attn_mask, (L, S), "(L, S)")
                # (L, S) -> (1, 1, L, S)
                masks.append(attn_mask.reshape(1, 1, L, S))
            else:
                layout = "(B*h, L, S)" if batched else "(h, L, S)"
                check_layout("attn_mask", attn_mask, (n, L, S), layout)
                # (B*h, L, S) -> (B, h, L, S)
                masks.append(attn_mask.reshape(B, h, L, S))
        if not masks:
            return None
        if all(m.dtype == torch.bool for m in masks):
            allowed = ~masks[0]
            for m in masks[1:]:
                allowed = allowed & ~m
            return allowed  # True = may attend
        additive = _to_additive(masks[0], dtype)
        for m in masks[1:]:
            additive = additive + _to_additive(m, dtype)
        return additive


# ---------------------------------------------------------- additive attention


class AdditiveAttention(nn.Module):
    """Additive attention (Bahdanau, Cho & Bengio 2015): an MLP scores each
    query-key pair.

        e_ij = v^T tanh(W_q q_i + W_k k_j)        score of key j for query i
        a_ij = softmax_j(e_ij)                     over the allowed keys only
        c_i  = sum_j a_ij v_j                      context vector

    Parameters: ``W_q`` Linear(query_size, hidden_size), ``W_k``
    Linear(key_size, hidden_size) and ``v`` Linear(hidden_size, 1), all
    without bias, as in the paper.
    Unlike dot-product attention, queries and keys may have different sizes.
    There is no torch counterpart.
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__()
        for name, value in (
            ("query_size", query_size),
            ("key_size", key_size),
            ("hidden_size", hidden_size),
        ):
            check_positive_int(name, value)
        self.query_size, self.key_size = query_size, key_size
        self.hidden_size = hidden_size
        self.W_q = nn.Linear(query_size, hidden_size, bias=False)
        self.W_k = nn.Linear(key_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, query, keys, values, mask=None):
        """Return ``(context, weights)``.

            query (B, Q) or (B, L, Q), keys (B, S, K), values (B, S, V)
            mask (B, S) bool, **True = may attend** (e.g. :func:`padding_mask`)
            -> context (B, V) or (B, L, V), weights (B, S) or (B, L, S)

        Masked keys get weight exactly 0, so padded values never reach the
        context. A batch element with no allowed key gets weights 0 and
        context 0.
        """
        self._check_inputs(query, keys, values, mask)
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, Q) -> (B, 1, Q)
        q = self.W_q(query)  # (B, L, H)
        k = self.W_k(keys)  # (B, S, H)
        # every query with every key:
        # (B, L, 1, H) + (B, 1, S, H) -> (B, L, S, H)
        features = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))
        # e_ij = v^T tanh(W_q q_i + W_k k_j)    (B, L, S)
        scores = self.v(features).squeeze(-1)
        # (B, S) -> (B, 1, S)
        allowed = None if mask is None else mask.unsqueeze(1)
        weights = masked_softmax(scores, allowed)  # a_ij    (B, L, S)
        context = weights @ values  # c_i = sum_j a_ij v_j    (B, L, V)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    def _check_inputs(self, query, keys, values, mask) -> None:
        check_rank("query", query, (2, 3), "(B, Q) or (B, L, Q)")
        check_size("query", query, -1, self.query_size, "query_size")
        check_rank("keys", keys, (3,), "(B, S, K)")
        check_size("keys", keys, -1, self.key_size, "key_size")
        B, S = keys.shape[:2]
        check_rank("values", values, (3,), "(B, S, V)")
        if query.shape[0] != B or values.shape[:2] != (B, S):
            raise ValueError(
                "query (B, ...), keys (B, S, K) and values (B, S, V) must "
                f"agree on B and S, got shapes {shape_str(query.shape)}, "
                f"{shape_str(keys.shape)}, {shape_str(values.shape)}"
            )
        if mask is not None:
            meaning = "True = may attend"
            check_bool_mask("mask", mask, (B, S), "(B, S)", meaning)
