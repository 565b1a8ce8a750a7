/* writer-error: nbd_concurrent_writer_error kills the connection promptly
 * and fails every pending command with the writer's errno.
 *  - the writer thread sends N bytes, then reports EPIPE (and at once
 *    ECONNRESET, which must not replace it) and sends nothing more, while
 *    64 writes are pending and the main thread is blocked in
 *    nbd_poll (h, -1) holding the handle (the thread reports only once it
 *    sees the main thread blocked in poll(2), with nothing else left to
 *    wake it): nbd_poll returns -1 with EPIPE soon after (SLOW_MS), every
 *    pending command's completion callback runs once with *error == EPIPE
 *    and its .free once, the handle is dead, the fd stays open until
 *    nbd_close; N inside the first request (none of them reached the
 *    server) and N after ten requests (the report waits until those ten
 *    have succeeded; all later ones fail);
 *  - the same while a sync nbd_pwrite waits (blocked in poll(2)): it fails
 *    with EPIPE;
 *  - reported from inside the writer callback (which runs with the handle
 *    lock held): no deadlock, it returns 0, the next call fails with that
 *    errno, every issued command completes with it, and the writer thread's
 *    own later EPIPE does not replace it;
 *  - err == 0 is EINVAL and changes nothing; after a first error, a second
 *    one with another errno returns 0 and the first stays.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define REQ (64 * 1024)
#define NR 64
#define HDR 28

/* "Soon": a report wakes a poll at once (the socket is shut down under
 * it), while a poll nobody woke would wait for ever; 15 s tells the two
 * apart on a loaded 2-core machine under a sanitizer. */
#define SLOW_MS 15000

struct cmd {
  unsigned calls, frees;
  int error;
};

static struct cmd cmds[NR];
static unsigned char wbuf[NR][REQ];
/* Completion callbacks run so far, read by the writer thread. */
static atomic_uint completed;

static int
cmd_done (void *user_data, int *error)
{
  struct cmd *c = user_data;

  c->calls++;
  c->error = *error;
  atomic_fetch_add (&completed, 1);
  return 1;
}

/* fail_ready: the requests sent whole have all been answered. */
static bool
full_ones_answered (void *data)
{
  return atomic_load (&completed) >= *(unsigned *) data;
}

static void
cmd_free (void *user_data)
{
  ((struct cmd *) user_data)->frees++;
}

static bool
starts_with (const char *s, const char *prefix)
{
  return s && strncmp (s, prefix, strlen (prefix)) == 0;
}

/* A connected handle with a writer; returns the handshake's byte count. */
static uint64_t
open_with_writer (const struct test_server *s, struct nbd_handle **hp, struct wring *r,
                  const char *mode)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || wr_start (r, h) == -1)
    bail_out ("nbd_create or thread");
  if (nbd_set_concurrent_writer (h, r, wr_enqueue) == -1 || nbd_connect_uri (h, s->uri) == -1)
    bail_out ("%s: connect: %s", mode, nbd_get_error ());
  if (!wr_wait_sent (r, WR_WAIT_MS))
    bail_out ("%s: the writer thread did not send the handshake", mode);
  *hp = h;
  return WR_GET (r, accepted);
}

/* 64 writes pending, main thread in nbd_poll (h, -1), the writer fails after
 * @full requests and half of the next. */
