#!/usr/bin/env python3
"""bench/run.py: run the side-by-side benchmark and write bench/RESULTS.md.

Started by bench/run.sh, which builds the programs first.  Everything here
drives three programs of build-bench/bench: bench-core and bench-libnbd (one
source, bench.c, against libnbd-core and against the system's libnbd), the
project's sink-server, and ceiling (a bare socket pump: the transport's own
limit).

Throughput: per workload and configuration, runs of a fixed duration
alternate A B C Z [D], A B C Z [D], ... (A libnbd-core, B libnbd, C
libnbd-core with the concurrent writer, Z libnbd-core with the zero-copy
writer, D the socket pump where it applies); the table shows the median
ops/s and MiB/s of each and the median of the pairwise ratios (A_i/B_i,
C_i/A_i, Z_i/A_i, Z_i/C_i, A_i/D_i of the same round).  Configurations:
the sink server and nbdkit (memory, null) on a Unix socket, pinned and
unpinned; the sink server and nbdkit memory on TCP (127.0.0.1, a free
port); multi-conn (four handles to one export, one thread each).

Deterministic figures (4 KiB reads and writes at 64 in flight, and one
large read and write workload, against the sink server, client and server
pinned to one CPU): instructions per request under callgrind and system
calls per request under strace -f -c, each as (long run - short run) /
(request difference), so set-up and tear-down cancel out.  Where perf
works, also system calls per request at full speed (raw_syscalls:sys_enter),
which strace's slowing cannot distort.

  python3 bench/run.py [--quick] [--output FILE]    (bench/run.sh builds first)
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-bench"))
BIN = os.path.join(BUILD, "bench")
CORE = os.path.join(BIN, "bench-core")
LIBNBD = os.path.join(BIN, "bench-libnbd")
SINK = os.path.join(BIN, "sink-server")
CEILING = os.path.join(BIN, "ceiling")


class W:
    """One workload: what bench.c calls it, the request size, in flight
    (per connection), connections."""

    def __init__(self, label, workload, bs, qd, conns=1):
        self.label, self.workload, self.bs, self.qd, self.conns = label, workload, bs, qd, conns

    def args(self):
        a = ["--workload", self.workload, "--bs", self.bs, "--qd", str(self.qd)]
        return a + (["--conns", str(self.conns)] if self.conns > 1 else [])


WORKLOADS = (
    [W("4 KiB random read, %d in flight" % q, "randread", "4k", q) for q in (1, 16, 64, 256)]
    + [W("4 KiB random write, %d in flight" % q, "randwrite", "4k", q) for q in (1, 16, 64, 256)]
    + [
        W("256 KiB sequential read, 16 in flight", "seqread", "256k", 16),
        W("256 KiB sequential write, 16 in flight", "seqwrite", "256k", 16),
        W("2 MiB sequential read, 4 in flight", "seqread", "2m", 4),
        W("2 MiB sequential write, 4 in flight", "seqwrite", "2m", 4),
        W("4 KiB mixed 70% read / 30% write, 64 in flight", "mixed", "4k", 64),
    ]
)
# nbdkit is the real server a user meets; a few workloads show its effect.
NBDKIT_WORKLOADS = [w for w in WORKLOADS
                    if (w.bs == "4k" and w.qd == 64 and w.workload != "mixed")
                    or (w.bs == "2m" and w.workload == "seqwrite")]
# Where the socket pump runs in the rotation too (sink server only).
CEILING_WORKLOADS = [w for w in WORKLOADS
                     if w.bs != "4k" or (w.qd == 64 and w.workload != "mixed")]

# The main workloads: what TCP runs, and what the full duration is
# kept for (the others, on the Unix socket only, get SHORT_DURATION).
MAIN_WORKLOADS = [w for w in WORKLOADS
                  if (w.bs == "4k" and w.qd == 64)
                  or (w.bs == "256k" and w.workload == "seqread")
                  or (w.bs == "2m" and w.workload in ("seqwrite", "seqread"))]
# Multi-conn: four handles to one export (CAN_MULTI_CONN), one thread each,
# QD in flight on each.
MULTI_CONNS = 4
MULTI_WORKLOADS = [
    W("4 KiB random read, 64 in flight per connection", "randread", "4k", 64, MULTI_CONNS),
    W("4 KiB random write, 64 in flight per connection", "randwrite", "4k", 64, MULTI_CONNS),
    W("256 KiB sequential read, 16 in flight per connection", "seqread", "256k", 16, MULTI_CONNS),
]

TRANSPORTS = ["unix", "tcp"]

VARIANTS = [
    # key, program, extra arguments, label
    ("core", CORE, [], "libnbd-core"),
    ("libnbd", LIBNBD, [], "libnbd"),
    ("writer", CORE, ["--writer"], "libnbd-core + writer"),
    ("zc", CORE, ["--zero-copy"], "libnbd-core + zero-copy writer"),
]
CEILING_VARIANT = ("ceiling", CEILING, [], "socket pump")

# Under valgrind, glibc's memset/memcpy pick `rep stosb`/`rep movsb` for a few
# KiB, and callgrind counts every iteration as an instruction (a 4 KiB
# memset "costs" 4,096).  Vector loops instead, so the count is the work.
CALLGRIND_ENV = {"GLIBC_TUNABLES": "glibc.cpu.x86_rep_stosb_threshold=0x7fffffffffffffff:"
                                   "glibc.cpu.x86_rep_movsb_threshold=0x7fffffffffffffff"}


def log(msg):
    print(msg, flush=True)


def parse_kv(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def run_prog(argv, timeout=60, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=dict(os.environ, **env) if env else None)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
    lines = [l for l in p.stdout.splitlines() if l.startswith("lib=")]
    if not lines:
        raise RuntimeError("%s printed no result" % " ".join(argv))
    return parse_kv(lines[-1])


class Sink:
    """A sink-server of our own, for the runs that --connect to one: on a
    Unix socket, or on 127.0.0.1 at a free port it picks and reports."""

    def __init__(self, cpu, transport="unix"):
        self.dir = tempfile.mkdtemp(prefix="nbd-bench-")
        self.transport = transport
        if transport == "tcp":
            port_file = os.path.join(self.dir, "port")
            argv = [SINK, "--tcp", "127.0.0.1", "--port", "0", "--port-file", port_file]
        else:
            self.path = os.path.join(self.dir, "sock")
            argv = [SINK, "--unix", self.path]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        self.proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 10
        while True:
            if transport == "tcp":
                # Written (by rename) once it listens.
                try:
                    with open(port_file) as f:
                        line = f.read()
                    if line.endswith("\n"):
                        self.path = "127.0.0.1:" + line.strip()
                        break
                except OSError:
                    pass
            else:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.path)
                    break
                except OSError:
                    pass
                finally:
                    s.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sink-server did not start")
            time.sleep(0.01)

    def connect_args(self):
        return ["--transport", self.transport, "--connect", self.path]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- Throughput ------------------------------------------------------------

def run_variant(variant, server, pin, w, duration, transport):
    key, prog, extra, _ = variant
    timeout = duration * 10 + 30
    if key == "ceiling":
        sink = Sink(pin, transport)
        try:
            argv = [prog] + sink.connect_args() + ["--duration", str(duration)] + w.args()
            if pin is not None:
                argv = ["taskset", "-c", str(pin)] + argv
            return run_prog(argv, timeout=timeout)
        finally:
            sink.stop()
    argv = ([prog, "--server", server, "--transport", transport, "--duration", str(duration)]
            + w.args() + extra)
    if pin is not None:
        argv += ["--pin", str(pin)]
    return run_prog(argv, timeout=timeout)


def pair_ratio(num, den):
    return statistics.median(pair_ratios(num, den))


def pair_ratios(num, den):
    return [float(a["ops_s"]) / float(b["ops_s"]) for a, b in zip(num, den)]


def throughput(server, pin, workloads, rounds, durations, variants, transport):
    rows = []
    for w in workloads:
        duration = durations(w)
        vs = list(variants)
        if server == "sink" and w in CEILING_WORKLOADS:
            vs.append(CEILING_VARIANT)
        runs = {v[0]: [] for v in vs}
        for _ in range(rounds):
            for v in vs:
                runs[v[0]].append(run_variant(v, server, pin, w, duration, transport))
        row = {"w": w, "runs": runs, "duration": duration}
        for key in runs:
            row[key + "_ops"] = statistics.median(float(r["ops_s"]) for r in runs[key])
            row[key + "_mib"] = statistics.median(float(r["mib_s"]) for r in runs[key])
        row["ratio"] = pair_ratio(runs["core"], runs["libnbd"])
        row["ratio_range"] = (min(pair_ratios(runs["core"], runs["libnbd"])),
                              max(pair_ratios(runs["core"], runs["libnbd"])))
        if "writer" in runs:
            row["wratio"] = pair_ratio(runs["writer"], runs["core"])
            row["per_writev"] = statistics.median(
                int(r["ops"]) / max(1, int(r["writer_writes"])) for r in runs["writer"])
            # What the copying writer's callback copied, per request: a
            # request's header, and the part of a payload the socket did not
            # take at once (bench.c's ring_send_direct).
            row["copied_per_req"] = statistics.median(
                int(r.get("writer_copied", 0)) / max(1, int(r["ops"])) for r in runs["writer"])
        if "zc" in runs:
            row["zratio"] = pair_ratio(runs["zc"], runs["core"])
            row["zwratio"] = pair_ratio(runs["zc"], runs["writer"])
            row["zc_per_writev"] = statistics.median(
                int(r["ops"]) / max(1, int(r["writer_writes"])) for r in runs["zc"])
        if "ceiling" in runs:
            row["cratio"] = pair_ratio(runs["core"], runs["ceiling"])
        rows.append(row)
        log("  %-52s core %10.0f  libnbd %10.0f  x%.2f%s%s%s" % (
            w.label, row["core_ops"], row["libnbd_ops"], row["ratio"],
            "  writer x%.2f" % row["wratio"] if "wratio" in row else "",
            "  zero-copy x%.2f" % row["zratio"] if "zratio" in row else "",
            "  %.0f%% of ceiling" % (100 * row["cratio"]) if "cratio" in row else ""))
    return rows


# ---- A mixed, real workload: a copy ---------------------------------------

def nbdkit_unix(sock, args, timeout=120):
    """nbdkit on a Unix socket, once it accepts connections."""
    if os.path.exists(sock):
        os.unlink(sock)         # the last one's, left behind
    p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", sock] + args)
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            return p
        except OSError:
            pass
        finally:
            s.close()
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("nbdkit %s did not start" % " ".join(args))
        time.sleep(0.02)


def stop_proc(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


COPY_BS, COPY_QD = "256k", 16


def mixed_copy(rounds, size, variants):
    """Copy an nbdkit memory export of @size, filled with a pattern, into a
    fresh one, through one handle each (bench --workload copy): reads and
    writes in flight together.  The destination uses allocator=malloc: the
    default sparse allocator stores at about 0.2 GiB/s under one lock
    whatever the client, which would hide the client's cost."""
    tmp = tempfile.mkdtemp(prefix="nbd-bench-copy-")
    src_sock, dst_sock = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
    src = nbdkit_unix(src_sock, ["memory", size])
    runs = {v[0]: [] for v in variants}
    try:
        subprocess.run(["nbdcopy", "--", "[", "nbdkit", "pattern", size, "]",
                        "nbd+unix:///?socket=" + src_sock], check=True, timeout=300)
        for r in range(rounds):
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                key, prog, extra, _ = v
                dst = nbdkit_unix(dst_sock, ["memory", size, "allocator=malloc"])
                try:
                    runs[key].append(run_prog([prog, "--workload", "copy", "--source", src_sock,
                                               "--connect", dst_sock, "--bs", COPY_BS, "--qd",
                                               str(COPY_QD)] + extra, timeout=300))
                finally:
                    stop_proc(dst)
    finally:
        stop_proc(src)
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"size": size, "runs": runs}
    for key in runs:
        row[key + "_mib"] = statistics.median(float(r["mib_s"]) for r in runs[key])
        row[key + "_secs"] = statistics.median(float(r["secs"]) for r in runs[key])
    for key, den in (("ratio", "libnbd"), ("wratio", "core"), ("zratio", "core")):
        num = {"ratio": "core", "wratio": "writer", "zratio": "zc"}[key]
        rs = pair_ratios(runs[num], runs[den])
        row[key] = statistics.median(rs)
        row[key + "_range"] = (min(rs), max(rs))
    log("  copy %s: core %.0f MiB/s, libnbd %.0f, x%.2f; writer x%.2f, zero-copy x%.2f" % (
        size, row["core_mib"], row["libnbd_mib"], row["ratio"], row["wratio"], row["zratio"]))
    return row


