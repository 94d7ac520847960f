#include "shmlease/errc.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <set>
#include <string>
#include <system_error>

#include "shmlease/errc_table.hpp"

namespace shmlease {
namespace {

// Every code with the number it has on the wire. A number is never reused or changed: this table
// is the test that catches a renumbering.
struct Numbered {
  Errc code;
  uint32_t number;
  const char* name;
};
constexpr Numbered kAll[] = {
    {Errc::kOk, 0, "ok"},
    {Errc::kBadMessage, 1, "bad_message"},
    {Errc::kVersionMismatch, 2, "version_mismatch"},
    {Errc::kUnknownType, 3, "unknown_type"},
    {Errc::kInvalidName, 4, "invalid_name"},
    {Errc::kInvalidArgument, 5, "invalid_argument"},
    {Errc::kNotFound, 6, "not_found"},
    {Errc::kAlreadyExists, 7, "already_exists"},
    {Errc::kPermissionDenied, 8, "permission_denied"},
    {Errc::kTimeout, 9, "timeout"},
    {Errc::kNoSpace, 10, "no_space"},
    {Errc::kLimitSegments, 11, "limit_segments"},
    {Errc::kLimitBytes, 12, "limit_bytes"},
    {Errc::kLimitSegmentSize, 13, "limit_segment_size"},
    {Errc::kLimitConnections, 14, "limit_connections"},
    {Errc::kLimitLeases, 15, "limit_leases"},
    {Errc::kMessageTooLarge, 16, "message_too_large"},
    {Errc::kNotHeld, 17, "not_held"},
    {Errc::kInternal, 18, "internal"},
    {Errc::kDaemonUnavailable, 19, "daemon_unavailable"},
    {Errc::kConnectionLost, 20, "connection_lost"},
    {Errc::kShuttingDown, 21, "shutting_down"},
    {Errc::kNotHelloed, 22, "not_helloed"},
    {Errc::kMapFailed, 23, "map_failed"},
    {Errc::kQuotaBytes, 24, "quota_bytes"},
    {Errc::kQuotaSegments, 25, "quota_segments"},
    {Errc::kEndOfStream, 26, "end_of_stream"},
    {Errc::kCancelled, 27, "cancelled"},
    {Errc::kEvicted, 28, "evicted"},
};

TEST(Errc, NumbersAreFixed) {
  for (const Numbered& n : kAll) EXPECT_EQ(static_cast<uint32_t>(n.code), n.number) << n.name;
}

TEST(Errc, NamesAreStableUniqueSnakeCase) {
  std::set<std::string_view> names;
  for (const Numbered& n : kAll) {
    std::string_view name = ErrcName(n.code);
    EXPECT_EQ(name, n.name);
    EXPECT_TRUE(names.insert(name).second) << "duplicate name " << name;
    ASSERT_FALSE(name.empty());
    for (char c : name) {
      EXPECT_TRUE(std::islower(static_cast<unsigned char>(c)) || c == '_') << name;
    }
  }
  EXPECT_EQ(names.count("unknown"), 0u);
  EXPECT_EQ(ErrcName(static_cast<Errc>(29)), "unknown");
  EXPECT_EQ(ErrcName(static_cast<Errc>(0xFFFFFFFFu)), "unknown");
}

TEST(Errc, MessagesAreUniqueAndSayWhatHappened) {
  std::set<std::string> messages;
  for (const Numbered& n : kAll) {
    std::string message = make_error_code(n.code).message();
    EXPECT_FALSE(message.empty()) << n.name;
    EXPECT_EQ(message.find("unknown shmlease error"), std::string::npos) << n.name;
    EXPECT_TRUE(messages.insert(message).second) << "duplicate message " << message;
  }
  EXPECT_EQ(make_error_code(Errc::kNotFound).message(), "no such segment");
  EXPECT_EQ(make_error_code(static_cast<Errc>(4242)).message(), "unknown shmlease error 4242");
}

TEST(Errc, KnownCodesAreExactlyTheTable) {
  for (const Numbered& n : kAll) EXPECT_TRUE(IsKnownErrc(n.number)) << n.name;
  uint32_t count = 0;
  for (uint32_t v = 0; v < 1000; ++v) count += IsKnownErrc(v) ? 1 : 0;
  EXPECT_EQ(count, std::size(kAll));
  EXPECT_FALSE(IsKnownErrc(29));
  EXPECT_FALSE(IsKnownErrc(0xFFFFFFFFu));
  EXPECT_FALSE(IsKnownErrc(0x80000000u));
}

TEST(Errc, CategoryAndImplicitErrorCode) {
  EXPECT_STREQ(ErrorCategory().name(), "shmlease");
  EXPECT_EQ(&ErrorCategory(), &ErrorCategory());
  std::error_code ec = Errc::kTimeout;  // is_error_code_enum
  EXPECT_EQ(ec.category(), ErrorCategory());
  EXPECT_EQ(ec.value(), 9);
  EXPECT_EQ(ec, Errc::kTimeout);
  EXPECT_NE(ec, Errc::kNotFound);
  EXPECT_TRUE(static_cast<bool>(ec));
  EXPECT_FALSE(static_cast<bool>(std::error_code(Errc::kOk)));
  std::system_error error(Errc::kNotFound, "stat frames");
  EXPECT_NE(std::string(error.what()).find("stat frames"), std::string::npos);
  EXPECT_EQ(error.code(), Errc::kNotFound);
}

TEST(Errc, MatchesTheStandardConditions) {
  EXPECT_EQ(make_error_code(Errc::kNotFound), std::errc::no_such_file_or_directory);
  EXPECT_EQ(make_error_code(Errc::kAlreadyExists), std::errc::file_exists);
  EXPECT_EQ(make_error_code(Errc::kPermissionDenied), std::errc::permission_denied);
  EXPECT_EQ(make_error_code(Errc::kTimeout), std::errc::timed_out);
  EXPECT_EQ(make_error_code(Errc::kNoSpace), std::errc::no_space_on_device);
  EXPECT_EQ(make_error_code(Errc::kInvalidName), std::errc::invalid_argument);
  EXPECT_EQ(make_error_code(Errc::kInvalidArgument), std::errc::invalid_argument);
  EXPECT_EQ(make_error_code(Errc::kCancelled), std::errc::operation_canceled);

  // And nothing else.
  EXPECT_NE(make_error_code(Errc::kNotFound), std::errc::file_exists);
  EXPECT_NE(make_error_code(Errc::kAlreadyExists), std::errc::no_such_file_or_directory);
  EXPECT_NE(make_error_code(Errc::kTimeout), std::errc::invalid_argument);
  EXPECT_NE(make_error_code(Errc::kBadMessage), std::errc::invalid_argument);
  EXPECT_NE(make_error_code(Errc::kInternal), std::errc::no_such_file_or_directory);
  for (const Numbered& n : kAll) {
    std::error_condition condition = make_error_code(n.code).default_error_condition();
    bool standard = condition.category() == std::generic_category();
    bool expected_standard = n.code == Errc::kNotFound || n.code == Errc::kAlreadyExists ||
                             n.code == Errc::kPermissionDenied || n.code == Errc::kTimeout ||
                             n.code == Errc::kNoSpace || n.code == Errc::kInvalidName ||
                             n.code == Errc::kInvalidArgument || n.code == Errc::kCancelled;
    EXPECT_EQ(standard, expected_standard) << n.name;
    if (!standard) {
      EXPECT_EQ(condition.category(), ErrorCategory()) << n.name;
      EXPECT_EQ(condition.value(), static_cast<int>(n.number)) << n.name;
    }
  }
  // A system errno of the same meaning compares equal through the condition.
  EXPECT_EQ(std::error_code(ENOENT, std::generic_category()),
            make_error_code(Errc::kNotFound).default_error_condition());
}

// What each code means outside C++, as published: the CLI's exit status (docs/CLI.md), the Python
// class (docs/PYTHON.md) and the errno that class carries. Kept by hand, apart from the table in
// errc.cpp, so that a changed row is a failing test and not a silent change of behaviour.
struct Published {
  Errc code;
  int exit_status;
  const char* python_class;
  int posix_errno;
};
constexpr Published kPublished[] = {
    {Errc::kOk, 0, "Error", 0},
    {Errc::kBadMessage, 1, "Error", 0},
    {Errc::kVersionMismatch, 1, "Error", 0},
    {Errc::kUnknownType, 1, "Error", 0},
    {Errc::kInvalidName, 9, "InvalidArgumentError", EINVAL},
    {Errc::kInvalidArgument, 9, "InvalidArgumentError", EINVAL},
    {Errc::kNotFound, 3, "NotFoundError", ENOENT},
    {Errc::kAlreadyExists, 4, "ExistsError", EEXIST},
    {Errc::kPermissionDenied, 5, "PermissionDeniedError", EACCES},
    {Errc::kTimeout, 6, "LeaseTimeoutError", ETIMEDOUT},
    {Errc::kNoSpace, 8, "Error", ENOSPC},
    {Errc::kLimitSegments, 8, "Error", 0},
    {Errc::kLimitBytes, 8, "Error", 0},
    {Errc::kLimitSegmentSize, 8, "Error", 0},
    {Errc::kLimitConnections, 8, "Error", 0},
    {Errc::kLimitLeases, 8, "Error", 0},
    {Errc::kMessageTooLarge, 8, "Error", 0},
    {Errc::kNotHeld, 1, "Error", 0},
    {Errc::kInternal, 1, "Error", 0},
    {Errc::kDaemonUnavailable, 7, "DaemonUnavailableError", ECONNREFUSED},
    {Errc::kConnectionLost, 7, "ConnectionLostError", ECONNRESET},
    {Errc::kShuttingDown, 7, "ConnectionLostError", 0},
    {Errc::kNotHelloed, 1, "Error", 0},
    {Errc::kMapFailed, 1, "Error", 0},
    {Errc::kQuotaBytes, 8, "Error", 0},
    {Errc::kQuotaSegments, 8, "Error", 0},
    {Errc::kEndOfStream, 1, "EndOfStreamError", 0},
    {Errc::kCancelled, 6, "Error", ECANCELED},
    {Errc::kEvicted, 1, "EvictedError", 0},
};

TEST(ErrcTable, EveryCodeHasOneCompleteRow) {
  ASSERT_EQ(ErrcTable().size(), std::size(kAll));
  // The extension's classes (pybindings/src/errors.cpp).
  const std::set<std::string_view> classes = {"Error",
                                              "NotFoundError",
                                              "ExistsError",
                                              "PermissionDeniedError",
                                              "LeaseTimeoutError",
                                              "InvalidArgumentError",
                                              "DaemonUnavailableError",
                                              "ConnectionLostError",
                                              "EndOfStreamError",
                                              "EvictedError"};
  for (size_t i = 0; i < std::size(kAll); ++i) {
    const ErrcInfo& row = ErrcTable()[i];
    const char* name = kAll[i].name;
    EXPECT_EQ(row.code, kAll[i].code) << name;
    EXPECT_EQ(FindErrcInfo(kAll[i].code), &row) << name;
    EXPECT_EQ(FindErrcInfo(kAll[i].number), &row) << name;
    EXPECT_EQ(row.name, name);
    EXPECT_FALSE(row.message.empty()) << name;
    EXPECT_EQ(classes.count(row.python_class), 1u) << name << ": " << row.python_class;
    int status = static_cast<int>(row.exit_status);
    EXPECT_TRUE(status >= 0 && status <= 9 && status != 2) << name << ": " << status;
    EXPECT_GE(row.posix_errno, 0) << name;
    bool padding = false;  // from_errno: errnos first, then zeros
    for (int err : row.from_errno) {
      EXPECT_FALSE(padding && err != 0) << name;
      padding = padding || err == 0;
    }
  }
  EXPECT_EQ(FindErrcInfo(29), nullptr);
  EXPECT_EQ(FindErrcInfo(0xFFFFFFFFu), nullptr);
}

TEST(ErrcTable, AgreesWithThePublishedExitStatusesAndPythonClasses) {
  ASSERT_EQ(std::size(kPublished), std::size(kAll));
  for (const Published& p : kPublished) {
    const ErrcInfo* row = FindErrcInfo(p.code);
    ASSERT_NE(row, nullptr);
    EXPECT_EQ(static_cast<int>(ExitStatusFor(p.code)), p.exit_status) << row->name;
    EXPECT_EQ(static_cast<int>(row->exit_status), p.exit_status) << row->name;
    EXPECT_EQ(row->python_class, p.python_class) << row->name;
    EXPECT_EQ(row->posix_errno, p.posix_errno) << row->name;
  }
  EXPECT_EQ(ExitStatusFor(static_cast<Errc>(4242)), ExitStatus::kError);
  // The numbers the CLI publishes.
  EXPECT_EQ(static_cast<int>(ExitStatus::kOk), 0);
  EXPECT_EQ(static_cast<int>(ExitStatus::kError), 1);
  EXPECT_EQ(static_cast<int>(ExitStatus::kUsage), 2);
  EXPECT_EQ(static_cast<int>(ExitStatus::kNotFound), 3);
  EXPECT_EQ(static_cast<int>(ExitStatus::kExists), 4);
  EXPECT_EQ(static_cast<int>(ExitStatus::kPermission), 5);
  EXPECT_EQ(static_cast<int>(ExitStatus::kTimeout), 6);
  EXPECT_EQ(static_cast<int>(ExitStatus::kDaemon), 7);
  EXPECT_EQ(static_cast<int>(ExitStatus::kNoSpace), 8);
  EXPECT_EQ(static_cast<int>(ExitStatus::kInvalid), 9);
}

TEST(ErrcTable, ConditionColumnIsTheCategorysCondition) {
  for (const ErrcInfo& row : ErrcTable()) {
    std::error_condition condition = make_error_code(row.code).default_error_condition();
    if (row.condition == kNoCondition) {
      EXPECT_EQ(condition.category(), ErrorCategory()) << row.name;
    } else {
      EXPECT_EQ(condition, row.condition) << row.name;
    }
  }
}

TEST(ErrcTable, BackendErrnosMapBackAsBefore) {
  EXPECT_EQ(ErrcFromErrno(ENOSPC), Errc::kNoSpace);
  EXPECT_EQ(ErrcFromErrno(ENOMEM), Errc::kNoSpace);
  EXPECT_EQ(ErrcFromErrno(EFBIG), Errc::kNoSpace);
  EXPECT_EQ(ErrcFromErrno(EACCES), Errc::kPermissionDenied);
  EXPECT_EQ(ErrcFromErrno(EPERM), Errc::kPermissionDenied);
  EXPECT_EQ(ErrcFromErrno(EEXIST), Errc::kAlreadyExists);
  // Everything else is the daemon's failure, even an errno that a code stands for.
  for (int err : {0, ENOENT, EINVAL, ETIMEDOUT, ECANCELED, ECONNREFUSED, EIO, EBADF, -1}) {
    EXPECT_EQ(ErrcFromErrno(err), Errc::kInternal) << err;
  }
}

}  // namespace
}  // namespace shmlease
