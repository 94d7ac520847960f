"""Access control, quotas and stats from Python: modes at create, chmod, stats(), and a second uid
(nobody) refused on a private segment, admitted read-only on a world-readable one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import shmlease
from conftest import NOBODY, child_env, reachable_tmp, stage_for_uid


def test_create_with_mode_and_chmod(client, seg):
    name = seg()
    info = client.create(name, 4096, mode=0o640)
    assert info["mode"] == 0o640
    assert info["owner_uid"] == os.geteuid()
    assert info["owner_gid"] == os.getegid()
    assert client.stat(name)["mode"] == 0o640
    assert client.chmod(name, 0o604)["mode"] == 0o604
    assert client.create(seg(), 4096)["mode"] == 0o600  # private by default


@pytest.mark.parametrize("bad", [-1, 0o1000, 1 << 40])
def test_bad_modes_are_refused(client, seg, bad):
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), 4096, mode=bad)


def test_mode_must_be_an_int(client, seg):
    with pytest.raises(TypeError):
        client.create(seg(), 4096, mode="0640")
    with pytest.raises(TypeError):
        client.chmod(seg(), True)


def test_chmod_of_a_missing_segment(client):
    with pytest.raises(shmlease.NotFoundError):
        client.chmod("no-such-segment", 0o644)


def test_stats_show_this_client_and_its_leases(client, seg):
    name = seg()
    client.create(name, 4096)
    with client.lease(name, "w"):
        st = client.stats()
        assert st["segments"] >= 1
        assert st["leases"] >= 1
        assert st["connections"] >= 1
        mine = [c for c in st["clients"] if c["pid"] == os.getpid()]
        assert mine, st
        held = [l for c in mine for l in c["leases"] if l["segment"] == name]
        assert held == [{"segment": name, "mode": "w", "exclusive": False}]
        assert all(c["uid"] == os.geteuid() for c in mine)


def test_quotas_refuse_with_their_own_errors(own_daemon):
    d = own_daemon("--quota-bytes", "64KiB", "--quota-segments", "2")
    with shmlease.connect(d.socket) as c:
        c.create("q1", 32 << 10)
        with pytest.raises(shmlease.Error) as e:
            c.create("q2", 40 << 10)
        assert e.value.errc_name == "quota_bytes"
        c.create("q2", 32 << 10)
        with pytest.raises(shmlease.Error) as e:
            c.create("q3", 1)
        assert e.value.errc_name == "quota_segments"
        c.remove("q1")
        c.remove("q2")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root")
def test_a_second_uid_is_refused_on_private_and_admitted_read_only_on_shared(own_daemon):
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run a client as another uid"
    d = own_daemon("--socket-mode", "0666", other_uid=NOBODY)  # nobody must reach the socket
    with shmlease.connect(d.socket) as c:
        c.create("private", shape=(16,), dtype="f")
        c.create("shared", shape=(16,), dtype="f", mode=0o644)
        with c.lease("shared", "w") as lease:
            np.asarray(lease)[:] = 7.0
        code = textwrap.dedent("""
            import numpy as np, shmlease, sys
            c = shmlease.connect()
            try:
                c.lease("private", "r")
                sys.exit("leased a private segment")
            except PermissionError as e:
                assert isinstance(e, shmlease.Error) and e.errc_name == "permission_denied", e
            with c.lease("shared", "r") as lease:
                a = np.asarray(lease)
                assert not a.flags.writeable and float(a.sum()) == 7.0 * 16
                del a
            try:
                c.lease("shared", "w")
                sys.exit("got a write lease with read permission only")
            except PermissionError:
                pass
            assert [s["name"] for s in c.list()] == ["shared"]
            print("ok")
        """)
        # nobody gets its own copy of the package and the script: the checkout may be in a
        # directory nobody cannot enter (test_nobody_cannot_reach_a_private_checkout).
        with stage_for_uid(NOBODY, NOBODY, files={"child.py": code}) as stage:
            result = subprocess.run(
                [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 sys.executable, str(stage / "child.py")],
                cwd=stage, env=child_env(d, pythonpath=str(stage)), capture_output=True, text=True,
                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "ok"
        c.remove("private")
        c.remove("shared")


def as_nobody(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run a client as another uid"
    return subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root")
def test_nobody_cannot_reach_a_private_checkout_but_reaches_its_stage(own_daemon, tmp_path):
    # A checkout under a mode-0700 directory, as a clone in a private home is: nobody cannot
    # import the package from there ...
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    shutil.copytree(os.path.dirname(os.path.abspath(shmlease.__file__)), private / "shmlease")
    d = own_daemon("--socket-mode", "0666", other_uid=NOBODY)
    probe = "import shmlease; shmlease.connect().ping(); print('reached')"
    refused = as_nobody([sys.executable, "-c", probe], cwd="/",
                        env=child_env(d, pythonpath=str(private)))
    assert refused.returncode != 0 and "ModuleNotFoundError" in refused.stderr, refused
    # ... but from its stage it imports it, and reaches the daemon's socket.
    with stage_for_uid(NOBODY, NOBODY, files={"probe.py": probe}) as stage:
        st = stage.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, NOBODY, 0o700)
        assert all(p.stat().st_uid == NOBODY for p in stage.rglob("*"))
        ok = as_nobody([sys.executable, str(stage / "probe.py")], cwd=stage,
                       env=child_env(d, pythonpath=str(stage)))
        assert ok.returncode == 0 and ok.stdout.strip() == "reached", ok
        # Private to that uid: another one (65533) may not even look inside.
        other = subprocess.run(["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                                "ls", str(stage)], capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and "Permission denied" in other.stderr, other
    assert not stage.exists()  # removed afterwards


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root")
def test_stage_holds_binaries_runnable_by_that_uid():
    with stage_for_uid(NOBODY, NOBODY, binaries=(shutil.which("true"),)) as stage:
        assert (stage / "true").stat().st_mode & 0o777 == 0o755
        assert as_nobody([str(stage / "true")], cwd=stage).returncode == 0
    assert not stage.exists()


def test_a_socket_directory_under_a_private_tmpdir_moves_to_tmp(own_daemon, tmp_path,
                                                                monkeypatch):
    private = tmp_path / "private-tmp"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert reachable_tmp() == "/tmp"
    d = own_daemon(other_uid=NOBODY)
    assert os.path.dirname(d.dir) == "/tmp" and os.stat(d.dir).st_mode & 0o777 == 0o755
    mine = own_daemon()  # without other_uid nothing changes: $TMPDIR, private
    assert os.path.dirname(mine.dir) == str(private)
    assert os.stat(mine.dir).st_mode & 0o777 == 0o700
    open_tmp = tempfile.mkdtemp(prefix="shmlease-py-open-", dir="/tmp")
    try:
        os.chmod(open_tmp, 0o755)
        monkeypatch.setattr(tempfile, "tempdir", open_tmp)
        assert reachable_tmp() == open_tmp  # a $TMPDIR everyone may pass through is kept
    finally:
        os.rmdir(open_tmp)
