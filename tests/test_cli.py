"""The ``geodiffloc`` entry points: --help, --version, versions, python -m."""

import subprocess
import sys

import pytest

import geodiffloc
from geodiffloc.cli.main import COMMAND_MODULES, build_parser, main


def test_version_flag_prints_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"geodiffloc {geodiffloc.__version__}"


def test_help_lists_every_registered_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert "versions" in commands
    for name in commands:
        assert name in out
    assert len(commands) >= len(COMMAND_MODULES)


def test_no_command_prints_help_and_succeeds(capsys):
    assert main([]) == 0
    assert "usage: geodiffloc" in capsys.readouterr().out


def test_versions_command_reports_core_packages(capsys):
    assert main(["versions"]) == 0
    out = capsys.readouterr().out
    for name in ("geodiffloc", "python", "torch", "gdal", "rioxarray"):
        assert name in out


def test_show_versions_returns_dict_matching_installed_version():
    info = geodiffloc.show_versions(file=open("/dev/null", "w"))
    assert info["geodiffloc"] == geodiffloc.__version__
    assert info["python"] == sys.version.split()[0]


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "geodiffloc", "--version"], capture_output=True, text=True,
        check=True,
    )
    assert out.stdout.strip() == f"geodiffloc {geodiffloc.__version__}"


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_lazy_attributes_resolve_and_unknown_names_fail():
    assert geodiffloc.SHDD.__name__ == "SHDD"
    with pytest.raises(AttributeError, match="no attribute"):
        geodiffloc.does_not_exist  # noqa: B018
