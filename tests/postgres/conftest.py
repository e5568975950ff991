"""Fixtures that run library tests on both stores: the SQLCipher file and PostgreSQL.

The PostgreSQL vaults are made once as a template database (by the migration
role ``cv_owner``, which owns the tables) and copied per test with ``CREATE
DATABASE ... TEMPLATE``; each test's home names a DSN file holding the
**service role** (``cv_service``: no UPDATE or DELETE on the log), so every
test here also shows that the service role is enough to run the library.
The server and both roles are the session's one ``postgres`` fixture
(tests/fixtures/sessions.py).
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from childvault.keys import Identity
from childvault.testing import FakeClock
from childvault.vault import LocalKeys, Vault
from childvault.vault._postgres import migrate
from tests.conftest import PASSPHRASES, ROLES, World, copy_world
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.sessions import OWNER, SERVICE

_numbers = itertools.count()


def new_database(server: PostgresServer, *, template: str | None = None) -> str:
    """A new empty (or copied) database owned by the migration role; its name."""
    name = f"cv_test_{next(_numbers)}"
    with psycopg.connect(server.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}{}").format(
                sql.Identifier(name),
                sql.Identifier(OWNER),
                sql.SQL("")
                if template is None
                else sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)),
            )
        )
    return name


def write_dsn(path: Path, dsn: str) -> Path:
    """A DSN file, private to the owner (it holds a password)."""
    path.write_text(dsn + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class PgTemplate:
    """The template home (its config names a DSN file) and the users' identities."""

    home: Path
    ids: dict[str, Identity]
    database: str


@pytest.fixture(scope="session")
def pg_template(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> PgTemplate:
    """A vault with the five test users in a template database (as tests/conftest.py).

    The database gets a name of its own: a module that imports this fixture (as
    tests/attack does) holds a second instance of it in the same session, on the
    same server, and a fixed name made the second one fail ("already exists").
    """
    database = new_database(postgres)
    root = tmp_path_factory.mktemp("pgtemplate")
    owner_dsn = postgres.dsn(OWNER, database)
    dsn_file = write_dsn(root / "dsn", owner_dsn)
    home = root / "home"
    clock = FakeClock()
    with Vault.init(
        home,
        institution="测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        clock=clock,
        keys=LocalKeys(),
        store_dsn_file=dsn_file,
    ) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    ids = {
        name: Identity.load(home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }
    with Vault.open(home, identity=ids["officer1"], clock=clock) as v:
        v.share_custodian("officer2")
    # `childvault upgrade`'s job: grants for the service role (copied with the template).
    migrate(owner_dsn, service_role=SERVICE)
    return PgTemplate(home, ids, database)


@dataclass
class PgWorld(World):
    """A :class:`World` whose rows are in a PostgreSQL database of its own."""

    database: str = ""
    server: PostgresServer | None = None

    def owner_dsn(self) -> str:
        """The migration role's DSN (an insider with schema rights)."""
        assert self.server is not None
        return self.server.dsn(OWNER, self.database)

    def service_dsn(self) -> str:
        """The service role's DSN (what the library uses here)."""
        assert self.server is not None
        return self.server.dsn(SERVICE, self.database)


def pg_world(postgres: PostgresServer, template: PgTemplate, dest: Path) -> PgWorld:
    """A fresh copy of the template vault: database, home and DSN file."""
    database = new_database(postgres, template=template.database)
    home = dest / "home"
    shutil.copytree(template.home, home)
    witness = template.home.parent / "home.witness.jsonl"
    if witness.exists():
        shutil.copy(witness, dest / "home.witness.jsonl")
    dsn_file = write_dsn(dest / "dsn", postgres.dsn(SERVICE, database))
    config = json.loads((home / "config.json").read_text(encoding="utf-8"))
    config["store"]["dsn_file"] = str(dsn_file)
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return PgWorld(home, template.ids, database=database, server=postgres)


@pytest.fixture(params=["sqlcipher", "postgresql"])
def any_world(
    request: pytest.FixtureRequest,
    template: tuple[Path, dict[str, Identity]],
    tmp_path: Path,
) -> World:
    """The same five-user vault on either store."""
    if request.param == "sqlcipher":
        src, ids = template
        return copy_world(src, ids, tmp_path)
    postgres = request.getfixturevalue("postgres")
    return pg_world(postgres, request.getfixturevalue("pg_template"), tmp_path)


@pytest.fixture
def pgworld(postgres: PostgresServer, pg_template: PgTemplate, tmp_path: Path) -> PgWorld:
    """The five-user vault on PostgreSQL only."""
    return pg_world(postgres, pg_template, tmp_path)
