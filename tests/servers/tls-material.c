/* tls-material.c: make the keys, certificates and PSK files of
 * tls-material.h with certtool and psktool, into a private directory of the
 * servers' scratch directory.  Runs each tool with servers_run (bounded, its
 * output on stderr); never writes outside that directory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "servers.h"
#include "tls-material.h"

/* The strings live until exit: a global copy keeps them reachable. */
static struct tls_material kept;

static char *
join (const char *dir, const char *name)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, name) == -1) {
    fprintf (stderr, "tls-material: out of memory\n");
    exit (1);
  }
  return p;
}

static int
write_file (const char *path, const char *text)
{
  FILE *f = fopen (path, "we");

  if (!f || fputs (text, f) == EOF || fclose (f) == EOF) {
    fprintf (stderr, "tls-material: %s: %m\n", path);
    return -1;
  }
  return 0;
}

static int
run (const char *const *argv)
{
  int r = servers_run (argv, 60);

  if (r != 0) {
    fprintf (stderr, "tls-material: %s failed (%d)\n", argv[0], r);
    if (r > 0)
      errno = EIO;
    return -1;
  }
  return 0;
}

static int
make_key (const char *path)
{
  return run ((const char *const[]) { "certtool", "--generate-privkey", "--key-type=ecdsa",
                                      "--outfile", path, NULL });
}

static int
copy_file (const char *from, const char *to)
{
  return run ((const char *const[]) { "cp", from, to, NULL });
}

/* A CA: key and self-signed certificate under @dir as ca-key.pem and
 * ca-cert.pem. */
static int
make_ca (const char *dir, const char *cn)
{
  char *key = join (dir, "ca-key.pem"), *cert = join (dir, "ca-cert.pem");
  char *tmpl = join (dir, "ca.info"), text[256];
  int r;

  snprintf (text, sizeof text, "cn = %s\nca\ncert_signing_key\nexpiration_days = 30\n", cn);
  r = make_key (key) == -1 || write_file (tmpl, text) == -1 ||
      run ((const char *const[]) { "certtool", "--generate-self-signed", "--load-privkey", key,
                                   "--template", tmpl, "--outfile", cert, NULL }) == -1
      ? -1 : 0;
  free (key);
  free (cert);
  free (tmpl);
  return r;
}

/* A certificate @name-cert.pem with its key @name-key.pem in @outdir,
 * signed by the CA in @cadir, with the template lines @info. */
static int
make_cert (const char *outdir, const char *name, const char *cadir, const char *info)
{
  char certname[64], keyname[64], tmplname[64];
  char *cacert = join (cadir, "ca-cert.pem"), *cakey = join (cadir, "ca-key.pem");
  char *cert, *key, *tmpl;
  int r;

  snprintf (certname, sizeof certname, "%s-cert.pem", name);
  snprintf (keyname, sizeof keyname, "%s-key.pem", name);
  snprintf (tmplname, sizeof tmplname, "%s.info", name);
  cert = join (outdir, certname);
  key = join (outdir, keyname);
  tmpl = join (outdir, tmplname);
  r = make_key (key) == -1 || write_file (tmpl, info) == -1 ||
      run ((const char *const[]) { "certtool", "--generate-certificate",
                                   "--load-ca-certificate", cacert, "--load-ca-privkey", cakey,
                                   "--load-privkey", key, "--template", tmpl,
                                   "--outfile", cert, NULL }) == -1 ||
      unlink (tmpl) == -1
      ? -1 : 0;
  free (cacert);
  free (cakey);
  free (cert);
  free (key);
  free (tmpl);
  return r;
}

static char *
make_dir (const char *parent, const char *name)
{
  char *d = join (parent, name);

  if (mkdir (d, 0700) == -1) {
    fprintf (stderr, "tls-material: mkdir %s: %m\n", d);
    free (d);
    return NULL;
  }
  return d;
}

static char *
make_psk (const char *dir, const char *file, const char *user)
{
  char *path = join (dir, file);

  if (run ((const char *const[]) { "psktool", "-u", user, "-p", path, NULL }) == -1) {
    free (path);
    return NULL;
  }
  return path;
}

int
tls_material_available (void)
{
  return access ("/usr/bin/certtool", X_OK) == 0 && access ("/usr/bin/psktool", X_OK) == 0;
}

#define SERVER_INFO(cn, extra) \
  "cn = " cn "\n" extra "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n"
#define CLIENT_INFO \
  "cn = client.local\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n"

