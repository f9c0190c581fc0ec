"""The `dockyard-registry` command line, in-process through `cli.main(argv)` and once as a real process.

Covers: usage errors exit 2 with a message on stderr (no command, bad --listen, --tls-key without
--tls-cert, bad user names, empty stdin password, over-long password, removing an unknown user, bad --grace,
bad durations and upload limits, missing data dir); durations in seconds or with a unit; `user add` with
--password-stdin and with a generated password printed once, access rules written to access.yaml, files mode
0600, a data dir it creates 0700 (also under umask 022, before any `serve`) while an existing one keeps its
mode, `user list`, `user remove`; `gc --dry-run` and gc, gc removing interrupted writes and sessions by
--upload-expiry; serve parsing the upload limits and the trusted proxies (loopback by default, `none`);
`fsck` exit 0 on a clean store and 1 on a corrupted blob;
`serve --no-tls` and `serve --tls auto` as subprocesses answering /healthz and /v2/ (stopped by PID);
hack/run.sh creating the first user once (password printed once, saved 0600), printing client instructions,
pointing at the saved password on a second start, and refusing a bad LISTEN with exit code 2; a taken port
exits 1 with a message, no traceback; the storage flags shared by serve, gc and fsck (filesystem needs
--data-dir, S3 flags without --storage-driver s3, a missing bucket or credentials, a bad endpoint, prefix or
CA are usage errors; valid S3 flags give the S3 settings with the documented defaults, credentials from
AWS_* variables); `serve` on S3 without a local directory names what it needs instead (--state-dir or
--data-dir for --tls auto, --htpasswd and --access) and refuses --accel-redirect.
"""

from __future__ import annotations

import io
import os
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dockyard_common import htpasswd as htpasswd_file
from dockyard_registry import auth, cli, paths
from dockyard_registry.storage import s3
from tests.support import procs


def run(argv: list[str], capsys: pytest.CaptureFixture[str], *, stdin: str = "") -> tuple[int, str, str]:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse exits on its own usage errors
            code = int(exc.code or 0)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["serve"], "--data-dir"),
        (["serve", "--data-dir", "D", "--listen", "nope"], "HOST:PORT"),
        (["serve", "--data-dir", "D", "--listen", "h:99999"], "HOST:PORT"),
        (["serve", "--data-dir", "D", "--tls-key", "k"], "--tls-cert and --tls-key"),
        (["serve", "--data-dir", "D", "--tls", "manual"], "invalid choice"),
        (["serve", "--data-dir", "D", "--tls", "auto", "--no-tls"], "not allowed with"),
        (["user", "add", "bad:name", "--data-dir", "D"], "invalid user name"),
        (["user", "add", "x", "--data-dir", "D", "--access", "root"], "invalid choice"),
        (["user", "remove", "ghost", "--data-dir", "D"], "no user"),
        (["gc", "--data-dir", "D", "--grace", "-1"], "--grace"),
        (["fsck", "--data-dir", "missing"], "does not exist"),
        (["gc", "--data-dir", "D", "--grace", "soon"], "invalid duration"),
        (["gc", "--data-dir", "D", "--upload-expiry", "1w"], "invalid duration"),
        (["serve", "--data-dir", "D", "--upload-expiry", "soon"], "invalid duration"),
        (["serve", "--data-dir", "D", "--upload-expiry", "0"], "--upload-expiry must be > 0"),
        (["serve", "--data-dir", "D", "--max-uploads-per-user", "-1"], "--max-uploads-per-user"),
        (["serve", "--data-dir", "D", "--accel-redirect", "relative/"], "--accel-redirect"),
        (["serve", "--data-dir", "D", "--realm", 'say "hi"'], "--realm"),
        (["serve", "--data-dir", "D", "--tls-cert", "none.crt", "--tls-key", "none.key"], "cannot load TLS"),
        (["serve", "--data-dir", "D/file"], "not a directory"),
        (["serve", "--data-dir", "D", "--trusted-proxy", "nginx"], "invalid address or CIDR block"),
        (["serve", "--data-dir", "D", "--token-realm", "token"], "an http(s) URL or a path"),
        (["serve", "--data-dir", "D", "--token-realm", '/t"oken'], "an http(s) URL or a path"),
        (
            ["serve", "--data-dir", "D", "--trusted-proxy", "none", "--trusted-proxy", "::1"],
            "cannot be combined",
        ),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "D").mkdir()
    (tmp_path / "D" / "file").write_text("not a directory")
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err


