#!/usr/bin/env python3
"""testlog-count.py: one pass's results, from meson's JSON test log, with
every skip checked against the allow-list (scripts/test.sh calls it).

    testlog-count.py LOG ALLOWLIST [SUITE...]

Meson's log has, for each test program, its result and its whole stdout:
the TAP stream, where the skips are.  A skip is a whole program's
("1..0 # SKIP why"; meson's result is then SKIP) or one TAP test's
("ok N - what # SKIP why", "ok N # SKIP why"; the result stays OK), so
meson's own counts hide the second kind.

Prints "PASSED FAILED SKIPPED ALLOWED DENIED BROKEN" on the first line
(programs; skips; BROKEN is 1 if a SUITE ran no test or the allow-list is
malformed), then one line per skip, per missing SUITE and per allow-list
error.  A program with a skip the allow-list does not allow counts as
failed; a SKIP program whose skip is allowed counts as skipped.

The allow-list: "TEST REASON-PATTERN" lines (TEST as meson names it, without
its suites; REASON-PATTERN an fnmatch pattern for the skip's reason), in
blocks of lines that open with "#" comment lines saying why the skip is
acceptable.  An entry in a block without a comment is an error.
"""
import fnmatch
import json
import re
import sys


def read_allowlist(path):
    entries, errors, commented = [], [], False
    with open(path) as f:
        for num, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                commented = False
            elif line.startswith("#"):
                commented = True
            elif not commented:
                errors.append(f"{path}:{num}: an entry without a comment saying why: {line}")
            elif len(line.split(None, 1)) != 2:
                errors.append(f"{path}:{num}: not TEST REASON-PATTERN: {line}")
            else:
                test, pattern = line.split(None, 1)
                entries.append((test, pattern, num))
    return entries, errors


def skip_reason(line):
    """The reason of a skip directive on a TAP line, or None.  The directive
    follows the first '#' not escaped with a backslash (as meson reads it)."""
    m = re.search(r"(?<!\\)#(.*)$", line)
    m = m and re.match(r"\s*skip\S*\s*(.*)$", m.group(1), re.IGNORECASE)
    if not m:
        return None
    return m.group(1).strip() or "(no reason given)"


def program_skips(result, stdout):
    skips = []                  # (where, reason)
    for line in stdout.splitlines():
        if re.match(r"1\.\.0(\s|$)", line):
            skips.append(("whole program", skip_reason(line) or "(no reason given)"))
        elif re.match(r"(not )?ok\b", line):
            why = skip_reason(line)
            if why is not None:
                number = re.match(r"(not )?ok\s*(\d*)", line).group(2)
                skips.append((f"TAP test {number}" if number else "a TAP test", why))
    if result == "SKIP" and not skips:
        skips.append(("whole program", "(exit status 77)"))
    return skips


def main():
    log, allowlist, required = sys.argv[1], sys.argv[2], sys.argv[3:]
    # "project:suite" (as meson --suite takes it) names the suite alone.
    required = [r.partition(":")[2] or r for r in required]
    entries, errors = read_allowlist(allowlist)
    passed = failed = skipped = allowed = denied = 0
    lines, suites = [], set()

    with open(log) as f:
        for raw in f:
            if not raw.strip():
                continue
            r = json.loads(raw)
            # "project:suite+suite / name"
            head, _, test = r["name"].partition(" / ")
            suites.update(head.partition(":")[2].split("+"))
            result = r.get("result")
            bad = False
            for where, why in program_skips(result, r.get("stdout") or ""):
                num = next((n for t, pattern, n in entries
                            if t == test and fnmatch.fnmatchcase(why, pattern)), None)
                if num is None:
                    denied += 1
                    bad = True
                    lines.append(f"  skip: {test}, {where}: {why} [NOT ALLOWED: not in {allowlist}]")
                else:
                    allowed += 1
                    lines.append(f"  skip: {test}, {where}: {why} [allowed: {allowlist}:{num}]")
            if bad:
                failed += 1
            elif result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1

    missing = [s for s in required if s not in suites]
    lines += [f"  missing: no test of the suite '{s}' ran" for s in missing]
    lines += [f"  {e}" for e in errors]
    print(passed, failed, skipped, allowed, denied, 1 if missing or errors else 0)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
