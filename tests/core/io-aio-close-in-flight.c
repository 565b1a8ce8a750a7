/* io-aio-close-in-flight: nbd_close with commands not yet answered.
 *
 * Proves (libnbd 1.18's rule, which libnbd-core follows; 1.14 only frees):
 * closing a handle whose reads, structured reads, block status and writes
 * are in flight (all sent) at a server that holds every request (nbdkit's
 * pause filter, resumed only after nbd_close: an event, not a delay), or
 * still queued and never sent, calls each completion callback exactly once
 * with *error = ENOTCONN, never calls a chunk or extent callback, and calls
 * every .free exactly once — each closure's after its callback.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define NR 12

struct rec {
  unsigned completions, completion_frees, mid_calls, mid_frees;
  int error_in;
  int seq_completion, seq_completion_free;
};

static int seq;

static int
completion_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->completions++;
  r->error_in = *error;
  r->seq_completion = ++seq;
  return 0;
}

static void
completion_free (void *user_data)
{
  struct rec *r = user_data;

  r->completion_frees++;
  r->seq_completion_free = ++seq;
}

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  (void) subbuf; (void) count; (void) offset; (void) status; (void) error;
  ((struct rec *) user_data)->mid_calls++;
  return 0;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  (void) metacontext; (void) offset; (void) entries; (void) nr_entries; (void) error;
  ((struct rec *) user_data)->mid_calls++;
  return 0;
}

static void
mid_free (void *user_data)
{
  ((struct rec *) user_data)->mid_frees++;
}

static nbd_completion_callback
completion (struct rec *r)
{
  return (nbd_completion_callback) { .callback = completion_cb, .user_data = r,
                                     .free = completion_free };
}

/* @pause: the pause filter's control socket. */
static void
run (const char *uri, const char *pause, bool sent)
{
  const char *m = sent ? "in flight" : "never sent";
  struct nbd_handle *h = nbd_create ();
  static char buf[NR][65536];
  struct rec r[NR];
  int64_t c[NR];

  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (server_pause_control (pause, 'p') == -1)
    bail_out ("%s: the pause filter did not pause", m);
  memset (r, 0, sizeof r);
  seq = 0;
  for (int i = 0; i < NR; i++) {
    switch (i % 4) {
    case 0:
      c[i] = nbd_aio_pread (h, buf[i], sizeof buf[i], 0, completion (&r[i]), 0);
      break;
    case 1:
      c[i] = nbd_aio_pread_structured (h, buf[i], sizeof buf[i], 0,
                                       (nbd_chunk_callback) { .callback = chunk_cb,
                                                              .user_data = &r[i],
                                                              .free = mid_free },
                                       completion (&r[i]), 0);
      break;
    case 2:
      c[i] = nbd_aio_block_status (h, sizeof buf[i], 0,
                                   (nbd_extent_callback) { .callback = extent_cb,
                                                           .user_data = &r[i],
                                                           .free = mid_free },
                                   completion (&r[i]), 0);
      break;
    default:
      c[i] = nbd_aio_pwrite (h, buf[i], sizeof buf[i], 0, completion (&r[i]), 0);
      break;
    }
  }
  {
    bool all = true;
    for (int i = 0; i < NR; i++)
      all &= c[i] > 0;
    ok (all, "%s: %d commands queued", m, NR);
  }
  /* Let them reach the server, which holds them (bounded, not timed). */
  if (sent) {
    for (int i = 0; i < 60 && (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE); i++)
      nbd_poll (h, 1000);
    is_uint (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE, 0, "%s: all sent", m);
  }
  is_int (nbd_aio_in_flight (h), NR, "%s: %d in flight", m, NR);
  {
    bool none = true;
    for (int i = 0; i < NR; i++)
      none &= r[i].completions == 0 && r[i].completion_frees == 0;
    ok (none, "%s: no callback yet", m);
  }

  nbd_close (h);
  if (server_pause_control (pause, 'r') == -1)
    diag ("%s: the pause filter did not resume", m);

  for (int i = 0; i < NR; i++) {
    is_int (r[i].completions, 1, "%s: command %d: completion callback once", m, i);
    is_int (r[i].error_in, ENOTCONN, "%s: command %d: with *error = ENOTCONN", m, i);
    is_int (r[i].completion_frees, 1, "%s: command %d: its .free once", m, i);
    ok (r[i].seq_completion < r[i].seq_completion_free,
        "%s: command %d: freed after its callback", m, i);
    if (i % 4 == 1 || i % 4 == 2) {
      is_int (r[i].mid_calls, 0, "%s: command %d: %s callback never called", m, i,
              i % 4 == 1 ? "chunk" : "extent");
      is_int (r[i].mid_frees, 1, "%s: command %d: its .free once", m, i);
    }
  }
}

int
main (void)
{
  struct test_server s;
  char pause[4200], pause_arg[4300];
  /* -t 1: nbdkit 1.32 can abort (raw_send_socket: sock >= 0) when worker
   * threads still holding requests reply after the client has gone; one
   * thread per connection avoids that race (it holds the first request,
   * the others wait in the socket, sent).  A fresh server per run keeps
   * the runs apart. */
  const char *args[] = { "-t", "1", "--filter=pause", "memory", "size=1M", pause_arg, NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  snprintf (pause, sizeof pause, "%s/pause.sock", servers_scratch_dir ());
  snprintf (pause_arg, sizeof pause_arg, "pause-control=%s", pause);
  for (int sent = 1; sent >= 0; sent--) {
    if (server_start_nbdkit (&s, args) == -1) {
      if (errno == ENOENT)
        skip_all ("nbdkit is not installed");
      bail_out ("cannot start nbdkit");
    }
    run (s.uri, pause, sent);
    is_int (server_stop (&s), 0, "nbdkit stopped");
  }
  return done_testing ();
}
