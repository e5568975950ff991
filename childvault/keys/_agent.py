"""The session agent behind ``childvault unlock`` / ``lock``.

Like ``ssh-agent``: one process per user and vault home holds an unlocked
:class:`~childvault.keys.Identity` in memory for a limited time and answers
``sign`` and ``unseal`` requests over a Unix socket, so an officer types the
passphrase once per sitting instead of once per command (and pays the Argon2id
cost once).

What protects it:

* The socket lives in ``$XDG_RUNTIME_DIR/childvault`` (a per-user tmpfs the
  system creates with mode 0700), else in ``/tmp/childvault-agent-<uid>``; the
  directory is created 0700 and refused unless it is a real directory (not a
  symlink) owned by the user with no group or other access. The socket is 0600.
* Every connection's peer credentials (``SO_PEERCRED``) must carry the agent's
  own uid; the client checks the agent's uid the same way.
* The private keys never leave the agent: clients get signatures and opened
  sealed boxes, never the keys. They reach the agent through a pipe at start,
  never through a file; nothing secret is written to disk. The agent marks
  itself non-dumpable (no core file, no ptrace by other processes of the user).
* ``lock`` or the end of the time limit drops the keys and ends the process.
  Python cannot overwrite immutable ``bytes``: the memory is released to the
  allocator, not zeroed; the process then exits, which returns it to the system.

The protocol is one JSON line each way per connection: ``{"op": "hello" |
"sign" | "unseal" | "lock", "data": base64}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import time
from pathlib import Path
from typing import Any

import nacl.signing
from nacl.public import PrivateKey

from childvault._i18n import _t
from childvault.keys._encoding import b64, unb64
from childvault.keys._errors import ConfigError, DecryptionFailed, UsageError
from childvault.keys._identity import Identity, PublicIdentity

#: Default and longest session (``unlock --for``).
DEFAULT_SECONDS = 15 * 60
MAX_SECONDS = 8 * 60 * 60
#: Largest request or answer line: a grant's sealed key cache fits easily.
MAX_MESSAGE = 16 << 20
#: How long one client may take to send its request.
_CONNECTION_TIMEOUT = 10.0
_PR_SET_DUMPABLE = 4


def socket_dir(*, create: bool = True) -> Path:
    """The checked directory holding this user's agent sockets (created 0700 if missing).

    With ``create=False`` (looking for an agent) a missing directory is not made;
    a ``ConfigError`` says that there is none usable.
    """
    uid = os.geteuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _owned_private_dir(Path(runtime), uid, strict_mode=False):
        base = Path(runtime) / "childvault"
    else:
        base = Path(f"/tmp/childvault-agent-{uid}")  # noqa: S108 - checked below
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700)
    if not _owned_private_dir(base, uid, strict_mode=True):
        raise ConfigError(
            _t(
                "the session directory {base} is not a directory owned by uid {uid} with mode "
                "0700 (or is a symlink); remove it and run `childvault unlock` again",
                base=base,
                uid=uid,
            )
        )
    return base


def _owned_private_dir(path: Path, uid: int, *, strict_mode: bool) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        return False
    return not (strict_mode and st.st_mode & 0o077)


def socket_path(home: Path, user: str, *, create: bool = True) -> Path:
    """The socket of the agent for ``user`` in the vault at ``home``."""
    key = f"{os.path.realpath(home)}\0{user}".encode()
    return socket_dir(create=create) / f"{hashlib.sha256(key).hexdigest()[:24]}.sock"


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ValueError(_t("message too large"))
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


# -- the client ------------------------------------------------------------------


class AgentIdentity(Identity):
    """An :class:`Identity` whose secret operations are done by a running agent.

    It is a subclass so the library takes it wherever it takes an unlocked
    identity; it holds no secret key itself (``__init__`` of the base class is
    deliberately not called). ``signing_seed`` is refused: approval tokens are
    signed through :meth:`sign`.
    """

    def __init__(
        self, path: Path, public: PublicIdentity, anchor: dict[str, str] | None = None
    ) -> None:
        self.name = public.name
        self.public = public
        self._path = path
        #: The trust anchor the agent's identity file held (see :class:`Identity`).
        self.anchor = anchor

    def __repr__(self) -> str:
        return f"AgentIdentity(name={self.name!r})"

    def sign(self, message: bytes) -> bytes:
        """The agent's Ed25519 signature of ``message``."""
        return unb64(_call(self._path, "sign", message)["data"])

    def unseal(self, sealed: bytes) -> bytes:
        """Open a sealed box addressed to this identity, in the agent."""
        answer = _call(self._path, "unseal", sealed, check=False)
        if not answer.get("ok"):
            raise DecryptionFailed(f"sealed box for {self.name} did not open")
        return unb64(answer["data"])

    def signing_seed(self) -> bytes:
        """Refused: the seed stays in the agent."""
        raise UsageError(_t("the signing key stays in the session agent; sign through it"))

    def save(self, path: Path, passphrase: str) -> None:
        """Refused: the agent's keys are never written anywhere."""
        raise UsageError(_t("an identity held by the session agent cannot be saved"))


