/* connect-uri: nbd_connect_uri and the handle's URI policy.
 *
 * Proves, against nbdkit memory 1M (Unix and TCP) and qemu-nbd -x:
 *  - nbd+unix:///?socket=PATH and nbd://127.0.0.1:PORT/ connect, and get_uri
 *    gives back the URI connected with (without x- query parameters);
 *  - the export name comes from the URI path (percent-decoded), and a name
 *    the server does not have fails the connect;
 *  - bad URIs fail with EINVAL and a message naming the problem, leaving
 *    the handle newly created; an unknown query parameter is EINVAL (libnbd
 *    1.14 ignores it: libnbd-core refuses on purpose);
 *  - nbds:// and nbds+unix:// to this non-TLS nbdkit are ENOTSUP with a
 *    message about TLS: refused at once in a build without TLS, by the
 *    server (handle dead, as libnbd 1.14) in one with it;
 *  - nbd_set_uri_allow_transports: a disallowed transport is EPERM;
 *  - nbd_set_uri_allow_tls: DISABLE refuses nbds, REQUIRE refuses nbd (EPERM);
 *  - tls-psk-file / tls-certificates are refused with EPERM unless
 *    nbd_set_uri_allow_local_file (true);
 *  - after a refusal the handle is still newly created and can connect.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static struct test_server nk, nkt, qn;
static bool have_tls;                   /* nbd_supports_tls */
static char unix_uri[600], tcp_uri[128], nbds_unix[600], nbds_tcp[128];

static bool
error_from (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  if (msg && strncmp (msg, call, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
    return true;
  diag ("message '%s' does not start with '%s: '", msg ? msg : "(null)", call);
  return false;
}

static bool
error_mentions (const char *word)
{
  const char *msg = nbd_get_error ();

  if (msg && strstr (msg, word))
    return true;
  diag ("message '%s' does not mention '%s'", msg ? msg : "(null)", word);
  return false;
}

/* nbd_connect_uri (@uri) on a fresh handle (after @setup) fails with @err,
 * the message starting "nbd_connect_uri: " and mentioning @word; the handle
 * stays newly created (refused before connecting) or is dead (@dead: the
 * server refused). */
static void
refused_in (const char *uri, int err, const char *word, void (*setup) (struct nbd_handle *),
            bool dead, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  int r;

  if (setup)
    setup (h);
  r = nbd_connect_uri (h, uri);
  if (!ok (r == -1 && nbd_get_errno () == err && error_from ("nbd_connect_uri") &&
           error_mentions (word),
           "%s: refused with %s, the message mentioning \"%s\"", what, strerrorname_np (err),
           word))
    diag ("uri=%s r=%d errno=%d message=%s", uri, r, nbd_get_errno (),
          nbd_get_error () ? nbd_get_error () : "(null)");
  if (dead)
    ok (nbd_aio_is_dead (h), "%s: the handle is dead (the server refused)", what);
  else
    ok (nbd_aio_is_created (h), "%s: the handle is still newly created", what);
  nbd_close (h);
}

static void
refused (const char *uri, int err, const char *word, void (*setup) (struct nbd_handle *),
         const char *what)
{
  refused_in (uri, err, word, setup, false, what);
}

/* A fresh handle (after @setup) connects with @uri and sees @size; its
 * nbd_get_uri is then @want. */
static void
accepted_as (const char *uri, const char *want, int64_t size,
             void (*setup) (struct nbd_handle *), const char *what)
{
  struct nbd_handle *h = nbd_create ();
  char *got;

  if (setup)
    setup (h);
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: nbd_connect_uri works", what))
    diag ("uri=%s: %s", uri, nbd_get_error ());
  is_int (nbd_get_size (h), size, "%s: size", what);
  got = nbd_get_uri (h);
  is_str (got, want, "%s: nbd_get_uri gives %s", what, want);
  free (got);
  nbd_close (h);
}

static void
accepted (const char *uri, int64_t size, void (*setup) (struct nbd_handle *), const char *what)
{
  accepted_as (uri, uri, size, setup, what);
}

static void only_tcp (struct nbd_handle *h) { nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_TCP); }
static void only_unix (struct nbd_handle *h) { nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX); }
static void only_vsock (struct nbd_handle *h) { nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_VSOCK); }
static void tls_disable (struct nbd_handle *h) { nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE); }
static void tls_require (struct nbd_handle *h) { nbd_set_uri_allow_tls (h, LIBNBD_TLS_REQUIRE); }
static void local_files (struct nbd_handle *h) { nbd_set_uri_allow_local_file (h, true); }

