/* strict-flags: LIBNBD_STRICT_FLAGS on its own.
 *
 * Proves: with only STRICT_FLAGS set, each call accepts exactly its own
 * flags, as libnbd 1.14 — pread none, pread_structured DF, pwrite and trim
 * FUA, zero FUA|NO_HOLE|FAST_ZERO, block status REQ_ONE, flush and cache
 * none — and refuses any other bit, known (nbd_pread with
 * LIBNBD_CMD_FLAG_FUA) or not (0x20, 0x8000), with EINVAL before sending
 * (sync and aio, the call's name first); with every bit but STRICT_FLAGS
 * set, a wrong flag that fits in 16 bits is sent and nbdkit decides (it
 * ignores FUA on read, flush, cache and block status and DF on a read, and
 * refuses the rest with EINVAL), while a bit above 16 is still refused by
 * the client.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

#define FUA LIBNBD_CMD_FLAG_FUA
#define NO_HOLE LIBNBD_CMD_FLAG_NO_HOLE
#define DF LIBNBD_CMD_FLAG_DF
#define REQ_ONE LIBNBD_CMD_FLAG_REQ_ONE
#define FAST LIBNBD_CMD_FLAG_FAST_ZERO

enum op { PREAD, PREAD_STRUCTURED, PWRITE, FLUSH, TRIM, ZERO, CACHE, BLOCK_STATUS, NR_OPS };
static const char *const sync_name[] = {
  "nbd_pread", "nbd_pread_structured", "nbd_pwrite", "nbd_flush", "nbd_trim", "nbd_zero",
  "nbd_cache", "nbd_block_status"
};
static const char *const aio_name[] = {
  "nbd_aio_pread", "nbd_aio_pread_structured", "nbd_aio_pwrite", "nbd_aio_flush",
  "nbd_aio_trim", "nbd_aio_zero", "nbd_aio_cache", "nbd_aio_block_status"
};
static const uint32_t allowed[] = { 0, DF, FUA, 0, FUA, FUA | NO_HOLE | FAST, 0, REQ_ONE };

static const uint32_t probes[] = { FUA, NO_HOLE, DF, REQ_ONE, FAST, 0x20, 0x8000, 0x10000,
                                   0x80000000 };

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
  case PREAD: return nbd_pread (h, buf, 4096, 0, flags);
  case PREAD_STRUCTURED: return nbd_pread_structured (h, buf, 4096, 0, CHUNK, flags);
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
  case PREAD: return nbd_aio_pread (h, buf, 4096, 0, NBD_NULL_COMPLETION, flags);
  case PREAD_STRUCTURED:
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
connect_with (const char *uri, uint32_t strict)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (!is_int (nbd_set_strict_mode (h, strict), 0, "strict mode 0x%x", strict))
    bail_out ("%s", nbd_get_error ());
  return h;
}

static void
flags_only (const char *uri)
{
  struct nbd_handle *h = connect_with (uri, LIBNBD_STRICT_FLAGS);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
      uint32_t f = probes[i];

      if (f & allowed[op]) {
        is_int (sync_op (h, op, f), 0, "flags only: %s takes flag 0x%x", sync_name[op], f);
        continue;
      }
      ok (sync_op (h, op, f) == -1, "flags only: %s refuses flag 0x%x", sync_name[op], f);
      is_errno (EINVAL, "flags only: %s, 0x%x: EINVAL", sync_name[op], f);
      ok (prefix_is (sync_name[op]), "flags only: message begins with %s: (%s)", sync_name[op],
          nbd_get_error ());
      is_int (aio_op (h, op, f), -1, "flags only: %s refuses flag 0x%x", aio_name[op], f);
      is_errno (EINVAL, "flags only: %s, 0x%x: EINVAL", aio_name[op], f);
      ok (prefix_is (aio_name[op]), "flags only: message begins with %s: (%s)", aio_name[op],
          nbd_get_error ());
    }
    is_int (sync_op (h, op, allowed[op]), 0, "flags only: %s with all its flags 0x%x",
            sync_name[op], allowed[op]);
    is_int (sync_op (h, op, 0), 0, "flags only: %s with no flags", sync_name[op]);
  }
  is_int (nbd_aio_in_flight (h), 0, "flags only: nothing in flight");
  is_int (nbd_shutdown (h, 0), 0, "flags only: shutdown");
  nbd_close (h);
}

/* nbdkit 1.32's answer to a flag the command does not take (0: it
 * ignores it). */
static int
nbdkit_answer (enum op op, uint32_t f)
{
  if (f == FUA && (op == PREAD || op == PREAD_STRUCTURED || op == FLUSH || op == CACHE ||
                   op == BLOCK_STATUS))
    return 0;
  if (f == DF && op == PREAD)
    return 0;
  return EINVAL;
}

static void
flags_off (const char *uri)
{
  struct nbd_handle *h = connect_with (uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_FLAGS);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
      uint32_t f = probes[i];
      int64_t c;

      if (f & allowed[op])
        continue;
      c = aio_op (h, op, f);
      if (f > 0xffff) {
        is_int (c, -1, "flags off: %s still refuses flag 0x%x (above 16 bits)", aio_name[op], f);
        is_errno (EINVAL, "flags off: %s, 0x%x: EINVAL", aio_name[op], f);
        ok (sync_op (h, op, f) == -1, "flags off: %s refuses flag 0x%x", sync_name[op], f);
        is_errno (EINVAL, "flags off: %s, 0x%x: EINVAL", sync_name[op], f);
        continue;
      }
      if (!ok (c > 0, "flags off: %s with flag 0x%x is sent", aio_name[op], f)) {
        diag ("%s", nbd_get_error ());
        continue;
      }
      if (nbdkit_answer (op, f) == 0)
        is_int (wait_for (h, c), 1, "flags off: nbdkit ignores 0x%x on %s", f, aio_name[op]);
      else {
        is_int (wait_for (h, c), -1, "flags off: nbdkit refuses 0x%x on %s", f, aio_name[op]);
        is_errno (EINVAL, "flags off: with EINVAL");
      }
      is_int (nbd_aio_is_ready (h), 1, "flags off: handle still ready");
    }
  }
  memset (buf, 0, sizeof buf);
  is_int (nbd_pread (h, buf, 512, 0, 0), 0, "flags off: a normal read works after");
  is_int (nbd_shutdown (h, 0), 0, "flags off: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=1M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  is_int (LIBNBD_CMD_FLAG_MASK, 0x1f, "LIBNBD_CMD_FLAG_MASK is 0x1f (libnbd 1.14)");
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  flags_only (s.uri);
  flags_off (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
