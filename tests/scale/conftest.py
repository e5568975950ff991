"""The province-scale tests use the session's one PostgreSQL server and one OpenBao
Raft cluster (``postgres``, ``raft_cluster``: tests/fixtures/sessions.py, imported by
tests/conftest.py)."""

from tests.scale._replicas import fresh_pg_vault  # noqa: F401  (a fixture for this directory)
