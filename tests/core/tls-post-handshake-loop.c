/* tls-post-handshake-loop: TLS 1.3 post-handshake messages (KeyUpdate,
 * NewSessionTicket) that arrive together with the reply bytes behind them
 * never stall a program that drives the handle with its own poll loop, the
 * way libnbd documents it: nbd_aio_get_fd, nbd_aio_get_direction, poll(2),
 * nbd_aio_notify_read / nbd_aio_notify_write.
 *
 * After GnuTLS handles such a message it answers GNUTLS_E_AGAIN, while the
 * reply's records may already sit in the core's ciphertext buffer, where
 * no POLLIN will announce them.  The server (tls-burst-server.h) puts the
 * messages before or inside every option reply after STARTTLS and every
 * read reply, in the same send(2); the client connects, reads (simple and
 * structured replies, one and many in flight, 1 byte to 3 MiB) and
 * disconnects, with X.509 and with a PSK; and once with the messages in
 * read replies only, so that the read path is tested even if the
 * handshake's were to stall.
 *
 * A stall is seen without a clock: the server waits for us, nothing is on
 * the wire either way, and the handle waits for POLLIN only
 * (burst_server_stalled).  A generous poll timeout backs that up, so the
 * test fails rather than hangs.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"

#ifndef TEST_HAVE_GNUTLS
int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  skip_all ("the tests were built without GnuTLS");
}
#else

#include "tls-burst-server.h"

/* A backstop only (stalls are seen without it), generous for a loaded
 * 2-core machine under ThreadSanitizer. */
#define POLL_TIMEOUT_MS 60000

static struct tls_material m;
static struct burst_server srv;

typedef bool (*done_fn) (struct nbd_handle *h, void *arg);

/* Drive @h with a hand-written poll loop until @done says so; false, with
 * the reason on stderr, on a stall, an error or a dead handle.  Each time
 * the server has started to wait, the stall check runs once the handle
 * has taken what poll(2) announced: if it finds no stall, the server is
 * not waiting (it signals again when it does) or bytes are on the wire
 * (poll wakes for them, or the server does and signals again). */
static bool
drive (struct nbd_handle *h, done_fn done, void *arg, const char *what)
{
  bool server_waited = false;

  for (;;) {
    struct pollfd p[2];
    unsigned dir;
    int fd, r;

    if (done (h, arg))
      return true;
    if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h)) {
      diag ("%s: the handle is %s: %s", what, nbd_aio_is_dead (h) ? "dead" : "closed",
            burst_errmsg ());
      return false;
    }
    fd = nbd_aio_get_fd (h);
    dir = nbd_aio_get_direction (h);
    if (fd < 0 || dir == 0) {
      diag ("%s: nothing to poll for (fd %d, direction %u): %s", what, fd, dir, burst_errmsg ());
      return false;
    }
    if (server_waited && dir == LIBNBD_AIO_DIRECTION_READ) {
      if (burst_server_stalled (&srv, fd)) {
        diag ("%s: stalled: the server waits for our next bytes, nothing is on the wire "
              "either way, and the handle waits for POLLIN", what);
        return false;
      }
      server_waited = false;
    }
    p[0] = (struct pollfd) {
      .fd = fd,
      .events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0),
    };
    p[1] = (struct pollfd) { .fd = srv.idle_fd, .events = POLLIN };
    r = poll (p, 2, POLL_TIMEOUT_MS);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      diag ("%s: no progress in %d s (direction %u)", what, POLL_TIMEOUT_MS / 1000, dir);
      return false;
    }
    if (p[1].revents) {
      uint64_t n;

      if (read (srv.idle_fd, &n, sizeof n) != sizeof n)
        diag ("%s: reading the server's eventfd: %m", what);
      server_waited = true;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
      r = nbd_aio_notify_read (h);
    else if (p[0].revents & POLLOUT)
      r = nbd_aio_notify_write (h);
    else
      continue;
    if (r == -1) {
      diag ("%s: notify: %s", what, burst_errmsg ());
      return false;
    }
  }
}

static bool
is_ready (struct nbd_handle *h, void *arg)
{
  return nbd_aio_is_ready (h);
}

static bool
is_closed (struct nbd_handle *h, void *arg)
{
  return nbd_aio_is_closed (h);
}

