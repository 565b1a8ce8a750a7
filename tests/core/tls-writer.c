/* tls-writer: the concurrent writer works under TLS.  The writer gets the
 * ciphertext (from the TLS handshake on), a thread of ours sends it while
 * the main thread receives and decrypts, and a poll loop that only ever
 * waits for POLLIN never hangs on data GnuTLS already holds.  Large
 * transfers come back intact; nbd_shutdown hands over NBD_CMD_DISC's
 * record, then close_notify, then the end-of-stream mark; a writer set on a
 * connection already in TLS takes over where the socket left off; and a
 * writer failure kills the connection with the writer's errno.
 *
 * Run under ThreadSanitizer too (scripts/test.sh tsan pass).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

#define REGION (24 * 1024 * 1024)
#define REQ (256 * 1024)
#define QD 32
#define RECORD_MAX 16384        /* plaintext of a full TLS record */

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

/* ---- The writer: a double buffer and a thread ------------------------- */

struct writer {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  char *buf;                    /* filled by the callback */
  size_t len, cap;
  bool eos, stop;
  int fd;
  struct nbd_handle *h;
  pthread_t thr;
  size_t fail_after;            /* report EIO once this many bytes were sent (0: never) */
  size_t sent;                  /* (both under lock) */
  /* Record framing of what the callback got (main thread only), after
   * the plaintext before TLS: our flags and the STARTTLS option. */
  size_t plain_left;
  unsigned char hdr[5];
  size_t hdr_len, skip;
  uint32_t last[2];             /* the last two record payload lengths */
  uint32_t max_rec;             /* the largest: 16 KiB + the cipher's overhead */
  size_t records;
  bool eos_on_boundary;
  bool eos_seen;
  size_t calls_after_eos;
};

static void
writer_cb (void *data, const void *buf, size_t len)
{
  struct writer *w = data;
  const unsigned char *p = buf;

  if (w->eos_seen)
    w->calls_after_eos++;
  if (!buf && len == 0) {
    w->eos_seen = true;
    w->eos_on_boundary = w->hdr_len == 0 && w->skip == 0;
  }
  for (size_t i = 0; i < len;) {
    if (w->plain_left) {
      size_t take = w->plain_left < len - i ? w->plain_left : len - i;
      w->plain_left -= take;
      i += take;
      continue;
    }
    if (w->skip) {
      size_t take = w->skip < len - i ? w->skip : len - i;
      w->skip -= take;
      i += take;
      continue;
    }
    w->hdr[w->hdr_len++] = p[i++];
    if (w->hdr_len == 5) {
      w->hdr_len = 0;
      w->skip = (size_t) w->hdr[3] << 8 | w->hdr[4];
      w->last[0] = w->last[1];
      w->last[1] = (uint32_t) w->skip;
      if (w->last[1] > w->max_rec)
        w->max_rec = w->last[1];
      w->records++;
    }
  }

  pthread_mutex_lock (&w->lock);
  if (buf && len) {
    if (w->len + len > w->cap) {
      size_t cap = w->cap ? w->cap : 1 << 20;
      while (cap < w->len + len)
        cap *= 2;
      char *nb = realloc (w->buf, cap);
      if (!nb) {
        pthread_mutex_unlock (&w->lock);
        nbd_concurrent_writer_error (w->h, ENOMEM);
        return;
      }
      w->buf = nb;
      w->cap = cap;
    }
    memcpy (w->buf + w->len, buf, len);
    w->len += len;
  }
  else
    w->eos = true;
  pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
}

static bool
send_all (struct writer *w, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t r = send (w->fd, p, n, MSG_NOSIGNAL);

    if (r == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd pfd = { .fd = w->fd, .events = POLLOUT };
        poll (&pfd, 1, 1000);
        continue;
      }
      if (errno == EINTR)
        continue;
      nbd_concurrent_writer_error (w->h, errno);
      return false;
    }
    p += r;
    n -= r;
  }
  return true;
}

