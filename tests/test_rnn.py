"""seqbook_lib.rnn against torch.nn.RNN / LSTM / GRU (float64).

Ragged batches (``lengths=``) are compared with what torch gives for the same
padded batch through pack_padded_sequence(enforce_sorted=False) -> module ->
pad_packed_sequence(total_length=T).
"""

import pytest
import torch
import torch.nn as nn
from helpers import (
    assert_same_forward_backward,
    copy_weights,
    paired_modules,
    random_state,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqbook_lib.rnn import GRU, LSTM, RNN

# (name, our class, torch's class, constructor kwargs)
KINDS = [
    ("rnn_tanh", RNN, nn.RNN, {"nonlinearity": "tanh"}),
    ("rnn_relu", RNN, nn.RNN, {"nonlinearity": "relu"}),
    ("lstm", LSTM, nn.LSTM, {}),
    ("gru", GRU, nn.GRU, {}),
]
KIND_IDS = [k[0] for k in KINDS]
LAYOUT_IDS = {
    "batch_first": ["time_major", "batch_first"],
    "bidirectional": ["uni", "bi"],
}

# Ragged batch: unsorted, one full-length sequence and one of length 1.
T_RAGGED = 6
LENGTHS = [3, 6, 1, 4, 2]


def make_pair(
    kind, input_size, hidden_size, ours_first=True, seed=0, **kwargs
):
    """Our module and torch's with the same weights, copied in the chosen direction."""
    _, ours_cls, theirs_cls, kind_kwargs = kind
    return paired_modules(
        ours_cls,
        theirs_cls,
        input_size,
        hidden_size,
        ours_first=ours_first,
        seed=seed,
        **kind_kwargs,
        **kwargs,
    )


def random_hx(kind, shape, gen):
    return random_state(kind[0] == "lstm", shape, gen)


def batch(T, B, I, batch_first, gen):
    # Scaled so that relu layers see both signs and the gates saturate now and then.
    x = 2.0 * torch.randn(T, B, I, generator=gen)
    return x.transpose(0, 1).contiguous() if batch_first else x


class WithLengths(nn.Module):
    """Our module called with ``lengths=``, or torch's through the pack/pad round trip.

    Both wrappers hold the module as ``rnn`` so parameter names still match.
    """

    def __init__(self, rnn, lengths, packed):
        super().__init__()
        self.rnn, self.lengths, self.packed = (
            rnn,
            torch.tensor(lengths),
            packed,
        )

    def forward(self, x, hx=None):
        if not self.packed:
            return self.rnn(x, hx, lengths=self.lengths)
        bf = self.rnn.batch_first
        seq = pack_padded_sequence(
            x, self.lengths, batch_first=bf, enforce_sorted=False
        )
        out, h = self.rnn(seq, hx)
        out, _ = pad_packed_sequence(
            out, batch_first=bf, total_length=x.shape[1 if bf else 0]
        )
        return out, h


def ragged_pair(kind, lengths, seed=0, **kwargs):
    ours, theirs = make_pair(kind, 3, 4, seed=seed, **kwargs)
    return WithLengths(ours, lengths, packed=False), WithLengths(
        theirs, lengths, packed=True
    )


# -- full-length batches ------------------------------------------------------

SIZES = {
    1: (5, 3, 4, 6),
    2: (4, 2, 3, 5),
    3: (3, 4, 2, 3),
}  # num_layers -> (T, B, I, H)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=lambda n: f"L{n}")
@pytest.mark.parametrize(
    "bidirectional", [False, True], ids=LAYOUT_IDS["bidirectional"]
)
@pytest.mark.parametrize(
    "batch_first", [False, True], ids=LAYOUT_IDS["batch_first"]
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "with_hx", [False, True], ids=["zero_hx", "random_hx"]
)
def test_matches_torch(
    kind, num_layers, bidirectional, batch_first, bias, with_hx
):
    T, B, I, H = SIZES[num_layers]
    ours, theirs = make_pair(
        kind,
        I,
        H,
        ours_first=with_hx,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
    )
    gen = torch.Generator().manual_seed(num_layers)
    D = 2 if bidirectional else 1
    inputs = [batch(T, B, I, batch_first, gen)]
    if with_hx:
        inputs.append(random_hx(kind, (num_layers * D, B, H), gen))
    (out, _), _ = assert_same_forward_backward(ours, theirs, inputs)
    assert out.shape == ((B, T, D * H) if batch_first else (T, B, D * H))


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "bidirectional", [False, True], ids=LAYOUT_IDS["bidirectional"]
)
@pytest.mark.parametrize(
    "with_hx", [False, True], ids=["zero_hx", "random_hx"]
)
def test_unbatched_matches_torch(kind, bidirectional, with_hx):
    ours, theirs = make_pair(
        kind, 3, 4, ours_first=False, num_layers=2, bidirectional=bidirectional
    )
    gen = torch.Generator().manual_seed(7)
    D = 2 if bidirectional else 1
    inputs = [torch.randn(5, 3, generator=gen)]
    if with_hx:
        inputs.append(random_hx(kind, (2 * D, 4), gen))
    (out, h_n), _ = assert_same_forward_backward(ours, theirs, inputs)
    assert out.shape == (5, D * 4)
    assert (h_n[0] if kind[0] == "lstm" else h_n).shape == (2 * D, 4)


