"""C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note`` envelopes, Ed25519 signed.

Checkpoints are published in the standard format (https://c2sp.org/signed-note,
https://c2sp.org/tlog-checkpoint) so that an auditor can check our audit log
with any off-the-shelf verifier (for example ``golang.org/x/mod/sumdb/note``)
given the signer's ``vkey`` string, not only with this code.

A note is::

    <body lines, each ending in "\\n">
    <blank line>
    — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>
    ... (one line per signature)

The signature covers the body exactly (up to and including its last newline).

Everything parsed here may come from a third party or a tampered file, so the
parsers are strict and bounded and raise only :class:`IntegrityError`, with a
short message naming the defect but never echoing the input. Functions that
*produce* notes raise :class:`UsageError` for arguments that could never make a
valid note, and :class:`IntegrityError` if the signing callback returns a
signature that does not verify under the stated public key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from childvault._i18n import _t
from childvault.keys._errors import IntegrityError, UsageError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_TYPE_ED25519",
    "Checkpoint",
    "NoteSignature",
    "add_signature",
    "key_id",
    "open_note",
    "parse_note",
    "parse_vkey",
    "sign_note",
    "verify_note",
    "vkey",
]

#: Largest note accepted, in UTF-8 bytes (refuse hostile inputs before any work).
MAX_NOTE_BYTES = 1 << 20
#: Most signature lines accepted in one note (the spec requires at least 16; Go uses 100).
MAX_SIGNATURES = 100
#: Signature type byte of Ed25519 in the signed-note key id and vkey.
SIG_TYPE_ED25519 = 0x01

_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_ROOT_SIZE = 32
_KEY_ID_SIZE = 4
_SIG_PREFIX = "\u2014 "  # EM DASH, space
_SEPARATOR = "\n\n"
# Tree sizes are uint64 in every implementation we interoperate with.
_MAX_TREE_SIZE = (1 << 64) - 1
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID_RE = re.compile(r"[0-9a-fA-F]{8}")
# Control characters other than newline are banned by the signed-note spec;
# rejecting them also keeps terminal escapes out of anything we print.
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")
_MAX_VKEY_CHARS = 1024


def _valid_name(name: object) -> bool:
    """A signed-note key name: non-empty, no Unicode space, no '+', no control character."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(c.isspace() for c in name)
        and _CONTROL_RE.search(name) is None
    )


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64: alphabet, padding and canonical trailing bits, or ``None``.

    Requiring the canonical encoding means each value has exactly one textual
    form, so a signature or root cannot be altered without changing its bytes.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_public_key(public_key: object) -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != _ED25519_KEY_SIZE:
        raise UsageError(_t("an Ed25519 public key must be 32 bytes"))
    return public_key


