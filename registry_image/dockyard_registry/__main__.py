"""`python -m dockyard_registry` is the `dockyard-registry` command."""

import sys

from dockyard_registry import cli

sys.exit(cli.main())
