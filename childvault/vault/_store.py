"""Old import path of the SQLCipher store, kept so code written against it still imports.

The store is now :class:`childvault.vault._sqlcipher.SQLCipherBackend` behind the
:class:`childvault.vault._backend.Backend` protocol; row types live in
:mod:`childvault.vault._backend`.
"""

from __future__ import annotations

from childvault.vault._backend import (
    CheckpointRow,
    GrantRow,
    NewRecord,
    RecordRow,
    RequestRow,
    UserRow,
)
from childvault.vault._sqlcipher import MIGRATIONS as _MIGRATIONS
from childvault.vault._sqlcipher import SQLCipherBackend as Store

__all__ = [
    "_MIGRATIONS",
    "CheckpointRow",
    "GrantRow",
    "NewRecord",
    "RecordRow",
    "RequestRow",
    "Store",
    "UserRow",
]
