/* fuzz-client.c: the libFuzzer harness.  The fuzz input is the server's
 * side of a connection (fuzz-session.h has the format): libFuzzer mutates
 * what the server says, through the handshake and a run of commands, and
 * the core, built with -fsanitize=fuzzer-no-link,address,undefined, must
 * never crash, leak, trip UBSan or break a promise fuzz-session.c checks.
 *
 *   fuzz-client CORPUS_DIR [-max_total_time=N ...]   fuzz
 *   fuzz-client FILE...                              replay inputs once each
 */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz-session.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  /* The client sends with MSG_NOSIGNAL; this is for the harness's own. */
  signal (SIGPIPE, SIG_IGN);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  fuzz_replay (data, size, NULL);
  return 0;
}