static void *
writer_thread (void *arg)
{
  struct writer *w = arg;
  char *mine = NULL;
  size_t mine_cap = 0;

  for (;;) {
    size_t n;
    bool eos, fail;

    pthread_mutex_lock (&w->lock);
    while (w->len == 0 && !w->eos && !w->stop)
      pthread_cond_wait (&w->cond, &w->lock);
    if (w->stop && w->len == 0) {
      pthread_mutex_unlock (&w->lock);
      break;
    }
    /* Swap buffers: send ours while the callback fills the other. */
    char *t = w->buf;
    size_t tc = w->cap;
    w->buf = mine;
    w->cap = mine_cap;
    mine = t;
    mine_cap = tc;
    n = w->len;
    w->len = 0;
    eos = w->eos && n == 0;
    fail = w->fail_after && w->sent + n >= w->fail_after;
    pthread_mutex_unlock (&w->lock);
    if (n) {
      if (fail) {
        nbd_concurrent_writer_error (w->h, EIO);
        break;
      }
      if (!send_all (w, mine, n))
        break;
      pthread_mutex_lock (&w->lock);
      w->sent += n;
      pthread_mutex_unlock (&w->lock);
      continue;
    }
    if (eos) {
      shutdown (w->fd, SHUT_WR);
      break;
    }
  }
  free (mine);
  return NULL;
}

static void
writer_start (struct writer *w, struct nbd_handle *h, int fd)
{
  memset (w, 0, sizeof *w);
  pthread_mutex_init (&w->lock, NULL);
  pthread_cond_init (&w->cond, NULL);
  w->h = h;
  w->fd = fd;
  w->plain_left = 4 + 16;
  if (pthread_create (&w->thr, NULL, writer_thread, w) != 0)
    bail_out ("pthread_create");
}

static void
writer_stop (struct writer *w)
{
  pthread_mutex_lock (&w->lock);
  w->stop = true;
  pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
  pthread_join (w->thr, NULL);
  free (w->buf);
  pthread_mutex_destroy (&w->lock);
  pthread_cond_destroy (&w->cond);
}

/* ---- The loop: POLLIN only -------------------------------------------- */

static bool saw_write_dir;

/* One step of the caller's event loop; false if nothing happened in 60 s
 * (a bound for a hang, generous for a loaded machine under TSan) or the
 * handle refused the event (then the handle is dead, which the callers
 * check, and the error is in the log). */
static bool
step (struct nbd_handle *h, int fd)
{
  unsigned dir = nbd_aio_get_direction (h);
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    saw_write_dir = true;
  if (poll (&pfd, 1, 60000) <= 0) {
    diag ("no POLLIN for 60 s: %s", nbd_connection_state (h));
    return false;
  }
  if (nbd_aio_notify_read (h) == -1) {
    diag ("nbd_aio_notify_read: %s", errmsg ());
    return false;
  }
  return true;
}

