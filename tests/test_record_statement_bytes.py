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
from childvault.vault._statements import (
    record_statement,
    record_statement_bytes,
    record_statement_leaf,
    sign_batch,
    sign_first_versions,
)
from tests.vectors.generate import identity

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


_FIELD_ROWS = st.lists(
    st.tuples(
        # Repeated names sometimes (the statement keeps the last of them).
        st.one_of(_NAME, st.sampled_from(["name", "health"])),
        st.one_of(
            st.integers(min_value=0, max_value=99),
            st.just(2**60),
            st.just(-1),
            st.just(True),
        ),
        st.binary(max_size=40),
    ),
    max_size=12,
)


@given(
    vault=st.one_of(_HEX, st.text(max_size=8)),
    record=_HEX,
    at=st.one_of(st.just("2026-12-01T04:00:00.000000Z"), st.text(max_size=30)),
    version=st.one_of(st.integers(min_value=1, max_value=2**53 - 1), st.just(2**60), st.just(True)),
    type_name=_NAME,
    consent=st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.one_of(st.text(max_size=8), st.booleans(), st.lists(st.text(max_size=6))),
    ),
    metadata=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text(max_size=8)),
    fields=_FIELD_ROWS,
    keyblob=st.binary(max_size=40),
)
@example(
    vault="ab",
    record="cd",
    at="2026",
    version=1,
    type_name="child",
    consent={},
    metadata={},
    fields=[("a", 1, b"x"), ("a", 2, b"y")],
    keyblob=b"",
)
def test_one_pass_leaf_equals_the_statement_bytes(
    vault: str,
    record: str,
    at: str,
    version: int,
    type_name: str,
    consent: dict[str, Any],
    metadata: dict[str, str],
    fields: list[tuple[str, int, bytes]],
    keyblob: bytes,
) -> None:
    """record_statement_leaf (an import's leaves, issue 18 round 2 session 9) gives
    record_statement_bytes of record_statement for every input, the template's
    and the encoder's alike (odd texts, repeated names, out-of-range numbers)."""
    args: dict[str, Any] = {
        "vault_id": vault,
        "at": at,
        "record": record,
        "version": version,
        "type_name": type_name,
        "consent": consent,
        "metadata": metadata,
        "keyblob": keyblob,
    }
    expected = record_statement_bytes(record_statement(fields=list(fields), **args))
    # A generator as the fields, as a caller may pass (consumed once).
    assert record_statement_leaf(fields=iter(fields), **args) == expected


@given(
    st.lists(
        st.tuples(_HEX, st.sampled_from(["child", "note"]), _FIELD_ROWS, st.binary(max_size=8)),
        min_size=1,
        max_size=5,
    )
)
def test_first_versions_sign_what_sign_batch_signs(
    records: list[tuple[str, str, list[tuple[str, int, bytes]], bytes]],
) -> None:
    """The batch members signed from leaf bytes equal those sign_batch gives for
    the statements (Ed25519 is deterministic: same bytes, same signature)."""
    writer = identity("worker")
    at, vault = "2026-12-01T04:00:00.000000Z", "ab12"
    consent = {"purposes": ["case_management"], "guardian_also": False}
    statements = [
        record_statement(
            vault_id=vault,
            at=at,
            record=rid,
            version=1,
            type_name=kind,
            consent=consent,
            metadata={},
            fields=fields,
            keyblob=blob,
        )
        for rid, kind, fields, blob in records
    ]
    items = [(rid, 1, kind, consent, {}, fields, blob) for rid, kind, fields, blob in records]
    new = sign_first_versions(vault, at, items, [writer])  # type: ignore[arg-type]
    old = sign_batch(statements, [writer])
    assert [m.to_bytes() for m in new] == [m.to_bytes() for m in old]
