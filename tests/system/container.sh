#!/usr/bin/env bash
# The container part of the system stage: builds deploy/Dockerfile with Debian's docker.io and runs
# the image as docs/SERVICE.md ("Containers") says: the daemon in one container, clients in others
# that share only its socket volume. Checks that a segment written in one client container is read
# in another through the same memory (no copy), and the documented /dev/shm and memory advice.
#
# Usage: tests/system/container.sh BUILD_DIR (as root; ./scripts/dev test system runs it).
# Starts its own dockerd (data root cached in BUILD_DIR/system-cache/docker, socket under
# /run/shmlease-test-docker-PID, no bridge and no iptables rules) and stops it at exit. With no
# registry, the base image is imported from the cached Debian root; the image is built with the
# legacy builder (DOCKER_BUILDKIT=0) from the binaries in BUILD_DIR (--build-arg SHMLEASE_PREBUILT).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for tool in dockerd docker c++ pkg-config; do
  command -v "$tool" >/dev/null || sys_die "$tool is not installed (./scripts/dev test system installs docker.io)"
done
[[ -x $SYS_BUILD_DIR/server/shmleased && -x $SYS_BUILD_DIR/client/shmlease ]] ||
  sys_die "no shmleased and shmlease in $SYS_BUILD_DIR: build first"

base_root=$(sys_debian_root)
rm -rf "$SYS_RUN"
mkdir -p "$SYS_RUN"
sys_on_exit 'rm -rf "$SYS_RUN"; rmdir "${SYS_RUN%/*}" 2>/dev/null'

# --- Our own dockerd ---
run_dir=/run/shmlease-test-docker-$$
mkdir -p "$run_dir"
sys_on_exit 'rm -rf "$run_dir"'
export DOCKER_HOST=unix://$run_dir/docker.sock DOCKER_BUILDKIT=0 DOCKER_CONFIG=$run_dir/client
setsid dockerd --data-root "$SYS_CACHE/docker" --exec-root "$run_dir/exec" --pidfile "$run_dir/dockerd.pid" \
  -H "$DOCKER_HOST" --bridge=none --iptables=false --ip-masq=false </dev/null >"$SYS_RUN/dockerd.log" 2>&1 &
dockerd_pid=$!
stop_dockerd() {
  if kill -0 "$dockerd_pid" 2>/dev/null; then
    kill -TERM "$dockerd_pid"
    local end=$((SECONDS + 30))
    while kill -0 "$dockerd_pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      sys_log "dockerd did not stop in 30 s; killing it" >&2
      kill -KILL "$dockerd_pid"
    fi
  fi
  wait "$dockerd_pid" 2>/dev/null
  # Nothing of it may stay: containerd is in dockerd's process group (setsid); each container's
  # shim has a session of its own, found by this run's exec root in its command line, and its
  # children are the containers' PID 1s (killing one ends its container).
  kill -KILL -- "-$dockerd_pid" 2>/dev/null
  local shim
  for shim in $(pgrep -f -- "-address $run_dir/exec/"); do
    sys_log "a container shim outlived dockerd, killing it and its container: $shim" >&2
    kill -KILL $(pgrep -P "$shim") "$shim" 2>/dev/null
  done
  # Mounts dockerd left under its directories (none after a clean stop).
  awk -v a="$SYS_CACHE/docker" -v b="$run_dir" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' \
    /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
}
sys_on_exit 'stop_dockerd'
sys_wait 60 docker version ||
  { tail -n 30 "$SYS_RUN/dockerd.log" >&2; sys_die "dockerd did not start (log above)"; }
sys_pass "dockerd $(docker version -f '{{.Server.Version}}') started on its own socket and data root"
# This data root is the stage's alone: containers and volumes in it are left from a run that
# was killed before its cleanup.
stale=$(docker ps -aq)
[[ -z $stale ]] || { sys_log "removing containers left from an earlier run: $stale" && docker rm -f $stale >/dev/null; }
docker volume ls -q | xargs -r docker volume rm -f >/dev/null

# Everything a run creates carries this suffix, so cleanup removes exactly that.
tag=$$
volume=shmlease-run-$tag
sys_on_exit 'docker ps -aq --filter "label=shmlease-test=$tag" | xargs -r docker rm -f >/dev/null; docker volume rm -f "$volume" "$volume-small" "$volume-tight" >/dev/null'

# --- The base image, from the Debian root (cached: re-imported when the root changes) ---
base=shmlease-test/debian:12
root_id=$(sha256sum <"$base_root.stamp" | cut -c1-16)$(stat -c %Y "$base_root")
if [[ $(docker image inspect -f '{{index .Config.Labels "shmlease.root"}}' "$base" 2>/dev/null) != "$root_id" ]]; then
  t0=$SECONDS
  tar -C "$base_root" -c . | docker import --change "LABEL shmlease.root=$root_id" - "$base" >/dev/null ||
    sys_die "docker import of the Debian root failed"
  sys_log "imported the Debian root as $base in $((SECONDS - t0)) s (cached)"
