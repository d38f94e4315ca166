"""seqbook_lib.manual: hand-computed traces equal torch's cells, BPTT equals autograd."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from seqbook_lib.manual import (
    BPTTStep,
    GRUStep,
    LSTMStep,
    RNNStep,
    TraceTable,
    cell_weights,
    gru_trace,
    lstm_trace,
    rnn_bptt,
    rnn_trace,
    trace_table,
)

CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


def make_cell(kind, I, H, *, bias=True, round_weights=False, seed=0, **kw):
    """A float64 torch cell; round weights are multiples of 1/4 in [-1, 1]."""
    torch.manual_seed(seed)
    cell = CELLS[kind](I, H, bias=bias, **kw).double()
    if round_weights:
        with torch.no_grad():
            for p in cell.parameters():
                p.copy_(torch.randint(-4, 5, p.shape) / 4)
    return cell


def torch_states(cell, x, state):
    """Run a torch cell over x (T, I) one step at a time; the list of its outputs."""
    outs = []
    for x_t in x:
        state = cell(x_t[None], state)
        outs.append(state)
    return outs


def np_(t):
    return t.detach().numpy()


# --------------------------------------------------------------------------
# Traces vs torch cells
# --------------------------------------------------------------------------

SIZES = [(1, 1, 1), (3, 2, 4), (2, 5, 3), (4, 3, 6)]  # (I, H, T)


@pytest.mark.parametrize("I,H,T", SIZES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("round_weights", [False, True])
def test_rnn_trace_matches_rnncell(I, H, T, nonlinearity, with_h0, round_weights):
    cell = make_cell("rnn", I, H, nonlinearity=nonlinearity, round_weights=round_weights, seed=I + H + T)
    x = torch.randn(T, I)
    h0 = torch.randn(H) if with_h0 else None
    trace = rnn_trace(np_(x), **cell_weights(cell), h0=None if h0 is None else np_(h0), nonlinearity=nonlinearity)
    expected = torch_states(cell, x, None if h0 is None else h0[None])
    assert [s.t for s in trace] == list(range(1, T + 1))
    h_prev = np.zeros(H) if h0 is None else np_(h0)
    for s, h in zip(trace, expected):
        assert isinstance(s, RNNStep)
        np.testing.assert_allclose(s.x, np_(x[s.t - 1]))
        np.testing.assert_allclose(s.h_prev, h_prev)
        np.testing.assert_allclose(s.a_x, np_(F.linear(x[s.t - 1], cell.weight_ih, cell.bias_ih)))
        np.testing.assert_allclose(s.a_h, np_(F.linear(torch.from_numpy(h_prev), cell.weight_hh, cell.bias_hh)))
        np.testing.assert_allclose(s.a, s.a_x + s.a_h)
        np.testing.assert_allclose(s.h, np_(h[0]), rtol=1e-12, atol=1e-12)
        h_prev = s.h


@pytest.mark.parametrize("I,H,T", SIZES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("round_weights", [False, True])
def test_lstm_trace_matches_lstmcell(I, H, T, with_state, round_weights):
    cell = make_cell("lstm", I, H, round_weights=round_weights, seed=10 + I + H + T)
    x = torch.randn(T, I)
    h0, c0 = (torch.randn(H), torch.randn(H)) if with_state else (None, None)
    trace = lstm_trace(
        np_(x), **cell_weights(cell),
        h0=None if h0 is None else np_(h0), c0=None if c0 is None else np_(c0),
    )
    expected = torch_states(cell, x, (h0[None], c0[None]) if with_state else None)
    h_prev = np.zeros(H) if h0 is None else np_(h0)
    c_prev = np.zeros(H) if c0 is None else np_(c0)
    W_ih, W_hh = np_(cell.weight_ih), np_(cell.weight_hh)
    b_ih, b_hh = np_(cell.bias_ih), np_(cell.bias_hh)
    for s, (h, c) in zip(trace, expected):
        assert isinstance(s, LSTMStep)
        np.testing.assert_allclose(s.h_prev, h_prev)
        np.testing.assert_allclose(s.c_prev, c_prev)
        # gate k uses rows k*H:(k+1)*H, in the order i, f, g, o
        for k, gate in enumerate("ifgo"):
            rows = slice(k * H, (k + 1) * H)
            np.testing.assert_allclose(getattr(s, gate + "_x"), W_ih[rows] @ s.x + b_ih[rows])
            np.testing.assert_allclose(getattr(s, gate + "_h"), W_hh[rows] @ h_prev + b_hh[rows])
            np.testing.assert_allclose(getattr(s, gate + "_pre"), getattr(s, gate + "_x") + getattr(s, gate + "_h"))
        sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
        np.testing.assert_allclose(s.i, sig(s.i_pre))
        np.testing.assert_allclose(s.f, sig(s.f_pre))
        np.testing.assert_allclose(s.g, np.tanh(s.g_pre))
        np.testing.assert_allclose(s.o, sig(s.o_pre))
        np.testing.assert_allclose(s.c, np_(c[0]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.h, np_(h[0]), rtol=1e-12, atol=1e-12)
        h_prev, c_prev = s.h, s.c


@pytest.mark.parametrize("I,H,T", SIZES)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("round_weights", [False, True])
def test_gru_trace_matches_grucell(I, H, T, with_h0, round_weights):
    cell = make_cell("gru", I, H, round_weights=round_weights, seed=20 + I + H + T)
    x = torch.randn(T, I)
    h0 = torch.randn(H) if with_h0 else None
    trace = gru_trace(np_(x), **cell_weights(cell), h0=None if h0 is None else np_(h0))
    expected = torch_states(cell, x, None if h0 is None else h0[None])
    h_prev = np.zeros(H) if h0 is None else np_(h0)
    W_ih, W_hh = np_(cell.weight_ih), np_(cell.weight_hh)
    b_ih, b_hh = np_(cell.bias_ih), np_(cell.bias_hh)
    for s, h in zip(trace, expected):
        assert isinstance(s, GRUStep)
        np.testing.assert_allclose(s.h_prev, h_prev)
        for k, gate in enumerate("rzn"):
            rows = slice(k * H, (k + 1) * H)
            np.testing.assert_allclose(getattr(s, gate + "_x"), W_ih[rows] @ s.x + b_ih[rows])
            np.testing.assert_allclose(getattr(s, gate + "_h"), W_hh[rows] @ h_prev + b_hh[rows])
        np.testing.assert_allclose(s.r_pre, s.r_x + s.r_h)
        np.testing.assert_allclose(s.z_pre, s.z_x + s.z_h)
        np.testing.assert_allclose(s.n_pre, s.n_x + s.r * s.n_h)
        np.testing.assert_allclose(s.n, np.tanh(s.n_pre))
        np.testing.assert_allclose(s.h, np_(h[0]), rtol=1e-12, atol=1e-12)
        h_prev = s.h


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_no_bias_cells(kind):
    """bias=False cells: cell_weights gives None biases, which the traces read as zeros."""
    cell = make_cell(kind, 2, 3, bias=False, seed=3)
    weights = cell_weights(cell)
    assert weights["b_ih"] is None and weights["b_hh"] is None
    x = torch.randn(4, 2)
    trace = {"rnn": rnn_trace, "lstm": lstm_trace, "gru": gru_trace}[kind](np_(x), **weights)
    last = torch_states(cell, x, None)[-1]
    h = last[0] if kind == "lstm" else last
    np.testing.assert_allclose(trace[-1].h, np_(h[0]), rtol=1e-12, atol=1e-12)


def test_cell_weights_reads_layers_and_traces_accept_tensors():
    """A one-layer torch.nn.GRU's first layer equals the GRUCell trace; tensors and lists are accepted."""
    torch.manual_seed(0)
    layer = torch.nn.GRU(2, 3).double()
    x = torch.randn(5, 2)
    out, _ = layer(x[:, None])
    trace = gru_trace(x, layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
    np.testing.assert_allclose(np.stack([s.h for s in trace]), np_(out[:, 0]), rtol=1e-12, atol=1e-12)
    trace2 = gru_trace(x.tolist(), **cell_weights(layer))
    np.testing.assert_allclose(trace2[-1].h, trace[-1].h)


def test_worked_rnn_example_by_hand():
    """The chapter's example: W_ih = 0.5, W_hh = 1, no bias, x = (1, 2)."""
    trace = rnn_trace([[1.0], [2.0]], [[0.5]], [[1.0]])
    h1 = math.tanh(0.5)
    h2 = math.tanh(1.0 + h1)
    assert trace[0].a[0] == pytest.approx(0.5)
    assert trace[1].a_h[0] == pytest.approx(h1)
    assert trace[1].h[0] == pytest.approx(h2)
    md = trace_table(trace).to_markdown()
    assert "| 1 | [1.0000] | [0.0000] | [0.5000] | [0.4621] |" in md
    assert "| 2 | [2.0000] | [0.4621] | [1.4621] | [0.8981] |" in md


def test_worked_lstm_example_by_hand():
    """One unit, every weight 1, no bias, x = 0 then 1: the numbers of the chapter's worked step."""
    ones = np.ones((4, 1))
    trace = lstm_trace([[0.0], [1.0]], ones, ones)
    s1, s2 = trace
    # step 1: every pre-activation is 0, so i = f = o = 1/2, g = 0, c = 0, h = 0
    assert (s1.i[0], s1.f[0], s1.o[0], s1.g[0], s1.c[0], s1.h[0]) == (0.5, 0.5, 0.5, 0.0, 0.0, 0.0)
    # step 2: every pre-activation is x + h = 1
    sig1 = 1 / (1 + math.exp(-1))
    assert s2.i_pre[0] == 1.0 and s2.g[0] == pytest.approx(math.tanh(1))
    assert s2.c[0] == pytest.approx(sig1 * math.tanh(1))
    assert s2.h[0] == pytest.approx(sig1 * math.tanh(sig1 * math.tanh(1)))


# --------------------------------------------------------------------------
# Back-propagation through time vs autograd
# --------------------------------------------------------------------------


def autograd_rnn(cell, x, h0, g, nonlinearity):
    """Functional RNN with retained grads; loss = sum_t g_t . h_t (or g . h_T when g is 1-D)."""
    W_ih, W_hh, b_ih, b_hh = (p.detach().clone().requires_grad_(True) for p in
                              (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    h0 = h0.clone().requires_grad_(True)
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    h, hs, As = h0, [], []
    for x_t in x:
        a = F.linear(x_t, W_ih, b_ih) + F.linear(h, W_hh, b_hh)
        h = f(a)
        a.retain_grad()
        h.retain_grad()
        As.append(a)
        hs.append(h)
    loss = (torch.stack(hs) * g).sum() if g.dim() == 2 else (hs[-1] * g).sum()
    loss.backward()
    return hs, As, (W_ih, W_hh, b_ih, b_hh, h0)


@settings(max_examples=25, deadline=None)
@given(
    I=st.integers(1, 4), H=st.integers(1, 4), T=st.integers(1, 6),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    final_only=st.booleans(), seed=st.integers(0, 10_000),
)
def test_rnn_bptt_matches_autograd(I, H, T, nonlinearity, final_only, seed):
    cell = make_cell("rnn", I, H, nonlinearity=nonlinearity, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x, h0 = torch.randn(T, I, generator=gen), torch.randn(H, generator=gen)
    g = torch.randn(H, generator=gen) if final_only else torch.randn(T, H, generator=gen)
    hs, As, (W_ih, W_hh, b_ih, b_hh, h0_leaf) = autograd_rnn(cell, x, h0, g, nonlinearity)

    w = cell_weights(cell)
    trace = rnn_trace(np_(x), **w, h0=np_(h0), nonlinearity=nonlinearity)
    grads = rnn_bptt(trace, w["W_hh"], np_(g))
    assert len(grads.steps) == T and all(isinstance(s, BPTTStep) for s in grads.steps)
    tol = dict(rtol=1e-10, atol=1e-12)
    for s, h, a in zip(grads.steps, hs, As):
        np.testing.assert_allclose(s.dL_dh, np_(h.grad), **tol)
        np.testing.assert_allclose(s.dL_da, np_(a.grad), **tol)
    expected_direct = np.zeros((T, H)) if final_only else np_(g)
    if final_only:
        expected_direct[-1] = np_(g)
    np.testing.assert_allclose(np.stack([s.dL_dh_direct for s in grads.steps]), expected_direct)
    np.testing.assert_allclose(grads.dW_ih, np_(W_ih.grad), **tol)
    np.testing.assert_allclose(grads.dW_hh, np_(W_hh.grad), **tol)
    np.testing.assert_allclose(grads.db_ih, np_(b_ih.grad), **tol)
    np.testing.assert_allclose(grads.db_hh, np_(b_hh.grad), **tol)
    np.testing.assert_allclose(grads.dh0, np_(h0_leaf.grad), **tol)


def test_bptt_vanishing_gradient_example():
    """With W_hh = 0.5 and tanh the gradient reaching h_1 from a loss on h_T shrinks geometrically."""
    trace = rnn_trace(np.zeros((6, 1)), [[1.0]], [[0.5]], b_ih=[0.0], b_hh=[0.0], h0=[0.0])
    grads = rnn_bptt(trace, [[0.5]], [1.0])
    # all states are 0, so tanh' = 1 and dL/dh_t = 0.5^(T-t)
    assert [s.dL_dh[0] for s in grads.steps] == [0.5**k for k in range(5, -1, -1)]


def test_bptt_relu_at_zero_passes_no_gradient():
    """relu'(0) = 0, as autograd takes it: a pre-activation of exactly 0 stops the gradient."""
    trace = rnn_trace(np.zeros((2, 1)), [[1.0]], [[1.0]], nonlinearity="relu")
    assert trace[-1].a[0] == 0.0
    grads = rnn_bptt(trace, [[1.0]], [1.0])
    assert [s.dL_da[0] for s in grads.steps] == [0.0, 0.0]


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def test_trace_table_values_are_rounded_trace_values():
    cell = make_cell("gru", 2, 3, seed=5)
    trace = gru_trace(np.random.default_rng(0).normal(size=(4, 2)), **cell_weights(cell))
    table = trace_table(trace, decimals=3)
    assert isinstance(table, TraceTable)
    assert table.columns == ["t", "x", "h_prev", "r", "z", "n", "h"]
    assert len(table.rows) == 4
    for s, row in zip(trace, table.rows):
        assert row[0] == str(s.t)
        for name, cell_text in zip(table.columns[1:], row[1:]):
            values = [float(v) for v in cell_text.strip("[]").split(", ")]
            np.testing.assert_allclose(values, getattr(s, name), atol=5e-4 + 1e-12)
            assert all(len(v.split(".")[1]) == 3 for v in cell_text.strip("[]").split(", "))


def _html_cells(text):
    """The header texts and the rows of cell texts of an HTML table."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.header, self.rows, self.tag = [], [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr" and self.header:
                self.rows.append([])
            if tag in ("th", "td"):
                self.tag = tag

        def handle_endtag(self, tag):
            self.tag = None

        def handle_data(self, data):
            if self.tag == "th":
                self.header.append(data)
            elif self.tag == "td":
                self.rows[-1].append(data)

    parser = Cells()
    parser.feed(text)
    return parser.header, parser.rows


def test_trace_table_columns_markdown_and_html():
    trace = lstm_trace([[1.0]], np.full((4, 1), 0.5), np.zeros((4, 1)))
    table = trace_table(trace, decimals=2, columns=["t", "i_pre", "i", "c", "h"])
    md = table.to_markdown().splitlines()
    assert md[0] == "| t | i_pre | i | c | h |"
    assert md[1] == "|---:|---:|---:|---:|---:|"
    i = 1 / (1 + math.exp(-0.5))
    c = i * math.tanh(0.5)
    assert md[2] == f"| 1 | [0.50] | [{i:.2f}] | [{c:.2f}] | [{i * math.tanh(c):.2f}] |"
    html = table._repr_html_()
    assert html.startswith('<table class="seqbook-trace"')
    header, cells = _html_cells(html)
    assert header == ["t", "i_pre", "i", "c", "h"]
    assert cells == [md[2].strip("| ").split(" | ")]
    for style in ("padding", "white-space: nowrap", "text-align: right"):
        assert html.count(style) == len(header) + len(cells[0])
    assert repr(table) == table.to_markdown()


def test_trace_table_writes_no_negative_zero_and_shows_bptt_steps():
    trace = rnn_trace([[-1e-9]], [[1.0]], [[1.0]])
    assert trace_table(trace).rows[0][1] == "[0.0000]"  # not [-0.0000]
    grads = rnn_bptt(trace, [[1.0]], [[2.0]])
    table = trace_table(grads.steps, decimals=1)
    assert table.columns == ["t", "dL_dh_direct", "dL_dh", "dL_da"]
    assert table.rows == [["1", "[2.0]", "[2.0]", "[2.0]"]]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

I_, H_ = 2, 3


def good(gates):
    return dict(x=np.zeros((4, I_)), W_ih=np.zeros((gates * H_, I_)), W_hh=np.zeros((gates * H_, H_)),
                b_ih=np.zeros(gates * H_), b_hh=np.zeros(gates * H_))


@pytest.mark.parametrize("fn,gates", [(rnn_trace, 1), (lstm_trace, 4), (gru_trace, 3)])
@pytest.mark.parametrize(
    "field,value,match",
    [
        ("x", np.zeros(4), r"x must have 2 dimensions \(T, I\).*\(4,\)"),
        ("x", np.zeros((1, 4, 2)), r"x must have 2 dimensions.*\(1, 4, 2\)"),
        ("x", np.zeros((0, 2)), r"at least one time step"),
        ("x", np.zeros((4, 5)), r"W_ih must have shape \(\d+, 5\)"),
        ("W_hh", np.zeros(3), r"W_hh must have 2 dimensions"),
        ("W_hh", np.zeros((3, 3)), r"W_hh must have shape"),
        ("b_ih", np.zeros(2), r"b_ih must have shape"),
        ("b_hh", np.zeros((1, 3)), r"b_hh must have shape"),
        ("h0", np.zeros(4), r"h0 must have shape \(3,\), got \(4,\)"),
    ],
)
def test_trace_errors(fn, gates, field, value, match):
    kw = good(gates)
    if field == "W_hh" and gates == 1 and value.shape == (3, 3):
        value = np.zeros((4, 3))  # (3, 3) is valid for the RNN
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        fn(**kw)


def test_other_errors():
    with pytest.raises(ValueError, match=r"c0 must have shape \(3,\)"):
        lstm_trace(**good(4), c0=np.zeros(2))
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \['tanh', 'relu'\], got 'sigmoid'"):
        rnn_trace(**good(1), nonlinearity="sigmoid")
    with pytest.raises(TypeError, match=r"x must be array-like of numbers"):
        rnn_trace(x=[["a", object()]], **{k: v for k, v in good(1).items() if k != "x"})
    with pytest.raises(ValueError, match=r"weight_ih .* or weight_ih_l0"):
        cell_weights(torch.nn.Linear(2, 3))

    trace = rnn_trace(**good(1))
    with pytest.raises(ValueError, match=r"dL_dh must have shape \(4, 3\) or \(3,\), got \(4, 2\)"):
        rnn_bptt(trace, np.zeros((3, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"W_hh must have shape \(3, 3\)"):
        rnn_bptt(trace, np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"non-empty list of RNNStep"):
        rnn_bptt(lstm_trace(**good(4)), np.zeros((3, 3)), np.zeros(3))

    with pytest.raises(ValueError, match=r"decimals must be a non-negative int, got -1"):
        trace_table(trace, decimals=-1)
    with pytest.raises(ValueError, match=r"columns must be a non-empty selection of .*'a_x'.*got \['q'\]"):
        trace_table(trace, columns=["q"])
    with pytest.raises(ValueError, match=r"at least one step"):
        trace_table([])
    with pytest.raises(ValueError, match=r"one kind.*got \['GRUStep', 'RNNStep'\]"):
        trace_table(trace + gru_trace(**good(3)))
