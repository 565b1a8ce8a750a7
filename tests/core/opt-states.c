/* opt-states: option mode's states and the calls allowed in each.
 *
 * With nbd_set_opt_mode (true) the sync connect stops in the negotiating
 * state (nbd_aio_is_negotiating); nbd_opt_go then moves to ready and I/O
 * works; nbd_opt_abort ends in closed, also against nbd-server, which
 * closes without acknowledging the abort; a failed nbd_opt_go (unknown
 * export) leaves the handle negotiating so another name can be tried.
 * The opt calls fail with ENOTCONN on a handle that never connected and
 * with EINVAL once ready or closed; transmission calls fail while
 * negotiating.  An oldstyle server cannot negotiate, so option mode has no
 * effect there; a plain newstyle one stops negotiating, but only
 * nbd_opt_go (by NBD_OPT_EXPORT_NAME) works, as in libnbd 1.14.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

static int
list_cb (void *opaque, const char *name, const char *desc)
{
  return 0;
}

static int
context_cb (void *opaque, const char *name)
{
  return 0;
}

/* Every opt call fails with @err and names itself. */
static void
opt_calls_fail (struct nbd_handle *h, int err, const char *what)
{
  ok (nbd_opt_go (h) == -1, "%s: nbd_opt_go fails", what);
  is_errno (err, "%s: nbd_opt_go errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_go: "), "%s: the message names nbd_opt_go", what);
  ok (nbd_opt_info (h) == -1, "%s: nbd_opt_info fails", what);
  is_errno (err, "%s: nbd_opt_info errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_info: "), "%s: the message names nbd_opt_info",
      what);
  ok (nbd_opt_abort (h) == -1, "%s: nbd_opt_abort fails", what);
  is_errno (err, "%s: nbd_opt_abort errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_abort: "), "%s: the message names nbd_opt_abort",
      what);
  ok (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb }) == -1,
      "%s: nbd_opt_list fails", what);
  is_errno (err, "%s: nbd_opt_list errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_list: "), "%s: the message names nbd_opt_list",
      what);
  ok (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb }) == -1,
      "%s: nbd_opt_list_meta_context fails", what);
  is_errno (err, "%s: nbd_opt_list_meta_context errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_list_meta_context: "),
      "%s: the message names nbd_opt_list_meta_context", what);
}

static struct nbd_handle *
negotiating_handle (const char *uri, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  ok (nbd_set_opt_mode (h, true) == 0, "%s: nbd_set_opt_mode (true)", what);
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connect_uri returns", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  ok (nbd_aio_is_negotiating (h), "%s: the handle is negotiating", what);
  ok (!nbd_aio_is_ready (h), "%s: and not ready", what);
  ok (!nbd_aio_is_connecting (h), "%s: nor connecting", what);
  return h;
}

static void
check_io (struct nbd_handle *h, const char *what)
{
  char wbuf[512], rbuf[512];

  for (size_t i = 0; i < sizeof wbuf; i++)
    wbuf[i] = (char) (i ^ 0x5a);
  ok (nbd_pwrite (h, wbuf, sizeof wbuf, 4096, 0) == 0, "%s: pwrite", what);
  memset (rbuf, 0, sizeof rbuf);
  ok (nbd_pread (h, rbuf, sizeof rbuf, 4096, 0) == 0, "%s: pread", what);
  ok (memcmp (rbuf, wbuf, sizeof rbuf) == 0, "%s: read back what was written", what);
}

