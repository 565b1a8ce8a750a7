/* strict-commands: LIBNBD_STRICT_COMMANDS on its own.
 *
 * Proves, case by case against servers that lack features: with only
 * STRICT_COMMANDS set, the client refuses before sending (sync and aio, no
 * cookie, the call's name first) flush, trim, zero and cache the server
 * does not advertise (EINVAL), FUA, FAST_ZERO and DF it does not advertise
 * (EINVAL), a write, trim or zero to a read-only export (EPERM for pwrite;
 * EINVAL first where the command itself is missing, as libnbd 1.14), and
 * block status without a negotiated meta context (ENOTSUP), while what the
 * server does advertise goes through; with every bit but STRICT_COMMANDS
 * set, the same requests get a cookie, reach the server, and fail (or
 * succeed) with the server's own answer, the handle staying usable.
 *
 * Servers: an nbdkit eval plugin without flush/trim/FUA/cache/fast zero,
 * the same under the nozero filter (no zero), nbdkit pattern (read-only),
 * and nbd-server (no fast zero, no cache).  nbdkit 1.32 aborts on a
 * FAST_ZERO it did not advertise, so that request goes to nbd-server only.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

enum srv { EVAL, NOZERO, PATTERN, NBD_SERVER, NR_SRV };
static const char *const srv_name[] = { "eval", "nozero", "pattern", "nbd-server" };
static char *uri[NR_SRV];

enum op { PREAD_DF, PWRITE, FLUSH, TRIM, ZERO, CACHE, BLOCK_STATUS };
static const char *const sync_name[] = {
  "nbd_pread_structured", "nbd_pwrite", "nbd_flush", "nbd_trim", "nbd_zero", "nbd_cache",
  "nbd_block_status"
};
static const char *const aio_name[] = {
  "nbd_aio_pread_structured", "nbd_aio_pwrite", "nbd_aio_flush", "nbd_aio_trim",
  "nbd_aio_zero", "nbd_aio_cache", "nbd_aio_block_status"
};

#define FUA LIBNBD_CMD_FLAG_FUA
#define FAST LIBNBD_CMD_FLAG_FAST_ZERO
#define DF LIBNBD_CMD_FLAG_DF

static const struct kase {
  const char *what;
  enum srv srv;
  bool sr, ctx;                 /* request structured replies / base:allocation */
  enum op op;
  uint32_t flags;
  int client;                   /* errno with STRICT_COMMANDS, 0: it is sent */
  int server;                   /* the server's answer without it, 0: success */
  bool only_on;                 /* not sent with the bit off */
} cases[] = {
  { "flush, not advertised", EVAL, true, false, FLUSH, 0, EINVAL, EINVAL },
  { "trim, not advertised", EVAL, true, false, TRIM, 0, EINVAL, EINVAL },
  { "trim with FUA, neither advertised", EVAL, true, false, TRIM, FUA, EINVAL, EINVAL },
  { "cache, not advertised", EVAL, true, false, CACHE, 0, EINVAL, EINVAL },
  { "pwrite with FUA, FUA not advertised", EVAL, true, false, PWRITE, FUA, EINVAL, EINVAL },
  { "pwrite, advertised", EVAL, true, false, PWRITE, 0, 0, 0 },
  { "zero (emulated by nbdkit), advertised", EVAL, true, false, ZERO, 0, 0, 0 },
  { "zero with FUA, FUA not advertised", EVAL, true, false, ZERO, FUA, EINVAL, EINVAL },
  { "zero with FAST_ZERO, not advertised", EVAL, true, false, ZERO, FAST, EINVAL, 0, true },
  { "pread_structured with DF, advertised", EVAL, true, false, PREAD_DF, DF, 0, 0 },
  { "pread_structured with DF, no structured replies", EVAL, false, false, PREAD_DF, DF,
    EINVAL, EINVAL },
  { "block status, no context requested", EVAL, true, false, BLOCK_STATUS, 0, ENOTSUP, EINVAL },
  { "block status, no structured replies", EVAL, false, true, BLOCK_STATUS, 0, ENOTSUP, EINVAL },
  { "block status, base:allocation negotiated", EVAL, true, true, BLOCK_STATUS, 0, 0, 0 },
  { "zero, not advertised", NOZERO, true, false, ZERO, 0, EINVAL, EINVAL },
  { "pwrite, read-only", PATTERN, true, false, PWRITE, 0, EPERM, EPERM },
  { "pwrite with FUA, read-only", PATTERN, true, false, PWRITE, FUA, EPERM, EPERM },
  { "trim, read-only and not advertised", PATTERN, true, false, TRIM, 0, EINVAL, EPERM },
  { "zero, read-only and not advertised", PATTERN, true, false, ZERO, 0, EINVAL, EPERM },
  { "flush, read-only and not advertised", PATTERN, true, false, FLUSH, 0, EINVAL, EINVAL },
  { "cache, advertised on read-only", PATTERN, true, false, CACHE, 0, 0, 0 },
  { "zero with FAST_ZERO, not advertised", NBD_SERVER, false, false, ZERO, FAST, EINVAL,
    EINVAL },
  { "cache, not advertised", NBD_SERVER, false, false, CACHE, 0, EINVAL, EINVAL },
  { "flush, not advertised", NBD_SERVER, false, false, FLUSH, 0, EINVAL, 0 },
  { "pwrite with FUA, not advertised", NBD_SERVER, false, false, PWRITE, FUA, EINVAL, 0 },
};

