"""childvault: an encrypted vault for the personal records of children in welfare care.

Everything installs under this one import name:

- :mod:`childvault.vault` -- the library (start with :class:`childvault.vault.Vault`);
- :mod:`childvault.keys` -- identities and key providers;
- :mod:`childvault.cli` -- the ``childvault`` command line.

See docs/architecture.md for the layers and seams.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version (package metadata, not a second copy of it).
    __version__ = version("childvault")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
