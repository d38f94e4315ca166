"""The warm-up schedule of the original Transformer (Vaswani et al. 2017),
often called the Noam schedule:

    lr(n) = d_model^(-1/2) * min(n^(-1/2), n * warmup^(-3/2)),  n = 1, 2, ...

It rises linearly for ``warmup`` steps, peaks at n = warmup with
lr = (d_model * warmup)^(-1/2), and then decays as 1 / sqrt(n). Adam's
first updates rest on poor estimates of the gradient's second moment; the
slow start keeps them small while post-norm Transformers are most fragile.

For a linear warm-up followed by a cosine decay see
:func:`seqbook_lib.schedule.cosine_lr`.
"""

from __future__ import annotations

from ._checks import check_nonnegative_int, check_positive_int


def inverse_sqrt_warmup(step: int, d_model: int, warmup: int) -> float:
    """The learning rate of step ``step`` (0-based, so n = step + 1):

        d_model^(-1/2) * min(n^(-1/2), n * warmup^(-3/2)).

    As the factor of a ``torch.optim.lr_scheduler.LambdaLR``
    (``lr_lambda=lambda s: inverse_sqrt_warmup(s, d_model, warmup)``) it
    gives the paper's rates when the optimizer's ``lr`` is 1, and that many
    times them otherwise.

    >>> round(inverse_sqrt_warmup(3999, d_model=512, warmup=4000), 6)
    0.000699
    """
    check_nonnegative_int("step", step)
    check_positive_int("d_model", d_model)
    check_positive_int("warmup", warmup)
    n = step + 1
    return d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)
