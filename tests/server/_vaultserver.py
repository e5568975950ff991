"""A real ``childvault serve`` process over a vault made for the test, and CLI clients.

The vault is created locally (admin, two officers, three staff); every client
gets its own workstation directory holding only its identity file, and runs
the CLI as a separate process with ``--server``. Every wait is bounded.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from childvault.keys import Identity
from childvault.vault import Vault
from tests.server.conftest import ROOT, START_TIMEOUT, free_port

#: Every person of the test vault and their role.
PEOPLE = {
    "officer1": "officer",
    "officer2": "officer",
    "worker1": "staff",
    "worker2": "staff",
    "worker3": "staff",
    "worker4": "staff",
}
CLI_TIMEOUT = 300


def passphrase(user: str) -> str:
    """The test passphrase of ``user``."""
    return f"pass-{user}-0123456789"


@dataclass
class VaultServer:
    """A served vault: its home, URL, process, log, and the workstations."""

    root: Path
    home: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def workstation(self, user: str) -> Path:
        """The directory of ``user``'s workstation (only their identity file)."""
        return self.root / f"ws-{user}"

    def identity(self, user: str) -> Identity:
        """``user``'s unlocked identity, from their workstation."""
        return Identity.load(self.workstation(user) / "identities" / f"{user}.id", passphrase(user))

    def connect(self, user: str) -> Vault:
        """A library client (in this process) as ``user``."""
        return Vault.connect(self.url, self.identity(user))

    def cli(
        self, user: str, *args: str, expect: int | None = 0, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``childvault --server URL --as USER ARGS`` as a separate process."""
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
        env.pop("CHILDVAULT_HOME", None)
        cmd = [sys.executable, "-m", "childvault", "--server", self.url]
        cmd += ["--home", str(self.workstation(user)), "--as", user, *args]
        done = subprocess.run(
            cmd, cwd=self.root, env=env, capture_output=True, timeout=CLI_TIMEOUT, input=stdin
        )
        if expect is not None and done.returncode != expect:
            raise AssertionError(
                f"{' '.join(args)} as {user}: exit {done.returncode}, expected {expect}\n"
                f"{done.stdout.decode()}\n{done.stderr.decode()}"
            )
        return done

    def cli_background(self, user: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``childvault --server URL --as USER ARGS`` without waiting for it."""
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
        env.pop("CHILDVAULT_HOME", None)
        cmd = [sys.executable, "-m", "childvault", "--server", self.url]
        cmd += ["--home", str(self.workstation(user)), "--as", user, *args]
        return subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def cli_json(self, user: str, *args: str) -> Any:
        """:meth:`cli` with ``--json``, parsed."""
        return json.loads(self.cli(user, *args, "--json").stdout)

    def refusals(self) -> list[dict[str, Any]]:
        """The refusals the server logged so far."""
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith('{"refusal"'):
                out.append(json.loads(line)["refusal"])
        return out

    def start(
        self, *, port: int | None = None, as_user: str = "admin", extra: Sequence[str] = ()
    ) -> None:
        """Start (or restart) the server (``serve --as as_user``, then ``extra`` options);
        wait until /health answers."""
        port = port or free_port()
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(as_user))
        cmd = [sys.executable, "-m", "childvault", "--home", str(self.home), "--as", as_user]
        cmd += ["serve", "--listen", f"127.0.0.1:{port}", *extra]
        self.log_path = self.root / "server.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.process, self.log_path)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) the server and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (bounded) until ``url``/health answers; raise with the log if it dies."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.1)


def start_older(vs: VaultServer, *unknown: str) -> None:
    """``serve`` over ``vs`` by a server that does not know the remote methods
    ``unknown`` (``"inputs"`` for a whole repository, ``"checkpoints.since"`` for
    one method): what a server from before they existed answers."""
    drops = "; ".join(
        f"_methods.METHODS[{repo!r}].pop({method!r})"
        if method
        else f"_methods.METHODS.pop({repo!r})"
        for repo, _, method in (name.partition(".") for name in unknown)
    )
    script = (
        "import sys; from childvault.vault._remote import _methods; "
        f"{drops}; sys.argv[0] = 'childvault'; from childvault._entry import main; main()"
    )
    port = free_port()
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"))
    cmd = [sys.executable, "-c", script, "--home", str(vs.home), "--as", "admin"]
    cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
    vs.log_path = vs.root / "server.log"
    with vs.log_path.open("ab") as log:
        vs.process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    vs.url = f"http://127.0.0.1:{port}"
    wait_healthy(vs.url, vs.process, vs.log_path)