def test_user_add_reads_the_password_from_stdin_and_never_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["user", "add", "alice", "--data-dir", str(tmp_path), "--password-stdin"],
        capsys,
        stdin="s3cret-pass\n",
    )
    assert code == 0
    assert "s3cret-pass" not in out + err
    htpasswd = tmp_path / "auth" / "htpasswd"
    entry = htpasswd_file.parse(htpasswd.read_text())["alice"]
    assert entry.startswith("$2y$")
    assert htpasswd.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "auth" / "access.yaml").exists(), "no rules given: plain htpasswd behaviour"


def test_user_add_before_the_first_serve_creates_the_data_dir_for_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "new" / "registry"
    umask = os.umask(0o022)  # the usual umask, which left the data dir 0755 (blobs world-readable)
    try:
        code, _, err = run(
            ["user", "add", "alice", "--data-dir", str(data), "--password-stdin"], capsys, stdin="pw-123456\n"
        )
    finally:
        os.umask(umask)
    assert code == 0, err
    for directory in (tmp_path / "new", data, data / "auth"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


@pytest.mark.parametrize("mode", [0o750, 0o755, 0o700])
def test_an_existing_data_dir_keeps_the_mode_its_owner_chose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    data = tmp_path / "registry"
    data.mkdir()
    data.chmod(mode)
    code, _, err = run(
        ["user", "add", "alice", "--data-dir", str(data), "--password-stdin"], capsys, stdin="pw-123456\n"
    )
    assert code == 0, err
    assert stat.S_IMODE(data.stat().st_mode) == mode
    assert stat.S_IMODE((data / "auth").stat().st_mode) == 0o700


def test_a_data_dir_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    code, _, err = run(
        ["user", "add", "alice", "--data-dir", str(tmp_path / "file"), "--password-stdin"],
        capsys,
        stdin="pw\n",
    )
    assert (code, "is not a directory" in err) == (2, True)


async def test_generated_password_is_printed_once_and_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["user", "add", "bob", "--data-dir", str(tmp_path)], capsys)
    assert code == 0
    password = out.split("password: ", 1)[1].strip()
    assert len(password) >= 20
    authn = auth.Authenticator(htpasswd=tmp_path / "auth" / "htpasswd", access=None)
    assert await authn.verify("bob", password)


def test_user_add_with_access_rules_then_list_and_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    run(
        [
            "user",
            "add",
            "alice",
            "--data-dir",
            data,
            "--password-stdin",
            "--access",
            "pull",
            "--repository",
            "team/*",
            "--repository",
            "tools/**",
        ],
        capsys,
        stdin="pw1\n",
    )
    run(["user", "add", "carol", "--data-dir", data, "--password-stdin"], capsys, stdin="pw2\n")
    rules = auth.parse_access((tmp_path / "auth" / "access.yaml").read_text())
    assert rules.users["alice"] == auth.UserRule(auth.Level.PULL, ("team/*", "tools/**"))
    code, out, _ = run(["user", "list", "--data-dir", data], capsys)
    assert (code, out) == (0, "alice\tpull\tteam/*,tools/**\ncarol\tpush\t**\n")
    assert run(["user", "remove", "alice", "--data-dir", data], capsys)[0] == 0
    assert "alice" not in (tmp_path / "auth" / "htpasswd").read_text()
    assert "alice" not in auth.parse_access((tmp_path / "auth" / "access.yaml").read_text()).users
    assert run(["user", "list", "--data-dir", data], capsys)[1] == "carol\tpush\t**\n"


