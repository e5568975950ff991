"""Fixtures of the reliability tests: the real OpenBao server fixtures of the
integration suite, re-exported so the Vault fault tests can live here."""

from __future__ import annotations

from tests.integration.conftest import bao_binary, openbao, spare_openbao

__all__ = ["bao_binary", "openbao", "spare_openbao"]
