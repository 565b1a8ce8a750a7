/* tls-material.h: fresh TLS keys, certificates and PSK files for the tests.
 *
 * Owns one private directory (mode 0700, inside the servers' scratch
 * directory, removed at exit with it) holding everything a TLS test needs,
 * made with certtool and psktool (Debian's gnutls-bin), as in
 * docs/protocol.md section 3.3, but with ECDSA keys so that a test starts
 * in well under a second.  Never touches the user's or the system's
 * certificate directories.
 *
 * Layout (each *_dir is laid out for its consumer):
 *   server_dir        ca-cert.pem server-cert.pem server-key.pem: for nbdkit
 *                     --tls-certificates and qemu-nbd tls-creds-x509 dir=;
 *                     the certificate names localhost and 127.0.0.1
 *   wronghost_dir     the same, but the certificate names only
 *                     wronghost.invalid (signed by the same CA)
 *   otherca_dir       the same for localhost, signed by another CA that no
 *                     client trusts
 *   client_dir        ca-cert.pem client-cert.pem client-key.pem: what
 *                     nbd_set_tls_certificates wants
 *   ca_only_dir       ca-cert.pem alone (no client certificate)
 *   client_otherca_dir ca-cert.pem of our CA, but a client certificate
 *                     signed by the other CA
 *   crl_dir           ca-cert.pem and ca-crl.pem, a CRL of our CA that
 *                     revokes server_dir's certificate
 *   psk_file          alice's key; psk_dir holds it as keys.psk (qemu-nbd
 *                     tls-creds-psk dir=)
 *   psk_wrongkey_file alice with another key
 *   psk_bob_file      bob, whom no server knows
 */
#ifndef GNBD_TESTS_TLS_MATERIAL_H
#define GNBD_TESTS_TLS_MATERIAL_H

struct tls_material {
  char *dir;
  char *server_dir;
  char *wronghost_dir;
  char *otherca_dir;
  char *client_dir;
  char *ca_only_dir;
  char *client_otherca_dir;
  char *crl_dir;
  char *psk_dir;
  char *psk_file;
  char *psk_wrongkey_file;
  char *psk_bob_file;
};

/* Make everything; 0 on success, -1 (message on stderr, errno ENOENT if
 * certtool or psktool is missing) on failure.  The strings stay valid
 * until exit. */
int tls_material_create (struct tls_material *m);

/* Whether the TLS tools are installed (a test can skip_all without). */
int tls_material_available (void);

struct test_server;

/* An nbds URI for server @s: "nbds+unix://[USER@]/EXPORT?socket=SOCK" for a Unix
 * server, else "nbds://[USER@]HOST:PORT/EXPORT" (@host NULL: localhost),
 * then @query (e.g. "tls-certificates=/dir") if not NULL.  @scheme
 * replaces "nbds" (e.g. "nbd") if not NULL.  The caller frees it. */
char *tls_uri (const struct test_server *s, const char *scheme, const char *user,
               const char *host, const char *export_name, const char *query);

#endif /* GNBD_TESTS_TLS_MATERIAL_H */
