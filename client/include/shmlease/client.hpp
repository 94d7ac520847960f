// libshmlease: the C++ client of shmleased.
//
// Ownership: a Client owns one connection to the daemon; every Lease shares ownership of that
// connection and of the mapping it reads through, so a Lease stays safe to read after its Client is
// gone (its release is then a no-op: the daemon released everything when the connection closed).
// Each segment is mapped once per connection and per access mode and reused by later leases; the
// mapping is unmapped once the daemon has freed the segment and no Lease of this process uses it.
//
// Daemon restarts: when the connection breaks, the next call (in any thread) reconnects with
// bounded backoff (10 s by default; set_reconnect_timeout() or $SHMLEASE_RECONNECT_TIMEOUT_MS),
// reclaims every live Lease and keeps every mapping, then repeats the call if that is safe (Ping,
// Stat, List, Acquire, Create with exist_ok); Create without exist_ok and Remove fail with
// kConnectionLost instead, as they may have taken effect. Mapped memory stays readable and
// writable throughout. Only when reconnecting fails does a call fail, with kConnectionLost and
// the reason (what broke, and why reconnecting did not work). docs/RESTART.md.
//
// fork(): a child process must connect anew. The parent's Client and Leases are inert in the child:
// calls fail with kConnectionLost, and releases and Close() do nothing, so a child's exit never
// disturbs the parent's connection.
//
// Thread safety: one Client may be used from many threads at once; requests are multiplexed on the
// one connection, and a thread waiting for an exclusive lease does not block the others. A Lease is
// not synchronised: share it between threads only with your own locking.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "shmlease/errc.hpp"

namespace shmlease {

// Every failure of the library: a std::system_error whose code() is in ErrorCategory() (an Errc).
// what() is the message alone, said once: the daemon's or the library's text when there is one
// (without the ": <code description>" std::system_error would append), else the code's message.
class Error : public std::system_error {
 public:
  Error(Errc code, const std::string& what)
      : std::system_error(make_error_code(code), what),
        message_(std::make_shared<const std::string>(
            what.empty() ? make_error_code(code).message() : what)) {}
  Errc errc() const noexcept { return static_cast<Errc>(code().value()); }
  const char* what() const noexcept override { return message_->c_str(); }

 private:
  std::shared_ptr<const std::string> message_;  // shared: copying an exception must not throw
};

// The version of the wire protocol this library speaks (docs/PROTOCOL.md). A daemon that speaks
// another one is refused when connecting, with Error(kVersionMismatch).
inline constexpr uint32_t kProtocolVersion = 1;

// The permission bits a segment gets when CreateOptions::mode is left alone: owner read and write.
inline constexpr uint32_t kDefaultSegmentMode = 0600;

// What a lease may do with the segment's memory: read it (mapped read-only) or also write it
// (mapped read-write). Any number of leases of either mode may be held at once unless one of
// them is exclusive (LeaseOptions::exclusive).
enum class Mode : uint8_t { kRead = 1, kWrite = 2 };

// What the daemon knows of one segment, as of the call that returned it (Create, Stat, List,
// Chmod, Lease::info()): a copy that never changes by itself. The counts (readers, writers,
// exclusive, waiting) and `removed` may have changed by the time they are read; a later Stat says
// what they are now. Flags are 0 or 1.
struct SegmentInfo {
  uint64_t id = 0;  // unique for the daemon's lifetime, never reused
  std::string name;
  uint64_t size = 0;            // bytes, as asked for (ReservedBytes() says what is held)
  std::string format;           // one native struct item ("f", "B", ...); "" = raw bytes
  std::vector<uint64_t> shape;  // empty when created without a shape
  int64_t created_unix_ns = 0;
  uint32_t creator_pid = 0;
  uint32_t creator_uid = 0;
  uint32_t readers = 0;       // read leases held
  uint32_t writers = 0;       // write leases held
  uint8_t exclusive = 0;      // 1 while an exclusive lease is held
  uint32_t waiting = 0;       // lease requests queued
  uint8_t removed = 0;        // 1 once removed; freed with its last lease
  uint32_t page_size = 0;     // backing page size in bytes (2 MiB when backed by huge pages)
  uint8_t huge_fallback = 0;  // 1: huge pages were asked for (best effort), normal pages back it
  // Access control: the owner (the creator), its group, and the permission bits for owner,
  // group and others (4 read, 2 write, as in 0640; x bits are ignored).
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  uint32_t mode = kDefaultSegmentMode;

