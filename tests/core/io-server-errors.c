/* io-server-errors: an error the server reports for a command reaches the
 * caller as the matching errno, with a message that begins with the call's
 * name, and the handle stays usable: the same call succeeds once the
 * server stops injecting errors.
 *
 * nbdkit's error filter injects EIO, ENOSPC, EPERM, EINVAL, ENOMEM and
 * ESHUTDOWN into pread, pwrite, trim, zero, block status (extents) and
 * cache, each switched on by its own file (error-METHOD-file); reads are
 * checked with and without structured replies, and through the aio calls
 * (nbd_aio_command_completed says -1 with the errno).  Flush, which the
 * error filter cannot fail, fails through an nbdkit eval plugin whose flush
 * script reports the errno named in a file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static const struct {
  const char *name;
  int err;
} errs[] = {
  { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EPERM", EPERM },
  { "EINVAL", EINVAL }, { "ENOMEM", ENOMEM }, { "ESHUTDOWN", ESHUTDOWN },
};

static const char *const methods[] = { "pread", "pwrite", "trim", "zero", "extents", "cache" };

static char dir[4096];

static void
set_file (const char *method, const char *content)
{
  char path[4200];

  snprintf (path, sizeof path, "%s/%s", dir, method);
  if (content) {
    FILE *f = fopen (path, "w");
    if (!f || fputs (content, f) == EOF || fclose (f) == EOF)
      bail_out ("cannot write %s", path);
  }
  else if (unlink (path) == -1 && errno != ENOENT)
    bail_out ("cannot remove %s", path);
}

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  (void) metacontext; (void) offset; (void) entries; (void) nr_entries; (void) error;
  ++*(int *) user_data;
  return 0;
}

/* Issue one command of @method; returns the call's result. */
static int
issue (struct nbd_handle *h, const char *method, const char **callname)
{
  static char buf[4096];
  int calls = 0;

  if (strcmp (method, "pread") == 0) {
    *callname = "nbd_pread";
    return nbd_pread (h, buf, sizeof buf, 4096, 0);
  }
  if (strcmp (method, "pwrite") == 0) {
    *callname = "nbd_pwrite";
    memset (buf, 0x42, sizeof buf);
    return nbd_pwrite (h, buf, sizeof buf, 8192, 0);
  }
  if (strcmp (method, "trim") == 0) {
    *callname = "nbd_trim";
    return nbd_trim (h, 4096, 0, 0);
  }
  if (strcmp (method, "zero") == 0) {
    *callname = "nbd_zero";
    return nbd_zero (h, 4096, 0, 0);
  }
  if (strcmp (method, "extents") == 0) {
    *callname = "nbd_block_status";
    return nbd_block_status (h, 65536, 0,
                             (nbd_extent_callback) { .callback = extent_cb, .user_data = &calls },
                             0);
  }
  *callname = "nbd_cache";
  return nbd_cache (h, 4096, 0, 0);
}

/* An aio read or write the server fails: nbd_aio_command_completed says
 * -1 with the errno, once. */
static void
aio_fails (struct nbd_handle *h, const char *method, const char *ename, int err,
           const char *mode)
{
  static char buf[512];
  int64_t c;
  int r = 0;

  set_file (method, "");
  if (strcmp (method, "pread") == 0)
    c = nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0);
  else
    c = nbd_aio_pwrite (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0);
  ok (c > 0, "%s, %s: aio %s queued", ename, mode, method);
  while (c > 0 && (r = nbd_aio_command_completed (h, c)) == 0)
    if (nbd_poll (h, 5000) == -1)
      break;
  is_int (r, -1, "%s, %s: nbd_aio_command_completed says the %s failed", ename, mode, method);
  is_errno (err, "%s, %s: with %s", ename, mode, ename);
  ok (prefix_is ("nbd_aio_command_completed"),
      "%s, %s: message begins with nbd_aio_command_completed: (%s)", ename, mode,
      nbd_get_error ());
  set_file (method, NULL);
  /* Retired: its failure is not reported twice (libnbd 1.14 and the core
   * answer 0 for any cookie that is not among the completed commands). */
  is_int (nbd_aio_command_completed (h, c), 0, "%s, %s: the retired cookie reads as 0",
          ename, mode);
}

