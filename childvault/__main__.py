"""``python -m childvault``: the command line."""

from childvault.cli.main import main

main()
