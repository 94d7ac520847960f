// A program built against an installed libshmlease, by tests/deploy/check_install.sh. It needs no
// daemon: it checks a name rule (common) and that connecting to a socket nobody serves fails with
// shmlease::Error(kDaemonUnavailable) (client), so both installed libraries must link.
#include <shmlease/client.hpp>
#include <shmlease/format.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOCKET-NOBODY-SERVES\n", argv[0]);
    return 2;
  }
  if (!shmlease::IsValidName("frames") || shmlease::IsValidName("../etc/passwd")) {
    std::fprintf(stderr, "IsValidName gives wrong answers\n");
    return 1;
  }
  try {
    shmlease::Client client(argv[1]);
    std::fprintf(stderr, "connected to %s, which should not be served\n", argv[1]);
    return 1;
  } catch (const shmlease::Error& e) {
    if (e.errc() != shmlease::Errc::kDaemonUnavailable) {
      std::fprintf(stderr, "unexpected error: %s\n", e.what());
      return 1;
    }
    std::printf("ok: %s\n", e.what());
  }
  return 0;
}
