#!/usr/bin/env bash
# Builds the Go tools the tests and benchmarks use, from the Go module proxy, into a cache
# outside the clone, and reuses them when present. Prints nothing but progress on stderr.
#
#   hack/tools.sh [TOOL ...]     default: every tool
#   TOOL: conformance oras crane helm distribution etcd coredns promtool
#         gofakes3 (a real S3-compatible server for the S3 storage driver's tests)
#         dex (a real external OIDC issuer for the token identity tests)
#         kube (kube-apiserver, kube-controller-manager: the test control plane)
#         node (kube also, plus kube-scheduler, kubelet, kube-proxy: tests/support/cluster.py)
#
# Cache: $DOCKYARD_TOOLS (default ~/.cache/dockyard/tools)/bin; each binary has a
# `<name>.version` stamp beside it, so changing a version below rebuilds only that tool.
# kube-apiserver, kube-controller-manager and etcd are taken from $KUBEBUILDER_ASSETS when
# that directory has them (the envtest convention), and built otherwise.
# Each build holds a lock ($BIN/.<tool>.lock, flock), so two runs on one machine (two `make test`s) never
# build the same tool at once: the second waits, then finds it fresh.
set -euo pipefail

K8S_VERSION=1.35.4
ETCD_VERSION=3.6.16
HELM_VERSION=v3.22.0
CRANE_VERSION=v0.22.1
ORAS_VERSION=v1.3.6
DISTRIBUTION_VERSION=v3.1.1
COREDNS_VERSION=v1.12.4
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
PROMTOOL_VERSION=v0.316.0  # the prometheus module's version for Prometheus 3.16.0
GOFAKES3_VERSION=v1.2.0    # the S3-compatible server the S3 driver's tests run against (tests/registry/s3server.py)
# Dex v2.45.1 (commit 11d2eeb). Its v2 tags are not valid versions of the module github.com/dexidp/dex (no /v2
# in its path), so the proxy knows the tag's commit only by this pseudo-version.
DEX_VERSION=v0.0.0-20260303133905-11d2eeb52b42

CACHE=${DOCKYARD_TOOLS:-$HOME/.cache/dockyard/tools}
BIN=$CACHE/bin
mkdir -p "$BIN"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf 'tools: %s\n' "$*" >&2; }
fresh() { # fresh NAME VERSION: the cached binary exists and was built from VERSION
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]
}
stamp() { printf '%s\n' "$2" >"$BIN/$1.version"; }
locked() { # locked LOCK COMMAND...: COMMAND under $BIN/.LOCK.lock (another run building it: wait for it)
  local lock=$1; shift
  ( flock 9; "$@" ) 9>"$BIN/.$lock.lock"
}
in_assets() { [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$1" ]; }

go_install() { # go_install NAME PACKAGE VERSION: modules without replace directives
  local name=$1 pkg=$2 version=$3
  fresh "$name" "$version" && return 0
  log "building $name $version (once; cached in $BIN)"
  GOBIN=$BIN go install -trimpath -ldflags '-s -w' "$pkg@$version"
  local built
  built=$(basename "$pkg")
  [ "$built" = "$name" ] || mv -f "$BIN/$built" "$BIN/$name"
  stamp "$name" "$version"
}

KUBE_CONTROL=(kube-apiserver kube-controller-manager)
KUBE_NODE=(kube-scheduler kubelet kube-proxy)

build_k8s() { # build_k8s BINARY...: k8s.io/kubernetes commands, built together from one throwaway module
  local b missing=()
  for b in "$@"; do fresh "$b" "$K8S_VERSION" || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "building ${missing[*]} v$K8S_VERSION (once, 10-30 min)"
  local W; W=$(mktemp -d)
  (
    cd "$W"
    # Read the tag's go.mod before this directory becomes a module (go would add a go line).
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    echo 'module local/k8sbins' >go.mod
    minor=${K8S_VERSION#1.}; minor=${minor%%.*}
    {
      echo
      grep -E '^(go|godebug) ' "$gomod"
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo "replace ("
      sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+[[:space:]]*$#\t\1 => \1 v0.'"${K8S_VERSION#1.}"'#p' "$gomod"
      echo ")"
    } >>go.mod
    pkgs=()
    for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    go get -tool "${pkgs[@]/%/@v$K8S_VERSION}"
    ldf="-s -w"
    for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldf+=" -X '$p.gitVersion=v$K8S_VERSION' -X '$p.gitMajor=1' -X '$p.gitMinor=$minor'"
      ldf+=" -X '$p.gitTreeState=clean' -X '$p.buildDate=1970-01-01T00:00:00Z'"
    done
    go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$ldf" -o "$BIN/" "${pkgs[@]}"
  )
  rm -rf "$W"
  for b in "${missing[@]}"; do stamp "$b" "$K8S_VERSION"; done
}

build_kube() { # the control plane the operator tests use; from $KUBEBUILDER_ASSETS when it has them
  if in_assets kube-apiserver && in_assets kube-controller-manager; then return 0; fi
  build_k8s "${KUBE_CONTROL[@]}"
}

build_node() { # a whole single-node cluster (tests/cluster): control plane, scheduler, kubelet, kube-proxy
  local all=("${KUBE_NODE[@]}")
  if ! { in_assets kube-apiserver && in_assets kube-controller-manager; }; then all+=("${KUBE_CONTROL[@]}"); fi
  build_k8s "${all[@]}"
}

build_etcd() {
  if in_assets etcd; then return 0; fi
  fresh etcd "$ETCD_VERSION" && return 0
  log "building etcd v$ETCD_VERSION (once)"
  local W; W=$(mktemp -d)
  (
    cd "$W"
    printf 'module local/etcdbins\n\ngo 1.25.0\n' >go.mod
    go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    go build -trimpath -ldflags '-s -w' -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$W"
  stamp etcd "$ETCD_VERSION"
}

build_dex() { # Dex's go.mod replaces its api module with a directory: `go install pkg@version` refuses it
  fresh dex "$DEX_VERSION" && return 0
  log "building dex $DEX_VERSION (once; CGO off: memory storage, no SQLite)"
  local W; W=$(mktemp -d)
  (
    cd "$W"
    printf 'module local/dexbins\n\ngo 1.25.0\n' >go.mod
    go get -tool "github.com/dexidp/dex/cmd/dex@$DEX_VERSION"
    go build -trimpath -ldflags '-s -w' -o "$BIN/dex" github.com/dexidp/dex/cmd/dex
  )
  rm -rf "$W"
  stamp dex "$DEX_VERSION"
}

build_one() {
  case $1 in
    conformance) locked conformance go_install conformance github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION" ;;
    oras) locked oras go_install oras oras.land/oras/cmd/oras "$ORAS_VERSION" ;;
    crane) locked crane go_install crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION" ;;
    helm) locked helm go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    distribution) locked distribution go_install distribution github.com/distribution/distribution/v3/cmd/registry "$DISTRIBUTION_VERSION" ;;
    etcd) locked etcd build_etcd ;;
    kube) locked k8s build_kube ;;  # kube and node build k8s.io/kubernetes binaries: one lock for both
    node) locked k8s build_node ;;
    coredns) locked coredns go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" ;;
    promtool) locked promtool go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION" ;;
    gofakes3) locked gofakes3 go_install gofakes3 github.com/johannesboyne/gofakes3/cmd/gofakes3 "$GOFAKES3_VERSION" ;;
    dex) locked dex build_dex ;;
    *) log "unknown tool: $1"; exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- conformance oras crane distribution etcd node coredns helm promtool gofakes3 dex
fi
for tool in "$@"; do build_one "$tool"; done
echo "$BIN"
