"""seqbook_lib.seq2seq: shapes, masking, decoding consistency, gradients and a tiny training run."""

import time

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_beam_is_exhaustive_search, seq2seq_batch, sequence_log_prob
from seqbook_lib.seq2seq import Decoder, Encoder, Hypothesis, Seq2Seq

PAD, BOS, EOS = 0, 1, 2
CONFIGS = [  # (cell, attention, bidirectional, num_layers)
    ("gru", "additive", True, 1),
    ("gru", "dot", True, 2),
    ("gru", None, False, 1),
    ("lstm", "additive", False, 2),
    ("lstm", "dot", False, 1),
    ("lstm", None, True, 1),
]


@pytest.fixture(autouse=True)
def one_thread():
    """These models do many tiny matmuls: one thread is faster than two, and never oversubscribes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(cell="gru", attention="additive", bidirectional=True, num_layers=1, V=11, E=6, H=5, seed=0,
          dropout=0.0):
    torch.manual_seed(seed)
    enc = Encoder(V, E, H, num_layers=num_layers, cell=cell, bidirectional=bidirectional,
                  dropout=dropout, pad_idx=PAD)
    dec = Decoder(V, E, H, enc.output_size, attention=attention, cell=cell, dropout=dropout, pad_idx=PAD)
    return Seq2Seq(enc, dec, bos_idx=BOS, eos_idx=EOS, pad_idx=PAD).eval()


def batch(B=4, S=7, T=5, V=11, seed=1, lengths=None):
    """Random source (padded past each length) and target input starting with BOS."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=gen) if lengths is None else torch.tensor(lengths)
    lengths[0] = S  # one full-length row
    return seq2seq_batch(lengths, S, T, V, V, gen, PAD, BOS)


