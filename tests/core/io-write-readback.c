/* io-write-readback: data written with nbd_pwrite (with and without FUA,
 * aligned and not, overlapping) reads back byte for byte through nbd_pread,
 * nbd_flush succeeds, and for raw images the file itself holds the data
 * after shutdown.  Against nbdkit memory, qemu-nbd (raw and qcow2) and
 * nbd-server (raw).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define SIZE (4 * 1024 * 1024)

static unsigned char model[SIZE];
static unsigned char buf[SIZE];

static const struct {
  uint64_t offset;
  size_t count;
} writes[] = {
  { 0, 512 },
  { 512, 1 },
  { 4095, 3 },
  { 65536, 65536 },
  { 100000, 1234567 },
  { 1000000, 7 },               /* inside the previous one */
  { 3 * 1024 * 1024 - 1, 1024 * 1024 + 1 },  /* to the very end */
  { 2 * 1024 * 1024, 4096 },
  { SIZE - 1, 1 },
};

static uint32_t seed = 12345;

static unsigned char
rnd (void)
{
  seed = seed * 1103515245 + 12345;
  return (unsigned char) (seed >> 16);
}

static size_t
first_diff (const unsigned char *a, const unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i])
      return i;
  return n;
}

static void
run (const char *what, const char *uri, const char *raw_file)
{
  struct nbd_handle *h = nbd_create ();
  int fua;

  if (!h)
    bail_out ("nbd_create");
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", what)) {
    diag ("%s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  is_int (nbd_get_size (h), SIZE, "%s: size", what);
  is_int (nbd_is_read_only (h), 0, "%s: writable", what);
  is_int (nbd_can_flush (h), 1, "%s: can flush", what);
  fua = nbd_can_fua (h);
  is_int (fua, 1, "%s: can FUA", what);

  /* The image starts as zeroes. */
  memset (model, 0, SIZE);
  memset (buf, 0xaa, SIZE);
  is_int (nbd_pread (h, buf, SIZE, 0, 0), 0, "%s: read the fresh image", what);
  is_uint (first_diff (buf, model, SIZE), SIZE, "%s: it is all zeroes", what);

  for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
    uint64_t off = writes[i].offset;
    size_t count = writes[i].count;
    uint32_t flags = (i & 1) && fua == 1 ? LIBNBD_CMD_FLAG_FUA : 0;
    unsigned char *src = malloc (count);

    if (!src)
      bail_out ("malloc");
    for (size_t j = 0; j < count; j++)
      src[j] = rnd ();
    if (is_int (nbd_pwrite (h, src, count, off, flags), 0, "%s: nbd_pwrite %zu at %" PRIu64 "%s",
                what, count, off, flags ? " with FUA" : ""))
      memcpy (model + off, src, count);
    else
      diag ("%s", nbd_get_error ());
    memset (buf, 0xaa, count);
    is_int (nbd_pread (h, buf, count, off, 0), 0, "%s: read it back", what);
    is_uint (first_diff (buf, src, count), count, "%s: the same %zu bytes", what, count);
    free (src);
  }
  is_int (nbd_flush (h, 0), 0, "%s: nbd_flush", what);

  memset (buf, 0xaa, SIZE);
  is_int (nbd_pread (h, buf, SIZE, 0, 0), 0, "%s: read the whole image", what);
  is_uint (first_diff (buf, model, SIZE), SIZE, "%s: it matches every write, in order", what);

  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", what);
  nbd_close (h);

  /* A second connection sees the same data. */
  h = nbd_create ();
  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: reconnect: %s", what, nbd_get_error ());
  memset (buf, 0xaa, SIZE);
  is_int (nbd_pread (h, buf, SIZE, 0, 0), 0, "%s: read again on a new connection", what);
  is_uint (first_diff (buf, model, SIZE), SIZE, "%s: the data persisted", what);
  nbd_shutdown (h, 0);
  nbd_close (h);

  if (raw_file) {
    int fd = open (raw_file, O_RDONLY);
    ssize_t n = fd >= 0 ? pread (fd, buf, SIZE, 0) : -1;

    is_int (n, SIZE, "%s: read the raw file", what);
    is_uint (first_diff (buf, model, SIZE), SIZE, "%s: the file holds the data", what);
    if (fd >= 0)
      close (fd);
  }
}

int
main (void)
{
  struct test_server s;
  char *raw1 = image_create_raw (SIZE), *raw2 = image_create_raw (SIZE);
  char *qcow2 = image_create_qcow2 (SIZE);

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!raw1 || !raw2 || !qcow2)
    bail_out ("cannot create images");

  {
    const char *args[] = { "memory", "size=4M", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit");
    run ("nbdkit memory", s.uri, NULL);
    is_int (server_stop (&s), 0, "nbdkit stopped");
  }
  {
    const char *args[] = { "-f", "raw", raw1, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    run ("qemu-nbd raw", s.uri, raw1);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  {
    const char *args[] = { "-f", "qcow2", qcow2, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    run ("qemu-nbd qcow2", s.uri, NULL);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  if (server_start_nbd_server (&s, raw2, "disk", "flush = true\nfua = true\n") == -1)
    bail_out ("cannot start nbd-server");
  run ("nbd-server raw", s.uri, raw2);
  is_int (server_stop (&s), 0, "nbd-server stopped");

  free (raw1);
  free (raw2);
  free (qcow2);
  return done_testing ();
}
