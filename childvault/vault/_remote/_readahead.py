"""Reads outside a transaction (:class:`ReadAhead`): answered again from what was
read a moment before, and fetched ahead, several in one request: a record with
its key blob and fields, approve's and read's look-ups, the trust sync, an
operation's inputs; and the reads a transaction sends with its writes. Apart
from the transactions (:mod:`._txn`), which only ask it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.keys._encoding import is_hex_id
from childvault.vault._backend import request_basis_key
from childvault.vault._remote._base import RemoteBase
from childvault.vault._remote._codec import decode, decode_twice, encode
from childvault.vault._remote._methods import (
    ACTIONS_AHEAD,
    BASIS_ACTIONS,
    COSIGN_ACTIONS,
    METHODS,
    READ,
    SETTINGS_AHEAD,
    WITNESS_REACH,
    WRITE,
)
from childvault.vault._remote._refusals import _INPUTS_FALLBACK

#: ... except scans a page at a time, which are read once.
_UNCACHED = frozenset({("audit", "page"), ("records", "page"), ("records", "keyblob_page")})
#: The ``_cache`` slot of the trust sync's log tail (not a serialised call).
_TAIL = "tail"
#: A record write first checks that the vault accepts records (the meta row,
#: then the log's decommission entries: ``Session.accepting_records``), then
#: reads the settings: one request for all of them (an import, ``record add``).
_ACCEPTING = "accepting_records"
_DECOMMISSION = ("vault.decommission",)


class _Twice:
    """A kept answer still in the form an operation's inputs carry it, encoded
    twice (:meth:`RemoteBackend._keep_inputs`): :func:`_held` decodes it."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: Any) -> None:
        self.encoded = encoded


def _held(value: Any) -> Any:
    """The value of a kept answer: encoded once (as every answer), or a :class:`_Twice`."""
    if type(value) is _Twice:
        return decode_twice(value.encoded)
    return decode(value)


