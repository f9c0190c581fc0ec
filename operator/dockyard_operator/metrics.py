"""The operator's Prometheus metrics: what reconciling costs and fails with, and what each registry reports.

Owns: the metric names and labels (the chart's rules and dashboard use exactly these; a test checks they
exist), recording a step's duration and failure, mirroring a registry's reported status (readiness, its
conditions, certificate expiry, nodes trusting its CA) into gauges and dropping them when it is deleted, and
serving the exposition on `--metrics-listen` (prometheus-client's own HTTP server, in a thread: a scrape
never waits for the event loop). The per-registry gauges are one collector (`RegistrySeries`) holding a small
tuple of samples per registry, not a labelled `Gauge` object per series.

Metrics (labels in braces):
- `dockyard_operator_reconcile_duration_seconds{step}` histogram: each step of a pass (`credentials`, `tls`,
  `ca_rotation`, `children`, `trust`, `exposure`, `status`) and the whole `pass`.
- `dockyard_operator_reconcile_errors_total{step, reason}`: a step that raised (reason: the error's type,
  e.g. `Forbidden`, `Unavailable`), and passes that ended with a problem (step `pass`, reason: the
  Degraded condition's reason, e.g. `MissingSecret`).
- `dockyard_operator_registry_ready{namespace, registry}`: 1 when the Ready condition is True, else 0.
- `dockyard_operator_registry_condition{namespace, registry, condition}`: 1 True, 0 False or Unknown.
- `dockyard_operator_certificate_expiry_timestamp_seconds{namespace, registry, certificate}`: `ca` and
  `server` notAfter as Unix time (only what the registry reports: no `ca` with a bring-your-own Secret).
- `dockyard_operator_node_trust_nodes{namespace, registry, state}`: node trust's observed agents for the
  registry's CA: `desired` nodes, `ready` agents, nodes `trusting` it.
- `dockyard_operator_cache_reads_total{answer}`: reads of children and referenced Secrets the watch-fed cache
  answered (`memory`) or passed to the API (`api`); `dockyard_operator_cache_objects`: the objects it keeps.

Must not: decide anything or talk to the API; label values come only from names and fixed sets (never a
message, a host or a password), so the number of series stays bounded by the number of registries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple
from wsgiref import simple_server

import prometheus_client
from prometheus_client import registry as prom_registry
from prometheus_client.core import GaugeMetricFamily, Metric

from dockyard_operator import model

READY = "Ready"
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OperatorMetrics:
    """The operator's collectors on a registry of their own (one per process; tests make their own)."""

    def __init__(self) -> None:
        self.registry = prom_registry.CollectorRegistry()
        self.reconcile_seconds = prometheus_client.Histogram(
            "dockyard_operator_reconcile_duration_seconds",
            "Seconds a reconcile step (or the whole pass, step=pass) took.",
            ["step"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = prometheus_client.Counter(
            "dockyard_operator_reconcile_errors_total",
            "Reconcile steps that raised (reason: the error type) and passes that ended with a problem "
            "(step=pass, reason: the Degraded reason).",
            ["step", "reason"],
            registry=self.registry,
        )
        self.registries = RegistrySeries()
        self.registry.register(self.registries)
        self.cache_reads = prometheus_client.Counter(
            "dockyard_operator_cache_reads_total",
            "Reads of children and referenced Secrets: answered by the watch-fed cache (answer=memory) or "
            "by the API server (answer=api).",
            ["answer"],
            registry=self.registry,
        )
        self.cache_objects = prometheus_client.Gauge(
            "dockyard_operator_cache_objects",
            "Objects the watch-fed cache keeps (children and referenced Secrets).",
            registry=self.registry,
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step; count it as an error (by the exception's type) when it raises."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.reconcile_errors.labels(step=name, reason=type(exc).__name__).inc()
            raise
        finally:
            self.reconcile_seconds.labels(step=name).observe(time.perf_counter() - started)

    def cache_answered(self, answer: str) -> None:
        """A read of the watch-fed cache was answered from `memory` or by the `api`."""
        self.cache_reads.labels(answer=answer).inc()

    def problem(self, reason: str) -> None:
        """A pass ended with a problem (the Degraded reason)."""
        self.reconcile_errors.labels(step="pass", reason=reason).inc()

    def observe(self, *, namespace: str, name: str, status: model.PrivateRegistryStatus) -> None:
        """Mirror what a pass reported for one registry; series it no longer has are dropped."""
        values: list[Sample] = []
        ready = 0.0
        for cond in status.conditions or []:
            on = 1.0 if cond.status == "True" else 0.0
            values.append((CONDITION, cond.type, on))
            if cond.type == READY:
                ready = on
        values.append((READY_GAUGE, "", ready))
        if status.ca is not None and status.ca.not_after is not None:
            values.append((EXPIRY, "ca", status.ca.not_after.timestamp()))
        if status.certificate is not None and status.certificate.not_after is not None:
            values.append((EXPIRY, "server", status.certificate.not_after.timestamp()))
        trust = status.node_trust
        if trust is not None:
            counts = {"desired": trust.desired, "ready": trust.ready, "trusting": trust.trusting}
            for state, count in counts.items():
                if count is not None:
                    values.append((NODES, state, float(count)))
        self.registries.set(namespace, name, tuple(values))

    def forget(self, *, namespace: str, name: str) -> None:
        """A registry was deleted: its series go."""
        self.registries.drop(namespace, name)

    def exposition(self) -> bytes:
        """The text exposition format, as a scrape gets it."""
        return prometheus_client.generate_latest(self.registry)


class RegistryGauge(NamedTuple):
    """One per-registry gauge: its name, its help, and the label after namespace and registry ("": none)."""

    name: str
    help: str
    label: str


READY_GAUGE = RegistryGauge(
    "dockyard_operator_registry_ready", "1 when the PrivateRegistry's Ready condition is True, else 0.", ""
)
CONDITION = RegistryGauge(
    "dockyard_operator_registry_condition",
    "A PrivateRegistry status condition: 1 when True, 0 when False or Unknown.",
    "condition",
)
EXPIRY = RegistryGauge(
    "dockyard_operator_certificate_expiry_timestamp_seconds",
    "When a registry's CA (certificate=ca) or serving certificate (certificate=server) expires, "
    "as Unix time.",
    "certificate",
)
NODES = RegistryGauge(
    "dockyard_operator_node_trust_nodes",
    "Node trust of a registry's CA: desired nodes, ready agents, nodes trusting it.",
    "state",
)
Sample = tuple[RegistryGauge, str, float]
"""One series of a registry: its gauge, its last label's value (unused when the gauge has none), its value."""


class RegistrySeries(prom_registry.Collector):
    """Every registry's gauges as one small tuple of samples per registry, turned into metric families only
    when scraped. prometheus-client's labelled `Gauge` keeps an object with its own lock per series (about a
    dozen per registry, ~1 KB each): at a thousand registries that was ~10 MB of the operator's memory for
    values a scrape reads a few times a minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape runs in the listener's thread
        self._samples: dict[tuple[str, str], tuple[Sample, ...]] = {}

    def set(self, namespace: str, name: str, samples: tuple[Sample, ...]) -> None:
        with self._lock:
            self._samples[(namespace, name)] = samples

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._samples.pop((namespace, name), None)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self._lock:
            registries = list(self._samples.items())
        for (namespace, name), samples in registries:
            for gauge, label, value in samples:
                families[gauge].add_metric(
                    [namespace, name, label] if gauge.label else [namespace, name], value
                )
        return iter(families.values())

    @staticmethod
    def _families() -> dict[RegistryGauge, GaugeMetricFamily]:
        return {
            gauge: GaugeMetricFamily(
                gauge.name,
                gauge.help,
                labels=["namespace", "registry", *([gauge.label] if gauge.label else [])],
            )
            for gauge in (READY_GAUGE, CONDITION, EXPIRY, NODES)
        }


@dataclasses.dataclass(frozen=True)
class Server:
    """A running metrics listener; `stop()` closes it."""

    server: simple_server.WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(metrics: OperatorMetrics, *, host: str, port: int) -> Server:
    """Serve `metrics` on host:port (port 0: any free one) in a daemon thread."""
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=metrics.registry)
    return Server(server, thread)
