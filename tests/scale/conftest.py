"""The province-scale tests use the session's one PostgreSQL server and one OpenBao
Raft cluster (``postgres``, ``raft_cluster``: tests/fixtures/sessions.py, imported by
tests/conftest.py)."""
