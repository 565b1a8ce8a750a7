/* tls-burst-server.h: a small NBD server over TLS 1.3, written here with
 * GnuTLS, that puts post-handshake messages (KeyUpdate, NewSessionTicket)
 * in the middle of its replies, for the tls-post-handshake-* tests.
 *
 * No server the tests start sends them at a moment of the test's choosing,
 * so this one does, in every reply after STARTTLS.  Each reply is a "burst": its pieces (an
 * option reply's records, a read reply's header, chunks and data) go out as
 * separate TLS records, with post-handshake messages before one of the
 * pieces, and the whole burst leaves in ONE send(2), so the client reads
 * the messages and the reply bytes behind them together.  The position
 * and the kind of message cycle from burst to burst: a KeyUpdate asking
 * for the client's (GNUTLS_KU_PEER), two fresh session tickets, a KeyUpdate
 * of the server's keys only.  GnuTLS (3.7) refuses more than 8 KeyUpdates
 * a second on a connection, so each connection gets at most
 * BURST_KEY_UPDATES; tickets stand in after that.
 *
 * It speaks just enough fixed-newstyle NBD: NBD_OPT_STARTTLS (any other
 * option before it gets NBD_REP_ERR_TLS_REQD), then NBD_OPT_STRUCTURED_REPLY,
 * NBD_OPT_GO (NBD_INFO_EXPORT: BURST_SIZE bytes, read-only) and NBD_OPT_ABORT
 * (others: NBD_REP_ERR_UNSUP); NBD_CMD_READ, answered with a simple reply
 * or with two data chunks, of burst_byte (offset); NBD_CMD_DISC.  X.509
 * (tls_material's server_dir) or PSK (its psk_file).
 *
 * With quiet_options set, option replies carry no post-handshake message:
 * only read replies do.
 *
 * It runs as a thread of the test on a Unix socket in the scratch
 * directory, one connection at a time, until burst_server_stop.
 *
 * Stall detection.  Whenever the server waits for the client's bytes it
 * signals idle_fd (an eventfd) and holds `waiting` up for as long as it
 * waits, counting each wait in `wait_gen`.  burst_server_stalled tells,
 * without any clock, that the server is waiting for the client with
 * nothing on the wire in either direction: if the client then waits only
 * for POLLIN, neither side can ever move.
 */
#ifndef GNBD_TESTS_TLS_BURST_SERVER_H
#define GNBD_TESTS_TLS_BURST_SERVER_H

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "servers.h"
#include "tls-material.h"

#define BURST_SIZE (64 * 1024 * 1024)
/* Below GnuTLS's limit of 8 a second (see the top of the file). */
#define BURST_KEY_UPDATES 6
/* The largest read it serves. */
#define BURST_MAX_READ (32 * 1024 * 1024)

/* The export's content: a pattern that shifts every byte and every 2 KiB. */
static inline unsigned char
burst_byte (uint64_t off)
{
  return (unsigned char) (off * 131 + (off >> 11) + 7);
}

struct burst_server {
  bool psk;
  char *sock;
  int listen_fd;
  int stop_fd;                  /* eventfd: burst_server_stop */
  int idle_fd;                  /* eventfd: the server started waiting */
  pthread_t thread;
  gnutls_certificate_credentials_t xcred;
  gnutls_psk_server_credentials_t pskcred;
  gnutls_datum_t ticket_key;

  /* Set by the test between connections: no post-handshake messages in
   * option replies, only in read replies. */
  _Atomic bool quiet_options;

  /* What the stall check reads from the test's thread. */
  _Atomic int fd;               /* the connection, -1 between connections */
  _Atomic bool waiting;
  _Atomic unsigned wait_gen;

  /* What it sent, over all connections. */
  _Atomic unsigned connections, bursts, key_updates, tickets, reads;

  /* The current connection; the server thread's alone. */
  gnutls_session_t session;
  bool hold;                    /* gather what GnuTLS pushes into out */
  char *out;
  size_t out_len, out_cap;
  unsigned burst_no, ku_left;
  bool transmission;            /* past NBD_OPT_GO */
  bool failed;
};

/* ---- I/O -------------------------------------------------------------- */

