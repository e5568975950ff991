"""Key slots in server mode: the server's ``keyslots.json``, written only through checks.

In the embedded mode the services rewrite the key-slot file of the home
directly (enrolment, ``keys share``, ``keys rotate``, ``user disable``). In
server mode that file belongs to the server, and a client holds only its own
slot (in the scratch home, :meth:`RemoteBackend.scratch_home`). The services
still seal every slot here, in the client; :class:`RemoteSlots` collects what
they write and sends it as ``slots.put`` calls inside the *next* transaction,
because the services write a slot just before the transaction that logs the
signed statement justifying it. The server stages the slots and stores them
only if, once that transaction's entries have been replayed and verified, the
verified trust state allows each one (``childvault.server._vault``). Slots
written after the last transaction (the end of ``keys rotate``) go in a
transaction of their own when the vault closes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from childvault.keys import KeySlots


class _Caller(Protocol):
    def call(self, repo: str, method: str, args: Any, kwargs: dict[str, Any]) -> Any: ...


class RemoteSlots(KeySlots):
    """The server's key slots as the services see them (``Session.key_slots``).

    ``path`` is the scratch home's slot file (holding only the caller's own
    slot, which :meth:`open` reads); ``me`` is the caller's name.
    """

    def __init__(self, path: Path, backend: _Caller, me: str) -> None:
        super().__init__(path)
        self._backend = backend
        self._me = me
        #: Slots waiting for the next transaction: name -> sealed text (None: remove).
        self.pending: dict[str, str | None] = {}
        #: Set when a transaction failed: what the service writes while it undoes
        #: its slot changes belongs to nothing the server stored, so it is dropped.
        self.discarding = False

    def users(self) -> list[str]:
        """Names of the users holding a slot on the server (names only, never slots)."""
        names = self._backend.call("slots", "users", (), {})
        return sorted({*map(str, names), *(n for n, s in self.pending.items() if s)})

    def install(self, name: str, vault_id: str, sealed: str | None) -> str | None:
        """Queue ``name``'s slot for the next transaction. Returns None: the server
        hands out no slot but the caller's, and a failed transaction drops the queue
        (there is nothing to put back)."""
        if self.discarding:
            return None
        self.pending[name] = sealed
        if name == self._me:
            # The caller's own slot is also the one this process opens.
            super().install(name, vault_id, sealed)
        return None

    def remove(self, name: str) -> None:
        """Queue the removal of ``name``'s slot for the next transaction."""
        if not self.discarding:
            self.pending[name] = None

    def take(self) -> dict[str, str | None]:
        """The queued slots (emptied)."""
        out, self.pending = self.pending, {}
        return out


__all__ = ["RemoteSlots"]
