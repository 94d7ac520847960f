"""Tables and plots of the benchmark report: results (the dict bench/report.py collects, also saved as
results.json next to the plots) in, Markdown sections and PNG files out. No benchmark runs here, so
the smoke test (ctest bench.report_smoke) and `bench/report.py --from-json` can call it alone.

Every function that draws takes the directory to write into and returns the file's name; every
section is a Markdown string without its markers (bench/report.py places them)."""

from __future__ import annotations

import math
import os
import re
import textwrap

import matplotlib

matplotlib.use("Agg")  # no display: PNG files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

# One colour per transport, the same in every plot.
COLORS = {"shmlease": "#1f77b4", "shared_memory": "#ff7f0e", "mp_queue": "#d62728",
          "futex": "#2ca02c", "unix_socket": "#9467bd", "epoll_echo": "#555555"}
LABELS = {"shmlease": "shmlease channel", "futex": "raw futex ping-pong (one-way half)",
          "unix_socket": "Unix socket (SOCK_STREAM) carrying the bytes",
          "mp_queue": "multiprocessing.Queue (bytes)"}


_UNIT = re.compile(r"(\d) (B|KiB|MiB|GiB|ns|µs|ms|s|min|%)(?=[\s,;.:)]|$)")


def reflow(text: str, width: int = 100) -> str:
    """Re-wraps the prose paragraphs and list items of generated Markdown (the f-strings below
    break lines wherever the substituted values leave them); tables, code, images and HTML are
    left alone."""
    blocks = []
    for block in text.strip("\n").split("\n\n"):
        first = block.lstrip()[:1]
        if first in ("|", "`", "!", "<", "#"):
            blocks.append(block)
            continue
        items, current = [], []
        for line in block.splitlines():
            if line.startswith("- ") and current:
                items.append(current)
                current = []
            current.append(line.strip())
        items.append(current)
        out = []
        for item in items:
            # A number and its unit stay on one line (kept together through the wrapping).
            joined = _UNIT.sub("\\1\x00\\2", " ".join(item))
            indent = "  " if joined.startswith("- ") else ""
            out.append(textwrap.fill(joined, width, subsequent_indent=indent,
                                     break_long_words=False,
                                     break_on_hyphens=False).replace("\x00", " "))
        blocks.append("\n".join(out))
    return "\n\n".join(blocks) + "\n"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if x >= 100:
        return f"{x:,.0f}×"
    if x >= 10:
        return f"{x:.1f}×"
    return f"{x:.2f}×"


def _time_label(s: float, _pos=None) -> str:
    if s <= 0:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale * 0.999:
            return f"{s / scale:g} {unit}"
    return f"{s:g} s"


def _log_axes(ax, xlabel: str, ylabel: str, time_axis: bool = True) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_bytes(v)))
    if time_axis:
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(FuncFormatter(_time_label))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.1)


def _size_ticks(ax, sizes: list[int]) -> None:
    # At most ~10 labelled sizes, every second one when there are more.
    step = 1 if len(sizes) <= 10 else 2
    ax.set_xticks(sizes[::step])
    ax.xaxis.set_minor_formatter(NullFormatter())
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def _save(fig, img_dir: str, name: str, machine_line: str) -> str:
    fig.text(0.01, 0.005, machine_line, fontsize=7, color="#666666", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    os.makedirs(img_dir, exist_ok=True)
    fig.savefig(os.path.join(img_dir, name), dpi=110)
    plt.close(fig)
    return name


def machine_line(machine: dict) -> str:
    return (f"{machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, "
            f"load {machine.get('load_start', ['?'])[0]} at start; {machine.get('date', '')}")


# --- attach time against size ---

def attach_plot(data: dict, img_dir: str, machine: dict) -> str:
    rows = data["rows"]
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    series = [("shmlease_s", "shmlease: lease + np.asarray", "shmlease", "-", "o"),
              ("shared_memory_s", "shared_memory: SharedMemory(name) + np.ndarray",
               "shared_memory", "-", "s"),
              ("mp_queue_s", "multiprocessing.Queue: put → get of the array", "mp_queue", "-", "^"),
              ("shmlease_touch_s", "shmlease + touch every page", "shmlease", "--", "o"),
              ("shared_memory_touch_s", "shared_memory + touch every page", "shared_memory", "--",
               "s")]
    for key, label, color, style, marker in series:
        pts = [(r["size"], r[key]) for r in rows if r.get(key)]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, color=COLORS[color],
                label=label, markersize=4, alpha=1.0 if style == "-" else 0.7)
    _log_axes(ax, "array size (float32, bytes)", "time in the receiving process (log)")
    _size_ticks(ax, sizes)
    ax.set_title("Getting an existing array into a new process: attach time against size")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, img_dir, "attach_vs_size.png", machine_line(machine))


