/* tls.c: TLS over the NBD socket, with GnuTLS — the session and its
 * credentials (X.509 from a certificates directory, the user's default
 * directories or the system trust; or a PSK file), the non-blocking
 * handshake after NBD_OPT_STARTTLS, record I/O for handshake.c, issue.c and
 * reply.c, and the close_notify after NBD_CMD_DISC.
 *
 * GnuTLS never touches the socket itself.  Its pull function reads ahead
 * into a ciphertext buffer, many records per recv(2), so no record may be
 * left there when a read returns EAGAIN: the socket would not announce it
 * (GnuTLS stops early after a TLS 1.3 post-handshake message).  Its push
 * function never fails and never blocks: ciphertext goes to the concurrent
 * writer, or into an output buffer that nbd_internal_tls_flush sends in as
 * few send(2)s as the socket takes.  So the only thing GnuTLS ever waits
 * for is the server's bytes.  Small pieces (request headers, small
 * payloads) are gathered into full-sized records; large payloads are
 * encrypted straight from the caller's buffer.
 *
 * Peer verification, when on, always checks the certificate chain (also
 * against the system's trusted CAs) and, for TCP, the host name.  Every
 * failure here kills the connection: there is no way back to plaintext.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "internal.h"

/* TLS 1.2 or later (the NBD spec), GnuTLS's normal ciphers otherwise. */
#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define TLS_PRIORITY_PSK TLS_PRIORITY ":+ECDHE-PSK:+DHE-PSK:+PSK"
/* The same with ChaCha20 after the AES ciphers (see aes_first). */
#define TLS_PRIORITY_PSK_AES TLS_PRIORITY_PSK ":-CHACHA20-POLY1305:+CHACHA20-POLY1305"

/* Ciphertext read per recv(2): many records of a large read reply. */
#define TLS_IN_SIZE (256 * 1024)
/* The largest TLS record payload; GnuTLS may negotiate less. */
#define TLS_RECORD_MAX 16384

/* libnbd's directory names, so existing certificates keep working. */
#define CERT_DIR_NAME "libnbd"
#define SYSCONF_CERT_DIR "/etc/pki/" CERT_DIR_NAME

struct nbd_tls {
  gnutls_session_t session;
  gnutls_certificate_credentials_t xcred;
  gnutls_psk_client_credentials_t pskcred;
  char *cert_dir;               /* the directory used, NULL: system trust */
  bool psk;
  bool client_cert;             /* a client certificate was loaded */
  bool handshake_done;
  int sys_errno;                /* last errno of a failed recv(2) */

  /* Ciphertext read ahead of GnuTLS. */
  char *in;
  size_t in_start, in_end;
  uint64_t in_taken;            /* bytes GnuTLS took from in, ever */

  /* Ciphertext waiting for the socket: never used under a writer, unless
   * the writer thread encrypts, and then only by its side. */
  char *out;
  size_t out_start, out_end, out_cap;
  bool shut_wr_pending;         /* shutdown(SHUT_WR) once out is empty */
  /* Once the writer thread makes the records (h->tls_plain), out, the
   * stage and GnuTLS's sending side are its. */
  size_t out_plain;             /* plaintext behind out, reported once sent */
  bool bye_made;                /* close_notify is in out (or sent) */

  /* Plaintext gathered into the next record. */
  size_t rec_max;
  size_t stage_len;
  char stage[TLS_RECORD_MAX];
};

/* ---- Transport -------------------------------------------------------- */

static ssize_t
pull (gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
  struct nbd_handle *h = ptr;
  struct nbd_tls *t = h->tls_conn;
  size_t take;

  if (t->in_start == t->in_end) {
    ssize_t n;

    t->in_start = t->in_end = 0;
    do
      n = recv (h->fd, t->in, TLS_IN_SIZE, 0);
    while (n == -1 && errno == EINTR);
    if (n == -1) {
      /* GnuTLS reads errno itself; gnutls_transport_set_errno is not
       * for a session whose two directions run on two threads. */
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        t->sys_errno = errno;
      return -1;
    }
    if (n == 0)
      return 0;
    t->in_end = n;
  }
  take = t->in_end - t->in_start < len ? t->in_end - t->in_start : len;
  memcpy (buf, t->in + t->in_start, take);
  t->in_start += take;
  t->in_taken += take;
  return take;
}

/* GnuTLS asks only when a pull would block; with GNUTLS_NONBLOCK it does
 * not ask at all, but it wants the function set. */
static int
pull_timeout (gnutls_transport_ptr_t ptr, unsigned ms)
{
  struct nbd_handle *h = ptr;

  return h->tls_conn->in_start < h->tls_conn->in_end ? 1 : 0;
}

