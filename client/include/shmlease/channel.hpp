// Frame channels: one writer hands frames (fixed-shape, or of variable size up to a maximum) to
// any number of readers through shared memory, without a daemon round trip per frame
// (docs/CHANNELS.md).
//
// Ownership: a channel is a daemon object. The daemon makes its memory (sealed: no participant can
// resize it, and it has no name anyone could open) and knows its writer and readers by their
// connections. The writer maps the frames read-write, readers read-only; each reader writes only a
// page of its own, which the writer maps read-only. Writer, Reader and Frame share ownership of
// the mappings and of the Client's connection, so a Frame stays valid (and its slot held) after
// its Reader or Writer object is gone. Channel::Remove() takes the name away; the memory is freed
// when the last participant leaves.
//
// Nothing here uses a process-shared mutex: the shared state is atomics only, and the daemon tells
// everyone at once when a participant's connection closes (its process died).
//
// Thread safety: a Channel, Writer or Reader may be used from one thread at a time; Frames may be
// released from any thread.
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
#include <vector>

#include "shmlease/client.hpp"

namespace shmlease {

namespace detail {
struct ChannelShared;
struct ReaderState;
}  // namespace detail

enum class ChannelPolicy : uint32_t {
  // The writer's Claim waits until every reader has released the oldest slot (backpressure); each
  // reader receives every frame published after it joined, in order.
  kBlock = 1,
  // The writer never waits for slow readers (only when every slot is held at once); a reader
  // receives the newest published frame and Frame::missed() says how many it skipped.
  kLatest = 2,
};

struct ChannelOptions {
  std::string format = "B";     // one native struct item, as for segments
  std::vector<uint64_t> shape;  // frame shape; empty (and no max_frame_bytes) = open by name
  // Variable-size frames of at most this many bytes (format "B", no shape): each published frame
  // carries its own length (Writer::Publish(frame, length)). 0: fixed-shape frames.
  uint64_t max_frame_bytes = 0;
  // 2..64. Unset: 8 when this call creates the channel, whatever it has when it exists; only an
  // explicitly given value that differs from the existing channel's is refused.
  std::optional<uint32_t> slots;
  // Unset: kBlock when this call creates the channel, whatever it has when it exists (as slots).
  std::optional<ChannelPolicy> policy;
  // kBlock: a reader that keeps the writer waiting for a slot longer than this is evicted (it gets
  // Error(kEvicted)); 0 waits for readers without limit. Set at creation.
  std::chrono::milliseconds reader_timeout{0};
  // Permission bits at creation: read = may read frames, write = may be the writer and remove it.
  uint32_t mode = 0600;
  // Opening by name only (empty shape): how long to wait for a channel that does not exist yet,
  // e.g. a reader started before its writer. 0 (the default) fails at once with
  // Error(kNotFound); kWaitForever waits without limit; otherwise Error(kTimeout) naming the
  // channel once it runs out. Other negative values are refused (kInvalidArgument). The daemon
  // is asked again at a growing interval (1 ms up to 50 ms), so a wait costs no busy core.
  // Ignored when a shape is given (the channel is then created if missing).
  std::chrono::milliseconds wait{0};
  // Polled during that wait, as LeaseOptions::interrupted (client.hpp): returning true ends it
  // with Error(kCancelled).
  std::function<bool()> interrupted;
};

// Slots and policy of a channel created without them.
inline constexpr uint32_t kDefaultChannelSlots = 8;
inline constexpr ChannelPolicy kDefaultChannelPolicy = ChannelPolicy::kBlock;

// Largest user metadata per frame (Writer::Publish's `meta`).
inline constexpr size_t kMaxFrameMeta = 256;
// Most readers attached to one channel at once.
inline constexpr size_t kMaxChannelReaders = 64;

// What the daemon says of a channel (Channel::Stat, Channel::List).
struct ChannelInfo {
  std::string name;
  std::string format;
  std::vector<uint64_t> shape;  // empty for variable-size frames
  uint32_t slots = 0;
  ChannelPolicy policy = ChannelPolicy::kBlock;
  uint64_t frame_bytes = 0;  // fixed: every frame's size; variable: the largest
  bool variable = false;
  std::chrono::milliseconds reader_timeout{0};
  uint64_t bytes = 0;  // memory of its frames
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  uint32_t mode = 0600;
  uint32_t writer_pid = 0;  // 0: no writer
  uint32_t readers = 0;
  // Places that hold frames for other processes (Channel::Hold), not counted in `readers`.
  uint32_t holders = 0;
  int64_t created_unix_ns = 0;
};

// Where a reader's frame is: enough for another process to hold the same frame
// (Channel::Hold), which is how a numpy array of a frame travels by reference (docs/PYTHON.md,
// "Arrays between processes"). The channel is named by its identity, not only its name, so that
// a channel removed and created again under the name is never taken for this one.
struct FrameLocation {
  std::string channel_name;
  uint64_t channel_id = 0;
  int64_t channel_created_unix_ns = 0;
  uint32_t slot = 0;
  uint64_t seq = 0;
};

// One frame: a slot leased for reading (from a Reader) or for writing (from Writer::Claim).
// Release() (or destruction) gives the slot back; a writer's unpublished frame is then discarded.
class Frame {
 public:
  Frame() = default;
  ~Frame();
  Frame(Frame&& other) noexcept;
  Frame& operator=(Frame&& other) noexcept;
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;

