"""Session fixtures for the province-scale tests: a real PostgreSQL, a real OpenBao Raft cluster.

Missing parts fail with a message naming what is missing (``FixtureError``);
the one skip is a non-root run in which ``initdb`` itself refuses (a sandbox),
said with its reason. As root (CI) nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.postgres import InitdbRefused, PostgresServer
from tests.fixtures.raft import RaftCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL 18 server for the session (tests make their own roles and databases)."""
    server = PostgresServer()
    try:
        server.start()
    except InitdbRefused as exc:
        server.close()
        pytest.skip(f"not root and initdb refused to run here: {exc}")
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def raft_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    """A healthy three-node OpenBao Raft cluster; a test that kills a node restarts it."""
    with RaftCluster(tmp_path_factory.mktemp("raft")) as cluster:
        yield cluster
