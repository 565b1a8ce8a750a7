/* strict-zero-size: LIBNBD_STRICT_ZERO_SIZE on its own.
 *
 * Proves: with only STRICT_ZERO_SIZE set, a count of 0 is refused by the
 * client with EINVAL (no cookie, the call's name leading the message) for
 * pread, pread_structured, pwrite, trim, zero, cache and block status;
 * with every bit but STRICT_ZERO_SIZE set, count-0 requests are sent:
 * nbdkit refuses them with its own errno, qemu-nbd accepts them (but for a
 * block status of 0 bytes: EINVAL) — with and without structured replies
 * (a zero-length read answered by a simple reply completes; its
 * pread_structured chunk callback sees one DATA chunk of 0 bytes, as in
 * libnbd 1.14) — and the handle stays usable.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "strict-common.h"

static char buf[4096];

struct chunks {
  unsigned n;
  size_t count;
  unsigned status;
};

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  struct chunks *c = user_data;

  (void) subbuf; (void) offset; (void) error;
  c->n++;
  c->count = count;
  c->status = status;
  return 0;
}

enum op { PREAD, PREAD_STRUCTURED, PWRITE, TRIM, ZERO, CACHE, BLOCK_STATUS, NR_OPS };
static const char *const sync_name[] = {
  "nbd_pread", "nbd_pread_structured", "nbd_pwrite", "nbd_trim", "nbd_zero", "nbd_cache",
  "nbd_block_status"
};
static const char *const aio_name[] = {
  "nbd_aio_pread", "nbd_aio_pread_structured", "nbd_aio_pwrite", "nbd_aio_trim", "nbd_aio_zero",
  "nbd_aio_cache", "nbd_aio_block_status"
};
/* What nbdkit 1.32 answers for a count of 0. */
static const int nbdkit_errno[] = { EINVAL, EINVAL, ENOSPC, EINVAL, ENOSPC, EINVAL, EINVAL };

static struct chunks chunks;

static int
sync_op (struct nbd_handle *h, enum op op, uint64_t count)
{
  switch (op) {
  case PREAD: return nbd_pread (h, buf, count, 0, 0);
  case PREAD_STRUCTURED:
    return nbd_pread_structured (h, buf, count, 0,
                                 (nbd_chunk_callback) { .callback = chunk_cb,
                                                        .user_data = &chunks }, 0);
  case PWRITE: return nbd_pwrite (h, buf, count, 0, 0);
  case TRIM: return nbd_trim (h, count, 0, 0);
  case ZERO: return nbd_zero (h, count, 0, 0);
  case CACHE: return nbd_cache (h, count, 0, 0);
  default: return nbd_block_status (h, count, 0, EXTENT, 0);
  }
}

static int64_t
aio_op (struct nbd_handle *h, enum op op, uint64_t count)
{
  switch (op) {
  case PREAD: return nbd_aio_pread (h, buf, count, 0, NBD_NULL_COMPLETION, 0);
  case PREAD_STRUCTURED:
    return nbd_aio_pread_structured (h, buf, count, 0,
                                     (nbd_chunk_callback) { .callback = chunk_cb,
                                                            .user_data = &chunks },
                                     NBD_NULL_COMPLETION, 0);
  case PWRITE: return nbd_aio_pwrite (h, buf, count, 0, NBD_NULL_COMPLETION, 0);
  case TRIM: return nbd_aio_trim (h, count, 0, NBD_NULL_COMPLETION, 0);
  case ZERO: return nbd_aio_zero (h, count, 0, NBD_NULL_COMPLETION, 0);
  case CACHE: return nbd_aio_cache (h, count, 0, NBD_NULL_COMPLETION, 0);
  default: return nbd_aio_block_status (h, count, 0, EXTENT, NBD_NULL_COMPLETION, 0);
  }
}

static struct nbd_handle *
connect_with (const char *uri, uint32_t strict, bool sr)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_request_structured_replies (h, sr));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (!is_int (nbd_set_strict_mode (h, strict), 0, "strict mode 0x%x", strict))
    bail_out ("%s", nbd_get_error ());
  return h;
}

static void
zero_size_only (const char *uri)
{
  struct nbd_handle *h = connect_with (uri, LIBNBD_STRICT_ZERO_SIZE, true);

  for (enum op op = 0; op < NR_OPS; op++) {
    ok (sync_op (h, op, 0) == -1, "zero-size only: %s with count 0 fails", sync_name[op]);
    is_errno (EINVAL, "zero-size only: %s: EINVAL", sync_name[op]);
    ok (prefix_is (sync_name[op]), "zero-size only: message begins with %s: (%s)",
        sync_name[op], nbd_get_error ());
    is_int (aio_op (h, op, 0), -1, "zero-size only: %s with count 0 gets no cookie",
            aio_name[op]);
    is_errno (EINVAL, "zero-size only: %s: EINVAL", aio_name[op]);
    ok (prefix_is (aio_name[op]), "zero-size only: message begins with %s: (%s)", aio_name[op],
        nbd_get_error ());
    is_int (sync_op (h, op, 512), 0, "zero-size only: %s with count 512 succeeds",
            sync_name[op]);
  }
  is_int (nbd_aio_in_flight (h), 0, "zero-size only: nothing in flight");
  is_int (nbd_shutdown (h, 0), 0, "zero-size only: shutdown");
  nbd_close (h);
}