static int
raw_connect (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  strncpy (sun.sun_path, path, sizeof sun.sun_path - 1);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    bail_out ("connect %s: %m", path);
  return fd;
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
fill (char *buf, size_t len, uint64_t off, unsigned seed)
{
  for (size_t i = 0; i + 8 <= len; i += 8) {
    uint64_t v = (off + i) * UINT64_C (0x9e3779b97f4a7c15) + seed;
    memcpy (buf + i, &v, 8);
  }
}

/* Write the region with QD requests in flight (some of odd sizes), then
 * read it back and compare; all through the caller's POLLIN-only loop. */
static void
transfer (struct nbd_handle *h, int fd, unsigned seed, const char *what)
{
  char *src = malloc (REGION), *dst = malloc (REGION);
  int counts[2] = { 0, 0 }, issued = 0;
  bool stuck = false;

  if (!src || !dst)
    bail_out ("malloc");
  fill (src, REGION, 0, seed);
  memset (dst, 0, REGION);
  for (int pass = 0; pass < 2 && !stuck; pass++) {
    uint64_t off = 0;

    counts[0] = counts[1] = issued = 0;
    while (!stuck && (off < REGION || counts[0] < issued)) {
      while (off < REGION && issued - counts[0] < QD) {
        /* Every fifth request an odd size, so records do not line up. */
        size_t len = (issued % 5 == 4) ? 100003 : REQ;
        int64_t c;

        if (len > REGION - off)
          len = REGION - off;
        c = pass == 0
          ? nbd_aio_pwrite (h, src + off, len, off,
                            (nbd_completion_callback) { .callback = done_cb,
                                                        .user_data = counts }, 0)
          : nbd_aio_pread (h, dst + off, len, off,
                           (nbd_completion_callback) { .callback = done_cb,
                                                       .user_data = counts }, 0);
        if (c == -1) {
          diag ("%s: aio: %s", what, errmsg ());
          stuck = true;
          break;
        }
        issued++;
        off += len;
      }
      if (!stuck && counts[0] < issued && !step (h, fd))
        stuck = true;
    }
    ok (!stuck, "%s: %s pass finished (%d requests)", what, pass ? "read" : "write", issued);
    is_int (counts[1], 0, "%s: %s pass: no request failed", what, pass ? "read" : "write");
  }
  ok (memcmp (src, dst, REGION) == 0, "%s: %d MiB read back intact", what, REGION >> 20);
  free (src);
  free (dst);
}

/* A whole session with the writer set before connecting. */
static void
session (const char *sock, bool psk, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  struct writer w;
  int fd = raw_connect (sock);
  bool stuck = false;

  if (!h)
    bail_out ("nbd_create: %s", errmsg ());
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  if (psk) {
    must (nbd_set_tls_psk_file (h, m.psk_file));
    must (nbd_set_tls_username (h, "alice"));
  }
  else
    must (nbd_set_tls_certificates (h, m.client_dir));
  writer_start (&w, h, fd);
  is_int (nbd_set_concurrent_writer (h, &w, writer_cb), 0, "%s: set the writer", what);
  saw_write_dir = false;
  is_int (nbd_aio_connect_socket (h, fd), 0, "%s: aio_connect_socket (%s)", what, errmsg ());
  while (!stuck && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h))
    stuck = !step (h, fd);
  if (!is_int (nbd_aio_is_ready (h), 1, "%s: ready (%s)", what, errmsg ()))
    goto out;
  ok (w.records >= 2, "%s: the TLS handshake went through the writer (%zu records)", what,
      w.records);
  is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS negotiated", what);
  transfer (h, fd, psk ? 11 : 12, what);
  ok (!saw_write_dir, "%s: the handle never asked to wait for POLLOUT", what);

  /* nbd_shutdown polls with the lock held, which is fine for a writer
   * thread that never takes it. */
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown (%s)", what, errmsg ());
  is_int (nbd_aio_is_closed (h), 1, "%s: closed", what);
  is_int (w.eos_seen, 1, "%s: the writer got the end-of-stream mark", what);
  ok (w.max_rec > RECORD_MAX && w.max_rec - RECORD_MAX <= 64,
      "%s: full records of 16 KiB (+ %u bytes of cipher)", what, w.max_rec - RECORD_MAX);
  is_int (w.last[0], 28 + (w.max_rec - RECORD_MAX),
          "%s: the record before it is NBD_CMD_DISC", what);
  is_int (w.last[1], 2 + (w.max_rec - RECORD_MAX), "%s: the last record is close_notify", what);
  is_int (w.eos_on_boundary, 1, "%s: the mark came after whole records", what);
  is_int (w.calls_after_eos, 0, "%s: nothing after the mark", what);
out:
  writer_stop (&w);
  nbd_close (h);
}

