"""Access control, quotas and stats from Python: modes at create, chmod, stats(), and a second uid
(nobody) refused on a private segment, admitted read-only on a world-readable one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shmlease
from conftest import child_env


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


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root")
def test_a_second_uid_is_refused_on_private_and_admitted_read_only_on_shared(own_daemon):
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run a client as another uid"
    d = own_daemon("--socket-mode", "0666")
    os.chmod(d.dir, 0o755)  # nobody must reach the socket
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
        result = subprocess.run(
            [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
             "-c", code],
            env=child_env(d), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "ok"
        c.remove("private")
        c.remove("shared")
