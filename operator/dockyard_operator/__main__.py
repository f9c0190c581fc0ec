"""`python -m dockyard_operator`: same as the `dockyard-operator` console script."""

import sys

from dockyard_operator import cli

sys.exit(cli.main())
