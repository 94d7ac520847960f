#include "segment_registry.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

namespace shmlease::server {
namespace {

// A registry on a shm prefix of its own, with small limits; every test leaves /dev/shm as it was.
class SegmentRegistryTest : public ::testing::Test {
 protected:
  SegmentRegistryTest() {
    static int counter = 0;
    config_.shm_prefix =
        "shmlease-ut-registry-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    config_.max_segments = 4;
    config_.max_total_bytes = 64 << 10;
    config_.max_segment_size = 32 << 10;
  }
  void TearDown() override {
    registry_.reset();
    std::vector<std::string> left = ShmObjects();
    for (const std::string& name : left) UnlinkShmObject(name);
    EXPECT_TRUE(left.empty()) << "shm objects left behind, first: " << left.front();
  }

  SegmentRegistry& registry() {
    if (!registry_) registry_ = std::make_unique<SegmentRegistry>(config_);
    return *registry_;
  }
  // Its memory that exists: named objects, and the memfds this process (the registry) holds.
  std::vector<std::string> ShmObjects() const { return ListOwnShmObjects(config_.shm_prefix + "."); }

  // Reserve() that must fail: returns its code, and the message in `message`.
  Errc RefusalOf(const proto::Create& request, Creator creator = {},
                 std::string* message = nullptr) {
    Errc error = Errc::kOk;
    std::string text;
    Segment* segment = registry().Reserve(request, creator, error, text);
    EXPECT_EQ(segment, nullptr) << request.name << " was reserved";
    if (message != nullptr) *message = text;
    return error;
  }
  // Reserve() and Complete() with real shared memory, as the request handler does.
  Segment* Create(const proto::Create& request, Creator creator = {}) {
    Errc error = Errc::kOk;
    std::string message;
    Segment* segment = registry().Reserve(request, creator, error, message);
    EXPECT_NE(segment, nullptr) << message;
    if (segment == nullptr) return nullptr;
    std::unique_ptr<ShmObject> shm =
        ShmObject::Create({segment->shm_name, segment->size, segment->pages, "", named_}, error,
                          message);
    EXPECT_NE(shm, nullptr) << message;
    if (shm == nullptr) {
      registry().Abandon(segment->id);
      return nullptr;
    }
    registry().Complete(segment->id, std::move(shm));
    return segment;
  }