/* Wait until the client's bytes arrive, visibly (see the stall check). */
static inline void
burst_wait_readable (struct burst_server *s, int fd)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  uint64_t one = 1;

  atomic_fetch_add (&s->wait_gen, 1);
  atomic_store (&s->waiting, true);
  if (write (s->idle_fd, &one, sizeof one) != sizeof one)
    fprintf (stderr, "burst-server: eventfd: %m\n");
  while (poll (&p, 1, -1) == -1 && errno == EINTR)
    ;
  atomic_store (&s->waiting, false);
}

static inline ssize_t
burst_recv (struct burst_server *s, void *buf, size_t len)
{
  int fd = atomic_load (&s->fd);
  ssize_t n;

  burst_wait_readable (s, fd);
  do
    n = recv (fd, buf, len, 0);
  while (n == -1 && errno == EINTR);
  return n;
}

static inline int
burst_send_all (struct burst_server *s, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t n = send (atomic_load (&s->fd), p, len, MSG_NOSIGNAL);

    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= n;
  }
  return 0;
}

static inline ssize_t
burst_pull (gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
  struct burst_server *s = ptr;
  ssize_t n = burst_recv (s, buf, len);

  if (n == -1)
    gnutls_transport_set_errno (s->session, errno);
  return n;
}

static inline int
burst_pull_timeout (gnutls_transport_ptr_t ptr, unsigned ms)
{
  struct burst_server *s = ptr;
  struct pollfd p = { .fd = atomic_load (&s->fd), .events = POLLIN };

  return poll (&p, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int) ms);
}

/* Straight to the socket, or gathered while a burst is being built. */
static inline ssize_t
burst_push (gnutls_transport_ptr_t ptr, const void *buf, size_t len)
{
  struct burst_server *s = ptr;

  if (!s->hold) {
    if (burst_send_all (s, buf, len) == -1) {
      gnutls_transport_set_errno (s->session, errno ? errno : EPIPE);
      return -1;
    }
    return len;
  }
  if (s->out_len + len > s->out_cap) {
    size_t cap = s->out_cap ? s->out_cap : 64 * 1024;
    char *nb;

    while (cap < s->out_len + len)
      cap *= 2;
    nb = realloc (s->out, cap);
    if (!nb) {
      gnutls_transport_set_errno (s->session, ENOMEM);
      return -1;
    }
    s->out = nb;
    s->out_cap = cap;
  }
  memcpy (s->out + s->out_len, buf, len);
  s->out_len += len;
  return len;
}

/* Plaintext before STARTTLS, TLS records after. */
static inline int
burst_read_full (struct burst_server *s, void *buf, size_t len)
{
  char *p = buf;

  while (len > 0) {
    ssize_t n = s->session ? gnutls_record_recv (s->session, p, len) : burst_recv (s, p, len);

    /* GnuTLS answers AGAIN after the client's own KeyUpdate. */
    if (s->session && (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED))
      continue;
    if (n <= 0) {
      if (n < 0 && s->session)
        fprintf (stderr, "burst-server: gnutls_record_recv: %s\n", gnutls_strerror ((int) n));
      return -1;
    }
    p += n;
    len -= n;
  }
  return 0;
}

static inline int
burst_record (struct burst_server *s, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t n = gnutls_record_send (s->session, p, len);

    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n < 0) {
      fprintf (stderr, "burst-server: gnutls_record_send: %s\n", gnutls_strerror ((int) n));
      return -1;
    }
    p += n;
    len -= n;
  }
  return 0;
}

/* ---- Bursts ----------------------------------------------------------- */

struct burst_piece {
  const void *p;
  size_t len;
};

/* The post-handshake messages of burst number @no: a KeyUpdate asking for
 * the client's, two tickets, a KeyUpdate of ours alone, in turn; tickets
 * once this connection has no KeyUpdate left. */
