#include "shmlease/client.hpp"

#include <utility>

#include "connection.hpp"
#include "shmlease/format.hpp"
#include "shmlease/socket_path.hpp"
#include "wire_types.hpp"

namespace shmlease {
namespace {

// Returns the reply of type T, or throws the daemon's error.
template <typename T>
T Expect(detail::Response&& response) {
  if (auto* err = std::get_if<proto::ErrorReply>(&response.reply)) {
    throw Error(err->code, err->message);
  }
  if (auto* ok = std::get_if<T>(&response.reply)) return std::move(*ok);
  throw Error(Errc::kBadMessage, "shmleased answered with an unexpected message type");
}

// Runs `f`, turning any Error into `ec` (and any other exception into kInternal).
template <typename F>
auto Capture(std::error_code& ec, F&& f) noexcept -> decltype(f()) {
  ec.clear();
  try {
    return f();
  } catch (const Error& e) {
    ec = e.code();
  } catch (...) {
    ec = make_error_code(Errc::kInternal);
  }
  return {};
}

}  // namespace

// --- Lease ---

Lease::~Lease() { Release(); }

Lease::Lease(Lease&& other) noexcept { *this = std::move(other); }

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    connection_ = std::move(other.connection_);
    mapping_ = std::move(other.mapping_);
    id_ = std::exchange(other.id_, 0);
    handle_ = std::exchange(other.handle_, 0);
    mode_ = other.mode_;
    exclusive_ = other.exclusive_;
    info_ = std::move(other.info_);
  }
  return *this;
}

void Lease::Release() noexcept {
  if (!mapping_) return;
  if (connection_) connection_->ReleaseLease(handle_);
  mapping_.reset();
  connection_.reset();
}

uint64_t Lease::id() const noexcept {
  if (!mapping_ || !connection_) return id_;
  uint64_t current = connection_->LeaseId(handle_);
  return current != 0 ? current : id_;
}

bool Lease::lost() const noexcept {
  return mapping_ && connection_ && connection_->LeaseLost(handle_);
}

bool Lease::held() const noexcept {
  return mapping_ && connection_ && connection_->LeaseHeld(handle_);
}

std::span<const std::byte> Lease::data() const noexcept {
  if (!mapping_) return {};
  return {static_cast<const std::byte*>(mapping_->address), size()};
}

std::span<std::byte> Lease::writable_data() const {
  if (!mapping_) throw Error(Errc::kInvalidArgument, "the lease was released");
  if (!writable()) {
    throw Error(Errc::kPermissionDenied, "lease on '" + info_.name + "' is read-only");
  }
  return {static_cast<std::byte*>(mapping_->address), size()};
}

std::shared_ptr<const void> Lease::mapping_owner() const noexcept {
  if (!mapping_) return nullptr;
  return std::shared_ptr<const void>(mapping_, mapping_->address);
}

void Lease::CheckType(size_t item_size, char kind) const {
  const std::string& format = info_.format.empty() ? std::string("B") : info_.format;
  char format_kind = 0;
  switch (format[0]) {
    case 'b': case 'h': case 'i': case 'l': case 'q': format_kind = 'i'; break;
    case 'B': case 'H': case 'I': case 'L': case 'Q': format_kind = 'u'; break;
    case 'e': case 'f': case 'd': format_kind = 'f'; break;
    case '?': format_kind = '?'; break;
  }
  if (item_size != FormatItemSize(format).value_or(0) || (kind != 0 && kind != format_kind)) {
    throw Error(Errc::kInvalidArgument, "segment '" + info_.name + "' holds items of format '" +
                                            format + "', not the requested type");
  }
}

// --- Client ---

Client::Client(std::string_view socket)
    : connection_(detail::Connection::Open(ResolveSocketPath(socket))) {}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

std::optional<Client> Client::Connect(std::string_view socket, std::error_code& ec) noexcept {
  return Capture(ec, [&]() -> std::optional<Client> {
    return Client(detail::Connection::Open(ResolveSocketPath(socket)));
  });
}

const std::string& Client::socket_path() const noexcept {
  static const std::string kNone;
  return connection_ ? connection_->socket_path() : kNone;
}

uint32_t Client::server_pid() const noexcept { return connection_ ? connection_->server_pid() : 0; }

detail::Connection& Client::connection() const {
  if (!connection_) throw Error(Errc::kConnectionLost, "this client was moved from");
  return *connection_;
}

void Client::Ping() { Expect<proto::Pong>(connection().Call(proto::Ping{})); }

SegmentInfo Client::Create(std::string_view name, const CreateOptions& options) {
  proto::Create request = detail::CreateRequest(name, options);
  return detail::FromWire(Expect<proto::CreateOk>(connection().Call(request)).info);
}

