/* writer-zero-copy-pinned: writes whose payloads are still lent to the
 * zero-copy writer when the connection dies (CMD_PINNED).
 *  - aio: 64 writes of 256 KiB (and one read) queued while the writer
 *    thread holds everything unsent; the thread reports EPIPE and keeps the
 *    lent buffers until the test lets it give them back: the read
 *    completes at once with EPIPE, the 64 stay in flight and no write's
 *    completion callback runs while the main thread calls into the handle
 *    (POKES times each of nbd_aio_in_flight, nbd_aio_peek_command_completed
 *    and nbd_poll (h, 0)); after the release none had run before the thread
 *    set its "giving back" flag (checked in each callback), each completes
 *    exactly once with EPIPE and its .free runs once; the buffers still
 *    held their bytes when dropped;
 *  - sync: nbd_pwrite of a buffer on its own stack frame; the writer fails
 *    once nbd_pwrite waits in poll(2) for the reply, and gives back only
 *    once nbd_pwrite, having seen the connection die, waits in poll(2)
 *    again (or has returned: then the test fails): nbd_pwrite returns -1
 *    with EPIPE ("nbd_pwrite: ...") only after the release;
 *  - nbd_close with pinned writes that the thread never gives back (it is
 *    stopped first): none completes while the main thread calls into the
 *    handle, each completes during nbd_close, once, with EPIPE, and each
 *    .free runs once;
 *  - nbd_close with lent writes of a live connection (thread stopped
 *    first): each completes once with ENOTCONN, .free once.
 * Events, not delays, decide when the thread fails and gives back.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define KiB 1024
#define NR 64
#define WLEN (256 * KiB)
/* Calls of each kind into a handle whose writes must stay pinned. */
#define POKES 100

static struct wring *cur;
static bool closing;

struct rec {
  unsigned calls, frees;
  int error;
  bool early;                   /* ran before the thread was giving back */
  bool in_close;                /* ran during nbd_close */
  bool freed_before_call;
};

static struct rec recs[NR + 1];
static unsigned char *bufs[NR];

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  if (!atomic_load (&cur->giving_back))
    r->early = true;
  r->in_close = closing;
  if (r->frees)
    r->freed_before_call = true;
  return 1;
}

static void
done_free (void *user_data)
{
  ((struct rec *) user_data)->frees++;
}

static nbd_completion_callback
cb_for (int i)
{
  return (nbd_completion_callback) { .callback = done_cb, .user_data = &recs[i],
                                     .free = done_free };
}

static void
poll_in (struct nbd_handle *h, int ms)
{
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

  if (poll (&pfd, 1, ms) > 0)
    nbd_aio_notify_read (h);
}

/* Call into @h POKES times each way a pinned write could be completed
 * from (the handle's entry checks, retirement, a poll step). */
static void
poke (struct nbd_handle *h)
{
  for (int i = 0; i < POKES; i++) {
    nbd_aio_in_flight (h);
    nbd_aio_peek_command_completed (h);
    nbd_poll (h, 0);
  }
}

static uint64_t
sum_bytes (const unsigned char *p, size_t len)
{
  uint64_t s = 0;

  for (size_t i = 0; i < len; i++)
    s += p[i];
  return s;
}

static unsigned
count_calls (int n, bool (*pred) (const struct rec *))
{
  unsigned c = 0;

  for (int i = 0; i < n; i++)
    if (pred (&recs[i]))
      c++;
  return c;
}

static bool called (const struct rec *r) { return r->calls > 0; }
static bool once (const struct rec *r) { return r->calls == 1; }
static bool freed_once (const struct rec *r) { return r->frees == 1; }
static bool early (const struct rec *r) { return r->early; }
static bool in_close (const struct rec *r) { return r->in_close; }
static bool is_epipe (const struct rec *r) { return r->error == EPIPE; }
static bool is_enotconn (const struct rec *r) { return r->error == ENOTCONN; }
static bool free_first (const struct rec *r) { return r->freed_before_call; }

static struct nbd_handle *
open_handle (struct wring *r, const char *uri)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || wr_start (r, h) == -1)
    bail_out ("nbd_create or thread");
  cur = r;
  if (nbd_set_concurrent_writer_zero_copy (h, r, wr_enqueue_zc) == -1 ||
      nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  return h;
}

/* ---- aio --------------------------------------------------------------- */

