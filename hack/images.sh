#!/usr/bin/env bash
# Builds every container image a Dockyard cluster needs with no outside registry and no Docker engine:
# podman (Debian's, driven with runc and cgroupfs) and mmdebstrap against Debian's archive. What `make images`
# calls where `docker info` fails; docs/images.md describes each image.
#
#   hack/images.sh [--verify] [IMAGE...]     IMAGE: python nginx pause busybox operator registry (default: all)
#
#   localhost/dockyard/python:3.11-bookworm      Debian bookworm + python3/venv (mmdebstrap); the PYTHON_IMAGE
#                                                 build argument of the two Dockerfiles below
#   ghcr.io/dockyard-dev/dockyard-operator:TAG   operator/Dockerfile        (TAG: IMAGE_TAG, default dev)
#   ghcr.io/dockyard-dev/dockyard-registry:TAG   registry_image/Dockerfile
#   localhost/dockyard/nginx:bookworm            Debian's nginx, for the registry Pod's TLS/auth sidecar
#   localhost/dockyard/pause:3.10                hack/pause/pause.c, static; the Pod sandbox image
#   localhost/dockyard/busybox:stable            Debian's busybox-static and its applet links
#
# stdout: one line per image, "<image name> <archive path>"; the archive is an oci-archive that
# `ctr -n k8s.io images import` takes with the full name kept (also `podman load`, `skopeo copy oci-archive:`).
# Everything else goes to stderr.
#
# Caching (a warm run takes seconds): a Debian or pause/busybox image is rebuilt only when its inputs change
# (their digest is the image label dev.dockyard.build.inputs); the operator and registry images rely on
# podman's layer cache. An archive is rewritten only when its image ID changes. After a (re)build each image
# is run as the cluster runs it (non-root, read-only root) and new archives are imported into a throwaway
# containerd; --verify does all of that for unchanged images too.
#
# Environment: IMAGE_TAG (dev); REVISION (git's short HEAD); DOCKYARD_IMAGES, the cache directory
# (~/.cache/dockyard/images), archives in its archives/; DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR (default: what
# this host's apt sources use, else deb.debian.org); DOCKYARD_CA_BUNDLE, the CA bundle pip uses inside
# `podman build` (/etc/ssl/certs/ca-certificates.crt when present).
#
# Needs root (mmdebstrap's root mode, podman's root storage, the throwaway containerd); installs the Debian
# packages it lacks (podman, runc, mmdebstrap, busybox-static, containerd, gcc, libc6-dev, openssl).
set -euo pipefail
cd "$(dirname "$0")/.."

# Progress to stderr; only the result lines go to the original stdout (fd 3).
exec 3>&1 1>&2

log() { printf 'images: %s\n' "$*"; }
die() { printf 'images: error: %s\n' "$*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

ALL=(python nginx pause busybox operator registry)
verify_all=0
wanted=()
for arg in "$@"; do
    case $arg in
        --verify) verify_all=1 ;;
        -h|--help) usage >&3; exit 0 ;;
        python|nginx|pause|busybox|operator|registry) wanted+=("$arg") ;;
        *) usage; die "unknown argument '$arg'" ;;
    esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${ALL[@]}")
