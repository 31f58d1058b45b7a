"""The reStructuredText of sdetoolkit's docstrings, written as the Markdown of the documentation site.

sdetoolkit's docstrings use a small part of RST: ``:math:`...``` roles and ``.. math::`` directives, double-backquote
literals, cross-reference roles (``:func:``, ``:class:``, ``:mod:``, ...), and ``::`` literal blocks. Markdown with
pymdownx.arithmatex (the site's setup, see mkdocs.yml) reads none of these, so :func:`rst_to_markdown` rewrites them:

* ``:math:`x``` becomes ``\\(x\\)`` and a ``.. math::`` directive a ``$$ ... $$`` block (arithmatex, typeset by
  MathJax); an inline role may span lines, as in the docstrings;
* ````x```` and every cross-reference role become code spans (``:func:`~a.b.c``` shows ``c``, as Sphinx does);
* a paragraph ending in ``::`` keeps one colon and its indented block becomes a fenced code block.

:mod:`griffe_rst` (beside this file) applies it to every docstring before mkdocstrings renders the API reference;
``docs/gen_pages.py`` applies it to the solver modules' docstrings in the solver catalogue.
"""

from __future__ import annotations

import re
import textwrap

MATH_ROLE = re.compile(r":math:`(.+?)`", re.DOTALL)
XREF_ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")
LITERAL = re.compile(r"(?<!`)``([^`]+?)``(?!`)")
MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
FENCE = re.compile(r"^\s*```")
LIST_ITEM = re.compile(r"^(?:[*+-]|\d+\.) ")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, indent: int) -> int:
    """Index just past the block of lines indented more than ``indent`` (blank lines inside it included)."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _nested(indent: int) -> str:
    return "" if indent == 0 else "    "


def _list_bodies(lines: list[str]) -> list[str]:
    """Indent the bodies of top-level list items by four spaces, where Markdown nests them (RST uses two or three)."""
    out, in_item = [], False
    for line in lines:
        if line.strip() and _indent(line) == 0:
            in_item = bool(LIST_ITEM.match(line))
        elif in_item and 0 < _indent(line) < 4:
            line = "    " + line.lstrip(" ")
        out.append(line)
    return out


def _blocks(text: str) -> list[tuple[str, str]]:
    """Split into ('text', ...) and ('verbatim', ...) parts; math directives and literal blocks become Markdown."""
    lines = _list_bodies(text.split("\n"))
    parts: list[tuple[str, str]] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = MATH_DIRECTIVE.match(line)
        if directive:
            indent = len(directive.group(1))
            end = _block(lines, i + 1, indent)
            body = ([directive.group(2)] if directive.group(2).strip() else []) + lines[i + 1:end]
            body = [row for row in textwrap.dedent("\n".join(body)).split("\n") if row.strip()]
            pad = _nested(indent)
            parts += [("text", "\n".join(prose)), ("verbatim", "\n".join(["", pad + "$$", *(pad + row for row in body),
                                                                          pad + "$$", ""]))]
            prose, i = [], end
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            indent = _indent(line)
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            if start < len(lines) and _indent(lines[start]) > indent:
                end = _block(lines, start, indent)
                head = line.rstrip()[:-1]
                if head.strip() != ":":
                    prose.append(head)
                pad = _nested(indent)
                code = textwrap.dedent("\n".join(lines[start:end])).split("\n")
                parts += [("text", "\n".join(prose)),
                          ("verbatim", "\n".join(["", pad + "```", *(pad + row for row in code), pad + "```", ""]))]
                prose, i = [], end
                continue
        if FENCE.match(line):  # already Markdown: keep fenced blocks as they are
            end = i + 1
            while end < len(lines) and not FENCE.match(lines[end]):
                end += 1
            parts += [("text", "\n".join(prose)), ("verbatim", "\n".join(lines[i:end + 1]))]
            prose, i = [], end + 1
            continue
        prose.append(line)
        i += 1
    parts.append(("text", "\n".join(prose)))
    return parts


def _inline(text: str) -> str:
    text = MATH_ROLE.sub(lambda m: r"\(" + m.group(1) + r"\)", text)
    text = XREF_ROLE.sub(lambda m: "`" + (m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)) + "`", text)
    return LITERAL.sub(lambda m: "`" + m.group(1) + "`", text)


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its RST constructs written in the site's Markdown (see the module docstring)."""
    return "\n".join(_inline(body) if kind == "text" else body for kind, body in _blocks(text) if body)

