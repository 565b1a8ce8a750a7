#!/usr/bin/env python3
"""bench/tls.py: TLS with the concurrent writer, and the writer thread
encrypting (nbd_set_concurrent_writer_encrypt): run by bench/tls.sh, which
builds first; writes the "TLS" section of bench/RESULTS.md (between its
markers, replaced on each run) and the raw figures to
build-bench/bench/tls-raw.json.

Per TLS kind (a PSK, X.509 certificates) and workload (256 KiB sequential
writes and a 50/50 read/write mix of 256 KiB, 16 in flight), runs of a fixed
duration alternate, round after round: libnbd 1.14, libnbd-core without a
writer, with the copying writer (the handle's thread encrypts, the writer
thread sends the records), with the copying writer encrypting (--encrypt:
the writer thread makes the records), and with the zero-copy writer
encrypting (payloads lent, encrypted straight from the caller's buffer).
The server is nbdkit's null plugin with --tls=require on a Unix socket (the
sink server has no TLS), unpinned.  Besides MiB/s, each run reports the CPU
time per second of the client (all its threads) and of the server over the
measured window: on 2 CPUs that says what bounds it.

  python3 bench/tls.py [--rounds N] [--duration S] [--quick] [--output FILE]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as core  # noqa: E402  (run.py: the build's programs, run_prog, log)

RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN = "<!-- begin: TLS and the writer thread (bench/tls.sh) -->"
END = "<!-- end: TLS and the writer thread -->"

WORKLOADS = [
    ("256 KiB sequential write, 16 in flight", ["--workload", "seqwrite", "--bs", "256k", "--qd", "16"]),
    ("256 KiB mixed 50% read / 50% write, 16 in flight",
     ["--workload", "mixed", "--read-pct", "50", "--bs", "256k", "--qd", "16"]),
]
VARIANTS = [
    ("libnbd", core.LIBNBD, [], "libnbd 1.14"),
    ("core", core.CORE, [], "libnbd-core, no writer"),
    ("writer", core.CORE, ["--writer"], "writer, the handle's thread encrypts"),
    ("enc", core.CORE, ["--writer", "--encrypt"], "writer, the writer thread encrypts"),
    ("zcenc", core.CORE, ["--zero-copy", "--encrypt"], "zero-copy writer, the writer thread encrypts"),
]
KINDS = [("psk", "TLS-PSK"), ("x509", "X.509")]


def make_pki(d):
    """A CA, a server certificate for localhost, and a PSK for user bench."""
    steps = [
        "certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem",
        "printf 'cn = bench CA\\nca\\ncert_signing_key\\nexpiration_days = 2\\n' > ca.info",
        "certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info "
        "--outfile ca-cert.pem",
        "certtool --generate-privkey --key-type=ecdsa --outfile server-key.pem",
        "printf 'cn = localhost\\ndns_name = localhost\\ntls_www_server\\nencryption_key\\n"
        "signing_key\\nexpiration_days = 2\\n' > server.info",
        "certtool --generate-certificate --load-ca-certificate ca-cert.pem "
        "--load-ca-privkey ca-key.pem --load-privkey server-key.pem --template server.info "
        "--outfile server-cert.pem",
        "psktool -u bench -p keys.psk",
    ]
    for s in steps:
        subprocess.run(s, shell=True, cwd=d, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=0.6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", help="default: bench/RESULTS.md, or build-bench/bench/RESULTS-quick.md")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.duration = 1, 0.2
    if not a.output:
        a.output = os.path.join(core.BIN, "RESULTS-quick.md") if a.quick else RESULTS
    started = datetime.datetime.utcnow()
    raw = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as pki:
        make_pki(pki)
        for kind, kind_label in KINDS:
            for wl_label, wl_args in WORKLOADS:
                key = "%s/%s" % (kind, wl_label)
                raw[key] = {v[0]: [] for v in VARIANTS}
                for rnd in range(a.rounds):
                    for vkey, prog, vargs, _ in VARIANTS:
                        res = core.run_prog([prog, "--server", "null", "--tls", kind, "--pki", pki,
                                              "--duration", str(a.duration)] + wl_args + vargs)
                        raw[key][vkey].append({k: res[k] for k in
                                               ("mib_s", "cpu_client", "cpu_server")})
                    core.log("%s, %s, round %d: %s" % (kind_label, wl_label, rnd + 1, "  ".join(
                        "%s %.0f" % (v, float(raw[key][v][-1]["mib_s"])) for v, *_ in VARIANTS)))
    with open(os.path.join(core.BIN, "tls-raw.json"), "w") as f:
        json.dump(raw, f, indent=1)

    def col(key, v, field):
        return [float(x[field]) for x in raw[key][v]]

    def ratio(key, num, den):
        rs = [n / d for n, d in zip(col(key, num, "mib_s"), col(key, den, "mib_s"))]
        return statistics.median(rs), min(rs), max(rs)

    o = [BEGIN, "", "## TLS and the writer thread", "",
         "`bash bench/tls.sh` (bench/tls.py), %s UTC, %d rounds of %.1f s per run, unpinned, "
         "nbdkit's null plugin with `--tls=require` on a Unix socket, 16 requests in flight. "
         "Ratios are medians of the ratios within each round (lowest, highest). CPU: CPU time "
         "per second of the measured window, the client's process (all its threads) and the "
         "server's, medians; the machine has 2 CPUs."
         % (started.strftime("%Y-%m-%d %H:%M"), a.rounds, a.duration), ""]
    hdr = ["TLS", "workload"] + ["%s MiB/s" % v[3] for v in VARIANTS] + [
        "core / libnbd", "writer / no writer", "writer thread encrypts / no writer",
        "zero-copy, writer thread encrypts / no writer", "CPU client, server: no writer",
        "CPU client, server: writer thread encrypts"]
    o.append("| " + " | ".join(hdr) + " |")
    o.append("|" + "---|" * len(hdr))
    summary = []
    for kind, kind_label in KINDS:
        for wl_label, _ in WORKLOADS:
            key = "%s/%s" % (kind, wl_label)
            cells = [kind_label, wl_label]
            cells += ["{:,.0f}".format(statistics.median(col(key, v[0], "mib_s"))) for v in VARIANTS]
            for num, den in (("core", "libnbd"), ("writer", "core"), ("enc", "core"),
                             ("zcenc", "core")):
                m, lo, hi = ratio(key, num, den)
                cells.append("**%.2f** (%.2f, %.2f)" % (m, lo, hi))
                if num == "enc":
                    summary.append((kind_label, wl_label, m))
            for v in ("core", "enc"):
                cells.append("%.2f, %.2f" % (statistics.median(col(key, v, "cpu_client")),
                                             statistics.median(col(key, v, "cpu_server"))))
            o.append("| " + " | ".join(cells) + " |")
    best = max(summary, key=lambda s: s[2])
    srv = [statistics.median(col(k, "core", "cpu_server")) for k in raw]
    cli = [statistics.median(col(k, "core", "cpu_client")) for k in raw]
    esrv = [statistics.median(col(k, "enc", "cpu_server")) for k in raw]
    ecli = [statistics.median(col(k, "enc", "cpu_client")) for k in raw]
    o += ["", "- Goal (issue 12): the writer thread encrypting / no writer at least 1.5. Best "
          "median here: %.2f (%s, %s): %s." % (best[2], best[0], best[1],
                                               "met" if best[2] >= 1.5 else "**not met**"),
          "- What bounds it: without a writer the server already uses %.2f to %.2f CPU "
          "seconds per second (nbdkit decrypts a connection's requests on one thread, and "
          "encrypts the replies), the client %.2f to %.2f; with the writer thread encrypting, "
          "the server %.2f to %.2f and the client %.2f to %.2f. Moving the client's encryption "
          "to another thread cannot make the server decrypt faster, and on 2 CPUs the extra "
          "thread competes with the server's for the second one."
          % (min(srv), max(srv), min(cli), max(cli), min(esrv), max(esrv), min(ecli), max(ecli)),
          "", END]
    text = open(a.output).read() if os.path.exists(a.output) else ""
    i, j = text.find(BEGIN), text.find(END)
    section = "\n".join(o) + "\n"
    if i != -1 and j > i:
        rest = text[j + len(END):].lstrip("\n")
        text = text[:i] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(a.output, "w") as f:
        f.write(text)
    core.log("\n".join(o))


if __name__ == "__main__":
    main()
