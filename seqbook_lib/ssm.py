"""A selective state-space layer (Mamba's S6, Gu & Dao 2023), in plain
PyTorch.

A state-space model runs, for each of the D input channels separately, an
N-dimensional linear system over time:

    h'(s) = A h(s) + B x(s),   y(s) = C h(s) + D x(s)     (continuous)

Discretised with step size Delta by zero-order hold,

    A_bar = exp(Delta A),
    B_bar x = (Delta A)^-1 (exp(Delta A) - I) Delta B x
            ~ Delta B x                         (Mamba's simplification)

it becomes a linear recurrence of the kind :mod:`seqbook_lib.scan`
solves, with an (N,) state per channel:

    h_t = A_bar_t * h_{t-1} + Delta_t B_t x_t         (D, N) per example
    y_t = C_t . h_t + D * x_t                          (D,)

What makes S6 *selective* is that Delta, B and C are functions of the input
at each step (in S4 they are fixed), so the layer can decide, token by
token, how much to keep (Delta small: A_bar ~ 1) and how much to take in
(Delta large: the state resets towards the new input):

    Delta_t = softplus(W_up (W_down x_t) + b_Delta)   (D,)   low rank R
    B_t = W_B x_t,   C_t = W_C x_t                    (N,)   shared by channels

A is diagonal, real and negative, ``A = -exp(A_log)`` with the S4D-real
initialisation ``A_n = -(n + 1)``, so that ``0 < A_bar < 1``: the state
decays, at a different rate in each of its N components. Because Delta,
B and C do not depend on h, the recurrence stays linear in h and can be
computed for all T steps with an associative scan (``mode="scan"``) as well
as step by step (``mode="sequential"``, and :meth:`SelectiveSSM.step`).

:class:`MambaBlock` wraps the core the way Mamba does: an input projection
into two streams, a short causal depthwise convolution and SiLU on one, the
S6 layer, a SiLU gate from the other stream, an output projection.
Mamba's fused CUDA kernel keeps the (B, T, D, N) states in fast on-chip
memory; this plain version materialises them.
"""

from __future__ import annotations

import math

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
from .scan import linear_recurrence

MODES = ("scan", "sequential")


