"""The optional `<registry>` Ingress; its backend speaks HTTPS (the nginx sidecar), bodies are unlimited.

The user's annotations are copied only as far as `tenancy.ingress_annotations` allows (never a `*snippet*`
key): the Ingress controller acts for the whole cluster, so an annotation is a request to it, not data.
"""

from __future__ import annotations

from typing import Any

from dockyard_operator import tenancy
from dockyard_operator.builders import inputs as inputs_mod

# ingress-nginx understands these; other controllers ignore them. Allowed user annotations win.
DEFAULT_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
    "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
}


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    ingress = inputs.spec.expose.ingress
    if ingress is None:
        raise ValueError("spec.expose.ingress is not set")
    allowed, _ = tenancy.ingress_annotations(ingress.annotations, allowed=inputs.ingress_annotations_allowed)
    annotations = {
        **DEFAULT_ANNOTATIONS,
        "nginx.ingress.kubernetes.io/proxy-body-size": inputs.spec.nginx.client_max_body_size,
        **allowed,
    }
    meta = inputs_mod.metadata(inputs, name=inputs.names.ingress, component="registry")
    meta["annotations"] = annotations
    spec: dict[str, Any] = {
        "tls": [{"hosts": [ingress.host], "secretName": inputs.tls_secret_name}],
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": inputs.names.service, "port": {"name": "https"}}},
                        }
                    ]
                },
            }
        ],
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
