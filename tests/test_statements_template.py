"""Issue 18, third round (session 4): a signed statement's envelope bytes are
built by a template, and a log entry's type check is done member by member, on
the import path; both must give RFC 8785's bytes exactly (what is hashed,
signed and named by digest)."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.vault import _audit
from childvault.vault._statements import Envelope
from tests.test_audit_fastpath import _events

_user = st.from_regex(r"[a-z][a-z0-9_.-]{0,62}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=400),
    signatures=st.lists(
        st.tuples(st.one_of(_user, st.text(max_size=6)), st.binary(min_size=64, max_size=64)),
        min_size=1,
        max_size=8,
    ),
)
def test_envelope_bytes_are_rfc8785_of_its_json(
    payload: bytes, signatures: list[tuple[str, bytes]]
) -> None:
    envelope = Envelope(payload, tuple(signatures))
    assert envelope.to_bytes() == bytes(rfc8785.dumps(envelope.to_json()))


@settings(max_examples=500, deadline=None)
@given(
    _events(),
    st.integers(0, 2**40),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),  # no U+0000
    st.none() | st.binary(min_size=32, max_size=32),
)
def test_an_entry_is_rfc8785_of_its_members(
    event: _audit.Event, seq: int, ts: str, prev: bytes | None
) -> None:
    """``encode_entry`` checks the members' types one by one instead of walking
    the whole entry; the bytes stay RFC 8785's."""
    obj = {
        "seq": seq,
        "ts": ts,
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "records": list(event.records),
        "fields": list(event.fields),
        "purpose": event.purpose,
        "request": event.request,
        "grant": event.grant,
        "detail": dict(event.detail),
        "prev": None if prev is None else prev.hex(),
    }
    assert _audit.encode_entry(seq, ts, event, prev) == bytes(rfc8785.dumps(obj))