def make_vault(root: Path, people: Sequence[str] = tuple(PEOPLE)) -> VaultServer:
    """Create the vault in ``root/home`` and give each person a workstation."""
    home = root / "home"
    with Vault.init(
        home, institution="Test home", admin="admin", admin_passphrase=passphrase("admin")
    ) as v:
        for user in people:
            v.add_user(user, [PEOPLE[user]], passphrase(user))
    if "officer2" in people:
        with Vault.open(home, "officer1", passphrase("officer1")) as o:
            o.share_custodian("officer2")
    served = VaultServer(root, home)
    for user in people:
        ws = served.workstation(user) / "identities"
        ws.mkdir(parents=True, mode=0o700)
        shutil.copy2(home / "identities" / f"{user}.id", ws / f"{user}.id")
    return served


def synthetic_csv(path: Path, rows: int, offset: int = 0) -> Path:
    """``rows`` valid synthetic rows (200 children, repeated as needed) as a new CSV file.

    Not the shipped sample: its consents are older than the back-dating window,
    which only an officer's ``--confirm-backdated`` import may cross (issue 15),
    and these files are imported by staff. Consent is given on the import day;
    the children are about ten and kept six years on, all counted from today
    (the server and the CLI run on the system clock).
    """
    from tests.conftest import TODAY, child_values, years_ahead

    consent = {
        "consent_by": "guardian",
        "consented_at": "",
        "notice_version": "2026-1",
        "purposes": "case_management;statistics",
        "retain_until": years_ahead(6).isoformat(),
    }
    data = [{**child_values(i, today=TODAY), **consent} for i in range(200)]
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(data[0]))
        writer.writeheader()
        for i in range(rows):
            writer.writerow(data[(offset + i) % len(data)])
    return path


# ---------------------------------------------------------------- signed RPC calls
# What a client sends, built by hand: the tests of the server's read paths call
# the wire directly (one copy, not one per test module).


def rpc_call(repo: str, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One call of ``/v1/rpc`` (or of a batch), arguments in the wire encoding."""
    from childvault.vault._remote._codec import encode

    return {"repo": repo, "method": method, "args": encode(list(args)), "kwargs": encode(kwargs)}


def signed_rpc(vs: VaultServer, who: Identity, path: str, doc: dict[str, Any]) -> requests.Response:
    """POST ``doc`` to ``path`` of ``vs``, signed by ``who`` (RFC 9421) as the client signs."""
    from childvault.vault._httpsig import HTTPSignatureAuth

    prepared = requests.Request(
        "POST",
        vs.url + path,
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        auth=HTTPSignatureAuth(who),
    ).prepare()
    with requests.Session() as http:
        return http.send(prepared, timeout=120)


def rpc_read(vs: VaultServer, user: str, repo: str, method: str, *args: Any, **kw: Any) -> Any:
    """``repo.method(*args, **kw)`` read outside a transaction as ``user``; its decoded result."""
    from childvault.vault._remote._codec import decode

    r = signed_rpc(
        vs, vs.identity(user), "/v1/rpc", {"txn": None, **rpc_call(repo, method, *args, **kw)}
    )
    assert r.status_code == 200, r.text
    return decode(r.json()["result"])


def assert_refused(r: requests.Response, status: int, reason: str) -> None:
    """``r`` is the server's refusal with ``status`` and ``reason``."""
    assert (r.status_code, r.json().get("reason")) == (status, reason), r.text


def count_requests(v: Vault) -> list[tuple[bool, list[str]]]:
    """Each HTTP request ``v``'s remote backend sends from now on: whether it ran in a
    transaction, and the calls (``repo.method``) it carried."""
    backend: Any = v._session.db
    send = backend._send
    sent: list[tuple[bool, list[str]]] = []

    def counted(path: str, body: bytes, *, raw: bool = False) -> Any:
        doc = json.loads(body)
        calls = doc.get("calls", [doc])
        in_txn = bool(doc.get("txn") or doc.get("begin"))
        sent.append((in_txn, [f"{c.get('repo')}.{c.get('method')}" for c in calls]))
        return send(path, body, raw=raw)

    backend._send = counted
    return sent


SAMPLE_CSV = ROOT / "childvault" / "vault" / "data" / "sample.csv"


def admin_workstation(vs: VaultServer) -> None:
    """Give the admin a workstation of their own: a copy of their identity file."""
    ws = vs.workstation("admin") / "identities"
    ws.mkdir(parents=True, mode=0o700)
    shutil.copy2(vs.home / "identities" / "admin.id", ws / "admin.id")


def served_with_admin_workstation(root: Path) -> Iterator[VaultServer]:
    """The test vault made under ``root`` and served; the admin also gets a workstation
    (a copy of their identity); the sample records imported. Stopped when the generator
    closes (a module fixture's body: ``yield from served_with_admin_workstation(...)``)."""
    vs = make_vault(root)
    admin_workstation(vs)
    vs.start()
    try:
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE_CSV))
        yield vs
    finally:
        vs.stop()