static inline int
burst_post_handshake (struct burst_server *s, unsigned no)
{
  int r;

  if (no % 3 != 1 && s->ku_left > 0) {
    s->ku_left--;
    do
      r = gnutls_session_key_update (s->session, no % 3 == 0 ? GNUTLS_KU_PEER : 0);
    while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
    if (r < 0) {
      fprintf (stderr, "burst-server: gnutls_session_key_update: %s\n", gnutls_strerror (r));
      return -1;
    }
    atomic_fetch_add (&s->key_updates, 1);
    return 0;
  }
  do
    r = gnutls_session_ticket_send (s->session, 2, 0);
  while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
  if (r < 0) {
    fprintf (stderr, "burst-server: gnutls_session_ticket_send: %s\n", gnutls_strerror (r));
    return -1;
  }
  atomic_fetch_add (&s->tickets, 2);
  return 0;
}

/* One reply: its @n pieces as records, post-handshake messages before
 * piece (burst number mod @n), so that reply bytes always follow them;
 * then all of it in a single send(2). */
static inline int
burst_send (struct burst_server *s, const struct burst_piece *pieces, size_t n)
{
  unsigned no = s->burst_no++;
  size_t at = s->transmission || !atomic_load (&s->quiet_options) ? no % n : n;
  int r = 0;

  s->hold = true;
  s->out_len = 0;
  for (size_t i = 0; i < n && r == 0; i++) {
    if (i == at)
      r = burst_post_handshake (s, no);
    if (r == 0)
      r = burst_record (s, pieces[i].p, pieces[i].len);
  }
  s->hold = false;
  if (r == 0)
    r = burst_send_all (s, s->out, s->out_len);
  atomic_fetch_add (&s->bursts, 1);
  return r;
}

/* ---- NBD -------------------------------------------------------------- */

struct burst_opt_reply {
  uint64_t magic;
  uint32_t option;
  uint32_t type;
  uint32_t len;
} __attribute__((packed));

static inline struct burst_opt_reply
burst_opt_hdr (uint32_t option, uint32_t type, uint32_t len)
{
  return (struct burst_opt_reply) {
    .magic = htobe64 (UINT64_C (0x3e889045565a9)),
    .option = htobe32 (option), .type = htobe32 (type), .len = htobe32 (len),
  };
}

/* A plaintext option reply, before STARTTLS. */
static inline int
burst_plain_reply (struct burst_server *s, uint32_t option, uint32_t type)
{
  struct burst_opt_reply r = burst_opt_hdr (option, type, 0);

  return burst_send_all (s, &r, sizeof r);
}

static inline int
burst_start_tls (struct burst_server *s)
{
  const char *prio = s->psk ? "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK"
                            : "NORMAL:-VERS-ALL:+VERS-TLS1.3";
  int r;

  /* Tickets only when a burst sends them, never behind the handshake. */
  r = gnutls_init (&s->session, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET);
  if (r < 0) {
    s->session = NULL;
    goto fail;
  }
  if ((r = gnutls_priority_set_direct (s->session, prio, NULL)) < 0 ||
      (r = s->psk ? gnutls_credentials_set (s->session, GNUTLS_CRD_PSK, s->pskcred)
                  : gnutls_credentials_set (s->session, GNUTLS_CRD_CERTIFICATE, s->xcred)) < 0 ||
      (r = gnutls_session_ticket_enable_server (s->session, &s->ticket_key)) < 0)
    goto fail;
  gnutls_transport_set_ptr (s->session, s);
  gnutls_transport_set_pull_function (s->session, burst_pull);
  gnutls_transport_set_pull_timeout_function (s->session, burst_pull_timeout);
  gnutls_transport_set_push_function (s->session, burst_push);
  do
    r = gnutls_handshake (s->session);
  while (r < 0 && !gnutls_error_is_fatal (r));
  if (r < 0)
    goto fail;
  s->ku_left = BURST_KEY_UPDATES;
  return 0;
fail:
  fprintf (stderr, "burst-server: TLS: %s\n", gnutls_strerror (r));
  return -1;
}

