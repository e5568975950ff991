"""The root group imports a command's module only when the command is looked up
(issues 16, 18: a command on a session pays for its own module only), while
``cli.commands`` keeps every name in registration order and ``--help`` lists
every command (childvault/cli/main.py, ``_LazyCommands``)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

from childvault.cli.main import cli

_PROBE = """
import json, sys
from childvault.cli.main import cli
cli.main(sys.argv[1:], standalone_mode=False)
sys.stdout.flush()
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if "._cmd_" in m)))
"""


def _command_modules(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    modules: list[str] = json.loads(done.stderr)
    return modules


def test_a_command_imports_only_its_own_module() -> None:
    assert _command_modules("list", "--help") == ["childvault.cli._cmd_records"]
    # `audit` takes `audit prove` from the reports module when it loads.
    assert _command_modules("audit", "--help") == [
        "childvault.cli._cmd_audit",
        "childvault.cli._cmd_reports",
    ]


def test_every_registered_name_loads_the_command_of_that_name() -> None:
    names = list(cli.commands)
    assert len(names) == len(set(names)) and names[:3] == ["init", "user", "keys"]
    for name in names:
        command = cli.commands[name]
        assert isinstance(command, click.Command) and command.name == name
        # Leaf commands take the late global options (--json after the name).
        if not isinstance(command, click.Group):
            assert any("--json" in p.opts for p in command.params), name
    assert "no-such-command" not in cli.commands
    assert cli.commands.get("no-such-command") is None


def test_help_lists_every_registered_command() -> None:
    result = CliRunner().invoke(cli, ["--help"], env={"LANG": "C.UTF-8"})
    assert result.exit_code == 0
    listed = result.output.split("Commands:", 1)[1]
    for name in cli.commands:
        if not cli.commands[name].hidden:
            assert f"\n  {name} " in listed, name
