/* hostile-connection: a server that hangs up or goes silent at any point
 * leaves the client with a clear error or a handle it can close, never a
 * hang, a crash or a leak.
 *
 * Against hostile-server.py.  Closed in the handshake (inside the
 * greeting, before an option reply, inside an option reply header or
 * payload, before GO's ACK): nbd_connect_unix fails with ECONNRESET and
 * the handle is dead.  Closed in the middle of a reply header, a simple
 * read payload or a structured chunk payload (small, or large enough to be
 * received straight into the caller's buffer): the read fails with ENOTCONN,
 * the bytes that never came are zero (no stale 0xaa), the handle is dead.
 * Closed while idle: the handle becomes closed (not dead).  A reply after
 * NBD_CMD_DISC is a protocol error.  A server silent in the greeting, the
 * option phase, an option-mode NBD_OPT_LIST, after NBD_CMD_DISC, or before
 * or inside a reply: nbd_poll with a timeout returns 0, nothing completes,
 * and nbd_close works at that moment, running the completion callbacks
 * (ENOTCONN) and every .free exactly once.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdlib.h>
#include <string.h>

#include "hostile.h"

/* flags */
#define NO_SR 1                 /* the server refuses structured replies */
#define FIRST_QUARTER 2         /* a complete chunk for quarter 0 came first */
#define LARGE 4                 /* read LARGE_COUNT bytes, not READ_COUNT */

#define LARGE_COUNT (256 * 1024)

/* nbd_connect_unix fails: the server hung up during the handshake. */
static void
connect_fails (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);

  hostile_start (&s, sc->name);
  check_error (sc->name, nbd_connect_unix (h, s.sock), "nbd_connect_unix", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The server hangs up in the middle of the reply to a read. */
static void
read_cut (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  size_t count = (sc->flags & LARGE) ? LARGE_COUNT : READ_COUNT;
  unsigned char *buf = malloc (count);
  size_t zero_from = (sc->flags & FIRST_QUARTER) ? count / 4 : 0;

  if (sc->flags & NO_SR)
    is_int (nbd_get_structured_replies_negotiated (h), 0,
            "%s: structured replies were not negotiated", sc->name);
  if (!buf)
    bail_out ("malloc: %m");
  memset (buf, STALE_BYTE, count);
  check_error (sc->name, nbd_pread (h, buf, count, READ_OFFSET, 0), "nbd_pread", sc->err,
               sc->text);
  if (zero_from)
    ok (is_pattern (buf, READ_OFFSET, zero_from), "%s: the complete chunk's data is there",
        sc->name);
  ok (is_all (buf + zero_from, 0, count - zero_from),
      "%s: what never fully arrived is zero, nothing stale", sc->name);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
  free (buf);
}

/* The server hangs up between requests: the handle is closed. */
static void
close_when_idle (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[READ_COUNT];
  int i;

  memset (buf, STALE_BYTE, sizeof buf);
  if (!ok (nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0) == 0, "%s: nbd_pread", sc->name))
    diag ("error: %s", nbd_get_error ());
  ok (is_pattern (buf, READ_OFFSET, sizeof buf), "%s: reads the export's bytes", sc->name);
  /* Bounded, not timed: each poll returns once the hang-up arrives. */
  for (i = 0; i < 60 && nbd_aio_is_ready (h); i++)
    if (nbd_poll (h, 1000) == -1)
      break;
  ok (nbd_aio_is_closed (h) == 1, "%s: the hang-up is seen: handle closed", sc->name);
  check_error (sc->name, nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0), "nbd_pread", EINVAL,
               "closed");
  nbd_close (h);
  hostile_end (&s);
}

/* The server answers NBD_CMD_DISC, which has no reply. */
static void
reply_after_disc (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);

  check_error (sc->name, nbd_shutdown (h, 0), "nbd_shutdown", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* ---- Silence ---------------------------------------------------------- */

struct completion {
  int calls, error, frees;
};

static int
completion_cb (void *opaque, int *error)
{
  struct completion *c = opaque;

  c->calls++;
  c->error = *error;
  return 0;
}

static void
completion_free (void *opaque)
{
  struct completion *c = opaque;

  c->frees++;
}

/* Once the server has gone silent and whatever came has been taken,
 * nbd_poll with a timeout returns 0, and again. */
static void
check_silence (struct hostile *s, const char *name, struct nbd_handle *h)
{
  ok (hostile_wait_silent (s, h), "%s: the server has sent all it will", name);
  if (!is_int (nbd_poll (h, SILENCE_MS), 0, "%s: nbd_poll (%d ms) times out with 0", name,
               SILENCE_MS))
    diag ("error: %s", nbd_get_error ());
  is_int (nbd_poll (h, SILENCE_MS), 0, "%s: and again", name);
}

static void
silent_handshake (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);
  int fd;

  hostile_start (&s, sc->name);
  ok (nbd_aio_connect_unix (h, s.sock) == 0, "%s: nbd_aio_connect_unix", sc->name);
  check_silence (&s, sc->name, h);
  ok (nbd_aio_is_connecting (h) == 1, "%s: still connecting", sc->name);
  fd = nbd_aio_get_fd (h);
  ok (fd >= 0, "%s: the handle has its socket", sc->name);
  nbd_close (h);
  ok (fcntl (fd, F_GETFD) == -1 && errno == EBADF, "%s: nbd_close while connecting closed it",
      sc->name);
  hostile_end (&s);
}

