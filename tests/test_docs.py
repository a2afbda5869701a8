"""The documentation: builds offline with ``mkdocs build --strict``; its code runs.

Python blocks preceded by a ``<!-- test -->`` line are executed, page by page in one
namespace (like a doctest), in a temporary folder; every other Python block is compiled.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = "<!-- test -->"
_FENCE = re.compile(r"^```python\s*$")


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """``(first line number, code, runnable)`` of every fenced Python block of a page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i].strip()):
            runnable = i > 0 and lines[i - 1].strip() == MARKER
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            blocks.append((start + 1, "\n".join(lines[start:j]), runnable))
            i = j
        i += 1
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
RUNNABLE = [p for p in PAGES if any(r for _, _, r in python_blocks(p))]


def test_docs_pages_exist_and_have_runnable_code():
    names = {p.name for p in PAGES}
    assert {"index.md", "quickstart.md", "concepts.md", "migration.md", "callbacks.md",
            "postgresql.md", "backend.md", "cli.md", "monitoring.md", "job-creators.md",
            "notebook-004.md"} <= names
    assert {"quickstart.md", "concepts.md", "callbacks.md", "backend.md", "job-creators.md",
            "notebook-004.md", "extraction.md"} <= {p.name for p in RUNNABLE}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles(page):
    for line, code, _ in python_blocks(page):
        compile(code, f"{page.name}:{line}", "exec")


def _page_param(page: Path):
    heavy = any("LocalBackend(" in code for _, code, run in python_blocks(page) if run)
    return pytest.param(page, id=page.name, marks=[pytest.mark.slow] if heavy else [])


@pytest.mark.parametrize("page", [_page_param(p) for p in RUNNABLE])
def test_runnable_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, code, runnable in python_blocks(page):
        if runnable:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102


def test_cli_reference_covers_every_command():
    from eoextract.cli import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (.+)$", text, flags=re.M))
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    for group in app.registered_groups:
        names |= {f"{group.name} {c.name or c.callback.__name__}"
                  for c in group.typer_instance.registered_commands}
    assert names and names <= headings, names - headings


def test_cli_reference_synopses_name_every_option():
    """Each command's synopsis line in cli.md names each of its options (one form of a flag pair)."""
    import typer

    from eoextract.cli import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    ctx = root.make_context("eoextract", [], resilient_parsing=True)

    def commands(group, prefix=""):
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            full = f"{prefix} {name}".strip()
            yield from commands(sub, full) if getattr(sub, "commands", None) else [(full, sub)]

    missing = {}
    for name, cmd in commands(root):
        synopsis = re.search(rf"^## {re.escape(name)}\n\n`([^`]*)`", text, flags=re.M)
        assert synopsis, name
        words = set(re.findall(r"--?[a-z][a-z-]*", synopsis.group(1)))
        absent = [p.opts[0] for p in cmd.params if p.param_type_name == "option"
                  and p.opts[0] != "--help" and not words & {*p.opts, *p.secondary_opts}]
        if absent:
            missing[name] = absent
    assert missing == {}


@pytest.mark.slow
def test_mkdocs_build_strict_offline(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "stac validate" in page and "EOEXTRACT_&lt;NAME&gt;_USER" in page
