"""A character-level language model: training by truncated backpropagation
through time, scoring, and sampling.

A text is a sequence of character ids x_1 .. x_N. The model reads it one
character at a time and predicts the next one,

    h_t = RNN(e(x_t), h_{t-1}),
    p(x_{t+1} | x_1 .. x_t) = softmax(W h_t + b),

and is scored by the cross-entropy in nats per character,

    loss = -1/(N-1) * sum_{t=1}^{N-1} ln p(x_{t+1} | x_1 .. x_t).

``loss / ln 2`` is the same quantity in bits per character and
``exp(loss)`` the perplexity: the number of equally likely characters that
would leave the model as uncertain as it is on average.

- :class:`CharLM` -- embedding, ``torch.nn`` GRU or LSTM layers, linear head.
- :func:`stream_layout`, :func:`tbptt_chunks` -- the text as B parallel
  streams, cut into chunks of T characters; chunk k + 1 continues chunk k in
  every stream, so the state left by one chunk is the right start for the
  next.
- :func:`evaluate_nats` -- the loss on a whole text, state carried along.
- :func:`train_charlm` -- a fixed number of Adam steps with warm-up, cosine
  decay (:func:`seqbook_lib.schedule.cosine_lr`) and gradient clipping.
- :func:`sample` -- new text after a prompt, with temperature and top-k.

The recurrent layers are ``torch.nn.GRU`` / ``torch.nn.LSTM`` because the
chapter trains for minutes; :mod:`seqbook_lib.rnn` has the same parameters
and loads their state dicts unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import (
    check_choice,
    check_integer_dtype,
    check_layout,
    check_nonnegative_int,
    check_positive_int,
    check_probability,
    check_rank,
    check_sampling,
    check_token_ids,
)
from .schedule import cosine_lr
from .text import Vocab

_LAYERS = {"gru": nn.GRU, "lstm": nn.LSTM}


class CharLM(nn.Module):
    """Embedding, recurrent layers and a linear read-out, one step per
    character:

        e_t      = Emb[x_t]                  (E,)
        h_t      = RNN(e_t, h_{t-1})         (H,)  top layer's state
        logits_t = W_o h_t + b_o             (V,)

    ``cell`` picks ``torch.nn.GRU`` or ``torch.nn.LSTM`` (batch_first) with
    ``num_layers`` layers. ``dropout`` acts between recurrent layers and on
    the top layer's output before the read-out.

    ``forward(ids, state)`` maps ids (B, T) to logits (B, T, V) and the final
    state: h (L, B, H) for a GRU, the pair (h, c) for an LSTM. Passing that
    state to the next call continues the text where this call stopped.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "gru",
        dropout: float = 0.0,
    ):
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_choice("cell", cell, list(_LAYERS))
        check_probability("dropout", dropout)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        between = dropout if num_layers > 1 else 0.0
        self.rnn = _LAYERS[cell](
            embed_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=between,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        check_rank("ids", ids, [2], "(B, T)")
        check_token_ids("ids", ids, self.vocab_size)
        if state is not None:
            self._check_state(state, ids.shape[0])
        x = self.embedding(ids)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.dropout(out)), state  # (B, T, V)

    def _check_state(self, state, batch: int) -> None:
        """h (L, B, H) for a GRU, a pair of them for an LSTM."""
        shape = (self.num_layers, batch, self.hidden_size)
        if self.cell == "lstm":
            if not (isinstance(state, tuple) and len(state) == 2):
                raise ValueError(
                    "an LSTM's state must be a pair (h, c), "
                    f"got {type(state).__name__}"
                )
            for name, s in zip("hc", state):
                check_layout(name, s, shape, "(L, B, H)")
        else:
            check_layout("state", state, shape, "(L, B, H)")


