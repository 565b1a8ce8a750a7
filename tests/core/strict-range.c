/* strict-range: the request size limits.
 *
 * Proves: a read or write of 64 MiB + 1 is refused with ERANGE (sync and
 * aio, pread_structured too, the call's name first) whatever the strict
 * mode, while exactly 64 MiB works; trim, zero and cache are not bound by
 * 64 MiB (128 MiB succeeds) but a count of 4 GiB, which does not fit the
 * 32-bit wire field, is ERANGE; and, as libnbd 1.14 (which has no
 * STRICT_PAYLOAD), a read or write larger than the server's advertised
 * maximum block size (blocksize-policy maximum 64K) is still sent: the
 * server refuses it with EINVAL under blocksize-error-policy=error and
 * serves it, with the right bytes, under blocksize-error-policy=allow.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

#define K UINT64_C (1024)
#define M (K * K)
#define G (K * M)
#define MAX_REQ (64 * M)

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  (void) user_data; (void) subbuf; (void) count; (void) offset; (void) status; (void) error;
  return 0;
}

static void
too_large (const char *uri, unsigned char *big, uint32_t strict)
{
  struct nbd_handle *h = nbd_create ();
  const char *m = strict ? "strict" : "no strict";

  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  must (nbd_set_strict_mode (h, strict));
  is_int (nbd_get_size (h), 8 * G, "%s: the export is 8G", m);

  ok (nbd_pread (h, big, MAX_REQ + 1, 0, 0) == -1, "%s: nbd_pread of 64M+1 fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (prefix_is ("nbd_pread"), "%s: message begins with nbd_pread: (%s)", m, nbd_get_error ());
  ok (nbd_pread_structured (h, big, MAX_REQ + 1, 0, (nbd_chunk_callback) { .callback = chunk_cb },
                            0) == -1, "%s: nbd_pread_structured of 64M+1 fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (nbd_pwrite (h, big, MAX_REQ + 1, 0, 0) == -1, "%s: nbd_pwrite of 64M+1 fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (prefix_is ("nbd_pwrite"), "%s: message begins with nbd_pwrite: (%s)", m, nbd_get_error ());
  is_int (nbd_aio_pread (h, big, MAX_REQ + 1, 0, NBD_NULL_COMPLETION, 0), -1,
          "%s: nbd_aio_pread of 64M+1 gets no cookie", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  is_int (nbd_aio_pwrite (h, big, MAX_REQ + 1, 0, NBD_NULL_COMPLETION, 0), -1,
          "%s: nbd_aio_pwrite of 64M+1 gets no cookie", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight", m);

  memset (big, 0xaa, MAX_REQ);
  is_int (nbd_pread (h, big, MAX_REQ, G - 1, 0), 0, "%s: nbd_pread of exactly 64M works", m);
  {
    size_t i;
    for (i = 0; i < MAX_REQ && big[i] == 0; i++)
      ;
    is_uint (i, MAX_REQ, "%s: and reads 64M of zeroes", m);
  }

  is_int (nbd_zero (h, 128 * M, 0, 0), 0, "%s: nbd_zero of 128M works", m);
  is_int (nbd_trim (h, 128 * M, 0, 0), 0, "%s: nbd_trim of 128M works", m);
  is_int (nbd_cache (h, 128 * M, 0, 0), 0, "%s: nbd_cache of 128M works", m);

  ok (nbd_trim (h, 4 * G, 0, 0) == -1, "%s: nbd_trim of 4G fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (prefix_is ("nbd_trim"), "%s: message begins with nbd_trim: (%s)", m, nbd_get_error ());
  ok (nbd_zero (h, 4 * G, 0, 0) == -1, "%s: nbd_zero of 4G fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (nbd_cache (h, 4 * G, 0, 0) == -1, "%s: nbd_cache of 4G fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  ok (nbd_block_status (h, 4 * G, 0, (nbd_extent_callback) { .callback = extent_cb }, 0) == -1,
      "%s: nbd_block_status of 4G fails", m);
  is_errno (ERANGE, "%s: ERANGE", m);
  is_int (nbd_trim (h, 4 * G - 1, 0, 0), 0, "%s: nbd_trim of 4G-1 works", m);

  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", m);
  nbd_close (h);
}

static void
over_server_maximum (const char *uri, bool allow)
{
  const char *m = allow ? "max 64K, allow" : "max 64K, error";
  struct nbd_handle *h = nbd_create ();
  static unsigned char data[256 * K], got[256 * K];
  int64_t c;

  if (!h)
    bail_out ("nbd_create");
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), 64 * K, "%s: maximum block size", m);
  is_int (nbd_get_strict_mode (h), LIBNBD_STRICT_MASK, "%s: full strict mode", m);
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (unsigned char) (i * 7 + 3);

  is_int (nbd_pwrite (h, data, 64 * K, 0, 0), 0, "%s: a 64K write works", m);
  c = nbd_aio_pwrite (h, data, sizeof data, 0, NBD_NULL_COMPLETION, 0);
  ok (c > 0, "%s: a 256K write is sent (as libnbd 1.14)", m);
  is_int (wait_for (h, c), allow ? 1 : -1, "%s: the server %s it", m,
          allow ? "serves" : "refuses");
  if (!allow)
    is_errno (EINVAL, "%s: with EINVAL", m);
  c = nbd_aio_pread (h, got, sizeof got, 0, NBD_NULL_COMPLETION, 0);
  ok (c > 0, "%s: a 256K read is sent", m);
  is_int (wait_for (h, c), allow ? 1 : -1, "%s: the server %s it", m,
          allow ? "serves" : "refuses");
  if (allow)
    ok (memcmp (got, data, sizeof got) == 0, "%s: with the written bytes", m);
  else {
    is_errno (EINVAL, "%s: with EINVAL", m);
    ok (nbd_pread (h, got, sizeof got, 0, 0) == -1, "%s: sync 256K read fails", m);
    is_errno (EINVAL, "%s: with the server's EINVAL", m);
    ok (prefix_is ("nbd_pread"), "%s: message begins with nbd_pread: (%s)", m,
        nbd_get_error ());
  }
  is_int (nbd_pread (h, got, 64 * K, 0, 0), 0, "%s: a 64K read works", m);
  ok (memcmp (got, data, 64 * K) == 0, "%s: and is right", m);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", m);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=8G", NULL };
  unsigned char *big = malloc (MAX_REQ + 1);

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!big)
    bail_out ("malloc");
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  too_large (s.uri, big, LIBNBD_STRICT_MASK);
  too_large (s.uri, big, 0);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  free (big);

  for (int allow = 0; allow <= 1; allow++) {
    const char *pargs[] = { "--filter=blocksize-policy", "memory", "size=1M",
                            "blocksize-maximum=64K",
                            allow ? "blocksize-error-policy=allow"
                                  : "blocksize-error-policy=error", NULL };
    if (server_start_nbdkit (&s, pargs) == -1)
      bail_out ("cannot start nbdkit");
    over_server_maximum (s.uri, allow);
    is_int (server_stop (&s), 0, "nbdkit stopped");
  }
  return done_testing ();
}