def attach_section(data: dict, img: str, img_rel: str) -> tuple[str, dict]:
    rows = data["rows"]
    queue_max = data.get("queue_max_bytes")
    lines = [
        "| size | shmlease attach | shared_memory attach | Queue transfer | Queue / shmlease | "
        "shmlease + touch | shared_memory + touch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        q = r.get("mp_queue_s")
        lines.append(f"| {fmt_bytes(r['size'])} | {fmt_seconds(r['shmlease_s'])} | "
                     f"{fmt_seconds(r['shared_memory_s'])} | {fmt_seconds(q)} | "
                     f"{fmt_ratio(q / r['shmlease_s'] if q else None)} | "
                     f"{fmt_seconds(r['shmlease_touch_s'])} | "
                     f"{fmt_seconds(r['shared_memory_touch_s'])} |")
    first, last = rows[0], rows[-1]
    with_queue = [r for r in rows if r.get("mp_queue_s")]
    key = {
        "attach_flatness": last["shmlease_s"] / first["shmlease_s"],
        "attach_largest": last["size"],
        "attach_smallest": first["size"],
        "shm_vs_shmlease_largest": last["shared_memory_s"] / last["shmlease_s"],
    }
    if with_queue:
        qr = with_queue[-1]
        key["queue_vs_shmlease"] = qr["mp_queue_s"] / qr["shmlease_s"]
        key["queue_size"] = qr["size"]
    text = f"""## Attach time against size

![Attach time against size]({img_rel}/{img})

A process that already holds the data (every page filled) and a freshly spawned Python process
that wants it as a numpy array: how long until the array is usable there
(`bench/python/attach_sweep.py`).
- **shmlease**: `client.lease(name)` + `np.asarray(lease)`, the first lease of that segment in
  the process (connected, and one other segment leased, before the clock starts).
- **shared_memory**: `multiprocessing.shared_memory.SharedMemory(name=...)` +
  `np.ndarray(buffer=shm.buf)`.
- **Queue**: the parent `put()`s the array, the clock stops when `get()` returns in a child that
  was already waiting (pickle, pipe, unpickle). Only up to {fmt_bytes(queue_max or 0)}: it grows
  linearly with the size, a GiB takes tens of seconds.
- **+ touch**: the attach, then one float read per 4 KiB page, so every page is mapped into the
  new process: what a consumer that reads the whole array pays on top of the attach.

Medians over {data.get("runs")} fresh processes for each method (sizes ascending in half of them,
descending in the others), one transfer (three up to 16 MiB) for the Queue.

{chr(10).join(lines)}

How to read it: attaching maps the pages without touching them, so for both shared-memory
methods the time does not depend on the size ({fmt_bytes(first["size"])} → {fmt_bytes(last["size"])}:
**{fmt_ratio(key["attach_flatness"])}** for shmlease). shmlease pays one round trip to the daemon
(and a descriptor passed with `SCM_RIGHTS`) where `SharedMemory` pays `shm_open`; in exchange the
array has its dtype and shape, a lease the daemon counts, and no way to outlive its mapping. The
Queue copies every byte twice and pickles it:"""
    if with_queue:
        text += (f" at {fmt_bytes(key['queue_size'])} it is **{fmt_ratio(key['queue_vs_shmlease'])}"
                 f"** the shmlease attach.")
    text += (" Touching every page costs a page fault per 4 KiB (or per fault-around block) whatever "
             "the method: that is the price of a *fresh* mapping, which is why a `Client` keeps "
             "its mappings and why huge pages help (section below).")
    return text, key


# --- frame hand-off latency against frame size ---

def handoff_rows(handoff: dict, queue: dict | None) -> dict[str, dict[int, dict]]:
    by: dict[str, dict[int, dict]] = {}
    for source in (handoff, queue or {"rows": []}):
        for r in source["rows"]:
            by.setdefault(r["transport"], {})[r["size"]] = r["stats"]
    return by


def handoff_plot(handoff: dict, queue: dict | None, img_dir: str, machine: dict) -> str:
    by = handoff_rows(handoff, queue)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    markers = {"shmlease": "o", "futex": "D", "unix_socket": "v", "mp_queue": "^"}
    sizes = sorted({s for t in by.values() for s in t})
    for transport in ("shmlease", "futex", "unix_socket", "mp_queue"):
        pts = sorted(by.get(transport, {}).items())
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1]["p50_us"] * 1e-6 for p in pts], "-", marker=markers[transport],
                color=COLORS[transport], label=f"{LABELS[transport]}, p50", markersize=4)
        ax.plot(xs, [p[1]["p99_us"] * 1e-6 for p in pts], ":", color=COLORS[transport],
                alpha=0.6)
    ax.plot([], [], ":", color="#777777", label="dotted: p99 of the same colour")
    _log_axes(ax, "frame size (bytes)", "one-way latency, writer → reader holds the frame (log)")
    _size_ticks(ax, sizes)
    ax.set_title("Frame hand-off latency against frame size (blocked reader, another process)")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, img_dir, "handoff_vs_size.png", machine_line(machine))


