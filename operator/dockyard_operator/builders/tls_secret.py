"""The `<registry>-tls` Secret (`tls.crt`, `tls.key`, `ca.crt`) and the `<registry>-ca` Secret (the CA key).

The CA key lives in its own Secret because the serving pod never needs it: only the operator signs.
Must not: generate keys or certificates (reconcile does that through `crypto.py`).
"""

from __future__ import annotations

from typing import Any

from dockyard_operator.builders import inputs as inputs_mod


def build(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    if inputs.tls is None:
        raise ValueError("no TLS material to render")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": inputs_mod.metadata(inputs, name=inputs.names.tls_secret, component="tls"),
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": inputs_mod.b64(inputs.tls.cert_pem),
            "tls.key": inputs_mod.b64(inputs.tls.key_pem),
            "ca.crt": inputs_mod.b64(inputs.tls.ca_pem),
        },
    }


def build_ca(inputs: inputs_mod.Inputs) -> dict[str, Any]:
    if inputs.ca is None:
        raise ValueError("no CA material to render")
    meta = inputs_mod.metadata(inputs, name=inputs.names.ca_secret, component="ca")
    if inputs.ca_annotations:
        meta["annotations"] = dict(inputs.ca_annotations)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": {"ca.crt": inputs_mod.b64(inputs.ca.cert_pem), "ca.key": inputs_mod.b64(inputs.ca.key_pem)},
    }
