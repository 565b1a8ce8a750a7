/* callbacks: feature tests with the LIBNBD_HAVE_* witness macros, and the
 * lifetime rules of every callback type, as a libnbd 1.14 program uses them.
 *
 * Compile time: code paths chosen with #ifdef LIBNBD_HAVE_NBD_<CALL> and
 * LIBNBD_HAVE_NBD_<TYPE>_CALLBACK: each 1.14 feature's path is compiled in,
 * each later feature's (1.16+) is not, and the witnesses are 1.
 * Run time, against nbdkit memory: NBD_NULL_COMPLETION; completion
 * callbacks returning 1 (auto-retire) and 0 (retired by
 * nbd_aio_command_completed, which runs .free); the documented order
 * "mid-command callbacks, completion, mid-command free, completion free";
 * .callback = NULL with .free; a failed aio call calls no callback and frees
 * each once; the list and context callbacks of nbd_opt_list and
 * nbd_opt_list_meta_context; the debug callback (replaced, cleared, and
 * freed by nbd_close); completed but unretired commands freed by nbd_close.
 * Every .free runs exactly once.  Built against libnbd-core and the system
 * libnbd; both must pass.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

/* ---- Compile-time feature tests ---- */

#ifdef LIBNBD_HAVE_NBD_OPT_LIST
#define HAVE_LISTING 1
#else
#define HAVE_LISTING 0
#endif

#ifdef LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE
#define HAVE_PREAD_INITIALIZE 1
#else
#define HAVE_PREAD_INITIALIZE 0
#endif

#if defined LIBNBD_HAVE_NBD_GET_BLOCK_SIZE && defined LIBNBD_HAVE_NBD_SET_REQUEST_BLOCK_SIZE
#define HAVE_BLOCK_SIZE 1
#else
#define HAVE_BLOCK_SIZE 0
#endif

#if defined LIBNBD_HAVE_NBD_CHUNK_CALLBACK && defined LIBNBD_HAVE_NBD_COMPLETION_CALLBACK && \
    defined LIBNBD_HAVE_NBD_DEBUG_CALLBACK && defined LIBNBD_HAVE_NBD_EXTENT_CALLBACK && \
    defined LIBNBD_HAVE_NBD_LIST_CALLBACK && defined LIBNBD_HAVE_NBD_CONTEXT_CALLBACK
#define HAVE_CALLBACK_TYPES 1
#else
#define HAVE_CALLBACK_TYPES 0
#endif

#if LIBNBD_HAVE_NBD_PREAD == 1 && LIBNBD_HAVE_NBD_AIO_PREAD == 1 && LIBNBD_HAVE_NBD_CLOSE == 1
#define WITNESS_IS_ONE 1
#else
#define WITNESS_IS_ONE 0
#endif

