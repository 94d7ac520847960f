#include "daemon.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "huge_pages.hpp"
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

Daemon::Daemon(Config config)
    : config_(std::move(config)),
      signals_(io_, SIGINT, SIGTERM),
      acceptor_(io_),
      accept_retry_(io_),
      registry_(config_),
      handler_(io_, config_, registry_, sessions_) {}

Daemon::~Daemon() {
  if (listening_) ::unlink(config_.socket.c_str());
}

bool Daemon::Listen(std::string& error) {
  namespace fs = std::filesystem;
  std::error_code fec;
  fs::path dir = fs::path(config_.socket).parent_path();
  if (!dir.empty()) {
    fs::create_directories(dir, fec);
    if (fec) {
      error = "cannot create the socket directory " + dir.string() + ": " + fec.message();
      return false;
    }
  }
  struct stat st {};
  if (::lstat(config_.socket.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = config_.socket + " exists and is not a socket; refusing to replace it";
      return false;
    }
    if (SomeoneListens(config_.socket)) {
      error = "another shmleased is already serving " + config_.socket;
      return false;
    }
    spdlog::warn("removing stale socket {} (nobody answers on it)", config_.socket);
    ::unlink(config_.socket.c_str());
  }
  boost::system::error_code ec;
  acceptor_.open(stream(), ec);
  if (!ec) acceptor_.bind(stream::endpoint(config_.socket), ec);
  if (ec) {
    error = "cannot bind " + config_.socket + ": " + ec.message();
    return false;
  }
  listening_ = true;
  if (::chmod(config_.socket.c_str(), static_cast<mode_t>(config_.socket_mode)) != 0) {
    error = "cannot chmod " + config_.socket + ": " + std::strerror(errno);
    return false;
  }
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + config_.socket + ": " + ec.message();
    return false;
  }
  return true;
}

int Daemon::Run() {
  ::signal(SIGPIPE, SIG_IGN);
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received {}; shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    Stop();
  });
  auto leftovers = ListShmObjects(config_.shm_prefix + ".");
  if (!leftovers.empty()) {
    spdlog::warn("{} shared-memory object(s) named {}.* are left in /dev/shm from an earlier run; "
                 "they are not ours to free (first: {})",
                 leftovers.size(), config_.shm_prefix, leftovers.front());
  }
  spdlog::info("{}", DescribeHugePageSupport(ProbeHugePages(), config_.huge_dir,
                                             config_.huge_threshold));
  Accept();
  spdlog::info(
      "shmleased {} ready: listening on {} (shm prefix {}, limits: {} segments, {} total, {} per "
      "segment, {} connections)",
      SHMLEASE_VERSION, config_.socket, config_.shm_prefix, config_.max_segments,
      FormatSize(config_.max_total_bytes), FormatSize(config_.max_segment_size),
      config_.max_connections);
  io_.run();
  spdlog::info("shmleased stopped");
  return 0;
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  accept_retry_.cancel();
  signals_.cancel();
  sessions_.CloseAll();
  io_.stop();
}

void Daemon::Accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void Daemon::OnAccept(const boost::system::error_code& ec, stream::socket socket) {
  if (stopping_ || ec == asio::error::operation_aborted) return;
  if (ec) {
    // Out of descriptors: pause instead of spinning on a listening socket that stays readable.
    spdlog::warn("accept failed: {}; retrying in 100 ms", ec.message());
    accept_retry_.expires_after(std::chrono::milliseconds(100));
    accept_retry_.async_wait([this](const boost::system::error_code& wait_ec) {
      if (!wait_ec) Accept();
    });
    return;
  }
  if (sessions_.size() >= config_.max_connections) {
    std::vector<std::byte> bytes;
    proto::EncodeReply(proto::ErrorReply{Errc::kLimitConnections,
                                         "shmleased serves its limit of " +
                                             std::to_string(config_.max_connections) +
                                             " connections"},
                       0, 0, bytes);
    [[maybe_unused]] ssize_t n =
        ::send(socket.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
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
    peer.process = ProcessName(cred.pid);
  }
  uint64_t conn_id = next_conn_id_++;
  spdlog::info("client {} connected (pid {}, uid {}, {})", conn_id, peer.pid, peer.uid,
               peer.process);
  auto session =
      std::make_shared<Session>(std::move(socket), conn_id, peer, handler_, sessions_, config_);
  sessions_.Add(session);
  session->Start();
  Accept();
}

}  // namespace shmlease::server
