"""Huge-page segments and populated leases from Python (issue 7).

Tests that need free huge pages reserve a few through `huge_pages(n)` (as root, restoring
vm.nr_hugepages afterwards, under the same lock file as the C++ tests) and skip, saying why,
where they cannot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile

import numpy as np
import pytest

import shmlease
from conftest import run_python

SYSCTL = "/proc/sys/vm/nr_hugepages"
LOCK = os.path.join(tempfile.gettempdir(), "shmlease-nr_hugepages.lock")
PAGE = os.sysconf("SC_PAGESIZE")


def pool() -> dict[str, int]:
    """The default huge page pool from /proc/meminfo: page_size, total, available."""
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    return {
        "page_size": values.get("Hugepagesize", 0) * 1024,
        "total": values.get("HugePages_Total", 0),
        "available": values.get("HugePages_Free", 0) - values.get("HugePages_Rsvd", 0),
    }


@contextlib.contextmanager
def huge_pages(n: int):
    """Makes at least n huge pages available for the block; skips the test if it cannot."""
    with open(LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = pool()
        if p["page_size"] == 0:
            pytest.skip("this kernel has no hugetlb huge pages")
        if p["available"] >= n:
            yield p["page_size"]
            return
        if os.geteuid() != 0:
            pytest.skip(f"needs {n} free huge pages (the host has {p['available']}) and only "
                        "root may reserve more (sysctl vm.nr_hugepages)")
        with open(SYSCTL) as f:
            previous = int(f.read())
        try:
            with open(SYSCTL, "w") as f:
                f.write(str(previous + n - p["available"]))
            if pool()["available"] < n:
                pytest.skip(f"the kernel could not reserve {n} huge pages")
            yield p["page_size"]
        finally:
            with open(SYSCTL, "w") as f:
                f.write(str(previous))


def more_than_available() -> int:
    """A size the huge page pool cannot hold now; skips when that would be large."""
    p = pool()
    if p["page_size"] == 0 or p["available"] > 16:
        pytest.skip("the host has more than 16 free huge pages: cannot exhaust them")
    return (p["available"] + 1) * p["page_size"]


def mapping_residency(buffer) -> dict[str, int]:
    """Rss and hugetlb bytes of the mapping holding `buffer`, from /proc/self/smaps."""
    address = np.frombuffer(buffer, dtype=np.uint8).ctypes.data
    found, out = False, {"rss": 0, "hugetlb": 0}
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                if found:
                    break
                start, end = (int(x, 16) for x in head.split("-"))
                found = start == address
                continue
            if found:
                key, value = line.split()[:2]
                if key == "Rss:":
                    out["rss"] = int(value) * 1024
                elif key in ("Shared_Hugetlb:", "Private_Hugetlb:"):
                    out["hugetlb"] += int(value) * 1024
    assert found, "the lease's mapping is not in /proc/self/smaps"
    return out


def test_huge_segment_is_rounded_up_and_stat_shows_the_page_size(client, seg):
    with huge_pages(2) as page:
        name = seg()
        size = page + page // 2
        info = client.create(name, size, huge=True)
        assert info["size"] == size
        assert info["page_size"] == page
        assert info["huge_fallback"] is False
        assert info["reserved_bytes"] == 2 * page
        assert client.stat(name)["page_size"] == page
        with client.lease(name, "w") as lease:
            a = np.asarray(lease)
            assert a.nbytes == size
            a[:] = 9
        client.remove(name)


def test_second_process_reads_the_huge_segment(daemon, client, seg):
    with huge_pages(2) as page:
        name = seg()
        client.create(name, shape=(page // 4,), dtype="f", huge=True)
        with client.lease(name, "w") as lease:
            np.asarray(lease)[:] = np.arange(page // 4, dtype=np.float32)
        result = run_python(daemon, f"""
            import numpy as np, shmlease
            with shmlease.connect() as c, c.lease({name!r}, populate=True) as lease:
                a = np.asarray(lease)
                assert lease.info["page_size"] == {page}
                assert (a == np.arange({page // 4}, dtype=np.float32)).all()
                print("ok", a.dtype, a.shape)
            """)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ok float32"), result.stdout
        client.remove(name)


def test_required_huge_pages_fail_with_how_to_enable_them(client, seg):
    size = more_than_available()
    name = seg()
    with pytest.raises(shmlease.Error) as info:
        client.create(name, size, huge=True)
    assert info.value.errc_name == "no_space"
    assert "sysctl vm.nr_hugepages=" in str(info.value)
    with pytest.raises(shmlease.NotFoundError):
        client.stat(name)


def test_best_effort_falls_back_and_says_so(client, seg):
    size = more_than_available()
    name = seg()
    info = client.create(name, size, huge="best-effort")
    assert info["huge_fallback"] is True
    assert info["page_size"] == PAGE
    assert client.stat(name)["huge_fallback"] is True
    with client.lease(name, "w") as lease:
        np.asarray(lease)[-1] = 1


def test_huge_false_opts_out_of_the_threshold(own_daemon):
    with huge_pages(1) as page:
        d = own_daemon("--huge-threshold", str(page))
        with shmlease.connect(d.socket) as c:
            assert c.create("big", page)["page_size"] == page
            assert c.create("optout", page, huge=False)["page_size"] == PAGE
            c.remove("big")
            c.remove("optout")


def test_bad_huge_values_are_refused(client, seg):
    for bad in ("yes", 1, "huge", b"best-effort"):
        with pytest.raises(shmlease.InvalidArgumentError, match="huge must be"):
            client.create(seg(), 4096, huge=bad)


def test_total_limit_counts_whole_huge_pages(own_daemon):
    with huge_pages(2) as page:
        d = own_daemon("--max-total-bytes", str(2 * page))
        with shmlease.connect(d.socket) as c:
            c.create("a", page // 2, huge=True)  # one whole page
            with pytest.raises(shmlease.Error) as info:
                c.create("b", page + 1, huge=False)  # would fit if "a" counted page // 2
            assert info.value.errc_name == "limit_bytes"
            c.create("b", page)
            c.remove("a")
            c.remove("b")


@pytest.mark.parametrize("mode", ["r", "w"])
def test_populate_faults_every_page_in(daemon, seg, mode):
    name = seg()
    size = 8 << 20
    with shmlease.connect(daemon.socket) as writer:
        writer.create(name, size)
        with writer.lease(name, "w") as lease:
            np.asarray(lease)[::PAGE] = 3
    with shmlease.connect(daemon.socket) as cold, cold.lease(name, mode) as lease:
        assert mapping_residency(lease)["rss"] == 0
    with shmlease.connect(daemon.socket) as warm, warm.lease(name, mode, populate=True) as lease:
        assert mapping_residency(lease)["rss"] == size
        assert (np.asarray(lease)[::PAGE] == 3).all()  # populating changed nothing


def test_populate_maps_huge_pages(client, seg):
    with huge_pages(1) as page:
        name = seg()
        client.create(name, page, huge=True)
        with client.lease(name, populate=True) as lease:
            assert mapping_residency(lease)["hugetlb"] == page
        client.remove(name)
