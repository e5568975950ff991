"""A refused witness step through several replicas withdraws the approval (issue 13).

With ``--server URL1,URL2`` the failover backend used to take the server's 502
``witness`` (committed, checkpoint not cosigned) for a replica that is down,
find the commit applied on the next replica, and answer as if all went well:
the approval stood, unwitnessed, until someone ran ``revoke``. Now it keeps
the refusal for the service's witness step, as the single-server backend
does: the approval fails closed, its grant is revoked and the revocation is
logged. A commit whose answer is lost and which the next replica finds
applied leaves the witness's answer unknown: that fails closed too (finding
D-1). Both URLs name one server here, which is what the backend sees of two
replicas over one database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from childvault.keys import Identity, StorageError
from childvault.vault import Vault, _note
from tests.scale._lossy import LossyProxy
from tests.server._vaultserver import VaultServer
from tests.server.test_witness import WitnessProcess, _request, _witness_notes, witnessed_vault


@pytest.fixture
def witnessed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VaultServer, WitnessProcess]]:
    """A fresh witnessed vault per test: each stops the witness."""
    with witnessed_vault(tmp_path_factory.mktemp("witnessed-failover")) as both:
        yield both


def test_a_refused_witness_through_failover_revokes_the_grant(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    vs, witness = witnessed
    witness.stop()
    req = _request(vs)
    identity: Identity = vs.identity("officer1")
    with (
        Vault.connect(f"{vs.url},{vs.url}", identity) as officer,
        pytest.raises(StorageError, match="witness"),
    ):
        officer.approve(req)
    revoked = vs.cli_json("officer1", "audit", "log", "--action", "grant.revoke")
    assert revoked["entries"], "the unwitnessed approval was not withdrawn"
    approved = vs.cli_json("officer1", "audit", "log", "--action", "request.approve")
    assert approved["entries"]


def test_a_lost_commit_answer_with_the_witness_down_still_fails_closed(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    """The server commits the approval, its witness refuses the checkpoint (502
    ``witness``), and that answer is lost on the way. The failover backend finds
    the commit applied through the next replica and returns as if the
    checkpoint were cosigned: the approval stands unwitnessed. Fail closed
    instead: the outcome of the witness step is unknown, so the approval is
    withdrawn as when the 502 arrives (finding D-1)."""
    vs, witness = witnessed
    witness.stop()
    req = _request(vs)
    identity: Identity = vs.identity("officer1")
    with LossyProxy(vs.url) as proxy:
        with Vault.connect(f"{proxy.url},{vs.url}", identity) as officer:
            proxy.lose_commit = True  # the approval's commit (it appends to the log)
            with pytest.raises(StorageError, match="witness"):
                officer.approve(req)
        assert proxy.lost == ["/v1/txn/commit"], (
            "no commit answer was lost: the test proves nothing"
        )
    revoked = vs.cli_json("officer1", "audit", "log", "--action", "grant.revoke")
    assert revoked["entries"], "the unwitnessed approval was not withdrawn"


def test_a_lost_commit_answer_with_the_witness_up_fails_closed_and_says_what_to_do(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    """The witness cosigned, but the answer saying so was lost: the client cannot
    tell this from a refusal, so it withdraws the approval all the same (fail
    closed), and the refusal says what to do. Doing it (``audit checkpoint``)
    works: a checkpoint cosigned by the witness that is up."""
    vs, witness = witnessed
    req = _request(vs)
    identity: Identity = vs.identity("officer1")
    with LossyProxy(vs.url) as proxy:
        with Vault.connect(f"{proxy.url},{vs.url}", identity) as officer:
            proxy.lose_commit = True
            with pytest.raises(StorageError, match="was lost") as refused:
                officer.approve(req)
        assert proxy.lost == ["/v1/txn/commit"], (
            "no commit answer was lost: the test proves nothing"
        )
    assert "`childvault audit checkpoint`" in str(refused.value)
    assert "new request" in str(refused.value)
    revoked = vs.cli_json("officer1", "audit", "log", "--action", "grant.revoke")
    assert revoked["entries"], "an approval whose witness outcome is unknown stood"
    vs.cli("officer1", "audit", "checkpoint")
    name, public = _note.parse_vkey(witness.vkey())
    _note.open_note(_witness_notes(vs)[-1], {name: public})
