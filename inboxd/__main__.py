"""`python -m inboxd` is the `inboxd` command."""

from inboxd.cli.main import main

main()
