"""The Client API, the error mapping, and what bad input gets."""

from __future__ import annotations

import errno
import inspect
import os
import time

import pytest

import shmlease
from conftest import run_python


# --- connecting ---

def test_connect_resolves_like_the_cpp_client(daemon, monkeypatch):
    monkeypatch.setenv("SHMLEASE_SOCKET", daemon.socket)
    assert shmlease.resolve_socket_path() == daemon.socket
    assert shmlease.resolve_socket_path("/x/y.sock") == "/x/y.sock"
    with shmlease.connect() as c:
        assert c.socket_path == daemon.socket
        assert c.server_pid == daemon.pid
        c.ping()
    with shmlease.Client(daemon.socket) as c2:  # the class itself connects too
        c2.ping()


def test_daemon_not_running_names_the_socket(tmp_path):
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(shmlease.DaemonUnavailableError) as info:
        shmlease.connect(path)
    e = info.value
    assert isinstance(e, shmlease.Error) and isinstance(e, ConnectionRefusedError)
    assert isinstance(e, OSError)
    assert path in str(e) and "not running" in str(e)
    assert e.errc_name == "daemon_unavailable" and e.code == 19
    assert e.errno == errno.ECONNREFUSED


def test_connect_takes_a_pathlike(daemon):
    from pathlib import Path
    with shmlease.connect(Path(daemon.socket)) as c:
        assert c.socket_path == daemon.socket


# --- segments ---

def test_create_stat_list_remove(client, seg):
    a, b = seg("a"), seg("b")
    info = client.create(a, 1000)
    assert info["name"] == a and info["size"] == 1000 and info["format"] == ""
    assert info["shape"] == () and info["readers"] == info["writers"] == 0
    assert info["creator_pid"] == os.getpid() and info["removed"] is False
    assert info["page_size"] > 0 and info["created_unix_ns"] > 0
    info_b = client.create(b, shape=(2, 3), dtype="d")
    assert info_b["size"] == 48 and info_b["shape"] == (2, 3) and info_b["format"] == "d"
    assert info_b["id"] != info["id"]
    assert client.stat(a) == info
    names = {s["name"]: s for s in client.list()}
    assert names[a] == info and names[b] == info_b
    client.remove(a)
    with pytest.raises(shmlease.NotFoundError):
        client.stat(a)
    assert a not in {s["name"] for s in client.list()}


def test_size_and_shape_together(client, seg):
    info = client.create(seg(), 24, shape=(2, 3), dtype="i")
    assert info["size"] == 24
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), 25, shape=(2, 3), dtype="i")  # 25 != 2 * 3 * 4


def test_exists_and_exist_ok(client, seg):
    name = seg()
    first = client.create(name, 64)
    with pytest.raises(shmlease.ExistsError) as info:
        client.create(name, 64)
    e = info.value
    assert isinstance(e, FileExistsError) and isinstance(e, shmlease.Error)
    assert e.errno == errno.EEXIST and e.errc_name == "already_exists" and e.code == 7
    assert name in str(e)
    assert client.create(name, 64, exist_ok=True)["id"] == first["id"]
    assert "exist_ok" in str(e) and str(e).count("already exists") == 1


def test_exist_ok_returns_only_a_segment_of_the_same_layout(client, seg):
    """exist_ok=True must never hand back a segment of another size, dtype or shape."""
    name = seg()
    first = client.create(name, shape=(1024, 1024), dtype="f")
    same = client.create(name, shape=(1024, 1024), dtype="float32", exist_ok=True)
    assert same["id"] == first["id"]
    for other in (dict(size=4096), dict(shape=(1024, 1024), dtype="d"),
                  dict(shape=(2048, 512), dtype="f"), dict(shape=(1024 * 1024,), dtype="f")):
        with pytest.raises(shmlease.ExistsError) as info:
            client.create(name, exist_ok=True, **other)
        text = str(info.value)
        assert "float32 (1024, 1024), 4194304 bytes" in text, text  # what exists
        assert "asked for" in text, text                              # and what was asked
    assert client.stat(name)["id"] == first["id"]  # and nothing changed


def test_missing_daemon_says_what_is_at_the_path(tmp_path):
    with pytest.raises(shmlease.DaemonUnavailableError) as info:
        shmlease.connect(str(tmp_path / "none.sock"))
    text = str(info.value)
    assert "no socket at" in text and "start shmleased" in text
    assert text.count("is not running") <= 1, text  # said once
    with pytest.raises(shmlease.DaemonUnavailableError, match="is a directory, not a socket"):
        shmlease.connect(str(tmp_path))


