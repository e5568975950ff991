"""The appender and the run rule agree (docs/trust.md, "Log entries").

Whatever mix of actors and actions one ``_audit.append`` call holds, the
entries it writes pass :class:`_audit.RunCheck` with every signature verified
over the message the rule derives; only the entries that close a run of the
signer's entries, or are of an action signed alone, carry a signature; and
taking any one signature away makes the rule refuse.
"""

from __future__ import annotations

from datetime import UTC, datetime

import nacl.exceptions
import nacl.signing
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from childvault.keys import Identity
from childvault.vault import _audit

_ME = Identity("worker1", PrivateKey(bytes(32)), nacl.signing.SigningKey(bytes(range(32))))
_KEY = _ME.public.signing_key


class _Log:
    def __init__(self, start: int) -> None:
        self.signer = _ME
        self.seq, self.prev = start, bytes(32) if start else None
        self.rows: list[tuple[int, bytes, bytes, bytes | None]] = []

    def head(self) -> tuple[int, bytes | None]:
        return self.seq, self.prev

    def append(self, rows: list[tuple[int, bytes, bytes, bytes | None]]) -> None:
        self.rows.extend(rows)


def _check(rows: list[tuple[int, bytes, bytes, bytes | None]]) -> int | None:
    """The replay's rule over ``rows``: worker1 is registered, anyone else is not."""
    runs = _audit.RunCheck()
    verify = nacl.signing.VerifyKey(_KEY).verify
    for seq, entry, digest, sig in rows:
        obj = _audit.decode_entry(entry)
        actor, action = obj["actor"], obj["action"]
        if actor != "worker1":
            bad = runs.other()
        elif sig is None:
            bad = runs.unsigned(seq, actor, _KEY, action)
        else:
            try:
                verify(runs.message(seq, actor, _KEY, action, digest), sig)
            except nacl.exceptions.BadSignatureError:
                first = runs.end()
                return seq if first is None else first
            bad = runs.signed(seq, actor, _KEY, action)
        if bad is not None:
            return bad
    return runs.end()


_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["worker1", "worker1", "worker1", "officer1"]),
        st.sampled_from(["record.create", "record.list", "grant.read", "audit.checkpoint"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS, start=st.integers(0, 2**40))
def test_every_append_passes_the_run_rule_and_no_signature_is_spare(
    events: list[tuple[str, str]], start: int
) -> None:
    log = _Log(start)
    _audit.append(log, [_audit.Event(a, b) for a, b in events], datetime.now(UTC))
    assert _check(log.rows) is None
    for i, ((actor, action), row) in enumerate(zip(events, log.rows, strict=True)):
        closes = (
            action in _audit.SIGN_ALONE
            or i == len(events) - 1
            or events[i + 1][0] != actor
            or events[i + 1][1] in _audit.SIGN_ALONE
        )
        assert (row[3] is not None) == (actor == "worker1" and closes)
    # Any one signature taken away: the rule refuses (never a silent pass).
    for i, row in enumerate(log.rows):
        if row[3] is not None:
            stripped = [*log.rows[:i], (*row[:3], None), *log.rows[i + 1 :]]
            assert _check(stripped) is not None
