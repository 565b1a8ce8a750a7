/* tls-verify-peer: servers that check the client's certificate (nbdkit
 * --tls-verify-peer, qemu-nbd tls-creds-x509 verify-peer=on, nbd-server
 * with cacertfile and force_tls, which always checks) accept our
 * client-cert.pem/client-key.pem and refuse, with a message that says why,
 * a client without a certificate or with one from a CA they do not trust.
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

static int
connect_with (const struct test_server *srv, const char *certdir, struct nbd_handle **hp)
{
  struct nbd_handle *h = nbd_create ();

  *hp = h;
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  must (nbd_set_tls_certificates (h, certdir));
  if (srv->export_name && *srv->export_name)
    must (nbd_set_export_name (h, srv->export_name));
  if (srv->sock)
    return nbd_connect_unix (h, srv->sock);
  char port[16];
  snprintf (port, sizeof port, "%d", srv->tcp_port);
  return nbd_connect_tcp (h, "localhost", port);
}

static void
run_cases (const struct test_server *srv, const char *who)
{
  struct nbd_handle *h;
  char buf[4096];
  int rc;

  rc = connect_with (srv, m.client_dir, &h);
  if (is_int (rc, 0, "%s: with a client certificate: connects (%s)", who, errmsg ())) {
    is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", who);
    rc = nbd_pread (h, buf, sizeof buf, 0, 0);
    is_int (rc, 0, "%s: pread (%s)", who, errmsg ());
    rc = nbd_shutdown (h, 0);
    is_int (rc, 0, "%s: shutdown (%s)", who, errmsg ());
  }
  nbd_close (h);

  rc = connect_with (srv, m.ca_only_dir, &h);
  is_int (rc, -1, "%s: without a client certificate: refused", who);
  is_errno (EACCES, "%s: EACCES", who);
  ok (strstr (errmsg (), "asked for a client certificate and we have none") != NULL &&
      strstr (errmsg (), "client-cert.pem") != NULL,
      "%s: the message says a client certificate is needed: %s", who, errmsg ());
  is_int (nbd_aio_is_dead (h), 1, "%s: the handle is dead", who);
  nbd_close (h);

  rc = connect_with (srv, m.client_otherca_dir, &h);
  is_int (rc, -1, "%s: with a client certificate from an untrusted CA: refused", who);
  is_errno (EACCES, "%s: EACCES", who);
  ok (strstr (errmsg (), "rejected our client certificate") != NULL &&
      strstr (errmsg (), m.client_otherca_dir) != NULL,
      "%s: the message says the client certificate was rejected: %s", who, errmsg ());
  nbd_close (h);
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *arg, *obj, *image, *uri, *query;
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
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg,
                                                         "--tls-verify-peer", "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  run_cases (&srv, "nbdkit --tls-verify-peer, unix");
  server_stop (&srv);
  if (server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg,
                                                             "--tls-verify-peer", "memory",
                                                             "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  run_cases (&srv, "nbdkit --tls-verify-peer, tcp");
  if (asprintf (&query, "tls-certificates=%s", m.client_dir) == -1)
    bail_out ("asprintf");
  uri = tls_uri (&srv, NULL, NULL, NULL, "", query);
  h = nbd_create ();
  must (nbd_set_uri_allow_local_file (h, true));
  rc = nbd_connect_uri (h, uri);
  is_int (rc, 0, "nbds URI with a client certificate (%s)", errmsg ());
  nbd_close (h);
  free (uri);
  free (query);
  server_stop (&srv);
  free (arg);

  image = image_create_raw (1 << 20);
  if (!image || asprintf (&obj, "tls-creds-x509,id=tls0,dir=%s,endpoint=server,verify-peer=on",
                          m.server_dir) == -1)
    bail_out ("setting up qemu-nbd");
  if (server_start_qemu_nbd (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                           "tls0", "-f", "raw", "-x", "disk",
                                                           image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  run_cases (&srv, "qemu-nbd verify-peer=on, unix");
  server_stop (&srv);
  free (obj);

  {
    char *lines;
    struct nbd_server_config c = { .image = image, .export_name = "disk" };

    if (asprintf (&lines, "certfile = %s/server-cert.pem\nkeyfile = %s/server-key.pem\n"
                  "cacertfile = %s/ca-cert.pem\nforce_tls = true\n", m.server_dir,
                  m.server_dir, m.server_dir) == -1)
      bail_out ("asprintf");
    c.generic_lines = lines;
    if (server_start_nbd_server_config (&srv, &c) == -1)
      bail_out ("cannot start nbd-server");
    run_cases (&srv, "nbd-server force_tls, unix");
    server_stop (&srv);
    free (lines);
  }
  free (image);
  return done_testing ();
}
