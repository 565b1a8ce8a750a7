/* tls-downgrade: with LIBNBD_TLS_REQUIRE (or an nbds URI) a server that
 * cannot or will not do TLS is refused, never used in plaintext
 * (CVE-2019-14842 in libnbd): a server that refuses NBD_OPT_STARTTLS
 * (nbdkit --tls=off, qemu-nbd without TLS), an oldstyle server (nbdkit -o),
 * a newstyle server that is not fixed newstyle (nbdkit --mask-handshake=0),
 * and fixed newstyle turned off on our side.  The opposite case, TLS
 * disabled against a server that requires it, is refused too, by the server.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

#define WORDS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* Connect with TLS required (by nbd_set_tls, or by an nbds URI when
 * @by_uri); it must fail with ENOTSUP, every word in the message, a dead
 * handle and nothing negotiated. */
static void
refuse (const struct test_server *srv, bool by_uri, bool opt_mode, uint32_t hflags,
        const char *what, const char *const *words)
{
  struct nbd_handle *h = nbd_create ();
  const char *call = by_uri ? "nbd_connect_uri: " : "nbd_connect_unix: ";
  char *uri = NULL;
  int rc;

  must (nbd_set_tls_certificates (h, m.client_dir));
  must (nbd_set_opt_mode (h, opt_mode));
  must (nbd_set_handshake_flags (h, hflags));
  if (by_uri) {
    uri = tls_uri (srv, NULL, NULL, NULL, srv->export_name, NULL);
    rc = nbd_connect_uri (h, uri);
  }
  else {
    must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
    rc = nbd_connect_unix (h, srv->sock);
  }
  if (is_int (rc, -1, "%s: refused", what)) {
    is_errno (ENOTSUP, "%s: ENOTSUP", what);
    ok (strncmp (errmsg (), call, strlen (call)) == 0, "%s: the message names the call: %s",
        what, errmsg ());
    for (size_t i = 0; words[i]; i++)
      ok (strstr (errmsg (), words[i]) != NULL, "%s: the message says \"%s\"", what, words[i]);
    is_int (nbd_aio_is_dead (h), 1, "%s: the handle is dead", what);
    ok (nbd_aio_is_negotiating (h) == 0 && nbd_aio_is_ready (h) == 0,
        "%s: neither negotiating nor ready", what);
  }
  else
    nbd_shutdown (h, 0);
  nbd_close (h);
  free (uri);
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *arg, *image;
  int rc;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1)
    bail_out ("asprintf");

  /* A server that refuses STARTTLS. */
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=off", "memory", "size=1M",
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit");
  refuse (&srv, false, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit --tls=off",
          WORDS ("refused NBD_OPT_STARTTLS", "TLS is required"));
  refuse (&srv, true, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit --tls=off, nbds URI",
          WORDS ("refused NBD_OPT_STARTTLS", "TLS is required"));
  refuse (&srv, false, true, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit --tls=off, opt mode",
          WORDS ("refused NBD_OPT_STARTTLS"));
  server_stop (&srv);

  /* Oldstyle: no options, so no TLS. */
  if (server_start_nbdkit (&srv, (const char *const[]) { "-o", "memory", "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit -o");
  refuse (&srv, false, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit -o (oldstyle)",
          WORDS ("oldstyle", "TLS is required"));
  refuse (&srv, true, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit -o, nbds URI",
          WORDS ("oldstyle"));
  server_stop (&srv);

  /* Newstyle but not fixed newstyle: only NBD_OPT_EXPORT_NAME, no TLS. */
  if (server_start_nbdkit (&srv, (const char *const[]) { "--mask-handshake=0", arg,
                                                         "--tls=on", "memory", "size=1M",
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit --mask-handshake=0");
  refuse (&srv, false, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit --mask-handshake=0",
          WORDS ("not fixed newstyle", "TLS is required"));
  refuse (&srv, true, false, LIBNBD_HANDSHAKE_FLAG_MASK, "nbdkit --mask-handshake=0, nbds URI",
          WORDS ("not fixed newstyle"));
  server_stop (&srv);

  /* Our side without fixed newstyle, against a server that does TLS. */
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  refuse (&srv, false, false, 0, "handshake flags 0 on our side",
          WORDS ("fixed newstyle is turned off", "TLS is required"));
  /* TLS disabled, server requires it: the server says no, we say why. */
  h = nbd_create ();
  rc = nbd_connect_unix (h, srv.sock);
  is_int (rc, -1, "TLS disabled against nbdkit --tls=require: refused");
  is_errno (ENOTSUP, "ENOTSUP");
  ok (strstr (errmsg (), "TLS is required by the server") != NULL, "the message says so: %s",
      errmsg ());
  nbd_close (h);
  server_stop (&srv);

  /* qemu-nbd without TLS. */
  image = image_create_raw (1 << 20);
  if (!image || server_start_qemu_nbd (&srv, (const char *const[]) { "-f", "raw", "-x", "disk",
                                                                     image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  refuse (&srv, true, false, LIBNBD_HANDSHAKE_FLAG_MASK, "qemu-nbd without TLS, nbds URI",
          WORDS ("refused NBD_OPT_STARTTLS", "TLS is required"));
  server_stop (&srv);
  free (image);
  free (arg);
  return done_testing ();
}