def _ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature (never raises on bad input)."""
    if len(public_key) != _ED25519_KEY_SIZE or len(signature) != _ED25519_SIG_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def _text_ok(text: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates) and free of banned control characters."""
    if _CONTROL_RE.search(text) is not None:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Checkpoint:
    """A ``tlog-checkpoint`` note body: log origin, tree size, RFC 6962 root, extensions.

    Constructing one with fields that cannot be written as a checkpoint raises
    :class:`UsageError`.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse fields that would not round-trip through :meth:`body` and :meth:`parse_body`."""
        if not isinstance(self.origin, str) or not _is_line(self.origin):
            raise UsageError(_t("a checkpoint origin must be one non-empty line of text"))
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= _MAX_TREE_SIZE
        ):
            raise UsageError(_t("a checkpoint tree size must be an integer from 0 to 2**64-1"))
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_SIZE:
            raise UsageError(_t("a checkpoint root hash must be 32 bytes"))
        if not isinstance(self.extensions, tuple) or not all(
            isinstance(e, str) and _is_line(e) for e in self.extensions
        ):
            raise UsageError(_t("checkpoint extension lines must be non-empty lines of text"))

    def body(self) -> bytes:
        """Return the note body: origin, size, base64 root and extension lines, each + newline."""
        lines = [self.origin, str(self.size), _b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse_body(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly; raise :class:`IntegrityError` on any deviation.

        Checks: at most 1 MiB, UTF-8, no control characters but newline, ends
        in a newline, at least three lines, none empty; size in decimal without
        leading zeros and below 2**64; root canonical standard base64 of 32
        bytes. The origin may contain spaces (``sum.golang.org`` uses
        ``go.sum database tree``): the spec tells clients not to assume a form.
        """
        if not isinstance(body, bytes):
            raise IntegrityError(_t("checkpoint body is not bytes"))
        if len(body) > MAX_NOTE_BYTES:
            raise IntegrityError(_t("checkpoint is too large"))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError(_t("checkpoint is not valid UTF-8")) from None
        if _CONTROL_RE.search(text) is not None:
            raise IntegrityError(_t("checkpoint contains a control character"))
        if not text.endswith("\n"):
            raise IntegrityError(_t("checkpoint does not end in a newline"))
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise IntegrityError(_t("checkpoint has fewer than three lines"))
        if any(line == "" for line in lines):
            raise IntegrityError(_t("checkpoint has an empty line"))
        origin, size_text, root_text, *extensions = lines
        if _SIZE_RE.fullmatch(size_text) is None:
            raise IntegrityError(_t("checkpoint tree size is not a canonical decimal number"))
        size = int(size_text)
        if size > _MAX_TREE_SIZE:
            raise IntegrityError(_t("checkpoint tree size is too large"))
        root = _b64decode(root_text)
        if root is None or len(root) != _ROOT_SIZE:
            raise IntegrityError(_t("checkpoint root hash is not base64 of 32 bytes"))
        try:
            return cls(origin, size, root, tuple(extensions))
        except UsageError:  # pragma: no cover - every condition is checked above
            raise IntegrityError(_t("checkpoint is malformed")) from None


def _is_line(text: str) -> bool:
    return text != "" and "\n" not in text and _text_ok(text)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: key name, 4-byte key id and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte signed-note key id of an Ed25519 key.

    ``SHA-256(name || "\\n" || 0x01 || public_key)[:4]``. Raises
    :class:`UsageError` for an invalid key name or a key that is not 32 bytes.
    """
    if not _valid_name(name):
        raise UsageError(_t("a signed-note key name must be non-empty, without spaces or '+'"))
    _check_public_key(public_key)
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([SIG_TYPE_ED25519]) + public_key
    ).digest()
    return digest[:_KEY_ID_SIZE]


def vkey(name: str, public_key: bytes) -> str:
    """Return the verifier key string ``name+hex(key_id)+base64(0x01 || public_key)``.

    This is the form ``golang.org/x/mod/sumdb/note.NewVerifier`` accepts.
    """
    kid = key_id(name, public_key)
    return f"{name}+{kid.hex()}+{_b64encode(bytes([SIG_TYPE_ED25519]) + public_key)}"


def parse_vkey(text: str) -> tuple[str, bytes]:
    """Parse a verifier key string into ``(name, ed25519_public_key)``.

    Strict: valid name, 8 hex digits of key id, canonical base64 of type byte
    0x01 and a 32-byte key, and the key id must match name and key. Raises
    :class:`IntegrityError` otherwise.
    """
    if not isinstance(text, str) or len(text) > _MAX_VKEY_CHARS:
        raise IntegrityError(_t("verifier key is malformed"))
    # The name cannot contain '+', the base64 key can: split from the left.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise IntegrityError(_t("verifier key is malformed"))
    name, hex_id, key_text = parts
    if not _valid_name(name) or not _text_ok(name) or _KEY_ID_RE.fullmatch(hex_id) is None:
        raise IntegrityError(_t("verifier key is malformed"))
    raw = _b64decode(key_text)
    if raw is None or len(raw) != 1 + _ED25519_KEY_SIZE:
        raise IntegrityError(_t("verifier key is malformed"))
    if raw[0] != SIG_TYPE_ED25519:
        raise IntegrityError(_t("verifier key is not an Ed25519 key"))
    public_key = raw[1:]
    if bytes.fromhex(hex_id) != key_id(name, public_key):
        raise IntegrityError(_t("verifier key id does not match the key"))
    return name, public_key


def _check_body(body: bytes) -> str:
    """Validate a body to be signed (producer side) and return it as text."""
    if not isinstance(body, bytes) or not body.endswith(b"\n"):
        raise UsageError(_t("a note body must be bytes ending in a newline"))
    if len(body) > MAX_NOTE_BYTES // 2:
        raise UsageError(_t("a note body is too large"))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(_t("a note body must be UTF-8")) from None
    if _CONTROL_RE.search(text) is not None:
        raise UsageError(_t("a note body must not contain control characters"))
    return text


def _signature_line(
    body: bytes, name: str, sign: Callable[[bytes], bytes], public_key: bytes
) -> tuple[bytes, str]:
    """Sign ``body`` and return ``(key_id, signature line)``; check the signature first."""
    kid = key_id(name, public_key)  # validates name and key
    signature = sign(body)
    # A signer that answers with another key's signature (wrong Transit key,
    # wrong identity file) must fail here, not when an auditor checks later.
    if not isinstance(signature, bytes) or not _ed25519_verify(public_key, body, signature):
        raise IntegrityError(
            _t("the signature made for {name} does not verify under its public key", name=name)
        )
    return kid, f"{_SIG_PREFIX}{name} {_b64encode(kid + signature)}\n"


def sign_note(body: bytes, name: str, sign: Callable[[bytes], bytes], public_key: bytes) -> str:
    """Return the signed note: ``body``, a blank line, one signature line by ``name``.

    ``sign`` returns the 64-byte Ed25519 signature of its argument by the key
    whose public half is ``public_key``; the signature is checked before use.
    """
    text = _check_body(body)
    _, line = _signature_line(body, name, sign, public_key)
    return text + "\n" + line


def add_signature(note: str, name: str, sign: Callable[[bytes], bytes], public_key: bytes) -> str:
    """Return ``note`` with one more signature (a cosignature) by ``name``.

    An existing signature by the same key name and key id is replaced, as
    ``golang.org/x/mod/sumdb/note.Sign`` does. Raises :class:`IntegrityError`
    if ``note`` does not parse or would exceed the signature limit.
    """
    body, signatures = parse_note(note)
    _check_body(body)
    kid, line = _signature_line(body, name, sign, public_key)
    kept = [s for s in signatures if not (s.name == name and s.key_id == kid)]
    if len(kept) + 1 > MAX_SIGNATURES:
        raise IntegrityError(_t("the note already has the maximum number of signatures"))
    lines = [f"{_SIG_PREFIX}{s.name} {_b64encode(s.key_id + s.signature)}\n" for s in kept]
    return body.decode("utf-8") + "\n" + "".join(lines) + line


def parse_note(text: str) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its body and signature lines, without verifying anything.

    Strict and bounded: at most 1 MiB (UTF-8) and 100 signatures; valid
    UTF-8; no control character but newline; the body is everything up to
    and including the newline before the last blank line; each following
    line is ``— <name> <canonical base64 of key id + at least one byte>``.
    Raises :class:`IntegrityError` on any deviation.
    """
    if not isinstance(text, str):
        raise IntegrityError(_t("signed note is not text"))
    # Cheap bound on characters first (each is at least one UTF-8 byte).
    if len(text) > MAX_NOTE_BYTES:
        raise IntegrityError(_t("signed note is too large"))
    if not _text_ok(text):
        raise IntegrityError(_t("signed note contains a control character or invalid text"))
    if len(text.encode("utf-8")) > MAX_NOTE_BYTES:
        raise IntegrityError(_t("signed note is too large"))
    split = text.rfind(_SEPARATOR)
    if split < 0:
        raise IntegrityError(_t("signed note has no signature block"))
    body, block = text[: split + 1], text[split + 2 :]
    if block == "" or not block.endswith("\n"):
        raise IntegrityError(_t("signed note signature block is malformed"))
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise IntegrityError(_t("signed note has too many signatures"))
    signatures: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise IntegrityError(_t("signed note has a malformed signature line"))
        name, space, sig_text = line[len(_SIG_PREFIX) :].partition(" ")
        raw = _b64decode(sig_text) if space else None
        if not _valid_name(name) or raw is None or len(raw) <= _KEY_ID_SIZE:
            raise IntegrityError(_t("signed note has a malformed signature line"))
        signatures.append(NoteSignature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:]))
    return body.encode("utf-8"), signatures


def open_note(text: str, known: Mapping[str, bytes]) -> tuple[bytes, list[str]]:
    """Verify a signed note of any body; return ``(body, names whose signatures verified)``.

    ``known`` maps key names to Ed25519 public keys. Signatures whose (name,
    key id) is not a known key are ignored, as the spec requires. Raises
    :class:`IntegrityError` if any signature by a known key is invalid, or if
    no known key signed the note. A known key that is not 32 bytes is stored
    data gone bad, and also raises :class:`IntegrityError`.

    A success is remembered (bounded, :data:`_VERIFIED_MAX`) for the same
    note text and the same (name, key) set: the answer depends on nothing
    else, so a note seen again is not verified again (an approval reads the
    witness's notes each time; docs/decisions.md). Failures are not kept.
    """
    try:
        signer_set: frozenset[tuple[str, bytes]] | None = frozenset(known.items())
    except TypeError:
        signer_set = None  # an unhashable key: malformed, refused below
    memo_key = (text, signer_set) if signer_set is not None and isinstance(text, str) else None
    if memo_key is not None:
        with _VERIFIED_LOCK:
            hit = _VERIFIED.get(memo_key)
            if hit is not None:
                _VERIFIED.move_to_end(memo_key)
        if hit is not None:
            return hit[0], list(hit[1])
    body, signatures = parse_note(text)
    if signer_set is None:
        raise IntegrityError(_t("a known signer's public key is malformed"))
    by_id = _by_id(signer_set)
    verified: list[str] = []
    for sig in signatures:
        signer_key = by_id.get((sig.name, sig.key_id))
        if signer_key is None:
            continue
        # The spec says clients SHOULD reject a note with a bad signature by
        # a known key; we always do, even if another known key signed it.
        if not _ed25519_verify(signer_key, body, sig.signature):
            raise IntegrityError(
                _t("signed note has an invalid signature by {name}", name=sig.name)
            )
        if sig.name not in verified:
            verified.append(sig.name)
    if not verified:
        raise IntegrityError(_t("signed note is not signed by any known key"))
    if memo_key is not None:
        with _VERIFIED_LOCK:
            _VERIFIED[memo_key] = (body, tuple(verified))
            while len(_VERIFIED) > _VERIFIED_MAX:
                _VERIFIED.popitem(last=False)
    return body, verified


#: Most note verifications remembered (least recently used dropped first).
_VERIFIED_MAX = 4096
_VERIFIED: OrderedDict[tuple[str, frozenset[tuple[str, bytes]]], tuple[bytes, tuple[str, ...]]] = (
    OrderedDict()
)
# The server verifies on several threads; the dict's order is shared state.
_VERIFIED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _by_id(signer_set: frozenset[tuple[str, bytes]]) -> dict[tuple[str, bytes], bytes]:
    """``{(name, key id): key}`` of a signer set, built once per set, not per note.

    Raises :class:`IntegrityError` for a malformed name or key (not cached).
    The caller must not change the dict it gets (it is shared).
    """
    by_id: dict[tuple[str, bytes], bytes] = {}
    for name, public_key in signer_set:
        if (
            not _valid_name(name)
            or not isinstance(public_key, bytes)
            or len(public_key) != _ED25519_KEY_SIZE
        ):
            raise IntegrityError(_t("a known signer's public key is malformed"))
        by_id[(name, key_id(name, public_key))] = public_key
    return by_id


def verify_note(text: str, known: Mapping[str, bytes]) -> tuple[Checkpoint, list[str]]:
    """Verify a signed checkpoint; return it and the names whose signatures verified.

    ``known`` maps key names to Ed25519 public keys. Signatures are checked
    first (the spec forbids interpreting unauthenticated text), then the body
    is parsed with :meth:`Checkpoint.parse_body`. Raises
    :class:`IntegrityError` if no known key's signature verifies, if a
    signature by a known name and key id is invalid, or if the body is not a
    well-formed checkpoint. The caller still has to check the origin.
    """
    body, names = open_note(text, known)
    return Checkpoint.parse_body(body), names
