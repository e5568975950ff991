"""What the parts of ``python -m bench.scale`` share: the PostgreSQL fixture server with
the owner and service roles, a vault on it, and the quantile and millisecond helpers.

Apart from :mod:`bench.scale` (the command) so each part's module can use them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import PASSPHRASES, ROLES

OWNER, SERVICE = "cv_owner", "cv_service"


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


# -- PostgreSQL ---------------------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[Any]:
    """The test suite's PostgreSQL fixture server, with the owner and service roles."""
    from tests.fixtures.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        server.create_role(OWNER)
        server.create_role(SERVICE)
        yield server
    finally:
        server.close()


def pg_vault(server: Any, root: Path, database: str) -> tuple[Path, dict[str, Any]]:
    """A new vault (admin, officer1, worker1) in a new PostgreSQL database; service-role DSN."""
    import psycopg
    from psycopg import sql

    from childvault.keys import Identity
    from childvault.vault import LocalKeys, Vault
    from childvault.vault._postgres import migrate

    with psycopg.connect(server.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(OWNER)
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    owner_dsn = server.dsn(OWNER, database)
    dsn_file = root / "dsn"
    dsn_file.write_text(owner_dsn + "\n", encoding="utf-8")
    dsn_file.chmod(0o600)
    home = root / "home"
    with Vault.init(
        home,
        institution="基准测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        keys=LocalKeys(),
        store_dsn_file=dsn_file,
    ) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    migrate(owner_dsn, service_role=SERVICE)
    # From here on the library connects as the service role (no UPDATE/DELETE on the log).
    dsn_file.write_text(server.dsn(SERVICE, database) + "\n", encoding="utf-8")
    ids = {
        name: Identity.load(home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }
    return home, ids


def open_vault(home: Path, ids: dict[str, Any], who: str, token: str | None = None) -> Any:
    from childvault.vault import OpenBaoCredentials, Vault

    return Vault.open(home, identity=ids[who], credentials=OpenBaoCredentials(token=token))