static int
out_append (struct nbd_tls *t, const void *buf, size_t len)
{
  if (t->out_start == t->out_end)
    t->out_start = t->out_end = 0;
  if (t->out_end + len > t->out_cap) {
    if (t->out_start > 0) {
      memmove (t->out, t->out + t->out_start, t->out_end - t->out_start);
      t->out_end -= t->out_start;
      t->out_start = 0;
    }
    if (t->out_end + len > t->out_cap) {
      size_t cap = t->out_cap ? t->out_cap : 64 * 1024;
      char *nb;

      while (cap < t->out_end + len)
        cap *= 2;
      nb = realloc (t->out, cap);
      if (!nb)
        return -1;
      t->out = nb;
      t->out_cap = cap;
    }
  }
  memcpy (t->out + t->out_end, buf, len);
  t->out_end += len;
  return 0;
}

static ssize_t
push (gnutls_transport_ptr_t ptr, const void *buf, size_t len)
{
  struct nbd_handle *h = ptr;
  struct nbd_tls *t = h->tls_conn;

  if (h->writer && !h->tls_plain) {
    nbd_internal_writer_send (h, buf, len);
    return len;
  }
  if (out_append (t, buf, len) == -1) {
    errno = ENOMEM;
    return -1;
  }
  return len;
}

static ssize_t
vec_push (gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
  ssize_t total = 0;

  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len == 0)
      continue;
    if (push (ptr, iov[i].iov_base, iov[i].iov_len) == -1)
      return -1;
    total += iov[i].iov_len;
  }
  return total;
}

/* ---- Credentials ------------------------------------------------------ */

static char *
path_in (const char *dir, const char *file)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, file) == -1) {
    set_error (ENOMEM, "asprintf");
    return NULL;
  }
  return p;
}

/* Load ca-cert.pem (required), client-cert.pem + client-key.pem (together,
 * optional) and ca-crl.pem (optional) from @dir. */
static int
load_cert_dir (struct nbd_tls *t, const char *dir)
{
  char *ca = path_in (dir, "ca-cert.pem"), *cert = path_in (dir, "client-cert.pem"),
       *key = path_in (dir, "client-key.pem"), *crl = path_in (dir, "ca-crl.pem");
  bool have_cert, have_key;
  int r = -1, err;

  if (!ca || !cert || !key || !crl)
    goto out;
  if (access (ca, R_OK) == -1) {
    set_error (errno, "TLS certificates directory %s: cannot read ca-cert.pem", dir);
    goto out;
  }
  err = gnutls_certificate_set_x509_trust_file (t->xcred, ca, GNUTLS_X509_FMT_PEM);
  if (err <= 0) {
    set_error (EINVAL, "TLS: %s: %s", ca,
               err == 0 ? "the file holds no certificate" : gnutls_strerror (err));
    goto out;
  }
  have_cert = access (cert, R_OK) == 0;
  have_key = access (key, R_OK) == 0;
  if (have_cert != have_key) {
    set_error (ENOENT, "TLS certificates directory %s has %s but no %s", dir,
               have_cert ? "client-cert.pem" : "client-key.pem",
               have_cert ? "client-key.pem" : "client-cert.pem");
    goto out;
  }
  if (have_cert) {
    err = gnutls_certificate_set_x509_key_file (t->xcred, cert, key, GNUTLS_X509_FMT_PEM);
    if (err < 0) {
      set_error (EINVAL, "TLS: %s, %s: %s", cert, key, gnutls_strerror (err));
      goto out;
    }
    t->client_cert = true;
  }
  if (access (crl, R_OK) == 0) {
    err = gnutls_certificate_set_x509_crl_file (t->xcred, crl, GNUTLS_X509_FMT_PEM);
    if (err < 0) {
      set_error (EINVAL, "TLS: %s: %s", crl, gnutls_strerror (err));
      goto out;
    }
  }
  t->cert_dir = strdup (dir);
  if (!t->cert_dir) {
    set_error (ENOMEM, "strdup");
    goto out;
  }
  r = 0;
out:
  free (ca);
  free (cert);
  free (key);
  free (crl);
  return r;
}

/* The directory to use when none was set: libnbd's defaults, the first
 * that holds a readable ca-cert.pem; NULL for the system trust. */
