#include "daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "huge_pages.hpp"
#include "safe_dir.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/format.hpp"

namespace shmlease::server {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

namespace {

std::string ProcessName(pid_t pid) {
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name.empty() ? "?" : name;
}

// True if something accepts connections on `path` (a live daemon).
bool SomeoneListens(const std::string& path) {
  asio::io_context io;
  stream::socket probe(io);
  boost::system::error_code ec;
  probe.connect(stream::endpoint(path), ec);
  return !ec;
}

}  // namespace

Daemon::Daemon(Config config, ConfigSource source)
    : config_(std::move(config)),
      source_(std::move(source)),
      signals_(io_, SIGINT, SIGTERM),
      reload_signal_(io_, SIGHUP),
      status_timer_(io_),
      acceptor_(io_),
      accept_retry_(io_),
      registry_(config_),
      handler_(io_, config_, registry_, sessions_),
      reclaim_grace_(io_) {}

Daemon::~Daemon() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
  // Only the socket we bound: whatever else now has its name is not ours to remove. A socket in
  // the fd store stays for the next daemon; the keeper (or the next start, finding it stale)
  // removes the file once nobody serves it.
  struct stat st {};
  if (listening_ && !socket_inherited_ && !socket_stored_ &&
      ::fstatat(socket_dir_fd_, socket_name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    ::unlinkat(socket_dir_fd_, socket_name_.c_str(), 0);
  }
  if (socket_dir_fd_ >= 0) ::close(socket_dir_fd_);
  for (auto& [id, fd] : passed_segments_) ::close(fd);
  // With a state directory the segments outlive this process, however it ends.
  if (state_.is_open()) registry_.Preserve();
}

bool Daemon::Listen(std::string& error) {
  namespace fs = std::filesystem;
  // Socket activation: systemd passes the listening socket (shmleased.socket); after a restart
  // the service manager (systemd or the keeper) also passes what the daemon stored: its own
  // listening socket and every segment's descriptor (docs/RESTART.md).
  PassedFds passed;
  if (!TakePassedFds(passed, error)) return false;
  passed_segments_ = std::move(passed.segments);
  for (auto& [name, fd] : passed.others) {
    spdlog::warn("closing descriptor '{}' passed by the service manager: not a listening socket "
                 "nor a segment",
                 name);
    ::close(fd);
    RemoveStoredFd(name);
  }
  if (passed.listen_fd >= 0) {
    int fd = passed.listen_fd;
    boost::system::error_code ec;
    acceptor_.assign(stream(), fd, ec);
    if (ec) {
      error = "cannot use the socket systemd passed: " + ec.message();
      return false;
    }
    sockaddr_un addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 && addr.sun_path[0]) {
      config_.socket = addr.sun_path;
    }
    socket_inherited_ = true;
    socket_stored_ = passed.listen_name == kListenFdName;
    listening_ = true;
    // systemd starts one instance per socket; its state dir lock guards against a second.
    return Restore(error);
  }
  // The socket's directory is checked like the state directory (safe_dir.hpp): nobody but our
  // euid may change it, so the path bound below is the one checked. The stale socket is removed
  // relative to it, and the socket gets its mode at bind (umask), never by a chmod by path.
  const fs::path socket_path(config_.socket);
  const std::string dir = socket_path.has_parent_path() ? socket_path.parent_path().string() : ".";
  const std::string name = socket_path.filename().string();
  socket_dir_fd_ = OpenSafeDirectory(dir, {"socket directory", "--socket"}, true, error);
  if (socket_dir_fd_ < 0) return false;
  socket_name_ = name;
  struct stat st {};
  if (::fstatat(socket_dir_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = config_.socket + " exists and is not a socket; refusing to replace it";
      return false;
    }
    if (SomeoneListens(config_.socket)) {
      error = "another shmleased is already serving " + config_.socket;
      return false;
    }
    spdlog::warn("removing stale socket {} (nobody answers on it)", config_.socket);
    ::unlinkat(socket_dir_fd_, name.c_str(), 0);
  }
  // Only now, sure that no other daemon serves this socket, take over the segments.
  if (!Restore(error)) return false;
  boost::system::error_code ec;
  acceptor_.open(stream(), ec);
  if (!ec) {
    // bind() creates the file with mode 0777 & ~umask. Start-up is single-threaded, so nothing
    // else creates files while the umask is changed.
    const mode_t old_umask = ::umask(static_cast<mode_t>(~config_.socket_mode & 0777));
    acceptor_.bind(stream::endpoint(config_.socket), ec);
    ::umask(old_umask);
  }
  if (ec) {
    error = "cannot bind " + config_.socket + ": " + ec.message();
    return false;
  }
  listening_ = true;
  st = {};
  if (::fstatat(socket_dir_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISSOCK(st.st_mode)) {
    error = "the socket " + config_.socket + " was replaced right after bind; is another "
            "process using this directory? Choose a directory of shmleased's own for --socket";
    return false;
  }
  socket_dev_ = st.st_dev;
  socket_ino_ = st.st_ino;
  // A default ACL on the directory overrides the umask: say so rather than serve another mode.
  if ((st.st_mode & 0777) != config_.socket_mode) {
    error = "the socket " + config_.socket + " did not get mode " +
            OctalMode(static_cast<mode_t>(config_.socket_mode)) + " at bind (it has " +
            OctalMode(st.st_mode) +
            "): does its directory carry a default ACL? Remove it, or choose another --socket";
    return false;
  }
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + config_.socket + ": " + ec.message();
    return false;
  }
  // With a state dir under a service manager, the socket outlives this process too: clients
  // queue in its backlog while the daemon restarts, and the next one serves the same socket.
  if (state_.is_open() && FdStoreAvailable()) {
    std::string why;
    if (StoreFd(acceptor_.native_handle(), kListenFdName, why)) {
      socket_stored_ = true;
    } else {
      spdlog::warn("cannot keep the listening socket in the fd store: {}", why);
    }
  }
  return true;
}