static bool
all_done (struct nbd_handle *h, void *arg)
{
  struct burst_count *c = arg;

  return c->done == c->want;
}

/* @n reads of @len bytes in flight at once, from @off on, every @stride.
 * On failure the handle is closed (and *@hp cleared) while the buffers and
 * the counts its callbacks write to still exist. */
static bool
reads (struct nbd_handle **hp, int n, size_t len, uint64_t off, uint64_t stride,
       const char *what)
{
  unsigned char *buf = malloc ((size_t) n * len);
  struct burst_count c = { .want = n };
  bool good = true;

  if (!buf)
    bail_out ("malloc");
  memset (buf, 0xee, (size_t) n * len);
  for (int i = 0; i < n; i++)
    if (nbd_aio_pread (*hp, buf + (size_t) i * len, len, off + i * stride,
                       (nbd_completion_callback) { .callback = burst_count_cb, .user_data = &c },
                       0) == -1)
      bail_out ("%s: aio_pread: %s", what, burst_errmsg ());
  if (!ok (drive (*hp, all_done, &c, what), "%s: %d read(s) of %zu bytes complete", what, n,
           len)) {
    nbd_close (*hp);
    *hp = NULL;
    good = false;
  }
  else {
    for (int i = 0; i < n && good; i++)
      good = burst_pattern_at (buf + (size_t) i * len, len, off + i * stride);
    good = is_int (c.failed, 0, "%s: without error", what) && good;
    good = ok (good, "%s: the data is the server's", what) && good;
  }
  free (buf);
  return good;
}

static void
session (bool psk, bool structured, const char *what)
{
  struct nbd_handle *h = burst_client_new (&m, psk, structured, what);
  unsigned ku = atomic_load (&srv.key_updates), tickets = atomic_load (&srv.tickets);
  char step[128];
  int rc;

  rc = nbd_aio_connect_unix (h, srv.sock);
  if (!is_int (rc, 0, "%s: aio_connect_unix (%s)", what, burst_errmsg ()))
    goto out;
  snprintf (step, sizeof step, "%s: handshake", what);
  if (!ok (drive (h, is_ready, NULL, step), "%s", step))
    goto out;
  is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", what);
  is_int (nbd_get_structured_replies_negotiated (h), structured,
          "%s: structured replies %s", what, structured ? "on" : "off");

  /* One at a time, small to large (the large ones are received straight
   * into the caller's buffer), then many in flight. */
  {
    static const size_t sizes[] = { 1, 512, 4096, 65537, 1024 * 1024, 3 * 1024 * 1024 };

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      snprintf (step, sizeof step, "%s: read %zu", what, sizes[i]);
      if (!reads (&h, 1, sizes[i], 12345 + i * 4 * 1024 * 1024, 0, step))
        goto out;
    }
    snprintf (step, sizeof step, "%s: 16 reads in flight", what);
    if (!reads (&h, 16, 4096, 40 * 1024 * 1024 + 7, 8192, step))
      goto out;
  }
  burst_check_messages (&srv, ku, tickets, what);
  rc = nbd_aio_disconnect (h, 0);
  is_int (rc, 0, "%s: aio_disconnect (%s)", what, burst_errmsg ());
  snprintf (step, sizeof step, "%s: disconnect", what);
  ok (drive (h, is_closed, NULL, step), "%s", step);
out:
  nbd_close (h);
}

int
main (void)
{
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");

  if (burst_server_start (&srv, &m, false) == -1)
    bail_out ("cannot start the X.509 burst server");
  session (false, true, "X.509, structured replies");
  session (false, false, "X.509, simple replies");
  /* The read path alone: a handshake that cannot stall first. */
  atomic_store (&srv.quiet_options, true);
  session (false, true, "X.509, messages in read replies only");
  atomic_store (&srv.quiet_options, false);
  ok (burst_server_stop (&srv), "X.509: the server saw every session to its end");

  if (burst_server_start (&srv, &m, true) == -1)
    bail_out ("cannot start the PSK burst server");
  session (true, true, "PSK, structured replies");
  ok (burst_server_stop (&srv), "PSK: the server saw every session to its end");
  return done_testing ();
}

#endif /* TEST_HAVE_GNUTLS */
