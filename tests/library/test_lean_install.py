"""A lean install: hvac/requests are the optional extra ``childvault[vault]``.

Each test runs a fresh interpreter in which the optional packages cannot be
imported (an import hook refuses them, as if they were not installed), so what
is checked is what a local-only installation without the extras can do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

#: Packages a local-only `childvault` must never import.
OPTIONAL = ("hvac", "requests", "starlette", "uvicorn", "jinja2")

_BLOCK = textwrap.dedent(
    f"""
    import sys
    BLOCKED = {OPTIONAL!r}

    class _Missing:
        # Behaves like a package that is not installed.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _Missing())
    """
)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )


def test_help_imports_no_optional_package(tmp_path: Path) -> None:
    result = _run(
        """
        import json, sys
        from click.testing import CliRunner
        from childvault.cli.main import cli
        out = CliRunner().invoke(cli, ["--help"])
        assert out.exit_code == 0, out.output
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_local_mode_works_without_the_extras(tmp_path: Path) -> None:
    result = _run(
        """
        from datetime import date
        from childvault.vault import Consent, Vault
        with Vault.init("home", institution="Test", admin="admin",
                        admin_passphrase="admin-passphrase-1") as v:
            v.add_user("worker1", ["staff"], "worker1-passphrase")
        with Vault.open("home", "worker1", "worker1-passphrase") as v:
            print(len(list(v.list_records())))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_vault_provider_without_the_extra_names_the_install(tmp_path: Path) -> None:
    result = _run(
        """
        from childvault.keys import ExtraRequired, VaultSettings
        from childvault.vault import ChildVaultError
        assert issubclass(ExtraRequired, ChildVaultError)
        settings = VaultSettings("http://127.0.0.1:8200")  # pure configuration: no extra
        for attempt in ("provider", "setup"):
            try:
                if attempt == "provider":
                    from childvault.keys import VaultProvider  # noqa: F401
                else:
                    from childvault.keys import setup_vault
                    setup_vault(settings, "root-token")
            except ExtraRequired as exc:
                print(exc)
            else:
                raise SystemExit(f"{attempt}: no ExtraRequired")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'childvault[vault]'" in line


def test_a_vault_provider_init_without_the_extra_leaves_no_home(tmp_path: Path) -> None:
    """The refusal comes before anything is written (found by the issue 18 audit:
    the home, config and database were made first and left behind, so `init`
    once the extra was installed refused a directory that was not empty)."""
    result = _run(
        """
        from pathlib import Path
        from click.testing import CliRunner
        from childvault.cli.main import cli
        from childvault.keys import ExtraRequired
        from childvault.vault import OpenBaoKeys, Vault
        keys = OpenBaoKeys.from_mapping({"addr": "http://127.0.0.1:1"})
        try:
            Vault.init("lib-home", institution="T", admin="admin",
                       admin_passphrase="admin-passphrase-1", keys=keys)
        except ExtraRequired as exc:
            assert "childvault[vault]" in str(exc)
        else:
            raise SystemExit("no ExtraRequired")
        assert not Path("lib-home").exists(), sorted(Path("lib-home").rglob("*"))
        Path("pw").write_text("admin-passphrase-1")
        out = CliRunner().invoke(cli, ["--home", "cli-home", "init", "--provider", "vault",
            "--vault-addr", "http://127.0.0.1:1", "--institution", "T", "--admin", "admin",
            "--passphrase-file", "pw"])
        assert out.exit_code == 1 and "childvault[vault]" in out.output, out.output
        assert not Path("cli-home").exists(), sorted(Path("cli-home").rglob("*"))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_the_readme_demo_runs_without_the_extras(tmp_path: Path) -> None:
    result = _run(
        """
        from click.testing import CliRunner
        from childvault.cli.main import cli
        out = CliRunner().invoke(cli, ["demo"])
        assert out.exit_code == 0, out.output
        out = CliRunner().invoke(cli, ["demo", "--provider", "vault"])
        assert out.exit_code == 1 and "childvault[vault]" in out.output, out.output
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
