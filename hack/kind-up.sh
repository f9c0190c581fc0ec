#!/usr/bin/env bash
# Creates the `dockyard` kind cluster (kind-config.yaml), builds the operator and registry images,
# loads them into the node and installs the chart, waiting until the operator is ready.
# Needs a Docker engine. Safe to run again: an existing cluster is reused, images are rebuilt and
# reloaded, and the chart is upgraded in place.
#
#   hack/kind-up.sh     environment: KIND_CLUSTER (default dockyard), IMAGE_TAG (default dev), KUBECTL
#
# kind and helm come from PATH, or are built once from the Go module proxy into the tool cache
# (the same cache hack/tools.sh uses).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-dockyard}
TAG=${IMAGE_TAG:-dev}
KIND_VERSION=v0.33.0
OPERATOR_IMAGE=ghcr.io/dockyard-dev/dockyard-operator
REGISTRY_IMAGE=ghcr.io/dockyard-dev/dockyard-registry
NAMESPACE=dockyard-system
BIN=${DOCKYARD_TOOLS:-$HOME/.cache/dockyard/tools}/bin

log() { printf 'kind-up: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

docker info >/dev/null 2>&1 || die "no Docker engine answers \`docker info\`; kind needs one"
KUBECTL=${KUBECTL:-kubectl}
command -v "$KUBECTL" >/dev/null || die "kubectl is not on PATH (or set KUBECTL)"

kind_bin() {
  if command -v kind >/dev/null; then command -v kind; return; fi
  if [ ! -x "$BIN/kind" ] || [ "$(cat "$BIN/kind.version" 2>/dev/null)" != "$KIND_VERSION" ]; then
    command -v go >/dev/null || die "kind is not on PATH and there is no Go toolchain to build it"
    log "building kind $KIND_VERSION into $BIN (once)"
    mkdir -p "$BIN"
    GOBIN=$BIN GOTOOLCHAIN=local CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kind@$KIND_VERSION"
    echo "$KIND_VERSION" >"$BIN/kind.version"
  fi
  echo "$BIN/kind"
}
helm_bin() {
  if command -v helm >/dev/null; then command -v helm; return; fi
  [ -x "$BIN/helm" ] || bash hack/tools.sh helm >/dev/null
  echo "$BIN/helm"
}
KIND=$(kind_bin)
HELM=$(helm_bin)

reused=0
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
  reused=1
else
  log "creating kind cluster $CLUSTER"
  "$KIND" create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
KUBECONFIG_FILE=$(mktemp)
trap 'rm -f "$KUBECONFIG_FILE"' EXIT
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
export KUBECONFIG=$KUBECONFIG_FILE

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
log "building $OPERATOR_IMAGE:$TAG and $REGISTRY_IMAGE:$TAG"
docker build -q -f operator/Dockerfile --build-arg REVISION="$revision" -t "$OPERATOR_IMAGE:$TAG" . >/dev/null
docker build -q -f registry_image/Dockerfile --build-arg REVISION="$revision" -t "$REGISTRY_IMAGE:$TAG" . >/dev/null
"$KIND" load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE:$TAG" "$REGISTRY_IMAGE:$TAG"

# Helm never upgrades CRDs from crds/; apply them first so a re-run also picks up schema changes.
"$KUBECTL" apply --server-side --force-conflicts -f charts/dockyard/crds/ >/dev/null
log "installing the chart into $NAMESPACE"
# pullPolicy Never: the images exist only on the node (kind load), under a tag no registry has.
"$HELM" upgrade --install dockyard charts/dockyard \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$OPERATOR_IMAGE" --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set registry.image="$REGISTRY_IMAGE:$TAG" \
  --wait --timeout 5m
# Same tag, new bytes: a reused cluster's operator Pod must restart to run the image just loaded.
[ "$reused" = 0 ] || "$KUBECTL" -n "$NAMESPACE" rollout restart deployment/dockyard >/dev/null
"$KUBECTL" -n "$NAMESPACE" rollout status deployment/dockyard --timeout=180s

cat >&2 <<MSG
kind-up: ready. Next (docs/install.md, step 4):
  kind get kubeconfig --name $CLUSTER > ~/.kube/dockyard && export KUBECONFIG=~/.kube/dockyard
  kubectl create secret generic ci-push --from-literal=password="\$(openssl rand -base64 24)"
  kubectl create secret generic nodes-pull --from-literal=password="\$(openssl rand -base64 24)"
  kubectl apply -f examples/nodeport-node-trust.yaml   # a registry on localhost:30500, trusted by the node
  kubectl wait --for=condition=NodeTrustReady preg/team-registry --timeout=5m
MSG