def handoff_section(handoff: dict, queue: dict | None, img: str, img_rel: str) -> tuple[str, dict]:
    by = handoff_rows(handoff, queue)
    sizes = sorted(by.get("shmlease", {}))
    lines = [
        "| frame | shmlease p50 / p99 | futex p50 / p99 | Unix socket p50 / p99 | "
        "Queue p50 / p99 | shmlease / futex | socket / shmlease | Queue / shmlease |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pair(t: str, s: int) -> str:
        st = by.get(t, {}).get(s)
        return f"{_us(st['p50_us'])} / {_us(st['p99_us'])}" if st else "–"

    def ratio(a: str, b: str, s: int) -> float | None:
        x, y = by.get(a, {}).get(s), by.get(b, {}).get(s)
        return x["p50_us"] / y["p50_us"] if x and y else None

    for s in sizes:
        lines.append(f"| {fmt_bytes(s)} | {pair('shmlease', s)} | {pair('futex', s)} | "
                     f"{pair('unix_socket', s)} | {pair('mp_queue', s)} | "
                     f"{fmt_ratio(ratio('shmlease', 'futex', s))} | "
                     f"{fmt_ratio(ratio('unix_socket', 'shmlease', s))} | "
                     f"{fmt_ratio(ratio('mp_queue', 'shmlease', s))} |")
    small, big = sizes[0], sizes[-1]
    key = {"small": small, "big": big,
           "shmlease_vs_futex_small": ratio("shmlease", "futex", small),
           "shmlease_vs_futex_big": ratio("shmlease", "futex", big),
           "shmlease_big_vs_small": by["shmlease"][big]["p50_us"] / by["shmlease"][small]["p50_us"],
           "socket_vs_shmlease_big": ratio("unix_socket", "shmlease", big),
           "queue_vs_shmlease_big": ratio("mp_queue", "shmlease", big)}
    qn = f", {queue.get('big_iterations')} from 1 MiB up" if queue else ""
    text = f"""## Frame hand-off latency against frame size

![Hand-off latency against frame size]({img_rel}/{img})

One-way latency of handing one frame from a writer process to a reader process that is asleep
waiting for it: the writer takes a `CLOCK_MONOTONIC` stamp just before the hand-off, the reader
one once it holds the whole frame; the reader then acknowledges, and the writer waits for that and
sleeps {handoff.get("gap_us")} µs before the next frame, so no frame ever queues behind another.
{handoff.get("iterations")} frames per size and transport, taken in {handoff.get("rounds", 1)} rounds that
alternate the three C++ transports, so a burst of load from elsewhere hits them alike
(`bench/handoff_bench.cpp`); the Queue ({queue.get("iterations") if queue else "–"} frames{qn})
runs after them (`bench/python/queue_handoff.py`).
- **shmlease channel**: `Writer::Publish` of a claimed slot → `Reader::Next` returns in the
  blocked reader (4 slots, block policy). The bytes are not copied: the reader maps the slot.
- **raw futex ping-pong**: a counter in shared memory, `FUTEX_WAKE` → the `FUTEX_WAIT`er returns:
  the floor for waking a sleeping process, whatever the size (measured again at every size).
- **Unix socket**: the frame's bytes written into a `SOCK_STREAM` socketpair (default buffer
  sizes) and read in full by the reader into a buffer already faulted in.
- **multiprocessing.Queue**: `put(bytes)` → `get()` returns in a spawned child.

{chr(10).join(lines)}

How to read it: a channel hands over a slot, not bytes, so its latency stays at the cost of one
futex wake-up from {fmt_bytes(small)} to {fmt_bytes(big)} ({fmt_ratio(key["shmlease_big_vs_small"])}
from the smallest to the largest frame; {fmt_ratio(key["shmlease_vs_futex_small"])} and
{fmt_ratio(key["shmlease_vs_futex_big"])} the raw futex at those sizes). The socket's and the
Queue's grow with the bytes copied: at {fmt_bytes(big)} the socket takes
**{fmt_ratio(key["socket_vs_shmlease_big"])}** and the Queue **{fmt_ratio(key["queue_vs_shmlease_big"])}**
the channel's time. The p99 column is what a loaded 2-core machine does to a sleeping reader
(its wake-up waits for a CPU): compare p99s only within a row.
"""
    return text, key


def _us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


# --- lease operations per second against the number of clients ---

def scaling_plot(data: dict, img_dir: str, machine: dict) -> str:
    rows = data["rows"]
    xs = [r["clients"] for r in rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6.2), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.3]})
    ax.plot(xs, [r["epoll_echo_ops_per_s"] for r in rows], "-s", color=COLORS["epoll_echo"],
            label="raw epoll echo server, same message sizes (ceiling)", markersize=4)
    ax.plot(xs, [r["shmlease_ops_per_s"] for r in rows], "-o", color=COLORS["shmlease"],
            label="shmleased: acquire + release (read lease)", markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / 1000:g}k"))
    ax.set_ylabel("operations per second, all clients")
    ax.set_title("Lease operations per second against the number of clients")
    ax.grid(True, alpha=0.35)
    ax.legend(fontsize=8, loc="lower right")
    ratios = [r["shmlease_ops_per_s"] / r["epoll_echo_ops_per_s"] for r in rows]
    ax2.plot(xs, ratios, "-o", color=COLORS["shmlease"], markersize=4)
    ax2.axhline(1.0, color="#999999", lw=0.8, ls="--")
    ax2.set_ylim(0, max(1.05, max(ratios) * 1.15))
    ax2.set_ylabel("shmlease / epoll")
    ax2.set_xlabel("clients (threads, one connection each, one request in flight each)")
    ax2.set_xticks(xs)
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax2.grid(True, alpha=0.35)
    return _save(fig, img_dir, "lease_scaling.png", machine_line(machine))


