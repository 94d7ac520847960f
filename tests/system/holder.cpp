// A client that keeps one connection and one write lease on a segment across restarts of the
// daemon, for tests/system/inside.sh: it shows that a client re-attaches by itself and that its
// mapping stays the segment's memory. Built against the installed library (pkg-config shmlease).
//
// Usage: holder NAME. Prints "ready PID" (the daemon's pid), then reads commands from stdin, one
// per line, and answers each with one line:
//   fill BYTE   writes BYTE (0-255) into every byte of the segment through the lease's mapping
//   check BYTE  asks the daemon for the segment (a reconnect happens here if the daemon
//               restarted) and checks every byte is BYTE; prints "ok PID reconnects=N held=0|1"
// Any failure prints "error: ..." and exits 1.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "shmlease/client.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: holder NAME\n";
    return 2;
  }
  try {
    shmlease::Client client;
    shmlease::Lease lease = client.Acquire(argv[1], shmlease::Mode::kWrite);
    std::span<std::byte> bytes = lease.writable_data();
    std::cout << "ready " << client.server_pid() << std::endl;
    std::string command;
    int value = 0;
    while (std::cin >> command >> value) {
      if (command == "fill") {
        std::memset(bytes.data(), value, bytes.size());
        std::cout << "filled" << std::endl;
      } else if (command == "check") {
        client.Stat(argv[1]);
        for (size_t i = 0; i < bytes.size(); ++i) {
          if (bytes[i] != static_cast<std::byte>(value)) {
            std::cout << "error: byte " << i << " is " << static_cast<int>(bytes[i]) << ", not "
                      << value << std::endl;
            return 1;
          }
        }
        std::cout << "ok " << client.server_pid() << " reconnects=" << client.reconnects()
                  << " held=" << (lease.held() && !lease.lost() ? 1 : 0) << std::endl;
      } else {
        std::cout << "error: unknown command " << command << std::endl;
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::cout << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
