"""Tests of seqbook_lib.charlm: the character language model, its TBPTT
batches, scoring, training and sampling."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from seqbook_lib.charlm import (
    CharLM,
    detach_state,
    evaluate_nats,
    next_char_probs,
    sample,
    stream_layout,
    tbptt_chunks,
    train_charlm,
)
from seqbook_lib.rnn import GRU as ScratchGRU
from seqbook_lib.text import Vocab

TEXT = "to be, or not to be: that is the question.\n" * 3
VOCAB = Vocab.build([TEXT], specials=())
V = len(VOCAB)


def make_model(cell="gru", num_layers=1, seed=0, hidden=12):
    torch.manual_seed(seed)
    return CharLM(V, 5, hidden, num_layers, cell).eval()


def text_ids(n=None):
    ids = torch.tensor(VOCAB.encode(TEXT))
    return ids if n is None else ids[:n]


# --- the model ---------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2])
def test_shapes(cell, L):
    model = make_model(cell, L)
    ids = torch.randint(V, (3, 7))
    logits, state = model(ids)
    assert logits.shape == (3, 7, V)
    hs = state if cell == "lstm" else (state,)
    assert all(h.shape == (L, 3, 12) for h in hs)
    assert isinstance(model.rnn, torch.nn.GRU if cell == "gru" else
                      torch.nn.LSTM)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("L, split", [(1, 1), (2, 4), (2, 8)])
def test_carried_state_equals_one_pass(cell, L, split):
    """Two calls with the state passed on give the numbers of one call over
    the whole sequence (float64)."""
    model = make_model(cell, L)
    ids = torch.randint(V, (2, 9), generator=torch.Generator().manual_seed(1))
    whole, final = model(ids)
    first, state = model(ids[:, :split])
    second, state = model(ids[:, split:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole,
                               rtol=0, atol=1e-12)
    if cell == "gru":
        state, final = (state,), (final,)
    for a, b in zip(state, final):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_detach_state_keeps_values_and_cuts_the_graph():
    model = make_model("lstm")
    _, state = model(torch.randint(V, (2, 3)))
    cut = detach_state(state)
    assert all(c.grad_fn is None and torch.equal(c, s)
               for c, s in zip(cut, state))
    _, h = make_model("gru")(torch.randint(V, (2, 3)))
    assert detach_state(h).grad_fn is None and h.grad_fn is not None


def test_scratch_gru_loads_the_state_dict():
    """The library's own GRU has the same parameters and numbers."""
    model = make_model("gru", 2)
    scratch = ScratchGRU(5, 12, 2, batch_first=True)
    scratch.load_state_dict(model.rnn.state_dict())
    x = torch.randn(3, 6, 5)
    torch.testing.assert_close(scratch(x)[0], model.rnn(x)[0],
                               rtol=0, atol=1e-12)


def test_model_errors():
    model = make_model("gru", 2)
    with pytest.raises(ValueError, match=r"ids must have 2 dimensions"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"token ids in 0\.\.{V - 1}"):
        model(torch.full((1, 2), V))
    with pytest.raises(ValueError, match=r"integer token ids"):
        model(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"state must have shape "
                       r"\(L, B, H\) = \(2, 3, 12\), got \(1, 3, 12\)"):
        model(torch.zeros(3, 2, dtype=torch.long), torch.zeros(1, 3, 12))
    lstm = make_model("lstm")
    with pytest.raises(ValueError, match=r"pair \(h, c\), got Tensor"):
        lstm(torch.zeros(3, 2, dtype=torch.long), torch.zeros(1, 3, 12))
    with pytest.raises(ValueError, match=r"c must have shape"):
        lstm(torch.zeros(3, 2, dtype=torch.long),
             (torch.zeros(1, 3, 12), torch.zeros(1, 2, 12)))
    with pytest.raises(ValueError, match=r"cell must be one of"):
        CharLM(V, 4, 8, cell="rnn")
    with pytest.raises(ValueError, match=r"hidden_size must be a positive"):
        CharLM(V, 4, 0)
    with pytest.raises(ValueError, match=r"dropout must be a number"):
        CharLM(V, 4, 8, dropout=1.5)


