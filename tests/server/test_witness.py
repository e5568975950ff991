"""The HTTP checkpoint witness (``childvault witness``) and ``serve --witness-url`` (issue 13).

Real processes on 127.0.0.1: a witness, and a vault server that has every
checkpoint cosigned by it. The witness cosigns only checkpoints signed by its
configured log keys that extend what it cosigned before (RFC 6962
consistency); a forked log is refused; when the witness is down, an approval
fails closed (withdrawn) while plain writes keep working; ``audit verify
--witness-key`` checks the cosignatures and refuses a forged one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
import requests

from childvault.keys import StorageError
from childvault.server._witness import add_checkpoint_body
from childvault.vault import Vault, _note
from childvault.vault._merkle import consistency_proof, leaf_hash, root_of
from tests._sample import lasting
from tests.server._vaultserver import VaultServer, make_vault, passphrase, wait_healthy
from tests.server.conftest import ROOT, free_port

SAMPLE = Path(__file__).resolve().parents[2] / "childvault" / "vault" / "data" / "sample.csv"
ORIGIN = "example.org/test-log"


class WitnessProcess:
    """A ``childvault witness`` process over ``directory``."""

    def __init__(self, directory: Path, log_keys: list[str]) -> None:
        self.directory = directory
        self.log_keys = log_keys
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = directory.parent / f"{directory.name}.log"

    def start(self) -> None:
        """Start (or restart) it on a free port; wait until it answers."""
        port = free_port()
        cmd = [sys.executable, "-m", "childvault", "witness", "--dir", str(self.directory)]
        for key in self.log_keys:
            cmd += ["--log-key", key]
        cmd += ["--listen", f"127.0.0.1:{port}"]
        env = dict(os.environ, LANG="C.UTF-8")
        env.pop("CHILDVAULT_HOME", None)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.process, self.log)

    def vkey(self) -> str:
        """The witness's verifier key (written to its directory on start)."""
        return (self.directory / "witness.vkey").read_text(encoding="utf-8").strip()

    def stop(self) -> None:
        """SIGTERM and wait (bounded)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def add(self, body: bytes) -> requests.Response:
        """POST one add-checkpoint request."""
        return requests.post(self.url + "/add-checkpoint", data=body, timeout=30)


class Log:
    """A toy transparency log signed by one Ed25519 key: leaves and signed checkpoints."""

    def __init__(self, name: str, entries: list[bytes]) -> None:
        self.key = nacl.signing.SigningKey.generate()
        self.name = name
        self.leaves = [leaf_hash(e) for e in entries]

    @property
    def vkey(self) -> str:
        """The log key's verifier key."""
        return _note.vkey(self.name, bytes(self.key.verify_key))

    def note(self, size: int) -> str:
        """A signed checkpoint of the first ``size`` leaves."""
        cp = _note.Checkpoint(ORIGIN, size, root_of(self.leaves[:size]))
        return _note.sign_note(
            cp.body(), self.name, lambda m: self.key.sign(m).signature, bytes(self.key.verify_key)
        )

    def body(self, old: int, size: int) -> bytes:
        """An add-checkpoint request from ``old`` to ``size`` with the right proof."""
        return add_checkpoint_body(old, consistency_proof(old, self.leaves[:size]), self.note(size))


@pytest.fixture
def log_and_witness(tmp_path: Path) -> Iterator[tuple[Log, WitnessProcess]]:
    """A toy log and a witness process configured with its key."""
    log = Log("example.org/log-key", [b"entry %d" % i for i in range(8)])
    witness = WitnessProcess(tmp_path / "witness", [log.vkey])
    witness.start()
    try:
        yield log, witness
    finally:
        witness.stop()


