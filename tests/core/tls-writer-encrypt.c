/* tls-writer-encrypt: the writer thread encrypts
 * (nbd_set_concurrent_writer_encrypt).  Once the TLS handshake is done the
 * writer callback gets plaintext (request headers you can read; payloads
 * lent, with the zero-copy writer), and the thread of the tests' writer
 * ring (writer-ring.h, use_send) hands everything to
 * nbd_concurrent_writer_send, which makes the records and sends them while
 * the main thread decrypts the replies.  A proxy between the handle and
 * nbdkit reads the client's side of the wire: TLS records, full-sized
 * ones for large payloads, NBD_CMD_DISC's record, then close_notify (made
 * by our thread at the end-of-stream mark), then the end of the stream.
 * The same session without the setting is the control: there the
 * callback sees only records.  Also: the call's argument errors, and the
 * setting without TLS.
 *
 * Run under ThreadSanitizer too (scripts/test.sh tsan pass).
 */
#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"
#include "writer-ring.h"

#define REGION (16 * 1024 * 1024)
#define REQ (256 * 1024)
#define QD 16
#define RECORD_MAX 16384
#define WAIT_MS WR_WAIT_MS

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

/* The writer: the tests' shared ring (writer-ring.h) with use_send, so
 * that its thread sends through nbd_concurrent_writer_send, and record,
 * so that what the callback got can be read afterwards. */

/* Callback calls (flags 0) that start with the request magic: request
 * headers handed over as plaintext.  Lock held. */
static size_t
plaintext_headers (const struct wring *w)
{
  static const unsigned char magic[4] = { 0x25, 0x60, 0x95, 0x13 };
  size_t n = 0;

  for (size_t i = 0; i < w->nr_calls; i++) {
    const struct wr_call *c = &w->calls_log[i];

    if (c->flags == 0 && c->len >= 28 && memcmp (w->log + c->pos, magic, 4) == 0)
      n++;
  }
  return n;
}

static void
writer_start (struct wring *w, struct nbd_handle *h, bool zero_copy)
{
  if (wr_start (w, h) == -1)
    bail_out ("pthread_create");
  WR_SET (w, use_send, true);
  WR_SET (w, record, true);
  if (zero_copy)
    must (nbd_set_concurrent_writer_zero_copy (h, w, wr_enqueue_zc));
  else
    must (nbd_set_concurrent_writer (h, w, wr_enqueue));
}

/* ---- The proxy: reads the client's records on their way --------------- */

struct proxy {
  int client, server;           /* our ends */
  pthread_t thr;
  bool joined;
  size_t plain_left;            /* cleartext before TLS: flags, STARTTLS */
  unsigned char hdr[5];
  size_t hdr_len, skip;
  uint32_t last[2];             /* the last two record lengths */
  uint32_t max_rec;
  size_t records;
  bool client_eof_on_boundary;
  bool client_eof, server_eof;
  bool ok;
  unsigned char buf[256 * 1024]; /* last: proxy_start clears what is before it */
};

static void
parse (struct proxy *p, const unsigned char *b, size_t len)
{
  for (size_t i = 0; i < len;) {
    size_t take;

    if (p->plain_left || p->skip) {
      size_t *left = p->plain_left ? &p->plain_left : &p->skip;

      take = *left < len - i ? *left : len - i;
      *left -= take;
      i += take;
      continue;
    }
    p->hdr[p->hdr_len++] = b[i++];
    if (p->hdr_len == 5) {
      p->hdr_len = 0;
      p->skip = (size_t) p->hdr[3] << 8 | p->hdr[4];
      p->last[0] = p->last[1];
      p->last[1] = (uint32_t) p->skip;
      if (p->last[1] > p->max_rec)
        p->max_rec = p->last[1];
      p->records++;
    }
  }
}

static bool
forward (int from, int to, struct proxy *p, bool from_client)
{
  unsigned char *buf = p->buf;
  ssize_t n = recv (from, buf, sizeof p->buf, 0);

  if (n <= 0) {
    if (from_client) {
      p->client_eof = true;
      p->client_eof_on_boundary = p->hdr_len == 0 && p->skip == 0;
    }
    else
      p->server_eof = true;
    shutdown (to, SHUT_WR);
    return n == 0;
  }
  if (from_client)
    parse (p, buf, n);
  for (ssize_t done = 0; done < n;) {
    ssize_t w = send (to, buf + done, n - done, MSG_NOSIGNAL);

    if (w == -1)
      return false;
    done += w;
  }
  return true;
}

