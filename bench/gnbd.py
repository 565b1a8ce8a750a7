#!/usr/bin/env python3
"""bench/gnbd.py: the gnbd rows of the benchmark; writes the "gnbd" section of
bench/RESULTS.md (between its two marker lines), leaving the rest as
bench/run.py wrote it.

Started by bench/gnbd.sh (alone) or bench/run.sh (after run.py), which build
the programs first.  Every run connects to a sink server of its own
(run.py's Sink: the project's cheapest server, so what is measured is the
client) on a Unix socket, and measures for DURATION after a short warm-up:

- 4 KiB random reads, 64 in flight: gnbd's async C API (gnbd-bench), the
  core's aio API (bench-core), libnbd 1.14's (bench-libnbd), gnbd with the
  concurrent writer off, and the same workload from GJS and from Python
  (bench/gnbd-randread.js, .py), callback style;
- 4 KiB random reads one at a time: gnbd_client_pread against the core's
  nbd_pread (gnbd-bench --api gnbd-sync, core-sync);
- 2 MiB sequential writes, 4 in flight: gnbd's async pwrite through its
  GTask writer against the core with its own zero-copy writer (bench-core
  --zero-copy), and the core with no writer.

Runs alternate within a round (ROUNDS rounds); figures are medians, ratios
the medians of the ratios within each round, with the lowest and highest.
Pinned: client (all its threads) and server on one CPU; unpinned: the
scheduler's choice.  Then, pinned, the per-request cost of the async read
path: instructions under callgrind and system calls under strace -f -c, as
(long run - short run) / (request difference), for gnbd and the core's aio.

  python3 bench/gnbd.py [--quick] [--output FILE]
"""
import argparse
import datetime
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as core  # noqa: E402  (run.py: Sink, run_prog, callgrind and strace parsers)

GNBD = os.path.join(core.BIN, "gnbd-bench")
GJS_SCRIPT = os.path.join(HERE, "gnbd-randread.js")
PY_SCRIPT = os.path.join(HERE, "gnbd-randread.py")
GI_ENV = {
    "GI_TYPELIB_PATH": os.path.join(core.BUILD, "introspection"),
    "LD_LIBRARY_PATH": os.path.join(core.BUILD, "gnbd") + ":" + os.path.join(core.BUILD, "libnbd-core"),
}
BEGIN = "<!-- gnbd section: written by bench/gnbd.py; everything up to the end marker is replaced -->"
END = "<!-- end of the gnbd section -->"


class Variant:
    def __init__(self, key, label, argv, env=None):
        self.key, self.label, self.argv, self.env = key, label, argv, env

    def run(self, sock, duration, pin):
        argv = self.argv(sock, duration)
        if pin is not None:
            argv = ["taskset", "-c", str(pin)] + argv
        return core.run_prog(argv, timeout=duration * 10 + 60, env=self.env)


def bench_argv(prog, *extra):
    return lambda sock, d: [prog, "--connect", sock, "--duration", str(d)] + list(extra)


RANDREAD = ["--workload", "randread", "--bs", "4k", "--qd", "64"]
SEQWRITE = ["--workload", "seqwrite", "--bs", "2m", "--qd", "4"]
SYNCREAD = ["--workload", "randread", "--bs", "4k", "--qd", "1"]

