"""Child names and labels.

Covers: short names pass through readably; long or odd names become DNS-1035 labels of at most 63 characters
that are stable and distinct for distinct registries; label values stay valid; selector labels are a subset of
the full label set.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from dockyard_operator import names

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_short_names_are_kept_readable() -> None:
    n = names.Names.of("demo")
    assert (n.service, n.tls_secret, n.ca_secret, n.htpasswd_secret, n.nginx_configmap, n.pvc) == (
        "demo",
        "demo-tls",
        "demo-ca",
        "demo-htpasswd",
        "demo-nginx",
        "demo-data",
    )


@pytest.mark.parametrize("registry", ["r" * 253, "a." * 100 + "b", "0-starts-with-a-digit", "x" * 60])
def test_every_child_name_is_a_dns_label_of_at_most_63_characters(registry: str) -> None:
    for value in dataclasses.astuple(names.Names.of(registry))[1:]:
        assert len(value) <= 63 and DNS_1035.match(value), value


def test_long_names_are_stable_and_distinct() -> None:
    a, b = "x" * 100 + "a", "x" * 100 + "b"
    assert names.Names.of(a) == names.Names.of(a)
    assert names.Names.of(a).service != names.Names.of(b).service
    assert names.Names.of(a).tls_secret.endswith("-tls")


def test_label_values_stay_valid_for_long_names() -> None:
    value = names.label_value("n" * 200)
    assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert names.label_value("demo") == "demo"


def test_selector_labels_are_part_of_the_full_label_set() -> None:
    full = names.labels("demo", component="registry")
    assert names.selector_labels("demo").items() <= full.items()
    assert full[names.LABEL_MANAGED_BY] == "dockyard" and full[names.LABEL_PART_OF] == "dockyard"


def test_service_hosts_go_from_short_to_fully_qualified() -> None:
    assert names.service_hosts("demo", "ns") == [
        "demo",
        "demo.ns",
        "demo.ns.svc",
        "demo.ns.svc.cluster.local",
    ]
