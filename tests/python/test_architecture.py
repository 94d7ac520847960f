"""docs/ARCHITECTURE.md is the layout of the code: its rooms, their files and the arrows between them.

Checked from the source tree alone (no build, no daemon):

- every source file of a room (the folders below) is named in docs/ARCHITECTURE.md, and every
  path the page names exists;
- every quoted `#include` of a room resolves to a file of the tree, and only along the page's
  one-way arrows (ALLOWED below, the same arrows the page draws);
- the public headers (common/include/, client/include/) include no internal header, and only the
  daemon, the codec and libshmlease's connection include the wire (protocol.hpp, codec.hpp), so a
  change of the wire protocol is never an API break.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ARCHITECTURE.md"

# Each room: the folders whose files belong to it. The order is the page's.
ROOMS = {
    "common/public": ["common/include/shmlease"],
    "common/internal": ["common/internal/shmlease"],
    "common/src": ["common/src"],
    "server": ["server"],
    "client/public": ["client/include/shmlease"],
    "client/src": ["client/src"],
    "client/cli": ["client/cli"],
    "pybindings": ["pybindings/src"],
}

# Which rooms a room's files may include (besides its own). The arrows of docs/ARCHITECTURE.md.
ALLOWED = {
    "common/public": set(),
    "common/internal": {"common/public"},
    "common/src": {"common/public", "common/internal"},
    "server": {"common/public", "common/internal"},
    "client/public": {"common/public"},
    "client/src": {"common/public", "common/internal", "client/public"},
    "client/cli": {"common/public", "common/internal", "client/public"},
    "pybindings": {"common/public", "common/internal", "client/public"},
}

# The wire itself: only these rooms may include it. The CLI and the Python module see the public
# types; the daemon and libshmlease's connection speak the wire.
WIRE = {"protocol.hpp", "codec.hpp"}
WIRE_USERS = {"common/internal", "common/src", "server", "client/src"}

SOURCE_SUFFIXES = {".hpp", ".cpp", ".h", ".c"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def room_files() -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for room, folders in ROOMS.items():
        files[room] = sorted(p for folder in folders for p in (REPO / folder).iterdir()
                             if p.is_file() and p.suffix in SOURCE_SUFFIXES)
    return files


def room_of(path: Path) -> str | None:
    rel = path.relative_to(REPO).parent.as_posix()
    for room, folders in ROOMS.items():
        if rel in folders:
            return room
    return None


def resolve(including: Path, name: str) -> Path | None:
    """Where the compiler finds a quoted include: next to the file, then on the include paths."""
    candidates = [including.parent / name]
    if name.startswith("shmlease/"):
        candidates += [REPO / root / name for root in
                       ("common/include", "common/internal", "client/include")]
    found = [c.resolve() for c in candidates if c.is_file()]
    return found[0] if found else None


def test_every_file_of_a_room_is_on_the_page_and_every_named_path_exists():
    page = DOC.read_text()
    missing = [p.relative_to(REPO).as_posix() for files in room_files().values() for p in files
               if p.name not in page]
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"
    named = set(re.findall(r"`((?:common|server|client|pybindings|tests|bench|deploy|docs)/[^`\s]*)`",
                           page))
    absent = sorted(n for n in named if not (REPO / n.rstrip("/")).exists())
    assert not absent, f"docs/ARCHITECTURE.md names paths that do not exist: {absent}"
    for folders in ROOMS.values():
        folder = folders[0].removesuffix("/shmlease")
        assert f"`{folder}/`" in page, f"docs/ARCHITECTURE.md has no room {folder}/"


def test_includes_follow_the_one_way_arrows():
    wrong = []
    for room, files in room_files().items():
        for path in files:
            for name in INCLUDE.findall(path.read_text()):
                target = resolve(path, name)
                where = f"{path.relative_to(REPO)} includes \"{name}\""
                if target is None:
                    wrong.append(f"{where}: no such file in the tree")
                    continue
                to = room_of(target)
                if to is None or (to != room and to not in ALLOWED[room]):
                    wrong.append(f"{where} ({to or target.relative_to(REPO)}): not an arrow of {room}")
                elif target.name in WIRE and room not in WIRE_USERS:
                    wrong.append(f"{where}: {room} must not see the wire")
    assert not wrong, "\n".join(wrong)


def test_the_rules_are_not_vacuous():
    # The checks above would pass on an empty tree; make sure they see the real one.
    files = room_files()
    assert all(files[room] for room in ROOMS), {room: len(f) for room, f in files.items()}
    includes = sum(len(INCLUDE.findall(p.read_text())) for f in files.values() for p in f)
    assert includes > 100
    server_session = REPO / "server" / "session.cpp"
    assert room_of(server_session) == "server"
    assert resolve(server_session, "shmlease/codec.hpp") == \
        (REPO / "common/internal/shmlease/codec.hpp").resolve()
    # A public header that included the wire would be caught.
    assert "common/internal" not in ALLOWED["client/public"]
    assert "pybindings" not in WIRE_USERS and "client/cli" not in WIRE_USERS
