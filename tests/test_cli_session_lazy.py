"""``childvault list`` on a session imports only the services it calls (issue 18).

The facade builds its services on first use and imports the result types where
a method builds one (childvault/vault/_facade_base.py and the facets), and ``childvault.vault``
exports its names lazily: a listing loads neither approvals, reports, export,
rotation, lifecycle nor the result dataclasses. ``requests`` loads the access
service it calls, and still none of the others.
"""

from __future__ import annotations

from tests.conftest import World, add_children
from tests.test_cli_session_imports import _loaded

NOT_FOR_A_LISTING = (
    "childvault.vault._results",
    "childvault.vault._reports",
    "childvault.vault._svc_audit",
    "childvault.vault._svc_export",
    "childvault.vault._svc_lifecycle",
    "childvault.vault._svc_reports",
    "childvault.vault._svc_rotation",
    "childvault.vault._svc_users",
)


def test_a_listing_imports_only_the_services_it_calls(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 2)
    listing = set(_loaded(world, "list"))
    assert "childvault.vault._svc_records" in listing  # the probe ran the command
    assert sorted(listing & {*NOT_FOR_A_LISTING, "childvault.vault._svc_access"}) == []
    requests = set(_loaded(world, "requests", "--all"))
    assert "childvault.vault._svc_access" in requests
    assert sorted(requests & set(NOT_FOR_A_LISTING) - {"childvault.vault._svc_audit"}) == []