want() { local w; for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
# The operator and registry images are built FROM the python image.
if want operator || want registry; then want python || wanted=(python "${wanted[@]}"); fi

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap root mode, podman's root storage, a throwaway containerd)"

TAG=${IMAGE_TAG:-dev}
CACHE=${DOCKYARD_IMAGES:-$HOME/.cache/dockyard/images}
ARCHIVES=$CACHE/archives
SUITE=bookworm
LABEL_KEY=dev.dockyard.build.inputs
PYTHON_IMAGE=localhost/dockyard/python:3.11-bookworm
NGINX_IMAGE=localhost/dockyard/nginx:bookworm
PAUSE_IMAGE=localhost/dockyard/pause:3.10
BUSYBOX_IMAGE=localhost/dockyard/busybox:stable
OPERATOR_IMAGE=ghcr.io/dockyard-dev/dockyard-operator:$TAG
REGISTRY_IMAGE=ghcr.io/dockyard-dev/dockyard-registry:$TAG
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# --- Debian packages this script needs (only the missing ones) --------------------------------------------
pkgs=()
command -v podman >/dev/null || pkgs+=(podman)
command -v runc >/dev/null || pkgs+=(runc)
command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
dpkg-query -W -f '${db:Status-Status}' busybox-static 2>/dev/null | grep -qx installed || pkgs+=(busybox-static)
command -v containerd >/dev/null && command -v ctr >/dev/null || pkgs+=(containerd)
command -v gcc >/dev/null || pkgs+=(gcc)
dpkg-query -W -f '${db:Status-Status}' libc6-dev 2>/dev/null | grep -qx installed || pkgs+=(libc6-dev)
command -v openssl >/dev/null || pkgs+=(openssl)
if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

mkdir -p "$ARCHIVES"
# One run at a time per cache (podman storage is shared, archives are replaced in place).
exec 9>"$CACHE/.lock"
flock 9

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- podman on these machines ------------------------------------------------------------------------------
# runc (crun refuses a hybrid cgroup layout), cgroupfs and file events (no systemd). Containers get explicit
# rlimits no higher than this process may set (podman's defaults exceed them without CAP_SYS_RESOURCE).
pm() { podman --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
LIMITS=(--network none --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
RUN=(run --rm "${LIMITS[@]}")
# How the cluster runs its containers: read-only root, no capabilities, no privilege escalation.
LOCKED=(--read-only --cap-drop ALL --security-opt no-new-privileges)

image_id() { pm image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
image_inputs() { pm image inspect --format "{{index .Labels \"$LABEL_KEY\"}}" "$1" 2>/dev/null || true; }
digest() { sha256sum | cut -c1-64; }
up_to_date() {  # NAME INPUTS
    if [ "$(image_inputs "$1")" = "$2" ]; then
        log "$1: up to date"
        return 0
    fi
    return 1
}

# --- Debian mirrors: the host's apt sources, else deb.debian.org ---------------------------------------------
# Prints "URI SUITE COMPONENTS..." for every deb source of the host (one-line and deb822 formats).
host_sources() {
    local files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk '
        function flush(   n, m, i, j, U, S) {
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
                n = split(uris, U, /[ \t]+/); m = split(suites, S, /[ \t]+/)
                for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                    if (U[i] != "" && S[j] != "") print U[i], S[j], comps
            }
            types = ""; uris = ""; suites = ""; comps = ""; enabled = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^[ \t]*#/) next
            key = tolower($1); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types:") types = val
            else if (key == "uris:") uris = val
            else if (key == "suites:") suites = val
            else if (key == "components:") comps = val
            else if (key == "enabled:") enabled = tolower(val)
            next
        }
        /^[ \t]*deb[ \t]/ {
            line = $0; sub(/^[ \t]*deb[ \t]+/, "", line); sub(/^\[[^]]*\][ \t]+/, "", line)
            print line
        }
        END { flush() }
    ' "${files[@]}"
}
MIRROR=${DEBIAN_MIRROR:-}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-}
while read -r uri suite comps; do
    [[ $uri == http://* || $uri == https://* ]] || continue
    [[ " $comps " == *" main "* ]] || continue
    case $suite in
        *-security|*/updates) [ -n "$SECURITY_MIRROR" ] || SECURITY_MIRROR=$uri ;;
        buster*|bullseye*|bookworm*|trixie*|forky*|sid|stable*|testing*|unstable|oldstable*)
            [ -n "$MIRROR" ] || MIRROR=$uri ;;
    esac
done < <(host_sources)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
APT_SOURCES=(
    "deb $MIRROR $SUITE main"
    "deb $MIRROR $SUITE-updates main"
    "deb $SECURITY_MIRROR $SUITE-security main"
)

# --- a Debian bookworm image: mmdebstrap rootfs -> podman import ---------------------------------------------
# The essential variant (Essential:yes packages, dpkg's maintainer scripts work, no apt) is the smallest that
# installs real packages; merged-/usr via the hook keeps usrmerge (and all of perl) out.
# shellcheck disable=SC2016  # $1 (the chroot) is expanded by mmdebstrap's hook shell
MMDEBSTRAP_OPTS=(
    --variant=essential --format=tar --skip=output/dev
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='Apt::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    # Runtimes mount these; the host's copies stay out of the image.
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"'
)
debian_image() {  # NAME PACKAGES(comma-separated); options in MMDEBSTRAP_OPTS, EXTRA_MMDEBSTRAP, IMPORT_CHANGES
    local name=$1 packages=$2 inputs
    inputs=$(printf '%s\n' "$SUITE" "$packages" "${MMDEBSTRAP_OPTS[@]}" "${EXTRA_MMDEBSTRAP[@]}" \
        "${IMPORT_CHANGES[@]}" | digest)
    if up_to_date "$name" "$inputs"; then return 0; fi
    log "$name: mmdebstrap $SUITE + $packages (from $MIRROR)"
    local tar="$WORK/${name//[\/:]/_}.tar"
    mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" "${EXTRA_MMDEBSTRAP[@]}" --include="$packages" \
        "$SUITE" "$tar" "${APT_SOURCES[@]}" 2>"$WORK/mmdebstrap.log" \
        || { cat "$WORK/mmdebstrap.log"; die "$name: mmdebstrap failed"; }
    import_rootfs "$name" "$tar" "$inputs" "${IMPORT_CHANGES[@]}"
}

# An image whose root file system is exactly DIR (owner root, mtimes fixed: same inputs, same layer digest).
dir_image() {  # NAME DIR INPUTS CHANGE...
    local name=$1 dir=$2
    tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$dir.tar" .
    shift 2
    import_rootfs "$name" "$dir.tar" "$@"
}

# `podman import` with the inputs label.
import_rootfs() {  # NAME TAR INPUTS CHANGE...
    local name=$1 tar=$2 inputs=$3 old changes=() c
    shift 3
    for c in "$@" "LABEL=$LABEL_KEY=$inputs"; do changes+=(--change "$c"); done
    old=$(image_id "$name")
    pm import --quiet "${changes[@]}" "$tar" "$name" >/dev/null
    rm -f "$tar"
    [ "$old" = "$(image_id "$name")" ] || remove_if_untagged "$old"
    log "$name: built ($(image_size "$name"))"
}

# The image a rebuild replaced, unless something else still names it (or builds on it: then rmi refuses).
remove_if_untagged() {  # ID (may be empty)
    if [ -n "$1" ] && [ "$(pm image inspect --format '{{len .RepoTags}}' "$1" 2>/dev/null)" = 0 ]; then
        pm rmi "$1" >/dev/null 2>&1 || true
    fi
}

image_size() { pm image inspect --format '{{.Size}}' "$1" | numfmt --to=si --suffix=B; }

# --- checks: each image run the way the cluster runs it --------------------------------------------------------
# Called directly (never in an `if` or `||`), so `set -e` stops the script at the first failing command.
expect() {  # PATTERN TEXT: fail unless TEXT has a line matching PATTERN
    grep -qE -- "$1" <<<"$2" || { log "expected /$1/ in: $2"; return 1; }
}

check_python() {
    local out
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --tmpfs /tmp:rw,mode=1777 --user 65532:65532 "$PYTHON_IMAGE" sh -ec '
        python --version
        python -c "import ssl, sqlite3, ensurepip, venv"
        python -m venv /tmp/v
        /tmp/v/bin/pip --version')
    expect '^Python 3\.11\.' "$out"
    expect '^pip ' "$out"
}

check_operator() {
    local out
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --tmpfs /tmp:rw,mode=1777 --user 65532:65532 "$OPERATOR_IMAGE" --help)
    expect '^usage: dockyard-operator' "$out"
    # Everything the operator imports at start (kopf, lightkube, pydantic, cryptography, bcrypt) loads.
    pm "${RUN[@]}" "${LOCKED[@]}" --tmpfs /tmp:rw,mode=1777 --user 65532:65532 --entrypoint python \
        "$OPERATOR_IMAGE" -c 'import dockyard_operator.handlers, dockyard_operator.crypto, dockyard_common.pki'
}

