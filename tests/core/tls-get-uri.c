/* tls-get-uri: nbd_get_uri follows TLS as it stands, and gives back only
 * URIs that nbd_connect_uri takes (compat-tls-get-uri checks the strings
 * both libraries agree on).
 *
 * Proves, against nbdkit --tls=require (certificates) and plain nbdkit:
 *  - TLS allowed, an aio connect: nbd+unix (no TLS files) while the
 *    handshake has not happened (the server is stopped meanwhile),
 *    nbds+unix with the certificates once TLS was negotiated;
 *  - TLS required against the plain server (the connect fails, dead):
 *    still nbds+unix, with the certificates: the URI never drops TLS;
 *  - TLS disabled with certificates and a PSK file set: nbd+unix without
 *    them (libnbd 1.14 adds them; nbd_connect_uri refuses them on a
 *    plaintext scheme), and that URI connects;
 *  - the TLS username: absent when it is $LOGNAME (the default), user@
 *    otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

static struct tls_material m;

static void
uri_is (struct nbd_handle *h, const char *want, const char *what)
{
  char *u = nbd_get_uri (h);

  if (!is_str (u, want, "%s: nbd_get_uri", what) && !u)
    diag ("%s", nbd_get_error ());
  free (u);
}

int
main (void)
{
  const char *plain_args[] = { "memory", "size=1M", NULL };
  struct test_server x509, plain;
  struct nbd_handle *h;
  char *arg, *want;

  tap_timeout (180);
  /* The default TLS username, for every handle made from now on. */
  if (setenv ("LOGNAME", "gnbd-tester", 1) == -1)
    bail_out ("setenv");
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1)
    bail_out ("asprintf");
  {
    const char *x_args[] = { "--tls=require", arg, "memory", "size=1M", NULL };

    if (server_start_nbdkit (&x509, x_args) == -1 || server_start_nbdkit (&plain, plain_args) == -1)
      bail_out ("cannot start nbdkit");
  }
  free (arg);

  /* TLS allowed: plaintext until negotiated.  The server is stopped
   * (SIGSTOP) so that the handshake cannot happen before we look: the
   * kernel still takes the connection. */
  h = nbd_create ();
  if (!h || nbd_set_tls (h, LIBNBD_TLS_ALLOW) == -1 ||
      nbd_set_tls_certificates (h, m.client_dir) == -1)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (kill (x509.pid, SIGSTOP) == -1)
    bail_out ("SIGSTOP: %m");
  is_int (nbd_aio_connect_unix (h, x509.sock), 0, "TLS allowed: nbd_aio_connect_unix");
  ok (!nbd_aio_is_ready (h) && !nbd_aio_is_dead (h), "TLS allowed: the handshake waits");
  if (asprintf (&want, "nbd+unix:///?socket=%s", x509.sock) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "TLS allowed, before the handshake");
  free (want);
  if (kill (x509.pid, SIGCONT) == -1)
    bail_out ("SIGCONT: %m");
  for (int i = 0; i < 100 && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h); i++)
    if (nbd_poll (h, 10000) == -1)
      break;
  ok (nbd_aio_is_ready (h) && nbd_get_tls_negotiated (h) == 1, "TLS allowed: negotiated");
  if (asprintf (&want, "nbds+unix:///?socket=%s&tls-certificates=%s", x509.sock,
                m.client_dir) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "TLS allowed, negotiated");
  free (want);
  nbd_close (h);

  /* TLS required, the server has none: the URI still says nbds. */
  h = nbd_create ();
  if (!h || nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 ||
      nbd_set_tls_certificates (h, m.client_dir) == -1)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_connect_unix (h, plain.sock), -1, "TLS required, plain server: the connect fails");
  ok (nbd_aio_is_dead (h), "and the handle is dead");
  if (asprintf (&want, "nbds+unix:///?socket=%s&tls-certificates=%s", plain.sock,
                m.client_dir) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "TLS required, refused by the server");
  free (want);
  nbd_close (h);

  /* TLS disabled: the files stay out of the URI, which then connects. */
  h = nbd_create ();
  if (!h || nbd_set_tls (h, LIBNBD_TLS_DISABLE) == -1 ||
      nbd_set_tls_certificates (h, m.client_dir) == -1 ||
      nbd_set_tls_psk_file (h, m.psk_file) == -1 || nbd_connect_unix (h, plain.sock) == -1)
    bail_out ("TLS disabled, connect: %s", nbd_get_error ());
  if (asprintf (&want, "nbd+unix:///?socket=%s", plain.sock) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "TLS disabled, TLS files set");
  nbd_close (h);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  nbd_set_uri_allow_local_file (h, true);
  if (!is_int (nbd_connect_uri (h, want), 0, "that URI connects"))
    diag ("%s", nbd_get_error ());
  nbd_close (h);
  free (want);

  /* The username: only when it is not the default ($LOGNAME, set above). */
  h = nbd_create ();
  if (!h || nbd_set_tls_username (h, "gnbd-tester") == -1 || nbd_connect_unix (h, plain.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (asprintf (&want, "nbd+unix:///?socket=%s", plain.sock) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "the username set to $LOGNAME");
  free (want);
  nbd_close (h);
  h = nbd_create ();
  if (!h || nbd_set_tls_username (h, "gnbd-carol") == -1 ||
      nbd_connect_unix (h, plain.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  if (asprintf (&want, "nbd+unix://gnbd-carol@/?socket=%s", plain.sock) == -1)
    bail_out ("asprintf");
  uri_is (h, want, "another username");
  free (want);
  nbd_close (h);

  server_stop (&x509);
  server_stop (&plain);
  return done_testing ();
}
