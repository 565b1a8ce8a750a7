/* strict-align: LIBNBD_STRICT_ALIGN on its own.
 *
 * Proves: nbdkit's blocksize-policy filter (blocksize-minimum=4096) is
 * seen as a minimum block size of 4096; with only STRICT_ALIGN set, a
 * request whose offset or count is not a multiple of it is refused by the
 * client with EINVAL (no cookie, the call's name first) for pread, pwrite,
 * trim, zero, cache and block status, while aligned ones succeed; with
 * every bit but STRICT_ALIGN set, the unaligned requests are sent and the
 * server answers: EINVAL under blocksize-error-policy=error, success (and
 * the right bytes) under blocksize-error-policy=allow; a server with
 * minimum block size 1 (qemu-nbd) takes unaligned requests even with
 * STRICT_ALIGN on.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

static char buf[16384];

enum op { PREAD, PWRITE, TRIM, ZERO, CACHE, BLOCK_STATUS, NR_OPS };
static const char *const sync_name[] = {
  "nbd_pread", "nbd_pwrite", "nbd_trim", "nbd_zero", "nbd_cache", "nbd_block_status"
};
static const char *const aio_name[] = {
  "nbd_aio_pread", "nbd_aio_pwrite", "nbd_aio_trim", "nbd_aio_zero", "nbd_aio_cache",
  "nbd_aio_block_status"
};

static int
sync_op (struct nbd_handle *h, enum op op, uint64_t count, uint64_t off)
{
  switch (op) {
  case PREAD: return nbd_pread (h, buf, count, off, 0);
  case PWRITE: return nbd_pwrite (h, buf, count, off, 0);
  case TRIM: return nbd_trim (h, count, off, 0);
  case ZERO: return nbd_zero (h, count, off, 0);
  case CACHE: return nbd_cache (h, count, off, 0);
  default: return nbd_block_status (h, count, off, EXTENT, 0);
  }
}

static int64_t
aio_op (struct nbd_handle *h, enum op op, uint64_t count, uint64_t off)
{
  switch (op) {
  case PREAD: return nbd_aio_pread (h, buf, count, off, NBD_NULL_COMPLETION, 0);
  case PWRITE: return nbd_aio_pwrite (h, buf, count, off, NBD_NULL_COMPLETION, 0);
  case TRIM: return nbd_aio_trim (h, count, off, NBD_NULL_COMPLETION, 0);
  case ZERO: return nbd_aio_zero (h, count, off, NBD_NULL_COMPLETION, 0);
  case CACHE: return nbd_aio_cache (h, count, off, NBD_NULL_COMPLETION, 0);
  default: return nbd_aio_block_status (h, count, off, EXTENT, NBD_NULL_COMPLETION, 0);
  }
}

static struct nbd_handle *
connect_with (const char *what, const char *uri, uint32_t strict, int64_t min)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_set_strict_mode (h, strict), 0, "%s: strict mode 0x%x", what, strict);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), min, "%s: minimum block size", what);
  return h;
}

static const struct {
  const char *what;
  uint64_t off, count;
} unaligned[] = {
  { "offset 1", 1, 4096 },
  { "count 100", 4096, 100 },
  { "offset 2048 count 6144", 2048, 6144 },
  { "offset 4095 count 1", 4095, 1 },
};

static void
align_only (const char *uri)
{
  const char *w = "align only";
  struct nbd_handle *h = connect_with (w, uri, LIBNBD_STRICT_ALIGN, 4096);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < sizeof unaligned / sizeof unaligned[0]; i++) {
      ok (sync_op (h, op, unaligned[i].count, unaligned[i].off) == -1, "%s: %s %s fails", w,
          sync_name[op], unaligned[i].what);
      is_errno (EINVAL, "%s: %s %s: EINVAL", w, sync_name[op], unaligned[i].what);
      ok (prefix_is (sync_name[op]), "%s: message begins with %s: (%s)", w, sync_name[op],
          nbd_get_error ());
      is_int (aio_op (h, op, unaligned[i].count, unaligned[i].off), -1,
              "%s: %s %s gets no cookie", w, aio_name[op], unaligned[i].what);
      is_errno (EINVAL, "%s: %s: EINVAL", w, aio_name[op]);
    }
    is_int (sync_op (h, op, 8192, 4096), 0, "%s: aligned %s succeeds", w, sync_name[op]);
  }
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight", w);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

static void
align_off_error_policy (const char *uri)
{
  const char *w = "align off, policy error";
  struct nbd_handle *h = connect_with (w, uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_ALIGN, 4096);

  for (enum op op = 0; op < NR_OPS; op++) {
    for (size_t i = 0; i < sizeof unaligned / sizeof unaligned[0]; i++) {
      int64_t c = aio_op (h, op, unaligned[i].count, unaligned[i].off);

      if (!ok (c > 0, "%s: %s %s is sent", w, aio_name[op], unaligned[i].what))
        continue;
      is_int (wait_for (h, c), -1, "%s: the server refuses it", w);
      is_errno (EINVAL, "%s: %s %s: the server's EINVAL", w, aio_name[op], unaligned[i].what);
    }
    ok (sync_op (h, op, 100, 1) == -1, "%s: unaligned %s fails", w, sync_name[op]);
    is_errno (EINVAL, "%s: %s: the server's EINVAL", w, sync_name[op]);
    ok (prefix_is (sync_name[op]), "%s: message begins with %s: (%s)", w, sync_name[op],
        nbd_get_error ());
    is_int (sync_op (h, op, 4096, 0), 0, "%s: aligned %s succeeds after", w, sync_name[op]);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

static void
align_off_allow_policy (const char *uri)
{
  const char *w = "align off, policy allow";
  struct nbd_handle *h = connect_with (w, uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_ALIGN, 4096);
  char want[16384], got[16384];

  memset (want, 0, sizeof want);
  is_int (nbd_pwrite (h, want, sizeof want, 0, 0), 0, "%s: zero the first 16K", w);
  memcpy (want + 4097, "unaligned!", 10);
  is_int (nbd_pwrite (h, "unaligned!", 10, 4097, 0), 0, "%s: write 10 bytes at 4097", w);
  memset (got, 0xaa, sizeof got);
  is_int (nbd_pread (h, got, 13, 4096, 0), 0, "%s: read 13 bytes at 4096", w);
  ok (memcmp (got, want + 4096, 13) == 0, "%s: they are right", w);
  memset (got, 0xaa, sizeof got);
  is_int (nbd_pread (h, got, sizeof got - 3, 3, 0), 0, "%s: read %zu bytes at 3", w,
          sizeof got - 3);
  ok (memcmp (got, want + 3, sizeof got - 3) == 0, "%s: they are right", w);
  is_int (nbd_zero (h, 3, 4100, 0), 0, "%s: zero 3 bytes at 4100", w);
  memset (want + 4100, 0, 3);
  is_int (nbd_trim (h, 1, 4105, 0), 0, "%s: trim 1 byte at 4105", w);
  /* The trimmed byte is not checked: a trim may keep the data. */
  is_int (nbd_cache (h, 7, 4099, 0), 0, "%s: cache 7 bytes at 4099", w);
  memset (got, 0xaa, sizeof got);
  is_int (nbd_pread (h, got, 4, 4097, 0), 0, "%s: read 4 bytes at 4097", w);
  ok (memcmp (got, "una\0", 4) == 0, "%s: the zeroed byte reads back zero", w);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