/* NBD_CMD_READ: a simple reply (header, data) or two chunks of data. */
static inline int
burst_read_reply (struct burst_server *s, bool structured, uint64_t handle, uint64_t off,
                  uint32_t count)
{
  unsigned char *data = malloc (count ? count : 1);
  int r;

  if (!data)
    return -1;
  for (uint32_t i = 0; i < count; i++)
    data[i] = burst_byte (off + i);
  if (!structured) {
    struct {
      uint32_t magic, error;
      uint64_t handle;
    } __attribute__((packed)) hdr = { htobe32 (0x67446698), 0, handle };
    struct burst_piece p[] = { { &hdr, sizeof hdr }, { data, count } };

    r = burst_send (s, p, count ? 2 : 1);
  }
  else {
    struct chunk {
      uint32_t magic;
      uint16_t flags, type;
      uint64_t handle;
      uint32_t len;
      uint64_t offset;
    } __attribute__((packed)) c[2];
    uint32_t first = count / 2, second = count - first;
    struct burst_piece p[4];
    size_t n = 0;

    if (first > 0) {
      c[0] = (struct chunk) { htobe32 (0x668e33ef), 0, htobe16 (1), handle,
                              htobe32 (8 + first), htobe64 (off) };
      p[n++] = (struct burst_piece) { &c[0], sizeof c[0] };
      p[n++] = (struct burst_piece) { data, first };
    }
    c[1] = (struct chunk) { htobe32 (0x668e33ef), htobe16 (1), htobe16 (1), handle,
                            htobe32 (8 + second), htobe64 (off + first) };
    p[n++] = (struct burst_piece) { &c[1], sizeof c[1] };
    p[n++] = (struct burst_piece) { data + first, second };
    r = burst_send (s, p, n);
  }
  free (data);
  atomic_fetch_add (&s->reads, 1);
  return r;
}

static inline int
burst_transmission (struct burst_server *s, bool structured)
{
  s->transmission = true;
  for (;;) {
    struct {
      uint32_t magic;
      uint16_t flags, type;
      uint64_t handle, offset;
      uint32_t count;
    } __attribute__((packed)) req;
    uint64_t off;
    uint32_t count;

    if (burst_read_full (s, &req, sizeof req) == -1)
      return -1;
    if (be32toh (req.magic) != 0x25609513)
      return -1;
    off = be64toh (req.offset);
    count = be32toh (req.count);
    switch (be16toh (req.type)) {
    case 0:                     /* NBD_CMD_READ */
      if (count > BURST_MAX_READ || off > BURST_SIZE || count > BURST_SIZE - off)
        return -1;
      if (burst_read_reply (s, structured, req.handle, off, count) == -1)
        return -1;
      break;
    case 2:                     /* NBD_CMD_DISC */
      return 0;
    default:
      return -1;
    }
  }
}

/* One client, from the greeting to its NBD_CMD_DISC or hang-up. */
static inline int
burst_serve (struct burst_server *s)
{
  struct {
    uint64_t magic, version;
    uint16_t gflags;
  } __attribute__((packed)) greeting = {
    htobe64 (UINT64_C (0x4e42444d41474943)), htobe64 (UINT64_C (0x49484156454F5054)),
    htobe16 (1 | 2),            /* FIXED_NEWSTYLE | NO_ZEROES */
  };
  bool structured = false;
  uint32_t cflags;

  if (burst_send_all (s, &greeting, sizeof greeting) == -1 ||
      burst_read_full (s, &cflags, sizeof cflags) == -1)
    return -1;
  for (;;) {
    struct {
      uint64_t magic;
      uint32_t option, len;
    } __attribute__((packed)) opt;
    char payload[4096];
    uint32_t option, len;

    if (burst_read_full (s, &opt, sizeof opt) == -1)
      return -1;
    option = be32toh (opt.option);
    len = be32toh (opt.len);
    if (be64toh (opt.magic) != UINT64_C (0x49484156454F5054) || len > sizeof payload ||
        burst_read_full (s, payload, len) == -1)
      return -1;
    if (!s->session) {
      if (option == 2)          /* NBD_OPT_ABORT */
        return 0;
      if (option != 5) {        /* not NBD_OPT_STARTTLS */
        if (burst_plain_reply (s, option, UINT32_C (0x80000005)) == -1)
          return -1;
        continue;
      }
      if (burst_plain_reply (s, option, 1) == -1 || burst_start_tls (s) == -1)
        return -1;
      continue;
    }
    switch (option) {
    case 8: {                   /* NBD_OPT_STRUCTURED_REPLY */
      struct burst_opt_reply ack = burst_opt_hdr (option, 1, 0);

      if (burst_send (s, (struct burst_piece[]) { { &ack, sizeof ack } }, 1) == -1)
        return -1;
      structured = true;
      break;
    }
    case 7: {                   /* NBD_OPT_GO */
      struct {
        struct burst_opt_reply hdr;
        uint16_t info;
        uint64_t size;
        uint16_t flags;
      } __attribute__((packed)) info = {
        burst_opt_hdr (option, 3, 12), htobe16 (0), htobe64 (BURST_SIZE),
        htobe16 (1 | 2),        /* HAS_FLAGS | READ_ONLY */
      };
      struct burst_opt_reply ack = burst_opt_hdr (option, 1, 0);
      struct burst_piece p[] = { { &info, sizeof info }, { &ack, sizeof ack } };

      if (burst_send (s, p, 2) == -1)
        return -1;
      return burst_transmission (s, structured);
    }
    case 2: {                   /* NBD_OPT_ABORT */
      struct burst_opt_reply ack = burst_opt_hdr (option, 1, 0);

      burst_send (s, (struct burst_piece[]) { { &ack, sizeof ack } }, 1);
      return 0;
    }
    default: {
      struct burst_opt_reply err = burst_opt_hdr (option, UINT32_C (0x80000001), 0);

      if (burst_send (s, (struct burst_piece[]) { { &err, sizeof err } }, 1) == -1)
        return -1;
    }
    }
  }
}

