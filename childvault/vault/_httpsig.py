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

The signature base of the requests the client API sends (no query, a plain
path, ``application/json`` or no body) is written here directly
(:func:`signature_base`): byte for byte what the ``http-message-signatures``
package builds, at a tenth of its cost (its Structured Fields serialiser is
pure Python and was a fifth of a round trip's CPU). Every other request is
signed by the package, as before; ``tests/server/test_httpsig_fast.py``
checks both give the same headers. The private key never leaves
:class:`~childvault.keys.Identity`: :meth:`Identity.sign` signs the base.

Requires the ``server`` extra (``http-message-signatures``); ``requests`` comes
with ``hvac``.
"""

from __future__ import annotations

import base64
import hashlib
import re
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


#: The requests :func:`signature_base` writes, and the server's fast check reads:
#: an absolute http(s) URL with a plain host and a path of unreserved characters
#: only (nothing to escape, nothing a parser could read two ways), no query.
_PLAIN_URL = re.compile(
    r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)"
)
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")
#: A user name as check_user_name accepts it: nothing to escape in an sf-string.
PLAIN_NAME = re.compile(r"[a-z][a-z0-9._-]{0,62}")
PLAIN_METHOD = re.compile(r"[A-Z]{1,16}")
#: A Content-Type value that is its own signature-base value (printable ASCII,
#: no surrounding whitespace).
PLAIN_TYPE = re.compile(r"[!-~](?:[ -~]*[!-~])?")
_PLAIN_NONCE = re.compile(r"[0-9a-f]{32}")


def digest_field(body: bytes) -> str:
    """The ``Content-Digest`` value (RFC 9530, sha-256 only) of ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def signature_params(content_type: bool, created: int, keyid: str, nonce: str) -> str:
    """The ``@signature-params`` value (and ``Signature-Input`` member) of a plain
    request, in the order the package serialises what :func:`_sign` gives it."""
    covered = '"@method" "@path" "content-digest"' + (' "content-type"' if content_type else "")
    return (
        f'({covered});created={created};keyid="{keyid}";alg="{SIGNATURE_ALG}";'
        f'nonce="{nonce}";tag="{SIGNATURE_TAG}"'
    )


def signature_base(
    method: str, path: str, digest: str, content_type: str | None, params: str
) -> bytes:
    """The RFC 9421 signature base of a plain request (see the module doc).

    The caller has checked every value against the ``PLAIN_*`` patterns: each
    line is then exactly what the package writes (no value needs escaping or
    normalising).
    """
    components = [("@method", method), ("@path", path), ("content-digest", digest)]
    if content_type is not None:
        components.append(("content-type", content_type))
    components.append(("@signature-params", params))
    return "\n".join(f'"{name}": {value}' for name, value in components).encode("ascii")


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
    assert request.url is not None and request.method is not None
    if _sign_plain(request, identity, when, nonce, body):
        return
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


def _sign_plain(
    request: requests.PreparedRequest,
    identity: Identity,
    when: int,
    nonce: str | None,
    body: bytes,
) -> bool:
    """Sign a plain request (see the module doc) without the package; False if
    ``request`` is not one (the package signs it then)."""
    url = _PLAIN_URL.fullmatch(request.url or "")
    # ``requests`` types a header value as str or bytes (types-requests as str):
    # ours are str, and anything else is not a plain request.
    raw_type: object = request.headers.get("Content-Type")
    if url is None or (raw_type is not None and not isinstance(raw_type, str)):
        return False
    signed = plain_headers(
        identity, request.method or "", url.group(1), body, raw_type, created=when, nonce=nonce
    )
    if signed is None:
        return False
    request.headers.update(signed)
    return True


def plain_headers(
    identity: Identity,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    *,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str] | None:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers of a
    plain request (module doc) to ``path`` (the URL's path, no query), or None if
    it is not one. What :func:`sign_request` adds to such a request, for a caller
    that sends it without ``requests`` (the remote backend's transport)."""
    when = int(time.time()) if created is None else created
    nonce = secrets.token_hex(16) if nonce is None else nonce
    if (
        PLAIN_PATH.fullmatch(path) is None
        or PLAIN_METHOD.fullmatch(method) is None
        or PLAIN_NAME.fullmatch(identity.name) is None
        or _PLAIN_NONCE.fullmatch(nonce) is None
        or type(when) is not int
        or not 0 <= when < 10**15
        or (content_type is not None and PLAIN_TYPE.fullmatch(content_type) is None)
    ):
        return None
    digest = digest_field(body)
    params = signature_params(content_type is not None, when, identity.name, nonce)
    base = signature_base(method, path, digest, content_type, params)
    signature = base64.b64encode(identity.sign(base)).decode()
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{SIGNATURE_LABEL}={params}",
        "Signature": f"{SIGNATURE_LABEL}=:{signature}:",
    }


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
        raise redirect_refused(str(response.request.url))


def redirect_refused(url: str) -> ConfigError:
    """The error a redirect answer to a signed request to ``url`` raises (it is never
    followed: see :class:`HTTPSignatureAuth`)."""
    return ConfigError(
        _t(
            "the server at {url!r} answered with a redirect; signed requests are "
            "not forwarded: check the server URL",
            url=url,
        )
    )