def scaling_section(data: dict, img: str, img_rel: str) -> tuple[str, dict]:
    rows = data["rows"]
    lines = ["| clients | shmlease ops/s (runs: min–max) | epoll echo ops/s (runs: min–max) | "
             "shmlease / epoll |",
             "|---:|---:|---:|---:|"]

    def spread(runs: list[float] | None) -> str:
        return f" ({min(runs) / 1000:.1f}k–{max(runs) / 1000:.1f}k)" if runs and len(runs) > 1 else ""

    for r in rows:
        lines.append(f"| {r['clients']} | {r['shmlease_ops_per_s']:,.0f}"
                     f"{spread(r.get('shmlease_runs'))} | {r['epoll_echo_ops_per_s']:,.0f}"
                     f"{spread(r.get('epoll_echo_runs'))} | "
                     f"{fmt_ratio(r['shmlease_ops_per_s'] / r['epoll_echo_ops_per_s'])} |")
    best = max(rows, key=lambda r: r["shmlease_ops_per_s"])
    key = {"first_clients": rows[0]["clients"], "last_clients": rows[-1]["clients"],
           "ratio_first": rows[0]["shmlease_ops_per_s"] / rows[0]["epoll_echo_ops_per_s"],
           "ratio_last": rows[-1]["shmlease_ops_per_s"] / rows[-1]["epoll_echo_ops_per_s"],
           "peak_shmlease": best["shmlease_ops_per_s"], "peak_clients": best["clients"],
           "peak_epoll": max(r["epoll_echo_ops_per_s"] for r in rows)}
    text = f"""## Lease operations per second against the number of clients

![Lease operations per second against clients]({img_rel}/{img})

N client threads in one process, each with its own connection, loop `Acquire(name, kRead)` +
`Release()` of one already-mapped segment against one `shmleased` (`bench/lease_scaling_bench.cpp`).
The ceiling, in the same run with the same client counts, is a raw echo server: one thread, epoll,
in a process of its own, answering the same message pattern: a {data.get("request_bytes")}-byte
request (an acquire's size) with a {data.get("reply_bytes")}-byte reply (an acquire reply's size),
then a {data.get("oneway_bytes")}-byte one-way message (a release's size), one request in flight
per client. The client threads of the ceiling do blocking `write`/`read`s and nothing else.
Medians of {data.get("repeats")} runs of {data.get("seconds_per_run")} s per point, the two
alternated.

{chr(10).join(lines)}

How to read it: the ratio is what the daemon's protocol handling, lease table and the client
library cost against bare socket I/O on the same machine: {fmt_ratio(key["ratio_first"])} with
{key["first_clients"]} client, {fmt_ratio(key["ratio_last"])} with {key["last_clients"]}. On a 2-core
machine both curves flatten once the clients keep both cores busy; the clients run on the same
cores as the server, so neither curve is a server-only throughput. Where the runs' ranges of the
two overlap, the difference between them is the machine's noise, not the daemon's.
"""
    return text, key


