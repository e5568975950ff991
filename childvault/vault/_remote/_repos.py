"""The repositories of the remote backend, each method a remote call (a few with a
client-side part: log pages from the trust sync, statements sent compactly),
and the vault's description a client reads first. They call the backend
through :class:`RepoHost` only, so they sit below it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.vault._backend import AuditRow
from childvault.vault._remote._methods import METHODS
from childvault.vault._statements import BatchMember, Envelope, pack_members

#: The most entries one ``audit.page`` (and ``audit.sync``) answers.
PAGE_MAX = 5000


class RepoHost(Protocol):
    """What a repository calls: the backend (:class:`~childvault.vault._remote.RemoteBackend`)."""

    #: The calls the server answers (``repo.method``, from its vault description).
    _server_methods: frozenset[str]

    def call(self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run ``repo.method(*args, **kwargs)`` on the server."""

    def tail(self, start: int) -> list[Any] | None:
        """The log's rows from ``start``, if the trust sync read them all."""

    def tail_signatures(self, first: int, last: int) -> dict[Any, Any] | None:
        """``audit.signatures(first, last)`` from the trust sync, if it read those entries."""


class _Repo:
    """One repository: each attribute is a remote call."""

    def __init__(self, backend: RepoHost, name: str) -> None:
        self._backend = backend
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method not in METHODS[self._name]:
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._backend.call(self._name, method, args, kwargs)

        call.__name__ = method
        return call


class _Checkpoints(_Repo):
    """The checkpoints repository; ``since`` of a server that lacks it is ``all``, filtered."""

    def since(self, size: int) -> Any:
        """See :meth:`~childvault.vault._backend.CheckpointRepo.since`."""
        if "checkpoints.since" in self._backend._server_methods:
            return self._backend.call("checkpoints", "since", (size,), {})
        # An older server (before round 2 session 11): the same rows, read wholesale.
        return [row for row in self._backend.call("checkpoints", "all", (), {}) if row.size >= size]


class _Audit(_Repo):
    """The audit repository: pages are fetched one call at a time; rows convert locally."""

    #: The acting user's identity: :func:`childvault.vault._audit.append` signs with it.
    signer: Any = None

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        """Unconverted rows from ``start``, a page (one request) at a time.

        Answered from the trust sync's tail when it holds every entry from
        ``start`` to the head it read (:meth:`RemoteBackend.prefetch_log`).
        A page shorter than the server's page size is the last one: the log
        ended there when it was read, as an empty next page would say.
        """
        tail = self._backend.tail(start)
        if tail is not None:
            for i in range(0, len(tail), max(batch, 1)):
                yield tail[i : i + max(batch, 1)]
            return
        after = start
        while True:
            rows = self._backend.call("audit", "page", (after,), {"batch": batch})
            if not rows:
                return
            yield rows
            if len(rows) < min(max(batch, 1), PAGE_MAX):
                return
            after = int(rows[-1][0]) + 1

    def signatures(self, first: int, last: int) -> Any:
        """The actors' signatures of entries ``first`` to ``last``: from the trust
        sync's tail when it holds them, else one request."""
        held = self._backend.tail_signatures(first, last)
        if held is not None:
            return held
        return self._backend.call("audit", "signatures", (first, last), {})

    @staticmethod
    def row(raw: Any) -> AuditRow:
        """One row of :meth:`pages` as (seq, entry, hash), types checked."""
        seq, entry, digest = raw
        if type(seq) is not int or not isinstance(entry, bytes) or not isinstance(digest, bytes):
            raise IntegrityError(_t("the server sent a malformed log row"))
        return seq, entry, digest

    def entries(self, start: int = 0, *, batch: int = 5000) -> Iterator[AuditRow]:
        """Every entry from ``start``, streamed a page at a time."""
        for rows in self.pages(start, batch=batch):
            for raw in rows:
                yield self.row(raw)


class _Statements(_Repo):
    """The statements repository: an import's record statements go compactly."""

    def add_statements(self, items: Sequence[tuple[int, Envelope | BatchMember]]) -> None:
        """Keep each ``(seq, statement)`` beside its entry (as ``add(seq, bytes)``).

        The members of one batch statement go in one ``statements.add_members``
        call, the batch's envelope once (:func:`pack_members`); the server
        rebuilds each member's bytes, checks them against the entry naming
        them and stores exactly those bytes. Any other statement goes as ``add``.
        """
        groups: list[tuple[Envelope, list[tuple[int, BatchMember]]]] = []
        for seq, statement in items:
            if not isinstance(statement, BatchMember):
                self._backend.call("statements", "add", (seq, statement.to_bytes()), {})
            elif groups and groups[-1][0] is statement.batch:
                groups[-1][1].append((seq, statement))
            else:
                groups.append((statement.batch, [(seq, statement)]))
        for _, members in groups:
            envelope, indexes, lengths, proofs = pack_members([m for _, m in members])
            seqs = [seq for seq, _ in members]
            self._backend.call(
                "statements", "add_members", (seqs, envelope, indexes, lengths, proofs), {}
            )


class Bootstrap:
    """What a client needs besides the rows: config, schema, own key slot, witness."""

    def __init__(self, doc: dict[str, Any]) -> None:
        try:
            self.config = dict(doc["config"])
            self.schema = str(doc["schema"])
            self.slot = str(doc["slot"])
            self.witness = [str(n) for n in doc["witness"]]
            # The calls the server answers (absent from an older server: then
            # none of those added since is used).
            methods = doc.get("methods", [])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(_t("the server sent a malformed vault description")) from exc
        if not isinstance(methods, list):
            raise IntegrityError(_t("the server sent a malformed vault description"))
        self.methods = frozenset(str(m) for m in methods)
