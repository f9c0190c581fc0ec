"""`python -m bench`: the entry point `make bench` calls."""

from bench import cli

raise SystemExit(cli.main())
