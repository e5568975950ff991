"""Per-person Vault identities: an AppRole role and an identity entity per person.

With one shared token or AppRole role per childvault role, Vault's audit log
(and ``childvault audit reconcile``) can only name that role
("childvault-officer"), never the officer. :func:`add_person` gives each
person their own AppRole role (named like their childvault user) and an
identity entity (``childvault-user-<name>``) whose alias is that role, so
every request the person makes is logged with their entity id and role name.

Policies are not put on the AppRole role: they come from one identity group
per childvault role (``childvault-staff``, ``childvault-officer``,
``childvault-admin``) that holds the matching policy, so changing a person's
role moves their entity between groups, in one place. Creating roles,
entities and groups needs a root or bootstrap token, like ``vault setup``:
whoever can create them can grant themselves decrypt.

The secret id is returned response-wrapped: the operator who runs this never
sees it, only a single-use wrapping token that the person unwraps.
"""

from __future__ import annotations

from typing import Any

from childvault._i18n import _t, join
from childvault.keys._errors import ConfigError, ProviderUnavailable, UsageError
from childvault.keys._identity import check_user_name
from childvault.keys._openbao._http import Connection, scrub
from childvault.keys._openbao._policies import POLICY_NAMES, ROOT
from childvault.keys._openbao._settings import VaultSettings, ttl

__all__ = ["ENTITY_PREFIX", "add_person", "entity_name", "group_name"]

#: An entity's name is this prefix and the childvault user name.
ENTITY_PREFIX = "childvault-user-"


def _check_name(name: str) -> str:
    # AppRole role names become URL path segments: childvault user names are
    # short lowercase ASCII, so a name can never reach another path.
    return check_user_name(name)


def entity_name(name: str) -> str:
    """The identity entity of childvault user ``name``."""
    return ENTITY_PREFIX + _check_name(name)


def group_name(role: str) -> str:
    """The identity group of a childvault role (same name as the role's policy)."""
    if role not in POLICY_NAMES:
        raise UsageError(
            _t(
                "unknown childvault role {role!r}: one of {roles}",
                role=role,
                roles=join(", ", POLICY_NAMES),
            )
        )
    return POLICY_NAMES[role]


def _approle_accessor(conn: Connection, settings: VaultSettings) -> tuple[str, bool]:
    """The AppRole mount's accessor, enabling the mount if needed; (accessor, enabled now)."""
    mount = f"{settings.approle_mount}/"
    enabled = False
    auths = conn.call("GET", "sys/auth", need=("read", ROOT)).data
    table = auths["data"] if isinstance(auths.get("data"), dict) else auths
    if mount not in table:
        conn.call(
            "POST",
            f"sys/auth/{settings.approle_mount}",
            body={"type": "approle"},
            need=("sudo", ROOT),
        )
        enabled = True
        auths = conn.call("GET", "sys/auth", need=("read", ROOT)).data
        table = auths["data"] if isinstance(auths.get("data"), dict) else auths
    entry = table.get(mount)
    if not isinstance(entry, dict) or entry.get("type") != "approle":
        raise ConfigError(
            _t(
                "{mount} on {addr} is not an AppRole auth method: set approle_mount",
                mount=mount,
                addr=settings.addr,
            )
        )
    return str(entry["accessor"]), enabled


def _ensure_group(conn: Connection, role: str) -> dict[str, Any]:
    """The role's internal identity group (created with its policy if missing)."""
    name = group_name(role)
    reply = conn.call("GET", f"identity/group/name/{name}", ok=(200, 204, 404), need=("read", ROOT))
    data = reply.data.get("data") if reply.status == 200 else None
    if isinstance(data, dict):
        if data.get("type") != "internal":
            raise ConfigError(
                _t("identity group {name} exists but is external, not internal", name=name)
            )
        return data
    conn.call(
        "POST",
        f"identity/group/name/{name}",
        body={"type": "internal", "policies": [name], "metadata": {"childvault_role": role}},
        need=("update", ROOT),
    )
    got = conn.call("GET", f"identity/group/name/{name}", need=("read", ROOT)).data
    return dict(got.get("data") or {})


def _set_members(conn: Connection, group: dict[str, Any], members: list[str]) -> None:
    # Writing member_entity_ids replaces the list: always write it whole.
    conn.call(
        "POST",
        f"identity/group/name/{group['name']}",
        body={
            "type": "internal",
            "policies": group.get("policies") or [group["name"]],
            "member_entity_ids": members,
        },
        need=("update", ROOT),
    )


