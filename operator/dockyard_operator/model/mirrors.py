"""Pull-through mirrors: upstream registries a registry caches under a repository prefix (spec.mirrors).

The registry half lives in `dockyard_registry.mirror`; this section only describes what users write. The
credentials stay in the user's Secret: the pod mounts its keys, the operator never reads or copies them.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

import pydantic

from dockyard_operator.model.types import (
    HOST_PORT_PATTERN,
    RESOURCE_NAME_PATTERN,
    SECRET_KEY_PATTERN,
    ApiModel,
    Duration,
)

# One or more repository-name components (reference.py's grammar, without the separators' details).
PREFIX_PATTERN = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
UPSTREAM_PATTERN = r"^https?://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?/?$"

_SecretName = Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
_SecretKey = Annotated[str, pydantic.StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)]


class MirrorCredentials(ApiModel):
    """A Secret (same namespace) holding the upstream login; used for Basic and for the Bearer token flow."""

    name: _SecretName
    """Name of the Secret."""
    username_key: _SecretKey = "username"
    """Key holding the user name."""
    password_key: _SecretKey = "password"  # noqa: S105  # a key name, not a secret
    """Key holding the password or access token."""


class MirrorCa(ApiModel):
    """A Secret key (same namespace) holding the PEM CA bundle the upstream's certificate chains to."""

    name: _SecretName
    """Name of the Secret."""
    key: _SecretKey = "ca.crt"
    """Key holding the PEM bundle."""


class Mirror(ApiModel):
    """One upstream registry cached by this registry: a pull of <registry>/<prefix>/<name> that misses is
    fetched from <upstream>/<name>, verified and stored; pushes under the prefix are refused."""

    upstream: Annotated[str, pydantic.StringConstraints(pattern=UPSTREAM_PATTERN, max_length=255)]
    """The upstream registry's URL, scheme and host[:port] only, e.g. https://registry-1.docker.io."""
    prefix: Annotated[str, pydantic.StringConstraints(pattern=PREFIX_PATTERN, max_length=128)]
    """Repository prefix inside this registry, e.g. hub: hub/library/nginx is the upstream's library/nginx."""
    node_host: (
        Annotated[str, pydantic.StringConstraints(pattern=HOST_PORT_PATTERN, max_length=253)] | None
    ) = None
    """The image host this mirror stands in for on nodes (docker.io for Docker Hub); default the upstream's
    host. Pods keep image names of this host and, with wireNodes, pull them through this registry."""
    credentials_secret_ref: MirrorCredentials | None = None
    """Upstream login (Basic, or for the Docker token flow); anonymous when absent."""
    ca_secret_ref: MirrorCa | None = None
    """CA bundle for the upstream's certificate; the system CAs when absent."""
    ttl: Duration = "5m"
    """How long a cached tag is trusted before it is re-checked upstream (a HEAD)."""
    wire_nodes: bool = True
    """Have the node trust agent point containerd at this registry for node_host (falling back to the
    upstream when the registry is down); needs spec.nodeTrust."""
    anonymous_pull: bool | None = None
    """Let anyone pull <prefix>/** without credentials (only this mirror's repositories; the rest of the
    registry keeps its auth). Default: on when the upstream is asked anonymously (no credentialsSecretRef:
    its content is public anyway), off with credentials (set it to share what they unlock with anyone who
    reaches the registry). Nodes wired to a mirror without it send a pull-only token for its prefix that
    the operator hands the node trust agent."""

    @property
    def effective_node_host(self) -> str:
        return self.node_host or urllib.parse.urlsplit(self.upstream).netloc

    @property
    def effective_anonymous_pull(self) -> bool:
        if self.anonymous_pull is not None:
            return self.anonymous_pull
        return self.credentials_secret_ref is None

    @property
    def needs_node_credential(self) -> bool:
        """Wired to nodes but closed to anonymous pulls: nodes get a pull-only token for the prefix."""
        return self.wire_nodes and not self.effective_anonymous_pull


def check_unique(mirrors: list[Mirror]) -> None:
    """Prefixes must not overlap and each node host may be mirrored once; ValueError naming the clash."""
    for i, a in enumerate(mirrors):
        for b in mirrors[i + 1 :]:
            if (
                a.prefix == b.prefix
                or a.prefix.startswith(b.prefix + "/")
                or b.prefix.startswith(a.prefix + "/")
            ):
                raise ValueError(f"mirror prefixes {a.prefix!r} and {b.prefix!r} overlap")
            if a.wire_nodes and b.wire_nodes and a.effective_node_host == b.effective_node_host:
                raise ValueError(f"two mirrors wire node host {a.effective_node_host!r}")
