"""What a replica with a witness file of its own keeps between connections
(round 2 session 12): the number of notes the file began with and a digest of
them, not every note body, and one read of the file per connection.

Real parts: a SQLCipher vault made by the server tests' helper, checkpoints
stored through the library (as another replica would store them), a
``VaultHost`` with ``witness=`` (what ``serve --witness-file`` gives) answering
``describe`` in process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.server._vault import VaultHost, unlock_home_as
from childvault.server._witnessfile import append_missing, append_notes, note_body, read_notes
from childvault.vault import Vault, _audit
from tests.server._vaultserver import VaultServer, make_vault, passphrase

REFILL = "the witness file lacks checkpoints it held: reading them all"


@pytest.fixture
def vault(tmp_path: Path) -> VaultServer:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    _checkpoints(vs, 3)
    return vs


@pytest.fixture
def host(vault: VaultServer, tmp_path: Path) -> Iterator[VaultHost]:
    key, anchor, _ = unlock_home_as(vault.home, "admin", passphrase("admin"))
    h = VaultHost(vault.home, key, anchor, witness=tmp_path / "own.jsonl")
    try:
        yield h
    finally:
        h.close()


def _checkpoints(vs: VaultServer, n: int) -> None:
    with Vault.open(vs.home, "officer1", passphrase("officer1")) as v:
        for _ in range(n):
            v.checkpoint()


def _stored(vs: VaultServer) -> list[str]:
    with Vault.open(vs.home, "officer1", passphrase("officer1")) as v:
        return [
            note_body(r.note) for r in sorted(v._session.db.checkpoints.all(), key=lambda r: r.id)
        ]


def _describe(host: VaultHost) -> list[str]:
    answer = asyncio.run(host.describe("officer1"))
    return [str(n) for n in answer["witness"]]


def _write(path: Path, notes: list[str]) -> None:
    path.write_text(
        "".join(json.dumps({"note": n}, ensure_ascii=False) + "\n" for n in notes),
        encoding="utf-8",
    )


def test_the_answer_is_the_file_after_the_catch_up_and_the_memory_is_bounded(
    vault: VaultServer, host: VaultHost, caplog: pytest.LogCaptureFixture
) -> None:
    assert host.own_witness is not None
    answer = _describe(host)
    assert answer == _audit.read_witness(host.own_witness)
    assert [note_body(n) for n in answer] == _stored(vault)
    held = host._witness_held
    assert held is not None and held[0] == 3 and len(held[1]) == 32
    # A note another writer appends and a checkpoint another replica stores:
    # the file only grew, so the next connection reads the new row only, and
    # its answer holds both (the file as the catch-up left it).
    append_notes(host.own_witness, ["from another writer\n"])
    _checkpoints(vault, 1)
    caplog.set_level(logging.INFO)
    answer = _describe(host)
    assert REFILL not in caplog.text
    assert "1 stored checkpoint(s) read (after id" in caplog.text
    assert answer == _audit.read_witness(host.own_witness)
    assert len(answer) == 5 and answer[3] == "from another writer\n"
    assert [note_body(n) for n in answer if n != answer[3]] == _stored(vault)
    held = host._witness_held
    assert held is not None and held[0] == 5


@pytest.mark.parametrize("how", ["cut short", "one note replaced", "emptied"])
def test_a_witness_cut_short_or_replaced_is_refilled(
    vault: VaultServer, host: VaultHost, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """Replaced by a file with as many notes but one different (neither the
    count nor the last note tells), cut short, emptied: each is noticed and
    every stored checkpoint is copied back."""
    assert host.own_witness is not None
    notes = _describe(host)
    if how == "cut short":
        _write(host.own_witness, notes[:-1])
    elif how == "one note replaced":
        # The same number of notes, the same last one: the middle one swapped
        # for a copy of the first.
        _write(host.own_witness, [notes[0], notes[0], notes[2]])
    else:
        host.own_witness.write_bytes(b"")
    caplog.set_level(logging.INFO)
    answer = _describe(host)
    assert REFILL in caplog.text
    assert "3 stored checkpoint(s) read (all), 1 copied" in caplog.text or how == "emptied"
    assert answer == _audit.read_witness(host.own_witness)
    assert set(_stored(vault)) <= {note_body(n) for n in answer}
    # Refilled, then left alone: the next connection reads no row again.
    caplog.clear()
    _describe(host)
    assert REFILL not in caplog.text and "stored checkpoint(s) read" not in caplog.text


def test_a_read_made_before_the_lock_is_not_trusted_once_the_file_changed(tmp_path: Path) -> None:
    """append_missing reuses the caller's read only while the file is as it was
    then: a note another writer appended in between is not written twice."""
    path = tmp_path / "w.jsonl"
    append_notes(path, ["a\n"])
    seen = read_notes(path)
    assert seen.notes == ["a\n"] and seen.stamp is not None
    append_notes(path, ["b\n"])  # another writer, after the caller's read
    added, after = append_missing(path, ["b\n", "c\n"], seen)
    assert added == 1
    assert after.notes == _audit.read_witness(path) == ["a\n", "b\n", "c\n"]
    # Unchanged since: the caller's read serves, and what it returns is the file.
    added, again = append_missing(path, ["a\n", "c\n", "d\n"], after)
    assert added == 1 and again.notes == _audit.read_witness(path) == ["a\n", "b\n", "c\n", "d\n"]
