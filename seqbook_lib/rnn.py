"""Multi-layer, optionally bidirectional RNN, LSTM and GRU over whole
sequences.

Drop-in replacements for ``torch.nn.RNN`` / ``LSTM`` / ``GRU``: same
constructor arguments, parameter names and shapes, forward signature and
numbers. The one addition is ``forward(..., lengths=...)``, which replaces the
``pack_padded_sequence`` / ``pad_packed_sequence`` round trip.

Layout
------
Input is time-major ``(T, B, I)``, or ``(B, T, I)`` with ``batch_first=True``,
or unbatched ``(T, I)``. The output stacks the top layer's hidden state at
every step, ``(T, B, D*H)`` (same batch_first / unbatched layout as the
input), with the D = 2 directions of a bidirectional module concatenated on
the last axis, forward first. The final states ``h_n`` (and ``c_n``) are
always ``(L*D, B, H)``: layer 0 forward, layer 0 reverse, layer 1 forward, ...
An initial ``hx`` uses the same layout; it defaults to zeros.

Parameters are named like torch's: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}`` for layer k, with a ``_reverse`` suffix for
the reverse direction. Layer 0 reads I features, later layers read D*H.

How a layer runs
----------------
Each (layer, direction) is a scan of a cell step from :mod:`seqbook_lib.cells`
over time. The input projection ``x W_ih^T + b`` does not depend on the state,
so it is computed for all T steps with one matmul before the loop; each step
then does one fused ``(B, H) @ (H, G*H)`` matmul for all gates plus the
gate nonlinearities.

Ragged batches
--------------
``lengths`` (B,) gives each sequence's valid length. A (T, B, 1) mask then
(a) zeroes the padded inputs, (b) keeps the state unchanged past each length,
so the final state is the one at the last valid step, and (c) zeroes the
outputs there. The reverse direction reverses each sequence within its own
length (a gather), so it starts at the sequence's last valid step. This gives
the numbers torch gives for a packed sequence, and padding never leaks in.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_layout,
    check_lengths,
    check_positive_int,
    check_probability,
    check_rank,
    check_size,
)
from .cells import _ACTIVATIONS, gru_step, lstm_step, project_input, rnn_step


def _hidden(state):
    """The hidden state h of a step's state (the LSTM's is the pair (h, c))."""
    return state[0] if isinstance(state, tuple) else state


def _empty(*shape):
    """A new parameter of ``shape``; ``reset_parameters`` fills it."""
    return nn.Parameter(torch.empty(*shape))


def _keep_where(valid, new, old):
    """Take ``new`` where ``valid`` (B, 1) and keep ``old`` elsewhere, for h
    or (h, c)."""
    if isinstance(new, tuple):
        return tuple(torch.where(valid, n, o) for n, o in zip(new, old))
    return torch.where(valid, new, old)


def _reverse_time(x, reverse_index):
    """Reverse each sequence of ``x`` (T, B, F) in time -- within its own
    length if ragged."""
    if reverse_index is None:
        return x.flip(0)
    return x.gather(0, reverse_index.unsqueeze(-1).expand_as(x))


class _RecurrentLayers(nn.Module):
    """What RNN, LSTM and GRU share; a subclass sets ``num_gates``,
    ``fold_hidden_bias`` (as its cell does) and implements ``_step``."""

    num_gates = 1
    fold_hidden_bias = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_probability("dropout", dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers only, "
                "so it has no effect with num_layers=1",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1

        rows = self.num_gates * hidden_size
        for layer in range(num_layers):
            if layer == 0:
                features = input_size
            else:
                features = self.num_directions * hidden_size
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh = self._param_names(layer, direction)
                self.register_parameter(w_ih, _empty(rows, features))
                self.register_parameter(w_hh, _empty(rows, hidden_size))
                for b in (b_ih, b_hh):
                    self.register_parameter(b, _empty(rows) if bias else None)
        self.reset_parameters()

    @staticmethod
    def _param_names(layer: int, direction: int) -> list[str]:
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return [f"{kind}{suffix}" for kind in kinds]

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as in torch."""
        bound = self.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    # -- the recurrence -------------------------------------------------------

    def _scan(self, x, state, layer: int, direction: int, mask):
        """Run one (layer, direction) forward in time over ``x`` (T, B, F).

        Returns the hidden states (T, B, H) and the final state.
        """
        names = self._param_names(layer, direction)
        w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in names)
        if self.fold_hidden_bias:  # (T, B, G*H)
            x_proj, b_hh = project_input(x, w_ih, b_ih, b_hh), None
        else:
            x_proj = project_input(x, w_ih, b_ih)  # (T, B, G*H)
        valid = mask.unbind(0) if mask is not None else None  # T x (B, 1)
        hs = []
        for t, x_t in enumerate(x_proj.unbind(0)):
            new = self._step(x_t, state, w_hh, b_hh)
            state = new if valid is None else _keep_where(valid[t], new, state)
            hs.append(_hidden(state))
        out = torch.stack(hs)  # (T, B, H)
        if mask is not None:
            out = torch.where(mask, out, 0.0)  # zero past each length
        return out, state

    # -- forward --------------------------------------------------------------

    def forward(self, input: torch.Tensor, hx=None, lengths=None):
        x, batched = self._time_major(input)  # (T, B, I)
        T, B = x.shape[:2]
        # L*D states, each (B, H) or (h, c)
        states = self._initial_states(hx, x, batched)

        mask = reverse_index = None
        if lengths is not None:
            lengths = check_lengths(lengths, B, T).to(x.device)
            steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
            valid = steps < lengths  # (T, B)
            mask = valid.unsqueeze(-1)  # (T, B, 1)
            # padding (even NaN) never reaches the math
            x = torch.where(mask, x, 0.0)
            if self.bidirectional:  # (T, B)
                reverse_index = torch.where(valid, lengths - 1 - steps, steps)

        finals = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(self.num_directions):
                state = states[layer * self.num_directions + direction]
                reverse = direction == 1
                x_d = _reverse_time(x, reverse_index) if reverse else x
                # (T, B, H)
                out, final = self._scan(x_d, state, layer, direction, mask)
                if reverse:
                    out = _reverse_time(out, reverse_index)
                outs.append(out)
                finals.append(final)
            # (T, B, D*H)
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)

        output = x if not self.batch_first else x.transpose(0, 1)
        if not batched:
            output = output.squeeze(1)
        return output, self._final_states(finals, batched)

    # -- shapes ---------------------------------------------------------------

    def _time_major(self, input):
        """Validate ``input`` and return it as (T, B, I), plus whether it was
        batched."""
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        check_rank("input", input, (2, 3), f"{layout} or unbatched (T, I)")
        check_size("input", input, -1, self.input_size, "input_size")
        if input.dim() == 2:
            x, batched = input.unsqueeze(1), False
        else:
            x = input.transpose(0, 1) if self.batch_first else input
            batched = True
        if x.shape[0] == 0:
            raise ValueError(
                "input must have at least one time step, "
                f"got shape {tuple(input.shape)}"
            )
        return x, batched

    def _check_state(self, name: str, h, x, batched: bool) -> torch.Tensor:
        """Validate one initial state tensor and return it as (L*D, B, H)."""
        ld = self.num_layers * self.num_directions
        if batched:
            expected = (ld, x.shape[1], self.hidden_size)
            check_layout(name, h, expected, "(L*D, B, H)")
            return h
        check_layout(
            name, h, (ld, self.hidden_size), "(L*D, H) for unbatched input"
        )
        return h.unsqueeze(1)

    def _zeros(self, x):
        ld = self.num_layers * self.num_directions
        return x.new_zeros(ld, x.shape[1], self.hidden_size)

    def _initial_states(self, hx, x, batched):
        if hx is None:
            h = self._zeros(x)
        else:
            h = self._check_state("hx", hx, x, batched)
        return list(h.unbind(0))

    def _final_states(self, finals, batched):
        h_n = torch.stack(finals)  # (L*D, B, H)
        return h_n if batched else h_n.squeeze(1)


