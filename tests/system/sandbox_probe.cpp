// Run by tests/system/inside.sh as a service with the very sandbox of shmleased.service (a copy of
// the installed unit with only ExecStart= and Type= changed): tries what each sandbox option
// forbids, and what the daemon needs and the options must still allow. Prints one line per check,
// "ok NAME: what happened" or "FAIL NAME: what happened", then "checks N, failed M", and exits 1
// if any failed.
//
// Usage: sandbox_probe MARKER_IN_TMP HOME_DIR. MARKER_IN_TMP is a file the test made in the
// host's /tmp (PrivateTmp= must hide it); HOME_DIR a user's home (ProtectHome= must hide it).
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace {

int failures = 0;
int checks = 0;

void Report(bool ok, const char* name, const std::string& what) {
  std::printf("%s %s: %s\n", ok ? "ok" : "FAIL", name, what.c_str());
  ++checks;
  if (!ok) ++failures;
}

std::string Errno(int e) { return e == 0 ? "succeeded" : std::string("failed: ") + std::strerror(e); }

// Creates PATH (then removes it); returns 0 or the errno.
int TryCreate(const char* path) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  ::unlink(path);
  return 0;
}

// The options of the mount at exactly MOUNT_POINT ("ro,nosuid,..."), from /proc/self/mountinfo;
// the last such mount wins (it is the one on top). Empty if there is none.
std::string MountOptions(const std::string& mount_point) {
  std::string options;
  if (FILE* info = std::fopen("/proc/self/mountinfo", "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, info) != nullptr) {
      char point[1024], opts[1024];
      // id parent major:minor root mount-point options ...
      if (std::sscanf(line, "%*s %*s %*s %*s %1023s %1023s", point, opts) == 2 && mount_point == point) {
        options = opts;
      }
    }
    std::fclose(info);
  }
  return options;
}

