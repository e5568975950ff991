"""``childvault demo --server``: the whole demo through a server process it starts.

Run as a separate process, like a person would; the demo starts ``childvault
serve`` on a free loopback port, runs each later step as a client process
with ``--server``, and stops the server at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHILDVAULT_", "VAULT_"))}
    env["LANG"] = "C.UTF-8"
    return subprocess.run(
        [sys.executable, "-m", "childvault", *args, "demo", "--server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_the_demo_runs_through_a_server() -> None:
    done = _demo("--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    commands = [s["command"] for s in doc["steps"]]
    serve = next(i for i, c in enumerate(commands) if " serve --listen 127.0.0.1:" in c)
    # Enrolment on the server host, then every person's step through the server.
    assert commands[:serve] == [c for c in commands[:serve] if " import " not in c]
    after = doc["steps"][serve + 1 :]
    assert any(" import " in s["command"] for s in after)
    read = next(s for s in after if " read " in s["command"] and s["exit_code"] == 0)
    assert "name" in read["stdout"]
    refused = [s for s in after if s["exit_code"] == 3]
    assert len(refused) == 2  # the field outside the grant, the shredded record
    verify = after[-1]
    assert verify["command"].endswith("audit verify") and verify["exit_code"] == 0


def test_the_demo_narrates_the_same_steps() -> None:
    done = _demo()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "2b. " in out and "--server http://127.0.0.1:" in out
    for step in ("3. The officer imports", "7. The worker reads", "12. Anyone can verify"):
        assert step in out
    assert "Demo complete." in out