static void
fail_while_polling (const struct test_server *s, unsigned full)
{
  char mode[64];
  struct nbd_handle *h;
  struct wring r;
  uint64_t hs;
  unsigned ok_count = 0, epipe = 0, once = 0, freed = 0, late_fail = 0;
  int pr = 0, perr = 0;
  const char *pmsg;
  char msgcopy[256] = "";
  double returned, injected;
  struct timespec ft;

  snprintf (mode, sizeof mode, "EPIPE after %u requests", full);
  hs = open_with_writer (s, &h, &r, mode);
  memset (cmds, 0, sizeof cmds);
  atomic_store (&completed, 0);
  WR_SET (&r, fail_after, hs + (uint64_t) full * (HDR + REQ) + HDR + REQ / 2);
  WR_SET (&r, fail_errno, EPIPE);
  WR_SET (&r, fail_errno2, ECONNRESET);
  /* Events, not a delay: the report comes once the replies to the requests
   * sent whole are in and this thread is blocked in poll(2), where nothing
   * but the report can wake it (the server waits for the rest of a
   * payload). */
  WR_SET (&r, fail_ready_data, &full);
  WR_SET (&r, fail_ready, full_ones_answered);
  WR_SET (&r, fail_poller, wr_gettid ());
  for (int i = 0; i < NR; i++) {
    memset (wbuf[i], i + 1, REQ);
    if (nbd_aio_pwrite (h, wbuf[i], REQ, (uint64_t) i * REQ,
                        (nbd_completion_callback) { .callback = cmd_done, .user_data = &cmds[i],
                                                    .free = cmd_free }, 0) == -1)
      bail_out ("%s: nbd_aio_pwrite %d: %s", mode, i, nbd_get_error ());
  }
  is_int (nbd_aio_in_flight (h), NR, "%s: 64 writes pending", mode);
  WR_SET (&r, armed, true);
  while ((pr = nbd_poll (h, -1)) == 1 && nbd_aio_in_flight (h) > 0)
    ;
  returned = wr_now ();
  perr = nbd_get_errno ();
  pmsg = nbd_get_error ();
  snprintf (msgcopy, sizeof msgcopy, "%s", pmsg ? pmsg : "");
  is_int (pr, -1, "%s: nbd_poll (h, -1) fails", mode);
  is_int (perr, EPIPE, "%s: with EPIPE (%s)", mode, msgcopy);
  ok (starts_with (msgcopy, "nbd_poll: "), "%s: message starts with nbd_poll: ", mode);
  /* The thread records the injection just after the call: wait for it. */
  ok (wr_wait_injected (&r, WR_WAIT_MS), "%s: the error was injected", mode);
  ok (WR_GET (&r, fail_saw_poller), "%s: while nbd_poll was blocked in poll(2)", mode);
  ft = WR_GET (&r, fail_time);
  injected = (double) ft.tv_sec + (double) ft.tv_nsec / 1e9;
  ok (returned - injected < SLOW_MS / 1000.0, "%s: nbd_poll returned soon after (%.3f s)", mode,
      returned - injected);
  is_int (WR_GET (&r, fail_rc), 0, "%s: nbd_concurrent_writer_error (EPIPE) returned 0", mode);
  is_int (WR_GET (&r, fail_rc2), 0,
          "%s: a second nbd_concurrent_writer_error (ECONNRESET) returned 0", mode);
  is_uint (WR_GET (&r, sent), WR_GET (&r, fail_after), "%s: the writer stopped at N bytes", mode);

  for (unsigned i = 0; i < NR; i++) {
    if (cmds[i].calls == 1)
      once++;
    if (cmds[i].frees == 1)
      freed++;
    if (cmds[i].calls == 1 && cmds[i].error == 0)
      ok_count++;
    if (cmds[i].calls == 1 && cmds[i].error == EPIPE)
      epipe++;
    if (i >= full && !(cmds[i].calls == 1 && cmds[i].error == EPIPE))
      late_fail++;
  }
  is_uint (once, NR, "%s: every completion callback ran exactly once", mode);
  is_uint (freed, NR, "%s: every .free ran exactly once", mode);
  is_uint (late_fail, 0, "%s: every command not fully sent completed with EPIPE", mode);
  is_uint (ok_count, full, "%s: the %u fully sent succeeded", mode, full);
  is_uint (epipe, NR - full, "%s: all the others got EPIPE", mode);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", mode);
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight", mode);
  ok (nbd_aio_get_fd (h) >= 0, "%s: the fd stays open (the writer may still use it)", mode);
  ok (nbd_pread (h, wbuf[0], 512, 0, 0) == -1, "%s: a later nbd_pread fails", mode);
  is_errno (EINVAL, "%s: the handle is dead: EINVAL", mode);
  wr_stop (&r);
  nbd_close (h);
  is_uint (WR_GET (&r, eos_count), 0, "%s: no end-of-stream mark on a dead connection", mode);
  wr_free (&r);
}

/* A sync call waits (handle held) while the writer fails mid-request. */
static void
fail_during_sync_call (const struct test_server *s)
{
  const char *mode = "EPIPE during nbd_pwrite";
  static unsigned char big[1 << 20];
  struct nbd_handle *h;
  struct wring r;
  uint64_t hs;
  struct timespec ft;
  double t;

  hs = open_with_writer (s, &h, &r, mode);
  WR_SET (&r, fail_after, hs + HDR + sizeof big / 2);
  WR_SET (&r, fail_errno, EPIPE);
  /* Once nbd_pwrite waits in poll(2) for the reply to a request whose
   * second half never comes. */
  WR_SET (&r, fail_poller, wr_gettid ());
  WR_SET (&r, armed, true);
  memset (big, 0x5a, sizeof big);
  is_int (nbd_pwrite (h, big, sizeof big, 0, 0), -1, "%s: nbd_pwrite fails", mode);
  t = wr_now ();
  is_errno (EPIPE, "%s: with EPIPE", mode);
  ok (starts_with (nbd_get_error (), "nbd_pwrite: "), "%s: message starts with nbd_pwrite: (%s)",
      mode, nbd_get_error ());
  ok (wr_wait_injected (&r, WR_WAIT_MS), "%s: the error was injected", mode);
  ok (WR_GET (&r, fail_saw_poller), "%s: while nbd_pwrite was blocked in poll(2)", mode);
  ft = WR_GET (&r, fail_time);
  t -= (double) ft.tv_sec + (double) ft.tv_nsec / 1e9;
  ok (t < SLOW_MS / 1000.0, "%s: nbd_pwrite returned soon after (%.3f s)", mode, t);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", mode);
  wr_stop (&r);
  nbd_close (h);
  wr_free (&r);
}

