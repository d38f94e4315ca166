"""Would a notebook's outputs from another machine pass against this one's?

    python scripts/compare_runs.py book/part4/text_generation.ipynb [REV]

compares the notebook as stored at git revision REV (default ``HEAD``:
typically the outputs another CPU wrote) with the working tree's copy
(typically just re-executed here), cell by cell, the way ``make test``
would: nbval's sanitizing (``tests/nbval_sanitize.cfg``), exact comparison,
or the cell's numeric band (``tests/nbtolerance.py``) where the working
copy declares one; cells tagged ``nbval-ignore-output`` or ``nbval-skip``
are left out, and so are images, as nbval leaves them out. It prints each
cell that would fail, and exits 1 if any would.

An author who can run a chapter on only one machine uses it to check that
the figures stored from another one stay inside the bands set here.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from nbtolerance import cell_band  # noqa: E402

SKIPPED_KEYS = {"image/png", "image/jpeg",
                "application/vnd.jupyter.widget-view+json"}
IGNORE_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}


def sanitizers() -> list[tuple[re.Pattern, str]]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tests" / "nbval_sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"])
            for s in cfg.sections()]


def texts(cell, clean) -> list[tuple[str, str]]:
    """The (key, sanitized text) pairs nbval would compare for a cell."""
    found = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":  # nbval joins adjacent streams
            text = "".join(out["text"])
            if found and found[-1][0] == out["name"]:
                text = found.pop()[1] + text
            found.append((out["name"], text))
        elif out["output_type"] in ("execute_result", "display_data"):
            for key, value in sorted(out.get("data", {}).items()):
                if key not in SKIPPED_KEYS:
                    text = value if isinstance(value, str) else (
                        "".join(value) if isinstance(value, list)
                        else json.dumps(value, sort_keys=True))
                    found.append((key, text))
        elif out["output_type"] == "error":
            found.append(("error", out["ename"]))
    return [(key, clean(text)) for key, text in found]


def compare(old: dict, new: dict) -> list[str]:
    rules = sanitizers()

    def clean(text: str) -> str:
        for pattern, replace in rules:
            text = pattern.sub(replace, text)
        return text

    old_cells = [c for c in old["cells"] if c["cell_type"] == "code"]
    new_cells = [c for c in new["cells"] if c["cell_type"] == "code"]
    problems = []
    if all("id" in c for c in old_cells + new_cells):  # nbformat >= 4.5
        by_id = {c["id"]: c for c in old_cells}
        pairs = [(by_id[c["id"]], c) for c in new_cells if c["id"] in by_id]
        for c in new_cells:
            if c["id"] not in by_id:
                print(f"cell {c['id']}: new, not compared")
    elif len(old_cells) == len(new_cells):
        pairs = list(zip(old_cells, new_cells))
    else:
        return [f"{len(old_cells)} code cells at the revision, "
                f"{len(new_cells)} in the working copy, and no cell ids"]
    for a, b in pairs:
        n = b.get("id", new_cells.index(b))
        if a["source"] != b["source"]:
            print(f"cell {n}: source changed, compared anyway")
        tags = set(b.get("metadata", {}).get("tags", []))
        if tags & IGNORE_TAGS:
            continue
        band = cell_band(b, f"cell {n}")
        left, right = texts(a, clean), texts(b, clean)
        if [k for k, _ in left] != [k for k, _ in right]:
            problems.append(f"cell {n}: outputs {[k for k, _ in left]} "
                            f"against {[k for k, _ in right]}")
            continue
        for (key, x), (_, y) in zip(left, right):
            why = (None if x == y else "differs (no band)") if band is None \
                else band.mismatch(x, y)
            if why:
                problems.append(f"cell {n} ({key}): {why}")
    return problems


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve().relative_to(ROOT)
    rev = argv[1] if len(argv) == 2 else "HEAD"
    stored = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    problems = compare(json.loads(stored),
                       json.loads((ROOT / path).read_text()))
    for line in problems:
        print(line)
    print(f"{path}: {len(problems)} difference(s) beyond the bands "
          f"against {rev}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