fi

# --- Build deploy/Dockerfile from the binaries at hand ---
context=$SYS_RUN/context
DESTDIR=$context/prebuilt cmake --install "$SYS_BUILD_DIR" --strip >"$SYS_RUN/install.log" ||
  { cat "$SYS_RUN/install.log" >&2; sys_die "cmake --install into the image's context failed"; }
# A fixed tag, kept in the cached data root: an unchanged build reuses every layer next time.
image=shmleased:system-test
t0=$SECONDS
docker build -q -f "$SYS_SOURCE_DIR/deploy/Dockerfile" --build-arg "DEBIAN_IMAGE=$base" \
  --build-arg SHMLEASE_PREBUILT=prebuilt -t "$image" "$context" >"$SYS_RUN/build.log" 2>&1 ||
  { cat "$SYS_RUN/build.log" >&2; sys_die "docker build -f deploy/Dockerfile failed"; }
sys_on_exit 'docker image prune -f >/dev/null'
user=$(docker image inspect -f '{{.Config.User}}' "$image")
[[ $user == 10001:10001 ]] || sys_die "the image runs as '$user', not 10001:10001"
sys_pass "docker build -f deploy/Dockerfile (legacy builder, prebuilt binaries) in $((SECONDS - t0)) s; runs as $user"

# The test's client that writes through its mapping only (holder.cpp), for the client containers.
mkdir -p "$SYS_RUN/bin"
flags=$(PKG_CONFIG_SYSROOT_DIR=$context/prebuilt PKG_CONFIG_LIBDIR=$context/prebuilt/usr/local/lib/pkgconfig \
  pkg-config --cflags --libs shmlease) || sys_die "pkg-config finds no shmlease in the installed tree"
# shellcheck disable=SC2086 # the flags are words
c++ -std=c++20 -O1 -o "$SYS_RUN/bin/holder" "$SYS_SOURCE_DIR/tests/system/holder.cpp" $flags ||
  sys_die "the test client does not build against the installed library"

# --- The daemon in one container, as docs/SERVICE.md runs it ---
docker volume create "$volume" >/dev/null
common=(--label "shmlease-test=$tag" --network none)
# A client container: another user (1000, as an application's image would have) with only the
# socket volume and the group 10001, as docs/SERVICE.md says.
# (stdin only for put: docker run -i would otherwise take this script's.)
client() { docker run --rm "${common[@]}" --user 1000:1000 --group-add 10001 -v "$volume:/run/shmlease" --entrypoint shmlease "$image" "$@"; }
client_put() { docker run --rm -i "${common[@]}" --user 1000:1000 --group-add 10001 -v "$volume:/run/shmlease" --entrypoint shmlease "$image" put "$@"; }
daemon=shmleased-$tag
docker run -d "${common[@]}" --name "$daemon" --shm-size=256m -m 400m -v "$volume:/run/shmlease" "$image" >/dev/null
sys_wait 20 client ping || { docker logs "$daemon" >&2; sys_die "the daemon container does not answer shmlease ping"; }
sys_pass "the daemon runs in container $daemon (--shm-size=256m -m 400m); a client container of user 1000 with only the socket volume and --group-add 10001 pings it"

status=0
out=$(docker run --rm "${common[@]}" --user 1000:1000 -v "$volume:/run/shmlease" --entrypoint shmlease "$image" ping 2>&1) || status=$?
((status != 0)) && [[ $out == *ermission* ]] || sys_die "a client without group 10001 was not refused for permission: exit $status, '$out'"
sys_pass "a client container of user 1000 without --group-add 10001 is refused: '$out'"

# --- A segment written in one container is read in another, through the same memory ---
head -c 4194304 /dev/urandom >"$SYS_RUN/frames.bin"
client create frames 4MiB --mode 0660 >/dev/null
client_put frames <"$SYS_RUN/frames.bin" >/dev/null
client cat frames | cmp -s - "$SYS_RUN/frames.bin" || sys_die "another container reads other bytes than one wrote"
# The memory is a sealed memfd the daemon (PID 1 of its container) holds, private to its user;
# nothing of it has a name in any /dev/shm.
listing=$(docker exec "$daemon" ls -A /dev/shm)
[[ -z $listing ]] || sys_die "the daemon container's /dev/shm is not empty (sealed segments have no name there): $listing"
memfds=$(docker exec "$daemon" sh -c 'for f in /proc/1/fd/*; do case $(readlink "$f") in /memfd:*) stat -L -c "%u %a %s" "$f";; esac; done')
grep -q '^10001 600 4194304$' <<<"$memfds" || sys_die "the daemon holds no private 4 MiB memfd: $memfds"
client_shm=$(docker run --rm "${common[@]}" --entrypoint ls "$image" -A /dev/shm)
[[ -z $client_shm ]] || sys_die "a client container's /dev/shm is not empty: $client_shm"
sys_pass "4 MiB put by one client container read back by another; the memory is a sealed memfd of the daemon's (uid 10001, mode 0600), every /dev/shm stays empty"