def _call(path: Path, op: str, data: bytes = b"", *, check: bool = True) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(60)
            conn.connect(str(path))
            if _peer_uid(conn) != os.geteuid():
                raise ConfigError(
                    _t("the session agent at {path} runs as another user; refused", path=path)
                )
            conn.sendall(json.dumps({"op": op, "data": b64(data)}).encode() + b"\n")
            answer = json.loads(_read_line(conn))
    except (OSError, ValueError) as exc:
        raise UsageError(
            _t("the session agent went away (locked or expired): run `childvault unlock` again")
        ) from exc
    if not isinstance(answer, dict) or (check and not answer.get("ok")):
        raise UsageError(_t("the session agent refused {op!r}", op=op))
    return answer


def connect(home: Path, user: str) -> AgentIdentity | None:
    """The identity held by a running agent for ``user`` and ``home``, or None."""
    try:
        path = socket_path(home, user, create=False)
    except ConfigError:
        return None
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return None
    except OSError:
        return None
    try:
        hello = _call(path, "hello")
        public = PublicIdentity(
            str(hello["name"]), unb64(hello["x25519_public"]), unb64(hello["ed25519_public"])
        )
    except (UsageError, ConfigError, KeyError, ValueError, TypeError):
        return None
    if public.name != user:
        return None
    anchor = hello.get("anchor")
    if anchor is not None and not (
        isinstance(anchor, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in anchor.items())
    ):
        return None
    return AgentIdentity(path, public, anchor)


def lock(home: Path, user: str) -> bool:
    """Ask the agent for ``user`` and ``home`` to drop its keys and exit; False if none ran."""
    try:
        path = socket_path(home, user, create=False)
    except ConfigError:
        return False
    if not path.exists():
        return False
    try:
        _call(path, "lock")
    except UsageError:
        # A stale socket of an agent that died: remove it so it is not tried again.
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    # The agent answers before it removes its socket; remove it here too, so
    # the session is visibly gone when `lock` returns (no window in which a
    # caller still sees the socket of an agent that is exiting).
    with contextlib.suppress(OSError):
        path.unlink()
    return True


def start(identity: Identity, home: Path, seconds: int) -> Path:
    """Start an agent holding ``identity`` for ``seconds``; return its socket path.

    A running agent for the same user and home is locked first. The keys go to
    the new process through a pipe.
    """
    # Only `unlock` starts an agent: every other command connects, so these
    # imports stay off the path of a command on a session.
    import select
    import subprocess

    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(_t("a session lasts between 1 s and {value} h", value=MAX_SECONDS // 3600))
    path = socket_path(home, identity.name)
    lock(home, identity.name)
    secret = json.dumps(
        {
            "name": identity.name,
            "x25519": b64(bytes(identity._x25519)),
            "ed25519": b64(bytes(identity._ed25519)),
            # The anchor the owner's identity file holds: what their process trusts.
            "anchor": identity.anchor,
            "socket": str(path),
            "seconds": seconds,
        }
    ).encode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "childvault.keys._agent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(secret + b"\n")
    proc.stdin.close()
    # Wait for "ready" (socket bound and listening); a failed start ends the pipe.
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise ConfigError(_t("the session agent did not start (socket {path})", path=path))
    return path


# -- the agent process -------------------------------------------------------------


def _undumpable() -> None:
    """No core dump and no ptrace attach by the user's other processes (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def serve(identity: Identity, path: Path, seconds: int, ready: Any = None) -> None:
    """Answer requests on ``path`` as ``identity`` until ``lock`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(16)
    if ready is not None:
        ready()
    held: Identity | None = identity
    del identity
    try:
        while held is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            server.settimeout(remaining)
            try:
                conn, _ = server.accept()
            except TimeoutError:
                break
            with conn:
                if _handle(conn, held) == "lock":
                    held = None
    finally:
        held = None
        server.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _handle(conn: socket.socket, me: Identity) -> str:
    conn.settimeout(_CONNECTION_TIMEOUT)
    try:
        if _peer_uid(conn) != os.geteuid():
            return "refused"
        request = json.loads(_read_line(conn))
        op, data = request["op"], unb64(request.get("data", ""))
        answer: dict[str, Any] = {"ok": True}
        if op == "hello":
            answer.update(
                name=me.name,
                x25519_public=b64(me.public.encryption_key),
                ed25519_public=b64(me.public.signing_key),
                anchor=me.anchor,
            )
        elif op == "sign":
            answer["data"] = b64(me.sign(data))
        elif op == "unseal":
            try:
                answer["data"] = b64(me.unseal(data))
            except DecryptionFailed:
                answer = {"ok": False}
        elif op != "lock":
            answer = {"ok": False}
        conn.sendall(json.dumps(answer).encode() + b"\n")
        return str(op)
    except (OSError, ValueError, KeyError, TypeError):
        return "error"


def _main() -> None:
    _undumpable()
    doc = json.loads(sys.stdin.buffer.readline())
    identity = Identity(
        doc["name"],
        PrivateKey(unb64(doc["x25519"])),
        nacl.signing.SigningKey(unb64(doc["ed25519"])),
        doc.get("anchor"),
    )
    # The path came from the parent, which checked its directory.
    path, seconds = Path(doc["socket"]), int(doc["seconds"])
    del doc

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdout.close()

    os.chdir("/")
    serve(identity, path, seconds, ready)


if __name__ == "__main__":
    _main()
