/* fault-stall: a server that stops answering never hangs a caller that
 * polls with a timeout, and nbd_close works at any moment.
 *
 * Proves, against nbdkit's delay filter (30 s on every command) and an
 * nbdkit eval plugin whose preconnect waits until the test releases it:
 *  - commands stalled at the server: nbd_poll (h, 100) returns 0 each time
 *    (ten polls, each after at least its 100 ms), the commands stay in
 *    flight (their callbacks not run, nbd_aio_command_completed says 0, the
 *    handle is ready, as libnbd says while it waits); nbd_close then
 *    returns without waiting for the server and runs each completion
 *    callback once with ENOTCONN (and never an extent callback), each
 *    .free once;
 *  - nbd_close at any moment of a burst of small and 1 MiB writes to a
 *    stalled server (after 0 to 5 polls: some sent, one half sent, the
 *    rest queued): without waiting, every callback once with ENOTCONN;
 *  - a handshake stalled in the greeting (preconnect waits) or at
 *    NBD_OPT_GO (delay-open): nbd_aio_connect_uri, polls that return 0
 *    with the handle still connecting, then nbd_close without waiting;
 *  - the same in opt mode: nbd_aio_opt_go stalled at the server (the
 *    handle connecting, as libnbd says while an option waits), then
 *    nbd_close runs its completion callback once with ENOTCONN (libnbd
 *    1.18's rule; 1.14 only frees it).
 * Time is measured only where it is the point, and then bounded loosely
 * (SLOW_MS): a poll must not outlast its timeout by much, and nbd_close
 * must not wait for the server, whose replies are 30 s away.  Whether the
 * handshake has reached its stall is an event (the GO was sent and nothing
 * is left to write), not a quiet interval.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

/* "Did not wait for the server": the stalled server answers after 30 s,
 * so anything under half of that is "at once" even on a loaded 2-core
 * machine under a sanitizer, where a 100 ms poll may take seconds. */
#define SLOW_MS 15000

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct rec {
  unsigned calls, frees, mid_calls;
  int error;
};

static int
completion_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 1;
}

static void
free_cb (void *user_data)
{
  ((struct rec *) user_data)->frees++;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  (void) metacontext; (void) offset; (void) entries; (void) nr_entries; (void) error;
  ((struct rec *) user_data)->mid_calls++;
  return 0;
}

static nbd_completion_callback
completion (struct rec *r)
{
  return (nbd_completion_callback) { .callback = completion_cb, .user_data = r,
                                     .free = free_cb };
}

/* Ten nbd_poll (h, 100): how many returned 0, each after its timeout (the
 * kernel never wakes poll early; 90 ms allows for clock granularity) and
 * well before the server could have answered (SLOW_MS). */
static int
poll_ten (struct nbd_handle *h, const char *what, int *timed)
{
  int zeros = 0;

  *timed = 0;
  for (int i = 0; i < 10; i++) {
    int64_t t0 = now_ms ();
    int r = nbd_poll (h, 100);
    int64_t dt = now_ms () - t0;

    if (r == -1)
      diag ("%s: nbd_poll: %s", what, nbd_get_error ());
    if (r == 0)
      zeros++;
    if (r == 0 && dt >= 90 && dt < SLOW_MS)
      (*timed)++;
  }
  return zeros;
}

