"""Saving a trained model with its vocabulary, and loading it back safely.

A checkpoint is a folder of three plain files::

    config.json   {"format": 1, "class": "BiLSTMClassifier",
                   "kwargs": {...constructor arguments...}, "meta": {...}}
    vocab.json    the vocabulary, as written by ``Vocab.save``
    weights.pt    the model's ``state_dict`` (tensors only)

Loading never unpickles arbitrary objects: the weights are read with
``torch.load(..., weights_only=True)``, the vocabulary and the configuration
are JSON, and the class to rebuild must be one of the library's models listed
in :data:`MODELS` -- a checkpoint cannot name any other code to run.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from .text import Vocab

FORMAT = 1
# The classes a checkpoint may name, and the module that defines each.
MODELS = {
    "BiLSTMClassifier": "seqbook_lib.sentiment",
    "CharLM": "seqbook_lib.charlm",
    "TransformerClassifier": "seqbook_lib.transformer",
}
_FILES = ("config.json", "vocab.json", "weights.pt")


def save_model(
    folder, model: nn.Module, vocab: Vocab, kwargs: dict, meta=None
) -> Path:
    """Write ``model`` (built as ``type(model)(**kwargs)``), its ``vocab``
    and optional JSON-able ``meta`` (scores, settings) to ``folder``.

    Returns the folder. ``kwargs`` must rebuild the same architecture: it is
    checked by building a fresh model from it and comparing parameter names
    and shapes before anything is written.
    """
    name = type(model).__name__
    if name not in MODELS:
        raise ValueError(
            f"can save one of {sorted(MODELS)}, got a {name}"
        )
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a Vocab, got {type(vocab).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _check_same_shapes(_build(name, kwargs).state_dict(), state, name)
    config = {"format": FORMAT, "class": name, "kwargs": kwargs,
              "meta": meta or {}}
    text = json.dumps(config, indent=1)  # fails early on non-JSON values
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "weights.pt")
    vocab.save(folder / "vocab.json")
    (folder / "config.json").write_text(text + "\n", encoding="utf-8")
    return folder


def load_model(folder, map_location="cpu"):
    """Rebuild what :func:`save_model` wrote: ``(model, vocab, meta)``, the
    model in eval mode."""
    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a saved model: missing {', '.join(missing)}"
        )
    config = json.loads((folder / "config.json").read_text("utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(
            f"expected checkpoint format {FORMAT}, "
            f"got {config.get('format')!r} in {folder / 'config.json'}"
        )
    name = config.get("class")
    if name not in MODELS:
        raise ValueError(
            f"config.json names class {name!r}; "
            f"only {sorted(MODELS)} can be loaded"
        )
    model = _build(name, config["kwargs"])
    state = torch.load(
        folder / "weights.pt", map_location=map_location, weights_only=True
    )
    _check_same_shapes(model.state_dict(), state, name)
    model.load_state_dict(state)
    model.eval()
    return model, Vocab.load(folder / "vocab.json"), config["meta"]


def _build(name: str, kwargs: dict) -> nn.Module:
    """A fresh ``name`` model from its constructor arguments."""
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    cls = getattr(importlib.import_module(MODELS[name]), name)
    return cls(**kwargs)


def _check_same_shapes(expected: dict, given: dict, name: str) -> None:
    """Both state dicts have the same names, each with the same shape."""
    shapes = {k: tuple(v.shape) for k, v in expected.items()}
    got = {k: tuple(v.shape) for k, v in given.items()}
    if shapes != got:
        wrong = sorted(set(shapes.items()) ^ set(got.items()))[:6]
        raise ValueError(
            f"the weights do not fit a {name} built from these kwargs; "
            f"differing (name, shape) entries: {wrong}"
        )
