"""An encoder-decoder with attention (Bahdanau et al., 2015), small enough to
train on a CPU.

Three pieces, one concept each:

- :class:`Encoder` embeds the source, runs a (bidirectional) GRU or LSTM over
  it and returns every position's output, the source mask and the decoder's
  initial state.
- :class:`Decoder` is a *step function*: from the previous target token and
  state it attends over the encoder outputs, updates its recurrent state and
  scores the next token.
- :class:`Seq2Seq` ties them together: teacher-forced ``forward`` for
  training, ``greedy_decode`` and ``beam_search`` for generation.

Notation: batch B, source length S, target length T, vocabulary V, embedding
E, hidden size H, encoder output size C = D*H (D = 2 when bidirectional).
Token ids are int64; ``pad_idx`` marks padding, ``bos_idx`` starts every
target and ``eos_idx`` ends it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import (
    check_choice,
    check_index,
    check_lengths,
    check_positive_int,
    check_probability,
    check_rank,
    check_shape,
    check_token_ids,
)
from .attention import (
    AdditiveAttention,
    padding_mask,
    scaled_dot_product_attention,
)
from .cells import GRUCell, LSTMCell
from .rnn import GRU, LSTM

__all__ = ["Encoder", "Decoder", "Seq2Seq", "Hypothesis"]

_LAYERS = {"gru": GRU, "lstm": LSTM}
_CELLS = {"gru": GRUCell, "lstm": LSTMCell}


def _map_state(state, fn):
    """Apply ``fn`` to a GRU state (a tensor) or to both parts of an LSTM
    state (h, c)."""
    return (
        tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)
    )


class Encoder(nn.Module):
    """Embedding + (bi)directional GRU/LSTM over the source, plus a bridge to
    the decoder.

    outputs = [h_fwd_s ; h_bwd_s] for every source position s     (B, S, C)
    state_0 = tanh(W_b [h_fwd_last ; h_bwd_first] + b_b)          (B, H)

    The bridge reads the last layer's final states (forward: the last valid
    position; backward: position 0). For an LSTM, the cell state gets its own
    bridge of the same form and ``state_0`` is the pair (h_0, c_0). Source
    lengths go to the recurrent layer, so padding never reaches the states.
    """

    def __init__(
        self,
        vocab_size,
        embed_size,
        hidden_size,
        num_layers=1,
        cell="gru",
        bidirectional=True,
        dropout=0.0,
        pad_idx=0,
    ):
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("embed_size", embed_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ]:
            check_positive_int(name, value)
        check_choice("cell", cell, list(_LAYERS))
        check_probability("dropout", dropout)
        self.vocab_size, self.hidden_size, self.cell = (
            vocab_size,
            hidden_size,
            cell,
        )
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.num_directions * hidden_size  # C
        self.embedding = nn.Embedding(
            vocab_size, embed_size, padding_idx=pad_idx
        )
        self.dropout = nn.Dropout(dropout)
        self.rnn = _LAYERS[cell](
            embed_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.bridge = nn.Linear(self.output_size, hidden_size)
        self.bridge_c = (
            nn.Linear(self.output_size, hidden_size)
            if cell == "lstm"
            else None
        )

    def forward(self, src, src_lengths):
        """src (B, S) token ids, src_lengths (B,)
        -> (outputs (B, S, C), mask (B, S) bool, state_0)."""
        check_rank("src", src, [2], "(B, S)")
        check_token_ids("src", src, self.vocab_size)
        B, S = src.shape
        lengths = check_lengths(src_lengths, B, S)
        x = self.dropout(self.embedding(src))  # (B, S, E)
        outputs, final = self.rnn(x, lengths=lengths)  # (B, S, C)
        mask = padding_mask(
            lengths, S, device=src.device
        )  # (B, S), True = real token
        if self.cell == "lstm":
            state = (
                self._bridge(self.bridge, final[0]),
                self._bridge(self.bridge_c, final[1]),
            )
        else:
            state = self._bridge(self.bridge, final)
        return outputs, mask, state

    def _bridge(self, linear, final):
        """(L*D, B, H) final states
        -> tanh(linear([last layer's directions])) (B, H)."""
        last = final[-self.num_directions :]  # (D, B, H)
        joined = last.transpose(0, 1).reshape(last.shape[1], -1)  # (B, D*H)
        return torch.tanh(linear(joined))


class Decoder(nn.Module):
    """One decoding step: attend, update the recurrent state, score the next
    token.

    With the previous state's hidden part s_{t-1} (B, H) as the query:

        c_t, a_t = attend(s_{t-1}, encoder outputs, mask)
                                           context (B, C), weights (B, S)
        s_t      = cell([embed(y_{t-1}) ; c_t], s_{t-1})
        logits_t = W_o [s_t ; c_t ; embed(y_{t-1})] + b_o      (B, V)

    ``attention`` chooses attend():

    - "additive": Bahdanau's v^T tanh(W_q s + W_k h_s) scores
      (``AdditiveAttention``);
    - "dot": scaled dot products (s W_p) . h_s / sqrt(C), where W_p (H -> C, no
      bias) is only there when H != C;
    - None: no attention. The context is the plain mean of the valid encoder
      outputs, the same vector at every step, so the decoder sees a fixed
      summary of the source as in the classic encoder-decoder. The returned
      "weights" are then uniform over the valid positions (1 / length), which
      is what the mean is, and plot as a flat band.
    """

    def __init__(
        self,
        vocab_size,
        embed_size,
        hidden_size,
        enc_size,
        attention="additive",
        cell="gru",
        dropout=0.0,
        pad_idx=0,
    ):
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("embed_size", embed_size),
            ("hidden_size", hidden_size),
            ("enc_size", enc_size),
        ]:
            check_positive_int(name, value)
        check_choice("attention", attention, ["additive", "dot", None])
        check_choice("cell", cell, list(_LAYERS))
        check_probability("dropout", dropout)
        self.vocab_size, self.hidden_size, self.enc_size = (
            vocab_size,
            hidden_size,
            enc_size,
        )
        self.cell, self.attention_kind = cell, attention
        self.embedding = nn.Embedding(
            vocab_size, embed_size, padding_idx=pad_idx
        )
        self.dropout = nn.Dropout(dropout)
        self.attention = (
            AdditiveAttention(hidden_size, enc_size, hidden_size)
            if attention == "additive"
            else None
        )
        needs_proj = attention == "dot" and hidden_size != enc_size
        self.query_proj = (
            nn.Linear(hidden_size, enc_size, bias=False)
            if needs_proj
            else None
        )
        self.rnn = _CELLS[cell](embed_size + enc_size, hidden_size)
        self.out = nn.Linear(hidden_size + enc_size + embed_size, vocab_size)

    def attend(self, query, enc_outputs, mask):
        """query (B, H), enc_outputs (B, S, C), mask (B, S)
        -> context (B, C), weights (B, S)."""
        if self.attention_kind == "additive":
            return self.attention(query, enc_outputs, enc_outputs, mask=mask)
        if self.attention_kind == "dot":
            q = (
                query if self.query_proj is None else self.query_proj(query)
            )  # (B, C)
            context, weights = scaled_dot_product_attention(
                q[:, None], enc_outputs, enc_outputs, attn_mask=mask[:, None]
            )  # (B, 1, C), (B, 1, S)
            return context[:, 0], weights[:, 0]
        weights = mask / mask.sum(
            1, keepdim=True
        )  # (B, S), uniform over valid positions
        weights = weights.to(enc_outputs.dtype)
        return (weights[..., None] * enc_outputs).sum(1), weights

    def forward(self, prev_token, state, enc_outputs, mask):
        """prev_token (B,), state (B, H) or ((B, H), (B, H))
        -> (logits (B, V), state, weights (B, S))."""
        self._check_step(prev_token, state, enc_outputs, mask)
        emb = self.dropout(self.embedding(prev_token))  # (B, E)
        query = state[0] if self.cell == "lstm" else state  # (B, H)
        context, weights = self.attend(
            query, enc_outputs, mask
        )  # (B, C), (B, S)
        state = self.rnn(
            torch.cat([emb, context], dim=-1), state
        )  # (B, H) or ((B, H), (B, H))
        h = state[0] if self.cell == "lstm" else state  # (B, H)
        features = torch.cat([h, context, emb], dim=-1)  # (B, H + C + E)
        return self.out(self.dropout(features)), state, weights

    def _check_step(self, prev_token, state, enc_outputs, mask):
        check_rank("prev_token", prev_token, [1], "(B,)")
        check_token_ids("prev_token", prev_token, self.vocab_size)
        B = prev_token.shape[0]
        check_shape("enc_outputs", enc_outputs, (B, None, self.enc_size))
        check_shape("mask", mask, (B, enc_outputs.shape[1]))
        if mask.dtype != torch.bool:
            raise ValueError(
                "mask must be a bool tensor (True = real token), "
                f"got dtype {mask.dtype}"
            )
        if self.cell == "lstm":
            if not isinstance(state, tuple) or len(state) != 2:
                raise ValueError(
                    "state of an LSTM decoder must be a pair (h, c), "
                    f"got {type(state).__name__}"
                )
            check_shape("state[0] (h)", state[0], (B, self.hidden_size))
            check_shape("state[1] (c)", state[1], (B, self.hidden_size))
        else:
            check_shape("state", state, (B, self.hidden_size))


@dataclass
class Hypothesis:
    """One generated sequence.

    tokens     the generated ids (BOS not included), ending with EOS unless
               max_len cut it off
    score      the sum of the model's log-probabilities of those tokens
    attention  (len(tokens), S_b): each step's attention weights over the
               real source positions
    """

    tokens: list
    score: float
    attention: torch.Tensor


class Seq2Seq(nn.Module):
    """Encoder + decoder, with teacher-forced training and greedy /
    beam-search generation.

    The decoder's state size must equal the encoder's ``hidden_size`` (the
    bridge maps into it), its ``enc_size`` the encoder's ``output_size``, and
    both must use the same cell type.

    ``greedy_decode`` and ``beam_search`` run without gradients and leave the
    train/eval mode alone: call ``model.eval()`` first so dropout is off.
    They use only the step interface of ``self.encoder`` and
    ``self.decoder``,

        encoder(src, src_lengths)                 -> enc_outputs, mask, state
        decoder(token, state, enc_outputs, mask)  -> logits, state, weights

    (mask (B, S) True = real token, weights (B, S), state a tensor or a
    tuple of tensors with the batch first), ``bos_idx`` and ``eos_idx``:
    :class:`seqbook_lib.encoder_decoder.TransformerSeq2Seq` offers the same
    and runs this generation code.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        bos_idx: int,
        eos_idx: int,
        pad_idx: int,
    ):
        super().__init__()
        if decoder.enc_size != encoder.output_size:
            raise ValueError(
                "decoder.enc_size must equal encoder.output_size = "
                f"{encoder.output_size}, "
                f"got {decoder.enc_size}"
            )
        if decoder.hidden_size != encoder.hidden_size:
            raise ValueError(
                "decoder.hidden_size must equal encoder.hidden_size = "
                f"{encoder.hidden_size}, "
                f"got {decoder.hidden_size}"
            )
        if decoder.cell != encoder.cell:
            raise ValueError(
                f"decoder.cell must equal encoder.cell = {encoder.cell!r}, "
                f"got {decoder.cell!r}"
            )
        for name, idx in [
            ("bos_idx", bos_idx),
            ("eos_idx", eos_idx),
            ("pad_idx", pad_idx),
        ]:
            check_index(name, idx, decoder.vocab_size)
        self.encoder, self.decoder = encoder, decoder
        self.bos_idx, self.eos_idx, self.pad_idx = bos_idx, eos_idx, pad_idx

    def forward(self, src, src_lengths, tgt_in, teacher_forcing=1.0):
        """Decode ``tgt_in`` (B, T) (BOS y_1 ... y_{T-1})
        -> logits (B, T, V), attention (B, T, S).

        Step t feeds the ground truth ``tgt_in[:, t]`` with probability
        ``teacher_forcing`` (one draw of torch's RNG per step, shared by the
        batch), else the model's own previous argmax. 1.0 always feeds the
        truth and 0.0 never does (the first step always gets BOS); neither
        draws random numbers.
        """
        check_probability("teacher_forcing", teacher_forcing)
        enc_outputs, mask, state = self.encoder(
            src, src_lengths
        )  # checks src and its lengths
        check_rank("tgt_in", tgt_in, [2], "(B, T)")
        check_token_ids("tgt_in", tgt_in, self.decoder.vocab_size)
        if tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] < 1:
            raise ValueError(
                "tgt_in must have shape (B, T) with "
                f"B = {src.shape[0]} and T >= 1, "
                f"got {tuple(tgt_in.shape)}"
            )
        token = tgt_in[:, 0]  # (B,)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state, step_weights = self.decoder(
                token, state, enc_outputs, mask
            )
            logits.append(step_logits)
            weights.append(step_weights)
            if t + 1 < tgt_in.shape[1]:
                token = (
                    tgt_in[:, t + 1]
                    if _feed_truth(teacher_forcing)
                    else step_logits.argmax(-1)
                )
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    @torch.no_grad()
    def greedy_decode(self, src, src_lengths, max_len) -> list:
        """Pick the most probable token at every step, for the whole batch
        at once.

        Returns one :class:`Hypothesis` per source sentence, stopped at its
        first EOS (included) or after ``max_len`` tokens.
        """
        check_positive_int("max_len", max_len)
        enc_outputs, mask, state = self.encoder(src, src_lengths)
        B = src.shape[0]
        token = torch.full(
            (B,), self.bos_idx, dtype=torch.long, device=src.device
        )
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        tokens, log_probs, weights = [], [], []
        for _ in range(max_len):
            logits, state, step_weights = self.decoder(
                token, state, enc_outputs, mask
            )
            logp = F.log_softmax(logits, dim=-1)  # (B, V)
            token = logp.argmax(-1)  # (B,)
            tokens.append(token)
            log_probs.append(logp.gather(1, token[:, None])[:, 0])
            weights.append(step_weights)
            done |= token == self.eos_idx
            if done.all():
                break
        tokens, log_probs = (
            torch.stack(tokens, 1),
            torch.stack(log_probs, 1),
        )  # (B, steps)
        weights = torch.stack(weights, 1)  # (B, steps, S)
        lengths = mask.sum(1)
        result = []
        for b in range(B):
            ids = tokens[b].tolist()
            n = (
                ids.index(self.eos_idx) + 1
                if self.eos_idx in ids
                else len(ids)
            )
            result.append(
                Hypothesis(
                    ids[:n],
                    log_probs[b, :n].sum().item(),
                    weights[b, :n, : lengths[b]],
                )
            )
        return result

    @torch.no_grad()
    def beam_search(
        self, src, src_lengths, beam_size, max_len, length_penalty=0.0
    ) -> list:
        """Beam search, one source sentence at a time (clearer than batching
        beams).

        Keeps the ``beam_size`` best partial sequences by summed
        log-probability.
        At every step each of them is extended by every token, and the best
        ``beam_size - (number finished)`` extensions survive; an extension that
        ends in EOS is finished and gives up its place in the beam. The search
        ends when every place is finished or after ``max_len`` tokens (the
        unfinished ones then count as candidates too). The answer is the
        candidate with the best ``score / lp``, with GNMT's length penalty

            lp = ((5 + length) / 6) ** length_penalty

        so 0.0 compares plain log-probabilities and larger values favour
        longer outputs. beam_size 1 is greedy decoding.
        """
        check_positive_int("beam_size", beam_size)
        check_positive_int("max_len", max_len)
        if (
            isinstance(length_penalty, bool)
            or not isinstance(length_penalty, (int, float))
            or length_penalty < 0
        ):
            raise ValueError(
                "length_penalty must be a non-negative number, "
                f"got {length_penalty!r}"
            )
        enc_outputs, mask, state = self.encoder(src, src_lengths)
        return [
            self._beam_one(
                enc_outputs[b : b + 1],
                mask[b : b + 1],
                _map_state(state, lambda s: s[b : b + 1]),
                beam_size,
                max_len,
                length_penalty,
            )
            for b in range(src.shape[0])
        ]

    def _beam_one(self, enc_outputs, mask, state, beam_size, max_len, alpha):
        """Beam search for one sentence: enc_outputs (1, S, C), mask (1, S),
        state (1, H)."""
        S_b, dev, dtype = (
            int(mask.sum()),
            enc_outputs.device,
            enc_outputs.dtype,
        )
        enc_outputs, mask = (
            enc_outputs[:, :S_b],
            mask[:, :S_b],
        )  # drop the padding columns
        alive = [
            Hypothesis([], 0.0, torch.zeros(0, S_b, dtype=dtype, device=dev))
        ]
        scores = torch.zeros(
            1, dtype=dtype, device=dev
        )  # (k,) summed log-probs of the alive ones
        last = torch.full((1,), self.bos_idx, dtype=torch.long, device=dev)
        finished = []
        for _ in range(max_len):
            k = len(alive)
            logits, state, weights = self.decoder(
                last, state, enc_outputs.expand(k, -1, -1), mask.expand(k, -1)
            )
            candidates = scores[:, None] + F.log_softmax(
                logits, dim=-1
            )  # (k, V)
            V = candidates.shape[1]
            width = min(beam_size - len(finished), candidates.numel())
            top_scores, top_flat = candidates.flatten().topk(width)
            keep_rows, next_alive = [], []
            for score, flat in zip(top_scores.tolist(), top_flat.tolist()):
                row, token = divmod(flat, V)
                parent = alive[row]
                hyp = Hypothesis(
                    parent.tokens + [token],
                    score,
                    torch.cat([parent.attention, weights[row : row + 1]]),
                )
                if token == self.eos_idx:
                    finished.append(hyp)
                else:
                    keep_rows.append(row)
                    next_alive.append(hyp)
            alive = next_alive
            if not alive:
                break
            rows = torch.tensor(keep_rows, device=dev)
            state = _map_state(state, lambda s: s[rows])
            scores = torch.tensor(
                [h.score for h in alive], dtype=dtype, device=dev
            )
            last = torch.tensor([h.tokens[-1] for h in alive], device=dev)
        pool = (
            finished + alive
        )  # alive is non-empty only when max_len cut the search off
        return max(
            pool, key=lambda h: h.score / ((5 + len(h.tokens)) / 6) ** alpha
        )


def _feed_truth(probability: float) -> bool:
    """Teacher forcing coin: True with ``probability`` (no random draw for 0
    or 1)."""
    if probability >= 1.0:
        return True
    if probability <= 0.0:
        return False
    return torch.rand(()).item() < probability
