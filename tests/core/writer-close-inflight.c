/* writer-close-inflight: nbd_close with commands in flight under a
 * concurrent writer, once the writer thread is stopped.
 *  - commands whose bytes never left the ring (the thread held them): every
 *    kind (pread, pread_structured, pwrite, flush, trim, zero, cache,
 *    block_status) gets its completion callback exactly once, with
 *    ENOTCONN, and each .free (completion, chunk and extent closures) runs
 *    exactly once; chunk and extent callbacks never run;
 *  - commands sent but not answered (nbdkit's delay filter holds them for
 *    3 s): the same, and nbd_close does not wait for the server;
 *  - a command that completed before nbd_close is not called again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define KiB 1024
#define NR 16

struct rec {
  unsigned calls, frees;
  int error;
  unsigned mid_calls, mid_frees;        /* chunk or extent closure */
};

static struct rec recs[NR];
static unsigned char bufs[NR][64 * KiB];

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 1;
}

static void
done_free (void *user_data)
{
  ((struct rec *) user_data)->frees++;
}

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  ((struct rec *) user_data)->mid_calls++;
  return 0;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  ((struct rec *) user_data)->mid_calls++;
  return 0;
}

static void
mid_free (void *user_data)
{
  ((struct rec *) user_data)->mid_frees++;
}

/* Issue command @i (its kind is i % 8); returns the cookie. */
static int64_t
issue (struct nbd_handle *h, int i)
{
  nbd_completion_callback cb = { .callback = done_cb, .user_data = &recs[i], .free = done_free };
  uint64_t off = (uint64_t) i * 64 * KiB;

  switch (i % 8) {
  case 0: return nbd_aio_pread (h, bufs[i], 64 * KiB, off, cb, 0);
  case 1:
    return nbd_aio_pread_structured (h, bufs[i], 64 * KiB, off,
                                     (nbd_chunk_callback) { .callback = chunk_cb,
                                                            .user_data = &recs[i],
                                                            .free = mid_free }, cb, 0);
  case 2: return nbd_aio_pwrite (h, bufs[i], 64 * KiB, off, cb, 0);
  case 3: return nbd_aio_flush (h, cb, 0);
  case 4: return nbd_aio_trim (h, 64 * KiB, off, cb, 0);
  case 5: return nbd_aio_zero (h, 64 * KiB, off, cb, 0);
  case 6: return nbd_aio_cache (h, 64 * KiB, off, cb, 0);
  default:
    return nbd_aio_block_status (h, 64 * KiB, off,
                                 (nbd_extent_callback) { .callback = extent_cb,
                                                         .user_data = &recs[i],
                                                         .free = mid_free }, cb, 0);
  }
}

static bool
has_mid (int i)
{
  return i % 8 == 1 || i % 8 == 7;
}

static void
run (const char *uri, bool sent, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  bool done_before[NR];
  unsigned issued = 0, once = 0, enotconn = 0, freed = 0, mid_freed = 0, mid_called = 0;
  unsigned completed_before = 0, kept = 0;
  double t0, t;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  must (nbd_add_meta_context (h, "base:allocation"));
  if (nbd_set_concurrent_writer (h, &r, wr_enqueue) == -1 || nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  if (!sent)
    WR_SET (&r, gate_closed, true);
  memset (recs, 0, sizeof recs);
  for (int i = 0; i < NR; i++)
    if (issue (h, i) >= 1)
      issued++;
    else
      diag ("%s: command %d: %s", what, i, nbd_get_error ());
  is_uint (issued, NR, "%s: %d commands of every kind issued", what, NR);
  is_int (nbd_aio_in_flight (h), NR, "%s: all in flight", what);
  if (sent) {
    double end = wr_now () + 5;

    while (WR_GET (&r, sent) < WR_GET (&r, accepted) && wr_now () < end)
      wr_sleep_ms (5);
    is_uint (WR_GET (&r, sent), WR_GET (&r, accepted), "%s: the writer sent them all", what);
    /* Let whatever the server answers at once (flush) be read. */
    nbd_poll (h, 200);
  }
  else
    is_uint (WR_GET (&r, sent), WR_GET (&r, accepted) - WR_GET (&r, queued),
             "%s: the ring still holds them", what);
  wr_stop (&r);
  for (int i = 0; i < NR; i++) {
    done_before[i] = recs[i].calls > 0;
    completed_before += done_before[i];
  }
  if (!sent)
    is_uint (completed_before, 0, "%s: none completed before nbd_close", what);
  else
    ok (completed_before < NR, "%s: %u of %d completed before nbd_close (the rest are held by "
        "the server)", what, completed_before, NR);

  t0 = wr_now ();
  nbd_close (h);
  t = wr_now () - t0;
  ok (t < 1.0, "%s: nbd_close returned in %.3f s", what, t);

  for (int i = 0; i < NR; i++) {
    once += recs[i].calls == 1;
    if (!done_before[i] && recs[i].error == ENOTCONN)
      enotconn++;
    if (done_before[i] && recs[i].calls == 1 && recs[i].error == 0)
      kept++;
    freed += recs[i].frees == 1;
    if (has_mid (i)) {
      mid_freed += recs[i].mid_frees == 1;
      mid_called += recs[i].mid_calls;
    }
  }
  is_uint (once, NR, "%s: every completion callback ran exactly once", what);
  is_uint (enotconn, NR - completed_before, "%s: those still in flight got ENOTCONN", what);
  is_uint (kept, completed_before, "%s: those done before were not called again", what);
  is_uint (freed, NR, "%s: every completion .free ran exactly once", what);
  is_uint (mid_freed, 4, "%s: every chunk and extent .free ran exactly once", what);
  if (!sent)
    is_uint (mid_called, 0, "%s: chunk and extent callbacks never ran", what);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s, slow;
  const char *args[] = { "memory", "size=8M", NULL };
  const char *slow_args[] = { "--filter=delay", "memory", "size=8M", "delay-read=3",
                              "delay-write=3", "delay-trim=3", "delay-zero=3", "delay-cache=3",
                              "delay-extents=3", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  if (server_start_nbdkit (&slow, slow_args) == -1)
    bail_out ("cannot start nbdkit with the delay filter");
  run (s.uri, false, "held in the ring");
  run (slow.uri, true, "sent, not answered");
  is_int (server_stop (&s), 0, "nbdkit stopped");
  is_int (server_stop (&slow), 0, "nbdkit (delay) stopped");
  return done_testing ();
}
