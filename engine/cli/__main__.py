"""`python -m engine.cli`: the entrypoint of submitted Ray jobs and of served test policies."""

from engine.cli import main

main()