/* Calls that appeared after 1.14: a 1.14-compatible header has none. */
static const struct { const char *name; int defined; } later[] = {
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_SENT
  { "nbd_stats_bytes_sent", 1 },
#else
  { "nbd_stats_bytes_sent", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_OPT_STARTTLS
  { "nbd_opt_starttls", 1 },
#else
  { "nbd_opt_starttls", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_POLL2
  { "nbd_poll2", 1 },
#else
  { "nbd_poll2", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
  { "nbd_block_status_64", 1 },
#else
  { "nbd_block_status_64", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_SET_SOCKET_ACTIVATION_NAME
  { "nbd_set_socket_activation_name", 1 },
#else
  { "nbd_set_socket_activation_name", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_GET_SUBPROCESS_PID
  { "nbd_get_subprocess_pid", 1 },
#else
  { "nbd_get_subprocess_pid", 0 },
#endif
#ifdef LIBNBD_HAVE_NBD_IS_URI
  { "nbd_is_uri", 1 },
#else
  { "nbd_is_uri", 0 },
#endif
};

/* ---- Run-time: a trace of callback events ---- */

static char trace[256];
static size_t trace_len;

static void
event (char c)
{
  if (trace_len < sizeof trace - 1)
    trace[trace_len++] = c;
  trace[trace_len] = '\0';
}

static void
trace_reset (void)
{
  trace_len = 0;
  trace[0] = '\0';
}

/* chunk: 'c', its free 'f'; completion: 'C', its free 'F'. */
static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  event ('c');
  return 0;
}

static void
chunk_free (void *user_data)
{
  event ('f');
}

static int
completion_retire (void *user_data, int *error)
{
  event ('C');
  return 1;
}

static int
completion_keep (void *user_data, int *error)
{
  event ('C');
  return 0;
}

static void
completion_free (void *user_data)
{
  event ('F');
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  event ('e');
  return 0;
}

static void
extent_free (void *user_data)
{
  event ('x');
}

static int
list_cb (void *user_data, const char *name, const char *description)
{
  event ('l');
  return 0;
}

static void
list_free (void *user_data)
{
  event ('L');
}

static int
context_cb (void *user_data, const char *name)
{
  int *base = user_data;

  if (strcmp (name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    (*base)++;
  event ('m');
  return 0;
}

static void
context_free (void *user_data)
{
  event ('M');
}

static int debug_calls[2], debug_frees[2];

static int
debug_cb (void *user_data, const char *context, const char *msg)
{
  debug_calls[*(int *) user_data]++;
  return 0;
}

static void
debug_free (void *user_data)
{
  debug_frees[*(int *) user_data]++;
}

static size_t
count_char (const char *s, char c)
{
  size_t n = 0;
  for (; *s; s++)
    n += *s == c;
  return n;
}

/* Wait for @cookie with nbd_poll; returns what nbd_aio_command_completed
 * last returned. */
static int
wait_cookie (struct nbd_handle *h, int64_t cookie)
{
  int r;

  while ((r = nbd_aio_command_completed (h, cookie)) == 0)
    if (nbd_poll (h, 10000) <= 0)
      break;
  return r;
}

int
main (void)
{
  const char *args[] = { "memory", "size=1M", NULL };
  struct test_server srv;
  struct nbd_handle *h;
  static char buf[65536];
  int ids[2] = { 0, 1 };
  int64_t c;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  /* ---- Compile-time results ---- */
  ok (HAVE_LISTING, "LIBNBD_HAVE_NBD_OPT_LIST: the listing path is compiled in");
  ok (HAVE_PREAD_INITIALIZE, "LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE is defined");
  ok (HAVE_BLOCK_SIZE, "LIBNBD_HAVE_NBD_GET_BLOCK_SIZE and ..._SET_REQUEST_BLOCK_SIZE");
  ok (HAVE_CALLBACK_TYPES, "the six LIBNBD_HAVE_NBD_*_CALLBACK type witnesses");
  ok (WITNESS_IS_ONE, "witness macros are 1 in #if");
  for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
    is_int (later[i].defined, 0, "no witness for %s (newer than 1.14)", later[i].name);

  if (server_start_nbdkit (&srv, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));

  /* ---- Debug callback: replaced, cleared, freed by close ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  ok (nbd_set_debug (h, true) == 0, "nbd_set_debug true");
  is_int (nbd_get_debug (h), 1, "nbd_get_debug");
  ok (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                                        .user_data = &ids[0],
                                                        .free = debug_free }) == 0,
      "nbd_set_debug_callback");
  must (nbd_set_export_name (h, ""));
  ok (debug_calls[0] > 0, "the debug callback receives messages");
  ok (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                                        .user_data = &ids[1],
                                                        .free = debug_free }) == 0,
      "replace the debug callback");
  is_int (debug_frees[0], 1, "replacing frees the old one once");
  ok (nbd_clear_debug_callback (h) == 0, "nbd_clear_debug_callback");
  is_int (debug_frees[1], 1, "clearing frees the second one once");
  ok (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = debug_cb,
                                                        .user_data = &ids[1],
                                                        .free = debug_free }) == 0,
      "set it again");
  must (nbd_set_debug (h, false));

  /* Settings a program applies only where the library has them. */
#ifdef LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE
  ok (nbd_set_pread_initialize (h, false) == 0, "#ifdef path: nbd_set_pread_initialize false");
  is_int (nbd_get_pread_initialize (h), 0, "#ifdef path: nbd_get_pread_initialize");
  must (nbd_set_pread_initialize (h, true));
#endif
#if HAVE_BLOCK_SIZE
  is_int (nbd_get_request_block_size (h), 1, "#if path: block sizes are requested by default");
#endif
#ifdef LIBNBD_HAVE_NBD_STATS_BYTES_SENT
  ok (0, "a 1.16 call is compiled in: %" PRIu64, nbd_stats_bytes_sent (h));
#endif

#if HAVE_LISTING
  /* ---- Option mode: list and context callbacks ---- */
  ok (nbd_set_opt_mode (h, true) == 0, "nbd_set_opt_mode");
  if (!ok (nbd_connect_unix (h, srv.sock) == 0, "connect in option mode"))
    bail_out ("%s", nbd_get_error ());
  trace_reset ();
  is_int (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .free = list_free }), 1,
          "nbd_opt_list: nbdkit lists one export");
  is_str (trace, "lL", "the list callback ran once, then its .free");
  {
    int base = 0;
    int n;

    trace_reset ();
    n = nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                               .user_data = &base,
                                                               .free = context_free });
    ok (n >= 1, "nbd_opt_list_meta_context lists the contexts (%d)", n);
    is_int (base, 1, "base:allocation is among them, once");
    is_uint (count_char (trace, 'm'), (unsigned) (n > 0 ? n : 0),
             "the context callback ran once per context");
    is_uint (count_char (trace, 'M'), 1, "its .free ran once");
    ok (trace_len > 0 && trace[trace_len - 1] == 'M', "and last");
  }
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!ok (nbd_opt_go (h) == 0, "nbd_opt_go"))
    bail_out ("%s", nbd_get_error ());
#else
  ok (0, "LIBNBD_HAVE_NBD_OPT_LIST is missing: the plain connect path was compiled");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_unix (h, srv.sock) == -1)
    bail_out ("%s", nbd_get_error ());
#endif

  /* ---- NBD_NULL_COMPLETION ---- */
  c = nbd_aio_pwrite (h, "hello", 5, 0, NBD_NULL_COMPLETION, 0);
  ok (c > 0, "nbd_aio_pwrite with NBD_NULL_COMPLETION");
  is_int (wait_cookie (h, c), 1, "retired with nbd_aio_command_completed");
  c = nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
  is_int (wait_cookie (h, c), 1, "nbd_aio_flush with NBD_NULL_COMPLETION");

  /* ---- Completion returning 1: retired at once; frees in order ---- */
  trace_reset ();
  c = nbd_aio_pread_structured (h, buf, sizeof buf, 0,
                                (nbd_chunk_callback) { .callback = chunk_cb, .free = chunk_free },
                                (nbd_completion_callback) { .callback = completion_retire,
                                                            .free = completion_free }, 0);
  ok (c > 0, "nbd_aio_pread_structured, completion returning 1");
  while (strchr (trace, 'F') == NULL && nbd_poll (h, 10000) > 0)
    ;
  ok (strlen (trace) >= 4 && strspn (trace, "c") == strlen (trace) - 3 &&
      strcmp (trace + strlen (trace) - 3, "CfF") == 0,
      "chunks, completion, chunk free, completion free (%s)", trace);
  is_int (nbd_aio_command_completed (h, c), 0, "an auto-retired cookie reads as not completed");
  ok (memcmp (buf, "hello", 5) == 0, "the read saw the write");

  /* ---- Completion returning 0: .free waits for retirement ---- */
  trace_reset ();
  c = nbd_aio_pread_structured (h, buf, 4096, 0,
                                (nbd_chunk_callback) { .callback = chunk_cb, .free = chunk_free },
                                (nbd_completion_callback) { .callback = completion_keep,
                                                            .free = completion_free }, 0);
  ok (c > 0, "nbd_aio_pread_structured, completion returning 0");
  while (strchr (trace, 'C') == NULL && nbd_poll (h, 10000) > 0)
    ;
  is_str (trace, "cC", "one chunk, then the completion; no free yet");
  is_int (nbd_aio_peek_command_completed (h), c, "nbd_aio_peek_command_completed names it");
  is_int (nbd_aio_command_completed (h, c), 1, "nbd_aio_command_completed retires it");
  is_str (trace, "cCfF", "retiring runs the chunk free, then the completion free");

  /* ---- .callback = NULL with .free ---- */
  trace_reset ();
  c = nbd_aio_pwrite (h, buf, 512, 0, (nbd_completion_callback) { .free = completion_free }, 0);
  ok (c > 0, "nbd_aio_pwrite with only a completion .free");
  is_int (wait_cookie (h, c), 1, "it completes and is retired");
  is_str (trace, "F", "its .free ran once");

  /* ---- Block status with an extent callback and free ---- */
  trace_reset ();
  ok (nbd_block_status (h, 65536, 0, (nbd_extent_callback) { .callback = extent_cb,
                                                             .free = extent_free }, 0) == 0,
      "nbd_block_status");
  is_str (trace, "ex", "one extent callback, then its .free");
  trace_reset ();
  c = nbd_aio_block_status (h, 65536, 0,
                            (nbd_extent_callback) { .callback = extent_cb, .free = extent_free },
                            (nbd_completion_callback) { .callback = completion_retire,
                                                        .free = completion_free }, 0);
  ok (c > 0, "nbd_aio_block_status");
  while (strchr (trace, 'F') == NULL && nbd_poll (h, 10000) > 0)
    ;
  is_str (trace, "eCxF", "extent, completion, extent free, completion free");

  /* ---- A failed aio call: no callback, each free once ---- */
  trace_reset ();
  c = nbd_aio_pread_structured (h, buf, 512, 2 * 1024 * 1024,
                                (nbd_chunk_callback) { .callback = chunk_cb, .free = chunk_free },
                                (nbd_completion_callback) { .callback = completion_retire,
                                                            .free = completion_free }, 0);
  is_int (c, -1, "an out-of-bounds nbd_aio_pread_structured fails");
  is_errno (EINVAL, "with EINVAL");
  is_uint (count_char (trace, 'c') + count_char (trace, 'C'), 0, "no callback ran");
  is_uint (count_char (trace, 'f'), 1, "the chunk .free ran once");
  is_uint (count_char (trace, 'F'), 1, "the completion .free ran once");
  trace_reset ();
  c = nbd_aio_flush (h, (nbd_completion_callback) { .callback = completion_retire,
                                                    .free = completion_free }, 0x4);
  is_int (c, -1, "nbd_aio_flush with a bad flag fails");
  is_str (trace, "F", "its completion is only freed");

  /* ---- Completed, unretired commands are freed by nbd_close ---- */
  trace_reset ();
  c = nbd_aio_pread_structured (h, buf, 512, 0,
                                (nbd_chunk_callback) { .callback = chunk_cb, .free = chunk_free },
                                (nbd_completion_callback) { .callback = completion_keep,
                                                            .free = completion_free }, 0);
  ok (c > 0, "one more read, its completion keeping it");
  while (strchr (trace, 'C') == NULL && nbd_poll (h, 10000) > 0)
    ;
  is_str (trace, "cC", "it completed; not retired, not freed");
  ok (nbd_shutdown (h, 0) == 0, "nbd_shutdown");
  is_str (trace, "cC", "nbd_shutdown does not retire it");
  is_int (debug_frees[1], 1, "the current debug callback is still set");
  nbd_close (h);
  is_str (trace, "cCfF", "nbd_close frees it: the chunk .free, then the completion .free");
  is_int (debug_frees[1], 2, "nbd_close frees the debug callback once");

  server_stop (&srv);
  return done_testing ();
}
