"""The book's real data sets: a local copy first, the internet second.

Two corpora feed the application chapters:

- the IMDB Large Movie Review Dataset (50,000 labelled reviews) for sentiment
  classification, :func:`load_imdb`;
- tiny Shakespeare (1.1 M characters) for character-level language models,
  :func:`load_text`.

Every loader looks first in a local folder -- the ``root`` argument, else the
folder named by the environment variable ``SEQBOOK_DATA`` -- laid out as::

    $SEQBOOK_DATA/imdb/aclImdb_v1.tar.gz    (or the unpacked imdb/aclImdb/)
    $SEQBOOK_DATA/tinyshakespeare/input.txt

and only then goes online. Without a local copy and without a network the
loaders fail within about two seconds with a message saying what to download
and where to put it, instead of hanging on a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tarfile
import threading
import urllib.error
import urllib.request
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # datasets takes ~1 s to import: loaded only by load_imdb
    from datasets import DatasetDict

PROBE_TIMEOUT = 1.5  # seconds to decide whether a host is reachable at all
DOWNLOAD_TIMEOUT = 30.0  # seconds of silence after which a download gives up

IMDB_PAGE = "https://ai.stanford.edu/~amaas/data/sentiment/"
IMDB_HUB_ID = "stanfordnlp/imdb"
IMDB_PER_CLASS = 12_500  # reviews per class and split in the official data
IMDB_SPLITS = ("train", "test")
IMDB_CLASSES = ("neg", "pos")  # label = position: 0 = negative, 1 = positive
# A review inside the aclImdb folder: <split>/<class>/<id>_<rating>.txt
_REVIEW = re.compile(r"(train|test)/(neg|pos)/(\d+)_(\d+)\.txt")


class DataNotFoundError(FileNotFoundError):
    """No local copy of a data set, and it could not be downloaded."""


class CorruptDataError(ValueError):
    """A copy of a data set exists but is unsafe, incomplete or not the
    expected file."""


def data_root() -> Path | None:
    """The local data folder named by ``$SEQBOOK_DATA``, or ``None`` when it is
    unset."""
    value = os.environ.get("SEQBOOK_DATA")
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(
            f"SEQBOOK_DATA is set to {value!r}, which is not a folder; "
            "point it at the folder holding imdb/ and tinyshakespeare/, "
            "or unset it"
        )
    return root


def cache_dir() -> Path:
    """Where downloads and parsed copies are kept: ``$SEQBOOK_CACHE``, else
    ``~/.cache/seqbook``."""
    value = os.environ.get("SEQBOOK_CACHE")
    return (
        Path(value).expanduser()
        if value
        else Path.home() / ".cache" / "seqbook"
    )


def _local_root(root) -> Path | None:
    """``root`` as a Path when given (it must be a folder), else
    :func:`data_root`."""
    if root is None:
        return data_root()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"root must be a folder, got {str(root)!r}")
    return root


# --- network -----------------------------------------------------------------


def _reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the host of ``url`` (or to its proxy) opens
    within ``timeout``.

    The connection attempt runs in a daemon thread so that a slow DNS lookup,
    which socket timeouts do not cover, cannot hold the caller longer.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        return True
    host, port = (
        parts.hostname,
        parts.port or (443 if parts.scheme == "https" else 80),
    )
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = proxy_parts.hostname, proxy_parts.port or 80
    opened = []

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(opened)


def _hub_offline() -> bool:
    """Whether the Hugging Face offline switches are set in the environment."""
    flags = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(
        os.environ.get(f, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for f in flags
    )


# --- IMDB --------------------------------------------------------------------


def load_imdb(
    root=None, expected_per_class: int = IMDB_PER_CLASS, cache: bool = True
) -> "DatasetDict":
    """The IMDB reviews as ``{"train": Dataset, "test": Dataset}`` (a
    ``datasets.DatasetDict``).

    Columns: ``text`` (the raw review, ``<br />`` tags included), ``label``
    (0 = negative, 1 = positive), and for a local copy also ``id`` and
    ``rating`` (1-4 stars for negative, 7-10 for positive) from the file
    name ``<id>_<rating>.txt``. Rows are sorted by label, then id: all
    negative reviews come first, so shuffle before training.

    Sources, in order: the folder ``root`` (else ``$SEQBOOK_DATA``) holding
    ``imdb/aclImdb/`` or ``imdb/aclImdb_v1*.tar.gz`` (or either directly);
    else the Hugging Face hub (``stanfordnlp/imdb``, columns text and label).
    The archive is read member by member without extracting anything, and
    members with absolute paths, ``..`` or links are refused. Each split and
    class must hold ``expected_per_class`` reviews, so that a partial copy is
    an error rather than a silently smaller data set. With ``cache=True`` the
    parsed archive is saved under :func:`cache_dir` and the next call loads it
    in a fraction of a second.
    """
    if not isinstance(expected_per_class, int) or expected_per_class < 1:
        raise ValueError(
            "expected_per_class must be a positive int, "
            f"got {expected_per_class!r}"
        )
    root = _local_root(root)
    searched = []
    if root is not None:
        for base in (root / "imdb", root):
            folder = base / "aclImdb"
            if folder.is_dir():
                return _imdb_from_records(
                    _read_imdb_folder(folder), expected_per_class, folder
                )
            archives = sorted(base.glob("aclImdb_v1*.tar.gz"))
            if archives:
                return _imdb_from_archive(
                    archives[0], expected_per_class, cache
                )
            searched += [str(folder), str(base / "aclImdb_v1*.tar.gz")]
    return _imdb_from_hub(searched)


def _imdb_missing_message(searched: list[str]) -> str:
    looked = (
        "; looked in " + ", ".join(searched)
        if searched
        else "; SEQBOOK_DATA is not set"
    )
    return (
        "IMDB reviews not found locally"
        + looked
        + ". Download aclImdb_v1.tar.gz (the Large "
        "Movie Review Dataset, about 84 MB) from the Stanford AI Lab page "
        f"{IMDB_PAGE} and set the environment variable SEQBOOK_DATA to a "
        "folder containing imdb/aclImdb_v1.tar.gz "
        "(or pass root=that folder)"
    )


def _imdb_from_hub(searched: list[str]) -> "DatasetDict":
    """Train and test splits of ``stanfordnlp/imdb``, after checking that the
    hub can be reached."""
    from huggingface_hub import constants

    message = _imdb_missing_message(searched)
    if _hub_offline():
        raise DataNotFoundError(
            message
            + ". HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set, "
            "so the Hugging Face hub was not tried"
        )
    if not _reachable(constants.ENDPOINT):
        raise DataNotFoundError(
            message
            + f". The Hugging Face hub ({constants.ENDPOINT}) "
            "is not reachable either"
        )
    import datasets

    train, test = datasets.load_dataset(IMDB_HUB_ID, split=["train", "test"])
    return datasets.DatasetDict({"train": train, "test": test})


def _imdb_from_archive(
    archive: Path, expected_per_class: int, cache: bool
) -> "DatasetDict":
    """Parse ``archive`` (or load its parsed copy from the cache)."""
    import datasets

    stat = archive.stat()
    key = (
        f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        f"|{expected_per_class}|v1"
    )
    cached = (
        cache_dir() / "imdb" / hashlib.sha256(key.encode()).hexdigest()[:16]
    )
    if cache and cached.is_dir():
        return datasets.load_from_disk(str(cached))
    splits = _imdb_from_records(
        _read_imdb_archive(archive), expected_per_class, archive
    )
    if cache:
        _save_atomically(splits, cached)
    return splits


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse archive members that could point outside the folder they belong
    to."""
    name = member.name
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split(
        "/"
    ):
        raise CorruptDataError(f"unsafe path in archive: {name!r}")
    if member.issym() or member.islnk():
        raise CorruptDataError(
            f"unsafe link in archive: {name!r} -> {member.linkname!r}"
        )
    if not (member.isfile() or member.isdir()):
        raise CorruptDataError(
            f"unsafe member in archive (not a file or folder): {name!r}"
        )