class SelectiveSSM(nn.Module):
    """The S6 layer: a diagonal state-space model whose Delta, B and C
    depend on the input.

        Delta_t = softplus(dt_proj(x_proj_Delta(x_t)))   (D,)
        B_t, C_t = x_proj_B(x_t), x_proj_C(x_t)          (N,) each
        A = -exp(A_log)                                  (D, N)
        h_t = exp(Delta_t A) * h_{t-1} + (Delta_t x_t) B_t    (D, N)
        y_t = h_t C_t + D * x_t                          (D,)

    ``x_proj`` stacks the rows of the low-rank Delta projection (R of them),
    of W_B and of W_C: (R + 2N, D). ``dt_proj`` (D, R) with bias maps
    back up; its bias is initialised so that Delta starts log-uniform in
    [dt_min, dt_max], as in Mamba. Input (B, T, D), optional h0 (B, D, N);
    returns (y (B, T, D), h_n (B, D, N)).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        mode: str = "scan",
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_state", d_state)
        dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        check_positive_int("dt_rank", dt_rank)
        check_choice("mode", mode, MODES)
        if not 0 < dt_min <= dt_max:
            raise ValueError(
                "expected 0 < dt_min <= dt_max, "
                f"got dt_min={dt_min!r}, dt_max={dt_max!r}"
            )
        self.d_model = d_model
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.mode = mode
        self.x_proj = nn.Linear(d_model, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_model, bias=True)
        # S4D-real: A_n = -(n + 1) in every channel, stored as log(-A)
        n = torch.arange(1.0, d_state + 1)  # default dtype
        self.A_log = nn.Parameter(n.log().repeat(d_model, 1))  # (D, N)
        self.D = nn.Parameter(torch.ones(d_model))
        self._init_dt(dt_min, dt_max)

    def _init_dt(self, dt_min: float, dt_max: float) -> None:
        """dt_proj's bias = softplus^-1(dt), dt log-uniform in
        [dt_min, dt_max]; its weight ~ U(-1/sqrt(R), 1/sqrt(R))."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        u = torch.rand(self.d_model)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)))
        dt = (dt * dt_min).clamp(min=1e-4)
        with torch.no_grad():  # softplus^-1(y) = y + log(1 - exp(-y))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def extra_repr(self) -> str:
        return (
            f"{self.d_model}, d_state={self.d_state}, "
            f"dt_rank={self.dt_rank}, mode={self.mode!r}"
        )

    # -- the pieces of one step ----------------------------------------------

    def selection(self, x: torch.Tensor):
        """The input-dependent parameters: x (..., D) -> Delta (..., D),
        B (..., N), C (..., N)."""
        sizes = (self.dt_rank, self.d_state, self.d_state)
        low, B, C = self.x_proj(x).split(sizes, dim=-1)
        delta = F.softplus(self.dt_proj(low))  # (..., D)
        return delta, B, C

    def discretise(self, delta, B, x):
        """Zero-order hold for A, Euler for B: ``A_bar = exp(Delta A)``,
        ``B_bar x = Delta x B``; each (..., D, N)."""
        A = -torch.exp(self.A_log)  # (D, N)
        A_bar = torch.exp(delta.unsqueeze(-1) * A)  # (..., D, N)
        Bx = (delta * x).unsqueeze(-1) * B.unsqueeze(-2)  # (..., D, N)
        return A_bar, Bx

    def readout(self, h, C, x):
        """``y = h C + D * x``: h (..., D, N), C (..., N), x (..., D) ->
        (..., D)."""
        y = (h @ C.unsqueeze(-1)).squeeze(-1)  # (..., D)
        return y + self.D * x

    # -- whole sequences and single steps -------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        mode: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> y (B, T, D), h_n (B, D, N); ``mode`` overrides the
        layer's for this call."""
        mode = self.mode if mode is None else mode
        check_choice("mode", mode, MODES)
        check_sequence("x", x, self.d_model, "d_model", "(B, T, D)")
        self._check_state("h0", h0, x.shape[0])
        delta, B, C = self.selection(x)  # (B, T, D), (B, T, N), (B, T, N)
        if mode == "sequential":
            return self._loop(h0, delta, B, C, x)
        A_bar, Bx = self.discretise(delta, B, x)  # (B, T, D, N) each
        h = linear_recurrence(A_bar, Bx, h0, dim=1)  # (B, T, D, N)
        return self.readout(h, C, x), h[:, -1]

    def step(self, x_t: torch.Tensor, h: torch.Tensor | None = None):
        """One step, for generation: x_t (B, D) and h_{t-1} (B, D, N)
        (zeros when None) -> (y_t (B, D), h_t (B, D, N))."""
        check_rank("x_t", x_t, (2,), "(B, D)")
        check_size("x_t", x_t, -1, self.d_model, "d_model")
        self._check_state("h", h, x_t.shape[0])
        return self._advance(h, *self.selection(x_t), x_t)

    def _advance(self, h, delta, B, C, x):
        """``h_t = A_bar_t * h_{t-1} + Delta_t x_t B_t``, ``y_t = h_t C_t +
        D x_t`` from h_{t-1} (B, D, N) or None (zeros) -> (y_t, h_t)."""
        A_bar, Bx = self.discretise(delta, B, x)  # (B, D, N) each
        h = Bx if h is None else torch.addcmul(Bx, A_bar, h)  # (B, D, N)
        return self.readout(h, C, x), h  # (B, D), (B, D, N)

    def _loop(self, h, delta, B, C, x):
        """``mode="sequential"``: :meth:`_advance` for t = 0 .. T-1."""
        ys = []
        for t in range(x.shape[1]):
            y_t, h = self._advance(h, delta[:, t], B[:, t], C[:, t], x[:, t])
            ys.append(y_t)  # (B, D)
        return torch.stack(ys, dim=1), h  # (B, T, D), (B, D, N)

    def _check_state(self, name: str, h, batch: int) -> None:
        """``h`` is None or a state (B, D, N)."""
        if h is not None:
            shape = (batch, self.d_model, self.d_state)
            check_layout(name, h, shape, "(B, D, N)")


class MambaBlock(nn.Module):
    """A Mamba-style block around :class:`SelectiveSSM` (no norm, no
    residual: a model adds those around it).

        u, z = in_proj(x).chunk(2)                 (B, T, E) each, E = expand*d
        u = silu(causal_depthwise_conv(u))         kernel d_conv, past only
        y = SelectiveSSM(u) * silu(z)              (B, T, E)
        out = out_proj(y)                          (B, T, d)

    The convolution pads d_conv - 1 steps on the left only, so step t sees
    inputs t - d_conv + 1 .. t: the block is causal. Input (B, T, d);
    returns (B, T, d).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        mode: str = "scan",
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_conv", d_conv)
        check_positive_int("expand", expand)
        self.d_model = d_model
        d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1
        )
        self.ssm = SelectiveSSM(d_inner, d_state, dt_rank, mode=mode)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, mode: str | None = None
    ) -> torch.Tensor:
        """(B, T, d) -> (B, T, d); ``mode`` is passed to the S6 layer."""
        check_sequence("x", x, self.d_model, "d_model", "(B, T, d)")
        T = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        # padding on both sides; keeping the first T outputs keeps the past
        u = self.conv1d(u.transpose(1, 2))[..., :T].transpose(1, 2)
        y, _ = self.ssm(F.silu(u), mode=mode)  # (B, T, E)
        return self.out_proj(y * F.silu(z))
