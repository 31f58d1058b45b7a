"""The documentation site: its generated pages cover the registry, the catalogue, the findings and every public module;
their links resolve; the RST of the docstrings is rewritten for Markdown; and (where mkdocs is installed) the site
builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from sdetoolkit import list_problems
from sdetoolkit.findings import FINDINGS
from sdetoolkit.solvers import list_solvers

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return _load("gen_pages").pages()


def _anchors(text: str) -> set[str]:
    """Ids a page defines: attr_list ``{ #id }``, raw ``<a id="...">`` and the toc's slugs of headings."""
    ids = set(re.findall(r"\{ #([\w.-]+) \}", text)) | set(re.findall(r'<a id="([\w.-]+)">', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE):
        ids.add(re.sub(r"[^\w\s-]", "", heading.lower()).strip().replace(" ", "-"))
    return ids


def test_every_registered_solver_has_one_entry_and_an_index_row(pages):
    family_pages = {path: text for path, text in pages.items()
                    if path.startswith("catalogue/solvers/") and path.rsplit("/", 1)[1] not in ("index.md",
                                                                                                "SUMMARY.md")}
    index = pages["catalogue/solvers/index.md"]
    for name in list_solvers():
        holders = [path for path, text in family_pages.items() if f"{{ #{name} }}" in text]
        assert len(holders) == 1, f"{name}: entries on {holders}"
        page = holders[0].rsplit("/", 1)[1]
        assert f"[`{name}`]({page}#{name})" in index, f"{name}: no row in the solver index"
    rows = [line for line in index.splitlines() if line.startswith("| [`")]
    assert len(rows) == len(list_solvers())


def test_solver_entries_carry_formula_claim_source_parameters_and_measurements(pages):
    text = pages["catalogue/solvers/dpm-solver-pp.md"]
    entry = text.split("{ #dpmpp-3m }")[1].split("### ")[0]
    assert r"\varphi" in text                                  # the module's formulas, as math
    assert "**Claimed order:** 3 (global)" in entry
    assert "**Source:** Lu et al. 2022b" in entry
    assert "`third_order_term='official'`" in entry
    assert "| global (ODE) | gauss-1d | 3 |" in entry          # the report's row
    assert "Finding: global order 2, claimed 3" in entry


def test_every_problem_has_an_entry(pages):
    text = pages["catalogue/problems.md"]
    for name in list_problems():
        assert f"## `{name}` {{ #{name} }}" in text
        assert f'??? example "problems/{name}.toml"' in text


def test_every_finding_is_listed_with_its_anchor(pages):
    text = pages["catalogue/findings.md"]
    rows = [line for line in text.splitlines() if line.startswith("| [`")]
    assert len(rows) == len(FINDINGS)
    anchors = _anchors(text)
    for finding in FINDINGS:
        assert f"{finding.solver}-{finding.problem}-{finding.kind}" in anchors
    assert len({(f.solver, f.problem, f.kind) for f in FINDINGS}) == len(FINDINGS), "finding anchors must be unique"


def test_every_public_module_has_an_api_page(pages):
    modules = set()
    for path in (ROOT / "sdetoolkit").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(part.startswith("_") for part in parts):
            modules.add(".".join(parts))
    assert "sdetoolkit.solvers.dpm_solver_pp" in modules and "sdetoolkit.exact" in modules
    for module in modules:
        assert pages.get(f"api/{module}.md", "").endswith(f"::: {module}\n"), module
        assert f"({module}.md)" in pages["api/SUMMARY.md"], module


def test_links_of_generated_pages_resolve(pages):
    """Relative links between pages (generated or in docs/) point at existing pages and anchors."""
    written = {path: (DOCS / path).read_text(encoding="utf-8") for path in
               (str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))}
    every = {**written, **pages}
    checked = 0
    for path, text in pages.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*\.md)?(?:#([\w.-]+))?\)", text):
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            assert resolved in every, f"{path}: link to missing page {target}"
            if anchor:
                assert anchor in _anchors(every[resolved]), f"{path}: link to missing anchor {resolved}#{anchor}"
            checked += 1
    assert checked > 300


def test_generated_pages_hold_no_rst(pages):
    for path, text in pages.items():
        for pattern in (":math:`", ".. math::", ":func:`", ":class:`", ":mod:`", "``"):
            assert pattern not in text.replace("```", ""), f"{path}: {pattern!r} left"


def test_rst_to_markdown_rewrites_the_docstring_constructs():
    convert = _load("rst_markdown").rst_to_markdown
    assert convert(r"with :math:`h = \lambda_t -" "\n" r"\lambda_s` and ``code``") == (
        "with \\(h = \\lambda_t -\n\\lambda_s\\) and `code`")
    assert convert(":func:`~sdetoolkit.noise.kernel` and :mod:`.base`") == "`kernel` and `.base`"
    directive = convert("so\n\n.. math:: a = b\n          + c,\n   \\qquad d\n\nthen")
    assert directive.startswith("so\n") and directive.endswith("\nthen")
    assert "\n\n$$\na = b\n          + c,\n   \\qquad d\n$$\n\n" in directive   # a block of its own
    nested = convert("* item:\n\n  .. math:: x = y\n\n  more of the item\n\nafter")
    assert "\n    $$\n    x = y\n    $$\n" in nested           # inside the list item (four spaces in Markdown)
    assert "\n    more of the item\n" in nested and nested.endswith("\nafter")
    literal = convert("A file::\n\n    [study]\n    name = 1\n\nAfter.")
    assert "A file:\n" in literal and "```\n[study]\nname = 1\n```" in literal and literal.endswith("After.")
    fenced = "```python\nx = ``y``\n```"
    assert convert(fenced) == fenced


def test_site_builds_strict(tmp_path):
    """The CI step ``mkdocs build --strict``: a warning (broken link or anchor, a page outside the nav, a docstring
    griffe cannot parse) fails it."""
    for plugin in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_gen_files", "mkdocs_literate_nav"):
        pytest.importorskip(plugin)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    exact = (tmp_path / "site" / "api" / "sdetoolkit.exact" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in exact and ":math:" not in exact
    assert (tmp_path / "site" / "catalogue" / "solvers" / "dpm-solver-pp" / "index.html").exists()
