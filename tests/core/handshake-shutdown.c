/* handshake-shutdown: nbd_shutdown ends every kind of connection cleanly,
 * in the closed state, and what was negotiated stays readable.
 *
 * For nbdkit (fixed newstyle, plain newstyle, oldstyle), qemu-nbd and
 * nbd-server: unknown shutdown flags are refused (EINVAL, still ready);
 * nbd_shutdown then leaves the handle closed, not dead; a second shutdown
 * and any I/O fail with EINVAL; size, protocol and flags are still
 * reported; the server goes on serving the next client.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

enum kind { NBDKIT, QEMU, NBD_SERVER };

static void
check_server (enum kind kind, const char *const *args, const char *image, const char *label,
              const char *protocol)
{
  struct test_server s;
  char buf[512];
  int r = -1;

  switch (kind) {
  case NBDKIT: r = server_start_nbdkit (&s, args); break;
  case QEMU: r = server_start_qemu_nbd (&s, args); break;
  case NBD_SERVER: r = server_start_nbd_server (&s, image, "disk", NULL); break;
  }
  if (r == -1)
    bail_out ("cannot start %s", label);

  /* Two clients in turn: the first one's shutdown must not upset the
   * server. */
  for (int round = 0; round < 2; round++) {
    struct nbd_handle *h = nbd_create ();
    int flush;

    if (!h)
      bail_out ("nbd_create: %s", nbd_get_error ());
    if (!ok (nbd_connect_uri (h, s.uri) == 0, "%s, client %d: connects", label, round)) {
      diag ("error: %s", nbd_get_error ());
      nbd_close (h);
      continue;
    }
    flush = nbd_can_flush (h);
    ok (nbd_shutdown (h, 0x4) == -1, "%s: nbd_shutdown with an unknown flag fails", label);
    is_errno (EINVAL, "%s: with EINVAL", label);
    ok (has_prefix (nbd_get_error (), "nbd_shutdown: "), "%s: the message names nbd_shutdown",
        label);
    ok (nbd_aio_is_ready (h), "%s: still ready after the refused shutdown", label);
    ok (nbd_pread (h, buf, sizeof buf, 0, 0) == 0, "%s: and I/O still works", label);

    if (!ok (nbd_shutdown (h, 0) == 0, "%s, client %d: nbd_shutdown", label, round))
      diag ("error: %s", nbd_get_error ());
    ok (nbd_aio_is_closed (h), "%s, client %d: closed", label, round);
    ok (!nbd_aio_is_dead (h), "%s, client %d: not dead", label, round);
    is_int (nbd_aio_get_direction (h), 0, "%s: nothing left to poll for", label);

    ok (nbd_shutdown (h, 0) == -1, "%s: a second nbd_shutdown fails", label);
    is_errno (EINVAL, "%s: with EINVAL", label);
    ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "%s: pread after shutdown fails", label);
    is_errno (EINVAL, "%s: with EINVAL", label);
    ok (has_prefix (nbd_get_error (), "nbd_pread: "), "%s: the message names nbd_pread", label);

    is_int (nbd_get_size (h), 1048576, "%s: size still known after shutdown", label);
    is_str (nbd_get_protocol (h), protocol, "%s: protocol still known after shutdown", label);
    is_int (nbd_can_flush (h), flush, "%s: flags still known after shutdown", label);
    nbd_close (h);
  }
  ok (server_pid_running (s.pid), "%s: the server is still running", label);
  ok (server_stop (&s) == 0, "%s: stopped", label);
}

int
main (void)
{
  static const char *const fixed[] = { "memory", "size=1M", NULL };
  static const char *const plain[] = { "--mask-handshake=0", "memory", "size=1M", NULL };
  static const char *const old[] = { "-o", "memory", "size=1M", NULL };
  char *raw = image_create_raw (1048576);
  const char *qemu[] = { "-f", "raw", NULL, NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!raw)
    bail_out ("cannot create the image");
  qemu[2] = raw;
  check_server (NBDKIT, fixed, NULL, "nbdkit", "newstyle-fixed");
  check_server (NBDKIT, plain, NULL, "nbdkit plain newstyle", "newstyle");
  check_server (NBDKIT, old, NULL, "nbdkit oldstyle", "oldstyle");
  check_server (QEMU, qemu, NULL, "qemu-nbd", "newstyle-fixed");
  check_server (NBD_SERVER, NULL, raw, "nbd-server", "newstyle-fixed");
  free (raw);
  return done_testing ();
}
