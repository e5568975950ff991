"""A refused witness step through several replicas withdraws the approval (issue 13).

With ``--server URL1,URL2`` the failover backend used to take the server's 502
``witness`` (committed, checkpoint not cosigned) for a replica that is down,
find the commit applied on the next replica, and answer as if all went well:
the approval stood, unwitnessed, until someone ran ``revoke``. Now it keeps
the refusal for the service's witness step, as the single-server backend
does: the approval fails closed, its grant is revoked and the revocation is
logged. Both URLs name one server here, which is what the backend sees of
two replicas over one database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from childvault.keys import Identity, StorageError
from childvault.vault import Vault
from tests.server._vaultserver import VaultServer, make_vault, passphrase
from tests.server.test_witness import SAMPLE, WitnessProcess, _request, _start


@pytest.fixture
def witnessed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VaultServer, WitnessProcess]]:
    vs = make_vault(tmp_path_factory.mktemp("witnessed-failover"), ("officer1", "worker1"))
    with Vault.open(vs.home, "admin", passphrase("admin")) as admin:
        log_keys = admin.signer_vkeys()
    witness = WitnessProcess(vs.root / "witness", log_keys)
    witness.start()
    _start(vs, witness)
    try:
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE))
        yield vs, witness
    finally:
        vs.stop()
        witness.stop()


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
