/* tls-notls: nbd_supports_tls tells the truth, and a build without TLS
 * (meson -Dtls=disabled) says so clearly: asking for TLS, by nbd_set_tls or
 * by an nbds URI, is ENOTSUP with a message that says the library was built
 * without it, while TLS disabled and the TLS file settings (which libnbd
 * allows "regardless of whether TLS is supported") still work, and so does
 * plaintext.  With TLS built in, the same calls succeed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *uri;
  int have, rc;

  tap_timeout (60);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  have = nbd_supports_tls (h);
  ok (have == 0 || have == 1, "nbd_supports_tls is a boolean (%d)", have);
  diag ("this build %s TLS", have ? "has" : "does not have");

  rc = nbd_set_tls (h, 3);
  is_int (rc, -1, "set_tls(3) is refused");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_set_tls (h, LIBNBD_TLS_DISABLE), 0, "set_tls DISABLE always works");
  is_int (nbd_set_tls_certificates (h, "/nonexistent"), 0, "set_tls_certificates works");
  is_int (nbd_set_tls_psk_file (h, "/nonexistent"), 0, "set_tls_psk_file works");
  is_int (nbd_set_tls_username (h, "alice"), 0, "set_tls_username works");
  is_int (nbd_set_tls_verify_peer (h, false), 0, "set_tls_verify_peer works");
  for (int tls = LIBNBD_TLS_ALLOW; tls <= LIBNBD_TLS_REQUIRE; tls++) {
    rc = nbd_set_tls (h, tls);
    if (have) {
      is_int (rc, 0, "set_tls(%d) works with TLS built in", tls);
      is_int (nbd_get_tls (h), tls, "get_tls says %d", tls);
    }
    else {
      is_int (rc, -1, "set_tls(%d) is refused without TLS", tls);
      is_errno (ENOTSUP, "with ENOTSUP");
      ok (strncmp (errmsg (), "nbd_set_tls: ", 13) == 0 &&
          strstr (errmsg (), "without TLS support") != NULL, "and says why: %s", errmsg ());
      is_int (nbd_get_tls (h), LIBNBD_TLS_DISABLE, "get_tls still says DISABLE");
    }
  }
  nbd_close (h);

  if (server_start_nbdkit (&srv, (const char *const[]) { "memory", "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  if (asprintf (&uri, "nbds+unix:///?socket=%s", srv.sock) == -1)
    bail_out ("asprintf");
  h = nbd_create ();
  rc = nbd_connect_uri (h, uri);
  is_int (rc, -1, "an nbds URI to a plaintext server fails either way");
  if (have)
    is_errno (ENOTSUP, "with TLS built in: the server refused STARTTLS (ENOTSUP)");
  else {
    is_errno (ENOTSUP, "without TLS: ENOTSUP");
    ok (strstr (errmsg (), "without TLS support") != NULL, "and says why: %s", errmsg ());
    is_int (nbd_aio_is_created (h), 1, "without TLS: nothing was connected");
  }
  nbd_close (h);
  free (uri);

  h = nbd_create ();
  nbd_set_tls (h, LIBNBD_TLS_ALLOW);      /* refused without TLS: stays DISABLE */
  rc = nbd_connect_uri (h, srv.uri);
  is_int (rc, 0, "plaintext nbd+unix works (%s)", errmsg ());
  is_int (nbd_get_tls_negotiated (h), 0, "without TLS negotiated");
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "shutdown (%s)", errmsg ());
  nbd_close (h);
  server_stop (&srv);
  return done_testing ();
}
