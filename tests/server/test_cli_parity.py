"""The same CLI session, embedded and through ``childvault serve``, gives the same answers.

Issue 13: "The CLI commands behave the same in both modes." The other server tests
check the server's own rules; this one runs one script of everyday commands
(import, list, find, request, requests, approve, read, a refused read, deny,
revoke, a refused approval by staff, audit log, audit verify) against two vaults
made alike: one opened from its home, one through a server with each person on
a workstation holding only their identity file. Exit codes, the JSON documents
(ids, times and digests set aside, as each vault has its own) and the human text
(ids and times masked) must be equal, and so must the log's actions and outcomes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server._vaultserver import (
    CLI_TIMEOUT,
    make_vault,
    passphrase,
    synthetic_csv,
)
from tests.server.conftest import ROOT

Run = Callable[..., subprocess.CompletedProcess[bytes]]

# What differs between two vaults made alike: ids, digests, times, durations.
_MASKS = [
    (re.compile(r"\b[0-9a-f]{32,64}\b"), "<id>"),
    (re.compile(r"v4\.public\.[A-Za-z0-9_\-.]+"), "<token>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z| ?[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\(\d+ min ago\)"), "(<n> min ago)"),
    (re.compile(r"/\S*/(ws-\w+|home|grant\.token)"), r"<dir>/\1"),
]
# JSON keys whose values are ids, times or digests of one vault.
_VOLATILE = {
    "id",
    "ids",
    "record_id",
    "record_ids",
    "request_id",
    "request",
    "grant",
    "grant_id",
    "created_at",
    "updated_at",
    "expires_at",
    "root",
    "hash",
    "prev",
    "seq",
    "at",
    "sha256",
    "source",
    "token",
    "records",
    "checkpoint",
    "sig",
    "statement",
    "vault",
    "path",
    "candidates",
}


def _masked(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def _shape(doc: Any) -> Any:
    """``doc`` with the values of one vault replaced by their type."""
    if isinstance(doc, dict):
        return {
            k: (type(v).__name__ if k in _VOLATILE else _shape(v)) for k, v in sorted(doc.items())
        }
    if isinstance(doc, list):
        return [_shape(v) for v in doc]
    return _masked(doc) if isinstance(doc, str) else doc


@pytest.fixture(scope="module")
def modes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """``run(user, *args, expect=...)`` for the embedded vault and the served one."""
    embedded = make_vault(tmp_path_factory.mktemp("embedded"))
    served = make_vault(tmp_path_factory.mktemp("served"))
    served.start()

    def local(user: str, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
        env.pop("CHILDVAULT_SERVER", None)
        cmd = [sys.executable, "-m", "childvault", "--home", str(embedded.home), "--as", user]
        done = subprocess.run(
            [*cmd, *args], cwd=ROOT, env=env, capture_output=True, timeout=CLI_TIMEOUT
        )
        if expect is not None and done.returncode != expect:
            raise AssertionError(f"{args}: exit {done.returncode}\n{done.stderr.decode()}")
        return done

    try:
        yield {"embedded": local, "server": served.cli}
    finally:
        served.stop()


def _both(modes: dict[str, Run], user: str, *args: str, expect: int = 0) -> list[Any]:
    """Run the command in both modes; the same exit code, the same masked text.

    Returns the parsed JSON of each run when the command printed JSON, else None."""
    runs = {name: run(user, *args, expect=None) for name, run in modes.items()}
    codes = {name: r.returncode for name, r in runs.items()}
    assert codes == {"embedded": expect, "server": expect}, (
        args,
        {n: r.stderr.decode() for n, r in runs.items()},
    )
    out = {name: _masked(r.stdout.decode()) for name, r in runs.items()}
    err = {name: _masked(r.stderr.decode()) for name, r in runs.items()}
    assert out["embedded"] == out["server"], args
    assert err["embedded"] == err["server"], args
    if "--json" in args and expect == 0:
        return [json.loads(r.stdout) for r in runs.values()]
    return [None, None]


def test_one_cli_session_gives_the_same_answers_in_both_modes(
    modes: dict[str, Run], tmp_path: Path
) -> None:
    rows = synthetic_csv(tmp_path / "rows.csv", 3)
    _both(modes, "worker1", "import", str(rows))
    listed = _both(modes, "worker1", "--json", "list")
    assert _shape(listed[0]) == _shape(listed[1])
    ids = [[r["id"] for r in doc["records"]] for doc in listed]
    assert len(ids[0]) == len(ids[1]) == 3
    _both(modes, "worker1", "list")

    # The same child in each vault, found by the first row's identity number.
    with rows.open(encoding="utf-8") as fh:
        number = next(csv.DictReader(fh))["id_number"]
    found = _both(modes, "worker1", "--json", "find", "--field", f"id_number={number}")
    assert [len(doc["candidates"]) for doc in found] == [1, 1]
    first = [doc["candidates"][0] for doc in found]
    run = dict(zip(modes, first, strict=True))

    def each(user: str, build: Callable[[str], list[str]], expect: int = 0) -> list[Any]:
        """One command per mode with that mode's ids; checked as :func:`_both` does."""
        runs = {m: modes[m](user, *build(m), expect=None) for m in modes}
        codes = {m: r.returncode for m, r in runs.items()}
        assert codes == {"embedded": expect, "server": expect}, (
            build("embedded"),
            {m: r.stderr.decode() for m, r in runs.items()},
        )
        texts = {
            m: (_masked(r.stdout.decode()), _masked(r.stderr.decode())) for m, r in runs.items()
        }
        assert texts["embedded"] == texts["server"], build("embedded")
        return [json.loads(r.stdout) if "--json" in build(m) else None for m, r in runs.items()]

    request = ["request", "--field", "name", "--field", "guardian_phone"]
    request += ["--purpose", "case_management", "--reason", "家访前核对"]
    filed = each("worker1", lambda m: ["--json", *request, "--record", run[m]])
    other = each("worker1", lambda m: ["--json", *request, "--record", run[m]])
    req = {m: doc["request_id"] for m, doc in zip(modes, filed, strict=True)}
    req2 = {m: doc["request_id"] for m, doc in zip(modes, other, strict=True)}
    pending = _both(modes, "officer1", "--json", "requests")
    assert _shape(pending[0]) == _shape(pending[1])
    _both(modes, "officer1", "requests")

    tokens = {m: tmp_path / m / "grant.token" for m in modes}
    for token in tokens.values():
        token.parent.mkdir()
    each("officer1", lambda m: ["approve", req[m], "--uses", "1", "--out", str(tokens[m])])
    read = each("worker1", lambda m: ["--json", "read", run[m], "--grant", f"@{tokens[m]}"])
    values = [doc["records"][first[i]] for i, doc in enumerate(read)]
    assert values[0] == values[1] and set(values[0]) == {"name", "guardian_phone"}
    # The one use is spent; a field outside the grant; staff cannot decide.
    each("worker1", lambda m: ["read", run[m], "--grant", f"@{tokens[m]}"], expect=3)
    each(
        "worker1",
        lambda m: ["read", run[m], "--grant", f"@{tokens[m]}", "--field", "case_notes"],
        expect=3,
    )
    each("worker2", lambda m: ["approve", req2[m]], expect=3)
    each("officer1", lambda m: ["deny", req2[m], "--reason", "不必要"])
    _both(modes, "officer1", "requests", "--all")
    _both(modes, "worker1", "requests", "--all")

    grants = [
        [e["entry"]["grant"] for e in doc["entries"] if e["entry"]["action"] == "request.approve"]
        for doc in _both(modes, "officer1", "--json", "audit", "log")
    ]
    each("officer1", lambda m: ["revoke", grants[list(modes).index(m)][0]])

    # The log: the same actions with the same outcomes, in the same order.
    logs = _both(modes, "officer1", "--json", "audit", "log")
    actions = [[(e["entry"]["action"], e["entry"]["outcome"]) for e in d["entries"]] for d in logs]
    assert actions[0] == actions[1]
    verified = _both(modes, "worker1", "--json", "audit", "verify")
    assert _shape(verified[0]) == _shape(verified[1])
