"""The home directory: where a vault's files live, and its small config file.

::

    <home>/config.json        vault id, institution, provider settings, witness path
    <home>/schema.toml        the schema the vault was created with (digest pinned in the db)
    <home>/vault.db           SQLCipher database (+ -wal, -shm)
    <home>/keyslots.json      database and index keys sealed to every user
    <home>/identities/<user>.id   passphrase-encrypted identity files
    <home>.witness.jsonl      default witness file: beside the home, meant for other media

The config holds no secret. Everything security-relevant in it (vault id,
provider) is also pinned in the encrypted database and compared on open.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import ConfigError, NotFound
from childvault.keys._files import atomic_write

_FORMAT = "childvault-config/1"


@dataclass(frozen=True)
class Home:
    """Paths inside a vault's home directory."""

    path: Path

    @property
    def config(self) -> Path:
        """The config file."""
        return self.path / "config.json"

    @property
    def database(self) -> Path:
        """The SQLCipher database."""
        return self.path / "vault.db"

    @property
    def keyslots(self) -> Path:
        """The key-slot file."""
        return self.path / "keyslots.json"

    @property
    def schema(self) -> Path:
        """The vault's copy of its schema."""
        return self.path / "schema.toml"

    @property
    def identities(self) -> Path:
        """Directory of identity files."""
        return self.path / "identities"

    def identity(self, user: str) -> Path:
        """The identity file of ``user``."""
        return self.identities / f"{user}.id"

    def default_witness(self) -> Path:
        """Where the witness file goes unless configured: beside, not inside, the home."""
        return self.path.parent / f"{self.path.name}.witness.jsonl"


@dataclass(frozen=True)
class Config:
    """The content of ``config.json``."""

    vault_id: str
    institution: str
    provider: str
    #: Witness file; None means the default beside the home (moves with it).
    witness: str | None
    vault_settings: dict[str, Any] | None = None
    #: None: the SQLCipher file in the home. ``{"kind": "postgresql", "dsn_file": path or
    #: None}``: a PostgreSQL database whose DSN (a secret) is read from that file or
    #: from ``CHILDVAULT_DSN``, never stored here.
    store: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to disk."""
        return {
            "format": _FORMAT,
            "vault_id": self.vault_id,
            "institution": self.institution,
            "provider": self.provider,
            "witness": self.witness,
            "vault": self.vault_settings,
            # Only when not the default, so a SQLCipher home's config is unchanged.
            **({} if self.store is None else {"store": self.store}),
        }

    def save(self, home: Home) -> None:
        """Write the config atomically."""
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        atomic_write(home.config, text.encode("utf-8"), mode=0o600)

    @classmethod
    def load(cls, home: Home) -> Config:
        """Read the config of ``home``; clear errors if it is missing or damaged."""
        try:
            raw = home.config.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(
                _t(
                    "{path} is not a childvault home (no config.json): run `childvault init` or"
                    " pass --home / set CHILDVAULT_HOME",
                    path=home.path,
                )
            ) from exc
        except OSError as exc:
            raise ConfigError(
                _t("cannot read {config}: {strerror}", config=home.config, strerror=exc.strerror)
            ) from exc
        try:
            doc = json.loads(raw)
            if doc.get("format") != _FORMAT:
                raise ValueError(_t("format"))
            settings = doc.get("vault")
            if settings is not None and not isinstance(settings, dict):
                raise ValueError(_t("vault settings"))
            store = doc.get("store")
            if store is not None and (
                not isinstance(store, dict) or store.get("kind") != "postgresql"
            ):
                raise ValueError(_t("store"))
            return cls(
                vault_id=str(doc["vault_id"]),
                institution=str(doc["institution"]),
                provider=str(doc["provider"]),
                witness=None if doc.get("witness") is None else str(doc["witness"]),
                vault_settings=settings,
                store=store,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                _t("{config} is damaged: restore it from backup", config=home.config)
            ) from exc

    def store_dsn(self, home: Home) -> str | None:
        """The PostgreSQL DSN (None for the SQLCipher store): ``CHILDVAULT_DSN``, else the file.

        The DSN carries a password, so it never comes from the command line
        nor sits in this config; the config names only the file holding it.
        """
        if self.store is None:
            return None
        env = os.environ.get("CHILDVAULT_DSN", "").strip()
        if env:
            return env
        name = self.store.get("dsn_file")
        if not name:
            raise ConfigError(
                _t(
                    "{config} names a PostgreSQL store but no DSN file: set CHILDVAULT_DSN",
                    config=home.config,
                )
            )
        return read_dsn_file(Path(name))

    def witness_path(self, home: Home) -> Path:
        """The witness file (default: ``<home>.witness.jsonl`` beside the home)."""
        if self.witness is None:
            return home.default_witness()
        path = Path(self.witness)
        return path if path.is_absolute() else (home.path.parent / path)


def make_home(path: Path) -> Home:
    """Create an empty home directory (mode 0700); refuse a non-empty one."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(
            _t("{path} already exists and is not empty: choose another --home", path=path)
        )
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    (path / "identities").mkdir(mode=0o700, exist_ok=True)
    return Home(path)


def read_dsn_file(path: Path) -> str:
    """The PostgreSQL DSN in ``path`` (first non-empty line); clear errors otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFound(
            _t("no DSN file at {path}: create it or set CHILDVAULT_DSN", path=path)
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(_t("cannot read the DSN file {path}", path=path)) from exc
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise ConfigError(_t("the DSN file {path} is empty", path=path))
