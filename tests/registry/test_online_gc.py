"""The online gc of `serve --gc-schedule`: schedules, the runner's status, and a bounded stress.

Covers schedules (5-field cron in UTC, macros, @every, refusals); the runner (a run writes
DATA/status/gc.json with counts, bytes, errors and the schedule, keeps totals, a retention file broken
after start keeps the last good rules and says so, a failing run is recorded and the next one runs);
`serve` usage errors for the gc options (exit 2). And a bounded stress against the real registry over
HTTP: a `dockyard-registry serve` subprocess with gc every second (untagged deletion, retention, a short
grace period) while four pushers push images (shared and unique layers, cross-repository mounts, moving
`latest`, indexes, referrers) and check each push pulls back byte-identical; afterwards every tag pulls
byte-identical, what the policy keeps is exactly what is stored (tags, manifests through indexes and
referrers, blobs), fsck --strict is clean, gc ran many times without errors, and a dry run with a
stricter policy reports deletions but changes no file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dockyard_registry import cli, digest, gc, maintenance, manifests, paths, retention, schedule, store
from dockyard_registry.storage import filesystem
from tests.registry.conftest import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, make_image, sha256
from tests.registry.test_gc_fsck import age
from tests.registry.test_gc_retention import age_everything, push_image
from tests.support import procs

HOUR = 3600.0


# ---------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        ("17 3 * * *", "2027-01-15T03:16:59", "2027-01-15T03:17:00"),
        ("17 3 * * *", "2027-01-15T03:17:00", "2027-01-16T03:17:00"),
        ("*/15 * * * *", "2027-01-15T10:01:00", "2027-01-15T10:15:00"),
        ("0 4 * * SUN", "2027-01-15T00:00:00", "2027-01-17T04:00:00"),
        ("@daily", "2027-01-15T10:00:00", "2027-01-16T00:00:00"),
        ("@hourly", "2027-01-15T10:00:00", "2027-01-15T11:00:00"),
        ("@every 6h", "2027-01-15T10:00:00", "2027-01-15T16:00:00"),
    ],
)
def test_a_schedule_names_the_next_run_in_utc(text: str, after: str, expected: str) -> None:
    def at(iso: str) -> float:
        return time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%S")) - time.timezone

    assert schedule.parse(text).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nightly", "not a 5-field cron"),
        ("61 * * * *", "Bad minute"),
        ("0 0 1 1 * 2027", "6 fields"),
        ("@sometimes", "unknown macro"),
        ("@every 0s", "at least 1s"),
        ("@every soon", "invalid duration"),
    ],
)
def test_a_bad_schedule_is_refused(text: str, message: str) -> None:
    with pytest.raises(schedule.ScheduleError, match=message):
        schedule.parse(text)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gc-schedule", "whenever"], "--gc-schedule"),
        (["--gc-retention", "r.yaml"], "need --gc-schedule"),
        (["--gc-schedule", "@daily", "--gc-retention", "/nonexistent/r.yaml"], "--gc-retention"),
        (["--gc-schedule", "@daily", "--gc-grace", "-5"], "invalid duration"),
    ],
)
def test_serve_refuses_bad_gc_options_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = cli.main(["serve", "--data-dir", str(tmp_path / "d"), "--no-tls", "--no-auth", *extra])
        raise SystemExit(code)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- runner
async def test_a_run_writes_its_status_file_and_keeps_totals(tmp_path: Path) -> None:
    driver = filesystem.FilesystemDriver(tmp_path / "data")
    st = store.Store(driver)
    old = make_image("old")
    await push_image(st, "r", old, tag="latest")
    await push_image(st, "r", make_image("new"), tag="latest")
    age_everything(driver, st, 2 * HOUR)
    status_file = tmp_path / "data" / maintenance.STATUS_FILE
    runner = maintenance.GcRunner(
        st,
        maintenance.GcSettings(schedule=schedule.parse("@daily"), grace=HOUR, delete_untagged=True),
        status_file=status_file,
    )
    status = runner.run_once()
    assert json.loads(status_file.read_text()) == status == runner.last
    assert status["manifestsDeleted"] == 1 and status["blobsDeleted"] == 3
    assert status["bytesFreed"] == len(old.manifest) + len(old.config) + len(old.layer)
    assert (
        status["errors"] == 0 and status["schedule"] == "@daily" and status["finished"] >= status["started"]
    )
    assert runner.totals["runs"] == 1 and runner.totals["bytesFreed"] == status["bytesFreed"]
    # A restarted registry still knows the last run.
    again = maintenance.GcRunner(st, runner.settings, status_file=status_file)
    assert again.last == status


async def test_a_replica_whose_peer_is_collecting_skips_its_run_and_keeps_its_last_status(
    tmp_path: Path,
) -> None:
    """Replicas on one bucket share a schedule: the one whose run started later leaves the work (and the
    report the operator shows) to the other (gc fence, fence.py)."""
    driver = filesystem.FilesystemDriver(tmp_path / "data")
    st, peer = store.Store(driver), store.Store(driver)  # two replicas on the same storage
    await push_image(st, "r", make_image("old"), tag=None)
    age_everything(driver, st, 2 * HOUR)
    status_file = tmp_path / "status" / "gc.json"
    settings = maintenance.GcSettings(schedule=schedule.parse("@daily"), grace=HOUR, delete_untagged=True)
    runner = maintenance.GcRunner(st, settings, status_file=status_file)
    collecting = peer.fence.begin()

    assert runner.run_once() == {}  # nothing to report: the peer's status has the run
    assert runner.last is None and not status_file.exists()
    assert runner.totals["deferred"] == 1 and runner.totals["runs"] == 0
    assert runner.last_deferred_to is not None and runner.last_deferred_to.startswith(collecting.id)
    assert st.get_manifest("r", digest.parse(make_image("old").digest)).data == make_image("old").manifest
    collecting.end()
    status = runner.run_once()
    assert status["manifestsDeleted"] == 1 and status["deferredTo"] is None


async def test_a_retention_file_broken_after_start_keeps_the_last_good_rules(tmp_path: Path) -> None:
    driver = filesystem.FilesystemDriver(tmp_path / "data")
    st = store.Store(driver)
    for i in range(3):
        await push_image(st, "r", make_image(f"i{i}"), tag=f"t{i}")
    age_everything(driver, st, 10 * HOUR)
    for i in range(3):
        age(driver, paths.tag_link("r", f"t{i}"), (10 - i) * HOUR)
    rules = tmp_path / "retention.yaml"
    rules.write_text("rules: [{repositories: ['**'], keepLast: 1}]")
    settings = maintenance.GcSettings(
        schedule=schedule.parse("@daily"), grace=HOUR, delete_untagged=True, retention_file=rules
    )
    runner = maintenance.GcRunner(st, settings, status_file=None, policy=retention.parse(rules.read_text()))
    rules.write_text("rules: [{repositories: ['**']}]")  # an edit that lost its keepLast
    status = runner.run_once()
    assert "give keepLast" in status["retentionError"]
    assert status["tagsDeleted"] == 2 and st.tags("r") == ["t2"]


async def test_a_failing_run_is_recorded_and_the_schedule_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = store.Store(filesystem.FilesystemDriver(tmp_path / "data"))
    runner = maintenance.GcRunner(
        st, maintenance.GcSettings(schedule=schedule.parse("@every 1s"), grace=0), status_file=None
    )
    calls: list[int] = []
    collect: Callable[..., gc.Report] = gc.collect

    def flaky(*args: Any, **kwargs: Any) -> gc.Report:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk went away")
        return collect(*args, **kwargs)

    monkeypatch.setattr(gc, "collect", flaky)
    monkeypatch.setattr(schedule.Schedule, "next_after", lambda self, now: now + 0.01)
    task = asyncio.create_task(runner.run_forever())
    for _ in range(500):
        await asyncio.sleep(0.01)
        if len(calls) >= 2 and runner.totals["runs"] >= 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.totals["failures"] == 1 and runner.totals["runs"] >= 2
    assert runner.last is not None and "failure" not in runner.last


# ------------------------------------------------------------------------------------------- stress
STRESS_SECONDS = 20.0
GRACE = 5.0
RETENTION = {
    "rules": [
        {"repositories": ["stress/**"], "tags": ["t-*"], "keepLast": 3},
        {"repositories": ["stress/**"], "tags": ["latest"], "keepLast": 1},
        {"repositories": ["stress/**"], "tags": ["idx-*"], "keepLast": 1},
    ]
}
REPOS = ("stress/a", "stress/b")
BASE_LAYER = b"shared base layer " * 512


class Pushers:
    """What the pushers pushed (every blob and manifest by digest) and every failure they saw."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.content: dict[str, bytes] = {sha256(BASE_LAYER): BASE_LAYER}
        self.failures: list[str] = []
        self.pushes = 0

    async def check(self, resp: aiohttp.ClientResponse, what: str, *ok: int) -> bytes:
        body = await resp.read()
        if resp.status not in ok:
            self.failures.append(f"{what}: {resp.status} {body[:300]!r}")
        return body

    async def blob(self, http: aiohttp.ClientSession, repo: str, data: bytes, *, other: str) -> None:
        dgst = sha256(data)
        self.content[dgst] = data
        if data is BASE_LAYER:
            # Shared content: what a client does (HEAD, then a mount from another repository, else upload).
            head = await http.head(f"{self.base}/v2/{repo}/blobs/{dgst}")
            if head.status == 200:
                return
            mount = await http.post(f"{self.base}/v2/{repo}/blobs/uploads/?mount={dgst}&from={other}")
            await mount.read()
            if mount.status == 201:
                return
            if mount.status == 202:  # not mountable: finish the session it opened
                put = await http.put(f"{self.base}{mount.headers['Location']}&digest={dgst}", data=data)
                await self.check(put, f"upload {dgst} to {repo}", 201)
                return
        resp = await http.post(f"{self.base}/v2/{repo}/blobs/uploads/?digest={dgst}", data=data)
        await self.check(resp, f"blob {dgst} to {repo}", 201)

    async def manifest(
        self, http: aiohttp.ClientSession, repo: str, ref: str, data: bytes, media: str
    ) -> None:
        self.content[sha256(data)] = data
        resp = await http.put(
            f"{self.base}/v2/{repo}/manifests/{ref}", data=data, headers={"Content-Type": media}
        )
        await self.check(resp, f"manifest {repo}:{ref}", 201)

    async def pull_back(self, http: aiohttp.ClientSession, repo: str, dgst: str) -> None:
        """GET a manifest and what it references; everything must be byte-identical to what was pushed."""
        resp = await http.get(
            f"{self.base}/v2/{repo}/manifests/{dgst}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
        )
        body = await self.check(resp, f"pull {repo}@{dgst}", 200)
        if resp.status != 200:
            return
        if body != self.content.get(dgst):
            self.failures.append(f"pull {repo}@{dgst}: bytes differ")
            return
        parsed = manifests.parse(body, content_type=resp.headers.get("Content-Type"), strict=False)
        for child in parsed.manifests:
            await self.pull_back(http, repo, str(child.digest))
        for blob in parsed.blobs:
            got = await http.get(f"{self.base}/v2/{repo}/blobs/{blob.digest}")
            data = await self.check(got, f"pull blob {blob.digest} of {repo}@{dgst}", 200)
            if got.status == 200 and data != self.content.get(str(blob.digest)):
                self.failures.append(f"pull blob {blob.digest} of {repo}@{dgst}: bytes differ")

    async def run(self, http: aiohttp.ClientSession, repo: str, pusher: int, *, until: float) -> None:
        other = REPOS[1 - REPOS.index(repo)]
        previous: tuple[str, int] | None = None
        i = 0
        while time.monotonic() < until:
            i += 1
            seed = f"{repo}-{pusher}-{i}"
            config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
            layer = f"unique layer {seed} ".encode() * 64
            await self.blob(http, repo, BASE_LAYER, other=other)
            await self.blob(http, repo, config, other=other)
            await self.blob(http, repo, layer, other=other)
            image = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                    "layers": [
                        {"mediaType": OCI_LAYER, "digest": sha256(x), "size": len(x)}
                        for x in (BASE_LAYER, layer)
                    ],
                }
            ).encode()
            dgst = sha256(image)
            await self.manifest(http, repo, f"t-{pusher}-{i:04d}", image, OCI_MANIFEST)
            await self.manifest(http, repo, "latest", image, OCI_MANIFEST)
            if i % 3 == 0:  # a signature: an untagged referrer, kept as long as its subject is
                sig_config = json.dumps({"signed": dgst}).encode()
                await self.blob(http, repo, sig_config, other=other)
                signature = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "artifactType": "application/vnd.example.sig",
                        "config": {
                            "mediaType": OCI_CONFIG,
                            "digest": sha256(sig_config),
                            "size": len(sig_config),
                        },
                        "layers": [],
                        "subject": {"mediaType": OCI_MANIFEST, "digest": dgst, "size": len(image)},
                    }
                ).encode()
                await self.manifest(http, repo, sha256(signature), signature, OCI_MANIFEST)
                await self.pull_back(http, repo, sha256(signature))
            if i % 4 == 0 and previous is not None:
                index = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_INDEX,
                        "manifests": [
                            {"mediaType": OCI_MANIFEST, "digest": d, "size": n}
                            for d, n in (previous, (dgst, len(image)))
                        ],
                    }
                ).encode()
                await self.manifest(http, repo, f"idx-{pusher}-{i:04d}", index, OCI_INDEX)
                await self.pull_back(http, repo, sha256(index))
            await self.pull_back(http, repo, dgst)
            previous = (dgst, len(image))
            self.pushes += 1
            await asyncio.sleep(0.05)  # a bounded stress: a few hundred images, not thousands


