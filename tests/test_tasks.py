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


# -- token-level recall tasks (Part V) --------

from torch import nn  # noqa: E402

from seqbook_lib.tasks import (  # noqa: E402
    IGNORE,
    TokenBatch,
    mqar,
    mqar_vocab,
    selective_copy_vocab,
    selective_copying,
    token_accuracy,
    train_token_task,
)


@pytest.mark.parametrize("B, n, L, S", [(1, 1, 1, 2), (5, 3, 10, 4),
                                        (64, 8, 40, 8)])
def test_selective_copying_layout(B, n, L, S):
    ids, labels = selective_copying(B, n, L, S, gen())
    assert ids.shape == labels.shape == (B, L + n)
    assert ids.max() < selective_copy_vocab(S) and ids.min() >= 0
    region = ids[:, :L]
    data = labels[:, L:]  # (B, n) the tokens to copy
    assert (data >= 2).all() and (data < S + 2).all()
    assert (labels[:, :L] == IGNORE).all()
    for row in range(B):
        kept = region[row][region[row] != 0]  # data tokens, in order
        assert torch.equal(kept, data[row])  # exactly n, none is blank
    assert (ids[:, L] == 1).all()  # the separator
    assert torch.equal(ids[:, L + 1:], data[:, :-1])  # teacher forcing


def test_selective_copying_positions_vary_and_reproducible():
    a = selective_copying(200, 4, 30, generator=gen(5)).ids
    assert torch.equal(a, selective_copying(200, 4, 30, generator=gen(5)).ids)
    occupied = (a[:, :30] != 0).double().mean(0)  # (L,)
    # every position holds a data token about 4/30 of the time
    assert (occupied > 0.05).all() and (occupied < 0.25).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_tokens": 5, "region_len": 4}, "do not fit in a region"),
        ({"n_tokens": 0, "region_len": 4}, "n_tokens must be a positive int"),
        ({"n_tokens": 2, "region_len": 4, "n_symbols": 0}, "n_symbols"),
    ],
)
def test_selective_copying_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        selective_copying(2, **kwargs)


@pytest.mark.parametrize("B, n, T, K, V", [(1, 1, 4, 1, 1), (6, 3, 12, 5, 7),
                                           (64, 8, 64, 32, 32)])
def test_mqar_layout(B, n, T, K, V):
    ids, labels = mqar(B, n, T, K, V, gen())
    assert ids.shape == labels.shape == (B, T)
    assert ids.min() >= 0 and ids.max() < mqar_vocab(K, V)
    keys, values = ids[:, 0:2 * n:2], ids[:, 1:2 * n:2]  # (B, n) each
    assert (keys < K).all() and (values >= K).all()
    for row in range(B):
        assert len(set(keys[row].tolist())) == n  # distinct keys
    scored = labels != IGNORE
    assert scored[:, :2 * n].sum() == 0
    assert torch.equal(scored[:, 2 * n:], torch.arange(T - 2 * n)
                       .remainder(2).eq(0).expand(B, -1))
    # each query is a listed key, its label the value listed with it,
    # and the next input token repeats that value
    for row in range(B):
        table = dict(zip(keys[row].tolist(), values[row].tolist()))
        for t in range(2 * n, T, 2):
            assert labels[row, t].item() == table[ids[row, t].item()]
            assert ids[row, t + 1] == labels[row, t]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_pairs": 4, "seq_len": 8}, "even and at least 2"),
        ({"n_pairs": 4, "seq_len": 13}, "even and at least 2"),
        ({"n_pairs": 5, "seq_len": 20, "n_keys": 4}, "at least 5 distinct keys"),
        ({"n_pairs": 0, "seq_len": 20}, "n_pairs must be a positive int"),
    ],
)
def test_mqar_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mqar(2, **kwargs)


class _Lookup(nn.Module):
    """Predicts, at each position, a fixed function of the current token."""

    def __init__(self, vocab, table):
        super().__init__()
        self.vocab, self.table = vocab, table
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, ids):
        return F.one_hot(self.table[ids], self.vocab).double() * 10 + self.bias


def test_token_accuracy_counts_answer_positions_only():
    # In MQAR with one key and one value, the value follows the key: a
    # model mapping key -> value is right on every answer position, even
    # though it is wrong on every other position.
    task = lambda b, g: mqar(b, 1, 10, 1, 1, g)  # noqa: E731
    right = _Lookup(2, torch.tensor([1, 0]))
    assert token_accuracy(right, task, 20) == 1.0
    wrong = _Lookup(2, torch.tensor([0, 1]))
    assert token_accuracy(wrong, task, 20) == 0.0


def test_train_token_task_learns_a_tiny_copy():
    from seqbook_lib.mixers import MixerLM

    torch.manual_seed(0)
    task = lambda b, g: selective_copying(b, 1, 3, 2, g)  # noqa: E731
    model = MixerLM("gru", selective_copy_vocab(2), 16, num_layers=1)
    before = token_accuracy(model, task, 200)
    losses = train_token_task(model, task, steps=150, batch_size=32,
                              lr=1e-2, seed=0)
    assert len(losses) == 150 and losses[-1] < 0.5 * losses[0]
    assert token_accuracy(model, task, 200) > max(0.9, before)
    torch.manual_seed(0)
    again = MixerLM("gru", selective_copy_vocab(2), 16, num_layers=1)
    assert train_token_task(again, task, 150, 32, 1e-2, seed=0) == losses


def test_token_task_bad_arguments():
    model = _Lookup(2, torch.tensor([1, 0]))
    with pytest.raises(TypeError, match="task must be a function"):
        train_token_task(model, "mqar", 3)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_token_task(model, lambda b, g: mqar(b, 1, 4, 1, 1, g), 0)
    none = lambda b, g: TokenBatch(torch.zeros(b, 3, dtype=torch.long),  # noqa: E731
                                   torch.full((b, 3), IGNORE))
    with pytest.raises(ValueError, match="score no position"):
        token_accuracy(model, none, 4)