# workload label, reference key, variants (the first is the reference)
GROUPS = [
    ("4 KiB random read, 64 in flight", [
        Variant("core", "libnbd-core aio", bench_argv(core.CORE, *RANDREAD)),
        Variant("gnbd", "gnbd async (C)", bench_argv(GNBD, "--api", "gnbd", *RANDREAD)),
        Variant("libnbd", "libnbd 1.14 aio", bench_argv(core.LIBNBD, *RANDREAD)),
        Variant("gnbd-nw", "gnbd async (C), writer off",
                bench_argv(GNBD, "--api", "gnbd", "--no-writer", *RANDREAD)),
        Variant("gjs", "GJS (gnbd-randread.js)",
                lambda s, d: ["gjs", "-m", GJS_SCRIPT, s, str(d), "64", "4096"], GI_ENV),
        Variant("python", "Python (gnbd-randread.py)",
                lambda s, d: ["/usr/bin/python3", PY_SCRIPT, s, str(d), "64", "4096"], GI_ENV),
    ]),
    ("4 KiB random read, one at a time (sync calls)", [
        Variant("core-sync", "libnbd-core nbd_pread", bench_argv(GNBD, "--api", "core-sync", *SYNCREAD)),
        Variant("gnbd-sync", "gnbd_client_pread", bench_argv(GNBD, "--api", "gnbd-sync", *SYNCREAD)),
    ]),
    ("2 MiB sequential write, 4 in flight", [
        Variant("core-zc", "libnbd-core + zero-copy writer",
                bench_argv(core.CORE, "--zero-copy", *SEQWRITE)),
        Variant("gnbd", "gnbd async (C), GTask writer", bench_argv(GNBD, "--api", "gnbd", *SEQWRITE)),
        Variant("core", "libnbd-core, no writer", bench_argv(core.CORE, *SEQWRITE)),
        Variant("gnbd-nw", "gnbd async (C), writer off",
                bench_argv(GNBD, "--api", "gnbd", "--no-writer", *SEQWRITE)),
    ]),
]

# (label, numerator key, denominator key, group index, goal)
AIMS = [
    ("4 KiB random read at 64 in flight: gnbd async / libnbd-core aio", "gnbd", "core", 0, 0.7),
    ("4 KiB random read at 64 in flight: gnbd async / libnbd 1.14 aio", "gnbd", "libnbd", 0, 2.0),
    ("4 KiB random read one at a time: gnbd_client_pread / nbd_pread", "gnbd-sync", "core-sync", 1, 0.8),
    ("2 MiB sequential write at 4 in flight: gnbd's GTask writer / the core's zero-copy writer",
     "gnbd", "core-zc", 2, 0.9),
]


def throughput(pin, rounds, duration):
    """Per group: {key: [ops_s per round]}."""
    out = []
    for label, variants in GROUPS:
        runs = {v.key: [] for v in variants}
        for r in range(rounds):
            for v in variants:
                sink = core.Sink(pin)
                try:
                    res = v.run(sink.path, duration, pin)
                finally:
                    sink.stop()
                runs[v.key].append(float(res["ops_s"]))
            core.log("  %s, round %d: %s" % (label, r + 1, ", ".join(
                "%s %.0f" % (k, runs[k][-1]) for k in runs)))
        out.append(runs)
    return out


def ratio(runs, num, den):
    rs = [a / b for a, b in zip(runs[num], runs[den])]
    return statistics.median(rs), min(rs), max(rs)


def deterministic(pin, short, long_, tmp):
    """Instructions and system calls per request on the async read path."""
    cases = [
        ("gnbd", "gnbd async (C)", [GNBD, "--api", "gnbd"] + RANDREAD),
        ("core", "libnbd-core aio", [core.CORE] + RANDREAD),
    ]
    results = []
    sink = core.Sink(pin)
    taskset = ["taskset", "-c", str(pin)]
    try:
        for key, label, argv in cases:
            base = [argv[0], "--connect", sink.path] + argv[1:]
            res = {"key": key, "label": label}
            tot, funcs = {}, {}
            for n in (short, long_):
                out = os.path.join(tmp, "cg.%s.%d" % (key, n))
                core.run_prog(taskset + ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                         "--trace-children=no"] + base + ["--requests", str(n)],
                              timeout=900, env=core.CALLGRIND_ENV)
                tot[n] = core.callgrind_total(out)
                funcs[n] = core.callgrind_functions(out)
            res["ir"] = (tot[long_] - tot[short]) / (long_ - short)
            diff = {f: (funcs[long_].get(f, 0) - funcs[short].get(f, 0)) / (long_ - short)
                    for f in funcs[long_]}
            res["top"] = sorted(diff.items(), key=lambda kv: -kv[1])[:15]
            by_obj = {}
            for f, v in diff.items():
                m = re.search(r"\[([^]]*)\]$", f)
                obj = re.sub(r"\.so[.\d]*$", "", m.group(1)) if m else "?"
                by_obj[obj] = by_obj.get(obj, 0) + v
            res["by_obj"] = sorted(by_obj.items(), key=lambda kv: -kv[1])
            cnt = {}
            for n in (short, long_):
                out = os.path.join(tmp, "st.%s.%d" % (key, n))
                core.run_prog(taskset + ["strace", "-f", "-c", "-o", out] + base + ["--requests", str(n)],
                              timeout=900)
                cnt[n] = core.strace_counts(out)
            total = {n: cnt[n].get("total", sum(cnt[n].values())) for n in cnt}
            res["sys"] = (total[long_] - total[short]) / (long_ - short)
            res["sys_by"] = [kv for kv in sorted(
                ((c, (cnt[long_].get(c, 0) - cnt[short].get(c, 0)) / (long_ - short))
                 for c in cnt[long_] if c != "total"), key=lambda kv: -kv[1]) if kv[1] >= 0.005]
            core.log("  %-18s %8.0f instructions/request  %6.2f system calls/request" % (
                label, res["ir"], res["sys"]))
            results.append(res)
    finally:
        sink.stop()
    return results