def test_the_witness_cosigns_growth_and_refuses_forks(
    log_and_witness: tuple[Log, WitnessProcess],
) -> None:
    log, witness = log_and_witness
    witness_key = _note.parse_vkey(witness.vkey())
    known = {witness_key[0]: witness_key[1]}

    first = witness.add(log.body(0, 3))
    assert first.status_code == 200, first.text
    # The answer is one signed-note signature line over the checkpoint body.
    assert first.text.startswith("\u2014 ") and first.text.count("\n") == 1
    _, names = _note.open_note(log.note(3) + first.text, known)
    assert names == [witness_key[0]]

    grown = witness.add(log.body(3, 6))
    assert grown.status_code == 200, grown.text
    _note.open_note(log.note(6) + grown.text, known)

    # A stale `old`: 409 and the witness's size, so the client can retry.
    stale = witness.add(log.body(0, 7))
    assert stale.status_code == 409
    assert stale.text.strip() == "6"

    # The log rewritten: entries 0..5 replaced. Its proof from 6 cannot verify.
    fork = Log(log.name, [b"rewritten %d" % i for i in range(8)])
    fork.key = log.key  # the same (stolen or insider) log key
    refused = witness.add(_forged_proof_body(fork, log, 6, 8))
    assert refused.status_code == 422, refused.text
    # The same size with another root is a fork too.
    same_size = witness.add(fork.body(6, 6))
    assert same_size.status_code == 409

    # Not signed by a configured log key.
    stranger = Log("example.org/other", [b"entry %d" % i for i in range(8)])
    assert witness.add(stranger.body(6, 8)).status_code == 403
    # Malformed and oversized requests.
    assert witness.add(b"old x\n\n" + log.note(7).encode()).status_code == 400
    assert witness.add(b"old 6\n" + b"A" * (70 * 1024)).status_code == 413

    # The state is durable: a restarted witness still refuses the fork.
    witness.stop()
    witness.start()
    assert witness.add(fork.body(6, 6)).status_code == 409
    assert witness.add(log.body(6, 8)).status_code == 200


def _forged_proof_body(fork: Log, honest: Log, old: int, size: int) -> bytes:
    """The fork's checkpoint with the honest log's proof from ``old`` (the best a forger has)."""
    proof = consistency_proof(old, honest.leaves[:size])
    return add_checkpoint_body(old, proof, fork.note(size))


# -- the vault server with an HTTP witness -------------------------------------


def _start(vs: VaultServer, witness: WitnessProcess) -> None:
    """``serve`` over ``vs`` with ``--witness-url`` / ``--witness-key`` of ``witness``."""
    port = free_port()
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"))
    cmd = [sys.executable, "-m", "childvault", "--home", str(vs.home), "--as", "admin"]
    cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--witness-url", witness.url, "--witness-key", witness.vkey()]
    vs.log_path = vs.root / "server.log"
    with vs.log_path.open("ab") as log:
        vs.process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    vs.url = f"http://127.0.0.1:{port}"
    wait_healthy(vs.url, vs.process, vs.log_path)


@contextlib.contextmanager
def witnessed_vault(directory: Path) -> Iterator[tuple[VaultServer, WitnessProcess]]:
    """A served vault in ``directory`` whose checkpoints a witness process
    cosigns, the shipped sample imported; both processes stopped on exit."""
    vs = make_vault(directory, ("officer1", "worker1"))
    with Vault.open(vs.home, "admin", passphrase("admin")) as admin:
        log_keys = admin.signer_vkeys()
    witness = WitnessProcess(vs.root / "witness", log_keys)
    witness.start()
    _start(vs, witness)
    try:
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE))
        yield vs, witness
    finally:
        vs.stop()
        witness.stop()


@pytest.fixture(scope="module")
def witnessed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VaultServer, WitnessProcess]]:
    """A served vault whose checkpoints a witness process cosigns; records imported."""
    with witnessed_vault(tmp_path_factory.mktemp("witnessed")) as both:
        yield both


def _request(vs: VaultServer) -> str:
    (record,) = lasting(vs.cli_json("worker1", "list")["records"], 1)
    req = vs.cli_json(
        "worker1",
        "request",
        "--record",
        record,
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "home visit",
    )
    return str(req["request_id"])


def _witness_notes(vs: VaultServer) -> list[str]:
    path = vs.home.parent / f"{vs.home.name}.witness.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["note"] for line in lines if '"note"' in line]


