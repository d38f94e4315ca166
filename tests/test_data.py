"""Tests of seqbook_lib.data on tiny archives and files built in a temporary folder.

The last test reads the real data when SEQBOOK_DATA points at it (a few seconds:
it parses the 50,000-review archive once); it is skipped otherwise.
"""

import collections
import hashlib
import io
import os
import socket
import tarfile
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import torch

from seqbook_lib import data
from seqbook_lib.data import (
    CorruptDataError,
    DataNotFoundError,
    TextSource,
    cache_dir,
    data_root,
    load_imdb,
    load_text,
    train_val_split_text,
)

# Read before the autouse fixture below hides SEQBOOK_DATA from every test.
REAL_DATA = os.environ.get("SEQBOOK_DATA")

IDS = {"neg": [(10, 2), (2, 1), (7, 4)], "pos": [(3, 9), (20, 10), (1, 7)]}  # (id, rating)


def review_text(split, cls, review_id):
    return f"{split} {cls} review {review_id}.<br /><br />Ünïcode ok."


def make_tree(base: Path, skip=()) -> Path:
    """An aclImdb folder with 3 reviews per split and class, plus files the loader must ignore."""
    top = base / "aclImdb"
    for split in ("train", "test"):
        for cls in ("neg", "pos"):
            folder = top / split / cls
            folder.mkdir(parents=True)
            for review_id, rating in IDS[cls]:
                if (split, cls, review_id) not in skip:
                    text = review_text(split, cls, review_id)
                    (folder / f"{review_id}_{rating}.txt").write_text(text, encoding="utf-8")
    (top / "README").write_text("readme")
    (top / "imdbEr.txt").write_text("0.1\n")
    (top / "train" / "urls_pos.txt").write_text("http://example.org\n")
    (top / "train" / "unsup").mkdir()
    (top / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    return top


def make_archive(path: Path, skip=(), extra=()) -> Path:
    """A .tar.gz of make_tree's folder, with ``extra`` TarInfo members (data, info) appended."""
    tree = make_tree(path.parent / ("tree-" + path.name), skip)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname="aclImdb")
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real data folder, a private cache, no offline switches, unless a test sets them."""
    for name in ("SEQBOOK_DATA", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEQBOOK_CACHE", str(tmp_path / "cache"))


def rows(split_ds):
    return [(r["label"], r["id"], r["rating"], r["text"]) for r in split_ds]


def expected_rows(split):
    out = []
    for label, cls in enumerate(("neg", "pos")):
        for review_id, rating in sorted(IDS[cls]):
            out.append((label, review_id, rating, review_text(split, cls, review_id)))
    return out


# --- data_root and cache_dir --------------------------------------------------------


def test_data_root(monkeypatch, tmp_path):
    assert data_root() is None
    monkeypatch.setenv("SEQBOOK_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("SEQBOOK_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="SEQBOOK_DATA is set to .*missing.*not a folder"):
        data_root()


def test_cache_dir(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SEQBOOK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "seqbook"


# --- load_imdb from local copies ----------------------------------------------------


@pytest.mark.parametrize(
    "layout", ["imdb/archive", "imdb/folder", "archive", "folder"],
)
def test_load_imdb_layouts(tmp_path, layout):
    root = tmp_path / "data"
    base = root / "imdb" if layout.startswith("imdb/") else root
    base.mkdir(parents=True)
    if layout.endswith("archive"):
        make_archive(base / "aclImdb_v1.tar.gz")
    else:
        make_tree(base)
    splits = load_imdb(root, expected_per_class=3)
    assert isinstance(splits, datasets.DatasetDict)
    assert list(splits) == ["train", "test"]
    for split in ("train", "test"):
        ds = splits[split]
        assert ds.column_names == ["text", "label", "id", "rating"]
        assert ds.features["label"].names == ["neg", "pos"]
        assert rows(ds) == expected_rows(split)  # labels right, sorted by label then numeric id


def test_load_imdb_uses_seqbook_data(monkeypatch, tmp_path):
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    make_archive(tmp_path / "data" / "imdb" / "aclImdb_v1_labelled.tar.gz")
    monkeypatch.setenv("SEQBOOK_DATA", str(tmp_path / "data"))
    splits = load_imdb(expected_per_class=3)
    assert rows(splits["test"]) == expected_rows("test")


@pytest.mark.parametrize("kind", ["archive", "folder"])
def test_load_imdb_count_check(tmp_path, kind):
    skip = {("test", "pos", 20)}
    if kind == "archive":
        make_archive(tmp_path / "aclImdb_v1.tar.gz", skip=skip)
    else:
        make_tree(tmp_path, skip=skip)
    with pytest.raises(CorruptDataError, match="test/pos: found 2, expected 3"):
        load_imdb(tmp_path, expected_per_class=3)
    # the official count is the default: a tiny copy is not the data set
    with pytest.raises(CorruptDataError, match="train/neg: found 3, expected 12500"):
        load_imdb(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_load_imdb_truncated_or_garbage_archive(tmp_path):
    archive = make_archive(tmp_path / "good.tar.gz")
    (tmp_path / "data").mkdir()
    bad = tmp_path / "data" / "aclImdb_v1.tar.gz"
    bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match="not a readable .tar.gz archive .*truncated or corrupt"):
        load_imdb(tmp_path / "data", expected_per_class=3)
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CorruptDataError, match="not a readable .tar.gz archive"):
        load_imdb(tmp_path / "data", expected_per_class=3)


def test_load_imdb_refuses_bad_utf8(tmp_path):
    bad = tarfile.TarInfo("aclImdb/train/neg/99_1.txt")
    bad.size = 2
    make_archive(tmp_path / "aclImdb_v1.tar.gz", extra=[(bad, b"\xff\xfe")])
    with pytest.raises(CorruptDataError, match="99_1.txt is not UTF-8 text"):
        load_imdb(tmp_path, expected_per_class=3)


def _member(name, kind="file", target=""):
    info = tarfile.TarInfo(name)
    if kind == "file":
        info.size = len(b"evil")
        return info, b"evil"
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "member, message",
    [
        (("../evil.txt",), r"unsafe path in archive: '\.\./evil\.txt'"),
        (("aclImdb/train/../../evil.txt",), "unsafe path in archive"),
        (("/abs/evil.txt",), r"unsafe path in archive: '/abs/evil\.txt'"),
        (("aclImdb/train/pos/5_8.txt", "symlink", "/etc/passwd"), "unsafe link in archive"),
        (("aclImdb/train/pos/5_8.txt", "hardlink", "../evil.txt"), "unsafe link in archive"),
        (("aclImdb/evil", "fifo"), "not a file or folder"),
    ],
)
def test_load_imdb_refuses_unsafe_members(tmp_path, member, message):
    root = tmp_path / "sandbox" / "data"
    root.mkdir(parents=True)
    make_archive(root / "aclImdb_v1.tar.gz", extra=[_member(*member)])
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(CorruptDataError, match=message):
        load_imdb(root, expected_per_class=3)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere below
    assert not (tmp_path / "sandbox" / "evil.txt").exists()
    assert not Path("/abs/evil.txt").exists()


def test_load_imdb_caches_the_parsed_archive(monkeypatch, tmp_path):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    first = load_imdb(tmp_path, expected_per_class=3)
    assert len(list((tmp_path / "cache" / "imdb").iterdir())) == 1

    def no_parsing(path):
        raise AssertionError("the archive was parsed again")

    monkeypatch.setattr(data, "_read_imdb_archive", no_parsing)
    second = load_imdb(tmp_path, expected_per_class=3)
    assert rows(second["train"]) == rows(first["train"]) == expected_rows("train")
    assert second["test"].features == first["test"].features
    # cache=False, or a changed archive, parses again
    with pytest.raises(AssertionError, match="parsed again"):
        load_imdb(tmp_path, expected_per_class=3, cache=False)
    os.utime(archive, ns=(0, archive.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="parsed again"):
        load_imdb(tmp_path, expected_per_class=3)


# --- load_imdb from the hub -----------------------------------------------------------


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_load_imdb_offline_fails_fast(monkeypatch, flag):
    monkeypatch.setenv(flag, "1")
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as info:
        load_imdb()
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "SEQBOOK_DATA" in message and "imdb/aclImdb_v1.tar.gz" in message
    assert "Stanford" in message and "84 MB" in message and "hub was not tried" in message


def test_load_imdb_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    # 192.0.2.1 (TEST-NET-1) is never routed: the probe must give up on its own
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://192.0.2.1")
    empty = tmp_path / "empty"
    empty.mkdir()
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"hub \(https://192\.0\.2\.1\) is not reachable") as info:
        load_imdb(empty)
    assert time.perf_counter() - start < 2.0
    assert f"looked in {empty / 'imdb' / 'aclImdb'}" in str(info.value)


def test_load_imdb_from_hub_keeps_train_and_test(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return [datasets.Dataset.from_dict({"text": [s], "label": [0]}) for s in split]

    monkeypatch.setattr(data, "_reachable", lambda url: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    splits = load_imdb()
    assert calls == [("stanfordnlp/imdb", ["train", "test"])]
    assert list(splits) == ["train", "test"] and splits["test"]["text"] == ["test"]


def test_reachable_probe():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert data._reachable(f"http://127.0.0.1:{port}/x")
    finally:
        server.close()
    assert not data._reachable(f"http://127.0.0.1:{port}/x")  # closed: refused
    assert data._reachable("file:///anything")


# --- load_text ----------------------------------------------------------------------

TINY = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture
def tiny_source(monkeypatch, tmp_path):
    """Register a text 'tiny' served from a local file:// URL."""
    served = tmp_path / "served.txt"
    served.write_text(TINY, encoding="utf-8")
    source = TextSource("tiny/input.txt", served.as_uri(), hashlib.sha256(TINY.encode()).hexdigest())
    monkeypatch.setitem(data.TEXTS, "tiny", source)
    return served


