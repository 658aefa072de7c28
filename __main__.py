"""`python -m nirlink`: the `nirlink` command."""

from nirlink.engine.cli import main

main()
