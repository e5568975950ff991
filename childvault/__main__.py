"""``python -m childvault``: the command line."""

from childvault.cli._entry import main

main()
