#!/usr/bin/env bash
# Runs inside the container booted by tests/system/systemd.sh, as root, with systemd as PID 1 and
# shmlease installed under PREFIX (cmake --install). Finishes the install as README's "Run it as a
# service" says (sysusers, tmpfiles, enable --now the socket), then checks the service the way an
# administrator and its users meet it. Writes the number of checks passed to DIR/passed.
#
# Usage: inside.sh PREFIX
set -euo pipefail
prefix=$1
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shmlease=$prefix/bin/shmlease
passed=0
echo 0 >"$dir/passed"

log() { echo "system/inside: $*"; }
pass() {
  passed=$((passed + 1))
  echo "$passed" >"$dir/passed"
  log "ok: $*"
}
die() {
  echo "system/inside: error: $*" >&2
  echo "---- systemctl status shmleased; the last 40 lines of its journal" >&2
  systemctl status --no-pager shmleased.socket shmleased.service >&2 || true
  journalctl -u shmleased --no-pager -n 40 >&2 || true
  exit 1
}
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}
as() {
  local user=$1
  shift
  runuser -u "$user" -- "$@"
}
main_pid() { systemctl show -p MainPID --value shmleased.service; }
# The first line of the service's journal that matches; fails if none does. (From a file: grep
# stopping early must not fail journalctl with SIGPIPE under pipefail.)
journal_line() {
  journalctl -u shmleased.service -o cat --no-pager >"$dir/journal.txt"
  grep -m1 -e "$1" "$dir/journal.txt"
}
# The hash of a segment's bytes as user alice reads them through a read lease.
segment_hash() { as alice "$shmlease" cat "$1" | sha256sum | cut -d' ' -f1; }

# --- Install, as README says (cmake --install already put the files under $prefix) ---
systemd-sysusers
systemd-tmpfiles --create shmlease.conf
systemctl daemon-reload
systemctl enable --now shmleased.socket 2>&1
getent group shmlease >/dev/null || die "systemd-sysusers made no group shmlease"
[[ $(stat -c '%U:%G %a' /run/shmlease) == "shmlease:shmlease 750" ]] ||
  die "/run/shmlease is $(stat -c '%U:%G %a' /run/shmlease), not shmlease:shmlease 750"
[[ $(stat -c '%U:%G %a' /run/shmlease/shmlease.sock) == "shmlease:shmlease 660" ]] ||
  die "the socket is $(stat -c '%U:%G %a' /run/shmlease/shmlease.sock), not shmlease:shmlease 660"
pass "installed as README says: sysusers made user and group shmlease, tmpfiles /run/shmlease (0750), systemd the socket (0660)"

useradd --create-home alice
usermod -aG shmlease alice
useradd --create-home bob

# --- Socket activation: nothing runs until the first connection ---
[[ $(systemctl is-active shmleased.socket) == active ]] || die "shmleased.socket is not active"
state=$(systemctl is-active shmleased.service) || true
[[ $state == inactive ]] || die "shmleased.service is $state before any client connected, not inactive"
as alice "$shmlease" ping || die "alice (group shmlease) cannot ping the daemon"
[[ $(systemctl is-active shmleased.service) == active ]] || die "the first connection did not start shmleased.service"
pass "socket activation: the service was inactive with the socket listening; alice's first ping started it (pid $(main_pid))"

# --- Readiness through sd_notify ---
[[ $(systemctl show -p Type --value shmleased.service) == notify ]] || die "the service is not Type=notify"
status=$(systemctl show -p StatusText --value shmleased.service)
[[ $status == *segments* || $status == *listening* ]] || die "no STATUS= from the daemon (StatusText='$status')"
pass "readiness: Type=notify, the daemon's sd_notify STATUS= reached systemd: '$status'"

