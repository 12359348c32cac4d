"""Every command's --help reads as usage lines do: PATHS... (not {paths}...), no <bool> next to a
flag, and the item type of a repeatable setting (--shard-ids takes integers)."""

import re

import pytest
import typer
from typer.testing import CliRunner

from soundhive.cli import app

runner = CliRunner()


def command_paths(command, path=()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", {})
    return [path] + [p for name, sub in subcommands.items()
                     for p in command_paths(sub, (*path, name))]


@pytest.mark.parametrize("path", command_paths(typer.main.get_command(app)), ids=" ".join)
def test_help_reads_as_usage_lines(path: tuple[str, ...]):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, color=False)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert not re.search(r"[{}]|\[[a-z_]+\]", usage), usage


def test_arguments_and_list_items_are_named():
    usage = runner.invoke(app, ["classify", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: soundhive classify [OPTIONS] PATHS..." in usage
    serve = runner.invoke(app, ["serve", "features", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--shard-ids\s+<list\[int\]>", serve)
