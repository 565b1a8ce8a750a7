/* tls-x509: TLS with X.509 certificates works against nbdkit and qemu-nbd,
 * over Unix sockets and TCP, through the setters and through nbds URIs, and
 * everything negotiated runs over TLS (structured replies, meta contexts,
 * reads, writes, block status, a clean shutdown).
 *
 * Certificates are fresh from tls-material (certtool); the server's names
 * localhost and 127.0.0.1, so both host forms pass the name check.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

#define EXPORT_SIZE (16 * 1024 * 1024)
#define IO_SIZE (1024 * 1024 + 4096)

static struct tls_material m;

/* Make the call, then check its result; the error is read after the call
 * (an argument list has no order of evaluation). */
static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}
#define is_call(want, call, fmt, ...)                                    \
  ({                                                                     \
    int64_t r_ = (call);                                                 \
    is_int (r_, (want), fmt " (%s)", ##__VA_ARGS__, errmsg ());          \
  })

static int
extent_cb (void *data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr, int *error)
{
  int *calls = data;

  if (strcmp (metacontext, "base:allocation") == 0 && nr >= 2)
    (*calls)++;
  return 0;
}

static void
fill (char *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (char) ((i * 2654435761u) >> 13) ^ (char) seed;
}

/* What every successful TLS connection must show. */
static void
check_session (struct nbd_handle *h, const char *what)
{
  char *wbuf = malloc (IO_SIZE), *rbuf = malloc (IO_SIZE);
  int calls = 0;

  is_int (nbd_get_tls_negotiated (h), 1, "%s: nbd_get_tls_negotiated", what);
  is_str (nbd_get_protocol (h), "newstyle-fixed", "%s: protocol", what);
  is_int (nbd_get_structured_replies_negotiated (h), 1,
          "%s: structured replies negotiated again after STARTTLS", what);
  is_int (nbd_can_meta_context (h, "base:allocation"), 1,
          "%s: base:allocation negotiated after STARTTLS", what);
  is_int (nbd_get_size (h), EXPORT_SIZE, "%s: export size", what);

  fill (wbuf, IO_SIZE, 7);
  is_call (0, nbd_pwrite (h, wbuf, IO_SIZE, 4096, 0), "%s: pwrite of %d bytes", what, IO_SIZE);
  memset (rbuf, 0, IO_SIZE);
  is_call (0, nbd_pread (h, rbuf, IO_SIZE, 4096, 0), "%s: pread", what);
  ok (memcmp (rbuf, wbuf, IO_SIZE) == 0, "%s: the data read back is the data written", what);
  is_call (0, nbd_block_status (h, EXPORT_SIZE, 0,
                                (nbd_extent_callback) { .callback = extent_cb,
                                                        .user_data = &calls }, 0),
           "%s: block_status", what);
  is_int (calls, 1, "%s: one base:allocation extent list", what);
  is_call (0, nbd_shutdown (h, 0), "%s: nbd_shutdown", what);
  is_int (nbd_aio_is_closed (h), 1, "%s: closed cleanly after shutdown", what);
  is_int (nbd_get_tls_negotiated (h), 1, "%s: still reports TLS once closed", what);
  free (wbuf);
  free (rbuf);
}

static struct nbd_handle *
new_handle (void)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (nbd_add_meta_context (h, "base:allocation") == -1)
    bail_out ("nbd_add_meta_context: %s", nbd_get_error ());
  return h;
}

static void
test_setters (struct test_server *srv, const char *what, const char *certdir)
{
  struct nbd_handle *h = new_handle ();

  is_int (nbd_set_tls (h, LIBNBD_TLS_REQUIRE), 0, "%s: set_tls REQUIRE", what);
  is_int (nbd_get_tls (h), LIBNBD_TLS_REQUIRE, "%s: get_tls", what);
  is_int (nbd_set_tls_certificates (h, certdir), 0, "%s: set_tls_certificates", what);
  if (srv->sock) {
    if (!is_call (0, nbd_connect_unix (h, srv->sock), "%s: connect_unix", what))
      goto out;
  }
  else {
    char port[16];

    snprintf (port, sizeof port, "%d", srv->tcp_port);
    if (!is_call (0, nbd_connect_tcp (h, "localhost", port), "%s: connect_tcp localhost", what))
      goto out;
  }
  check_session (h, what);
out:
  nbd_close (h);
}

