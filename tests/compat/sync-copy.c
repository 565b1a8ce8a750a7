/* sync-copy: copy a whole export with the synchronous calls, as a libnbd
 * 1.14 program would.
 *
 * Reads every byte of an nbdkit pattern export (4 MiB, read-only) in 1 MiB
 * chunks, writes them to an nbdkit memory export of the same size, flushes,
 * then reads the copy back and checks every 8-byte word against the pattern
 * (each word is its own offset, big-endian).  Along the way: nbd_get_size,
 * nbd_is_read_only, nbd_can_flush on both ends, nbd_flush on the target.
 * Only <libnbd.h> and the libnbd 1.14 API: built against libnbd-core and
 * against the system libnbd, and both must pass.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define EXPORT_SIZE (4 * 1024 * 1024)
#define CHUNK (1024 * 1024)

/* The first offset in [off, off+len) whose word differs from the pattern,
 * or -1 if all match. */
static int64_t
pattern_mismatch (const char *buf, uint64_t off, size_t len)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word;

    memcpy (&word, buf + i, 8);
    if (be64toh (word) != off + i)
      return (int64_t) (off + i);
  }
  return -1;
}

int
main (void)
{
  const char *src_args[] = { "pattern", "size=4M", NULL };
  const char *dst_args[] = { "memory", "size=4M", NULL };
  struct test_server src_srv, dst_srv;
  struct nbd_handle *src, *dst;
  char *buf;
  int64_t bad = -1;
  int copied = 1;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  if (server_start_nbdkit (&src_srv, src_args) == -1)
    bail_out ("cannot start nbdkit pattern: %s", strerror (errno));
  if (server_start_nbdkit (&dst_srv, dst_args) == -1)
    bail_out ("cannot start nbdkit memory: %s", strerror (errno));

  buf = malloc (CHUNK);
  if (!buf)
    bail_out ("malloc");

  src = nbd_create ();
  dst = nbd_create ();
  if (!ok (src != NULL && dst != NULL, "nbd_create twice"))
    bail_out ("nbd_create: %s", nbd_get_error ());

  if (!ok (nbd_connect_unix (src, src_srv.sock) == 0, "nbd_connect_unix to the pattern export"))
    bail_out ("%s", nbd_get_error ());
  if (!ok (nbd_connect_uri (dst, dst_srv.uri) == 0, "nbd_connect_uri to the memory export"))
    bail_out ("%s", nbd_get_error ());

  is_int (nbd_get_size (src), EXPORT_SIZE, "nbd_get_size of the source");
  is_int (nbd_get_size (dst), EXPORT_SIZE, "nbd_get_size of the destination");
  is_int (nbd_is_read_only (src), 1, "the pattern export is read-only");
  is_int (nbd_is_read_only (dst), 0, "the memory export is writable");
  is_int (nbd_can_flush (src), 0, "the pattern export cannot flush");
  is_int (nbd_can_flush (dst), 1, "the memory export can flush");

  /* A fresh memory export reads as zeroes. */
  ok (nbd_pread (dst, buf, CHUNK, 0, 0) == 0, "nbd_pread of the empty destination");
  {
    size_t i;
    for (i = 0; i < CHUNK && buf[i] == 0; i++)
      ;
    is_uint (i, CHUNK, "the empty destination reads as zeroes");
  }

  for (uint64_t off = 0; off < EXPORT_SIZE; off += CHUNK) {
    if (nbd_pread (src, buf, CHUNK, off, 0) == -1) {
      diag ("nbd_pread at %" PRIu64 ": %s", off, nbd_get_error ());
      copied = 0;
      break;
    }
    if (bad == -1)
      bad = pattern_mismatch (buf, off, CHUNK);
    if (nbd_pwrite (dst, buf, CHUNK, off, 0) == -1) {
      diag ("nbd_pwrite at %" PRIu64 ": %s", off, nbd_get_error ());
      copied = 0;
      break;
    }
  }
  ok (copied, "copied 4 MiB in 1 MiB nbd_pread/nbd_pwrite pairs");
  is_int (bad, -1, "the source data is the pattern (first bad offset)");

  ok (nbd_flush (dst, 0) == 0, "nbd_flush on the destination");

  /* Read back in a different chunking than was written. */
  bad = -1;
  copied = 1;
  for (uint64_t off = 0; off < EXPORT_SIZE; off += CHUNK / 4) {
    memset (buf, 0xaa, CHUNK / 4);
    if (nbd_pread (dst, buf, CHUNK / 4, off, 0) == -1) {
      diag ("nbd_pread back at %" PRIu64 ": %s", off, nbd_get_error ());
      copied = 0;
      break;
    }
    if (bad == -1)
      bad = pattern_mismatch (buf, off, CHUNK / 4);
  }
  ok (copied, "read the copy back in 256 KiB reads");
  is_int (bad, -1, "the copy matches the pattern (first bad offset)");

  /* An unaligned read in the middle, across a chunk boundary. */
  memset (buf, 0, 4096);
  ok (nbd_pread (dst, buf, 4096, CHUNK - 2052, 0) == 0, "an unaligned read across chunks");
  {
    uint64_t word;
    memcpy (&word, buf + 4, 8);      /* offset CHUNK - 2048, a word boundary */
    is_uint (be64toh (word), CHUNK - 2048, "it holds the pattern word at its offset");
  }

  /* The copy is what the server holds: a second connection sees it too. */
  {
    struct nbd_handle *again = nbd_create ();
    uint64_t word = 0;

    ok (again && nbd_connect_unix (again, dst_srv.sock) == 0, "a second connection to the copy");
    ok (nbd_pread (again, &word, 8, EXPORT_SIZE - 8, 0) == 0, "read the last word");
    is_uint (be64toh (word), EXPORT_SIZE - 8, "the last word is the pattern");
    ok (nbd_shutdown (again, 0) == 0, "nbd_shutdown of the second connection");
    nbd_close (again);
  }

  ok (nbd_shutdown (src, 0) == 0, "nbd_shutdown of the source");
  ok (nbd_shutdown (dst, 0) == 0, "nbd_shutdown of the destination");
  nbd_close (src);
  nbd_close (dst);
  free (buf);

  server_stop (&src_srv);
  server_stop (&dst_srv);
  return done_testing ();
}
