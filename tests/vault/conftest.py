"""The Vault-mode tests of ``vault gc`` and ``vault identity`` share the real
OpenBao fixtures of tests/integration (no mock stands in for Vault)."""

from __future__ import annotations

from tests.integration.conftest import bao_binary

__all__ = ["bao_binary"]
