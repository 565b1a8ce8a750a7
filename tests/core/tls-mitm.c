/* tls-mitm: a man in the middle between us and a real nbdkit (--tls=require)
 * cannot get us to use plaintext or to accept garbage as STARTTLS's answer,
 * and what we send under TLS is what we mean to send.
 *
 * The MitM is a relay in this program (a thread on its own Unix socket, in
 * front of nbdkit's).  It passes the server's greeting (or clears
 * FIXED_NEWSTYLE in it), reads our first option, and then either passes
 * everything on or answers that option itself: with ERR_UNSUP (stripping
 * TLS), with the wrong magic, an ACK with a payload, a reply to another
 * option, a reply type that makes no sense, an ACK followed by plaintext, or
 * an ACK and a hang-up.  With TLS required or only allowed, every one of
 * those must fail the connection; only the stripped STARTTLS is a refusal
 * (ENOTSUP), the rest are protocol errors.
 *
 * When it passes everything, it parses the TLS records we send and so
 * proves: STARTTLS is our first option; a large write goes out in full-size
 * records; many small requests share a record; and nbd_shutdown ends with
 * NBD_CMD_DISC's record, then close_notify, then the end of our write side.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

#define NBD_REP_MAGIC UINT64_C (0x3e889045565a9)
#define OPT_STARTTLS 5
#define REP_ACK 1
#define REP_SERVER 2
#define REP_ERR_UNSUP (UINT32_C (1) << 31 | 1)
#define MAX_RECORDS 100000
/* A full record carries 16 KiB of plaintext; what the cipher adds to every
 * record (17 bytes in TLS 1.3 with an AEAD, 24 in TLS 1.2 with AES-GCM) is
 * measured from the full ones. */
#define RECORD_MAX 16384

enum mode {
  PASS, STRIP, BAD_MAGIC, ACK_PAYLOAD, WRONG_OPTION, BAD_TYPE, ACK_PLAINTEXT, ACK_CLOSE,
  MASK_FIXED,
};

static struct proxy {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  char *path;
  const char *upstream;
  int listen_fd;
  enum mode mode;
  /* What the last session saw. */
  uint32_t first_option;
  bool got_first_option;
  uint32_t *records;            /* payload lengths of our TLS records */
  size_t nr_records;
  bool client_eof;              /* we shut down our write side */
  bool partial_record;          /* the stream ended inside a record */
  unsigned sessions;
} px = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

static bool
read_full (int fd, void *buf, size_t n)
{
  char *p = buf;

  while (n > 0) {
    ssize_t r = read (fd, p, n);

    if (r <= 0) {
      if (r == -1 && errno == EINTR)
        continue;
      return false;
    }
    p += r;
    n -= r;
  }
  return true;
}

static bool
write_full (int fd, const void *buf, size_t n)
{
  const char *p = buf;

  while (n > 0) {
    ssize_t r = send (fd, p, n, MSG_NOSIGNAL);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      return false;
    }
    p += r;
    n -= r;
  }
  return true;
}

static bool
send_reply (int fd, uint64_t magic, uint32_t option, uint32_t type, const void *payload,
            uint32_t len)
{
  char hdr[20];
  uint64_t m64 = htobe64 (magic);
  uint32_t o = htobe32 (option), t = htobe32 (type), l = htobe32 (len);

  memcpy (hdr, &m64, 8);
  memcpy (hdr + 8, &o, 4);
  memcpy (hdr + 12, &t, 4);
  memcpy (hdr + 16, &l, 4);
  return write_full (fd, hdr, sizeof hdr) && (len == 0 || write_full (fd, payload, len));
}

/* Our TLS records, client to server: 5-byte headers, then the payload. */
struct record_parser {
  unsigned char hdr[5];
  size_t hdr_len;
  size_t skip;
};

static void
parse_records (struct record_parser *rp, const unsigned char *p, size_t n)
{
  while (n > 0) {
    if (rp->skip > 0) {
      size_t take = rp->skip < n ? rp->skip : n;

      rp->skip -= take;
      p += take;
      n -= take;
      continue;
    }
    rp->hdr[rp->hdr_len++] = *p++;
    n--;
    if (rp->hdr_len == 5) {
      uint32_t len = (uint32_t) rp->hdr[3] << 8 | rp->hdr[4];

      rp->hdr_len = 0;
      rp->skip = len;
      pthread_mutex_lock (&px.lock);
      if (px.nr_records < MAX_RECORDS)
        px.records[px.nr_records++] = len;
      pthread_mutex_unlock (&px.lock);
    }
  }
}

