"""childvault: an encrypted vault for the personal records of children in welfare care.

Everything installs under this one import name:

- :mod:`childvault.vault` -- the library (start with :class:`childvault.vault.Vault`);
- :mod:`childvault.keys` -- identities and key providers;
- :mod:`childvault.cli` -- the ``childvault`` command line.

See docs/architecture.md for the layers and seams.
"""
