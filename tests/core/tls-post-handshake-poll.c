/* tls-post-handshake-poll: TLS 1.3 post-handshake messages (KeyUpdate,
 * NewSessionTicket) arriving together with the reply bytes behind them,
 * with the core's own event loop: sync calls (nbd_connect_unix, nbd_opt_go,
 * nbd_pread, nbd_shutdown) and aio calls driven by nbd_poll.  The server
 * (tls-burst-server.h) puts the messages before or inside every option
 * reply after STARTTLS and every read reply, in the same send(2).
 * tls-post-handshake-loop drives the same server with a hand-written loop.
 *
 * A sync call that stalled would wait forever: tap_timeout ends the test.
 * nbd_poll loops are bounded by a generous timeout that fails the test.
 */
#include <errno.h>
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

/* Generous for a loaded 2-core machine under ThreadSanitizer: no progress
 * for this long is a stall. */
#define POLL_TIMEOUT_MS 60000

static struct tls_material m;
static struct burst_server srv;

/* Sync reads, small to large, then 16 aio reads in flight under nbd_poll;
 * false once the handle is unusable. */
static bool
reads (struct nbd_handle *h, const char *what)
{
  static const size_t sizes[] = { 1, 512, 4096, 65537, 1024 * 1024, 3 * 1024 * 1024 };
  unsigned char *buf = malloc (3 * 1024 * 1024);
  struct burst_count c = { 0 };
  bool good = true;

  if (!buf)
    bail_out ("malloc");
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && good; i++) {
    uint64_t off = 4321 + i * 4 * 1024 * 1024;

    int rc;

    memset (buf, 0xee, sizes[i]);
    rc = nbd_pread (h, buf, sizes[i], off, 0);
    good = is_int (rc, 0, "%s: pread %zu (%s)", what, sizes[i], burst_errmsg ());
    if (good)
      ok (burst_pattern_at (buf, sizes[i], off), "%s: pread %zu: the data is the server's", what,
          sizes[i]);
  }
  if (!good) {
    free (buf);
    return false;
  }
  memset (buf, 0xee, 16 * 4096);
  for (int i = 0; i < 16; i++)
    if (nbd_aio_pread (h, buf + i * 4096, 4096, 50 * 1024 * 1024 + 3 + i * 8192,
                       (nbd_completion_callback) { .callback = burst_count_cb, .user_data = &c },
                       0) == -1)
      bail_out ("%s: aio_pread: %s", what, burst_errmsg ());
  while (c.done < 16 && good) {
    int r = nbd_poll (h, POLL_TIMEOUT_MS);

    if (r == 0)
      diag ("%s: nbd_poll: no progress in %d s", what, POLL_TIMEOUT_MS / 1000);
    else if (r == -1)
      diag ("%s: nbd_poll: %s", what, burst_errmsg ());
    good = r == 1;
  }
  if (!ok (good, "%s: 16 reads in flight complete under nbd_poll", what)) {
    /* Their buffer and counts must outlive the commands. */
    nbd_close (h);
    free (buf);
    bail_out ("%s: cannot go on", what);
  }
  is_int (c.failed, 0, "%s: without error", what);
  good = true;
  for (int i = 0; i < 16 && good; i++)
    good = burst_pattern_at (buf + i * 4096, 4096, 50 * 1024 * 1024 + 3 + i * 8192);
  ok (good, "%s: the data is the server's", what);
  free (buf);
  return true;
}

static void
session (bool psk, bool structured, bool opt_mode, const char *what)
{
  struct nbd_handle *h = burst_client_new (&m, psk, structured, what);
  unsigned ku = atomic_load (&srv.key_updates), tickets = atomic_load (&srv.tickets);
  int rc;

  if (nbd_set_opt_mode (h, opt_mode) == -1)
    bail_out ("%s: set_opt_mode: %s", what, burst_errmsg ());
  rc = nbd_connect_unix (h, srv.sock);
  if (!is_int (rc, 0, "%s: connect_unix (%s)", what, burst_errmsg ()))
    goto out;
  if (opt_mode) {
    ok (nbd_aio_is_negotiating (h), "%s: negotiating after connect", what);
    rc = nbd_opt_go (h);
    if (!is_int (rc, 0, "%s: opt_go (%s)", what, burst_errmsg ()))
      goto out;
  }
  is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", what);
  is_int (nbd_get_structured_replies_negotiated (h), structured,
          "%s: structured replies %s", what, structured ? "on" : "off");
  is_int (nbd_get_size (h), BURST_SIZE, "%s: the export's size", what);
  if (!reads (h, what))
    goto out;
  burst_check_messages (&srv, ku, tickets, what);
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "%s: shutdown (%s)", what, burst_errmsg ());
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
  session (false, true, false, "X.509, structured replies");
  session (false, false, false, "X.509, simple replies");
  session (false, true, true, "X.509, option mode");
  ok (burst_server_stop (&srv), "X.509: the server saw every session to its end");

  if (burst_server_start (&srv, &m, true) == -1)
    bail_out ("cannot start the PSK burst server");
  session (true, true, false, "PSK, structured replies");
  ok (burst_server_stop (&srv), "PSK: the server saw every session to its end");
  return done_testing ();
}

#endif /* TEST_HAVE_GNUTLS */