def _review_record(match: re.Match, text: bytes, where: str) -> tuple:
    """``(split, label, id, rating, text)`` of one review file."""
    split, label_name, review_id, rating = match.groups()
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptDataError(f"{where} is not UTF-8 text: {err}") from None
    return (
        split,
        IMDB_CLASSES.index(label_name),
        int(review_id),
        int(rating),
        decoded,
    )


def _read_imdb_archive(archive: Path) -> list[tuple]:
    """The review records of a ``.tar.gz`` in the aclImdb layout, read without
    extracting."""
    records = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                _check_member(member)
                name = member.name.removeprefix("./")
                if not member.isfile() or not name.startswith("aclImdb/"):
                    continue
                match = _REVIEW.fullmatch(name.removeprefix("aclImdb/"))
                if match:
                    text = tar.extractfile(member).read()
                    records.append(
                        _review_record(match, text, f"{archive}:{member.name}")
                    )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise CorruptDataError(
            f"{archive} is not a readable .tar.gz archive "
            f"(a truncated or corrupt download?): {type(err).__name__}: "
            f"{err}. Download aclImdb_v1.tar.gz again from {IMDB_PAGE}"
        ) from err
    return records


def _read_imdb_folder(folder: Path) -> list[tuple]:
    """The review records of an unpacked ``aclImdb`` folder."""
    records = []
    for split in IMDB_SPLITS:
        for label_name in IMDB_CLASSES:
            class_dir = folder / split / label_name
            if not class_dir.is_dir():
                continue  # reported by the count check
            for entry in os.scandir(class_dir):
                match = _REVIEW.fullmatch(f"{split}/{label_name}/{entry.name}")
                if match and entry.is_file():
                    text = Path(entry.path).read_bytes()
                    records.append(_review_record(match, text, entry.path))
    return records