static char *
default_cert_dir (void)
{
  const char *home = getenv ("HOME");
  char *candidates[2] = { NULL, NULL };
  char *found = NULL;

  if (geteuid () == 0)
    candidates[0] = strdup (SYSCONF_CERT_DIR);
  else if (home && *home) {
    if (asprintf (&candidates[0], "%s/.pki/%s", home, CERT_DIR_NAME) == -1)
      candidates[0] = NULL;
    if (asprintf (&candidates[1], "%s/.config/pki/%s", home, CERT_DIR_NAME) == -1)
      candidates[1] = NULL;
  }
  for (int i = 0; i < 2; i++) {
    char *ca;

    if (found || !candidates[i])
      continue;
    ca = path_in (candidates[i], "ca-cert.pem");
    if (ca && access (ca, R_OK) == 0) {
      found = candidates[i];
      candidates[i] = NULL;
    }
    free (ca);
  }
  free (candidates[0]);
  free (candidates[1]);
  return found;
}

static bool
is_ip_literal (const char *host)
{
  unsigned char buf[sizeof (struct in6_addr)];

  return inet_pton (AF_INET, host, buf) == 1 || inet_pton (AF_INET6, host, buf) == 1;
}

static int
set_up_x509 (struct nbd_handle *h, struct nbd_tls *t)
{
  int err = gnutls_priority_set_direct (t->session, TLS_PRIORITY, NULL);

  if (err < 0) {
    set_error (EINVAL, "TLS: gnutls_priority_set_direct: %s", gnutls_strerror (err));
    return -1;
  }
  err = gnutls_certificate_allocate_credentials (&t->xcred);
  if (err < 0) {
    set_error (ENOMEM, "TLS: gnutls_certificate_allocate_credentials: %s",
               gnutls_strerror (err));
    return -1;
  }
  if (h->tls_certificates) {
    if (load_cert_dir (t, h->tls_certificates) == -1)
      return -1;
  }
  else {
    char *dir = default_cert_dir ();

    if (dir) {
      err = load_cert_dir (t, dir);
      free (dir);
      if (err == -1)
        return -1;
    }
    else {
      err = gnutls_certificate_set_x509_system_trust (t->xcred);
      if (err < 0) {
        set_error (EINVAL, "TLS: cannot load the system's trusted CAs: %s",
                   gnutls_strerror (err));
        return -1;
      }
      debug (h, "TLS: no certificates directory, using the %d system trusted CA(s)", err);
    }
  }
  /* Always verify when asked to, whichever CAs are trusted (libnbd before
   * 1.18.5 did not with the system's: CVE-2024-7383).  Without a host name
   * (Unix sockets) the chain is checked, not the name. */
  if (h->tls_verify_peer)
    gnutls_session_set_verify_cert (t->session, h->tls_hostname, 0);
  err = gnutls_credentials_set (t->session, GNUTLS_CRD_CERTIFICATE, t->xcred);
  if (err < 0) {
    set_error (EINVAL, "TLS: gnutls_credentials_set: %s", gnutls_strerror (err));
    return -1;
  }
  return 0;
}

/* Find @user's hex key in a psktool file ("user:hexkey" lines). */
static int
lookup_psk (const char *file, const char *user, gnutls_datum_t *key)
{
  FILE *fp = fopen (file, "r");
  size_t ulen = strlen (user), cap = 0;
  char *line = NULL;
  ssize_t n;
  int r = -1;

  if (!fp) {
    set_error (errno, "TLS: cannot open the PSK file %s", file);
    return -1;
  }
  while ((n = getline (&line, &cap, fp)) != -1) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if ((size_t) n > ulen + 1 && strncmp (line, user, ulen) == 0 && line[ulen] == ':') {
      key->data = (unsigned char *) strdup (line + ulen + 1);
      if (!key->data) {
        set_error (ENOMEM, "strdup");
        goto out;
      }
      key->size = n - ulen - 1;
      r = 0;
      goto out;
    }
  }
  if (ferror (fp))
    set_error (errno, "TLS: reading the PSK file %s", file);
  else
    set_error (EINVAL, "TLS: the PSK file %s has no key for the user \"%s\" (set the user "
               "with nbd_set_tls_username or as user@ in the URI)", file, user);
out:
  if (line) {
    explicit_bzero (line, cap);
    free (line);
  }
  fclose (fp);
  return r;
}

/* A TLS 1.3 PSK is tied to SHA-256, which AES-256-GCM (GnuTLS's first
 * choice) cannot use, so GnuTLS's normal order lands on ChaCha20 before
 * AES-128-GCM, even where AES is done in hardware and is several times
 * faster.  GnuTLS knows the hardware: if it puts an AES-GCM cipher before
 * ChaCha20 in its normal order, AES-128-GCM goes first for a PSK too. */