# A client that only writes into its mapped lease (no request carries bytes), and another
# container that reads: the same pages.
client create live 1MiB --mode 0660 >/dev/null
mkfifo "$SYS_RUN/holder.in"
docker run --rm -i "${common[@]}" --user 1000:1000 --group-add 10001 -v "$volume:/run/shmlease" -v "$SYS_RUN/bin:/test:ro" \
  --entrypoint /test/holder "$image" live <"$SYS_RUN/holder.in" >"$SYS_RUN/holder.out" 2>&1 &
holder=$!
exec 3>"$SYS_RUN/holder.in"
sys_on_exit 'exec 3>&-; wait "$holder" 2>/dev/null'
holder_lines=0
ask() {
  holder_lines=$((holder_lines + 1))
  [[ -z $1 ]] || echo "$1" >&3
  sys_wait 30 bash -c "(( \$(wc -l <'$SYS_RUN/holder.out') >= $holder_lines ))" ||
    sys_die "the holder did not answer '$1': $(cat "$SYS_RUN/holder.out")"
  answer=$(sed -n "${holder_lines}p" "$SYS_RUN/holder.out")
}
ask ""
[[ $answer == ready* ]] || sys_die "the holder did not start: '$answer'"
for value in 7 9; do
  ask "fill $value"
  [[ $answer == filled ]] || sys_die "the holder could not fill its lease: '$answer'"
  head -c 1048576 /dev/zero | tr '\0' "\\$(printf %o "$value")" >"$SYS_RUN/live.$value"
  client cat live | cmp -s - "$SYS_RUN/live.$value" ||
    sys_die "bytes written through the mapping in one container are not what another reads"
done
exec 3>&-
wait "$holder" || sys_die "the holder failed: $(cat "$SYS_RUN/holder.out")"
sys_pass "bytes a client container writes only through its mapping (twice, 7s then 9s) are read at once by another container: one copy of the memory, shared"
client rm frames
client rm live

# --- The documented /dev/shm advice: Docker's default 64 MB is too small; --shm-size fixes it ---
small=shmleased-small-$tag
docker run -d "${common[@]}" --name "$small" -v "$volume-small:/run/shmlease" "$image" >/dev/null
small_client() { docker run --rm "${common[@]}" --user 1000:1000 --group-add 10001 -v "$volume-small:/run/shmlease" --entrypoint shmlease "$image" "$@"; }
sys_wait 20 small_client ping || { docker logs "$small" >&2; sys_die "the daemon with the default /dev/shm does not start"; }
docker logs "$small" >"$SYS_RUN/small.log" 2>&1
warning=$(grep -m1 -o '/dev/shm holds only.*' "$SYS_RUN/small.log") ||
  sys_die "the daemon with Docker's default /dev/shm does not warn: $(cat "$SYS_RUN/small.log")"
status=0
out=$(small_client create big 100MiB 2>&1) || status=$?
((status == 8)) || sys_die "a 100 MiB segment under the default 64 MB /dev/shm was not refused with exit 8: exit $status, '$out'"
client create big 100MiB >/dev/null || sys_die "a 100 MiB segment is refused with --shm-size=256m"
client rm big
sys_pass "default /dev/shm: the daemon warns ('$warning') and a 100 MiB create fails (exit 8: '$out'); with --shm-size=256m it succeeds"

# --- The documented memory advice: segments' pages count against the daemon container's -m ---
tight=shmleased-tight-$tag
docker run -d "${common[@]}" --name "$tight" --shm-size=256m -m 64m --memory-swap 64m \
  -v "$volume-tight:/run/shmlease" "$image" >/dev/null
tight_client() { docker run --rm "${common[@]}" -e SHMLEASE_RECONNECT_TIMEOUT_MS=0 --user 1000:1000 --group-add 10001 -v "$volume-tight:/run/shmlease" --entrypoint shmlease "$image" "$@"; }
sys_wait 20 tight_client ping || { docker logs "$tight" >&2; sys_die "the daemon with -m 64m does not start"; }
status=0
out=$(tight_client create big 100MiB 2>&1) || status=$?
sys_wait 10 bash -c "[[ \$(docker inspect -f '{{.State.Running}}' '$tight') == false ]]" || true
oom=$(docker inspect -f '{{.State.OOMKilled}} {{.State.ExitCode}}' "$tight")
sys_log "a 100 MiB create with --shm-size=256m -m 64m: exit $status, '$out'; daemon container OOMKilled and exit code: $oom"
[[ $oom == "true 137" ]] || sys_die "with -m below --shm-size the daemon was not OOM-killed as docs/SERVICE.md says: $oom"
sys_pass "memory advice: with -m 64m below --shm-size=256m, a 100 MiB segment got the daemon container OOM-killed (client: exit $status); keep -m above --shm-size plus ~128 MiB"

docker rm -f "$daemon" "$small" "$tight" >/dev/null
sys_check_dev_shm