# --- the channel_bench table (issues 4 and 13: raw baselines and iceoryx) ---

# Issue 13's targets for the ratios channel_bench prints (after the channel redesign).
CHANNEL_TARGETS = [
    ("shmlease_blocked_vs_raw_futex", "blocked hand-off / raw futex", "≤ 1.3×", 1.3, False),
    ("shmlease_poll_vs_raw_spin", "busy-poll / raw spin", "≤ 1.5×", 1.5, False),
    ("shmlease_blocked_8MiB_vs_64B", "8 MiB / 64 B, blocked reader", "≤ 1.10× (within 10 %)",
     1.1, False),
    ("shmlease_poll_8MiB_vs_64B", "8 MiB / 64 B, busy-poll", "≤ 1.10× (within 10 %)", 1.1, False),
    ("iceoryx_vs_shmlease_blocked_64B", "iceoryx WaitSet / shmlease blocked, 64 B", "≥ 2.5×",
     2.5, True),
    ("iceoryx_vs_shmlease_blocked_8MiB", "iceoryx WaitSet / shmlease blocked, 8 MiB", "≥ 2.5×",
     2.5, True),
    ("iceoryx_vs_shmlease_poll_64B", "iceoryx busy-poll / shmlease busy-poll, 64 B", "≥ 2.5×",
     2.5, True),
    ("iceoryx_vs_shmlease_poll_8MiB", "iceoryx busy-poll / shmlease busy-poll, 8 MiB", "≥ 2.5×",
     2.5, True),
]


def _loads(values: list | None) -> str:
    return ", ".join("–" if x is None else f"{x:.2f}" for x in values) if values else "unknown"


