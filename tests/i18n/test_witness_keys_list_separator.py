"""Review finding RV-4 (session 6, witness keys recorded in the vault): the recorded
keys that differ from the given ones were listed with a plain ``", ".join`` in
``doctor``'s warning (a zh_CN reader got the English separator inside a Chinese
sentence), unlike every other list in a message since issue 16 (``_i18n.join``)."""

from __future__ import annotations

import nacl.signing

from childvault._i18n import localize
from childvault.vault import _note
from childvault.vault._doctor import diagnose
from tests.conftest import World


def _vkey(name: str) -> str:
    return _note.vkey(name, bytes(nacl.signing.SigningKey.generate().verify_key))


def test_doctor_lists_recorded_witness_keys_with_the_readers_separator(world: World) -> None:
    recorded = sorted([_vkey("witness-a"), _vkey("witness-b")])
    with world.open("admin") as v:
        v.set_setting("witness_keys", ",".join(recorded))
    report = diagnose(world.home, lambda: world.open("admin"), witness_keys=[_vkey("witness-c")])
    (warning,) = [c["message"] for c in report["checks"] if c["name"] == "witness keys"]
    assert str(warning) == (
        "the given witness keys differ from those recorded in the vault: " + ", ".join(recorded)
    )
    assert localize(warning, "zh_CN").endswith("、".join(recorded))
