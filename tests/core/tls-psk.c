/* tls-psk: TLS with a pre-shared key works against nbdkit and qemu-nbd, over
 * Unix sockets and TCP, with the username from nbd_set_tls_username, from
 * $LOGNAME (the default) or from the URI's user@, and the PSK file from
 * nbd_set_tls_psk_file or the URI's tls-psk-file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

#define SIZE (4 * 1024 * 1024)

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

/* A session that works: TLS on, data through it, a clean end. */
static void
check_session (struct nbd_handle *h, const char *what)
{
  char *w = malloc (SIZE), *r = malloc (SIZE);
  int rc;

  if (!w || !r)
    bail_out ("malloc");
  for (size_t i = 0; i < SIZE; i++)
    w[i] = (char) (i ^ (i >> 9) ^ 0x5a);
  is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", what);
  is_int (nbd_get_structured_replies_negotiated (h), 1, "%s: structured replies", what);
  rc = nbd_pwrite (h, w, SIZE, 0, 0);
  is_int (rc, 0, "%s: pwrite (%s)", what, errmsg ());
  rc = nbd_pread (h, r, SIZE, 0, 0);
  is_int (rc, 0, "%s: pread (%s)", what, errmsg ());
  ok (memcmp (w, r, SIZE) == 0, "%s: data verified", what);
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "%s: shutdown (%s)", what, errmsg ());
  free (w);
  free (r);
}

static void
by_setters (const struct test_server *srv, const char *what, int tls, const char *user)
{
  struct nbd_handle *h = nbd_create ();
  int rc;

  if (!h)
    bail_out ("nbd_create: %s", errmsg ());
  must (nbd_set_tls (h, tls));
  is_int (nbd_set_tls_psk_file (h, m.psk_file), 0, "%s: set_tls_psk_file", what);
  if (user)
    is_int (nbd_set_tls_username (h, user), 0, "%s: set_tls_username", what);
  if (srv->export_name && *srv->export_name)
    must (nbd_set_export_name (h, srv->export_name));
  if (srv->sock)
    rc = nbd_connect_unix (h, srv->sock);
  else {
    char port[16];

    snprintf (port, sizeof port, "%d", srv->tcp_port);
    rc = nbd_connect_tcp (h, "localhost", port);
  }
  if (is_int (rc, 0, "%s: connect (%s)", what, errmsg ()))
    check_session (h, what);
  nbd_close (h);
}

static void
by_uri (const struct test_server *srv, const char *what, const char *user)
{
  struct nbd_handle *h = nbd_create ();
  char *query, *uri, *got;
  int rc;

  if (!h || asprintf (&query, "tls-psk-file=%s", m.psk_file) == -1)
    bail_out ("nbd_create or asprintf");
  if (!(uri = tls_uri (srv, NULL, user, NULL, srv->export_name, query)))
    bail_out ("tls_uri");
  must (nbd_set_uri_allow_local_file (h, true));
  rc = nbd_connect_uri (h, uri);
  if (is_int (rc, 0, "%s: connect_uri %s (%s)", what, uri, errmsg ())) {
    got = nbd_get_tls_username (h);
    is_str (got, "alice", "%s: the URI's user is the TLS username", what);
    free (got);
    check_session (h, what);
  }
  nbd_close (h);
  free (uri);
  free (query);
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *arg, *obj, *image, *got;
  int rc;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");

  /* The default username is $LOGNAME. */
  setenv ("LOGNAME", "alice", 1);
  if (!(h = nbd_create ()))
    bail_out ("nbd_create: %s", errmsg ());
  got = nbd_get_tls_username (h);
  is_str (got, "alice", "the default TLS username is $LOGNAME");
  free (got);
  is_int (nbd_set_tls_username (h, "bob"), 0, "set_tls_username");
  got = nbd_get_tls_username (h);
  is_str (got, "bob", "get_tls_username returns what was set");
  free (got);
  nbd_close (h);

  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1)
    bail_out ("asprintf");
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=16M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  by_setters (&srv, "nbdkit unix, username set", LIBNBD_TLS_REQUIRE, "alice");
  by_setters (&srv, "nbdkit unix, username from $LOGNAME", LIBNBD_TLS_REQUIRE, NULL);
  by_setters (&srv, "nbdkit unix, TLS allowed (not required)", LIBNBD_TLS_ALLOW, "alice");
  by_uri (&srv, "nbdkit nbds+unix://alice@", "alice");

  /* No username at all: the PSK cannot be used. */
  unsetenv ("LOGNAME");
  if (!(h = nbd_create ()))
    bail_out ("nbd_create: %s", errmsg ());
  ok (nbd_get_tls_username (h) == NULL, "no $LOGNAME: no default username");
  is_errno (EINVAL, "get_tls_username says EINVAL");
  /* Else the connect below would fail for another reason. */
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  must (nbd_set_tls_psk_file (h, m.psk_file));
  rc = nbd_connect_unix (h, srv.sock);
  is_int (rc, -1, "PSK without any username is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (strstr (errmsg (), "no username for the PSK") != NULL, "and says why: %s", errmsg ());
  nbd_close (h);
  setenv ("LOGNAME", "alice", 1);
  is_int (server_stop (&srv), 0, "nbdkit unix stopped");

  if (server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                             "size=16M", NULL }) == -1)
    bail_out ("cannot start nbdkit on TCP");
  by_setters (&srv, "nbdkit tcp", LIBNBD_TLS_REQUIRE, "alice");
  by_uri (&srv, "nbdkit nbds://alice@localhost", "alice");
  is_int (server_stop (&srv), 0, "nbdkit tcp stopped");
  free (arg);

  image = image_create_raw (16 * 1024 * 1024);
  if (!image || asprintf (&obj, "tls-creds-psk,id=tls0,dir=%s,endpoint=server", m.psk_dir) == -1)
    bail_out ("setting up qemu-nbd");
  if (server_start_qemu_nbd (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                           "tls0", "-f", "raw", "-x", "disk",
                                                           image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  by_setters (&srv, "qemu-nbd unix", LIBNBD_TLS_REQUIRE, "alice");
  by_uri (&srv, "qemu-nbd nbds+unix://alice@", "alice");
  is_int (server_stop (&srv), 0, "qemu-nbd unix stopped");
  if (server_start_qemu_nbd_tcp (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                               "tls0", "-f", "raw", "-x",
                                                               "disk", image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd on TCP");
  by_uri (&srv, "qemu-nbd nbds://alice@localhost", "alice");
  is_int (server_stop (&srv), 0, "qemu-nbd tcp stopped");
  free (obj);
  free (image);
  return done_testing ();
}
