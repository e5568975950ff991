"""The server's refusals as the exceptions the remote backend raises and catches
(and :class:`_Redo`, which never leaves it): shared by the transport that raises
them and the transaction layers that catch them, so kept below both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from childvault import keys as _errors
from childvault.keys import AccessDenied, ChildVaultError, ProviderUnavailable, StorageError

#: Error classes a server may name; anything else becomes a plain ChildVaultError.
_ERRORS: dict[str, type[ChildVaultError]] = {
    name: cls
    for name in dir(_errors)
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, ChildVaultError)
}


class _Busy(ProviderUnavailable):
    """Another client's transaction holds the server (503 ``busy``): try again."""


class _WitnessRefused(StorageError):
    """The server committed, but its HTTP witness did not cosign the checkpoint (502)."""


class _UnknownMethod(ChildVaultError):
    """The server does not know the method called (400 ``unknown_method``): an older server."""


class _RoleRefused(AccessDenied):
    """The server refused the call to the caller's role or user (403 ``role``)."""


class _Unverified(ChildVaultError):
    """The server refused what it could not verify, nothing stored (409
    ``unverified``): among others, log entries that do not link to its head."""


class _Moved(_Unverified):
    """A stored checkpoint read in an appending transaction covers more entries
    than the head it predicted: the log moved past the reads it predicted from
    (a commit through another replica, which this replica's generation does
    not count). Nothing of it is stored; it runs again from the real head."""


class _Redo(Exception):
    """The import batch in flight was refused for a moved head (409, nothing
    stored): it is written again from the real head, then the batch prepared
    behind it (:meth:`RemoteBackend.pipelined_appends`). Never leaves the backend."""

    def __init__(self, body: Callable[[], Any]) -> None:
        super().__init__()
        self.body = body


#: The only answers to an operation's inputs (``inputs.*``) after which the
#: operation reads call by call instead. An older server that has no
#: ``inputs`` methods (400 ``unknown_method``). And the designed refusal to the
#: role or user (403 ``role``: a staff member's approval, another user's
#: grant): the operation's own check then refuses it and logs the refusal in
#: the audit log, which raising the server's refusal here would skip.
_INPUTS_FALLBACK = (_UnknownMethod, _RoleRefused)
