"""Typed key-provider configuration and provider capabilities (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from childvault.keys import (
    BlindIndexer,
    ConfigError,
    CustodianSealing,
    Diagnosable,
    ExternalKeyMaterial,
    LocalProvider,
    ServerSideRotation,
    VaultProvider,
    VaultSettings,
)
from childvault.vault import LocalKeys, OpenBaoCredentials, OpenBaoKeys, Vault
from childvault.vault._config import Config
from childvault.vault._keyconfig import keys_from_config

SETTINGS = {"addr": "http://127.0.0.1:1"}


def _config(provider: str, settings: dict[str, object] | None = None) -> Config:
    return Config("0" * 32, "institution", provider, None, settings)


def test_each_provider_has_exactly_its_capabilities() -> None:
    server_side = (BlindIndexer, Diagnosable, ServerSideRotation, ExternalKeyMaterial)
    assert all(issubclass(VaultProvider, cap) for cap in server_side)
    assert not issubclass(VaultProvider, CustodianSealing)
    assert issubclass(LocalProvider, CustodianSealing)
    assert not any(issubclass(LocalProvider, cap) for cap in server_side)


def test_config_json_names_round_trip() -> None:
    local = keys_from_config(_config("local"))
    assert local == LocalKeys() and local.settings_json() is None
    bao = keys_from_config(_config("vault", SETTINGS))
    assert isinstance(bao, OpenBaoKeys) and bao.settings.addr == SETTINGS["addr"]
    assert bao.settings_json() == json.loads(bao.settings.to_json())
    assert (LocalKeys.name, OpenBaoKeys.name) == ("local", "vault")  # config.json values
    with pytest.raises(ConfigError, match="unknown key provider"):
        keys_from_config(_config("kms"))


def test_credentials_are_one_kind_and_never_shown() -> None:
    with pytest.raises(ConfigError, match="not both"):
        OpenBaoCredentials(token="t", approle=("r", "s"))
    shown = repr(OpenBaoKeys(VaultSettings(addr="http://x"), token="secret-token"))
    assert "secret-token" not in shown
    assert "secret" not in repr(OpenBaoCredentials(approle=("role", "secret")))


def test_init_with_openbao_keys_writes_the_same_config_as_before(tmp_path: Path) -> None:
    """The settings go to config.json under "vault" as before; the token never does.
    (Init talks to no server, so an unreachable address is fine here.)"""
    home = tmp_path / "home"
    keys = OpenBaoKeys.from_mapping(SETTINGS)
    keys = OpenBaoKeys(keys.settings, token="secret-token")
    with Vault.init(
        home, institution="I", admin="admin", admin_passphrase="correct horse", keys=keys
    ) as v:
        assert v.provider_kind == "vault"
    doc = json.loads((home / "config.json").read_text())
    assert doc["provider"] == "vault" and doc["vault"]["addr"] == SETTINGS["addr"]
    assert "secret-token" not in (home / "config.json").read_text()
