"""Several ``childvault serve`` replicas over one PostgreSQL vault, and their clients.

The vault is created by the migration role (``cv_owner``) in a database of its
own, given the service grants, and its DSN file then names the service role
(``cv_service``), as an operator runs it (docs/scale.md). Each replica is a
real ``childvault serve`` process on the same home and a port of its own; the
home's files (config, schema, key slots, witness) are shared, the rows are in
PostgreSQL. Clients are separate processes with only their identity file.
Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import Identity
from childvault.vault import Vault
from childvault.vault._keyconfig import KeysConfig
from childvault.vault._postgres import migrate
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.sessions import OWNER, SERVICE
from tests.postgres.conftest import new_database, write_dsn
from tests.server._vaultserver import CLI_TIMEOUT, PEOPLE, passphrase, wait_healthy
from tests.server.conftest import ROOT, free_port

__all__ = ["PgServed", "Replica", "fresh_pg_vault", "make_pg_vault"]


@dataclass
class Replica:
    """One ``childvault serve`` process: its URL, port, process and log."""

    url: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def refusals(self) -> list[dict[str, Any]]:
        """The refusals this replica logged so far."""
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith('{"refusal"'):
                out.append(json.loads(line)["refusal"])
        return out

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) the replica and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class PgServed:
    """A PostgreSQL vault, its replicas and the people's workstations."""

    root: Path
    home: Path
    database: str
    postgres: PostgresServer
    replicas: list[Replica] = field(default_factory=list)

    def workstation(self, user: str) -> Path:
        """The directory of ``user``'s workstation (only their identity file)."""
        return self.root / f"ws-{user}"

    def identity(self, user: str) -> Identity:
        """``user``'s unlocked identity, from their workstation."""
        return Identity.load(self.workstation(user) / "identities" / f"{user}.id", passphrase(user))

    @property
    def urls(self) -> str:
        """Every replica's URL, comma-separated (what ``--server`` takes)."""
        return ",".join(r.url for r in self.replicas)

    def start_replica(self, *, port: int | None = None, witness: Path | None = None) -> Replica:
        """Start another replica (or restart one on ``port``); wait until /health answers.

        ``witness``: the replica's own witness file (``serve --witness-file``).
        """
        port = port or free_port()
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"))
        env.pop("CHILDVAULT_DSN", None)
        cmd = [sys.executable, "-m", "childvault", "--home", str(self.home), "--as", "admin"]
        cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
        if witness is not None:
            cmd += ["--witness-file", str(witness)]
        log_path = self.root / f"replica-{port}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        replica = Replica(f"http://127.0.0.1:{port}", port, log_path, process)
        wait_healthy(replica.url, process, log_path)
        self.replicas = [r for r in self.replicas if r.port != port] + [replica]
        return replica

    def stop(self) -> None:
        """Stop every replica."""
        for replica in self.replicas:
            replica.stop()

    def _cmd(self, user: str, url: str, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
        env.pop("CHILDVAULT_HOME", None)
        env.pop("CHILDVAULT_SERVER", None)
        cmd = [sys.executable, "-m", "childvault", "--server", url]
        cmd += ["--home", str(self.workstation(user)), "--as", user, *args]
        return cmd, env

    def cli(
        self, user: str, *args: str, url: str | None = None, expect: int | None = 0
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``childvault --server URL --as USER ARGS`` (default: every replica's URL)."""
        cmd, env = self._cmd(user, url or self.urls, args)
        done = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, timeout=CLI_TIMEOUT)
        if expect is not None and done.returncode != expect:
            raise AssertionError(
                f"{' '.join(args)} as {user}: exit {done.returncode}, expected {expect}\n"
                f"{done.stdout.decode()}\n{done.stderr.decode()}"
            )
        return done

    def cli_json(self, user: str, *args: str, url: str | None = None) -> Any:
        """:meth:`cli` with ``--json``, parsed."""
        return json.loads(self.cli(user, *args, "--json", url=url).stdout)

    def cli_background(
        self, user: str, *args: str, url: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``childvault --server URL --as USER ARGS`` without waiting for it."""
        cmd, env = self._cmd(user, url or self.urls, args)
        return subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def client(self, user: str, url: str, *args: str) -> subprocess.Popen[bytes]:
        """A library client process (``tests.server._client``) as ``user`` against ``url``."""
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
        identity = self.workstation(user) / "identities" / f"{user}.id"
        cmd = [sys.executable, "-m", "tests.server._client", url, str(identity), *args]
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def request(self, user: str, *records: str, reason: str, url: str | None = None) -> str:
        """``user`` asks (``childvault request``, through ``url``) for the name of
        ``records`` for case management: the request's id."""
        args = [a for record in records for a in ("--record", record)]
        args += ["--field", "name", "--purpose", "case_management", "--reason", reason]
        return str(self.cli_json(user, "request", *args, url=url)["request_id"])

    def open_local(self, user: str) -> Vault:
        """The vault opened directly on the database (not through a replica) as ``user``."""
        return Vault.open(self.home, user, passphrase(user))


def make_pg_vault(
    root: Path,
    postgres: PostgresServer,
    people: Sequence[str] = tuple(PEOPLE),
    *,
    keys: KeysConfig | None = None,
) -> PgServed:
    """Create the vault in a new database (``root/home``) and give each person a workstation.

    ``keys`` is the key provider (default: the embedded one); with
    :class:`~childvault.vault.OpenBaoKeys` it carries the creating admin's token.
    """
    database = new_database(postgres)
    dsn_file = write_dsn(root / "dsn", postgres.dsn(OWNER, database))
    home = root / "home"
    with Vault.init(
        home,
        institution="Test home",
        admin="admin",
        admin_passphrase=passphrase("admin"),
        store_dsn_file=dsn_file,
        keys=keys,
    ) as v:
        for user in people:
            v.add_user(user, [PEOPLE[user]], passphrase(user))
    if "officer2" in people:
        with Vault.open(home, "officer1", passphrase("officer1")) as o:
            o.share_custodian("officer2")
    # `childvault upgrade`'s job: the service grants; from now on the replicas
    # connect as the service role, which cannot rewrite the log.
    migrate(postgres.dsn(OWNER, database), service_role=SERVICE)
    write_dsn(dsn_file, postgres.dsn(SERVICE, database))
    served = PgServed(root, home, database, postgres)
    for user in people:
        ws = served.workstation(user) / "identities"
        ws.mkdir(parents=True, mode=0o700)
        shutil.copy2(home / "identities" / f"{user}.id", ws / f"{user}.id")
    return served


@pytest.fixture
def fresh_pg_vault(tmp_path: Path, postgres: PostgresServer) -> Iterator[PgServed]:
    """A PostgreSQL vault (officer1 and officer2, both holders, and worker1) with no
    replica running yet; every replica a test starts is stopped afterwards.

    The witness and connection-cost tests share it (tests/scale/conftest.py
    makes it a fixture of the directory); the failover tests' ``served``
    fixtures set up other vaults.
    """
    pg = make_pg_vault(tmp_path, postgres, people=("officer1", "officer2", "worker1"))
    try:
        yield pg
    finally:
        pg.stop()