# --- A member of the group creates, writes and reads segments; a non-member is refused ---
head -c 1048576 /dev/urandom >"$dir/frames.bin"
head -c 4096 /dev/urandom >"$dir/small.bin"
chmod 0644 "$dir"/*.bin
as alice "$shmlease" create frames 1MiB >/dev/null
as alice "$shmlease" put frames <"$dir/frames.bin"
as alice "$shmlease" create small 4096 --mode 0640 >/dev/null
as alice "$shmlease" put small <"$dir/small.bin"
as alice "$shmlease" cat frames | cmp - "$dir/frames.bin" || die "frames reads back other bytes than alice wrote"
as alice "$shmlease" cat small | cmp - "$dir/small.bin" || die "small reads back other bytes than alice wrote"
frames_hash=$(sha256sum <"$dir/frames.bin" | cut -d' ' -f1)
small_hash=$(sha256sum <"$dir/small.bin" | cut -d' ' -f1)
owner=$(as alice "$shmlease" --json stat frames)
[[ $owner == *"\"owner_uid\": $(id -u alice)"* || $owner == *"\"owner_uid\":$(id -u alice)"* ]] ||
  die "frames is not owned by alice's uid: $owner"
pass "alice (group shmlease) created frames (1 MiB) and small, wrote them with put and read them back with cat; owner uid $(id -u alice)"

status=0
out=$(as bob "$shmlease" ping 2>&1) || status=$?
((status != 0)) || die "bob (not in group shmlease) could ping the daemon"
[[ $out == *ermission* ]] || die "bob was refused without saying why: exit $status, '$out'"
status=0
as bob "$shmlease" cat frames >/dev/null 2>&1 || status=$?
((status != 0)) || die "bob (not in group shmlease) could read frames"
pass "bob (not in group shmlease) is refused: exit $status, '$out'"

# --- The log is in the journal ---
wait_for 5 journal_line "uid $(id -u alice)" ||
  die "the journal of shmleased.service has no line about alice's connection"
line=$(journal_line 'ready: listening on') || die "the journal has no 'ready: listening on' line"
pass "the daemon's log is in the journal (journalctl -u shmleased): '$line'"

# --- systemctl reload applies a config written after the daemon started ---
pid=$(main_pid)
[[ ! -e /etc/shmlease/shmleased.toml ]] || die "/etc/shmlease/shmleased.toml exists before the test wrote it"
as alice "$shmlease" create before-reload 64KiB >/dev/null || die "a 64 KiB segment cannot be created before the reload"
as alice "$shmlease" rm before-reload
install -d -m 0755 /etc/shmlease
printf 'max-segment-size = "16KiB"\nlog-level = "debug"\n' >/etc/shmlease/shmleased.toml
chmod 0644 /etc/shmlease/shmleased.toml
systemctl reload shmleased.service
wait_for 5 journal_line 'configuration reloaded' ||
  die "no 'configuration reloaded' in the journal after systemctl reload"
reload_line=$(journal_line 'reload: max-segment-size') || die "the journal does not show max-segment-size reloaded"
status=0
out=$(as alice "$shmlease" create after-reload 64KiB 2>&1) || status=$?
((status == 8)) || die "after the reload a 64 KiB segment (limit 16 KiB) was not refused with exit 8: exit $status, '$out'"
as alice "$shmlease" create after-reload 8KiB >/dev/null || die "an 8 KiB segment is refused after the reload"
as alice "$shmlease" rm after-reload
[[ $(main_pid) == "$pid" ]] || die "the reload restarted the daemon (pid $pid -> $(main_pid))"
rm /etc/shmlease/shmleased.toml
systemctl reload shmleased.service
pass "systemctl reload (same pid $pid) applied max-segment-size = 16KiB from a config written after the start: '$reload_line'; 64 KiB refused ('$out'), 8 KiB created"

# --- Restart and kill -9 keep every segment's bytes; a client holding a lease re-attaches ---
as alice "$shmlease" create held 64KiB >/dev/null
rm -f "$dir/holder.in" "$dir/holder.out"
mkfifo "$dir/holder.in"
touch "$dir/holder.out"
chown alice "$dir/holder.in" "$dir/holder.out"
as alice "$dir/holder" held <"$dir/holder.in" >"$dir/holder.out" 2>&1 &
holder=$!
exec 3>"$dir/holder.in"
trap 'exec 3>&-; kill "$holder" 2>/dev/null || true' EXIT
# Sends one command to the holder and sets answer to its reply (not in a subshell: it counts lines).
holder_lines=0
ask() {
  holder_lines=$((holder_lines + 1))
  [[ -z $1 ]] || echo "$1" >&3
  wait_for 30 bash -c "(( \$(wc -l <'$dir/holder.out') >= $holder_lines ))" ||
    die "the holder did not answer '$1': $(cat "$dir/holder.out")"
  answer=$(sed -n "${holder_lines}p" "$dir/holder.out")
}
ask ""
[[ $answer == "ready $(main_pid)" ]] || die "the holder did not start: '$answer'"
ask "fill 7"
[[ $answer == filled ]] || die "the holder could not fill its lease"
head -c 65536 /dev/zero | tr '\0' '\7' >"$dir/held.7"
head -c 65536 /dev/zero | tr '\0' '\11' >"$dir/held.9"
as alice "$shmlease" cat held | cmp -s - "$dir/held.7" || die "another client does not read the holder's bytes"

old=$(main_pid)
systemctl restart shmleased.service
new=$(main_pid)
[[ $new != "$old" && $new != 0 ]] || die "systemctl restart did not start a new daemon ($old -> $new)"
[[ $(segment_hash frames) == "$frames_hash" && $(segment_hash small) == "$small_hash" ]] ||
  die "systemctl restart lost the bytes of frames or small"
as alice "$shmlease" cat held | cmp -s - "$dir/held.7" || die "systemctl restart lost the bytes of held"
ask "check 7"
[[ $answer == "ok $new reconnects=1 held=1" ]] || die "the holder did not re-attach after the restart: '$answer'"
ask "fill 9"
[[ $answer == filled ]] || die "the holder could not write after the restart"
as alice "$shmlease" cat held | cmp -s - "$dir/held.9" ||
  die "after the restart, the holder's old mapping is no longer the segment another client reads"
wait_for 5 journal_line "re-adopted 3 segment(s)" || die "the journal does not say the new daemon re-adopted 3 segments"
pass "systemctl restart (pid $old -> $new): frames, small and held keep their bytes; the holder re-attached (reconnects=1, lease held) and its old mapping still writes the segment"

old=$new
kill -9 "$old"
wait_for 20 bash -c "[[ \$(systemctl show -p MainPID --value shmleased.service) != $old && \
  \$(systemctl show -p MainPID --value shmleased.service) != 0 && \
  \$(systemctl is-active shmleased.service) == active ]]" ||
  die "systemd did not restart the daemon after kill -9 (Restart=on-failure)"
new=$(main_pid)
[[ $(segment_hash frames) == "$frames_hash" && $(segment_hash small) == "$small_hash" ]] ||
  die "kill -9 lost the bytes of frames or small"
as alice "$shmlease" cat held | cmp -s - "$dir/held.9" || die "kill -9 lost the bytes of held"
ask "check 9"
[[ $answer == "ok $new reconnects=2 held=1" ]] || die "the holder did not re-attach after kill -9: '$answer'"
result=$(systemctl show -p Result -p NRestarts shmleased.service | tr '\n' ' ')
pass "kill -9 of the daemon (pid $old): systemd restarted it (pid $new; $result); every segment kept its bytes; the holder re-attached (reconnects=2)"
exec 3>&-
wait "$holder" || die "the holder failed: $(cat "$dir/holder.out")"
trap - EXIT

# --- The sandbox: systemd-analyze security, the running daemon, and a probe in the same sandbox ---
systemd-analyze security --no-pager shmleased.service >"$dir/security.txt" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for shmleased.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' "$dir/security.txt")
[[ -n $exposure ]] || { cat "$dir/security.txt" >&2; die "systemd-analyze security printed no exposure level"; }
grep '✗' "$dir/security.txt" | sed 's/  */ /g; s/^/system\/inside:   /' || true
read -r level band <<<"$exposure"
[[ $band == SAFE || $band == OK ]] || die "systemd-analyze security rates shmleased.service $level $band, not OK or SAFE"
awk -v l="$level" 'BEGIN {exit !(l <= 0.6)}' || die "the exposure level went up: $level $band (0.6 SAFE when this test was written)"
pass "systemd-analyze security shmleased.service: $level $band (the options still exposed are listed above)"