def add_person(
    settings: VaultSettings,
    token: str,
    name: str,
    role: str,
    *,
    wrap_ttl: str = "24h",
) -> dict[str, Any]:
    """Create (or update) childvault user ``name``'s Vault identity for ``role``.

    Idempotent: the AppRole role and entity are kept (the role id does not
    change), the entity is moved into the group of ``role`` and out of the
    other childvault groups, and a NEW secret id is issued, response-wrapped
    for ``wrap_ttl``. Returns ``role_name``, ``role_id``, ``entity_id``,
    ``entity_name``, ``group``, ``wrapped_secret_id`` (a single-use wrapping
    token, not the secret id), ``wrap_ttl`` and ``actions`` (what changed).
    """
    _check_name(name)
    group = group_name(role)
    wrap = ttl(wrap_ttl)
    conn = Connection(settings, token=token, approle=None)
    actions: list[str] = []
    try:
        accessor, enabled = _approle_accessor(conn, settings)
        if enabled:
            actions.append(
                _t("AppRole auth method enabled at {mount}/", mount=settings.approle_mount)
            )
        role_path = f"auth/{settings.approle_mount}/role/{name}"
        existed = conn.call("GET", role_path, ok=(200, 404), need=("read", ROOT)).status == 200
        # No token_policies: the policy comes from the identity group, so a
        # role change is one group move and the token names the entity.
        conn.call(
            "POST",
            role_path,
            # Short logins (the provider logs in again by itself), a secret
            # id valid for a month (docs/vault.md, production checklist).
            body={
                "token_policies": [],
                "token_ttl": "1h",
                "token_max_ttl": "8h",
                "secret_id_ttl": "720h",
            },
            need=("update", ROOT),
        )
        actions.append(
            _t("AppRole role {name}: updated", name=name)
            if existed
            else _t("AppRole role {name}: created", name=name)
        )
        role_id = str(
            conn.call("GET", f"{role_path}/role-id", need=("read", ROOT)).data["data"]["role_id"]
        )

        ename = entity_name(name)
        reply = conn.call(
            "GET", f"identity/entity/name/{ename}", ok=(200, 204, 404), need=("read", ROOT)
        )
        entity = reply.data.get("data") if reply.status == 200 else None
        if not isinstance(entity, dict):
            conn.call(
                "POST",
                f"identity/entity/name/{ename}",
                body={"metadata": {"childvault_user": name}},
                need=("update", ROOT),
            )
            entity = conn.call("GET", f"identity/entity/name/{ename}", need=("read", ROOT)).data[
                "data"
            ]
            actions.append(_t("identity entity {ename}: created", ename=ename))
        entity_id = str(entity["id"])
        # An AppRole login's alias name is the role id: bind it to this entity
        # before the first login, so Vault does not create an anonymous one.
        aliases = entity.get("aliases") or []
        if not any(
            a.get("mount_accessor") == accessor and a.get("name") == role_id for a in aliases
        ):
            alias = conn.call(
                "POST",
                "identity/entity-alias",
                body={"name": role_id, "canonical_id": entity_id, "mount_accessor": accessor},
                ok=(200, 204, 400),
                need=("update", ROOT),
            )
            if alias.status == 400:
                raise ConfigError(
                    _t(
                        "the AppRole role {name} is already bound to another Vault "
                        "entity (someone logged in with it before it was given an "
                        "identity): merge that entity into {ename} "
                        "(identity/entity/merge) and run this again",
                        name=name,
                        ename=ename,
                    ),
                    detail=scrub(alias.data.get("errors")),
                )
            actions.append(
                _t("entity alias: AppRole role {name} -> {ename}", name=name, ename=ename)
            )

        for other in POLICY_NAMES:
            data = _ensure_group(conn, other)
            members = [str(m) for m in data.get("member_entity_ids") or []]
            if other == role and entity_id not in members:
                _set_members(conn, data, [*members, entity_id])
                actions.append(
                    _t("{ename} added to identity group {group}", ename=ename, group=group)
                )
            elif other != role and entity_id in members:
                _set_members(conn, data, [m for m in members if m != entity_id])
                actions.append(
                    _t(
                        "{ename} removed from identity group {group}",
                        ename=ename,
                        group=data["name"],
                    )
                )

        secret = conn.call(
            "POST", f"{role_path}/secret-id", body={}, wrap_ttl=wrap, need=("update", ROOT)
        )
        info = secret.data.get("wrap_info")
        if not isinstance(info, dict) or not info.get("token"):
            raise ProviderUnavailable(
                _t(
                    "the Vault server at {addr} did not response-wrap the secret id",
                    addr=settings.addr,
                )
            )
        actions.append(
            _t("new secret id for {name}, response-wrapped for {wrap}", name=name, wrap=wrap)
        )
    finally:
        conn.close()
    return {
        "role_name": name,
        "role_id": role_id,
        "entity_id": entity_id,
        "entity_name": ename,
        "group": group,
        "wrapped_secret_id": str(info["token"]),
        "wrap_ttl": wrap,
        "actions": actions,
    }