def files_of(data: Path) -> dict[str, tuple[int, int]]:
    """Every file under the data directory (but gc's own status) with size and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for root, _, names in os.walk(data):
        for name in names:
            path = Path(root) / name
            if path.is_relative_to(data / "status"):
                continue
            st = path.stat()
            out[str(path.relative_to(data))] = (st.st_size, st.st_mtime_ns)
    return out


def expected_revisions(st: store.Store, repo: str) -> set[str]:
    """What the policy keeps: tagged manifests, their index children, referrers of kept ones."""
    kept: set[str] = set()
    todo = [st.get_manifest(repo, tag).digest for tag in st.tags(repo)]
    while todo:
        d = todo.pop()
        if str(d) in kept:
            continue
        kept.add(str(d))
        found = st.get_manifest(repo, d)
        parsed = manifests.parse(found.data, content_type=found.media_type, strict=False)
        todo.extend(c.digest for c in parsed.manifests)
        todo.extend(digest.parse(r["digest"]) for r in st.referrers(repo, d))
    return kept


def start_registry(data: Path, *, port: int, log: Path, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """`dockyard-registry serve` without TLS or auth, as a real process."""
    exe = Path(sys.executable).parent / "dockyard-registry"
    argv = [
        str(exe),
        "serve",
        "--data-dir",
        str(data),
        "--listen",
        f"127.0.0.1:{port}",
        "--no-tls",
        "--no-auth",
    ]
    return subprocess.Popen([*argv, *extra], stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.mark.timeout(240)
async def test_online_gc_under_concurrent_pushes_keeps_every_tagged_image_and_removes_the_rest(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    rules = tmp_path / "retention.json"
    rules.write_text(json.dumps(RETENTION))
    reserved = procs.reserve_port()  # held for the test's lifetime: no other process gets it
    port = reserved.number
    log_path = tmp_path / "serve.log"
    exe = Path(sys.executable).parent / "dockyard-registry"
    proc = start_registry(
        data,
        port=port,
        log=log_path,
        extra=(
            *("--gc-schedule", "@every 1s", "--gc-grace", f"{GRACE:g}s"),
            *("--gc-delete-untagged", "--gc-retention", str(rules)),
        ),
    )
    base = f"http://127.0.0.1:{port}"
    pushers = Pushers(base)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"{base}/v2/") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            # The base layer exists in both repositories before anyone mounts it.
            for repo in REPOS:
                resp = await http.post(
                    f"{base}/v2/{repo}/blobs/uploads/?digest={sha256(BASE_LAYER)}", data=BASE_LAYER
                )
                assert resp.status == 201
            until = time.monotonic() + STRESS_SECONDS
            await asyncio.gather(*(pushers.run(http, repo, p, until=until) for repo in REPOS for p in (1, 2)))
            assert pushers.failures == [], pushers.failures[:10]
            assert pushers.pushes >= 8, pushers.pushes

            # Wait for a whole run that started once everything was past the grace period, plus the one
            # second gc adds to it (object stores keep times to the second; gc.py): a run starting within
            # that second keeps the last pushes' tags, and the policy's counts below would not hold.
            settled = time.time() + GRACE + 1.5
            deadline = time.monotonic() + 120
            while True:
                await asyncio.sleep(0.5)
                last = json.loads((data / maintenance.STATUS_FILE).read_text())
                if last["started"] >= settled and not last["stopped"]:
                    break
                assert time.monotonic() < deadline, last
            st = store.Store(filesystem.FilesystemDriver(data))
            for repo in REPOS:
                async with http.get(f"{base}/v2/{repo}/tags/list") as resp:
                    tags = (await resp.json())["tags"]
                for tag in tags:
                    await pushers.pull_back(http, repo, str(st.get_manifest(repo, tag).digest))
            assert pushers.failures == [], pushers.failures[:10]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = log_path.read_text()

    # What the policy says goes is gone: per repository 3 t-* tags, latest and the newest index ...
    for repo in REPOS:
        tags = st.tags(repo)
        assert len([t for t in tags if t.startswith("t-")]) == 3, tags
        assert "latest" in tags and len([t for t in tags if t.startswith("idx-")]) == 1, tags
        # ... exactly the manifests those tags reach (index children, referrers of kept ones) ...
        stored = {str(d) for d in st.maintenance.revisions(repo)}
        assert stored == expected_revisions(st, repo)
    # ... and exactly the blobs those manifests reference.
    referenced = gc.mark(st)
    assert set(gc.stored_blobs(st)) == referenced
    runs = log.count("gc: deleted")
    assert runs >= 5, log[-3000:]
    status = json.loads((data / maintenance.STATUS_FILE).read_text())
    assert status["errors"] == 0 and status["schedule"] == "@every 1s", status
    assert "Traceback" not in log, log[-3000:]

    fsck = subprocess.run(  # noqa: ASYNC221 - the registry is stopped; nothing else runs
        [str(exe), "fsck", "--data-dir", str(data), "--strict"], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    # A dry run with a stricter policy would delete more, and changes nothing.
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules: [{repositories: ['**'], keepLast: 1}]")
    before = files_of(data)
    dry = subprocess.run(  # noqa: ASYNC221
        [
            str(exe),
            "gc",
            "--data-dir",
            str(data),
            "--dry-run",
            "--grace",
            "0",
            "--delete-untagged",
            "--retention",
            str(strict),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(dry.stdout)
    assert report["dryRun"] and report["tagsDeleted"] > 0 and report["blobsDeleted"] > 0
    assert files_of(data) == before