/* Pass bytes both ways until both sides have finished. */
static void
relay (int c, int s, bool parse)
{
  struct record_parser rp = { .hdr_len = 0 };
  bool c_open = true, s_open = true;
  unsigned char buf[65536];

  while (c_open || s_open) {
    struct pollfd fds[2] = { { .fd = c_open ? c : -1, .events = POLLIN },
                             { .fd = s_open ? s : -1, .events = POLLIN } };

    if (poll (fds, 2, 10000) <= 0)
      break;
    if (fds[0].revents) {
      ssize_t n = read (c, buf, sizeof buf);

      if (n <= 0) {
        c_open = false;
        shutdown (s, SHUT_WR);
        pthread_mutex_lock (&px.lock);
        px.client_eof = n == 0;
        px.partial_record = rp.hdr_len != 0 || rp.skip != 0;
        pthread_mutex_unlock (&px.lock);
      }
      else {
        if (parse)
          parse_records (&rp, buf, n);
        if (!write_full (s, buf, n))
          break;
      }
    }
    if (fds[1].revents) {
      ssize_t n = read (s, buf, sizeof buf);

      if (n <= 0) {
        s_open = false;
        shutdown (c, SHUT_WR);
      }
      else if (!write_full (c, buf, n))
        break;
    }
  }
}

static void
drain (int c)
{
  char buf[4096];
  struct pollfd pfd = { .fd = c, .events = POLLIN };

  while (poll (&pfd, 1, 5000) > 0 && read (c, buf, sizeof buf) > 0)
    ;
}

static void
session (int c)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  unsigned char greet[18], cflags[4], ohdr[16], payload[4096];
  int s = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  enum mode mode;
  uint32_t option, len;

  pthread_mutex_lock (&px.lock);
  mode = px.mode;
  pthread_mutex_unlock (&px.lock);
  strncpy (sun.sun_path, px.upstream, sizeof sun.sun_path - 1);
  if (s == -1 || connect (s, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      !read_full (s, greet, sizeof greet))
    goto out;
  if (mode == MASK_FIXED)
    greet[17] &= ~1;
  if (!write_full (c, greet, sizeof greet) || !read_full (c, cflags, 4) ||
      !write_full (s, cflags, 4) || !read_full (c, ohdr, sizeof ohdr))
    goto out;
  memcpy (&option, ohdr + 8, 4);
  memcpy (&len, ohdr + 12, 4);
  option = be32toh (option);
  len = be32toh (len);
  pthread_mutex_lock (&px.lock);
  px.first_option = option;
  px.got_first_option = true;
  pthread_mutex_unlock (&px.lock);
  if (len > sizeof payload || !read_full (c, payload, len))
    goto out;

  switch (mode) {
  case PASS:
    if (write_full (s, ohdr, sizeof ohdr) && write_full (s, payload, len))
      relay (c, s, option == OPT_STARTTLS);
    break;
  case STRIP:
    if (send_reply (c, NBD_REP_MAGIC, option, REP_ERR_UNSUP, NULL, 0))
      relay (c, s, false);
    break;
  case BAD_MAGIC:
    send_reply (c, NBD_REP_MAGIC ^ 1, option, REP_ACK, NULL, 0);
    drain (c);
    break;
  case ACK_PAYLOAD:
    send_reply (c, NBD_REP_MAGIC, option, REP_ACK, "abcd", 4);
    drain (c);
    break;
  case WRONG_OPTION:
    send_reply (c, NBD_REP_MAGIC, 7, REP_ACK, NULL, 0);
    drain (c);
    break;
  case BAD_TYPE:
    send_reply (c, NBD_REP_MAGIC, option, REP_SERVER, NULL, 0);
    drain (c);
    break;
  case ACK_PLAINTEXT:
    /* "TLS" that is really another plaintext option reply. */
    if (send_reply (c, NBD_REP_MAGIC, option, REP_ACK, NULL, 0))
      send_reply (c, NBD_REP_MAGIC, option, REP_ERR_UNSUP, NULL, 0);
    drain (c);
    break;
  case ACK_CLOSE:
    send_reply (c, NBD_REP_MAGIC, option, REP_ACK, NULL, 0);
    break;
  case MASK_FIXED:
    drain (c);
    break;
  }
out:
  if (s >= 0)
    close (s);
}

