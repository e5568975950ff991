"""``python -m childvault``: the command line."""

from childvault._entry import main

main()