check_registry() {
    local out
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --tmpfs /tmp:rw,mode=1777 --user 65532:65532 "$REGISTRY_IMAGE" --help)
    expect '^usage: dockyard-registry' "$out"
    # A real start on the image's own data volume (owned by 65532) with --tls auto: /v2/ answers 401.
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --tmpfs /tmp:rw,mode=1777 --user 65532:65532 --entrypoint python \
        "$REGISTRY_IMAGE" -c '
import ssl, subprocess, time, urllib.error, urllib.request
p = subprocess.Popen(["dockyard-registry", "serve", "--data-dir", "/var/lib/registry",
                      "--listen", "127.0.0.1:5000", "--tls", "auto"])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
status = None
for _ in range(150):
    try:
        urllib.request.urlopen("https://127.0.0.1:5000/v2/", context=ctx, timeout=2)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError:
        if p.poll() is None:
            time.sleep(0.2)
            continue
    break
p.terminate()
p.wait(10)
print("GET /v2/ ->", status)
')
    expect '^GET /v2/ -> 401$' "$out"
    log "$REGISTRY_IMAGE: serve --tls auto as 65532, read-only root: GET /v2/ -> 401"
}

# The sidecar as builders/deployment.py runs it: as NGINX_UID (the registry's uid since the body-file change),
# read-only root, writable (empty) directories only at /tmp and /var/cache/nginx, the config the operator
# renders for a registry on a volume (upload bodies written to files), TLS and data mounted read-only, and
# the data volume's body directory mounted writable over the read-only data mount (deployment._body_mounts).
check_nginx() {
    local t=$WORK/nginx-check out uid bodies
    mkdir -p "$t/conf" "$t/tls" "$t/data"
    [ -x .venv/bin/python ] || bash hack/setup.sh
    # Line 1: the uid; line 2: the body directory's path in the container; then the config.
    .venv/bin/python -c '
import sys
from dockyard_operator import model
from dockyard_operator.builders import deployment, nginx_configmap
print(deployment.NGINX_UID)
print(nginx_configmap.NginxPaths().body_dir)
sys.stdout.write(nginx_configmap.render(nginx=model.Nginx(), body_files=True))  # render_for, on a volume
' >"$t/rendered"
    uid=$(sed -n 1p "$t/rendered")
    bodies=$(sed -n 2p "$t/rendered")
    sed 1,2d "$t/rendered" >"$t/conf/nginx.conf"
    grep -q "client_body_temp_path $bodies;" "$t/conf/nginx.conf" || die "rendered nginx.conf writes no bodies to $bodies"
    # The volume as the Pod has it: owned by the pod's fsGroup (the registry's uid), the body directory in it.
    mkdir -p "$t/data/${bodies##*/}"
    chown -R "$uid:$uid" "$t/data"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=dockyard-nginx-check \
        -keyout "$t/tls/tls.key" -out "$t/tls/tls.crt" 2>/dev/null
    chmod 0644 "$t/tls/tls.key" "$t/tls/tls.crt" "$t/conf/nginx.conf"  # a Secret volume's default mode
    # shellcheck disable=SC2016  # expanded by the container's bash
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --user "$uid:$uid" \
        --tmpfs /tmp --tmpfs /var/cache/nginx \
        -v "$t/conf:/etc/dockyard/nginx:ro" -v "$t/tls:/etc/dockyard/tls:ro" -v "$t/data:/var/lib/registry:ro" \
        -v "$t/data/${bodies##*/}:$bodies" -e "BODIES=$bodies" \
        "$NGINX_IMAGE" bash -c '
set -eu
conf=/etc/dockyard/nginx/nginx.conf
nginx -V 2>&1 | tr " " "\n" | grep -x -- --with-http_auth_request_module
nginx -e stderr -c "$conf" -t
nginx -e stderr -c "$conf" -g "daemon off;" &
pid=$!
for _ in $(seq 50); do (exec 4<>/dev/tcp/127.0.0.1/5443) 2>/dev/null && break; sleep 0.1; done
exec 4<>/dev/tcp/127.0.0.1/5443
printf "GET /v2/ HTTP/1.0\r\n\r\n" >&4
read -r status <&4
exec 4<&-
# What this uid (the workers) may write on the volume: the body directory, nothing else.
touch "$BODIES/0000000001" && rm "$BODIES/0000000001" && echo "body directory writable"
touch /var/lib/registry/blob 2>/dev/null || echo "data read-only"
kill -QUIT "$pid"
wait "$pid"
echo "plain HTTP to the TLS port -> $status"
')
    expect '^--with-http_auth_request_module$' "$out"
    expect '^body directory writable$' "$out"
    expect '^data read-only$' "$out"
    expect '^plain HTTP to the TLS port -> HTTP/1\.1 400 ' "$out"
    log "$NGINX_IMAGE: the operator's nginx.conf (body files) as $uid, read-only root: nginx -t ok, serving on 5443"
}

