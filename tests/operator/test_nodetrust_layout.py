"""Node trust layout: what the operator and the node agent agree on.

Covers: host ↔ ConfigMap key encoding (round trip, `:` as `..`, refusal of what is not a host), where each
runtime's files go, the `hosts.toml` text, PEM bundles (split, dedupe, fingerprints in the operator's format,
garbage refused), ConfigMap data encode/decode with per-host targets and bad entries named, not applied, and
the node report round trip and refusal of a hand-edited annotation.
"""

from __future__ import annotations

import datetime
import json

import pytest

from dockyard_common import pki
from dockyard_operator.nodetrust import layout

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def ca_pem(name: str = "test") -> str:
    return pki.new_ca(common_name=name, now=NOW, duration=datetime.timedelta(days=30)).cert_pem.decode()


CA_A = ca_pem("a")
CA_B = ca_pem("b")


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("localhost:30500", "localhost..30500"),
        ("registry.example.com", "registry.example.com"),
        ("10.1.2.3:443", "10.1.2.3..443"),
        ("demo.team-a.svc.cluster.local", "demo.team-a.svc.cluster.local"),
    ],
)
def test_hosts_round_trip_through_configmap_keys_with_colons_as_double_dots(host: str, key: str) -> None:
    assert layout.host_key(host) == key
    assert layout.key_host(key) == host


@pytest.mark.parametrize(
    "host", ["", "[::1]:5000", "a..b", "-bad.example", "host:0", "host:70000", "a:1:2", "with space", "x/y"]
)
def test_things_that_are_not_hosts_are_refused_with_their_name(host: str) -> None:
    with pytest.raises(layout.LayoutError, match=r"host|port"):
        layout.host_key(host)


def test_a_key_with_two_ports_does_not_decode() -> None:
    with pytest.raises(layout.LayoutError, match="not an encoded host"):
        layout.key_host("a..1..2")


def test_each_runtime_reads_the_ca_from_its_own_certs_dir() -> None:
    host = "localhost:30500"
    assert layout.ca_path("docker", host) == "etc/docker/certs.d/localhost:30500/ca.crt"
    assert layout.ca_path("containerd", host) == "etc/containerd/certs.d/localhost:30500/ca.crt"
    assert layout.ca_path("crio", host) == "etc/containers/certs.d/localhost:30500/ca.crt"


def test_hosts_toml_points_containerd_at_https_and_the_absolute_ca_path() -> None:
    text = layout.hosts_toml("reg.example:5443")
    lines = [line.strip() for line in text.splitlines()]

    assert 'server = "https://reg.example:5443"' in lines
    assert '[host."https://reg.example:5443"]' in lines
    assert 'capabilities = ["pull", "resolve", "push"]' in lines
    assert 'ca = "/etc/containerd/certs.d/reg.example:5443/ca.crt"' in lines
    assert "skip_verify" not in text


def test_fingerprints_match_the_operators_status_format() -> None:
    assert layout.fingerprints(CA_A) == [pki.inspect(CA_A.encode()).fingerprint_sha256]


def test_a_bundle_keeps_order_and_drops_duplicates() -> None:
    joined = layout.bundle([CA_A, CA_B, CA_A])

    assert layout.fingerprints(joined) == [layout.fingerprint(CA_A), layout.fingerprint(CA_B)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_text_without_a_valid_certificate_is_refused(text: str) -> None:
    with pytest.raises(layout.LayoutError):
        layout.split_pem(text)


def test_encode_then_decode_gives_back_hosts_and_their_targets() -> None:
    hosts = {
        "localhost:30500": (CA_A, layout.TARGETS),
        "reg.example": (layout.bundle([CA_A, CA_B]), ("containerd",)),
    }

    data = layout.encode(hosts)
    decoded = layout.decode(data)

    assert set(data) == {"localhost..30500", "reg.example", layout.TARGETS_KEY}
    assert json.loads(data[layout.TARGETS_KEY]) == {"reg.example": ["containerd"]}
    assert decoded.errors == ()
    assert dict(decoded.hosts) == {
        "localhost:30500": (CA_A, layout.TARGETS),
        "reg.example": (layout.bundle([CA_A, CA_B]), ("containerd",)),
    }


def test_decode_names_bad_entries_and_keeps_the_good_ones() -> None:
    data = {
        "good..5000": CA_A,
        "bad-pem..5000": "garbage",
        "a..1..2": CA_A,
        layout.TARGETS_KEY: json.dumps({"good..5000": ["docker", "floppy"]}),
    }

    decoded = layout.decode(data)

    assert list(decoded.hosts) == ["good:5000"]
    assert decoded.hosts["good:5000"][1] == ("docker",)
    assert len(decoded.errors) == 3
    assert any("bad-pem..5000" in e for e in decoded.errors)
    assert any("floppy" in e for e in decoded.errors)


def test_a_broken_targets_key_is_an_error_and_hosts_keep_every_target() -> None:
    decoded = layout.decode({"h": CA_A, layout.TARGETS_KEY: "{not json"})

    assert decoded.hosts["h"][1] == layout.TARGETS
    assert decoded.errors and decoded.errors[0].startswith(layout.TARGETS_KEY)


def test_content_hash_changes_with_the_data_and_only_with_it() -> None:
    assert layout.content_hash({"a": "1", "b": "2"}) == layout.content_hash({"b": "2", "a": "1"})
    assert layout.content_hash({"a": "1"}) != layout.content_hash({"a": "2"})


def test_reports_round_trip_and_hand_edits_are_refused() -> None:
    report = layout.Report(node="n1", applied="abc", hosts={"h:1": ("AA:BB",)}, errors=("x",))

    assert layout.Report.from_json(report.to_json()) == report
    for bad in ("", "[]", "{}", '{"node": "n"}', "null"):
        with pytest.raises(layout.LayoutError):
            layout.Report.from_json(bad)