@pytest.mark.parametrize(
    ("stdin", "message"), [("\n", "empty password"), ("x" * 80 + "\n", "longer than 72")]
)
def test_unusable_passwords_are_usage_errors(
    stdin: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["user", "add", "u", "--data-dir", str(tmp_path), "--password-stdin"], capsys, stdin=stdin
    )
    assert (code, message in err) == (2, True)
    assert not (tmp_path / "auth" / "htpasswd").exists()


def write_blob(data_dir: Path, repo: str, content: bytes, *, age: float = 0) -> str:
    from dockyard_registry import digest

    dgst = digest.of_bytes(content)
    blob = data_dir / paths.blob_data(dgst)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    link = data_dir / paths.layer_link(repo, dgst)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(str(dgst))
    if age:
        stamp = time.time() - age
        os.utime(blob, (stamp, stamp))
    return str(dgst)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("168h", 604800), ("7d", 604800), ("1.5h", 5400)],
)
def test_durations_take_seconds_or_a_unit(text: str, seconds: float) -> None:
    assert cli.duration(text) == seconds


def test_gc_dry_run_lists_and_gc_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dgst = write_blob(tmp_path, "r", b"unreferenced", age=7200)
    code, out, _ = run(["gc", "--data-dir", str(tmp_path), "--dry-run"], capsys)
    assert code == 0
    assert f"would delete blob {dgst}" in out
    assert (tmp_path / "blobs").rglob("data").__next__().exists()
    code, out, _ = run(["gc", "--data-dir", str(tmp_path)], capsys)
    assert (code, f"deleted blob {dgst}" in out) == (0, True)
    assert list((tmp_path / "blobs").rglob("data")) == []


def test_gc_deletes_interrupted_writes_and_upload_sessions_by_their_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / paths.tags("r") / ".tmp-killed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a tag")
    stamp = time.time() - 7200
    os.utime(stale, (stamp, stamp))
    session = tmp_path / paths.upload_dir("a" * 32)
    session.mkdir(parents=True)
    (session / "info").write_text(f'{{"repository": "r", "started": {stamp}, "owner": "alice"}}')
    (session / "data").write_bytes(b"abandoned")
    os.utime(session / "data", (stamp, stamp))
    code, out, _ = run(["gc", "--data-dir", str(tmp_path), "--upload-expiry", "3h"], capsys)
    assert code == 0
    assert f"deleted interrupted write {paths.tags('r')}/.tmp-killed" in out
    assert "0 uploads" in out and session.exists(), "younger than --upload-expiry"
    code, out, _ = run(["gc", "--data-dir", str(tmp_path), "--upload-expiry", "1h"], capsys)
    assert (code, f"deleted stale upload {'a' * 32}" in out, session.exists()) == (0, True, False)
    assert not stale.exists()


def test_serve_parses_upload_limits() -> None:
    args = cli.build_parser().parse_args(
        ["serve", "--data-dir", "D", "--upload-expiry", "2h", "--upload-sweep-interval", "5m"]
    )
    assert (args.upload_expiry, args.upload_sweep_interval, args.max_uploads_per_user) == (7200, 300, 100)
    assert cli.build_parser().parse_args(["serve", "--data-dir", "D"]).upload_expiry == 168 * 3600


def test_serve_trusts_x_real_ip_from_loopback_by_default_from_named_proxies_or_from_no_one() -> None:
    def trusted(*flags: str) -> list[str]:
        args = cli.build_parser().parse_args(["serve", "--data-dir", "D", *flags])
        return [str(net) for net in cli._trusted_proxies(args.trusted_proxy)]

    assert trusted() == ["127.0.0.0/8", "::1/128"]
    assert trusted("--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "fd00::1") == [
        "10.0.0.0/8",
        "fd00::1/128",
    ]
    assert trusted("--trusted-proxy", "none") == []


def test_fsck_exits_0_when_clean_and_1_on_a_corrupted_blob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dgst = write_blob(tmp_path, "r", b"precious")
    assert run(["fsck", "--data-dir", str(tmp_path)], capsys)[0] == 0
    next((tmp_path / "blobs").rglob("data")).write_bytes(b"tampered")
    code, out, _ = run(["fsck", "--data-dir", str(tmp_path)], capsys)
    assert code == 1
    assert f"blob {dgst}: content does not match its digest" in out