static char buf[4096];

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  (void) user_data; (void) subbuf; (void) count; (void) offset; (void) status; (void) error;
  return 0;
}

#define CHUNK ((nbd_chunk_callback) { .callback = chunk_cb })

static int
sync_op (struct nbd_handle *h, enum op op, uint32_t flags)
{
  switch (op) {
  case PREAD_DF: return nbd_pread_structured (h, buf, 4096, 0, CHUNK, flags);
  case PWRITE: return nbd_pwrite (h, buf, 4096, 0, flags);
  case FLUSH: return nbd_flush (h, flags);
  case TRIM: return nbd_trim (h, 4096, 0, flags);
  case ZERO: return nbd_zero (h, 4096, 0, flags);
  case CACHE: return nbd_cache (h, 4096, 0, flags);
  default: return nbd_block_status (h, 4096, 0, EXTENT, flags);
  }
}

static int64_t
aio_op (struct nbd_handle *h, enum op op, uint32_t flags)
{
  switch (op) {
  case PREAD_DF:
    return nbd_aio_pread_structured (h, buf, 4096, 0, CHUNK, NBD_NULL_COMPLETION, flags);
  case PWRITE: return nbd_aio_pwrite (h, buf, 4096, 0, NBD_NULL_COMPLETION, flags);
  case FLUSH: return nbd_aio_flush (h, NBD_NULL_COMPLETION, flags);
  case TRIM: return nbd_aio_trim (h, 4096, 0, NBD_NULL_COMPLETION, flags);
  case ZERO: return nbd_aio_zero (h, 4096, 0, NBD_NULL_COMPLETION, flags);
  case CACHE: return nbd_aio_cache (h, 4096, 0, NBD_NULL_COMPLETION, flags);
  default: return nbd_aio_block_status (h, 4096, 0, EXTENT, NBD_NULL_COMPLETION, flags);
  }
}

static struct nbd_handle *
connect_case (const struct kase *k, uint32_t strict)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_request_structured_replies (h, k->sr));
  if (k->ctx)
    must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri[k->srv]) == -1)
    bail_out ("connect to %s: %s", srv_name[k->srv], nbd_get_error ());
  if (nbd_set_strict_mode (h, strict) == -1)
    bail_out ("%s", nbd_get_error ());
  return h;
}

static void
commands_on (const struct kase *k)
{
  struct nbd_handle *h = connect_case (k, LIBNBD_STRICT_COMMANDS);
  const char *s = srv_name[k->srv];

  if (k->client) {
    ok (sync_op (h, k->op, k->flags) == -1, "on, %s: %s: %s fails", s, k->what,
        sync_name[k->op]);
    is_errno (k->client, "on, %s: %s: errno", s, k->what);
    ok (prefix_is (sync_name[k->op]), "on, %s: message begins with %s: (%s)", s,
        sync_name[k->op], nbd_get_error ());
    is_int (aio_op (h, k->op, k->flags), -1, "on, %s: %s: %s gets no cookie", s, k->what,
            aio_name[k->op]);
    is_errno (k->client, "on, %s: %s: aio errno", s, k->what);
    ok (prefix_is (aio_name[k->op]), "on, %s: message begins with %s: (%s)", s,
        aio_name[k->op], nbd_get_error ());
    is_int (nbd_aio_in_flight (h), 0, "on, %s: %s: nothing in flight", s, k->what);
  }
  else if (!is_int (sync_op (h, k->op, k->flags), 0, "on, %s: %s: %s succeeds", s, k->what,
                     sync_name[k->op]))
    diag ("%s", nbd_get_error ());
  is_int (nbd_aio_is_ready (h), 1, "on, %s: %s: handle ready", s, k->what);
  is_int (nbd_shutdown (h, 0), 0, "on, %s: shutdown", s);
  nbd_close (h);
}

