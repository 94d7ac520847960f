#!/usr/bin/env bash
# The systemd part of the system stage: boots a real systemd (Debian 12's, as PID 1) with
# systemd-nspawn in a copy of the cached Debian root, installs BUILD_DIR into it as README's
# "Run it as a service" says, and runs tests/system/inside.sh in it, which checks the service
# (socket activation, sd_notify, access by group, journal, reload, restart and kill -9, sandbox).
#
# Usage: tests/system/systemd.sh BUILD_DIR (as root; ./scripts/dev test system runs it).
# The host's PID 1 need not be systemd: nspawn runs with --register=no --keep-unit, and commands
# reach the container through nsenter into the namespaces of its PID 1 (machinectl cannot).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for tool in systemd-nspawn nsenter pkg-config c++; do
  command -v "$tool" >/dev/null || sys_die "$tool is not installed (./scripts/dev test system installs it)"
done
[[ -x $SYS_BUILD_DIR/server/shmleased && -x $SYS_BUILD_DIR/client/shmlease ]] ||
  sys_die "no shmleased and shmlease in $SYS_BUILD_DIR: build first"

base=$(sys_debian_root)
rm -rf "$SYS_RUN"
mkdir -p "$SYS_RUN"
sys_on_exit 'rm -rf "$SYS_RUN"; rmdir "${SYS_RUN%/*}" 2>/dev/null'
root=$SYS_RUN/root
cp -a --reflink=auto "$base" "$root"

# Exactly what README says, into the container's root: `cmake --install` (DESTDIR; the prefix is
# the build's, /usr/local). sysusers, tmpfiles and systemctl run inside (inside.sh).
DESTDIR=$root cmake --install "$SYS_BUILD_DIR" >"$SYS_RUN/install.log" ||
  { cat "$SYS_RUN/install.log" >&2; sys_die "cmake --install into the container's root failed"; }
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:[A-Z]*=//p' "$SYS_BUILD_DIR/CMakeCache.txt")
sys_log "installed $SYS_BUILD_DIR into the root (prefix $prefix)"

# The test's own files, outside the installed tree: inside.sh, a client that holds a lease across
# restarts, built against the installed library as a user's program would be, and a probe of the
# unit's sandbox.
mkdir -p "$root/srv/system-test"
cp "$SYS_SOURCE_DIR/tests/system/inside.sh" "$root/srv/system-test/"
flags=$(PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=$root$prefix/lib/pkgconfig \
  pkg-config --cflags --libs shmlease) || sys_die "pkg-config finds no shmlease in the installed root"
# shellcheck disable=SC2086 # the flags are words
c++ -std=c++20 -O1 -o "$root/srv/system-test/holder" "$SYS_SOURCE_DIR/tests/system/holder.cpp" $flags ||
  sys_die "the test client does not build against the installed library"
c++ -std=c++20 -O1 -o "$root/srv/system-test/sandbox_probe" "$SYS_SOURCE_DIR/tests/system/sandbox_probe.cpp" ||
  sys_die "the sandbox probe does not build"

# Boot. setsid: nspawn gets no terminal and is the leader of its own process group, so cleanup
# can end it and everything it started.
machine=shmlease-test-$$
setsid systemd-nspawn --quiet --register=no --keep-unit --private-network -M "$machine" \
  -D "$root" -b </dev/null >"$SYS_RUN/console.log" 2>&1 &
nspawn=$!
# The container's PID 1: the descendant of nspawn whose pid in its own namespace is 1, once it
# runs systemd (before its exec it is still a copy of nspawn); with "any", whatever it runs.
container_init() {
  local p
  for p in $(pgrep -P "$nspawn") $(for c in $(pgrep -P "$nspawn"); do pgrep -P "$c"; done); do
    if [[ $(awk '/^NSpid:/ {print $NF}' "/proc/$p/status" 2>/dev/null) == 1 ]] &&
      [[ ${1:-} == any || $(cat "/proc/$p/comm" 2>/dev/null) == systemd ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
stop_container() {
  local init=${pid1:-}
  [[ -n $init ]] || init=$(container_init any) || init=""
  if kill -0 "$nspawn" 2>/dev/null; then
    # nspawn turns SIGTERM into a clean shutdown of the container (SIGRTMIN+3 to its PID 1).
    if [[ -z ${pid1:-} ]] || ! nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1; then
      kill -TERM "$nspawn"
    fi
    local end=$((SECONDS + 30))
    while kill -0 "$nspawn" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
    if kill -0 "$nspawn" 2>/dev/null; then
      sys_log "the container did not power off in 30 s; killing it" >&2
      [[ -z $init ]] || kill -KILL "$init" 2>/dev/null
      kill -KILL -- "-$nspawn" 2>/dev/null
    fi
    wait "$nspawn" 2>/dev/null
  fi
  # The container's PID 1 can outlive nspawn (it is not in nspawn's process group): anything
  # still running in this run's root is ended (killing the PID 1 of the container's namespace
  # ends all of it).
  local proc left=()
  for proc in /proc/[0-9]*; do
    [[ $(readlink "$proc/root" 2>/dev/null) == "$root"* ]] && left+=("${proc#/proc/}")
  done
  if ((${#left[@]})); then
    sys_log "processes of the container outlived nspawn, killing them: ${left[*]}" >&2
    kill -KILL "${left[@]}" 2>/dev/null
  fi
}
sys_on_exit 'stop_container'

boot_start=$SECONDS
sys_wait 30 container_init || { cat "$SYS_RUN/console.log" >&2; sys_die "systemd-nspawn started no container running systemd as PID 1"; }
pid1=$(container_init)
inside() {
  nsenter -t "$pid1" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 TERM=dumb LANG=C.UTF-8 "$@"
}
# PID 1 exists before its bus does: wait for its private socket, then for the boot to end.
sys_wait 30 test -S "/proc/$pid1/root/run/systemd/private" ||
  { cat "$SYS_RUN/console.log" >&2; sys_die "the container's systemd opened no bus in 30 s"; }
state=$(inside timeout 60 systemctl is-system-running --wait 2>&1) || true
[[ $state == running || $state == degraded ]] ||
  { cat "$SYS_RUN/console.log" >&2; sys_die "the container's systemd did not finish booting (state: $state)"; }
if [[ $state == degraded ]]; then
  sys_log "booted degraded; failed units: $(inside systemctl --failed --plain --no-legend | tr '\n' ' ')"
fi
sys_pass "systemd $(inside systemctl --version | awk 'NR == 1 {print $2}') booted as PID 1 in the container in $((SECONDS - boot_start)) s"

inside bash /srv/system-test/inside.sh "$prefix" || sys_die "a check inside the container failed (above)"
SYS_PASSED=$((SYS_PASSED + $(cat "$root/srv/system-test/passed")))

stop_container
sys_pass "the container powered off"
sys_check_dev_shm
