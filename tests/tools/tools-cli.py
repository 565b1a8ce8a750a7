#!/usr/bin/python3
"""tools-cli: the command line of gnbd itself: --help of every command and
the manual page agree (every option of every --help is in gnbd(1), which
groff reads without a warning), --version, the documented exit codes of a
bad command line, refused operands, a server that cannot be reached, and
that the tool and its page are installed."""
import json
import os
import re
import subprocess

import tooltest as t

t.start()
COMMANDS = ["info", "list", "map", "copy"]

p = t.gnbd()
t.eq(p.returncode, 3, "no command: exit 3 (bad command line)")
t.ok("which command" in p.err, "and says what is missing", p.err)

p = t.gnbd("--help")
t.eq(p.returncode, 0, "gnbd --help exits 0")
main_help = p.stdout.decode()
t.ok(all(f"  {c} " in main_help for c in COMMANDS), "and names every command", main_help)

p = t.gnbd("--version")
version = p.stdout.decode().strip()
t.ok(p.returncode == 0 and re.fullmatch(r"gnbd \d+\.\d+\.\d+", version),
     "gnbd --version prints 'gnbd X.Y.Z'", version)

man_src = open(os.environ["GNBD_MAN_PAGE"]).read()
t.ok(f'"gnbd {version.split()[1]}"' in man_src, "the manual page carries the same version",
     man_src.splitlines()[4])
g = t.run(["groff", "-man", "-ww", "-z", os.environ["GNBD_MAN_PAGE"]])
t.ok(g.returncode == 0 and g.err == "", "groff reads gnbd.1 without a warning", g.err)
g = t.run(["groff", "-man", "-Tascii", "-P-cbou", os.environ["GNBD_MAN_PAGE"]])
man_text = g.stdout.decode()

helps = {}
for c in COMMANDS:
    p = t.gnbd(c, "--help")
    helps[c] = p.stdout.decode()
    t.ok(p.returncode == 0 and helps[c].startswith(f"Usage: gnbd {c}"),
         f"gnbd {c} --help: exit 0, a usage line", helps[c][:200])
    q = t.gnbd("help", c)
    t.eq(q.stdout.decode(), helps[c], f"gnbd help {c} says the same")
    options = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", helps[c])))
    missing = [o for o in options if o not in man_text]
    t.ok(options and not missing, f"every option of gnbd {c} --help is in gnbd(1)",
         f"missing: {missing}")
    t.ok(re.search(rf"^{c.upper()}$", man_text, re.M) is not None,
         f"gnbd(1) has a section for {c}")

# Bad command lines: exit 3 with a message, before anything is started.
bad = [
    (["bogus"], "no command 'bogus'"),
    (["info", "--bogus", "nbd://x"], "unknown option '--bogus'"),
    (["info", "-q", "nbd://x"], "unknown option '-q'"),
    (["info"], "which server"),
    (["info", "a.img"], "is not an NBD URI"),
    (["info", "--can", "fly", "nbd://x"], "unknown flag 'fly'"),
    (["info", "--size", "--can", "zero", "nbd://x"], "go alone"),
    (["info", "[", "nbdkit", "null"], "without its ']'"),
    (["info", "[", "]"], "names no server command"),
    (["map", "--json=yes", "nbd://x"], "takes no value"),
    (["list", "nbd://x", "nbd://y"], "give one NBD URI"),
    (["copy", "nbd://x"], "a source and a destination"),
    (["copy", "null:", "out.img"], "null: is a destination only"),
    (["copy", "--request-size", "1X", "a", "b"], "not a size"),
    (["copy", "--request-size", "100", "a", "b"], "not a size from 512 bytes to 32 MiB"),
    (["copy", "--request-size", "64M", "a", "b"], "not a size"),
    (["copy", "--sparse", "-1", "a", "b"], "not a size"),
    (["copy", "--sparse", "99999999999999999999999", "a", "b"], "not a size"),
    (["copy", "-C", "0", "a", "b"], "not a number from 1 to 64"),
    (["copy", "-C65", "a", "b"], "not a number from 1 to 64"),
    (["copy", "-R", "x", "a", "b"], "not a number from 1 to 1024"),
    (["copy", "--progress=99", "a", "b"], "not an open file descriptor"),
    (["copy", "--progress=0", "a", "b"], "not an open file descriptor"),
    (["copy", "--connections"], "needs a value"),
    (["copy", "--progress=1", "nbd://x", "-"], "would mix progress lines"),
]
for argv, msg in bad:
    p = t.gnbd(*argv)
    t.ok(p.returncode == 3 and msg in p.err and "Try 'gnbd" in p.err,
         f"gnbd {' '.join(argv)}: exit 3, '{msg}'", f"exit {p.returncode}: {p.err}")

# A server that is not there: exit 1 naming it; --can connect answers 2.
uri = f"nbd+unix:///?socket={t.path('nothing.sock')}"
p = t.gnbd("info", uri)
t.ok(p.returncode == 1 and uri in p.err, "no server: exit 1, the message names the URI",
     f"exit {p.returncode}: {p.err}")
p = t.gnbd("info", "--can", "connect", uri)
t.eq(p.returncode, 2, "--can connect to no server: exit 2 (false)")
p = t.gnbd("copy", uri, "null:")
t.ok(p.returncode == 1 and "source" in p.err and uri in p.err,
     "copy from no server: exit 1, the message names the source", p.err)
for cmd in ("info", "list", "map"):
    p = t.gnbd(cmd, "[", "/nonexistent/server", "]")
    t.ok(p.returncode == 1 and "/nonexistent/server" in p.err and "no such" in p.err.lower(),
         f"{cmd}: a server command that cannot run: exit 1, named, the cause said",
         f"exit {p.returncode}: {p.err}")

# Installed: the tool and its page.
p = t.run(["meson", "introspect", "--installed", os.environ["MESON_BUILD_ROOT"]])
installed = json.loads(p.stdout).values()
t.ok(any(i.endswith("/bin/gnbd") for i in installed), "gnbd is installed in bin/",
     list(installed))
t.ok(any(i.endswith("/man1/gnbd.1") for i in installed), "gnbd.1 is installed in man1/")

t.done()
