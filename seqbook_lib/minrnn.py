"""minGRU and minLSTM: recurrent layers that train with a parallel scan.

Feng et al. (2024, "Were RNNs All We Needed?") strip the GRU and the LSTM
down until their gates no longer read the previous state. What is left is a
linear recurrence in h whose coefficients depend on the input alone,

    h_t = a_t * h_{t-1} + b_t,      a_t, b_t functions of x_t only,

so all T steps can be computed at once by a scan
(:mod:`seqbook_lib.scan`) instead of T dependent steps.

minGRU                                   minLSTM
    z_t = sigmoid(W_z x_t + b_z)             f_t = sigmoid(W_f x_t + b_f)
    h~_t = g(W_h x_t + b_h)                  i_t = sigmoid(W_i x_t + b_i)
    h_t = (1 - z_t) h_{t-1} + z_t h~_t       h~_t = g(W_h x_t + b_h)
                                             f'_t = f_t / (f_t + i_t)
                                             i'_t = i_t / (f_t + i_t)
                                             h_t = f'_t h_{t-1} + i'_t h~_t

with the paper's activation ``g(x) = x + 1/2`` for x >= 0 and
``sigmoid(x)`` for x < 0, which keeps the candidate state h~ positive. The
coefficients are positive then, and so is h (from h0 = 0 or h0 > 0), which
lets ``mode="parallel"`` solve the recurrence in log space
(:func:`~seqbook_lib.scan.log_space_linear_recurrence`) with every log
computed stably from the pre-activations:

    log sigmoid(k) = -softplus(-k),   log (1 - sigmoid(k)) = -softplus(k),
    log f'_t = -softplus(d_t),  log i'_t = -softplus(-d_t),
    d_t = softplus(-k_f) - softplus(-k_i)        (= log i_t - log f_t).

``mode="sequential"`` runs the same recurrence step by step in linear
space, as :meth:`step` does for generation. Both give the same numbers and
gradients.

Layout: input (B, T, I) batch first; output (B, T, H), the state at every
step; the forward returns ``(output, h_n)`` with ``h_n = output[:, -1]``
(B, H). ``h0`` (B, H) is the state before step 0 (zeros when None); it must
be positive in ``mode="parallel"``.

The gates and the candidate come from one ``nn.Linear`` (``proj``), rows
stacked as z, h~ (minGRU) or f, i, h~ (minLSTM).
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
from .scan import (
    linear_recurrence_loop,
    log_space_linear_recurrence,
)

MODES = ("parallel", "sequential")


def g(x: torch.Tensor) -> torch.Tensor:
    """The positive activation of minGRU/minLSTM: ``x + 1/2`` for x >= 0,
    ``sigmoid(x)`` for x < 0 (continuous: both sides give 1/2 at 0)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """``log g(x)`` without taking the log of a small number:
    ``log(x + 1/2)`` for x >= 0, ``-softplus(-x)`` for x < 0."""
    # zero where x < 0 keeps the unused branch finite (no NaN gradient);
    # not relu, whose gradient at 0 is 0, while d/dx log(x + 1/2) is 2
    positive = torch.where(x >= 0, x, 0.0)
    return torch.where(x >= 0, torch.log(positive + 0.5), -F.softplus(-x))


