"""Fixtures for the console tests: one vault home and one running console per module.

The home is a copy of the session's template home (five users, see
tests/conftest.py) with a few records and pending requests filed through the
library, so the console is driven against real data. The console runs as a real
``childvault console`` subprocess, registered on the CLI's root group like
every other command.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import Identity
from childvault.vault import NewRecordInput, Vault
from tests.conftest import PASSPHRASES, TODAY, child_values, consent, copy_world

#: The real command line, as an officer starts it (``childvault console``).
LAUNCHER = "from childvault.cli.main import main; main()"
#: A reason written to attack the page and the officer's terminal.
HOSTILE_REASON = "<script>alert('x')</script> \x1b]0;pwned\x07\x1b[2J\r覆盖 & \u202eevil"
#: Generous bound on waiting for the console to print its URL (Argon2 unlock + start).
START_TIMEOUT_S = 180
#: Debian's chromium, driven by Playwright (which cannot download its own browser here).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class ConsoleHome:
    """A test home with requests to decide, and the ids the tests need."""

    home: Path
    ids: dict[str, Identity]
    records: list[str]
    requests: dict[str, str] = field(default_factory=dict)

    def open(self, who: str) -> Vault:
        return Vault.open(self.home, identity=self.ids[who])


def build_console_home(template: tuple[Path, dict[str, Identity]], dest: Path) -> ConsoleHome:
    """Copy the template home and file the requests the console tests decide."""
    src, ids = template
    world = copy_world(src, ids, dest)
    # The system clock, as the console subprocess uses it (the template was built earlier).
    with Vault.open(world.home, identity=ids["worker1"]) as v:
        records = v.add_records(
            [
                NewRecordInput(
                    "child",
                    child_values(i, today=TODAY),
                    consent(("case_management",), today=TODAY),
                )
                for i in range(5)
            ]
        )
    made = ConsoleHome(world.home, ids, records)
    with Vault.open(world.home, identity=ids["worker1"]) as v:
        made.requests["approve"] = v.request_access(
            records[:2], ["name", "guardian_phone"], "case_management", "家访前核对联系方式"
        )
        made.requests["hostile"] = v.request_access(
            [records[3]], ["name"], "case_management", HOSTILE_REASON
        )
    with Vault.open(world.home, identity=ids["worker2"]) as v:
        made.requests["deny"] = v.request_access(
            [records[2]], ["address"], "case_management", "核实住址"
        )
        made.requests["forged"] = v.request_access(
            [records[4]], ["school"], "case_management", "学校联系"
        )
    return made


@dataclass
class RunningConsole:
    """A ``childvault console`` subprocess and its one-time login URL."""

    proc: subprocess.Popen[str]
    login_url: str

    @property
    def base(self) -> str:
        return self.login_url.split("/login", 1)[0]


def start_console(
    home: Path,
    officer: str,
    *extra: str,
    passphrase: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> RunningConsole:
    """Start the console as ``officer`` and wait for the URL it prints.

    ``passphrase``: the officer's (default: the template home's); ``env_extra``:
    more environment (``CHILDVAULT_SERVER`` for a console against a server).
    """
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase or PASSPHRASES[officer])
    env.pop("CHILDVAULT_HOME", None)
    env.pop("CHILDVAULT_USER", None)
    env.pop("CHILDVAULT_SERVER", None)
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "console", "--home", str(home), "--as", officer, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    # stderr is drained while the console runs: a console that writes more than a
    # pipe's buffer there would otherwise block on the write and never stop.
    _drain_stderr(proc)
    try:
        first = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        stop_console(proc)
        raise AssertionError("the console printed no URL") from None
    if not first.startswith("http://127.0.0.1:"):
        err = stop_console(proc)
        raise AssertionError(f"the console did not start: {first!r} {err}")
    return RunningConsole(proc, first.strip())


_STDERR: dict[int, tuple[threading.Thread, list[str]]] = {}


def _drain_stderr(proc: subprocess.Popen[str]) -> None:
    """Read ``proc``'s stderr in a thread, kept for :func:`stop_console`."""
    chunks: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            chunks.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    _STDERR[proc.pid] = (thread, chunks)


def stop_console(proc: subprocess.Popen[str]) -> str:
    """Stop the console like Ctrl+C would; return what it wrote on stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    drained = _STDERR.pop(proc.pid, None)
    if drained is None:
        return proc.stderr.read() if proc.stderr else ""
    thread, chunks = drained
    thread.join(timeout=10)
    return "".join(chunks)


@pytest.fixture(scope="module")
def console_home(
    template: tuple[Path, dict[str, Identity]], tmp_path_factory: pytest.TempPathFactory
) -> ConsoleHome:
    return build_console_home(template, tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def running(console_home: ConsoleHome) -> Iterator[RunningConsole]:
    started = start_console(console_home.home, "officer1")
    yield started
    stop_console(started.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright, one per test module."""
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed (/usr/bin/chromium); install it with "
            "`apt-get install -y chromium fonts-wqy-microhei` (.ci/run does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