static void
no_minimum (const char *uri)
{
  const char *w = "qemu-nbd, minimum 1";
  struct nbd_handle *h = connect_with (w, uri, LIBNBD_STRICT_ALIGN, 1);

  for (enum op op = 0; op < NR_OPS; op++)
    is_int (sync_op (h, op, 100, 1), 0, "%s: unaligned %s succeeds with STRICT_ALIGN", w,
            sync_name[op]);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *error_args[] = { "--filter=blocksize-policy", "memory", "size=1M",
                               "blocksize-minimum=4096", "blocksize-error-policy=error", NULL };
  const char *allow_args[] = { "--filter=blocksize-policy", "memory", "size=1M",
                               "blocksize-minimum=4096", "blocksize-error-policy=allow", NULL };
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, error_args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  align_only (s.uri);
  align_off_error_policy (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");

  if (server_start_nbdkit (&s, allow_args) == -1)
    bail_out ("cannot start nbdkit");
  align_off_allow_policy (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");

  img = image_create_qcow2 (1024 * 1024);
  if (!img)
    bail_out ("cannot create the image");
  {
    const char *qargs[] = { "-f", "qcow2", img, NULL };
    if (server_start_qemu_nbd (&s, qargs) == -1)
      bail_out ("cannot start qemu-nbd");
  }
  no_minimum (s.uri);
  is_int (server_stop (&s), 0, "qemu-nbd stopped");
  free (img);
  return done_testing ();
}