def test_load_text_local_copy_and_hash(monkeypatch, tmp_path, tiny_source):
    root = tmp_path / "data"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "input.txt").write_text(TINY, encoding="utf-8")
    tiny_source.unlink()  # no download possible: the local copy must be used
    assert load_text("tiny", root) == TINY
    monkeypatch.setenv("SEQBOOK_DATA", str(root))
    assert load_text("tiny") == TINY
    (root / "tiny" / "input.txt").write_text(TINY + "extra", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="input.txt has sha256 [0-9a-f]{64}, expected"):
        load_text("tiny")


def test_load_text_downloads_into_the_cache(tmp_path, tiny_source):
    assert load_text("tiny") == TINY
    cached = tmp_path / "cache" / "tiny" / "input.txt"
    assert cached.read_text(encoding="utf-8") == TINY
    tiny_source.unlink()
    assert load_text("tiny") == TINY  # from the cache now
    cached.write_text("tampered", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="cache/tiny/input.txt has sha256"):
        load_text("tiny")


def test_load_text_refuses_a_bad_download(monkeypatch, tmp_path, tiny_source):
    tiny_source.write_text("not the text", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="served.txt has sha256"):
        load_text("tiny")
    assert not (tmp_path / "cache").exists()


def test_load_text_offline_fails_fast(monkeypatch):
    unreachable = TextSource("tiny/input.txt", "https://192.0.2.1/input.txt", "0" * 64)
    monkeypatch.setitem(data.TEXTS, "tiny", unreachable)
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as info:
        load_text("tiny")
    assert time.perf_counter() - start < 2.0
    assert "SEQBOOK_DATA" in str(info.value) and "tiny/input.txt" in str(info.value)


