"""An import's per-row shortcuts give what the general code gives (issue 18,
round 2 session 9): each is checked against the slow reference it replaced."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from childvault.vault._importer import DuplicateFinder, DuplicateKey

_VALUES = st.dictionaries(
    st.sampled_from(["id_number", "guardian_phone", "name"]), st.text(max_size=20), max_size=3
)


def _reference(secret: bytes, identity: tuple[str, ...], values: dict[str, str]) -> bytes | None:
    # The fingerprint as it was computed for every identity, one field or several.
    parts = [values.get(f) for f in identity]
    if not parts or not all(parts):
        return None
    return hmac.digest(secret, "\x00".join(p or "" for p in parts).encode("utf-8"), "sha256")


@given(
    identity=st.sampled_from(
        [("id_number",), ("guardian_phone", "name"), ("name",), ("id_number", "name", "x")]
    ),
    values=_VALUES,
)
def test_fingerprint_equals_the_general_form(
    identity: tuple[str, ...], values: dict[str, str]
) -> None:
    """One identity field takes a shortcut (no join); the bytes are the same."""
    finder = DuplicateFinder(DuplicateKey(identity, ("id_number",)), _no_tags, _no_ids)
    assert finder._fingerprint(values) == _reference(finder._secret, identity, values)


def test_duplicate_key_fields_are_worked_out_once() -> None:
    key = DuplicateKey(("id_number",), ("id_number", "guardian_phone"))
    assert key.fields == ("id_number", "guardian_phone")
    assert key.fields is key.fields


def _no_tags(field: str, values: list[str]) -> list[bytes]:
    return [b"\x00\x00" for _ in values]


def _no_ids(field: str, tags: list[bytes]) -> list[list[str]]:
    return [[] for _ in tags]
