"""Tests of seqbook_lib.lm_training: random windows, windowed scoring and
the training loop of a windowed language model."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqbook_lib.causal_lm import TransformerLM
from seqbook_lib.lm_training import (evaluate_windows, random_windows,
                                     train_windowed_lm)

V = 7


def text(n=200, seed=0):
    return torch.randint(V, (n,), generator=torch.Generator().manual_seed(seed))


def model(context=16, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return TransformerLM(V, 8, 2, 2, context).to(dtype).eval()


def test_random_windows_are_shifted_slices_of_the_text():
    ids = torch.arange(50)
    x, y = random_windows(ids, 6, 9, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (6, 9)
    assert torch.equal(y, x + 1)                 # targets one step later
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # consecutive characters
    assert int(y.max()) <= 49 and int(x.min()) >= 0


def test_random_windows_reach_the_last_character_and_repeat_with_a_seed():
    ids = torch.arange(12)
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([random_windows(ids, 50, 10, gen)[1] for _ in range(5)])
    assert int(seen.max()) == 11                 # the last start is used
    a = random_windows(ids, 4, 5, torch.Generator().manual_seed(3))
    b = random_windows(ids, 4, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("n", [49, 33, 17, 2])  # 48 targets = 3 x 16, others not
def test_evaluate_windows_equals_the_loss_by_hand(n):
    ids, lm = text(n), model()
    expected, count = 0.0, 0
    for start in range(0, n - 1, 16):            # consecutive windows
        x = ids[start : min(start + 16, n - 1)].unsqueeze(0)
        y = ids[start + 1 : start + 1 + x.shape[1]]
        expected += F.cross_entropy(lm(x)[0], y, reduction="sum").item()
        count += len(y)
    assert count == n - 1
    got = evaluate_windows(lm, ids, 16, batch_size=2)
    assert math.isclose(got, expected / count, rel_tol=1e-12)


def test_evaluate_windows_keeps_the_mode_and_checks_arguments():
    lm = model().train()
    evaluate_windows(lm, text(40), 16)
    assert lm.training
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        evaluate_windows(lm, text(40), 0)
    with pytest.raises(ValueError, match="at least 2 characters"):
        evaluate_windows(lm, text(1), 4)
    with pytest.raises(ValueError, match=r"ids"):
        evaluate_windows(lm, text(40).view(4, 10), 4)


def test_random_windows_check_arguments():
    with pytest.raises(ValueError, match="needs 11 characters"):
        random_windows(torch.arange(10), 2, 10)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        random_windows(torch.arange(10), 0, 3)
    with pytest.raises(ValueError, match="integer"):
        random_windows(torch.rand(10), 2, 3)


def test_training_lowers_the_loss_and_is_reproducible():
    ids = torch.arange(60) % V                   # a periodic text
    runs = []
    for _ in range(2):
        lm = model(context=12, dtype=torch.float32)
        hist = train_windowed_lm(
            lm, ids, 60, 8, 12, 1e-2, warmup=5, val_ids=ids[:30],
            eval_every=20, generator=torch.Generator().manual_seed(0),
            progress=False)
        runs.append(hist)
    hist = runs[0]
    assert hist.val_steps == [20, 40, 60] and len(hist.train) == 60
    assert hist.val[-1] < 0.5 < math.log(V) - 0.5 < hist.train[0]
    assert runs[0].train == runs[1].train        # same seed, same run


def test_training_checks_arguments():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_windowed_lm(model(), text(), 0, 2, 4, 1e-3)
    with pytest.raises(ValueError, match="eval_every must be a positive int"):
        train_windowed_lm(model(), text(), 2, 2, 4, 1e-3, eval_every=0)
