"""How a registry is served and reached: certificate, Service and Ingress, nginx sidecar, node trust."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import (
    DNS_NAME_PATTERN,
    HOST_PORT_PATTERN,
    IP_PATTERN,
    NGINX_SIZE_PATTERN,
    RESOURCE_NAME_PATTERN,
    ApiModel,
    Duration,
    NginxTime,
    parse_duration,
)


class Tls(ApiModel):
    """The serving certificate of the registry endpoint."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'Secret'"
                    " || (has(self.secretName) && self.secretName != '')",
                    "message": "tls.secretName is required when tls.mode is Secret",
                },
                {
                    "rule": "!has(self.renewBefore) || !has(self.certDuration)"
                    " || duration(self.renewBefore) < duration(self.certDuration)",
                    "message": "tls.renewBefore must be shorter than tls.certDuration",
                },
            ]
        }
    )

    mode: Literal["SelfSigned", "Secret"] = "SelfSigned"
    """SelfSigned: the operator keeps a CA (Secret <registry>-ca) and issues the serving certificate
    (Secret <registry>-tls, with ca.crt for clients); Secret: use your own kubernetes.io/tls Secret."""
    secret_name: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """With mode Secret: the kubernetes.io/tls Secret (same namespace) with tls.crt, tls.key (and ca.crt)."""
    dns_names: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)]],
        pydantic.Field(max_length=64),
    ] = []
    """Extra DNS names for the certificate, besides the Service names, localhost and expose hosts. A CA the
    operator creates vouches only for the names the certificate has then (X.509 name constraints): a name
    added later, outside them, is left out (Degraded, NamesOutsideCA) until a CA rotation."""
    ip_addresses: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=IP_PATTERN, max_length=45)]],
        pydantic.Field(max_length=64),
    ] = []
    """Extra IP addresses for the certificate, besides 127.0.0.1 (name constraints as for dnsNames)."""
    ca_duration: Duration = "87600h"
    """Validity of a newly created CA (Go duration, default 10 years). The CA is never renewed silently."""
    cert_duration: Duration = "2160h"
    """Validity of the serving certificate (Go duration, default 90 days)."""
    renew_before: Duration = "720h"
    """Renew the serving certificate this long before it expires (Go duration, default 30 days)."""

    @pydantic.field_validator("ip_addresses")
    @classmethod
    def _valid_ips(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return values

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Tls:
        if self.mode == "Secret" and not self.secret_name:
            raise ValueError("tls.secretName is required when tls.mode is Secret")
        if parse_duration(self.renew_before) >= parse_duration(self.cert_duration):
            raise ValueError("tls.renewBefore must be shorter than tls.certDuration")
        return self


class Ingress(ApiModel):
    """An Ingress in front of the registry Service (the backend speaks HTTPS)."""

    host: Annotated[str, pydantic.StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)]
    """Public host name; it is added to the certificate's DNS names."""
    class_name: str | None = None
    """IngressClass name; empty uses the cluster default."""
    annotations: dict[str, str] | None = None
    """Extra annotations for the Ingress (merged over the operator's defaults): only keys the operator's
    installer allows (tenancy.ingressAnnotations.allowed), never one containing "snippet"; Degraded names
    any key left out."""


class Expose(ApiModel):
    """How clients reach the registry."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.nodePort) || (has(self.type) && self.type != 'ClusterIP')",
                    "message": "expose.nodePort needs expose.type NodePort or LoadBalancer",
                }
            ]
        }
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Type of the Service <registry> (port 443, name https)."""
    node_port: Annotated[int, pydantic.Field(ge=30000, le=32767)] | None = None
    """Fixed node port for types NodePort and LoadBalancer; empty lets Kubernetes choose."""
    ingress: Ingress | None = None
    """Optional Ingress."""

    @pydantic.model_validator(mode="after")
    def _node_port_needs_type(self) -> Expose:
        if self.node_port is not None and self.type == "ClusterIP":
            raise ValueError("expose.nodePort needs expose.type NodePort or LoadBalancer")
        return self


class Nginx(ApiModel):
    """Settings of the nginx sidecar that terminates TLS in front of the registry."""

    client_max_body_size: Annotated[str, pydantic.StringConstraints(pattern=NGINX_SIZE_PATTERN)] = "0"
    """Largest request body nginx accepts (nginx size syntax); 0 means unlimited, which large layers need."""
    proxy_connect_timeout: NginxTime = "5s"
    """Timeout for connecting to the registry process."""
    proxy_read_timeout: NginxTime = "900s"
    """Timeout between two reads from the registry (long for big blobs)."""
    proxy_send_timeout: NginxTime = "900s"
    """Timeout between two writes to the registry (long for big uploads)."""


class NodeTrust(ApiModel):
    """Make every node's container runtimes trust this registry's CA (a DaemonSet writes certs.d files)."""

    enabled: bool = True
    """Publish the CA to the nodes (on by default; needs an operator with a namespace)."""
    hostnames: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=HOST_PORT_PATTERN, max_length=253)]],
        pydantic.Field(max_length=32),
    ] = []
    """Extra host[:port] names nodes pull from, besides the Service names and the expose hosts. Only a name
    the registry serves (spec.tls.dnsNames or ipAddresses, its Service names in its own namespace, the Ingress
    host; localhost or 127.0.0.1 only with its own node port) or one the operator's installer allows is
    published; a public registry (docker.io, ghcr.io, ...) only when the installer allows it by name. A host
    another registry holds stays with it. NodeTrustReady names every host left out and why."""
    targets: Annotated[
        list[Literal["docker", "containerd", "crio"]], pydantic.Field(min_length=1, max_length=3)
    ] = ["docker", "containerd", "crio"]
    """Runtimes whose certs.d directories get the CA."""
