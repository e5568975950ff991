"""An import's per-row shortcuts give what the general code gives (issue 18,
round 2 session 9): each is checked against the slow reference it replaced."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from childvault.vault._importer import DuplicateFinder, DuplicateKey
from tests.conftest import World
from tests.test_records import marked_rows

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


def test_rows_that_do_not_parse_keep_their_reasons(world: World, tmp_path: Path) -> None:
    """A parsed row skips the check for unparsed ones (_checked_row, issue 18 round 2
    session 9); lines that are no JSON object still fail with their own reason."""
    src = tmp_path / "rows.jsonl"
    rows = marked_rows(2)
    lines = [json.dumps(rows[0], ensure_ascii=False), "[1, 2]", '{"name": {"x": 1}}']
    src.write_text("\n".join([*lines, json.dumps(rows[1], ensure_ascii=False)]) + "\n")
    with world.open("worker1") as v:
        report = v.import_file(src, skip_invalid=True)
    assert report.imported == 2
    reasons = {number: str(reason) for number, reason in report.errors}
    assert reasons == {
        2: "is not a JSON object of field names to values",
        3: "value of 'name' must be text",
    }
