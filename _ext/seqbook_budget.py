"""Time budgets on the site: each chapter's budget and its measured time.

Two sources, neither typed into a page:

- the budget, in minutes on 2 CPU cores, in each notebook's metadata as
  ``{"seqbook": {"budget_minutes": 1.5}}``. myst-nb passes notebook-level
  metadata on as front matter, and Sphinx keeps front-matter fields in
  ``env.metadata[docname]`` as strings (a dict as JSON);
- the measured times in ``book/_data/chapter_times.json``, written by the
  test run (``tests/nbtimes.py``).

Every page with a budget gets a "Time budget" admonition under its title.
The directive ``seqbook-times`` (used on the running page) becomes a table
of all chapters, in reading order: title with link, budget, measured time
and load, with the machine and the totals.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

TIMES_FILE = Path("book", "_data", "chapter_times.json")  # under srcdir
BOOK_BUDGET_MINUTES = 30


# --- reading the sources -----------------------------------------------------


def read_times(srcdir) -> dict:
    """``{notebook path from the root: entry}`` of the times file."""
    path = Path(srcdir) / TIMES_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["notebooks"]


def budget_minutes(env, docname: str) -> float | None:
    """The page's budget from its notebook metadata; None when it has none.

    A malformed entry is logged as a warning (an error under ``-W``).
    """
    raw = env.metadata.get(docname, {}).get("seqbook")
    if raw is None:
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        value = data["budget_minutes"]
        if isinstance(value, bool) or not value > 0:
            raise ValueError
        return float(value)
    except (ValueError, TypeError, KeyError):
        logger.warning(
            "notebook metadata seqbook.budget_minutes must be a positive "
            "number of minutes, got %r",
            raw,
            location=docname,
        )
        return None


def _source_key(env, docname: str) -> str:
    """The page's source path from the root, as the times file names it."""
    return Path(env.doc2path(docname, base=False)).as_posix()


def machine_text(entry: dict) -> str:
    """``Intel Xeon Processor, 2 cores, ATen AVX512`` from an entry of the
    times file (older entries name no kernel path)."""
    cpu = entry["cpu"]
    for mark in ("(R)", "(TM)", "(tm)"):
        cpu = cpu.replace(mark, "")
    text = f"{' '.join(cpu.split())}, {entry['cores']} cores"
    if entry.get("kernels"):
        text += f", {entry['kernels']}"
    return text


def seconds_text(seconds: float) -> str:
    """Seconds to one decimal below 10 s, whole seconds above."""
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def minutes_text(minutes: float) -> str:
    return f"{minutes:g} min"


# --- the admonition on each page ---------------------------------------------


def _add_budget_note(app, doctree):
    env = app.env
    budget = budget_minutes(env, env.docname)
    if budget is None:
        return
    env.note_dependency(str(Path(app.srcdir) / TIMES_FILE))
    text = f"{minutes_text(budget)} on 2 CPU cores"
    entry = read_times(app.srcdir).get(_source_key(env, env.docname))
    if entry is not None:
        text += (
            f" · measured {seconds_text(entry['seconds'])} on "
            f"{machine_text(entry)} ({entry['date']}, load average "
            f"{entry['load_average']:.1f})"
        )
    note = nodes.admonition(classes=["seqbook-budget", "tip"])
    note += nodes.title("", "Time budget")
    note += nodes.paragraph("", text)
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not isinstance(section[0], nodes.title):
        logger.warning(
            "a page with a time budget needs a title", location=env.docname
        )
        return
    section.insert(1, note)


# --- the table on the running page -------------------------------------------


class times_table(nodes.General, nodes.Element):
    """Placeholder, replaced by the table once every page has been read."""


class TimesDirective(SphinxDirective):
    """``seqbook-times``: a table of every chapter's budget and time."""

    has_content = False

    def run(self):
        self.env.note_dependency(str(Path(self.env.srcdir) / TIMES_FILE))
        return [times_table()]


def _reading_order(env, root: str) -> list[str]:
    """All documents reachable from ``root`` through toctrees, in order."""
    order, stack = [], [root]
    while stack:
        doc = stack.pop()
        if doc in order:
            continue
        order.append(doc)
        stack.extend(reversed(env.toctree_includes.get(doc, [])))
    return order


def _cell(content) -> nodes.entry:
    if isinstance(content, str):
        content = nodes.Text(content)
    return nodes.entry("", nodes.paragraph("", "", content))


def _table(header: list[str], rows: list[list], footer: list) -> nodes.table:
    table = nodes.table(classes=["seqbook-times"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    head += nodes.row("", *[_cell(text) for text in header])
    body = nodes.tbody()
    for row in [*rows, footer]:
        body += nodes.row("", *[_cell(content) for content in row])
    group += head
    group += body
    return table


def _times_rows(app, fromdocname: str):
    """Table rows, the entries they show and the budget total."""
    env = app.env
    times = read_times(app.srcdir)
    rows, shown, total_budget = [], [], 0.0
    for doc in _reading_order(env, app.config.root_doc):
        if not env.doc2path(doc, base=False).endswith(".ipynb"):
            continue
        budget = budget_minutes(env, doc)
        entry = times.get(_source_key(env, doc))
        if budget is None and entry is None:
            continue
        link = nodes.reference(
            "",
            env.titles[doc].astext(),
            internal=True,
            refuri=app.builder.get_relative_uri(fromdocname, doc),
        )
        rows.append(
            [
                link,
                "—" if budget is None else minutes_text(budget),
                "not yet" if entry is None else seconds_text(entry["seconds"]),
                "" if entry is None else f"{entry['load_average']:.1f}",
            ]
        )
        total_budget += budget or 0.0
        if entry is not None:
            shown.append(entry)
    return rows, shown, total_budget


def _replace_tables(app, doctree, fromdocname):
    for placeholder in list(doctree.findall(times_table)):
        rows, shown, total_budget = _times_rows(app, fromdocname)
        total = f"{sum(entry['seconds'] for entry in shown) / 60:.1f} min"
        if len(shown) < len(rows):
            total += f" ({len(shown)} of {len(rows)} measured)"
        footer = [
            nodes.strong("", f"Total ({len(rows)} chapters)"),
            f"{minutes_text(total_budget)} of {BOOK_BUDGET_MINUTES} min",
            total,
            "",
        ]
        table = _table(
            ["Chapter", "Budget", "Measured", "Load average"], rows, footer
        )
        machines = sorted({machine_text(entry) for entry in shown})
        dates = sorted({entry["date"] for entry in shown})
        torches = sorted({entry["torch"] for entry in shown})
        if shown:
            when = dates[0] if len(dates) == 1 else f"{dates[0]}–{dates[-1]}"
            line = (
                f"Measured on {'; '.join(machines)}, with PyTorch "
                f"{', '.join(torches)}, {when}."
            )
        else:
            line = "No chapter has been measured yet."
        placeholder.replace_self([nodes.paragraph("", line), table])


def setup(app):
    app.add_node(times_table)
    app.add_directive("seqbook-times", TimesDirective)
    # After Sphinx's MetadataCollector (priority 500) has moved the front
    # matter into env.metadata.
    app.connect("doctree-read", _add_budget_note, priority=800)
    app.connect("doctree-resolved", _replace_tables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