static void
aio_pinned (const char *uri)
{
  const char *mode = "aio";
  static unsigned char rbuf[4 * KiB];
  struct nbd_handle *h;
  struct wring r;
  uint64_t expect_sum = 0;
  bool issued = true, read_before = false, in_flight_ok = false;
  double end;

  memset (recs, 0, sizeof recs);
  h = open_handle (&r, uri);
  WR_SET (&r, gate_closed, true);
  /* The test says when the thread may give back (an event). */
  WR_SET (&r, hold_on_failure, true);
  for (int i = 0; i < NR; i++) {
    memset (bufs[i], 0x40 + i, WLEN);
    expect_sum += (uint64_t) (0x40 + i) * WLEN;
    if (nbd_aio_pwrite (h, bufs[i], WLEN, (uint64_t) i * WLEN, cb_for (i), 0) < 1)
      issued = false;
    if (i == NR / 2 &&
        nbd_aio_pread (h, rbuf, sizeof rbuf, 0, cb_for (NR), 0) < 1)
      issued = false;
  }
  ok (issued, "%s: %d writes of 256 KiB and a read queued", mode, NR);
  is_uint (WR_GET (&r, lent), (uint64_t) NR * WLEN, "%s: all payloads lent, none sent", mode);

  WR_SET (&r, fail_now, EPIPE);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (!nbd_aio_is_dead (h) && wr_now () < end)
    poll_in (h, 100);
  ok (nbd_aio_is_dead (h), "%s: the writer's EPIPE killed the connection", mode);
  read_before = recs[NR].calls == 1 && !atomic_load (&r.giving_back);
  ok (read_before, "%s: the read completed at once, before any release", mode);
  is_int (recs[NR].error, EPIPE, "%s: with EPIPE", mode);
  in_flight_ok = nbd_aio_in_flight (h) == NR && !atomic_load (&r.giving_back);
  ok (in_flight_ok, "%s: the %d pinned writes still count as in flight", mode, NR);
  poke (h);
  is_uint (count_calls (NR, called), 0, "%s: none completed while the main thread called into "
           "the handle", mode);
  is_int (nbd_aio_in_flight (h), NR, "%s: all %d still in flight", mode, NR);
  is_uint (WR_GET (&r, drops), 0, "%s: the thread still held the buffers then", mode);

  /* Let the thread give back; once it has, the next call into the handle
   * completes the writes. */
  WR_SET (&r, hold_on_failure, false);
  ok (wr_wait_released (&r, (uint64_t) NR * WLEN, WR_WAIT_MS),
      "%s: the thread gave every lent byte back", mode);
  nbd_aio_in_flight (h);
  is_uint (count_calls (NR, called), NR, "%s: all %d writes completed", mode, NR);
  is_uint (count_calls (NR, early), 0,
           "%s: none before the thread began giving its buffers back", mode);
  is_uint (count_calls (NR, once), NR, "%s: each exactly once", mode);
  is_uint (count_calls (NR, is_epipe), NR, "%s: each with EPIPE", mode);
  is_uint (count_calls (NR, freed_once), NR, "%s: each .free ran once", mode);
  is_uint (count_calls (NR, free_first), 0, "%s: after its completion callback", mode);
  is_uint (WR_GET (&r, dropped_lent), (uint64_t) NR * WLEN, "%s: it dropped every lent byte",
           mode);
  is_uint (WR_GET (&r, drop_sum), expect_sum, "%s: which still held what was written", mode);
  is_uint (WR_GET (&r, release_failures), 0, "%s: no release failed", mode);
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight now", mode);
  wr_stop (&r);
  nbd_close (h);
  is_uint (count_calls (NR + 1, once), NR + 1, "%s: nbd_close called nothing again", mode);
  is_uint (count_calls (NR + 1, freed_once), NR + 1, "%s: nor freed anything again", mode);
  wr_free (&r);
}

/* ---- sync -------------------------------------------------------------- */

struct sync_result {
  int rc, err;
  bool prefix, given_back;
  uint64_t sum;
};

static __attribute__((noinline)) struct sync_result
sync_write_from_stack (struct nbd_handle *h)
{
  unsigned char buf[WLEN];
  struct sync_result res;
  const char *msg;

  memset (buf, 0x5c, sizeof buf);
  res.sum = sum_bytes (buf, sizeof buf);
  res.rc = nbd_pwrite (h, buf, sizeof buf, 0, 0);
  res.given_back = atomic_load (&cur->giving_back);
  res.err = nbd_get_errno ();
  msg = nbd_get_error ();
  res.prefix = msg && strncmp (msg, "nbd_pwrite: ", 12) == 0;
  if (!res.prefix)
    diag ("nbd_pwrite's message: %s", msg ? msg : "(none)");
  /* Scribble over the buffer before its frame goes: a writer still using
   * it would see this.  Then let a thread that waits for us drop. */
  memset (buf, 0xee, sizeof buf);
  WR_SET (cur, poller_returned, true);
  return res;
}

/* fail_ready: the write's payload is in the ring (lock held). */
static bool
payload_lent (void *data)
{
  return ((struct wring *) data)->lent >= WLEN;
}

