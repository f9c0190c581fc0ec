"""Prometheus metrics, served on their own listener (`serve --metrics-listen HOST:PORT`), never the API port.

Owns: the metric families, the middleware that counts requests, and the small aiohttp app of the
metrics listener (`/metrics` in the Prometheus text format, `/gc` with the last online gc run as
JSON). Must not: be reachable through the registry's public port (the nginx sidecar proxies only the
API port), nor slow a request by more than a counter update: everything per request is a few dict
lookups and lock-free increments; storage, gc and auth figures are read only when scraped.

Families (all prefixed `dockyard_registry_`):
- `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}` (histogram),
  `http_request_bytes_total{route}` (body bytes received), `http_response_bytes_total{route}` (sent:
  the declared length; with X-Accel-Redirect nginx sends the bytes, so it is what nginx will send),
  `uploads_in_flight` (upload requests receiving bytes now). `route` is the route class: `base`,
  `catalog`, `manifests`, `blobs`, `uploads`, `tags`, `referrers`, `auth` (nginx auth_request),
  `health`, or `other` (no route matched), so the label set stays small whatever clients send.
- `auth_checks_total{outcome}`: credential checks answered from the cache (`hit`), by bcrypt (`miss`),
  and wrong credentials (`failure`).
- `storage_total_bytes`, `storage_free_bytes`, `storage_used_bytes`, `storage_ready` (1/0), from the
  last storage check (health.py).
- `mirror_upstream_requests_total{mirror,kind}`, `mirror_upstream_errors_total{mirror,reason}`,
  `mirror_stale_serves_total{mirror}`, `mirror_coalesced_blob_requests_total{mirror}`: what pull-through
  mirrors asked their upstreams, what failed, how often a cached manifest stood in for an unreachable
  upstream, and how many blob requests shared a running upstream fetch instead of starting their own.
- `gc_runs_total`, `gc_deferred_runs_total` (runs left to another replica), `gc_failures_total`,
  `gc_errors_total`, `gc_freed_bytes_total`, `gc_deleted_total{kind}` (tags, manifests, blobs), since
  start-up; `gc_last_run_timestamp_seconds`, `gc_last_run_duration_seconds`, `gc_last_run_errors`,
  `gc_last_run_freed_bytes`, `gc_next_run_timestamp_seconds` (from the runner, or the status file a
  previous process left).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import core, registry

from dockyard_registry import auth, health, maintenance, routes, state
from dockyard_registry import mirror as mirror_

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_UPLOAD_ROUTE = "uploads"
# Any token is a valid HTTP method to aiohttp: others fold into one label value, so clients cannot grow
# the number of series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclasses.dataclass(frozen=True)
class Sources:
    """What the scrape reads besides the request counters (each may be absent)."""

    authenticator: auth.Authenticator | None = None
    storage: health.StorageMonitor | None = None
    gc: maintenance.GcRunner | None = None
    mirror: mirror_.PullThrough | None = None


class Metrics:
    """One registry's metric families in their own CollectorRegistry (tests run several registries)."""

    def __init__(self, sources: Sources) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.requests = prometheus_client.Counter(
            "dockyard_registry_http_requests",
            "HTTP requests answered, by method, route class and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            "dockyard_registry_http_request_duration_seconds",
            "Time to answer a request (until the handler returns; streamed bodies included).",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.bytes_in = prometheus_client.Counter(
            "dockyard_registry_http_request_bytes",
            "Request body bytes received, by route class.",
            ["route"],
            registry=self.registry,
        )
        self.bytes_out = prometheus_client.Counter(
            "dockyard_registry_http_response_bytes",
            "Response body bytes sent (declared length), by route class.",
            ["route"],
            registry=self.registry,
        )
        self.uploads_in_flight = prometheus_client.Gauge(
            "dockyard_registry_uploads_in_flight",
            "Upload requests (POST, PATCH, PUT of blob uploads) in progress.",
            registry=self.registry,
        )
        self.sources = sources
        self.registry.register(_Scraped(sources))
        self._routes: dict[object, str] = {}
        # Labelled children, looked up once per label set: `labels()` costs more than the increment.
        self._per_route: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._per_status: dict[tuple[str, str, int], Any] = {}

    def route_class(self, method: str, raw_path: str, *, handler: object = None) -> str:
        """The route class of a request; `handler`: the one the app dispatched it to, when it did (then
        the path is not matched again)."""
        if raw_path == "/auth":
            return "auth"
        if raw_path in ("/healthz", "/readyz"):
            return "health"
        if handler is None:
            try:
                match = routes.match(method, raw_path)
            except routes.MethodNotAllowedError:
                match = None
            if match is None:
                return "other"
            handler = match.handler
        found = self._routes.get(handler)
        if found is None:
            module = getattr(handler, "__module__", "").rsplit(".", 1)[-1]
            name = getattr(handler, "__name__", "other")
            found = name if module == "discovery" else module
            self._routes[handler] = found
        return found

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        method = request.method if request.method in _METHODS else "other"
        # Only uploads need their route before the handler runs (uploads in flight); every other request
        # is classed afterwards by the handler the app dispatched it to.
        uploading = method in ("POST", "PATCH", "PUT") and "/blobs/uploads/" in request.raw_path
        uploading = uploading and self.route_class(request.method, request.raw_path) == _UPLOAD_ROUTE
        if uploading:
            self.uploads_in_flight.inc()
        began = time.perf_counter()
        status = 500
        sent = 0
        try:
            response = await handler(request)
            status = response.status
            sent = response.content_length or response.body_length or 0
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if uploading:
                self.uploads_in_flight.dec()
            route = self.route_class(request.method, request.raw_path, handler=request.get(state.HANDLER))
            children = self._per_route.get((method, route))
            if children is None:
                children = (
                    self.latency.labels(method, route),
                    self.bytes_in.labels(route),
                    self.bytes_out.labels(route),
                )
                self._per_route[(method, route)] = children
            latency, bytes_in, bytes_out = children
            latency.observe(time.perf_counter() - began)
            counter = self._per_status.get((method, route, status))
            if counter is None:
                counter = self.requests.labels(method, route, str(status))
                self._per_status[(method, route, status)] = counter
            counter.inc()
            received = request.content.total_bytes
            if received:
                bytes_in.inc(received)
            if sent and method != "HEAD":
                bytes_out.inc(sent)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class _Scraped(registry.Collector):
    """Families computed at scrape time from auth, the storage check and the gc runner."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[core.Metric]:
        if self.sources.authenticator is not None:
            checks = core.CounterMetricFamily(
                "dockyard_registry_auth_checks",
                "Credential checks: answered from the cache (hit), by bcrypt (miss), wrong (failure); "
                "tokens verified (token) and refused (token_failure).",
                labels=["outcome"],
            )
            counts = self.sources.authenticator.counts
            for outcome in ("hit", "miss", "failure", "token", "token_failure"):
                checks.add_metric([outcome], counts[outcome])
            yield checks
        if self.sources.storage is not None:
            yield from _storage(self.sources.storage.state)
        if self.sources.gc is not None:
            yield from _gc(self.sources.gc)
        if self.sources.mirror is not None:
            yield from _mirrors(self.sources.mirror)


def _mirrors(pull: mirror_.PullThrough) -> Iterator[core.Metric]:
    requests = core.CounterMetricFamily(
        "dockyard_registry_mirror_upstream_requests",
        "Requests a pull-through mirror sent its upstream, by mirror prefix and kind "
        "(manifest, blob, token, referrers, tags).",
        labels=["mirror", "kind"],
    )
    errors = core.CounterMetricFamily(
        "dockyard_registry_mirror_upstream_errors",
        "Upstream requests that failed, by mirror prefix and reason "
        "(unavailable, auth, not_found, digest, other).",
        labels=["mirror", "reason"],
    )
    stale = core.CounterMetricFamily(
        "dockyard_registry_mirror_stale_serves",
        "Manifests served from the cache because the upstream could not be asked, by mirror prefix.",
        labels=["mirror"],
    )
    coalesced = core.CounterMetricFamily(
        "dockyard_registry_mirror_coalesced_blob_requests",
        "Blob requests that joined a running upstream fetch of the same blob instead of starting one, "
        "by mirror prefix.",
        labels=["mirror"],
    )
    for prefix, client in sorted(pull.clients.items()):
        for kind in ("manifest", "blob", "token", "referrers", "tags"):
            requests.add_metric([prefix, kind], client.requests[kind])
        for reason in ("unavailable", "auth", "not_found", "digest", "other"):
            errors.add_metric([prefix, reason], client.errors[reason])
        stale.add_metric([prefix], pull.stale[prefix])
        coalesced.add_metric([prefix], pull.coalesced[prefix])
    yield requests
    yield errors
    yield stale
    yield coalesced


def _gauge(name: str, doc: str, value: float) -> core.GaugeMetricFamily:
    return core.GaugeMetricFamily(f"dockyard_registry_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> core.CounterMetricFamily:
    return core.CounterMetricFamily(f"dockyard_registry_{name}", doc, value=value)


def _storage(state: health.State) -> Iterator[core.Metric]:
    yield _gauge("storage_ready", "1 when the last storage check passed.", float(state.ready))
    if state.total is not None and state.free is not None and state.used is not None:
        yield _gauge("storage_total_bytes", "Size of the data filesystem.", state.total)
        yield _gauge("storage_free_bytes", "Bytes available to the registry.", state.free)
        yield _gauge("storage_used_bytes", "Bytes of the data filesystem in use.", state.used)


def _gc(runner: maintenance.GcRunner) -> Iterator[core.Metric]:
    totals = runner.totals
    yield _counter("gc_runs", "Online gc runs since start-up.", totals["runs"])
    yield _counter(
        "gc_deferred_runs", "Online gc runs skipped: another replica's run collected.", totals["deferred"]
    )
    yield _counter("gc_failures", "Online gc runs that failed as a whole.", totals["failures"])
    yield _counter("gc_errors", "Deletions online gc runs could not make.", totals["errors"])
    yield _counter("gc_freed_bytes", "Bytes online gc runs freed (dry runs excluded).", totals["bytesFreed"])
    deleted = core.CounterMetricFamily(
        "dockyard_registry_gc_deleted", "What online gc runs deleted, by kind.", labels=["kind"]
    )
    for kind, key in (("tags", "tagsDeleted"), ("manifests", "manifestsDeleted"), ("blobs", "blobsDeleted")):
        deleted.add_metric([kind], totals[key])
    yield deleted
    last = runner.last
    if last is not None:
        if isinstance(last.get("finished"), int | float):
            yield _gauge("gc_last_run_timestamp_seconds", "When the last gc run finished.", last["finished"])
        if isinstance(last.get("duration"), int | float):
            yield _gauge("gc_last_run_duration_seconds", "How long the last gc run took.", last["duration"])
        yield _gauge("gc_last_run_errors", "Errors of the last gc run.", float(last.get("errors", 0) or 0))
        yield _gauge(
            "gc_last_run_freed_bytes", "Bytes the last gc run freed.", float(last.get("bytesFreed", 0) or 0)
        )
    if runner.next_run is not None:
        yield _gauge("gc_next_run_timestamp_seconds", "When the next gc run starts.", runner.next_run)


def _gc_status(runner: maintenance.GcRunner | None) -> dict[str, Any]:
    if runner is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "schedule": runner.settings.schedule.text,
        "nextRun": runner.next_run,
        "lastRun": runner.last,
        "deferredRuns": runner.totals["deferred"],
        "lastDeferredTo": runner.last_deferred_to,
    }


def _storage_status(monitor: health.StorageMonitor | None) -> dict[str, Any]:
    if monitor is None:
        return {"checked": False}
    state = monitor.state
    return {
        "checked": True,
        "ready": state.ready,
        "problem": state.problem.value,
        "message": state.message,
        "checkedAt": state.checked,
        "totalBytes": state.total,
        "usedBytes": state.used,
        "freeBytes": state.free,
        "maxFillPercent": monitor.max_fill,
    }


def _identities_status(authenticator: auth.Authenticator | None) -> list[dict[str, Any]]:
    if authenticator is None or authenticator.tokens is None:
        return []
    return [keyset.status() for keyset in authenticator.tokens.keysets.values()]


def _mirror_status(pull: mirror_.PullThrough) -> list[dict[str, Any]]:
    """Per mirror: its upstream, whether the last request reached it (null: none yet), the last error (with
    its reason: unavailable, auth, digest, other), the last answered request (Unix times) and why a changed
    CA file is not in use (caError: null when the file on disk is the one trusted)."""
    return [
        {
            "prefix": prefix,
            "upstream": client.mirror.upstream,
            "reachable": client.reachable,
            "lastError": client.last_error,
            "lastErrorAt": client.last_error_at,
            "lastErrorReason": client.last_error_reason,
            "lastSuccessAt": client.last_success_at,
            "caError": client.ca_error,
            "staleServes": pull.stale[prefix],
        }
        for prefix, client in sorted(pull.clients.items())
    ]


def listener_app(metrics: Metrics) -> web.Application:
    """The metrics listener: `/metrics`, `/gc` (last gc run) and `/status` (storage, gc and, with
    mirrors, each mirror's upstream state) as JSON."""
    app = web.Application()
    sources = metrics.sources

    async def scrape(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def gc_status(request: web.Request) -> web.StreamResponse:
        return web.json_response(_gc_status(sources.gc))

    async def status(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {
            "storage": _storage_status(sources.storage),
            "gc": _gc_status(sources.gc),
            "identities": _identities_status(sources.authenticator),
        }
        if sources.mirror is not None:
            body["mirrors"] = _mirror_status(sources.mirror)
        return web.json_response(body)

    app.router.add_get("/metrics", scrape)
    app.router.add_get("/gc", gc_status)
    app.router.add_get("/status", status)
    return app


async def listener(app: web.Application, *, metrics: Metrics, host: str, port: int) -> AsyncIterator[None]:
    """Cleanup context of the registry app: the metrics listener runs exactly as long as the registry."""
    runner = web.AppRunner(listener_app(metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    yield
    await runner.cleanup()
