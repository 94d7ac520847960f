#include "state_store.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace shmlease::server {
namespace {

PersistedState Sample() {
  PersistedState s;
  s.shm_prefix = "shmlease-abc";
  s.next_id = 9;
  s.boot = 3;
  s.segments.push_back(
      {1, "frames", 24, "f", {2, 3}, -5, 10, 1000, 1000, 100, 0640, false, "shmlease-abc.1",
       "sealed", 24, 4096});
  s.segments.push_back({7, "frames", 4096, "", {}, 123456789, 11, 0, 0, 0, 0600, true,
                        "shmlease-abc.7.00112233445566ff", "named", 4096, 4096});
  s.segments.push_back({8, "huge", 4096, "", {}, 1, 11, 0, 0, 0, 0600, false, "shmlease-abc.8",
                        "hugetlb-memfd", 2 << 20, 2 << 20});
  return s;
}

TEST(StateFormat, RoundTrips) {
  PersistedState decoded;
  std::string error;
  ASSERT_TRUE(DecodeState(EncodeState(Sample()), decoded, error)) << error;
  EXPECT_EQ(decoded, Sample());
  PersistedState empty{.shm_prefix = "p", .next_id = 1, .boot = 0, .segments = {}};
  ASSERT_TRUE(DecodeState(EncodeState(empty), decoded, error)) << error;
  EXPECT_EQ(decoded, empty);
}

TEST(StateFormat, EveryFlippedByteIsRefused) {
  std::string text = EncodeState(Sample());
  for (size_t i = 0; i < text.size(); ++i) {
    std::string bad = text;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    PersistedState decoded;
    std::string error;
    EXPECT_FALSE(DecodeState(bad, decoded, error)) << "byte " << i;
    EXPECT_FALSE(error.empty());
  }
}

TEST(StateFormat, TruncationIsRefused) {
  std::string text = EncodeState(Sample());
  for (size_t n = 0; n < text.size(); ++n) {
    PersistedState decoded;
    std::string error;
    EXPECT_FALSE(DecodeState(text.substr(0, n), decoded, error)) << n;
  }
}

// A file with a valid checksum but a broken rule (re-signed by hand) is refused with its line.
std::string Resign(std::string body) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : body) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(hash));
  size_t segments = 0;
  for (size_t at = body.find("\nsegment "); at != std::string::npos;
       at = body.find("\nsegment ", at + 1)) {
    ++segments;
  }
  return body + "end " + std::to_string(segments) + " fnv1a64=" + buf + "\n";
}

TEST(StateFormat, RuleBreakingSegmentsAreRefused) {
  const std::string head = "shmlease-state 1\nprefix p\nnext-id 5\nboot 1\n";
  const std::string good =
      "name=a size=4 format= shape= created=1 creator-pid=1 creator-uid=1 owner-uid=1 "
      "owner-gid=1 mode=600 removed=0";
  struct Case {
    std::string segments;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"segment 1 " + good + " shm=p.1\n", ""},
      {"segment 1 " + good + " shm=other.1\n", "shm name"},
      {"segment 1 " + good + " shm=p.1\nsegment 1 " + good + " shm=p.1\n", "id twice"},
      {"segment 1 " + good + " shm=p.1\nsegment 2 " + good + " shm=p.2\n", "'a' twice"},
      {"segment 6 " + good + " shm=p.6\n", "next-id"},
      {"segment 1 name=../x size=4 format= shape= created=1 creator-pid=1 creator-uid=1 "
       "owner-uid=1 owner-gid=1 mode=600 removed=0 shm=p.1\n",
       "invalid segment name"},
      {"segment 1 name=a size=4 format=f shape=2 created=1 creator-pid=1 creator-uid=1 "
       "owner-uid=1 owner-gid=1 mode=600 removed=0 shm=p.1\n",
       "shape"},
      {"segment 1 " + good + " shm=p.1 extra=1\n", "fields"},
  };
  for (const Case& c : cases) {
    PersistedState decoded;
    std::string error;
    bool ok = DecodeState(Resign(head + c.segments), decoded, error);
    if (c.expect.empty()) {
      EXPECT_TRUE(ok) << error;
    } else {
      EXPECT_FALSE(ok) << c.segments;
      EXPECT_EQ(error.rfind("line ", 0), 0u) << error;
      EXPECT_NE(error.find(c.expect), std::string::npos) << error;
    }
  }
}

// The shape field is read by shmlease::ParseShape: every shape a segment can have (no shape of
// its own, 1 to kMaxDims dimensions, dimensions up to 2^64 - 1) is written so that it reads back.
TEST(StateFormat, EveryShapeASegmentCanHaveRoundTrips) {
  PersistedState state{.shm_prefix = "p", .next_id = 100, .boot = 1, .segments = {}};
  auto add = [&](std::string format, std::vector<uint64_t> shape, uint64_t size) {
    const uint64_t id = state.segments.size() + 1;
    state.segments.push_back({id, "s" + std::to_string(id), size, std::move(format),
                              std::move(shape), 1, 1, 1, 1, 1, 0600, false,
                              "p." + std::to_string(id), "sealed", size, 4096});
  };
  add("", {}, 4096);
  add("f", {}, 64);
  std::vector<uint64_t> shape;
  uint64_t items = 1;
  for (uint64_t dim : {2, 3, 5, 7, 1, 11, 13, 4}) {  // 1 to 8 dimensions
    shape.push_back(dim);
    items *= dim;
    add("d", shape, items * 8);
  }
  add("B", {UINT64_MAX}, UINT64_MAX);  // the longest number
  add("B", {uint64_t{1} << 32, uint64_t{1} << 31}, uint64_t{1} << 63);
  add("?", {1}, 1);
  const std::string text = EncodeState(state);
  EXPECT_NE(text.find(" shape=2x3x5x7x1x11x13x4 "), std::string::npos) << text;
  PersistedState decoded;
  std::string error;
  ASSERT_TRUE(DecodeState(text, decoded, error)) << error;
  EXPECT_EQ(decoded, state);
}

