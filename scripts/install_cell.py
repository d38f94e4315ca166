"""Write (or check) the install cell that opens every chapter notebook.

The cell makes a notebook runnable on its own, e.g. on Colab: when
``seqbook_lib`` cannot be imported it installs the package from the book's
repository. The repository URL is read from ``_config.yml`` (its one home), so
run this script after changing it:

    python scripts/install_cell.py          # rewrite the cells
    python scripts/install_cell.py --check  # exit 1 if a notebook is stale

The cell carries the tag ``remove-cell``, so the site does not show it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TAG = "remove-cell"
MARKER = "# seqbook install cell"


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def cell_source(url: str) -> str:
    return (
        f"{MARKER}: makes this notebook run on its own (e.g. on Colab).\n"
        "try:\n"
        "    import seqbook_lib\n"
        "except ImportError:\n"
        f'    %pip install --quiet "seqbook_lib @ git+{url}"\n'
    )


def install_cell(url: str) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "seqbook-install",
        "metadata": {"tags": [TAG]},
        "outputs": [],
        "source": cell_source(url).splitlines(keepends=True),
    }


def notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def first_cell_ok(nb: dict, url: str) -> bool:
    cell = nb["cells"][0] if nb["cells"] else {}
    return (
        cell.get("cell_type") == "code"
        and "".join(cell.get("source", [])) == cell_source(url)
        and TAG in cell.get("metadata", {}).get("tags", [])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args()
    url = repository_url()
    stale = []
    for path in notebooks():
        nb = json.loads(path.read_text())
        if first_cell_ok(nb, url):
            continue
        stale.append(path)
        if not args.check:
            cells = nb["cells"]
            if cells and MARKER in "".join(cells[0].get("source", [])):
                old = cells.pop(0)
                cell = install_cell(url)
                cell["execution_count"] = old.get("execution_count")
            else:
                cell = install_cell(url)
            cells.insert(0, cell)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    for path in stale:
        print(("stale: " if args.check else "updated: ") + str(path.relative_to(ROOT)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
