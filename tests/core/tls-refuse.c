/* tls-refuse: every TLS authentication failure ends the connection, with a
 * message that names the cause: a certificate for another host, an unknown
 * CA, the system's CAs when no certificates directory is set (libnbd 1.14
 * connected there: CVE-2024-7383), a wrong PSK key, a PSK user the server
 * does not know, a PSK file without the user, and credentials of the wrong
 * kind.  Turning verification off is the only way past a bad certificate.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

struct creds {
  const char *certdir;          /* NULL: none set */
  const char *psk_file;         /* NULL: X.509 */
  const char *user;
  bool no_verify;
  const char *host;             /* TCP host to connect to; NULL: the server's socket */
};

static struct nbd_handle *
attempt (const struct test_server *srv, const struct creds *c, int *r)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 ||
      (c->certdir && nbd_set_tls_certificates (h, c->certdir) == -1) ||
      (c->psk_file && nbd_set_tls_psk_file (h, c->psk_file) == -1) ||
      (c->user && nbd_set_tls_username (h, c->user) == -1) ||
      (c->no_verify && nbd_set_tls_verify_peer (h, false) == -1))
    bail_out ("setting up the handle: %s", nbd_get_error ());
  if (srv->sock)
    *r = nbd_connect_unix (h, srv->sock);
  else {
    char port[16];

    snprintf (port, sizeof port, "%d", srv->tcp_port);
    *r = nbd_connect_tcp (h, c->host ? c->host : "localhost", port);
  }
  return h;
}

/* The connection must fail with @err, a message from the connect call
 * containing every one of @words (NULL-terminated), and a dead handle. */
static void
refused (const struct test_server *srv, const struct creds *c, int err, const char *what,
         const char *const *words)
{
  int r;
  struct nbd_handle *h = attempt (srv, c, &r);
  const char *call = srv->sock ? "nbd_connect_unix: " : "nbd_connect_tcp: ";

  if (is_int (r, -1, "%s: refused", what)) {
    is_errno (err, "%s: errno", what);
    ok (strncmp (errmsg (), call, strlen (call)) == 0, "%s: the message names the call: %s",
        what, errmsg ());
    for (size_t i = 0; words[i]; i++)
      ok (strstr (errmsg (), words[i]) != NULL, "%s: the message says \"%s\"", what, words[i]);
    is_int (nbd_aio_is_dead (h), 1, "%s: the handle is dead", what);
  }
  nbd_close (h);
}

static void
accepted (const struct test_server *srv, const struct creds *c, const char *what)
{
  int r;
  struct nbd_handle *h = attempt (srv, c, &r);
  char buf[512];

  if (is_int (r, 0, "%s: connects (%s)", what, errmsg ())) {
    is_int (nbd_get_tls_negotiated (h), 1, "%s: over TLS", what);
    r = nbd_pread (h, buf, sizeof buf, 0, 0);
    is_int (r, 0, "%s: pread (%s)", what, errmsg ());
    r = nbd_shutdown (h, 0);
    is_int (r, 0, "%s: shutdown (%s)", what, errmsg ());
  }
  nbd_close (h);
}

#define WORDS(...) ((const char *const[]) { __VA_ARGS__, NULL })