check_pause() {
    local out c start code
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" "$PAUSE_IMAGE" -v)
    expect '^pause ' "$out"
    # Runs until SIGTERM, then exits 0 at once (podman stop would kill it after 10 s otherwise).
    c=$(pm run -d "${LIMITS[@]}" "${LOCKED[@]}" "$PAUSE_IMAGE")
    start=$SECONDS
    pm stop --time 10 "$c" >/dev/null
    code=$(pm inspect --format '{{.State.ExitCode}}' "$c")
    pm rm "$c" >/dev/null
    if [ "$code" != 0 ] || [ $((SECONDS - start)) -ge 5 ]; then
        die "$PAUSE_IMAGE: exit code $code, $((SECONDS - start)) s after SIGTERM"
    fi
}

check_busybox() {
    local out
    # shellcheck disable=SC2016  # expanded by the container's shell
    out=$(pm "${RUN[@]}" "${LOCKED[@]}" --user 65534:65534 "$BUSYBOX_IMAGE" \
        sh -ec 'ls /bin/sh /usr/bin/nc /bin/busybox >/dev/null; echo "uid $(id -u)"')
    expect '^uid 65534$' "$out"
}

# --- the images ---------------------------------------------------------------------------------------------
if want python; then
    EXTRA_MMDEBSTRAP=()
    IMPORT_CHANGES=("ENV=PATH=$DEFAULT_PATH" "ENV=LANG=C.UTF-8" 'CMD=["python3"]')
    debian_image "$PYTHON_IMAGE" python3,python3-venv,python-is-python3,ca-certificates