# What a gnbd request costs beyond the core's (checked against the
# callgrind tables this script writes).
WHAT_DOMINATES = (
    "What dominates gnbd's cost beyond the core's: locks (pthread_mutex_lock and unlock, "
    "several per request: the connection's, the writer queue's, the delivery queue's and "
    "result pool's, the core's handle lock, taken by the issuing thread and the I/O thread), "
    "then the allocator (each request's record and its GBytes; the result objects and the "
    "read buffers are reused), then GObject's type checks and references. The 4 KiB copy of "
    "each reply into its buffer (memcpy) is the core's too. System calls stay close to the "
    "core's: the replies of a batch come in one recvfrom on the I/O thread, the caller's main "
    "context is woken once per batch (the write, read and poll above), and the requests the "
    "callbacks issue leave together in one sendmsg from the caller's thread at the end of the "
    "dispatch, without waking the writer task.")


def report(info, sections, det, elapsed):
    o = [BEGIN, "## gnbd: the GObject/GIO layer against libnbd-core and libnbd\n"]
    o.append("Written by `%s` on %s; this part took %.0f s. Load average at its start: %s; at its "
             "end: %s. Machine and versions as above; also %s.\n"
             % (info["command"], info["date"], elapsed, info["load_start"], info["load_end"],
                ", ".join(info["versions"])))
    o.append(
        "Method: every run connects to a sink server of its own on a Unix socket, warms up for a "
        "tenth of the measured time (0.1 s at most), then measures %.2f s; runs alternate within a "
        "round, %d rounds; figures are medians, ratios the medians of the ratios within a round "
        "(lowest, highest). gnbd's async C runs (`bench/gnbd-bench.c`) keep the requests in flight "
        "from the completion callbacks on a GMainLoop, as a GIO program does; each read returns a "
        "new GBytes; each write passes one GBytes made once (never copied). The core and libnbd "
        "runs are `bench/bench.c` (`nbd_aio_*` with `nbd_poll`). The sync rows call "
        "`gnbd_client_pread` and the core's `nbd_pread` one at a time (`gnbd-bench --api gnbd-sync`, "
        "`--api core-sync`). The GJS and Python rows run `bench/gnbd-randread.js` and `.py`: 64 "
        "`pread_async` in flight, each callback calling `pread_finish` and issuing the next. "
        "\"Pinned\": the client with all its threads (gnbd's I/O thread and writer task too) and the "
        "server on CPU %d; \"unpinned\": the scheduler's choice on %d CPUs.\n"
        % (info["duration"], info["rounds"], info["pin_cpu"], os.cpu_count()))

    o.append("### The aims\n")
    for sec in sections:
        for label, num, den, g, goal in AIMS:
            m, lo, hi = ratio(sec["groups"][g], num, den)
            o.append("- %s, %s: **%.2f** (%.2f, %.2f; goal >= %.1f): %s"
                     % (label, sec["pin_label"], m, lo, hi, goal, "met" if m >= goal else "**not met**"))
    o.append("")

    for sec in sections:
        o.append("### Throughput, sink server, %s\n" % sec["pin_label"])
        o.append("| workload | variant | ops/s | MiB/s | / first row | (lowest, highest) |")
        o.append("|---|---|---|---|---|---|")
        for (label, variants), runs in zip(GROUPS, sec["groups"]):
            bs = 2 * 1024 * 1024 if label.startswith("2 MiB") else 4096
            ref = variants[0].key
            for v in variants:
                ops = statistics.median(runs[v.key])
                m, lo, hi = ratio(runs, v.key, ref)
                o.append("| %s | %s | %s | %s | %s | %s |" % (
                    label if v is variants[0] else "", v.label, core.fmt_ops(ops),
                    core.fmt_mib(ops * bs / 1048576),
                    "" if v.key == ref else "**%.2f**" % m,
                    "" if v.key == ref else "%.2f, %.2f" % (lo, hi)))
        o.append("")

    if det:
        o.append("### Per-request cost of the async read path (4 KiB random read, 64 in flight, pinned)\n")
        o.append("Under callgrind (every thread's instructions, `%s`) and `strace -f -c` (every thread's "
                 "system calls), each as (run of %d requests - run of %d) / %d, so that connecting "
                 "and closing cancel out.\n" % (
                     "valgrind --tool=callgrind", info["det_long"], info["det_short"],
                     info["det_long"] - info["det_short"]))
        o.append("| client | instructions / request | by library | system calls / request | by name |")
        o.append("|---|---|---|---|---|")
        for r in det:
            o.append("| %s | %s | %s | %.2f | %s |" % (
                r["label"], core.fmt_ops(r["ir"]),
                ", ".join("%s %s" % (k, core.fmt_ops(v)) for k, v in r["by_obj"][:6] if v >= 1),
                r["sys"], ", ".join("%s %.2f" % kv for kv in r["sys_by"][:6])))
        o.append("")
        g = next((r for r in det if r["key"] == "gnbd"), None)
        if g:
            o.append(WHAT_DOMINATES)
            o.append("")
        for r in det:
            o.append("%s, instructions per request by function (self cost, top 15):\n" % r["label"])
            o.append("| instructions / request | function |")
            o.append("|---|---|")
            for f, v in r["top"]:
                o.append("| %s | `%s` |" % (core.fmt_ops(v), f))
            o.append("")
    o.append(END)
    return "\n".join(o) + "\n"