def test_single_time_step():
    ours, theirs = make_pair(KINDS[2], 3, 4, num_layers=2, bidirectional=True)
    assert_same_forward_backward(ours, theirs, [torch.randn(1, 2, 3)])


# -- ragged batches -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("num_layers", [1, 2], ids=lambda n: f"L{n}")
@pytest.mark.parametrize(
    "bidirectional", [False, True], ids=LAYOUT_IDS["bidirectional"]
)
@pytest.mark.parametrize(
    "batch_first", [False, True], ids=LAYOUT_IDS["batch_first"]
)
@pytest.mark.parametrize(
    "with_hx", [False, True], ids=["zero_hx", "random_hx"]
)
def test_lengths_match_packed_torch(
    kind, num_layers, bidirectional, batch_first, with_hx
):
    ours, theirs = ragged_pair(
        kind,
        LENGTHS,
        num_layers=num_layers,
        batch_first=batch_first,
        bidirectional=bidirectional,
    )
    gen = torch.Generator().manual_seed(11)
    B, D = len(LENGTHS), 2 if bidirectional else 1
    inputs = [batch(T_RAGGED, B, 3, batch_first, gen)]
    if with_hx:
        inputs.append(random_hx(kind, (num_layers * D, B, 4), gen))
    (out, _), _ = assert_same_forward_backward(ours, theirs, inputs)
    out = out if batch_first else out.transpose(0, 1)  # (B, T, D*H)
    for b, n in enumerate(LENGTHS):
        assert torch.all(out[b, n:] == 0)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("garbage", [1e6, float("nan")], ids=["huge", "nan"])
