"""Per-user identities: an X25519 key (receiving sealed boxes) and an Ed25519 key
(signing), stored in one file encrypted under the user's passphrase.

The passphrase is stretched with Argon2id (libsodium ``crypto_pwhash``, at least
the MODERATE limits) and the secret keys are sealed with SecretBox. Files below
MODERATE are refused on load, so a weakened file cannot be slipped in.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.signing
import nacl.utils
from nacl.public import PrivateKey, PublicKey, SealedBox

from childvault._i18n import _t
from childvault.keys._encoding import b64, unb64
from childvault.keys._errors import (
    ConfigError,
    DecryptionFailed,
    NotFound,
    UsageError,
    WrongPassphrase,
)
from childvault.keys._files import atomic_write

_FORMAT = "childvault-identity/1"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# nacl.pwhash's own values (nacl.pwhash.argon2id.OPSLIMIT_MODERATE ...), read from
# the bindings: nacl.pwhash is imported only where a passphrase is stretched, not
# by a command on a session (tests/test_identity.py checks they are the same).
_OPS_MIN = nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MODERATE
_MEM_MIN = nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MODERATE
_MIN_PASSPHRASE = 8


def check_user_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise :class:`UsageError`.

    Names are short lowercase ASCII so they are safe in file names, log entries
    and signed-note signer names (which forbid spaces and ``+``).
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UsageError(
            _t(
                "invalid user name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or "
                "'-', starting with a letter",
                name=name,
            )
        )
    return name


def _normalise(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        # Checked here, where every passphrase passes: bytes would fail in unicodedata.
        raise UsageError(
            _t(
                "the passphrase must be a string (str), not {kind}",
                kind=type(passphrase).__name__,
            )
        )
    # NFC so the same passphrase typed through different input methods matches.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


@dataclass(frozen=True)
class PublicIdentity:
    """The public half of a user's identity, as registered in a vault."""

    name: str
    encryption_key: bytes  # X25519 public key, 32 bytes
    signing_key: bytes  # Ed25519 public key, 32 bytes

    def seal(self, plaintext: bytes) -> bytes:
        """Seal ``plaintext`` so only this identity can open it (libsodium sealed box)."""
        return SealedBox(PublicKey(self.encryption_key)).encrypt(plaintext)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this identity's Ed25519 signature of ``message``."""
        try:
            nacl.signing.VerifyKey(self.signing_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True


class Identity:
    """An unlocked identity. Holds secret keys in memory; never serialised in clear."""

    def __init__(
        self,
        name: str,
        x25519: PrivateKey,
        ed25519: nacl.signing.SigningKey,
        anchor: dict[str, str] | None = None,
    ) -> None:
        self.name = check_user_name(name)
        self._x25519 = x25519
        self._ed25519 = ed25519
        self.public = PublicIdentity(name, bytes(x25519.public_key), bytes(ed25519.verify_key))
        #: The vault's trust anchor (JSON form, parsed by ``childvault.vault``), or None
        #: for a file written before anchors existed. Stored inside the
        #: passphrase-encrypted part, so only the owner can change what they trust.
        self.anchor = anchor

    def __repr__(self) -> str:
        return f"Identity(name={self.name!r})"

    @classmethod
    def generate(cls, name: str) -> Identity:
        """Create a fresh identity with random keys (not yet written anywhere)."""
        return cls(name, PrivateKey.generate(), nacl.signing.SigningKey.generate())

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._ed25519.sign(message).signature

    def unseal(self, sealed: bytes) -> bytes:
        """Open a sealed box addressed to this identity; raise :class:`DecryptionFailed`."""
        try:
            return SealedBox(self._x25519).decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecryptionFailed(f"sealed box for {self.name} did not open") from exc

    def signing_seed(self) -> bytes:
        """The Ed25519 seed, for handing to a signing library (PASETO). Keep it local."""
        return bytes(self._ed25519)

    # -- file format -------------------------------------------------------

    def save(self, path: Path, passphrase: str) -> None:
        """Write this identity to ``path`` encrypted under ``passphrase`` (mode 0600)."""
        path = _as_path(path, "Identity.save")
        _normalise(passphrase)  # the type is checked before anything else
        if len(passphrase) < _MIN_PASSPHRASE:
            raise UsageError(
                _t("the passphrase must have at least {n} characters", n=_MIN_PASSPHRASE)
            )
        import nacl.pwhash

        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        key = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE,
            _normalise(passphrase),
            salt,
            opslimit=_OPS_MIN,
            memlimit=_MEM_MIN,
        )
        secret_part: dict[str, Any] = {
            "name": self.name,
            "x25519": b64(bytes(self._x25519)),
            "ed25519": b64(bytes(self._ed25519)),
        }
        if self.anchor is not None:
            secret_part["anchor"] = dict(self.anchor)
        inner = json.dumps(secret_part).encode("utf-8")
        box = nacl.secret.SecretBox(key).encrypt(inner)
        doc = {
            "format": _FORMAT,
            "name": self.name,
            "kdf": {
                "alg": "argon2id13",
                "opslimit": _OPS_MIN,
                "memlimit": _MEM_MIN,
                "salt": b64(salt),
            },
            "box": b64(bytes(box)),
            "x25519_public": b64(self.public.encryption_key),
            "ed25519_public": b64(self.public.signing_key),
        }
        atomic_write(path, json.dumps(doc, indent=2).encode("utf-8") + b"\n", mode=0o600)

    @classmethod
    def load(cls, path: Path | str, passphrase: str) -> Identity:
        """Unlock the identity file at ``path``.

        Raises :class:`WrongPassphrase` if the passphrase is wrong (nothing is
        changed), :class:`NotFound` if there is no such file and
        :class:`ConfigError` if the file is damaged.
        """
        path = _as_path(path, "Identity.load")
        _normalise(passphrase)  # the type is checked before the file is read
        doc = read_identity_file(path)
        try:
            kdf = doc["kdf"]
            ops, mem, salt = int(kdf["opslimit"]), int(kdf["memlimit"]), unb64(kdf["salt"])
            box = unb64(doc["box"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                _t("identity file {path} is damaged; restore it from backup", path=path)
            ) from exc
        if kdf.get("alg") != "argon2id13" or ops < _OPS_MIN or mem < _MEM_MIN:
            raise ConfigError(
                _t(
                    "identity file {path} uses key-derivation limits below Argon2id MODERATE; "
                    "it was not made by childvault and is refused",
                    path=path,
                )
            )
        import nacl.pwhash

        if len(salt) != nacl.pwhash.argon2id.SALTBYTES or mem > 1 << 32 or ops > 64:
            raise ConfigError(
                _t("identity file {path} is damaged; restore it from backup", path=path)
            )
        key = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, _normalise(passphrase), salt, opslimit=ops, memlimit=mem
        )
        try:
            inner = json.loads(nacl.secret.SecretBox(key).decrypt(box))
        except nacl.exceptions.CryptoError as exc:
            raise WrongPassphrase(
                _t(
                    "wrong passphrase for user {name!r}; nothing was changed. "
                    "Try again, or ask an admin to re-enrol you if it is lost",
                    name=doc.get("name"),
                )
            ) from exc
        try:
            anchor = inner.get("anchor")
            if anchor is not None and (
                not isinstance(anchor, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in anchor.items())
            ):
                raise ValueError(_t("anchor"))
            ident = cls(
                str(inner["name"]),
                PrivateKey(unb64(inner["x25519"])),
                nacl.signing.SigningKey(unb64(inner["ed25519"])),
                anchor,
            )
            publics_match = ident.public.encryption_key == unb64(
                doc["x25519_public"]
            ) and ident.public.signing_key == unb64(doc["ed25519_public"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                _t("identity file {path} is damaged; restore it from backup", path=path)
            ) from exc
        # The clear public keys must match the sealed secrets, else the file was spliced.
        if not publics_match or ident.name != doc.get("name"):
            raise ConfigError(
                _t("identity file {path} is inconsistent (public keys or name altered)", path=path)
            )
        return ident

    @classmethod
    def unlock(cls, home: Path | str, name: str, passphrase: str) -> Identity:
        """Unlock user ``name``'s identity in the vault home ``home``
        (``<home>/identities/<name>.id``); errors as :meth:`load`."""
        home = _as_path(home, "Identity.unlock")
        check_user_name(name)
        return cls.load(home / "identities" / f"{name}.id", passphrase)


def _as_path(value: object, where: str) -> Path:
    """``value`` as a :class:`Path` (a ``str`` is accepted); anything else is a UsageError."""
    if isinstance(value, str | Path) and str(value) and "\x00" not in str(value):
        return Path(value)
    raise UsageError(
        _t(
            "{where}: the path must be a str or pathlib.Path, not {kind}",
            where=where,
            kind=type(value).__name__,
        )
    )


def change_passphrase(path: Path, old: str, new: str) -> Identity:
    """Re-encrypt the identity file at ``path`` under ``new``; ``old`` must open it.

    The keys and the anchor are unchanged, so everything sealed to them stays
    readable; the file is replaced atomically (a crash leaves the old or the
    new file, never neither), and from then on ``old`` opens nothing. A copy
    of the file made before still opens with ``old``: that is what
    ``keys renew`` is for.
    """
    if len(new) < _MIN_PASSPHRASE:
        raise UsageError(_t("the passphrase must have at least {n} characters", n=_MIN_PASSPHRASE))
    if _normalise(new) == _normalise(old):
        raise UsageError(_t("the new passphrase is the same as the old one"))
    identity = Identity.load(path, old)
    identity.save(path, new)
    return identity


def read_identity_file(path: Path) -> dict[str, Any]:
    """Parse an identity file without unlocking it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(
            _t("no identity file at {path}: is the user name right?", path=path)
        ) from exc
    except OSError as exc:
        raise ConfigError(
            _t("cannot read identity file {path}: {reason}", path=path, reason=exc.strerror)
        ) from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            _t("identity file {path} is damaged; restore it from backup", path=path)
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ConfigError(_t("{path} is not a childvault identity file", path=path))
    return doc


def public_identity_from_file(path: Path) -> PublicIdentity:
    """Read the public keys from an identity file (no passphrase needed)."""
    doc = read_identity_file(path)
    try:
        return PublicIdentity(
            check_user_name(str(doc["name"])),
            unb64(doc["x25519_public"]),
            unb64(doc["ed25519_public"]),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(_t("identity file {path} is damaged", path=path)) from exc