def detach_state(state):
    """The state cut off from the graph that made it (h, or the pair
    (h, c)): gradients stop at the chunk boundary, the values carry on."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _select_stream(state, b: int):
    """The state of stream ``b`` alone, batch size 1."""
    if isinstance(state, tuple):
        return tuple(s[:, b : b + 1] for s in state)
    return state[:, b : b + 1]


# --- the text as parallel streams --------------------------------------------


def _check_text_ids(ids) -> None:
    check_rank("ids", ids, [1], "(N,)")
    check_integer_dtype("ids", ids, "integer character ids")


def stream_layout(ids: torch.Tensor, batch_size: int):
    """The text ``ids`` (N,) as B side-by-side streams: ``(inputs,
    targets)``, each (B, n) with n = (N - 1) // B.

    Stream b reads the b-th slice of the text, ``inputs[b, j] =
    ids[b*n + j]``, and its targets are the characters one further on,
    ``targets[b, j] = ids[b*n + j + 1]``. So ``targets[b, -1]`` is
    ``inputs[b + 1, 0]``: every character from the second to the
    (B*n + 1)-th is a target exactly once; the last (N - 1) - B*n are left
    out.
    """
    _check_text_ids(ids)
    check_positive_int("batch_size", batch_size)
    n = (len(ids) - 1) // batch_size
    if n == 0:
        raise ValueError(
            f"a text of {len(ids)} characters is too short for "
            f"batch_size={batch_size} streams: need at least "
            f"{batch_size + 1}"
        )
    inputs = ids[: batch_size * n].view(batch_size, n)  # (B, n)
    targets = ids[1 : batch_size * n + 1].view(batch_size, n)  # (B, n)
    return inputs, targets


def tbptt_chunks(ids: torch.Tensor, batch_size: int, seq_len: int):
    """The chunks ``(x, y)`` (B, T) of :func:`stream_layout`, in order.

    Chunk k holds columns k*T .. (k+1)*T - 1 of every stream, so row b of
    chunk k + 1 continues row b of chunk k: the state at the end of one chunk
    is the right initial state for the next. The last chunk is shorter when
    T does not divide n.
    """
    check_positive_int("seq_len", seq_len)
    inputs, targets = stream_layout(ids, batch_size)
    for start in range(0, inputs.shape[1], seq_len):
        end = start + seq_len
        yield inputs[:, start:end], targets[:, start:end]  # (B, T)


@torch.no_grad()
def evaluate_nats(
    model: CharLM, ids: torch.Tensor, batch_size: int = 1, seq_len: int = 256
) -> float:
    """Mean cross-entropy of the next character over a whole text, in nats:

        -1/(N-1) * sum_{t=1}^{N-1} ln p(x_{t+1} | x_1 .. x_t)

    The text runs as ``batch_size`` streams (:func:`stream_layout`) in
    chunks of ``seq_len``, with the state carried from chunk to chunk; the
    characters the streams leave over at the end continue the last stream.
    So every character but the first is scored exactly once, and with
    ``batch_size=1`` each one with all the text before it in the state.
    More streams run faster; each starts from a zero state, which costs a
    little at its first characters.
    """
    _check_text_ids(ids)
    device = next(model.parameters()).device
    ids = ids.to(device)
    was_training = model.training
    model.eval()
    total, state = 0.0, None
    for x, y in tbptt_chunks(ids, batch_size, seq_len):
        logits, state = model(x, state)  # (B, T, V)
        total += F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="sum"
        ).item()
    used = batch_size * ((len(ids) - 1) // batch_size)
    if used < len(ids) - 1:  # the leftover: continue the last stream
        x = ids[used:-1].unsqueeze(0)  # (1, r)
        logits, _ = model(x, _select_stream(state, batch_size - 1))
        total += F.cross_entropy(
            logits[0], ids[used + 1 :], reduction="sum"
        ).item()
    model.train(was_training)
    return total / (len(ids) - 1)


# --- training ----------------------------------------------------------------


@dataclass
class History:
    """What :func:`train_charlm` measured, in nats per character."""

    train: list[float] = field(default_factory=list)  # every step's loss
    val_steps: list[int] = field(default_factory=list)  # steps done
    val: list[float] = field(default_factory=list)  # whole-text val loss


def _train_chunks(ids, batch_size, seq_len):
    """Chunks of full length T for ever, epoch after epoch; ``None`` marks
    the start of each epoch, where the state is reset."""
    inputs, _ = stream_layout(ids, batch_size)
    if inputs.shape[1] < seq_len:
        raise ValueError(
            f"each of the {batch_size} streams has {inputs.shape[1]} "
            f"characters, fewer than seq_len={seq_len}"
        )
    while True:
        yield None
        for x, y in tbptt_chunks(ids, batch_size, seq_len):
            if x.shape[1] == seq_len:
                yield x, y


def train_charlm(
    model: CharLM,
    train_ids: torch.Tensor,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    warmup: int = 0,
    final_lr: float = 0.0,
    max_norm: float = 1.0,
    val_ids: torch.Tensor | None = None,
    eval_every: int | None = None,
    eval_batch_size: int = 8,
    desc: str = "training",
    progress: bool = True,
) -> History:
    """Train ``model`` for ``steps`` Adam steps by truncated backpropagation
    through time; return its :class:`History`.

    Each step reads the next chunk (B, T) of :func:`tbptt_chunks`, starting
    from the state the previous chunk left, detached: gradients flow back at
    most T characters, but the state remembers further. At the end of the
    text the state is reset and the next epoch begins. The gradient norm is
    clipped to ``max_norm`` and the learning rate follows
    :func:`cosine_lr`. With ``val_ids`` the whole validation text is scored
    (:func:`evaluate_nats`) every ``eval_every`` steps and after the last.
    The tqdm bar shows the training loss (mean of the last 50 steps) and the
    last validation loss, in nats and in bits per character.
    """
    check_positive_int("steps", steps)
    if eval_every is not None:
        check_positive_int("eval_every", eval_every)
    chunks = _train_chunks(train_ids, batch_size, seq_len)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history, state = History(), None
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        chunk = next(chunks)
        if chunk is None:  # a new epoch: start from a zero state
            chunk, state = next(chunks), None
        x, y = chunk
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup, final_lr)
        logits, state = model(x, state)  # (B, T, V)
        state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        step_and_log(
            model, optimizer, loss, max_norm, history, bar, step + 1, steps,
            eval_every, val_ids,
            lambda: evaluate_nats(model, val_ids, eval_batch_size, 256),
        )
    return history


def step_and_log(model, optimizer, loss, max_norm, history: History, bar,
                 done: int, steps: int, eval_every, val_ids, score) -> None:
    """What the book's language-model training loops share after the loss:
    one Adam step with the gradient norm clipped to ``max_norm``; the loss
    into ``history``; ``score()`` (validation nats/char) every
    ``eval_every`` steps and after the last, when there is ``val_ids``;
    the progress bar every 10 steps."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    history.train.append(loss.item())
    due = eval_every is not None and done % eval_every == 0
    if val_ids is not None and (due or done == steps):
        history.val_steps.append(done)
        history.val.append(score())
    if done % 10 == 0 or done == steps:
        bar.set_postfix_str(_progress_text(history), refresh=False)