  Config config_;
  std::unique_ptr<SegmentRegistry> registry_;
  bool named_ = false;  // Create() makes POSIX shm objects (--backing named), not sealed memfds
};

TEST_F(SegmentRegistryTest, ReservesCompletesFindsAndDestroys) {
  Errc error = Errc::kOk;
  std::string message;
  Segment* reserved = registry().Reserve({.name = "a", .size = 4096}, {1, 2, 3}, error, message);
  ASSERT_NE(reserved, nullptr) << message;
  EXPECT_TRUE(reserved->creating);
  EXPECT_EQ(reserved->id, 1u);
  EXPECT_EQ(reserved->shm_name, config_.shm_prefix + ".1");
  EXPECT_EQ(reserved->creator_pid, 1u);
  EXPECT_EQ(reserved->owner_uid, 2u);
  EXPECT_EQ(reserved->owner_gid, 3u);
  EXPECT_EQ(reserved->pages, PagePolicy::kNormal);
  // Being created: the name and the bytes are taken, but no listing shows it yet.
  EXPECT_EQ(registry().FindByName("a"), reserved);
  EXPECT_EQ(registry().count(), 1u);
  EXPECT_EQ(registry().total_bytes(), 4096u);
  EXPECT_TRUE(registry().All().empty());
  EXPECT_TRUE(registry().Named().empty());
  EXPECT_EQ(RefusalOf({.name = "a", .size = 4096}), Errc::kAlreadyExists);

  Errc shm_error = Errc::kOk;
  auto shm =
      ShmObject::Create({reserved->shm_name, 4096, PagePolicy::kNormal, ""}, shm_error, message);
  ASSERT_NE(shm, nullptr) << message;
  registry().Complete(reserved->id, std::move(shm));
  EXPECT_FALSE(reserved->creating);
  EXPECT_NE(reserved->page_size, 0u);
  EXPECT_EQ(registry().FindById(1), reserved);
  ASSERT_EQ(registry().All().size(), 1u);
  ASSERT_EQ(registry().Named().size(), 1u);
  EXPECT_EQ(ShmObjects(), std::vector<std::string>{config_.shm_prefix + ".1"});

  registry().Destroy(1);
  EXPECT_EQ(registry().FindById(1), nullptr);
  EXPECT_EQ(registry().FindByName("a"), nullptr);
  EXPECT_EQ(registry().count(), 0u);
  EXPECT_EQ(registry().total_bytes(), 0u);
  EXPECT_TRUE(ShmObjects().empty()) << "Destroy() frees the memory";
  // Ids are never reused.
  Segment* next = Create({.name = "a", .size = 4096});
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->id, 2u);
  registry().Destroy(next->id);
}

TEST_F(SegmentRegistryTest, AbandonGivesTheNameAndBytesBack) {
  Errc error = Errc::kOk;
  std::string message;
  Segment* reserved = registry().Reserve({.name = "a", .size = 8192}, {}, error, message);
  ASSERT_NE(reserved, nullptr) << message;
  registry().Abandon(reserved->id);
  EXPECT_EQ(registry().FindByName("a"), nullptr);
  EXPECT_EQ(registry().count(), 0u);
  EXPECT_EQ(registry().total_bytes(), 0u);
}

TEST_F(SegmentRegistryTest, RefusesBadNamesFormatsShapesModesAndFlags) {
  for (const std::string& name :
       {std::string(""), std::string("../x"), std::string("-a"), std::string(".hidden"),
        std::string("a b"), std::string("a/b"), std::string(129, 'n')}) {
    EXPECT_EQ(RefusalOf({.name = name, .size = 16}), Errc::kInvalidName) << name;
  }
  Segment* longest = Create({.name = std::string(128, 'n'), .size = 16});
  ASSERT_NE(longest, nullptr) << "a 128-character name is valid";
  registry().Destroy(longest->id);

  std::string message;
  EXPECT_EQ(RefusalOf({.name = "a", .size = 16, .format = "z"}, {}, &message),
            Errc::kInvalidArgument);
  EXPECT_NE(message.find("format 'z'"), std::string::npos) << message;
  EXPECT_EQ(RefusalOf({.name = "a", .size = 0}), Errc::kInvalidArgument);
  EXPECT_EQ(RefusalOf({.name = "a", .size = 6, .format = "f"}), Errc::kInvalidArgument)
      << "not a multiple of the item size";
  EXPECT_EQ(RefusalOf({.name = "a", .size = 20, .format = "f", .shape = {2, 3}}),
            Errc::kInvalidArgument)
      << "size and shape disagree";
  EXPECT_EQ(RefusalOf({.name = "a", .format = "f", .shape = {2, 0}}), Errc::kInvalidArgument);
  EXPECT_EQ(RefusalOf({.name = "a", .format = "B", .shape = {1, 1, 1, 1, 1, 1, 1, 1, 1}}),
            Errc::kInvalidArgument)
      << "nine dimensions";
  EXPECT_EQ(RefusalOf({.name = "a", .size = 16, .mode = 01000}), Errc::kInvalidArgument);
  EXPECT_EQ(RefusalOf({.name = "a", .size = 16, .flags = 0x80}), Errc::kInvalidArgument);
  EXPECT_EQ(
      RefusalOf({.name = "a", .size = 16, .flags = proto::kCreateHuge | proto::kCreateNoHuge}),
      Errc::kInvalidArgument);
  EXPECT_EQ(registry().count(), 0u) << "nothing refused was kept";
  EXPECT_EQ(registry().total_bytes(), 0u);
}

TEST_F(SegmentRegistryTest, DerivesTheSizeFromFormatAndShape) {
  Segment* s = Create({.name = "m", .format = "f", .shape = {4, 8}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->size, 4u * 8u * 4u);
  EXPECT_EQ(s->shape, (std::vector<uint64_t>{4, 8}));
  registry().Destroy(s->id);
}

TEST_F(SegmentRegistryTest, LimitsOnSizeCountAndTotalBytes) {
  EXPECT_EQ(RefusalOf({.name = "big", .size = (32 << 10) + 1}), Errc::kLimitSegmentSize);
  Segment* a = Create({.name = "a", .size = 32 << 10});
  Segment* b = Create({.name = "b", .size = 30 << 10});
  ASSERT_TRUE(a && b);
  std::string message;
  EXPECT_EQ(RefusalOf({.name = "c", .size = 4 << 10}, {}, &message), Errc::kLimitBytes);
  EXPECT_NE(message.find("in use"), std::string::npos) << message;
  Segment* c = Create({.name = "c", .size = 2 << 10});  // exactly up to 64 KiB
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(registry().total_bytes(), uint64_t{64} << 10);
  Segment* d = nullptr;
  registry().Destroy(c->id);
  d = Create({.name = "d", .size = 1024});
  Segment* e = Create({.name = "e", .size = 1024});
  ASSERT_TRUE(d && e);
  EXPECT_EQ(RefusalOf({.name = "f", .size = 16}), Errc::kLimitSegments);
  for (Segment* s : {a, b, d, e}) registry().Destroy(s->id);
  EXPECT_EQ(registry().total_bytes(), 0u);
}

// Remove: the name goes at once (and may be reused), the segment lives on by id and keeps counting
// against the limits until the last lease lets it be destroyed.
TEST_F(SegmentRegistryTest, AnUnnamedSegmentKeepsItsMemoryAndBytesUntilDestroyed) {
  Segment* old = Create({.name = "a", .size = 32 << 10});
  ASSERT_NE(old, nullptr);
  const uint64_t old_id = old->id;
  EXPECT_EQ(registry().Unname("a"), old);
  EXPECT_EQ(registry().Unname("a"), nullptr) << "no segment has that name any more";
  EXPECT_TRUE(old->removed);
  EXPECT_EQ(registry().FindByName("a"), nullptr);
  EXPECT_EQ(registry().FindById(old_id), old);
  EXPECT_TRUE(registry().Named().empty());
  EXPECT_EQ(registry().All().size(), 1u) << "a removed segment is still there, by id";
  EXPECT_EQ(ShmObjects().size(), 1u) << "its memory stays while leased";

  Segment* reuse = Create({.name = "a", .size = 32 << 10});
  ASSERT_NE(reuse, nullptr);
  EXPECT_NE(reuse->id, old_id);
  EXPECT_EQ(registry().FindByName("a"), reuse);
  EXPECT_EQ(RefusalOf({.name = "b", .size = 1024}), Errc::kLimitBytes)
      << "the removed segment still counts";

  registry().Destroy(old_id);  // its last lease went
  EXPECT_EQ(registry().FindByName("a"), reuse) << "destroying the old one keeps the new name";
  EXPECT_EQ(ShmObjects(), std::vector<std::string>{reuse->shm_name});
  EXPECT_EQ(registry().total_bytes(), uint64_t{32} << 10);
  registry().Destroy(reuse->id);
}

TEST_F(SegmentRegistryTest, QuotasCountWhatEachUidOwns) {
  config_.quota_segments = 2;
  config_.quota_bytes = 8 << 10;
  const Creator alice{10, 1000, 1000};
  const Creator bob{11, 1001, 1001};
  Segment* a1 = Create({.name = "a1", .size = 4 << 10}, alice);
  Segment* a2 = Create({.name = "a2", .size = 4 << 10}, alice);
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ(RefusalOf({.name = "a3", .size = 16}, alice), Errc::kQuotaSegments);
  registry().Destroy(a2->id);
  std::string message;
  EXPECT_EQ(RefusalOf({.name = "a3", .size = (4 << 10) + 1}, alice, &message), Errc::kQuotaBytes);
  EXPECT_NE(message.find("uid 1000"), std::string::npos) << message;
  Segment* b1 = Create({.name = "b1", .size = 8 << 10}, bob);
  ASSERT_NE(b1, nullptr) << "another uid has a quota of its own";
  for (Segment* s : {a1, b1}) registry().Destroy(s->id);
}

// A removed segment is paid for by the uids whose leases keep it alive (issue 14, point 9); its
// owner only while it holds one too, or while nobody does.
TEST_F(SegmentRegistryTest, ARemovedSegmentIsChargedToItsHolders) {
  config_.quota_bytes = 8 << 10;
  const Creator alice{10, 1000, 1000};
  const Creator bob{11, 1001, 1001};
  std::vector<uint32_t> holders;
  registry().set_lease_holders([&](uint64_t) { return holders; });
  Segment* a = Create({.name = "a", .size = 8 << 10}, alice);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(registry().Charged(*a, 1000));
  holders = {1001};
  EXPECT_TRUE(registry().Charged(*a, 1000)) << "named: its owner pays, whoever leases it";
  EXPECT_FALSE(registry().Charged(*a, 1001));
  ASSERT_EQ(registry().Unname("a"), a);
  EXPECT_FALSE(registry().Charged(*a, 1000)) << "removed, kept alive by bob only";
  EXPECT_TRUE(registry().Charged(*a, 1001));
  std::string message;
  EXPECT_EQ(RefusalOf({.name = "b", .size = 4096}, bob, &message), Errc::kQuotaBytes);
  EXPECT_NE(message.find("removed segments it still holds leases on"), std::string::npos)
      << message;
  Segment* again = Create({.name = "a", .size = 8 << 10}, alice);
  ASSERT_NE(again, nullptr) << "alice let go of what she removed";
  holders = {1000, 1001};
  EXPECT_TRUE(registry().Charged(*a, 1000)) << "the owner holds it too";
  holders = {};
  EXPECT_TRUE(registry().Charged(*a, 1000)) << "nobody holds it: about to be freed, the owner's";
  EXPECT_FALSE(registry().Charged(*a, 1001));
  for (Segment* s : {a, again}) registry().Destroy(s->id);
}

TEST_F(SegmentRegistryTest, ExistOkMatchesAsACreateWouldComplete) {
  Segment* raw = Create({.name = "raw", .size = 4096});
  Segment* grid = Create({.name = "grid", .format = "f", .shape = {16, 16}});
  ASSERT_TRUE(raw && grid);
  Errc error = Errc::kOk;
  std::string message;
  EXPECT_TRUE(
      SegmentRegistry::MatchesExisting(*raw, {.name = "raw", .size = 4096}, error, message));
  EXPECT_TRUE(SegmentRegistry::MatchesExisting(*raw, {.name = "raw", .size = 4096, .format = "B"},
                                               error, message))
      << "raw bytes are \"B\"";
  EXPECT_TRUE(
      SegmentRegistry::MatchesExisting(*raw, {.name = "raw", .shape = {4096}}, error, message))
      << "the 1-D default shape";
  EXPECT_TRUE(SegmentRegistry::MatchesExisting(
      *grid, {.name = "grid", .format = "f", .shape = {16, 16}}, error, message));
  EXPECT_FALSE(SegmentRegistry::MatchesExisting(
      *grid, {.name = "grid", .format = "f", .shape = {256}}, error, message));
  EXPECT_EQ(error, Errc::kAlreadyExists);
  EXPECT_EQ(message,
            "segment 'grid' exists as float32 (16, 16), 1024 bytes; asked for float32 (256,), "
            "1024 bytes");
  EXPECT_FALSE(SegmentRegistry::MatchesExisting(*raw, {.name = "raw"}, error, message));
  EXPECT_EQ(error, Errc::kInvalidArgument) << "a request invalid in itself";
  for (Segment* s : {raw, grid}) registry().Destroy(s->id);
}

TEST_F(SegmentRegistryTest, RecordsEveryCompletedChange) {
  int changes = 0;
  registry().set_on_change([&] { ++changes; });
  Errc error = Errc::kOk;
  std::string message;
  Segment* abandoned = registry().Reserve({.name = "x", .size = 16}, {}, error, message);
  ASSERT_NE(abandoned, nullptr);
  registry().Abandon(abandoned->id);
  EXPECT_EQ(changes, 0) << "a segment never completed is never recorded";
  Segment* s = Create({.name = "a", .size = 16});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(changes, 1);
  registry().Unname("a");
  EXPECT_EQ(changes, 2);
  registry().Destroy(s->id);
  EXPECT_EQ(changes, 3);
}

// A daemon that keeps its segments for the next one (a state directory) frees nothing on the way
// out, and the next one adopts them with their ids.
// (Named backing: a sealed memfd outlives its registry only in an fd store, restart_test.)
TEST_F(SegmentRegistryTest, PreservedSegmentsOutliveTheRegistryAndAreAdopted) {
  named_ = true;
  Segment* s = Create({.name = "kept", .size = 4096, .format = "I"});
  ASSERT_NE(s, nullptr);
  PersistedSegment persisted = *s;
  const uint64_t next_id = registry().next_id();
  registry().Preserve();
  registry().Destroy(s->id);
  EXPECT_EQ(registry().FindById(persisted.id), s) << "Destroy() does nothing once preserved";
  registry_.reset();
  ASSERT_EQ(ShmObjects(), std::vector<std::string>{persisted.shm_name});

  Errc error = Errc::kOk;
  std::string message;
  auto adopted = std::make_unique<Segment>();
  static_cast<PersistedSegment&>(*adopted) = persisted;
  adopted->shm = ShmObject::Open(persisted.shm_name, persisted.size, error, message);
  ASSERT_NE(adopted->shm, nullptr) << message;
  ASSERT_TRUE(registry().Adopt(std::move(adopted)));
  EXPECT_EQ(registry().next_id(), next_id);
  EXPECT_EQ(registry().FindByName("kept")->id, persisted.id);
  EXPECT_EQ(registry().total_bytes(), 4096u);

  auto clash = std::make_unique<Segment>();
  static_cast<PersistedSegment&>(*clash) = persisted;
  EXPECT_FALSE(registry().Adopt(std::move(clash))) << "its id is taken";
  auto same_name = std::make_unique<Segment>();
  static_cast<PersistedSegment&>(*same_name) = persisted;
  same_name->id = persisted.id + 10;
  EXPECT_FALSE(registry().Adopt(std::move(same_name))) << "its name is taken";
  registry().Destroy(persisted.id);
  EXPECT_TRUE(ShmObjects().empty());
}

}  // namespace
}  // namespace shmlease::server
