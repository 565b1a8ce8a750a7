/* io-trim-zero-cache: nbd_trim, nbd_zero and nbd_cache against real servers.
 *
 * Proves: on nbdkit memory a trimmed range reads back as zeroes and its
 * neighbours keep their data (aligned, unaligned, with FUA); nbd_zero
 * zeroes exactly its range with flags 0, NO_HOLE, FUA and FAST_ZERO (the
 * server advertises fast zero); nbd_cache succeeds and changes nothing;
 * through nbdkit's nozero filter a FAST_ZERO request fails with the
 * server's ENOTSUP and leaves the data alone (fastzeromode=default with
 * zeromode=emulate, and fastzeromode=slow), while the same zero without
 * FAST_ZERO succeeds, and fastzeromode=ignore zeroes; on qemu-nbd (qcow2,
 * --discard=unmap) a whole-cluster trim reads back zero, zero with NO_HOLE
 * and FAST_ZERO works on unallocated and allocated clusters, cache works.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define K 1024
#define SIZE (1024 * 1024)

static unsigned char model[SIZE];
static unsigned char buf[SIZE];

static size_t
first_diff (const unsigned char *a, const unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i])
      return i;
  return n;
}

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

static struct nbd_handle *
connect_or_bail (const char *what, const char *uri)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", what))
    bail_out ("%s: %s", what, nbd_get_error ());
  return h;
}

/* Fill the whole export with 0x55 (model too). */
static void
fill (const char *what, struct nbd_handle *h)
{
  memset (model, 0x55, SIZE);
  is_int (nbd_pwrite (h, model, SIZE, 0, 0), 0, "%s: fill the export with 0x55", what);
}

/* Read the whole export and compare with the model. */
static void
matches (const char *what, struct nbd_handle *h, const char *after)
{
  size_t d;

  memset (buf, 0xaa, SIZE);
  is_int (nbd_pread (h, buf, SIZE, 0, 0), 0, "%s: read back after %s", what, after);
  d = first_diff (buf, model, SIZE);
  if (!is_uint (d, SIZE, "%s: after %s the export is exactly as expected", what, after))
    diag ("first difference at %zu: 0x%02x, expected 0x%02x", d, buf[d], model[d]);
}

static void
nbdkit_memory (const struct test_server *s)
{
  static const struct { const char *name; uint32_t flags; } zf[] = {
    { "no flags", 0 },
    { "NO_HOLE", LIBNBD_CMD_FLAG_NO_HOLE },
    { "FUA", LIBNBD_CMD_FLAG_FUA },
    { "FAST_ZERO", LIBNBD_CMD_FLAG_FAST_ZERO },
    { "FAST_ZERO|NO_HOLE|FUA",
      LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA },
  };
  const char *w = "memory";
  struct nbd_handle *h = connect_or_bail (w, s->uri);

  is_int (nbd_can_trim (h), 1, "memory: can trim");
  is_int (nbd_can_zero (h), 1, "memory: can zero");
  is_int (nbd_can_fast_zero (h), 1, "memory: can fast zero");
  is_int (nbd_can_cache (h), 1, "memory: can cache");

  fill (w, h);
  is_int (nbd_trim (h, 64 * K, 0, 0), 0, "memory: trim 64K at 0");
  memset (model, 0, 64 * K);
  matches (w, h, "an aligned trim");
  is_int (nbd_trim (h, 1000, 100000, 0), 0, "memory: trim 1000 at 100000");
  memset (model + 100000, 0, 1000);
  matches (w, h, "an unaligned trim");
  is_int (nbd_trim (h, 4096, 512 * K, LIBNBD_CMD_FLAG_FUA), 0, "memory: trim with FUA");
  memset (model + 512 * K, 0, 4096);
  matches (w, h, "a FUA trim");
  is_int (nbd_trim (h, 1, SIZE - 1, 0), 0, "memory: trim the last byte");
  model[SIZE - 1] = 0;
  matches (w, h, "a trim of the last byte");

  for (size_t i = 0; i < sizeof zf / sizeof zf[0]; i++) {
    uint64_t off = 200001 + i * 30000;

    fill (w, h);
    is_int (nbd_zero (h, 4096 + i, off, zf[i].flags), 0, "memory: nbd_zero %s", zf[i].name);
    memset (model + off, 0, 4096 + i);
    matches (w, h, zf[i].name);
  }

  is_int (nbd_cache (h, 64 * K, 0, 0), 0, "memory: cache 64K at 0");
  is_int (nbd_cache (h, SIZE, 0, 0), 0, "memory: cache the whole export");
  is_int (nbd_cache (h, 3, 77777, 0), 0, "memory: cache 3 unaligned bytes");
  matches (w, h, "cache");

  is_int (nbd_shutdown (h, 0), 0, "memory: shutdown");
  nbd_close (h);
}

