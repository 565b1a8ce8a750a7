/* tls-uri: TLS through URIs.  nbds:// and nbds+unix:// require TLS; their
 * tls-certificates and tls-psk-file name local files, refused (EPERM) unless
 * nbd_set_uri_allow_local_file; user@ is the TLS username; the URI TLS
 * policy (nbd_set_uri_allow_tls) is applied; nbd:// keeps the handle's own
 * TLS setting, so TLS allowed on the handle still upgrades, and nbd_get_uri
 * then says nbds (as libnbd: rebuilt from the handle).  Unlike libnbd
 * 1.14, a TLS file parameter on a plaintext scheme is an error (EINVAL), not
 * silently ignored.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The URI must be refused before any connection is made. */
static void
refused (const char *uri, bool allow_local, int allow_tls, int err, const char *word,
         const char *what)
{
  struct nbd_handle *h = nbd_create ();
  int rc;

  must (nbd_set_uri_allow_local_file (h, allow_local));
  must (nbd_set_uri_allow_tls (h, allow_tls));
  rc = nbd_connect_uri (h, uri);
  if (is_int (rc, -1, "%s: refused", what)) {
    is_errno (err, "%s: errno", what);
    ok (strncmp (errmsg (), "nbd_connect_uri: ", 17) == 0 && strstr (errmsg (), word),
        "%s: the message says \"%s\": %s", what, word, errmsg ());
  }
  nbd_close (h);
}

/* @want_uri: what nbd_get_uri must then say (NULL: @uri itself).  As
 * libnbd's, it is rebuilt from the handle: nbds once TLS is in use, with
 * the handle's TLS files. */
static void
connects (const char *uri, const char *want_uri, int tls_before, int want_tls,
          const char *want_user, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  char *got;
  int rc;

  must (nbd_set_uri_allow_local_file (h, true));
  must (nbd_set_tls (h, tls_before));
  must (nbd_set_tls_certificates (h, m.client_dir));
  rc = nbd_connect_uri (h, uri);
  if (is_int (rc, 0, "%s: connects (%s)", what, errmsg ())) {
    is_int (nbd_get_tls_negotiated (h), want_tls, "%s: TLS negotiated", what);
    if (want_tls)
      is_int (nbd_get_tls (h), tls_before == LIBNBD_TLS_ALLOW && strncmp (uri, "nbds", 4)
                               ? LIBNBD_TLS_ALLOW : LIBNBD_TLS_REQUIRE,
              "%s: get_tls", what);
    got = nbd_get_uri (h);
    is_str (got, want_uri ? want_uri : uri, "%s: nbd_get_uri", what);
    free (got);
    if (want_user) {
      got = nbd_get_tls_username (h);
      is_str (got, want_user, "%s: the TLS username comes from user@", what);
      free (got);
    }
    rc = nbd_shutdown (h, 0);
    is_int (rc, 0, "%s: shutdown (%s)", what, errmsg ());
  }
  nbd_close (h);
}

int
main (void)
{
  struct test_server x509, psk;
  struct nbd_handle *h;
  char *arg, *q, *uri, *want, *spaced, *spaced_q;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      server_start_nbdkit (&x509, (const char *const[]) { "--tls=require", arg, "memory",
                                                          "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  free (arg);
  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1 ||
      server_start_nbdkit (&psk, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  free (arg);

  /* Local files need permission. */
  if (asprintf (&q, "tls-certificates=%s", m.client_dir) == -1)
    bail_out ("asprintf");
  uri = tls_uri (&x509, NULL, NULL, NULL, "", q);
  refused (uri, false, LIBNBD_TLS_ALLOW, EPERM, "nbd_set_uri_allow_local_file",
           "tls-certificates without allow_local_file");
  h = nbd_create ();
  nbd_connect_uri (h, uri);
  is_int (nbd_aio_is_created (h), 1, "a refused URI leaves the handle as it was");
  nbd_close (h);
  connects (uri, NULL, LIBNBD_TLS_DISABLE, 1, NULL, "tls-certificates allowed");
  free (uri);
  free (q);

  if (asprintf (&q, "tls-psk-file=%s", m.psk_file) == -1)
    bail_out ("asprintf");
  uri = tls_uri (&psk, NULL, "alice", NULL, "", q);
  refused (uri, false, LIBNBD_TLS_ALLOW, EPERM, "tls-psk-file",
           "tls-psk-file without allow_local_file");
  free (q);
  /* The handle's certificate directory (set by connects) is in the URI
   * given back too. */
  if (asprintf (&q, "tls-certificates=%s&tls-psk-file=%s", m.client_dir, m.psk_file) == -1)
    bail_out ("asprintf");
  want = tls_uri (&psk, NULL, "alice", NULL, "", q);
  connects (uri, want, LIBNBD_TLS_DISABLE, 1, "alice", "tls-psk-file allowed, alice@");
  free (want);
  free (uri);
  free (q);

  /* A percent-encoded directory name (a space) is decoded. */
  if (asprintf (&spaced, "%s/with space", m.dir) == -1 || symlink (m.client_dir, spaced) == -1 ||
      asprintf (&spaced_q, "tls-certificates=%s/with%%20space", m.dir) == -1)
    bail_out ("cannot make a directory name with a space");
  uri = tls_uri (&x509, NULL, NULL, NULL, "", spaced_q);
  connects (uri, NULL, LIBNBD_TLS_DISABLE, 1, NULL, "tls-certificates percent-encoded");
  free (uri);

  /* The handle's URI TLS policy. */
  uri = tls_uri (&x509, NULL, NULL, NULL, "", NULL);
  refused (uri, true, LIBNBD_TLS_DISABLE, EPERM, "TLS", "nbds with uri_allow_tls DISABLE");
  free (uri);
  uri = tls_uri (&x509, "nbd", NULL, NULL, "", NULL);
  refused (uri, true, LIBNBD_TLS_REQUIRE, EPERM, "TLS", "nbd:// with uri_allow_tls REQUIRE");
  /* nbd:// keeps the handle's TLS setting: allowed, so it upgrades, and
   * the URI given back says so (nbds, with the certificates). */
  if (asprintf (&q, "tls-certificates=%s", m.client_dir) == -1)
    bail_out ("asprintf");
  want = tls_uri (&x509, NULL, NULL, NULL, "", q);
  connects (uri, want, LIBNBD_TLS_ALLOW, 1, NULL, "nbd:// with TLS allowed on the handle");
  free (want);
  free (uri);
  free (q);

  /* Deliberately stricter than libnbd 1.14, which ignores these. */
  uri = tls_uri (&x509, "nbd", NULL, NULL, "", spaced_q);
  refused (uri, true, LIBNBD_TLS_ALLOW, EINVAL, "does not use TLS",
           "tls-certificates on nbd+unix://");
  free (uri);

  server_stop (&x509);
  server_stop (&psk);
  free (spaced);
  free (spaced_q);
  return done_testing ();
}
