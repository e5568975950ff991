"""A record statement's template bytes equal the canonical encoder's (issue 18,
round 2 session 7): what a batch statement's leaf hashes when an import signs
it and when a record written in a batch is checked before use.

The judge is :func:`childvault.vault._audit.canonical` (RFC 8785's bytes, the
``rfc8785`` package for anything but plain values), so a template that drifted
from the stored format would fail here and in tests/vectors.
"""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from childvault.vault._audit import canonical, canonical_plain
from childvault.vault._statements import record_statement, record_statement_bytes

_HEX = st.text("0123456789abcdef", min_size=1, max_size=64)
# Mostly names the template takes, sometimes text it must leave to the encoder.
_NAME = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.text(max_size=12),
)


@given(
    vault=_HEX,
    record=_HEX,
    at=st.one_of(st.just("2026-12-01T04:00:00Z"), st.text(max_size=30)),
    version=st.integers(min_value=1, max_value=2**53 - 1),
    type_name=_NAME,
    consent=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=8)),
    metadata=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=8)),
    fields=st.dictionaries(
        _NAME, st.tuples(st.integers(min_value=1, max_value=99), st.binary(max_size=40))
    ),
    keyblob=st.binary(max_size=40),
)
@example(
    vault="ab",
    record="cd",
    at='2026"\\',
    version=1,
    type_name="child",
    consent={},
    metadata={},
    fields={},
    keyblob=b"",
)
def test_template_equals_the_canonical_encoder(
    vault: str,
    record: str,
    at: str,
    version: int,
    type_name: str,
    consent: dict[str, str],
    metadata: dict[str, str],
    fields: dict[str, tuple[int, bytes]],
    keyblob: bytes,
) -> None:
    statement = record_statement(
        vault_id=vault,
        at=at,
        record=record,
        version=version,
        type_name=type_name,
        consent=consent,
        metadata=metadata,
        fields=[(name, fv, ct) for name, (fv, ct) in fields.items()],
        keyblob=keyblob,
    )
    assert record_statement_bytes(statement) == canonical(statement)
    assert record_statement_bytes(statement) == bytes(rfc8785.dumps(statement))


@given(
    st.fixed_dictionaries(
        {
            "v": st.one_of(st.just(1), st.just(True), st.just(1.0), st.just(2)),
            "kind": st.sampled_from(["record.version", 'a"b', "é"]),
            "vault": st.just("ab"),
            "at": st.just("2026-12-01T04:00:00Z"),
            "record": st.just("cd"),
            "version": st.one_of(st.just(1), st.just(True), st.just(-1), st.just(2**60)),
            "type": st.just("child"),
            "consent": st.just("00"),
            "metadata": st.just("11"),
            "fields": st.one_of(
                st.just({"a": [1, "ff"]}),
                st.just({"a": [True, "ff"]}),
                st.just({"a": (1, "ff")}),
                st.just({"a": [1, "ff", 2]}),
                st.just({"a": [1, 2]}),
                st.just({"é": [1, "ff"], "z": [1, "ff"]}),
            ),
            "keyblob": st.just("22"),
        }
    )
)
def test_odd_shapes_fall_back_to_the_encoder(statement: dict[str, Any]) -> None:
    """Members of another type or shape (a bool for an int, a tuple for a list,
    text that JSON escapes, an integer beyond the safe range) give exactly what
    the encoder used before the template gave (canonical_plain)."""
    assert record_statement_bytes(statement) == canonical_plain(statement)
