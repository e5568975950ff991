"""A listing command loads no heavy or unrelated modules (issue 18: a command on a
session within 0.3 s; docs/benchmarks.md, third round).

Start-up is most of such a command, so the read-only listing path must not
import the OpenBao client, ``cryptography``, the server, the web console or
PostgreSQL, nor what only ``unlock`` needs to start an agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PASSPHRASES, World, add_children

_PROBE = """
import json, sys
from childvault.cli.main import cli
try:
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    sys.stdout.flush()
    sys.stderr.write(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN = (
    "hvac",
    "requests",
    "cryptography",
    "psycopg",
    "starlette",
    "jinja2",
    "childvault.server",
    "childvault.console",
    # The settings and policy names are plain data; the client modules are not.
    "childvault.keys._openbao._http",
    "childvault.keys._openbao._provider",
    "childvault.keys._openbao._setup",
    "childvault.vault._postgres",
    "childvault.vault._remote",
    "subprocess",
)


def _loaded(world: World, *args: str) -> list[str]:
    env = {
        **os.environ,
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": "C.UTF-8",
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, check=True
    )
    modules: list[str] = json.loads(done.stderr)
    return modules


def test_list_and_requests_load_nothing_heavy(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 2)
    for command in (("list",), ("requests", "--all")):
        loaded = _loaded(world, *command)
        heavy = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
        assert heavy == [], (command, heavy)
        # The command did run and load the library (the probe is not vacuous).
        assert "childvault.vault._facade" in loaded