static void
error_filter (const char *uri, const char *ename, int err, bool sr)
{
  struct nbd_handle *h = nbd_create ();
  const char *mode = sr ? "sr" : "no sr";

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_request_structured_replies (h, sr));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s, %s: connect", ename, mode))
    bail_out ("%s", nbd_get_error ());

  for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
    const char *call;

    /* Block status needs structured replies. */
    if (!sr && strcmp (methods[m], "extents") == 0)
      continue;
    int r;

    set_file (methods[m], "");
    r = issue (h, methods[m], &call);
    is_int (r, -1, "%s, %s: %s fails when the server injects %s", ename, mode, call, ename);
    is_errno (err, "%s, %s: %s fails with %s", ename, mode, call, ename);
    ok (prefix_is (call), "%s, %s: message begins with %s: (%s)", ename, mode, call,
        nbd_get_error ());
    set_file (methods[m], NULL);
    r = issue (h, methods[m], &call);
    is_int (r, 0, "%s, %s: %s succeeds again", ename, mode, call);
    is_int (nbd_aio_is_ready (h), 1, "%s, %s: handle still ready", ename, mode);
  }

  /* The same through aio: the cookie's completion carries the errno. */
  aio_fails (h, "pread", ename, err, mode);
  aio_fails (h, "pwrite", ename, err, mode);
  is_int (nbd_shutdown (h, 0), 0, "%s, %s: shutdown", ename, mode);
  nbd_close (h);
}

static void
flush_errors (const char *uri)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  if (!is_int (nbd_connect_uri (h, uri), 0, "flush: connect to nbdkit eval"))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_can_flush (h), 1, "flush: the eval plugin can flush");
  is_int (nbd_flush (h, 0), 0, "flush: succeeds with no error file");
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    set_file ("flush", errs[i].name);
    ok (nbd_flush (h, 0) == -1, "flush: fails when the server says %s", errs[i].name);
    is_errno (errs[i].err, "flush: with %s", errs[i].name);
    ok (prefix_is ("nbd_flush"), "flush: message begins with nbd_flush: (%s)", nbd_get_error ());
    set_file ("flush", NULL);
    is_int (nbd_flush (h, 0), 0, "flush: succeeds again after %s", errs[i].name);
  }
  is_int (nbd_shutdown (h, 0), 0, "flush: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  char opt[6][2][4400];

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  snprintf (dir, sizeof dir, "%s", servers_scratch_dir ());
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    const char *args[32];
    size_t n = 0;

    args[n++] = "--filter=error";
    args[n++] = "memory";
    args[n++] = "size=1M";
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
      snprintf (opt[m][0], sizeof opt[m][0], "error-%s=%s", methods[m], errs[i].name);
      snprintf (opt[m][1], sizeof opt[m][1], "error-%s-file=%s/%s", methods[m], dir,
                methods[m]);
      args[n++] = opt[m][0];
      args[n++] = opt[m][1];
    }
    args[n++] = "error-rate=100%";
    args[n] = NULL;
    if (server_start_nbdkit (&s, args) == -1) {
      if (errno == ENOENT)
        skip_all ("nbdkit is not installed");
      bail_out ("cannot start nbdkit with the error filter");
    }
    error_filter (s.uri, errs[i].name, errs[i].err, true);
    error_filter (s.uri, errs[i].name, errs[i].err, false);
    is_int (server_stop (&s), 0, "nbdkit (%s) stopped", errs[i].name);
  }

  {
    char *flush;
    const char *args[] = {
      "eval", "get_size=echo 1048576",
      "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
      "can_flush=exit 0", NULL, NULL
    };

    if (asprintf (&flush, "flush=if [ -f '%s/flush' ]; then echo \"$(cat '%s/flush') "
                  "injected\" >&2; exit 1; fi", dir, dir) == -1)
      bail_out ("asprintf");
    args[4] = flush;
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit eval");
    flush_errors (s.uri);
    is_int (server_stop (&s), 0, "nbdkit eval stopped");
    free (flush);
  }
  return done_testing ();
}
