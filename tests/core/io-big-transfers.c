/* io-big-transfers: large requests move every byte.
 *
 * Proves: 64 MiB of pseudo-random data written to nbdkit memory in 4 MiB
 * requests reads back identical in 4 MiB requests, in one 64 MiB request
 * (the largest allowed), and through 16 aio reads of 4 MiB in flight at
 * once; one 64 MiB write overwrites it all and reads back; and 120 reads
 * of random sizes (1 byte to 8 MiB) at random offsets of a 1 TiB nbdkit
 * pattern disk (fixed seed) return the pattern exactly, with structured
 * replies and without.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define M (UINT64_C (1024) * 1024)
#define TOTAL (64 * M)
#define CHUNK (4 * M)

static uint64_t rng = 0x9e3779b97f4a7c15;

static uint64_t
next_rand (void)
{
  /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (2685821657736338717);
}

static size_t
first_diff (const unsigned char *a, const unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i])
      return i;
  return n;
}

static unsigned char
pattern_byte (uint64_t pos)
{
  return (unsigned char) ((pos & ~UINT64_C (7)) >> (8 * (7 - (pos & 7))));
}

static int64_t
pattern_mismatch (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++)
    if (buf[i] != pattern_byte (offset + i))
      return (int64_t) i;
  return -1;
}

static void
memory_64m (const char *uri, unsigned char *data, unsigned char *got)
{
  struct nbd_handle *h = nbd_create ();
  bool all = true;

  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_get_size (h), TOTAL, "memory: 64M export");
  for (uint64_t i = 0; i < TOTAL; i += 8) {
    uint64_t v = next_rand ();
    memcpy (data + i, &v, 8);
  }

  for (uint64_t off = 0; off < TOTAL; off += CHUNK)
    all &= nbd_pwrite (h, data + off, CHUNK, off, 0) == 0;
  ok (all, "memory: 16 writes of 4M succeed");
  all = true;
  memset (got, 0, TOTAL);
  for (uint64_t off = 0; off < TOTAL; off += CHUNK)
    all &= nbd_pread (h, got + off, CHUNK, off, 0) == 0;
  ok (all, "memory: 16 reads of 4M succeed");
  is_uint (first_diff (got, data, TOTAL), TOTAL, "memory: the 64M read back in 4M pieces match");

  memset (got, 0, TOTAL);
  is_int (nbd_pread (h, got, TOTAL, 0, 0), 0, "memory: one 64M read");
  is_uint (first_diff (got, data, TOTAL), TOTAL, "memory: matches");

  /* 16 reads of 4M in flight at once. */
  {
    int64_t c[16];
    int completed = 0;

    memset (got, 0, TOTAL);
    for (int i = 0; i < 16; i++)
      c[i] = nbd_aio_pread (h, got + i * CHUNK, CHUNK, i * CHUNK, NBD_NULL_COMPLETION, 0);
    is_int (nbd_aio_in_flight (h), 16, "memory: 16 aio reads in flight");
    while (completed < 16) {
      int64_t cookie;

      if (nbd_poll (h, 10000) != 1)
        break;
      while ((cookie = nbd_aio_peek_command_completed (h)) > 0)
        if (nbd_aio_command_completed (h, (uint64_t) cookie) == 1)
          completed++;
        else
          break;
    }
    is_int (completed, 16, "memory: all 16 completed successfully");
    ok (c[0] > 0 && c[15] > 0, "memory: cookies were issued");
    is_uint (first_diff (got, data, TOTAL), TOTAL, "memory: the aio reads match");
  }

  for (uint64_t i = 0; i < TOTAL; i++)
    data[i] = (unsigned char) ~data[i];
  is_int (nbd_pwrite (h, data, TOTAL, 0, 0), 0, "memory: one 64M write");
  memset (got, 0, TOTAL);
  is_int (nbd_pread (h, got, TOTAL, 0, 0), 0, "memory: read it back");
  is_uint (first_diff (got, data, TOTAL), TOTAL, "memory: matches the 64M write");
  is_int (nbd_shutdown (h, 0), 0, "memory: shutdown");
  nbd_close (h);
}

static void
pattern_stress (const char *uri, unsigned char *buf, bool sr)
{
  const char *m = sr ? "pattern, sr" : "pattern, no sr";
  const uint64_t size = UINT64_C (1) << 40;
  struct nbd_handle *h = nbd_create ();
  unsigned good = 0;

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_request_structured_replies (h, sr));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_get_size (h), size, "%s: 1T export", m);
  for (int i = 0; i < 120; i++) {
    size_t count = 1 + next_rand () % (8 * M);
    uint64_t off = next_rand () % (size - count + 1);
    int64_t bad;

    memset (buf, 0xaa, count);
    if (nbd_pread (h, buf, count, off, 0) == -1) {
      diag ("%s: read %zu at %" PRIu64 ": %s", m, count, off, nbd_get_error ());
      continue;
    }
    bad = pattern_mismatch (buf, count, off);
    if (bad == -1)
      good++;
    else
      diag ("%s: read %zu at %" PRIu64 ": byte %" PRId64 " wrong", m, count, off, bad);
  }
  is_int (good, 120, "%s: 120 random reads all return the pattern", m);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", m);
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *margs[] = { "memory", "size=64M", NULL };
  const char *pargs[] = { "pattern", "size=1T", NULL };
  unsigned char *data = malloc (TOTAL), *got = malloc (TOTAL);

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!data || !got)
    bail_out ("malloc");
  if (server_start_nbdkit (&s, margs) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  memory_64m (s.uri, data, got);
  is_int (server_stop (&s), 0, "nbdkit memory stopped");

  if (server_start_nbdkit (&s, pargs) == -1)
    bail_out ("cannot start nbdkit pattern");
  pattern_stress (s.uri, got, true);
  pattern_stress (s.uri, got, false);
  is_int (server_stop (&s), 0, "nbdkit pattern stopped");
  free (data);
  free (got);
  return done_testing ();
}