# --------------------------------------------------------------------------
# Shapes and masking
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", CONFIGS)
def test_shapes_and_masked_positions_get_no_attention(cell, attention, bidirectional, num_layers):
    model = build(cell, attention, bidirectional, num_layers)
    src, lengths, tgt_in = batch(lengths=[7, 3, 1, 5])
    B, S = src.shape
    T = tgt_in.shape[1]
    outputs, mask, state = model.encoder(src, lengths)
    D = 2 if bidirectional else 1
    assert outputs.shape == (B, S, D * 5)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, torch.arange(S)[None] < lengths[:, None])
    for s in state if cell == "lstm" else (state,):
        assert s.shape == (B, 5)
        assert (s.abs() < 1).all()  # tanh bridge
    logits, attn = model(src, lengths, tgt_in)
    assert logits.shape == (B, T, 11)
    assert attn.shape == (B, T, S)
    assert (attn[~mask[:, None, :].expand(B, T, S)] == 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, T))
    if attention is None:  # the fixed mean: uniform weights 1/length
        torch.testing.assert_close(attn, mask[:, None, :].expand(B, T, S) / lengths[:, None, None])


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", CONFIGS)
def test_extra_padding_and_pad_contents_do_not_change_logits(cell, attention, bidirectional, num_layers):
    model = build(cell, attention, bidirectional, num_layers, seed=2)
    src, lengths, tgt_in = batch(seed=3)
    logits, attn = model(src, lengths, tgt_in)
    wider = torch.cat([src, torch.full((src.shape[0], 3), PAD)], dim=1)
    # fill every padded position with real token ids: they must still be ignored
    noisy = wider.clone()
    pad = torch.arange(wider.shape[1])[None] >= lengths[:, None]
    noisy[pad] = torch.randint(3, 11, (int(pad.sum()),))
    for padded in (wider, noisy):
        logits2, attn2 = model(padded, lengths, tgt_in)
        torch.testing.assert_close(logits2, logits)
        torch.testing.assert_close(attn2[..., : src.shape[1]], attn)
        assert (attn2[..., src.shape[1]:] == 0).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_encoder_bridge_reads_the_last_layers_final_states(cell, num_layers):
    """state_0 = tanh(bridge([h_fwd at the last valid step ; h_bwd at position 0])) of the top layer."""
    model = build(cell, "additive", True, num_layers)
    src, lengths, _ = batch(lengths=[7, 2, 4, 1])
    outputs, _, state = model.encoder(src, lengths)
    H = 5
    last = outputs[torch.arange(4), lengths - 1, :H]  # forward direction, last valid step
    first = outputs[:, 0, H:]  # backward direction ends at position 0
    h0 = state[0] if cell == "lstm" else state
    torch.testing.assert_close(h0, torch.tanh(model.encoder.bridge(torch.cat([last, first], -1))))
    if cell == "lstm":  # the cell state has its own bridge, fed by the top layer's c_n
        _, (_, c_n) = model.encoder.rnn(model.encoder.embedding(src), lengths=lengths)
        expected = torch.tanh(model.encoder.bridge_c(torch.cat([c_n[-2], c_n[-1]], -1)))
        torch.testing.assert_close(state[1], expected)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["additive", "dot", None])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_decoder_step_follows_its_equations(cell, attention, bidirectional):
    """One step against the docstring's equations, written out with the decoder's own sub-modules."""
    model = build(cell, attention, bidirectional, seed=14)
    dec = model.decoder
    src, lengths, _ = batch(lengths=[7, 3, 1, 5], seed=15)
    enc, mask, _ = model.encoder(src, lengths)
    C = enc.shape[-1]
    gen = torch.Generator().manual_seed(16)
    h = torch.randn(4, 5, generator=gen)
    state = (h, torch.randn(4, 5, generator=gen)) if cell == "lstm" else h
    token = torch.tensor([BOS, 3, 4, 5])
    logits, new_state, weights = dec(token, state, enc, mask)

    if attention == "additive":  # e_s = v^T tanh(W_q h + W_k enc_s)
        a = dec.attention
        scores = a.v(torch.tanh(a.W_q(h)[:, None] + a.W_k(enc)))[..., 0]
    elif attention == "dot":  # e_s = (h W_p) . enc_s / sqrt(C)
        q = h if dec.query_proj is None else dec.query_proj(h)
        assert (dec.query_proj is None) == (C == 5)
        scores = (q[:, None] * enc).sum(-1) / C**0.5
    else:  # constant scores: the mean
        scores = torch.zeros(4, enc.shape[1])
    expected_w = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(weights, expected_w)
    context = (expected_w[..., None] * enc).sum(1)
    emb = dec.embedding(token)
    expected_state = dec.rnn(torch.cat([emb, context], -1), state)
    for x, y in zip(*(((new_state,), (expected_state,)) if cell == "gru" else (new_state, expected_state))):
        torch.testing.assert_close(x, y)
    h_new = expected_state[0] if cell == "lstm" else expected_state
    torch.testing.assert_close(logits, dec.out(torch.cat([h_new, context, emb], -1)))


# --------------------------------------------------------------------------
# Teacher forcing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", CONFIGS)
def test_teacher_forcing_equals_manual_step_by_step_decoding(cell, attention, bidirectional, num_layers):
    model = build(cell, attention, bidirectional, num_layers, seed=4)
    src, lengths, tgt_in = batch(seed=5)
    logits, attn = model(src, lengths, tgt_in, teacher_forcing=1.0)
    enc_outputs, mask, state = model.encoder(src, lengths)
    for t in range(tgt_in.shape[1]):
        step_logits, state, weights = model.decoder(tgt_in[:, t], state, enc_outputs, mask)
        torch.testing.assert_close(logits[:, t], step_logits)
        torch.testing.assert_close(attn[:, t], weights)


def test_no_teacher_forcing_feeds_back_the_argmax_like_greedy_decoding():
    model = build("gru", "additive", seed=6)
    src, lengths, tgt_in = batch(seed=7, T=6)
    logits, _ = model(src, lengths, tgt_in, teacher_forcing=0.0)
    predicted = logits.argmax(-1)  # (B, T)
    for b, hyp in enumerate(model.greedy_decode(src, lengths, max_len=6)):
        assert predicted[b, : len(hyp.tokens)].tolist() == hyp.tokens
    forced, _ = model(src, lengths, tgt_in, teacher_forcing=1.0)
    assert not torch.allclose(forced, logits)  # the ground truth differs from the argmax here