/* Start without a writer, then hand over to one, mid-connection. */
static void
late_writer (const char *sock)
{
  struct nbd_handle *h = nbd_create ();
  struct writer w;
  int fd = raw_connect (sock);
  char *buf = malloc (4 << 20), *back = malloc (4 << 20);
  int counts[2] = { 0, 0 };
  int64_t c;

  if (!h || !buf || !back)
    bail_out ("nbd_create or malloc");
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  must (nbd_set_tls_certificates (h, m.client_dir));
  if (!is_int (nbd_connect_socket (h, fd), 0, "late writer: connect (%s)", errmsg ()))
    goto out0;
  fill (buf, 4 << 20, 0, 99);
  /* A large write queued without a writer: part of it is still waiting
   * (as ciphertext or plaintext) when the writer arrives. */
  c = nbd_aio_pwrite (h, buf, 4 << 20, 0,
                      (nbd_completion_callback) { .callback = done_cb, .user_data = counts }, 0);
  ok (c > 0, "late writer: 4 MiB write queued");
  writer_start (&w, h, fd);
  is_int (nbd_set_concurrent_writer (h, &w, writer_cb), 0,
          "late writer: set on a connected TLS handle (%s)", errmsg ());
  while (counts[0] < 1 && step (h, fd))
    ;
  is_int (counts[0], 1, "late writer: the write completed");
  is_int (counts[1], 0, "late writer: successfully");
  is_int (nbd_pread (h, back, 4 << 20, 0, 0), 0, "late writer: pread (%s)", errmsg ());
  ok (memcmp (buf, back, 4 << 20) == 0, "late writer: data intact");
  is_int (nbd_shutdown (h, 0), 0, "late writer: shutdown (%s)", errmsg ());
  writer_stop (&w);
out0:
  nbd_close (h);
  free (buf);
  free (back);
}

/* The writer fails half-way: the connection dies with its errno. */
static void
failing_writer (const char *sock)
{
  struct nbd_handle *h = nbd_create ();
  struct writer w;
  int fd = raw_connect (sock);
  char *buf = malloc (8 << 20);
  int counts[2] = { 0, 0 }, queued = 0;
  bool stuck = false;

  if (!h || !buf)
    bail_out ("nbd_create or malloc");
  memset (buf, 7, 8 << 20);
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  must (nbd_set_tls_certificates (h, m.client_dir));
  writer_start (&w, h, fd);
  is_int (nbd_set_concurrent_writer (h, &w, writer_cb), 0, "failing writer: set the writer");
  is_int (nbd_aio_connect_socket (h, fd), 0, "failing writer: aio_connect_socket (%s)",
          errmsg ());
  while (!stuck && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h))
    stuck = !step (h, fd);
  if (!is_int (nbd_aio_is_ready (h), 1, "failing writer: ready (%s)", errmsg ()))
    goto out;
  pthread_mutex_lock (&w.lock);
  w.fail_after = w.sent + (2 << 20);
  pthread_mutex_unlock (&w.lock);
  /* Once the writer failed, the next request is refused with its EIO
   * (and kills the handle: later ones are EINVAL, a dead handle); the
   * ones queued before complete with EIO. */
  for (int i = 0, refused = 0; i < 4; i++)
    if (nbd_aio_pwrite (h, buf + i * (2 << 20), 2 << 20, (uint64_t) i * (2 << 20),
                        (nbd_completion_callback) { .callback = done_cb,
                                                    .user_data = counts }, 0) > 0)
      queued++;
    else if (refused++ == 0)
      is_errno (EIO, "failing writer: the first write refused after the failure says EIO");
    else
      is_errno (EINVAL, "failing writer: later ones find a dead handle");
  ok (queued >= 1, "failing writer: %d write(s) queued before the failure", queued);
  while (counts[0] < queued && !nbd_aio_is_dead (h) && step (h, fd))
    ;
  is_int (nbd_aio_is_dead (h), 1, "failing writer: the handle is dead");
  is_int (counts[0], queued, "failing writer: every queued write completed");
  is_int (counts[1], queued, "failing writer: and failed");
  ok (nbd_pread (h, buf, 512, 0, 0) == -1, "failing writer: later calls fail");
out:
  writer_stop (&w);
  nbd_close (h);
  free (buf);
}

int
main (void)
{
  struct test_server x509, psk;
  struct nbd_handle *h;
  char *arg1, *arg2;

  tap_timeout (300);
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
                                                          "size=32M", NULL }) == -1 ||
      server_start_nbdkit (&psk, (const char *const[]) { "--tls=require", arg2, "memory",
                                                         "size=32M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  session (x509.sock, false, "X.509 through the writer");
  session (psk.sock, true, "PSK through the writer");
  late_writer (x509.sock);
  failing_writer (x509.sock);

  is_int (server_stop (&x509), 0, "nbdkit (X.509) stopped");
  is_int (server_stop (&psk), 0, "nbdkit (PSK) stopped");
  free (arg1);
  free (arg2);
  return done_testing ();
}
