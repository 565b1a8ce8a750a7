/* errors: every failure a libnbd 1.14 program can meet, with its errno
 * (nbd_get_errno) and the "nbd_<call>: " that starts nbd_get_error().
 *
 * Client-side: ENOTCONN (I/O on a handle never connected, checked before
 * anything else), EINVAL (unknown and unsupported flags, trim/zero the
 * server does not offer, reads out of bounds, zero length, a setter in the
 * wrong state, an option call outside option mode, cookie 0), ENOSPC
 * (writes, trims and zeroes out of bounds), EPERM (write to nbdkit -r),
 * ENAMETOOLONG (a 4097-byte export name), EFAULT (extent and chunk closures
 * with neither .callback nor .free; with only .free they are legal), ERANGE
 * (a read of 64 MiB + 1 within bounds; bounds are checked first), ESRCH
 * (nbd_kill_subprocess with none), ENOENT (a socket that does not exist),
 * ENOTSUP (block status with no meta context); the same closure rules for
 * nbd_opt_list, nbd_opt_list_meta_context and nbd_set_debug_callback, and
 * EINVAL for I/O while negotiating.  Server-side, through
 * nbdkit's error filter: EIO from reads and ENOSPC from writes, in the sync
 * calls and in the aio completion callback, with the handle still usable.
 * Each failing call frees its callbacks exactly once.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define MiB (1024 * 1024)

/* Check the failure the last call left: errno @want, message starting with
 * "@fn: ".  Reads the error before anything else can touch it. */