# --- streams and chunks ------------------------------------------------------


@pytest.mark.parametrize("N, B", [(2, 1), (11, 2), (23, 4), (40, 13)])
def test_stream_layout(N, B):
    ids = torch.arange(N)
    inputs, targets = stream_layout(ids, B)
    n = (N - 1) // B
    assert inputs.shape == targets.shape == (B, n)
    for b in range(B):
        assert inputs[b].tolist() == list(range(b * n, (b + 1) * n))
    assert torch.equal(targets, inputs + 1)
    # each target once: the characters 1 .. B*n in reading order
    assert targets.flatten().tolist() == list(range(1, B * n + 1))


@pytest.mark.parametrize("N, B, T", [(30, 2, 4), (30, 3, 7), (9, 1, 8)])
def test_tbptt_chunks_continue_each_stream(N, B, T):
    ids = torch.arange(N)
    chunks = list(tbptt_chunks(ids, B, T))
    inputs, targets = stream_layout(ids, B)
    assert len(chunks) == math.ceil(inputs.shape[1] / T)
    assert all(x.shape == (B, T) for x, _ in chunks[:-1])
    assert torch.equal(torch.cat([x for x, _ in chunks], 1), inputs)
    assert torch.equal(torch.cat([y for _, y in chunks], 1), targets)
    for (x0, y0), (x1, _) in itertools.pairwise(chunks):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # the next character
        assert torch.equal(x1[:, 0], y0[:, -1])