static bool
aes_first (void)
{
  static _Atomic int cached;    /* 0 unknown, 1 yes, 2 no */
  gnutls_priority_t prio;
  const unsigned *list;
  int n, r = atomic_load (&cached);

  if (r)
    return r == 1;
  r = 2;
  if (gnutls_priority_init (&prio, "NORMAL", NULL) >= 0) {
    n = gnutls_priority_cipher_list (prio, &list);
    for (int i = 0; i < n; i++) {
      if (list[i] == GNUTLS_CIPHER_AES_256_GCM || list[i] == GNUTLS_CIPHER_AES_128_GCM) {
        r = 1;
        break;
      }
      if (list[i] == GNUTLS_CIPHER_CHACHA20_POLY1305)
        break;
    }
    gnutls_priority_deinit (prio);
  }
  atomic_store (&cached, r);
  return r == 1;
}

static int
set_up_psk (struct nbd_handle *h, struct nbd_tls *t)
{
  gnutls_datum_t key = { NULL, 0 };
  int err;

  t->psk = true;
  if (!h->tls_username) {
    set_error (EINVAL, "TLS: no username for the PSK: $LOGNAME is not set; use "
               "nbd_set_tls_username or user@ in the URI");
    return -1;
  }
  err = gnutls_priority_set_direct (t->session,
                                    aes_first () ? TLS_PRIORITY_PSK_AES : TLS_PRIORITY_PSK, NULL);
  if (err < 0) {
    set_error (EINVAL, "TLS: gnutls_priority_set_direct: %s", gnutls_strerror (err));
    return -1;
  }
  if (lookup_psk (h->tls_psk_file, h->tls_username, &key) == -1)
    return -1;
  err = gnutls_psk_allocate_client_credentials (&t->pskcred);
  if (err >= 0)
    err = gnutls_psk_set_client_credentials (t->pskcred, h->tls_username, &key,
                                             GNUTLS_PSK_KEY_HEX);
  explicit_bzero (key.data, key.size);
  free (key.data);
  if (err < 0) {
    set_error (EINVAL, "TLS: the key for the user \"%s\" in the PSK file %s is not usable: %s",
               h->tls_username, h->tls_psk_file, gnutls_strerror (err));
    return -1;
  }
  err = gnutls_credentials_set (t->session, GNUTLS_CRD_PSK, t->pskcred);
  if (err < 0) {
    set_error (EINVAL, "TLS: gnutls_credentials_set: %s", gnutls_strerror (err));
    return -1;
  }
  return 0;
}

/* ---- Session ---------------------------------------------------------- */

void
nbd_internal_tls_free (struct nbd_handle *h)
{
  struct nbd_tls *t = h->tls_conn;

  if (!t)
    return;
  if (t->session)
    gnutls_deinit (t->session);
  if (t->xcred)
    gnutls_certificate_free_credentials (t->xcred);
  if (t->pskcred)
    gnutls_psk_free_client_credentials (t->pskcred);
  explicit_bzero (t->stage, sizeof t->stage);
  free (t->cert_dir);
  free (t->in);
  free (t->out);
  free (t);
  h->tls_conn = NULL;
}

