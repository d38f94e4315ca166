"""Linear attention (Katharopoulos et al. 2020): attention as an RNN.

Softmax attention weighs value j for query i by exp(q_i . k_j). Replace that
similarity by a dot product of feature maps, ``phi(q_i) . phi(k_j)`` with
``phi(x) = elu(x) + 1`` (positive, so the weights stay positive), and the
output of query i becomes

    y_i = sum_j phi(q_i)^T phi(k_j) v_j^T / sum_j phi(q_i)^T phi(k_j)
        = phi(q_i)^T S / phi(q_i)^T z,
    S = sum_j phi(k_j) v_j^T   (d, dv),    z = sum_j phi(k_j)   (d,).

The sums over j no longer depend on i: computing S and z first costs
O(T d dv) instead of the O(T^2) of the (T, T) weight matrix
(:func:`linear_attention`, the non-causal form). With a causal mask query t
sums over j <= t only, and S and z become running sums -- the state of an
RNN with a matrix-valued hidden state:

    S_t = S_{t-1} + phi(k_t) v_t^T,   z_t = z_{t-1} + phi(k_t),
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps).

Three ways to compute the causal output, all equal:

* :func:`causal_linear_attention` -- the masked (T, T) matrix
  ``phi(Q) phi(K)^T``, like softmax attention (parallel, quadratic);
* :func:`chunked_causal_linear_attention` -- quadratic inside chunks of C
  steps, plus the state carried between chunks by a cumulative sum
  (parallel, O(T C d + T d dv));
* :func:`recurrent_linear_attention` -- the RNN above, one step at a time
  (O(d dv) memory per step: what generation uses).

All take feature-mapped queries and keys ``phi_q``, ``phi_k`` (..., T, d)
and values ``v`` (..., T, dv), checked as softmax attention's arguments are
(the batch dimensions ``...`` broadcast); ``eps`` is added to every
denominator, as in the paper's code. :class:`LinearAttention` is the
multi-head self-attention layer built on them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_layout,
    check_positive_int,
    check_rank,
    check_sequence,
    check_size,
)
from .attention import _check_qkv, causal_mask

FORMS = ("parallel", "chunked", "recurrent")


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``phi(x) = elu(x) + 1``: x + 1 for x > 0, exp(x) for x <= 0;
    always > 0."""
    return F.elu(x) + 1


def _check_features(phi_q, phi_k, v, causal: bool) -> torch.Size:
    """``phi_q`` (..., L, d), ``phi_k`` (..., S, d), ``v`` (..., S, dv) as
    for softmax attention (:func:`seqbook_lib.attention`'s checks: one
    floating dtype, batch dimensions that broadcast), and L == S >= 1 when
    causal; return the broadcast batch shape."""
    batch = _check_qkv(phi_q, phi_k, v)
    L, S = phi_q.shape[-2], phi_k.shape[-2]
    if causal and not L == S >= 1:
        raise ValueError(
            "causal attention needs as many queries as keys (L == S), "
            f"and at least one, got L={L} and S={S}"
        )
    return batch


def linear_attention(phi_q, phi_k, v, eps: float = 1e-6) -> torch.Tensor:
    """Non-causal: ``y_i = phi(q_i)^T S / (phi(q_i)^T z + eps)`` with
    S, z summed over all keys; (..., L, d), (..., S, d), (..., S, dv) ->
    (..., L, dv). O((L + S) d dv): the (L, S) matrix is never formed."""
    _check_features(phi_q, phi_k, v, causal=False)
    S = phi_k.transpose(-2, -1) @ v  # (..., d, dv)
    z = phi_k.sum(dim=-2)  # (..., d)
    num = phi_q @ S  # (..., L, dv)
    den = phi_q @ z.unsqueeze(-1)  # (..., L, 1)
    return num / (den + eps)


def causal_linear_attention(
    phi_q, phi_k, v, eps: float = 1e-6
) -> torch.Tensor:
    """Causal, quadratic: the masked matrix ``W = tril(phi(Q) phi(K)^T)``
    (..., T, T), then ``y = W V / (W 1 + eps)``."""
    _check_features(phi_q, phi_k, v, causal=True)
    T = phi_q.shape[-2]
    scores = phi_q @ phi_k.transpose(-2, -1)  # (..., T, T)
    scores = scores.masked_fill(~causal_mask(T, device=v.device), 0.0)
    num = scores @ v  # (..., T, dv)
    den = scores.sum(dim=-1, keepdim=True)  # (..., T, 1)
    return num / (den + eps)


