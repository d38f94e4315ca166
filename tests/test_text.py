"""Tests of seqbook_lib.text: tokenizer, vocabulary, padding and length bucketing."""

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqbook_lib.text as text_module
from seqbook_lib.text import Vocab, length_bucketed_batches, pad_batch, tokenize

# --- tokenize ---------------------------------------------------------------------


def test_docstring_examples():
    result = doctest.testmod(text_module)
    assert result.attempted >= 3
    assert result.failed == 0


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello World", ["hello", "world"]),
        ("one<br />two<br/>three<BR>four<br  / >five", ["one", "two", "three", "four", "five"]),
        ("I don't think it's rock'n'roll", ["i", "don't", "think", "it's", "rock'n'roll"]),
        ("the actors' fees", ["the", "actors", "'", "fees"]),
        ("'quoted'", ["'", "quoted", "'"]),
        ("Wow!!! 9/10, (really)?", ["wow", "!", "!", "!", "9", "/", "10", ",", "(", "really", ")", "?"]),
        ("  \n\t ", []),
        ("Café CRÈME", ["café", "crème"]),
        ("a<b>c", ["a", "<", "b", ">", "c"]),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_refuses_non_strings():
    with pytest.raises(TypeError, match="text must be a str, got list"):
        tokenize(["a", "b"])


# --- Vocab ------------------------------------------------------------------------

DOCS = [["b", "a", "c", "a"], ["c", "a", "d"], ["b", "e"]]  # a:3, b:2, c:2, d:1, e:1


def test_build_orders_by_count_then_alphabet():
    vocab = Vocab.build(DOCS)
    assert vocab.itos == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    assert vocab.stoi == {t: i for i, t in enumerate(vocab.itos)}
    assert (vocab.pad_id, vocab.unk_id) == (0, 1)
    assert len(vocab) == 7
    assert "a" in vocab and "z" not in vocab
    # ties are broken alphabetically, not by first appearance
    tied = Vocab.build([["beta", "alpha", "gamma", "delta", "delta"]], specials=())
    assert tied.itos == ["delta", "alpha", "beta", "gamma"]


def test_build_min_freq_and_max_size():
    assert Vocab.build(DOCS, min_freq=2).itos == ["<pad>", "<unk>", "a", "b", "c"]
    assert Vocab.build(DOCS, max_size=4).itos == ["<pad>", "<unk>", "a", "b"]
    assert Vocab.build(DOCS, min_freq=3, max_size=100).itos == ["<pad>", "<unk>", "a"]


def test_build_custom_specials_are_not_counted_twice():
    docs = [["<eos>", "x", "<pad>"], ["x", "<eos>"]]
    vocab = Vocab.build(docs, specials=("<pad>", "<unk>", "<bos>", "<eos>"))
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "x"]


def test_build_accepts_a_generator_of_token_lists():
    vocab = Vocab.build(tokenize(t) for t in ["A film.", "a FILM!"])
    assert vocab.itos == ["<pad>", "<unk>", "a", "film", "!", "."]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=12), max_size=8), st.randoms())
def test_build_ignores_document_order(docs, rnd):
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    assert Vocab.build(docs) == Vocab.build(shuffled)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=10), min_size=1, max_size=6))
def test_encode_decode_round_trip(docs):
    vocab = Vocab.build(docs)
    for doc in docs:
        ids = vocab.encode(doc)
        assert all(2 <= i < len(vocab) for i in ids)
        assert vocab.decode(ids) == doc


def test_unknown_tokens_map_to_unk():
    vocab = Vocab.build(DOCS, min_freq=2)
    assert vocab.encode(["a", "d", "zzz", "c"]) == [2, 1, 1, 4]
    assert vocab.decode([2, 1, 0]) == ["a", "<unk>", "<pad>"]


def test_decode_accepts_a_tensor_and_checks_ids():
    vocab = Vocab.build(DOCS)
    assert vocab.decode(torch.tensor([2, 3])) == ["a", "b"]
    with pytest.raises(ValueError, match=r"ids must be ints in 0\.\.6, got 7"):
        vocab.decode([2, 7])
    with pytest.raises(ValueError, match=r"ids must be ints in 0\.\.6, got -1"):
        vocab.decode([-1])
    with pytest.raises(ValueError, match=r"ids must be a 1-D tensor, got shape \(1, 2\)"):
        vocab.decode(torch.tensor([[2, 3]]))


def test_character_vocabulary():
    text = "to be, or not to be"
    vocab = Vocab.build([text], specials=())
    assert vocab == Vocab.build([list(text)], specials=())
    assert len(vocab) == len(set(text))
    assert vocab.itos[:3] == [" ", "o", "t"]  # 5 spaces, 4 o's, 4 t's
    assert vocab.pad_id is None and vocab.unk_id is None
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert "".join(vocab.decode(ids)) == text
    with pytest.raises(ValueError, match="token 'z' is not in the vocabulary, which has no '<unk>'"):
        vocab.encode("zoo")


def test_json_and_file_round_trip(tmp_path):
    vocab = Vocab.build([["ünï", "cödé", "ünï"], ["\"q\"", "<br>"]])
    assert Vocab.from_json(vocab.to_json()) == vocab
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.stoi == vocab.stoi
    assert "ünï" in path.read_text(encoding="utf-8")


