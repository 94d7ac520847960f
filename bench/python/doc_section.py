"""Rewrites one benchmark's marked section of a Markdown file (docs/BENCHMARKS.md), keeping the rest."""

from __future__ import annotations


def write_section(path: str, begin: str, end: str, section: str) -> None:
    """Replaces the text between `begin` and `end` in `path` (appends the block if absent)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