def test_padding_values_never_matter(kind, garbage):
    ours, theirs = ragged_pair(kind, LENGTHS, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(12)
    clean = batch(T_RAGGED, len(LENGTHS), 3, False, gen)
    steps = torch.arange(T_RAGGED).unsqueeze(1)
    padded = (steps >= torch.tensor(LENGTHS)).unsqueeze(-1)  # (T, B, 1)
    dirty = clean.masked_fill(padded, garbage)
    hx = random_hx(kind, (4, len(LENGTHS), 4), gen)
    # The dirty batch gives torch's packed numbers, gradients included ...
    (out_dirty, h_dirty), _ = assert_same_forward_backward(
        ours, theirs, [dirty, hx]
    )
    # ... which are also exactly those of the clean batch.
    out_clean, h_clean = ours(clean, hx)
    torch.testing.assert_close(out_dirty, out_clean, atol=0, rtol=0)
    for a, b in zip(
        h_dirty if kind[0] == "lstm" else (h_dirty,),
        h_clean if kind[0] == "lstm" else (h_clean,),
    ):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_full_lengths_equal_no_lengths(kind):
    ours, _ = make_pair(kind, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 3)
    a, b = ours(x, lengths=[5, 5, 5]), ours(x)
    for u, v in zip(
        [a[0], *(a[1] if kind[0] == "lstm" else (a[1],))],
        [b[0], *(b[1] if kind[0] == "lstm" else (b[1],))],
    ):
        torch.testing.assert_close(u, v, atol=1e-14, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    kind_index=st.integers(0, len(KINDS) - 1),
    T=st.integers(1, 7),
    lengths_seed=st.integers(0, 2**16),
    B=st.integers(1, 5),
    bidirectional=st.booleans(),
)
def test_random_lengths_match_packed_torch(
    kind_index, T, lengths_seed, B, bidirectional
):
    gen = torch.Generator().manual_seed(lengths_seed)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    ours, theirs = ragged_pair(
        KINDS[kind_index], lengths, bidirectional=bidirectional
    )
    assert_same_forward_backward(
        ours, theirs, [torch.randn(T, B, 3, generator=gen)]
    )


# -- dropout ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_dropout_in_eval_mode_matches_torch(kind):
    ours, theirs = make_pair(
        kind, 3, 4, num_layers=3, dropout=0.5, bidirectional=True
    )
    ours.eval(), theirs.eval()
    assert_same_forward_backward(ours, theirs, [torch.randn(5, 2, 3)])


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_dropout_in_training_mode(kind):
    ours, _ = make_pair(kind, 3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 4, 3)
    ours.train()
    torch.manual_seed(1)
    a, _ = ours(x)
    torch.manual_seed(1)
    b, _ = ours(x)
    c, _ = ours(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # same seed, same masks
    assert not torch.allclose(a, c)  # fresh masks
    ours.eval()
    assert not torch.allclose(a, ours(x)[0])


def test_no_dropout_after_the_last_layer():
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        ours = LSTM(3, 4, num_layers=1, dropout=0.5)
    x = torch.randn(5, 2, 3)
    train_out, _ = ours.train()(x)
    torch.testing.assert_close(train_out, ours.eval()(x)[0], atol=0, rtol=0)


# -- parameters ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_parameters_layout_and_repr_match_torch(kind, bias):
    _, ours_cls, theirs_cls, kwargs = kind
    args = {
        "num_layers": 3,
        "bias": bias,
        "batch_first": True,
        "dropout": 0.25,
        "bidirectional": True,
    }
    ours, theirs = (
        ours_cls(5, 7, **kwargs, **args),
        theirs_cls(5, 7, **kwargs, **args),
    )
    shapes = [(n, tuple(t.shape)) for n, t in ours.state_dict().items()]
    assert shapes == [
        (n, tuple(t.shape)) for n, t in theirs.state_dict().items()
    ]
    copy_weights(ours, theirs)  # strict, both ways
    copy_weights(theirs, ours)
    assert repr(ours) == repr(theirs)


def test_rnn_positional_arguments_follow_torch():
    ours, theirs = (
        RNN(3, 4, 2, "relu", False, True),
        nn.RNN(3, 4, 2, "relu", False, True),
    )
    assert (ours.nonlinearity, ours.bias, ours.batch_first) == (
        "relu",
        False,
        True,
    )
    copy_weights(theirs, ours)
    assert_same_forward_backward(ours, theirs, [torch.randn(2, 5, 3)])


def test_init_is_uniform_in_torch_bound():
    torch.manual_seed(0)
    lstm = LSTM(10, 16, num_layers=2, bidirectional=True)
    for p in lstm.parameters():
        assert 0.8 * 0.25 < p.abs().max() <= 0.25
    before = [p.detach().clone() for p in lstm.parameters()]
    lstm.reset_parameters()
    assert all(
        not torch.equal(p, q) for p, q in zip(before, lstm.parameters())
    )


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_bad_input_is_rejected(kind):
    rnn = kind[1](3, 4, **kind[3])
    with pytest.raises(
        ValueError,
        match=r"2 or 3 dimensions \(T, B, I\) or unbatched \(T, I\), got shape \(3,\)",
    ):
        rnn(torch.randn(3))
    with pytest.raises(
        ValueError,
        match=r"size 3 in dimension -1 \(input_size\), got shape \(5, 2, 4\)",
    ):
        rnn(torch.randn(5, 2, 4))
    with pytest.raises(
        ValueError, match=r"at least one time step, got shape \(0, 2, 3\)"
    ):
        rnn(torch.randn(0, 2, 3))
    bf = kind[1](3, 4, batch_first=True, **kind[3])
    with pytest.raises(
        ValueError,
        match=r"\(B, T, I\) or unbatched \(T, I\), got shape \(1, 2, 3, 4\)",
    ):
        bf(torch.randn(1, 2, 3, 4))


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_bad_hx_is_rejected(kind):
    rnn = kind[1](3, 5, num_layers=2, bidirectional=True, **kind[3])
    name = r"hx\[0\] \(h_0\)" if kind[0] == "lstm" else "hx"
    wrap = (
        (lambda h: (h, torch.zeros(4, 2, 5)))
        if kind[0] == "lstm"
        else (lambda h: h)
    )
    with pytest.raises(
        ValueError,
        match=name
        + r" must have shape \(L\*D, B, H\) = \(4, 2, 5\), got \(2, 2, 5\)",
    ):
        rnn(torch.randn(6, 2, 3), wrap(torch.zeros(2, 2, 5)))
    with pytest.raises(
        ValueError,
        match=name
        + r" must have shape \(L\*D, H\) .* = \(4, 5\), got \(4, 1, 5\)",
    ):
        rnn(torch.randn(6, 3), wrap(torch.zeros(4, 1, 5)))


def test_lstm_hx_must_be_a_pair():
    lstm = LSTM(3, 5)
    with pytest.raises(TypeError, match=r"pair \(h_0, c_0\), got Tensor"):
        lstm(torch.randn(6, 2, 3), torch.zeros(1, 2, 5))
    with pytest.raises(
        ValueError,
        match=r"hx\[1\] \(c_0\) must have shape \(L\*D, B, H\) = \(1, 2, 5\), got \(1, 3, 5\)",
    ):
        lstm(
            torch.randn(6, 2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 3, 5))
        )


@pytest.mark.parametrize(
    "lengths, message",
    [
        (torch.tensor([[3, 4]]), r"shape \(2,\), got shape \(1, 2\)"),
        (torch.tensor([3, 4, 1]), r"shape \(2,\), got shape \(3,\)"),
        (
            torch.tensor([3, 0]),
            r"every length must lie in 1\.\.6 .*got \[3, 0\]",
        ),
        (
            torch.tensor([7, 2]),
            r"every length must lie in 1\.\.6 .*got \[7, 2\]",
        ),
        (
            torch.tensor([3.0, 2.0]),
            r"lengths must hold integers, got dtype torch.float",
        ),
    ],
    ids=["2d", "wrong_batch", "zero", "too_long", "float"],
)
def test_bad_lengths_are_rejected(lengths, message):
    gru = GRU(3, 4)
    with pytest.raises(ValueError, match=message):
        gru(torch.randn(6, 2, 3), lengths=lengths)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_size": 0}, "hidden_size must be a positive int, got 0"),
        ({"num_layers": 0}, "num_layers must be a positive int, got 0"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\], got 1.5"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\], got -0.1"),
    ],
    ids=["hidden_size", "num_layers", "dropout_high", "dropout_low"],
)
def test_bad_constructor_args(cls, kwargs, message):
    args = {"input_size": 3, "hidden_size": 4, "num_layers": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        cls(**args)


def test_unknown_nonlinearity():
    with pytest.raises(
        ValueError,
        match=r"nonlinearity must be one of \['tanh', 'relu'\], got 'sigmoid'",
    ):
        RNN(3, 4, nonlinearity="sigmoid")
