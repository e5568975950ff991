"""``childvault serve``: open a home, build the app with the vault routes, run it."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.server._app import create_app
from childvault.server._auth import NonceStore
from childvault.server._common import AuthRefusal
from childvault.server._limits import (
    DEFAULT_MAX_BODY,
    DEFAULT_USER_BURST,
    DEFAULT_USER_RATE,
    UserRateLimit,
)
from childvault.server._release_keys import release_secret
from childvault.server._run import DEFAULT_LISTEN, run, server_config
from childvault.server._vault import DEFAULT_TXN_MAX, PRIVILEGED, VaultHost, unlock_home_as
from childvault.server._witness import Witness, WitnessClient, create_witness_app
from childvault.vault._config import Config, Home


def serve(
    home: Path,
    user: str,
    passphrase: str,
    *,
    listen: str = DEFAULT_LISTEN,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    behind_proxy: bool = False,
    max_body: int | None = None,
    witnesses: Sequence[tuple[str, str | None]] = (),
    witness: Path | None = None,
    user_rate: float = DEFAULT_USER_RATE,
    user_burst: int = DEFAULT_USER_BURST,
    txn_max: float = DEFAULT_TXN_MAX,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Unlock ``home`` with ``user``'s key slot, then serve it until SIGTERM/SIGINT.

    The server keeps the database key, the vault's anchor and the release
    secret (``identities/USER.release``, made at the first start and opened
    only with ``user``'s identity: docs/server.md). If ``user`` is
    a staff user only (a dedicated service identity), it also keeps that
    identity to sign the log entries of refusals of verified users
    (``server.refuse``); an admin's or officer's identity is dropped, and
    refusals then stay in the refusal log (docs/server.md). The access log and
    refusals go to stderr as JSON lines (no values, no concrete paths).

    ``witness``: this replica's own witness file (default: the home's
    configured one); it is also kept up to date with the checkpoints other
    replicas of the database stored (docs/scale.md, section 11).

    ``witnesses`` are (URL, verifier key) pairs; a key of None means the keys
    recorded in the vault (``childvault witness-keys add``): the witness must
    cosign under one of them. A given key that is not among the recorded ones
    is reported (a warning in the server's log).

    ``user_rate`` (requests a minute) and ``user_burst`` bound each verified
    user's accepted requests (:class:`~childvault.server._limits.UserRateLimit`).

    ``allowed_hosts``: names (``NAME`` or ``NAME:PORT``) clients reach the
    server by besides the bound address; requests naming another ``Host`` are
    refused (``serve --allowed-host``, docs/server.md "Host names").

    ``txn_max``: seconds a transaction may stay open while another client waits
    for the vault; then it is rolled back (:data:`~childvault.server._vault.DEFAULT_TXN_MAX`).
    """
    rate = UserRateLimit(user_rate, user_burst)  # checked before unlocking, too
    # Checked before unlocking: a bad --listen should not cost a passphrase try.
    server_config(
        create_app(_NoUsers()), listen, tls_cert, tls_key, behind_proxy, allowed_hosts=allowed_hosts
    )
    # Given keys checked before unlocking, as the listen settings.
    given = {url: WitnessClient(url, vkey) for url, vkey in witnesses if vkey is not None}
    key, anchor, identity = unlock_home_as(home, user, passphrase)
    # The release keys are stored under a secret only this identity opens (made at
    # the first start): people who open the database cannot read or reset them.
    secret = release_secret(Home(Path(home)), identity, anchor.vault_id)
    host = VaultHost(home, key, anchor, witness=witness, release_secret=secret, txn_max=txn_max)
    recorded = host.recorded_witness_keys()
    clients = []
    for url, vkey in witnesses:
        if vkey is None:
            if not recorded:
                host.close()
                raise UsageError(
                    _t(
                        "--witness-url {url} needs a --witness-key: no witness key is recorded "
                        "in the vault (`childvault witness-keys add VKEY`)",
                        url=url,
                    )
                )
            clients.append(WitnessClient(url, recorded))
            continue
        if recorded and vkey not in recorded:
            logging.getLogger("childvault.server").warning(
                "the witness key given for %s is not one recorded in the vault (%s)",
                url,
                ", ".join(recorded),
            )
        clients.append(given[url])
    host.witnesses = tuple(clients)
    handler = logging.StreamHandler(sys.stderr)
    for name in ("childvault.server", "childvault.server.access", "childvault.server.witness"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if host.roles(user) & PRIVILEGED:
        # A long-running, network-facing process must not hold a key that signs
        # registrations, disables, decisions or checkpoints: it is dropped.
        logging.getLogger("childvault.server").warning(
            "serving as %s (%s): refusals stay in the refusal log; serve --as a dedicated "
            "staff user to also log them in the audit log (docs/server.md)",
            user,
            ", ".join(sorted(host.roles(user))),
        )
    else:
        host.sign_refusals_as(identity)
    del identity
    refusals = logging.getLogger("childvault.server.refusals")

    def audit(event: AuthRefusal) -> None:
        refusals.info(json.dumps({"refusal": dataclasses.asdict(event)}, sort_keys=True))
        # A verified user's refusal also goes into the hash-chained log (bounded).
        host.log_refusal(event)

    nonces = nonce_store(home)
    app = create_app(
        host,
        audit=audit,
        vault=host,
        nonce_store=nonces,
        max_body=DEFAULT_MAX_BODY if max_body is None else max_body,
        rate=rate,
    )
    try:
        run(app, listen, tls_cert, tls_key, behind_proxy, allowed_hosts=allowed_hosts)
    finally:
        close = getattr(nonces, "close", None)
        if close is not None:
            close()
        host.close()


def nonce_store(home: Path) -> NonceStore:
    """Where the server records request nonces: the vault's PostgreSQL database if it has one.

    Every replica on one PostgreSQL database then shares replay protection,
    and a restart does not forget the nonces of the last minutes. A SQLCipher
    home has one server process; its nonces go to a file in the home so that
    a restart does not forget them either (``_nonces.FileNonceStore``).
    """
    h = Home(Path(home))
    dsn = Config.load(h).store_dsn(h)
    if dsn is None:
        from childvault.server._nonces import FILE_NAME, FileNonceStore

        return FileNonceStore(h.path / FILE_NAME)
    from childvault.vault._postgres import PostgresNonceStore

    return PostgresNonceStore(dsn)


class _NoUsers:
    """A resolver knowing nobody (only used to check the listen settings)."""

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        return None


def serve_witness(
    directory: Path,
    log_keys: Sequence[str],
    *,
    name: str | None = None,
    listen: str = "127.0.0.1:8444",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    behind_proxy: bool = False,
    announce: Callable[[str], None] | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Run a checkpoint witness over ``directory`` until SIGTERM/SIGINT (``childvault witness``).

    ``allowed_hosts``: as for :func:`serve`.
    ``announce`` receives the witness's verifier key before it starts serving.
    """
    witness = Witness(directory, log_keys, name=name)
    app = create_witness_app(witness)
    # Settings checked first.
    server_config(app, listen, tls_cert, tls_key, behind_proxy, allowed_hosts=allowed_hosts)
    handler = logging.StreamHandler(sys.stderr)
    for logger_name in ("childvault.server", "childvault.server.access"):
        log = logging.getLogger(logger_name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if announce is not None:
        announce(witness.vkey())
    run(app, listen, tls_cert, tls_key, behind_proxy, allowed_hosts=allowed_hosts)
