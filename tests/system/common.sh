# Shared by the parts of the system stage (systemd.sh, container.sh, pod.sh); sourced, not run.
#
# Each part is run as `PART.sh BUILD_DIR` by `./scripts/dev test system`, as root. What it needs
# between runs (the Debian root, the Docker data root and its images) is cached under
# BUILD_DIR/system-cache; what one run makes goes under BUILD_DIR/system-run/PART and is removed
# at exit, with every process it started (cleanup handlers run in reverse order of registration).
set -euo pipefail

SYS_SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SYS_PART=$(basename "$0" .sh)
[[ $# -ge 1 ]] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
SYS_BUILD_DIR=$(cd "$1" && pwd)
SYS_CACHE=$SYS_BUILD_DIR/system-cache
SYS_RUN=$SYS_BUILD_DIR/system-run/$SYS_PART
SYS_START=$SECONDS
SYS_PASSED=0

# The packages the Debian root holds: systemd to boot, what the binaries link against (ldd on
# shmleased and shmlease: spdlog, fmt, toml++, libsystemd), and the tools the checks use.
SYS_ROOT_PACKAGES=(systemd systemd-sysv dbus libspdlog1.10 libfmt9 libtomlplusplus3 libsystemd0
  passwd util-linux procps)

sys_log() { echo "system/$SYS_PART: $*"; }
sys_die() {
  echo "system/$SYS_PART: error: $*" >&2
  exit 1
}
# One check that passed; a failed check calls sys_die with what it saw.
sys_pass() {
  SYS_PASSED=$((SYS_PASSED + 1))
  sys_log "ok $SYS_PASSED: $*"
}

SYS_CLEANUPS=()
sys_on_exit() { SYS_CLEANUPS+=("$1"); }
sys_cleanup() {
  local status=$? i
  set +e
  for ((i = ${#SYS_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${SYS_CLEANUPS[i]}"
  done
  if ((status == 0)); then
    sys_log "$SYS_PASSED checks passed in $((SECONDS - SYS_START)) s"
  else
    echo "system/$SYS_PART: FAILED (exit $status) after $SYS_PASSED checks, $((SECONDS - SYS_START)) s" >&2
  fi
  exit "$status"
}
trap sys_cleanup EXIT
trap 'exit 130' INT TERM

((EUID == 0)) || sys_die "the system stage boots containers and must run as root"

# Waits up to $1 seconds for the command after it to succeed.
sys_wait() {
  local timeout=$1 end
  shift
  end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# The Debian mirror this machine's own apt sources name (deb822 .sources files or one-line lists).
sys_mirror() {
  local file line
  for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $file ]] || continue
    while read -r line; do
      case $line in
        URIs:*debian*) read -r line _ <<<"${line#URIs:}" ;;
        deb\ *debian*) line=$(awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' <<<"$line") ;;
        *) continue ;;
      esac
      [[ $line == *security* || -z $line ]] && continue
      echo "${line%/}"
      return
    done < <(sed 's/^[[:space:]]*//' "$file")
  done
  return 1
}

# A minimal Debian 12 root with SYS_ROOT_PACKAGES, made once by debootstrap and kept under
# SYS_CACHE/debian-root; remade when the package list changes. Never modified afterwards: each
# use copies it. Prints its path.
sys_debian_root() {
  local root=$SYS_CACHE/debian-root want mirror tmp
  want="bookworm minbase ${SYS_ROOT_PACKAGES[*]}"
  if [[ -f $root.stamp && $(<"$root.stamp") == "$want" && -x $root/lib/systemd/systemd ]]; then
    echo "$root"
    return
  fi
  command -v debootstrap >/dev/null || sys_die "debootstrap is not installed (./scripts/dev test system installs it)"
  mirror=$(sys_mirror) || sys_die "no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d"
  rm -rf "$root" "$root.stamp" "$root.tmp"
  mkdir -p "$SYS_CACHE"
  tmp=$root.tmp
  sys_log "debootstrap --variant=minbase bookworm from $mirror into $root (once; cached)" >&2
  local t0=$SECONDS
  if ! debootstrap --variant=minbase --include="$(IFS=, && echo "${SYS_ROOT_PACKAGES[*]}")" \
    bookworm "$tmp" "$mirror" >"$SYS_CACHE/debootstrap.log" 2>&1; then
    tail -n 20 "$SYS_CACHE/debootstrap.log" >&2
    rm -rf "$tmp"
    sys_die "debootstrap from $mirror failed (log: $SYS_CACHE/debootstrap.log)"
  fi
  # No package lists or downloaded packages are needed later.
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  mv "$tmp" "$root"
  echo "$want" >"$root.stamp"
  sys_log "Debian root made in $((SECONDS - t0)) s ($(du -sh "$root" | cut -f1))" >&2
  echo "$root"
}

# What the part left in the host's /dev/shm: objects that were not there before it ran and belong to
# a user other than root (the containers' users; tests of other stages running meanwhile on this
# host make root's objects, and the containers' own /dev/shm are checked from inside).
SYS_SHM_BEFORE=$(ls -A /dev/shm | sort)
sys_check_dev_shm() {
  local name left=()
  while read -r name; do
    [[ -n $name && -e /dev/shm/$name && $(stat -c %u "/dev/shm/$name") != 0 ]] && left+=("$name")
  done < <(comm -13 <(echo "$SYS_SHM_BEFORE") <(ls -A /dev/shm | sort))
  ((${#left[@]} == 0)) || sys_die "left in the host's /dev/shm: ${left[*]}"
}