void Daemon::WaitForSignals() {
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}; shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    Stop();
  });
  WaitForReload();
}

// Every SIGHUP reloads: the wait re-arms itself after each one (it used to re-arm once, so the
// third and later reloads were ignored).
void Daemon::WaitForReload() {
  reload_signal_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    Reload();
    WaitForReload();
  });
}

void Daemon::Reload() {
  sd_notify(0, "RELOADING=1");
  Config fresh;
  std::string error;
  // A byte limit derived from /dev/shm's free space counts our own segments as free.
  // The default file is read whenever it exists now, also when it did not at start.
  std::string file = source_.file;
  if (source_.optional && !std::filesystem::exists(file)) file.clear();
  if (!BuildConfig(file, source_.flags, fresh, error, registry_.total_bytes())) {
    spdlog::error("reload failed, keeping the running settings: {}", error);
    sd_notify(0, "READY=1");
    return;
  }
  for (const SettingSpec& spec : Settings()) {
    std::string before = ShowSetting(spec, config_);
    std::string after = ShowSetting(spec, fresh);
    if (before == after) continue;
    if (spec.reload == Reload::kRestart) {
      spdlog::warn("reload: {} changed ({} -> {}) but takes effect only after a restart", spec.name,
                   before, after);
      continue;
    }
    std::string ignored;
    ApplySetting(spec, after, config_, ignored);
    spdlog::info("reload: {} = {} (was {})", spec.name, after, before);
  }
  spdlog::set_level(spdlog::level::from_str(config_.log_level));
  spdlog::info("configuration reloaded");
  sd_notify(0, "READY=1");
}

void Daemon::NotifyStatus() {
  if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
  sd_notifyf(0, "STATUS=%zu segments, %s in use, %zu clients", registry_.count(),
             FormatSize(registry_.total_bytes()).c_str(), sessions_.size());
  status_timer_.expires_after(std::chrono::seconds(5));
  status_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) NotifyStatus();
  });
}

