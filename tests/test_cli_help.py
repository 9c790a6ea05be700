"""Every command's ``--help`` ends with two or three examples that parse."""

from __future__ import annotations

import shlex

import pytest


@pytest.mark.parametrize("command", ["locate", "zonal", "regions", "train", "evaluate",
                                     "versions"])
def test_help_ends_with_runnable_examples(command, capsys):
    from geodiffloc.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line == "examples:")
    examples: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("      "):  # continuation of a long example
            examples[-1] = examples[-1].removesuffix("\\").rstrip() + " " + line.strip()
        else:
            examples.append(line.strip())
    assert 2 <= len(examples) <= 3
    assert all(ex.split()[:2] == ["geodiffloc", command] for ex in examples)
    # each example parses: the options it uses exist (nothing is run)
    from geodiffloc.cli.main import build_parser

    parser = build_parser()
    for ex in examples:
        command_line = ex.split(" > ")[0]  # a shell redirection is not an argument
        args = parser.parse_args(shlex.split(command_line.removeprefix("geodiffloc ")))
        assert args.command == command
