"""`dockyard-operator` (and `python -m dockyard_operator`): start the operator.

Owns: command-line parsing and exit codes (2 for usage errors, with a message on stderr).
Must not: import kopf directly (handlers.py owns it), or install the CRD (the chart ships it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dockyard_operator import settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockyard-operator",
        description="Reconcile PrivateRegistry resources (dockyard.dev/v1alpha1) into private registries.",
        epilog="Environment: DOCKYARD_REGISTRY_IMAGE, DOCKYARD_NGINX_IMAGE, DOCKYARD_RESYNC_SECONDS, "
        "DOCKYARD_BCRYPT_ROUNDS, DOCKYARD_CLUSTER_DOMAIN, DOCKYARD_METRICS_LISTEN; credentials from "
        "KUBECONFIG or the in-cluster ServiceAccount.",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness", metavar="URL", help="serve a kopf liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on /metrics there, e.g. 0.0.0.0:8081 (default: "
        "DOCKYARD_METRICS_LISTEN; unset: off)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.metrics_listen is not None:
        # handlers reads its settings from the environment when imported below.
        os.environ["DOCKYARD_METRICS_LISTEN"] = args.metrics_listen
    try:
        settings.Settings.from_env()
    except settings.SettingsError as exc:
        print(f"dockyard-operator: {exc}", file=sys.stderr)
        return 2
    from dockyard_operator import handlers  # imported late: it registers the kopf handlers on import

    handlers.run(namespaces=args.namespace, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