int Daemon::Run() {
  ::signal(SIGPIPE, SIG_IGN);
  WaitForSignals();
  uint64_t shm_size = ShmTotalBytes();
  if (shm_size != 0 && shm_size < (1ull << 30)) {
    spdlog::warn("/dev/shm holds only {} (containers default to 64 MB): give it more with "
                 "docker --shm-size, --ipc=host, or a larger tmpfs",
                 FormatSize(shm_size));
  }
  auto leftovers = ListShmObjects(config_.shm_prefix + ".");
  if (!leftovers.empty() && !state_.is_open()) {
    spdlog::warn("{} shared-memory object(s) named {}.* are left in /dev/shm from an earlier run; "
                 "they are not ours to free (first: {})",
                 leftovers.size(), config_.shm_prefix, leftovers.front());
  }
  spdlog::info("{}", DescribeHugePageSupport(ProbeHugePages(), config_.huge_dir,
                                             config_.huge_threshold));
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  Accept();
  spdlog::info(
      "shmleased {} ready: listening on {} (shm prefix {}, limits: {} segments, {} total, {} per "
      "segment, {} connections)",
      SHMLEASE_VERSION, config_.socket, config_.shm_prefix, config_.max_segments,
      FormatSize(config_.max_total_bytes), FormatSize(config_.max_segment_size),
      config_.max_connections);
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%d", config_.socket.c_str(),
             static_cast<int>(::getpid()));
  NotifyStatus();
  io_.run();
  spdlog::info("shmleased stopped");
  return 0;
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  sd_notify(0, "STOPPING=1");
  boost::system::error_code ec;
  reload_signal_.cancel();
  status_timer_.cancel();
  acceptor_.close(ec);
  accept_retry_.cancel();
  signals_.cancel();
  reclaim_grace_.cancel();
  if (state_.is_open()) {
    // Keep every segment, and the state that lists it, for the next daemon: closing the sessions
    // below releases their leases, and that must not free removed segments whose holders will
    // reclaim them.
    SaveState();
    registry_.Preserve();
    spdlog::info("keeping {} segment(s) for the next start (state in {})", registry_.count(),
                 state_.path());
  }
  sessions_.CloseAll();
  io_.stop();
}

void Daemon::RequestStop() {
  asio::post(io_, [this] { Stop(); });
}

