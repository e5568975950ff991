"""``childvault serve``: open a home, build the app with the vault routes, run it."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from childvault.server._app import create_app
from childvault.server._auth import MemoryNonceStore, NonceStore
from childvault.server._common import AuthRefusal
from childvault.server._limits import DEFAULT_MAX_BODY
from childvault.server._run import DEFAULT_LISTEN, run
from childvault.server._vault import VaultHost, unlock_home
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
) -> None:
    """Unlock ``home`` with ``user``'s key slot, then serve it until SIGTERM/SIGINT.

    The server keeps the database key and the vault's anchor; the identity
    itself is dropped. The access log and refusals go to stderr as JSON lines
    (no values, no concrete paths).
    """
    # Checked before unlocking: a bad --listen should not cost a passphrase try.
    from childvault.server._run import server_config

    server_config(create_app(_NoUsers()), listen, tls_cert, tls_key, behind_proxy)
    key, anchor = unlock_home(home, user, passphrase)
    host = VaultHost(home, key, anchor)
    handler = logging.StreamHandler(sys.stderr)
    for name in ("childvault.server", "childvault.server.access"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    refusals = logging.getLogger("childvault.server.refusals")

    def audit(event: AuthRefusal) -> None:
        refusals.info(json.dumps({"refusal": dataclasses.asdict(event)}, sort_keys=True))

    nonces = nonce_store(home)
    app = create_app(
        host,
        audit=audit,
        vault=host,
        nonce_store=nonces,
        max_body=DEFAULT_MAX_BODY if max_body is None else max_body,
    )
    try:
        run(app, listen, tls_cert, tls_key, behind_proxy)
    finally:
        close = getattr(nonces, "close", None)
        if close is not None:
            close()
        host.close()


def nonce_store(home: Path) -> NonceStore:
    """Where the server records request nonces: the vault's PostgreSQL database if it has one.

    Every replica on one PostgreSQL database then shares replay protection,
    and a restart does not forget the nonces of the last minutes. A SQLCipher
    home has one server process, so its nonces stay in that process's memory.
    """
    h = Home(Path(home))
    dsn = Config.load(h).store_dsn(h)
    if dsn is None:
        return MemoryNonceStore()
    from childvault.vault._postgres import PostgresNonceStore

    return PostgresNonceStore(dsn)


class _NoUsers:
    """A resolver knowing nobody (only used to check the listen settings)."""

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        return None