  bool operator==(const SegmentInfo&) const = default;
};

// One lease a connected client holds (DaemonStats).
struct HeldLease {
  std::string segment;  // the segment's name
  Mode mode = Mode::kRead;
  uint8_t exclusive = 0;  // 1 for an exclusive lease
  bool operator==(const HeldLease&) const = default;
};

// One client connected to the daemon, identified by the kernel (SO_PEERCRED), not by itself.
struct ClientInfo {
  uint64_t conn_id = 0;  // the daemon's number for the connection, unique for its lifetime
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string process;   // its command name (/proc/PID/comm), "?" when unknown
  uint32_t waiting = 0;  // lease requests queued
  std::vector<HeldLease> leases;
  bool operator==(const ClientInfo&) const = default;
};

// The daemon's totals and its clients, as of the Stats call: all clients for an administrator,
// else only those of the caller's uid.
struct DaemonStats {
  uint32_t segments = 0;   // named, and removed but still leased
  uint64_t bytes = 0;      // held by all segments
  uint64_t max_bytes = 0;  // the daemon's total byte limit
  uint32_t leases = 0;
  uint32_t connections = 0;
  uint64_t uptime_ms = 0;
  std::vector<ClientInfo> clients;
  bool operator==(const DaemonStats&) const = default;
};

// Waits for a lease without limit (the default).
inline constexpr std::chrono::milliseconds kWaitForever{-1};

// Which pages back a segment. Huge pages (2 MiB on x86-64) make a first touch of the memory cost
// one fault per huge page instead of one per 4 KiB page: attaching and reading a 1 GiB segment
// takes milliseconds instead of seconds (docs/BENCHMARKS.md).
enum class HugePages : uint8_t {
  // The daemon decides: huge pages best effort for segments of at least its huge-threshold
  // setting (off by default), normal pages otherwise.
  kDefault,
  kNo,  // normal pages, whatever the daemon's threshold
  // Huge pages or fail: Create throws Error(kNoSpace) when the host has too few free huge pages
  // (kInvalidArgument when it has no huge-page support at all); the message says how to reserve
  // them (sysctl vm.nr_hugepages=N, a hugetlbfs mount).
  kYes,
  // Huge pages if the host has them, else normal pages: the returned SegmentInfo then has
  // huge_fallback == 1 (and so has every later Stat of it).
  kBestEffort,
};

struct CreateOptions {
  uint64_t size = 0;             // bytes; 0 derives it from format and shape
  std::string format;            // one native struct item ("f", "B", "q", ...); "" = raw bytes
  std::vector<uint64_t> shape;   // up to 8 dimensions; product x itemsize must equal size
  // Return the existing segment instead of Error(kAlreadyExists), but only when it is of the
  // size, format and shape asked for, compared as the daemon completes a request: size 0 is
  // derived from format and shape; an empty format (raw bytes) equals "B"; an empty shape is the
  // 1-D default (size / itemsize,). Nothing is a wildcard: the request must be a valid create on
  // its own (else kInvalidArgument). Another size, format or shape throws kAlreadyExists naming
  // both ("segment 'w' exists as float32 (1024, 1024), 4194304 bytes; asked for uint8 (4096,),
  // 4096 bytes"). `huge` and `mode` are not compared (docs/PROTOCOL.md, "Create with exist_ok").
  bool exist_ok = false;
  // Huge pages: the segment's memory is rounded up to whole huge pages (a 3 MiB segment holds
  // 4 MiB in 2 MiB pages) and that rounded size counts against the daemon's limits, but size(),
  // data() and SegmentInfo::size stay the size asked for. SegmentInfo::page_size says which
  // pages the segment got. All of it is reserved at creation: it never SIGBUSes later.
  HugePages huge = HugePages::kDefault;
  // Permission bits for owner (the caller), group (the caller's gid) and others: 4 read, 2 write.
  // The daemon checks them on every lease, stat, list and remove.
  uint32_t mode = kDefaultSegmentMode;
};

struct LeaseOptions {
  bool exclusive = false;  // granted only when no other lease exists on the segment
  // How long to wait for the lease: 0 fails at once with kTimeout if it cannot be granted now.
  std::chrono::milliseconds timeout = kWaitForever;
  // Pre-fault the mapping before Acquire returns (madvise MADV_POPULATE_WRITE for a write lease,
  // MADV_POPULATE_READ for a read lease; on kernels before 5.14, one touch per page), so that
  // every page is mapped in this process and the first reads or writes of data() take no page
  // fault: the faults are paid once here instead of in a latency-sensitive loop. Costs what those
  // faults cost (about 2 ms per 8 MiB of 4 KiB pages here), each time it is asked for, also on a
  // mapping this connection already had (cheap when it is already populated). A write lease's
  // touches do not change the bytes (an atomic add of 0). If the pages cannot be populated (out
  // of memory) Acquire releases the lease and throws Error(kMapFailed).
  bool populate = false;
  // Polled from the waiting thread at least every 50 ms (and after EINTR) while Acquire waits for
  // the daemon's answer, first before the first wait. Returning true withdraws the request: the
  // daemon drops it from the segment's queue (a lease granted meanwhile is released), and Acquire
  // throws Error(Errc::kCancelled). Called without any lock of the library held, only from the
  // thread inside Acquire, at most until it returns true. Empty (the default): Acquire waits in
  // one blocking read, with no polling at all. A request whose connection breaks after it was
  // withdrawn is not repeated on the new connection (Error(kCancelled) too).
  std::function<bool()> interrupted;
};

// Bytes of memory a segment holds: its size rounded up to whole pages of info.page_size. For a
// huge-page segment this is also what counts against the daemon's byte limits (normal pages count
// their exact size) and the length this library maps.
inline uint64_t ReservedBytes(const SegmentInfo& info) {
  if (info.page_size == 0) return info.size;
  return (info.size + info.page_size - 1) / info.page_size * info.page_size;
}

namespace detail {
class Connection;
struct Mapping;
}  // namespace detail

// A granted lease: a view of the segment's shared memory, held until Release() or destruction.
class Lease {
 public:
  Lease() = default;  // an empty lease (valid() == false)
  ~Lease();
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // Gives the lease back to the daemon (one-way: no round trip is waited for). Afterwards the
  // Lease is empty. Releasing an empty Lease does nothing. Never throws. The daemon handles the
  // release after every earlier request and before every later one on the same connection;
  // another connection may still see the lease held for a moment.
  void Release() noexcept;

