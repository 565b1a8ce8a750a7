/* opt-abort-newstyle: nbd_opt_abort in option mode against a server that is
 * not fixed newstyle (nbdkit --mask-handshake=0), which knows no option but
 * NBD_OPT_EXPORT_NAME.
 *
 * Proves, as libnbd 1.14 does (compat-opt-mode checks it against both
 * libraries):
 *  - nbd_opt_abort returns 0 and the handle ends dead, not closed; a second
 *    one fails with EINVAL ("nbd_opt_abort: ...");
 *  - it sends nothing: with a concurrent writer set (it sees every byte the
 *    library would send), no byte comes after the negotiation stopped, and
 *    no end-of-stream mark;
 *  - nbd_aio_opt_abort the same: 0, dead at once, nothing sent;
 *  - against a fixed-newstyle server (nbdkit as it is) nbd_opt_abort does
 *    send NBD_OPT_ABORT (16 more bytes, then the end-of-stream mark) and
 *    ends closed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

/* A handle in option mode with a writer, negotiating with @s. */
static struct nbd_handle *
negotiating (const struct test_server *s, struct wring *r, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || wr_start (r, h) == -1 || nbd_set_concurrent_writer (h, r, wr_enqueue) == -1 ||
      nbd_set_opt_mode (h, true) == -1)
    bail_out ("%s: a handle in option mode with a writer: %s", what, nbd_get_error ());
  if (!is_int (nbd_connect_unix (h, s->sock), 0, "%s: nbd_connect_unix", what))
    bail_out ("%s: %s", what, nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
  ok (wr_wait_sent (r, 10000), "%s: the writer thread sent the client's bytes", what);
  return h;
}

static void
abort_plain (const struct test_server *plain, bool aio)
{
  const char *what = aio ? "nbd_aio_opt_abort, plain newstyle" : "nbd_opt_abort, plain newstyle";
  struct wring r;
  struct nbd_handle *h = negotiating (plain, &r, what);
  uint64_t before = WR_GET (&r, accepted);

  is_str (nbd_get_protocol (h), "newstyle", "%s: the server is plain newstyle", what);
  is_int (aio ? nbd_aio_opt_abort (h) : nbd_opt_abort (h), 0, "%s: returns 0", what);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", what);
  ok (!nbd_aio_is_closed (h), "%s: not closed", what);
  is_uint (WR_GET (&r, accepted), before, "%s: no byte was sent (%" PRIu64 " before and after)",
           what, before);
  is_uint (WR_GET (&r, eos_count), 0, "%s: and no end-of-stream mark", what);
  is_int (nbd_opt_abort (h), -1, "%s: a second nbd_opt_abort fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_abort: "), "%s: naming nbd_opt_abort: %s", what,
      nbd_get_error ());
  nbd_close (h);
  wr_free (&r);
}

int
main (void)
{
  static const char *const plain_args[] = { "--mask-handshake=0", "memory", "size=1M", NULL };
  static const char *const fixed_args[] = { "memory", "size=1M", NULL };
  struct test_server plain, fixed;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&plain, plain_args) == -1 ||
      server_start_nbdkit (&fixed, fixed_args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));

  abort_plain (&plain, false);
  abort_plain (&plain, true);

  /* The contrast: a fixed-newstyle server gets NBD_OPT_ABORT. */
  {
    const char *what = "nbd_opt_abort, fixed newstyle";
    struct wring r;
    struct nbd_handle *h = negotiating (&fixed, &r, what);
    uint64_t before = WR_GET (&r, accepted);

    is_str (nbd_get_protocol (h), "newstyle-fixed", "%s: the server is fixed newstyle", what);
    is_int (nbd_opt_abort (h), 0, "%s: returns 0", what);
    ok (nbd_aio_is_closed (h), "%s: the handle is closed", what);
    is_uint (WR_GET (&r, accepted) - before, 16, "%s: NBD_OPT_ABORT's 16 bytes were sent", what);
    is_uint (WR_GET (&r, eos_count), 1, "%s: then the end-of-stream mark", what);
    ok (wr_wait_done (&r, 10000), "%s: the writer thread sent them and ended", what);
    nbd_close (h);
    wr_free (&r);
  }

  server_stop (&plain);
  server_stop (&fixed);
  return done_testing ();
}