def _exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``out_c = sum_{c' < c} x_c'`` along ``dim`` (zero at c = 0)."""
    total = torch.cumsum(x, dim=dim)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    return torch.cat([zero, total.narrow(dim, 0, x.shape[dim] - 1)], dim)


def chunked_causal_linear_attention(
    phi_q, phi_k, v, chunk_size: int = 64, eps: float = 1e-6
) -> torch.Tensor:
    """Causal, by chunks of C = ``chunk_size`` steps.

    Within chunk c the masked quadratic form; from the chunks before it the
    state ``S_<c = sum_{c' < c} phi(K_c')^T V_c'`` (and z likewise), an
    exclusive cumulative sum over chunks:

        y_t = (phi(q_t)^T S_<c + sum_{j in c, j <= t} phi(q_t).phi(k_j) v_j)
              / (phi(q_t)^T z_<c + sum_{j in c, j <= t} phi(q_t).phi(k_j)
                 + eps)

    C = T gives :func:`causal_linear_attention`; C = 1 a cumulative sum
    of outer products. T need not be a multiple of C (zero keys pad it).
    """
    _check_features(phi_q, phi_k, v, causal=True)
    check_positive_int("chunk_size", chunk_size)
    T, C = phi_q.shape[-2], chunk_size
    pad = -T % C
    if pad:  # zero keys and values add nothing to S or z
        padded = (F.pad(x, (0, 0, 0, pad)) for x in (phi_q, phi_k, v))
        phi_q, phi_k, v = padded
    n = (T + pad) // C

    def chunks(x):  # (..., T, f) -> (..., n, C, f)
        return x.unflatten(-2, (n, C))

    q, k, vc = chunks(phi_q), chunks(phi_k), chunks(v)
    # each chunk's own contribution to the state
    S_c = k.transpose(-2, -1) @ vc  # (..., n, d, dv)
    z_c = k.sum(dim=-2)  # (..., n, d)
    # the state before each chunk: cumsums shifted by one chunk
    S_prev = _exclusive_cumsum(S_c, dim=-3)  # (..., n, d, dv)
    z_prev = _exclusive_cumsum(z_c, dim=-2)  # (..., n, d)

    scores = q @ k.transpose(-2, -1)  # (..., n, C, C)
    scores = scores.masked_fill(~causal_mask(C, device=v.device), 0.0)
    num = scores @ vc + q @ S_prev  # (..., n, C, dv)
    den = scores.sum(-1, keepdim=True) + q @ z_prev.unsqueeze(-1)
    y = (num / (den + eps)).flatten(-3, -2)  # (..., T + pad, dv)
    return y[..., :T, :]


def recurrent_linear_attention(
    phi_q, phi_k, v, state=None, eps: float = 1e-6
):
    """Causal, as an RNN: for t = 0 .. T-1

        S_t = S_{t-1} + phi(k_t) v_t^T,   z_t = z_{t-1} + phi(k_t),
        y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps).

    ``state`` is ``(S, z)`` of shapes (..., d, dv) and (..., d) from an
    earlier call (zeros when None). Returns ``(y (..., T, dv), (S, z))``.
    """
    batch = _check_features(phi_q, phi_k, v, causal=True)
    d, dv = phi_k.shape[-1], v.shape[-1]
    if state is None:
        S = v.new_zeros(*batch, d, dv)
        z = v.new_zeros(*batch, d)
    else:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                "state must be a pair (S, z), "
                f"got {type(state).__name__}"
            )
        S, z = state
        check_layout("state[0] (S)", S, (*batch, d, dv), "(..., d, dv)")
        check_layout("state[1] (z)", z, (*batch, d), "(..., d)")
    ys = []
    steps = zip(phi_q.unbind(-2), phi_k.unbind(-2), v.unbind(-2))
    for q_t, k_t, v_t in steps:  # (..., d), (..., d), (..., dv)
        S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # (..., d, dv)
        z = z + k_t
        num = (q_t.unsqueeze(-2) @ S).squeeze(-2)  # (..., dv)
        den = (q_t * z).sum(dim=-1, keepdim=True)  # (..., 1)
        ys.append(num / (den + eps))
    return torch.stack(ys, dim=-2), (S, z)


class LinearAttention(nn.Module):
    """Multi-head linear self-attention with ``phi(x) = elu(x) + 1``.

        Q, K, V = x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v   (B, T, E)
        per head: y = phi(Q) S / (phi(Q) z + eps)        (see the module)
        out = concat_heads(y) W_o^T + b_o                       (B, T, E)

    ``qkv`` stacks W_q, W_k, W_v by rows (3E, E); head size
    d = E / num_heads. ``causal=True`` (the default) lets step t see steps
    <= t; its ``form`` -- "parallel" (masked quadratic), "chunked" or
    "recurrent" -- is how the output is computed, not what. Non-causal
    attention has the one form "parallel". :meth:`step` runs one causal
    step from a state, for generation.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        causal: bool = True,
        form: str = "parallel",
        chunk_size: int = 64,
        eps: float = 1e-6,
    ):
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("num_heads", num_heads)
        check_positive_int("chunk_size", chunk_size)
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim must be divisible by num_heads, got embed_dim="
                f"{embed_dim} and num_heads={num_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.causal = causal
        self.chunk_size = chunk_size
        self.eps = eps
        self.form = self._check_form(form)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def extra_repr(self) -> str:
        s = f"{self.embed_dim}, num_heads={self.num_heads}"
        s += f", causal={self.causal}, form={self.form!r}"
        if self.form == "chunked":
            s += f", chunk_size={self.chunk_size}"
        return s

    def _check_form(self, form: str) -> str:
        check_choice("form", form, FORMS)
        if not self.causal and form != "parallel":
            raise ValueError(
                "non-causal linear attention has only form 'parallel', "
                f"got form={form!r}"
            )
        return form

    def _features(self, x):
        """(B, T, E) -> phi(q), phi(k), v, each (B, h, T, d)."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, E) each

        def heads(t):  # (B, T, E) -> (B, h, T, d)
            t = t.unflatten(-1, (self.num_heads, self.head_dim))
            return t.transpose(1, 2)

        return elu_feature_map(heads(q)), elu_feature_map(heads(k)), heads(v)

    def forward(
        self, x: torch.Tensor, form: str | None = None
    ) -> torch.Tensor:
        """(B, T, E) -> (B, T, E); ``form`` overrides the layer's for this
        call."""
        form = self.form if form is None else self._check_form(form)
        check_sequence("x", x, self.embed_dim, "embed_dim", "(B, T, E)")
        q, k, v = self._features(x)  # (B, h, T, d) each
        if not self.causal:
            y = linear_attention(q, k, v, self.eps)
        elif form == "parallel":
            y = causal_linear_attention(q, k, v, self.eps)
        elif form == "chunked":
            y = chunked_causal_linear_attention(
                q, k, v, self.chunk_size, self.eps
            )
        else:
            y, _ = recurrent_linear_attention(q, k, v, eps=self.eps)
        y = y.transpose(1, 2).flatten(-2)  # (B, T, E)
        return self.out_proj(y)

    def step(self, x_t: torch.Tensor, state=None):
        """One causal step: x_t (B, E) and state ``(S, z)`` of shapes
        (B, h, d, d) and (B, h, d) (zeros when None) -> (y_t (B, E), new
        state)."""
        if not self.causal:
            raise ValueError(
                "step() runs causal attention, got a layer with causal=False"
            )
        check_rank("x_t", x_t, (2,), "(B, E)")
        check_size("x_t", x_t, -1, self.embed_dim, "embed_dim")
        q, k, v = self._features(x_t.unsqueeze(1))  # (B, h, 1, d) each
        y, state = recurrent_linear_attention(q, k, v, state, self.eps)
        y = y.squeeze(2).flatten(-2)  # (B, h, 1, d) -> (B, E)
        return self.out_proj(y), state