static inline void *
burst_thread (void *arg)
{
  struct burst_server *s = arg;

  for (;;) {
    struct pollfd p[2] = { { .fd = s->listen_fd, .events = POLLIN },
                           { .fd = s->stop_fd, .events = POLLIN } };
    int fd;

    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    fd = accept4 (s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == -1)
      continue;
    atomic_fetch_add (&s->connections, 1);
    atomic_store (&s->fd, fd);
    s->burst_no = 0;
    s->transmission = false;
    if (burst_serve (s) == -1)
      s->failed = true;
    if (s->session) {
      gnutls_deinit (s->session);
      s->session = NULL;
    }
    atomic_store (&s->fd, -1);
    close (fd);
  }
  return NULL;
}

/* ---- Start, stop, stall check ----------------------------------------- */

/* Listen on a fresh socket and serve from a new thread; -1 on failure
 * (message on stderr). */
static inline int
burst_server_start (struct burst_server *s, const struct tls_material *m, bool psk)
{
  static _Atomic unsigned counter;
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  const char *dir = servers_scratch_dir ();
  int r;

  memset (s, 0, sizeof *s);
  s->psk = psk;
  s->fd = -1;
  if (!dir || asprintf (&s->sock, "%s/burst-%u.sock", dir, atomic_fetch_add (&counter, 1)) == -1 ||
      strlen (s->sock) >= sizeof addr.sun_path) {
    fprintf (stderr, "burst-server: no socket path\n");
    return -1;
  }
  strcpy (addr.sun_path, s->sock);
  if (psk) {
    r = gnutls_psk_allocate_server_credentials (&s->pskcred);
    if (r >= 0)
      r = gnutls_psk_set_server_credentials_file (s->pskcred, m->psk_file);
  }
  else {
    char cert[4096], key[4096];

    snprintf (cert, sizeof cert, "%s/server-cert.pem", m->server_dir);
    snprintf (key, sizeof key, "%s/server-key.pem", m->server_dir);
    r = gnutls_certificate_allocate_credentials (&s->xcred);
    if (r >= 0)
      r = gnutls_certificate_set_x509_key_file (s->xcred, cert, key, GNUTLS_X509_FMT_PEM);
  }
  if (r >= 0)
    r = gnutls_session_ticket_key_generate (&s->ticket_key);
  if (r < 0) {
    fprintf (stderr, "burst-server: credentials: %s\n", gnutls_strerror (r));
    return -1;
  }
  s->listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  s->stop_fd = eventfd (0, EFD_CLOEXEC);
  s->idle_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->listen_fd == -1 || s->stop_fd == -1 || s->idle_fd == -1 ||
      bind (s->listen_fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      listen (s->listen_fd, 4) == -1) {
    fprintf (stderr, "burst-server: %s: %m\n", s->sock);
    return -1;
  }
  errno = pthread_create (&s->thread, NULL, burst_thread, s);
  if (errno) {
    fprintf (stderr, "burst-server: pthread_create: %m\n");
    return -1;
  }
  return 0;
}

