"""docs/check_site.py flags empty pages and broken images, and passes good pages."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "check_site", Path(__file__).resolve().parents[1] / "docs" / "check_site.py")
check_site = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_site)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")
TEXT = "A page about zonal probabilities. " * 10


def _page(site: Path, rel: str, article: str) -> Path:
    path = site / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body><nav>{'menu ' * 100}</nav><article>{article}</article>"
                    "</body></html>", encoding="utf-8")
    return path


def test_good_site_passes(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "fig.png").write_bytes(PNG)
    _page(tmp_path, "index.html", f"<p>{TEXT}</p><img src='img/fig.png'>")
    _page(tmp_path, "tutorials/t/index.html",
          f"<p>{TEXT}</p><img src='../../img/fig.png'>"
          f"<img src='data:image/png;base64,{base64.b64encode(PNG).decode()}'>"
          "<img src='https://example.org/remote.png'>")
    assert check_site.main([str(tmp_path)]) == 0
    assert "2 pages, 0 with problems" in capsys.readouterr().out


@pytest.mark.parametrize(("article", "problem"), [
    ("<p>short</p>", "no content"),
    (f"<p>{TEXT}</p><img src='img/missing.png'>", "missing image"),
    (f"<p>{TEXT}</p><img src='../img/empty.png'>", "empty image"),
    (f"<p>{TEXT}</p><img src='data:image/png;base64,'>", "decodes to nothing"),
    (f"<p>{TEXT}</p><img alt='x'>", "without src"),
])
def test_problems_are_reported(tmp_path, capsys, article, problem):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    _page(tmp_path, "page/index.html", article)
    assert check_site.main([str(tmp_path)]) == 1
    assert problem in capsys.readouterr().err


def test_navigation_text_does_not_count_as_content(tmp_path):
    _page(tmp_path, "index.html", "")  # the nav holds 500 characters, the article none
    assert check_site.main([str(tmp_path)]) == 1


def test_tutorial_pages_must_show_outputs_when_asked(tmp_path, capsys):
    output = "<div class='jp-OutputArea-output jp-OutputArea-executeResult'><pre>42</pre></div>"
    _page(tmp_path, "index.html", f"<p>{TEXT}</p>")  # outside the folder: not asked
    _page(tmp_path, "tutorials/ran/index.html", f"<p>{TEXT}</p>{output}")
    _page(tmp_path, "tutorials/not_run/index.html", f"<p>{TEXT}</p>")
    assert check_site.main([str(tmp_path)]) == 0
    capsys.readouterr()
    assert check_site.main([str(tmp_path), "--outputs-under", "tutorials"]) == 1
    err = capsys.readouterr().err
    assert "tutorials/not_run/index.html: no cell output" in err
    assert "ran/index.html" not in err and "index.html: no cell" not in err.replace(
        "tutorials/not_run/index.html", "")


def test_tutorial_pages_that_draw_must_show_their_figures(tmp_path, capsys):
    output = "<div class='jp-OutputArea-output'><pre>done</pre></div>"
    code = "<pre>fig, ax = plt.subplots()\nplt.show()</pre>"
    png = f"<img src='data:image/png;base64,{base64.b64encode(PNG).decode()}'>"
    _page(tmp_path, "tutorials/drawn/index.html", f"<p>{TEXT}</p>{code}{output}{png}")
    _page(tmp_path, "tutorials/agg/index.html", f"<p>{TEXT}</p>{code}{output}")
    assert check_site.main([str(tmp_path), "--outputs-under", "tutorials"]) == 1
    err = capsys.readouterr().err
    assert "tutorials/agg/index.html: draws figures" in err and "drawn" not in err
