"""seqbook_lib.pooling against straightforward per-sequence loops (float64)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqbook_lib.pooling import masked_max, masked_mean

POOLS = {
    "mean": (masked_mean, lambda seq: seq.mean(dim=0)),
    "max": (masked_max, lambda seq: seq.max(dim=0).values),
}


def loop_pool(reduce, x, lengths):
    """Pool each sequence's first L_b steps on its own: the reference."""
    return torch.stack(
        [reduce(x[b, :L]) for b, L in enumerate(lengths)]
    )  # (B, H)


def ragged_input(B, T, H, lengths, seed, pad_value=float("nan")):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, generator=gen)
    for b, L in enumerate(lengths):
        x[b, L:] = pad_value  # padding must never matter
    return x


@pytest.mark.parametrize("kind", list(POOLS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_matches_per_sequence_loop(kind, data):
    ours, reduce = POOLS[kind]
    B = data.draw(st.integers(1, 5), label="B")
    T = data.draw(st.integers(1, 7), label="T")
    H = data.draw(st.integers(1, 4), label="H")
    lengths = data.draw(
        st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths"
    )
    use_mask = data.draw(st.booleans(), label="use_mask")
    x = ragged_input(B, T, H, lengths, seed=B * 100 + T * 10 + H)

    x_ours = x.clone().requires_grad_(True)
    if use_mask:
        mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        got = ours(x_ours, mask=mask)
    else:
        got = ours(x_ours, torch.tensor(lengths))
    x_ref = x.clone().requires_grad_(True)
    expected = loop_pool(reduce, x_ref, lengths)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)

    upstream = torch.randn(
        got.shape, generator=torch.Generator().manual_seed(1)
    )
    got.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-12, rtol=1e-10)
    assert torch.isfinite(x_ours.grad).all()


@pytest.mark.parametrize("kind", list(POOLS))
def test_padding_values_do_not_matter(kind):
    ours, _ = POOLS[kind]
    lengths = [2, 5, 1]
    results = [
        ours(ragged_input(3, 5, 4, lengths, seed=0, pad_value=v), lengths)
        for v in (0.0, 1e6, -1e6, float("inf"), float("nan"))
    ]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=0, rtol=0)


def test_max_ignores_zeros_in_padding():
    # All real values negative: an unmasked max would return the padded zeros.
    x = -torch.rand(2, 4, 3) - 0.5
    x[0, 2:] = 0.0
    pooled = masked_max(x, [2, 4])
    assert (pooled < 0).all()
    torch.testing.assert_close(pooled[0], x[0, :2].max(dim=0).values)


def test_time_major_via_transpose():
    gen = torch.Generator().manual_seed(3)
    x_tbh = torch.randn(6, 2, 3, generator=gen)  # (T, B, H)
    lengths = [6, 3]
    got = masked_mean(x_tbh.transpose(0, 1), lengths)
    torch.testing.assert_close(got[1], x_tbh[:3, 1].mean(dim=0))


@pytest.mark.parametrize(
    "pool", [masked_mean, masked_max], ids=["mean", "max"]
)
def test_errors(pool):
    x = torch.randn(2, 4, 3)
    with pytest.raises(
        ValueError,
        match=r"x must have 3 dimensions \(B, T, H\), got shape \(2, 4\)",
    ):
        pool(torch.randn(2, 4), [1, 2])
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        pool([[1.0]], [1])
    with pytest.raises(
        ValueError,
        match="x must be a floating-point tensor, got dtype torch.int64",
    ):
        pool(torch.ones(2, 4, 3, dtype=torch.long), [1, 2])
    with pytest.raises(
        ValueError, match="exactly one of lengths .* got neither"
    ):
        pool(x)
    with pytest.raises(ValueError, match="exactly one of lengths .* got both"):
        pool(x, [1, 2], mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(2,\), got shape \(3,\)"):
        pool(x, [1, 2, 3])
    with pytest.raises(
        ValueError, match=r"every length must lie in 1\.\.4 .* got \[0, 2\]"
    ):
        pool(x, [0, 2])
    with pytest.raises(
        ValueError, match=r"every length must lie in 1\.\.4 .* got \[5, 2\]"
    ):
        pool(x, [5, 2])
    with pytest.raises(
        ValueError, match="lengths must hold integers, got dtype torch.float64"
    ):
        pool(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(
        ValueError, match="mask must be bool .* got dtype torch.int64"
    ):
        pool(x, mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(
        ValueError,
        match=r"mask must have shape \(B, T\) = \(2, 4\), got \(4, 2\)",
    ):
        pool(x, mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(
        TypeError, match="mask must be a torch.Tensor, got list"
    ):
        pool(x, mask=[[True] * 4] * 2)
    empty_row = torch.tensor([[True, True, False, False], [False] * 4])
    with pytest.raises(
        ValueError, match=r"at least one real step .* got none in rows \[1\]"
    ):
        pool(x, mask=empty_row)