def _imdb_from_records(
    records: list[tuple], expected_per_class: int, source: Path
) -> "DatasetDict":
    """Check the counts, sort, and wrap the records into one ``Dataset`` per
    split."""
    import datasets

    counts = Counter((split, label) for split, label, *_ in records)
    wrong = [
        f"{split}/{name}: found {counts[split, label]}, "
        f"expected {expected_per_class}"
        for split in IMDB_SPLITS
        for label, name in enumerate(IMDB_CLASSES)
        if counts[split, label] != expected_per_class
    ]
    if wrong:
        raise CorruptDataError(
            f"{source} does not hold the full IMDB data "
            f"({'; '.join(wrong)}); it is incomplete or corrupt. "
            f"Download aclImdb_v1.tar.gz again from {IMDB_PAGE}"
        )
    records.sort(key=lambda r: (r[1], r[2]))  # label, then id
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(IMDB_CLASSES)),
            "id": datasets.Value("int32"),
            "rating": datasets.Value("int8"),
        }
    )
    splits = {}
    for split in IMDB_SPLITS:
        rows = [r for r in records if r[0] == split]
        columns = {
            "text": [r[4] for r in rows],
            "label": [r[1] for r in rows],
            "id": [r[2] for r in rows],
            "rating": [r[3] for r in rows],
        }
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)


@contextlib.contextmanager
def _no_progress_bars():
    """Silence the progress bars of ``datasets`` (they clutter notebook
    outputs)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _save_atomically(splits: "DatasetDict", target: Path) -> None:
    """Save ``splits`` to ``target`` via a temporary folder, so a reader never
    sees half of it.

    Failing to write the cache is a warning, not an error: the data are loaded.
    """
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _no_progress_bars():
            splits.save_to_disk(str(tmp))
        os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # another process may have won the race
            warnings.warn(
                f"could not cache the parsed IMDB data in {target}: {err}"
            )


# --- plain texts -------------------------------------------------------------


@dataclass(frozen=True)
class TextSource:
    """Where a text lives: ``path`` under the data folder, its download ``url``
    and sha256."""

    path: str
    url: str
    sha256: str


TEXTS = {
    "tinyshakespeare": TextSource(
        path="tinyshakespeare/input.txt",
        url=(
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
            "data/tinyshakespeare/input.txt"
        ),
        sha256=(
            "86c4e6aa9db7c042ec79f339dcb96d42"
            "b0075e16b8fc2e86bf0ca57e2dc565ed"
        ),
    ),
}


def load_text(name: str = "tinyshakespeare", root=None) -> str:
    """A whole text corpus as one ``str`` (for character-level models).

    Looks for ``<root or $SEQBOOK_DATA>/tinyshakespeare/input.txt``, then for
    a copy downloaded earlier into :func:`cache_dir`, and else downloads it.
    Every copy must have the known sha256, so that the numbers printed by the
    chapters are reproducible.
    """
    if name not in TEXTS:
        raise ValueError(
            f"unknown text {name!r}; known names: {sorted(TEXTS)}"
        )
    source = TEXTS[name]
    root = _local_root(root)
    if root is not None and (root / source.path).is_file():
        return _checked_text(
            (root / source.path).read_bytes(), source, root / source.path
        )
    cached = cache_dir() / source.path
    if cached.is_file():
        return _checked_text(cached.read_bytes(), source, cached)
    data = _download(name, source)
    text = _checked_text(data, source, source.url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return text


def _download(name: str, source: TextSource) -> bytes:
    """The bytes at ``source.url``; a :class:`DataNotFoundError` within seconds
    when offline."""
    hint = (
        f"Put the file at $SEQBOOK_DATA/{source.path}, i.e. set the "
        "environment variable SEQBOOK_DATA to a folder containing "
        f"{source.path} (or pass root=that folder)"
    )
    if not _reachable(source.url):
        raise DataNotFoundError(
            f"text {name!r} not found locally and {source.url} "
            f"is not reachable. {hint}"
        )
    try:
        with urllib.request.urlopen(
            source.url, timeout=DOWNLOAD_TIMEOUT
        ) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        raise DataNotFoundError(
            f"text {name!r} not found locally and downloading "
            f"{source.url} failed: {err}. {hint}"
        ) from err


def _checked_text(data: bytes, source: TextSource, where) -> str:
    """``data`` decoded as UTF-8 after checking its sha256 against
    ``source.sha256``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise CorruptDataError(
            f"{where} has sha256 {digest}, expected {source.sha256}: "
            "it is not the expected file (corrupt, truncated or another "
            f"version). Replace it with {source.url}"
        )
    return data.decode("utf-8")


def train_val_split_text(text, val_fraction: float = 0.1):
    """``(train, val)``: the first ``1 - val_fraction`` of ``text`` and the
    rest, by position.

    Splitting by position (not at random) keeps whole passages on one side,
    so the validation loss measures text the model has not seen. Works for a
    ``str`` and for any sliceable sequence (a tensor of ids, say).
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not (0.0 < val_fraction < 1.0)
    ):
        raise ValueError(
            "val_fraction must be a number strictly between 0 and 1, "
            f"got {val_fraction!r}"
        )
    n_train = int(len(text) * (1.0 - val_fraction))
    if n_train == 0 or n_train == len(text):
        raise ValueError(
            f"a text of length {len(text)} is too short to split with "
            f"val_fraction={val_fraction}: "
            "one side would be empty"
        )
    return text[:n_train], text[n_train:]
