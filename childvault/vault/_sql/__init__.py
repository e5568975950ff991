"""The repositories both stores share: one copy of every SQL statement.

The SQLCipher store (``_sqlcipher``) and the PostgreSQL store (``_postgres``)
differ in how they connect, migrate, lock and report errors; the tables and the
statements over them are the same, so they are written once here against
:class:`~childvault.vault._sql._conn.SqlConnection`.
"""

from __future__ import annotations

from childvault.vault._sql._conn import SqlConnection
from childvault.vault._sql._records import Records
from childvault.vault._sql._tables import (
    Access,
    AuditLog,
    Checkpoints,
    Custodians,
    Meta,
    Statements,
    Users,
)

__all__ = ["Repositories", "SqlConnection"]


class Repositories:
    """The repositories of a :class:`~childvault.vault._backend.Backend` over one connection."""

    def __init__(self, connection: SqlConnection) -> None:
        self.meta = Meta(connection)
        self.users = Users(connection)
        self.custodians = Custodians(connection)
        self.records = Records(connection)
        self.access = Access(connection)
        self.audit = AuditLog(connection)
        self.checkpoints = Checkpoints(connection)
        self.statements = Statements(connection)