static void *
proxy_thread (void *arg)
{
  for (;;) {
    int c = accept4 (px.listen_fd, NULL, NULL, SOCK_CLOEXEC);

    if (c == -1) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return NULL;              /* the listening socket was shut down: stop */
    }
    session (c);
    close (c);
    pthread_mutex_lock (&px.lock);
    px.sessions++;
    pthread_cond_broadcast (&px.cond);
    pthread_mutex_unlock (&px.lock);
  }
}

/* Set up the next session; returns the session count to wait for. */
static unsigned
arm (enum mode mode)
{
  unsigned next;

  pthread_mutex_lock (&px.lock);
  px.mode = mode;
  px.got_first_option = false;
  px.first_option = 0;
  px.nr_records = 0;
  px.client_eof = px.partial_record = false;
  next = px.sessions + 1;
  pthread_mutex_unlock (&px.lock);
  return next;
}

static bool
wait_session (unsigned n)
{
  struct timespec ts;
  bool done;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += 10;
  pthread_mutex_lock (&px.lock);
  while (px.sessions < n)
    if (pthread_cond_timedwait (&px.cond, &px.lock, &ts) != 0)
      break;
  done = px.sessions >= n;
  pthread_mutex_unlock (&px.lock);
  return done;
}

static struct nbd_handle *
client (int tls)
{
  struct nbd_handle *h = nbd_create ();

  must (nbd_set_tls (h, tls));
  must (nbd_set_tls_certificates (h, m.client_dir));
  return h;
}

/* The MitM answers STARTTLS with @mode: the connection must fail. */
static void
attack (enum mode mode, int tls, int err, const char *words, const char *what)
{
  unsigned n = arm (mode);
  struct nbd_handle *h = client (tls);
  int rc = nbd_connect_unix (h, px.path);

  if (is_int (rc, -1, "%s: the connection fails", what)) {
    is_errno (err, "%s: errno", what);
    ok (strstr (errmsg (), words) != NULL, "%s: the message says \"%s\": %s", what, words,
        errmsg ());
    is_int (nbd_aio_is_dead (h), 1, "%s: dead, not in plaintext", what);
  }
  nbd_close (h);
  ok (wait_session (n), "%s: the MitM's session ended", what);
  pthread_mutex_lock (&px.lock);
  if (mode != MASK_FIXED)
    is_int (px.first_option, OPT_STARTTLS, "%s: our first option was STARTTLS", what);
  pthread_mutex_unlock (&px.lock);
}

static int
done_cb (void *data, int *error)
{
  if (*error)
    (*(int *) data)++;
  return 1;
}

