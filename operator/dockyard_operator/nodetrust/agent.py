"""The node trust agent: the process of the node trust DaemonSet, one per node.

`python -m dockyard_operator.nodetrust.agent --config-dir DIR --host-root /host` keeps, for every host in the
mounted ConfigMap, each runtime's CA file (and containerd's `hosts.toml`) under the host root, and writes a
report of the CA fingerprints it installed onto its own Pod (annotation `dockyard.dev/node-trust`), where the
operator reads it to count nodes that trust a CA (for `status.nodeTrust` and staged CA rotation).

Why a Pod annotation for the report: it lives and dies with the agent (a drained or deleted node leaves no
stale report behind), needs no extra object per node, and needs only `get`/`update` on Pods in the operator's
namespace; a per-node ConfigMap or Lease would need `create`/`delete` plus garbage collection of our own.

Why polling and not inotify: the ConfigMap volume is a few kilobytes that kubelet swaps atomically via the
`..data` symlink; reading it once a second costs nothing measurable, needs no new dependency, and sees every
kind of change (including a plain directory in tests). A periodic full resync also repairs files someone
deleted or edited on the host.

What it writes on the host, and how safely, is `hostfiles` (the `Installer`); this module is the process:
reading the mounted ConfigMap, the polling loop, the report, and the command line.

Must not: talk to anything but its own Pod, or write outside `<host-root>/<certs.d dirs of its targets>`
and its own drop-in in `<host-root>/etc/containers/registries.conf.d`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from dockyard_operator import kube
from dockyard_operator.nodetrust import layout
from dockyard_operator.nodetrust.hostfiles import Installer, SyncResult

log = logging.getLogger("dockyard_operator.nodetrust.agent")


# ------------------------------------------------------------------------------------------- reading


def read_config(directory: Path) -> dict[str, str] | None:
    """One consistent snapshot of a mounted ConfigMap (key → text), or None while kubelet swaps it.

    kubelet writes a new timestamped directory and then flips the `..data` symlink; reading through the
    resolved target means keys and values always come from the same version.
    """
    link = directory / "..data"
    base = directory / os.readlink(link) if link.is_symlink() else directory
    data: dict[str, str] = {}
    try:
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("..") or not entry.is_file():
                continue
            data[entry.name] = entry.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None  # the version we resolved was removed after a newer one was published
    return data


# ----------------------------------------------------------------------------------------- reporting


class Reporter(Protocol):
    async def report(self, report: layout.Report) -> None:
        """Publish `report`; raise on failure (the agent retries on its next poll)."""


class LogReporter:
    """Only logs the report: for runs outside a Pod (tests, a manual run on a host)."""

    async def report(self, report: layout.Report) -> None:
        log.info("report: %s", report.to_json())


class PodAnnotationReporter:
    """Writes the report as an annotation on the agent's own Pod, through the operator's `kube` module.

    Read-modify-write with the Pod's resourceVersion: a concurrent change makes the write fail with a
    conflict, and the next poll retries.
    """

    def __init__(self, *, client: kube.Kube, pod: str, namespace: str) -> None:
        self._client = client
        self._pod = pod
        self._namespace = namespace

    async def report(self, report: layout.Report) -> None:
        pod = await self._client.get(api_version="v1", kind="Pod", namespace=self._namespace, name=self._pod)
        if pod is None:
            raise kube.NotFound(f"Pod {self._namespace}/{self._pod} not found", status=404)
        annotations = pod["metadata"].setdefault("annotations", {})
        annotations[layout.REPORT_ANNOTATION] = report.to_json()
        await self._client.replace(manifest=pod)


# -------------------------------------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """How the loop runs (all from the command line)."""

    config_dir: Path
    node: str
    poll_interval: float = 1.0
    resync_interval: float = 60.0
    credentials_dir: Path | None = None
    """The mounted node credentials Secret (`layout.NODE_CREDENTIALS`); None or missing: no credentials."""


class Agent:
    """Poll the ConfigMap; sync on each change and every `resync_interval`; report when the report changes."""

    def __init__(
        self,
        *,
        options: Options,
        installer: Installer,
        reporter: Reporter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.installer = installer
        self.reporter = reporter
        self._clock = clock
        self._applied: Mapping[str, str] | None = None
        self._applied_credentials: Mapping[str, str] = {}
        self._synced_at = float("-inf")
        self._reported: str | None = None
        self._pending: layout.Report | None = None

    @property
    def reported(self) -> bool:
        """True when the latest report was published."""
        return self._pending is None and self._reported is not None

    async def step(self) -> SyncResult | None:
        """One poll: sync when needed, then (re)try a pending report. The sync's result, None without one."""
        data = read_config(self.options.config_dir)
        credentials = self._credentials()
        result: SyncResult | None = None
        if (
            data is not None
            and credentials is not None
            and (
                data != self._applied
                or credentials != self._applied_credentials
                or self._clock() - self._synced_at >= self.options.resync_interval
            )
        ):
            desired = layout.decode(data)
            tokens, problems = layout.decode_credentials(credentials)
            desired = dataclasses.replace(desired, tokens=tokens, errors=(*desired.errors, *problems))
            result = self.installer.sync(desired)
            for error in result.errors:
                log.warning("%s", error)
            self._applied, self._applied_credentials = data, credentials
            self._synced_at = self._clock()
            report = layout.Report(
                node=self.options.node,
                applied=layout.content_hash(data),
                hosts=result.installed,
                errors=tuple(result.errors),
                mirrors=result.mirrors,
                notes=tuple(result.notes),
            )
            if report.to_json() != self._reported:
                self._pending = report
        if self._pending is not None:
            try:
                await self.reporter.report(self._pending)
            except Exception as exc:  # the API may be briefly unreachable; the files are what matter
                log.warning("could not publish the node report (will retry): %s", exc)
            else:
                self._reported, self._pending = self._pending.to_json(), None
        return result

    def _credentials(self) -> dict[str, str] | None:
        """The node credentials as mounted ({} without the mount), None while kubelet swaps them."""
        directory = self.options.credentials_dir
        if directory is None or not directory.is_dir():
            return {}
        return read_config(directory)

    async def run(self, *, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.options.poll_interval)


