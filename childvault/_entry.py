"""The ``childvault`` console script and ``python -m childvault``: the command line,
started with the cyclic garbage collector's first threshold raised.

Why: one command is one short process that imports about 160 modules (click,
the commands, the library) and, for ``list``, parses the signed record-heads
map (a list a record). At CPython's default threshold (a collection every 700
new container objects) that is about a hundred collections per command, ~10 ms
of CPU that free almost nothing (a few hundred objects): imported modules,
classes and parsed rows live until the process ends. Raising the first
threshold keeps the collector on (long-running commands such as ``serve`` and
``console`` still collect cycles) but lets it run every ``_FIRST`` new
containers, which bounds the uncollected garbage to about that many objects.
In-process callers (tests, the library) are not affected: only this entry
point changes the threshold.
"""

from __future__ import annotations

import gc

#: New container objects between two collections of the youngest generation.
_FIRST = 100_000


def main() -> None:
    """Console-script entry point (see the module docstring)."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(_FIRST, second, third)
    from childvault.cli.main import main as run

    run()
