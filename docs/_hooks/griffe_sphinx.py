"""Griffe extension: render the Sphinx-style markup of the docstrings in MkDocs.

The docstrings are NumPy style but use a few Sphinx roles and directives, which
mkdocstrings would show literally: ``:func:`~geodiffloc.geo.to_geotiff``` becomes
inline code (the last component when the name starts with ``~``), ``:math:`x``` inline
maths and a ``.. math::`` block display maths (MathJax via pymdownx.arithmatex).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|term|ref):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)\n"
    r"(?P<body>(?:(?P=indent)[ \t]+\S.*\n?|[ \t]*\n)*)",
    re.MULTILINE,
)


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if "<" in target and target.endswith(">"):  # :func:`title <target>`
        target = target[: target.index("<")].strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_block(match: re.Match[str]) -> str:
    indent = match.group("indent")
    body = "\n".join(part for part in (match.group("inline").strip(),
                                        textwrap.dedent(match.group("body")).strip("\n")) if part)
    return f"{indent}$$\n{textwrap.indent(body, indent)}\n{indent}$$\n\n"


def convert(text: str) -> str:
    """Sphinx roles and math directives -> Markdown/MathJax."""
    text = _MATH_BLOCK.sub(_math_block, text)
    text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    return _ROLE.sub(_role, text)


class SphinxMarkup(griffe.Extension):
    """Rewrite each docstring once, when griffe creates the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
