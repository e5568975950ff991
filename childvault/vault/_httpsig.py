"""Client side of the server transport: RFC 9421 HTTP Message Signatures with Ed25519.

Every request a workstation sends to ``childvault serve`` carries one
signature (label ``childvault``) made with the person's identity key over:

- ``@method`` and ``@path`` (and ``@query`` when the URL has a query), so a
  signature cannot be moved to another route or verb;
- ``content-digest`` (RFC 9530, ``sha-256``), always, also for an empty body,
  so the body is bound to the signature and the server can check it against
  the bytes it actually received;
- ``content-type`` when there is a body (and whenever it is sent);
- the parameters ``created`` (seconds), ``nonce`` (128 random bits, 32 hex
  characters), ``keyid`` (the user name), ``alg="ed25519"`` and the fixed
  ``tag="childvault"``.

The signature base is built by the ``http-message-signatures`` package, never
here: this module only chooses what is covered. The private key never leaves
:class:`~childvault.keys.Identity`: the package prepares the base and
:meth:`Identity.sign` signs it.

Requires the ``server`` extra (``http-message-signatures``); ``requests`` comes
with ``hvac``.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from http_message_signatures import HTTPMessageSignaturesException, HTTPMessageSigner, algorithms

from childvault._i18n import _t
from childvault.keys import ConfigError, Identity, UsageError

#: Signature label and signed ``tag`` parameter of every childvault request.
SIGNATURE_LABEL = "childvault"
SIGNATURE_TAG = "childvault"
#: The only algorithm the server accepts.
SIGNATURE_ALG = "ed25519"


def covered_components(*, has_query: bool, has_content_type: bool) -> tuple[str, ...]:
    """The component identifiers a childvault request signature must cover.

    Shared by the signer and the server's verifier so both sides agree on one
    list. ``Content-Type`` is covered whenever it is sent (a request with a
    body must send it).
    """
    components = ["@method", "@path"]
    if has_query:
        components.append("@query")
    components.append("content-digest")
    if has_content_type:
        components.append("content-type")
    return tuple(components)


def _body_bytes(request: requests.PreparedRequest) -> bytes:
    body = request.body
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        # requests sends str bodies encoded as UTF-8 (it sets no other charset).
        return body.encode("utf-8")
    # A stream or generator cannot be digested before it is sent; the client
    # API sends bounded byte bodies only.
    raise UsageError(_t("a signed request needs its body as bytes, not a stream"))


def sign_request(
    request: requests.PreparedRequest,
    identity: Identity,
    *,
    created: int | None = None,
    nonce: str | None = None,
) -> requests.PreparedRequest:
    """Sign ``request`` in place with ``identity``'s Ed25519 key and return it.

    Adds ``Content-Digest``, ``Signature-Input`` and ``Signature`` (replacing any
    earlier ones). ``created`` (Unix seconds) and ``nonce`` default to now and
    to 128 fresh random bits; pass them only to reproduce a request in tests.
    Raise :class:`UsageError` for a request that cannot be signed (a streamed
    body, a body without ``Content-Type``, a relative URL).
    """
    if request.method is None or request.url is None:
        raise UsageError(_t("a signed request needs a method and an absolute URL"))
    # requests may already have normalised the method; the signature base
    # requires the upper-case form the server will see.
    request.method = request.method.upper()
    if _body_bytes(request) and "Content-Type" not in request.headers:
        raise UsageError(_t("a signed request with a body needs a Content-Type"))
    for name in ("Content-Digest", "Signature", "Signature-Input"):
        if name in request.headers:
            del request.headers[name]
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519)
    when = int(time.time()) if created is None else created
    try:
        _sign(signer, request, identity, when, nonce)
    except HTTPMessageSignaturesException as exc:
        # E.g. a URL that is not plain ASCII: one error hierarchy for callers.
        raise UsageError(_t("this request cannot be signed: {exc}", exc=exc)) from exc
    return request


def _sign(
    signer: HTTPMessageSigner,
    request: requests.PreparedRequest,
    identity: Identity,
    when: int,
    nonce: str | None,
) -> None:
    body = _body_bytes(request)
    assert request.url is not None
    has_query = urlsplit(request.url).query != ""
    prepared = signer.prepare(
        request,
        key_id=identity.name,
        created=datetime.fromtimestamp(when, tz=UTC),
        nonce=secrets.token_hex(16) if nonce is None else nonce,
        label=SIGNATURE_LABEL,
        tag=SIGNATURE_TAG,
        include_alg=True,
        covered_component_ids=covered_components(
            has_query=has_query, has_content_type="Content-Type" in request.headers
        ),
        # The package adds Content-Digest (sha-256) from the exact bytes
        # requests will send, also for an empty body.
        body=body,
    )
    signer.apply(request, prepared, identity.sign(prepared.signature_base))


class HTTPSignatureAuth(requests.auth.AuthBase):
    """A ``requests`` auth that signs every request with an unlocked identity.

    Use as ``requests.get(url, auth=HTTPSignatureAuth(identity))``. Each
    request gets a fresh nonce, so a retried request is signed anew. A
    redirect answer raises :class:`ConfigError` instead of being followed.
    """

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Sign ``r`` (called by ``requests`` just before sending)."""
        sign_request(r, self.identity)
        r.hooks.setdefault("response", []).append(_refuse_redirect)
        return r


def _refuse_redirect(response: requests.Response, *args: object, **kwargs: object) -> None:
    # requests would resend the signed headers to wherever a redirect points,
    # possibly another server that knows this user: a signed request is
    # never forwarded. The childvault server itself never redirects.
    if response.is_redirect:
        raise ConfigError(
            _t(
                "the server at {url!r} answered with a redirect; signed requests are "
                "not forwarded: check the server URL",
                url=response.request.url,
            )
        )