static void
go_and_abort (const struct test_server *s, const char *label)
{
  struct nbd_handle *h;
  char what[96];
  char buf[512];

  /* GO: negotiating -> ready. */
  snprintf (what, sizeof what, "%s, opt_go", label);
  h = negotiating_handle (s->uri, what);
  is_str (nbd_get_protocol (h), "newstyle-fixed", "%s: protocol known while negotiating", what);
  ok (nbd_get_size (h) == -1, "%s: no size before INFO or GO", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (has_prefix (nbd_get_error (), "nbd_get_size: "), "%s: the message names nbd_get_size",
      what);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "%s: pread while negotiating fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (has_prefix (nbd_get_error (), "nbd_pread: "), "%s: the message names nbd_pread", what);
  /* libnbd 1.14: nbd_shutdown is for connected handles only (1.16 made it
   * an opt_abort while negotiating). */
  ok (nbd_shutdown (h, 0) == -1, "%s: nbd_shutdown while negotiating fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (nbd_aio_is_negotiating (h), "%s: and the handle is still negotiating", what);
  ok (nbd_set_opt_mode (h, false) == -1, "%s: opt mode cannot change once connected", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  is_int (nbd_get_opt_mode (h), 1, "%s: opt mode still on", what);
  if (!ok (nbd_opt_go (h) == 0, "%s: nbd_opt_go", what))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "%s: ready", what);
  ok (!nbd_aio_is_negotiating (h), "%s: no longer negotiating", what);
  is_int (nbd_get_size (h), 1048576, "%s: size", what);
  check_io (h, what);
  opt_calls_fail (h, EINVAL, what);
  ok (nbd_aio_is_ready (h), "%s: the refused calls left it ready", what);
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  opt_calls_fail (h, EINVAL, "after shutdown");
  nbd_close (h);

  /* ABORT: negotiating -> closed. */
  snprintf (what, sizeof what, "%s, opt_abort", label);
  h = negotiating_handle (s->uri, what);
  if (!ok (nbd_opt_abort (h) == 0, "%s: nbd_opt_abort", what))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  ok (!nbd_aio_is_dead (h), "%s: not dead", what);
  opt_calls_fail (h, EINVAL, what);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "%s: pread after abort fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  nbd_close (h);
}

int
main (void)
{
  static const char *const nbdkit_args[] = { "memory", "size=1M", NULL };
  static const char *const old_args[] = { "-o", "memory", "size=1M", NULL };
  static const char *const plain_args[] = { "--mask-handshake=0", "memory", "size=1M", NULL };
  struct test_server nbdkit, qemu, nbdsrv, old, plain;
  struct nbd_handle *h;
  char *raw = image_create_raw (1048576), *raw2 = image_create_raw (1048576);
  const char *qemu_args[] = { "-f", "raw", "-x", "disk", NULL, NULL };
  char *uri;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!raw || !raw2)
    bail_out ("cannot create images");
  qemu_args[4] = raw;
  if (server_start_nbdkit (&nbdkit, nbdkit_args) == -1 ||
      server_start_qemu_nbd (&qemu, qemu_args) == -1 ||
      server_start_nbd_server (&nbdsrv, raw2, "disk", NULL) == -1 ||
      server_start_nbdkit (&old, old_args) == -1 || server_start_nbdkit (&plain, plain_args) == -1)
    bail_out ("cannot start the servers");

  /* A handle that never connected. */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_get_opt_mode (h), 0, "opt mode is off by default");
  opt_calls_fail (h, ENOTCONN, "new handle");
  ok (nbd_aio_is_created (h), "the new handle is still created");
  ok (nbd_set_opt_mode (h, true) == 0, "nbd_set_opt_mode (true)");
  is_int (nbd_get_opt_mode (h), 1, "opt mode reads back");
  opt_calls_fail (h, ENOTCONN, "new handle in opt mode");
  nbd_close (h);

  go_and_abort (&nbdkit, "nbdkit");
  go_and_abort (&qemu, "qemu-nbd");
  go_and_abort (&nbdsrv, "nbd-server");

  /* A failed GO leaves the handle negotiating; another name then works. */
  uri = server_uri (&qemu, "nosuchexport");
  if (!uri)
    bail_out ("server_uri failed");
  h = negotiating_handle (uri, "qemu-nbd, unknown export");
  ok (nbd_opt_go (h) == -1, "qemu-nbd: nbd_opt_go on an unknown export fails");
  is_errno (ENOENT, "qemu-nbd: with ENOENT");
  ok (has_prefix (nbd_get_error (), "nbd_opt_go: "), "qemu-nbd: the message names nbd_opt_go");
  ok (nbd_aio_is_negotiating (h), "qemu-nbd: still negotiating after the failed GO");
  ok (nbd_get_size (h) == -1, "qemu-nbd: no size after the failed GO");
  is_errno (EINVAL, "qemu-nbd: with EINVAL");
  ok (nbd_set_export_name (h, "disk") == 0, "qemu-nbd: nbd_set_export_name while negotiating");
  if (!ok (nbd_opt_go (h) == 0, "qemu-nbd: nbd_opt_go on the right export"))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "qemu-nbd: ready");
  is_int (nbd_get_size (h), 1048576, "qemu-nbd: size");
  check_io (h, "qemu-nbd after a failed GO");
  ok (nbd_set_export_name (h, "other") == -1, "qemu-nbd: the export name is fixed once ready");
  is_errno (EINVAL, "qemu-nbd: with EINVAL");
  ok (nbd_shutdown (h, 0) == 0, "qemu-nbd: shutdown");
  ok (nbd_aio_is_closed (h), "qemu-nbd: closed");
  nbd_close (h);
  free (uri);

  /* Oldstyle cannot negotiate: opt mode changes nothing. */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_opt_mode (h, true));
  if (!ok (nbd_connect_uri (h, old.uri) == 0, "oldstyle, opt mode: connects"))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "oldstyle, opt mode: straight to ready");
  is_str (nbd_get_protocol (h), "oldstyle", "oldstyle, opt mode: protocol");
  check_io (h, "oldstyle, opt mode");
  ok (nbd_opt_go (h) == -1, "oldstyle, opt mode: nbd_opt_go fails");
  is_errno (EINVAL, "oldstyle, opt mode: with EINVAL");
  ok (nbd_shutdown (h, 0) == 0, "oldstyle, opt mode: shutdown");
  ok (nbd_aio_is_closed (h), "oldstyle, opt mode: closed");
  nbd_close (h);

  /* Plain newstyle: as libnbd 1.14, the connect stops negotiating, the
   * options that need fixed newstyle fail with ENOTSUP (and change
   * nothing), and nbd_opt_go goes on with NBD_OPT_EXPORT_NAME. */
  h = negotiating_handle (plain.uri, "plain newstyle, opt mode");
  is_str (nbd_get_protocol (h), "newstyle", "plain newstyle, opt mode: protocol");
  ok (nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb }) == -1,
      "plain newstyle: nbd_opt_list fails");
  is_errno (ENOTSUP, "plain newstyle: nbd_opt_list: ENOTSUP");
  ok (has_prefix (nbd_get_error (), "nbd_opt_list: "), "plain newstyle: the message names it");
  ok (nbd_opt_info (h) == -1, "plain newstyle: nbd_opt_info fails");
  is_errno (ENOTSUP, "plain newstyle: nbd_opt_info: ENOTSUP");
  ok (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb }) == -1,
      "plain newstyle: nbd_opt_list_meta_context fails");
  is_errno (ENOTSUP, "plain newstyle: nbd_opt_list_meta_context: ENOTSUP");
  ok (nbd_aio_is_negotiating (h), "plain newstyle: still negotiating");
  if (!ok (nbd_opt_go (h) == 0, "plain newstyle: nbd_opt_go"))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "plain newstyle: ready");
  is_int (nbd_get_size (h), 1048576, "plain newstyle: size");
  check_io (h, "plain newstyle, opt mode");
  ok (nbd_shutdown (h, 0) == 0, "plain newstyle: shutdown");
  ok (nbd_aio_is_closed (h), "plain newstyle: closed");
  nbd_close (h);

  ok (server_stop (&nbdkit) == 0, "nbdkit stopped");
  ok (server_stop (&qemu) == 0, "qemu-nbd stopped");
  ok (server_stop (&nbdsrv) == 0, "nbd-server stopped");
  ok (server_stop (&old) == 0, "nbdkit -o stopped");
  ok (server_stop (&plain) == 0, "nbdkit --mask-handshake=0 stopped");
  free (raw);
  free (raw2);
  return done_testing ();
}