def test_not_found_everywhere(client, seg):
    name = seg()
    for call in (lambda: client.stat(name), lambda: client.remove(name),
                 lambda: client.lease(name), lambda: client.lease(name, "w")):
        with pytest.raises(shmlease.NotFoundError) as info:
            call()
        e = info.value
        assert isinstance(e, FileNotFoundError)
        assert e.errno == errno.ENOENT and e.errc_name == "not_found" and e.code == 6
        assert name in str(e)


def test_remove_while_leased_frees_after_last_release(daemon, client, seg):
    name = seg()
    client.create(name, 1 << 16)
    lease = client.lease(name, "w")
    client.remove(name)
    with pytest.raises(shmlease.NotFoundError):
        client.stat(name)  # the name is gone at once
    client.create(name, 16)  # and can be reused while the old memory is still leased
    memoryview(lease)[0] = 1  # the old memory is still there
    lease.release()
    client.remove(name)


# --- leases ---

def test_lease_attributes(client, seg):
    name = seg()
    client.create(name, shape=(4, 8), dtype="H")
    with client.lease(name, "w", exclusive=True, timeout=1) as lease:
        assert lease.name == name and lease.mode == "w" and lease.exclusive is True
        assert lease.readonly is False and lease.format == "H" and lease.itemsize == 2
        assert lease.shape == (4, 8) and lease.ndim == 2 and lease.strides == (16, 2)
        assert lease.nbytes == 64 and lease.exports == 0 and lease.released is False
        assert lease.id > 0 and lease.info["name"] == name and lease.info["shape"] == (4, 8)
        assert "H" in repr(lease) and name in repr(lease)
        st = client.stat(name)
        assert st["writers"] == 1 and st["exclusive"] is True
    assert lease.released and "released" in repr(lease)
    with client.lease(name) as r:
        assert r.mode == "r" and r.readonly is True and r.exclusive is False
        assert client.stat(name)["readers"] == 1
    assert client.stat(name)["readers"] == 0


def test_exclusive_lease_times_out(client, seg):
    name = seg()
    client.create(name, 64)
    holder = client.lease(name, "r")
    start = time.monotonic()
    with pytest.raises(shmlease.LeaseTimeoutError) as info:
        client.lease(name, "w", exclusive=True, timeout=0.2)
    elapsed = time.monotonic() - start
    e = info.value
    assert isinstance(e, TimeoutError) and e.errno == errno.ETIMEDOUT
    assert e.errc_name == "timeout" and e.code == 9
    assert 0.15 <= elapsed < 5, elapsed
    with pytest.raises(shmlease.LeaseTimeoutError):
        client.lease(name, "w", exclusive=True, timeout=0)  # fails at once
    holder.release()
    with client.lease(name, "w", exclusive=True, timeout=0) as lease:
        assert lease.exclusive
        with pytest.raises(TimeoutError):
            client.lease(name, "r", timeout=0.05)  # nobody joins an exclusive lease


def test_closed_client(daemon, seg):
    name = seg()
    c = shmlease.connect(daemon.socket)
    c.create(name, 64)
    lease = c.lease(name, "w")
    memoryview(lease)[0] = 5
    view = memoryview(lease)  # an export made before close() (new ones are refused after it)
    c.close()
    assert c.closed and "closed" in repr(c)
    c.close()  # twice: nothing
    for call in (c.ping, c.list, lambda: c.stat(name), lambda: c.lease(name),
                 lambda: c.create(seg(), 8), lambda: c.remove(name)):
        with pytest.raises(ValueError, match="closed"):
            call()
    with pytest.raises(ValueError):
        with c:
            pass
    assert view[0] == 5  # still mapped
    lease.release()  # the daemon already released it with the connection: no error
    with shmlease.connect(daemon.socket) as other:
        st = other.stat(name)
        assert st["writers"] == 0


def test_context_manager_closes_and_releases(daemon, seg):
    name = seg()
    with shmlease.connect(daemon.socket) as c:
        c.create(name, 64)
        held = [c.lease(name, "r") for _ in range(3)]
        assert c.stat(name)["readers"] == 3
    assert c.closed
    with shmlease.connect(daemon.socket) as other:
        assert other.stat(name)["readers"] == 0
    del held


# --- errors from the daemon and the connection ---

