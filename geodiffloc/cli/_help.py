"""Shared ``--help`` layout: every command's help ends with a few runnable examples."""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["HelpFormatter", "examples", "paragraph"]

#: keeps the hand-made line breaks of descriptions and example epilogs
HelpFormatter = argparse.RawDescriptionHelpFormatter


def examples(*commands: str) -> str:
    """An ``examples:`` epilog, one command per line (continuation lines keep their indent).

    Examples
    --------
    >>> print(examples("geodiffloc locate -o out/"))
    examples:
      geodiffloc locate -o out/
    """
    return "examples:\n" + "\n".join(f"  {c}" for c in commands)


def paragraph(text: str) -> str:
    """A description wrapped at 88 columns (raw formatting does not wrap it)."""
    return textwrap.fill(" ".join(text.split()), 88)
