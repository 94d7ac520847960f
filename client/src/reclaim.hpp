// Reconnect and reclaim (docs/RESTART.md): the leases this process holds, and how a fresh socket
// to a restarted daemon gets them back: connect with bounded backoff, say hello, reclaim the live
// leases and mappings, all before the socket is installed.
// Owns: the table of live leases (by handle; a handle outlives the daemon's id of its lease), and,
// until ConnectAndReclaim returns it, the new socket.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "shmlease/client.hpp"
#include "shmlease/protocol.hpp"

namespace shmlease::detail {

// The hello this process sends: this protocol version and the process's name (for the daemon's
// logs and `shmlease clients`).
proto::Hello MakeHello();

// A lease as a reconnect must restore it.
struct LiveLease {
  uint64_t id = 0;  // the daemon's id on the current connection
  uint64_t segment_id = 0;
  int64_t created_unix_ns = 0;
  proto::LeaseMode mode = proto::LeaseMode::kRead;
  bool exclusive = false;
};

// Live leases by handle, and the handles a reconnect could not restore. Not locked itself:
// Connection calls it only under mux_.Lock(), so that a grant is tracked in the same step as it
// is routed, and a reconnect's snapshot misses no grant already routed.
class LeaseTable {
 public:
  using Snapshot = std::vector<std::pair<uint64_t, LiveLease>>;  // (handle, lease)

  // Tracks the lease `ok` granted; returns its handle.
  uint64_t Add(const proto::AcquireOk& ok);
  // Forgets the lease (and that it was lost); its current id, or nullopt if it was not live.
  std::optional<uint64_t> Remove(uint64_t handle);
  // The daemon's current id of the lease, or 0 if it is not live.
  uint64_t Id(uint64_t handle) const;
  bool Live(uint64_t handle) const { return leases_.count(handle) != 0; }
  bool Lost(uint64_t handle) const { return lost_.count(handle) != 0; }

  Snapshot Take() const { return Snapshot(leases_.begin(), leases_.end()); }
  // Every live lease is lost (a reconnect failed): none is reported held from now on.
  void LoseAll();
  // After a reclaim of `taken` (a Take()) answered with `results` (in its order): renumbers the
  // leases restored, marks lost the ones refused, and encodes into `releases` one-way Releases of
  // the leases restored but let go meanwhile.
  void Apply(const Snapshot& taken, const std::vector<proto::ReclaimResult>& results,
             std::vector<std::byte>& releases);

 private:
  std::unordered_map<uint64_t, LiveLease> leases_;  // by handle
  std::unordered_set<uint64_t> lost_;               // handles a reconnect could not restore
  uint64_t next_handle_ = 1;
};

// What a fresh socket's greeting brought.
struct Handshake {
  int fd = -1;  // the new socket, greeted: the caller's to install (or close)
  uint32_t server_pid = 0;
  std::vector<proto::ReclaimResult> leases;     // in the order of the snapshot's leases
  std::vector<proto::ReclaimMapping> mappings;  // accepted
  std::vector<std::byte> leftover;              // bytes read past the last reply
};

// Connects to `socket_path`, says hello and reclaims `leases` and `mappings`, retrying with
// backoff (10 ms doubling to 500 ms) until `timeout` has passed or `closed` is set. Throws Error
// with the last attempt's reason and code when it cannot; stops at once on kVersionMismatch and
// kPermissionDenied (a daemon that refuses this client stays so).
Handshake ConnectAndReclaim(const std::string& socket_path, const LeaseTable::Snapshot& leases,
                            const std::vector<proto::ReclaimMapping>& mappings,
                            std::chrono::milliseconds timeout, const std::atomic<bool>& closed);

}  // namespace shmlease::detail
