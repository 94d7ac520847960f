"""Every fenced code block of README.md and docs/*.md is run against a real daemon, as printed.

The convention (docs/EXAMPLES.md says the same for people writing documents):

- Each Markdown file gets a daemon of its own (private socket and shm prefix, nothing may be left in
  /dev/shm after it stops) and a scratch directory; its blocks run in document order, each in a
  fresh process, so a later block sees the segments and files an earlier one made.
- The scratch directory is the working directory: its top-level entries are links to the
  checkout's (docs/, scripts/, ...), and build/ links to the build tree under test. The
  environment has SHMLEASE_SOCKET set to the daemon's socket, PYTHONPATH at the built package and
  the built CLI first on PATH.
- ```python blocks run with this interpreter (/usr/bin/python3). A block right after the line
  `<!-- example: continues -->` continues the python block before it: both run as one program in
  one interpreter.
- ```sh blocks run with `bash -e -o pipefail`: every command must succeed.
- ```cpp blocks are whole programs (they define main): compiled against the built libshmlease
  and run.
- A block right after `<!-- example: output -->` is the expected stdout of the example before it
  (trailing blanks ignored; `...` in a line matches anything).
- A block that cannot run in a test is marked by the line `<!-- example: not run: REASON -->`
  right before it, and the reason is required.
- Blocks without a language, or in text, json, ini, toml or cmake, are text (synopses, sample
  output, file layouts, configuration fragments): recognized, not run.
- Anything else fails test_every_block_is_run_marked_or_text, which also prints the counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import Daemon, child_env

REPO = Path(__file__).resolve().parents[2]
RUN_LANGS = ("python", "sh", "cpp")
TEXT_LANGS = ("", "text", "json", "ini", "toml", "cmake")
DIRECTIVE = re.compile(r"^\s*<!--\s*example:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)[^`]*$")
TIMEOUT_S = 180


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass
class Block:
    path: str  # relative to the checkout
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    directive: str = ""  # the `<!-- example: ... -->` right before it, if any

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        if not self.directive.startswith("not run"):
            return None
        return self.directive[len("not run"):].lstrip(":").strip()


@dataclass
class Example:
    """One program: a block, with the python blocks that continue it and its expected output."""
    blocks: list[Block]
    expected: Block | None = None

    @property
    def lang(self) -> str:
        return self.blocks[0].lang

    @property
    def where(self) -> str:
        return self.blocks[0].where

    @property
    def code(self) -> str:
        return "\n".join(b.text for b in self.blocks)


@dataclass
class Doc:
    path: str
    examples: list[Example] = field(default_factory=list)
    marked: list[Block] = field(default_factory=list)
    text: list[Block] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_blocks(source: str, path: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the directive on the line before it."""
    lines = source.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        d = DIRECTIVE.match(prev)
        start, body = i, []
        i += 1
        close = re.compile(r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            i += 1
        i += 1  # the closing fence (or the end: an unclosed block runs to the end, as CommonMark)
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n",
                            d.group(1) if d else ""))
    return blocks


def stray_directives(source: str, path: str) -> list[str]:
    """Directives that no block follows (they would silently apply to nothing)."""
    lines = source.split("\n")
    errors = []
    for i, line in enumerate(lines):
        if DIRECTIVE.match(line):
            following = next((l for l in lines[i + 1:] if l.strip()), "")
            if not FENCE.match(following):
                errors.append(f"{path}:{i + 1}: a directive must come right before a block")
    return errors


