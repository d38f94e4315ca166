"""Tests of seqbook_lib.sentiment: truncation, encoding, the BiLSTM
classifier (against torch's packed bidirectional LSTM and the library's
LSTM), training and prediction."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import assert_same_forward_backward
from seqbook_lib.rnn import LSTM
from seqbook_lib.sentiment import (
    BagOfWordsClassifier,
    BiLSTMClassifier,
    Reviews,
    accuracy,
    encode_reviews,
    head_and_tail,
    predict,
    predict_logits,
    prepare_imdb,
    reverse_padded,
    train_classifier,
)
from seqbook_lib.text import Vocab, pad_batch

# --- text to ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    "n, max_len, expected",
    [
        (5, 5, [0, 1, 2, 3, 4]),
        (3, 5, [0, 1, 2]),
        (10, 4, [0, 1, 8, 9]),
        (10, 5, [0, 1, 7, 8, 9]),
        (10, 1, [9]),
    ],
)
def test_head_and_tail(n, max_len, expected):
    assert head_and_tail(range(n), max_len) == expected


def test_head_and_tail_refuses_bad_length():
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        head_and_tail([1, 2], 0)


@pytest.fixture
def vocab():
    return Vocab(["<pad>", "<unk>", "good", "bad", "film", "not", "."])


def test_encode_reviews(vocab):
    reviews = encode_reviews(
        ["Good film.", "BAD<br />film, not good", "", "???"],
        vocab, max_len=3, labels=[1, 0, 1, 0],
    )
    assert [x.tolist() for x in reviews.ids] == [
        [2, 4, 6], [3, 5, 2], [1], [1, 1, 1]
    ]
    assert reviews.labels.tolist() == [1, 0, 1, 0]
    assert reviews.lengths.tolist() == [3, 3, 1, 3]
    assert reviews.subset([3, 0]).labels.tolist() == [0, 1]


def test_encode_reviews_errors(vocab):
    with pytest.raises(TypeError, match="sequence of strings"):
        encode_reviews("good film", vocab, 5)
    with pytest.raises(ValueError, match="one label per text, i.e. 2"):
        encode_reviews(["a", "b"], vocab, 5, labels=[1])
    with pytest.raises(ValueError, match="needs '<pad>' at id 0"):
        encode_reviews(["a"], Vocab(["a", "b"]), 5)


# --- the model -----------------------------------------------------------------


def test_reverse_padded():
    x = torch.arange(8.0).view(2, 4, 1)
    lengths = torch.tensor([3, 4])
    y = reverse_padded(x, lengths)
    assert y.squeeze(-1).tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]
    torch.testing.assert_close(reverse_padded(y, lengths), x)


def ragged_batch(vocab_size=20, B=4, T=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, T - 2, 3][:B])
    tokens = torch.randint(1, vocab_size, (B, T), generator=gen)
    tokens[torch.arange(T) >= lengths[:, None]] = 0  # pad id
    return tokens, lengths


class PackedReference(nn.Module):
    """The same classifier computed the slow, standard way: one
    ``nn.LSTM(bidirectional=True)`` through pack_padded_sequence."""

    def __init__(self, ours: BiLSTMClassifier):
        super().__init__()
        E = ours.embedding.embedding_dim
        H = ours.lstm_fwd.hidden_size
        self.embedding = nn.Embedding.from_pretrained(
            ours.embedding.weight.detach().clone(), freeze=False
        )
        self.lstm = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        for name, _ in ours.lstm_fwd.named_parameters():
            getattr(self.lstm, name).data.copy_(
                getattr(ours.lstm_fwd, name))
            getattr(self.lstm, name + "_reverse").data.copy_(
                getattr(ours.lstm_bwd, name))
        self.classifier = nn.Linear(4 * H, ours.classifier.out_features)
        self.classifier.load_state_dict(ours.classifier.state_dict())

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(
            self.embedding(tokens), lengths, batch_first=True,
            enforce_sorted=False,
        )
        out, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(
            out, batch_first=True, total_length=tokens.shape[1]
        )  # (B, T, 2H), zero past each length
        steps = torch.arange(tokens.shape[1])
        real = (steps < lengths[:, None]).unsqueeze(-1)
        h_max = h.masked_fill(~real, float("-inf")).amax(dim=1)
        h_mean = h.sum(dim=1) / lengths[:, None]
        return self.classifier(torch.cat([h_max, h_mean], dim=-1))


def test_classifier_equals_packed_bidirectional_lstm():
    torch.manual_seed(0)
    ours = BiLSTMClassifier(20, 5, 6, dropout=0.0)
    reference = PackedReference(ours)
    tokens, lengths = ragged_batch()
    assert_same_forward_backward(
        lambda t, n: ours(t, n), lambda t, n: reference(t, n),
        [tokens, lengths], atol=1e-10, rtol=1e-8,
    )
    names = {  # our parameter -> the reference's
        name: name.replace("lstm_fwd.", "lstm.")
        if name.startswith("lstm_fwd.")
        else name.replace("lstm_bwd.", "lstm.") + "_reverse"
        if name.startswith("lstm_bwd.")
        else name
        for name, _ in ours.named_parameters()
    }
    theirs = dict(reference.named_parameters())
    assert sorted(names.values()) == sorted(theirs)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, theirs[names[name]].grad, atol=1e-10, rtol=1e-8,
            msg=lambda m, name=name: f"grad of {name}: {m}",
        )


def test_states_equal_library_lstm_with_lengths():
    torch.manual_seed(1)
    ours = BiLSTMClassifier(20, 5, 6)
    library = LSTM(5, 6, batch_first=True, bidirectional=True)
    for name, p in ours.lstm_fwd.named_parameters():
        getattr(library, name).data.copy_(p)
        getattr(library, name + "_reverse").data.copy_(
            getattr(ours.lstm_bwd, name))
    tokens, lengths = ragged_batch(seed=3)
    expected, _ = library(ours.embedding(tokens), lengths=lengths)
    torch.testing.assert_close(ours.states(tokens, lengths), expected)


def test_last_pooling_takes_final_states_of_both_directions():
    torch.manual_seed(2)
    ours = BiLSTMClassifier(20, 5, 6, pooling="last")
    reference = PackedReference(BiLSTMClassifier(20, 5, 6))
    reference.embedding.weight.data.copy_(ours.embedding.weight)
    for name, p in ours.lstm_fwd.named_parameters():
        getattr(reference.lstm, name).data.copy_(p)
        getattr(reference.lstm, name + "_reverse").data.copy_(
            getattr(ours.lstm_bwd, name))
    tokens, lengths = ragged_batch(seed=4)
    packed = pack_padded_sequence(
        reference.embedding(tokens), lengths, batch_first=True,
        enforce_sorted=False,
    )
    _, (h_n, _) = reference.lstm(packed)  # (2, B, H)
    z = ours.pool(ours.states(tokens, lengths), lengths)
    torch.testing.assert_close(z, torch.cat([h_n[0], h_n[1]], dim=-1))


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "max+mean"])
def test_padding_never_changes_the_logits(pooling):
    torch.manual_seed(3)
    model = BiLSTMClassifier(20, 5, 6, pooling=pooling).eval()
    tokens, lengths = ragged_batch(seed=5)
    batched = model(tokens, lengths)
    for b in range(len(lengths)):
        alone = model(tokens[b:b + 1, : lengths[b]], lengths[b:b + 1])
        torch.testing.assert_close(batched[b:b + 1], alone)
    longer = torch.cat([tokens, torch.zeros(4, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(longer, lengths), batched)


def test_classifier_errors():
    with pytest.raises(ValueError, match="pooling must be one of"):
        BiLSTMClassifier(10, pooling="sum")
    with pytest.raises(ValueError, match="pad_idx must be an int in 0..9"):
        BiLSTMClassifier(10, pad_idx=10)
    model = BiLSTMClassifier(10, 4, 3)
    with pytest.raises(ValueError, match=r"tokens must .*\(B, T\)"):
        model(torch.zeros(5, dtype=torch.long), torch.tensor([5]))
    with pytest.raises(ValueError, match="every length must lie in 1..3"):
        model(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="0..9"):
        model(torch.full((1, 3), 10), torch.tensor([3]))


# --- training and prediction ---------------------------------------------------


def toy_reviews(n, seed):
    """Ids 2..9 are filler; a review holding id 10 is positive, one holding
    id 11 negative, somewhere in a random-length review."""
    gen = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(torch.randint(3, 12, (), generator=gen))
        x = torch.randint(2, 10, (length,), generator=gen)
        label = int(torch.randint(0, 2, (), generator=gen))
        x[int(torch.randint(0, length, (), generator=gen))] = 11 - label
        ids.append(x)
        labels.append(label)
    return Reviews(ids, torch.tensor(labels))


def train_toy(average_from=None, seed=0):
    torch.manual_seed(seed)
    model = BiLSTMClassifier(12, 8, 8, dropout=0.1, embedding_dropout=0.1)
    return train_classifier(
        model, toy_reviews(512, 1), toy_reviews(64, 2), epochs=6,
        batch_size=16, lr=1e-2, warmup=5, average_from=average_from,
        generator=torch.Generator().manual_seed(seed), progress=False,
    )


def test_training_learns_and_is_reproducible():
    model, history = train_toy()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert accuracy(model, toy_reviews(200, 3)) > 0.95
    assert not model.training
    again, history_again = train_toy()
    assert history_again == history
    for p, q in zip(model.parameters(), again.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_training_returns_the_best_candidate_on_validation():
    model, history = train_toy(average_from=0.5)
    assert "val_acc_averaged" in history[-1]
    best = max(
        max(h["val_acc"], h.get("val_acc_averaged", -1)) for h in history
    )
    assert accuracy(model, toy_reviews(64, 2)) == pytest.approx(best)


def test_training_argument_errors():
    model = BiLSTMClassifier(12, 4, 4)
    data = toy_reviews(8, 0)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_classifier(model, data, data, epochs=0)
    with pytest.raises(ValueError, match=r"average_from must lie in \[0, 1"):
        train_classifier(model, data, data, epochs=1, average_from=1.0)


def test_predict_keeps_order_and_matches_single_texts(vocab):
    torch.manual_seed(4)
    model = BiLSTMClassifier(len(vocab), 4, 5).eval()
    texts = ["good film", "not good . not good . bad", "bad", "film ."]
    p = predict(model, vocab, texts, max_len=4, batch_size=2)
    assert p.shape == (4,)
    assert ((p > 0) & (p < 1)).all()
    for i, text in enumerate(texts):
        torch.testing.assert_close(
            predict(model, vocab, [text], max_len=4), p[i:i + 1]
        )
    reviews = encode_reviews(texts, vocab, 4)
    logits = predict_logits(model, reviews)
    tokens, lengths = pad_batch(reviews.ids)
    torch.testing.assert_close(logits, model(tokens, lengths))


def test_bag_of_words_is_logistic_regression_on_frequencies():
    torch.manual_seed(5)
    model = BagOfWordsClassifier(20, 3)
    nn.init.normal_(model.weights.weight)
    nn.init.normal_(model.bias)
    model.weights.weight.data[0] = 0.0  # the pad row, never trained
    tokens, lengths = ragged_batch(seed=6)
    counts = torch.zeros(len(tokens), 20)
    for b, n in enumerate(lengths.tolist()):
        for v in tokens[b, :n].tolist():
            counts[b, v] += 1
    frequencies = counts / lengths[:, None]  # (B, V)
    W, b = model.weights.weight.detach(), model.bias.detach()
    torch.testing.assert_close(model(tokens, lengths), frequencies @ W + b)
    longer = torch.cat([tokens, torch.zeros(4, 2, dtype=torch.long)], 1)
    torch.testing.assert_close(
        model(longer, lengths), frequencies @ W + b
    )
    with pytest.raises(ValueError, match="every length must lie in 1..7"):
        model(tokens, torch.tensor([8, 1, 1, 1]))


def test_prepare_imdb_splits_without_leaks():
    words = ["good", "bad", "plot", "fine", "dull", "rare"]
    texts = [f"{words[i % 5]} {words[(i + 1) % 5]} film{i}" for i in range(40)]
    texts[7] += " rare rare"  # only in one review
    imdb = {"train": {"text": texts, "label": [i % 2 for i in range(40)]},
            "test": {"text": ["good rare", "unseen"], "label": [1, 0]}}
    splits = prepare_imdb(imdb, max_len=3, vocab_size=10, min_freq=1,
                          val_size=10, seed=0)
    assert sorted(splits.train_index + splits.val_index) == list(range(40))
    assert len(splits.val.ids) == 10 and len(splits.train.ids) == 30
    assert len(splits.vocab) == 10
    assert splits.vocab.itos[:2] == ["<pad>", "<unk>"]
    held_out = 7 in splits.val_index
    assert ("rare" in splits.vocab) == (not held_out)
    assert splits.val.labels.tolist() == [i % 2 for i in splits.val_index]
    assert splits.test.labels.tolist() == [1, 0]
    assert all(len(x) <= 3 for x in splits.train.ids)
    again = prepare_imdb(imdb, 3, 10, 1, 10, seed=0)
    assert again.val_index == splits.val_index
    assert prepare_imdb(imdb, 3, 10, 1, 10, seed=1).val_index != \
        splits.val_index
    with pytest.raises(ValueError, match="val_size must lie in 1..39"):
        prepare_imdb(imdb, 3, val_size=40)


def test_embedding_dropout_only_in_training():
    torch.manual_seed(6)
    plain = BiLSTMClassifier(20, 5, 6, dropout=0.0)
    dropped = BiLSTMClassifier(20, 5, 6, dropout=0.0, embedding_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    tokens, lengths = ragged_batch(seed=7)
    assert not torch.equal(dropped(tokens, lengths), plain(tokens, lengths))
    torch.testing.assert_close(
        dropped.eval()(tokens, lengths), plain.eval()(tokens, lengths)
    )
    with pytest.raises(ValueError, match="embedding_dropout"):
        BiLSTMClassifier(20, embedding_dropout=1.5)
