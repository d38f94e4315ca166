"""seqbook_lib.cells against torch.nn.RNNCell / LSTMCell / GRUCell (float64)."""

import math

import pytest
import torch
import torch.nn as nn
from helpers import assert_same_forward_backward, paired_modules, random_state

from seqbook_lib.cells import GRUCell, LSTMCell, RNNCell

# (name, our class, torch's class, constructor kwargs)
KINDS = [
    ("rnn_tanh", RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
    ("rnn_relu", RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    ("lstm", LSTMCell, nn.LSTMCell, {}),
    ("gru", GRUCell, nn.GRUCell, {}),
]
KIND_IDS = [k[0] for k in KINDS]


def make_pair(kind, input_size, hidden_size, bias, ours_first, seed=0):
    """Our cell and torch's with the same weights, copied in the chosen direction."""
    _, ours_cls, theirs_cls, kwargs = kind
    return paired_modules(
        ours_cls,
        theirs_cls,
        input_size,
        hidden_size,
        bias=bias,
        ours_first=ours_first,
        seed=seed,
        **kwargs,
    )


def random_state_of(kind, shape, gen):
    return random_state(kind[0] == "lstm", shape, gen)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "sizes",
    [(1, 1, 1), (3, 4, 5), (7, 2, 9)],
    ids=lambda s: "B{}-I{}-H{}".format(*s),
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "with_hx", [False, True], ids=["zero_hx", "random_hx"]
)
@pytest.mark.parametrize(
    "ours_first", [True, False], ids=["ours->torch", "torch->ours"]
)
def test_batched_matches_torch(kind, sizes, bias, with_hx, ours_first):
    B, I, H = sizes
    ours, theirs = make_pair(kind, I, H, bias, ours_first)
    gen = torch.Generator().manual_seed(1)
    # Scale the input so that relu cells see both signs and saturating gates are exercised.
    x = 2.0 * torch.randn(B, I, generator=gen)
    inputs = [x] + ([random_state_of(kind, (B, H), gen)] if with_hx else [])
    assert_same_forward_backward(ours, theirs, inputs)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "with_hx", [False, True], ids=["zero_hx", "random_hx"]
)
def test_unbatched_matches_torch(kind, with_hx):
    ours, theirs = make_pair(kind, 4, 6, True, ours_first=True)
    gen = torch.Generator().manual_seed(2)
    inputs = [torch.randn(4, generator=gen)] + (
        [random_state_of(kind, (6,), gen)] if with_hx else []
    )
    out, _ = assert_same_forward_backward(ours, theirs, inputs)
    h = out[0] if kind[0] == "lstm" else out
    assert h.shape == (6,)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_unrolled_sequence_matches_torch(kind):
    """Feeding the state back for several steps keeps agreeing (gradients through time)."""
    ours, theirs = make_pair(kind, 3, 5, True, ours_first=False)
    xs = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(3))

    def unroll(cell):
        def run(xs):
            state = None
            for x in xs:
                state = cell(x, state)
            return state

        return run

    assert_same_forward_backward(unroll(ours), unroll(theirs), [xs])
    # parameter gradients: the helper compares them only for modules, so compare by hand
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, theirs_params[name].grad, atol=1e-10, rtol=1e-8
        )


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_step_on_projected_input_equals_forward(kind):
    ours, _ = make_pair(kind, 3, 4, True, ours_first=True)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=gen)
    state = random_state_of(kind, (5, 4), gen)
    a = ours.step(ours.project_input(x), state)
    b = ours(x, state)
    for u, v in zip(
        a if isinstance(a, tuple) else (a,),
        b if isinstance(b, tuple) else (b,),
    ):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_parameters_layout_and_repr_match_torch(kind, bias):
    _, ours_cls, theirs_cls, kwargs = kind
    ours = ours_cls(3, 7, bias=bias, **kwargs)
    theirs = theirs_cls(3, 7, bias=bias, **kwargs)
    shapes = {n: tuple(t.shape) for n, t in ours.state_dict().items()}
    assert shapes == {
        n: tuple(t.shape) for n, t in theirs.state_dict().items()
    }
    assert list(dict(ours.named_parameters())) == list(
        dict(theirs.named_parameters())
    )
    if not bias:
        assert ours.bias_ih is None and ours.bias_hh is None
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_init_is_uniform_in_torch_bound(kind):
    _, ours_cls, _, kwargs = kind
    torch.manual_seed(5)
    cell = ours_cls(10, 16, **kwargs)
    bound = 1 / math.sqrt(16)
    before = [p.detach().clone() for p in cell.parameters()]
    for p in before:
        assert p.abs().max() <= bound
        assert (
            p.abs().max() > 0.8 * bound
        )  # spread over the range, not e.g. all zero
    cell.reset_parameters()
    for p, q in zip(before, cell.parameters()):
        assert not torch.equal(p, q)
        assert q.abs().max() <= bound


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_bad_input_is_rejected(kind):
    cell = kind[1](3, 4, **kind[3])
    with pytest.raises(
        ValueError,
        match=r"input must have 1 or 2 dimensions.*got shape \(2, 5, 3\)",
    ):
        cell(torch.randn(2, 5, 3))
    with pytest.raises(
        ValueError,
        match=r"size 3 in dimension -1 \(input_size\), got shape \(2, 5\)",
    ):
        cell(torch.randn(2, 5))
    with pytest.raises(
        TypeError, match="input must be a torch.Tensor, got list"
    ):
        cell([1.0, 2.0, 3.0])


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_bad_hx_is_rejected(kind):
    cell = kind[1](3, 4, **kind[3])
    x = torch.randn(2, 3)
    name = r"hx\[0\] \(h\)" if kind[0] == "lstm" else "hx"
    wrap = (
        (lambda h: (h, torch.zeros(2, 4)))
        if kind[0] == "lstm"
        else (lambda h: h)
    )
    with pytest.raises(
        ValueError,
        match=name + r" must have shape \(B, H\) = \(2, 4\), got \(3, 4\)",
    ):
        cell(x, wrap(torch.zeros(3, 4)))
    with pytest.raises(
        ValueError,
        match=name + r" must have shape \(H,\) .* = \(4,\), got \(1, 4\)",
    ):
        cell(torch.randn(3), wrap(torch.zeros(1, 4)))


def test_lstm_hx_must_be_a_pair():
    cell = LSTMCell(3, 4)
    with pytest.raises(TypeError, match=r"pair \(h, c\), got Tensor"):
        cell(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(
        ValueError,
        match=r"hx\[1\] \(c\) must have shape \(B, H\) = \(2, 4\), got \(2, 5\)",
    ):
        cell(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(2, 5)))


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_bad_constructor_args(cls):
    with pytest.raises(
        ValueError, match="hidden_size must be a positive int, got 0"
    ):
        cls(3, 0)
    with pytest.raises(
        ValueError, match="input_size must be a positive int, got -1"
    ):
        cls(-1, 4)


def test_unknown_nonlinearity():
    with pytest.raises(
        ValueError,
        match=r"nonlinearity must be one of \['tanh', 'relu'\], got 'sigmoid'",
    ):
        RNNCell(3, 4, nonlinearity="sigmoid")