static char *__attribute__ ((format (printf, 1, 2)))
fmt (const char *fs, ...)
{
  static char bufs[8][700];
  static int i;
  char *b = bufs[i++ % 8];
  va_list ap;

  va_start (ap, fs);
  vsnprintf (b, sizeof bufs[0], fs, ap);
  va_end (ap);
  return b;
}

static void
test_good (void)
{
  struct nbd_handle *h;
  char *name;

  accepted (unix_uri, 1048576, NULL, "nbd+unix:///?socket=");
  accepted (tcp_uri, 1048576, NULL, "nbd://127.0.0.1:PORT/");
  accepted (unix_uri, 1048576, only_unix, "unix URI with only unix allowed");
  accepted (tcp_uri, 1048576, only_tcp, "tcp URI with only tcp allowed");
  accepted (unix_uri, 1048576, tls_disable, "nbd+unix with URI TLS disabled");

  /* The export name comes from the URI. */
  h = nbd_create ();
  is_int (nbd_connect_uri (h, fmt ("nbd+unix:///my%%20disk?socket=%s", qn.sock)), 0,
          "nbd_connect_uri to qemu-nbd -x 'my disk' (percent-encoded)");
  name = nbd_get_export_name (h);
  is_str (name, "my disk", "the export name was taken from the URI and decoded");
  free (name);
  is_int (nbd_get_size (h), 3 * 1024 * 1024, "qemu-nbd's export is 3M");
  nbd_close (h);

  h = nbd_create ();
  must (nbd_set_export_name (h, "my disk"));
  is_int (nbd_connect_uri (h, fmt ("nbd+unix:///?socket=%s", qn.sock)), -1,
          "a URI with no path names export \"\", overriding nbd_set_export_name");
  name = nbd_get_export_name (h);
  is_str (name, "", "the export name is now \"\"");
  free (name);
  ok (error_from ("nbd_connect_uri"), "the server's refusal names nbd_connect_uri");
  nbd_close (h);

  h = nbd_create ();
  is_int (nbd_connect_uri (h, fmt ("nbd+unix:///other?socket=%s", qn.sock)), -1,
          "an export the server does not have fails the connect");
  ok (error_from ("nbd_connect_uri"), "naming nbd_connect_uri");
  ok (nbd_aio_is_dead (h), "and the handle is dead");
  nbd_close (h);

  /* x- query parameters are for experiments and ignored (doc/uri.md). */
  /* As libnbd, nbd_get_uri rebuilds the URI, without them. */
  accepted_as (fmt ("%s&x-test=1", unix_uri), unix_uri, 1048576, NULL,
               "an x- query parameter is ignored");
}

static void
test_bad (void)
{
  refused ("garbage", EINVAL, "scheme", NULL, "no scheme");
  refused ("http://example.com/", EINVAL, "scheme", NULL, "unknown scheme http");
  refused ("nbd+unix:///", EINVAL, "socket", NULL, "nbd+unix without socket=");
  refused ("nbd://127.0.0.1:99999/", EINVAL, "port", NULL, "port 99999");
  refused ("nbd://127.0.0.1:abc/", EINVAL, "port", NULL, "port abc");
  refused ("nbd:///", EINVAL, "host", NULL, "nbd:// without a host");
  refused (fmt ("nbd://127.0.0.1/?socket=%s", nk.sock), EINVAL, "socket", NULL,
           "socket= on a TCP URI");
  refused (fmt ("nbd+unix:///%%zz?socket=%s", nk.sock), EINVAL, "percent", NULL,
           "bad percent-encoding");
  /* libnbd-core differs from libnbd 1.14 here on purpose: 1.14 ignores it. */
  refused (fmt ("%s&foo=bar", unix_uri), EINVAL, "foo", NULL, "unknown query parameter foo");
}

/* Without TLS in the build nbds is refused before connecting (ENOTSUP);
 * with it, the handle requires TLS, which this nbdkit refuses: ENOTSUP
 * again, and the handle is dead (as libnbd 1.14). */
