"""Preparing a Vault/OpenBao server for childvault: mounts, keys, policies, audit.

:func:`setup` needs a root or bootstrap token and is idempotent. The three
policies are rendered from ``childvault/keys/policies/*.hcl`` (docs/vault.md
section 4 explains them).
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from childvault._i18n import _t, join
from childvault.keys._errors import ConfigError, ProviderUnavailable
from childvault.keys._openbao._http import Connection, scrub
from childvault.keys._openbao._policies import POLICY_NAMES, ROOT
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["render_policies", "setup"]


def render_policies(settings: VaultSettings) -> dict[str, str]:
    """The three policies (name -> HCL text) for these settings, as ``setup`` writes them."""
    out: dict[str, str] = {}
    base = resources.files("childvault.keys").joinpath("policies")
    for role, name in POLICY_NAMES.items():
        text = base.joinpath(f"{role}.hcl").read_text(encoding="utf-8")
        # Plain replacement, not str.format: HCL is full of braces.
        for placeholder, value in (
            ("{transit}", settings.transit_mount),
            ("{kv}", settings.kv_mount),
            ("{key}", settings.key_name),
            ("{max_wrapping_ttl}", settings.max_wrapping_ttl),
        ):
            text = text.replace(placeholder, value)
        out[name] = text
    return out


def _audit_stanza(path: str) -> str:
    return f'audit "file" "childvault" {{\n  options {{\n    file_path = "{path}"\n  }}\n}}'


def _kv_config_when_ready(conn: Connection, mount: str, root: str) -> dict[str, Any]:
    """Read a KV v2 mount's config, waiting out the upgrade a fresh mount goes through.

    On a server with persistent storage a new KV v2 mount answers 400 ("upgrading
    from non-versioned to versioned data") for a moment; a dev server does not.
    """
    deadline = time.monotonic() + 30.0
    while True:
        reply = conn.call("GET", f"{mount}/config", ok=(200, 400), need=("read", root))
        if reply.status == 200:
            return reply.data
        if time.monotonic() > deadline:
            raise ProviderUnavailable(
                _t(
                    "the KV mount {mount}/ at {addr} did not become ready within 30 s",
                    mount=mount,
                    addr=conn.addr,
                )
            )
        time.sleep(0.2)


def _audit_devices(conn: Connection, root: str) -> dict[str, Any]:
    """The server's enabled audit devices (path -> description)."""
    devices = conn.call("GET", "sys/audit", need=("sudo", root)).data
    table = devices["data"] if isinstance(devices.get("data"), dict) else devices
    return {path: dev for path, dev in table.items() if isinstance(dev, dict)}


def _no_audit_device(settings: VaultSettings) -> ConfigError:
    return ConfigError(
        _t(
            "no audit device is enabled on the Vault server at {addr}: without one "
            "nothing outside childvault records who decrypted what, and `childvault "
            "audit reconcile` has nothing to check. Everything else is set up. "
            "Declare a file audit device in the server configuration, "
            "e.g.\n{audit_stanza}\nrestart the server and run `childvault vault setup "
            "--audit-file PATH` again; or, knowingly, pass "
            "--no-audit-device-i-accept-the-risk",
            addr=settings.addr,
            audit_stanza=_audit_stanza("/var/log/openbao/audit.log"),
        )
    )


def setup(
    settings: VaultSettings,
    token: str,
    *,
    audit_file: str | None = None,
    allow_no_audit_device: bool = False,
    control_groups: bool = False,
) -> list[str]:
    """Prepare a Vault/OpenBao server for childvault; return what was done, line by line.

    Needs a root or bootstrap token (mounts, policies and audit devices are
    beyond the childvault-admin policy on purpose). Idempotent: a second run
    changes nothing and says so. Refuses to finish (:class:`ConfigError`, after
    everything else is set up) when the server has no audit device enabled,
    unless ``allow_no_audit_device`` (the CLI's
    ``--no-audit-device-i-accept-the-risk``). ``control_groups``: probe with a
    real controlled request whether the server enforces Control Groups
    (:mod:`._controlgroups`) and refuse (:class:`ConfigError`) if it does not.
    """
    conn = Connection(settings, token=token, approle=None)
    lines: list[str] = []
    changed = False
    root = ROOT
    try:
        health = conn.call("GET", "sys/health", ok=(200, 429, 472, 473, 501, 503), auth=False).data
        if health.get("sealed"):
            raise ProviderUnavailable(
                _t(
                    "the Vault server at {addr} is sealed: unseal it and run setup again",
                    addr=settings.addr,
                )
            )
        if health.get("initialized") is False:
            raise ProviderUnavailable(
                _t("the Vault server at {addr} is not initialised", addr=settings.addr)
            )
        mounts = conn.call("GET", "sys/mounts", need=("read", root)).data
        table: dict[str, Any] = mounts["data"] if isinstance(mounts.get("data"), dict) else mounts
        for mount, engine, options in (
            (settings.transit_mount, "transit", None),
            (settings.kv_mount, "kv", {"version": "2"}),
        ):
            existing = table.get(f"{mount}/")
            label = "Transit" if engine == "transit" else "KV v2"
            if existing is None:
                body: dict[str, Any] = {"type": engine}
                if options:
                    body["options"] = options
                conn.call("POST", f"sys/mounts/{mount}", body=body, need=("update", root))
                lines.append(
                    _t("{label} secrets engine: enabled at {mount}/", label=label, mount=mount)
                )
                changed = True
            else:
                version = str((existing.get("options") or {}).get("version", "1"))
                if existing.get("type") != engine or (options and version != "2"):
                    raise ConfigError(
                        _t(
                            "{mount}/ is already mounted as {kind} (version "
                            "{version}), not {label}: choose another mount name",
                            mount=mount,
                            kind=existing.get("type"),
                            version=version,
                            label=label,
                        )
                    )
                lines.append(
                    _t(
                        "{label} secrets engine: already enabled at {mount}/",
                        label=label,
                        mount=mount,
                    )
                )
        # Require check-and-set on every salt write: a salt is never replaced
        # blindly, by childvault or by any other tool.
        kv_config = _kv_config_when_ready(conn, settings.kv_mount, root)
        if (kv_config.get("data") or {}).get("cas_required") is True:
            lines.append(
                _t("{kv_mount}/: check-and-set already required", kv_mount=settings.kv_mount)
            )
        else:
            conn.call(
                "POST",
                f"{settings.kv_mount}/config",
                body={"cas_required": True},
                need=("update", root),
            )
            lines.append(
                _t(
                    "{kv_mount}/: check-and-set now required on every write",
                    kv_mount=settings.kv_mount,
                )
            )
            changed = True
        for name, derived in ((settings.key_name, True), (settings.index_key_name, False)):
            path = f"{settings.transit_mount}/keys/{name}"
            reply = conn.call("GET", path, ok=(200, 404), need=("read", root))
            if reply.status == 404:
                conn.call(
                    "POST",
                    path,
                    body={"type": "aes256-gcm96", "derived": derived, "exportable": False},
                    need=("update", root),
                )
                what = _t("derived wrapping key") if derived else _t("blind-index HMAC key")
                lines.append(
                    _t(
                        "Transit key {name}: created ({what}, aes256-gcm96, not exportable)",
                        name=name,
                        what=what,
                    )
                )
                changed = True
                continue
            data = reply.data.get("data") or {}
            if (
                data.get("type") != "aes256-gcm96"
                or bool(data.get("derived")) != derived
                or data.get("exportable") is not False
            ):
                raise ConfigError(
                    _t(
                        "Transit key {name} exists with other settings (type {kind}, "
                        "derived {derived_now}, exportable {exportable}); childvault needs "
                        "aes256-gcm96, derived={wanted}, not exportable",
                        name=name,
                        kind=data.get("type"),
                        derived_now=data.get("derived"),
                        exportable=data.get("exportable"),
                        wanted=str(derived).lower(),
                    )
                )
            if derived:
                lines.append(
                    _t(
                        "Transit key {name}: already present (latest version {latest})",
                        name=name,
                        latest=data.get("latest_version"),
                    )
                )
            else:
                latest = int(data.get("latest_version") or 1)
                minimum = int(data.get("min_encryption_version") or 0)
                pinned = settings.index_key_version
                if pinned > latest or pinned < minimum:
                    raise ConfigError(
                        _t(
                            "index_key_version {pinned} is not usable with Transit "
                            "key {name} (versions {oldest}..{latest})",
                            pinned=pinned,
                            name=name,
                            oldest=max(minimum, 1),
                            latest=latest,
                        )
                    )
                lines.append(
                    _t(
                        "Transit key {name}: already present (latest version "
                        "{latest}; childvault uses version {pinned})",
                        name=name,
                        latest=latest,
                        pinned=pinned,
                    )
                )
        for name, text in render_policies(settings).items():
            path = f"sys/policies/acl/{name}"
            reply = conn.call("GET", path, ok=(200, 404), need=("read", root))
            current = (reply.data.get("data") or {}).get("policy") if reply.status == 200 else None
            if isinstance(current, str) and current.strip() == text.strip():
                lines.append(_t("policy {name}: already up to date", name=name))
                continue
            conn.call("PUT", path, body={"policy": text}, need=("update", root))
            lines.append(
                _t("policy {name}: written", name=name)
                if current is None
                else _t("policy {name}: updated", name=name)
            )
            changed = True
        table = _audit_devices(conn, root)
        if audit_file is None:
            if table:
                lines.append(
                    _t("audit device: enabled ({devices})", devices=join(", ", sorted(table)))
                )
            elif allow_no_audit_device:
                lines.append(
                    _t(
                        "audit device: NONE enabled (accepted with "
                        "--no-audit-device-i-accept-the-risk): nothing outside "
                        "childvault records who decrypted what"
                    )
                )
            else:
                raise _no_audit_device(settings)
        else:
            found = [
                path
                for path, dev in table.items()
                if isinstance(dev, dict)
                and dev.get("type") == "file"
                and (dev.get("options") or {}).get("file_path") == audit_file
            ]
            if found:
                lines.append(
                    _t(
                        "audit device: already writing to {audit_file} ({device})",
                        audit_file=audit_file,
                        device=found[0],
                    )
                )
            else:
                reply = conn.call(
                    "PUT",
                    "sys/audit/childvault",
                    body={"type": "file", "options": {"file_path": audit_file}},
                    ok=(200, 204, 400),
                    need=("sudo", root),
                )
                if reply.status == 400:
                    raise ConfigError(
                        _t(
                            "the server refuses to enable audit devices through the "
                            "API (OpenBao and recent Vault versions); everything "
                            "else is set up. Add this to the server configuration, "
                            "restart it, and run setup again:\n{audit_stanza}",
                            audit_stanza=_audit_stanza(audit_file),
                        ),
                        detail=scrub(reply.data.get("errors")),
                    )
                lines.append(
                    _t(
                        "audit device: file audit device enabled, writing to {audit_file}",
                        audit_file=audit_file,
                    )
                )
                changed = True
    finally:
        conn.close()
    if control_groups:
        lines.append(_control_groups_line(settings, token))
    lines.append(
        _t("setup complete") if changed else _t("nothing to change: the server was already set up")
    )
    return lines


def _control_groups_line(settings: VaultSettings, token: str) -> str:
    """Probe Control Groups; the setup line if enforced, else :class:`ConfigError`."""
    from childvault.keys._openbao._controlgroups import probe_control_groups

    probe = probe_control_groups(settings, token)
    if not probe["enforced"]:
        raise ConfigError(
            _t(
                "the Vault server at {addr} does not enforce Control Groups: a "
                "request on a path under a control_group stanza was answered with "
                "{answer}, not held for approval (OpenBao 2.x accepts the stanza but "
                "does not enforce it). Everything else is set up; the officer policy "
                "stays without Control Groups (docs/vault.md, Control Groups)",
                addr=settings.addr,
                answer=probe["answer"],
            )
        )
    # No parameters: "{approvers}" is the policy file's own placeholder, shown as is.
    return _t(
        "Control Groups: enforced by this server (probe held for approval). childvault does "
        "not install them itself: put policies/officer-control-group.hcl in place of "
        "childvault-officer, with {approvers} set to your approving officers' identity group"
    )