static void
commands_stalled (const char *uri)
{
  const char *what = "stalled commands";
  static char rbuf[65536], wbuf[65536];
  struct nbd_handle *h = nbd_create ();
  struct rec r[3];
  int64_t c[3], t0, dt;
  int zeros, timed;

  if (!h)
    bail_out ("nbd_create");
  if (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    bail_out ("%s: nbd_add_meta_context: %s", what, nbd_get_error ());
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  memset (r, 0, sizeof r);
  c[0] = nbd_aio_pread (h, rbuf, sizeof rbuf, 0, completion (&r[0]), 0);
  c[1] = nbd_aio_pwrite (h, wbuf, sizeof wbuf, 65536, completion (&r[1]), 0);
  c[2] = nbd_aio_block_status (h, 65536, 0,
                               (nbd_extent_callback) { .callback = extent_cb, .user_data = &r[2] },
                               completion (&r[2]), 0);
  ok (c[0] > 0 && c[1] > 0 && c[2] > 0, "%s: read, write and block status issued", what);

  zeros = poll_ten (h, what, &timed);
  is_int (zeros, 10, "%s: nbd_poll (h, 100) returned 0 ten times", what);
  is_int (timed, 10, "%s: each after its 100 ms, not after the server's delay", what);
  is_int (nbd_aio_in_flight (h), 3, "%s: all three still in flight", what);
  ok (r[0].calls + r[1].calls + r[2].calls == 0, "%s: no completion callback yet", what);
  for (int i = 0; i < 3; i++)
    is_int (nbd_aio_command_completed (h, (uint64_t) c[i]), 0,
            "%s: command %d not completed", what, i);
  /* As libnbd: waiting for replies is "ready", not "processing". */
  ok (nbd_aio_is_ready (h) && !nbd_aio_is_processing (h), "%s: the handle is ready", what);

  t0 = now_ms ();
  nbd_close (h);
  dt = now_ms () - t0;
  ok (dt < SLOW_MS, "%s: nbd_close did not wait for the server (%" PRId64 " ms)", what, dt);
  for (int i = 0; i < 3; i++) {
    is_int (r[i].calls, 1, "%s: command %d: completion callback once", what, i);
    is_int (r[i].error, ENOTCONN, "%s: command %d: with ENOTCONN", what, i);
    is_int (r[i].frees, 1, "%s: command %d: .free once", what, i);
  }
  is_int (r[2].mid_calls, 0, "%s: the extent callback never ran", what);
}

#define BURST 16

static void
close_at_moment (const char *uri, int polls)
{
  char what[64];
  struct nbd_handle *h = nbd_create ();
  struct rec r[BURST];
  static char buf[1024 * 1024];
  unsigned once = 0, enotconn = 0, freed = 0;
  bool issued = true;
  int64_t t0, dt;

  snprintf (what, sizeof what, "close after %d poll(s)", polls);
  if (!h)
    bail_out ("nbd_create");
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  memset (r, 0, sizeof r);
  for (int i = 0; i < BURST; i++) {
    size_t len = i % 2 ? sizeof buf : 4096;

    issued &= nbd_aio_pwrite (h, buf, len, (uint64_t) i * sizeof buf, completion (&r[i]), 0) > 0;
  }
  ok (issued, "%s: %d writes issued", what, BURST);
  for (int i = 0; i < polls; i++)
    if (nbd_poll (h, 50) == -1)
      diag ("%s: nbd_poll: %s", what, nbd_get_error ());
  t0 = now_ms ();
  nbd_close (h);
  dt = now_ms () - t0;
  ok (dt < SLOW_MS, "%s: nbd_close did not wait for the server (%" PRId64 " ms)", what, dt);
  for (int i = 0; i < BURST; i++) {
    once += r[i].calls == 1;
    enotconn += r[i].calls == 1 && r[i].error == ENOTCONN;
    freed += r[i].frees == 1;
  }
  is_int (once, BURST, "%s: every completion callback once", what);
  is_int (enotconn, BURST, "%s: all with ENOTCONN", what);
  is_int (freed, BURST, "%s: every .free once", what);
}

/* Whether the client has sent NBD_OPT_GO: libnbd-core's debug message
 * "sending NBD_OPT_GO ..." (handshake.c) says it was queued. */
static int
go_watch (void *user_data, const char *context, const char *msg)
{
  (void) context;
  if (strncmp (msg, "sending NBD_OPT_GO", 18) == 0)
    *(bool *) user_data = true;
  return 0;
}

/* A handshake the server stops answering: aio connect, polls, close.
 * @await_go: the stall is at NBD_OPT_GO (else before the greeting). */
static void
handshake_stalled (const char *what, const char *uri, bool opt_mode, bool await_go)
{
  struct nbd_handle *h = nbd_create ();
  struct rec r = { 0 };
  bool go_sent = false, stalled = false;
  int zeros, timed;
  int64_t t0, dt;

  if (!h)
    bail_out ("nbd_create");
  if (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = go_watch,
                                                         .user_data = &go_sent }) == -1 ||
      nbd_set_debug (h, true) == -1 || (opt_mode && nbd_set_opt_mode (h, true) == -1))
    bail_out ("%s: set-up: %s", what, nbd_get_error ());
  ok (nbd_aio_connect_uri (h, uri) == 0, "%s: nbd_aio_connect_uri", what);
  if (opt_mode) {
    /* Options that need no export come back; then GO, which opens it.
     * Bounded by a minute of silence, not timed. */
    for (int i = 0; i < 600 && !nbd_aio_is_negotiating (h); i++)
      if (nbd_poll (h, 100) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
    ok (nbd_aio_opt_go (h, completion (&r)) == 0, "%s: nbd_aio_opt_go", what);
  }
  /* The greeting or the GO reply never comes: once the client has said
   * all it can (the GO, where there is one, and nothing left to write),
   * every poll times out.  An event, not a quiet interval; bounded. */
  for (int i = 0; i < 600; i++) {
    stalled = (!await_go || go_sent) &&
              !(nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE);
    if (stalled)
      break;
    if (nbd_poll (h, 100) == -1)
      bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
  }
  ok (stalled, "%s: the client has sent all it can%s", what,
      await_go ? ", NBD_OPT_GO included" : "");
  zeros = poll_ten (h, what, &timed);
  is_int (zeros, 10, "%s: nbd_poll (h, 100) returned 0 ten times", what);
  is_int (timed, 10, "%s: each after its 100 ms, not after the server's delay", what);
  if (opt_mode) {
    /* As libnbd: with an option in flight the handle is connecting. */
    ok (nbd_aio_is_connecting (h), "%s: connecting while the option waits", what);
    is_int (r.calls, 0, "%s: no completion yet", what);
  }
  else
    ok (nbd_aio_is_connecting (h), "%s: still connecting", what);
  t0 = now_ms ();
  nbd_close (h);
  dt = now_ms () - t0;
  ok (dt < SLOW_MS, "%s: nbd_close did not wait for the server (%" PRId64 " ms)", what, dt);
  if (opt_mode) {
    is_int (r.calls, 1, "%s: nbd_aio_opt_go's completion callback once", what);
    is_int (r.error, ENOTCONN, "%s: with ENOTCONN", what);
    is_int (r.frees, 1, "%s: its .free once", what);
  }
}

