"""bench/copy.py: time `gnbd copy` and nbdcopy on the same copies, in
alternation, and write the "gnbd copy" section of bench/RESULTS.md.

The copies (4 GiB each): nbdkit pattern to null:, nbdkit pattern to an
nbdkit memory disk, nbdkit sparse-random (10% data) to a memory disk;
each with one connection, with four (-C 4: both servers advertise
multi-conn, and are given by URI so that both tools may open more;
nbdcopy is also given -T 4, since it opens no more connections than it has
threads, by default one per CPU), and with each tool's defaults (both
then open as many connections as there are CPUs, at most 4).  The
servers run on Unix sockets, started here: the source once per copy, a
fresh memory disk for every run (a disk already written is cheaper to
write again).  Each round runs both tools, the first alternating.

The pump (bench/ceiling, a bare socket pump with no library, one
connection, once a round) measures what the same servers give at most: it
reads 4 GiB of the pattern server for the copy to null:, and writes 4 GiB
into a fresh memory disk for the copy to memory.  A client cannot be faster than the pump by much, so
the pump over nbdcopy bounds the ratio any client can reach on one
connection.

Besides the wall time, each run's CPU time is measured for the copying
process (wait4) and for the servers (/proc/PID/stat), which says what
bounds the figure: on 2 CPUs, when client and servers together keep both
busy, the machine is the limit; else the one near a full CPU.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ["BENCH_BUILD"]
GNBD = os.path.join(BIN, "tools", "gnbd")
RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN = "<!-- begin: gnbd copy against nbdcopy (bench/copy.sh) -->"
END = "<!-- end: gnbd copy against nbdcopy -->"
TICK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count()
GiB = 1 << 30
SIZE = 4 * GiB

WORKLOADS = [
    ("pattern -> null:", ["pattern", str(SIZE)], None),
    ("pattern -> memory", ["pattern", str(SIZE)], ["memory", str(SIZE)]),
    ("sparse-random -> memory", ["sparse-random", str(SIZE), "seed=7"], ["memory", str(SIZE)]),
]
# (label, gnbd's options, nbdcopy's options)
CONFIGS = [
    ("1", ["-C", "1"], ["-C", "1"]),
    ("4", ["-C", "4"], ["-C", "4", "-T", "4"]),
    ("defaults", [], []),
]
CEILING = os.path.join(BIN, "bench", "ceiling")


class Server:
    serial = 0

    def __init__(self, args, tmp, name):
        Server.serial += 1
        self.sock = os.path.join(tmp, f"{name}-{Server.serial}.sock")
        self.proc = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", self.sock,
                                      *args], stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                return
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError(f"nbdkit {args} did not start")
                time.sleep(0.02)

    @property
    def uri(self):
        return f"nbd+unix:///?socket={self.sock}"

    def cpu(self):
        """CPU seconds so far (user + system, all threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def machine_ticks():
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def run_copy(tool, opts, src, dst_uri):
    argv = ([GNBD, "copy"] if tool == "gnbd" else ["nbdcopy"]) + opts + [src.uri, dst_uri]
    busy0, total0 = machine_ticks()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    busy1, total1 = machine_ticks()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} exited with {p.returncode}")
    busy = (busy1 - busy0) / max(total1 - total0, 1)
    return wall, usage.ru_utime + usage.ru_stime, busy


STRACE_SIZE = GiB
REQUEST = 256 * 1024


def syscalls(tool, tmp):
    """System calls of one copy of 1 GiB of pattern to null: on one
    connection, under strace -f -c: {name: calls}."""
    src = Server(["pattern", str(STRACE_SIZE)], tmp, "strace")
    out = os.path.join(tmp, f"strace-{tool}.txt")
    argv = ([GNBD, "copy"] if tool == "gnbd" else ["nbdcopy"]) + ["-C", "1", src.uri, "null:"]
    subprocess.run(["strace", "-f", "-c", "-o", out, *argv], check=True,
                   stdout=subprocess.DEVNULL)
    src.stop()
    calls = {}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return calls


def per_request(calls):
    n = STRACE_SIZE // REQUEST
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return (f"{sum(calls.values()) / n:.1f} (" +
            ", ".join(f"{k} {v / n:.1f}" for k, v in top) + ")")


