"""When an operation's inputs (``inputs.approval`` / ``inputs.read``) are not answered.

The client used to fall back to reading call by call after *any* error of the
inputs request: a refusal or a server error was hidden there and the work done
twice. Now it falls back only where that is the designed answer: an older
server without the ``inputs`` methods (400 ``unknown_method``), and the refusal
to the caller's role or user (403 ``role``), which the operation's own check
then refuses and logs. Anything else is raised from the inputs request, as
every other call raises it. Real servers: the older one is this version with
``inputs`` removed from its method table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, Identity
from childvault.vault import Vault
from tests.conftest import add_children
from tests.server._vaultserver import (
    VaultServer,
    count_requests,
    make_vault,
    passphrase,
    start_older,
)


def _served(root: Path) -> tuple[VaultServer, list[str]]:
    vs = make_vault(root, ("officer1", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 2)
    return vs, ids


@pytest.fixture
def older(tmp_path: Path) -> Iterator[tuple[VaultServer, list[str]]]:
    """A vault served by a server without the operation inputs."""
    vs, ids = _served(tmp_path)
    start_older(vs, "inputs")  # a server from before the operation inputs
    try:
        yield vs, ids
    finally:
        vs.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[VaultServer, list[str]]]:
    """A vault served by this version (the admin's identity on a workstation too)."""
    vs, ids = _served(tmp_path)
    ws = vs.workstation("admin") / "identities"
    ws.mkdir(parents=True, mode=0o700)
    (ws / "admin.id").write_bytes((vs.home / "identities" / "admin.id").read_bytes())
    vs.start()
    try:
        yield vs, ids
    finally:
        vs.stop()


def _outside(sent: list[tuple[bool, list[str]]]) -> list[list[str]]:
    return [calls for in_txn, calls in sent if not in_txn]


def test_an_older_server_without_inputs_still_approves_and_reads(
    older: tuple[VaultServer, list[str]],
) -> None:
    vs, ids = older
    with vs.connect("worker1") as worker, vs.connect("officer1") as officer:
        req = worker.request_access(ids, ["name"], "case_management", "家访")
        approving = count_requests(officer)
        token = officer.approve(req).token
        reading = count_requests(worker)
        out = worker.read_with_grant(token)
    assert sorted(out) == sorted(ids)
    for sent, kind in ((approving, "approval"), (reading, "read")):
        outside = _outside(sent)
        # Asked once, refused as unknown, then read call by call as before.
        asked = [i for i, calls in enumerate(outside) if f"inputs.{kind}" in calls]
        assert len(asked) == 1, outside
        later = [c for calls in outside[asked[0] + 1 :] for c in calls]
        assert "access.request" in later or "access.grant" in later, outside
    assert "unknown_method" in vs.log_path.read_text(encoding="utf-8")


def test_a_refused_inputs_request_is_raised_not_read_again_call_by_call(
    served: tuple[VaultServer, list[str]],
) -> None:
    """The officer is disabled while their session is open: the server refuses
    the approval's inputs request (403 ``user_disabled``). That refusal is what
    the caller gets, at once: no call-by-call reads after it."""
    vs, ids = served
    identity: Identity = vs.identity("officer1")
    with vs.connect("worker1") as worker:
        req = worker.request_access(ids[:1], ["name"], "case_management", "家访")
    with Vault.connect(vs.url, identity) as officer:
        vs.cli("admin", "user", "disable", "officer1", "--reason", "left the service")
        sent = count_requests(officer)
        with pytest.raises(AccessDenied, match=r"disabled|not an active user"):
            officer.approve(req)
    outside = _outside(sent)
    assert outside and any(c.startswith("inputs.approval") for c in outside[0]), outside
    assert len(sent) == 1, sent
