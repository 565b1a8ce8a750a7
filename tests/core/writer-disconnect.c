/* writer-disconnect: disconnecting under a slow concurrent writer.
 *  - nbd_shutdown while 32 writes (2 MiB) are still in the writer's ring
 *    (its thread holds them until the handle enters nbd_shutdown):
 *    the mark comes exactly once, after NBD_CMD_DISC, which is the last
 *    request in the stream; the thread sends everything and only then
 *    shuts the write side down; nbd_shutdown waits for it and succeeds;
 *    every write completes once without error; a second connection to the
 *    same nbdkit memory export reads all of them back;
 *  - nbd_aio_disconnect (once the writes are done, as the protocol
 *    recommends) with NBD_CMD_DISC held in the ring, and a poll loop of our
 *    own: the mark is given as soon as NBD_CMD_DISC is handed over, later
 *    commands are refused without a byte reaching the writer;
 *  - opt mode, nbd_opt_abort with the writer still holding NBD_OPT_ABORT:
 *    the mark comes once, and the socket is not shut under the writer
 *    (its send of the abort succeeds).
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define REQ (64 * 1024)
#define NR 32
#define HDR 28

struct cmd {
  unsigned calls, frees;
  int error;
};

static struct cmd cmds[NR];
static unsigned char wbuf[NR][REQ];

static int
cmd_done (void *user_data, int *error)
{
  struct cmd *c = user_data;

  c->calls++;
  c->error = *error;
  return 1;
}

static void
cmd_free (void *user_data)
{
  ((struct cmd *) user_data)->frees++;
}

static void
fill (unsigned char *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char) ((i * 31 + seed * 7) ^ (i >> 8) ^ seed);
}

static struct nbd_handle *
open_with_writer (const char *uri, struct wring *r, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || wr_start (r, h) == -1)
    bail_out ("setup");
  r->record = true;
  if (nbd_set_concurrent_writer (h, r, wr_enqueue) == -1 || nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  /* The handshake is over once the server replied, maybe before the
   * thread counted its last send. */
  if (!wr_wait_sent (r, 60000))
    bail_out ("%s: the writer thread did not send the handshake", what);
  return h;
}

static void
issue_writes (struct nbd_handle *h, unsigned seed_base, const char *what)
{
  memset (cmds, 0, sizeof cmds);
  for (int i = 0; i < NR; i++) {
    fill (wbuf[i], REQ, seed_base + i);
    if (nbd_aio_pwrite (h, wbuf[i], REQ, (uint64_t) i * REQ,
                        (nbd_completion_callback) { .callback = cmd_done, .user_data = &cmds[i],
                                                    .free = cmd_free }, 0) == -1)
      bail_out ("%s: nbd_aio_pwrite: %s", what, nbd_get_error ());
  }
}

/* The last request in the recorded stream is NBD_CMD_DISC. */
static void
check_last_is_disc (struct wring *r, const char *what)
{
  uint32_t magic = 0;
  uint16_t type = 0xffff;

  pthread_mutex_lock (&r->lock);
  if (r->log_len >= HDR) {
    memcpy (&magic, r->log + r->log_len - HDR, 4);
    memcpy (&type, r->log + r->log_len - HDR + 6, 2);
  }
  pthread_mutex_unlock (&r->lock);
  is_uint (be32toh (magic), 0x25609513, "%s: the stream ends with a request header", what);
  is_uint (be16toh (type), 2, "%s: which is NBD_CMD_DISC", what);
}

static void
check_writes (unsigned seed_base, const char *what)
{
  unsigned once = 0, good = 0, freed = 0;

  for (int i = 0; i < NR; i++) {
    once += cmds[i].calls == 1;
    good += cmds[i].calls == 1 && cmds[i].error == 0;
    freed += cmds[i].frees == 1;
  }
  is_uint (once, NR, "%s: every write's completion ran once", what);
  is_uint (good, NR, "%s: without error", what);
  is_uint (freed, NR, "%s: every .free ran once", what);
}

/* Read everything back on another connection (nbdkit memory is one disk
 * for all its clients; it advertises multi-conn). */
static void
verify_on_second_connection (const char *uri, unsigned seed_base, const char *what)
{
  static unsigned char back[REQ], want[REQ];
  struct nbd_handle *h2 = nbd_create ();
  unsigned good = 0;

  if (!h2 || nbd_connect_uri (h2, uri) == -1)
    bail_out ("second connection: %s", nbd_get_error ());
  is_int (nbd_can_multi_conn (h2), 1, "%s: the server allows multi-conn", what);
  for (int i = 0; i < NR; i++) {
    fill (want, REQ, seed_base + i);
    if (nbd_pread (h2, back, REQ, (uint64_t) i * REQ, 0) == 0 && memcmp (back, want, REQ) == 0)
      good++;
  }
  is_uint (good, NR, "%s: a second connection reads all %d writes back", what, NR);
  nbd_shutdown (h2, 0);
  nbd_close (h2);
}

static void
common_end_checks (struct wring *r, const char *what)
{
  /* Bounded, not timed: the thread has nothing left but to end. */
  ok (wr_wait_done (r, 60000), "%s: the writer thread ended by itself", what);
  is_int (WR_GET (r, eos_count), 1, "%s: exactly one end-of-stream mark", what);
  ok (!WR_GET (r, bytes_after_eos), "%s: no bytes after the mark", what);
  ok (!WR_GET (r, bad_call), "%s: no malformed writer calls", what);
  ok (WR_GET (r, shut_wr), "%s: the thread shut the write side down", what);
  is_uint (WR_GET (r, queued_at_shut_wr), 0, "%s: with the ring empty", what);
  is_uint (WR_GET (r, sent_at_shut_wr), WR_GET (r, accepted),
           "%s: after all %" PRIu64 " bytes were sent", what, WR_GET (r, accepted));
  is_int (WR_GET (r, send_errno), 0, "%s: no send failed", what);
  check_last_is_disc (r, what);
}

