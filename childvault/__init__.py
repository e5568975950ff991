"""childvault: an encrypted vault for the personal records of children in welfare care.

Everything installs under this one import name:

- :mod:`childvault.vault` -- the library (start with :class:`childvault.vault.Vault`);
- :mod:`childvault.keys` -- identities and key providers;
- :mod:`childvault.cli` -- the ``childvault`` command line.

See docs/architecture.md for the layers and seams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["__version__"]

if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    # Read on first use: importlib.metadata takes a noticeable part of a CLI
    # command's start (docs/benchmarks.md, third round), and most never ask.
    if name != "__version__":
        raise AttributeError(f"module 'childvault' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        #: The installed distribution's version (package metadata, not a second copy of it).
        found = version("childvault")
    except PackageNotFoundError:  # run from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
