"""A checkpoint witness in the style of C2SP tlog-witness, and the log server's client of it.

A witness keeps, for each log (checkpoint origin), the last checkpoint it
cosigned. ``POST /add-checkpoint`` carries::

    old <size the client believes the witness is at>
    <base64 consistency proof hash>      (zero or more lines, RFC 6962/9162)
    <blank line>
    <signed checkpoint note>

The witness checks, in this order: the request parses (400); a log key it was
configured with signed the note (403); ``old`` is the size it last cosigned
for that origin (409, the body is its size as one decimal line, so the client
can retry); a checkpoint of the same size has the same root (409: a fork); the
proof shows the old tree is a prefix of the new one (422). Then it stores the
new checkpoint durably (written to a temporary file, fsynced, renamed, the
directory fsynced) before it answers 200 with its cosignature: one signed-note
signature line, Ed25519 over the note body by the witness's own key. A log
that has been rewritten or forked therefore cannot get a cosignature for the
other branch from a witness that saw one.

Deviation from C2SP, stated: the cosignature is a plain signed-note Ed25519
signature (type 0x01), not a ``cosignature/v1`` timestamped one, so every
tool that checks our checkpoints (``_note.open_note``, Go's ``sumdb/note``)
verifies it unchanged. The witness needs no authentication (it is public by
design: a request without a valid log signature changes nothing); requests are
rate limited per client address and bounded in size and time.

:class:`WitnessClient` is what ``childvault serve --witness-url`` uses: it
sends a checkpoint with a proof from the size the witness last cosigned (one
retry with the size a 409 names) and checks the cosignature against the
configured witness key before the note goes into the witness file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nacl.signing
import requests
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route

from childvault._i18n import _t
from childvault.keys import ConfigError, IntegrityError, UsageError
from childvault.server._common import ASGIApp, Scope
from childvault.server._limits import AccessLogMiddleware, LimitsMiddleware
from childvault.vault import _note
from childvault.vault._merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from childvault.vault._wire_messages import (
    HEADER,
    message_from_header,
    message_header,
    message_of,
)

__all__ = [
    "ADD_CHECKPOINT",
    "MAX_REQUEST",
    "Witness",
    "WitnessClient",
    "WitnessFailed",
    "WitnessRefusal",
    "add_checkpoint_body",
    "create_witness_app",
]

logger = logging.getLogger("childvault.server.witness")

#: The witness's one write endpoint (C2SP tlog-witness).
ADD_CHECKPOINT = "/add-checkpoint"
#: Largest add-checkpoint request: a checkpoint of this project is well under 1 KiB
#: and a proof at most 64 hashes; the bound refuses hostile bodies before parsing.
MAX_REQUEST = 64 * 1024
#: Largest answer the client reads from a witness (cosignature lines).
MAX_ANSWER = 16 * 1024
#: Proof lines accepted (a tree of 2**64 leaves needs at most 2 * 64).
MAX_PROOF = 130
#: Seconds the log server waits for a witness (it holds the writer meanwhile).
CLIENT_TIMEOUT = 5.0
#: Requests per second and burst allowed per client address.
RATE = 10.0
BURST = 30.0
#: Client addresses tracked by the rate limiter before the oldest are forgotten.
_RATE_TRACKED = 4096

_KEY_FILE = "witness.key"
_VKEY_FILE = "witness.vkey"
_STATE_FILE = "checkpoints.json"
_OLD_RE = re.compile(r"old (0|[1-9][0-9]{0,19})")
_SIZE_TYPE = "text/x.tlog.size"


class WitnessRefusal(Exception):
    """An add-checkpoint request the witness refuses: HTTP status and a short reason."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: On 409: the size the witness last cosigned for the log.
        self.size = size


