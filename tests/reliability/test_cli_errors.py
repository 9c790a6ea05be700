"""How the CLI reports errors: expected ones exit 2, bugs exit 1, both in one line."""

from __future__ import annotations

import errno

import pytest

import geodiffloc.cli.main as cli


def _boom(exc):
    def func(args):
        raise exc
    return func


@pytest.fixture
def versions_raises(monkeypatch):
    def install(exc):
        monkeypatch.setattr(cli, "_versions", _boom(exc))
    return install


@pytest.mark.parametrize("exc, code, text", [
    (ValueError("bad thing\nsecond line"), 2, "bad thing second line"),
    (PermissionError(errno.EACCES, "Permission denied", "/x"), 2, "Permission denied: /x"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/a.tif"), 2, "no space left"),
    (MemoryError(), 2, "out of memory"),
    (RuntimeError("internal"), 1, "unexpected RuntimeError: internal"),
])
def test_errors_are_one_line(versions_raises, capsys, monkeypatch, exc, code, text):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    versions_raises(exc)
    assert cli.main(["versions"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geodiffloc versions: error: ")
    assert text in err[0]


def test_debug_env_shows_the_traceback(versions_raises, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    versions_raises(RuntimeError("internal"))
    with pytest.raises(RuntimeError, match="internal"):
        cli.main(["versions"])


def test_interrupt_reports_the_step_and_exit_status(versions_raises, capsys):
    from geodiffloc._interrupt import Interrupted

    versions_raises(Interrupted(15, "writing the outputs"))
    assert cli.main(["versions"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["geodiffloc versions: interrupted by SIGTERM while writing the outputs; "
                   "temporary files were removed and no partial outputs were left."]