Lease Client::Acquire(std::string_view name, Mode mode, const LeaseOptions& options) {
  proto::Acquire request = detail::AcquireRequest(name, mode, options);
  detail::CallControl control;
  if (options.interrupted) control.interrupted = &options.interrupted;
  detail::Response response = connection().Call(request, options.interrupted ? &control : nullptr);
  auto mapping = std::move(response.mapping);
  uint64_t handle = response.lease_handle;
  Errc map_error = response.map_error;
  std::string map_message = std::move(response.map_message);
  if (control.cancelled) {
    // Withdrawn: the daemon answered kCancelled, or the grant crossed the Cancel (release it at
    // once), or the wait ended otherwise meanwhile (a timeout): the caller asked to stop.
    if (auto* ok = std::get_if<proto::AcquireOk>(&response.reply)) {
      if (mapping) {
        connection_->ReleaseLease(handle);
      } else {
        connection_->SendOneWay(proto::Release{ok->lease_id});
      }
    }
    std::string text = "the lease request on '" + std::string(name) + "' was cancelled";
    if (auto* err = std::get_if<proto::ErrorReply>(&response.reply);
        err && err->code != Errc::kCancelled) {
      text += " (the daemon had already answered: " + err->message + ")";
    }
    throw Error(Errc::kCancelled, text + ": interrupted() returned true");
  }
  proto::AcquireOk ok = Expect<proto::AcquireOk>(std::move(response));
  if (!mapping) {
    connection_->SendOneWay(proto::Release{ok.lease_id});
    throw Error(map_error == Errc::kOk ? Errc::kMapFailed : map_error, map_message);
  }
  if (options.populate) {
    std::string why;
    if (!detail::Populate(*mapping, ok.info.page_size, why)) {
      connection_->SendOneWay(proto::Release{ok.lease_id});
      throw Error(Errc::kMapFailed, "cannot populate the mapping of '" + ok.info.name + "': " + why);
    }
  }
  Lease lease;
  lease.connection_ = connection_;
  lease.mapping_ = std::move(mapping);
  lease.id_ = ok.lease_id;
  lease.handle_ = handle;
  lease.mode_ = mode;
  lease.exclusive_ = ok.exclusive != 0;
  lease.info_ = detail::FromWire(std::move(ok.info));
  return lease;
}

void Client::Remove(std::string_view name) {
  Expect<proto::RemoveOk>(connection().Call(proto::Remove{std::string(name)}));
}

SegmentInfo Client::Stat(std::string_view name) {
  return detail::FromWire(
      Expect<proto::StatOk>(connection().Call(proto::Stat{std::string(name)})).info);
}

std::vector<SegmentInfo> Client::List() {
  return detail::FromWire(Expect<proto::ListOk>(connection().Call(proto::List{})).segments);
}

SegmentInfo Client::Chmod(std::string_view name, uint32_t mode) {
  return detail::FromWire(
      Expect<proto::ChmodOk>(connection().Call(proto::Chmod{std::string(name), mode})).info);
}

DaemonStats Client::Stats() {
  return detail::FromWire(Expect<proto::StatsOk>(connection().Call(proto::Stats{})));
}

void Client::Ping(std::error_code& ec) noexcept {
  Capture(ec, [&] {
    Ping();
    return 0;
  });
}
SegmentInfo Client::Create(std::string_view name, const CreateOptions& options,
                           std::error_code& ec) noexcept {
  return Capture(ec, [&] { return Create(name, options); });
}
Lease Client::Acquire(std::string_view name, Mode mode, const LeaseOptions& options,
                      std::error_code& ec) noexcept {
  return Capture(ec, [&] { return Acquire(name, mode, options); });
}
void Client::Remove(std::string_view name, std::error_code& ec) noexcept {
  Capture(ec, [&] {
    Remove(name);
    return 0;
  });
}
SegmentInfo Client::Stat(std::string_view name, std::error_code& ec) noexcept {
  return Capture(ec, [&] { return Stat(name); });
}
std::vector<SegmentInfo> Client::List(std::error_code& ec) noexcept {
  return Capture(ec, [&] { return List(); });
}

SegmentInfo Client::Chmod(std::string_view name, uint32_t mode, std::error_code& ec) noexcept {
  return Capture(ec, [&] { return Chmod(name, mode); });
}
DaemonStats Client::Stats(std::error_code& ec) noexcept {
  return Capture(ec, [&] { return Stats(); });
}

void Client::set_reconnect_timeout(std::chrono::milliseconds timeout) noexcept {
  if (connection_) connection_->set_reconnect_timeout(timeout);
}

uint64_t Client::reconnects() const noexcept { return connection_ ? connection_->reconnects() : 0; }

void Client::Close() noexcept {
  // Only shut the socket down: other threads may be inside a call on this connection; they wake
  // with kConnectionLost. The Connection object lives until the Client and its Leases are gone.
  if (connection_) connection_->Shutdown();
}

}  // namespace shmlease