def _serve(tmp_path: Path, *extra: str) -> tuple[procs.Process, int]:
    port = procs.reserve_port()
    exe = Path(sys.executable).parent / "dockyard-registry"
    proc = procs.Process(
        name="dockyard-registry serve",
        argv=[str(exe), "serve", "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port.number}",
              *extra],
        log=tmp_path / "serve.log",
        ports=[port],
    )  # fmt: skip
    return proc, port.number


def _get(url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=10) as resp:  # noqa: S310 - test URL
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_without_tls_answers_healthz_and_v2(tmp_path: Path) -> None:
    proc, port = _serve(tmp_path, "--no-tls", "--no-auth")
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok")
        assert _get(f"http://127.0.0.1:{port}/v2/") == (200, b"{}")
    finally:
        proc.stop()


def test_serve_with_tls_auto_is_verifiable_with_the_printed_ca(tmp_path: Path) -> None:
    proc, port = _serve(tmp_path, "--tls", "auto")
    try:
        ca = tmp_path / "data" / "tls" / "ca.crt"
        deadline = time.monotonic() + 60
        while not ca.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        context = ssl.create_default_context(cafile=str(ca))
        assert _get(f"https://localhost:{port}/healthz", context=context) == (200, b"ok")
        status, _ = _get(f"https://127.0.0.1:{port}/v2/", context=context)
        assert status == 401
    finally:
        proc.stop()
    log = (tmp_path / "serve.log").read_text()
    assert str(ca) in log and "SHA-256 fingerprint" in log