/* Stop after the current connection; whether every connection went by the
 * protocol (a client that hung up mid-way counts as a failure). */
static inline bool
burst_server_stop (struct burst_server *s)
{
  uint64_t one = 1;

  if (write (s->stop_fd, &one, sizeof one) != sizeof one)
    fprintf (stderr, "burst-server: eventfd: %m\n");
  pthread_join (s->thread, NULL);
  close (s->listen_fd);
  close (s->stop_fd);
  close (s->idle_fd);
  unlink (s->sock);
  free (s->sock);
  free (s->out);
  gnutls_free (s->ticket_key.data);
  if (s->xcred)
    gnutls_certificate_free_credentials (s->xcred);
  if (s->pskcred)
    gnutls_psk_free_server_credentials (s->pskcred);
  return !s->failed;
}

static inline int
burst_unread (int fd)
{
  int n = -1;

  return ioctl (fd, FIONREAD, &n) == -1 ? -1 : n;
}

/* Call from the client's thread, between calls into the handle, after
 * idle_fd fired: true if the server is waiting for the client's bytes and
 * nothing is on the wire either way (no bytes for @client_fd, none for the
 * server).  The server waited throughout if `waiting` held and `wait_gen`
 * did not move around the two reads of the socket queues. */
static inline bool
burst_server_stalled (struct burst_server *s, int client_fd)
{
  unsigned gen = atomic_load (&s->wait_gen);
  bool before = atomic_load (&s->waiting);
  int fd = atomic_load (&s->fd);
  int to_server = fd >= 0 ? burst_unread (fd) : -1;
  int to_client = burst_unread (client_fd);

  return before && fd >= 0 && to_server == 0 && to_client == 0 &&
         atomic_load (&s->waiting) && atomic_load (&s->wait_gen) == gen;
}

/* ---- The client side, shared by the tests (libnbd.h and tap.h first) -- */

static inline const char *
burst_errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

/* @len bytes of the export's content from @off on. */
static inline bool
burst_pattern_at (const unsigned char *buf, size_t len, uint64_t off)
{
  for (size_t i = 0; i < len; i++)
    if (buf[i] != burst_byte (off + i))
      return false;
  return true;
}

/* Completion callbacks counting into a struct burst_count. */
struct burst_count {
  int want, done, failed;
};

static inline int
burst_count_cb (void *data, int *error)
{
  struct burst_count *c = data;

  c->done++;
  if (*error)
    c->failed++;
  return 1;
}

/* A handle set up for @m's server: TLS required, X.509 or PSK (user
 * alice), structured replies as @structured; bails out if the core
 * refuses. */
static inline struct nbd_handle *
burst_client_new (const struct tls_material *m, bool psk, bool structured, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", burst_errmsg ());
  if (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 ||
      (psk ? nbd_set_tls_psk_file (h, m->psk_file) == -1 ||
             nbd_set_tls_username (h, "alice") == -1
           : nbd_set_tls_certificates (h, m->client_dir) == -1) ||
      nbd_set_request_structured_replies (h, structured) == -1)
    bail_out ("%s: setting up the handle: %s", what, burst_errmsg ());
  return h;
}

/* The server sent KeyUpdates and session tickets since it had sent @ku and
 * @tickets: the session met the messages it is about. */
static inline void
burst_check_messages (struct burst_server *s, unsigned ku, unsigned tickets, const char *what)
{
  ok (atomic_load (&s->key_updates) > ku, "%s: the server sent KeyUpdates (%u)", what,
      atomic_load (&s->key_updates) - ku);
  ok (atomic_load (&s->tickets) > tickets, "%s: the server sent session tickets (%u)", what,
      atomic_load (&s->tickets) - tickets);
}

#endif /* GNBD_TESTS_TLS_BURST_SERVER_H */
