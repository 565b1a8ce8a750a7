/* io-pread-pattern: nbd_pread returns exactly the bytes of nbdkit's pattern
 * plugin (each 8-byte big-endian word at offset o holds o) at aligned and
 * unaligned offsets, for sizes from 1 byte to 32 MiB, with structured
 * replies negotiated and without them.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define EXPORT_SIZE (UINT64_C (1) << 30)

static unsigned char
pattern_byte (uint64_t pos)
{
  return (unsigned char) ((pos & ~UINT64_C (7)) >> (8 * (7 - (pos & 7))));
}

/* -1 if buf holds the pattern for [offset, offset+count), else the first
 * wrong byte's index. */
static int64_t
pattern_mismatch (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++)
    if (buf[i] != pattern_byte (offset + i))
      return (int64_t) i;
  return -1;
}

static const struct {
  uint64_t offset;
  size_t count;
} reads[] = {
  { 0, 1 },
  { 1, 1 },
  { 7, 1 },
  { 0, 8 },
  { 8, 8 },
  { 3, 13 },
  { 4095, 2 },
  { 4096, 4096 },
  { 12345, 65536 + 7 },
  { 1048575, 1 },
  { 1000003, 1048576 + 3 },
  { 0, 32 * 1024 * 1024 },
  { 13, 32 * 1024 * 1024 - 3 },
  { 777777777, 5 * 1024 * 1024 + 1 },
  { EXPORT_SIZE - 9, 9 },
  { EXPORT_SIZE - 1, 1 },
};

static void
run (const struct test_server *s, bool sr)
{
  const char *mode = sr ? "structured" : "simple";
  struct nbd_handle *h = nbd_create ();
  unsigned char *buf;

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_set_request_structured_replies (h, sr), 0, "%s: request structured replies: %d",
          mode, sr);
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect to nbdkit pattern", mode))
    bail_out ("cannot connect: %s", nbd_get_error ());
  is_int (nbd_get_structured_replies_negotiated (h), sr,
          "%s: structured replies negotiated as requested", mode);
  is_int (nbd_get_size (h), EXPORT_SIZE, "%s: export size", mode);
  is_int (nbd_is_read_only (h), 1, "%s: pattern is read-only", mode);

  buf = malloc (32 * 1024 * 1024 + 16);
  if (!buf)
    bail_out ("malloc");
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
    uint64_t off = reads[i].offset;
    size_t count = reads[i].count;
    int64_t bad;

    /* Poison the buffer, and one guard byte past the request. */
    memset (buf, 0xaa, count + 1);
    if (!is_int (nbd_pread (h, buf, count, off, 0), 0,
                 "%s: nbd_pread %zu bytes at offset %" PRIu64, mode, count, off)) {
      diag ("error: %s", nbd_get_error ());
      continue;
    }
    bad = pattern_mismatch (buf, count, off);
    if (!is_int (bad, -1, "%s: the %zu bytes at %" PRIu64 " hold the pattern", mode, count, off))
      diag ("byte %" PRId64 ": got 0x%02x, expected 0x%02x", bad, buf[bad],
            pattern_byte (off + (uint64_t) bad));
    is_int (buf[count], 0xaa, "%s: nothing written past the %zu requested bytes", mode, count);
  }

  /* The same buffer reused for a read that straddles the end fails and
   * leaves the connection usable. */
  ok (nbd_pread (h, buf, 16, EXPORT_SIZE - 8, 0) == -1, "%s: read straddling the end fails", mode);
  is_errno (EINVAL, "%s: with EINVAL", mode);
  ok (strncmp (nbd_get_error () ? nbd_get_error () : "", "nbd_pread: ", 11) == 0,
      "%s: message begins with nbd_pread: (%s)", mode, nbd_get_error ());
  memset (buf, 0, 16);
  is_int (nbd_pread (h, buf, 16, 8, 0), 0, "%s: next read succeeds", mode);
  is_int (pattern_mismatch (buf, 16, 8), -1, "%s: and holds the pattern", mode);

  free (buf);
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", mode);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "pattern", "size=1G", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit pattern");
  }
  run (&s, true);
  run (&s, false);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
