/* tls-get-uri: nbd_get_uri once TLS is in use says so, as libnbd 1.14's
 * does: nbds or nbds+unix whenever TLS is required on the handle or was
 * negotiated, with the handle's TLS files as query parameters and a PSK
 * username as user@; nbd+unix when TLS, only allowed, was refused.
 *
 * Against nbdkit --tls=require with certificates (on a Unix socket and on
 * 127.0.0.1), nbdkit --tls=require with a PSK file, and plain nbdkit:
 * nbd_connect_unix and nbd_connect_tcp with TLS required, with TLS allowed
 * (negotiated), a PSK with username alice, and TLS allowed against the
 * plain server; each URI, with local files allowed, connects again, and
 * with TLS.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

static struct tls_material m;

enum how { UNIX, TCP };

/* Connect to @s as @how with TLS setting @tls (and the certificates, or
 * the PSK file and @user); nbd_get_uri must be @want, and connect again. */
static void
check (const struct test_server *s, enum how how, int tls, bool psk, const char *user,
       const char *want, int want_tls, const char *what)
{
  struct nbd_handle *h = nbd_create (), *h2;
  char port[16], *u;
  int r;

  if (!h)
    bail_out ("nbd_create");
  nbd_set_tls (h, tls);
  if (psk)
    nbd_set_tls_psk_file (h, m.psk_file);
  else if (tls != LIBNBD_TLS_DISABLE && want_tls)
    nbd_set_tls_certificates (h, m.client_dir);
  if (user)
    nbd_set_tls_username (h, user);
  snprintf (port, sizeof port, "%d", s->tcp_port);
  r = how == UNIX ? nbd_connect_unix (h, s->sock) : nbd_connect_tcp (h, "127.0.0.1", port);
  if (!is_int (r, 0, "%s: connects", what))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_tls_negotiated (h), want_tls, "%s: TLS negotiated", what);
  u = nbd_get_uri (h);
  is_str (u, want, "%s: nbd_get_uri", what);
  nbd_close (h);
  if (!u)
    return;
  h2 = nbd_create ();
  if (!h2)
    bail_out ("nbd_create");
  nbd_set_uri_allow_local_file (h2, true);
  if (!ok (nbd_connect_uri (h2, u) == 0, "%s: the URI connects again", what))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_tls_negotiated (h2), want_tls, "%s: with TLS as before", what);
  nbd_close (h2);
  free (u);
}

int
main (void)
{
  struct test_server x509, x509_tcp, psk, plain;
  struct nbd_handle *h;
  char *arg, *want;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1)
    bail_out ("asprintf");
  {
    const char *x_args[] = { "--tls=require", arg, "memory", "size=1M", NULL };
    const char *plain_args[] = { "memory", "size=1M", NULL };

    if (server_start_nbdkit (&x509, x_args) == -1 ||
        server_start_nbdkit_tcp (&x509_tcp, x_args) == -1 ||
        server_start_nbdkit (&plain, plain_args) == -1)
      bail_out ("cannot start nbdkit");
  }
  free (arg);
  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1)
    bail_out ("asprintf");
  {
    const char *psk_args[] = { "--tls=require", arg, "memory", "size=1M", NULL };

    if (server_start_nbdkit (&psk, psk_args) == -1)
      bail_out ("cannot start nbdkit");
  }
  free (arg);

  if (asprintf (&want, "nbds+unix:///?socket=%s&tls-certificates=%s", x509.sock,
                m.client_dir) == -1)
    bail_out ("asprintf");
  check (&x509, UNIX, LIBNBD_TLS_REQUIRE, false, NULL, want, 1,
         "certificates, TLS required, nbd_connect_unix");
  check (&x509, UNIX, LIBNBD_TLS_ALLOW, false, NULL, want, 1,
         "certificates, TLS allowed and negotiated");
  free (want);

  if (asprintf (&want, "nbds://127.0.0.1:%d/?tls-certificates=%s", x509_tcp.tcp_port,
                m.client_dir) == -1)
    bail_out ("asprintf");
  check (&x509_tcp, TCP, LIBNBD_TLS_REQUIRE, false, NULL, want, 1,
         "certificates, TLS required, nbd_connect_tcp");
  free (want);

  if (asprintf (&want, "nbds+unix://alice@/?socket=%s&tls-psk-file=%s", psk.sock,
                m.psk_file) == -1)
    bail_out ("asprintf");
  check (&psk, UNIX, LIBNBD_TLS_REQUIRE, true, "alice", want, 1, "PSK, user alice");
  free (want);

  if (asprintf (&want, "nbd+unix:///?socket=%s", plain.sock) == -1)
    bail_out ("asprintf");
  check (&plain, UNIX, LIBNBD_TLS_ALLOW, false, NULL, want, 0,
         "TLS allowed, the server has none");
  free (want);

  server_stop (&x509);
  server_stop (&x509_tcp);
  server_stop (&psk);
  server_stop (&plain);
  return done_testing ();
}