def write_section(path, text):
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text + rest.split(END, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a short smoke run (1 round, 0.3 s)")
    ap.add_argument("--output", help="default: bench/RESULTS.md, or build-bench/bench/RESULTS-quick.md")
    ap.add_argument("--command", default="bash bench/gnbd.sh", help="what to credit in the report")
    args = ap.parse_args()
    if not args.output:
        args.output = os.path.join(core.BIN, "RESULTS-quick.md") if args.quick else os.path.join(HERE, "RESULTS.md")
    for prog in (GNBD, core.CORE, core.LIBNBD):
        if not os.path.exists(prog):
            sys.exit("gnbd.py: %s is missing (bench/gnbd.sh builds it; libnbd-dev for bench-libnbd)" % prog)

    t_start = time.monotonic()
    pin_cpu = sorted(os.sched_getaffinity(0))[-1]
    duration, rounds = (0.3, 1) if args.quick else (0.6, 3)
    short, long_ = (2000, 6000) if args.quick else (5000, 25000)
    info = {
        "command": args.command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": core.loadavg(),
        "versions": [core.sh("gjs --version"), core.sh("/usr/bin/python3 --version"),
                     "GLib " + core.sh("pkg-config --modversion glib-2.0")],
        "duration": duration, "rounds": rounds, "pin_cpu": pin_cpu,
        "det_short": short, "det_long": long_,
    }
    sections = []
    for pin in (pin_cpu, None):
        pin_label = "pinned to CPU %d" % pin if pin is not None else "unpinned"
        core.log("gnbd: %s (%.0f s so far)" % (pin_label, time.monotonic() - t_start))
        sections.append({"pin_label": pin_label, "groups": throughput(pin, rounds, duration)})
    core.log("gnbd: per-request cost (%.0f s so far)" % (time.monotonic() - t_start))
    tmp = tempfile.mkdtemp(prefix="gnbd-bench-det-")
    try:
        det = deterministic(pin_cpu, short, long_, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_end"] = core.loadavg()
    elapsed = time.monotonic() - t_start
    write_section(args.output, report(info, sections, det, elapsed))
    core.log("gnbd: wrote its section of %s in %.0f s" % (args.output, elapsed))


if __name__ == "__main__":
    main()
