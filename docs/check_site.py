"""Check a built documentation site: every page has content, every image is there.

Run after ``mkdocs build -d SITE``: ``python docs/check_site.py SITE``. It parses each
HTML page (no browser needed) and fails, listing every problem, when

* a page's main content (the ``<article>`` of the Material theme, else ``<body>``) holds
  less than ``--min-chars`` characters of text and no image;
* an ``<img>`` has no ``src``, points at a file missing from the site or empty, or is a
  ``data:`` URI that does not decode to a non-empty image;
* with ``--outputs-under tutorials``, a notebook page under that folder shows no cell
  output (no ``jp-OutputArea-output`` element): the notebook was rendered unexecuted;
  or it draws figures (``plt.show()`` in its code) and shows no image: it ran with a
  non-inline matplotlib backend (``MPLBACKEND=Agg``).

Remote images (``http(s)://``) are not fetched; they are counted and listed with ``-v``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SKIP_TEXT = {"script", "style", "nav", "header", "footer", "noscript"}


class _Page(HTMLParser):
    """Collects the text of the main content and the ``src`` of every image."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str | None] = []
        self.article_text: list[str] = []
        self.body_text: list[str] = []
        self.has_article = False
        self.outputs = 0
        self._article_depth = 0
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src"))
        if "jp-OutputArea-output" in (dict(attrs).get("class") or "").split():
            self.outputs += 1
        if tag == "article":
            self.has_article = True
            self._article_depth += 1
        if tag in _SKIP_TEXT:
            self._skip_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "article" and self._article_depth:
            self._article_depth -= 1
        if tag in _SKIP_TEXT and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        text = data.strip()
        if text:
            self.body_text.append(text)
            if self._article_depth:
                self.article_text.append(text)


def _check_data_uri(src: str) -> str | None:
    header, _, payload = src.partition(",")
    if not header.startswith("data:image/"):
        return f"data URI is not an image ({header[:40]})"
    if ";base64" not in header:
        return None if payload else "empty data URI"
    try:
        raw = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return "data URI is not valid base64"
    return None if raw else "data URI decodes to nothing"


def _check_local(src: str, page: Path, site: Path) -> str | None:
    path = unquote(urlsplit(src).path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target.resolve()
    if not target.is_file():
        return f"missing image {src}"
    if target.stat().st_size == 0:
        return f"empty image {src}"
    return None


def check_page(page: Path, site: Path, min_chars: int,
               need_outputs: bool = False) -> tuple[list[str], int]:
    """Problems of one page, and its number of remote images."""
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    problems, remote = [], 0
    for src in parser.images:
        if not src:
            problems.append("<img> without src")
        elif src.startswith("data:"):
            err = _check_data_uri(src)
            if err:
                problems.append(err)
        elif urlsplit(src).scheme in ("http", "https") or src.startswith("//"):
            remote += 1
        else:
            err = _check_local(src, page, site)
            if err:
                problems.append(err)
    text = " ".join(parser.article_text if parser.has_article else parser.body_text)
    if len(text) < min_chars and not parser.images:
        problems.append(f"no content ({len(text)} characters of text, no image)")
    if need_outputs and not parser.outputs:
        problems.append("no cell output: the notebook was rendered without being executed")
    elif need_outputs and "plt.show()" in text and not parser.images:
        problems.append("draws figures (plt.show()) but shows no image: the notebook ran "
                        "with a non-inline matplotlib backend (is MPLBACKEND=Agg set?)")
    return problems, remote


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="folder of the built site (mkdocs build -d)")
    ap.add_argument("--min-chars", type=int, default=200,
                    help="least text a page's main content must have (default 200)")
    ap.add_argument("--outputs-under", metavar="FOLDER", action="append", default=[],
                    help="pages under this site folder must show notebook cell outputs "
                         "(repeatable), e.g. tutorials")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every page checked")
    args = ap.parse_args(argv)
    site = args.site.resolve()
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    if not pages:
        print(f"check_site: no HTML pages under {site}", file=sys.stderr)
        return 1
    failed = 0
    for page in pages:
        rel = page.relative_to(site)
        need_outputs = any(rel.parts[0] == folder.strip("/") for folder in args.outputs_under)
        problems, remote = check_page(page, site, args.min_chars, need_outputs)
        if args.verbose:
            print(f"{rel}: {len(problems)} problem(s), {remote} remote image(s)")
        for p in problems:
            print(f"{rel}: {p}", file=sys.stderr)
        failed += bool(problems)
    print(f"check_site: {len(pages)} pages, {failed} with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
