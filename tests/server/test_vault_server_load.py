"""``childvault serve`` under load and failure: concurrent clients, SIGKILL, another OS user."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import childvault
from childvault.vault import _svc_records_import
from tests.server._vaultserver import (
    VaultServer,
    make_vault,
    passphrase,
    synthetic_csv,
    wait_healthy,
)
from tests.server.conftest import ROOT, free_port


def _client(vs: VaultServer, user: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase(user))
    identity = vs.workstation(user) / "identities" / f"{user}.id"
    cmd = [sys.executable, "-m", "tests.server._client", vs.url, str(identity), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _done(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    return dict(json.loads(out.decode().splitlines()[-1]))


def test_eight_concurrent_clients_make_one_linear_chain(tmp_path: Path) -> None:
    vs = make_vault(tmp_path)
    vs.start()
    try:
        vs.cli("worker1", "import", str(synthetic_csv(tmp_path / "seed.csv", 6)))
        seed = [r["id"] for r in vs.cli_json("worker1", "list")["records"]]
        per_requester, per_importer = 3, 30
        procs = [
            _client(
                vs,
                f"worker{i}",
                "import",
                str(synthetic_csv(tmp_path / f"w{i}.csv", per_importer, i)),
            )
            for i in range(1, 5)
        ]
        procs += [
            _client(vs, "worker1", "request", str(per_requester), *seed[:2]),
            _client(vs, "worker2", "request", str(per_requester), *seed[2:4]),
        ]
        procs += [
            _client(vs, officer, "approve", str(2 * per_requester))
            for officer in ("officer1", "officer2")
        ]
        results = [_done(p) for p in procs]
        assert [r["imported"] for r in results[:4]] == [per_importer] * 4
        asked = set(results[4]["requests"]) | set(results[5]["requests"])  # type: ignore[arg-type]
        approved = set(results[6]["approved"]) | set(results[7]["approved"])  # type: ignore[arg-type]
        assert len(asked) == 2 * per_requester
        assert len(approved) == 2 * per_requester  # each request approved exactly once
        with vs.connect("officer1") as officer:
            assert officer._session.db.records.count() == 6 + 4 * per_importer
            reqs = officer.requests(status=None)
            assert {r.id for r in reqs if r.status == "approved"} == asked
            report = officer.verify_audit()  # one chain, every signature and statement
            entries = [e["entry"] for e in officer.audit_entries()]
        assert report.entries == len(entries)
        assert [e["seq"] for e in entries] == list(range(len(entries)))
        approvals = [
            e for e in entries if e["action"] == "request.approve" and e["outcome"] == "ok"
        ]
        assert {e["grant"] for e in approvals} == approved
        created = [e for e in entries if e["action"] == "record.create"]
        assert sum(len(e["records"]) for e in created) == 6 + 4 * per_importer
    finally:
        vs.stop()


def _batches_answered(vs: VaultServer, user: str) -> int:
    """How many of ``user``'s record batches (large ``/v1/rpc/batch`` calls) the
    server has answered, from its access log."""
    count = 0
    for line in vs.log_path.read_text(encoding="utf-8").splitlines():
        if not line.startswith('{"bytes_in"'):
            continue
        entry = json.loads(line)
        big = entry["bytes_in"] > 100_000 and entry["status"] == 200
        count += entry["user"] == user and entry["path"] == "/v1/rpc/batch" and big
    return count


def test_server_killed_mid_import_restarts_consistent_and_the_import_resumes(
    tmp_path: Path,
) -> None:
    vs = make_vault(tmp_path, people=("officer1", "worker1"))
    port = free_port()
    vs.start(port=port)
    big = synthetic_csv(tmp_path / "big.csv", 3000)
    try:
        importer = vs.cli_background("worker1", "import", "--allow-duplicates", str(big))
        # Kill the server between batches, decided from its access log rather
        # than by asking it: polling with another client raced a fast import
        # to its end on a loaded machine. Each batch is one /v1/rpc/batch
        # answered after its COMMIT, so the second large one logged means at
        # least one batch is in the store; the importer is frozen while the
        # server dies so it cannot finish in between.
        while _batches_answered(vs, "worker1") < 2 and importer.poll() is None:
            time.sleep(0.005)
        importer.send_signal(signal.SIGSTOP)
        vs.stop(kill=True)
        importer.send_signal(signal.SIGCONT)
        importer.communicate(timeout=600)
        assert importer.returncode != 0, "the import finished before the server was killed"
        vs.start(port=port)
        with vs.connect("officer1") as officer:
            partial = officer._session.db.records.count()
            officer.verify_audit()
        assert 0 < partial < 3000
        # Whole batches only (50, 100, 200, 400, then 500 rows through one
        # server): a batch is all or nothing.
        ends = list(
            itertools.accumulate(_svc_records_import._overlapped_size(i) for i in range(12))
        )
        assert ends[:6] == [50, 150, 350, 750, 1250, 1750]
        assert partial in ends
        done = vs.cli_json("worker1", "import", "--allow-duplicates", str(big))
        assert done["imported"] == 3000 - partial
        with vs.connect("officer1") as officer:
            assert officer._session.db.records.count() == 3000
            officer.verify_audit()
    finally:
        vs.stop()


def _usable_by_others(path: Path) -> bool:
    """Whether users other than the owner can run ``path`` (every directory above searchable)."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o001)


