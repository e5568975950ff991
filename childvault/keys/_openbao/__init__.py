"""The HashiCorp Vault / OpenBao key provider, one module per engine.

- :mod:`._settings`: :class:`VaultSettings` (pure configuration).
- :mod:`._formats`: derivation context, key blob, salt document, grant
  material, blind-index input (pure functions, no I/O).
- :mod:`._http`: the connection (one ``requests.Session``, token or AppRole
  login, error mapping with scrubbed messages).
- :mod:`._transit`, :mod:`._salts`, :mod:`._wrapping`: the Transit engine, the
  KV v2 salt documents, response wrapping.
- :mod:`._provider`: :class:`VaultProvider`, composed from those engines.
- :mod:`._setup`, :mod:`._diagnose`: server preparation and ``doctor`` checks.
- :mod:`._identity`: per-person Vault identities (AppRole role, entity, group).

hvac and requests are heavy to import, so the names are loaded on first use:
importing this package (or :mod:`._formats`, :mod:`._settings`) does not
import them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from childvault.keys._openbao._identity import add_person
    from childvault.keys._openbao._policies import POLICY_NAMES
    from childvault.keys._openbao._provider import VaultProvider
    from childvault.keys._openbao._settings import VaultSettings
    from childvault.keys._openbao._setup import render_policies, setup

__all__ = [
    "POLICY_NAMES",
    "VaultProvider",
    "VaultSettings",
    "add_person",
    "render_policies",
    "setup",
]

# Public name -> the module that defines it.
_WHERE = {
    "POLICY_NAMES": "_policies",
    "VaultProvider": "_provider",
    "VaultSettings": "_settings",
    "add_person": "_identity",
    "render_policies": "_setup",
    "setup": "_setup",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