pid=$(main_pid)
status_of() { sed -n "s/^$1:[[:space:]]*//p" "/proc/$pid/status"; }
[[ $(stat -c %U "/proc/$pid") == shmlease ]] || die "the daemon runs as $(stat -c %U "/proc/$pid"), not shmlease"
[[ $(status_of NoNewPrivs) == 1 ]] || die "the daemon runs without no_new_privs"
[[ $(status_of CapBnd) == 0000000000000000 && $(status_of CapEff) == 0000000000000000 ]] ||
  die "the daemon holds capabilities (CapBnd $(status_of CapBnd), CapEff $(status_of CapEff))"
[[ $(status_of Seccomp) == 2 ]] || die "the daemon runs without a seccomp filter"
[[ $(readlink "/proc/$pid/ns/net") != "$(readlink /proc/1/ns/net)" ]] || die "the daemon shares the network namespace"
[[ $(readlink "/proc/$pid/ns/mnt") != "$(readlink /proc/1/ns/mnt)" ]] || die "the daemon shares the mount namespace"
# The segments are sealed memfds of the daemon's (docs/RESTART.md): nothing of it in /dev/shm,
# where anyone could see or squat a name, and its 3 segments are memfds it holds (each twice: the
# read-write and the read-only descriptor), private to its user.
objects=$(find /dev/shm -maxdepth 1 -user shmlease -name 'shmlease-*' | wc -l)
((objects == 0)) || die "/dev/shm holds $objects objects of the daemon; sealed segments have no name there: $(ls -l /dev/shm)"
memfds=()
for fd in "/proc/$pid/fd/"*; do
  [[ $(readlink "$fd") =~ ^/memfd:shmlease-[^\ ]*\.[0-9]+\ \(deleted\)$ ]] || continue
  [[ $(stat -L -c '%U %a' "$fd") == "shmlease 600" ]] || die "segment memfd $(readlink "$fd") is $(stat -L -c '%U %a' "$fd"), not shmlease 600"
  memfds+=("$(stat -L -c %i "$fd")")
