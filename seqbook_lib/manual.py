"""Recurrent cells computed by hand, one time step at a time, in NumPy.

The "computations by hand" chapter follows a single short sequence through an
RNN, an LSTM and a GRU cell and shows every intermediate number. The functions
here do exactly that: they take one sequence ``x`` of shape (T, I) and the
weights in PyTorch's layout, and return one record per time step holding the
input, the previous state, every pre-activation (split into its input part and
its hidden part), every gate, the candidate and the new state.

Weights follow ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``: ``W_ih`` is
(G*H, I), ``W_hh`` is (G*H, H), the biases are (G*H,), where G is the number of
gates stacked in the rows (1 for the RNN, 4 for the LSTM in the order i, f, g,
o, and 3 for the GRU in the order r, z, n). Everything is computed in float64,
so the numbers match ``torch.float64`` to rounding.

``trace_table`` turns a trace into a table (markdown, or HTML in a notebook)
and ``rnn_bptt`` runs back-propagation through time by hand on an RNN trace.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, fields
from typing import ClassVar, Sequence

import numpy as np

__all__ = [
    "RNNStep",
    "LSTMStep",
    "GRUStep",
    "BPTTStep",
    "RNNGradients",
    "rnn_trace",
    "lstm_trace",
    "gru_trace",
    "rnn_bptt",
    "cell_weights",
    "TraceTable",
    "trace_table",
]


# --------------------------------------------------------------------------
# Records: one per time step
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RNNStep:
    """One step of the Elman RNN cell.

    a_x = W_ih x_t + b_ih
    a_h = W_hh h_{t-1} + b_hh
    a   = a_x + a_h
    h_t = tanh(a)   (or relu(a))
    """

    t: int
    x: np.ndarray  # (I,)
    h_prev: np.ndarray  # (H,)
    a_x: np.ndarray  # (H,)
    a_h: np.ndarray  # (H,)
    a: np.ndarray  # (H,)
    h: np.ndarray  # (H,)
    nonlinearity: str

    table_columns: ClassVar[tuple] = ("t", "x", "h_prev", "a", "h")


@dataclass(frozen=True, eq=False)
class LSTMStep:
    """One step of the LSTM cell (gate order i, f, g, o as in PyTorch).

    For each gate k in {i, f, g, o}:
        k_x   = W_ik x_t + b_ik          (rows of W_ih, b_ih)
        k_h   = W_hk h_{t-1} + b_hk      (rows of W_hh, b_hh)
        k_pre = k_x + k_h
    i = sigmoid(i_pre), f = sigmoid(f_pre), g = tanh(g_pre), o = sigmoid(o_pre)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
    """

    t: int
    x: np.ndarray  # (I,)
    h_prev: np.ndarray  # (H,)
    c_prev: np.ndarray  # (H,)
    i_x: np.ndarray
    i_h: np.ndarray
    i_pre: np.ndarray
    f_x: np.ndarray
    f_h: np.ndarray
    f_pre: np.ndarray
    g_x: np.ndarray
    g_h: np.ndarray
    g_pre: np.ndarray
    o_x: np.ndarray
    o_h: np.ndarray
    o_pre: np.ndarray
    i: np.ndarray  # input gate
    f: np.ndarray  # forget gate
    g: np.ndarray  # candidate cell values
    o: np.ndarray  # output gate
    c: np.ndarray  # new cell state
    h: np.ndarray  # new hidden state

    table_columns: ClassVar[tuple] = (
        "t",
        "x",
        "h_prev",
        "c_prev",
        "i",
        "f",
        "g",
        "o",
        "c",
        "h",
    )


@dataclass(frozen=True, eq=False)
class GRUStep:
    """One step of the GRU cell (gate order r, z, n as in PyTorch).

    For each block k in {r, z, n}:
        k_x = W_ik x_t + b_ik,   k_h = W_hk h_{t-1} + b_hk
    r     = sigmoid(r_x + r_h)            reset gate
    z     = sigmoid(z_x + z_h)            update gate
    n_pre = n_x + r * n_h                 (the reset gate scales the hidden
                                           part, bias included)
    n     = tanh(n_pre)                   candidate
    h_t   = (1 - z) * n + z * h_{t-1}
    """

    t: int
    x: np.ndarray  # (I,)
    h_prev: np.ndarray  # (H,)
    r_x: np.ndarray
    r_h: np.ndarray
    r_pre: np.ndarray
    z_x: np.ndarray
    z_h: np.ndarray
    z_pre: np.ndarray
    n_x: np.ndarray
    n_h: np.ndarray
    n_pre: np.ndarray
    r: np.ndarray  # reset gate
    z: np.ndarray  # update gate
    n: np.ndarray  # candidate
    h: np.ndarray  # new hidden state

    table_columns: ClassVar[tuple] = ("t", "x", "h_prev", "r", "z", "n", "h")


@dataclass(frozen=True, eq=False)
class BPTTStep:
    """Gradients at one step of back-propagation through time in an RNN.

    dL_dh_direct = the part of dL/dh_t that the loss gives directly
    dL_dh        = dL_dh_direct + W_hh^T dL_da_{t+1}
                   (total, through later steps too)
    dL_da        = dL_dh * f'(a_t)
                   f' = 1 - h_t^2 for tanh, [a_t > 0] for relu
    """

    t: int
    dL_dh_direct: np.ndarray  # (H,)
    dL_dh: np.ndarray  # (H,)
    dL_da: np.ndarray  # (H,)

    table_columns: ClassVar[tuple] = ("t", "dL_dh_direct", "dL_dh", "dL_da")


@dataclass(frozen=True, eq=False)
class RNNGradients:
    """Everything ``rnn_bptt`` computes: per-step records and the summed
    weight gradients.

    dW_ih = sum_t dL_da_t x_t^T        db_ih = db_hh = sum_t dL_da_t
    dW_hh = sum_t dL_da_t h_{t-1}^T    dh0 = W_hh^T dL_da_1
    """

    steps: list  # of BPTTStep, in time order
    dW_ih: np.ndarray  # (H, I)
    dW_hh: np.ndarray  # (H, H)
    db_ih: np.ndarray  # (H,)
    db_hh: np.ndarray  # (H,)
    dh0: np.ndarray  # (H,)


# --------------------------------------------------------------------------
# Input checks and small math helpers
# --------------------------------------------------------------------------


def _as_float64(name: str, value) -> np.ndarray:
    """A float64 NumPy copy of an array-like (a torch tensor is detached
    first)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be array-like of numbers, got {type(value).__name__}"
        ) from err