/* Reported from inside the writer callback, with the handle lock held. */
static void
fail_in_callback (const struct test_server *s)
{
  const char *mode = "ENOMEM from the callback";
  struct nbd_handle *h;
  struct wring r;
  uint64_t hs;
  int issued = 0, last = 0, lerr = 0;
  unsigned bad = 0, freed = 0;
  char lmsg[256] = "";

  hs = open_with_writer (s, &h, &r, mode);
  memset (cmds, 0, sizeof cmds);
  /* The callback reports while taking the 5th write's payload. */
  WR_SET (&r, cb_errno, ENOMEM);
  WR_SET (&r, cb_fail_at, hs + 4 * (uint64_t) (HDR + REQ) + HDR + 1);
  for (int i = 0; i < NR; i++) {
    int64_t ck = nbd_aio_pwrite (h, wbuf[i], REQ, (uint64_t) i * REQ,
                                 (nbd_completion_callback) { .callback = cmd_done,
                                                             .user_data = &cmds[i],
                                                             .free = cmd_free }, 0);
    if (ck == -1) {
      last = i;
      lerr = nbd_get_errno ();
      snprintf (lmsg, sizeof lmsg, "%s", nbd_get_error () ? nbd_get_error () : "");
      break;
    }
    issued++;
  }
  ok (WR_GET (&r, cb_failed), "%s: the callback reported", mode);
  is_int (WR_GET (&r, cb_fail_rc), 0, "%s: nbd_concurrent_writer_error returned 0 there", mode);
  is_int (issued, 5, "%s: the write whose bytes were being taken was issued", mode);
  is_int (last, 5, "%s: the next nbd_aio_pwrite failed", mode);
  is_int (lerr, ENOMEM, "%s: with ENOMEM (%s)", mode, lmsg);
  ok (starts_with (lmsg, "nbd_aio_pwrite: "), "%s: message starts with nbd_aio_pwrite: ", mode);
  for (int i = 0; i < NR; i++) {
    if (i < issued && !(cmds[i].calls == 1 && cmds[i].error == ENOMEM))
      bad++;
    if (i >= issued && cmds[i].calls != 0)
      bad++;
    if (cmds[i].frees == (i <= last ? 1u : 0u))
      freed++;
  }
  is_uint (bad, 0, "%s: the 5 issued writes completed once each with ENOMEM", mode);
  is_uint (freed, NR, "%s: .free ran once for the 5 issued and the refused one, never for others",
           mode);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", mode);
  /* The writer thread now finds the socket shut down; its own EPIPE
   * report must not replace the first error. */
  is_int (nbd_concurrent_writer_error (h, EPIPE), 0, "%s: a later EPIPE report returns 0",
          mode);
  wr_stop (&r);
  nbd_close (h);
  wr_free (&r);
}

/* err == 0, and the first error standing, on a healthy handle. */
static void
argument_and_first_error (const struct test_server *s)
{
  const char *mode = "first error";
  unsigned char buf[512];
  struct nbd_handle *h;
  struct wring r;

  open_with_writer (s, &h, &r, mode);
  is_int (nbd_concurrent_writer_error (h, 0), -1, "err == 0 is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (starts_with (nbd_get_error (), "nbd_concurrent_writer_error: "),
      "message starts with nbd_concurrent_writer_error: (%s)", nbd_get_error ());
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "err == 0 changed nothing: nbd_pread works");
  ok (nbd_aio_is_ready (h), "and the handle is ready");

  is_int (nbd_concurrent_writer_error (h, EPIPE), 0, "%s: EPIPE accepted", mode);
  is_int (nbd_concurrent_writer_error (h, EIO), 0, "%s: then EIO returns 0", mode);
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), -1, "%s: the next nbd_pread fails", mode);
  is_errno (EPIPE, "%s: with the first errno, EPIPE", mode);
  ok (starts_with (nbd_get_error (), "nbd_pread: "), "%s: message starts with nbd_pread: (%s)",
      mode, nbd_get_error ());
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", mode);
  is_int (nbd_concurrent_writer_error (h, EIO), 0, "%s: reporting on a dead handle returns 0",
          mode);
  wr_stop (&r);
  nbd_close (h);
  wr_free (&r);
}

/* Each case gets a fresh server, started with -t 1: nbdkit 1.32.5 can
 * abort (raw_send_socket: "sock >= 0") when a client leaves while another
 * of its threads still answers, as every case here leaves mid-stream; one
 * thread does not race itself, and a server that died anyway takes no
 * later case with it. */
static void
with_server (void (*run) (const struct test_server *))
{
  struct test_server s;
  const char *args[] = { "-t", "1", "memory", "size=8M", NULL };

  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  run (&s);
  is_int (server_stop (&s), 0, "nbdkit stopped");
}

static void
fail_after_none (const struct test_server *s)
{
  fail_while_polling (s, 0);
}

static void
fail_after_ten (const struct test_server *s)
{
  fail_while_polling (s, 10);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  with_server (fail_after_none);
  with_server (fail_after_ten);
  with_server (fail_during_sync_call);
  with_server (fail_in_callback);
  with_server (argument_and_first_error);
  return done_testing ();
}