class _MinRNN(nn.Module):
    """What minGRU and minLSTM share: the projection, shape checks, the two
    modes. A subclass sets ``num_gates`` (rows of ``proj`` per hidden unit)
    and computes the coefficients (a, b) of ``h_t = a_t h_{t-1} + b_t``,
    directly and as logs."""

    num_gates = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        mode: str = "parallel",
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_choice("mode", mode, MODES)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.mode = mode
        self.proj = nn.Linear(
            input_size, self.num_gates * hidden_size, bias=bias
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj.bias is None:
            s += ", bias=False"
        return s + f", mode={self.mode!r}"

    def coefficients(self, x: torch.Tensor):
        """(a, b) of the recurrence, each (..., H), from x (..., I)."""
        raise NotImplementedError

    def log_coefficients(self, x: torch.Tensor):
        """(log a, log b), each (..., H), computed stably."""
        raise NotImplementedError

    def forward(
        self,
        input: torch.Tensor,
        h0: torch.Tensor | None = None,
        mode: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, I) -> output (B, T, H), h_n (B, H); ``mode`` overrides
        the layer's for this call."""
        mode = self.mode if mode is None else mode
        check_choice("mode", mode, MODES)
        check_sequence(
            "input", input, self.input_size, "input_size", "(B, T, I)"
        )
        if h0 is not None:
            B = input.shape[0]
            check_layout("h0", h0, (B, self.hidden_size), "(B, H)")
        if mode == "parallel":
            log_a, log_b = self.log_coefficients(input)  # (B, T, H) each
            h = log_space_linear_recurrence(log_a, log_b, h0, dim=1)
        else:
            a, b = self.coefficients(input)  # (B, T, H) each
            h = linear_recurrence_loop(a, b, h0, dim=1)
        return h, h[:, -1]  # (B, T, H), (B, H)

    def step(
        self, x_t: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One step, for generation: ``h_t = a_t * h_{t-1} + b_t`` from
        x_t (B, I) and h_{t-1} (B, H) (zeros when None); returns h_t."""
        check_rank("x_t", x_t, (2,), "(B, I)")
        check_size("x_t", x_t, -1, self.input_size, "input_size")
        a, b = self.coefficients(x_t)  # (B, H) each
        if h is None:
            return b
        check_layout("h", h, (x_t.shape[0], self.hidden_size), "(B, H)")
        return torch.addcmul(b, a, h)


class MinGRU(_MinRNN):
    """minGRU (Feng et al. 2024): a GRU whose gates ignore h_{t-1}.

        z_t  = sigmoid(W_z x_t + b_z)                update gate
        h~_t = g(W_h x_t + b_h)                      candidate, positive
        h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

    Input (B, T, I), optional h0 (B, H); returns (output (B, T, H),
    h_n (B, H)). ``mode="parallel"`` solves the recurrence by a log-space
    scan, ``mode="sequential"`` step by step; :meth:`step` does one step.
    ``proj.weight`` stacks W_z, W_h by rows (2H, I).
    """

    num_gates = 2

    def _split(self, x):
        k, pre_h = self.proj(x).chunk(2, dim=-1)  # (..., H) each
        return k, pre_h

    def coefficients(self, x):
        k, pre_h = self._split(x)
        z = torch.sigmoid(k)
        return 1 - z, z * g(pre_h)

    def log_coefficients(self, x):
        k, pre_h = self._split(x)
        log_z = -F.softplus(-k)
        log_one_minus_z = -F.softplus(k)
        return log_one_minus_z, log_z + log_g(pre_h)


class MinLSTM(_MinRNN):
    """minLSTM (Feng et al. 2024): an LSTM whose gates ignore h_{t-1},
    with the forget and input gates normalised to sum to one.

        f_t  = sigmoid(W_f x_t + b_f)                forget gate
        i_t  = sigmoid(W_i x_t + b_i)                input gate
        h~_t = g(W_h x_t + b_h)                      candidate, positive
        f'_t = f_t / (f_t + i_t),   i'_t = i_t / (f_t + i_t)
        h_t  = f'_t * h_{t-1} + i'_t * h~_t

    There is no separate cell state or output gate. Input (B, T, I),
    optional h0 (B, H); returns (output (B, T, H), h_n (B, H)).
    ``proj.weight`` stacks W_f, W_i, W_h by rows (3H, I).
    """

    num_gates = 3

    def _split(self, x):
        k_f, k_i, pre_h = self.proj(x).chunk(3, dim=-1)  # (..., H) each
        # d = log i - log f, from the pre-activations
        d = F.softplus(-k_f) - F.softplus(-k_i)
        return d, pre_h

    def coefficients(self, x):
        d, pre_h = self._split(x)
        f_norm = torch.sigmoid(-d)  # f / (f + i) = 1 / (1 + i / f)
        i_norm = torch.sigmoid(d)  # i / (f + i)
        return f_norm, i_norm * g(pre_h)

    def log_coefficients(self, x):
        d, pre_h = self._split(x)
        return -F.softplus(d), -F.softplus(-d) + log_g(pre_h)