bool Daemon::Restore(std::string& error) {
  if (config_.state_dir.empty()) {
    for (auto& [id, fd] : passed_segments_) {
      ::close(fd);
      RemoveStoredFd(SegmentFdName(id));
    }
    passed_segments_.clear();
    return true;
  }
  if (!state_.Open(config_.state_dir, error)) return false;
  PersistedState state;
  bool exists = false;
  if (!state_.Load(state, exists, error)) return false;
  if (exists && state.shm_prefix != config_.shm_prefix) {
    error = "the state file " + state_.path() + " belongs to shm prefix '" + state.shm_prefix +
            "', this daemon runs with '" + config_.shm_prefix +
            "' (use the same --shm-prefix, or another --state-dir)";
    return false;
  }
  boot_ = exists ? state.boot + 1 : 1;
  registry_.set_next_id(state.next_id);
  size_t adopted = 0, removed = 0;
  std::set<std::string> known;
  for (const PersistedSegment& p : state.segments) {
    known.insert(p.shm_name);
    Errc code = Errc::kOk;
    std::string message;
    Backing backing = Backing::kPosixShm;
    ParseBackingName(p.backing, backing);  // DecodeState checked it
    std::unique_ptr<ShmObject> shm;
    if (!IsNameless(backing)) {
      shm = ShmObject::Open(p.shm_name, p.size, code, message);
    } else if (auto it = passed_segments_.find(p.id); it == passed_segments_.end()) {
      code = Errc::kNotFound;
      message = "the service manager did not pass its descriptor back (" +
                SegmentFdName(p.id) +
                "; the fd store is emptied when the service stops, and kept when it restarts)";
    } else {
      int fd = it->second;
      passed_segments_.erase(it);
      shm = ShmObject::Adopt(fd, p.shm_name, backing, p.size, p.backing_bytes,
                             p.backing_page != 0 ? p.backing_page
                                                 : static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)),
                             code, message);
      if (!shm) RemoveStoredFd(SegmentFdName(p.id));
    }
    if (!shm) {
      spdlog::warn("segment '{}' (id {}) of the state file is dropped: {}{}", p.name, p.id, message,
                   code == Errc::kNotFound || IsNameless(backing) ? ""
                                                                  : "; the object is left in place");
      continue;
    }
    auto segment = std::make_unique<Segment>();
    static_cast<PersistedSegment&>(*segment) = p;
    segment->shm = std::move(shm);
    if (!registry_.Adopt(std::move(segment))) {
      spdlog::error("segment '{}' (id {}) of the state file clashes with another; dropped", p.name,
                    p.id);
      continue;
    }
    ++adopted;
    removed += p.removed ? 1 : 0;
  }
  // Stored descriptors the state does not list: stored, then a crash before the state said so.
  for (auto& [id, fd] : passed_segments_) {
    spdlog::warn("dropping stored descriptor {}: the state file lists no such segment",
                 SegmentFdName(id));
    ::close(fd);
    RemoveStoredFd(SegmentFdName(id));
  }
  passed_segments_.clear();
  // Objects under our prefix that the state does not list were created but never recorded (a
  // crash between the two): nobody was told of them, so they are ours to free. Without a state
  // file we cannot tell whose they are and leave them (Run() warns).
  if (exists) {
    for (const std::string& name : ListShmObjects(config_.shm_prefix + ".")) {
      if (known.count(name) != 0) continue;
      spdlog::warn("removing {} from /dev/shm: it carries this daemon's prefix but the state file "
                   "does not list it",
                   name);
      UnlinkShmObject(name);
    }
  }
  // Lease ids of this process live in a range of their own (boot << 32): a client can never
  // confuse a new lease id with one of an earlier process.
  handler_.StartLeaseIdsAt((boot_ << 32) + 1);
  if (!SaveState(&error)) {
    error = "cannot write the state directory: " + error;
    return false;
  }
  registry_.set_on_change([this] { SaveState(); });
  // Nameless segments survive a restart only in the service manager's fd store.
  if (!FdStoreAvailable()) {
    spdlog::warn("no service manager ($NOTIFY_SOCKET unset, --keeper=no): sealed segments will "
                 "not survive a restart of this daemon; use --backing named or run with the keeper");
  }
  registry_.set_on_backing([](const Segment& segment, bool added) {
    std::string name = SegmentFdName(segment.id);
    if (!added) {
      RemoveStoredFd(name);
      return;
    }
    std::string why;
    if (!StoreFd(segment.shm->rw_fd(), name, why)) {
      spdlog::warn("segment '{}' will not survive a restart: {}", segment.name, why);
    }
  });
  spdlog::info("state {}: re-adopted {} segment(s) ({} removed, kept {} ms for their holders), "
               "start {}",
               state_.path(), adopted, removed, config_.reclaim_grace_ms, boot_);
  if (removed > 0) {
    reclaim_grace_.expires_after(std::chrono::milliseconds(config_.reclaim_grace_ms));
    reclaim_grace_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && !stopping_) handler_.FreeUnclaimed();
    });
  }
  return true;
}

bool Daemon::SaveState(std::string* error) {
  PersistedState state;
  state.shm_prefix = config_.shm_prefix;
  state.next_id = registry_.next_id();
  state.boot = boot_;
  for (const Segment* s : registry_.All()) {
    state.segments.push_back(static_cast<const PersistedSegment&>(*s));
  }
  std::string why;
  if (state_.Save(state, why)) return true;
  spdlog::error("cannot record the state: {}; a restart now would lose recent changes", why);
  if (error != nullptr) *error = why;
  return false;
}

