"""Sphinx tweaks for the seqbook site.

Jupyter Book 1 registers sphinx-thebe's inline configuration script twice, so
every page declared ``const THEBE_JS_URL`` twice and the browser logged a
SyntaxError. This extension removes repeated script entries from each page.
"""

from __future__ import annotations


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        # Inline scripts have filename None or "" depending on who added them.
        filename = getattr(script, "filename", script) or ""
        key = (str(filename), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    # In place: handlers that run later add per-page scripts to this same list.
    scripts[:] = unique


def setup(app):
    # Early: Sphinx stops calling handlers of this event at the first one that
    # returns a template name (the theme's do), so a late handler never runs.
    app.connect("html-page-context", _drop_repeated_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