def channel_key(data: dict) -> dict | None:
    """The channel figures the report's header quotes, or None for a run without them."""
    v = data.get("values", {})
    res, ratios = v.get("results"), v.get("ratios", {})
    if not res:
        return None

    def p50(key: str) -> float | None:
        return res[key]["p50_us"] if res.get(key) else None

    return {"blocked": p50("shmlease_blocked_64B"), "futex": p50("raw_futex"),
            "poll": p50("shmlease_poll_64B"), "spin": p50("raw_spin"),
            "iox_waitset": p50("iceoryx_waitset_64B"), "iox_poll": p50("iceoryx_poll_64B"),
            **ratios}


def channel_section(data: dict) -> str:
    table = "\n".join(data["table"])
    v = data.get("values", {})
    if "results" not in v:  # a results.json from before the iceoryx peer
        return f"""## Frame channels (`bench/channel_bench.cpp`)

`build/bench/channel_bench {data.get("iterations")}`, one run in the report's run.

{table}
"""
    res, ratios, ice = v["results"], v.get("ratios", {}), v.get("iceoryx", {})
    cpus = v.get("cpus", {})
    verdicts = ["| ratio (p50) | this run | issue 13's target | met |", "|---|---:|---|---|"]
    for key, what, target, limit, at_least in CHANNEL_TARGETS:
        x = ratios.get(key)
        met = "–" if x is None else ("yes" if (x >= limit if at_least else x <= limit) else "**no**")
        verdicts.append(f"| {what} | {fmt_ratio(x)} | {target} | {met} |")
    lost = {k: r["lost"] for k, r in res.items() if r and r.get("lost")}
    lost_text = ", ".join(f"{k.replace('_', ' ')}: {n}" for k, n in lost.items()) or "none"
    if ice.get("built") and not ice.get("error"):
        ice_text = (f"iceoryx {ice.get('version')} from Debian (packages `iceoryx`, "
                    f"`libiceoryx-posh-dev`), its own `iox-roudi` started by the benchmark with a "
                    f"generated config whose mempools hold 64 B × 1000 and 8 MiB × 16 chunks (each "
                    f"the payload plus iceoryx's chunk header), monitoring off. Like the shmlease "
                    f"channel (4 slots, block policy) the subscriber's queue holds 4 frames and a "
                    f"full queue makes the publisher wait (`BLOCK_PRODUCER`, `WAIT_FOR_CONSUMER`): "
                    f"iceoryx's default drops the oldest frames whenever the subscriber is "
                    f"descheduled for longer than its queue covers.")
    elif ice.get("built"):
        ice_text = f"iceoryx was built in but **failed**: {ice.get('error')}"
    else:
        ice_text = (f"**iceoryx not measured**: {ice.get('error') or 'not built'} "
                    "(`./scripts/dev bench` installs the packages).")
    return f"""## Frame channels against raw baselines and iceoryx (`bench/channel_bench.cpp`)

One-way latency (`build/bench/channel_bench {data.get("iterations")} {data.get("rounds", 1)}`):
the writer's `CLOCK_MONOTONIC` stamp just before it hands the frame over → the reader in another
process holds the frame, {v.get("iterations")} frames per row taken in {v.get("rounds")} rounds
that alternate all the rows, {v.get("gap_us")} µs between frames so a reader that sleeps is asleep
when the frame comes. Every contender's writer runs on CPU {cpus.get("writer")} and its reader on
CPU {cpus.get("reader")} (both pinned). **Load average** (1, 5, 15 min) at the start of the step
{_loads(v.get("load_start"))}, at the end {_loads(v.get("load_end"))}.
- **Blocked reader**: shmlease's `Reader::Next` (4 slots, block policy) against a raw
  `FUTEX_WAKE` → `FUTEX_WAIT` hand-off on a shared word (the floor for waking a sleeping process)
  and iceoryx's `UntypedSubscriber` attached to a `WaitSet` (`HAS_DATA`), the publisher
  `loan()`ing a chunk, stamping it and `publish()`ing it.
- **Busy-poll reader**: shmlease's `Reader` with `busy_poll` against a raw spin on a shared word
  and iceoryx's subscriber spinning on `take()`.
- 64 B and 8 MiB frames: neither system copies a frame (the writer writes only its stamp), so the
  size should not matter.
- {ice_text}
- *frames lost*: frames the reader did not see one by one. For the raw baselines, hand-offs the
  reader slept or was descheduled through (it saw the word move on by more than one); shmlease
  and iceoryx, both blocking when full, lose none (it would show here). In this run: {lost_text}.

{table}

{chr(10).join(verdicts)}

How to read it: ratios, not absolute times, are what carry from one run to the next on a shared
2-core VM (the futex floor has been anywhere from 2 µs to 20 µs, with ratios staying put). The
p99 column is the machine: a wake-up that waited for a busy CPU; busy-polling needs a core of its
own and is only meaningful on a quiet machine.

History (runs by hand while building the channels, issue 4): before the reader's spin became
adaptive the blocked hand-off was 2.5-3× the futex baseline; before the reader's fast path (slot
hint next to `published`) busy-poll was 2.35× raw spin. Measured before issue 13 on a quiet Xeon
VM: blocked 2.6 µs vs raw futex 2.1 µs and iceoryx WaitSet 8.0 µs; busy-poll 0.52 µs vs raw spin
0.47 µs and iceoryx 2.3 µs.
"""