# ------------------------------------------------------------------------------------------------ CLI


def _targets(text: str) -> tuple[layout.Target, ...]:
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in layout.TARGETS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"use a comma-separated subset of {','.join(layout.TARGETS)}")
    return tuple(t for t in layout.TARGETS if t in chosen)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dockyard_operator.nodetrust.agent",
        description="Install registry CAs for the node's container runtimes from a mounted ConfigMap.",
    )
    p.add_argument("--config-dir", type=Path, required=True, help="the mounted node trust ConfigMap")
    p.add_argument(
        "--credentials-dir", type=Path, default=None, help="the mounted node credentials Secret (optional)"
    )
    p.add_argument("--host-root", type=Path, default=Path("/host"), help="where the node's / is mounted")
    p.add_argument("--targets", type=_targets, default=layout.TARGETS, help="docker,containerd,crio (all)")
    p.add_argument("--poll-interval", type=_positive, default=1.0, help="seconds between ConfigMap reads")
    p.add_argument("--resync-interval", type=_positive, default=60.0, help="seconds between full resyncs")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""), help="default: $NODE_NAME")
    p.add_argument("--pod-name", default=os.environ.get("POD_NAME", ""), help="report on this Pod, $POD_NAME")
    p.add_argument(
        "--pod-namespace", default=os.environ.get("POD_NAMESPACE", ""), help="its namespace ($POD_NAMESPACE)"
    )
    p.add_argument("--once", action="store_true", help="sync once and exit (0 clean, 1 with problems)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if not args.config_dir.is_dir():
        print(f"error: --config-dir {args.config_dir} is not a directory", file=sys.stderr)
        return 2
    if bool(args.pod_name) != bool(args.pod_namespace):
        print("error: --pod-name and --pod-namespace go together", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    client = kube.Kube.connect(field_manager="dockyard-node-trust") if args.pod_name else None
    reporter: Reporter = LogReporter()
    if client is not None:
        reporter = PodAnnotationReporter(client=client, pod=args.pod_name, namespace=args.pod_namespace)
    agent = Agent(
        options=Options(
            config_dir=args.config_dir,
            credentials_dir=args.credentials_dir,
            node=args.node_name or os.uname().nodename,
            poll_interval=args.poll_interval,
            resync_interval=args.resync_interval,
        ),
        installer=Installer(host_root=args.host_root, targets=args.targets),
        reporter=reporter,
    )
    try:
        if args.once:
            result = await agent.step()
            return 0 if result is not None and not result.errors and agent.reported else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _stopper(stop, signum))
        await agent.run(stop=stop)
        return 0
    finally:
        if client is not None:
            await client.close()


def _stopper(stop: asyncio.Event, signum: int) -> Callable[[], None]:
    def handler() -> None:
        log.info("signal %d: stopping (installed files stay)", signum)
        stop.set()

    return handler


if __name__ == "__main__":
    sys.exit(main())
