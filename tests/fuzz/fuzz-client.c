/* fuzz-client.c: the libFuzzer harness.  The fuzz input is the server's
 * side of a connection (fuzz-session.h has the format): libFuzzer mutates
 * what the server says, through the handshake and a run of commands, and
 * the core, built with -fsanitize=fuzzer-no-link,address,undefined, must
 * never crash, leak, trip UBSan or break a promise fuzz-session.c checks.
 * The connection is the in-memory socket of fuzz-socket.h: no process,
 * thread or system call per byte, thousands of sessions a second.
 *
 *   fuzz-client CORPUS_DIR [-max_total_time=N ...]   fuzz
 *   fuzz-client FILE...                              replay inputs once each
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz-session.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
const char *__asan_default_options (void);

/* ASan's defaults for this program; ASAN_OPTIONS still overrides them.  A
 * session frees well under 1 MiB, so a 32 MiB quarantine still catches a
 * use after free across dozens of sessions; the default 256 MiB keeps
 * handing out fresh pages (in a profile, a quarter of the time went to page
 * faults; with 32 MiB, 6 %). */
const char *
__asan_default_options (void)
{
  return "quarantine_size_mb=32";
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  fuzz_replay (data, size, NULL);
  return 0;
}