def test_stream_errors():
    with pytest.raises(ValueError, match=r"too short for batch_size=5"):
        stream_layout(torch.arange(5), 5)
    with pytest.raises(ValueError, match=r"ids must have 1 dimensions"):
        stream_layout(torch.zeros(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"integer character ids"):
        stream_layout(torch.zeros(9), 1)
    with pytest.raises(ValueError, match=r"seq_len must be a positive int"):
        next(tbptt_chunks(torch.arange(9), 1, 0))


# --- scoring -----------------------------------------------------------------


def direct_nats(model, ids, B):
    """The mean cross-entropy of B streams computed by hand: stream b reads
    its own slice from a zero state; the last one runs to the end."""
    n = (len(ids) - 1) // B
    total = 0.0
    for b in range(B):
        stop = (b + 1) * n if b < B - 1 else len(ids) - 1
        logits, _ = model(ids[b * n:stop].unsqueeze(0))
        total += F.cross_entropy(logits[0], ids[b * n + 1:stop + 1],
                                 reduction="sum").item()
    return total / (len(ids) - 1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("B, T", [(1, 5), (1, 200), (3, 4), (4, 10)])
def test_evaluate_nats_equals_direct_cross_entropy(cell, B, T):
    model = make_model(cell, 2)
    ids = text_ids(60)  # 59 targets: B = 3 and 4 leave 2 and 3 over
    got = evaluate_nats(model, ids, batch_size=B, seq_len=T)
    assert got == pytest.approx(direct_nats(model, ids, B), abs=1e-12)
    if B == 1:  # one stream: the plain cross-entropy of the whole text
        logits, _ = model(ids[:-1].unsqueeze(0))
        plain = F.cross_entropy(logits[0], ids[1:]).item()
        assert got == pytest.approx(plain, abs=1e-12)


def test_evaluate_nats_leaves_training_mode_as_it_was():
    model = make_model().train()
    evaluate_nats(model, text_ids(20), 2, 4)
    assert model.training
    model.eval()
    evaluate_nats(model, text_ids(20), 2, 4)
    assert not model.training


# --- training ----------------------------------------------------------------


def test_train_charlm_learns_and_is_reproducible():
    ids = text_ids()

    def run():
        model = make_model(hidden=16).train()
        history = train_charlm(model, ids, steps=60, batch_size=2,
                               seq_len=16, lr=3e-2, warmup=3, val_ids=ids,
                               eval_every=25, progress=False)
        return model, history

    model, history = run()
    assert len(history.train) == 60
    assert history.val_steps == [25, 50, 60]
    assert history.val[-1] == pytest.approx(evaluate_nats(model, ids, 8))
    assert history.val[-1] < 0.5 * math.log(V)  # well below uniform
    assert sum(history.train[-5:]) < sum(history.train[:5]) / 2
    assert run()[1] == history  # the same numbers again


def test_train_charlm_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"fewer than seq_len=50"):
        train_charlm(model, text_ids(), 1, batch_size=4, seq_len=50,
                     lr=1e-3, progress=False)
    with pytest.raises(ValueError, match=r"steps must be a positive int"):
        train_charlm(model, text_ids(), 0, 2, 4, 1e-3, progress=False)


# --- sampling ----------------------------------------------------------------


def test_next_char_probs():
    z = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    torch.testing.assert_close(next_char_probs(z, 0.5), (2 * z).softmax(-1))
    p = next_char_probs(z, 2.0, top_k=2)
    expected = torch.zeros(1, 4)
    expected[0, 1:3] = torch.tensor([1.5, 1.0]).softmax(-1)
    torch.testing.assert_close(p, expected)
    flat = next_char_probs(z, 1e6)
    torch.testing.assert_close(flat, torch.full((1, 4), 0.25),
                               rtol=0, atol=1e-5)


def greedy_text(model, prompt, length):
    ids = VOCAB.encode(prompt)
    for _ in range(length):
        logits, _ = model(torch.tensor([ids]))
        ids.append(logits[0, -1].argmax().item())
    return "".join(VOCAB.decode(ids))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_top_k_one_and_low_temperature_are_greedy(cell):
    model = make_model(cell, 2, seed=3)
    expected = greedy_text(model, "to b", 15)
    assert sample(model, VOCAB, "to b", 15, top_k=1) == expected
    assert sample(model, VOCAB, "to b", 15, temperature=1e-4) == expected


def test_sample_draws_from_the_generator():
    """Same seed, same text; and the draws are those of torch.multinomial
    with that generator on the model's probabilities."""
    model = make_model(seed=4)
    gen = torch.Generator().manual_seed(7)
    text = sample(model, VOCAB, "to", 12, 1.3, top_k=5, generator=gen)
    again = sample(model, VOCAB, "to", 12, 1.3, top_k=5,
                   generator=torch.Generator().manual_seed(7))
    assert text == again and text.startswith("to") and len(text) == 14
    gen = torch.Generator().manual_seed(7)
    ids = VOCAB.encode("to")
    for _ in range(12):
        logits, _ = model(torch.tensor([ids]))
        probs = next_char_probs(logits[:, -1], 1.3, 5)
        ids.append(torch.multinomial(probs, 1, generator=gen).item())
    assert text == "".join(VOCAB.decode(ids))
    others = {sample(model, VOCAB, "to", 12, 1.3,
                     generator=torch.Generator().manual_seed(s))
              for s in range(5)}
    assert len(others) > 1


def test_sample_errors():
    model = make_model()
    for bad in (0, -1.0, True, "hot"):
        with pytest.raises(ValueError, match=r"temperature must be a number"):
            sample(model, VOCAB, "to", 3, temperature=bad)
    for bad in (0, V + 1, 2.0, True):
        with pytest.raises(ValueError, match=rf"top_k must be None or an int "
                           rf"in 1\.\.{V}"):
            sample(model, VOCAB, "to", 3, top_k=bad)
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['X', "
                       r"'z'\]"):
        sample(model, VOCAB, "to Xz", 3)
    with pytest.raises(ValueError, match=r"prompt must be a non-empty str"):
        sample(model, VOCAB, "", 3)
    with pytest.raises(ValueError, match=r"length must be an int >= 0"):
        sample(model, VOCAB, "to", -1)
    with pytest.raises(TypeError, match=r"generator must be a "
                       r"torch.Generator"):
        sample(model, VOCAB, "to", 3, generator=0)
    with pytest.raises(TypeError, match=r"vocab must be a Vocab"):
        sample(model, VOCAB.itos, "to", 3)
    assert sample(model, VOCAB, "to", 0) == "to"
