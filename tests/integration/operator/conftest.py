"""The Dockyard operator running against the session's control plane, and its log on failure.

Why a subprocess and not `kopf.testing.KopfRunner`: KopfRunner runs `kopf run` in a thread of
the test process, so everything import-time is shared with the tests: `handlers.py` reads its
settings from the environment once, when first imported (by any test module), and registers its
handlers in kopf's process-global registry; click swaps the process-wide stdout/stderr while it
runs; `--verbose` reconfigures the root logger for every later test. A subprocess is isolated,
gets exactly the environment given here, is stopped by its PID (SIGTERM, so kopf's cleanup runs,
and its exit code is checked), can be restarted (downtime tests), and writes a log file that
tests assert on (no password in it) and that is attached to the report of a failing test.

The operator starts once per session (`--standalone --all-namespaces`, a system:masters user of its own, a
3 s resync period, the cheapest bcrypt cost, its metrics on a reserved loopback port); every test works in its
own namespace. Tests wait for what the operator did through the API (conditions, children, and
`cluster.await_passes` for passes that change nothing), never for a line in its log.
"""

from __future__ import annotations

import collections.abc
import contextlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import kube, procs

OPERATOR_START_TIMEOUT = 60.0
RESYNC_SECONDS = "3"
USER = "dockyard-operator-under-test"
"""The session operator's user (in system:masters): the audit log tells its requests from the tests'."""


class Operator:
    """The operator under test: one process at a time, all of them logging to one file.

    `start()` runs `kopf run --verbose` on the handlers module (the most log detail for failure
    reports and for the password checks), or with `entrypoint=True` the packaged
    `python -m dockyard_operator` that the chart's image runs.
    """

    def __init__(
        self, *, plane: kube.ControlPlane, log: Path, kubeconfig: Path | None = None, username: str = ""
    ) -> None:
        """Runs as `USER` (system:masters), or with `kubeconfig`, whose user is `username`."""
        self.log = log
        self.username = username if kubeconfig is not None else USER
        """Who the API server's audit log says made its requests (`cluster.await_passes`)."""
        if kubeconfig is None:
            kubeconfig = plane.client_kubeconfig(name=USER)
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "DOCKYARD_RESYNC_SECONDS": RESYNC_SECONDS,
            "DOCKYARD_BCRYPT_ROUNDS": "4",
            "PYTHONUNBUFFERED": "1",
        }
        self.process: procs.Process | None = None
        self.liveness = ""
        self.metrics = ""
        """URL of the operator's Prometheus /metrics (DOCKYARD_METRICS_LISTEN, a reserved loopback port)."""
        self.home = "dockyard-system"
        """The operator's own namespace (DOCKYARD_NAMESPACE; unset here, so the settings' default)."""

    def start(self, *, entrypoint: bool = False, namespaces: collections.abc.Sequence[str] = ()) -> None:
        """Start the operator and wait until its startup handlers have finished; with `namespaces`, a
        namespace-scoped one (`--namespace` each, DOCKYARD_WATCH_NAMESPACES, as chart's watchNamespaces)."""
        assert self.process is None or not self.process.alive(), "the operator is already running"
        port = procs.reserve_port()
        self.liveness = f"http://127.0.0.1:{port.number}/healthz"
        metrics_port = procs.reserve_port()
        self.metrics = f"http://127.0.0.1:{metrics_port.number}/metrics"
        metrics_address = f"127.0.0.1:{metrics_port.number}"
        env = dict(self.env)
        scope = [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
        if namespaces:
            env["DOCKYARD_WATCH_NAMESPACES"] = ",".join(namespaces)
        if entrypoint:  # the CLI's flag; kopf run has only the environment variable
            argv = [sys.executable, "-m", "dockyard_operator", "--liveness", self.liveness]
            argv += ["--metrics-listen", metrics_address, *(scope if namespaces else [])]
        else:
            env["DOCKYARD_METRICS_LISTEN"] = metrics_address
            argv = [
                *(sys.executable, "-m", "kopf", "run", "--standalone", *scope, "--verbose"),
                f"--liveness={self.liveness}",
                *("-m", "dockyard_operator.handlers"),
            ]
        with self.log.open("a") as out:
            out.write(f"--- start: {' '.join(argv)}\n")
        process = self.process = procs.Process(
            name="dockyard-operator", argv=argv, log=self.log, env=env, ports=[port, metrics_port]
        )

        # kopf serves the liveness endpoint only after every startup handler has finished.
        def up() -> bool:
            process.check_alive()
            return self.healthy()

        try:
            kube.eventually(
                up, timeout=OPERATOR_START_TIMEOUT, interval=0.5, what="the operator's liveness probe"
            )
        except BaseException:
            process.stop()
            raise

    def stop(self) -> int:
        """SIGTERM (kopf's graceful shutdown), SIGKILL after the grace period; the exit code."""
        assert self.process is not None
        return self.process.stop()

    def check_alive(self) -> None:
        assert self.process is not None, "the operator was never started"
        self.process.check_alive()

    def output(self, *, since: int = 0) -> str:
        """The operator's log from byte offset `since` on."""
        with self.log.open("rb") as handle:
            handle.seek(since)
            return handle.read().decode(errors="replace")

    def offset(self) -> int:
        return self.log.stat().st_size

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.liveness, timeout=5) as response:  # noqa: S310 - loopback URL
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


# The session's admin operator (tests/integration/conftest.py), once a test has started it.
ADMIN_OPERATOR = pytest.StashKey[Operator]()


@contextlib.contextmanager
def admin_operator_stopped(session: pytest.Session) -> collections.abc.Iterator[None]:
    """The session's admin operator, when running, stopped for the block and started again after it.

    Another operator (the chart's, tests/integration/install) must never run beside it: both would reconcile
    the same registries. Stopping it here, instead of relying on pytest running install/ first, makes the
    order of the test directories irrelevant.
    """
    admin = session.stash.get(ADMIN_OPERATOR, None)
    if admin is None or admin.process is None or not admin.process.alive():
        yield
        return
    code = admin.stop()
    assert code == 0, f"the admin operator exited {code} on SIGTERM:\n{procs.tail(admin.log, lines=80)}"
    try:
        yield
    finally:
        admin.start()


@pytest.fixture(scope="module")
def metrics_port() -> collections.abc.Iterator[procs.Port]:
    """A reserved loopback port where a module's stand-in registry serves its /status (and /metrics)."""
    port = procs.reserve_port()
    yield port
    port.release()


@pytest.fixture(scope="module")
def observing_operator(
    request: pytest.FixtureRequest,
    control_plane: kube.ControlPlane,
    crd_installed: None,
    tmp_path_factory: pytest.TempPathFactory,
    metrics_port: procs.Port,
) -> collections.abc.Iterator[Operator]:
    """An operator (the admin one stopped meanwhile) that reads every registry's /status from
    `metrics_port`, where the module runs a real registry process: the test cluster has no pod network."""
    with admin_operator_stopped(request.session):
        operator = Operator(plane=control_plane, log=tmp_path_factory.mktemp("observing") / "operator.log")
        operator.env["DOCKYARD_METRICS_URL_OVERRIDE"] = f"http://127.0.0.1:{metrics_port.number}/status"
        operator.start()
        try:
            yield operator
        finally:
            code = operator.stop()
            assert code == 0, procs.tail(operator.log, lines=80)