def test_partial_teacher_forcing_is_reproducible_and_mixes_both_sources():
    model = build("gru", "dot", seed=8)
    src, lengths, tgt_in = batch(seed=9, T=8)
    forced, _ = model(src, lengths, tgt_in, teacher_forcing=1.0)
    free, _ = model(src, lengths, tgt_in, teacher_forcing=0.0)
    torch.manual_seed(123)
    mixed, _ = model(src, lengths, tgt_in, teacher_forcing=0.5)
    torch.manual_seed(123)
    again, _ = model(src, lengths, tgt_in, teacher_forcing=0.5)
    torch.testing.assert_close(mixed, again)
    torch.testing.assert_close(mixed[:, :2], forced[:, :2])  # step 0 gets BOS; step 1 needs no coin yet
    assert not torch.allclose(mixed, forced) and not torch.allclose(mixed, free)


# --------------------------------------------------------------------------
# Greedy decoding and beam search
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", CONFIGS)
def test_greedy_equals_beam_size_one(cell, attention, bidirectional, num_layers):
    model = build(cell, attention, bidirectional, num_layers, V=7, seed=10)
    src, lengths, _ = batch(B=5, S=6, V=7, seed=11)
    greedy = model.greedy_decode(src, lengths, max_len=8)
    beam = model.beam_search(src, lengths, beam_size=1, max_len=8)
    assert len(greedy) == len(beam) == 5
    for g, b, n in zip(greedy, beam, lengths.tolist()):
        assert isinstance(g, Hypothesis)
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-10)
        assert g.attention.shape == (len(g.tokens), n)
        torch.testing.assert_close(g.attention, b.attention)
        assert EOS not in g.tokens[:-1] and (g.tokens[-1] == EOS or len(g.tokens) == 8)


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_scores_at_least_as_well_as_greedy(seed):
    cell = "lstm" if seed % 2 else "gru"
    model = build(cell, ["additive", "dot", None][seed % 3], V=6, seed=100 + seed)
    src, lengths, _ = batch(B=3, S=5, V=6, seed=200 + seed)
    greedy = model.greedy_decode(src, lengths, max_len=7)
    beam = model.beam_search(src, lengths, beam_size=4, max_len=7, length_penalty=0.0)
    for b, (g, h) in enumerate(zip(greedy, beam)):
        one = (src[b:b + 1], lengths[b:b + 1])
        assert h.score == pytest.approx(sequence_log_prob(model, *one, h.tokens), abs=1e-10)
        assert g.score == pytest.approx(sequence_log_prob(model, *one, g.tokens), abs=1e-10)
        assert h.score >= g.score - 1e-12
        assert h.attention.shape == (len(h.tokens), int(lengths[b]))
        torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens)))


def fixed_distribution_model(probs):
    """A model whose every step predicts the same distribution ``probs`` over V = len(probs)."""
    model = build("gru", "additive", V=len(probs), seed=0)
    with torch.no_grad():
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.copy_(torch.tensor(probs).log())
    return model


# p(EOS) = 0.25, p(3) = 0.7 at every step, whatever the source and the prefix
FIXED = [0.025, 0.025, 0.25, 0.7]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("kind", ["random", "fixed"])
def test_wide_beam_is_exhaustive_search(length_penalty, kind):
    """With room for every prefix, beam search returns the best of all sequences by score / lp."""
    V, max_len = 4, 3
    model = build("gru", "additive", V=V, seed=31) if kind == "random" else fixed_distribution_model(FIXED)
    src, lengths = torch.tensor([[3, 3, 0]]), torch.tensor([2])
    assert_beam_is_exhaustive_search(model, src, lengths, V, max_len, length_penalty)