def _check_shape(name: str, a: np.ndarray, expected: tuple) -> None:
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {a.shape}")


def _prepare(x, W_ih, W_hh, b_ih, b_hh, gates: int, states: dict):
    """Validate and convert the inputs of a trace; returns
    (x, W_ih, W_hh, b_ih, b_hh, states, H).

    H is read from W_hh's second dimension, I from x's. ``None`` biases and
    initial states become zeros.
    """
    x = _as_float64("x", x)
    if x.ndim != 2:
        raise ValueError(
            "x must have 2 dimensions (T, I): a single sequence, "
            f"got shape {x.shape}"
        )
    if x.shape[0] < 1:
        raise ValueError(
            f"x must hold at least one time step, got shape {x.shape}"
        )
    W_hh = _as_float64("W_hh", W_hh)
    if W_hh.ndim != 2:
        raise ValueError(
            f"W_hh must have 2 dimensions ({gates}*H, H), "
            f"got shape {W_hh.shape}"
        )
    H, I = W_hh.shape[1], x.shape[1]
    _check_shape("W_hh", W_hh, (gates * H, H))
    W_ih = _as_float64("W_ih", W_ih)
    _check_shape("W_ih", W_ih, (gates * H, I))
    biases = []
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        b = np.zeros(gates * H) if b is None else _as_float64(name, b)
        _check_shape(name, b, (gates * H,))
        biases.append(b)
    prepared = {}
    for name, s in states.items():
        s = np.zeros(H) if s is None else _as_float64(name, s)
        _check_shape(name, s, (H,))
        prepared[name] = s
    return x, W_ih, W_hh, biases[0], biases[1], prepared, H


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _split(v: np.ndarray, parts: int) -> list:
    """(G*H,) -> G arrays of (H,), in row order."""
    return np.split(v, parts)