static void
zero_size_off_nbdkit (const char *uri)
{
  struct nbd_handle *h = connect_with (uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_ZERO_SIZE, true);

  for (enum op op = 0; op < NR_OPS; op++) {
    int64_t c = aio_op (h, op, 0);

    if (ok (c > 0, "zero-size off, nbdkit: %s count 0 is sent", aio_name[op])) {
      is_int (wait_for (h, c), -1, "zero-size off, nbdkit: the server refuses it");
      is_errno (nbdkit_errno[op], "zero-size off, nbdkit: %s: nbdkit's errno", aio_name[op]);
    }
    ok (sync_op (h, op, 0) == -1, "zero-size off, nbdkit: %s count 0 fails", sync_name[op]);
    is_errno (nbdkit_errno[op], "zero-size off, nbdkit: %s: nbdkit's errno", sync_name[op]);
    is_int (sync_op (h, op, 512), 0, "zero-size off, nbdkit: %s count 512 succeeds after",
            sync_name[op]);
  }
  is_int (nbd_shutdown (h, 0), 0, "zero-size off, nbdkit: shutdown");
  nbd_close (h);
}

static void
zero_size_off_qemu (const char *uri, bool sr)
{
  const char *mode = sr ? "sr" : "no sr";
  struct nbd_handle *h = connect_with (uri, LIBNBD_STRICT_MASK & ~LIBNBD_STRICT_ZERO_SIZE, sr);

  is_int (nbd_get_structured_replies_negotiated (h), sr, "qemu, %s: negotiated as asked", mode);
  for (enum op op = 0; op < NR_OPS; op++) {
    int64_t c;

    if (op == BLOCK_STATUS && !sr)
      continue;
    memset (&chunks, 0, sizeof chunks);
    if (op == BLOCK_STATUS) {
      /* qemu-nbd refuses a block status of 0 bytes. */
      ok (sync_op (h, op, 0) == -1, "qemu, %s: %s with count 0 fails", mode, sync_name[op]);
      is_errno (EINVAL, "qemu, %s: with qemu's EINVAL", mode);
      c = aio_op (h, op, 0);
      if (ok (c > 0, "qemu, %s: %s count 0 is sent", mode, aio_name[op])) {
        is_int (wait_for (h, c), -1, "qemu, %s: and fails", mode);
        is_errno (EINVAL, "qemu, %s: with EINVAL", mode);
      }
      continue;
    }
    is_int (sync_op (h, op, 0), 0, "qemu, %s: %s with count 0 succeeds", mode, sync_name[op]);
    if (op == PREAD_STRUCTURED) {
      /* libnbd 1.14: a simple reply is one DATA chunk, even of 0 bytes; a
       * structured reply without data chunks calls nothing. */
      is_int (chunks.n, sr ? 0 : 1, "qemu, %s: chunk callback calls", mode);
      if (!sr) {
        is_int (chunks.count, 0, "qemu, no sr: the chunk has 0 bytes");
        is_int (chunks.status, LIBNBD_READ_DATA, "qemu, no sr: status DATA");
      }
    }
    c = aio_op (h, op, 0);
    if (ok (c > 0, "qemu, %s: %s count 0 is sent", mode, aio_name[op]))
      is_int (wait_for (h, c), 1, "qemu, %s: and succeeds", mode);
  }
  memset (buf, 0xaa, sizeof buf);
  is_int (nbd_pread (h, buf, 512, 0, 0), 0, "qemu, %s: a normal read works after", mode);
  is_int (nbd_shutdown (h, 0), 0, "qemu, %s: shutdown", mode);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=1M", NULL };
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  zero_size_only (s.uri);
  zero_size_off_nbdkit (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");

  img = image_create_qcow2 (1024 * 1024);
  if (!img)
    bail_out ("cannot create the image");
  {
    const char *qargs[] = { "-f", "qcow2", img, NULL };
    if (server_start_qemu_nbd (&s, qargs) == -1)
      bail_out ("cannot start qemu-nbd");
  }
  zero_size_off_qemu (s.uri, true);
  zero_size_off_qemu (s.uri, false);
  is_int (server_stop (&s), 0, "qemu-nbd stopped");
  free (img);
  return done_testing ();
}
