"""Wire types and patterns shared by the `PrivateRegistry` models, the base model, and duration parsing."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

import pydantic
from pydantic import alias_generators

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
NGINX_TIME_PATTERN = r"^[0-9]+(ms|s|m|h|d)?$"
NGINX_SIZE_PATTERN = r"^[0-9]+[kKmMgG]?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_NAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105  # a pattern, not a secret
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
REPOSITORY_GLOB_PATTERN = r"^[a-z0-9*][a-z0-9*._/-]*$"
HOST_PORT_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$"
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
OBJECT_PREFIX_PATTERN = r"^[A-Za-z0-9._=+-]+(/[A-Za-z0-9._=+-]+)*$"
IP_PATTERN = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$"


def _to_str(value: Any) -> Any:
    # Kubernetes quantities are int-or-string on the wire; we keep them as strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    pydantic.BeforeValidator(_to_str),
    pydantic.StringConstraints(pattern=QUANTITY_PATTERN),
    pydantic.WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
FreeformObject = Annotated[
    dict[str, Any],
    pydantic.WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
Duration = Annotated[str, pydantic.StringConstraints(pattern=DURATION_PATTERN)]
NginxTime = Annotated[str, pydantic.StringConstraints(pattern=NGINX_TIME_PATTERN)]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go-style duration (`90m`, `1h30m`, `2160h`) into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with ms, s, m or h, e.g. 2160h")
    seconds = sum(
        float(number) * _DURATION_UNITS[unit]
        for number, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text)
    )
    return datetime.timedelta(seconds=seconds)


class ApiModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )
