"""Identity files: passphrase unlock, wrong passphrase, weakened and spliced files."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.pwhash
import pytest

from childvault.keys import ConfigError, Identity, NotFound, UsageError, WrongPassphrase


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Identity]:
    path = tmp_path_factory.mktemp("id") / "alice.id"
    ident = Identity.generate("alice")
    ident.save(path, "correct horse battery")
    return path, ident


def test_round_trip(saved: tuple[Path, Identity]) -> None:
    path, ident = saved
    loaded = Identity.load(path, "correct horse battery")
    assert loaded.public == ident.public
    assert loaded.unseal(ident.public.seal(b"x")) == b"x"


def test_file_uses_at_least_moderate_argon2id(saved: tuple[Path, Identity]) -> None:
    doc = json.loads(saved[0].read_text())
    assert doc["kdf"]["opslimit"] >= nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    assert doc["kdf"]["memlimit"] >= nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    assert saved[0].stat().st_mode & 0o077 == 0


def test_wrong_passphrase_is_clear_and_changes_nothing(saved: tuple[Path, Identity]) -> None:
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase) as info:
        Identity.load(path, "wrong horse battery")
    assert "wrong passphrase" in str(info.value)
    assert info.value.exit_code == 3
    assert path.read_bytes() == before


def test_passphrase_is_nfc_normalised(tmp_path: Path) -> None:
    path = tmp_path / "bob.id"
    Identity.generate("bob").save(path, "pa\u0301ssword-long")  # decomposed á
    Identity.load(path, "p\u00e1ssword-long")  # composed á


def test_weakened_kdf_is_refused(saved: tuple[Path, Identity], tmp_path: Path) -> None:
    doc = json.loads(saved[0].read_text())
    doc["kdf"]["opslimit"] = 1
    weak = tmp_path / "weak.id"
    weak.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="MODERATE"):
        Identity.load(weak, "correct horse battery")


def test_spliced_public_key_is_refused(saved: tuple[Path, Identity], tmp_path: Path) -> None:
    doc = json.loads(saved[0].read_text())
    other = json.loads(saved[0].read_text())
    other_ident = Identity.generate("alice")
    import base64

    doc["x25519_public"] = base64.b64encode(other_ident.public.encryption_key).decode()
    spliced = tmp_path / "spliced.id"
    spliced.write_text(json.dumps(doc))
    del other
    with pytest.raises(ConfigError, match="inconsistent"):
        Identity.load(spliced, "correct horse battery")


def test_damaged_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.id").write_text("{not json")
    with pytest.raises(ConfigError):
        Identity.load(tmp_path / "x.id", "whatever-long")
    with pytest.raises(NotFound):
        Identity.load(tmp_path / "missing.id", "whatever-long")


def test_short_passphrase_and_bad_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Identity.generate("carol").save(tmp_path / "c.id", "short")
    with pytest.raises(UsageError):
        Identity.generate("Bad Name")


def test_the_kdf_floor_is_nacl_pwhash_moderate() -> None:
    # _identity reads the floor from the bindings so that nacl.pwhash is imported
    # only where a passphrase is stretched; the values must be pwhash's own.
    import nacl.pwhash

    from childvault.keys import _identity

    assert _identity._OPS_MIN == nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    assert _identity._MEM_MIN == nacl.pwhash.argon2id.MEMLIMIT_MODERATE
