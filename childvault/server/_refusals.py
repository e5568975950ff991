"""Refusals of authenticated users, in the hash-chained audit log (issue 13).

A refusal of a request whose signature verified (a role or binding refusal,
a disabled user, a refused redemption, a replay or a body that does not
match its signed digest) names a *verified* user, so it belongs in the
vault's log like the services' own denied attempts. The server appends it as
a ``server.refuse`` entry (outcome ``denied``) in the name of the identity it
was started with (``serve --as NAME``), signed by that identity's key, so
``audit verify`` checks it like every other entry (docs/server.md).

Refusals of unauthenticated requests (no or a bad signature, an unknown key,
a clock out of the window, the limits) name no verified actor: they stay in
the server's refusal log only.

Bounded: per user at most :data:`PER_WINDOW` entries every :data:`WINDOW`
seconds; refusals beyond that are counted, and the next entry logged for
that user carries the count (``suppressed``). A flood therefore grows the log
by a few entries a minute per user, and nothing is lost from the count.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

#: Reasons that follow a verified signature (the signature layer's and the vault routes').
CHAINED = frozenset(
    {
        "role",
        "binding",
        "unverified",
        "server_only",
        "release_refused",
        "user_disabled",
        "no_key_slot",
        "replay",
        "digest_mismatch",
        "rate_limited",
        # An approval that breaks a rule the server decides (finding A-5).
        "policy",
    }
)
#: Entries per user per window.
PER_WINDOW = 5
#: The window, in seconds.
WINDOW = 60.0
#: Refusals waiting for the database (a client's transaction holds it) at most.
MAX_QUEUED = 1000


@dataclass
class _PerUser:
    logged: deque[float] = field(default_factory=deque)
    suppressed: int = 0


@dataclass(frozen=True)
class Refusal:
    """One refusal to log: who, the reason code, what was asked, refusals held back before."""

    user: str
    reason: str
    what: str
    suppressed: int


class RefusalLimiter:
    """Which refusals become log entries: per user, a few per window, the rest counted."""

    def __init__(
        self, *, per_window: int = PER_WINDOW, window: float = WINDOW, max_queued: int = MAX_QUEUED
    ) -> None:
        self.per_window = per_window
        self.window = window
        self.max_queued = max_queued
        self._users: dict[str, _PerUser] = {}
        self.queue: list[Refusal] = []

    def admit(self, user: str, reason: str, what: str, now: float | None = None) -> bool:
        """Queue a refusal of ``user`` unless over the limit (then count it); whether queued."""
        at = time.monotonic() if now is None else now
        seen = self._users.setdefault(user, _PerUser())
        while seen.logged and at - seen.logged[0] >= self.window:
            seen.logged.popleft()
        if len(seen.logged) >= self.per_window or len(self.queue) >= self.max_queued:
            seen.suppressed += 1
            return False
        seen.logged.append(at)
        self.queue.append(Refusal(user, reason, what, seen.suppressed))
        seen.suppressed = 0
        return True

    def take(self) -> list[Refusal]:
        """The queued refusals (emptied)."""
        out, self.queue = self.queue, []
        return out

    def put_back(self, refusals: list[Refusal]) -> None:
        """Refusals that could not be written: their count goes to the next entry."""
        for r in refusals:
            self._users.setdefault(r.user, _PerUser()).suppressed += 1 + r.suppressed


__all__ = ["CHAINED", "Refusal", "RefusalLimiter"]