static void
test_tls (void)
{
  refused_in (nbds_unix, ENOTSUP, "TLS", NULL, have_tls, "nbds+unix:// to a server without TLS");
  refused_in (nbds_tcp, ENOTSUP, "TLS", NULL, have_tls, "nbds:// to a server without TLS");
  refused (nbds_unix, EPERM, "TLS", tls_disable, "nbds+unix with URI TLS disabled");
  refused (nbds_tcp, EPERM, "TLS", tls_disable, "nbds with URI TLS disabled");
  refused (unix_uri, EPERM, "TLS", tls_require, "nbd+unix with URI TLS required");
  refused (tcp_uri, EPERM, "TLS", tls_require, "nbd with URI TLS required");
}

static void
test_transports (void)
{
  refused (unix_uri, EPERM, "unix", only_tcp, "unix URI with only tcp allowed");
  refused (tcp_uri, EPERM, "tcp", only_unix, "tcp URI with only unix allowed");
  refused (unix_uri, EPERM, "unix", only_vsock, "unix URI with only vsock allowed");
  refused ("nbd+vsock://2:10809/", EPERM, "vsock", only_unix, "vsock URI with only unix allowed");
}

static void
test_local_files (void)
{
  refused (fmt ("%s&tls-psk-file=/tmp/keys.psk", nbds_unix), EPERM, "tls-psk-file", NULL,
           "tls-psk-file is refused by default");
  refused (fmt ("%s&tls-psk-file=/tmp/keys.psk", unix_uri), EPERM, "tls-psk-file", NULL,
           "tls-psk-file on a plain URI is refused by default too");
  refused (fmt ("%s&tls-certificates=/tmp", nbds_unix), EPERM, "tls-certificates", NULL,
           "tls-certificates is refused by default");
  /* Allowed, it gets as far as TLS: missing from the build, or refused by
   * this server. */
  refused_in (fmt ("%s&tls-psk-file=/tmp/keys.psk", nbds_unix), ENOTSUP, "TLS", local_files,
              have_tls, "tls-psk-file allowed: then TLS itself fails");
  refused (fmt ("%s&tls-psk-file=/tmp/keys.psk", unix_uri), EINVAL, "tls-psk-file", local_files,
           "tls-psk-file allowed, but the scheme has no TLS");
}

static void
test_refusal_then_connect (void)
{
  struct nbd_handle *h = nbd_create ();

  must (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_UNIX));
  is_int (nbd_connect_uri (h, tcp_uri), -1, "a disallowed URI is refused");
  is_errno (EPERM, "EPERM");
  is_int (nbd_connect_uri (h, "nonsense"), -1, "a bad URI is refused");
  is_errno (EINVAL, "EINVAL");
  is_int (nbd_connect_uri (h, unix_uri), 0, "the same handle then connects with an allowed one");
  is_int (nbd_get_size (h), 1048576, "and works");
  is_int (nbd_connect_uri (h, unix_uri), -1, "connecting it twice fails");
  is_errno (EINVAL, "with EINVAL");
  nbd_close (h);
}

int
main (void)
{
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  {
    struct nbd_handle *h = nbd_create ();

    have_tls = nbd_supports_tls (h);
    nbd_close (h);
  }
  img = image_create_raw (3 * 1024 * 1024);
  if (server_start_nbdkit (&nk, (const char *const[]) { "memory", "1M", NULL }) == -1 ||
      server_start_nbdkit_tcp (&nkt, (const char *const[]) { "memory", "1M", NULL }) == -1 ||
      !img ||
      server_start_qemu_nbd (&qn, (const char *const[]) { "-f", "raw", "-x", "my disk", img,
                                                          NULL }) == -1)
    bail_out ("cannot start the servers");
  snprintf (unix_uri, sizeof unix_uri, "nbd+unix:///?socket=%s", nk.sock);
  snprintf (nbds_unix, sizeof nbds_unix, "nbds+unix:///?socket=%s", nk.sock);
  snprintf (tcp_uri, sizeof tcp_uri, "nbd://127.0.0.1:%d/", nkt.tcp_port);
  snprintf (nbds_tcp, sizeof nbds_tcp, "nbds://127.0.0.1:%d/", nkt.tcp_port);

  test_good ();
  test_bad ();
  test_tls ();
  test_transports ();
  test_local_files ();
  test_refusal_then_connect ();

  server_stop (&qn);
  server_stop (&nkt);
  server_stop (&nk);
  free (img);
  return done_testing ();
}
