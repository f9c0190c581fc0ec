#!/usr/bin/env bash
# Sets up a fresh machine for Dockyard: Debian packages, a Python virtualenv in .venv, and
# (with --tools) the Go tools the tests need, built once into ~/.cache/dockyard/tools.
# Safe to run again: every step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tools=0
[ "${1:-}" = "--tools" ] && want_tools=1

# Debian packages, only when something is missing. For `make run` and every test: nginx (TLS + auth_request
# sidecar), skopeo and podman (real clients), openssl, apache2-utils (htpasswd, for comparisons).
installed() { dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }
pkgs=()
command -v nginx >/dev/null || pkgs+=(nginx)
command -v skopeo >/dev/null || pkgs+=(skopeo)
command -v podman >/dev/null || pkgs+=(podman)
command -v openssl >/dev/null || pkgs+=(openssl)
command -v htpasswd >/dev/null || pkgs+=(apache2-utils)
if [ "$want_tools" = 1 ]; then
  # hack/images.sh (images with no Docker engine and no outside registry): runc, mmdebstrap, busybox-static,
  # containerd (ctr), gcc and libc6-dev (the static pause binary). The real node of tests/node
  # (tests/support/cluster.py): containerd and runc, CNI plugins, kube-proxy's conntrack and iptables, `ip`
  # for the node's network namespace, curl for probes.
  installed runc || command -v runc >/dev/null || pkgs+=(runc)  # /usr/sbin: not on a user's PATH
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  installed busybox-static || pkgs+=(busybox-static)
  command -v ctr >/dev/null || pkgs+=(containerd)
  command -v gcc >/dev/null || pkgs+=(gcc)
  installed libc6-dev || pkgs+=(libc6-dev)
  [ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
  command -v conntrack >/dev/null || [ -x /usr/sbin/conntrack ] || pkgs+=(conntrack)
  command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || pkgs+=(iptables)
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || pkgs+=(iproute2)
  command -v curl >/dev/null || pkgs+=(curl)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${pkgs[*]} from Debian" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# Python: a virtualenv in the clone, with the project installed in editable mode.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.dockyard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi

if [ "$want_tools" = 1 ]; then
  bash hack/tools.sh >/dev/null
fi
