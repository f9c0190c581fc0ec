"""Pod hygiene: how the registry's pods are spread and who may reach them."""

from __future__ import annotations

from typing import Annotated

import pydantic

from dockyard_operator.model.types import ApiModel

NAMESPACE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

NamespaceName = Annotated[str, pydantic.StringConstraints(pattern=NAMESPACE_NAME_PATTERN, max_length=63)]


class NetworkPolicy(ApiModel):
    """A NetworkPolicy for the registry pods (<registry>): off by default."""

    enabled: bool = False
    """Admit only the registry's HTTPS port (nginx, 5443) from anywhere (clients, node-port pulls from the
    nodes, the ingress controller) and its metrics port (9102) only from the operator's namespace (which
    reads /status there) and the namespaces in metricsFromNamespaces; every other port is closed. Needs a
    network plugin that enforces NetworkPolicies."""
    metrics_from_namespaces: Annotated[list[NamespaceName], pydantic.Field(max_length=32)] = []
    """Namespaces (e.g. your Prometheus's) allowed to scrape the metrics port, besides the operator's."""