/* Option mode: the server never answers NBD_OPT_LIST. */
static int
list_cb (void *opaque, const char *name, const char *desc)
{
  struct completion *c = opaque;

  c->calls++;
  return 0;
}

static void
silent_list (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);
  struct completion list = { 0 }, done = { 0 };
  int r;

  must (nbd_set_opt_mode (h, true));
  hostile_start (&s, sc->name);
  if (!ok (nbd_connect_unix (h, s.sock) == 0, "%s: nbd_connect_unix (option mode)", sc->name))
    diag ("error: %s", nbd_get_error ());
  r = nbd_aio_opt_list (h,
                        (nbd_list_callback) { .callback = list_cb, .user_data = &list,
                                              .free = completion_free },
                        (nbd_completion_callback) { .callback = completion_cb,
                                                    .user_data = &done,
                                                    .free = completion_free });
  ok (r == 0, "%s: nbd_aio_opt_list", sc->name);
  check_silence (&s, sc->name, h);
  is_int (done.calls, 0, "%s: nothing completed", sc->name);
  nbd_close (h);
  is_int (list.calls, 0, "%s: nbd_close: the list callback never ran", sc->name);
  is_int (done.calls, 1, "%s: nbd_close: the completion callback ran once", sc->name);
  is_int (done.error, ENOTCONN, "%s: with ENOTCONN", sc->name);
  is_int (list.frees, 1, "%s: the list closure was freed once", sc->name);
  is_int (done.frees, 1, "%s: the completion closure was freed once", sc->name);
  hostile_end (&s);
}

/* The server goes silent before or inside the reply to a read. */
static void
silent_reply (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  static unsigned char buf[READ_COUNT];
  struct completion done = { 0 };
  int64_t cookie;

  memset (buf, STALE_BYTE, sizeof buf);
  cookie = nbd_aio_pread (h, buf, sizeof buf, READ_OFFSET,
                          (nbd_completion_callback) { .callback = completion_cb,
                                                      .user_data = &done,
                                                      .free = completion_free }, 0);
  ok (cookie >= 1, "%s: nbd_aio_pread", sc->name);
  check_silence (&s, sc->name, h);
  is_int (nbd_aio_command_completed (h, cookie), 0, "%s: the read has not completed", sc->name);
  is_int (nbd_aio_in_flight (h), 1, "%s: one command in flight", sc->name);
  is_int (done.calls, 0, "%s: no completion yet", sc->name);
  nbd_close (h);
  is_int (done.calls, 1, "%s: nbd_close: the completion callback ran once", sc->name);
  is_int (done.error, ENOTCONN, "%s: with ENOTCONN", sc->name);
  is_int (done.frees, 1, "%s: the completion closure was freed once", sc->name);
  ok (is_all (buf, 0, sizeof buf), "%s: the buffer is zeroed, nothing stale or partial",
      sc->name);
  hostile_end (&s);
}

/* After NBD_CMD_DISC the server neither closes nor says anything. */
static void
silent_after_disc (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  char buf[512];
  int fd;

  ok (nbd_aio_disconnect (h, 0) == 0, "%s: nbd_aio_disconnect", sc->name);
  check_silence (&s, sc->name, h);
  check_error (sc->name, nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0),
               "nbd_aio_pread", EINVAL, "NBD_CMD_DISC");
  fd = nbd_aio_get_fd (h);
  ok (fd >= 0, "%s: the handle still has its socket", sc->name);
  nbd_close (h);
  ok (fcntl (fd, F_GETFD) == -1 && errno == EBADF, "%s: nbd_close after NBD_CMD_DISC closed it",
      sc->name);
  hostile_end (&s);
}

static const struct scenario scenarios[] = {
  { "close-in-greeting", connect_fails, ECONNRESET, "server closed the connection unexpectedly" },
  { "close-before-option-reply", connect_fails, ECONNRESET,
    "server closed the connection unexpectedly" },
  { "close-mid-option-header", connect_fails, ECONNRESET,
    "server closed the connection unexpectedly" },
  { "close-mid-option-payload", connect_fails, ECONNRESET,
    "server closed the connection unexpectedly" },
  { "close-before-go-ack", connect_fails, ECONNRESET,
    "server closed the connection unexpectedly" },
  { "close-mid-reply-header", read_cut, ENOTCONN, "in the middle of a reply" },
  { "close-mid-simple-payload", read_cut, ENOTCONN, "in the middle of a reply", NO_SR },
  { "close-mid-chunk-payload", read_cut, ENOTCONN, "in the middle of a reply", FIRST_QUARTER },
  { "close-mid-large-payload", read_cut, ENOTCONN, "in the middle of a reply", LARGE },
  { "close-when-idle", close_when_idle },
  { "reply-after-disc", reply_after_disc, EPROTO, "unknown cookie" },
  { "silent-greeting", silent_handshake },
  { "silent-option-reply", silent_handshake },
  { "silent-list", silent_list },
  { "silent-reply", silent_reply },
  { "silent-mid-header", silent_reply },
  { "silent-mid-payload", silent_reply },
  { "silent-after-disc", silent_after_disc },
};

int
main (int argc, char **argv)
{
  return hostile_main (argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