/* A FAST_ZERO request the server will not do quickly fails with ENOTSUP. */
static void
nozero_slow (const char *w, const struct test_server *s)
{
  struct nbd_handle *h = connect_or_bail (w, s->uri);

  is_int (nbd_can_zero (h), 1, "%s: can zero", w);
  is_int (nbd_can_fast_zero (h), 1, "%s: advertises fast zero", w);
  fill (w, h);
  ok (nbd_zero (h, 64 * K, 0, LIBNBD_CMD_FLAG_FAST_ZERO) == -1, "%s: FAST_ZERO fails", w);
  is_errno (ENOTSUP, "%s: with the server's ENOTSUP", w);
  ok (prefix_is ("nbd_zero"), "%s: message begins with nbd_zero: (%s)", w, nbd_get_error ());
  ok (nbd_zero (h, 64 * K, 0, LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE) == -1,
      "%s: FAST_ZERO|NO_HOLE fails", w);
  is_errno (ENOTSUP, "%s: with ENOTSUP too", w);
  matches (w, h, "refused fast zeroes (nothing zeroed)");
  is_int (nbd_zero (h, 64 * K, 0, 0), 0, "%s: the same zero without FAST_ZERO succeeds", w);
  memset (model, 0, 64 * K);
  is_int (nbd_zero (h, 100, 300000, LIBNBD_CMD_FLAG_NO_HOLE), 0, "%s: zero NO_HOLE succeeds", w);
  memset (model + 300000, 0, 100);
  matches (w, h, "slow zeroes");
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

static void
nozero_ignore (const struct test_server *s)
{
  const char *w = "nozero fastzeromode=ignore";
  struct nbd_handle *h = connect_or_bail (w, s->uri);

  is_int (nbd_can_fast_zero (h), 1, "%s: advertises fast zero", w);
  fill (w, h);
  is_int (nbd_zero (h, 8 * K, 4 * K, LIBNBD_CMD_FLAG_FAST_ZERO), 0, "%s: FAST_ZERO succeeds", w);
  memset (model + 4 * K, 0, 8 * K);
  matches (w, h, "an ignored FAST_ZERO");
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

static void
qemu_qcow2 (const struct test_server *s)
{
  const char *w = "qemu-nbd qcow2";
  struct nbd_handle *h = connect_or_bail (w, s->uri);

  is_int (nbd_can_trim (h), 1, "%s: can trim", w);
  is_int (nbd_can_zero (h), 1, "%s: can zero", w);
  is_int (nbd_can_fast_zero (h), 1, "%s: can fast zero", w);
  is_int (nbd_can_cache (h), 1, "%s: can cache", w);

  /* Unallocated clusters: zeroing them is fast. */
  memset (model, 0, SIZE);
  is_int (nbd_zero (h, 64 * K, 0, LIBNBD_CMD_FLAG_FAST_ZERO), 0,
          "%s: FAST_ZERO on an unallocated cluster", w);
  is_int (nbd_zero (h, 100, 70000, LIBNBD_CMD_FLAG_FAST_ZERO), 0,
          "%s: unaligned FAST_ZERO on an unallocated cluster", w);
  matches (w, h, "fast zeroes of holes");

  fill (w, h);
  is_int (nbd_trim (h, 128 * K, 256 * K, 0), 0, "%s: trim two whole clusters", w);
  memset (model + 256 * K, 0, 128 * K);
  matches (w, h, "a whole-cluster trim (--discard=unmap)");
  is_int (nbd_zero (h, 64 * K, 0, LIBNBD_CMD_FLAG_NO_HOLE), 0, "%s: zero NO_HOLE", w);
  memset (model, 0, 64 * K);
  is_int (nbd_zero (h, 3, 65537, 0), 0, "%s: zero 3 unaligned bytes", w);
  memset (model + 65537, 0, 3);
  is_int (nbd_zero (h, 64 * K, 512 * K, LIBNBD_CMD_FLAG_FUA), 0, "%s: zero with FUA", w);
  memset (model + 512 * K, 0, 64 * K);
  matches (w, h, "zeroes");
  is_int (nbd_cache (h, SIZE, 0, 0), 0, "%s: cache the whole export", w);
  is_int (nbd_cache (h, 5, 12345, 0), 0, "%s: cache 5 unaligned bytes", w);
  matches (w, h, "cache");
  is_int (nbd_flush (h, 0), 0, "%s: flush", w);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", w);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  {
    const char *args[] = { "memory", "size=1M", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit");
    nbdkit_memory (&s);
    is_int (server_stop (&s), 0, "nbdkit memory stopped");
  }
  {
    const char *args[] = { "--filter=nozero", "memory", "size=1M", "zeromode=emulate", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit");
    nozero_slow ("nozero zeromode=emulate", &s);
    is_int (server_stop (&s), 0, "nbdkit nozero stopped");
  }
  {
    const char *args[] = { "--filter=nozero", "memory", "size=1M", "zeromode=plugin",
                           "fastzeromode=slow", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit");
    nozero_slow ("nozero fastzeromode=slow", &s);
    is_int (server_stop (&s), 0, "nbdkit nozero stopped");
  }
  {
    const char *args[] = { "--filter=nozero", "memory", "size=1M", "zeromode=plugin",
                           "fastzeromode=ignore", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit");
    nozero_ignore (&s);
    is_int (server_stop (&s), 0, "nbdkit nozero stopped");
  }

  img = image_create_qcow2 (SIZE);
  if (!img)
    bail_out ("cannot create the image");
  {
    const char *args[] = { "-f", "qcow2", "--discard=unmap", img, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    qemu_qcow2 (&s);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  free (img);
  return done_testing ();
}