static void
pass_through (void)
{
  unsigned n = arm (PASS);
  struct nbd_handle *h = client (LIBNBD_TLS_REQUIRE);
  size_t big = 1024 * 1024, full = 0, max_small = 0, nr, max_rec = 0, overhead;
  char *w = malloc (big), *r = malloc (64 * 4096);
  int rc, failed = 0;

  memset (w, 0x42, big);
  rc = nbd_connect_unix (h, px.path);
  if (!is_int (rc, 0, "pass-through: connects (%s)", errmsg ()))
    bail_out ("cannot connect through the MitM");
  is_int (nbd_get_tls_negotiated (h), 1, "pass-through: TLS");
  rc = nbd_pwrite (h, w, big, 0, 0);
  is_int (rc, 0, "pass-through: 1 MiB pwrite (%s)", errmsg ());
  pthread_mutex_lock (&px.lock);
  nr = px.nr_records;
  pthread_mutex_unlock (&px.lock);
  /* 64 small reads queued at once: the first leaves alone, the rest
   * together at the next poll. */
  for (int i = 0; i < 64; i++)
    if (nbd_aio_pread (h, r + i * 4096, 4096, (uint64_t) i * 4096,
                       (nbd_completion_callback) { .callback = done_cb, .user_data = &failed },
                       0) == -1)
      bail_out ("aio_pread: %s", nbd_get_error ());
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 10000) <= 0)
      bail_out ("nbd_poll: %s", nbd_get_error ());
  is_int (failed, 0, "pass-through: 64 small reads succeeded");
  ok (memcmp (r, w, 64 * 4096) == 0, "pass-through: and returned the data");
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "pass-through: shutdown (%s)", errmsg ());
  nbd_close (h);
  if (!ok (wait_session (n), "pass-through: the MitM's session ended"))
    goto out;

  pthread_mutex_lock (&px.lock);
  is_int (px.first_option, OPT_STARTTLS, "pass-through: our first option was STARTTLS");
  for (size_t i = 0; i < px.nr_records; i++)
    if (px.records[i] > max_rec)
      max_rec = px.records[i];
  overhead = max_rec - RECORD_MAX;
  ok (max_rec > RECORD_MAX && overhead <= 64,
      "pass-through: the largest records carry 16 KiB (+ %zu bytes of cipher)", overhead);
  for (size_t i = 0; i < px.nr_records; i++) {
    if (px.records[i] == max_rec)
      full++;
    if (i >= nr && px.records[i] < RECORD_MAX && px.records[i] > max_small)
      max_small = px.records[i];
  }
  ok (full >= 63, "pass-through: the 1 MiB write went out in full-size records (%zu)", full);
  ok (max_small >= 10 * 28 + overhead,
      "pass-through: small requests share records (largest: %zu bytes, %zu requests)",
      max_small, (max_small - overhead) / 28);
  if (ok (px.nr_records >= 2, "pass-through: records seen: %zu", px.nr_records)) {
    is_int (px.records[px.nr_records - 2], 28 + overhead,
            "pass-through: the second-last record is NBD_CMD_DISC (28 bytes)");
    is_int (px.records[px.nr_records - 1], 2 + overhead,
            "pass-through: the last record is an alert (close_notify)");
  }
  is_int (px.client_eof, 1, "pass-through: then our write side ended");
  is_int (px.partial_record, 0, "pass-through: on a record boundary");
  pthread_mutex_unlock (&px.lock);
out:
  free (w);
  free (r);
}

int
main (void)
{
  struct test_server srv;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct nbd_handle *h;
  pthread_t thr;
  char *arg;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                         "size=4M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  px.upstream = srv.sock;
  px.records = calloc (MAX_RECORDS, sizeof *px.records);
  if (asprintf (&px.path, "%s/mitm.sock", m.dir) == -1 || !px.records)
    bail_out ("out of memory");
  strncpy (sun.sun_path, px.path, sizeof sun.sun_path - 1);
  px.listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (px.listen_fd == -1 || bind (px.listen_fd, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      listen (px.listen_fd, 4) == -1 || pthread_create (&thr, NULL, proxy_thread, NULL) != 0)
    bail_out ("cannot start the MitM: %m");

  pass_through ();

  attack (STRIP, LIBNBD_TLS_REQUIRE, ENOTSUP, "refused NBD_OPT_STARTTLS",
          "STARTTLS stripped (ERR_UNSUP), TLS required");
  attack (MASK_FIXED, LIBNBD_TLS_REQUIRE, ENOTSUP, "not fixed newstyle",
          "FIXED_NEWSTYLE cleared from the greeting, TLS required");
  for (int tls = LIBNBD_TLS_ALLOW; tls <= LIBNBD_TLS_REQUIRE; tls++) {
    const char *t = tls == LIBNBD_TLS_ALLOW ? "TLS allowed" : "TLS required";
    char what[128];

#define ATTACK(mode, err, words, desc)                                   \
    snprintf (what, sizeof what, "%s, %s", desc, t);                   \
    attack ((mode), tls, (err), (words), what)
    ATTACK (BAD_MAGIC, EPROTO, "wrong magic", "reply with the wrong magic");
    ATTACK (ACK_PAYLOAD, EPROTO, "ACK to NBD_OPT_STARTTLS has a payload", "ACK with a payload");
    ATTACK (WRONG_OPTION, EPROTO, "while NBD_OPT_STARTTLS was asked", "reply to another option");
    ATTACK (BAD_TYPE, EPROTO, "unexpected reply type", "NBD_REP_SERVER to STARTTLS");
    ATTACK (ACK_PLAINTEXT, EPROTO, "does not speak TLS", "ACK, then plaintext");
    ATTACK (ACK_CLOSE, ECONNRESET, "closed the connection", "ACK, then a hang-up");
#undef ATTACK
  }

  shutdown (px.listen_fd, SHUT_RDWR);
  pthread_join (thr, NULL);
  close (px.listen_fd);
  server_stop (&srv);
  free (px.records);
  free (px.path);
  free (arg);
  return done_testing ();
}
