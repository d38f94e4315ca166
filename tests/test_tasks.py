"""Tests of seqbook_lib.tasks: the synthetic memory tasks and their model."""

import copy

import pytest
import torch
import torch.nn.functional as F

from seqbook_lib.tasks import (
    RecurrentClassifier,
    adding_problem,
    delayed_recall,
    recall_accuracy,
    train_recall,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- delayed recall --------


@pytest.mark.parametrize("B, T, S", [(1, 1, 2), (7, 5, 3), (64, 12, 8)])
def test_delayed_recall_layout(B, T, S):
    batch = delayed_recall(B, T, S, gen())
    assert batch.inputs.shape == (B, T, S + 1)
    assert batch.inputs.dtype == torch.get_default_dtype()
    assert batch.tokens.shape == (B, T) and batch.target.shape == (B,)
    # one symbol per step, encoded one-hot in the first S channels
    symbols, marker = batch.inputs[..., :S], batch.inputs[..., S]
    assert torch.equal(symbols.argmax(-1), batch.tokens)
    assert torch.equal(symbols.sum(-1), torch.ones(B, T))
    # the marker is on at step 0 only, and the target is the marked symbol
    expected = torch.zeros(B, T)
    expected[:, 0] = 1
    assert torch.equal(marker, expected)
    assert torch.equal(batch.target, batch.tokens[:, 0])


def test_delayed_recall_symbols_uniform_and_reproducible():
    tokens = delayed_recall(4000, 3, 4, gen(1)).tokens
    counts = torch.bincount(tokens.flatten(), minlength=4).double()
    assert torch.allclose(
        counts / counts.sum(), torch.full((4,), 0.25), atol=0.02
    )
    again = delayed_recall(4000, 3, 4, gen(1)).tokens
    assert torch.equal(tokens, again)
    assert not torch.equal(tokens, delayed_recall(4000, 3, 4, gen(2)).tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0, "seq_len": 3}, "batch_size must be a positive int"),
        ({"batch_size": 2, "seq_len": 0}, "seq_len must be a positive int"),
        ({"batch_size": 2, "seq_len": 3, "n_symbols": 1}, "at least 2, got 1"),
        ({"batch_size": 2.0, "seq_len": 3}, r"positive int, got 2\.0"),
    ],
)
def test_delayed_recall_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        delayed_recall(**kwargs)


def test_bad_generator_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Generator or None, got int"):
        delayed_recall(2, 3, generator=0)
    with pytest.raises(TypeError, match="torch.Generator or None, got int"):
        adding_problem(2, 3, generator=0)


# -- adding problem --------


@pytest.mark.parametrize("B, T", [(1, 2), (5, 3), (50, 20)])
def test_adding_problem(B, T):
    inputs, target = adding_problem(B, T, gen())
    assert inputs.shape == (B, T, 2) and target.shape == (B,)
    values, marker = inputs[..., 0], inputs[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    half = T // 2
    # exactly one mark in each half
    assert torch.equal(marker[:, :half].sum(1), torch.ones(B))
    assert torch.equal(marker[:, half:].sum(1), torch.ones(B))
    torch.testing.assert_close(target, (values * marker).sum(1))


def test_adding_problem_target_statistics():
    # the sum of two U(0, 1) numbers has mean 1 and variance 1/6
    _, target = adding_problem(20_000, 10, gen(3))
    assert abs(target.mean().item() - 1.0) < 0.01
    assert abs(target.var().item() - 1 / 6) < 0.01


def test_adding_problem_bad_length():
    with pytest.raises(ValueError, match="seq_len must be at least 2, got 1"):
        adding_problem(3, 1)


# -- classifier --------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_classifier_shapes_and_layer(kind):
    torch.manual_seed(0)
    model = RecurrentClassifier(kind, 5, 6, 4)
    assert isinstance(model.rnn, getattr(torch.nn, kind.upper()))
    logits, hidden = model(torch.randn(3, 7, 5))
    assert logits.shape == (3, 7, 4) and hidden.shape == (3, 7, 6)
    # the read-out is the head applied to the hidden state of every step
    torch.testing.assert_close(logits, model.head(hidden))


def test_classifier_bad_arguments():
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'elman'"):
        RecurrentClassifier("elman", 3, 4, 2)
    model = RecurrentClassifier("gru", 3, 4, 2)
    with pytest.raises(ValueError, match=r"3 dimensions \(B, T, I\)"):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"size 3 in dimension -1 \(input_s"):
        model(torch.randn(2, 5, 4))


def test_recall_needs_matching_sizes():
    model = RecurrentClassifier("lstm", 5, 4, 3)  # needs input_size 4
    with pytest.raises(ValueError, match="input_size = num_classes \\+ 1"):
        train_recall(model, steps=1, seq_len=3, progress=False)
    with pytest.raises(ValueError, match="input_size = num_classes \\+ 1"):
        recall_accuracy(model, seq_len=3)


def test_training_learns_a_short_recall():
    torch.manual_seed(0)
    model = RecurrentClassifier("lstm", 5, 16, 4)
    before = recall_accuracy(model, seq_len=4, n_sequences=400)
    losses = train_recall(
        model, steps=80, seq_len=4, batch_size=64, progress=False
    )
    after = recall_accuracy(model, seq_len=4, n_sequences=400)
    assert len(losses) == 80 and losses[-1] < losses[0] / 4
    assert after.shape == (4,)
    assert before.max() < 0.5 and after.min() > 0.95


@pytest.mark.parametrize("last_only", [False, True])
def test_training_loss_is_the_recall_loss(last_only):
    # the first reported loss is the cross-entropy of the untrained model on
    # the first batch: averaged over all steps, or on the last step only
    torch.manual_seed(0)
    model = RecurrentClassifier("gru", 5, 6, 4)
    fresh = copy.deepcopy(model)
    losses = train_recall(
        model,
        steps=2,
        seq_len=5,
        batch_size=8,
        last_only=last_only,
        seed=3,
        progress=False,
    )
    batch = delayed_recall(8, 5, 4, gen(3))
    logits, _ = fresh(batch.inputs)  # (B, T, S)
    if last_only:
        expected = F.cross_entropy(logits[:, -1], batch.target)
    else:
        target = batch.target.repeat_interleave(5)
        expected = F.cross_entropy(logits.reshape(-1, 4), target)
    assert losses[0] == pytest.approx(expected.item(), rel=1e-12)


def test_recall_accuracy_is_per_delay():
    torch.manual_seed(0)
    model = RecurrentClassifier("rnn", 4, 3, 3)
    acc = recall_accuracy(model, seq_len=6, n_sequences=300, seed=5)
    assert acc.shape == (6,) and ((acc >= 0) & (acc <= 1)).all()
    # the same seed gives the same sequences, hence the same accuracies
    assert torch.equal(acc, recall_accuracy(model, 6, 300, seed=5))
