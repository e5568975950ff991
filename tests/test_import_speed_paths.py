"""Issue 18, third round (session 4): the import's faster paths give the bytes
the generic paths give. A record box's plaintext built by formatting equals
``json.dumps``; a batch's libsodium signatures equal the identity's own; the
blind-index tags the duplicate check computed are the ones stored."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.keys import Identity
from childvault.keys._local import _inner_json, _keys_to_json
from childvault.keys._provider import FieldKey
from childvault.vault._audit import signing_function
from tests.conftest import World
from tests.test_records import marked_rows, write_csv

_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.text(max_size=12),  # anything: quotes, escapes, non-ASCII take the generic path
)


@settings(max_examples=300, deadline=None)
@given(
    vault_id=st.one_of(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), st.text(max_size=8)),
    record_id=st.one_of(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), st.text(max_size=8)),
    version=st.one_of(st.integers(-(2**70), 2**70), st.booleans()),
    fields=st.dictionaries(
        _names,
        st.tuples(
            st.one_of(st.integers(1, 2**40), st.booleans()), st.binary(min_size=32, max_size=32)
        ),
        max_size=12,
    ),
)
def test_box_plaintext_is_the_json_encoders_bytes(
    vault_id: str, record_id: str, version: int, fields: dict[str, tuple[int, bytes]]
) -> None:
    keys = {name: FieldKey(v, k) for name, (v, k) in fields.items()}
    expected = json.dumps(
        {"v": 1, "vault": vault_id, "rec": record_id, "ver": version, "k": _keys_to_json(keys)},
        separators=(",", ":"),
    ).encode()
    assert _inner_json(vault_id, record_id, version, keys) == expected


_IDENTITY = Identity.generate("worker1")


@settings(max_examples=100, deadline=None)
@given(message=st.binary(max_size=300))
def test_batch_signatures_are_the_identitys_signatures(message: bytes) -> None:
    # Ed25519 is deterministic: the same key and message give the same bytes.
    sign = signing_function(_IDENTITY)
    assert sign(message) == _IDENTITY.sign(message)
    assert _IDENTITY.public.verify(message, sign(message))


def test_a_signer_that_is_not_an_identity_signs_through_its_own_method() -> None:
    class Remote:
        name = "worker1"

        def sign(self, message: bytes) -> bytes:
            return _IDENTITY.sign(message)

    remote = Remote()
    assert signing_function(remote) == remote.sign
    assert signing_function(remote)(b"m") == _IDENTITY.sign(b"m")


def test_the_duplicate_checks_tags_are_the_stored_tags(world: World, tmp_path: Path) -> None:
    """The write pass takes the tags the duplicate check computed: every imported
    record is then found by each searchable field, and by nothing else."""
    rows = marked_rows(6)
    src = write_csv(tmp_path / "rows.csv", rows)
    with world.open("worker1") as v:
        report = v.import_file(src)
        ids = list(report.record_ids)
        assert len(ids) == 6
        for row, rid in zip(rows, ids, strict=True):
            assert v.find("id_number", row["id_number"]) == [rid]
            assert rid in v.find("guardian_phone", row["guardian_phone"])


def test_known_tags_are_taken_once_and_the_rest_computed(world: World) -> None:
    rows = marked_rows(3)
    values = [r["id_number"] for r in rows]
    with world.open("worker1") as v:
        service = v._records
        computed = v.index_tags("id_number", values)
        known = {("id_number", values[1]): computed[1], ("other", "x"): b"t"}
        assert service._index_tags("id_number", values, known) == computed
        # Taken and removed (each tag is stored once); unrelated entries stay.
        assert known == {("other", "x"): b"t"}
        assert service._index_tags("id_number", values, None) == computed
