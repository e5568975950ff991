"""The release secret of ``childvault serve`` (finding A-10): made once beside the
serving identity, sealed to it and signed by it; and the rows stored under it.

Unit tests of ``childvault/server/_release_keys.py`` on a bare home directory
(no vault: the secret file needs only the identity); the served behaviour is
attacked in ``tests/attack/test_insider_host.py``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from childvault.keys import ConfigError, Identity, IntegrityError
from childvault.server._release_keys import (
    open_key,
    release_secret,
    seal_key,
    secret_path,
)
from childvault.vault._config import Home

VAULT = "11" * 16
GRANT, OTHER = "ab" * 16, "cd" * 16


def _home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.identities.mkdir(parents=True)
    return home


def test_made_once_then_opened(tmp_path: Path) -> None:
    home, me = _home(tmp_path), Identity.generate("svc")
    first = release_secret(home, me, VAULT)
    assert len(first) == 32
    assert release_secret(home, me, VAULT) == first
    path = secret_path(home, "svc")
    assert path.parent == home.identities and path.stat().st_mode & 0o777 == 0o600
    assert first.hex() not in path.read_text() and "sealed" in json.loads(path.read_text())


def test_two_starts_at_once_share_one_secret(tmp_path: Path) -> None:
    home, me = _home(tmp_path), Identity.generate("svc")
    got: list[bytes] = []
    start = threading.Barrier(4, timeout=30)

    def go() -> None:
        start.wait()
        got.append(release_secret(home, me, VAULT))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 4 and len(set(got)) == 1
    # Each was written whole under a private name, then linked: none is left over.
    assert [p.name for p in home.identities.iterdir()] == ["svc.release"]


def test_another_identity_or_vault_or_an_edit_stops_the_start(tmp_path: Path) -> None:
    home, me = _home(tmp_path), Identity.generate("svc")
    release_secret(home, me, VAULT)
    path = secret_path(home, "svc")
    # Same name, other keys (a renewed or swapped identity): not signed by it.
    with pytest.raises(ConfigError, match="not signed by this identity"):
        release_secret(home, Identity.generate("svc"), VAULT)
    with pytest.raises(ConfigError, match="another vault"):
        release_secret(home, me, "22" * 16)
    # A secret of someone's choosing, sealed to the identity's public key but not
    # signed by it, is refused rather than used.
    doc = json.loads(path.read_text())
    doc["sealed"] = __import__("base64").b64encode(me.public.seal(b"x" * 64)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="not signed by this identity"):
        release_secret(home, me, VAULT)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not readable"):
        release_secret(home, me, VAULT)


def test_a_stored_key_opens_only_in_its_place_and_count() -> None:
    secret, key = b"\x07" * 32, b"\x09" * 32
    row = seal_key(secret, VAULT, GRANT, "officer1", 3, key)
    assert key.hex() not in row
    held = open_key(secret, VAULT, GRANT, row)
    assert (held.officer, held.redeemed, held.key) == ("officer1", 3, key)
    doc = json.loads(row)
    for changed in ({"redeemed": 0}, {"officer": "officer2"}):
        with pytest.raises(IntegrityError, match="altered"):
            open_key(secret, VAULT, GRANT, json.dumps({**doc, **changed}))
    with pytest.raises(IntegrityError, match="altered"):
        open_key(secret, VAULT, OTHER, row)  # copied to another grant
    with pytest.raises(IntegrityError, match="altered"):
        open_key(b"\x08" * 32, VAULT, GRANT, row)  # another server's secret
    old = json.dumps({"key": "AAAA", "officer": "officer1", "redeemed": 0})
    with pytest.raises(IntegrityError, match="stored in clear"):
        open_key(secret, VAULT, GRANT, old)