def _readable_by_others(path: Path) -> bool:
    """Whether other users can reach and read the directory ``path`` (the checkout and
    the installed package: the other users' processes import childvault from there)."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and (
        real.stat().st_mode & 0o005 == 0o005
    )


@pytest.mark.skipif(
    not (_readable_by_others(ROOT) and _readable_by_others(Path(childvault.__file__).parent)),
    reason="the checkout or the installed childvault package is in a directory other OS "
    "users cannot read, so no other user can run the server or a client",
)
@pytest.mark.skipif(
    not _usable_by_others(Path(sys.executable)),
    reason=f"the Python interpreter ({Path(sys.executable).resolve()}) is in a directory other "
    "OS users cannot enter, so no other user can run the server or a client",
)
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root (and useradd) to create a service user and a client user",
)
def test_server_as_its_own_os_user_clients_cannot_read_the_home(tmp_path: Path) -> None:
    tag = secrets.token_hex(3)
    service, client = f"cvsrv{tag}", f"cvcli{tag}"
    for name in (service, client):
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    # pytest's tmp_path is private to root: the two users need a directory they can reach.
    top = Path(tempfile.mkdtemp(prefix="childvault-osuser-"))
    os.chmod(top, 0o755)
    try:
        root = top / "shared"
        root.mkdir(mode=0o755)
        vs = make_vault(root, people=("officer1", "worker1"))
        few = synthetic_csv(top / "few.csv", 3)
        os.chmod(few, 0o644)
        svc, cli = pwd.getpwnam(service), pwd.getpwnam(client)
        for path in [vs.home, *vs.home.rglob("*")]:
            os.chown(path, svc.pw_uid, svc.pw_gid)
        os.chmod(vs.home, 0o700)
        for path in [vs.workstation("worker1"), *vs.workstation("worker1").rglob("*")]:
            os.chown(path, cli.pw_uid, cli.pw_gid)
        # The witness goes beside the home: give the service user that directory.
        os.chown(root, svc.pw_uid, svc.pw_gid)
        port = free_port()
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"), HOME=str(root))
        log = top / "server.log"
        cmd = [sys.executable, "-m", "childvault", "--home", str(vs.home), "--as", "admin"]
        cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
        with log.open("wb") as fh:
            server = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, user=svc.pw_uid
            )
        try:
            vs.url = f"http://127.0.0.1:{port}"
            wait_healthy(vs.url, server, log)
            as_client = dict(
                cwd=ROOT,
                env=dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("worker1"), HOME=str(root)),
                capture_output=True,
                timeout=300,
                user=cli.pw_uid,
            )
            base = [sys.executable, "-m", "childvault", "--server", vs.url]
            base += ["--home", str(vs.workstation("worker1")), "--as", "worker1"]
            ok = subprocess.run([*base, "import", str(few)], **as_client)
            assert ok.returncode == 0, ok.stderr.decode()
            peek = subprocess.run(
                [sys.executable, "-c", f"import os; os.listdir({str(vs.home)!r})"], **as_client
            )
            assert peek.returncode != 0
            assert b"PermissionError" in peek.stderr
            local = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "childvault",
                    "--home",
                    str(vs.home),
                    "--as",
                    "worker1",
                    "list",
                ],
                **as_client,
            )
            assert local.returncode != 0  # the embedded mode cannot open it either
        finally:
            server.terminate()
            server.wait(timeout=60)
    finally:
        for name in (service, client):
            subprocess.run(["userdel", name], check=False)
        shutil.rmtree(top, ignore_errors=True)