static void
sync_pinned (const char *uri)
{
  const char *mode = "sync";
  struct nbd_handle *h;
  struct sync_result res;
  struct wring r;

  h = open_handle (&r, uri);
  if (wr_watch (&r, h) == -1)
    bail_out ("%s: debug callback: %s", mode, nbd_get_error ());
  /* Once the thread has sent (and counted) the whole handshake, it sends
   * nothing more: it fails once the payload is lent and nbd_pwrite waits
   * in poll(2) for the reply, and gives back once nbd_pwrite, having seen
   * the connection die, waits in poll(2) again.  Events, not delays. */
  ok (wr_wait_sent (&r, WR_WAIT_MS), "%s: the handshake was sent", mode);
  pthread_mutex_lock (&r.lock);
  r.gate_closed = true;
  r.fail_errno = EPIPE;
  r.fail_after = r.sent;
  r.fail_ready = payload_lent;
  r.fail_ready_data = &r;
  r.fail_poller = r.drop_poller = wr_gettid ();
  r.armed = true;
  pthread_cond_broadcast (&r.cond);
  pthread_mutex_unlock (&r.lock);

  res = sync_write_from_stack (h);
  is_int (res.rc, -1, "%s: nbd_pwrite fails", mode);
  is_int (res.err, EPIPE, "%s: with EPIPE", mode);
  ok (res.prefix, "%s: the message starts with \"nbd_pwrite: \"", mode);
  ok (res.given_back, "%s: it returned only after the thread began giving back", mode);
  ok (WR_GET (&r, fail_done), "%s: the writer did fail", mode);
  ok (WR_GET (&r, fail_saw_poller), "%s: while nbd_pwrite waited in poll(2)", mode);
  ok (WR_GET (&r, drop_saw_poller), "%s: the thread gave back once nbd_pwrite, the connection "
      "dead, waited in poll(2) again", mode);
  is_uint (WR_GET (&r, dropped_lent), WLEN, "%s: the thread dropped the whole payload", mode);
  is_uint (WR_GET (&r, drop_sum), res.sum, "%s: which still held the caller's bytes", mode);
  wr_wait_released (&r, WLEN, WR_WAIT_MS);
  is_uint (WR_GET (&r, released), WLEN, "%s: and gave it back", mode);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", mode);
  wr_stop (&r);
  nbd_close (h);
  wr_free (&r);
}

/* ---- nbd_close ---------------------------------------------------------- */

static void
close_pinned (const char *uri, bool dead)
{
  const char *mode = dead ? "close, pinned" : "close, lent";
  const int n = 16;
  struct nbd_handle *h;
  struct wring r;
  bool issued = true;
  double end;

  memset (recs, 0, sizeof recs);
  closing = false;
  h = open_handle (&r, uri);
  WR_SET (&r, gate_closed, true);
  WR_SET (&r, hold_on_failure, true);
  for (int i = 0; i < n; i++)
    if (nbd_aio_pwrite (h, bufs[i], 64 * KiB, (uint64_t) i * 64 * KiB, cb_for (i), 0) < 1)
      issued = false;
  ok (issued, "%s: %d writes lent to the thread", mode, n);
  if (dead) {
    WR_SET (&r, fail_now, EPIPE);
    end = wr_now () + WR_WAIT_MS / 1000.0;
    while (!nbd_aio_is_dead (h) && wr_now () < end)
      poll_in (h, 100);
    ok (nbd_aio_is_dead (h), "%s: the writer's EPIPE killed the connection", mode);
    /* The thread never gives back: they stay pinned. */
    poke (h);
    is_uint (count_calls (n, called), 0, "%s: none completed while the thread held them",
             mode);
  }
  else
    ok (nbd_aio_is_ready (h) || nbd_aio_is_processing (h), "%s: the connection is alive", mode);
  is_int (nbd_aio_in_flight (h), n, "%s: %d in flight", mode, n);
  wr_stop (&r);
  closing = true;
  nbd_close (h);
  closing = false;
  is_uint (count_calls (n, once), n, "%s: nbd_close completed each exactly once", mode);
  is_uint (count_calls (n, in_close), n, "%s: during nbd_close", mode);
  if (dead)
    is_uint (count_calls (n, is_epipe), n, "%s: with the connection's error, EPIPE", mode);
  else
    is_uint (count_calls (n, is_enotconn), n, "%s: with ENOTCONN", mode);
  is_uint (count_calls (n, freed_once), n, "%s: each .free ran once", mode);
  is_uint (count_calls (n, free_first), 0, "%s: after its completion callback", mode);
  is_uint (WR_GET (&r, released), 0, "%s: the thread gave nothing back", mode);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=32M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  for (int i = 0; i < NR; i++)
    if ((bufs[i] = malloc (WLEN)) == NULL)
      bail_out ("malloc");
  aio_pinned (s.uri);
  sync_pinned (s.uri);
  close_pinned (s.uri, true);
  close_pinned (s.uri, false);
  for (int i = 0; i < NR; i++)
    free (bufs[i]);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