bool ReadOnly(const std::string& options) {
  return options == "ro" || options.rfind("ro,", 0) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sandbox_probe MARKER_IN_TMP HOME_DIR\n");
    return 2;
  }
  int e;

  e = TryCreate("/usr/local/bin/sandbox-probe");
  Report(e == EROFS, "ProtectSystem=strict", "creating a file in /usr/local/bin " + Errno(e));
  e = TryCreate("/etc/sandbox-probe");
  Report(e == EROFS, "ProtectSystem=strict", "creating a file in /etc " + Errno(e));
  std::string shm = "/dev/shm/sandbox-probe." + std::to_string(::getpid());
  e = TryCreate(shm.c_str());
  Report(e == 0, "ReadWritePaths=/dev/shm", "creating a file in /dev/shm " + Errno(e));
  e = TryCreate("/var/lib/shmlease/sandbox-probe");
  Report(e == 0, "StateDirectory=shmlease", "creating a file in /var/lib/shmlease " + Errno(e));

  e = ::access(argv[1], F_OK) == 0 ? 0 : errno;
  Report(e == ENOENT, "PrivateTmp=yes", std::string("the host's ") + argv[1] + ": " +
                                           (e == 0 ? "visible" : std::strerror(e)));
  // An inaccessible directory of mode 0 takes /home's place (it is 0755 outside).
  struct stat home{};
  e = ::stat("/home", &home) == 0 ? 0 : errno;
  Report(e == 0 && (home.st_mode & 07777) == 0, "ProtectHome=yes",
         "/home has mode " + std::to_string(home.st_mode & 07777) + " (" + argv[2] + " " +
             (::access(argv[2], F_OK) == 0 ? "visible" : "hidden") + ")");

  e = ::access("/dev/mem", F_OK) == 0 ? 0 : errno;
  bool no_mem = e == ENOENT;
  e = ::access("/dev/null", R_OK | W_OK) == 0 ? 0 : errno;
  Report(no_mem && e == 0, "PrivateDevices=yes",
         std::string("/dev/mem ") + (no_mem ? "absent" : "present") + ", /dev/null " + Errno(e));

  int inet = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  e = inet < 0 ? errno : 0;
  Report(inet < 0 && e == EAFNOSUPPORT, "RestrictAddressFamilies=AF_UNIX", "an AF_INET socket " + Errno(e));
  int netlink = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
  e = netlink < 0 ? errno : 0;
  Report(netlink < 0, "RestrictAddressFamilies=AF_UNIX", "an AF_NETLINK socket " + Errno(e));
  int unix_socket = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  e = unix_socket < 0 ? errno : 0;
  Report(unix_socket >= 0, "RestrictAddressFamilies=AF_UNIX", "an AF_UNIX socket " + Errno(e));

  // Only the loopback interface: a network namespace of its own. (Read from /proc: if_nameindex()
  // needs a netlink socket, which RestrictAddressFamilies= forbids.)
  std::string names;
  if (FILE* dev = std::fopen("/proc/self/net/dev", "r")) {
    char line[512];
    while (std::fgets(line, sizeof line, dev) != nullptr) {
      const char* colon = std::strchr(line, ':');
      if (colon == nullptr) continue;
      const char* start = line;
      while (*start == ' ') ++start;
      names += " " + std::string(start, colon);
    }
    std::fclose(dev);
  }
  Report(names == " lo", "PrivateNetwork=yes", "interfaces:" + names);

  void* wx = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  e = wx == MAP_FAILED ? errno : 0;
  Report(wx == MAP_FAILED, "MemoryDenyWriteExecute=yes", "a writable and executable mapping " + Errno(e));
  void* rw = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  e = rw == MAP_FAILED ? errno : 0;
  Report(rw != MAP_FAILED, "MemoryDenyWriteExecute=yes", "a shared read-write mapping " + Errno(e));

  e = ::unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
  Report(e != 0, "RestrictNamespaces=yes", "unshare(CLONE_NEWUSER) " + Errno(e));
  e = ::personality(PER_LINUX32) == -1 ? errno : 0;
  Report(e != 0, "LockPersonality=yes", "personality(PER_LINUX32) " + Errno(e));

  // Setting one's own limit to what it is, or one's own CPU mask to what it is, needs no privilege:
  // only the system call filter refuses them. (The setrlimit system call itself: glibc's
  // setrlimit() calls prlimit64, which @system-service allows.)
  rlimit limit{};
  ::getrlimit(RLIMIT_CORE, &limit);
  e = ::syscall(SYS_setrlimit, RLIMIT_CORE, &limit) == 0 ? 0 : errno;
  Report(e == EPERM, "SystemCallFilter=~@resources", "the setrlimit system call " + Errno(e));
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  ::sched_getaffinity(0, sizeof cpus, &cpus);
  e = ::sched_setaffinity(0, sizeof cpus, &cpus) == 0 ? 0 : errno;
  Report(e == EPERM, "SystemCallFilter=~@resources", "sched_setaffinity to its own mask " + Errno(e));
  // Setting one's uid to itself needs no privilege either.
  e = ::syscall(SYS_setuid, ::getuid()) == 0 ? 0 : errno;
  Report(e == EPERM, "SystemCallFilter=~@privileged", "setuid(getuid()) " + Errno(e));

  int file = ::open(shm.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  e = file < 0 ? errno : (::fchmod(file, 04700) == 0 ? 0 : errno);
  Report(e == EPERM, "RestrictSUIDSGID=yes", "setting the setuid bit " + Errno(e));
  if (file >= 0) ::close(file);
  ::unlink(shm.c_str());

  std::string options = MountOptions("/proc/sys");
  Report(ReadOnly(options), "ProtectKernelTunables=yes", "/proc/sys mounted " + options);
  options = MountOptions("/sys/fs/cgroup");
  Report(ReadOnly(options), "ProtectControlGroups=yes", "/sys/fs/cgroup mounted " + options);
  options = MountOptions("/");
  Report(ReadOnly(options), "ProtectSystem=strict", "/ mounted " + options);
  options = MountOptions("/dev/shm");
  Report(!options.empty() && !ReadOnly(options), "ReadWritePaths=/dev/shm", "/dev/shm mounted " + options);
  e = ::access("/dev/kmsg", F_OK) == 0 ? 0 : errno;
  Report(e == ENOENT, "ProtectKernelLogs=yes", std::string("/dev/kmsg ") + (e == 0 ? "present" : std::strerror(e)));

  Report(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "NoNewPrivileges=yes",
         "no_new_privs " + std::to_string(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)));
  bool no_caps = true;
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) no_caps = false;
  }
  Report(no_caps, "CapabilityBoundingSet=", no_caps ? "bounding set empty" : "a capability is in the bounding set");
  Report(::getuid() != 0 && ::geteuid() != 0, "User=shmlease", "uid " + std::to_string(::getuid()));
  mode_t old = ::umask(0);
  Report(old == 077, "UMask=0077", "umask " + std::to_string(old));

  std::printf("checks %d, failed %d\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
