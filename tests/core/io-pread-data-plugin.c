/* io-pread-data-plugin: nbd_pread returns exactly the bytes described to
 * nbdkit's data plugin (literal bytes, @offsets, repeats, a string), zeroes
 * elsewhere, for whole-disk, per-region and unaligned reads, with and
 * without structured replies.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define EXPORT_SIZE (1024 * 1024)

static unsigned char expected[EXPORT_SIZE];

static void
build_expected (void)
{
  memset (expected, 0, sizeof expected);
  expected[0] = 1;
  expected[1] = 2;
  expected[2] = 3;
  expected[0x1000] = 4;
  for (int i = 0; i < 1024; i++) {
    expected[0x8000 + 2 * i] = 0x55;
    expected[0x8000 + 2 * i + 1] = 0xaa;
  }
  memcpy (expected + 0x12345, "hello", 5);
  memset (expected + 0x20000, 0xff, 3);
}

static const struct {
  uint64_t offset;
  size_t count;
} reads[] = {
  { 0, EXPORT_SIZE },
  { 0, 1 },
  { 1, 2 },
  { 2, 1 },
  { 3, 1 },
  { 0, 3 },
  { 0xfff, 3 },
  { 0x1000, 1 },
  { 0x7fff, 2050 },
  { 0x8001, 2046 },
  { 0x87ff, 2 },
  { 0x12345, 5 },
  { 0x12344, 7 },
  { 0x12347, 1 },
  { 0x1ffff, 5 },
  { 0x20002, 1 },
  { 0x20003, 1 },
  { 3, EXPORT_SIZE - 3 },
  { 0x11111, 0x33333 },
  { EXPORT_SIZE - 1, 1 },
};

static void
run (const struct test_server *s, bool sr)
{
  const char *mode = sr ? "structured" : "simple";
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[EXPORT_SIZE + 1];

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_request_structured_replies (h, sr));
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect to nbdkit data", mode))
    bail_out ("cannot connect: %s", nbd_get_error ());
  is_int (nbd_get_structured_replies_negotiated (h), sr, "%s: structured replies as requested",
          mode);
  is_int (nbd_get_size (h), EXPORT_SIZE, "%s: export size", mode);

  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
    uint64_t off = reads[i].offset;
    size_t count = reads[i].count, bad;

    memset (buf, 0xcc, count + 1);
    if (!is_int (nbd_pread (h, buf, count, off, 0), 0,
                 "%s: nbd_pread %zu bytes at 0x%" PRIx64, mode, count, off)) {
      diag ("error: %s", nbd_get_error ());
      continue;
    }
    for (bad = 0; bad < count; bad++)
      if (buf[bad] != expected[off + bad])
        break;
    if (!is_uint (bad, count, "%s: the %zu bytes at 0x%" PRIx64 " are the data", mode, count,
                  off))
      diag ("byte at 0x%" PRIx64 ": got 0x%02x, expected 0x%02x", off + bad, buf[bad],
            expected[off + bad]);
    is_int (buf[count], 0xcc, "%s: guard byte after the buffer untouched", mode);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", mode);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = {
    "data", "1 2 3 @0x1000 4 @0x8000 ( 0x55 0xaa )*1024 @0x12345 \"hello\" @0x20000 0xff*3",
    "size=1M", NULL
  };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  build_expected ();
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit data");
  }
  run (&s, true);
  run (&s, false);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