  bool valid() const noexcept { return shared_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }
  // Gives the slot back. Never throws; releasing an empty Frame does nothing.
  void Release() noexcept;

  bool writable() const noexcept { return writer_; }
  // True while the daemon counts the leases this frame's slot is held through: the channel's
  // control and data segments (and, for a writer's frame, the writer token), all on the Client's
  // connection (see Lease::held()). False for an empty frame, and once that connection was
  // closed (Client::Close()) or lost for good: the slot may then be reclaimed by others, as
  // after a crash, and a reader's bytes may be overwritten by a new writer at any moment.
  bool held() const noexcept;
  // The frame's bytes: the channel's frame size, or (variable-size frames) the length the writer
  // published; a claimed frame spans the whole slot.
  std::span<const std::byte> data() const noexcept { return {data_, size_}; }
  size_t size() const noexcept { return size_; }
  // Throws Error(kPermissionDenied) on a reader's frame.
  std::span<std::byte> writable_data() const;
  template <typename T>
  std::span<const T> as() const {
    return {reinterpret_cast<const T*>(data_), size_ / sizeof(T)};
  }
  template <typename T>
  std::span<T> as_writable() const {
    auto bytes = writable_data();
    return {reinterpret_cast<T*>(bytes.data()), bytes.size() / sizeof(T)};
  }

  // Reader frames: the sequence number (1, 2, ... per channel), the publish time
  // (CLOCK_MONOTONIC nanoseconds, Python's time.monotonic_ns()), the writer's metadata and, with
  // the latest policy, how many frames this reader skipped before this one. 0 for a claimed frame.
  uint64_t seq() const noexcept { return seq_; }
  int64_t timestamp_ns() const noexcept { return timestamp_ns_; }
  std::span<const std::byte> meta() const noexcept { return {meta_, meta_size_}; }
  uint64_t missed() const noexcept { return missed_; }
  // A reader's (or a held) frame: where it is, for Channel::Hold in another process. Throws
  // Error(kInvalidArgument) for a claimed frame (it is the writer's alone until published) and
  // for an empty one.
  FrameLocation location() const;
  // Keeps the mapped memory alive (for exporters that may outlive the frame).
  std::shared_ptr<const void> mapping_owner() const noexcept;