static void
commands_off (const struct kase *k)
{
  struct nbd_handle *h = connect_case (k, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_COMMANDS);
  const char *s = srv_name[k->srv];
  int64_t c = aio_op (h, k->op, k->flags);

  if (ok (c > 0, "off, %s: %s: %s is sent", s, k->what, aio_name[k->op])) {
    int r = wait_for (h, c);

    if (k->server) {
      is_int (r, -1, "off, %s: %s: the server fails it", s, k->what);
      is_errno (k->server, "off, %s: %s: the server's errno", s, k->what);
      ok (prefix_is ("nbd_aio_command_completed"),
          "off, %s: message begins with nbd_aio_command_completed: (%s)", s, nbd_get_error ());
    }
    else
      is_int (r, 1, "off, %s: %s: the server does it", s, k->what);
  }
  else
    diag ("%s", nbd_get_error ());
  if (k->server) {
    ok (sync_op (h, k->op, k->flags) == -1, "off, %s: %s: %s fails", s, k->what,
        sync_name[k->op]);
    is_errno (k->server, "off, %s: %s: the server's errno", s, k->what);
    ok (prefix_is (sync_name[k->op]), "off, %s: message begins with %s: (%s)", s,
        sync_name[k->op], nbd_get_error ());
  }
  else
    is_int (sync_op (h, k->op, k->flags), 0, "off, %s: %s: %s succeeds", s, k->what,
            sync_name[k->op]);
  is_int (nbd_aio_is_ready (h), 1, "off, %s: %s: handle still ready", s, k->what);
  memset (buf, 0, sizeof buf);
  is_int (nbd_pread (h, buf, 512, 0, 0), 0, "off, %s: a read works after", s);
  is_int (nbd_shutdown (h, 0), 0, "off, %s: shutdown", s);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s[NR_SRV];
  const char *eval[] = {
    "eval", "get_size=echo 1048576",
    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    "pwrite=cat >/dev/null", "can_write=exit 0", "can_flush=exit 3", "can_trim=exit 3",
    "can_zero=exit 3", "can_fast_zero=exit 3", "can_fua=echo none", "can_cache=echo none",
    NULL
  };
  const char *nozero[] = {
    "--filter=nozero", "memory", "size=1M", "zeromode=none", NULL
  };
  const char *pattern[] = { "pattern", "size=1M", NULL };
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  img = image_create_raw (1024 * 1024);
  if (!img)
    bail_out ("cannot create the image");
  if (server_start_nbdkit (&s[EVAL], eval) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit eval");
  }
  if (server_start_nbdkit (&s[NOZERO], nozero) == -1 ||
      server_start_nbdkit (&s[PATTERN], pattern) == -1 ||
      server_start_nbd_server (&s[NBD_SERVER], img, "disk", NULL) == -1)
    bail_out ("cannot start the servers");
  for (int i = 0; i < NR_SRV; i++)
    uri[i] = s[i].uri;

  {
    struct nbd_handle *h = nbd_create ();
    if (!h || nbd_connect_uri (h, uri[EVAL]) == -1)
      bail_out ("connect: %s", nbd_get_error ());
    is_int (nbd_can_flush (h), 0, "eval: no flush");
    is_int (nbd_can_trim (h), 0, "eval: no trim");
    is_int (nbd_can_fua (h), 0, "eval: no FUA");
    is_int (nbd_can_cache (h), 0, "eval: no cache");
    is_int (nbd_can_fast_zero (h), 0, "eval: no fast zero");
    is_int (nbd_can_zero (h), 1, "eval: zero (nbdkit emulates it)");
    is_int (nbd_can_df (h), 1, "eval: DF (structured replies)");
    nbd_close (h);
    h = nbd_create ();
    if (!h || nbd_connect_uri (h, uri[NOZERO]) == -1)
      bail_out ("connect: %s", nbd_get_error ());
    is_int (nbd_can_zero (h), 0, "nozero: no zero");
    nbd_close (h);
    h = nbd_create ();
    if (!h || nbd_connect_uri (h, uri[PATTERN]) == -1)
      bail_out ("connect: %s", nbd_get_error ());
    is_int (nbd_is_read_only (h), 1, "pattern: read-only");
    is_int (nbd_can_cache (h), 1, "pattern: cache");
    nbd_close (h);
    h = nbd_create ();
    if (!h || nbd_connect_uri (h, uri[NBD_SERVER]) == -1)
      bail_out ("connect: %s", nbd_get_error ());
    is_int (nbd_can_zero (h), 1, "nbd-server: zero");
    is_int (nbd_can_fast_zero (h), 0, "nbd-server: no fast zero");
    is_int (nbd_can_cache (h), 0, "nbd-server: no cache");
    nbd_close (h);
  }

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    commands_on (&cases[i]);
    if (!cases[i].only_on)
      commands_off (&cases[i]);
  }

  for (int i = 0; i < NR_SRV; i++)
    is_int (server_stop (&s[i]), 0, "%s stopped", srv_name[i]);
  free (img);
  return done_testing ();
}
