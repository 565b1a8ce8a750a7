/* io-pread-images: nbd_pread returns exactly what qemu-io wrote into raw and
 * qcow2 images (patterns, an unaligned 3-byte write, an explicit zero
 * range, untouched holes), served by qemu-nbd (raw and qcow2) and by
 * nbd-server (raw), with structured replies requested and not.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define EXPORT_SIZE (8 * 1024 * 1024)
#define K 1024
#define M (1024 * 1024)

static const char *const qemu_io_cmds[] = {
  "write -P 0xab 0 64k",
  "write -P 0x01 65537 3",
  "write -P 0xcd 1M 1M",
  "write -z 1536k 64k",
  "write -P 0x5a 4194303 2",
  "write -P 0xef 7M 1M",
  NULL
};

static unsigned char expected[EXPORT_SIZE];

static void
build_expected (void)
{
  memset (expected, 0, sizeof expected);
  memset (expected, 0xab, 64 * K);
  memset (expected + 65537, 0x01, 3);
  memset (expected + M, 0xcd, M);
  memset (expected + 1536 * K, 0, 64 * K);
  memset (expected + 4194303, 0x5a, 2);
  memset (expected + 7 * M, 0xef, M);
}

static const struct {
  uint64_t offset;
  size_t count;
} reads[] = {
  { 0, EXPORT_SIZE },
  { 0, 1 },
  { 65535, 6 },
  { 65537, 3 },
  { 65536, 4096 },
  { 64 * K - 100, 200 },
  { M - 1, 2 },
  { 1536 * K - 3, 64 * K + 6 },
  { 1536 * K, 64 * K },
  { 2 * M - 5, 10 },
  { 4194302, 4 },
  { 4194303, 1 },
  { 3 * M + 17, 3 * M },
  { 7 * M - 1, M + 1 },
  { EXPORT_SIZE - 1, 1 },
};

static void
check_reads (const char *what, const char *uri, bool sr, bool sr_expected)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[EXPORT_SIZE + 1];
  const char *mode = sr ? "sr requested" : "sr off";

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_request_structured_replies (h, sr));
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s, %s: connect", what, mode)) {
    diag ("%s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  is_int (nbd_get_structured_replies_negotiated (h), sr_expected,
          "%s, %s: structured replies negotiated: %d", what, mode, sr_expected);
  is_int (nbd_get_size (h), EXPORT_SIZE, "%s, %s: export size", what, mode);

  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
    uint64_t off = reads[i].offset;
    size_t count = reads[i].count, bad;

    memset (buf, 0x77, count + 1);
    if (!is_int (nbd_pread (h, buf, count, off, 0), 0, "%s, %s: nbd_pread %zu at %" PRIu64,
                 what, mode, count, off)) {
      diag ("%s", nbd_get_error ());
      continue;
    }
    for (bad = 0; bad < count; bad++)
      if (buf[bad] != expected[off + bad])
        break;
    if (!is_uint (bad, count, "%s, %s: the %zu bytes at %" PRIu64 " are what qemu-io wrote",
                  what, mode, count, off))
      diag ("byte at %" PRIu64 ": got 0x%02x, expected 0x%02x", off + bad, buf[bad],
            expected[off + bad]);
    is_int (buf[count], 0x77, "%s, %s: guard byte untouched", what, mode);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s, %s: nbd_shutdown", what, mode);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  char *raw, *qcow2;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  build_expected ();
  raw = image_create ("raw", EXPORT_SIZE, qemu_io_cmds);
  qcow2 = image_create ("qcow2", EXPORT_SIZE, qemu_io_cmds);
  if (!raw || !qcow2)
    bail_out ("cannot create the images (qemu-img/qemu-io)");

  {
    const char *args[] = { "-f", "raw", raw, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    check_reads ("qemu-nbd raw", s.uri, true, true);
    check_reads ("qemu-nbd raw", s.uri, false, false);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  {
    const char *args[] = { "-f", "qcow2", qcow2, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    check_reads ("qemu-nbd qcow2", s.uri, true, true);
    check_reads ("qemu-nbd qcow2", s.uri, false, false);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  if (server_start_nbd_server (&s, raw, "disk", NULL) == -1)
    bail_out ("cannot start nbd-server");
  /* nbd-server 3.24 has no structured replies: it refuses the option. */
  check_reads ("nbd-server raw", s.uri, true, false);
  check_reads ("nbd-server raw", s.uri, false, false);
  is_int (server_stop (&s), 0, "nbd-server stopped");

  free (raw);
  free (qcow2);
  return done_testing ();
}
