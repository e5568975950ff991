"""The table of actions reserved to a role covers every action the package logs
(issue 12 follow-up): each action string given to an ``Event`` or to
``Session.require`` anywhere in ``childvault`` is either in
``_action_roles.ROLE_ACTIONS`` or in ``ANY_USER_ACTIONS``, so an action added
later without a decision fails here. Read from the source (``ast``), not from a
list kept by hand.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import childvault
from childvault.vault import _audit
from childvault.vault._action_roles import ANY_USER_ACTIONS, ROLE_ACTIONS, reserved_roles

PACKAGE = Path(childvault.__file__).parent

#: The places that pass an action through rather than name one: ``require`` and
#: its refusal log the action their caller names (scanned at the callers), and a
#: record statement is added to an event that already names its action.
PASS_THROUGH = {
    ("vault/_session.py", "require"),
    ("vault/_record_trust.py", "with_record_statement"),
}


class _Constants:
    """A module's global strings (``ACTION = _settings.KIND``), imported only when a
    call names one (importing ``__main__`` would run the command line)."""

    def __init__(self, path: Path) -> None:
        self.name = "childvault." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace(
            "/", "."
        )

    def get(self, key: str) -> str | None:
        value = getattr(importlib.import_module(self.name), key, None)
        return value if isinstance(value, str) else None


def _strings(node: ast.expr | None, constants: _Constants) -> list[str] | None:
    """The action strings ``node`` can be, or None if it is not a literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body, constants), _strings(node.orelse, constants)
        return None if body is None or orelse is None else body + orelse
    if isinstance(node, ast.Name):
        value = constants.get(node.id)
        return None if value is None else [value]
    return None


def _argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _calls() -> Iterator[tuple[str, str, str, ast.Call, dict[str, str]]]:
    """(file, enclosing function, callee, call, module constants) of every Event
    and require call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _Constants(path)
        where = path.relative_to(PACKAGE).as_posix()
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        owner = {id(c): f.name for f in functions for c in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            callee = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            # Session.require(roles, action, now, what); other methods named
            # require (a key provider's salts) take no action.
            if callee == "Event" or (callee == "require" and len(node.args) == 4):
                yield where, owner.get(id(node), "<module>"), callee, node, constants


def _logged() -> tuple[dict[str, set[str]], list[str], dict[str, set[frozenset[str]]]]:
    """Action -> where it is logged; calls whose action is no literal outside
    :data:`PASS_THROUGH`; action -> the literal role sets ``require`` names."""
    actions: dict[str, set[str]] = {}
    unknown: list[str] = []
    required: dict[str, set[frozenset[str]]] = {}
    for where, function, callee, call, constants in _calls():
        found = _strings(_argument(call, 1, "action"), constants)
        if found is None:
            if (where, function) not in PASS_THROUGH:
                unknown.append(f"{where}:{call.lineno} ({function})")
            continue
        for action in found:
            actions.setdefault(action, set()).add(f"{where}:{call.lineno}")
        if callee == "require":
            roles = call.args[0] if call.args else None
            if isinstance(roles, ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in roles.elts
            ):
                names = frozenset(str(e.value) for e in roles.elts if isinstance(e, ast.Constant))
                for action in found:
                    required.setdefault(action, set()).add(names)
    return actions, unknown, required


def test_the_scan_sees_the_logging_calls() -> None:
    # Guards the scan itself: a broken walk would make the next test vacuous.
    actions, _unknown, required = _logged()
    assert {"request.approve", "incident.close", "setting.set", "grant.read"} <= set(actions)
    assert "consent.add_purpose" in actions  # one branch of a conditional
    assert required["request.approve"] == {frozenset({"officer"})}
    assert len(actions) > 40


def test_every_logged_action_is_a_roles_or_any_users() -> None:
    actions, unknown, _required = _logged()
    assert not unknown, f"an action that is no literal (PASS_THROUGH if it is): {unknown}"
    undecided = {
        a: sorted(w)
        for a, w in actions.items()
        if a not in ROLE_ACTIONS and a not in ANY_USER_ACTIONS
    }
    assert not undecided, (
        f"actions logged with no decision on who may log them (ROLE_ACTIONS or "
        f"ANY_USER_ACTIONS in childvault/vault/_action_roles.py): {undecided}"
    )
    assert not set(ROLE_ACTIONS) & ANY_USER_ACTIONS


def test_the_table_is_the_librarys_list_of_actions() -> None:
    """``Event`` refuses an action missing from ``_audit.ACTIONS``: one added there
    must be decided here too."""
    assert set(ROLE_ACTIONS) | ANY_USER_ACTIONS == _audit.ACTIONS


def test_the_table_names_no_action_that_is_never_logged() -> None:
    actions, _unknown, _required = _logged()
    assert set(ROLE_ACTIONS) | ANY_USER_ACTIONS <= set(actions)


def test_each_commands_roles_may_log_its_action() -> None:
    """The roles a command requires may log the entry it writes: the table never
    refuses (at the server) the entry of a user the command let through."""
    _actions, _unknown, required = _logged()
    too_narrow = {
        action: sorted(sorted(r) for r in sets)
        for action, sets in required.items()
        if action in ROLE_ACTIONS and any(not r <= ROLE_ACTIONS[action] for r in sets)
    }
    assert not too_narrow, too_narrow


def test_refinements_per_entry() -> None:
    """A decommissioning by phase, a rights request's link by its answer, a user's
    own registration by anyone; a refused attempt by whoever tried."""

    def roles(action: str, actor: str = "a", **detail: object) -> frozenset[str] | None:
        return reserved_roles({"action": action, "outcome": "ok", "actor": actor, "detail": detail})

    assert roles("vault.decommission", phase="start") == {"admin"}
    assert roles("vault.decommission", phase="cosign") == {"officer"}
    assert roles("rights.close") == {"officer"}
    assert roles("rights.close", answer="record.delete") == {"officer", "admin"}
    assert roles("rights.link", answer="report.subject") is None
    assert roles("user.add", "w", user="w") is None
    assert roles("user.add", "a", user="w") == {"admin"}
    assert roles("request.approve") == {"officer"}
    assert roles("grant.read") is None
    assert reserved_roles({"action": "request.approve", "outcome": "denied"}) is None