def test_vocab_errors():
    with pytest.raises(ValueError, match="max_size counts the specials and must be at least 2"):
        Vocab.build(DOCS, max_size=1)
    with pytest.raises(ValueError, match="min_freq must be a positive int, got 0"):
        Vocab.build(DOCS, min_freq=0)
    with pytest.raises(ValueError, match=r"tokens must be unique, got repeated tokens \['a'\]"):
        Vocab(["a", "b", "a"])
    with pytest.raises(TypeError, match="tokens must be str, got int"):
        Vocab(["a", 3])
    with pytest.raises(ValueError, match='expected a JSON object {"itos"'):
        Vocab.from_json('["a", "b"]')


def test_repr_names_the_size():
    assert repr(Vocab.build(DOCS)).startswith("Vocab(size=7, itos=['<pad>', '<unk>', 'a'")


# --- pad_batch ----------------------------------------------------------------------


def test_pad_batch_values():
    padded, lengths = pad_batch([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert padded.dtype == torch.long and lengths.dtype == torch.long
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=9), min_size=1, max_size=6),
    st.integers(-1, 3),
    st.booleans(),
)
def test_pad_batch_matches_torch(seqs, pad_id, batch_first):
    tensors = [torch.tensor(s) for s in seqs]
    padded, lengths = pad_batch(seqs, pad_id=pad_id, batch_first=batch_first)
    expected = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=batch_first, padding_value=pad_id)
    assert torch.equal(padded, expected)
    assert lengths.tolist() == [len(s) for s in seqs]
    # tensors as input give the same result
    padded_t, lengths_t = pad_batch(tensors, pad_id=pad_id, batch_first=batch_first)
    assert torch.equal(padded_t, padded) and torch.equal(lengths_t, lengths)


def test_pad_batch_errors():
    with pytest.raises(ValueError, match="at least one sequence, got an empty batch"):
        pad_batch([])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pad_batch([[1, 2], [], [3]])
    with pytest.raises(ValueError, match=r"sequence 0 must be 1-D, got shape \(2, 2\)"):
        pad_batch([torch.ones(2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="sequence 0 must hold integer token ids, got dtype torch.float"):
        pad_batch([[1.5, 2.0]])
    with pytest.raises(TypeError, match="pad_id must be an int, got float"):
        pad_batch([[1]], pad_id=0.0)


# --- length_bucketed_batches ----------------------------------------------------------


def _padding(batches, lengths):
    """Pad positions a batching costs: sum over batches of (B * max length - total length)."""
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 30), max_size=120),
    st.integers(1, 9),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_every_index_exactly_once(lengths, batch_size, multiplier, shuffle, seed):
    gen = torch.Generator().manual_seed(seed)
    batches = length_bucketed_batches(
        lengths, batch_size, shuffle=shuffle, generator=gen, bucket_size_multiplier=multiplier
    )
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    sizes = [len(b) for b in batches]
    assert all(s >= 1 for s in sizes)
    assert sum(s != batch_size for s in sizes) <= 1  # only the very last chunk's tail is short
    assert all(isinstance(i, int) for b in batches for i in b)


def test_batches_are_sorted_runs_when_one_chunk_holds_everything():
    lengths = torch.randint(1, 200, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = length_bucketed_batches(
        lengths, 16, generator=torch.Generator().manual_seed(1), bucket_size_multiplier=100
    )
    # each batch covers its own range of lengths: sorted by their shortest member,
    # the longest of one batch is at most the shortest of the next
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))
    # and the batch order is shuffled, not sorted by length
    firsts = [min(lengths[i] for i in b) for b in batches]
    assert firsts != sorted(firsts)


def test_bucketing_cuts_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 1000, (2000,), generator=gen).tolist()
    bucketed = length_bucketed_batches(lengths, 32, generator=gen)
    random_batches = torch.randperm(2000, generator=gen).split(32)
    random_batches = [b.tolist() for b in random_batches]
    assert _padding(bucketed, lengths) < 0.1 * _padding(random_batches, lengths)


def test_reproducible_under_a_seed():
    lengths = list(range(100, 0, -1)) * 3

    def run(seed):
        return length_bucketed_batches(lengths, 8, generator=torch.Generator().manual_seed(seed),
                                       bucket_size_multiplier=4)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_no_shuffle_is_deterministic_and_sorts_each_chunk():
    lengths = [5, 1, 4, 2, 3, 9, 7, 8, 6]
    batches = length_bucketed_batches(lengths, 2, shuffle=False, bucket_size_multiplier=2)
    # chunks of 4 consecutive indices, each sorted by length (stable), cut into pairs
    assert batches == [[1, 3], [2, 0], [4, 6], [7, 5], [8]]
    assert length_bucketed_batches(lengths, 2, shuffle=False, bucket_size_multiplier=2) == batches


def test_length_bucketed_batches_edge_cases_and_errors():
    assert length_bucketed_batches([], 4) == []
    assert length_bucketed_batches(torch.tensor([3, 1, 2]), 5, shuffle=False) == [[1, 2, 0]]
    with pytest.raises(ValueError, match=r"lengths must be 1-D, got shape \(2, 2\)"):
        length_bucketed_batches([[1, 2], [3, 4]], 2)
    with pytest.raises(ValueError, match="lengths must hold integers, got dtype torch.float"):
        length_bucketed_batches([1.0, 2.0], 2)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        length_bucketed_batches([1, 2], 0)
    with pytest.raises(ValueError, match="bucket_size_multiplier must be a positive int, got 0"):
        length_bucketed_batches([1, 2], 2, bucket_size_multiplier=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        length_bucketed_batches([1, 2], 2, generator=0)
