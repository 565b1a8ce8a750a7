/* get-uri: the exact strings nbd_get_uri gives without TLS, which libnbd
 * 1.14 builds from the handle rather than repeating what it was given.
 *
 * nbd_aio_connect to a struct sockaddr_in gives nbd://127.0.0.1:PORT/
 * (while connecting and once ready), with the export name percent-encoded;
 * to a struct sockaddr_un, nbd+unix:///?socket=PATH; nbd_connect_tcp with
 * the port as given; nbd_connect_uri without the trailing slash, with a
 * percent-encoded name, or with an x- query parameter, the normal form
 * (slash added, name decoded, x- dropped); in option mode the export name
 * set while negotiating; a TLS username set on the handle, as user@ even
 * without TLS; after nbd_connect_unix to a missing socket fails, that
 * socket.  Each URI of a live server connects again.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define MiB (1024 * 1024)

/* nbd_get_uri is @want, and a new handle connects with it. */
static void
check_uri (struct nbd_handle *h, const char *want, int64_t size, const char *what)
{
  char *u = nbd_get_uri (h);
  struct nbd_handle *h2;

  if (!is_str (u, want, "%s: nbd_get_uri", what)) {
    if (!u)
      diag ("%s", nbd_get_error ());
    free (u);
    return;
  }
  h2 = nbd_create ();
  if (!h2)
    bail_out ("nbd_create");
  if (!ok (nbd_connect_uri (h2, u) == 0, "%s: the URI connects again", what))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h2), size, "%s: to the same export", what);
  nbd_close (h2);
  free (u);
}

/* Run the handshake of an aio connect with nbd_poll. */
static void
finish (struct nbd_handle *h, const char *what)
{
  for (int i = 0; i < 100 && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h); i++)
    if (nbd_poll (h, 10000) == -1)
      break;
  if (!ok (nbd_aio_is_ready (h), "%s: ready", what))
    diag ("%s", nbd_get_error ());
}

int
main (void)
{
  const char *args[] = { "memory", "size=2M", NULL };
  struct test_server us, ts;
  struct sockaddr_in sin = { .sin_family = AF_INET };
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct nbd_handle *h;
  char want[512], uri[512], port[16];

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&us, args) == -1 || server_start_nbdkit_tcp (&ts, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  snprintf (port, sizeof port, "%d", ts.tcp_port);
  sin.sin_port = htons ((uint16_t) ts.tcp_port);
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (strlen (us.sock) >= sizeof sun.sun_path)
    bail_out ("socket path too long");
  strcpy (sun.sun_path, us.sock);

  /* ---- nbd_aio_connect: a socket address ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_aio_connect (h, (struct sockaddr *) &sin, sizeof sin), 0,
          "nbd_aio_connect to 127.0.0.1:%s", port);
  snprintf (want, sizeof want, "nbd://127.0.0.1:%s/", port);
  check_uri (h, want, 2 * MiB, "sockaddr_in, connecting");
  finish (h, "sockaddr_in");
  check_uri (h, want, 2 * MiB, "sockaddr_in, ready");
  nbd_close (h);

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  nbd_set_export_name (h, "a b/c?d#e%f");
  is_int (nbd_aio_connect (h, (struct sockaddr *) &sin, sizeof sin), 0,
          "nbd_aio_connect with an export name");
  snprintf (want, sizeof want, "nbd://127.0.0.1:%s/a%%20b/c%%3Fd%%23e%%25f", port);
  check_uri (h, want, 2 * MiB, "sockaddr_in, export name encoded");
  nbd_close (h);

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_aio_connect (h, (struct sockaddr *) &sun, sizeof sun), 0,
          "nbd_aio_connect to a struct sockaddr_un");
  snprintf (want, sizeof want, "nbd+unix:///?socket=%s", us.sock);
  finish (h, "sockaddr_un");
  check_uri (h, want, 2 * MiB, "sockaddr_un");
  nbd_close (h);

  /* ---- A connect that fails still names where it went ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_connect_unix (h, "/nonexistent/gnbd/sock"), -1,
          "nbd_connect_unix to a missing socket fails");
  {
    char *u = nbd_get_uri (h);

    is_str (u, "nbd+unix:///?socket=/nonexistent/gnbd/sock", "and nbd_get_uri names it");
    free (u);
  }
  nbd_close (h);

  /* ---- Host and port as given; URIs in their normal form ---- */
  h = nbd_create ();
  if (!h || nbd_connect_tcp (h, "127.0.0.1", port) == -1)
    bail_out ("nbd_connect_tcp: %s", nbd_get_error ());
  snprintf (want, sizeof want, "nbd://127.0.0.1:%s/", port);
  check_uri (h, want, 2 * MiB, "nbd_connect_tcp");
  nbd_close (h);

  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s", port);
  h = nbd_create ();
  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("nbd_connect_uri %s: %s", uri, nbd_get_error ());
  check_uri (h, want, 2 * MiB, "a URI without the slash");
  nbd_close (h);

  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/%%41bc%%2fd", port);
  h = nbd_create ();
  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("nbd_connect_uri %s: %s", uri, nbd_get_error ());
  snprintf (want, sizeof want, "nbd://127.0.0.1:%s/Abc/d", port);
  check_uri (h, want, 2 * MiB, "a percent-encoded export name");
  nbd_close (h);

  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s&x-gnbd-test=1", us.sock);
  h = nbd_create ();
  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("nbd_connect_uri %s: %s", uri, nbd_get_error ());
  snprintf (want, sizeof want, "nbd+unix:///?socket=%s", us.sock);
  check_uri (h, want, 2 * MiB, "an x- query parameter");
  nbd_close (h);

  /* ---- What the handle holds now ---- */
  snprintf (uri, sizeof uri, "nbd+unix:///x?socket=%s", us.sock);
  h = nbd_create ();
  if (!h || nbd_set_opt_mode (h, true) == -1 || nbd_connect_uri (h, uri) == -1)
    bail_out ("nbd_connect_uri in option mode: %s", nbd_get_error ());
  {
    char *u = nbd_get_uri (h);

    is_str (u, uri, "option mode: the URI names export x");
    free (u);
  }
  nbd_set_export_name (h, "y");
  snprintf (want, sizeof want, "nbd+unix:///y?socket=%s", us.sock);
  {
    char *u = nbd_get_uri (h);

    is_str (u, want, "option mode: export y, set while negotiating");
    free (u);
  }
  nbd_opt_abort (h);
  nbd_close (h);

  h = nbd_create ();
  if (!h || nbd_set_tls_username (h, "gnbd-bob") == -1 || nbd_connect_unix (h, us.sock) == -1)
    bail_out ("nbd_connect_unix: %s", nbd_get_error ());
  snprintf (want, sizeof want, "nbd+unix://gnbd-bob@/?socket=%s", us.sock);
  check_uri (h, want, 2 * MiB, "a TLS username set on the handle, no TLS");
  nbd_close (h);

  server_stop (&us);
  server_stop (&ts);
  return done_testing ();
}