def mixed_section(row):
    o = ["## A mixed, real workload: copying one export into another\n",
         "Copying a %s nbdkit memory export, filled with nbdkit's pattern, into a fresh nbdkit memory "
         "export (`allocator=malloc`: the default sparse allocator stores about 0.2 GiB/s under one "
         "lock whatever the client, which would hide the client), through one handle each, on Unix "
         "sockets: `bench --workload copy`, %s requests, %d in flight, each read from the source "
         "then written to the destination, so reads and writes are in flight together on two "
         "handles driven by one poll loop (`nbd_aio_get_direction`, `poll`, `nbd_aio_notify_*`), as "
         "nbdcopy's loop is. Unpinned; %d rounds, alternating; medians, and the ratios' lowest and "
         "highest. With a writer each handle has its own.\n" % (
             row["size"], COPY_BS.upper().replace("K", " KiB"), COPY_QD, len(row["runs"]["core"])),
         "| | MiB/s | seconds | ratio | (lowest, highest) |",
         "|---|---|---|---|---|"]
    for key, label, ratio, what in (
            ("core", "libnbd-core", "ratio", "/ libnbd"),
            ("libnbd", "libnbd 1.14", None, ""),
            ("writer", "libnbd-core + writer", "wratio", "/ no writer"),
            ("zc", "libnbd-core + zero-copy writer", "zratio", "/ no writer")):
        cells = [label, fmt_mib(row[key + "_mib"]), "%.2f" % row[key + "_secs"]]
        if ratio:
            lo, hi = row[ratio + "_range"]
            cells += ["**%.2f** %s" % (row[ratio], what), "%.2f, %.2f" % (lo, hi)]
        else:
            cells += ["", ""]
        o.append("| " + " | ".join(cells) + " |")
    return "\n".join(o)