class WitnessFailed(IntegrityError):
    """The witness could not be reached, refused, or answered with no valid cosignature."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64_hash(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == HASH_SIZE and _b64(raw) == text else None


def add_checkpoint_body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """The body of an add-checkpoint request (see the module doc)."""
    lines = [f"old {old}", *(_b64(h) for h in proof)]
    return ("".join(line + "\n" for line in lines) + "\n" + note).encode("utf-8")


def _parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    """``(old, proof, note)`` of an add-checkpoint body; :class:`WitnessRefusal` if malformed."""
    if len(body) > MAX_REQUEST:
        raise WitnessRefusal(413, _t("request too large"))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, _t("request is not UTF-8")) from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessRefusal(400, _t("request has no blank line before the checkpoint"))
    lines = head.split("\n")
    match = _OLD_RE.fullmatch(lines[0])
    if match is None:
        raise WitnessRefusal(400, _t("request does not start with 'old <size>'"))
    if len(lines) - 1 > MAX_PROOF:
        raise WitnessRefusal(400, _t("consistency proof is too long"))
    proof = []
    for line in lines[1:]:
        digest = _unb64_hash(line)
        if digest is None:
            raise WitnessRefusal(400, _t("consistency proof line is not base64 of a SHA-256 hash"))
        proof.append(digest)
    return int(match.group(1)), proof, note


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Witness:
    """A witness's key, configured log keys and the last checkpoint cosigned per log.

    ``directory`` holds ``witness.key`` (made on first use, 0600), its public
    ``witness.vkey`` and ``checkpoints.json`` (the state). ``log_keys`` are the
    signed-note verifier keys whose checkpoints it accepts (for childvault, the
    vkeys of the officers and admins who sign checkpoints). ``name`` is the
    witness's key name, fixed when the key is made.
    """

    def __init__(self, directory: Path, log_keys: Sequence[str], *, name: str | None = None):
        self.directory = Path(directory)
        self.log_keys: dict[str, bytes] = {}
        for text in log_keys:
            try:
                key_name, public = _note.parse_vkey(text)
            except IntegrityError as exc:
                raise UsageError(_t("invalid log key: {error}", error=exc)) from exc
            self.log_keys[key_name] = public
        if not self.log_keys:
            raise UsageError(_t("a witness needs at least one log key (--log-key VKEY)"))
        # Made only once the arguments hold up: a mistyped command creates nothing.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.name, self._signing = self._load_key(name)
        self.public_key = bytes(self._signing.verify_key)
        if self.name in self.log_keys:
            raise UsageError(_t("the witness's key name is also a log key's name"))
        (self.directory / _VKEY_FILE).write_text(self.vkey() + "\n", encoding="utf-8")
        self._lock = threading.Lock()
        self._state = self._load_state()

    def _load_key(self, name: str | None) -> tuple[str, nacl.signing.SigningKey]:
        path = self.directory / _KEY_FILE
        if not path.exists():
            seed = nacl.signing.SigningKey.generate()
            chosen = name or "childvault-witness-" + bytes(seed.verify_key)[:4].hex()
            _note.key_id(chosen, bytes(seed.verify_key))  # validates the name
            doc = {"name": chosen, "seed": _b64(bytes(seed))}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            key = nacl.signing.SigningKey(base64.b64decode(str(doc["seed"]), validate=True))
            stored = str(doc["name"])
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ConfigError(_t("the witness key file {path} is damaged", path=path)) from exc
        if name is not None and name != stored:
            raise UsageError(
                _t("this witness's key is named {stored}, not {name}", stored=stored, name=name)
            )
        return stored, key

    def _load_state(self) -> dict[str, tuple[int, bytes]]:
        path = self.directory / _STATE_FILE
        if not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            state = {}
            for origin, item in doc.items():
                root = _unb64_hash(str(item["root"]))
                size = item["size"]
                if root is None or type(size) is not int or size < 0:
                    raise ValueError(origin)
                state[str(origin)] = (size, root)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(_t("the witness state {path} is damaged", path=path)) from exc
        return state

    def vkey(self) -> str:
        """The witness's verifier key (give it to ``serve --witness-key`` and auditors)."""
        return _note.vkey(self.name, self.public_key)

    def size(self, origin: str) -> int:
        """The size of the last checkpoint cosigned for ``origin`` (0: none yet)."""
        with self._lock:
            return self._state.get(origin, (0, EMPTY_ROOT))[0]

    def add_checkpoint(self, body: bytes) -> str:
        """Check and cosign one add-checkpoint request; return the cosignature line.

        Raises :class:`WitnessRefusal` (see the module doc for the statuses).
        """
        old, proof, note = _parse_request(body)
        try:
            _note.parse_note(note)
        except IntegrityError as exc:
            raise WitnessRefusal(
                400, _t("malformed note: {error}", error=message_of(exc))
            ) from None
        try:
            cp, _ = _note.verify_note(note, self.log_keys)
        except IntegrityError as exc:
            raise WitnessRefusal(
                403,
                _t(
                    "the checkpoint is not signed by a known log key: {error}",
                    error=message_of(exc),
                ),
            ) from None
        with self._lock:
            size, root = self._state.get(cp.origin, (0, EMPTY_ROOT))
            if old != size:
                raise WitnessRefusal(409, _t("old size is not the witness's"), size=size)
            if cp.size < size:
                raise WitnessRefusal(400, _t("the checkpoint is smaller than the old size"))
            if cp.size == size and cp.root != root:
                # Same size, another root: the log forked (or was rewritten).
                raise WitnessRefusal(409, _t("a different checkpoint of this size"), size=size)
            if not verify_consistency(size, cp.size, root, cp.root, proof):
                raise WitnessRefusal(422, _t("the consistency proof does not verify"))
            cosigned = _note.add_signature(
                note, self.name, lambda m: self._signing.sign(m).signature, self.public_key
            )
            if cp.size != size or cp.origin not in self._state:
                state = dict(self._state)
                state[cp.origin] = (cp.size, cp.root)
                doc = {o: {"size": s, "root": _b64(r)} for o, (s, r) in sorted(state.items())}
                # Durable before the cosignature leaves: a restarted witness must
                # never cosign a fork of what it already cosigned.
                _write_atomic(
                    self.directory / _STATE_FILE, json.dumps(doc, sort_keys=True).encode()
                )
                self._state = state
        return cosigned.rsplit("\n", 2)[-2] + "\n"