def test_checkpoints_are_cosigned_and_verified(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    vs, witness = witnessed
    vs.cli("officer1", "approve", _request(vs))
    vs.cli("officer1", "approve", _request(vs))
    name, public = _note.parse_vkey(witness.vkey())
    notes = _witness_notes(vs)
    assert len(notes) >= 2
    for note in notes[-2:]:
        _, names = _note.open_note(note, {name: public})
        assert names == [name]
    done = vs.cli_json("officer1", "audit", "verify", "--witness-key", witness.vkey())
    assert done["witness_cosigned"] >= 2
    assert done["witness_cosigned_size"] == _note.verify_note(notes[-1], {name: public})[0].size
    # `doctor` on the server's host checks them too (keys from the environment).
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"), LANG="C.UTF-8")
    env["CHILDVAULT_WITNESS_KEYS"] = witness.vkey()
    env.pop("CHILDVAULT_SERVER", None)
    cmd = [sys.executable, "-m", "childvault", "--home", str(vs.home), "--as", "admin"]
    doctor = subprocess.run(
        [*cmd, "--json", "doctor"], cwd=vs.root, env=env, capture_output=True, timeout=300
    )
    checks = {c["name"]: c["status"] for c in json.loads(doctor.stdout)["checks"]}
    assert checks["cosignatures"] == "ok", doctor.stdout


def test_with_the_witness_down_approvals_fail_closed_and_writes_go_on(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    vs, witness = witnessed
    witness.stop()
    try:
        req = _request(vs)  # a write without a checkpoint: unaffected
        with vs.connect("officer1") as officer, pytest.raises(StorageError, match="witness"):
            officer.approve(req)
        revoked = vs.cli_json("officer1", "audit", "log", "--action", "grant.revoke")
        assert revoked["entries"], "the unwitnessed approval was not withdrawn"
        assert "did not cosign" in vs.log_path.read_text(encoding="utf-8")
    finally:
        witness.start()
        # The witness came back on another port: restart the server pointing at it.
        vs.stop()
        _start(vs, witness)
    # Back up: the next approval is cosigned again (the witness's 409 gives its size).
    vs.cli("officer1", "approve", _request(vs))
    name, public = _note.parse_vkey(witness.vkey())
    _note.open_note(_witness_notes(vs)[-1], {name: public})


def test_audit_verify_refuses_a_forged_cosignature(
    witnessed: tuple[VaultServer, WitnessProcess],
) -> None:
    vs, witness = witnessed
    vs.cli("officer1", "approve", _request(vs))
    path = vs.home.parent / f"{vs.home.name}.witness.jsonl"
    original = path.read_bytes()
    lines = original.decode("utf-8").splitlines()
    name, _ = _note.parse_vkey(witness.vkey())
    last = json.loads(lines[-1])
    body, sigs = _note.parse_note(last["note"])
    # The cosignature line kept (name, key id), its signature replaced.
    forged = [s for s in sigs if s.name != name]
    real = next(s for s in sigs if s.name == name)
    text = body.decode("utf-8") + "\n"
    for s in [*forged, real]:
        sig = s.signature if s is not real else bytes(64)
        text += f"\u2014 {s.name} {_b64(s.key_id + sig)}\n"
    lines[-1] = json.dumps({"note": text}, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        done = vs.cli("officer1", "audit", "verify", "--witness-key", witness.vkey(), expect=4)
        assert b"invalid signature" in done.stdout + done.stderr
    finally:
        path.write_bytes(original)
    vs.cli("officer1", "audit", "verify", "--witness-key", witness.vkey())


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def test_the_rate_limit_is_per_address_and_refills() -> None:
    """Burst, then refusals, then refilled with time; another address is unaffected."""
    from childvault.server._witness import _RateLimit

    now = [0.0]
    limit = _RateLimit(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")
    now[0] += 1.0  # two tokens back
    assert [limit.allow("a") for _ in range(3)] == [True, True, False]


def test_a_witness_with_a_bad_log_key_creates_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from childvault.cli.main import cli

    target = tmp_path / "w"
    result = CliRunner().invoke(cli, ["witness", "--dir", str(target), "--log-key", "nope"])
    assert result.exit_code == 2, result.output
    assert "invalid log key" in result.output
    assert not target.exists()
