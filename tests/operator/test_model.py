"""The PrivateRegistry spec model: defaults, validation, durations and user-facing error messages.

Covers: an empty spec gets every documented default; camelCase on the wire; storage defaults to a 10Gi claim;
invalid combinations (two storage kinds, nodePort with ClusterIP, mode Secret without a Secret name,
renewBefore not shorter than certDuration, duplicate user names, bad IPs, unknown fields) are rejected with a
message naming the field and never echoing input values; Go durations parse.
"""

from __future__ import annotations

import datetime

import pydantic
import pytest

from dockyard_operator import model


def test_an_empty_spec_gets_the_documented_defaults() -> None:
    spec = model.parse_spec({})
    assert spec.replicas == 1
    assert spec.storage.kind == "pvc"
    assert spec.storage.effective_pvc.size == "10Gi"
    assert spec.storage.effective_pvc.access_modes == ["ReadWriteOnce"]
    assert spec.storage.delete_enabled is False
    assert spec.auth.users == [] and spec.auth.anonymous_pull is False
    assert (spec.tls.mode, spec.tls.cert_duration, spec.tls.renew_before) == ("SelfSigned", "2160h", "720h")
    assert spec.expose.type == "ClusterIP"
    assert spec.nginx.client_max_body_size == "0"
    assert spec.node_trust.enabled is True and spec.node_trust.targets == ["docker", "containerd", "crio"]


def test_fields_are_camel_case_on_the_wire() -> None:
    spec = model.parse_spec(
        {"auth": {"anonymousPull": True, "users": [{"name": "a", "passwordSecretRef": {"name": "s"}}]}}
    )
    assert spec.auth.anonymous_pull is True
    assert spec.auth.users[0].password_secret_ref.key == "password"
    assert spec.auth.users[0].repositories == ["**"]
    assert "anonymousPull" in spec.auth.model_dump(by_alias=True)


def test_integer_quantities_are_accepted_as_strings() -> None:
    spec = model.parse_spec({"resources": {"limits": {"cpu": 2}}})
    assert spec.resources is not None and spec.resources.limits == {"cpu": "2"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"storage": {"pvc": {}, "emptyDir": {}}}, "at most one of pvc, emptyDir and s3"),
        ({"expose": {"nodePort": 30080}}, "nodePort needs expose.type"),
        ({"tls": {"mode": "Secret"}}, "secretName is required"),
        ({"tls": {"certDuration": "10h", "renewBefore": "10h"}}, "renewBefore must be shorter"),
        ({"tls": {"ipAddresses": ["999.1.1.1"]}}, "not an IP address"),
        ({"tls": {"certDuration": "90 days"}}, "spec.tls.certDuration"),
        ({"replicas": -1}, "spec.replicas"),
        (
            {"auth": {"users": [{"name": "a:b", "passwordSecretRef": {"name": "s"}}]}},
            "spec.auth.users.0.name",
        ),
        (
            {"auth": {"users": [{"name": "a", "passwordSecretRef": {"name": "s"}, "access": "root"}]}},
            "access",
        ),
        ({"surprise": 1}, "spec.surprise"),
        ({"nodeTrust": {"targets": ["podman"]}}, "spec.nodeTrust.targets.0"),
        ({"nodeTrust": {"hostnames": ["Bad Host"]}}, "spec.nodeTrust.hostnames.0"),
    ],
)
def test_invalid_specs_are_rejected_with_a_message_naming_the_field(
    spec: dict[str, object], needle: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        model.parse_spec(spec)
    assert needle in model.spec_error_message(info.value)


def test_duplicate_user_names_are_rejected() -> None:
    users = [
        {"name": "a", "passwordSecretRef": {"name": "s"}},
        {"name": "a", "passwordSecretRef": {"name": "t"}},
    ]
    with pytest.raises(pydantic.ValidationError, match="duplicate user name"):
        model.parse_spec({"auth": {"users": users}})


def test_error_messages_do_not_echo_input_values() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        model.parse_spec({"image": {"password": "hunter2-hunter2"}})
    assert "hunter2" not in model.spec_error_message(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("1h30m", 5400), ("2160h", 7776000), ("1.5s", 1.5), ("250ms", 0.25)]
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert model.parse_duration(text) == datetime.timedelta(seconds=seconds)


def test_a_bad_duration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        model.parse_duration("5 minutes")