def test_length_penalty_prefers_longer_outputs():
    model = fixed_distribution_model(FIXED)
    src, lengths = torch.tensor([[3, 3]]), torch.tensor([2])
    plain = model.beam_search(src, lengths, beam_size=3, max_len=5, length_penalty=0.0)[0]
    long = model.beam_search(src, lengths, beam_size=3, max_len=5, length_penalty=3.0)[0]
    assert plain.tokens == [EOS]  # log 0.25 = -1.39 beats 5 log 0.7 = -1.78 and log 0.7 + log 0.25
    assert plain.score == pytest.approx(torch.tensor(0.25).log().item())
    assert long.tokens == [3] * 5  # cut off by max_len: (5 log 0.7) / (10/6)^3 = -0.39 is the best
    assert long.score == pytest.approx(5 * torch.tensor(0.7).log().item())


# --------------------------------------------------------------------------
# Gradients and training
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cell,attention,bidirectional,num_layers", CONFIGS)
def test_gradients_reach_every_parameter(cell, attention, bidirectional, num_layers):
    model = build(cell, attention, bidirectional, num_layers, seed=12, dropout=0.1).train()
    src, lengths, tgt_in = batch(seed=13)
    tgt_out = torch.cat([tgt_in[:, 1:], torch.full((4, 1), EOS)], 1)
    logits, _ = model(src, lengths, tgt_in, teacher_forcing=1.0)
    F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        if name.endswith("embedding.weight"):
            assert (p.grad[PAD] == 0).all()  # padding_idx keeps the pad embedding fixed


def reverse_task(n, V, max_len, gen):
    """Random sequences of symbols 3..V-1 and their reverses, padded; targets end with EOS."""
    lengths = torch.randint(1, max_len + 1, (n,), generator=gen)
    src = torch.randint(3, V, (n, max_len), generator=gen)
    valid = torch.arange(max_len)[None] < lengths[:, None]
    src[~valid] = PAD
    tgt = torch.full((n, max_len + 1), PAD)
    for i, L in enumerate(lengths.tolist()):
        tgt[i, :L] = src[i, :L].flip(0)
        tgt[i, L] = EOS
    tgt_in = torch.cat([torch.full((n, 1), BOS), tgt[:, :-1]], 1)
    return src, lengths, tgt_in, tgt


def test_learns_to_reverse_short_sequences():
    """A small GRU model with attention learns sequence reversal (vocab 10, length <= 6)."""
    V, max_len = 10, 6
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    enc = Encoder(V, 16, 32, cell="gru", bidirectional=True, pad_idx=PAD)
    dec = Decoder(V, 16, 32, enc.output_size, attention="additive", cell="gru", pad_idx=PAD)
    model = Seq2Seq(enc, dec, BOS, EOS, PAD).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    model.train()
    for _ in range(250):
        src, lengths, tgt_in, tgt = reverse_task(64, V, max_len, gen)
        logits, _ = model(src, lengths, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, lengths, _, tgt = reverse_task(300, V, max_len, torch.Generator().manual_seed(99))
    hyps = model.greedy_decode(src, lengths, max_len=max_len + 2)
    exact = sum(h.tokens == tgt[i, : int(lengths[i]) + 1].tolist() for i, h in enumerate(hyps)) / len(hyps)
    elapsed = time.perf_counter() - start
    assert exact >= 0.95, f"exact match {exact:.3f} after training"
    assert elapsed < 15, f"training took {elapsed:.1f} s"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_encoder_errors():
    model = build()
    src, lengths, tgt_in = batch()
    with pytest.raises(ValueError, match=r"src must have 2 dimensions \(B, S\), got shape \(7,\)"):
        model.encoder(src[0], lengths)
    with pytest.raises(ValueError, match=r"src must hold integer token ids, got dtype torch.float64"):
        model.encoder(src.double(), lengths)
    with pytest.raises(ValueError, match=r"src must hold token ids in 0..10 \(vocab_size 11\), got values from 0 to 11"):
        model.encoder(src.masked_fill(src == src.max(), 11), lengths)
    with pytest.raises(ValueError, match=r"every length must lie in 1..7"):
        model.encoder(src, torch.tensor([8, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"every length must lie in 1..7"):
        model.encoder(src, torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must be 1-D with one entry per sequence, i.e. shape \(4,\)"):
        model.encoder(src, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lstm'\], got 'rnn'"):
        Encoder(11, 4, 4, cell="rnn")
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got 0"):
        Encoder(11, 4, 0)


def test_decoder_errors():
    model = build()
    src, lengths, _ = batch()
    enc_outputs, mask, state = model.encoder(src, lengths)
    dec = model.decoder
    token = torch.full((4,), BOS)
    with pytest.raises(ValueError, match=r"prev_token must have 1 dimensions \(B,\), got shape \(4, 1\)"):
        dec(token[:, None], state, enc_outputs, mask)
    with pytest.raises(ValueError, match=r"state must have shape \(4, 5\), got \(4, 6\)"):
        dec(token, torch.zeros(4, 6), enc_outputs, mask)
    with pytest.raises(ValueError, match=r"enc_outputs must have shape \(4, \*, 10\), got \(4, 7, 9\)"):
        dec(token, state, enc_outputs[..., :9], mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 7\), got \(4, 6\)"):
        dec(token, state, enc_outputs, mask[:, :6])
    with pytest.raises(ValueError, match=r"mask must be a bool tensor .* got dtype torch.int64"):
        dec(token, state, enc_outputs, mask.long())
    lstm = build("lstm").decoder
    with pytest.raises(ValueError, match=r"state of an LSTM decoder must be a pair \(h, c\), got Tensor"):
        lstm(token, state, enc_outputs, mask)
    with pytest.raises(ValueError, match=r"attention must be one of \['additive', 'dot', None\], got 'general'"):
        Decoder(11, 4, 4, 8, attention="general")


def test_seq2seq_errors():
    enc = Encoder(11, 4, 5, bidirectional=True)
    with pytest.raises(ValueError, match=r"decoder.enc_size must equal encoder.output_size = 10, got 5"):
        Seq2Seq(enc, Decoder(11, 4, 5, 5), BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"decoder.hidden_size must equal encoder.hidden_size = 5, got 6"):
        Seq2Seq(enc, Decoder(11, 4, 6, 10), BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"decoder.cell must equal encoder.cell = 'gru', got 'lstm'"):
        Seq2Seq(enc, Decoder(11, 4, 5, 10, cell="lstm"), BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"eos_idx must be an int in 0..10, got 11"):
        Seq2Seq(enc, Decoder(11, 4, 5, 10), BOS, 11, PAD)

    model = build()
    src, lengths, tgt_in = batch()
    with pytest.raises(ValueError, match=r"tgt_in must have shape \(B, T\) with B = 4 and T >= 1, got \(3, 5\)"):
        model(src, lengths, tgt_in[:3])
    with pytest.raises(ValueError, match=r"tgt_in must have 2 dimensions \(B, T\)"):
        model(src, lengths, tgt_in[0])
    with pytest.raises(ValueError, match=r"teacher_forcing must be a number in \[0, 1\], got 1.5"):
        model(src, lengths, tgt_in, teacher_forcing=1.5)
    with pytest.raises(ValueError, match=r"max_len must be a positive int, got 0"):
        model.greedy_decode(src, lengths, max_len=0)
    with pytest.raises(ValueError, match=r"beam_size must be a positive int, got 0"):
        model.beam_search(src, lengths, beam_size=0, max_len=3)
    with pytest.raises(ValueError, match=r"length_penalty must be a non-negative number, got -1"):
        model.beam_search(src, lengths, beam_size=2, max_len=3, length_penalty=-1)
    with pytest.raises(ValueError, match=r"every length must lie in 1..7"):
        model.beam_search(src, torch.tensor([9, 1, 1, 1]), beam_size=2, max_len=3)
