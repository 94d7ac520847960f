// shmleased's top level: the io_context, the listening socket, signals, and the components.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <string>

#include "config.hpp"
#include "fd_store.hpp"
#include "request_handler.hpp"
#include "segment_registry.hpp"
#include "session.hpp"
#include "state_store.hpp"

namespace shmlease::server {

// Where the configuration came from, so that SIGHUP can read it again.
struct ConfigSource {
  std::string file;                           // "" = none
  std::map<std::string, std::string> flags;   // setting name -> value given on the command line
  bool optional = false;                      // file is the default: read only when it exists
};

class Daemon {
 public:
  Daemon(Config config, ConfigSource source = {});
  ~Daemon();

  // With a state directory: locks it, re-adopts the segments its state file lists and starts
  // recording every change (docs/RESTART.md). Without one: nothing. False with `error` set when
  // the state cannot be used; the daemon must then not start. Called by Listen().
  bool Restore(std::string& error);

  // Binds the socket (refusing if another daemon answers there); false with `error` set.
  bool Listen(std::string& error);
  // Serves until SIGTERM/SIGINT or Stop(); returns the process exit code.
  int Run();
  // Stops accepting, closes every client, and lets Run() return. Safe from the loop only.
  void Stop();
  // Stop() from any thread: posts it onto the loop, and returns at once. If Run() has not
  // started yet, the daemon stops as soon as it does. For a daemon run in-process (tests).
  void RequestStop();

  const Config& config() const { return config_; }

 private:
  void Accept();
  void WaitForSignals();
  // SIGHUP: reads the file and flags again and applies what can change live.
  void Reload();
  void WaitForReload();
  // Tells systemd (when it started us) how we are doing; a no-op otherwise.
  void NotifyStatus();
  // Writes the registry to the state file; logs (and goes on serving) if that fails.
  bool SaveState(std::string* error = nullptr);
  void OnAccept(const boost::system::error_code& ec,
                boost::asio::local::stream_protocol::socket socket);
  // Sends a connection about to be closed an Error limit_connections (request id 0) saying why.
  void RefuseConnection(boost::asio::local::stream_protocol::socket& socket,
                        const std::string& why);
  // accept() failed for want of descriptors: refuses the waiting connections one by one with an
  // Error reply (through the spare descriptor), then accepts again; never spins.
  void RefuseWhileOutOfDescriptors();

  Config config_;
  ConfigSource source_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::signal_set reload_signal_;
  boost::asio::steady_timer status_timer_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  SessionManager sessions_;
  SegmentRegistry registry_;
  RequestHandler handler_;
  StateStore state_;
  uint64_t boot_ = 0;
  boost::asio::steady_timer reclaim_grace_;
  uint64_t next_conn_id_ = 1;
  // Held open (/dev/null) so that at the descriptor limit one connection can still be accepted
  // and told why it is refused, instead of hanging in the listen backlog.
  int spare_fd_ = -1;
  bool out_of_fds_ = false;      // since the last accept that failed with EMFILE/ENFILE
  uint64_t refused_no_fds_ = 0;  // connections refused in that episode
  bool listening_ = false;
  bool socket_inherited_ = false;  // socket activation: systemd owns the socket file
  int socket_dir_fd_ = -1;         // the checked directory of a socket we bound ourselves
  std::string socket_name_;        // the socket's name in it
  dev_t socket_dev_ = 0;           // and the socket file bound there, removed only if still it
  ino_t socket_ino_ = 0;
  bool socket_stored_ = false;     // our socket is in the fd store: the next daemon serves it
  // Segment descriptors the service manager passed back, by id, until Restore() adopts them.
  std::map<uint64_t, int> passed_segments_;
  bool stopping_ = false;
};

}  // namespace shmlease::server
