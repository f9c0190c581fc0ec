"""Helpers shared by every test package: where the Go tools are (ports and processes: `procs`).

The Go tools (kube-apiserver, etcd, helm, crane, oras, the OCI conformance suite) are built once
by `hack/tools.sh` into a cache outside the clone; `make test` exports their directory as
DOCKYARD_TOOLS_BIN. kube-apiserver, kube-controller-manager and etcd come from
KUBEBUILDER_ASSETS first, the envtest convention.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_CONTROL_PLANE = {"kube-apiserver", "kube-controller-manager", "etcd"}


@functools.cache
def tools_bin() -> Path:
    """The directory of the cached Go tools, building them first when they are missing."""
    env = os.environ.get("DOCKYARD_TOOLS_BIN")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh")], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def tool(name: str) -> Path:
    """Path of one Go tool; raises when `make test`'s setup did not provide it."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if name in _CONTROL_PLANE and assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    path = tools_bin() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `bash hack/tools.sh` (make test does)")
    return path
