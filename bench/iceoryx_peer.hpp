// iceoryx 2.0 (Debian's iceoryx_posh) as a peer in channel_bench: one-way latency of a
// publisher -> subscriber hand-off between two processes, timed like shmlease's (bench/oneway.hpp).
// Owns: one iox-roudi child, its private config/log directory and a machine-wide lock, from the
// constructor until Stop() (also run by the destructor, by exit() and, through PR_SET_PDEATHSIG,
// by the bench process dying); Stop() removes what RouDi leaves in /dev/shm and /tmp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "oneway.hpp"

namespace shmlease::bench {

enum class IceoryxWait {
  kWaitSet,   // the subscriber sleeps in a WaitSet attached to HAS_DATA
  kBusyPoll,  // the subscriber spins on take()
};

class IceoryxPeer {
 public:
  // Takes the lock (waiting up to `lock_wait_s`: RouDi's names in /dev/shm and /tmp are fixed, so
  // only one can run on a machine), writes a RouDi config whose mempools hold payloads of each of
  // `payload_sizes` (plus iceoryx's chunk header), starts iox-roudi and waits until it says it is
  // ready. Never throws: ok() says whether that worked, error() why not.
  explicit IceoryxPeer(const std::vector<uint32_t>& payload_sizes, int lock_wait_s = 90);
  ~IceoryxPeer();
  IceoryxPeer(const IceoryxPeer&) = delete;
  IceoryxPeer& operator=(const IceoryxPeer&) = delete;

  bool ok() const { return roudi_pid_ > 0 && error_.empty(); }
  const std::string& error() const { return error_; }

  // One measurement: forks a subscriber (pinned to cpus.reader) and a publisher (cpus.writer),
  // each its own iceoryx runtime, on a service of their own, with a queue of 4 that makes the
  // publisher wait when full (as the shmlease channel it is compared with); the publisher loans
  // a chunk of `payload` bytes, sleeps kFrameGap, stamps it and publishes, `n` times. Appends
  // the subscriber's one-way samples (and any frame it never received) to `samples`. False (with
  // error() set) if anything failed.
  bool OneWay(int n, uint32_t payload, IceoryxWait wait, CpuPair cpus, OneWaySamples& samples);

  // SIGTERM to RouDi (SIGKILL after 5 s), removes its files, the directory and the lock.
  // Idempotent; only the process that constructed the peer does anything.
  void Stop();

  // "2.0.3": the iceoryx the peer was built against.
  static const char* Version();

 private:
  bool WriteConfig(const std::vector<uint32_t>& payload_sizes);
  bool StartRoudi();
  void StopRoudi();
  std::string RoudiLog() const;

  pid_t owner_ = -1;  // the process that may stop RouDi (forked children inherit this object)
  pid_t roudi_pid_ = -1;
  int lock_fd_ = -1;
  int measurements_ = 0;  // gives each measurement its own runtime and service names
  int starts_ = 0;
  std::string dir_;
  std::string error_;
  std::vector<std::string> app_names_;
};

}  // namespace shmlease::bench
