"""griffe extension for the API reference: every docstring is rewritten from RST to the site's Markdown
(:func:`rst_markdown.rst_to_markdown`) before mkdocstrings parses and renders it. mkdocs.yml loads it by path."""

from __future__ import annotations

import pathlib
import sys

import griffe

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from rst_markdown import rst_to_markdown


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = rst_to_markdown(obj.docstring.value)


class RstToMarkdown(griffe.Extension):
    """Rewrite each object's docstring once it is loaded: the members (on_object), and the top-level package, which
    griffe reports through on_package only."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        _rewrite(obj)

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        _rewrite(pkg)
