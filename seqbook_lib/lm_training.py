"""Training and scoring a language model that reads fixed windows of text,
such as :class:`~seqbook_lib.causal_lm.TransformerLM`.

A recurrent model carries its state from one chunk of text to the next
(:func:`seqbook_lib.charlm.train_charlm`); a Transformer has no state
between calls and sees only the window it is given. So each training step
draws B windows of T + 1 characters at random positions of the text,

    x[b] = ids[s_b : s_b + T],   y[b] = ids[s_b + 1 : s_b + T + 1],
    s_b ~ Uniform{0, ..., N - T - 1},

and the model predicts every y[b, t] from x[b, 0..t]: T predictions per
window, with 0 to T - 1 characters of context.

- :func:`random_windows` -- one batch of windows, from a seeded generator.
- :func:`evaluate_windows` -- the loss on a whole text cut into
  consecutive windows, every character after the first scored once.
- :func:`train_windowed_lm` -- a fixed number of Adam steps with the
  warm-up and cosine schedule and the gradient clipping of
  :func:`~seqbook_lib.charlm.train_charlm`; returns its
  :class:`~seqbook_lib.charlm.History`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_integer_dtype, check_positive_int, check_rank
from .charlm import History, step_and_log
from .schedule import cosine_lr

__all__ = ["random_windows", "evaluate_windows", "train_windowed_lm"]


def _check_text(ids, seq_len: int) -> None:
    check_rank("ids", ids, [1], "(N,)")
    check_integer_dtype("ids", ids, "integer character ids")
    check_positive_int("seq_len", seq_len)


def random_windows(
    ids: torch.Tensor,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator | None = None,
):
    """``(x, y)``, each (B, T): B windows of the text ``ids`` (N,) at
    random starts s_b, x[b] = ids[s_b : s_b + T] and y[b] the same window
    one character further on."""
    _check_text(ids, seq_len)
    check_positive_int("batch_size", batch_size)
    if len(ids) < seq_len + 1:
        raise ValueError(
            f"a window of seq_len={seq_len} needs {seq_len + 1} characters "
            f"(inputs and targets), the text has {len(ids)}"
        )
    starts = torch.randint(
        len(ids) - seq_len, (batch_size,), generator=generator
    )  # (B,)
    offsets = torch.arange(seq_len + 1)  # (T + 1,)
    windows = ids[starts.unsqueeze(1) + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]  # (B, T) each


@torch.no_grad()
def evaluate_windows(
    model: nn.Module, ids: torch.Tensor, seq_len: int, batch_size: int = 32
) -> float:
    """Mean cross-entropy of the next character over the text ``ids``, in
    nats, the text cut into consecutive windows of ``seq_len`` inputs:

        -1/(N-1) * sum_{t=1}^{N-1} ln p(x_{t+1} | x_{w(t)} .. x_t),

    where w(t) is the first character of t's window. Every character after
    the first is a target exactly once (the last window may be shorter);
    each window starts from no context, so its first predictions rest on
    one character only. ``model(x)`` must map ids (B, T) to logits
    (B, T, V). The model is scored in eval mode and put back in its mode.
    """
    _check_text(ids, seq_len)
    check_positive_int("batch_size", batch_size)
    if len(ids) < 2:
        raise ValueError(
            f"scoring needs at least 2 characters, the text has {len(ids)}"
        )
    device = next(model.parameters()).device
    ids = ids.to(device)
    was_training = model.training
    model.eval()
    n = len(ids) - 1  # number of targets
    full = n // seq_len
    x = ids[: full * seq_len].view(full, seq_len)  # (W, T)
    y = ids[1 : full * seq_len + 1].view(full, seq_len)  # (W, T)
    total = 0.0
    try:
        for start in range(0, full, batch_size):
            logits = model(x[start : start + batch_size])  # (b, T, V)
            total += F.cross_entropy(
                logits.flatten(0, 1),
                y[start : start + batch_size].flatten(),
                reduction="sum",
            ).item()
        if full * seq_len < n:  # the shorter last window
            logits = model(ids[full * seq_len : n].unsqueeze(0))  # (1, r, V)
            total += F.cross_entropy(
                logits[0], ids[full * seq_len + 1 :], reduction="sum"
            ).item()
    finally:
        model.train(was_training)
    return total / n


def train_windowed_lm(
    model: nn.Module,
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
    eval_batch_size: int = 32,
    generator: torch.Generator | None = None,
    desc: str = "training",
    progress: bool = True,
) -> History:
    """Train ``model`` (ids (B, T) -> logits (B, T, V)) for ``steps`` Adam
    steps on :func:`random_windows` of ``train_ids``; return its
    :class:`~seqbook_lib.charlm.History` (nats per character).

    Step s sets the learning rate to ``cosine_lr(s, steps, lr, warmup,
    final_lr)`` (a linear warm-up, then half a cosine), computes the mean
    cross-entropy of the B * T predictions, clips the gradient norm to
    ``max_norm`` and takes an Adam step. With ``val_ids`` the validation
    text is scored (:func:`evaluate_windows`, windows of ``seq_len``) every
    ``eval_every`` steps and after the last. Pass a seeded ``generator`` to
    draw the same windows again.
    """
    check_positive_int("steps", steps)
    if eval_every is not None:
        check_positive_int("eval_every", eval_every)
    _check_text(train_ids, seq_len)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        x, y = random_windows(train_ids, batch_size, seq_len, generator)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup, final_lr)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        step_and_log(
            model, optimizer, loss, max_norm, history, bar, step + 1, steps,
            eval_every, val_ids,
            lambda: evaluate_windows(model, val_ids, seq_len,
                                     eval_batch_size),
        )
    return history