int
tls_material_create (struct tls_material *m)
{
  const char *scratch = servers_scratch_dir ();
  char *tmpl, *ca, *otherca;

  memset (m, 0, sizeof *m);
  if (!tls_material_available ()) {
    fprintf (stderr, "tls-material: certtool or psktool is missing (apt install gnutls-bin)\n");
    errno = ENOENT;
    return -1;
  }
  if (!scratch)
    return -1;
  tmpl = join (scratch, "tls-XXXXXX");
  if (!mkdtemp (tmpl)) {
    fprintf (stderr, "tls-material: mkdtemp %s: %m\n", tmpl);
    free (tmpl);
    return -1;
  }
  m->dir = tmpl;
  if (!(ca = make_dir (m->dir, "ca")) || !(otherca = make_dir (m->dir, "otherca-ca")) ||
      make_ca (ca, "NBD Test CA") == -1 || make_ca (otherca, "Someone Else's CA") == -1)
    return -1;

  char *ca_cert = join (ca, "ca-cert.pem"), *other_cert = join (otherca, "ca-cert.pem");
  char *p;
  int r = -1;

#define DIR_WITH_CA(field, name, cacert)                                 \
  if (!(m->field = make_dir (m->dir, name)) ||                           \
      copy_file (cacert, (p = join (m->field, "ca-cert.pem"))) == -1)    \
    goto out;                                                            \
  free (p);

  DIR_WITH_CA (server_dir, "server", ca_cert);
  if (make_cert (m->server_dir, "server", ca,
                 SERVER_INFO ("localhost", "dns_name = localhost\nip_address = 127.0.0.1\n")) == -1)
    goto out;
  DIR_WITH_CA (wronghost_dir, "server-wronghost", ca_cert);
  if (make_cert (m->wronghost_dir, "server", ca,
                 SERVER_INFO ("wronghost.invalid", "dns_name = wronghost.invalid\n")) == -1)
    goto out;
  DIR_WITH_CA (otherca_dir, "server-otherca", other_cert);
  if (make_cert (m->otherca_dir, "server", otherca,
                 SERVER_INFO ("localhost", "dns_name = localhost\nip_address = 127.0.0.1\n")) == -1)
    goto out;
  DIR_WITH_CA (client_dir, "client", ca_cert);
  if (make_cert (m->client_dir, "client", ca, CLIENT_INFO) == -1)
    goto out;
  DIR_WITH_CA (ca_only_dir, "client-ca-only", ca_cert);
  DIR_WITH_CA (client_otherca_dir, "client-otherca", ca_cert);
  if (make_cert (m->client_otherca_dir, "client", otherca, CLIENT_INFO) == -1)
    goto out;
  DIR_WITH_CA (crl_dir, "client-crl", ca_cert);
#undef DIR_WITH_CA
  {
    char *cakey = join (ca, "ca-key.pem"), *srvcert = join (m->server_dir, "server-cert.pem");
    char *tmplf = join (m->crl_dir, "crl.info"), *crl = join (m->crl_dir, "ca-crl.pem");
    int bad = write_file (tmplf, "crl_next_update = 30\ncrl_number = 1\n") == -1 ||
              run ((const char *const[]) { "certtool", "--generate-crl", "--load-ca-privkey",
                                           cakey, "--load-ca-certificate", ca_cert,
                                           "--load-certificate", srvcert, "--template", tmplf,
                                           "--outfile", crl, NULL }) == -1;

    free (cakey);
    free (srvcert);
    free (tmplf);
    free (crl);
    if (bad)
      goto out;
  }

  if (!(m->psk_dir = make_dir (m->dir, "psk")) ||
      !(m->psk_file = make_psk (m->psk_dir, "keys.psk", "alice")) ||
      !(m->psk_wrongkey_file = make_psk (m->dir, "wrongkey.psk", "alice")) ||
      !(m->psk_bob_file = make_psk (m->dir, "bob.psk", "bob")))
    goto out;
  r = 0;
  kept = *m;
out:
  free (ca_cert);
  free (other_cert);
  free (ca);
  free (otherca);
  return r;
}

char *
tls_uri (const struct test_server *s, const char *scheme, const char *user, const char *host,
         const char *export_name, const char *query)
{
  char *uri = NULL;
  int r;

  if (!scheme)
    scheme = "nbds";
  if (!export_name)
    export_name = "";
  if (s->sock)
    r = asprintf (&uri, "%s+unix://%s%s/%s?socket=%s%s%s", scheme, user ? user : "",
                  user ? "@" : "", export_name, s->sock, query ? "&" : "", query ? query : "");
  else
    r = asprintf (&uri, "%s://%s%s%s:%d/%s%s%s", scheme, user ? user : "", user ? "@" : "",
                  host ? host : "localhost", s->tcp_port, export_name, query ? "?" : "",
                  query ? query : "");
  if (r == -1) {
    fprintf (stderr, "tls-material: out of memory\n");
    exit (1);
  }
  return uri;
}
