"""What a benchmark run needs on the machine, found or installed before anything starts.

Owns: installing the Debian packages that are missing (`docker-registry` is the reference, `wrk` the load
generator; nginx, skopeo and apache2-utils are normally there already from `make setup`) without letting a
package start its own service, and locating distribution v3 in the Go tools cache (`hack/tools.sh`).
Must not: download anything but Debian packages, or stop a service that it did not start.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = {"docker-registry": "docker-registry", "wrk": "wrk", "nginx": "nginx", "skopeo": "skopeo",
          "htpasswd": "apache2-utils"}  # fmt: skip
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


@dataclasses.dataclass(frozen=True)
class Tools:
    nginx: str
    skopeo: str
    wrk: str
    htpasswd: str
    registry_v2: str  # Debian's docker-registry (Distribution 2.8.2)
    registry_v3: str | None  # distribution v3 from the Go tools cache, when it was built
    dockyard_registry: str


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).is_file()), None
    )


def _apt_install(packages: list[str]) -> None:
    print(f"bench: installing Debian packages {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d exit 101 is Debian's documented way to keep a package's postinst from starting its service.
    own_policy = not _POLICY_RC.exists()
    if own_policy:
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", *packages], env=env, check=True, capture_output=True
            )
    finally:
        if own_policy:
            _POLICY_RC.unlink()


def _distribution_v3() -> str | None:
    candidates = []
    if env := os.environ.get("DOCKYARD_TOOLS_BIN"):
        candidates.append(Path(env) / "distribution")
    candidates.append(Path.home() / ".cache" / "dockyard" / "tools" / "bin" / "distribution")
    return next((str(c) for c in candidates if c.is_file()), None)


def ensure(*, python: str, registry_workloads: bool = True) -> Tools:
    """Install what is missing and return the paths of every program the run uses.

    Without the registry workloads (`--only auth`, `--only none`) only nginx is needed: the references
    and the load generator are neither installed nor required, and their paths are left empty.
    """
    needed = DEBIAN if registry_workloads else {"nginx": DEBIAN["nginx"]}
    missing = [pkg for binary, pkg in needed.items() if _which(binary) is None]
    if missing:
        _apt_install(sorted(set(missing)))
    found = {binary: _which(binary) for binary in DEBIAN}
    absent = [b for b, p in found.items() if p is None and b in needed]
    if absent:
        raise SystemExit(f"bench: still missing after apt-get install: {', '.join(absent)}")
    dockyard = Path(python).parent / "dockyard-registry"
    if not dockyard.is_file():
        raise SystemExit(f"bench: {dockyard} is missing: run `make setup`")
    return Tools(
        nginx=str(found["nginx"]),
        skopeo=found["skopeo"] or "",
        wrk=found["wrk"] or "",
        htpasswd=found["htpasswd"] or "",
        registry_v2=found["docker-registry"] or "",
        registry_v3=_distribution_v3(),
        dockyard_registry=str(dockyard),
    )