/* A fresh server for each case.  -t 1: nbdkit 1.32.5 aborts (assertion
 * "sock >= 0" in raw_send_socket) when a client goes while several of its
 * threads sleep in the delay filter; one thread does not race itself. */
static void
start (struct test_server *srv, const char *const *args)
{
  if (server_start_nbdkit (srv, args) == -1)
    bail_out ("cannot start nbdkit");
}

static void
stop (struct test_server *srv, const char *what)
{
  int64_t t0 = now_ms ();

  is_int (server_stop (srv), 0, "%s: nbdkit stopped", what);
  /* nbdkit's own health is not this test's business (1.32.5 sometimes
   * dies of SIGSEGV/SIGABRT at shutdown after a client left mid-delay),
   * but say so. */
  if (srv->status != -1 && WIFSIGNALED (srv->status) && WTERMSIG (srv->status) != SIGTERM)
    diag ("%s: nbdkit died of signal %d at shutdown", what, WTERMSIG (srv->status));
  note ("%s: server_stop took %" PRId64 " ms", what, now_ms () - t0);
}

int
main (void)
{
  const char *cmds[] = { "-t", "1", "--filter=delay", "memory", "size=64M", "delay-read=30",
                         "delay-write=30", "delay-extents=30", NULL };
  const char *open_args[] = { "-t", "1", "--filter=delay", "memory", "size=1M", "delay-open=30",
                              NULL };
  /* nbdkit runs preconnect before it sends the greeting, and waits for
   * the script before it exits: the script waits for the test to create
   * the release file (an event), or for two minutes at most if the test
   * died. */
  char release[4200], preconnect[4400];
  const char *greeting_args[] = { "eval", preconnect, "get_size=echo 1048576",
                                  "pread=dd if=/dev/zero count=$3 iflag=count_bytes", NULL };
  struct test_server srv;
  int fd;

  tap_timeout (120);

  start (&srv, cmds);
  commands_stalled (srv.uri);
  stop (&srv, "stalled commands");
  for (int polls = 0; polls <= 5; polls++) {
    start (&srv, cmds);
    close_at_moment (srv.uri, polls);
    stop (&srv, "close at a moment");
  }
  start (&srv, open_args);
  handshake_stalled ("stalled at NBD_OPT_GO", srv.uri, false, true);
  stop (&srv, "stalled at NBD_OPT_GO");
  start (&srv, open_args);
  handshake_stalled ("opt mode, nbd_aio_opt_go stalled", srv.uri, true, true);
  stop (&srv, "opt mode");

  snprintf (release, sizeof release, "%s/fault-stall-release", servers_scratch_dir ());
  snprintf (preconnect, sizeof preconnect,
            "preconnect=i=0; while [ ! -e '%s' ] && [ $i -lt 1200 ]; do sleep 0.1; "
            "i=$((i + 1)); done", release);
  start (&srv, greeting_args);
  handshake_stalled ("stalled before the greeting", srv.uri, false, false);
  fd = open (release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1)
    bail_out ("creating %s: %m", release);
  close (fd);
  stop (&srv, "stalled before the greeting");
  return done_testing ();
}
