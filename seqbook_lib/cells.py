"""Recurrent cells: one time step of an Elman RNN, an LSTM and a GRU.

A cell maps the input at one step, ``x_t`` of shape (B, I), and the previous
state to the next state. Every cell holds the same four parameters, laid out
exactly like ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` so that state
dicts load both ways:

    weight_ih  (G*H, I)   input-to-hidden weights of the G gates, stacked
                          by rows
    weight_hh  (G*H, H)   hidden-to-hidden weights, same row layout
    bias_ih    (G*H,)     (None when bias=False)
    bias_hh    (G*H,)     (None when bias=False)

with G = 1 for the RNN, 4 for the LSTM (gate order i, f, g, o) and 3 for the
GRU (gate order r, z, n). Stacking the gates lets one matmul compute all of
them at once.

Each step is split in two halves, because a layer that runs a cell over a
whole sequence (:mod:`seqbook_lib.rnn`) computes the first half for all time
steps at once:

1. the input projection ``x_proj = x_t W_ih^T + b_ih`` -- it does not depend
   on the state, so a layer does it with one big matmul over (T*B, I);
2. the recurrence -- the functions :func:`rnn_step`, :func:`lstm_step` and
   :func:`gru_step` below, which take ``x_proj`` and the previous state.

For the RNN and the LSTM, ``b_hh`` is simply added to the gates, so it is
folded into ``x_proj`` too (``x_proj = x_t W_ih^T + b_ih + b_hh``) and the
step functions get ``bias_hh=None``. The GRU multiplies part of its hidden
projection by the reset gate, so it keeps ``b_hh`` inside the step.
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
    check_size,
)

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def project_input(x, weight_ih, bias_ih=None, bias_hh=None):
    """``x W_ih^T + b_ih (+ b_hh)``: (..., I) -> (..., G*H), for one step or
    all T steps at once.

    Pass ``bias_hh`` only when it is to be folded in (RNN, LSTM; not GRU).
    """
    if bias_ih is not None and bias_hh is not None:
        bias_ih = bias_ih + bias_hh
    return F.linear(x, weight_ih, bias_ih)


def _hidden_projection(x_proj, h, weight_hh, bias_hh):
    """``x_proj + h W_hh^T (+ b_hh)``: the pre-activations of all gates,
    (B, G*H)."""
    gates = torch.addmm(x_proj, h, weight_hh.t())
    return gates if bias_hh is None else gates + bias_hh


def rnn_step(x_proj, h, weight_hh, bias_hh=None, nonlinearity="tanh"):
    """One Elman step: ``h' = act(x_proj + W_hh h + b_hh)``; all tensors
    (B, H)."""
    pre = _hidden_projection(x_proj, h, weight_hh, bias_hh)  # (B, H)
    return _ACTIVATIONS[nonlinearity](pre)


def lstm_step(x_proj, state, weight_hh, bias_hh=None):
    """One LSTM step: ``(h, c) -> (h', c')``; ``x_proj`` is (B, 4H), ``h``
    and ``c`` (B, H)."""
    h, c = state
    gates = _hidden_projection(x_proj, h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(x_proj, h, weight_hh, bias_hh=None):
    """One GRU step: ``h -> h'``; ``x_proj`` is (B, 3H) *without* b_hh,
    ``h`` is (B, H)."""
    h_proj = F.linear(h, weight_hh, bias_hh)  # (B, 3H)
    x_r, x_z, x_n = x_proj.chunk(3, dim=1)
    h_r, h_z, h_n = h_proj.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return torch.lerp(n, h, z)  # (1 - z) * n + z * h


class _Cell(nn.Module):
    """What the three cells share: parameters, init, shape checks, batching.

    A subclass sets ``num_gates`` (G) and ``fold_hidden_bias`` and implements
    ``step(x_proj, state)``.
    """

    num_gates = 1
    fold_hidden_bias = True  # b_hh may join b_ih in the input projection

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        rows = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))
            self.bias_hh = nn.Parameter(torch.empty(rows))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as in torch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_ih^T + b_ih`` (``+ b_hh`` when it can be folded in):
        (..., I) -> (..., G*H)."""
        folded = self.bias_hh if self.fold_hidden_bias else None
        return project_input(x, self.weight_ih, self.bias_ih, folded)

    def _check_input(self, x) -> bool:
        """Validate ``x``; True when it is batched (B, I)."""
        check_rank("input", x, (1, 2), "(B, I) or (I,)")
        check_size("input", x, -1, self.input_size, "input_size")
        return x.dim() == 2

    def _check_hidden(self, name: str, h, x: torch.Tensor) -> None:
        if x.dim() == 2:
            check_layout(name, h, (x.shape[0], self.hidden_size), "(B, H)")
        else:
            check_layout(
                name, h, (self.hidden_size,), "(H,) for unbatched input"
            )

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def forward(
        self, input: torch.Tensor, hx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One step of a cell with a single state ``h`` (RNN, GRU; the LSTM
        overrides this): (B, I) or (I,) in, (B, H) or (H,) out."""
        batched = self._check_input(input)
        x = input if batched else input.unsqueeze(0)  # (B, I)
        if hx is None:
            h = self._zeros(x)
        else:
            self._check_hidden("hx", hx, input)
            h = hx if batched else hx.unsqueeze(0)
        h = self.step(self.project_input(x), h)  # (B, H)
        return h if batched else h.squeeze(0)


class RNNCell(_Cell):
    """Elman RNN cell, interchangeable with ``torch.nn.RNNCell``.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    (``relu`` instead of ``tanh`` when ``nonlinearity="relu"``).
    Input (B, I) or (I,), hx (B, H) or (H,) (zeros when None); returns h_t.
    """

    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
    ):
        check_choice("nonlinearity", nonlinearity, list(_ACTIVATIONS))
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The recurrence given ``x_proj = project_input(x_t)``:
        (B, H), (B, H) -> (B, H)."""
        return rnn_step(x_proj, h, self.weight_hh, None, self.nonlinearity)


class LSTMCell(_Cell):
    """Long short-term memory cell, interchangeable with ``torch.nn.LSTMCell``.

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
        g_t = tanh   (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate cell
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    ``weight_ih`` stacks W_ii, W_if, W_ig, W_io by rows (4H, I); likewise the
    others. Input (B, I) or (I,), hx a pair (h, c) of (B, H) or (H,) (zeros
    when None); returns the pair (h_t, c_t).
    """

    num_gates = 4

    def step(
        self, x_proj: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ):
        """The recurrence given ``x_proj = project_input(x_t)``:
        (B, 4H), (h, c) -> (h', c')."""
        return lstm_step(x_proj, state, self.weight_hh, None)

    def forward(
        self,
        input: torch.Tensor,
        hx: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        batched = self._check_input(input)
        x = input if batched else input.unsqueeze(0)  # (B, I)
        if hx is None:
            h = c = self._zeros(x)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(
                    "hx of an LSTMCell must be a pair (h, c), "
                    f"got {type(hx).__name__}"
                )
            self._check_hidden("hx[0] (h)", hx[0], input)
            self._check_hidden("hx[1] (c)", hx[1], input)
            h, c = hx[0], hx[1]
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        h, c = self.step(self.project_input(x), (h, c))  # (B, H) each
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Cell):
    """Gated recurrent unit cell, interchangeable with ``torch.nn.GRUCell``.

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)        reset gate
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)        update gate
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))   candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Note that the reset gate multiplies the hidden projection *including* its
    bias b_hn, which is why b_hh cannot be folded into the input projection.
    Input (B, I) or (I,), hx (B, H) or (H,) (zeros when None); returns h_t.
    """

    num_gates = 3
    fold_hidden_bias = False

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The recurrence given ``x_proj = project_input(x_t)``:
        (B, 3H), (B, H) -> (B, H)."""
        return gru_step(x_proj, h, self.weight_hh, self.bias_hh)