static void *
proxy_thread (void *arg)
{
  struct proxy *p = arg;

  p->ok = true;
  while (p->ok && !(p->client_eof && p->server_eof)) {
    struct pollfd f[2] = { { .fd = p->client_eof ? -1 : p->client, .events = POLLIN },
                           { .fd = p->server_eof ? -1 : p->server, .events = POLLIN } };

    if (poll (f, 2, WAIT_MS) <= 0)
      p->ok = false;
    else if (f[0].revents && !forward (p->client, p->server, p, true))
      p->ok = false;
    else if (f[1].revents && !forward (p->server, p->client, p, false))
      p->ok = false;
  }
  return NULL;
}

/* A socket for the handle whose other end the proxy joins to @path. */
static int
proxy_start (struct proxy *p, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int sv[2];

  memset (p, 0, offsetof (struct proxy, buf));
  p->plain_left = 4 + 16;
  p->server = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  strncpy (sun.sun_path, path, sizeof sun.sun_path - 1);
  if (p->server == -1 || connect (p->server, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    bail_out ("proxy to %s: %m", path);
  p->client = sv[1];
  if (pthread_create (&p->thr, NULL, proxy_thread, p) != 0)
    bail_out ("pthread_create");
  return sv[0];
}

/* The proxy ends by itself once both sides ended their streams (or
 * after WAIT_MS of silence). */
static void
proxy_join (struct proxy *p)
{
  pthread_join (p->thr, NULL);
  p->joined = true;
}

static void
proxy_stop (struct proxy *p)
{
  shutdown (p->client, SHUT_RDWR);
  shutdown (p->server, SHUT_RDWR);
  if (!p->joined)
    pthread_join (p->thr, NULL);
  close (p->client);
  close (p->server);
}

/* ---- The session -------------------------------------------------------- */

static bool saw_write_dir;

static bool
step (struct nbd_handle *h)
{
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

  if (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE)
    saw_write_dir = true;
  if (poll (&pfd, 1, WAIT_MS) <= 0) {
    diag ("no POLLIN for %d s: %s", WAIT_MS / 1000, nbd_connection_state (h));
    return false;
  }
  if (nbd_aio_notify_read (h) == -1) {
    diag ("nbd_aio_notify_read: %s", errmsg ());
    return false;
  }
  return true;
}

static int
done_cb (void *data, int *error)
{
  int *p = data;

  if (*error)
    p[1]++;
  p[0]++;
  return 1;
}

static void
fill (char *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i + 8 <= len; i += 8) {
    uint64_t v = i * UINT64_C (0x9e3779b97f4a7c15) + seed;
    memcpy (buf + i, &v, 8);
  }
}

/* Write the region with QD requests in flight (every fifth of an odd
 * size), read it back, compare; returns the requests issued. */
static int
transfer (struct nbd_handle *h, unsigned seed, const char *what)
{
  char *src = malloc (REGION), *dst = calloc (1, REGION);
  int counts[2], issued = 0, total = 0;
  bool stuck = false;

  if (!src || !dst)
    bail_out ("malloc");
  fill (src, REGION, seed);
  for (int pass = 0; pass < 2 && !stuck; pass++) {
    uint64_t off = 0;

    counts[0] = counts[1] = issued = 0;
    while (!stuck && (off < REGION || counts[0] < issued)) {
      while (off < REGION && issued - counts[0] < QD) {
        size_t len = (issued % 5 == 4) ? 100003 : REQ;
        nbd_completion_callback cb = { .callback = done_cb, .user_data = counts };
        int64_t c;

        if (len > REGION - off)
          len = REGION - off;
        c = pass == 0 ? nbd_aio_pwrite (h, src + off, len, off, cb, 0)
                      : nbd_aio_pread (h, dst + off, len, off, cb, 0);
        if (c == -1) {
          diag ("%s: aio: %s", what, errmsg ());
          stuck = true;
          break;
        }
        issued++;
        off += len;
      }
      if (!stuck && counts[0] < issued && !step (h))
        stuck = true;
    }
    total += issued;
    ok (!stuck, "%s: %s pass finished (%d requests)", what, pass ? "read" : "write", issued);
    is_int (counts[1], 0, "%s: %s pass: no request failed", what, pass ? "read" : "write");
  }
  ok (memcmp (src, dst, REGION) == 0, "%s: %d MiB read back intact", what, REGION >> 20);
  free (src);
  free (dst);
  return total;
}

/* A whole session through the proxy; @encrypt: the writer thread makes
 * the records (else the control: the handle's thread does). */
static void
session (const char *sock, bool psk, bool zero_copy, bool encrypt, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  struct wring w;
  static struct proxy p;
  int fd = proxy_start (&p, sock), requests;
  bool stuck = false;
  uint32_t overhead;
  size_t headers;

  if (!h)
    bail_out ("nbd_create: %s", errmsg ());
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  if (psk) {
    must (nbd_set_tls_psk_file (h, m.psk_file));
    must (nbd_set_tls_username (h, "alice"));
  }
  else
    must (nbd_set_tls_certificates (h, m.client_dir));
  is_int (nbd_set_concurrent_writer_encrypt (h, encrypt), 0, "%s: set encrypt %d", what,
          encrypt);
  is_int (nbd_get_concurrent_writer_encrypt (h), encrypt, "%s: get it back", what);
  writer_start (&w, h, zero_copy);
  saw_write_dir = false;
  is_int (nbd_aio_connect_socket (h, fd), 0, "%s: aio_connect_socket (%s)", what, errmsg ());
  while (!stuck && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h))
    stuck = !step (h);
  if (!is_int (nbd_aio_is_ready (h), 1, "%s: ready (%s)", what, errmsg ()))
    goto out;
  is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", what);
  requests = transfer (h, psk ? 21 : 22, what);
  ok (!saw_write_dir, "%s: the handle never asked to wait for POLLOUT", what);
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown (%s)", what, errmsg ());
  is_int (nbd_aio_is_closed (h), 1, "%s: closed", what);
  ok (wr_wait_done (&w, WAIT_MS), "%s: the writer thread ended after the mark", what);

  pthread_mutex_lock (&w.lock);
  is_int (w.send_errno, 0, "%s: no send failed", what);
  is_int (w.eos_send_rc, 0, "%s: the mark passed on (close_notify, SHUT_WR)", what);
  headers = plaintext_headers (&w);
  if (encrypt) {
    /* The handle's own thread encrypted nothing: every request (the
     * options after the handshake, the I/O, NBD_CMD_DISC) reached the
     * callback as a plaintext header. */
    ok (headers >= (size_t) requests + 1,
        "%s: the callback got plaintext: %zu request headers for %d requests + DISC", what,
        headers, requests);
    if (zero_copy)
      is_uint (w.lent, REGION, "%s: every write payload was lent, under TLS too", what);
  }
  else {
    is_uint (headers, 0, "%s (control): the callback got only records", what);
    is_uint (w.lent, 0, "%s (control): nothing lent under TLS", what);
  }
  pthread_mutex_unlock (&w.lock);

  /* The wire, as the server got it. */
  proxy_join (&p);
  ok (p.ok, "%s: the proxy forwarded everything", what);
  ok (p.client_eof, "%s: the client ended its stream", what);
  overhead = p.max_rec > RECORD_MAX ? p.max_rec - RECORD_MAX : 0;
  ok (p.max_rec > RECORD_MAX && overhead <= 64, "%s: full records on the wire (%u + %u)",
      what, RECORD_MAX, overhead);
  is_int (p.last[0], 28 + overhead, "%s: the record before the last is NBD_CMD_DISC", what);
  is_int (p.last[1], 2 + overhead, "%s: the last record is close_notify", what);
  is_int (p.client_eof_on_boundary, 1, "%s: the stream ended after whole records", what);
out:
  wr_stop (&w);
  nbd_close (h);
  wr_free (&w);
  proxy_stop (&p);
}

