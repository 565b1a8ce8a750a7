/* handshake-structured-replies: structured replies are negotiated exactly
 * when both sides want them, and DF follows them.
 *
 * nbdkit and qemu-nbd accept NBD_OPT_STRUCTURED_REPLY; nbdkit --no-sr and
 * nbd-server 3.24 do not; a client that calls
 * nbd_set_request_structured_replies (false) never asks.  For each:
 * nbd_get_structured_replies_negotiated, nbd_can_df (the server's DF flag
 * means nothing without structured replies), and reads and writes that
 * come back right whichever reply format the server uses.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define BLOCK 4096

static void
check_io (struct nbd_handle *h, unsigned seed, const char *what)
{
  static char wbuf[BLOCK], rbuf[3 * BLOCK], zero[BLOCK];
  uint64_t offset = (uint64_t) seed * 4 * BLOCK;

  for (size_t i = 0; i < BLOCK; i++)
    wbuf[i] = (char) (i * 13 + seed * 5 + 3);
  memset (rbuf, 0x55, sizeof rbuf);
  if (!ok (nbd_pwrite (h, wbuf, BLOCK, offset + BLOCK, 0) == 0, "%s: pwrite", what))
    diag ("error: %s", nbd_get_error ());
  /* A read that spans a hole, data and a hole: qemu-nbd answers it with
   * OFFSET_HOLE and OFFSET_DATA chunks when structured replies are on. */
  if (!ok (nbd_pread (h, rbuf, 3 * BLOCK, offset, 0) == 0, "%s: pread", what))
    diag ("error: %s", nbd_get_error ());
  ok (memcmp (rbuf, zero, BLOCK) == 0, "%s: the hole before reads as zeroes", what);
  ok (memcmp (rbuf + BLOCK, wbuf, BLOCK) == 0, "%s: the data reads back", what);
  ok (memcmp (rbuf + 2 * BLOCK, zero, BLOCK) == 0, "%s: the hole after reads as zeroes", what);
}

static void
check (const struct test_server *s, bool request, bool want_sr, const char *label,
       unsigned seed)
{
  struct nbd_handle *h = nbd_create ();
  char what[160];

  snprintf (what, sizeof what, "%s%s", label, request ? "" : " (client does not ask)");
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_get_request_structured_replies (h), 1, "%s: a new handle asks by default", what);
  ok (nbd_get_structured_replies_negotiated (h) == -1,
      "%s: nbd_get_structured_replies_negotiated before connecting fails", what);
  is_errno (ENOTCONN, "%s: with ENOTCONN", what);
  if (!request) {
    ok (nbd_set_request_structured_replies (h, false) == 0,
        "%s: nbd_set_request_structured_replies (false)", what);
    is_int (nbd_get_request_structured_replies (h), 0, "%s: the setting reads back", what);
  }
  if (!ok (nbd_connect_uri (h, s->uri) == 0, "%s: connects", what)) {
    diag ("error: %s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  is_int (nbd_get_structured_replies_negotiated (h), want_sr,
          "%s: nbd_get_structured_replies_negotiated", what);
  is_int (nbd_can_df (h), want_sr, "%s: nbd_can_df follows structured replies", what);
  is_str (nbd_get_protocol (h), "newstyle-fixed", "%s: fixed newstyle", what);
  check_io (h, seed, what);

  /* The request setting is for before connecting only. */
  ok (nbd_set_request_structured_replies (h, true) == -1,
      "%s: nbd_set_request_structured_replies once connected fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (strncmp (nbd_get_error (), "nbd_set_request_structured_replies: ", 36) == 0,
      "%s: the message names the call", what);
  is_int (nbd_get_request_structured_replies (h), request, "%s: and the setting is unchanged",
          what);

  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  /* What was negotiated is still known after the connection ended. */
  is_int (nbd_get_structured_replies_negotiated (h), want_sr,
          "%s: still reported after shutdown", what);
  nbd_close (h);
}

int
main (void)
{
  static const char *const nbdkit_args[] = { "memory", "size=1M", NULL };
  static const char *const nosr_args[] = { "--no-sr", "memory", "size=1M", NULL };
  struct test_server nbdkit, nosr, qemu, nbdsrv;
  char *raw, *raw2;
  const char *qemu_args[6];

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  raw = image_create_raw (1048576);
  raw2 = image_create_raw (1048576);
  if (!raw || !raw2)
    bail_out ("cannot create images");
  qemu_args[0] = "-f";
  qemu_args[1] = "raw";
  qemu_args[2] = "-x";
  qemu_args[3] = "disk";
  qemu_args[4] = raw;
  qemu_args[5] = NULL;
  if (server_start_nbdkit (&nbdkit, nbdkit_args) == -1 ||
      server_start_nbdkit (&nosr, nosr_args) == -1 ||
      server_start_qemu_nbd (&qemu, qemu_args) == -1 ||
      server_start_nbd_server (&nbdsrv, raw2, "disk", NULL) == -1)
    bail_out ("cannot start the servers");

  check (&nbdkit, true, true, "nbdkit", 0);
  check (&nbdkit, false, false, "nbdkit", 1);
  check (&nosr, true, false, "nbdkit --no-sr", 2);
  check (&qemu, true, true, "qemu-nbd", 3);
  check (&qemu, false, false, "qemu-nbd", 4);
  check (&nbdsrv, true, false, "nbd-server", 5);
  check (&nbdsrv, false, false, "nbd-server", 6);

  ok (server_stop (&nbdkit) == 0, "nbdkit stopped");
  ok (server_stop (&nosr) == 0, "nbdkit --no-sr stopped");
  ok (server_stop (&qemu) == 0, "qemu-nbd stopped");
  ok (server_stop (&nbdsrv) == 0, "nbd-server stopped");
  free (raw);
  free (raw2);
  return done_testing ();
}