 private:
  friend class Writer;
  friend class Reader;
  friend class Channel;
  std::shared_ptr<detail::ChannelShared> shared_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  uint32_t slot_ = 0;
  bool writer_ = false;
  uint64_t seq_ = 0;
  int64_t timestamp_ns_ = 0;
  const std::byte* meta_ = nullptr;
  size_t meta_size_ = 0;
  uint64_t missed_ = 0;
};

// The one writer of a channel. Holds the channel's writer token (an exclusive daemon lease) until
// destroyed; destruction ends the stream for readers (they get Error(kEndOfStream) once they have
// received every frame), and a new Writer may then take over, continuing the sequence numbers.
class Writer {
 public:
  Writer() = default;
  ~Writer();
  Writer(Writer&&) noexcept;
  Writer& operator=(Writer&&) noexcept;

  // A free slot to fill. kBlock: waits while every slot is still held or unread by some reader
  // (a reader that keeps it waiting beyond the channel's reader timeout is evicted); kLatest:
  // waits only while every slot is held. Throws Error(kTimeout) when `timeout` runs out
  // (kWaitForever waits without limit).
  Frame Claim(std::chrono::milliseconds timeout = kWaitForever);
  // Publishes a claimed frame (which becomes empty) with up to kMaxFrameMeta bytes of metadata;
  // returns its sequence number. Throws Error(kInvalidArgument) for a frame that is not this
  // writer's claimed frame or for longer metadata.
  uint64_t Publish(Frame& frame, std::span<const std::byte> meta = {});
  // The same with the frame's length (variable-size channels: 0..max_frame_bytes; fixed-shape
  // channels accept only their frame size).
  uint64_t Publish(Frame& frame, size_t length, std::span<const std::byte> meta = {});
  // Readers attached now.
  uint32_t reader_count() const noexcept;
  // Waits until at least `n` readers are attached; false on timeout.
  bool WaitForReaders(uint32_t n, std::chrono::milliseconds timeout);
  // Ends the stream now (as destruction does).
  void Close() noexcept;
  bool valid() const noexcept { return shared_ != nullptr; }

 private:
  friend class Channel;
  std::shared_ptr<detail::ChannelShared> shared_;
};

struct WriterOptions {
  // How long to wait for the writer token while another writer holds it: 0 (the default) fails
  // at once, kWaitForever waits without limit.
  std::chrono::milliseconds timeout{0};
  // Polled while waiting, as LeaseOptions::interrupted (client.hpp): returning true withdraws
  // the wait and writer() throws Error(kCancelled).
  std::function<bool()> interrupted;
};

struct ReaderOptions {
  // Spin on the shared state instead of sleeping: lowest latency, one busy core per reader.
  bool busy_poll = false;
};

// One reader: receives every frame published after it attached (kBlock) or the newest ones
// (kLatest). Its place is given back when it and its frames are gone, or by the daemon when its
// connection closes. Every call throws Error(kEvicted) once the writer has removed it (reader
// timeout, or a page no honest reader writes), and Error(kConnectionLost) once the daemon no longer
// counts it (its connection was lost).
class Reader {
 public:
  Reader() = default;
  ~Reader();
  Reader(Reader&&) noexcept;
  Reader& operator=(Reader&&) noexcept;

