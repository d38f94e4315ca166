"""Reproducibility and device helpers used by every chapter."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random number generators.

    Every chapter calls this once at the top so that a fresh run prints the
    same numbers as the stored outputs.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses started later


def device() -> torch.device:
    """The device chapters compute on: the first CUDA GPU when present, else
    the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
