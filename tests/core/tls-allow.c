/* tls-allow: LIBNBD_TLS_ALLOW uses TLS where the server offers it and
 * plaintext where it cannot (STARTTLS refused, oldstyle, not fixed
 * newstyle), and nbd_get_tls_negotiated tells which; either way the
 * connection works.  In opt mode TLS is set up before negotiation begins
 * (as libnbd 1.14 does), so nbd_opt_* run over TLS.
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

static void
allow (const struct test_server *srv, int want_tls, const char *want_protocol, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  char w[65536], r[65536];
  int rc;

  if (!h)
    bail_out ("nbd_create: %s", errmsg ());
  memset (w, 0x3c, sizeof w);
  /* Without these the handle would connect in plaintext and the cases
   * that expect no TLS would pass for the wrong reason. */
  must (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  must (nbd_set_tls_certificates (h, m.client_dir));
  if (srv->export_name && *srv->export_name)
    must (nbd_set_export_name (h, srv->export_name));
  rc = nbd_connect_unix (h, srv->sock);
  if (is_int (rc, 0, "%s: connects (%s)", what, errmsg ())) {
    is_int (nbd_get_tls_negotiated (h), want_tls, "%s: nbd_get_tls_negotiated", what);
    is_str (nbd_get_protocol (h), want_protocol, "%s: protocol", what);
    rc = nbd_pwrite (h, w, sizeof w, 0, 0);
    is_int (rc, 0, "%s: pwrite (%s)", what, errmsg ());
    rc = nbd_pread (h, r, sizeof r, 0, 0);
    is_int (rc, 0, "%s: pread (%s)", what, errmsg ());
    ok (memcmp (w, r, sizeof w) == 0, "%s: data verified", what);
    rc = nbd_shutdown (h, 0);
    is_int (rc, 0, "%s: shutdown (%s)", what, errmsg ());
    is_int (nbd_get_tls_negotiated (h), want_tls, "%s: nbd_get_tls_negotiated once closed",
            what);
  }
  nbd_close (h);
}

static int
list_cb (void *data, const char *name, const char *desc)
{
  (*(int *) data)++;
  return 0;
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *arg, *obj, *image;
  int rc, n = 0;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1)
    bail_out ("asprintf");

  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=off", "memory", "size=1M",
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit");
  allow (&srv, 0, "newstyle-fixed", "nbdkit --tls=off (STARTTLS refused)");
  is_int (server_stop (&srv), 0, "nbdkit --tls=off stopped");

  if (server_start_nbdkit (&srv, (const char *const[]) { "-o", "memory", "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit -o");
  allow (&srv, 0, "oldstyle", "nbdkit -o (oldstyle)");
  is_int (server_stop (&srv), 0, "nbdkit -o stopped");

  if (server_start_nbdkit (&srv, (const char *const[]) { "--mask-handshake=0", "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit --mask-handshake=0");
  allow (&srv, 0, "newstyle", "nbdkit --mask-handshake=0");
  is_int (server_stop (&srv), 0, "nbdkit --mask-handshake=0 stopped");

  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=on", arg, "memory", "size=1M",
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit --tls=on");
  allow (&srv, 1, "newstyle-fixed", "nbdkit --tls=on");
  is_int (server_stop (&srv), 0, "nbdkit --tls=on stopped");

  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit --tls=require");
  allow (&srv, 1, "newstyle-fixed", "nbdkit --tls=require");

  /* Opt mode: TLS first, then the user's options, over TLS (a server that
   * requires TLS answers NBD_OPT_LIST only then). */
  if (!(h = nbd_create ()))
    bail_out ("nbd_create: %s", errmsg ());
  must (nbd_set_tls (h, LIBNBD_TLS_ALLOW));
  must (nbd_set_tls_certificates (h, m.client_dir));
  must (nbd_set_opt_mode (h, true));
  rc = nbd_connect_unix (h, srv.sock);
  is_int (rc, 0, "opt mode: connects (%s)", errmsg ());
  is_int (nbd_aio_is_negotiating (h), 1, "opt mode: negotiating");
  is_int (nbd_get_tls_negotiated (h), 1, "opt mode: TLS is already on");
  rc = nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &n });
  ok (rc >= 1, "opt mode: nbd_opt_list over TLS lists %d export(s) (%s)", rc, errmsg ());
  is_int (n, rc, "opt mode: one callback per export");
  rc = nbd_opt_go (h);
  is_int (rc, 0, "opt mode: nbd_opt_go (%s)", errmsg ());
  is_int (nbd_aio_is_ready (h), 1, "opt mode: ready");
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "opt mode: shutdown (%s)", errmsg ());
  nbd_close (h);
  is_int (server_stop (&srv), 0, "nbdkit --tls=require stopped");

  /* qemu-nbd, without and with TLS. */
  image = image_create_raw (1 << 20);
  if (!image || asprintf (&obj, "tls-creds-x509,id=tls0,dir=%s,endpoint=server",
                          m.server_dir) == -1)
    bail_out ("setting up qemu-nbd");
  if (server_start_qemu_nbd (&srv, (const char *const[]) { "-f", "raw", "-x", "disk", image,
                                                           NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  allow (&srv, 0, "newstyle-fixed", "qemu-nbd without TLS");
  is_int (server_stop (&srv), 0, "qemu-nbd without TLS stopped");
  if (server_start_qemu_nbd (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                           "tls0", "-f", "raw", "-x", "disk",
                                                           image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd with TLS");
  allow (&srv, 1, "newstyle-fixed", "qemu-nbd with TLS");
  is_int (server_stop (&srv), 0, "qemu-nbd with TLS stopped");

  free (obj);
  free (image);
  free (arg);
  return done_testing ();
}
