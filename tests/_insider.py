"""An insider: a user who opens the vault's database directly, bypassing the library.

Every user can: their key slot holds the database key (DESIGN section 2; the
threat model in SECURITY.md). The tamper tests use this to edit, delete and
insert rows and then check that the library notices, or to document what it
cannot notice. They go through the neutral operations below, not a driver's
SQL, so the same tests can run against another storage backend: only
:class:`_Driver` and :func:`_open_driver` know how a backend is reached.

    with Insider(world, "worker1") as insider:
        insider.update("grants", {"uses": 0}, where={"id": grant})
        insider.delete("audit", where={"seq": at_least(7)})

``execute`` is the escape hatch for what the neutral operations cannot say;
SQL passed to it is backend-specific, so use it rarely.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from childvault.keys import Identity, KeySlots

if TYPE_CHECKING:
    from tests.conftest import World

Row = tuple[Any, ...]

# Table and column names are spliced into SQL: allow only plain identifiers.
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class _Compare:
    """A comparison other than equality in a ``where`` mapping."""

    op: str
    value: object


def at_least(value: object) -> _Compare:
    """``where={"seq": at_least(7)}``: the column is greater than or equal to ``value``."""
    return _Compare(">=", value)


class _Driver(Protocol):
    """What a backend must provide for :class:`Insider` (one connection, autocommit)."""

    #: The driver's parameter placeholder ("?" for SQLite, "%s" for psycopg).
    placeholder: str

    def run(self, sql: str, params: Sequence[object]) -> tuple[list[Row], int]:
        """Run one statement; return its rows (bytes for binary) and the rows changed."""
        ...

    def tables(self) -> list[str]:
        """The names of the vault's tables."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


class _SqlCipherDriver:
    """The SQLCipher file, opened with the raw database key, as the store opens it."""

    placeholder = "?"

    def __init__(self, path: Path, key: bytes) -> None:
        import sqlcipher3

        self._conn = sqlcipher3.connect(str(path), isolation_level=None)
        self._conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        # As the library's own connections (and any PostgreSQL database) do:
        # deleting a record takes its fields, key blob and index tags with it.
        self._conn.execute("PRAGMA foreign_keys = ON")

    def run(self, sql: str, params: Sequence[object]) -> tuple[list[Row], int]:
        cursor = self._conn.execute(sql, tuple(params))
        rows = [tuple(r) for r in cursor.fetchall()]
        return rows, cursor.rowcount

    def tables(self) -> list[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return [str(name) for (name,) in rows]

    def close(self) -> None:
        self._conn.close()


def _open_driver(home: Path, identity: Identity) -> _Driver:
    """Open the home's database the way any user can: key slot -> database key."""
    config = json.loads((home / "config.json").read_text(encoding="utf-8"))
    key = KeySlots(home / "keyslots.json").open(identity, config["vault_id"])["db"]
    # One backend today. Another (PostgreSQL) adds its driver here, chosen by
    # what the home's config names; the operations of Insider stay as they are.
    return _SqlCipherDriver(home / "vault.db", key)


class Insider:
    """A user with direct access to the vault's database (see the module docstring).

    ``world_or_home`` is a test :class:`~tests.conftest.World` (then
    ``identity`` may be a user name) or a home directory (then ``identity``
    must be an unlocked :class:`~childvault.keys.Identity`). Writes take effect
    at once (no transaction is left open). Values come back as Python values,
    binary columns as ``bytes``.
    """

    def __init__(self, world_or_home: World | Path, identity: Identity | str) -> None:
        if isinstance(world_or_home, Path):
            if not isinstance(identity, Identity):
                raise TypeError("with a home directory, pass an unlocked Identity")
            home, who = world_or_home, identity
        else:
            home = world_or_home.home
            who = world_or_home.ids[identity] if isinstance(identity, str) else identity
        self._driver = _open_driver(home, who)

    def __enter__(self) -> Insider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._driver.close()

    # -- neutral operations ------------------------------------------------

    def tables(self) -> list[str]:
        """Every table of the vault (what a leakage scan reads)."""
        return self._driver.tables()

    def rows(
        self,
        table: str,
        columns: Sequence[str] | None = None,
        *,
        where: Mapping[str, object] | None = None,
        order_by: str | None = None,
    ) -> list[Row]:
        """The rows of ``table`` (all columns, or ``columns`` in that order).

        ``where`` maps columns to values (equality) or to :func:`at_least`;
        ``order_by`` names one column, ascending.
        """
        cols = "*" if columns is None else ", ".join(_ident(c) for c in columns)
        clause, params = self._where(where)
        order = "" if order_by is None else f" ORDER BY {_ident(order_by)}"
        return self._driver.run(f"SELECT {cols} FROM {_ident(table)}{clause}{order}", params)[0]

    def count(self, table: str, *, where: Mapping[str, object] | None = None) -> int:
        """How many rows of ``table`` match ``where``."""
        clause, params = self._where(where)
        rows, _ = self._driver.run(f"SELECT count(*) FROM {_ident(table)}{clause}", params)
        return int(rows[0][0])

    def update(self, table: str, values: Mapping[str, object], where: Mapping[str, object]) -> int:
        """Set ``values`` in the rows matching ``where``; return how many changed."""
        if not values:
            raise ValueError("nothing to update")
        ph = self._driver.placeholder
        sets = ", ".join(f"{_ident(c)} = {ph}" for c in values)
        clause, params = self._where(where)
        sql = f"UPDATE {_ident(table)} SET {sets}{clause}"
        return self._driver.run(sql, [*values.values(), *params])[1]

    def delete(self, table: str, where: Mapping[str, object] | None = None) -> int:
        """Delete the rows matching ``where`` (every row without it); return how many."""
        clause, params = self._where(where)
        return self._driver.run(f"DELETE FROM {_ident(table)}{clause}", params)[1]

    def insert(self, table: str, row: Mapping[str, object]) -> None:
        """Insert one row (columns not named take their defaults)."""
        cols = ", ".join(_ident(c) for c in row)
        marks = ", ".join(self._driver.placeholder for _ in row)
        self._driver.run(
            f"INSERT INTO {_ident(table)} ({cols}) VALUES ({marks})", list(row.values())
        )

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Escape hatch: run backend-specific SQL; return its rows."""
        return self._driver.run(sql, params)[0]

    def _where(self, where: Mapping[str, object] | None) -> tuple[str, list[object]]:
        if not where:
            return "", []
        ph = self._driver.placeholder
        terms, params = [], []
        for column, wanted in where.items():
            if isinstance(wanted, _Compare):
                terms.append(f"{_ident(column)} {wanted.op} {ph}")
                params.append(wanted.value)
            elif wanted is None:
                terms.append(f"{_ident(column)} IS NULL")
            else:
                terms.append(f"{_ident(column)} = {ph}")
                params.append(wanted)
        return " WHERE " + " AND ".join(terms), params


def _ident(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"not a plain table or column name: {name!r}")
    return f'"{name}"'