// Version 2 says per segment how to find its memory again; version 1 files (all POSIX shm) load.
TEST(StateFormat, Version2RecordsTheBackingAndVersion1StillLoads) {
  const std::string text = EncodeState(Sample());
  EXPECT_EQ(text.rfind("shmlease-state 2\n", 0), 0u) << text;
  EXPECT_NE(text.find(" backing=hugetlb-memfd bytes=2097152 page=2097152\n"), std::string::npos)
      << text;
  std::string v1 = "shmlease-state 1\nprefix p\nnext-id 5\nboot 1\n"
                   "segment 1 name=a size=4096 format= shape= created=1 creator-pid=1 "
                   "creator-uid=1 owner-uid=1 owner-gid=1 mode=600 removed=0 shm=p.1\n";
  PersistedState decoded;
  std::string error;
  ASSERT_TRUE(DecodeState(Resign(v1), decoded, error)) << error;
  ASSERT_EQ(decoded.segments.size(), 1u);
  EXPECT_EQ(decoded.segments[0].backing, "named");
  EXPECT_EQ(decoded.segments[0].backing_bytes, 4096u);
}

// A state file can never make the daemon adopt another's name, nor hold its bytes in too little.
TEST(StateFormat, Version2RuleBreakingBackingsAreRefused) {
  const std::string head = "shmlease-state 2\nprefix p\nnext-id 5\nboot 1\n";
  const std::string good = "name=a size=4096 format= shape= created=1 creator-pid=1 "
                           "creator-uid=1 owner-uid=1 owner-gid=1 mode=600 removed=0";
  struct Case {
    std::string segments;
    std::string expect;  // "" = accepted
  } cases[] = {
      {"segment 1 " + good + " shm=p.1 backing=sealed bytes=4096 page=4096\n", ""},
      {"segment 1 " + good + " shm=p.1.0123456789abcdef backing=named bytes=4096 page=4096\n", ""},
      {"segment 1 " + good + " shm=p.1.0123456789abcdef backing=sealed bytes=4096 page=4096\n",
       "shm name"},
      {"segment 1 " + good + " shm=p.1.other backing=named bytes=4096 page=4096\n", "shm name"},
      {"segment 1 " + good + " shm=p.1 backing=floppy bytes=4096 page=4096\n", "unknown backing"},
      {"segment 1 " + good + " shm=p.1 backing=sealed bytes=100 page=4096\n", "cannot hold"},
      {"segment 1 " + good + " shm=p.1 backing=hugetlb-memfd bytes=6000 page=4096\n",
       "cannot hold"},
      {"segment 1 " + good + " shm=p.1\n", "fields"},
  };
  for (const Case& c : cases) {
    std::string text = Resign(head + c.segments);
    PersistedState decoded;
    std::string error;
    bool ok = DecodeState(text, decoded, error);
    if (c.expect.empty()) {
      EXPECT_TRUE(ok) << c.segments << error;
    } else {
      EXPECT_FALSE(ok) << c.segments;
      EXPECT_NE(error.find(c.expect), std::string::npos) << error;
    }
  }
}

TEST(StateFormat, MalformedShapesAreRefused) {
  const std::string head = "shmlease-state 1\nprefix p\nnext-id 5\nboot 1\n";
  for (const std::string shape : {"x", "2x", "x2", "2xx3", "2x-3", "+2", "2y3",
                                  "18446744073709551616", "1x1x1x1x1x1x1x1x1", "0x4"}) {
    const std::string line = "segment 1 name=a size=4 format=B shape=" + shape +
                             " created=1 creator-pid=1 creator-uid=1 owner-uid=1 owner-gid=1 "
                             "mode=600 removed=0 shm=p.1\n";
    PersistedState decoded;
    std::string error;
    EXPECT_FALSE(DecodeState(Resign(head + line), decoded, error)) << shape;
    EXPECT_EQ(error.rfind("line 5: ", 0), 0u) << error;
  }
}

TEST(StateStore, SavesAtomicallyAndLocksTheDirectory) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-store-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  std::string dir = tmpl + "/state";
  {
    StateStore store;
    std::string error;
    ASSERT_TRUE(store.Open(dir, error)) << error;
    PersistedState loaded;
    bool exists = true;
    ASSERT_TRUE(store.Load(loaded, exists, error)) << error;
    EXPECT_FALSE(exists);
    ASSERT_TRUE(store.Save(Sample(), error)) << error;
    ASSERT_TRUE(store.Load(loaded, exists, error)) << error;
    EXPECT_TRUE(exists);
    EXPECT_EQ(loaded, Sample());
    EXPECT_FALSE(std::filesystem::exists(dir + "/shmleased.state.tmp"));

    StateStore second;
    EXPECT_FALSE(second.Open(dir, error));
    EXPECT_NE(error.find("in use by another shmleased"), std::string::npos) << error;
  }
  StateStore again;  // the lock went with the first store
  std::string error;
  EXPECT_TRUE(again.Open(dir, error)) << error;
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace shmlease::server