static void
check_error (const char *fn, int want, const char *what)
{
  int err = nbd_get_errno ();
  const char *msg = nbd_get_error ();
  size_t n = strlen (fn);

  is_int (err, want, "%s: errno is %s", what, strerrorname_np (want));
  ok (msg != NULL && strncmp (msg, fn, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ',
      "%s: the message starts with \"%s: \" (%s)", what, fn, msg ? msg : "NULL");
}

#define FAILS(call, fn, want, what)                               \
  do {                                                            \
    ok ((call) == -1, "%s fails", (what));                        \
    check_error ((fn), (want), (what));                           \
  } while (0)

#define FAILS_NULL(call, fn, want, what)                          \
  do {                                                            \
    ok ((call) == NULL, "%s fails", (what));                      \
    check_error ((fn), (want), (what));                           \
  } while (0)

static int frees;
static int calls;

static void
count_free (void *user_data)
{
  frees++;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  calls++;
  return 0;
}

static int
completion_cb (void *user_data, int *error)
{
  int *seen = user_data;
  *seen = *error;
  calls++;
  return 0;
}

int
main (void)
{
  const char *ro_args[] = { "-r", "memory", "size=1M", NULL };
  const char *big_args[] = { "memory", "size=128M", NULL };
  const char *err_args[] = {
    "--filter=error", "memory", "size=1M",
    "error-pread=EIO", "error-pread-rate=100%",
    "error-pwrite=ENOSPC", "error-pwrite-rate=100%", NULL
  };
  struct test_server ro, big, errsrv;
  struct nbd_handle *h;
  char buf[512];
  char *name, *huge;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  if (server_start_nbdkit (&ro, ro_args) == -1 || server_start_nbdkit (&big, big_args) == -1 ||
      server_start_nbdkit (&errsrv, err_args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));

  /* ---- A handle never connected ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  FAILS (nbd_pread (h, buf, sizeof buf, 0, 0), "nbd_pread", ENOTCONN,
         "nbd_pread on a new handle");
  FAILS (nbd_pwrite (h, buf, sizeof buf, 0, 0), "nbd_pwrite", ENOTCONN,
         "nbd_pwrite on a new handle");
  FAILS (nbd_flush (h, 0), "nbd_flush", ENOTCONN, "nbd_flush on a new handle");
  FAILS (nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0), "nbd_aio_pread",
         ENOTCONN, "nbd_aio_pread on a new handle");
  FAILS (nbd_get_size (h), "nbd_get_size", ENOTCONN, "nbd_get_size on a new handle");
  FAILS (nbd_opt_go (h), "nbd_opt_go", ENOTCONN, "nbd_opt_go on a new handle");
  frees = 0;
  FAILS (nbd_block_status (h, 512, 0, (nbd_extent_callback) { .callback = NULL }, 0),
         "nbd_block_status", ENOTCONN, "a NULL extent closure on a new handle: the state first");
  FAILS (nbd_aio_pread_structured (h, buf, sizeof buf, 0, (nbd_chunk_callback) { .callback = NULL },
                                   (nbd_completion_callback) { .free = count_free }, 0),
         "nbd_aio_pread_structured", ENOTCONN,
         "a NULL chunk closure on a new handle: the state first");
  is_int (frees, 1, "the completion's .free ran once");
  FAILS (nbd_kill_subprocess (h, 0), "nbd_kill_subprocess", ESRCH,
         "nbd_kill_subprocess with no subprocess");

  /* Settings with bad values. */
  FAILS (nbd_set_handshake_flags (h, 0x100), "nbd_set_handshake_flags", EINVAL,
         "an unknown handshake flag");
  FAILS (nbd_set_strict_mode (h, 0x100), "nbd_set_strict_mode", EINVAL,
         "an unknown strict flag");
  FAILS (nbd_set_tls (h, 3), "nbd_set_tls", EINVAL, "an unknown TLS setting");

  /* Export names: 4096 bytes are fine, 4097 are too long. */
  name = malloc (4098);
  if (!name)
    bail_out ("malloc");
  memset (name, 'a', 4097);
  name[4096] = '\0';
  ok (nbd_set_export_name (h, name) == 0, "a 4096-byte export name is accepted");
  name[4096] = 'a';
  name[4097] = '\0';
  FAILS (nbd_set_export_name (h, name), "nbd_set_export_name", ENAMETOOLONG,
         "a 4097-byte export name");
  {
    char *n = nbd_get_export_name (h);
    is_uint (n ? strlen (n) : 0, 4096, "the 4096-byte name stays set");
    free (n);
  }
  free (name);
  must (nbd_set_export_name (h, ""));

  /* The debug callback: empty is EFAULT, only .free is legal. */
  FAILS (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = NULL }),
         "nbd_set_debug_callback", EFAULT, "an empty debug closure");
  frees = 0;
  ok (nbd_set_debug_callback (h, (nbd_debug_callback) { .free = count_free }) == 0,
      "a debug closure with only .free is accepted");
  ok (nbd_clear_debug_callback (h) == 0 && frees == 1, "and nbd_clear_debug_callback frees it");

  /* Connecting to nothing. */
  FAILS (nbd_connect_unix (h, "/nonexistent/socket/for/t4"), "nbd_connect_unix", ENOENT,
         "nbd_connect_unix to a missing socket");
  nbd_close (h);

  /* ---- A read-only server ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_unix (h, ro.sock) == -1)
    bail_out ("connect to nbdkit -r: %s", nbd_get_error ());
  FAILS (nbd_pwrite (h, buf, sizeof buf, 0, 0), "nbd_pwrite", EPERM, "nbd_pwrite to nbdkit -r");
  /* A read-only export offers neither trim nor zero, and that is checked
   * before read-only-ness. */
  FAILS (nbd_trim (h, 512, 0, 0), "nbd_trim", EINVAL, "nbd_trim to nbdkit -r (no trim)");
  FAILS (nbd_zero (h, 512, 0, 0), "nbd_zero", EINVAL, "nbd_zero to nbdkit -r (no zero)");
  frees = 0;
  FAILS (nbd_aio_pwrite (h, buf, sizeof buf, 0,
                         (nbd_completion_callback) { .free = count_free }, 0),
         "nbd_aio_pwrite", EPERM, "nbd_aio_pwrite to nbdkit -r");
  is_int (frees, 1, "the failed aio call freed its completion callback once");

  /* Setters for connection-time settings, now that it is connected. */
  FAILS (nbd_set_export_name (h, "x"), "nbd_set_export_name", EINVAL,
         "nbd_set_export_name while connected");
  FAILS (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), "nbd_add_meta_context", EINVAL,
         "nbd_add_meta_context while connected");
  FAILS (nbd_set_opt_mode (h, true), "nbd_set_opt_mode", EINVAL,
         "nbd_set_opt_mode while connected");
  FAILS (nbd_set_tls (h, LIBNBD_TLS_DISABLE), "nbd_set_tls", EINVAL, "nbd_set_tls while connected");
  FAILS (nbd_connect_unix (h, ro.sock), "nbd_connect_unix", EINVAL,
         "a second nbd_connect_unix on the same handle");
  FAILS (nbd_opt_list (h, (nbd_list_callback) { .callback = NULL }), "nbd_opt_list", EINVAL,
         "nbd_opt_list when not negotiating");
  FAILS (nbd_opt_abort (h), "nbd_opt_abort", EINVAL, "nbd_opt_abort when not negotiating");

  /* Flags and bounds. */
  FAILS (nbd_pread (h, buf, sizeof buf, 0, 0x100), "nbd_pread", EINVAL, "an unknown pread flag");
  FAILS (nbd_pread (h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_FUA), "nbd_pread", EINVAL,
         "FUA on a read");
  FAILS (nbd_flush (h, LIBNBD_CMD_FLAG_FUA), "nbd_flush", EINVAL, "FUA on a flush");
  FAILS (nbd_pread (h, buf, sizeof buf, 1 * MiB - 256, 0), "nbd_pread", EINVAL,
         "a read past the end");
  FAILS (nbd_cache (h, 512, 1 * MiB - 256, 0), "nbd_cache", EINVAL, "a cache past the end");
  FAILS (nbd_pread (h, buf, 1, UINT64_MAX, 0), "nbd_pread", EINVAL, "a read at offset 2^64-1");
  FAILS (nbd_pread (h, buf, 0, 0, 0), "nbd_pread", EINVAL, "a zero-length read");
  FAILS (nbd_shutdown (h, 0x1), "nbd_shutdown", EINVAL, "an unknown shutdown flag");

  /* Closures where one is required: empty is EFAULT (before the flags are
   * looked at); with only .free it is legal ("Callbacks with .callback=NULL
   * and .free!=NULL" in libnbd(3)). */
  ok (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1, "base:allocation negotiated");
  FAILS (nbd_block_status (h, 512, 0, (nbd_extent_callback) { .callback = NULL }, 0),
         "nbd_block_status", EFAULT, "nbd_block_status with an empty extent closure");
  FAILS (nbd_block_status (h, 512, 0, (nbd_extent_callback) { .callback = NULL }, 0x100),
         "nbd_block_status", EFAULT, "an empty extent closure and a bad flag: EFAULT first");
  frees = 0;
  FAILS (nbd_aio_block_status (h, 512, 0, (nbd_extent_callback) { .callback = NULL },
                               (nbd_completion_callback) { .free = count_free }, 0),
         "nbd_aio_block_status", EFAULT, "nbd_aio_block_status with an empty extent closure");
  is_int (frees, 1, "the completion's .free ran once");
  FAILS (nbd_pread_structured (h, buf, sizeof buf, 0, (nbd_chunk_callback) { .callback = NULL },
                               0),
         "nbd_pread_structured", EFAULT, "nbd_pread_structured with an empty chunk closure");
  frees = 0;
  ok (nbd_block_status (h, 512, 0, (nbd_extent_callback) { .free = count_free }, 0) == 0,
      "nbd_block_status with only an extent .free succeeds");
  is_int (frees, 1, "and runs that .free once");
  frees = 0;
  ok (nbd_pread_structured (h, buf, sizeof buf, 0, (nbd_chunk_callback) { .free = count_free },
                            0) == 0,
      "nbd_pread_structured with only a chunk .free succeeds");
  is_int (frees, 1, "and runs that .free once");

  /* An unknown cookie. */
  FAILS (nbd_aio_command_completed (h, 0), "nbd_aio_command_completed", EINVAL,
         "nbd_aio_command_completed of cookie 0");

  /* The handle is still good after all of that. */
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == 0, "nbd_pread still works after the errors");
  ok (nbd_aio_is_ready (h), "and the handle is ready");
  ok (nbd_shutdown (h, 0) == 0, "nbd_shutdown");
  FAILS (nbd_pread (h, buf, sizeof buf, 0, 0), "nbd_pread", EINVAL,
         "nbd_pread after nbd_shutdown");
  nbd_close (h);

  /* ---- Option mode ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_opt_mode (h, true));
  if (nbd_connect_unix (h, ro.sock) == -1)
    bail_out ("connect in option mode: %s", nbd_get_error ());
  FAILS (nbd_opt_list (h, (nbd_list_callback) { .callback = NULL }), "nbd_opt_list", EFAULT,
         "nbd_opt_list with an empty list closure");
  FAILS (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = NULL }),
         "nbd_opt_list_meta_context", EFAULT,
         "nbd_opt_list_meta_context with an empty context closure");
  frees = 0;
  FAILS (nbd_aio_opt_list (h, (nbd_list_callback) { .callback = NULL },
                           (nbd_completion_callback) { .free = count_free }),
         "nbd_aio_opt_list", EFAULT, "nbd_aio_opt_list with an empty list closure");
  is_int (frees, 1, "its completion's .free ran once");
  frees = 0;
  is_int (nbd_opt_list (h, (nbd_list_callback) { .free = count_free }), 1,
          "nbd_opt_list with only a .free counts the one export");
  is_int (frees, 1, "and runs that .free once");
  FAILS (nbd_pread (h, buf, sizeof buf, 0, 0), "nbd_pread", EINVAL, "nbd_pread while negotiating");
  FAILS (nbd_get_size (h), "nbd_get_size", EINVAL, "nbd_get_size before any export information");
  ok (nbd_aio_is_negotiating (h), "still negotiating after the failures");
  ok (nbd_opt_abort (h) == 0, "nbd_opt_abort");
  ok (nbd_aio_is_closed (h), "closed");
  FAILS (nbd_opt_go (h), "nbd_opt_go", EINVAL, "nbd_opt_go after nbd_opt_abort");
  nbd_close (h);

  /* ---- No meta context requested ---- */
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, ro.sock) == -1)
    bail_out ("connect to nbdkit -r: %s", nbd_get_error ());
  frees = calls = 0;
  FAILS (nbd_block_status (h, 512, 0,
                           (nbd_extent_callback) { .callback = extent_cb, .free = count_free },
                           0),
         "nbd_block_status", ENOTSUP, "nbd_block_status without a meta context");
  is_int (calls, 0, "the extent callback did not run");
  is_int (frees, 1, "its .free ran once");
  frees = 0;
  FAILS (nbd_block_status (h, 512, 0, (nbd_extent_callback) { .free = count_free }, 0),
         "nbd_block_status", ENOTSUP, "an extent closure with only .free, no meta context");
  is_int (frees, 1, "its .free ran once");
  nbd_shutdown (h, 0);
  nbd_close (h);

  /* ---- Too large a request ---- */
  huge = malloc (64 * MiB + 1);
  if (!huge)
    bail_out ("malloc 64 MiB");
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, big.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_get_size (h), 128 * MiB, "a 128 MiB export");
  FAILS (nbd_pread (h, huge, 64 * MiB + 1, 0, 0), "nbd_pread", ERANGE, "a read of 64 MiB + 1");
  FAILS (nbd_pread (h, huge, 64 * MiB + 1, 100 * MiB, 0), "nbd_pread", EINVAL,
         "a read of 64 MiB + 1 that is also out of bounds: bounds first");
  FAILS (nbd_pwrite (h, huge, 64 * MiB + 1, 100 * MiB, 0), "nbd_pwrite", ENOSPC,
         "a write of 64 MiB + 1 that is also out of bounds: ENOSPC");
  FAILS (nbd_pwrite (h, huge, 512, 128 * MiB - 256, 0), "nbd_pwrite", ENOSPC,
         "a write past the end");
  FAILS (nbd_pwrite (h, huge, 1, UINT64_MAX, 0), "nbd_pwrite", ENOSPC, "a write at 2^64-1");
  FAILS (nbd_trim (h, 512, 128 * MiB - 256, 0), "nbd_trim", ENOSPC, "a trim past the end");
  FAILS (nbd_zero (h, 512, 128 * MiB - 256, 0), "nbd_zero", ENOSPC, "a zero past the end");
  FAILS (nbd_trim (h, 0, 0, 0), "nbd_trim", EINVAL, "a zero-length trim");
  FAILS (nbd_pwrite (h, huge, 64 * MiB + 1, 0, 0), "nbd_pwrite", ERANGE,
         "a write of 64 MiB + 1");
  FAILS (nbd_aio_pread (h, huge, 64 * MiB + 1, 0, NBD_NULL_COMPLETION, 0), "nbd_aio_pread",
         ERANGE, "an aio read of 64 MiB + 1");
  ok (nbd_pread (h, huge, 64 * MiB, 0, 0) == 0, "a read of exactly 64 MiB works");
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (huge);

  /* ---- Errors from the server ---- */
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, errsrv.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  FAILS (nbd_pread (h, buf, sizeof buf, 0, 0), "nbd_pread", EIO,
         "nbd_pread when the server fails it with EIO");
  FAILS (nbd_pwrite (h, buf, sizeof buf, 0, 0), "nbd_pwrite", ENOSPC,
         "nbd_pwrite when the server fails it with ENOSPC");
  ok (nbd_aio_is_ready (h), "server errors leave the handle ready");
  ok (nbd_zero (h, 512, 0, 0) == 0, "a zero the filter does not fail succeeds");
  {
    int seen = -1;
    int64_t cookie;
    int r;

    calls = frees = 0;
    cookie = nbd_aio_pread (h, buf, sizeof buf, 0,
                            (nbd_completion_callback) { .callback = completion_cb,
                                                        .user_data = &seen,
                                                        .free = count_free }, 0);
    ok (cookie > 0, "nbd_aio_pread is queued");
    while ((r = nbd_aio_command_completed (h, cookie)) == 0)
      if (nbd_poll (h, 10000) <= 0)
        break;
    is_int (r, -1, "nbd_aio_command_completed reports the failure");
    check_error ("nbd_aio_command_completed", EIO, "the failed aio read");
    is_int (calls, 1, "the completion callback ran once");
    is_int (seen, EIO, "and saw *error == EIO");
    is_int (frees, 1, "its .free ran once");

    seen = -1;
    calls = frees = 0;
    cookie = nbd_aio_pwrite (h, buf, sizeof buf, 0,
                             (nbd_completion_callback) { .callback = completion_cb,
                                                         .user_data = &seen,
                                                         .free = count_free }, 0);
    ok (cookie > 0, "nbd_aio_pwrite is queued");
    while ((r = nbd_aio_command_completed (h, cookie)) == 0)
      if (nbd_poll (h, 10000) <= 0)
        break;
    is_int (r, -1, "nbd_aio_command_completed reports the failure");
    check_error ("nbd_aio_command_completed", ENOSPC, "the failed aio write");
    is_int (seen, ENOSPC, "the completion callback saw *error == ENOSPC");
    is_int (frees, 1, "its .free ran once");
  }
  ok (nbd_shutdown (h, 0) == 0, "nbd_shutdown after server errors");
  nbd_close (h);

  server_stop (&ro);
  server_stop (&big);
  server_stop (&errsrv);
  return done_testing ();
}