def test_load_text_unknown_name():
    with pytest.raises(ValueError, match=r"unknown text 'shakespeare'; known names: \['tinyshakespeare'\]"):
        load_text("shakespeare")


def test_load_text_root_must_be_a_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="root must be a folder"):
        load_text(root=tmp_path / "nowhere")


# --- train_val_split_text --------------------------------------------------------------


def test_train_val_split_text():
    assert train_val_split_text("abcdefghij") == ("abcdefghi", "j")
    assert train_val_split_text("abcdefghij", val_fraction=0.25) == ("abcdefg", "hij")
    train, val = train_val_split_text(torch.arange(100), 0.2)
    assert torch.equal(train, torch.arange(80)) and torch.equal(val, torch.arange(80, 100))


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.1"])
def test_train_val_split_text_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction must be a number strictly between 0 and 1"):
        train_val_split_text("abcdefghij", fraction)


def test_train_val_split_text_too_short():
    with pytest.raises(ValueError, match="length 1 is too short to split with val_fraction=0.1"):
        train_val_split_text("a")


# --- the real data (CI sets SEQBOOK_DATA=../shared/data) -----------------------------------


@pytest.fixture
def real_root():
    root = Path(REAL_DATA) if REAL_DATA else None
    if root is None or not list((root / "imdb").glob("aclImdb_v1*.tar.gz")):
        pytest.skip("SEQBOOK_DATA is not set to a folder holding imdb/aclImdb_v1*.tar.gz and "
                    "tinyshakespeare/input.txt: the real-data check is skipped")
    return root


def test_real_data(real_root, monkeypatch):
    """Takes a few seconds: parses the 84 MB archive once (cold cache), then reads the cache."""
    monkeypatch.setenv("SEQBOOK_DATA", str(real_root))
    for _ in range(2):  # cold, then from the cache
        splits = load_imdb()
        for split in ("train", "test"):
            assert splits[split].num_rows == 25_000
            columns = splits[split].select_columns(["label", "rating"]).to_dict()
            assert collections.Counter(columns["label"]) == {0: 12_500, 1: 12_500}
            pairs = set(zip(columns["label"], columns["rating"]))
            assert all((r <= 4) if label == 0 else (r >= 7) for label, r in pairs)
    text = load_text()
    assert len(text) == 1_115_394
    assert hashlib.sha256(text.encode()).hexdigest() == data.TEXTS["tinyshakespeare"].sha256
    train, val = train_val_split_text(text)
    assert len(train) == 1_003_854 and train + val == text