def classify(blocks: list[Block], path: str, source: str = "") -> Doc:
    doc = Doc(path, errors=stray_directives(source, path))
    last: Example | None = None  # the example an `output` or `continues` block refers to
    for b in blocks:
        if b.directive == "output":
            if last is None or last.expected is not None:
                doc.errors.append(f"{b.where}: an output block must follow an example that has none")
            else:
                last.expected = b
            continue
        if b.directive.startswith("not run"):
            if not b.not_run_reason:
                doc.errors.append(f"{b.where}: 'not run' needs a reason: "
                                  "<!-- example: not run: WHY -->")
            doc.marked.append(b)
            continue
        if b.directive == "continues":
            if b.lang != "python" or last is None or last.lang != "python":
                doc.errors.append(f"{b.where}: only a python block continues, and only the "
                                  "python block before it")
            else:
                last.blocks.append(b)
            continue
        if b.directive:
            doc.errors.append(f"{b.where}: unknown directive '{b.directive}' (continues, output, "
                              "not run: WHY)")
            continue
        if b.lang in TEXT_LANGS:
            doc.text.append(b)
            continue
        if b.lang not in RUN_LANGS:
            doc.errors.append(f"{b.where}: a ```{b.lang} block is neither run nor text: "
                              "mark it <!-- example: not run: WHY --> or teach test_docs.py")
            continue
        if b.lang == "cpp" and not re.search(r"\bint\s+main\s*\(", b.text):
            doc.errors.append(f"{b.where}: a cpp block must be a whole program (with main) or "
                              "be marked <!-- example: not run: WHY -->")
            continue
        last = Example([b])
        doc.examples.append(last)
    return doc


def load_docs() -> list[Doc]:
    docs = []
    for p in doc_files():
        source, path = p.read_text(), str(p.relative_to(REPO))
        docs.append(classify(parse_blocks(source, path), path, source))
    return docs


def output_matches(expected: str, actual: str) -> bool:
    exp = expected.rstrip("\n").split("\n")
    act = actual.rstrip("\n").split("\n")
    if len(exp) != len(act):
        return False
    for e, a in zip(exp, act):
        pattern = ".*".join(re.escape(part) for part in e.rstrip().split("..."))
        if not re.fullmatch(pattern, a.rstrip()):
            return False
    return True


# --- where and how an example runs ---

def build_dir() -> Path:
    path = os.environ.get("SHMLEASE_BUILD_DIR")
    if not path or not Path(path, "CMakeCache.txt").is_file():
        pytest.fail("set SHMLEASE_BUILD_DIR to the build tree (ctest does)", pytrace=False)
    return Path(path)


def cli_binary() -> str:
    path = os.environ.get("SHMLEASE_CLI") or str(build_dir() / "client" / "shmlease")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no shmlease CLI at {path} (set SHMLEASE_CLI)", pytrace=False)
    return path


