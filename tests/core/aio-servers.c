/* aio-servers: every aio command against nbdkit, qemu-nbd and nbd-server,
 * driven by nbd_poll, with completion callbacks (error seen, auto-retire,
 * .free once) and the data checked afterwards.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define SIZE (4 * 1024 * 1024)

struct counters {
  int completed, freed, errors;
};

static int
on_complete (void *p, int *error)
{
  struct counters *c = p;

  c->completed++;
  if (*error)
    c->errors++;
  return 1;                     /* retire at once */
}

static void
on_free (void *p)
{
  ((struct counters *) p)->freed++;
}

static int
on_extent (void *p, const char *ctx, uint64_t off, uint32_t *e, size_t n, int *error)
{
  uint64_t *sum = p;

  for (size_t i = 0; i < n; i += 2)
    *sum += e[i];
  return 0;
}

static int
on_chunk (void *p, const void *buf, size_t count, uint64_t off, unsigned status, int *error)
{
  uint64_t *seen = p;

  *seen += count;
  return 0;
}

static void
exercise (const char *name, const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  struct counters c = { 0 };
  nbd_completion_callback cb = { .callback = on_complete, .user_data = &c, .free = on_free };
  char *wbuf = malloc (SIZE), *rbuf = malloc (SIZE), *zeros = calloc (1, SIZE);
  uint64_t extent_sum = 0, chunk_seen = 0;
  int expected = 0;

  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1) {
    ok (false, "%s: connect: %s", name, nbd_get_error ());
    goto out;
  }
  for (size_t i = 0; i < SIZE; i++)
    wbuf[i] = (char) (i * 13 + 5);

  /* Writes of 256 KiB fill the export, then a flush, all queued at once. */
  for (uint64_t off = 0; off < SIZE; off += 256 * 1024, expected++)
    ok (nbd_aio_pwrite (h, wbuf + off, 256 * 1024, off, cb, 0) > 0, "%s: aio_pwrite %" PRIu64,
        name, off);
  if (nbd_can_flush (h) == 1) {
    ok (nbd_aio_flush (h, cb, 0) > 0, "%s: aio_flush", name);
    expected++;
  }
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 10000) <= 0)
      break;
  is_int (c.completed, expected, "%s: every write completion ran", name);
  is_int (c.errors, 0, "%s: no write failed", name);

  ok (nbd_aio_pread (h, rbuf, SIZE, 0, cb, 0) > 0, "%s: aio_pread", name);
  expected++;
  if (nbd_get_structured_replies_negotiated (h) == 1) {
    ok (nbd_aio_pread_structured (h, rbuf, 65536, 65536,
                                  (nbd_chunk_callback) { .callback = on_chunk,
                                                         .user_data = &chunk_seen },
                                  cb, 0) > 0, "%s: aio_pread_structured", name);
    expected++;
  }
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 10000) <= 0)
      break;
  ok (memcmp (rbuf, wbuf, SIZE) == 0, "%s: aio_pread returned what was written", name);
  if (nbd_get_structured_replies_negotiated (h) == 1)
    is_uint (chunk_seen, 65536, "%s: structured read chunks cover the request", name);

  if (nbd_can_trim (h) == 1) {
    ok (nbd_aio_trim (h, 65536, 0, cb, 0) > 0, "%s: aio_trim", name);
    expected++;
  }
  if (nbd_can_zero (h) == 1) {
    ok (nbd_aio_zero (h, 1024 * 1024, 1024 * 1024, cb, 0) > 0, "%s: aio_zero", name);
    expected++;
  }
  if (nbd_can_cache (h) == 1) {
    ok (nbd_aio_cache (h, 65536, 0, cb, 0) > 0, "%s: aio_cache", name);
    expected++;
  }
  if (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1) {
    ok (nbd_aio_block_status (h, SIZE, 0,
                              (nbd_extent_callback) { .callback = on_extent,
                                                      .user_data = &extent_sum },
                              cb, 0) > 0, "%s: aio_block_status", name);
    expected++;
  }
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 10000) <= 0)
      break;
  is_int (c.completed, expected, "%s: every completion ran", name);
  is_int (c.errors, 0, "%s: no command failed", name);
  if (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
    ok (extent_sum >= SIZE, "%s: extents cover the export (%" PRIu64 ")", name, extent_sum);
  if (nbd_can_zero (h) == 1) {
    if (nbd_pread (h, rbuf, 1024 * 1024, 1024 * 1024, 0) == 0)
      ok (memcmp (rbuf, zeros, 1024 * 1024) == 0, "%s: zeroed range reads as zeroes", name);
    else
      ok (false, "%s: pread after zero: %s", name, nbd_get_error ());
  }

  is_int (nbd_aio_disconnect (h, 0), 0, "%s: aio_disconnect", name);
  ok (nbd_aio_pread (h, rbuf, 512, 0, NBD_NULL_COMPLETION, 0) == -1 && nbd_get_errno () == EINVAL,
      "%s: no command after aio_disconnect", name);
  for (int i = 0; i < 1000 && !nbd_aio_is_closed (h) && !nbd_aio_is_dead (h); i++)
    nbd_poll (h, 1000);
  ok (nbd_aio_is_closed (h), "%s: closed after disconnect (%s)", name, nbd_connection_state (h));
out:
  nbd_close (h);
  is_int (c.freed, expected, "%s: each completion freed once", name);
  free (wbuf);
  free (rbuf);
  free (zeros);
}

int
main (void)
{
  struct test_server s;
  char *img;

  tap_timeout (120);
  if (server_start_nbdkit (&s, (const char *const[]) { "memory", "size=4M", NULL }) == -1)
    bail_out ("nbdkit");
  exercise ("nbdkit", s.uri);
  server_stop (&s);

  img = image_create_raw (SIZE);
  if (!img || server_start_qemu_nbd (&s, (const char *const[]) { "-f", "raw", "-x", "disk",
                                                                 img, NULL }) == -1)
    bail_out ("qemu-nbd");
  exercise ("qemu-nbd", s.uri);
  server_stop (&s);
  free (img);

  img = image_create_raw (SIZE);
  if (!img || server_start_nbd_server (&s, img, "disk", NULL) == -1)
    bail_out ("nbd-server");
  exercise ("nbd-server", s.uri);
  server_stop (&s);
  free (img);
  return done_testing ();
}
