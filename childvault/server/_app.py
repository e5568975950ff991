"""The ASGI application: routes wrapped in access log, limits and signature checks.

Layering, outermost first::

    AccessLogMiddleware -> LimitsMiddleware -> SignatureAuthMiddleware -> Starlette routes

so a refusal by any layer is logged, and the body the signature layer reads
is already bounded in size and time. For now the routes are ``GET /health``
and ``GET /openapi.json`` (public) and the demo ``GET /v1/whoami``
(authenticated); the vault API arrives with issue 13.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from childvault.server._auth import (
    DEFAULT_SKEW,
    Clock,
    KeyResolver,
    NonceStore,
    SignatureAuthMiddleware,
)
from childvault.server._common import ASGIApp, AuditHook, Scope
from childvault.server._limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_RECEIVE_TIMEOUT,
    AccessLogMiddleware,
    LimitsMiddleware,
    UserRateLimit,
)
from childvault.server._routes import vault_routes
from childvault.server._vault import VaultHost
from childvault.vault._httpsig import SIGNATURE_TAG

API_VERSION = "0.1.0"
PUBLIC_ROUTES = (("GET", "/health"), ("GET", "/openapi.json"))


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _whoami(request: Request) -> Response:
    # POST is accepted so that signed bodies can be exercised end to end
    # before the real API exists; the body itself is only counted.
    body = await request.body()
    return JSONResponse({"user": request.state.user, "body_bytes": len(body)})


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


def _routes(
    vault: VaultHost | None = None,
    audit: AuditHook | None = None,
    rate: UserRateLimit | None = None,
) -> list[Route]:
    routes = [
        Route("/health", _health, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/v1/whoami", _whoami, methods=["GET", "POST"]),
    ]
    if vault is not None:
        routes += vault_routes(vault, audit, rate)
    return routes


def create_app(
    resolver: KeyResolver,
    *,
    nonce_store: NonceStore | None = None,
    audit: AuditHook | None = None,
    clock: Clock = time.time,
    skew: int = DEFAULT_SKEW,
    max_body: int = DEFAULT_MAX_BODY,
    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    access_logger: logging.Logger | None = None,
    vault: VaultHost | None = None,
    rate: UserRateLimit | None = None,
) -> ASGIApp:
    """Build the server's ASGI app.

    ``resolver`` says whose signatures count; ``nonce_store`` defaults to a
    bounded in-memory store; ``audit`` receives every refusal; ``clock``
    (Unix seconds) and ``skew`` define the window for ``created``. With
    ``vault``, the vault API routes (:mod:`childvault.server._routes`) are
    served, each verified user's requests limited by ``rate`` (none: no limit).
    """
    routes = _routes(vault, audit, rate)
    inner = _Direct(Starlette(routes=routes), routes)
    auth = SignatureAuthMiddleware(
        inner,
        resolver=resolver,
        nonce_store=nonce_store,
        audit=audit,
        clock=clock,
        skew=skew,
        public=PUBLIC_ROUTES,
    )
    limits = LimitsMiddleware(
        auth,
        max_body=max_body,
        receive_timeout=receive_timeout,
        body_timeout=body_timeout,
        audit=audit,
    )

    # Every route's path is fixed (no parameters): looked up, not matched, per request.
    fixed = {
        (method, route.path): route.path
        for route in routes
        if "{" not in route.path
        for method in (route.methods or ())
    }

    def route_template(scope: Scope) -> str:
        # Route templates, never concrete paths: paths will carry record ids.
        found = fixed.get((str(scope.get("method")), str(scope.get("path"))))
        if found is not None:
            return found
        for route in routes:
            match, _ = route.matches(dict(scope))
            if match is not Match.NONE:
                return route.path
        return "-"

    return AccessLogMiddleware(limits, route_template=route_template, logger=access_logger)


class _Direct:
    """The vault API's POST routes (``/v1/rpc``, ``/v1/rpc/batch``, ``/v1/txn/*``)
    straight to their handlers: a dictionary look-up instead of Starlette's
    router, its error and exception middleware and its per-route exception
    wrapper, on every round trip. Those handlers answer every ``Exception``
    themselves (``_routes.vault_routes``), so nothing the skipped layers did is
    lost; every other request (and method) goes through Starlette as before.
    Limits, signatures and the access log are the outer layers, unchanged.
    """

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.direct = {
            route.path: route.endpoint
            for route in routes
            if route.path.startswith(("/v1/rpc", "/v1/txn/")) and route.methods == {"POST"}
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Answer a vault POST directly; hand anything else to Starlette."""
        endpoint = self.direct.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the routes served now (checked in as docs/openapi.json)."""
    refusal = {
        "description": "Refused; `reason` is a stable code (docs/server.md lists them).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "childvault server",
            "version": API_VERSION,
            "description": (
                "Every request except /health and /openapi.json carries an RFC 9421 HTTP "
                "Message Signature (Ed25519) by the person's identity key: see docs/server.md."
            ),
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness check (no authentication)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The server is up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"status": {"const": "ok"}},
                                        "required": ["status"],
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document (no authentication)",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document."}},
                }
            },
            "/v1/whoami": {
                "get": {
                    "summary": "The verified user name of the signer",
                    "responses": {
                        "200": {
                            "description": "The signature verified.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"user": {"type": "string"}},
                                        "required": ["user"],
                                    }
                                }
                            },
                        },
                        "401": refusal,
                        "403": refusal,
                        "408": refusal,
                        "413": refusal,
                        "431": refusal,
                        "503": refusal,
                    },
                }
            },
            **_vault_paths(refusal),
        },
        "security": [{"httpMessageSignature": []}],
        "components": {
            "securitySchemes": {
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": (
                        "RFC 9421 HTTP Message Signature, label and tag "
                        f'"{SIGNATURE_TAG}", alg "ed25519", keyid = user name, with '
                        'created and a 128-bit hex nonce, covering "@method" "@path" '
                        '["@query"] "content-digest" ["content-type"]; Signature-Input and '
                        "Content-Digest (RFC 9530, sha-256) headers are required too. "
                        "OpenAPI has no scheme for message signatures, so it is described "
                        "as an apiKey header."
                    ),
                }
            },
            "schemas": {
                "Value": {
                    "description": (
                        'JSON with tags: {"$b": base64} bytes, {"$t": [...]} tuple, '
                        '{"$o": [[key, value], ...]} mapping, {"$d": row type, "v": '
                        "fields} row (UserRow, RecordRow, NewRecord, RequestRow, GrantRow, "
                        "CheckpointRow)."
                    )
                },
                "Refusal": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "reason": {
                            "type": "string",
                            "enum": [
                                "missing_signature",
                                "malformed_signature",
                                "missing_digest",
                                "malformed_digest",
                                "digest_mismatch",
                                "unknown_user",
                                "invalid_signature",
                                "user_disabled",
                                "replay",
                                "clock_skew",
                                "body_too_large",
                                "head_too_large",
                                # 400 before h11 parses the head (_limits.head_refusal),
                                # or h11's own refusal (malformed_head).
                                "ambiguous_framing",
                                "bare_lf",
                                "obs_fold",
                                "control_character",
                                "request_target",
                                "malformed_head",
                                # 400 before h11: the Host header names
                                # another server (DNS rebinding, _hosts).
                                "host",
                                "request_timeout",
                                "unavailable",
                                "store_unavailable",
                                "busy",
                                "role",
                                "binding",
                                "unverified",
                                "release_refused",
                                "server_only",
                                "no_transaction",
                                "no_key_slot",
                                "unknown_method",
                                "malformed",
                                "error",
                                "internal",
                                # 502 at a commit: stored, but the HTTP witness did
                                # not cosign its checkpoint (docs/server.md "Witness").
                                "witness",
                                # 429: over the per-user rate (Retry-After says when).
                                "rate_limited",
                                # 403 at a commit: an approval breaks a rule the
                                # server decides (own request, TTL, uses, fields).
                                "policy",
                                # 409: a batch's gen is old, or a _cas write did not
                                # apply; nothing stored, the client runs it again.
                                "stale",
                            ],
                        },
                        "type": {
                            "type": "string",
                            "description": "reason error: the library error's class",
                        },
                        "template": {
                            "type": "string",
                            "description": (
                                "the message's template (str.format, named placeholders "
                                "only), for the client to show it translated: a library "
                                "error's (reason error) or a refused call's detail"
                            ),
                        },
                        "params": {
                            "type": "object",
                            "description": (
                                "the template's values (strings, numbers, or nested "
                                "{template, params})"
                            ),
                        },
                    },
                    "required": ["error", "reason"],
                },
            },
        },
    }


def _vault_paths(refusal: dict[str, Any]) -> dict[str, Any]:
    """The vault API (served by ``childvault serve``): see docs/server.md."""
    errors = {str(code): refusal for code in (400, 401, 403, 404, 408, 409, 413, 429, 431, 503)}

    def answer(description: str, result: dict[str, Any]) -> dict[str, Any]:
        return {
            "200": {
                "description": description,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "result": result,
                                "gen": {
                                    "type": "integer",
                                    "description": "Changes with every commit (random start)",
                                },
                            },
                            "required": ["result"],
                        }
                    }
                },
            },
            **errors,
        }

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    txn = {"type": "object", "properties": {"txn": {"type": "string"}}, "required": ["txn"]}
    return {
        "/v1/vault": {
            "get": {
                "summary": "The vault's config, schema, the caller's sealed key slot, the witness",
                "responses": answer(
                    "Tagged JSON (see Value).", {"$ref": "#/components/schemas/Value"}
                ),
            }
        },
        "/v1/rpc": {
            "post": {
                "summary": "One backend call (repo, method, arguments), in a transaction or alone",
                "requestBody": body(
                    {
                        "type": "object",
                        "properties": {
                            "txn": {"type": ["string", "null"]},
                            "repo": {"type": "string"},
                            "method": {"type": "string"},
                            "args": {"type": "array"},
                            "kwargs": {"$ref": "#/components/schemas/Value"},
                        },
                        "required": ["repo", "method", "args", "kwargs"],
                    }
                ),
                "responses": answer("The call's result.", {"$ref": "#/components/schemas/Value"}),
            }
        },
        "/v1/txn/begin": {
            "post": {
                "summary": "Open a transaction (one writer at a time; 503 busy: retry)",
                "requestBody": body({"type": "object"}),
                "responses": answer("The transaction id.", {"type": "string"}),
            }
        },
        "/v1/txn/commit": {
            "post": {
                "summary": "Verify what was appended, then commit",
                "requestBody": body(txn),
                "responses": answer("Committed.", {"type": "null"}),
            }
        },
        "/v1/txn/rollback": {
            "post": {
                "summary": "Roll back",
                "requestBody": body(txn),
                "responses": answer("Rolled back.", {"type": "null"}),
            }
        },
        "/v1/rpc/batch": {
            "post": {
                "summary": (
                    "Backend calls in order in one transaction (an open one, or begin: true), "
                    "each checked as /v1/rpc checks it; commit: true commits after the last. "
                    "With neither txn nor begin: reads only, run together between transactions"
                ),
                "requestBody": body(
                    {
                        "type": "object",
                        "properties": {
                            "txn": {"type": ["string", "null"]},
                            "begin": {"type": "boolean"},
                            "commit": {"type": "boolean"},
                            "gen": {
                                "type": "integer",
                                "description": (
                                    "With begin: the gen of an earlier answer; 409 stale, "
                                    "nothing run, if the server committed anything since"
                                ),
                            },
                            "calls": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "repo": {"type": "string"},
                                        "method": {"type": "string"},
                                        "args": {"type": "array"},
                                        "kwargs": {"$ref": "#/components/schemas/Value"},
                                    },
                                    "required": ["repo", "method", "args", "kwargs"],
                                },
                            },
                        },
                        "required": ["calls"],
                    }
                ),
                "responses": answer(
                    "[transaction id (null once committed), [each call's result]].",
                    {
                        "type": "array",
                        "prefixItems": [{"type": ["string", "null"]}, {"type": "array"}],
                    },
                ),
            }
        },
    }


def openapi_json() -> str:
    """:func:`openapi_document` serialised as checked in under ``docs/openapi.json``."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