fi

if want nginx; then
    # Like the upstream image: /var/cache/nginx belongs to uid 101 (and is mode 1777: `podman run --tmpfs`
    # gives the tmpfs the directory's mode but not its owner), the default log files are stdout/stderr, SIGQUIT
    # stops it gracefully. In a Pod the emptyDirs (mode 0777) make the first two moot (docs/images.md).
    # shellcheck disable=SC2016  # $1 (the chroot) is expanded by mmdebstrap's hook shell
    EXTRA_MMDEBSTRAP=(--customize-hook='install -d -m 1777 -o 101 -g 101 "$1/var/cache/nginx"
ln -sf /dev/stdout "$1/var/log/nginx/access.log"
ln -sf /dev/stderr "$1/var/log/nginx/error.log"')
    IMPORT_CHANGES=("ENV=PATH=$DEFAULT_PATH" 'CMD ["nginx", "-g", "daemon off;"]' 'STOPSIGNAL=SIGQUIT'
        'EXPOSE=80')
    debian_image "$NGINX_IMAGE" nginx
fi

if want pause; then
    cflags=(-static -Os -s -Wall -Wextra -Werror)
    inputs=$( { cat hack/pause/pause.c; printf '%s\n' "${cflags[@]}"; gcc --version | head -1; } | digest)
    if ! up_to_date "$PAUSE_IMAGE" "$inputs"; then
        log "$PAUSE_IMAGE: gcc ${cflags[*]} hack/pause/pause.c"
        mkdir -p "$WORK/pause"
        gcc "${cflags[@]}" -o "$WORK/pause/pause" hack/pause/pause.c
        # The upstream pause image's user; the sandbox needs no privileges.
        dir_image "$PAUSE_IMAGE" "$WORK/pause" "$inputs" 'ENTRYPOINT=["/pause"]' 'USER=65535:65535'
    fi
fi

if want busybox; then
    bb=$(dpkg -L busybox-static | grep -m1 -E '/bin/busybox$')
    bb_layout=(bin sbin usr/bin usr/sbin etc root home tmp var/tmp proc sys dev)
    inputs=$( { dpkg-query -W -f '${Package} ${Version}\n' busybox-static; sha256sum <"$bb";
        printf '%s\n' "${bb_layout[@]}" v1; } | digest)
    if ! up_to_date "$BUSYBOX_IMAGE" "$inputs"; then
        log "$BUSYBOX_IMAGE: $bb (busybox-static $(dpkg-query -W -f '${Version}' busybox-static))"
        r=$WORK/busybox
        for d in "${bb_layout[@]}"; do mkdir -p "$r/$d"; done
        chmod 1777 "$r/tmp" "$r/var/tmp"
        chmod 0700 "$r/root"
        install -m 0755 "$bb" "$r/bin/busybox"
        # `busybox --install -s`, done from outside: every applet a symlink at its usual place.
        "$bb" --list-full | while read -r applet; do
            [ "$applet" = bin/busybox ] && continue
            mkdir -p "$r/$(dirname "$applet")"
            ln -sf /bin/busybox "$r/$applet"
        done
        printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
            >"$r/etc/passwd"
        printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$r/etc/group"
        dir_image "$BUSYBOX_IMAGE" "$r" "$inputs" "ENV=PATH=$DEFAULT_PATH" 'CMD=["sh"]'
    fi
fi

# The shipped Dockerfiles on the local python base; podman's layer cache makes a warm build take seconds.
# pip in the build stage trusts the host's CA bundle (a no-op where PyPI is reached directly) and uses the
# host's network (no bridge to set up); neither mount reaches the final stage, which only copies /opt/dockyard.
# podman 4.3's layer cache ignores a changed --build-arg value (the LABEL step that uses REVISION stays cached
# with the old one), so the revision is also set with --label: a step of its own whose cache key is its text.
revision=${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
build_flags=(--pull=never --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "REVISION=$revision"
    --label "org.opencontainers.image.revision=$revision"
    --label "org.opencontainers.image.base.name=$PYTHON_IMAGE" --label "$LABEL_KEY=")  # not the base's inputs
ca=${DOCKYARD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$ca" ]; then
    printf '[global]\ncert = /etc/dockyard-build/ca-certificates.crt\n' >"$WORK/pip.conf"
    build_flags+=(--volume "$ca:/etc/dockyard-build/ca-certificates.crt:ro"
        --volume "$WORK/pip.conf:/etc/pip.conf:ro")
fi
dockerfile_image() {  # NAME DOCKERFILE
    local before
    before=$(image_id "$1")
    log "$1: podman build -f $2"
    pm build "${build_flags[@]}" -f "$2" -t "$1" .
    if [ "$(image_id "$1")" != "$before" ]; then
        remove_if_untagged "$before"
        log "$1: built ($(image_size "$1"))"
    else
        log "$1: up to date"
    fi
}
if want operator; then dockerfile_image "$OPERATOR_IMAGE" operator/Dockerfile; fi
if want registry; then dockerfile_image "$REGISTRY_IMAGE" registry_image/Dockerfile; fi

# --- archives -----------------------------------------------------------------------------------------------
# oci-archive: podman writes the full name as org.opencontainers.image.ref.name, which `ctr images import`
# takes as the image name (docker-archive keeps names too, but converts the manifest to Docker's format).
# Each image is checked before its archive is (re)written, so a failed check is retried on the next run.
fresh=()
results=()
save() {  # SHORT NAME FILE
    local short=$1 name=$2 archive=$ARCHIVES/$3.tar id
    id=$(image_id "$name")
    [ -n "$id" ] || die "$name: no such image"
    if [ "$verify_all" = 1 ] || [ ! -f "$archive" ] || [ "$(cat "$archive.id" 2>/dev/null)" != "$id $name" ]; then
        log "$name: checking (as the cluster runs it)"
        "check_$short"
        log "$name: saving $archive"
        rm -f "$archive.id"
        pm save --quiet --format oci-archive -o "$archive.tmp" "$name"
        mv -f "$archive.tmp" "$archive"
        printf '%s %s\n' "$id" "$name" >"$archive.id"
        fresh+=("$name" "$archive")
    fi
    results+=("$name $archive")
}
if want python; then save python "$PYTHON_IMAGE" python-3.11-bookworm; fi
if want operator; then save operator "$OPERATOR_IMAGE" "dockyard-operator-$TAG"; fi
if want registry; then save registry "$REGISTRY_IMAGE" "dockyard-registry-$TAG"; fi
if want nginx; then save nginx "$NGINX_IMAGE" nginx-bookworm; fi
if want pause; then save pause "$PAUSE_IMAGE" pause-3.10; fi
if want busybox; then save busybox "$BUSYBOX_IMAGE" busybox-stable; fi

# New archives go through a real `ctr -n k8s.io images import` into a containerd of our own (root, state,
# sockets and opt dir in a temp dir; CRI off, so nothing is written under /run/containerd), then it is stopped
# and its directory removed.
verify_import() (
    local t pid=""
    t=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-images-ctr.XXXXXX")
    # shellcheck disable=SC2317  # run by the trap
    cleanup() {
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
        awk -v t="$t/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
            umount "$m" || umount -l "$m" || true
        done
        rm -rf "$t"
    }
    trap cleanup EXIT
    cat >"$t/config.toml" <<EOF
version = 2
root = "$t/root"
state = "$t/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$t/containerd.sock"
[ttrpc]
  address = "$t/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$t/opt"
EOF
    containerd --config "$t/config.toml" >"$t/containerd.log" 2>&1 &
    pid=$!
    local ctr=(ctr --address "$t/containerd.sock" -n k8s.io)
    for _ in $(seq 100); do
        "${ctr[@]}" version >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$t/containerd.log"; die "containerd did not start"; }
        sleep 0.1
    done
    local names=() name archive
    while [ $# -gt 0 ]; do
        name=$1 archive=$2
        shift 2
        log "$name: ctr images import $archive"
        "${ctr[@]}" images import "$archive" >/dev/null
        names+=("$name")
    done
    local listed
    listed=$("${ctr[@]}" images ls -q)
    for name in "${names[@]}"; do
        grep -qxF "$name" <<<"$listed" || die "ctr images ls lacks $name after import; it has: $listed"
    done
    log "containerd import ok: ${names[*]}"
)
if [ ${#fresh[@]} -gt 0 ]; then
    verify_import "${fresh[@]}"
fi

printf '%s\n' "${results[@]}" >&3
