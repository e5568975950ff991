"""The PostgreSQL fixture runs a real server the way docs/scale.md describes."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import PostgresServer


def _postmaster_uid(server: PostgresServer) -> int:
    pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_a_role_logs_in_over_loopback_tcp(postgres: PostgresServer) -> None:
    postgres.create_role("fx_login", "fx-login-password")
    postgres.create_database("fx_login_db", owner="fx_login")
    with psycopg.connect(postgres.dsn("fx_login", "fx_login_db")) as conn:
        user, db = conn.execute("SELECT current_user, current_database()").fetchone() or ()
        assert (user, db) == ("fx_login", "fx_login_db")
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) // 10000 == 18
    # unix_socket_directories is visible to superusers only.
    with psycopg.connect(postgres.superuser_dsn) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["listen_addresses", "unix_socket_directories", "fsync", "password_encryption"],),
            ).fetchall()
        )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "fsync": "off",
        "password_encryption": "scram-sha-256",
    }


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    postgres.create_role("fx_pw", "right-password")
    dsn = postgres.dsn("fx_pw").replace("right-password", "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn, connect_timeout=10)


def test_as_root_the_server_runs_as_an_unprivileged_user(postgres: PostgresServer) -> None:
    uid = _postmaster_uid(postgres)
    if os.geteuid() == 0:
        assert uid != 0
        assert postgres.data_dir.stat().st_uid == uid
    else:
        assert uid == os.geteuid()


def test_restart_keeps_data_and_ends_open_sessions(postgres: PostgresServer) -> None:
    postgres.create_role("fx_restart", "fx-restart-password")
    postgres.create_database("fx_restart_db", owner="fx_restart")
    dsn = postgres.dsn("fx_restart", "fx_restart_db")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (41), (42)")
    port = postgres.port
    open_conn = psycopg.connect(dsn, autocommit=True)
    try:
        postgres.restart()
        # A session from before the restart fails cleanly; a new one sees the data.
        with pytest.raises(psycopg.OperationalError):
            open_conn.execute("SELECT 1")
    finally:
        open_conn.close()
    assert postgres.port == port
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT n FROM kept ORDER BY n").fetchall()
    assert rows == [(41,), (42,)]
