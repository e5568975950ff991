"""The officers' web console (``childvault console``).

A server-rendered page on 127.0.0.1 for one officer: the approval queue, each
request's records, fields and the children's recent access history, approve /
deny / revoke, the rights and incident registers, and log verification, over a
local home or through ``childvault serve``. The officer's unlocked identity
stays in the local process; the browser gets a one-time login URL, a session
cookie and HTML, never key material. zh_CN first, with an English switch.

:func:`serve` runs it; :class:`Console` is the application (for embedding).
"""

from __future__ import annotations

from childvault.console._app import Console
from childvault.console._server import serve

__all__ = ["Console", "serve"]
