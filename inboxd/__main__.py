"""`python -m inboxd` is the `inboxd` command."""

from inboxd.cli.main import main

# Guarded: the parser process (spawned) imports this module again as `__mp_main__`.
if __name__ == "__main__":
    main()
