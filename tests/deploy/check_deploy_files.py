"""Checks the files under deploy/ with the tools that understand them, without a running systemd,
container engine or cluster:

- systemd units: `systemd-analyze verify` (with ExecStart= pointing at the built daemon, which
  verify requires to exist) must accept them without a single warning, and
  `systemd-analyze security --offline` must rate the service's exposure at most MAX_EXPOSURE;
- sysusers.d and tmpfiles.d entries: systemd-sysusers and systemd-tmpfiles apply them to a
  scratch root directory;
- Kubernetes manifests: valid YAML, with the structure the docs promise (hostPath socket and
  /dev/shm, probes, non-root security contexts, resources);
- Dockerfile: every instruction is a Dockerfile instruction, multi-stage on Debian 12, the runtime
  stage runs the daemon as non-root and installs no build tools; the build stage's packages come
  from scripts/dev's list;
- the example config: valid TOML once uncommented, and every key is a daemon flag (`shmleased
  --help`) unless it is marked NOT YET IMPLEMENTED, and no marked key is a flag already.

Run by CTest (tests/deploy/CMakeLists.txt) with Debian's /usr/bin/python3, which has python3-yaml.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

try:
    import yaml
except ImportError:
    sys.exit("FAIL: this Python cannot import yaml: install python3-yaml (scripts/dev deps)")

MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is fully locked down, 10 is no sandbox at all

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
    return ok


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def check_units(deploy, daemon, scratch):
    unit_dir = os.path.join(scratch, "units")
    os.makedirs(unit_dir)
    for name in ("shmleased.service", "shmleased.socket"):
        with open(os.path.join(deploy, name)) as f:
            text = f.read()
        if name.endswith(".service"):
            check(re.search(r"^ExecStart=/usr/local/bin/shmleased$", text, re.M),
                  f"{name}: ExecStart= is not /usr/local/bin/shmleased")
            text = re.sub(r"^ExecStart=\S+", "ExecStart=" + daemon, text, flags=re.M)
        with open(os.path.join(unit_dir, name), "w") as f:
            f.write(text)
    units = [os.path.join(unit_dir, n) for n in ("shmleased.socket", "shmleased.service")]
    # verify exits 0 on unknown keys and syntax errors (it only warns), so any output fails.
    r = run(["systemd-analyze", "verify", "--man=no", *units])
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and not out, f"systemd-analyze verify (exit {r.returncode}):\n{out}")
    print(f"systemd-analyze verify: exit {r.returncode}, {len(out)} bytes of warnings")

    r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
             os.path.join(unit_dir, "shmleased.service")])
    m = re.search(r"Overall exposure level for shmleased\.service: ([0-9.]+)", r.stdout)
    if check(m, f"systemd-analyze security gave no exposure level:\n{r.stdout}{r.stderr}"):
        exposure = float(m.group(1))
        print(f"systemd-analyze security: exposure {exposure}")
        check(exposure <= MAX_EXPOSURE, f"shmleased.service exposure {exposure} > {MAX_EXPOSURE}")

    with open(os.path.join(deploy, "shmleased.service")) as f:
        service = f.read()
    # The settings the service cannot work without, and the ones it must not have.
    for line in ("Type=notify", "User=shmlease", "Group=shmlease", "RemoveIPC=no",
                 "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID",
                 "ReadWritePaths=/dev/shm", "CapabilityBoundingSet="):
        check(re.search("^" + re.escape(line) + "$", service, re.M),
              f"shmleased.service lacks {line}")
    # Sealed segments (the default backing) survive a restart only in the fd store: room for
    # every segment (max-segments defaults to 4096) and the listening socket.
    m = re.search(r"^FileDescriptorStoreMax=([0-9]+)$", service, re.M)
    check(m and int(m.group(1)) > 4096,
          "shmleased.service needs FileDescriptorStoreMax= above max-segments (4096)")
    for key in ("DynamicUser", "PrivateUsers", "ProtectProc", "InaccessiblePaths"):
        check(not re.search(f"^{key}=", service, re.M), f"shmleased.service must not set {key}=")
    with open(os.path.join(deploy, "shmleased.socket")) as f:
        socket = f.read()
    check(re.search(r"^ListenStream=/run/shmlease/shmlease\.sock$", socket, re.M),
          "shmleased.socket does not listen on /run/shmlease/shmlease.sock")


def check_sysusers_tmpfiles(deploy, scratch):
    root = os.path.join(scratch, "root")
    os.makedirs(os.path.join(root, "etc"))
    sysusers = os.path.join(deploy, "sysusers.d", "shmlease.conf")
    r = run(["systemd-sysusers", f"--root={root}", sysusers])
    for db in ("passwd", "group"):
        path = os.path.join(root, "etc", db)
        text = open(path).read() if os.path.exists(path) else ""
        if not check(r.returncode == 0 and re.search(r"^shmlease:", text, re.M),
                     f"systemd-sysusers made no shmlease entry in /etc/{db}:\n{r.stdout}{r.stderr}"):
            return
    tmpfiles = os.path.join(deploy, "tmpfiles.d", "shmlease.conf")
    r = run(["systemd-tmpfiles", f"--root={root}", "--create", tmpfiles])
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and not out, f"systemd-tmpfiles --create (exit {r.returncode}):\n{out}")
    for path, mode in (("run/shmlease", 0o750), ("var/lib/shmlease", 0o700)):
        full = os.path.join(root, path)
        if check(os.path.isdir(full), f"systemd-tmpfiles did not create /{path}"):
            st = os.stat(full)
            check(st.st_mode & 0o7777 == mode, f"/{path} has mode {st.st_mode & 0o7777:o}")
            if os.geteuid() == 0:  # only root can give it away; then it must be shmlease's
                with open(os.path.join(root, "etc/passwd")) as f:
                    uid = next(int(l.split(":")[2]) for l in f if l.startswith("shmlease:"))
                check(st.st_uid == uid, f"/{path} is owned by uid {st.st_uid}, not shmlease ({uid})")


def containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def check_k8s(deploy):
    docs = {}
    for name in ("daemonset.yaml", "example-pod.yaml"):
        path = os.path.join(deploy, "k8s", name)
        try:
            with open(path) as f:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            check(False, f"{name}: not valid YAML: {e}")
            continue
        for d in loaded:
            ok = isinstance(d, dict) and all(k in d for k in ("apiVersion", "kind", "metadata"))
            check(ok and "name" in d["metadata"], f"{name}: a document without apiVersion, kind "
                  "or metadata.name")
            if ok:
                docs[d["kind"]] = d
        print(f"{name}: {len(loaded)} YAML document(s)")

    ds = docs.get("DaemonSet")
    if check(ds, "daemonset.yaml has no DaemonSet"):
        check(ds["apiVersion"] == "apps/v1", "DaemonSet apiVersion is not apps/v1")
        spec = ds["spec"]
        labels = spec["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
              "DaemonSet selector does not match its pod labels")
        pod = spec["template"]["spec"]
        host = {v["hostPath"]["path"]: v["name"] for v in pod["volumes"] if "hostPath" in v}
        check("/dev/shm" in host and "/run/shmlease" in host,
              "DaemonSet does not share /dev/shm and /run/shmlease through hostPath")
        check(pod.get("securityContext", {}).get("runAsNonRoot") is True,
              "DaemonSet pod does not run as non-root")
        daemon = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in daemon.get("volumeMounts", [])}
        check(mounts.get("/dev/shm") == host.get("/dev/shm"), "daemon does not mount the host's /dev/shm")
        check(mounts.get("/run/shmlease") == host.get("/run/shmlease"),
              "daemon does not mount the host's /run/shmlease")
        probe = daemon.get("readinessProbe", {}).get("exec", {}).get("command", [])
        check(probe[-1:] == ["ping"] and probe[0].endswith("shmlease"),
              f"readinessProbe is not `shmlease ping`: {probe}")
        res = daemon.get("resources", {})
        check("requests" in res and "memory" in res.get("limits", {}),
              "daemon has no resource requests or memory limit")
        sc = daemon.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False and
              sc.get("capabilities", {}).get("drop") == ["ALL"],
              "daemon container may escalate privileges or keeps capabilities")
        for c in containers(pod):
            check(c.get("image") and c.get("name"), "a DaemonSet container without name or image")

    pod = docs.get("Pod")
    if check(pod, "example-pod.yaml has no Pod"):
        spec = pod["spec"]
        host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        mounted = {m["name"]: m["mountPath"] for c in containers(spec)
                   for m in c.get("volumeMounts", [])}
        check(host.get(next((n for n, p in mounted.items() if p == "/run/shmlease"), ""))
              == "/run/shmlease", "example pod does not mount the host's /run/shmlease")
        check("/dev/shm" in mounted.values(), "example pod mounts no /dev/shm")
        gid = ds and ds["spec"]["template"]["spec"]["securityContext"].get("runAsGroup")
        check(gid in spec.get("securityContext", {}).get("supplementalGroups", []),
              "example pod is not in the daemon's group, so it may not connect")


DOCKER_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                       "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                       "SHELL", "MAINTAINER"}


def dockerfile_instructions(path):
    """(keyword, arguments) for each instruction: comments dropped, continuations joined."""
    out, pending = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):  # also inside a continued line
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            full = pending + stripped
            pending = ""
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    check(not pending, "Dockerfile ends inside a continued line")
    return out


def check_dockerfile(deploy, source):
    path = os.path.join(deploy, "Dockerfile")
    instructions = dockerfile_instructions(path)
    for keyword, _ in instructions:
        check(keyword in DOCKER_INSTRUCTIONS, f"Dockerfile: unknown instruction {keyword}")
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in instructions
            if k == "ARG" and "=" in a}
    stages, current = [], None
    for keyword, a in instructions:
        if keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), a.split()[0])
            current = {"image": image, "name": a.split()[-1] if " AS " in a.upper() else None,
                       "body": []}
            stages.append(current)
        elif current is not None:
            current["body"].append((keyword, a))
    check(len(stages) >= 2, "Dockerfile is not multi-stage")
    for s in stages:
        check(re.fullmatch(r"debian:(12|bookworm)(-slim)?", s["image"]),
              f"Dockerfile stage on {s['image']}, not Debian 12")
    if len(stages) < 2:
        return
    build, runtime = stages[0], stages[-1]
    build_run = " ".join(a for k, a in build["body"] if k == "RUN")
    runtime_run = " ".join(a for k, a in runtime["body"] if k == "RUN")
    # The build stage installs scripts/dev's packages (or some of them), nothing else.
    with open(os.path.join(source, "scripts", "dev")) as f:
        m = re.search(r"^PACKAGES=\((.*?)\)", f.read(), re.M | re.S)
    dev_packages = set(m.group(1).split()) if m else set()
    m = re.search(r"apt-get install ([^&|;]*)", build_run)
    build_packages = {w for w in (m.group(1).split() if m else []) if not w.startswith("-")}
    check(build_packages and build_packages <= dev_packages,
          f"Dockerfile build stage installs packages not in scripts/dev: "
          f"{sorted(build_packages - dev_packages)}")
    check("cmake --build" in build_run and "cmake --install" in build_run,
          "Dockerfile build stage does not build and install with CMake")
    for tool in ("build-essential", "cmake", "-dev"):
        check(tool not in runtime_run, f"Dockerfile runtime stage installs {tool}")
    check(any(k == "COPY" and f"--from={build['name']}" in a for k, a in runtime["body"]),
          "Dockerfile runtime stage copies nothing from the build stage")
    users = [a for k, a in runtime["body"] if k == "USER"]
    check(users and users[-1].split(":")[0] not in ("root", "0"),
          "Dockerfile runtime stage does not switch to a non-root USER")
    entry = " ".join(a for k, a in runtime["body"] if k in ("ENTRYPOINT", "CMD"))
    check("shmleased" in entry, "Dockerfile runtime stage does not run shmleased")
    check(any(k == "VOLUME" and "/run/shmlease" in a for k, a in runtime["body"]),
          "Dockerfile runtime stage has no volume for /run/shmlease")
    print(f"Dockerfile: {len(instructions)} instructions, {len(stages)} stages")


def check_config_example(deploy, daemon):
    path = os.path.join(deploy, "shmleased.toml.example")
    with open(path) as f:
        lines = f.read().splitlines()
    keys, pending, uncommented = {}, set(), []
    marked = False
    for number, line in enumerate(lines, 1):
        m = re.match(r"^#([a-z][a-z0-9-]*) = (.*)$", line)
        if m:
            keys[m.group(1)] = number
            if marked:
                pending.add(m.group(1))
            marked = False
            uncommented.append(line[1:])
        elif line.strip() == "":
            marked = False
        elif line.startswith("# NOT YET IMPLEMENTED"):
            marked = True
        check(not re.match(r"^[a-z]", line), f"{path}:{number}: a key that is not commented out")
    try:
        tomllib.loads("\n".join(uncommented))
    except tomllib.TOMLDecodeError as e:
        check(False, f"{path}: the example values are not valid TOML: {e}")

    r = run([daemon, "--help"])
    flags = set(re.findall(r"^\s+--([a-z][a-z0-9-]*)", r.stdout, re.M)) - {"help", "version", "config"}
    check(r.returncode == 0 and flags, f"shmleased --help lists no flags:\n{r.stdout}{r.stderr}")
    for key, number in keys.items():
        if key in pending:
            check(key not in flags, f"{path}:{number}: '{key}' is implemented now: remove its "
                  "NOT YET IMPLEMENTED mark")
        else:
            check(key in flags, f"{path}:{number}: '{key}' is not a flag of shmleased; mark it "
                  "NOT YET IMPLEMENTED or fix the name")
    for flag in sorted(flags - set(keys)):
        check(False, f"{path}: shmleased has --{flag}, which the example does not describe")
    print(f"config example: {len(keys)} keys, {len(pending)} not yet implemented: "
          f"{', '.join(sorted(pending))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--daemon", required=True, help="the built shmleased")
    args = parser.parse_args()
    deploy = os.path.join(os.path.abspath(args.source_dir), "deploy")
    for tool in ("systemd-analyze", "systemd-sysusers", "systemd-tmpfiles"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} is not installed (package systemd; ./scripts/dev deps installs it)")
            return 1
    with tempfile.TemporaryDirectory(prefix="shmlease-deploy.") as scratch:
        check_units(deploy, os.path.abspath(args.daemon), scratch)
        check_sysusers_tmpfiles(deploy, scratch)
    check_k8s(deploy)
    check_dockerfile(deploy, args.source_dir)
    check_config_example(deploy, args.daemon)
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print("PASS" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