void Daemon::Accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void Daemon::OnAccept(const boost::system::error_code& ec, stream::socket socket) {
  if (stopping_ || ec == asio::error::operation_aborted) return;
  if (ec == asio::error::no_descriptors ||
      ec == boost::system::errc::too_many_files_open_in_system) {
    RefuseWhileOutOfDescriptors();
    return;
  }
  if (ec) {
    // Pause instead of spinning on a listening socket that stays readable.
    spdlog::warn("accept failed: {}; retrying in 100 ms", ec.message());
    accept_retry_.expires_after(std::chrono::milliseconds(100));
    accept_retry_.async_wait([this](const boost::system::error_code& wait_ec) {
      if (!wait_ec) Accept();
    });
    return;
  }
  if (out_of_fds_) {
    spdlog::info("accepting connections again ({} refused while out of file descriptors)",
                 refused_no_fds_);
    out_of_fds_ = false;
    refused_no_fds_ = 0;
  }
  if (sessions_.size() >= config_.max_connections) {
    RefuseConnection(socket, "shmleased serves its limit of " +
                                 std::to_string(config_.max_connections) + " connections");
    spdlog::warn("connection refused: limit of {} connections reached", config_.max_connections);
    Accept();
    return;
  }
  Peer peer;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    peer.pid = cred.pid;
    peer.uid = cred.uid;
    peer.gid = cred.gid;
  } else {
    // Without the kernel's word on the peer there is nobody to check access or count against.
    spdlog::warn("connection refused: SO_PEERCRED failed: {}", std::strerror(errno));
    Accept();
    return;
  }
  // One uid must not take every connection. Admins are exempt: they can stop the daemon anyway,
  // and in a container every client may well be root.
  if (config_.max_connections_per_uid != 0 &&
      sessions_.CountOf(peer.uid) >= config_.max_connections_per_uid &&
      std::find(config_.admins.begin(), config_.admins.end(), peer.uid) == config_.admins.end()) {
    RefuseConnection(socket, "uid " + std::to_string(peer.uid) + " already has " +
                                 std::to_string(config_.max_connections_per_uid) +
                                 " connections to shmleased, its limit "
                                 "(max-connections-per-uid); close one, or ask the administrator "
                                 "to raise the limit");
    spdlog::warn("connection of pid {} refused: uid {} has its limit of {} connections", peer.pid,
                 peer.uid, config_.max_connections_per_uid);
    Accept();
    return;
  }
  peer.process = ProcessName(cred.pid);
  // Supplementary groups, so that group permission bits work for members of a group.
  std::vector<gid_t> groups(64);
  socklen_t groups_len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &groups_len) != 0 &&
      errno == ERANGE) {
    groups.resize(groups_len / sizeof(gid_t));
    ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &groups_len);
  }
  groups.resize(groups_len / sizeof(gid_t));
  peer.groups = std::move(groups);
  uint64_t conn_id = next_conn_id_++;
  spdlog::info("client {} connected (pid {}, uid {}, {})", conn_id, peer.pid, peer.uid,
               peer.process);
  auto session =
      std::make_shared<Session>(std::move(socket), conn_id, peer, handler_, sessions_, config_);
  sessions_.Add(session);
  session->Start();
  Accept();
}

void Daemon::RefuseConnection(stream::socket& socket, const std::string& why) {
  std::vector<std::byte> bytes;
  proto::EncodeReply(proto::ErrorReply{Errc::kLimitConnections, why}, 0, 0, bytes);
  [[maybe_unused]] ssize_t n =
      ::send(socket.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void Daemon::RefuseWhileOutOfDescriptors() {
  if (!out_of_fds_) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    spdlog::error("out of file descriptors (limit {}): refusing new connections until some close; "
                  "the {} connected clients are still served",
                  static_cast<uint64_t>(limit.rlim_cur), sessions_.size());
    out_of_fds_ = true;
  }
  std::vector<std::byte> bytes;
  proto::EncodeReply(proto::ErrorReply{Errc::kLimitConnections,
                                       "shmleased is out of file descriptors (its RLIMIT_NOFILE); "
                                       "connection refused, try again later"},
                     0, 0, bytes);
  // One connection per freed spare, as long as connections wait: each is told, then closed.
  bool drained = false;
  while (spare_fd_ >= 0) {
    pollfd waiting{acceptor_.native_handle(), POLLIN, 0};
    if (::poll(&waiting, 1, 0) != 1) {
      drained = true;
      break;
    }
    ::close(spare_fd_);
    int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      [[maybe_unused]] ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      ::close(fd);
      ++refused_no_fds_;
    }
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
  }
  if (drained) {
    Accept();  // waits without spinning until the next connection arrives
    return;
  }
  // No spare to refuse with, or accept failed even with it: look again shortly, never spin.
  accept_retry_.expires_after(std::chrono::milliseconds(100));
  accept_retry_.async_wait([this](const boost::system::error_code& wait_ec) {
    if (!wait_ec) Accept();
  });
}

}  // namespace shmlease::server