class RNN(_RecurrentLayers):
    """Multi-layer Elman RNN, interchangeable with ``torch.nn.RNN``.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)    (or relu)

    ``forward(input, hx=None, lengths=None) -> (output, h_n)``; see the module
    docstring for the layouts.
    """

    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        check_choice("nonlinearity", nonlinearity, list(_ACTIVATIONS))
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional,
        )
        self.nonlinearity = nonlinearity

    def _step(self, x_proj, h, weight_hh, bias_hh):
        return rnn_step(x_proj, h, weight_hh, bias_hh, self.nonlinearity)


class LSTM(_RecurrentLayers):
    """Multi-layer LSTM, interchangeable with ``torch.nn.LSTM``.

    Each layer runs :class:`~seqbook_lib.cells.LSTMCell`'s step (gates i, f,
    g, o). ``forward(input, hx=None, lengths=None) -> (output, (h_n, c_n))``
    with ``hx`` a pair ``(h_0, c_0)`` of (L*D, B, H) or None.
    """

    num_gates = 4

    def _step(self, x_proj, state, weight_hh, bias_hh):
        return lstm_step(x_proj, state, weight_hh, bias_hh)

    def _initial_states(self, hx, x, batched):
        if hx is None:
            h = c = self._zeros(x)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(
                    "hx of an LSTM must be a pair (h_0, c_0), "
                    f"got {type(hx).__name__}"
                )
            h = self._check_state("hx[0] (h_0)", hx[0], x, batched)
            c = self._check_state("hx[1] (c_0)", hx[1], x, batched)
        return list(zip(h.unbind(0), c.unbind(0)))

    def _final_states(self, finals, batched):
        h_n = torch.stack([h for h, _ in finals])  # (L*D, B, H)
        c_n = torch.stack([c for _, c in finals])
        return (h_n, c_n) if batched else (h_n.squeeze(1), c_n.squeeze(1))


class GRU(_RecurrentLayers):
    """Multi-layer GRU, interchangeable with ``torch.nn.GRU``.

    Each layer runs :class:`~seqbook_lib.cells.GRUCell`'s step (gates r, z,
    n). ``forward(input, hx=None, lengths=None) -> (output, h_n)``.
    """

    num_gates = 3
    fold_hidden_bias = False

    def _step(self, x_proj, h, weight_hh, bias_hh):
        return gru_step(x_proj, h, weight_hh, bias_hh)