class Sandbox:
    """The daemon and scratch directory a document's examples share, in document order."""

    def __init__(self) -> None:
        self.daemon = Daemon()
        self.dir = Path(tempfile.mkdtemp(prefix="shmlease-docs-"))
        self.scripts = self.dir / ".examples"
        self.scripts.mkdir()
        for entry in REPO.iterdir():
            if entry.name != ".git" and not entry.name.startswith("build"):
                (self.dir / entry.name).symlink_to(entry)
        (self.dir / "build").symlink_to(build_dir())

    def env(self) -> dict[str, str]:
        env = child_env(self.daemon)
        env["PATH"] = os.path.dirname(cli_binary()) + os.pathsep + env.get("PATH", "")
        return env

    def close(self) -> None:
        try:
            self.daemon.close_and_check()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def script_name(example: Example, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", example.where) + suffix


def run_example(example: Example, box: Sandbox) -> subprocess.CompletedProcess:
    """Runs one example in the sandbox; returns its result (stdout and stderr captured)."""
    env = box.env()
    run = dict(cwd=box.dir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if example.lang == "python":
        script = box.scripts / script_name(example, ".py")
        script.write_text(example.code)
        return subprocess.run([sys.executable, str(script)], **run)
    if example.lang == "sh":
        script = box.scripts / script_name(example, ".sh")
        script.write_text(example.code)
        return subprocess.run(["bash", "-e", "-o", "pipefail", str(script)], **run)
    assert example.lang == "cpp", example.lang
    source = box.scripts / script_name(example, ".cpp")
    source.write_text(example.code)
    exe = source.with_suffix("")
    cxx = os.environ.get("SHMLEASE_DOCS_CXX", "c++")
    command = [cxx, *shlex.split(os.environ.get("SHMLEASE_DOCS_CXXFLAGS", "-std=c++20")),
               str(source), "-o", str(exe), *shlex.split(os.environ.get("SHMLEASE_DOCS_LIBS", ""))]
    built = subprocess.run(command, **run)
    if built.returncode != 0:
        built.stderr = f"compiling failed: {shlex.join(command)}\n{built.stderr}"
        return built
    return subprocess.run([str(exe)], **run)


def check_example(example: Example, box: Sandbox) -> None:
    result = run_example(example, box)
    shown = (f"--- the example ({example.lang}, {example.where}):\n{example.code}"
             f"--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}")
    assert result.returncode == 0, f"{example.where} exited with {result.returncode}\n{shown}"
    if example.expected is not None:
        assert output_matches(example.expected.text, result.stdout), (
            f"{example.where}: the output differs from {example.expected.where}:\n"
            f"--- expected:\n{example.expected.text}{shown}")


# --- huge pages: CLI.md creates a segment with --huge, which needs free huge pages ---

HUGE_SYSCTL = "/proc/sys/vm/nr_hugepages"
HUGE_LOCK = os.path.join(tempfile.gettempdir(), "shmlease-nr_hugepages.lock")  # as the other tests
HUGE_PAGES = 48


def free_huge_pages() -> int:
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    return values.get("HugePages_Free", 0) - values.get("HugePages_Rsvd", 0)


@contextlib.contextmanager
def huge_pages(n: int):
    """At least n free huge pages while the examples run (as root: raised, then restored)."""
    with open(HUGE_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if free_huge_pages() >= n:
            yield
            return
        with open(HUGE_SYSCTL) as f:
            previous = int(f.read())
        try:
            with open(HUGE_SYSCTL, "w") as f:
                f.write(str(previous + n - free_huge_pages()))
        except OSError as e:
            pytest.fail(f"the examples need {n} free huge pages and {HUGE_SYSCTL} could not be "
                        f"raised ({e}): run as root, or reserve them first", pytrace=False)
        try:
            yield
        finally:
            with open(HUGE_SYSCTL, "w") as f:
                f.write(str(previous))


# --- the tests ---

DOCS = load_docs()
EXAMPLES = [(doc.path, ex) for doc in DOCS for ex in doc.examples]


@pytest.fixture(scope="module")
def sandboxes():
    boxes: dict[str, Sandbox] = {}
    with huge_pages(HUGE_PAGES):

        def get(path: str) -> Sandbox:
            if path not in boxes:
                boxes[path] = Sandbox()
            return boxes[path]

        yield get
        for box in boxes.values():
            box.close()


@pytest.mark.parametrize("path,example", EXAMPLES, ids=[ex.where for _, ex in EXAMPLES])
def test_example(sandboxes, path, example):
    check_example(example, sandboxes(path))


def test_every_block_is_run_marked_or_text(capsys):
    ran = sum(len(ex.blocks) for d in DOCS for ex in d.examples)
    by_lang = {lang: sum(len(ex.blocks) for d in DOCS for ex in d.examples if ex.lang == lang)
               for lang in RUN_LANGS}
    marked = [b for d in DOCS for b in d.marked]
    text = sum(len(d.text) for d in DOCS)
    outputs = sum(ex.expected is not None for d in DOCS for ex in d.examples)
    lines = [f"doc examples: {ran} blocks run ("
             + ", ".join(f"{n} {lang}" for lang, n in by_lang.items())
             + f"; {outputs} with their output checked), {len(marked)} marked not run, "
             f"{text} text blocks, in {len(DOCS)} files"]
    lines += [f"  not run: {b.where} ({b.lang}): {b.not_run_reason}" for b in marked]
    with capsys.disabled():
        print("\n" + "\n".join(lines), flush=True)
    errors = [e for d in DOCS for e in d.errors]
    assert not errors, "\n".join(errors)
    assert by_lang["python"] and by_lang["sh"] and by_lang["cpp"], by_lang


# --- the harness itself: each rule above, and that a broken example is caught ---

SAMPLE = """\
# Sample

```python
x = 41
```
<!-- example: continues -->
```python
print(x + 1)
```
<!-- example: output -->
```text
42
```

<!-- example: not run: it restarts the machine -->
```sh
sudo reboot
```

```json
{"a": 1}
```

  ```sh
  shmlease ping
  ```
"""


def test_parser_applies_each_directive():
    doc = classify(parse_blocks(SAMPLE, "S.md"), "S.md", SAMPLE)
    assert doc.errors == []
    assert [ex.where for ex in doc.examples] == ["S.md:3", "S.md:24"]
    first = doc.examples[0]
    assert first.code == "x = 41\n\nprint(x + 1)\n"
    assert first.expected is not None and first.expected.text == "42\n"
    assert doc.examples[1].code == "shmlease ping\n"  # the list's indentation is not part of it
    assert [(b.where, b.not_run_reason) for b in doc.marked] == [("S.md:16", "it restarts the machine")]
    assert [b.lang for b in doc.text] == ["json"]


@pytest.mark.parametrize("source,error", [
    ("<!-- example: not run -->\n```sh\nx\n```\n", "needs a reason"),
    ("<!-- example: not run:   -->\n```sh\nx\n```\n", "needs a reason"),
    ("```bash\nx\n```\n", "neither run nor text"),
    ("```cpp\nint f() { return 1; }\n```\n", "whole program"),
    ("<!-- example: continues -->\n```python\nx\n```\n", "only a python block continues"),
    ("```sh\nx\n```\n<!-- example: continues -->\n```python\nx\n```\n", "only a python block"),
    ("<!-- example: output -->\n```\n42\n```\n", "must follow an example"),
    ("```sh\nx\n```\n<!-- example: output -->\n```\n1\n```\n<!-- example: output -->\n```\n2\n```\n",
     "must follow an example that has none"),
    ("<!-- example: skip -->\n```sh\nx\n```\n", "unknown directive"),
    ("<!-- example: not run: a reason -->\nSome text.\n\n```sh\nx\n```\n", "right before a block"),
])
def test_parser_refuses_what_breaks_the_rules(source, error):
    doc = classify(parse_blocks(source, "S.md"), "S.md", source)
    assert len(doc.errors) == 1 and error in doc.errors[0], doc.errors


def test_output_matching():
    assert output_matches("42\n", "42\n")
    assert output_matches("a: ...\nb\n", "a: 17 us   \nb\n\n")
    assert not output_matches("42\n", "43\n")
    assert not output_matches("42\n", "42\n43\n")
    assert not output_matches("a: ...\n", "b: 1\n")


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def one_example(source: str) -> Example:
    doc = classify(parse_blocks(source, "S.md"), "S.md")
    assert doc.errors == [] and len(doc.examples) == 1, doc
    return doc.examples[0]


@pytest.mark.parametrize("source,message", [
    ("```python\nraise SystemExit(3)\n```\n", "exited with 3"),
    ("```python\nprint('41')\n```\n<!-- example: output -->\n```\n42\n```\n", "output differs"),
    ("```sh\nfalse\necho after\n```\n", "exited with 1"),  # -e: a failing line fails the block
    ("```sh\nshmlease stat no-such-segment | cat\n```\n", "exited with 3"),  # pipefail
    ("```cpp\nint main() { return 4; }\n```\n", "exited with 4"),
    ("```cpp\nint main() { undeclared(); }\n```\n", "compiling failed"),
])
def test_a_broken_example_fails(sandbox, source, message):
    with pytest.raises(AssertionError, match=message):
        check_example(one_example(source), sandbox)


def test_examples_see_the_daemon_the_cli_the_module_and_the_build(sandbox):
    code = ("```sh\nshmlease create seen 4096\ntest -x build/client/shmlease\n"
            "test -f docs/CLI.md\n/usr/bin/python3 -c 'import shmlease; shmlease.connect().stat(\"seen\")'\n"
            "shmlease rm seen\n```\n")
    check_example(one_example(code), sandbox)
    assert sandbox.daemon.shm_objects() == []
