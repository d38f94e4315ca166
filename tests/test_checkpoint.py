"""Tests of seqbook_lib.checkpoint: saving a model with its vocabulary and
loading it back, safely."""

import json

import pytest
import torch

from seqbook_lib.charlm import CharLM, sample
from seqbook_lib.checkpoint import load_model, save_model
from seqbook_lib.text import Vocab

VOCAB = Vocab.build(["abcde fgh\n"], specials=())
KWARGS = {"vocab_size": len(VOCAB), "embed_dim": 4, "hidden_size": 6,
          "num_layers": 2, "cell": "lstm", "dropout": 0.1}


def trained_like_model():
    torch.manual_seed(0)
    return CharLM(**KWARGS).train()


def saved(tmp_path, meta=None):
    model = trained_like_model()
    folder = save_model(tmp_path / "lm", model, VOCAB, KWARGS, meta)
    return model, folder


def test_round_trip(tmp_path):
    model, folder = saved(tmp_path, {"val_nats": 1.5, "steps": [1, 2]})
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "vocab.json", "weights.pt"]
    loaded, vocab, meta = load_model(folder)
    assert isinstance(loaded, CharLM) and not loaded.training
    assert vocab == VOCAB and meta == {"val_nats": 1.5, "steps": [1, 2]}
    for (name, a), (name_b, b) in zip(model.state_dict().items(),
                                      loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    model.eval()
    ids = torch.tensor([VOCAB.encode("abc fgh")])
    assert torch.equal(model(ids)[0], loaded(ids)[0])
    texts = [sample(m, VOCAB, "ab", 20,
                    generator=torch.Generator().manual_seed(3))
             for m in (model, loaded)]
    assert texts[0] == texts[1]


def test_files_are_plain_data(tmp_path):
    _, folder = saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config == {"format": 1, "class": "CharLM", "kwargs": KWARGS,
                      "meta": {}}
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert Vocab.load(folder / "vocab.json") == VOCAB


def test_weights_that_are_not_plain_tensors_are_refused(tmp_path):
    """Loading uses weights_only=True: a pickled object is not run."""
    _, folder = saved(tmp_path)
    state = torch.load(folder / "weights.pt", weights_only=True)
    state["extra"] = Vocab(["x"])  # an arbitrary Python object
    torch.save(state, folder / "weights.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        load_model(folder)


def test_unknown_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"can save one of .*got a Linear"):
        save_model(tmp_path / "x", torch.nn.Linear(2, 2), VOCAB, {})
    assert not (tmp_path / "x").exists()
    _, folder = saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["class"] = "os.system"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"names class 'os.system'; only "):
        load_model(folder)


@pytest.mark.parametrize("missing", ["config.json", "vocab.json",
                                     "weights.pt"])
def test_missing_files(tmp_path, missing):
    _, folder = saved(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError,
                       match=rf"not a saved model: missing {missing}"):
        load_model(folder)
    with pytest.raises(FileNotFoundError, match=r"missing config.json, "
                       r"vocab.json, weights.pt"):
        load_model(tmp_path / "nowhere")


def test_mismatched_kwargs(tmp_path):
    model = trained_like_model()
    with pytest.raises(ValueError, match=r"do not fit a CharLM built from "
                       r"these kwargs"):
        save_model(tmp_path / "a", model, VOCAB, {**KWARGS, "hidden_size": 7})
    assert not (tmp_path / "a").exists()
    with pytest.raises(TypeError, match=r"unexpected keyword argument"):
        save_model(tmp_path / "a", model, VOCAB, {**KWARGS, "width": 3})
    _, folder = saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["kwargs"]["num_layers"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"differing \(name, shape\) "
                       r"entries: .*weight_hh_l1"):
        load_model(folder)


def test_other_errors(tmp_path):
    model = trained_like_model()
    with pytest.raises(TypeError, match=r"vocab must be a Vocab, got list"):
        save_model(tmp_path / "b", model, VOCAB.itos, KWARGS)
    with pytest.raises(TypeError, match=r"kwargs must be a dict"):
        save_model(tmp_path / "b", model, VOCAB, [KWARGS])
    with pytest.raises(TypeError, match=r"not JSON serializable"):
        save_model(tmp_path / "b", model, VOCAB, KWARGS, {"t": object()})
    assert not (tmp_path / "b").exists()
    _, folder = saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["format"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"expected checkpoint format 1, "
                       r"got 2"):
        load_model(folder)