# ---- Deterministic figures -------------------------------------------------

def callgrind_total(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"^(summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(2))
    raise RuntimeError("no totals in " + path)


def callgrind_functions(path):
    """Self instructions per function, from callgrind_annotate."""
    p = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    funcs = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)\s*$", line)
        if not m or "PROGRAM TOTALS" in line or ":" not in m.group(2):
            continue
        name = re.sub(r"\s+\[.*\]$", "", m.group(2))
        obj = re.search(r"\[(.*)\]$", m.group(2))
        if obj:
            name += " [" + os.path.basename(obj.group(1)) + "]"
        funcs[name] = funcs.get(name, 0) + int(m.group(1).replace(",", ""))
    return funcs


def strace_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
    return counts


def perf_works():
    if not shutil.which("perf"):
        return False
    p = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return p.returncode == 0 and re.search(r"^\d+,", p.stderr, re.M) is not None


def det_cases(quick):
    """(workload, short run, long run, perf short, perf long) in requests."""
    by = {w.label: w for w in WORKLOADS}
    f = 5 if quick else 1
    return [
        (by["4 KiB random read, 64 in flight"], 5000 // f, 25000 // f, 20000, 200000 // f),
        (by["4 KiB random write, 64 in flight"], 5000 // f, 25000 // f, 20000, 200000 // f),
        (by["256 KiB sequential read, 16 in flight"], 200 // f, 1000 // f, 2000, 20000 // f),
        (by["2 MiB sequential write, 4 in flight"], 100 // f, 300 // f, 200, 2000 // f),
    ]


def perf_syscalls(taskset, argv, out):
    run_prog(taskset + ["perf", "stat", "-x,", "-o", out, "-e", "raw_syscalls:sys_enter", "--"] + argv,
             timeout=120)
    with open(out) as f:
        return int(re.search(r"^(\d+),", f.read(), re.M).group(1))


def deterministic(pin, cases, tmp):
    """Per library and workload: instructions and syscalls per request."""
    results = []
    use_perf = perf_works()
    sink = Sink(pin)
    free_sink = Sink(None) if use_perf else None
    taskset = ["taskset", "-c", str(pin)]
    try:
        for w, short, long_, pshort, plong in cases:
            for key, prog, extra, label in VARIANTS:
                base = [prog, "--connect", sink.path] + w.args() + extra
                res = {"key": key, "label": label, "w": w.label, "short": short, "long": long_,
                       "perf_short": pshort, "perf_long": plong}
                tag = "%s.%s.%s%d" % (key, w.workload, w.bs, w.qd)
                # callgrind
                tot, funcs = {}, {}
                for n in (short, long_):
                    out = os.path.join(tmp, "cg.%s.%d" % (tag, n))
                    run_prog(taskset + ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                        "--trace-children=no"] + base + ["--requests", str(n)],
                             timeout=600, env=CALLGRIND_ENV)
                    tot[n] = callgrind_total(out)
                    funcs[n] = callgrind_functions(out)
                res["ir"] = (tot[long_] - tot[short]) / (long_ - short)
                diff = {f: (funcs[long_].get(f, 0) - funcs[short].get(f, 0)) / (long_ - short)
                        for f in funcs[long_]}
                res["top"] = sorted(diff.items(), key=lambda kv: -kv[1])[:12]
                # strace
                cnt = {}
                for n in (short, long_):
                    out = os.path.join(tmp, "st.%s.%d" % (tag, n))
                    run_prog(taskset + ["strace", "-f", "-c", "-o", out] + base + ["--requests", str(n)],
                             timeout=600)
                    cnt[n] = strace_counts(out)
                total = {n: cnt[n].get("total", sum(cnt[n].values())) for n in cnt}
                res["sys"] = (total[long_] - total[short]) / (long_ - short)
                res["sys_by"] = sorted(
                    ((c, (cnt[long_].get(c, 0) - cnt[short].get(c, 0)) / (long_ - short))
                     for c in cnt[long_] if c != "total"), key=lambda kv: -kv[1])
                res["sys_by"] = [kv for kv in res["sys_by"] if kv[1] >= 0.005]
                # perf, at full speed, pinned and not
                if use_perf:
                    for pkey, ts, path in (("perf_sys", taskset, sink.path),
                                           ("perf_sys_free", [], free_sink.path)):
                        argv = [prog, "--connect", path] + w.args() + extra
                        pc = {n: perf_syscalls(ts, argv + ["--requests", str(n)],
                                               os.path.join(tmp, "perf.%s.%s.%d" % (pkey, tag, n)))
                              for n in (pshort, plong)}
                        res[pkey] = (pc[plong] - pc[pshort]) / (plong - pshort)
                log("  %-22s %-40s %8.0f instr/req  %6.2f syscalls/req (strace)%s" % (
                    label, w.label, res["ir"], res["sys"],
                    "  %6.2f (perf)  %6.2f (perf, unpinned)" % (res["perf_sys"], res["perf_sys_free"])
                    if "perf_sys" in res else ""))
                results.append(res)
    finally:
        sink.stop()
        if free_sink:
            free_sink.stop()
    return results


# ---- The report --------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    osname = sh(". /etc/os-release && echo \"$PRETTY_NAME\"")
    return [
        ("CPU", "%s, %d CPUs online" % (cpu, os.cpu_count())),
        ("memory", mem),
        ("system", "%s, Linux %s" % (osname, platform.release())),
    ]


def loadavg():
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def fmt_ops(v):
    return "{:,.0f}".format(v)


def fmt_mib(v):
    return "{:,.1f}".format(v)


def table(rows):
    have_writer = any("wratio" in r for r in rows)
    have_zc = any("zratio" in r for r in rows)
    have_ceil = any("cratio" in r for r in rows)
    hdr = ["workload", "libnbd-core ops/s", "MiB/s", "libnbd ops/s", "MiB/s", "core / libnbd",
           "(lowest, highest)"]
    if have_writer:
        hdr += ["core + writer ops/s", "MiB/s", "writer / no writer", "requests / writev",
                "bytes copied / request"]
    if have_zc:
        hdr += ["core + zero-copy writer ops/s", "MiB/s", "zero-copy / no writer",
                "zero-copy / writer", "requests / writev"]
    if have_ceil:
        hdr += ["socket pump MiB/s", "core / pump"]
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        cells = [r["w"].label, fmt_ops(r["core_ops"]), fmt_mib(r["core_mib"]),
                 fmt_ops(r["libnbd_ops"]), fmt_mib(r["libnbd_mib"]), "**%.2f**" % r["ratio"],
                 "%.2f, %.2f" % r["ratio_range"]]
        if have_writer:
            if "wratio" in r:
                cells += [fmt_ops(r["writer_ops"]), fmt_mib(r["writer_mib"]), "%.2f" % r["wratio"],
                          "%.1f" % r["per_writev"], "{:,.0f}".format(r["copied_per_req"])]
            else:
                cells += ["", "", "", "", ""]
        if have_zc:
            if "zratio" in r:
                cells += [fmt_ops(r["zc_ops"]), fmt_mib(r["zc_mib"]), "%.2f" % r["zratio"],
                          "%.2f" % r["zwratio"], "%.1f" % r["zc_per_writev"]]
            else:
                cells += ["", "", "", "", ""]
        if have_ceil:
            if "cratio" in r:
                cells += [fmt_mib(r["ceiling_mib"]), "%.2f" % r["cratio"]]
            else:
                cells += ["", ""]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def aims(sections, det, mixed=None):
    lines = []
    pinned = next((s for s in sections if s["server"] == "sink" and s["pin"] is not None
                   and s["transport"] == "unix" and s["conns"] == 1), None)

    def row(sec, label):
        return next((r for r in sec["rows"] if r["w"].label == label), None) if sec else None

    def verdict(ok):
        return "met" if ok else "**not met**"

    for wl in ("read", "write"):
        r = row(pinned, "4 KiB random %s, 64 in flight" % wl)
        if r:
            lines.append("- 4 KiB random %s at 64 in flight, sink, pinned: libnbd-core / libnbd = %.2f "
                         "(aim >= 3): %s" % (wl, r["ratio"], verdict(r["ratio"] >= 3)))
    by = {(d["key"], d["w"]): d for d in det}
    for wl in ("read", "write"):
        label = "4 KiB random %s, 64 in flight" % wl
        c, l = by.get(("core", label)), by.get(("libnbd", label))
        if c and l:
            lines.append("- %s: %.2f system calls per request under strace (aim <= 1): %s; "
                         "instructions per request %.0f vs libnbd's %.0f = %.2f (aim <= 0.5): %s" % (
                             label, c["sys"], verdict(c["sys"] <= 1), c["ir"], l["ir"],
                             c["ir"] / l["ir"], verdict(c["ir"] <= 0.5 * l["ir"])))
    for sec in sections:
        if sec["server"] != "sink" or sec["conns"] != 1:
            continue
        for label in ("2 MiB sequential write, 4 in flight", "256 KiB sequential read, 16 in flight",
                      "2 MiB sequential read, 4 in flight"):
            r = row(sec, label)
            if r and "cratio" in r:
                reads = "read" in label
                lines.append("- %s, sink, %s%s: libnbd-core %.0f MiB/s, the socket pump %.0f MiB/s: "
                             "%.0f%% of the ceiling (%s)" % (
                                 label, "TCP, " if sec["transport"] == "tcp" else "",
                                 sec["pin_label"], r["core_mib"], r["ceiling_mib"], 100 * r["cratio"],
                                 "goal >= 95%%: %s" % verdict(r["cratio"] >= 0.95) if reads
                                 else "aim: near it"))
    for key, name in (("wratio", "writer"), ("zratio", "zero-copy writer")):
        worst = None
        for sec in sections:
            for r in sec["rows"]:
                if key in r and (worst is None or r[key] < worst[0]):
                    worst = (r[key], r["w"].label, sec["title"])
        if worst:
            lines.append("- the %s never costs: the lowest %s / no-writer ratio is "
                         "%.2f (%s; %s; goal >= 0.95): %s" % (name, name, worst[0], worst[1], worst[2],
                                                              verdict(worst[0] >= 0.95)))
    if mixed:
        lines.append("- a mixed, real workload (copying %s between nbdkit memory exports): libnbd-core / "
                     "libnbd = %.2f, writer / no writer = %.2f, zero-copy writer / no writer = %.2f "
                     "(figures and ratios asked for, no goal)" % (
                         mixed["size"], mixed["ratio"], mixed["wratio"], mixed["zratio"]))
    return "\n".join(lines)


def zero_copy_summary(sections):
    """The zero-copy writer against no writer and the copying writer, for
    the workloads that send payloads (where lending instead of copying
    can change anything), every configuration."""
    o = ["## The zero-copy writer, write workloads\n",
         "Throughput of the zero-copy writer against no writer and against the copying writer, from "
         "the tables above (medians; ratios within rounds). Reads send only headers, which both writers "
         "copy.\n",
         "| configuration | workload | no writer MiB/s | writer MiB/s | zero-copy MiB/s | "
         "zero-copy / no writer | zero-copy / writer |",
         "|---|---|---|---|---|---|---|"]
    for sec in sections:
        for r in sec["rows"]:
            if "zratio" in r and r["w"].workload in ("randwrite", "seqwrite", "mixed"):
                o.append("| %s | %s | %s | %s | %s | %.2f | %.2f |" % (
                    sec["title"], r["w"].label, fmt_mib(r["core_mib"]), fmt_mib(r["writer_mib"]),
                    fmt_mib(r["zc_mib"]), r["zratio"], r["zwratio"]))
    return "\n".join(o)


def write_report(path, info, sections, det, det_params, elapsed, mixed=None):
    o = []
    o.append("# Benchmark: libnbd-core against libnbd\n")
    o.append("Written by `bash bench/run.sh` on %s; the whole run took %.0f s.\n" % (info["date"], elapsed))
    o.append("## Machine and versions\n")
    for k, v in info["machine"] + info["versions"]:
        o.append("- %s: %s" % (k, v))
    o.append("- load average (1, 5, 15 min) at the start: %s; at the end: %s (anything else running "
             "on the machine shows here and in the figures)" % (info["load_start"], info["load_end"]))
    o.append("")
    o.append("## Method\n")
    o.append(
        "One program, `bench/bench.c`, written against `<libnbd.h>` only, built against libnbd-core "
        "(buildtype=release) and against the system's libnbd. Each run starts its own server, on a Unix "
        "socket or on TCP (127.0.0.1, a free port: the sink server binds port 0 and reports it; nbdkit "
        "gets a port found free just before), keeps the given number of requests in flight with "
        "`nbd_aio_pread`/`nbd_aio_pwrite` and self-retiring completion callbacks, driven by `nbd_poll`, "
        "warms up for a tenth of the measured time (0.1 s at most) and then measures %.2f s (the "
        "issue's main workloads: 4 KiB random read and write at 64 in flight, 4 KiB mixed 70/30 at 64, "
        "256 KiB sequential read at 16, 2 MiB sequential write at 4, and every nbdkit, TCP and "
        "multi-conn run) or %.2f s (the other workloads on the Unix socket). Runs alternate libnbd-core, "
        "libnbd, libnbd-core with the concurrent writer (a ring filled by the writer callback and a "
        "writer thread, `nbd_set_concurrent_writer`), and libnbd-core with the zero-copy writer "
        "(`nbd_set_concurrent_writer_zero_copy`: the callback copies headers, flags 0, into a byte ring "
        "and queues a reference to each lent write payload, `LIBNBD_WRITER_LENT`; the writer thread "
        "sends headers and payloads with one writev(2) across many ring entries and gives the lent "
        "bytes back with `nbd_concurrent_writer_release` as soon as they are sent). Both writers batch "
        "(the documented pattern, docs/concurrent-writer.md): the loop marks each burst of requests it "
        "issues, the callback queues them without waking the writer thread, and at the end of the "
        "burst the loop sends them itself with one non-blocking sendmsg; the writer thread is woken "
        "only for what the socket did not take. The copying writer's callback also sends a piece of "
        "64 KiB or more (a write payload) itself, after what is queued, when no other sender is at "
        "work, and copies only what the socket did not take (\"bytes copied / request\": what its "
        "callback copied, headers included). %d rounds. Figures "
        "are medians of the runs; the ratios are medians of the ratios within each round (the lowest "
        "and highest of those show the noise). \"Pinned\": the client, its writer thread and the server "
        "all on CPU %s (`sched_setaffinity`, inherited by the server); \"unpinned\": the scheduler's "
        "choice on %d CPUs. The sink server (`bench/sink-server.c`) answers reads with zeroes and "
        "discards writes, many requests per recv and all their replies per sendmsg, so the client's "
        "cost is what is measured. The socket pump (`bench/ceiling.c`) sends the same requests to a "
        "sink server with no library at all, in the same rotation and on the same transport: the "
        "transport's ceiling (it copies what payload arrives with a header into the request's buffer, as "
        "a client must, and receives the next header alone after a large payload, the best receive "
        "strategy found). \"requests / writev\": requests per send call of the writers (the loop's at "
        "the end of a batch and the writer thread's). Transports: %s; TCP sockets have `TCP_NODELAY` on both sides (libnbd, libnbd-core, "
        "the socket pump, the sink server and nbdkit all set it).\n" % (
            info["duration"], info["short_duration"], info["rounds"], info["pin_cpu"], os.cpu_count(),
            ", ".join(TRANSPORTS)))
    o.append(
        "Multi-conn %d: %d handles to one export, which advertises `CAN_MULTI_CONN` (the sink server "
        "and nbdkit memory both do; the benchmark checks `nbd_can_multi_conn`), on the Unix socket, each "
        "handle driven by its own thread with its own `nbd_poll` loop (one handle per thread, libnbd's "
        "model, not one poll loop over all), the given number of requests in flight on each, and with "
        "a writer, a writer thread per handle; the threads start measuring together (a barrier) and the "
        "figures are the sum over the handles, over the time until the last one drained. On 2 CPUs that "
        "is %d client threads (%d with a writer) besides the server's, so multi-conn runs unpinned "
        "only.\n" % (MULTI_CONNS, MULTI_CONNS, MULTI_CONNS, 2 * MULTI_CONNS))
    o.append(
        "The writer threads get the socket themselves: each writer is set before connecting (the "
        "documented four steps), and its thread calls `nbd_aio_get_fd` when it first has bytes to "
        "send, during `nbd_connect_unix`/`nbd_connect_tcp`. `nbd_aio_get_fd` is lock-free, so a writer "
        "thread may call it at any time, even while another thread holds the handle (a sync call "
        "such as `nbd_connect_*` or `nbd_pread` waiting for replies to the very bytes the writer "
        "thread has yet to send); there is no need to fetch the fd on the connecting thread and hand "
        "it over first.\n")
    o.append("Trimmed to keep the whole run under ten minutes on 2 CPUs: %s.\n" % info["trimmed"])
    o.append("## The aims\n")
    o.append(aims(sections, det, mixed) + "\n")
    o.append("## Throughput\n")
    for sec in sections:
        o.append("### %s\n" % sec["title"])
        o.append(table(sec["rows"]) + "\n")
    o.append(zero_copy_summary(sections) + "\n")
    if mixed:
        o.append(mixed_section(mixed) + "\n")
    o.append("## Deterministic figures\n")
    have_perf = any("perf_sys" in d for d in det)
    o.append(
        "Against the sink server, client and server pinned to CPU %s. Instructions per request: "
        "`valgrind --tool=callgrind`, the whole client process (library, libc, the benchmark loop; every "
        "thread), (long run - short run) / (their difference in requests), with glibc told to use vector "
        "loops for memset/memcpy (`GLIBC_TUNABLES`), as callgrind counts each iteration of `rep stosb` "
        "as an instruction. System calls per request: `strace -f -c`, the same two runs. %s The 4 KiB "
        "rows of libnbd-core and libnbd are the aims' figures; the others show the writers and the "
        "large-request paths. Unix socket, one connection.\n" % (
            det_params["pin"],
            "Full speed: `perf stat -e raw_syscalls:sys_enter` (strace slows the client, so it finds more "
            "replies waiting per recv than a full-speed run does), pinned and unpinned." if have_perf else ""))
    hdr = ["workload", "library", "requests (short, long)", "instructions / request",
           "syscalls / request (strace)"]
    if have_perf:
        hdr += ["syscalls / request (perf, pinned)", "(perf, unpinned)"]
    o.append("| " + " | ".join(hdr) + " |")
    o.append("|" + "---|" * len(hdr))
    for d in det:
        cells = [d["w"], d["label"], "%d, %d" % (d["short"], d["long"]), "{:,.0f}".format(d["ir"]),
                 "%.2f" % d["sys"]]
        if have_perf:
            cells += ["%.2f" % d["perf_sys"], "%.2f" % d["perf_sys_free"]]
        o.append("| " + " | ".join(cells) + " |")
    o.append("")
    o.append("### System calls per request, by call (strace)\n")
    for d in det:
        o.append("- %s, %s: %s" % (d["w"], d["label"],
                                    ", ".join("%s %.2f" % kv for kv in d["sys_by"]) or "none"))
    o.append("")
    o.append("### Instructions per request, by function (callgrind, self cost, top 12)\n")
    o.append("libnbd's own functions show as addresses: Debian's library is stripped.\n")
    for d in det:
        o.append("%s, %s:\n" % (d["w"], d["label"]))
        o.append("| instructions / request | function |")
        o.append("|---|---|")
        for f, v in d["top"]:
            o.append("| {:,.0f} | `{}` |".format(v, f))
        o.append("")
    text = "\n".join(o)
    # The sections other scripts own (bench/gnbd.py, bench/copy.py, bench/tls.py: each
    # between its marker lines) stay as they were.
    if os.path.exists(path):
        old = open(path).read()
        for begin, end in KEPT_SECTIONS:
            i, j = old.find(begin), old.find(end)
            if i != -1 and j > i:
                text = text.rstrip("\n") + "\n\n" + old[i:j + len(end)] + "\n"
    with open(path, "w") as f:
        f.write(text)


# Marker lines of the sections written by other scripts (see write_report).
KEPT_SECTIONS = [
    ("<!-- begin: gnbd copy against nbdcopy (bench/copy.sh) -->",
     "<!-- end: gnbd copy against nbdcopy -->"),
    ("<!-- begin: TLS and the writer thread (bench/tls.sh) -->",
     "<!-- end: TLS and the writer thread -->"),
    ("<!-- gnbd section: written by bench/gnbd.py; everything up to the end marker is replaced -->",
     "<!-- end of the gnbd section -->"),
]


def versions():
    out = []
    sink = Sink(None)
    try:
        for prog in (CORE, LIBNBD):
            if os.path.exists(prog):
                r = run_prog([prog, "--connect", sink.path, "--requests", "1", "--qd", "1"])
                out.append((r["lib"], r["version"]))
    finally:
        sink.stop()
    out.append(("nbdkit", sh("nbdkit --version")))
    out.append(("compiler", sh("cc --version | head -1")))
    out.append(("libnbd-core build", "meson buildtype=" + sh(
        "meson introspect --buildoptions %s | python3 -c \"import json,sys; "
        "print([o['value'] for o in json.load(sys.stdin) if o['name']=='buildtype'][0])\"" % BUILD)))
    out.append(("valgrind", sh("valgrind --version")))
    out.append(("strace", sh("strace -V | head -1")))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a short smoke run (1 round, 0.3 s, few workloads)")
    ap.add_argument("--output", help="default: bench/RESULTS.md, or build-bench/bench/RESULTS-quick.md")
    args = ap.parse_args()
    if not args.output:
        args.output = os.path.join(BIN, "RESULTS-quick.md") if args.quick else os.path.join(HERE, "RESULTS.md")

    t_start = time.monotonic()
    cpus = sorted(os.sched_getaffinity(0))
    pin_cpu = cpus[-1]
    if args.quick:
        duration, short_duration, rounds = 0.3, 0.15, 1
        workloads = [w for w in WORKLOADS if w.qd == 64 or w.bs == "2m"]
        nbdkit_wl = NBDKIT_WORKLOADS[:2]
        main_wl = [w for w in MAIN_WORKLOADS if w.bs == "4k"]
        multi_wl = MULTI_WORKLOADS[:2]
    else:
        duration, short_duration, rounds = 0.6, 0.25, 3
        workloads = WORKLOADS
        nbdkit_wl = NBDKIT_WORKLOADS
        main_wl = MAIN_WORKLOADS
        multi_wl = MULTI_WORKLOADS
    if not os.path.exists(LIBNBD):
        sys.exit("run.py: %s is missing: install libnbd-dev and rebuild" % LIBNBD)
    variants = VARIANTS

    def durations(w):
        return duration if w in MAIN_WORKLOADS or w in MULTI_WORKLOADS else short_duration

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": loadavg(),
        "versions": versions(),
        "duration": duration,
        "short_duration": short_duration,
        "rounds": rounds,
        "pin_cpu": pin_cpu,
        "trimmed": "every run measures %.2f s, not 1 s (%d rounds, as before); the workloads outside "
                   "the issue's main ones (4 KiB at 1, 16 and 256 in flight, 256 KiB write, 2 MiB "
                   "read) %.2f s; TCP with nbdkit, and multi-conn, unpinned only; TCP runs the main "
                   "workloads only, multi-conn the three of the issue" % (duration, rounds, short_duration),
    }

    sections = []
    # server, pin, workloads, transport
    plan = [("sink", pin_cpu, workloads, "unix"), ("sink", None, workloads, "unix")]
    for server in ("memory", "null"):
        plan += [(server, pin_cpu, nbdkit_wl, "unix"), (server, None, nbdkit_wl, "unix")]
    plan += [("sink", pin_cpu, main_wl, "tcp"), ("sink", None, main_wl, "tcp"),
             ("memory", None, main_wl, "tcp")]
    plan += [("sink", None, multi_wl, "unix"), ("memory", None, multi_wl, "unix")]
    for server, pin, wls, transport in plan:
        pin_label = "pinned to CPU %d" % pin if pin is not None else "unpinned"
        conns = wls[0].conns
        where = ("TCP 127.0.0.1, " if transport == "tcp" else "") + \
                ("multi-conn %d, " % conns if conns > 1 else "")
        title = "%s, %s%s" % ("sink server" if server == "sink" else "nbdkit " + server, where, pin_label)
        log("%s (%.0f s so far)" % (title, time.monotonic() - t_start))
        rows = throughput(server, pin, wls, rounds, durations, variants, transport)
        sections.append({"server": server, "pin": pin, "pin_label": pin_label, "title": title,
                         "rows": rows, "transport": transport, "conns": conns})

    log("a mixed workload: a copy (%.0f s so far)" % (time.monotonic() - t_start))
    mixed = mixed_copy(rounds, "256M" if args.quick else "1G", variants)

    log("deterministic figures (%.0f s so far)" % (time.monotonic() - t_start))
    tmp = tempfile.mkdtemp(prefix="nbd-bench-det-")
    try:
        det = deterministic(pin_cpu, det_cases(args.quick), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    det_params = {"pin": pin_cpu}

    elapsed = time.monotonic() - t_start
    info["load_end"] = loadavg()
    write_report(args.output, info, sections, det, det_params, elapsed, mixed)
    raw = os.path.join(BIN, "results.json")
    with open(raw, "w") as f:
        json.dump({"info": info, "det": det, "mixed": mixed, "sections": [
            dict(s, rows=[dict(r, w=r["w"].label) for r in s["rows"]]) for s in sections]}, f, indent=1)
    log("wrote %s in %.0f s" % (args.output, elapsed))


if __name__ == "__main__":
    main()