def test_limit_error_is_a_plain_shmlease_error(own_daemon):
    d = own_daemon("--max-segments", "1", "--max-segment-size", "1MiB")
    with shmlease.connect(d.socket) as c:
        c.create("one", 64)
        with pytest.raises(shmlease.Error) as info:
            c.create("two", 64)
        e = info.value
        assert type(e) is shmlease.Error and e.errc_name == "limit_segments" and e.code == 11
        assert str(e)
        c.remove("one")
        with pytest.raises(shmlease.Error) as info:
            c.create("big", 2 << 20)
        assert info.value.errc_name == "limit_segment_size"


def test_daemon_stopping_gives_connection_lost(own_daemon, monkeypatch):
    # The client tries to reconnect first (docs/RESTART.md): keep that short here.
    monkeypatch.setenv("SHMLEASE_RECONNECT_TIMEOUT_MS", "300")
    d = own_daemon()
    c = shmlease.connect(d.socket)
    c.create("x", 4096)
    lease = c.lease("x", "w")
    memoryview(lease)[0] = 1
    view = memoryview(lease)  # made while the lease is counted (no new exports once it is lost)
    assert d.stop() == 0
    with pytest.raises(shmlease.ConnectionLostError) as info:
        c.ping()
    assert isinstance(info.value, ConnectionError)
    assert view[0] == 1  # the mapping outlives the daemon
    view.release()
    lease.release()
    c.close()
    with pytest.raises(shmlease.DaemonUnavailableError):
        shmlease.connect(d.socket)


def test_permission_denied_on_the_socket(own_daemon):
    # connect(2) on a socket the caller may not write fails with EACCES. Root passes every
    # permission check, so as root the client drops to another user first.
    as_root = os.geteuid() == 0
    d = own_daemon("--socket-mode", "0600" if as_root else "0000")
    os.chmod(d.dir, 0o755)
    code = f"""
        import os, errno, shmlease
        if {as_root!r}:
            os.setgid(65534); os.setuid(65534)
        try:
            shmlease.connect({d.socket!r})
        except shmlease.PermissionDeniedError as e:
            assert isinstance(e, PermissionError) and e.errno == errno.EACCES, e
            assert e.errc_name == "permission_denied" and {d.socket!r} in str(e), e
            print("denied")
    """
    result = run_python(d, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "denied"


# --- bad input ---

@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "x" * 129, "caf\u00e9", "a\0b",
                                  "../etc", "a\nb"])
def test_bad_names(client, name):
    with pytest.raises(shmlease.InvalidArgumentError) as info:
        client.create(name, 64)
    assert isinstance(info.value, ValueError)
    assert info.value.errc_name in ("invalid_name", "invalid_argument")
    # A name that cannot be created cannot be found either.
    with pytest.raises(shmlease.NotFoundError):
        client.lease(name)


def test_longest_name_is_fine(client):
    name = "n" * 128
    client.create(name, 8)
    client.remove(name)


@pytest.mark.parametrize("bad", [None, 1, b"bytes", ["x"]])
def test_name_must_be_a_str(client, bad):
    with pytest.raises(TypeError):
        client.create(bad, 64)
    with pytest.raises(TypeError):
        client.lease(bad)
    with pytest.raises(TypeError):
        client.stat(bad)
    with pytest.raises(TypeError):
        client.remove(bad)


@pytest.mark.parametrize("size", [0, -1, -(2 ** 70), 2 ** 64])
def test_bad_size_values(client, seg, size):
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), size)


@pytest.mark.parametrize("size", [1.5, "10", True, b"1"])
def test_bad_size_types(client, seg, size):
    with pytest.raises(TypeError):
        client.create(seg(), size)


def test_size_beyond_the_daemons_limits(client, seg):
    with pytest.raises(shmlease.Error) as info:
        client.create(seg(), 2 ** 62)
    assert info.value.errc_name.startswith("limit_") or info.value.errc_name == "no_space"


@pytest.mark.parametrize("shape", [(), (0,), (4, 0), (-1,), (2,) * 9, [2 ** 64]])
def test_bad_shape_values(client, seg, shape):
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), shape=shape, dtype="f")


@pytest.mark.parametrize("shape", ["12", [1.5], [None], object(), (True, 2)])
def test_bad_shape_types(client, seg, shape):
    with pytest.raises(TypeError):
        client.create(seg(), shape=shape, dtype="f")


def test_shape_overflowing_64_bits(client, seg):
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), shape=(2 ** 40, 2 ** 40), dtype="d")


