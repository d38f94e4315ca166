"""Static checks of the chapter notebooks (nbval runs them; these read them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
IDS = [p.relative_to(ROOT / "book").as_posix() for p in NOTEBOOKS]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks found under book/"


def test_install_cells_match_config():
    """Every notebook opens with the install cell for the repository named in _config.yml."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "install_cell.py"), "--check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, f"stale install cells (run scripts/install_cell.py):\n{result.stdout}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_are_complete(path):
    """Executed top to bottom in one run, outputs stored, and no debugging leftovers."""
    nb = load(path)
    cells = code_cells(nb)
    counts = [c["execution_count"] for c in cells[1:]]  # the install cell is removed from the site
    assert all(n is not None for n in counts), f"{path.name}: code cells without stored outputs"
    assert counts == sorted(counts), f"{path.name}: cells were not executed top to bottom in one run"
    for cell in cells:
        src = "".join(cell["source"])
        assert "sys.path" not in src, f"{path.name}: sys.path edit; import the installed seqbook_lib"
        assert "# NBVAL_" not in src, f"{path.name}: use nbval cell tags, not # NBVAL_ comments"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: a stored error output"


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_widget_state_matches_outputs(path):
    """Stored widget state belongs to widgets that some output shows.

    Re-executing a notebook in place keeps the old widget state when the new
    run draws no widget (e.g. a training loop whose bar was turned off); the
    site then loads widget JavaScript for nothing and shows no bar, which
    the browser check in test_site.py reports as a page that did not render.
    """
    nb = load(path)
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    views = [out["data"][WIDGET_VIEW]["model_id"]
             for cell in code_cells(nb) for out in cell.get("outputs", [])
             if WIDGET_VIEW in out.get("data", {})]
    assert all(v in state for v in views), f"{path.name}: a widget output without its stored state"
    assert bool(state) == bool(views), (
        f"{path.name}: {len(state)} stored widget models but {len(views)} widget outputs; "
        "drop the stale metadata['widgets'] or re-execute the notebook")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_kernel_and_title(path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    first_md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "".join(first_md["source"]).lstrip().startswith("# "), f"{path.name}: no title"


def test_kernels_redraw_progress_bars_sparingly():
    """Kernels started from the test session redraw tqdm bars at most every 2 s.

    nbval collects a cell's messages only after the cell ends and ZeroMQ drops
    those beyond about a thousand (see the root conftest.py); a long training
    cell that redraws its bar ten times a second would lose its last messages
    and fail. The kernel must see the setting, not only this process.
    """
    from jupyter_client.manager import start_new_kernel

    printed = []
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        code = "from tqdm.auto import tqdm\nbar = tqdm(total=1)\nbar.close()\nprint(bar.mininterval)"
        reply = client.execute_interactive(code, timeout=60, output_hook=lambda msg: printed.append(msg))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = "".join(m["content"].get("text", "") for m in printed if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    assert float(text) >= 2, f"tqdm in a test kernel redraws every {text.strip()} s; expected at least 2 s"