  bool valid() const noexcept { return mapping_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }

  // The daemon's id of this lease. A reconnect (daemon restart) gives the lease a new id.
  uint64_t id() const noexcept;
  // True when the daemon no longer counts this lease although it was not released: a reconnect
  // could not restore it (its segment was freed, someone was granted a conflicting lease while
  // the daemon restarted, or reconnecting failed: a later reconnect does not bring it back), or
  // its connection is gone for good (Client::Close(), or broken with reconnecting off; a daemon
  // that hung up is seen even before the next call). The memory stays mapped and readable until
  // the Lease is released. Once true, it stays true. False for an empty Lease.
  bool lost() const noexcept;
  // True while the daemon counts this lease for this process, or will again once the next call
  // reconnects and reclaims it (a broken connection with reconnecting on): valid() && !lost().
  // False once Release()d, moved from, or lost(). Never blocks; at most one poll(2) when
  // reconnecting is off.
  bool held() const noexcept;
  Mode mode() const noexcept { return mode_; }
  bool writable() const noexcept { return mode_ == Mode::kWrite; }
  bool exclusive() const noexcept { return exclusive_; }
  // The segment as it was when the lease was granted (name, size, format, shape, ...).
  const SegmentInfo& info() const noexcept { return info_; }
  size_t size() const noexcept { return static_cast<size_t>(info_.size); }

  // The bytes of the segment. Read leases map read-only: writing through data() of a read lease
  // faults (SIGSEGV), by the kernel's enforcement.
  std::span<const std::byte> data() const noexcept;
  // The bytes, writable. Throws Error(kPermissionDenied) on a read lease.
  std::span<std::byte> writable_data() const;

  // Shares ownership of the mapped memory: it stays mapped while the returned pointer lives, even
  // after Release(). For exporters that must outlive the lease (the Python buffer protocol).
  std::shared_ptr<const void> mapping_owner() const noexcept;

