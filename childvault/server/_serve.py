"""``childvault serve``: open a home, build the app with the vault routes, run it."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from childvault.server._app import create_app
from childvault.server._common import AuthRefusal
from childvault.server._limits import DEFAULT_MAX_BODY
from childvault.server._run import DEFAULT_LISTEN, run
from childvault.server._vault import VaultHost, unlock_home_as


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

    The server keeps the database key, the vault's anchor and ``user``'s
    identity, whose key signs the log entries of refusals of verified users
    (``server.refuse``; run it as a dedicated staff user, docs/server.md). The
    access log and refusals go to stderr as JSON lines (no values, no
    concrete paths).
    """
    # Checked before unlocking: a bad --listen should not cost a passphrase try.
    from childvault.server._run import server_config

    server_config(create_app(_NoUsers()), listen, tls_cert, tls_key, behind_proxy)
    key, anchor, identity = unlock_home_as(home, user, passphrase)
    host = VaultHost(home, key, anchor, signer=identity)
    handler = logging.StreamHandler(sys.stderr)
    for name in ("childvault.server", "childvault.server.access"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    refusals = logging.getLogger("childvault.server.refusals")

    def audit(event: AuthRefusal) -> None:
        refusals.info(json.dumps({"refusal": dataclasses.asdict(event)}, sort_keys=True))
        # A verified user's refusal also goes into the hash-chained log (bounded).
        host.log_refusal(event)

    app = create_app(
        host, audit=audit, vault=host, max_body=DEFAULT_MAX_BODY if max_body is None else max_body
    )
    try:
        run(app, listen, tls_cert, tls_key, behind_proxy)
    finally:
        host.close()


class _NoUsers:
    """A resolver knowing nobody (only used to check the listen settings)."""

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        return None
