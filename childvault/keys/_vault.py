"""Old import path of the Vault/OpenBao provider, kept for existing callers.

The provider now lives in :mod:`childvault.keys._openbao` (one module per
engine); use ``childvault.keys.VaultProvider``, ``childvault.keys.VaultSettings``
and ``childvault.keys.setup_vault``.
"""

from __future__ import annotations

from childvault.keys._openbao._formats import context as _context
from childvault.keys._openbao._formats import parse_blob as _parse_blob
from childvault.keys._openbao._formats import parse_salts as _parse_salts
from childvault.keys._openbao._policies import POLICY_NAMES
from childvault.keys._openbao._provider import VaultProvider
from childvault.keys._openbao._settings import VaultSettings
from childvault.keys._openbao._setup import render_policies, setup

__all__ = [
    "POLICY_NAMES",
    "VaultProvider",
    "VaultSettings",
    "_context",
    "_parse_blob",
    "_parse_salts",
    "render_policies",
    "setup",
]