class ReadAhead(RemoteBase):
    """The reads of :class:`~childvault.vault._remote.RemoteBackend` outside a
    transaction, and the reads ahead its transactions send (see the module doc)."""

    def _operation_kind(self) -> str | None:
        return self._operation[0] if self._operation is not None else None

    def _txn_ahead(self, repo: str, method: str, args: Sequence[Any]) -> list[str]:
        """Reads sent with a write that has a result, inside a transaction: what
        the transactions of approve and read read next (the head and last
        entry for their append; the signers, checkpoints and this officer's
        latest checkpoint for the approval's checkpoint)."""
        ahead = []
        if (repo, method) in {("access", "decide"), ("access", "use_grant")}:
            ahead.append(self._key("audit", "last", (), {}))
        if (repo, method) == ("access", "decide") and self._operation_kind() == "approval":
            signer = getattr(self._audit.signer, "name", None)
            ahead.append(self._key("users", "all", (), {}))
            if not self._resumes_checkpoints():
                ahead.append(self._key("checkpoints", "all", (), {}))
            if isinstance(signer, str):
                ahead.append(self._key("checkpoints", "latest_by", (signer,), {}))
            # The witness reach its checkpoint's commit raises (AuditService.signed).
            ahead.append(self._key("meta", "get", (WITNESS_REACH,), {}))
        return [key for key in ahead if key not in self._reads]

    def _resumes_checkpoints(self) -> bool:
        """Whether this is an approval whose checkpoint reads only the stored
        checkpoints its officer's latest one does not cover (``checkpoints.since``,
        answered with its inputs by a server that knows it), not all of them:
        then they are not read ahead."""
        return self._operation_kind() == "approval" and "checkpoints.since" in self._server_methods

    def _call_alone(
        self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        """A call outside a transaction: a write at once, a read perhaps from the cache
        (a saved state put off is committed first: :meth:`_call`)."""
        if (repo, method) == ("release", "redeem") and len(args) == 1 and not kwargs:
            released = self._released.pop(args[0], None) if isinstance(args[0], str) else None
            if released is not None:
                # Answered with the commit of this read's use (_after_commit).
                return decode(released)
        doc = {"repo": repo, "method": method, "args": encode(list(args))}
        doc["kwargs"] = encode(dict(kwargs))
        if METHODS.get(repo, {}).get(method) == WRITE or (repo, method) in _UNCACHED:
            if METHODS.get(repo, {}).get(method) == WRITE:
                self._cache.clear()
            return self._patiently(lambda: self._post("/v1/rpc", {"txn": None, **doc}))
        if self._expected is not None:
            # An announced operation whose inputs no trust sync brought: fetch them first.
            self._fetch_inputs()
        one = json.dumps(doc, separators=(",", ":"))
        self._expire()
        if one in self._cache:
            return _held(self._cache[one])
        calls = [one]
        if (repo, method) == ("records", "get_many") and len(args) == 1 and not kwargs:
            # The services read a set of records' key blobs and sealed fields with
            # their rows (_record_trust.fetch): one request for the three.
            for also in ("keyblob_many", "fields_many"):
                calls.append(
                    json.dumps(
                        {"repo": repo, "method": also, "args": doc["args"], "kwargs": {"$o": []}},
                        separators=(",", ":"),
                    )
                )
        elif (
            not kwargs
            and (
                (
                    (repo, method) == ("meta", "get")
                    and len(args) == 1
                    and (args[0] in SETTINGS_AHEAD or args[0] == _ACCEPTING)
                )
                or (
                    (repo, method) == ("audit", "entries_by_action")
                    and len(args) == 1
                    and isinstance(args[0], tuple | list)
                    and tuple(args[0]) in ACTIONS_AHEAD
                )
                or ((repo, method) == ("access", "request") and len(args) == 1)
            )
        ) or self._basis_lookup(repo, method, args, kwargs) is not None:
            # Approve and read look these up one after another: one request for all
            # (a request's basis row and its indexed log entry with the request).
            for ahead_key in self._ahead(repo, method, args, kwargs):
                if ahead_key != one and ahead_key not in self._cache:
                    calls.append(ahead_key)
        elif (repo, method) == ("records", "get") and len(args) == 1 and not kwargs:
            for also in ("keyblob", "field_names", "fields_all"):
                calls.append(
                    json.dumps(
                        {
                            "repo": repo,
                            "method": also,
                            "args": doc["args"],
                            "kwargs": doc["kwargs"],
                        },
                        separators=(",", ":"),
                    )
                )
        if len(calls) == 1:
            raw = self._patiently(lambda: self._post("/v1/rpc", {"txn": None, **doc}, raw=True))
            results = [raw]
        else:
            body = '{"txn":null,"begin":false,"commit":false,"calls":[' + ",".join(calls) + "]}"
            answer = self._patiently(lambda: self._send("/v1/rpc/batch", body.encode(), raw=True))
            if not (
                isinstance(answer, list)
                and len(answer) == 2
                and isinstance(answer[1], list)
                and len(answer[1]) == len(calls)
            ):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            results = answer[1]
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache.update(zip(calls, results, strict=True))
        if (repo, method) == ("records", "get") and len(calls) == 4:
            # fields_all answers fields(id, names) for the names field_names gave,
            # which is how the services ask (_record_trust.stored_fields).
            names = decode(results[2])
            if isinstance(names, list):
                key = {"repo": repo, "method": "fields", "args": encode([args[0], names])}
                key["kwargs"] = doc["kwargs"]
                self._cache[json.dumps(key, separators=(",", ":"))] = results[3]
        elif (repo, method) == ("records", "get_many") and len(calls) == 3:
            self._cache_singles(args[0], results)
        return decode(results[0])

    @staticmethod
    def _basis_lookup(
        repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str | None:
        """The request id of the indexed basis lookup ``basis_of`` makes
        (``entries_by_ref(("request.create",), request=ID)``), else None."""
        if (
            (repo, method) == ("audit", "entries_by_ref")
            and len(args) == 1
            and isinstance(args[0], tuple | list)
            and tuple(args[0]) == BASIS_ACTIONS
            and set(kwargs) == {"request"}
            and isinstance(kwargs["request"], str)
        ):
            return kwargs["request"]
        return None

    def _ahead(
        self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> list[str]:
        """The reads fetched with one of approve's and read's look-ups (serialised):
        the settings and log scans they read (with the accepting-records row, also
        the decommission entries a record write checks next), and, for a request (or its basis
        lookup), the request, its basis row, its indexed ``request.create``
        entry and its indexed co-signatures (read for a legal obligation)."""
        ahead = [self._key("meta", "get", (setting,), {}) for setting in SETTINGS_AHEAD]
        ahead += [
            self._key("audit", "entries_by_action", (actions,), {}) for actions in ACTIONS_AHEAD
        ]
        if (repo, method, tuple(args)) == ("meta", "get", (_ACCEPTING,)):
            ahead.append(self._key("audit", "entries_by_action", (_DECOMMISSION,), {}))
        request_id = self._basis_lookup(repo, method, args, kwargs)
        if (repo, method) == ("access", "request") and isinstance(args[0], str):
            request_id = args[0]
        if request_id is not None:
            ahead += [
                self._key("access", "request", (request_id,), {}),
                self._key("meta", "get", (request_basis_key(request_id),), {}),
                self._key("audit", "entries_by_ref", (BASIS_ACTIONS,), {"request": request_id}),
                self._key("audit", "entries_by_ref", (COSIGN_ACTIONS,), {"request": request_id}),
            ]
        return ahead

    def prefetch_log(self, start: int) -> None:
        """The trust sync: the log's head, its entries from ``start`` (one page) and
        their signatures in one request (``audit.sync``), kept as the reads
        ``audit.head``, ``audit.pages(n)`` (n >= ``start``) and
        ``audit.signatures`` would answer them, under the rules of every read
        outside a transaction (:data:`CACHE_SECONDS`, the server's generation).

        Nothing is verified here: the replay and the record scans check every
        row and signature they take from it as from the server. A no-op inside
        a transaction (the server's lock makes those reads exact; they are
        answered once anyway).
        """
        if self._depth or type(start) is not int or start < 0:
            return  # in a transaction
        if self.tail(start) is not None:
            # Already read a moment ago; an operation's inputs may still be due.
            if self._expected is not None:
                self._fetch_inputs()
            return
        sync = self._key("audit", "sync", (start,), {})
        expected, self._expected = self._expected, None
        if expected is not None:
            # The operation announced (expect_operation): its inputs come in the
            # same request, read in the same snapshot as the sync.
            inputs = self._key("inputs", expected[0], self._inputs_args(expected[1], False), {})
            extra = self._operation_ahead(expected[0])
            body = (
                '{"txn":null,"begin":false,"commit":false,"calls":['
                + ",".join([sync, inputs, *extra])
                + "]}"
            )
            try:
                answer = self._patiently(
                    lambda: self._send("/v1/rpc/batch", body.encode(), raw=True)
                )
            except _INPUTS_FALLBACK:
                # See _INPUTS_FALLBACK: the operation reads call by call. Any other
                # refusal or server error is raised, as for every other call.
                answer = None
            if answer is not None:
                if not (isinstance(answer, list) and len(answer) == 2):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                results = answer[1]
                if not (isinstance(results, list) and len(results) == 2 + len(extra)):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                self._keep_sync(start, decode(results[0]))
                self._keep_inputs(results[1])
                self._cache.update(zip(extra, results[2:], strict=True))
                return
        raw = self._patiently(
            lambda: self._post("/v1/rpc", {"txn": None, **json.loads(sync)}, raw=True)
        )
        self._keep_sync(start, decode(raw))

    def _keep_sync(self, start: int, answer: Any) -> None:
        """Keep a trust sync's answer as :meth:`prefetch_log` describes."""
        if not (
            isinstance(answer, list)
            and len(answer) == 4
            and type(answer[0]) is int
            and (answer[1] is None or isinstance(answer[1], bytes))
            and isinstance(answer[2], list)
            and all(isinstance(r, list) and len(r) == 3 and type(r[0]) is int for r in answer[2])
            and isinstance(answer[3], dict)
        ):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        size, head, rows, sigs = answer
        seqs = [r[0] for r in rows]
        if seqs != list(range(start, start + len(rows))):
            # Not the contiguous run from start asked for: the replay's own checks
            # would refuse it; keep nothing and let the ordinary reads ask.
            return
        self._expire()
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache[self._key("audit", "head", (), {})] = encode((size, head))
        complete = start + len(rows) >= size
        self._cache[_TAIL] = (start, rows, sigs, complete)

    def expect_operation(self, kind: str, ident: str) -> None:
        """Announce an operation about to run outside a transaction: ``approval``
        of request ``ident`` or ``read`` with grant ``ident``. Its inputs (the
        reads it makes, answered by ``inputs.<kind>`` in one snapshot) are then
        fetched with the next trust sync, or with the next read, in one request
        (docs/server.md "Operation inputs"). Only a hint: the operation makes
        the same calls, verifies the same rows and signatures, and a read not
        answered ahead goes to the server as before."""
        if self._depth or kind not in METHODS["inputs"] or not is_hex_id(ident):
            return
        self._expected = (kind, ident)
        self._operation = (kind, ident)

    def _fetch_inputs(self) -> None:
        """The announced operation's inputs alone (no trust sync was due)."""
        expected, self._expected = self._expected, None
        if expected is None:
            return
        # A session that has not synced yet reads its saved state first: ask
        # for it, and for the sync from it, in the same request.
        fresh = self._cache.get(_TAIL) is None
        args = self._inputs_args(expected[1], fresh)
        inputs = self._key("inputs", expected[0], args, {})
        extra = [key for key in self._operation_ahead(expected[0]) if key not in self._cache]
        body = '{"txn":null,"begin":false,"commit":false,"calls":[' + ",".join([inputs, *extra])
        try:
            answer = self._patiently(
                lambda: self._send("/v1/rpc/batch", (body + "]}").encode(), raw=True)
            )
        except _INPUTS_FALLBACK:
            return  # the operation reads call by call (see _INPUTS_FALLBACK)
        if not (
            isinstance(answer, list)
            and len(answer) == 2
            and isinstance(answer[1], list)
            and len(answer[1]) == 1 + len(extra)
        ):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        self._keep_inputs(answer[1][0])
        self._cache.update(zip(extra, answer[1][1:], strict=True))

    def _operation_ahead(self, kind: str) -> list[str]:
        """Reads an operation's transaction makes, fetched with its inputs: an
        approval's checkpoint reads the signers, the stored checkpoints, the
        officer's latest one and the witness reach (answered in the transaction
        from there, under the generation it names: :meth:`appending_transaction`)."""
        if kind != "approval":
            return []
        last = self._key("audit", "last", (), {})
        return [key for key in self._txn_ahead("access", "decide", ()) if key != last]

    def _inputs_args(self, ident: str, fresh: bool) -> tuple[Any, ...]:
        """The arguments of ``inputs.X``: the id; whether the session has not synced
        yet; whether it has not read its saved record heads (a session-8 server,
        one that answers ``add_at_head_cas``, takes that flag: then the heads and
        the sync from the older saved point come with the inputs)."""
        if not self._heads_read and "checkpoints.add_at_head_cas" in self._server_methods:
            return (ident, fresh, True)
        return (ident, fresh) if fresh else (ident,)

    def _keep_inputs(self, raw: Any) -> None:
        """Keep an ``inputs.*`` answer: each ``[repo, method, args, kwargs, result]``
        as the read it answers, under the rules of every read outside a
        transaction. Only plain reads are kept (never a sync, a scan a page at a
        time, or another operation's inputs); anything malformed is refused.

        The server sends the list as it is, each call and result encoded twice
        (:func:`encode_twice`). The calls are decoded here; each result is kept
        in that form (:class:`_Twice`) and decoded, both layers in one pass and
        with every check of the two (:func:`decode_twice`), when it is read:
        decoding it here to keep its once-encoded form walked and built every
        answer twice.
        """
        if type(raw) is not list or not all(type(r) is list and len(r) == 5 for r in raw):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        keep: dict[str, Any] = {}
        sync: tuple[int, Any] | None = None
        for repo, method, args, kwargs, result in raw:
            if (repo, method) == ("audit", "sync"):
                start = decode_twice(args)
                if not (isinstance(start, list) and len(start) == 1 and type(start[0]) is int):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                sync = (start[0], decode_twice(result))
                continue
            if (
                not isinstance(repo, str)
                or not isinstance(method, str)
                or METHODS.get(repo, {}).get(method) != READ
                or repo == "inputs"
                or (repo, method) in _UNCACHED
                or (repo, method) in {("audit", "sync"), ("audit", "last")}
            ):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            a, kw = decode_twice(args), decode_twice(kwargs)
            if not isinstance(a, list) or not isinstance(kw, dict):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            keep[self._key(repo, method, a, kw)] = _Twice(result)
        self._expire()
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache.update(keep)
        if sync is not None and sync[0] >= 0:
            self._keep_sync(*sync)

    def _tail(self) -> tuple[int, list[Any], dict[Any, Any], bool] | None:
        if self._depth:
            return None
        self._expire()
        held = self._cache.get(_TAIL)
        return cast("tuple[int, list[Any], dict[Any, Any], bool] | None", held)

    def tail(self, start: int) -> list[Any] | None:
        """The log's rows from ``start`` to the head the trust sync read, if it read
        them all (None: ask the server)."""
        held = self._tail()
        if held is None:
            return None
        first, rows, _, complete = held
        if not complete or start < first:
            return None
        return rows[start - first :]

    def tail_signatures(self, first: int, last: int) -> dict[Any, Any] | None:
        """``audit.signatures(first, last)`` from the trust sync, if it read those entries."""
        held = self._tail()
        if held is None:
            return None
        begin, rows, sigs, _ = held
        if not rows or first < begin or last > rows[-1][0]:
            return None
        return {s: sig for s, sig in sigs.items() if type(s) is int and first <= s <= last}

    def _cache_singles(self, record_ids: Any, results: Sequence[Any]) -> None:
        """Answer the one-record reads of what ``records.get_many`` read ahead
        (``get``, ``keyblob``, ``field_names``, ``fields`` of those names) from
        the same answer, as the read-ahead of ``records.get`` does: code that
        still asks record by record after a batched read makes no round trip."""
        rows, blobs, fields = (decode(r) for r in results)
        if not (
            isinstance(record_ids, list | tuple)
            and isinstance(rows, dict)
            and isinstance(blobs, dict)
            and isinstance(fields, dict)
        ):
            return

        def put(method: str, call_args: list[Any], result: Any) -> None:
            key = {"repo": "records", "method": method, "args": encode(call_args)}
            key["kwargs"] = {"$o": []}
            self._cache[json.dumps(key, separators=(",", ":"))] = encode(result)

        for rid in record_ids:
            stored = fields.get(rid)
            if not isinstance(rid, str) or not isinstance(stored, dict):
                continue  # not a record id the server answered for: ask it alone
            names = sorted(stored)
            put("get", [rid], rows.get(rid))
            put("keyblob", [rid], blobs.get(rid))
            put("field_names", [rid], names)
            put("fields", [rid, names], stored)
            put("fields_all", [rid], stored)
