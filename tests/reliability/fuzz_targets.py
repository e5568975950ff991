"""Coverage-guided fuzz targets (atheris / libFuzzer) for the parsers that read
untrusted input.

    python -m tests.reliability.fuzz_targets TARGET [libFuzzer options] [CORPUS_DIR]
    python -m tests.reliability.fuzz_targets TARGET --seeds DIR   # write a seed corpus

Targets: ``note`` (signed checkpoints), ``witness`` (witness files), ``schema``
(schema TOML), ``token`` (approval tokens: footer and signed claims),
``csv`` and ``jsonl`` (import files), and ``all`` (every one of them, the
first byte choosing, for a short run in one process). A target fails (libFuzzer reports a
crash, exit code non-zero) when the code under test raises anything but the
library's own error for that input, and when an input exceeds libFuzzer's
``-rss_limit_mb`` or ``-timeout``: memory and time are bounded by the harness.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["vault", "keys", "tomllib", "json", "csv", "pyseto"]):
    from childvault.keys import ApprovalInvalid, Identity, ImportFailed, IntegrityError, UsageError
    from childvault.vault import _audit, _importer, _note, _tokens
    from childvault.vault._schema import Schema

_SIGNER = Identity.generate("officer1")
_NAME = "childvault/0123456789abcdef0123456789abcdef/officer1"
_KNOWN = {_NAME: _SIGNER.public.signing_key}
# Where targets write their input files: CV_FUZZ_SCRATCH (the test's own temporary
# directory), else a new temporary directory removed at a normal exit.
if os.environ.get("CV_FUZZ_SCRATCH"):
    _SCRATCH = Path(os.environ["CV_FUZZ_SCRATCH"])
    _SCRATCH.mkdir(parents=True, exist_ok=True)
else:
    _SCRATCH = Path(tempfile.mkdtemp(prefix="cv-fuzz-"))
    atexit.register(shutil.rmtree, _SCRATCH, True)


def _note_text() -> str:
    body = _note.Checkpoint("childvault/0123456789abcdef0123456789abcdef", 7, b"\x01" * 32).body()
    return _note.sign_note(body, _NAME, _SIGNER.sign, _SIGNER.public.signing_key)


def _token() -> str:
    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    claims = _tokens.GrantClaims(
        jti="a" * 32,
        req="b" * 32,
        iss="officer1",
        sub="worker1",
        vault="c" * 32,
        rec=("d" * 32,),
        fld=("name",),
        pur="case_management",
        iat=now,
        nbf=now,
        exp=now + timedelta(hours=1),
        uses=1,
        keys=b"\x00" * 64,
    )
    return _tokens.issue(_SIGNER, claims)


def note(data: bytes) -> None:
    with contextlib.suppress(IntegrityError):
        _note.verify_note(data.decode("utf-8", "replace"), _KNOWN)


def witness(data: bytes) -> None:
    path = _SCRATCH / "witness.jsonl"
    path.write_bytes(data)
    try:
        for text in _audit.read_witness(path):
            note(text.encode("utf-8", "surrogatepass"))
    except IntegrityError:
        pass


def schema(data: bytes) -> None:
    with contextlib.suppress(UsageError):
        Schema.loads(data)


def token(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        _tokens.key_id(text)
        _tokens.verify(text, _SIGNER.public.signing_key)
    except ApprovalInvalid:
        pass


def _rows(suffix: str, data: bytes) -> None:
    path = _SCRATCH / f"rows{suffix}"
    path.write_bytes(data)
    try:
        for _ in _importer.iter_rows(path):
            pass
    except ImportFailed:
        pass


def csv_rows(data: bytes) -> None:
    _rows(".csv", data)


def jsonl_rows(data: bytes) -> None:
    _rows(".jsonl", data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "note": note,
    "witness": witness,
    "schema": schema,
    "token": token,
    "csv": csv_rows,
    "jsonl": jsonl_rows,
}
_EACH = list(TARGETS)


def every(data: bytes) -> None:
    """All targets in one process (the quick default run): byte 0 picks the target."""
    if data:
        TARGETS[_EACH[data[0] % len(_EACH)]](data[1:])


TARGETS["all"] = every


def seeds(target: str, directory: Path) -> None:
    """A small corpus of valid inputs to start from."""
    directory.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2]
    note_text = _note_text()
    samples: dict[str, list[bytes]] = {
        "note": [note_text.encode()],
        "witness": [f'{{"note": {json.dumps(note_text)}}}\n'.encode() * 2],
        "schema": [(root / "childvault" / "vault" / "schemas" / "child.toml").read_bytes()],
        "token": [_token().encode()],
        "csv": [(root / "childvault" / "vault" / "data" / "sample.csv").read_bytes()[:4000]],
        "jsonl": [b'{"name": "\\u5f20\\u4e09", "sex": "male", "purposes": ["a", "b"]}\n'],
    }
    if target == "all":
        for n, name in enumerate(_EACH):
            for m, sample in enumerate(samples[name]):
                (directory / f"seed{n}-{m}").write_bytes(bytes([n]) + sample)
        return
    for n, sample in enumerate(samples[target]):
        (directory / f"seed{n}").write_bytes(sample)


def main() -> None:
    target = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--seeds":
        seeds(target, Path(sys.argv[3]))
        return
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