def pump(server, workload):
    """GiB/s the bare socket pump gets from @server, moving as much as a
    copy does: 256 KiB requests, 64 in flight, one connection."""
    out = subprocess.run([CEILING, "--connect", server.sock, "--workload", workload,
                          "--bs", str(REQUEST), "--qd", "64", "--total", str(SIZE)],
                         check=True, capture_output=True, text=True).stdout
    fields = dict(f.split("=", 1) for f in out.split())
    return float(fields["mib_s"]) / 1024


def bound(client, servers, wall, busy):
    """What limits a run, from the CPU each side used over the wall time
    and how busy the whole machine was (other processes included)."""
    c, s = client / wall, servers / wall
    others = max(busy * CPUS - c - s, 0)
    if busy > 0.9:
        who = max((c, "the copy"), (s, "the servers"), (others, "other processes"))[1]
        return (f"the machine's CPUs, {busy:.0%} busy (copy {c:.2f}, servers {s:.2f}, "
                f"others {others:.2f} CPU; most: {who})")
    if s >= 0.85 and s >= c:
        return f"the servers' CPU ({s:.2f} CPU; copy {c:.2f})"
    if c >= 0.85:
        return f"the copy's CPU ({c:.2f} CPU; servers {s:.2f})"
    return (f"no CPU saturated (copy {c:.2f}, servers {s:.2f}, machine {busy:.0%} busy): "
            "waiting on the socket")