# --- the report's header ---

def summary_section(results: dict, keys: dict, images: dict, img_rel: str, command: str) -> str:
    m = results["machine"]
    steps = results.get("steps", [])
    cores = int(m.get("cpus") or os.cpu_count() or 1)
    step_lines = ["| step | took | load average at start → end | result |",
                  "|---|---:|---|---|"]
    noisy_steps = []
    for s in steps:
        again = f" (run again on {s['date']})" if s.get("date") else ""
        noisy = max(s["load_start"], s["load_end"]) > cores
        if noisy:
            noisy_steps.append(s["name"])
        step_lines.append(f"| {s['name']}{again} | {s['seconds']:.0f} s | {s['load_start']:.2f} → "
                          f"{s['load_end']:.2f}{' **noisy**' if noisy else ''} | {s['status']} |")
    bullets = []
    a = keys.get("attach")
    if a:
        if "queue_vs_shmlease" in a:
            bullets.append(f"- Attach an array in another process: multiprocessing.Queue takes "
                           f"**{fmt_ratio(a['queue_vs_shmlease'])}** shmlease's time at "
                           f"{fmt_bytes(a['queue_size'])}; shmlease at {fmt_bytes(a['attach_largest'])} "
                           f"takes {fmt_ratio(a['attach_flatness'])} its time at "
                           f"{fmt_bytes(a['attach_smallest'])}; SharedMemory takes "
                           f"{fmt_ratio(a['shm_vs_shmlease_largest'])} shmlease's time "
                           f"([plot]({img_rel}/{images['attach']})).")
    h = keys.get("handoff")
    if h:
        bullets.append(f"- Hand a frame to a sleeping reader: the channel is "
                       f"{fmt_ratio(h['shmlease_vs_futex_small'])} a raw futex wake-up at "
                       f"{fmt_bytes(h['small'])} and {fmt_ratio(h['shmlease_vs_futex_big'])} at "
                       f"{fmt_bytes(h['big'])}; at {fmt_bytes(h['big'])} a Unix socket takes "
                       f"**{fmt_ratio(h['socket_vs_shmlease_big'])}** and multiprocessing.Queue "
                       f"**{fmt_ratio(h['queue_vs_shmlease_big'])}** the channel's time "
                       f"([plot]({img_rel}/{images['handoff']})).")
    s = keys.get("scaling")
    if s:
        bullets.append(f"- Lease acquire + release: {fmt_ratio(s['ratio_first'])} the ops/s of a raw "
                       f"epoll echo server with the same messages at {s['first_clients']} client, "
                       f"{fmt_ratio(s['ratio_last'])} at {s['last_clients']}; peak "
                       f"{s['peak_shmlease']:,.0f} ops/s ({s['peak_clients']} clients) against "
                       f"{s['peak_epoll']:,.0f} ([plot]({img_rel}/{images['scaling']})).")
    c = channel_key(results["channel"]) if results.get("channel") else None
    if c and c.get("blocked") and c.get("poll"):
        ice = ""
        if c.get("iceoryx_vs_shmlease_blocked_64B") is not None:
            ice = (f"; iceoryx takes **{fmt_ratio(c['iceoryx_vs_shmlease_blocked_64B'])}** "
                   f"shmlease's time with a WaitSet and "
                   f"**{fmt_ratio(c.get('iceoryx_vs_shmlease_poll_64B'))}** busy-polling "
                   f"(issue 13: ≥ 2.5× both)")
        bullets.append(f"- Frame channels, 64 B, p50 one-way: blocked reader {_us(c['blocked'])} = "
                       f"{fmt_ratio(c.get('shmlease_blocked_vs_raw_futex'))} a raw futex "
                       f"wake-up (issue 13: ≤ 1.3×), busy-poll {_us(c['poll'])} = "
                       f"{fmt_ratio(c.get('shmlease_poll_vs_raw_spin'))} a raw spin (≤ 1.5×); "
                       f"8 MiB / 64 B {fmt_ratio(c.get('shmlease_blocked_8MiB_vs_64B'))} blocked, "
                       f"{fmt_ratio(c.get('shmlease_poll_8MiB_vs_64B'))} busy-poll{ice}.")
    p = results.get("pool")
    if p:
        med = p["median_s"]
        bullets.append(f"- A numpy array to a multiprocessing.Pool worker and back (one apply): "
                       f"1 GiB by reference {med['ref_1g'] * 1e6:.0f} µs, "
                       f"{fmt_ratio(p['flat_ratio'])} the time of 4 KiB; pickled by value the "
                       f"same 1 GiB takes **{p['speedup']:,.0f}x** as long "
                       f"({med['plain_1g']:.1f} s)"
                       + (f"; an 8 MiB channel frame by reference {med['ref_frame_8m'] * 1e6:.0f} µs"
                          if "ref_frame_8m" in med else "") + ".")
    quick = " **Quick mode: too few repetitions to quote.**" if results.get("quick") else ""
    run_loads = list(m.get("load_start", [])[:1]) + list(m.get("load_end", [])[:1])
    if noisy_steps or (run_loads and max(run_loads) > cores):
        quick += (f" **Noisy run: the load average exceeded the {cores} cores"
                  + (f" during {', '.join(noisy_steps)}" if noisy_steps else "")
                  + "; do not quote its figures.**")
    loads = [", ".join(f"{x:.2f}" for x in m.get(k, [])) for k in ("load_start", "load_end")]
    machine_text = (
        f"**Machine**: {m.get('cpu')} ({m.get('virtualization')}), {m.get('cpus')} CPUs online "
        f"({m.get('cores_note')}), {m.get('ram')} RAM, Linux {m.get('kernel')}, {m.get('os')}; "
        f"{m.get('compiler')}, {m.get('build_type')} build; Python {m.get('python')}, numpy "
        f"{m.get('numpy')}. Run on {m.get('date')}, taking "
        f"{results.get('total_seconds', 0) / 60:.0f} minutes. **Load average** (1, 5, 15 min) at "
        f"the start {loads[0]}, at the end {loads[1]}; the CPUs were idle "
        f"{m.get('idle_percent', float('nan')):.0f} % of the run (the benchmarks alone leave "
        f"much of it idle: the readers sleep).{quick}")
    return f"""# Benchmarks

Every figure here is a ratio to, or sits next to, a baseline measured in the same run, because the
machines these runs happen on are shared and noisy: absolute times move by tens of percent from one
run to the next, ratios much less. Everything below is written by one command; rerun it rather
than editing numbers by hand:

<!-- example: not run: runs every benchmark for many minutes and rewrites this file -->
```sh
{command}
```

(`--quick` runs everything with few repetitions into the build directory, for trying changes out;
the raw numbers of this run are in [bench/results.json](bench/results.json).)

{machine_text}

Key figures of this run:
{chr(10).join(bullets)}

<details><summary>Steps of this run</summary>

{chr(10).join(step_lines)}

</details>
"""
