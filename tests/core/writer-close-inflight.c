/* writer-close-inflight: nbd_close with commands in flight under a
 * concurrent writer, once the writer thread is stopped.
 *  - commands whose bytes never left the ring (the thread held them): every
 *    kind (pread, pread_structured, pwrite, flush, trim, zero, cache,
 *    block_status) gets its completion callback exactly once, with
 *    ENOTCONN, and each .free (completion, chunk and extent closures) runs
 *    exactly once; chunk and extent callbacks never run;
 *  - commands sent but not answered (nbdkit's pause filter holds every
 *    request until the test resumes it, after nbd_close: an event, not a
 *    delay): the same, and nbd_close does not wait for the server;
 *  - a command that completed before nbd_close (a flush answered before
 *    anything was held) is not called again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define KiB 1024
#define NR 16

/* "Did not wait for the server": the paused server would never answer, so
 * a close that waited would hang; 15 s is generous for a loaded 2-core
 * machine under a sanitizer and still says the close did not wait on some
 * timeout of its own either. */
#define SLOW_MS 15000

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

/* @pause: the pause filter's control socket (commands sent), or NULL (the
 * writer thread holds them). */
static void
run (const char *uri, const char *pause, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  struct rec early = { 0 };
  unsigned issued = 0, once = 0, enotconn = 0, freed = 0, mid_freed = 0, mid_called = 0;
  unsigned completed_before = 0;
  int64_t ck;
  double t0, t;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  must (nbd_add_meta_context (h, "base:allocation"));
  if (nbd_set_concurrent_writer (h, &r, wr_enqueue) == -1 || nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  /* One command done before anything is held. */
  ck = nbd_aio_flush (h, (nbd_completion_callback) { .callback = done_cb, .user_data = &early,
                                                      .free = done_free }, 0);
  ok (ck > 0, "%s: nbd_aio_flush", what);
  for (int i = 0; i < 60 && ck > 0 && early.calls == 0; i++)
    if (nbd_poll (h, 1000) == -1)
      break;
  is_uint (early.calls, 1, "%s: the flush completed before the others were issued", what);
  if (!pause)
    WR_SET (&r, gate_closed, true);
  else if (server_pause_control (pause, 'p') == -1)
    bail_out ("%s: the pause filter did not pause", what);
  memset (recs, 0, sizeof recs);
  for (int i = 0; i < NR; i++)
    if (issue (h, i) >= 1)
      issued++;
    else
      diag ("%s: command %d: %s", what, i, nbd_get_error ());
  is_uint (issued, NR, "%s: %d commands of every kind issued", what, NR);
  is_int (nbd_aio_in_flight (h), NR, "%s: all in flight", what);
  if (pause) {
    ok (wr_wait_sent (&r, WR_WAIT_MS), "%s: the writer sent them all", what);
    /* Whatever the socket holds now is read: nothing, the server holds
     * every request. */
    for (int i = 0; i < 1000 && nbd_poll (h, 0) == 1; i++)
      ;
  }
  else
    is_uint (WR_GET (&r, sent), WR_GET (&r, accepted) - WR_GET (&r, queued),
             "%s: the ring still holds them", what);
  wr_stop (&r);
  for (int i = 0; i < NR; i++)
    completed_before += recs[i].calls > 0;
  is_uint (completed_before, 0, "%s: none completed before nbd_close", what);

  t0 = wr_now ();
  nbd_close (h);
  t = wr_now () - t0;
  ok (t < SLOW_MS / 1000.0, "%s: nbd_close did not wait for the server (%.3f s)", what, t);
  if (pause && server_pause_control (pause, 'r') == -1)
    diag ("%s: the pause filter did not resume", what);

  is_uint (early.calls, 1, "%s: the flush done before was not called again", what);
  is_int (early.error, 0, "%s: it had succeeded", what);
  is_uint (early.frees, 1, "%s: and its .free ran once", what);
  for (int i = 0; i < NR; i++) {
    once += recs[i].calls == 1;
    if (recs[i].error == ENOTCONN)
      enotconn++;
    freed += recs[i].frees == 1;
    if (has_mid (i)) {
      mid_freed += recs[i].mid_frees == 1;
      mid_called += recs[i].mid_calls;
    }
  }
  is_uint (once, NR, "%s: every completion callback ran exactly once", what);
  is_uint (enotconn, NR, "%s: each with ENOTCONN", what);
  is_uint (freed, NR, "%s: every completion .free ran exactly once", what);
  is_uint (mid_freed, 4, "%s: every chunk and extent .free ran exactly once", what);
  is_uint (mid_called, 0, "%s: chunk and extent callbacks never ran", what);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s, held;
  char pause[4200], pause_arg[4300];
  const char *args[] = { "memory", "size=8M", NULL };
  /* -t 1: nbdkit 1.32.5 can abort (raw_send_socket: "sock >= 0") when a
   * client leaves while several of its threads still hold requests; one
   * thread reads one request, and the rest wait in the socket, sent. */
  const char *held_args[] = { "-t", "1", "--filter=pause", "memory", "size=8M", pause_arg,
                              NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  snprintf (pause, sizeof pause, "%s/pause.sock", servers_scratch_dir ());
  snprintf (pause_arg, sizeof pause_arg, "pause-control=%s", pause);
  if (server_start_nbdkit (&held, held_args) == -1)
    bail_out ("cannot start nbdkit with the pause filter");
  run (s.uri, NULL, "held in the ring");
  run (held.uri, pause, "sent, not answered");
  is_int (server_stop (&s), 0, "nbdkit stopped");
  is_int (server_stop (&held), 0, "nbdkit (pause) stopped");
  return done_testing ();
}