static void
test_uri (struct test_server *srv, const char *what, const char *host, const char *certdir)
{
  struct nbd_handle *h = new_handle ();
  char *query, *uri;

  if (asprintf (&query, "tls-certificates=%s", certdir) == -1)
    bail_out ("asprintf");
  uri = tls_uri (srv, NULL, NULL, host, srv->export_name, query);
  is_int (nbd_set_uri_allow_local_file (h, true), 0, "%s: allow local files", what);
  if (is_call (0, nbd_connect_uri (h, uri), "%s: connect_uri %s", what, uri)) {
    is_int (nbd_get_tls (h), LIBNBD_TLS_REQUIRE, "%s: an nbds URI requires TLS", what);
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
  char *image, *server_arg, *qemu_obj, *qemu_obj_noverify;

  tap_timeout (180);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (!nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS (tls-notls tests that build)");
  is_int (nbd_get_tls (h), LIBNBD_TLS_DISABLE, "TLS is disabled by default");
  is_int (nbd_get_tls_verify_peer (h), 1, "peer verification is on by default");
  nbd_close (h);

  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&server_arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      asprintf (&qemu_obj, "tls-creds-x509,id=tls0,dir=%s,endpoint=server", m.server_dir) == -1 ||
      asprintf (&qemu_obj_noverify, "tls-creds-x509,id=tls0,dir=%s,endpoint=server,"
                "verify-peer=off", m.server_dir) == -1)
    bail_out ("asprintf");

  /* nbdkit, Unix socket: CA only (no client certificate) and with one. */
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", server_arg,
                                                         "memory", "size=16M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  test_setters (&srv, "nbdkit unix, CA only", m.ca_only_dir);
  test_setters (&srv, "nbdkit unix, with a client certificate", m.client_dir);
  test_uri (&srv, "nbdkit nbds+unix URI", NULL, m.client_dir);
  server_stop (&srv);

  /* nbdkit, TCP: the host name (and the IP address) is in the certificate. */
  if (server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", server_arg,
                                                             "memory", "size=16M", NULL }) == -1)
    bail_out ("cannot start nbdkit on TCP");
  test_setters (&srv, "nbdkit tcp localhost", m.ca_only_dir);
  test_uri (&srv, "nbdkit nbds://localhost", "localhost", m.ca_only_dir);
  test_uri (&srv, "nbdkit nbds://127.0.0.1", "127.0.0.1", m.client_dir);
  server_stop (&srv);

  /* qemu-nbd: its tls-creds-x509 wants a client certificate by default. */
  image = image_create_raw (EXPORT_SIZE);
  if (!image)
    bail_out ("cannot create an image");
  if (server_start_qemu_nbd (&srv, (const char *const[]) { "--object", qemu_obj,
                                                           "--tls-creds", "tls0", "-f", "raw",
                                                           "-x", "disk", image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  {
    struct nbd_handle *q = new_handle ();

    must (nbd_set_tls (q, LIBNBD_TLS_REQUIRE));
    must (nbd_set_tls_certificates (q, m.client_dir));
    must (nbd_set_export_name (q, "disk"));
    if (is_call (0, nbd_connect_unix (q, srv.sock), "qemu-nbd unix: connect"))
      check_session (q, "qemu-nbd unix");
    nbd_close (q);
  }
  test_uri (&srv, "qemu-nbd nbds+unix URI", NULL, m.client_dir);
  server_stop (&srv);
  if (server_start_qemu_nbd_tcp (&srv, (const char *const[]) { "--object", qemu_obj_noverify,
                                                               "--tls-creds", "tls0", "-f",
                                                               "raw", "-x", "disk", image,
                                                               NULL }) == -1)
    bail_out ("cannot start qemu-nbd on TCP");
  test_uri (&srv, "qemu-nbd verify-peer=off, nbds://localhost, CA only", "localhost",
            m.ca_only_dir);
  server_stop (&srv);

  free (image);
  free (server_arg);
  free (qemu_obj);
  free (qemu_obj_noverify);
  return done_testing ();
}