  // Typed views: T must match the segment's item size and kind (float, signed, unsigned, bool;
  // a segment without a format holds unsigned bytes). Throws Error(kInvalidArgument) otherwise.
  template <typename T>
  std::span<const T> as() const {
    CheckType(sizeof(T), KindOf<std::remove_cv_t<T>>());
    auto bytes = data();
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
  template <typename T>
  std::span<T> as_writable() const {
    CheckType(sizeof(T), KindOf<T>());
    auto bytes = writable_data();
    return {reinterpret_cast<T*>(bytes.data()), bytes.size() / sizeof(T)};
  }

 private:
  friend class Client;
  // The kind of a C++ element type: 'f' floating, 'i' signed, 'u' unsigned, '?' bool, 0 other
  // (std::byte and other types: only the item size is checked).
  template <typename T>
  static constexpr char KindOf() {
    if constexpr (std::is_same_v<T, bool>) return '?';
    if constexpr (std::is_floating_point_v<T>) return 'f';
    if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) return 'i';
    if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) return 'u';
    return 0;
  }
  void CheckType(size_t item_size, char kind) const;

  std::shared_ptr<detail::Connection> connection_;
  std::shared_ptr<detail::Mapping> mapping_;
  uint64_t id_ = 0;      // as granted
  uint64_t handle_ = 0;  // the connection's name for it, stable across reconnects
  Mode mode_ = Mode::kRead;
  bool exclusive_ = false;
  SegmentInfo info_;
};

// A connection to shmleased.
class Client {
 public:
  // Connects to the daemon at ResolveSocketPath(socket) and exchanges hellos.
  // Throws Error(kDaemonUnavailable) naming the path and what is there when nobody answers: no
  // socket at all (with how to start shmleased), a directory or file instead of a socket, or a
  // socket nobody listens on (a daemon that died). Error(kPermissionDenied) when the socket's mode
  // refuses this user: the message gives the socket's mode, owner and group, and, when the group
  // may connect, how to join it (sudo usermod -aG GROUP $USER, then log in again).
  explicit Client(std::string_view socket = {});
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The error_code form of the constructor: returns nullopt and sets `ec` on failure.
  static std::optional<Client> Connect(std::string_view socket, std::error_code& ec) noexcept;

  const std::string& socket_path() const noexcept;
  // The daemon's pid, from its hello.
  uint32_t server_pid() const noexcept;

  void Ping();
  SegmentInfo Create(std::string_view name, const CreateOptions& options);
  SegmentInfo Create(std::string_view name, uint64_t size) {
    CreateOptions options;
    options.size = size;
    return Create(name, options);
  }
  // Leases the segment `name` in `mode`; waits as LeaseOptions says.
  Lease Acquire(std::string_view name, Mode mode, const LeaseOptions& options = {});
  // Takes the name away now; the memory is freed when its last lease is released.
  void Remove(std::string_view name);
  SegmentInfo Stat(std::string_view name);
  // The segments this caller may read.
  std::vector<SegmentInfo> List();
  // Sets a segment's permission bits (0 to 0777); only its owner or an administrator may.
  SegmentInfo Chmod(std::string_view name, uint32_t mode);
  DaemonStats Stats();

  // error_code overloads: never throw; on failure set `ec` and return an empty value.
  void Ping(std::error_code& ec) noexcept;
  SegmentInfo Create(std::string_view name, const CreateOptions& options,
                     std::error_code& ec) noexcept;
  Lease Acquire(std::string_view name, Mode mode, const LeaseOptions& options,
                std::error_code& ec) noexcept;
  void Remove(std::string_view name, std::error_code& ec) noexcept;
  SegmentInfo Stat(std::string_view name, std::error_code& ec) noexcept;
  std::vector<SegmentInfo> List(std::error_code& ec) noexcept;
  SegmentInfo Chmod(std::string_view name, uint32_t mode, std::error_code& ec) noexcept;
  DaemonStats Stats(std::error_code& ec) noexcept;

  // How long a call keeps trying to reconnect after the connection broke (default 10 s, or
  // $SHMLEASE_RECONNECT_TIMEOUT_MS); 0 turns reconnecting off.
  void set_reconnect_timeout(std::chrono::milliseconds timeout) noexcept;
  // Times this client re-established its connection.
  uint64_t reconnects() const noexcept;

  // Closes the connection (and turns reconnecting off): the daemon releases every lease it held. Calls waiting in other
  // threads wake with kConnectionLost; later calls fail with it. Leases already handed out keep
  // their mappings (reading them stays safe) and their Release() becomes a no-op.
  void Close() noexcept;

 private:
  explicit Client(std::shared_ptr<detail::Connection> connection)
      : connection_(std::move(connection)) {}
  detail::Connection& connection() const;  // throws kConnectionLost after Close()
  friend class Channel;  // channels talk to the daemon on the client's connection
  std::shared_ptr<detail::Connection> connection_;
};

}  // namespace shmlease