# --------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------


def rnn_trace(
    x, W_ih, W_hh, b_ih=None, b_hh=None, h0=None, nonlinearity="tanh"
) -> list:
    """Run an Elman RNN cell over ``x`` (T, I) and record every step (see
    ``RNNStep``).

    ``nonlinearity`` is "tanh" or "relu"; ``h0`` defaults to zeros; ``None``
    biases mean a cell built with ``bias=False``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            "nonlinearity must be one of ['tanh', 'relu'], "
            f"got {nonlinearity!r}"
        )
    x, W_ih, W_hh, b_ih, b_hh, s, _ = _prepare(
        x, W_ih, W_hh, b_ih, b_hh, 1, {"h0": h0}
    )
    f = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0.0))
    h, trace = s["h0"], []
    for t, x_t in enumerate(x, start=1):
        a_x = W_ih @ x_t + b_ih  # (H,)
        a_h = W_hh @ h + b_hh  # (H,)
        a = a_x + a_h
        h_new = f(a)
        trace.append(RNNStep(t, x_t, h, a_x, a_h, a, h_new, nonlinearity))
        h = h_new
    return trace


def lstm_trace(x, W_ih, W_hh, b_ih=None, b_hh=None, h0=None, c0=None) -> list:
    """Run an LSTM cell over ``x`` (T, I) and record every step (see
    ``LSTMStep``)."""
    x, W_ih, W_hh, b_ih, b_hh, s, _ = _prepare(
        x, W_ih, W_hh, b_ih, b_hh, 4, {"h0": h0, "c0": c0}
    )
    h, c, trace = s["h0"], s["c0"], []
    for t, x_t in enumerate(x, start=1):
        i_x, f_x, g_x, o_x = _split(W_ih @ x_t + b_ih, 4)  # each (H,)
        i_h, f_h, g_h, o_h = _split(W_hh @ h + b_hh, 4)
        i_pre, f_pre, g_pre, o_pre = i_x + i_h, f_x + f_h, g_x + g_h, o_x + o_h
        i, f, g, o = (
            _sigmoid(i_pre),
            _sigmoid(f_pre),
            np.tanh(g_pre),
            _sigmoid(o_pre),
        )
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        trace.append(
            LSTMStep(
                t,
                x_t,
                h,
                c,
                i_x,
                i_h,
                i_pre,
                f_x,
                f_h,
                f_pre,
                g_x,
                g_h,
                g_pre,
                o_x,
                o_h,
                o_pre,
                i,
                f,
                g,
                o,
                c_new,
                h_new,
            )
        )
        h, c = h_new, c_new
    return trace


def gru_trace(x, W_ih, W_hh, b_ih=None, b_hh=None, h0=None) -> list:
    """Run a GRU cell over ``x`` (T, I) and record every step (see
    ``GRUStep``)."""
    x, W_ih, W_hh, b_ih, b_hh, s, _ = _prepare(
        x, W_ih, W_hh, b_ih, b_hh, 3, {"h0": h0}
    )
    h, trace = s["h0"], []
    for t, x_t in enumerate(x, start=1):
        r_x, z_x, n_x = _split(W_ih @ x_t + b_ih, 3)  # each (H,)
        r_h, z_h, n_h = _split(W_hh @ h + b_hh, 3)
        r_pre, z_pre = r_x + r_h, z_x + z_h
        r, z = _sigmoid(r_pre), _sigmoid(z_pre)
        n_pre = n_x + r * n_h
        n = np.tanh(n_pre)
        h_new = (1.0 - z) * n + z * h
        trace.append(
            GRUStep(
                t,
                x_t,
                h,
                r_x,
                r_h,
                r_pre,
                z_x,
                z_h,
                z_pre,
                n_x,
                n_h,
                n_pre,
                r,
                z,
                n,
                h_new,
            )
        )
        h = h_new
    return trace


def cell_weights(module) -> dict:
    """``{"W_ih", "W_hh", "b_ih", "b_hh"}`` as float64 NumPy arrays from a
    torch cell or layer.

    Works with ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell`` (``weight_ih``...)
    and with the first layer, forward direction, of ``RNN``/``LSTM``/``GRU``
    (``weight_ih_l0``...). Biases are ``None`` when the module has none. Use as
    ``lstm_trace(x, **cell_weights(cell))``.
    """
    for suffix in ("", "_l0"):
        if hasattr(module, "weight_ih" + suffix):
            get = lambda n: getattr(module, n + suffix, None)  # noqa: E731
            b_ih, b_hh = get("bias_ih"), get("bias_hh")
            return {
                "W_ih": _as_float64("weight_ih", get("weight_ih")),
                "W_hh": _as_float64("weight_hh", get("weight_hh")),
                "b_ih": None if b_ih is None else _as_float64("bias_ih", b_ih),
                "b_hh": None if b_hh is None else _as_float64("bias_hh", b_hh),
            }
    raise ValueError(
        "module must have weight_ih (a cell) or weight_ih_l0 (a layer), "
        f"got {type(module).__name__}"
    )


# --------------------------------------------------------------------------
# Back-propagation through time, by hand
# --------------------------------------------------------------------------


def rnn_bptt(trace: Sequence[RNNStep], W_hh, dL_dh) -> RNNGradients:
    """Back-propagate through an ``rnn_trace`` by hand.

    ``dL_dh`` is the gradient the loss gives each hidden state directly:
    shape (T, H) for a loss on every h_t, or (H,) for a loss on the final
    state h_T only. Going backwards from t = T:

        dL/dh_t = dL_dh[t] + W_hh^T dL/da_{t+1}
        dL/da_t = dL/dh_t * f'(a_t)

    The weight gradients are the sums of the per-step outer products (see
    ``RNNGradients``); they equal what autograd computes.
    """
    if len(trace) == 0 or not all(isinstance(s, RNNStep) for s in trace):
        raise ValueError(
            "trace must be a non-empty list of RNNStep, "
            "as returned by rnn_trace"
        )
    T, H = len(trace), trace[0].h.shape[0]
    W_hh = _as_float64("W_hh", W_hh)
    _check_shape("W_hh", W_hh, (H, H))
    direct = _as_float64("dL_dh", dL_dh)
    if direct.shape == (H,):  # loss on the final state only
        direct = np.concatenate([np.zeros((T - 1, H)), direct[None]])
    if direct.shape != (T, H):
        raise ValueError(
            f"dL_dh must have shape ({T}, {H}) or ({H},), got {direct.shape}"
        )

    steps, from_later = [], np.zeros(H)  # from_later = W_hh^T dL/da_{t+1}
    for step, g in zip(reversed(trace), reversed(direct)):
        dh = g + from_later
        if step.nonlinearity == "tanh":
            da = dh * (1.0 - step.h**2)
        else:
            da = dh * (step.a > 0)
        steps.append(BPTTStep(step.t, g, dh, da))
        from_later = W_hh.T @ da
    steps.reverse()

    da_all = np.stack([s.dL_da for s in steps])  # (T, H)
    xs = np.stack([s.x for s in trace])  # (T, I)
    h_prevs = np.stack([s.h_prev for s in trace])  # (T, H)
    return RNNGradients(
        steps=steps,
        dW_ih=da_all.T @ xs,
        dW_hh=da_all.T @ h_prevs,
        db_ih=da_all.sum(0),
        db_hh=da_all.sum(0),
        dh0=from_later,
    )


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _format_value(value, decimals: int) -> str:
    """A cell: ints as they are, numbers rounded, vectors as
    ``[0.1234, -0.5000]``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    a = np.asarray(value, dtype=np.float64)
    # round first so that -0.00001 prints as 0.0000, not -0.0000
    rounded = [float(v) + 0.0 for v in np.round(a.ravel(), decimals)]
    text = ", ".join(f"{v:.{decimals}f}" for v in rounded)
    return text if a.ndim == 0 else f"[{text}]"