def test_run_script_creates_the_first_user_once_and_serves_tls(tmp_path: Path) -> None:
    port = procs.reserve_port()
    data = tmp_path / "data"
    script = Path(__file__).resolve().parents[2] / "hack" / "run.sh"
    log = tmp_path / "run.log"
    # run.sh execs the server, so the PID we hold is the registry's own.
    proc = procs.Process(
        name="run.sh",
        argv=["bash", str(script), str(data), f"127.0.0.1:{port.number}", "admin"],
        log=log,
        ports=[port],
    )
    try:
        ca = data / "tls" / "ca.crt"
        deadline = time.monotonic() + 60
        while not ca.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        context = ssl.create_default_context(cafile=str(ca))
        assert _get(f"https://localhost:{port.number}/healthz", context=context) == (200, b"ok")
    finally:
        proc.stop()
    initial = data / "auth" / "initial-password"
    password = initial.read_text().strip()
    assert initial.stat().st_mode & 0o777 == 0o600
    first = log.read_text()
    assert first.count(password) == 1, "printed exactly once"
    for hint in (
        "skopeo login --cert-dir",
        "podman login --cert-dir",
        "docker login",
        "/etc/docker/certs.d/",
    ):
        assert hint in first
    rerun = subprocess.run(
        ["bash", str(script), str(data), "nonsense-listen", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rerun.returncode == 2 and "HOST:PORT" in rerun.stderr
    assert (data / "auth" / "htpasswd").read_text().count("admin:") == 1


def test_run_script_on_a_second_start_points_at_the_saved_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "auth").mkdir(parents=True)
    (data / "auth" / "htpasswd").write_text(
        "admin:$2y$04$abcdefghijklmnopqrstuu0123456789012345678901234567890\n"
    )
    (data / "auth" / "initial-password").write_text("kept-secret\n")
    script = Path(__file__).resolve().parents[2] / "hack" / "run.sh"
    port = procs.reserve_port()
    proc = subprocess.Popen(
        ["bash", str(script), str(data), f"127.0.0.1:{port.number}", "admin"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        head = proc.stdout.readline().decode() + proc.stdout.readline().decode()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        port.release()
    assert "Users exist" in head
    assert str(data / "auth" / "initial-password") in head
    assert "kept-secret" not in head


def test_serve_on_a_port_in_use_exits_1_with_a_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exe = Path(sys.executable).parent / "dockyard-registry"
        done = subprocess.run(
            [
                str(exe),
                "serve",
                "--data-dir",
                str(tmp_path),
                "--listen",
                f"127.0.0.1:{port}",
                "--no-tls",
                "--no-auth",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


S3_ENV = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["serve"], S3_ENV, "--data-dir is required"),
        (["fsck", "--data-dir", "d", "--s3-bucket", "b"], S3_ENV, "--s3-bucket need --storage-driver s3"),
        (["gc", "--data-dir", "d", "--no-s3-redirect"], S3_ENV, "--s3-redirect need --storage-driver s3"),
        (["serve", "--storage-driver", "s3"], S3_ENV, "needs --s3-bucket"),
        (["fsck", "--storage-driver", "s3", "--s3-bucket", "b"], {}, "AWS_ACCESS_KEY_ID"),
        (
            ["gc", "--storage-driver", "s3", "--s3-bucket", "b"],
            {"AWS_ACCESS_KEY_ID": "id"},
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            ["serve", "--storage-driver", "s3", "--s3-bucket", "b", "--s3-endpoint", "minio:9000"],
            S3_ENV,
            "--s3-endpoint must be an http(s) URL",
        ),
        (
            ["serve", "--storage-driver", "s3", "--s3-bucket", "b", "--s3-prefix", "a/../b"],
            S3_ENV,
            "--s3-prefix",
        ),
        (
            ["serve", "--storage-driver", "s3", "--s3-bucket", "b", "--s3-ca", "/nonexistent/ca.pem"],
            S3_ENV,
            "--s3-ca",
        ),
    ],
)
def test_bad_storage_flags_are_usage_errors(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _out, err = run(argv, capsys)
    assert code == 2
    assert message in err


def test_bad_storage_driver_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(["serve", "--storage-driver", "nfs"], capsys)
    assert code == 2 and "--storage-driver" in err


def test_s3_flags_give_the_s3_settings_with_documented_defaults(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    parser = cli.build_parser()
    minimal = parser.parse_args(["serve", "--storage-driver", "s3", "--s3-bucket", "images"])
    choice = cli.storage_choice(minimal, environ=S3_ENV)
    assert choice.s3 is not None and choice.data_dir is None
    assert (choice.s3.bucket, choice.s3.region, choice.s3.addressing, choice.s3.redirect) == (
        "images",
        "us-east-1",
        "path",
        True,
    )
    assert (choice.s3.endpoint, choice.s3.prefix, choice.s3.ca_file, choice.s3.session_token) == (
        None,
        "",
        None,
        None,
    )
    full = parser.parse_args(
        [
            "gc",
            "--storage-driver",
            "s3",
            "--s3-bucket",
            "images",
            "--s3-endpoint",
            "https://s3.example:9000",
            "--s3-region",
            "eu-west-3",
            "--s3-prefix",
            "/team-a/",
            "--s3-ca",
            str(ca),
            "--s3-addressing",
            "virtual",
            "--no-s3-redirect",
        ]
    )
    choice = cli.storage_choice(full, environ={**S3_ENV, "AWS_SESSION_TOKEN": "tok"})
    assert choice.s3 == s3.S3Config(
        bucket="images",
        endpoint="https://s3.example:9000",
        region="eu-west-3",
        prefix="team-a",
        ca_file=ca,
        addressing="virtual",
        redirect=False,
        access_key="id",
        secret_key="secret",
        session_token="tok",
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--tls auto keeps its CA in a local directory"),
        (["--no-tls"], "give --htpasswd and --access"),
        (["--no-tls", "--htpasswd", "h"], "give --htpasswd and --access"),
        (["--no-tls", "--no-auth", "--accel-redirect", "/_b/"], "--accel-redirect needs the filesystem"),
    ],
)
def test_serve_on_s3_without_a_local_directory_names_what_it_needs(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    code, _out, err = run(["serve", "--storage-driver", "s3", "--s3-bucket", "b", *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err
