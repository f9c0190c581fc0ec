#!/usr/bin/env bash
# Start a local Dockyard registry with TLS (`--tls auto`) and a first user; what `make run` calls.
#
#   hack/run.sh DATA LISTEN USER [MIRRORS]
#
# MIRRORS (optional, may be empty): a pull-through mirrors file passed as `serve --mirrors` (docs/mirrors.md).
# First run: creates USER (admin) with a generated password, printed once and saved with mode 0600 to
# DATA/auth/initial-password. Later runs reuse the users and the CA under DATA/tls (clients keep trusting it).
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
    echo "usage: $0 DATA LISTEN USER [MIRRORS]   (e.g. $0 ~/.local/share/dockyard/registry 127.0.0.1:5443 admin)" >&2
    exit 2
fi
DATA=$1
LISTEN=$2
USER_NAME=$3
MIRRORS=${4:-}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin/dockyard-registry"
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$BIN" ]]; then
    echo "error: $BIN is missing; run 'make setup' first" >&2
    exit 2
fi
if [[ "$LISTEN" != *:* ]]; then
    echo "error: LISTEN must be HOST:PORT, got '$LISTEN'" >&2
    exit 2
fi

mkdir -p "$DATA"
chmod 700 "$DATA"
HTPASSWD="$DATA/auth/htpasswd"
INITIAL="$DATA/auth/initial-password"

if [[ ! -s "$HTPASSWD" ]] || ! grep -q ':' "$HTPASSWD"; then
    umask 077
    mkdir -p "$DATA/auth"
    PASSWORD=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
    printf '%s\n' "$PASSWORD" > "$INITIAL"
    chmod 600 "$INITIAL"
    printf '%s\n' "$PASSWORD" | "$BIN" user add "$USER_NAME" --data-dir "$DATA" --access admin --password-stdin >/dev/null
    echo "Created user '$USER_NAME' (admin). Password (shown once, also in $INITIAL):"
    echo
    echo "    $PASSWORD"
    echo
else
    echo "Users exist in $HTPASSWD (list: $BIN user list --data-dir $DATA)."
    if [[ -f "$INITIAL" ]]; then
        echo "The first user's generated password is in $INITIAL (mode 0600)."
    fi
fi

HOSTPORT=$LISTEN
case "$LISTEN" in
    0.0.0.0:*|\[::\]:*) HOSTPORT="localhost:${LISTEN##*:}" ;;
esac
TRUST="$DATA/tls/trust"
cat <<INSTRUCTIONS
Registry: https://$HOSTPORT   (CA: $DATA/tls/ca.crt, created on first start; the directory $TRUST holds only it)

  skopeo login --cert-dir $TRUST -u $USER_NAME $HOSTPORT
  skopeo copy --dest-cert-dir $TRUST --dest-creds $USER_NAME:PASSWORD \\
      docker-archive:image.tar docker://$HOSTPORT/team/app:1.0
  podman login --cert-dir $TRUST -u $USER_NAME $HOSTPORT
  podman push --cert-dir $TRUST localhost/app:1.0 $HOSTPORT/team/app:1.0
  docker:  sudo mkdir -p /etc/docker/certs.d/$HOSTPORT && sudo cp $DATA/tls/ca.crt /etc/docker/certs.d/$HOSTPORT/ca.crt
           docker login -u $USER_NAME $HOSTPORT

More users: $BIN user add NAME --data-dir $DATA [--access pull|push|admin] [--repository GLOB]
INSTRUCTIONS

MIRROR_ARGS=()
if [[ -n "$MIRRORS" ]]; then
    if [[ ! -r "$MIRRORS" ]]; then
        echo "error: MIRRORS file '$MIRRORS' is not readable" >&2
        exit 2
    fi
    MIRROR_ARGS=(--mirrors "$MIRRORS")
fi
exec "$BIN" serve --data-dir "$DATA" --listen "$LISTEN" --tls auto "${MIRROR_ARGS[@]}"
