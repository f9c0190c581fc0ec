"""The node trust agent against a temporary host root, with the ConfigMap published the way kubelet does.

Covers:
- every target's files (docker/containerd/CRI-O `ca.crt`, containerd `hosts.toml`) with the marker, and
  per-host target narrowing; agent-level targets leave other runtimes' directories alone;
- unchanged files are not rewritten (same inode, same mtime) and a second pass writes nothing;
- a CA change rewrites the file in place by rename; a host leaving the ConfigMap loses only its directories;
  directories without our marker (another registry's, the administrator's) are never touched, not even when
  their host is in the ConfigMap, and that is reported;
- a crashed directory creation (staging dir) is cleaned up; drift on the host is repaired by the resync;
- the loop: a ConfigMap update is applied on the next poll, a report is published only when it changes and
  retried when publishing fails; bad entries are reported and never written;
- the CLI: usage errors exit 2, `--once` installs and exits 0.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from dockyard_common import pki
from dockyard_operator.nodetrust import agent, hostfiles, layout
from tests.support import podrunner

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOST = "localhost:30500"
OTHER = "reg.example.com"


def ca_pem(name: str) -> str:
    return pki.new_ca(common_name=name, now=NOW, duration=datetime.timedelta(days=30)).cert_pem.decode()


CA_A = ca_pem("a")
CA_B = ca_pem("b")


class Recorder:
    def __init__(self) -> None:
        self.reports: list[layout.Report] = []
        self.fail = False

    async def report(self, report: layout.Report) -> None:
        if self.fail:
            raise ConnectionError("API unreachable")
        self.reports.append(report)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def publish(config: Path, hosts: dict[str, tuple[str, tuple[layout.Target, ...]]]) -> None:
    podrunner.write_projected(config, {k: v.encode() for k, v in layout.encode(hosts).items()})


def make_agent(
    tmp_path: Path, *, targets: tuple[layout.Target, ...] = layout.TARGETS
) -> tuple[agent.Agent, Recorder, Clock]:
    recorder, clock = Recorder(), Clock()
    instance = agent.Agent(
        options=agent.Options(config_dir=tmp_path / "config", node="node-1", resync_interval=60.0),
        installer=hostfiles.Installer(host_root=tmp_path / "host", targets=targets),
        reporter=recorder,
        clock=clock,
    )
    return instance, recorder, clock


async def test_every_target_gets_the_ca_and_containerd_its_hosts_toml(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, recorder, _ = make_agent(tmp_path)

    result = await instance.step()

    root = tmp_path / "host"
    for target in layout.TARGETS:
        assert (root / layout.ca_path(target, HOST)).read_text() == CA_A
        assert (root / layout.CERTS_DIRS[target] / HOST / layout.MARKER).is_file()
    toml = root / "etc/containerd/certs.d" / HOST / "hosts.toml"
    assert toml.read_text() == layout.hosts_toml(HOST)
    assert not (root / "etc/docker/certs.d" / HOST / "hosts.toml").exists()
    assert result is not None and result.errors == [] and result.written == 4
    assert recorder.reports[-1].hosts == {HOST: (layout.fingerprint(CA_A),)}
    assert recorder.reports[-1].node == "node-1"


async def test_a_host_narrowed_to_containerd_is_written_only_there(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, ("containerd",))})
    instance, _, _ = make_agent(tmp_path)

    await instance.step()

    assert (tmp_path / "host" / layout.ca_path("containerd", HOST)).is_file()
    assert not (tmp_path / "host" / "etc/docker/certs.d" / HOST).exists()
    assert not (tmp_path / "host" / "etc/containers/certs.d" / HOST).exists()


async def test_an_agent_limited_to_some_targets_never_creates_the_others(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, _, _ = make_agent(tmp_path, targets=("crio",))

    await instance.step()

    assert (tmp_path / "host" / layout.ca_path("crio", HOST)).is_file()
    assert not (tmp_path / "host" / "etc/docker").exists()
    assert not (tmp_path / "host" / "etc/containerd").exists()


async def test_unchanged_files_are_not_rewritten(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, recorder, clock = make_agent(tmp_path)
    await instance.step()
    ca = tmp_path / "host" / layout.ca_path("docker", HOST)
    before = ca.stat()

    clock.now += 3600  # a periodic resync
    result = await instance.step()

    after = ca.stat()
    assert result is not None and result.written == 0 and result.removed == 0
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(recorder.reports) == 1, "an unchanged report is not published again"


async def test_a_new_ca_replaces_the_file_by_rename_and_is_reported(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, recorder, _ = make_agent(tmp_path)
    await instance.step()
    ca = tmp_path / "host" / layout.ca_path("crio", HOST)
    inode = ca.stat().st_ino

    publish(tmp_path / "config", {HOST: (layout.bundle([CA_A, CA_B]), layout.TARGETS)})
    await instance.step()

    assert layout.fingerprints(ca.read_text()) == [layout.fingerprint(CA_A), layout.fingerprint(CA_B)]
    assert ca.stat().st_ino != inode, "written in place instead of temp file + rename"
    assert recorder.reports[-1].hosts[HOST] == (layout.fingerprint(CA_A), layout.fingerprint(CA_B))
    assert not list(ca.parent.glob("*.dockyard-tmp"))


async def test_a_host_leaving_removes_only_its_own_directories(tmp_path: Path) -> None:
    root = tmp_path / "host"
    foreign = root / "etc/docker/certs.d" / "someone-else.example"
    foreign.mkdir(parents=True)
    (foreign / "ca.crt").write_text(CA_B)
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS), OTHER: (CA_B, layout.TARGETS)})
    instance, recorder, _ = make_agent(tmp_path)
    await instance.step()

    publish(tmp_path / "config", {OTHER: (CA_B, layout.TARGETS)})
    result = await instance.step()

    for target in layout.TARGETS:
        assert not (root / layout.CERTS_DIRS[target] / HOST).exists()
        assert (root / layout.ca_path(target, OTHER)).is_file()
    assert (foreign / "ca.crt").read_text() == CA_B
    assert result is not None and result.removed == 3
    assert set(recorder.reports[-1].hosts) == {OTHER}


async def test_an_empty_configmap_removes_everything_the_agent_wrote(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, _, _ = make_agent(tmp_path)
    await instance.step()

    publish(tmp_path / "config", {})
    await instance.step()

    for target in layout.TARGETS:
        assert list((tmp_path / "host" / layout.CERTS_DIRS[target]).iterdir()) == []


async def test_a_directory_we_did_not_create_is_left_alone_and_reported(tmp_path: Path) -> None:
    mine = tmp_path / "host" / "etc/containerd/certs.d" / HOST
    mine.mkdir(parents=True)
    (mine / "hosts.toml").write_text("# the administrator's\n")
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, recorder, _ = make_agent(tmp_path)

    result = await instance.step()

    assert (mine / "hosts.toml").read_text() == "# the administrator's\n"
    assert not (mine / "ca.crt").exists()
    assert result is not None and any("not created by us" in e for e in result.errors)
    assert HOST not in recorder.reports[-1].hosts, "a host not installed everywhere is not reported"
    assert (tmp_path / "host" / layout.ca_path("docker", HOST)).is_file()


async def test_files_someone_added_to_our_directory_keep_it_alive(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, _, _ = make_agent(tmp_path)
    await instance.step()
    extra = tmp_path / "host" / "etc/docker/certs.d" / HOST / "client.cert"
    extra.write_text("theirs")

    publish(tmp_path / "config", {})
    await instance.step()

    assert extra.read_text() == "theirs"
    assert not (extra.parent / "ca.crt").exists()


async def test_a_crashed_creation_is_cleaned_up(tmp_path: Path) -> None:
    staging = tmp_path / "host" / "etc/docker/certs.d" / f".dockyard-new-{HOST}"
    staging.mkdir(parents=True)
    (staging / "junk").write_text("half")
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, _, _ = make_agent(tmp_path)

    await instance.step()

    assert not staging.exists()
    assert (tmp_path / "host" / layout.ca_path("docker", HOST)).read_text() == CA_A


async def test_the_resync_repairs_files_deleted_or_edited_on_the_host(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, _, clock = make_agent(tmp_path)
    await instance.step()
    root = tmp_path / "host"
    (root / layout.ca_path("docker", HOST)).unlink()
    (root / "etc/containerd/certs.d" / HOST / "hosts.toml").write_text('server = "http://evil"\n')

    assert (await instance.step()) is None, "nothing changed in the ConfigMap and no resync is due yet"
    clock.now += 61
    result = await instance.step()

    assert result is not None and result.written == 2
    assert (root / layout.ca_path("docker", HOST)).read_text() == CA_A
    assert (root / "etc/containerd/certs.d" / HOST / "hosts.toml").read_text() == layout.hosts_toml(HOST)


async def test_a_failed_report_is_retried_on_the_next_poll(tmp_path: Path) -> None:
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})
    instance, recorder, _ = make_agent(tmp_path)
    recorder.fail = True
    await instance.step()
    assert not instance.reported

    recorder.fail = False
    await instance.step()

    assert instance.reported
    assert recorder.reports[-1].hosts == {HOST: (layout.fingerprint(CA_A),)}


async def test_bad_entries_are_reported_and_never_written(tmp_path: Path) -> None:
    podrunner.write_projected(
        tmp_path / "config", {"bad..5000": b"not a pem", layout.host_key(HOST): CA_A.encode()}
    )
    instance, recorder, _ = make_agent(tmp_path)

    await instance.step()

    assert not (tmp_path / "host" / "etc/docker/certs.d" / "bad:5000").exists()
    assert (tmp_path / "host" / layout.ca_path("docker", HOST)).is_file()
    assert any("bad..5000" in e for e in recorder.reports[-1].errors)


async def test_a_plain_directory_works_as_the_config_too(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / layout.host_key(HOST)).write_text(CA_A)
    instance, _, _ = make_agent(tmp_path)

    await instance.step()

    assert (tmp_path / "host" / layout.ca_path("crio", HOST)).read_text() == CA_A


def test_write_atomically_reports_whether_it_wrote(tmp_path: Path) -> None:
    target = tmp_path / "f"

    assert hostfiles.write_atomically(target, b"one") is True
    assert hostfiles.write_atomically(target, b"one") is False
    assert hostfiles.write_atomically(target, b"two") is True
    assert target.read_bytes() == b"two" and oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config-dir", "/nonexistent-dir"], "not a directory"),
        (["--config-dir", ".", "--targets", "floppy"], "subset"),
        (["--config-dir", ".", "--poll-interval", "0"], "> 0"),
        (["--config-dir", ".", "--pod-name", "p"], "go together"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        code = agent.main(argv)
        raise SystemExit(code)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_once_installs_and_exits_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("POD_NAME", "POD_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    publish(tmp_path / "config", {HOST: (CA_A, layout.TARGETS)})

    code = agent.main(
        ["--config-dir", str(tmp_path / "config"), "--host-root", str(tmp_path / "h"), "--once"]
    )

    assert code == 0
    assert (tmp_path / "h" / layout.ca_path("docker", HOST)).read_text() == CA_A
    assert os.listdir(tmp_path / "h" / "etc/docker/certs.d") == [HOST]