class _RateLimit:
    """A token bucket per client address, bounded in how many addresses it tracks."""

    def __init__(
        self,
        rate: float = RATE,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if len(self._buckets) >= _RATE_TRACKED:
                # Forget the least recently seen address (dicts keep insertion order).
                self._buckets.pop(next(iter(self._buckets)))
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1.0, now)
            return True


def create_witness_app(witness: Witness, *, limit: _RateLimit | None = None) -> ASGIApp:
    """The witness's ASGI app: ``POST /add-checkpoint`` and ``GET /health``."""
    limiter = limit or _RateLimit()

    async def add(request: Request) -> Response:
        client = request.client.host if request.client is not None else "-"
        if not limiter.allow(client):
            busy = _t("too many requests")
            return PlainTextResponse(busy + "\n", 429, headers={HEADER: message_header(busy) or ""})
        body = await request.body()
        try:
            line = await run_in_threadpool(witness.add_checkpoint, body)
        except WitnessRefusal as exc:
            if exc.status == 409 and exc.size is not None:
                return PlainTextResponse(f"{exc.size}\n", 409, media_type=_SIZE_TYPE)
            # The template rides in a header (C2SP clients ignore it; ours show
            # the refusal translated when it renders to exactly this text).
            carried = message_header(exc.message)
            return PlainTextResponse(
                exc.message + "\n", exc.status, headers={HEADER: carried} if carried else None
            )
        return PlainTextResponse(line)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route(ADD_CHECKPOINT, add, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    limits = LimitsMiddleware(Starlette(routes=routes), max_body=MAX_REQUEST)

    def route_template(scope: Scope) -> str:
        for route in routes:
            match, _ = route.matches(dict(scope))
            if match is not Match.NONE:
                return route.path
        return "-"

    return AccessLogMiddleware(limits, route_template=route_template)


class WitnessClient:
    """Sends checkpoints to one witness at ``url`` and checks its cosignature.

    ``vkey`` is the witness's verifier key; a cosignature that does not
    verify under it is refused. It may also be a list of keys (the keys
    recorded in the vault, ``serve --witness-url`` without ``--witness-key``):
    the witness must then cosign under one of them. The size the witness last
    cosigned is kept in memory; after a restart the first request learns it
    from the 409 answer.
    """

    def __init__(
        self, url: str, vkey: str | Sequence[str], *, timeout: float = CLIENT_TIMEOUT
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(_t("a witness URL starts with http:// or https://"))
        self.url = url.rstrip("/")
        self.known: dict[str, bytes] = {}
        for text in [vkey] if isinstance(vkey, str) else list(vkey):
            try:
                name, public = _note.parse_vkey(text)
            except IntegrityError as exc:
                raise UsageError(_t("invalid witness key: {error}", error=exc)) from exc
            self.known[name] = public
        if not self.known:
            raise UsageError(_t("a witness URL needs a witness key"))
        self.name, self.public_key = next(iter(self.known.items()))
        self.timeout = timeout
        self.size = 0
        self._http = requests.Session()

    def cosign(self, note: str, proof: Callable[[int], list[bytes]]) -> str:
        """Return ``note`` with the witness's verified cosignature added.

        ``proof(old)`` returns the consistency proof from ``old`` to the
        note's tree. Raises :class:`WitnessFailed` if the witness is down,
        refuses, or answers without a valid cosignature.
        """
        cp_size = _note_size(note)
        old = self.size if self.size <= cp_size else 0
        for attempt in range(2):
            try:
                answer = self._post(add_checkpoint_body(old, proof(old), note))
            except ValueError as exc:  # the witness's size is beyond our log
                raise WitnessFailed(
                    _t(
                        "the witness {url} holds a checkpoint larger than this log: {error}",
                        url=self.url,
                        error=exc,
                    )
                ) from exc
            status, text, carried = answer
            if status == 409 and attempt == 0:
                # Not where we thought it was (a restart, another log server): once more.
                try:
                    old = int(text.strip())
                except ValueError:
                    break
                if old > cp_size:
                    break
                continue
            if status != 200:
                break
            cosigned = note + text
            try:
                _note.open_note(cosigned, self.known)
            except IntegrityError as exc:
                raise WitnessFailed(
                    _t(
                        "the witness {url} sent an invalid cosignature: {error}",
                        url=self.url,
                        error=exc,
                    )
                ) from exc
            if _note.parse_note(cosigned)[0] != _note.parse_note(note)[0]:
                # A blank line in the answer would make the signatures part of the body.
                raise WitnessFailed(
                    _t("the witness {url} sent an invalid cosignature", url=self.url)
                )
            self.size = cp_size
            return cosigned
        raise WitnessFailed(
            _t(
                "the witness {url} refused the checkpoint ({status}: {reason})",
                url=self.url,
                status=status,
                reason=message_from_header(text.strip()[:200], carried),
            )
        )

    def _post(self, body: bytes) -> tuple[int, str, str | None]:
        try:
            with self._http.post(
                self.url + ADD_CHECKPOINT,
                data=body,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as r:
                raw = r.raw.read(MAX_ANSWER + 1, decode_content=True)
                status = r.status_code
                carried = r.headers.get(HEADER)
        except requests.RequestException as exc:
            raise WitnessFailed(_t("the witness {url} did not answer", url=self.url)) from exc
        if len(raw) > MAX_ANSWER:
            raise WitnessFailed(_t("the witness {url} sent too long an answer", url=self.url))
        return status, raw.decode("utf-8", errors="replace"), carried


def _note_size(note: str) -> int:
    body, _ = _note.parse_note(note)
    return _note.Checkpoint.parse_body(body).size
