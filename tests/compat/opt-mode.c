/* opt-mode: option mode where the negotiation goes wrong.
 *
 * Against a server that is not fixed newstyle (nbdkit --mask-handshake=0):
 * nbd_opt_abort and nbd_aio_opt_abort return 0 and leave the handle dead,
 * not closed (no NBD_OPT_ABORT can be sent to such a server); a second
 * abort is EINVAL.  Against qemu-nbd -x disk with base:allocation
 * requested: after nbd_opt_info of an unknown export fails (ENOENT),
 * nbd_can_meta_context ("base:allocation") and nbd_get_size fail with
 * EINVAL, also after an earlier successful nbd_opt_info, which answered 1;
 * the same after a failed nbd_opt_go; a successful one answers 1.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static void
abort_plain (const struct test_server *s, bool aio)
{
  const char *what = aio ? "nbd_aio_opt_abort, not fixed newstyle"
                         : "nbd_opt_abort, not fixed newstyle";
  struct nbd_handle *h = nbd_create ();

  if (!h || nbd_set_opt_mode (h, true) == -1 || nbd_connect_unix (h, s->sock) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
  is_int (aio ? nbd_aio_opt_abort (h) : nbd_opt_abort (h), 0, "%s: returns 0", what);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", what);
  ok (!nbd_aio_is_closed (h), "%s: not closed", what);
  is_int (nbd_opt_abort (h), -1, "%s: a second abort fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  nbd_close (h);
}

static void
no_facts (struct nbd_handle *h, const char *what)
{
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), -1,
          "%s: nbd_can_meta_context fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  is_int (nbd_get_size (h), -1, "%s: nbd_get_size fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
}

int
main (void)
{
  const char *plain_args[] = { "--mask-handshake=0", "memory", "size=1M", NULL };
  const char *qemu_args[] = { "-f", "raw", "-x", "disk", NULL, NULL };
  char *img = image_create_raw (1024 * 1024);
  struct test_server plain, q;
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!img)
    bail_out ("cannot create an image");
  qemu_args[4] = img;
  if (server_start_nbdkit (&plain, plain_args) == -1 || server_start_qemu_nbd (&q, qemu_args) == -1)
    bail_out ("cannot start the servers: %s", strerror (errno));

  abort_plain (&plain, false);
  abort_plain (&plain, true);

  h = nbd_create ();
  if (!h || nbd_set_opt_mode (h, true) == -1 ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_unix (h, q.sock) == -1)
    bail_out ("connect to qemu-nbd: %s", nbd_get_error ());
  nbd_set_export_name (h, "nope");
  is_int (nbd_opt_info (h), -1, "nbd_opt_info of an unknown export fails");
  is_errno (ENOENT, "with ENOENT");
  no_facts (h, "after the failed nbd_opt_info");
  nbd_set_export_name (h, "disk");
  is_int (nbd_opt_info (h), 0, "nbd_opt_info of disk");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "base:allocation negotiated");
  nbd_set_export_name (h, "nope");
  is_int (nbd_opt_info (h), -1, "nbd_opt_info of the unknown export again");
  no_facts (h, "a failed nbd_opt_info after a good one");
  is_int (nbd_opt_go (h), -1, "nbd_opt_go of the unknown export fails");
  is_errno (ENOENT, "with ENOENT");
  no_facts (h, "after the failed nbd_opt_go");
  nbd_set_export_name (h, "disk");
  is_int (nbd_opt_go (h), 0, "nbd_opt_go of disk");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "base:allocation negotiated for it");
  nbd_shutdown (h, 0);
  nbd_close (h);

  server_stop (&plain);
  server_stop (&q);
  free (img);
  return done_testing ();
}