def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def loadavg():
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    started = time.time()
    load_start = loadavg()
    raw = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as tmp:
        for name, src_args, dst_args in WORKLOADS:
            # The pump, once a round with the one-connection copies: only
            # where its traffic is the copy's (sequential reads of the
            # pattern, writes of data into memory).
            pumps = []
            for conns, gnbd_opts, nbdcopy_opts in CONFIGS:
                opts = {"gnbd": gnbd_opts, "nbdcopy": nbdcopy_opts}
                src = Server(src_args, tmp, "src")
                runs = {"gnbd": [], "nbdcopy": []}
                ratios = []
                for r in range(args.rounds):
                    order = ["gnbd", "nbdcopy"] if r % 2 == 0 else ["nbdcopy", "gnbd"]
                    walls = {}
                    for tool in order:
                        dst = Server(dst_args, tmp, "dst") if dst_args else None
                        cpu0 = src.cpu() + (dst.cpu() if dst else 0)
                        wall, client, busy = run_copy(tool, opts[tool], src,
                                                      dst.uri if dst else "null:")
                        servers = src.cpu() + (dst.cpu() if dst else 0) - cpu0
                        if dst:
                            dst.stop()
                        runs[tool].append({"wall": wall, "client_cpu": client,
                                           "servers_cpu": servers, "machine_busy": busy})
                        walls[tool] = wall
                        print(f"{name}, -C {conns}, round {r + 1}: {tool} {wall:.2f} s "
                              f"(copy {client:.2f} CPU s, servers {servers:.2f}, machine "
                              f"{busy:.0%} busy)", flush=True)
                    ratios.append(walls["nbdcopy"] / walls["gnbd"])
                    if conns == "1" and src_args[0] == "pattern":
                        s = Server(dst_args, tmp, "pump") if dst_args else src
                        pumps.append(pump(s, "seqwrite" if dst_args else "seqread"))
                        if dst_args:
                            s.stop()
                        print(f"{name}, round {r + 1}: the pump gets {pumps[-1]:.2f} GiB/s",
                              flush=True)
                pumped = statistics.median(pumps) if pumps else None
                src.stop()
                med = {tool: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                       for tool, rs in runs.items()}
                rows.append({"workload": name, "connections": conns, "median": med,
                             "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                             "ratio_max": max(ratios), "pump": pumped})
                raw.append({"workload": name, "connections": conns, "runs": runs,
                            "ratios": ratios, "pump_gib_s": pumped})
        strace = {tool: syscalls(tool, tmp) for tool in ("gnbd", "nbdcopy")}
    elapsed = time.time() - started
    os.makedirs(os.path.join(BIN, "bench"), exist_ok=True)
    with open(os.path.join(BIN, "bench", "copy-raw.json"), "w") as f:
        json.dump(raw, f, indent=1)

    out = [BEGIN, "## gnbd copy against nbdcopy", "",
           f"Written by `bash bench/copy.sh` (--rounds {args.rounds}) on "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; the run took "
           f"{elapsed:.0f} s. {version([GNBD, '--version'])} (buildtype=release), "
           f"{version(['nbdcopy', '--version'])}, {version(['nbdkit', '--version'])}, "
           f"{CPUS} CPUs, {platform.release()}; load average at the start {load_start}, at the "
           f"end {loadavg()}.", "",
           "Each copy moves 4 GiB between nbdkit servers on Unix sockets, started by the "
           "script (a fresh memory disk for every run), with the same `-C` for both tools "
           "(nbdcopy also gets `-T 4` with `-C 4`: it opens no more connections than threads, "
           "one per CPU by default, so `-C 4` alone gives it 2 here) or none (`defaults`: both "
           "open as many connections as CPUs, at most 4), and their defaults otherwise (256 KiB "
           "requests, 64 in flight per connection). Rounds "
           "alternate which tool goes first. Figures are medians; the ratio is nbdcopy's time "
           "over gnbd's within each round (above 1: gnbd is faster), median (lowest-highest). "
           "CPU: seconds of CPU per run, of the copying process (wait4) and of the servers "
           "(/proc); with how busy the whole machine was (/proc/stat, other processes "
           "included), that says what bounds the figure. Pump: what a bare socket pump with no "
           "library (bench/ceiling, one connection, the same request size and depth) gets from "
           "the same servers: sequential reads of the pattern server, writes into a fresh "
           "memory disk.", "",
           "| copy | -C | gnbd | nbdcopy | pump | ratio | gnbd CPU s: copy / servers | "
           "nbdcopy CPU s: copy / servers | CPU ratio | bound (gnbd run) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        g, n = row["median"]["gnbd"], row["median"]["nbdcopy"]
        out.append(f"| {row['workload']} | {row['connections']} | "
                   f"{SIZE / GiB / g['wall']:.2f} GiB/s | {SIZE / GiB / n['wall']:.2f} GiB/s | "
                   f"{'%.2f GiB/s' % row['pump'] if row['pump'] else '-'} | "
                   f"{row['ratio']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | "
                   f"{g['client_cpu']:.2f} / {g['servers_cpu']:.2f} | "
                   f"{n['client_cpu']:.2f} / {n['servers_cpu']:.2f} | "
                   f"{n['client_cpu'] / g['client_cpu']:.2f} | "
                   f"{bound(g['client_cpu'], g['servers_cpu'], g['wall'], g['machine_busy'])} |")
    out += ["", "CPU ratio: the CPU time of nbdcopy's process over gnbd's for the same copy "
            "(above 1: gnbd needs less CPU). On a machine shared with other work the wall "
            "times follow the share of the CPUs each run got; the CPU times do not, and say "
            "what each copy costs.", "",
            f"System calls per 256 KiB request, 1 GiB of pattern to null: on one connection "
            f"(strace -f -c, all threads): gnbd {per_request(strace['gnbd'])}; nbdcopy "
            f"{per_request(strace['nbdcopy'])}.", "",
            "Goals (issue 11): at least 1.2 times nbdcopy on each copy, and at least as "
            "fast with `--connections 4`.", ""]
    for row in rows:
        goal = 1.0 if row["connections"] == "4" else 1.2
        n = row["median"]["nbdcopy"]
        line = (f"- {row['workload']}, -C {row['connections']}: {row['ratio']:.3f} "
                f"(goal >= {goal}): {'met' if row['ratio'] >= goal else 'NOT met'}")
        if row["pump"] and goal > 1:
            line += (f"; the pump (one connection) gets {row['pump'] / (SIZE / GiB / n['wall']):.2f} "
                     f"times this nbdcopy from these servers")
        out.append(line)
    out.append(END)
    section = "\n".join(out) + "\n"

    text = open(RESULTS).read() if os.path.exists(RESULTS) else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(RESULTS, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