def _progress_text(history: History) -> str:
    recent = history.train[-50:]
    train = sum(recent) / len(recent)
    text = f"train {train:.3f} nats ({train / math.log(2):.3f} bits)"
    if history.val:
        val = history.val[-1]
        text += f", val {val:.3f} nats ({val / math.log(2):.3f} bits)"
    return text + " per char"


# --- sampling ----------------------------------------------------------------


def _check_sampling(vocab, prompt, length, temperature, top_k, generator):
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a Vocab, got {type(vocab).__name__}")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    unknown = sorted(set(prompt) - set(vocab.stoi))
    if unknown:
        raise ValueError(
            f"prompt has characters that are not in the vocabulary: {unknown}"
        )
    check_nonnegative_int("length", length)
    check_sampling(temperature, top_k, len(vocab), generator)


def next_char_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """The sampling distribution (B, V) from the logits z (B, V):

        p_i = exp(z_i / tau) / sum_j exp(z_j / tau),

    over the ``top_k`` largest z_i only (the others get p_i = 0) when
    ``top_k`` is given. A temperature tau < 1 sharpens the distribution
    towards the most likely character, tau > 1 flattens it towards uniform.
    """
    z = logits / temperature  # (B, V)
    if top_k is not None:
        kth = z.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    return z.softmax(dim=-1)


@torch.no_grad()
def sample(
    model: CharLM,
    vocab: Vocab,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """``prompt`` followed by ``length`` new characters, each drawn from
    :func:`next_char_probs` of the model's prediction and fed back in.

    The prompt is read in one call, which sets the state; each new character
    then costs one step. ``top_k=1`` always takes the most likely character
    (greedy decoding). Pass a seeded ``torch.Generator`` to draw the same
    text again.
    """
    _check_sampling(vocab, prompt, length, temperature, top_k, generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = torch.tensor([vocab.encode(prompt)], device=device)  # (1, P)
    logits, state = model(ids)  # (1, P, V)
    new = []
    for _ in range(length):
        probs = next_char_probs(logits[:, -1], temperature, top_k)  # (1, V)
        nxt = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
        new.append(nxt.item())
        logits, state = model(nxt, state)  # (1, 1, V)
    model.train(was_training)
    return prompt + "".join(vocab.decode(new))
