"""``childvault serve``: the institution server (issue 13), transport layer first.

What exists now (docs/server.md): signed-request verification (RFC 9421,
Ed25519), replay and clock-skew protection, body and time limits, a
structured access log, the uvicorn runner with the TLS rule, and two demo
routes. The vault API, the real key resolver (issue 12) and the CLI command
come next. Needs the ``server`` extra (Starlette, uvicorn,
http-message-signatures).
"""

from __future__ import annotations

from childvault.server._app import create_app, openapi_document, openapi_json
from childvault.server._auth import (
    KeyResolver,
    MemoryNonceStore,
    NonceStore,
    NonceStoreFull,
    SignatureAuthMiddleware,
    StaticKeyResolver,
)
from childvault.server._common import AuditHook, AuthRefusal
from childvault.server._limits import (
    AccessLogMiddleware,
    LimitsMiddleware,
    header_timeout_protocol,
)
from childvault.server._run import run, server_config

__all__ = [
    "AccessLogMiddleware",
    "AuditHook",
    "AuthRefusal",
    "KeyResolver",
    "LimitsMiddleware",
    "MemoryNonceStore",
    "NonceStore",
    "NonceStoreFull",
    "SignatureAuthMiddleware",
    "StaticKeyResolver",
    "create_app",
    "header_timeout_protocol",
    "openapi_document",
    "openapi_json",
    "run",
    "server_config",
]