/* The setting without TLS: the call sends the bytes as they are. */
static void
plaintext (const char *sock)
{
  struct nbd_handle *h = nbd_create ();
  struct wring w;
  static struct proxy p;
  int fd = proxy_start (&p, sock);
  char *buf = malloc (1 << 20), *back = malloc (1 << 20);

  if (!h || !buf || !back)
    bail_out ("nbd_create or malloc");
  p.plain_left = SIZE_MAX;      /* no records to read */
  must (nbd_set_concurrent_writer_encrypt (h, true));
  writer_start (&w, h, true);
  if (!is_int (nbd_connect_socket (h, fd), 0, "no TLS: connect (%s)", errmsg ()))
    goto out;
  fill (buf, 1 << 20, 5);
  is_int (nbd_pwrite (h, buf, 1 << 20, 0, 0), 0, "no TLS: pwrite (%s)", errmsg ());
  is_int (nbd_pread (h, back, 1 << 20, 0, 0), 0, "no TLS: pread (%s)", errmsg ());
  ok (memcmp (buf, back, 1 << 20) == 0, "no TLS: data intact");
  is_int (nbd_shutdown (h, 0), 0, "no TLS: shutdown (%s)", errmsg ());
out:
  wr_stop (&w);
  nbd_close (h);
  wr_free (&w);
  proxy_stop (&p);
  free (buf);
  free (back);
}