  // The next frame. Blocks (a short spin, then a futex sleep) until one is published, then
  // returns it. Throws Error(kEndOfStream) when the writer has closed or died and no published
  // frame is left for this reader (a later call continues if a new writer has taken over), and
  // Error(kTimeout) when `timeout` runs out.
  Frame Next(std::chrono::milliseconds timeout = kWaitForever);
  // Non-blocking: a frame if one is ready now, else an empty Frame (and no error; AtEnd() then
  // says whether the stream has ended).
  Frame TryNext();
  // Non-blocking end-of-stream check for callers of TryNext(): true when the writer has closed
  // or died and no published frame is left for this reader (what Next() reports with
  // Error(kEndOfStream)). Whether the writer's process is alive is looked at most every 20 ms.
  // Returning true reports the end, as Next()'s error does: fileno() is then no longer readable
  // for it, only again once a new writer publishes or ends the stream.
  bool AtEnd();
  // True after the end was reported (by AtEnd() or Next()) and no new writer has taken over.
  bool ended() const noexcept;
  // An fd that is readable while a frame, or an end of stream not yet reported, is ready for
  // this reader: for select/poll/epoll/asyncio. Owned by the Reader. Backed by an eventfd that a
  // helper thread (started by the first call) signals; Next()/TryNext()/AtEnd() re-arm it, so
  // it does not stay readable once every frame was taken and the end reported.
  int fileno();
  bool valid() const noexcept { return shared_ != nullptr; }

 private:
  friend class Channel;
  void RearmEvent() noexcept;
  void ReportEnd(uint64_t generation) noexcept;
  std::shared_ptr<detail::ChannelShared> shared_;
  std::shared_ptr<detail::ReaderState> state_;
};

// A handle to a named channel (its control block mapped), from which writers and readers attach.
class Channel {
 public:
  // Creates the channel or opens it when it exists (then checks that format and shape, and slots
  // and policy where given, match: Error(kInvalidArgument) naming both otherwise). With an empty
  // `options.shape` only opens: Error(kNotFound) when there is no such channel, or after waiting
  // `options.wait` for it Error(kTimeout). `client` must outlive the Channel's calls to
  // writer()/reader() (not the objects they return).
  Channel(Client& client, std::string_view name, const ChannelOptions& options = {});
  ~Channel();
  Channel(Channel&&) noexcept;
  Channel& operator=(Channel&&) noexcept;

  // Takes the writer token. Throws Error(kTimeout) when another writer holds it beyond `timeout`
  // (default: fail at once).
  Writer writer(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // The same, with WriterOptions (an interruptible wait).
  Writer writer(const WriterOptions& options);
  Reader reader(const ReaderOptions& options = {});

  // Holds the frame another process took (its Frame::location()): a read-only Frame of the same
  // slot, which the writer does not reuse until this one is released, exactly as for a reader's
  // frame. The first call attaches a holder place (read permission needed, like a reader); the
  // calls that follow while any frame held through it lives share it, and it is given back with
  // the last of them. A holder receives no frames, never makes the writer wait for frames it has
  // not read, and is not counted among the readers (ChannelInfo::holders). Its frames are lost as
  // a reader's are: evicted past the reader timeout, or with the connection. Throws
  // Error(kNotFound) when the frame is no longer in its slot (the writer reused it: nobody held
  // it meanwhile) or the channel is not the one located (removed, or created again under the
  // name), Error(kInvalidArgument) for a slot the channel does not have.
  Frame Hold(const FrameLocation& where);

  const std::string& name() const noexcept;
  const std::string& format() const noexcept;
  const std::vector<uint64_t>& shape() const noexcept;
  size_t frame_bytes() const noexcept;
  uint32_t slots() const noexcept;
  ChannelPolicy policy() const noexcept;
  bool variable() const noexcept;
  std::chrono::milliseconds reader_timeout() const noexcept;
  // Readers attached now (asks the daemon).
  uint32_t reader_count() const;
  ChannelInfo Stat() const;

  // Takes the name away; the memory is freed when the last participant leaves. Error(kNotFound)
  // when there is no such channel (the message says so when `name` is a segment).
  static void Remove(Client& client, std::string_view name);
  static ChannelInfo Stat(Client& client, std::string_view name);
  // The channels this caller may read.
  static std::vector<ChannelInfo> List(Client& client);

 private:
  std::shared_ptr<detail::ChannelShared> shared_;  // the daemon's view; no mapping
  std::weak_ptr<detail::ChannelShared> holder_;    // the holder place, while a held frame lives
};

}  // namespace shmlease