static void
shutdown_slow_writer (const char *uri)
{
  const char *what = "nbd_shutdown";
  const uint64_t ring_bytes = NR * (uint64_t) (HDR + REQ);
  struct nbd_handle *h;
  struct wring r;
  uint64_t sent_before;

  h = open_with_writer (uri, &r, what);
  /* An event, not a delay: the thread wakes once nbd_shutdown holds the
   * handle, whatever the machine's load. */
  if (wr_open_gate_on_enter (&r, h, "nbd_shutdown") == -1)
    bail_out ("%s: debug callback: %s", what, nbd_get_error ());
  sent_before = WR_GET (&r, sent);
  issue_writes (h, 1, what);
  is_uint (WR_GET (&r, queued), ring_bytes, "%s: all 32 writes wait in the ring", what);
  is_uint (WR_GET (&r, sent), sent_before, "%s: none of them sent yet", what);
  is_int (WR_GET (&r, eos_count), 0, "%s: no end-of-stream mark yet", what);

  ok (WR_GET (&r, gate_closed), "%s: nbd_shutdown is called before the writer wakes", what);
  is_int (nbd_shutdown (h, 0), 0, "%s: succeeds", what);
  ok (!WR_GET (&r, gate_closed), "%s: the writer woke inside nbd_shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: the handle is closed", what);
  is_uint (WR_GET (&r, queued_at_gate_open), ring_bytes,
           "%s: the writes were all still in the ring when it began", what);
  is_int (WR_GET (&r, eos_at_gate_open), 0,
          "%s: before NBD_CMD_DISC and the end-of-stream mark", what);
  common_end_checks (&r, what);
  check_writes (1, what);
  nbd_close (h);
  wr_free (&r);
  verify_on_second_connection (uri, 1, what);
}

static void
aio_disconnect_slow_writer (const char *uri)
{
  const char *what = "nbd_aio_disconnect";
  struct nbd_handle *h;
  struct wring r;
  uint64_t accepted;
  double end;

  h = open_with_writer (uri, &r, what);
  issue_writes (h, 100, what);
  /* As the protocol recommends (and as nbdkit needs: it fails requests
   * still in progress when NBD_CMD_DISC arrives), disconnect once nothing
   * is in flight; then hold NBD_CMD_DISC in the ring. */
  /* Bounds, not timings: generous for a loaded machine under TSan. */
  end = wr_now () + 60;
  while (nbd_aio_in_flight (h) > 0 && wr_now () < end) {
    struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    if (poll (&pfd, 1, 30000) <= 0 || nbd_aio_notify_read (h) == -1)
      break;
  }
  is_int (nbd_aio_in_flight (h), 0, "%s: the writes are done", what);
  WR_SET (&r, gate_closed, true);
  is_int (nbd_aio_disconnect (h, 0), 0, "%s: succeeds", what);
  is_int (WR_GET (&r, eos_count), 1, "%s: the mark came with NBD_CMD_DISC", what);
  accepted = WR_GET (&r, accepted);
  ok (nbd_aio_pread (h, wbuf[0], 512, 0, NBD_NULL_COMPLETION, 0) == -1,
      "%s: a later nbd_aio_pread is refused", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  is_uint (WR_GET (&r, accepted), accepted, "%s: and hands no bytes to the writer", what);
  is_uint (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE, 0,
           "%s: direction has no WRITE bit", what);
  WR_SET (&r, gate_closed, false);
  end = wr_now () + 60;
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h) && wr_now () < end) {
    struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    if (poll (&pfd, 1, 30000) <= 0 || nbd_aio_notify_read (h) == -1)
      break;
  }
  ok (nbd_aio_is_closed (h), "%s: closed once the server has everything", what);
  common_end_checks (&r, what);
  check_writes (100, what);
  nbd_close (h);
  wr_free (&r);
  verify_on_second_connection (uri, 100, what);
}

/* Opt mode: NBD_OPT_ABORT is still in the ring when nbd_opt_abort returns. */
static void
opt_abort_slow_writer (const char *uri)
{
  const char *what = "nbd_opt_abort";
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  uint64_t accepted;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  must (nbd_set_opt_mode (h, true));
  must (nbd_set_concurrent_writer (h, &r, wr_enqueue));
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
  WR_SET (&r, gate_closed, true);
  accepted = WR_GET (&r, accepted);
  is_int (nbd_opt_abort (h), 0, "%s: succeeds", what);
  ok (nbd_aio_is_closed (h), "%s: the handle is closed", what);
  is_uint (WR_GET (&r, accepted), accepted + 16, "%s: NBD_OPT_ABORT (16 bytes) went to the writer",
           what);
  is_int (WR_GET (&r, eos_count), 1, "%s: followed by the end-of-stream mark", what);
  WR_SET (&r, gate_closed, false);
  ok (wr_wait_done (&r, 60000), "%s: the writer thread ended by itself", what);
  is_int (WR_GET (&r, send_errno), 0, "%s: its send of NBD_OPT_ABORT did not fail (%s)", what,
          strerror (WR_GET (&r, send_errno)));
  is_uint (WR_GET (&r, sent), WR_GET (&r, accepted), "%s: it sent everything", what);
  ok (WR_GET (&r, shut_wr), "%s: then shut the write side down", what);
  wr_stop (&r);
  nbd_close (h);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=8M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  shutdown_slow_writer (s.uri);
  aio_disconnect_slow_writer (s.uri);
  opt_abort_slow_writer (s.uri);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