def test_int_shape_and_eight_dimensions(client, seg):
    assert client.create(seg(), shape=7, dtype="d")["shape"] == (7,)
    assert client.create(seg(), shape=(1, 2) * 4, dtype="B")["size"] == 16


def test_size_or_shape_is_required(client, seg):
    with pytest.raises(shmlease.InvalidArgumentError, match="size or a shape"):
        client.create(seg())
    with pytest.raises(shmlease.InvalidArgumentError):
        client.create(seg(), dtype="f")


@pytest.mark.parametrize("mode", ["x", "rw", "R", "", "read"])
def test_bad_modes(client, seg, mode):
    name = seg()
    client.create(name, 8)
    with pytest.raises(shmlease.InvalidArgumentError, match="mode"):
        client.lease(name, mode)


@pytest.mark.parametrize("timeout,exc", [(-1, shmlease.InvalidArgumentError),
                                         (float("nan"), shmlease.InvalidArgumentError),
                                         ("1", TypeError), (True, TypeError)])
def test_bad_timeouts(client, seg, timeout, exc):
    name = seg()
    client.create(name, 8)
    with pytest.raises(exc):
        client.lease(name, timeout=timeout)


def test_infinite_timeout_waits_as_none_does(client, seg):
    name = seg()
    client.create(name, 8)
    with client.lease(name, timeout=float("inf")) as lease:
        assert lease.mode == "r"


def test_keyword_only_arguments(client, seg):
    name = seg()
    with pytest.raises(TypeError):
        client.create(name, 8, (2, 4))  # shape is keyword-only
    client.create(name, 8)
    with pytest.raises(TypeError):
        client.lease(name, "r", True)  # exclusive is keyword-only


# --- documentation ---

def test_every_public_name_has_a_docstring():
    assert shmlease.__doc__ and len(shmlease.__doc__) > 200
    for name in shmlease.__all__:
        if name == "__version__":
            continue
        obj = getattr(shmlease, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr not in ("__enter__", "__exit__"):
                    continue
                assert value.__doc__ and value.__doc__.strip(), f"{name}.{attr}"
    sig = inspect.signature(shmlease.Client.lease)
    assert list(sig.parameters) == ["self", "name", "mode", "exclusive", "timeout", "populate"]
    assert sig.parameters["populate"].kind is inspect.Parameter.KEYWORD_ONLY
    create = inspect.signature(shmlease.Client.create)
    assert list(create.parameters)[-3:] == ["exist_ok", "huge", "mode"]
    assert create.parameters["huge"].default is None
    assert sig.parameters["exclusive"].kind is inspect.Parameter.KEYWORD_ONLY
    assert str(inspect.signature(shmlease.connect)) == "(socket=None, *, reconnect_timeout=None)"
    assert str(inspect.signature(shmlease.Client)) == "(socket=None, *, reconnect_timeout=None)"


def test_error_hierarchy():
    pairs = {shmlease.NotFoundError: FileNotFoundError, shmlease.ExistsError: FileExistsError,
             shmlease.PermissionDeniedError: PermissionError,
             shmlease.LeaseTimeoutError: TimeoutError, shmlease.InvalidArgumentError: ValueError,
             shmlease.DaemonUnavailableError: ConnectionRefusedError,
             shmlease.ConnectionLostError: ConnectionError}
    assert issubclass(shmlease.Error, OSError)
    for cls, builtin in pairs.items():
        assert issubclass(cls, shmlease.Error) and issubclass(cls, builtin)
        assert cls.__module__ == "shmlease"


def test_works_without_numpy(daemon, seg):
    # numpy is optional: with its import blocked, struct characters still work and numpy-only
    # dtypes say why they cannot be used.
    name = seg()
    result = run_python(daemon, f"""
        import sys
        sys.modules["numpy"] = None               # any "import numpy" now raises ImportError
        import shmlease
        c = shmlease.connect()
        assert c.create({name!r}, shape=(2, 2), dtype="d")["format"] == "d"
        with c.lease({name!r}, "w") as lease:
            m = memoryview(lease)
            m[1, 1] = 2.5
            assert m.tolist() == [[0.0, 0.0], [0.0, 2.5]]
            m.release()
        try:
            c.create({name!r} + "x", shape=(2,), dtype=float)
        except TypeError as e:
            assert "numpy" in str(e), e
        else:
            raise AssertionError("no TypeError")
        try:
            c.create({name!r} + "y", shape=(2,), dtype="float32")
        except shmlease.InvalidArgumentError as e:
            assert "float32" in str(e), e
        else:
            raise AssertionError("no InvalidArgumentError")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