int
nbd_internal_tls_start (struct nbd_handle *h)
{
  struct nbd_tls *t = calloc (1, sizeof *t);
  int err;

  if (!t || !(t->in = malloc (TLS_IN_SIZE))) {
    free (t);
    set_error (ENOMEM, "TLS: allocating the session");
    return -1;
  }
  h->tls_conn = t;
  err = gnutls_init (&t->session, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
  if (err < 0) {
    t->session = NULL;
    set_error (ENOMEM, "TLS: gnutls_init: %s", gnutls_strerror (err));
    goto fail;
  }
  if (h->tls_hostname && !is_ip_literal (h->tls_hostname)) {
    err = gnutls_server_name_set (t->session, GNUTLS_NAME_DNS, h->tls_hostname,
                                  strlen (h->tls_hostname));
    if (err < 0) {
      set_error (EINVAL, "TLS: gnutls_server_name_set: %s", gnutls_strerror (err));
      goto fail;
    }
  }
  if ((h->tls_psk_file ? set_up_psk (h, t) : set_up_x509 (h, t)) == -1)
    goto fail;
  gnutls_transport_set_ptr (t->session, h);
  gnutls_transport_set_pull_function (t->session, pull);
  gnutls_transport_set_pull_timeout_function (t->session, pull_timeout);
  gnutls_transport_set_push_function (t->session, push);
  gnutls_transport_set_vec_push_function (t->session, vec_push);
  gnutls_handshake_set_timeout (t->session, GNUTLS_DEFAULT_HANDSHAKE_TIMEOUT);
  debug (h, "TLS: starting the handshake (%s%s%s)", t->psk ? "PSK user " : "X.509",
         t->psk ? h->tls_username : (t->cert_dir ? ", certificates from " : ", system CAs"),
         t->psk ? "" : (t->cert_dir ? t->cert_dir : ""));
  return 0;
fail:
  nbd_internal_tls_free (h);
  return -1;
}

/* The server asked for a client certificate and we had none to give: in
 * TLS 1.3 it says so only after our side of the handshake is done, often by
 * just hanging up. */
static bool
cert_wanted (const struct nbd_tls *t)
{
  return !t->psk && !t->client_cert &&
         gnutls_certificate_client_get_request_status (t->session) != 0;
}

#define CERT_FILES "client-cert.pem and client-key.pem in the certificates directory"

/* We sent the certificate the server asked for, and it hung up while we
 * were still negotiating: in TLS 1.3 that is how a rejection looks. */
static bool
cert_maybe_rejected (const struct nbd_handle *h)
{
  const struct nbd_tls *t = h->tls_conn;

  return !t->psk && t->client_cert && h->state == ST_HANDSHAKE &&
         gnutls_certificate_client_get_request_status (t->session) != 0;
}

/* Why TLS failed, in words that point at the cause; returns the errno.
 * @what: "TLS handshake" or "TLS". */
static int
tls_error (struct nbd_handle *h, int err, const char *what)
{
  struct nbd_tls *t = h->tls_conn;
  bool hung_up = err == GNUTLS_E_PREMATURE_TERMINATION ||
                 (err == GNUTLS_E_PULL_ERROR &&
                  (t->sys_errno == ECONNRESET || t->sys_errno == EPIPE));

  /* Servers refuse a PSK by hanging up: which half of it is wrong they
   * do not say. */
  if (hung_up && t->psk && !t->handshake_done) {
    set_error (EACCES, "%s: the server rejected the PSK and closed the connection: either it "
               "does not know the user \"%s\", or its key for that user is not the one in %s",
               what, h->tls_username, h->tls_psk_file);
    return EACCES;
  }
  if (hung_up && !t->handshake_done) {
    set_error (ECONNRESET, "%s: the server closed the connection during the handshake (it may "
               "want other credentials: a PSK instead of certificates, or a client "
               "certificate)", what);
    return ECONNRESET;
  }
  if (hung_up && cert_maybe_rejected (h)) {
    set_error (EACCES, "%s: the server closed the connection after the handshake: it probably "
               "rejected our client certificate %s/client-cert.pem (is it signed by a CA the "
               "server trusts?)", what, t->cert_dir);
    return EACCES;
  }
  if (cert_wanted (t) && (hung_up || err == GNUTLS_E_PULL_ERROR ||
                          err == GNUTLS_E_FATAL_ALERT_RECEIVED)) {
    const char *alert = err == GNUTLS_E_FATAL_ALERT_RECEIVED
                        ? gnutls_alert_get_name (gnutls_alert_get (t->session)) : NULL;

    set_error (EACCES, "%s: the server asked for a client certificate and we have none (%s), "
               "then %s%s", what, CERT_FILES, alert ? "sent the alert " : "",
               alert ? alert : "closed the connection");
    return EACCES;
  }
  switch (err) {
  case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
  case GNUTLS_E_CERTIFICATE_ERROR: {
    unsigned status = gnutls_session_get_verify_cert_status (t->session);
    gnutls_datum_t text = { NULL, 0 };
    bool name = (status & GNUTLS_CERT_UNEXPECTED_OWNER) && h->tls_hostname;

    if (gnutls_certificate_verification_status_print (status, GNUTLS_CRT_X509, &text, 0) < 0)
      text.data = NULL;
    for (size_t n = text.data ? strlen ((char *) text.data) : 0;
         n > 0 && text.data[n - 1] == ' '; n--)
      text.data[n - 1] = '\0';
    set_error (EACCES, "%s: the server's certificate was rejected: %s%s%s%s%s", what,
               text.data ? (char *) text.data : gnutls_strerror (err),
               name ? " (we connected to \"" : "", name ? h->tls_hostname : "", name ? "\")" : "",
               (status & GNUTLS_CERT_SIGNER_NOT_FOUND) && !t->cert_dir
               ? " (no certificates directory was found, so only the system's trusted CAs "
                 "are accepted: see nbd_set_tls_certificates)" : "");
    gnutls_free (text.data);
    return EACCES;
  }
  case GNUTLS_E_FATAL_ALERT_RECEIVED: {
    gnutls_alert_description_t a = gnutls_alert_get (t->session);
    const char *name = gnutls_alert_get_name (a), *why = "";
    int errnum = EPROTO;

    switch ((int) a) {
    case GNUTLS_A_UNKNOWN_PSK_IDENTITY:
      why = t->psk ? ": the server does not know this PSK user" : "";
      errnum = EACCES;
      break;
    case GNUTLS_A_DECRYPT_ERROR:
    case GNUTLS_A_BAD_RECORD_MAC:
    case GNUTLS_A_HANDSHAKE_FAILURE:
    case GNUTLS_A_ILLEGAL_PARAMETER:
      if (t->psk) {
        why = ": the server does not know this PSK user, or its key differs";
        errnum = EACCES;
      }
      break;
    case GNUTLS_A_CERTIFICATE_REQUIRED:
      why = t->client_cert ? "" : ": the server requires a client certificate (" CERT_FILES ")";
      errnum = EACCES;
      break;
    case GNUTLS_A_BAD_CERTIFICATE:
    case GNUTLS_A_UNSUPPORTED_CERTIFICATE:
    case GNUTLS_A_CERTIFICATE_REVOKED:
    case GNUTLS_A_CERTIFICATE_EXPIRED:
    case GNUTLS_A_CERTIFICATE_UNKNOWN:
    case GNUTLS_A_UNKNOWN_CA:
    case GNUTLS_A_ACCESS_DENIED:
      why = t->client_cert ? ": the server rejected our client certificate"
                           : ": the server wants a client certificate (" CERT_FILES ")";
      errnum = EACCES;
      break;
    }
    if (t->psk && errnum == EACCES)
      set_error (errnum, "%s: the server sent the alert \"%s\"%s (user \"%s\", PSK file %s)",
                 what, name ? name : "unknown", why, h->tls_username, h->tls_psk_file);
    else
      set_error (errnum, "%s: the server sent the alert \"%s\"%s", what,
                 name ? name : "unknown", why);
    return errnum;
  }
  case GNUTLS_E_PULL_ERROR:
    err = t->sys_errno ? t->sys_errno : EIO;
    set_error (err, "%s: recv", what);
    return err;
  case GNUTLS_E_PREMATURE_TERMINATION:
    set_error (ECONNRESET, "%s: the server closed the connection%s", what,
               t->psk ? " (it may not know this PSK user or key)" : "");
    return ECONNRESET;
  case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
  case GNUTLS_E_UNEXPECTED_PACKET:
  case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
  case GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET:
  case GNUTLS_E_RECORD_OVERFLOW:
    set_error (EPROTO, "%s: the server does not speak TLS after accepting NBD_OPT_STARTTLS: %s",
               what, gnutls_strerror (err));
    return EPROTO;
  case GNUTLS_E_NO_CIPHER_SUITES:
  case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
  case GNUTLS_E_NO_COMMON_KEY_SHARE:
  case GNUTLS_E_UNKNOWN_CIPHER_SUITE:
    set_error (EPROTO, "%s: no TLS method in common with the server (it may want %s): %s", what,
               t->psk ? "X.509 certificates instead of a PSK"
               : "a PSK instead of X.509 certificates", gnutls_strerror (err));
    return EPROTO;
  case GNUTLS_E_REHANDSHAKE:
    set_error (EPROTO, "%s: the server asked for a renegotiation, which is not supported", what);
    return EPROTO;
  default:
    set_error (EPROTO, "%s: %s", what, gnutls_strerror (err));
    return EPROTO;
  }
}

int
nbd_internal_tls_handshake_step (struct nbd_handle *h)
{
  struct nbd_tls *t = h->tls_conn;
  int err;

  do
    err = gnutls_handshake (t->session);
  while (err < 0 && err != GNUTLS_E_AGAIN && !gnutls_error_is_fatal (err));
  if (err == GNUTLS_E_AGAIN)
    return 0;
  if (err < 0) {
    tls_error (h, err, "TLS handshake");
    return -1;
  }
  t->handshake_done = true;
  t->rec_max = gnutls_record_get_max_size (t->session);
  if (t->rec_max == 0 || t->rec_max > TLS_RECORD_MAX)
    t->rec_max = TLS_RECORD_MAX;
  if (h->writer && h->writer_encrypt) {
    /* From here on the writer gets plaintext, and its thread encrypts and
     * sends (nbd_concurrent_writer_send) while this one decrypts.  GnuTLS
     * allows one thread sending and another receiving on a session as
     * long as neither starts what needs both (a TLS 1.2 renegotiation:
     * refused in tls_error; a key update we ask for: never done; a
     * received TLS 1.3 KeyUpdate only schedules ours for the next record
     * sent, on the sending thread) and the sender ends the session with
     * gnutls_bye (GNUTLS_SHUT_WR) (nbd_internal_tls_writer_bye).  All of
     * this handshake's records went to the writer already (push): the
     * bytes handed so far are the last ones to send as they are. */
    h->tls_plain = true;
    atomic_store (&h->wr_raw_end, h->wr_handed);
    debug (h, "TLS: the writer thread encrypts from byte %" PRIu64 " of its stream on",
           h->wr_handed);
  }
  if (h->debug) {
    char *desc = gnutls_session_get_desc (t->session);

    debug (h, "TLS: connection is using %s", desc ? desc : "TLS");
    gnutls_free (desc);
  }
  return 1;
}

/* ---- Records ---------------------------------------------------------- */

ssize_t
nbd_internal_tls_recv (struct nbd_handle *h, void *buf, size_t len)
{
  struct nbd_tls *t = h->tls_conn;
  ssize_t r;
  int err;

  for (;;) {
    uint64_t taken = t->in_taken;

    r = gnutls_record_recv (t->session, buf, len);
    if (r > 0)
      return r;
    if (r == 0)                 /* close_notify: as a hang-up, below */
      r = GNUTLS_E_PREMATURE_TERMINATION;
    switch (r) {
    case GNUTLS_E_AGAIN:
      /* GnuTLS also says AGAIN after a TLS 1.3 post-handshake message
       * (KeyUpdate, NewSessionTicket) that it handled itself, while the
       * records behind it may already be in t->in, where no POLLIN would
       * ever announce them to a caller's own poll loop: go on while
       * GnuTLS holds plaintext, or took ciphertext and more is left.  A
       * real AGAIN (pull found the socket empty) leaves t->in empty. */
      if (gnutls_record_check_pending (t->session) > 0 ||
          (t->in_start < t->in_end && t->in_taken != taken))
        continue;
      errno = EAGAIN;
      return -1;
    case GNUTLS_E_INTERRUPTED:
    case GNUTLS_E_WARNING_ALERT_RECEIVED:
    case GNUTLS_E_GOT_APPLICATION_DATA:
      continue;
    case GNUTLS_E_PREMATURE_TERMINATION:
      /* The server closed (with or without close_notify): NBD's own
       * framing tells a clean end (after NBD_CMD_DISC) from a cut reply.
       * Only while negotiating can it be the TLS layer's verdict on our
       * certificate. */
      if (h->state != ST_HANDSHAKE || (!cert_wanted (t) && !cert_maybe_rejected (h)))
        return 0;
      /* fall through */
    default:
      err = tls_error (h, (int) r, "TLS");
    }
    errno = err;
    return -1;
  }
}

static int
encrypt (struct nbd_handle *h, const char *p, size_t len)
{
  struct nbd_tls *t = h->tls_conn;

  while (len > 0) {
    ssize_t r = gnutls_record_send (t->session, p, len);

    if (r < 0) {
      if (r == GNUTLS_E_INTERRUPTED)
        continue;
      set_error (r == GNUTLS_E_PUSH_ERROR ? ENOMEM : EPROTO, "TLS: sending: %s",
                 gnutls_strerror ((int) r));
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

static int
commit_stage (struct nbd_handle *h)
{
  struct nbd_tls *t = h->tls_conn;
  size_t n = t->stage_len;

  if (n == 0)
    return 0;
  t->stage_len = 0;
  return encrypt (h, t->stage, n);
}

int
nbd_internal_tls_send (struct nbd_handle *h, const void *buf, size_t len)
{
  struct nbd_tls *t = h->tls_conn;
  const char *p = buf;
  size_t max = t->rec_max ? t->rec_max : TLS_RECORD_MAX;

  /* Top up the record being gathered; send it once full. */
  if (t->stage_len > 0 || len < max) {
    size_t take = max - t->stage_len < len ? max - t->stage_len : len;

    memcpy (t->stage + t->stage_len, p, take);
    t->stage_len += take;
    p += take;
    len -= take;
    if (t->stage_len == max && commit_stage (h) == -1)
      return -1;
  }
  /* Whole records straight from the caller's buffer. */
  if (len >= max) {
    size_t whole = len - len % max;

    if (encrypt (h, p, whole) == -1)
      return -1;
    p += whole;
    len -= whole;
  }
  if (len > 0) {
    memcpy (t->stage, p, len);
    t->stage_len = len;
  }
  return 0;
}

/* Send what out holds, as the socket takes it: 1 all sent, 0 the socket
 * is full, -1 error (set). */
static int
send_out (struct nbd_tls *t, int fd)
{
  while (t->out_start < t->out_end) {
    ssize_t n = send (fd, t->out + t->out_start, t->out_end - t->out_start,
                      MSG_DONTWAIT | MSG_NOSIGNAL);

    if (n == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      if (errno == EINTR)
        continue;
      set_error (errno, "send");
      return -1;
    }
    t->out_start += n;
  }
  t->out_start = t->out_end = 0;
  return 1;
}

int
nbd_internal_tls_flush (struct nbd_handle *h)
{
  struct nbd_tls *t = h->tls_conn;
  int r;

  if (h->tls_plain)
    return 1;                   /* the writer thread's side */
  if (commit_stage (h) == -1)
    return -1;
  if (h->writer) {
    /* A writer arrived while ciphertext (and perhaps the end of the
     * write side) waited for the socket: it takes over, in order. */
    if (t->out_start < t->out_end)
      nbd_internal_writer_send (h, t->out + t->out_start, t->out_end - t->out_start);
    t->out_start = t->out_end = 0;
    if (t->shut_wr_pending) {
      t->shut_wr_pending = false;
      nbd_internal_writer_send (h, NULL, 0);
    }
    return 1;
  }
  r = send_out (t, h->fd);
  if (r != 1)
    return r;
  if (t->shut_wr_pending) {
    t->shut_wr_pending = false;
    shutdown (h->fd, SHUT_WR);
  }
  return 1;
}

bool
nbd_internal_tls_out_pending (const struct nbd_handle *h)
{
  const struct nbd_tls *t = h->tls_conn;

  if (h->tls_plain)
    return false;               /* the writer thread's side */
  return t->out_start < t->out_end || t->stage_len > 0 || t->shut_wr_pending;
}

bool
nbd_internal_tls_pending (const struct nbd_handle *h)
{
  const struct nbd_tls *t = h->tls_conn;

  return t->in_start < t->in_end || gnutls_record_check_pending (t->session) > 0;
}

void
nbd_internal_tls_bye (struct nbd_handle *h)
{
  struct nbd_tls *t = h->tls_conn;
  int err;

  if (h->tls_plain) {
    /* The writer thread sends close_notify after the bytes it holds. */
    nbd_internal_writer_send (h, NULL, 0);
    return;
  }
  if (commit_stage (h) == -1)
    debug (h, "TLS: %s", nbd_get_error ());
  do
    err = gnutls_bye (t->session, GNUTLS_SHUT_WR);
  while (err == GNUTLS_E_INTERRUPTED);
  if (err < 0)
    debug (h, "TLS: gnutls_bye: %s", gnutls_strerror (err));
  if (h->writer)
    nbd_internal_writer_send (h, NULL, 0);
  else
    t->shut_wr_pending = true;
}

/* ---- The writer thread's side (nbd_set_concurrent_writer_encrypt) ------ */

/* Plaintext encrypted per call: the ciphertext waiting in out stays
 * bounded, and a send(2) carries many records. */
#define TLS_WRITER_BATCH (64 * 1024)

ssize_t
nbd_internal_tls_writer_send (struct nbd_handle *h, int fd, const struct iovec *iov, int iovcnt)
{
  struct nbd_tls *t = h->tls_conn;
  size_t plain = 0;
  int r;

  /* Ciphertext still waiting is of the bytes the caller offers again
   * (the same ones: we said EAGAIN); else encrypt the next batch. */
  if (t->out_start == t->out_end) {
    for (int i = 0; i < iovcnt && plain < TLS_WRITER_BATCH; i++) {
      size_t len = iov[i].iov_len;

      if (len > TLS_WRITER_BATCH - plain)
        len = TLS_WRITER_BATCH - plain;
      if (len > 0 && nbd_internal_tls_send (h, iov[i].iov_base, len) == -1)
        return -1;
      plain += len;
    }
    if (commit_stage (h) == -1)
      return -1;
    t->out_plain = plain;
  }
  r = send_out (t, fd);
  if (r == -1)
    return -1;
  if (r == 0)
    return nbd_internal_writer_full ();
  plain = t->out_plain;
  t->out_plain = 0;
  return plain;
}

int
nbd_internal_tls_writer_bye (struct nbd_handle *h, int fd)
{
  struct nbd_tls *t = h->tls_conn;
  int err, r;

  if (!t->bye_made) {
    r = send_out (t, fd);
    if (r != 1)
      return r == 0 ? nbd_internal_writer_full () : -1;
    if (commit_stage (h) == -1)
      return -1;
    /* Its push never fails (out grows), so neither does this; and this
     * thread may not log through the handle (no lock). */
    do
      err = gnutls_bye (t->session, GNUTLS_SHUT_WR);
    while (err == GNUTLS_E_INTERRUPTED);
    if (err < 0) {
      set_error (EPROTO, "TLS: gnutls_bye: %s", gnutls_strerror (err));
      return -1;
    }
    t->bye_made = true;
  }
  r = send_out (t, fd);
  if (r != 1)
    return r == 0 ? nbd_internal_writer_full () : -1;
  return 0;
}