done
inodes=$(printf '%s\n' "${memfds[@]}" | sort -u | wc -l)
((inodes == 3)) || die "the daemon holds $inodes segment memfds, not 3: $(ls -l "/proc/$pid/fd/")"
pass "the running daemon: user shmlease, no_new_privs, no capabilities, seccomp filter, own mount and network namespaces; its 3 segments are sealed memfds of its own (mode 0600), none in /dev/shm"

# The probe: the installed unit with only what it runs changed, so every sandbox option applies.
unit=$prefix/lib/systemd/system/shmleased.service
sed -e "s|^ExecStart=.*|ExecStart=$dir/sandbox_probe /tmp/outside-marker /home/alice|" \
  -e 's/^Type=notify/Type=oneshot/' -e '/^ExecReload=/d' -e '/^Restart/d' \
  -e '/^Requires=/d' -e '/^After=/d' -e '/^Also=/d' -e '/^\[Install\]/,$d' "$unit" \
  >/etc/systemd/system/shmlease-sandbox-probe.service
touch /tmp/outside-marker
systemctl daemon-reload
probe_status=0
systemctl start shmlease-sandbox-probe.service || probe_status=$?
probe=$(journalctl -u shmlease-sandbox-probe.service -o cat --no-pager | grep -E '^(ok|FAIL) ') || true
echo "$probe" | sed 's/^/system\/inside:   probe /'
if ((probe_status != 0)); then
  journalctl -u shmlease-sandbox-probe.service -o cat --no-pager | tail -n 20 >&2
  die "the sandbox probe failed (above)"
fi
count=$(grep -c '^ok ' <<<"$probe")
total=$(journalctl -u shmlease-sandbox-probe.service -o cat --no-pager | sed -n 's/^checks \([0-9]*\), failed 0$/\1/p')
# Every check the probe makes, each one passed (the probe counts them itself).
[[ -n $total ]] && ((count == total && total >= 20)) ||
  die "the sandbox probe passed $count checks of '${total:-?}'"
options=$(grep -o '^ok [^:]*' <<<"$probe" | cut -d' ' -f2 | sort -u | wc -l)
pass "a probe under the unit's own sandbox: $count checks of $options options passed (writes outside /dev/shm and the state dir refused, no INET or netlink socket, no W+X mapping, filtered syscalls, ...)"
rm -f /etc/systemd/system/shmlease-sandbox-probe.service /tmp/outside-marker
systemctl daemon-reload

# --- Clean up: removed segments leave /dev/shm; the service stops ---
for name in frames small held; do as alice "$shmlease" rm "$name"; done
systemctl stop shmleased.service shmleased.socket
left=$(find /dev/shm -maxdepth 1 -name 'shmlease-*' | wc -l)
((left == 0)) || die "$left shm objects are left after removing every segment: $(ls /dev/shm)"
pass "every segment removed and the service stopped: nothing left in /dev/shm"
