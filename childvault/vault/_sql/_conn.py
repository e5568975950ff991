"""What the shared repositories need from a store's connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from childvault._i18n import _t
from childvault.keys import IntegrityError


class Rows(Protocol):
    """A statement's result: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int:
        """Rows changed by an UPDATE / INSERT / DELETE."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


class SqlConnection(Protocol):
    """A store's connection, as the repositories use it.

    Statements are written once, with ``?`` placeholders, in the SQL both
    SQLite 3.44+ and PostgreSQL accept (``ON CONFLICT`` upserts,
    ``RETURNING``, ``string_agg``); a connection whose driver wants other
    placeholders rewrites them. Errors come out as childvault errors.
    """

    def q(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Execute one statement."""
        ...

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Execute one statement for many rows."""
        ...

    def append(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert audit rows; a duplicate sequence number is an :class:`IntegrityError`."""
        ...


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ...``: one placeholder per value, for ``IN (...)`` (never empty)."""
    return ", ".join("?" * len(values))


def as_bytes(value: Any) -> bytes:
    """A binary column as bytes.

    Someone editing the database may have stored text (e.g. with SQL
    ``replace``, or by altering the column's type); that is tampering, caught by
    the hash and signature checks, not a crash.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise IntegrityError(
        _t("a binary column holds a value of the wrong type: the database was altered")
    )