static void
arguments (const char *sock)
{
  struct nbd_handle *h = nbd_create ();
  struct iovec iov = { .iov_base = "x", .iov_len = 1 };

  if (!h)
    bail_out ("nbd_create: %s", errmsg ());
  is_int (nbd_get_concurrent_writer_encrypt (h), 0, "the setting is off by default");
  is_int (nbd_concurrent_writer_send (h, &iov, 1), -1, "send without a socket fails");
  is_errno (ENOTCONN, "send without a socket: ENOTCONN");
  is_int (nbd_concurrent_writer_send (h, NULL, 1), -1, "send with a NULL iov fails");
  is_errno (EFAULT, "a NULL iov: EFAULT");
  is_int (nbd_concurrent_writer_send (h, &iov, -1), -1, "send with iovcnt -1 fails");
  is_errno (EINVAL, "iovcnt -1: EINVAL");
  must (nbd_connect_unix (h, sock));
  is_int (nbd_set_concurrent_writer_encrypt (h, true), -1,
          "the setting cannot change once connected");
  ok (nbd_get_errno () != 0, "with an errno (%s)", errmsg ());
  is_int (nbd_get_concurrent_writer_encrypt (h), 0, "and stays off");
  nbd_close (h);
}

/* A full socket is flow control: -1 with errno EAGAIN, and the last error
 * (a message is formatted, with an allocation, only for real errors) left
 * as it was. */
static void
socket_full (void)
{
  struct nbd_handle *h = nbd_create ();
  static char big[1 << 20];
  struct iovec iov = { .iov_base = big, .iov_len = sizeof big };
  char *before;
  ssize_t r = 0;
  int sv[2], err = 0, calls = 0;

  if (!h || socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    bail_out ("nbd_create or socketpair");
  /* Connecting: the handle waits for a greeting that never comes, and
   * nobody reads sv[1]. */
  must (nbd_aio_connect_socket (h, sv[0]));
  is_int (nbd_concurrent_writer_send (h, NULL, 1), -1, "a NULL iov, for an error to keep");
  before = strdup (errmsg ());
  while (calls++ < 64 && (r = nbd_concurrent_writer_send (h, &iov, 1)) > 0)
    ;
  err = errno;
  is_int (r, -1, "the socket filled up after %d calls", calls);
  is_int (err, EAGAIN, "with errno EAGAIN");
  is_str (errmsg (), before, "the last error is left as it was");
  free (before);
  nbd_close (h);
  close (sv[1]);
}

int
main (void)
{
  struct test_server x509, psk, plain;
  struct nbd_handle *h;
  char *arg1, *arg2;

  tap_timeout (600);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg1, "--tls-certificates=%s", m.server_dir) == -1 ||
      asprintf (&arg2, "--tls-psk=%s", m.psk_file) == -1)
    bail_out ("asprintf");
  if (server_start_nbdkit (&x509, (const char *const[]) { "--tls=require", arg1, "memory",
                                                          "size=16M", NULL }) == -1 ||
      server_start_nbdkit (&psk, (const char *const[]) { "--tls=require", arg2, "memory",
                                                         "size=16M", NULL }) == -1 ||
      server_start_nbdkit (&plain, (const char *const[]) { "memory", "size=16M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  arguments (plain.sock);
  socket_full ();
  session (psk.sock, true, false, true, "PSK, copying writer, the thread encrypts");
  session (x509.sock, false, true, true, "X.509, zero-copy writer, the thread encrypts");
  session (psk.sock, true, true, false, "PSK, zero-copy writer, the handle encrypts");
  plaintext (plain.sock);

  is_int (server_stop (&x509), 0, "nbdkit (X.509) stopped");
  is_int (server_stop (&psk), 0, "nbdkit (PSK) stopped");
  is_int (server_stop (&plain), 0, "nbdkit (plain) stopped");
  free (arg1);
  free (arg2);
  return done_testing ();
}