int
main (void)
{
  struct test_server srv;
  char *arg, *home;
  struct nbd_handle *h;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  /* No default certificates directory may exist for the system-CA case. */
  if (asprintf (&home, "%s/empty-home", m.dir) == -1 || mkdir (home, 0700) == -1)
    bail_out ("cannot make an empty HOME");
  setenv ("HOME", home, 1);

  /* A certificate for another host name. */
  if (asprintf (&arg, "--tls-certificates=%s", m.wronghost_dir) == -1 ||
      server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                             "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  refused (&srv, &(struct creds) { .certdir = m.ca_only_dir }, EACCES,
           "certificate for wronghost.invalid, connecting to localhost",
           WORDS ("TLS handshake", "certificate", "does not match", "\"localhost\""));
  refused (&srv, &(struct creds) { .certdir = m.ca_only_dir, .host = "127.0.0.1" }, EACCES,
           "certificate for wronghost.invalid, connecting to 127.0.0.1",
           WORDS ("does not match", "\"127.0.0.1\""));
  accepted (&srv, &(struct creds) { .certdir = m.ca_only_dir, .no_verify = true },
            "wrong host name with verification off");
  server_stop (&srv);
  free (arg);
  /* Over a Unix socket there is no host name to check, only the chain. */
  if (asprintf (&arg, "--tls-certificates=%s", m.wronghost_dir) == -1 ||
      server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  accepted (&srv, &(struct creds) { .certdir = m.ca_only_dir },
            "Unix socket: a trusted certificate of any name");
  server_stop (&srv);
  free (arg);

  /* A server certificate from a CA we do not trust. */
  if (asprintf (&arg, "--tls-certificates=%s", m.otherca_dir) == -1 ||
      server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                             "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  refused (&srv, &(struct creds) { .certdir = m.ca_only_dir }, EACCES, "unknown CA",
           WORDS ("certificate", "issuer is unknown"));
  accepted (&srv, &(struct creds) { .certdir = m.ca_only_dir, .no_verify = true },
            "unknown CA with verification off");
  server_stop (&srv);
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  refused (&srv, &(struct creds) { .certdir = m.ca_only_dir }, EACCES,
           "unknown CA over a Unix socket", WORDS ("issuer is unknown"));
  server_stop (&srv);
  free (arg);

  /* No certificates directory: the system's CAs, and still verified. */
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                             "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  if (geteuid () == 0 && access ("/etc/pki/libnbd/ca-cert.pem", F_OK) == 0)
    skip ("/etc/pki/libnbd exists: the system-CA case cannot be tested as root");
  else {
    char *uri = tls_uri (&srv, NULL, NULL, "localhost", "", NULL);

    refused (&srv, &(struct creds) { 0 }, EACCES,
             "system CAs only (CVE-2024-7383: libnbd 1.14 connected)",
             WORDS ("issuer is unknown", "system's trusted CAs", "nbd_set_tls_certificates"));
    h = nbd_create ();
    is_int (nbd_connect_uri (h, uri), -1, "the URI %s is refused too", uri);
    is_errno (EACCES, "with EACCES");
    ok (strstr (errmsg (), "issuer is unknown") != NULL, "because the issuer is unknown: %s",
        errmsg ());
    nbd_close (h);
    free (uri);
    accepted (&srv, &(struct creds) { .no_verify = true },
              "system CAs with verification off");
  }
  /* ca-crl.pem in the directory: our CA revoked this server's certificate. */
  refused (&srv, &(struct creds) { .certdir = m.crl_dir }, EACCES,
           "server certificate revoked by ca-crl.pem", WORDS ("certificate", "revoked"));
  /* A directory without ca-cert.pem is a mistake, not the system's CAs. */
  refused (&srv, &(struct creds) { .certdir = home }, ENOENT,
           "certificates directory without ca-cert.pem", WORDS (home, "ca-cert.pem"));
  /* X.509 client against a PSK-only view: the wrong kind of credentials. */
  refused (&srv, &(struct creds) { .psk_file = m.psk_file, .user = "alice" }, EPROTO,
           "PSK client, X.509 server", WORDS ("TLS handshake"));
  server_stop (&srv);
  free (arg);

  /* PSK. */
  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1 ||
      server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  accepted (&srv, &(struct creds) { .psk_file = m.psk_file, .user = "alice" }, "right PSK");
  /* Servers just hang up on a bad PSK: the message names both causes. */
  refused (&srv, &(struct creds) { .psk_file = m.psk_wrongkey_file, .user = "alice" }, EACCES,
           "PSK with a wrong key", WORDS ("TLS handshake", "rejected the PSK", "\"alice\"",
                                          "its key", m.psk_wrongkey_file));
  refused (&srv, &(struct creds) { .psk_file = m.psk_bob_file, .user = "bob" }, EACCES,
           "PSK user the server does not know", WORDS ("TLS handshake", "rejected the PSK",
                                                       "does not know the user \"bob\"",
                                                       m.psk_bob_file));
  refused (&srv, &(struct creds) { .psk_file = m.psk_file, .user = "carol" }, EINVAL,
           "PSK file without the user", WORDS ("has no key for the user \"carol\"",
                                               m.psk_file));
  refused (&srv, &(struct creds) { .psk_file = "/nonexistent/keys.psk", .user = "alice" },
           ENOENT, "missing PSK file", WORDS ("/nonexistent/keys.psk"));
  refused (&srv, &(struct creds) { .certdir = m.client_dir }, ECONNRESET,
           "X.509 client, PSK server", WORDS ("TLS handshake", "closed the connection",
                                              "a PSK instead of certificates"));
  server_stop (&srv);
  free (arg);

  /* qemu-nbd with PSK: the same answers. */
  {
    char *image = image_create_raw (1 << 20), *obj;

    if (!image || asprintf (&obj, "tls-creds-psk,id=tls0,dir=%s,endpoint=server",
                            m.psk_dir) == -1 ||
        server_start_qemu_nbd (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                             "tls0", "-f", "raw", image,
                                                             NULL }) == -1)
      bail_out ("cannot start qemu-nbd");
    accepted (&srv, &(struct creds) { .psk_file = m.psk_file, .user = "alice" },
              "qemu-nbd: right PSK");
    refused (&srv, &(struct creds) { .psk_file = m.psk_wrongkey_file, .user = "alice" }, EACCES,
             "qemu-nbd: PSK with a wrong key", WORDS ("rejected the PSK", "\"alice\""));
    refused (&srv, &(struct creds) { .psk_file = m.psk_bob_file, .user = "bob" }, EACCES,
             "qemu-nbd: unknown PSK user", WORDS ("rejected the PSK", "\"bob\""));
    server_stop (&srv);
    free (obj);
    free (image);
  }

  free (home);
  return done_testing ();
}