_TABLE_STYLE = "border-collapse: collapse; margin: 0.5em 0"
_CELL_STYLE = (
    "padding: 0.2em 0.8em; text-align: right; white-space: nowrap; "
    "font-variant-numeric: tabular-nums"
)
_TH_STYLE = _CELL_STYLE + "; border-bottom: 1px solid currentColor"
_TD_STYLE = _CELL_STYLE


class TraceTable:
    """A trace as a table: ``columns`` (names) and ``rows`` (lists of
    formatted strings).

    ``to_markdown()`` gives a markdown table; in a notebook the object shows
    itself as an HTML table (``_repr_html_``).
    """

    def __init__(self, columns: list, rows: list):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]

    def to_markdown(self) -> str:
        header = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---:" for _ in self.columns) + "|"
        body = ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join([header, rule, *body])

    def _repr_html_(self) -> str:
        """An HTML table: every cell padded, unwrapped and right-aligned
        (headers too), numbers in tabular figures so that columns line up."""
        esc = html.escape
        th = f'<th style="{_TH_STYLE}">'
        td = f'<td style="{_TD_STYLE}">'
        head = "".join(f"{th}{esc(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"{td}{esc(v)}</td>" for v in r) + "</tr>"
            for r in self.rows
        )
        return (
            f'<table class="seqbook-trace" style="{_TABLE_STYLE}">'
            f"<thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def __repr__(self) -> str:
        return self.to_markdown()


def trace_table(
    trace: Sequence, decimals: int = 4, columns: Sequence[str] | None = None
) -> TraceTable:
    """Tabulate a trace (from ``rnn_trace``/``lstm_trace``/``gru_trace``, or
    ``rnn_bptt(...).steps``).

    One row per time step, one column per quantity. ``columns`` picks fields
    of the step records by name (default: the record type's
    ``table_columns``, e.g. t, x, h_prev, r, z, n, h for a GRU); vectors are
    written like ``[0.1234, -0.5000]`` with ``decimals`` digits.
    """
    if (
        isinstance(decimals, bool)
        or not isinstance(decimals, int)
        or decimals < 0
    ):
        raise ValueError(
            f"decimals must be a non-negative int, got {decimals!r}"
        )
    if len(trace) == 0:
        raise ValueError(
            "trace must hold at least one step, got an empty sequence"
        )
    kind = type(trace[0])
    if not hasattr(kind, "table_columns") or any(
        type(s) is not kind for s in trace
    ):
        raise ValueError(
            "trace must be a list of step records of one kind "
            "(RNNStep, LSTMStep, GRUStep or "
            f"BPTTStep), got {sorted({type(s).__name__ for s in trace})}"
        )
    names = [f.name for f in fields(kind)]
    columns = list(kind.table_columns if columns is None else columns)
    unknown = [c for c in columns if c not in names]
    if unknown or not columns:
        raise ValueError(
            f"columns must be a non-empty selection of {names}, got {columns}"
        )
    rows = [
        [_format_value(getattr(s, c), decimals) for c in columns]
        for s in trace
    ]
    return TraceTable(columns, rows)
