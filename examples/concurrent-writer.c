/* concurrent-writer: send through a writer thread of your own while the
 * main thread receives, on one socket (libnbd-core's concurrent writer).
 *
 * The four documented steps (see nbd_set_concurrent_writer in <libnbd.h>):
 *   1. create the handle and a ring (a list of fixed-size chunks), and
 *      start the writer thread;
 *   2. nbd_set_concurrent_writer (h, &ring, enqueue): from now on every
 *      byte the library would send is handed to enqueue(), which copies it
 *      into the ring under the ring's mutex and never blocks;
 *   3. connect and issue commands as usual.  The writer thread sends from
 *      the ring with nbd_concurrent_writer_send (h, iov, n), the library's
 *      non-blocking send(2) to its socket, as many bytes per call as the
 *      ring holds, waiting for POLLOUT on nbd_aio_get_fd (h) when the
 *      socket is full.  It reports a failed send with
 *      nbd_concurrent_writer_error (h, errno).  When the library says "no
 *      more bytes" (buf NULL, len 0), the thread sends what is still queued
 *      and then passes the mark on: nbd_concurrent_writer_send (h, NULL, 0)
 *      (close_notify under TLS, then shutdown (fd, SHUT_WR)).
 *      Batches: the loop that issues a burst of requests marks it
 *      (ring_batch_begin/end); inside it enqueue does not wake the thread,
 *      and at its end the loop sends the burst itself with one
 *      non-blocking send, leaving to the thread only what the socket
 *      did not take.  The hand-off to the thread is then paid only when
 *      the socket is full, never per request;
 *   4. after nbd_shutdown (or when the handle died), stop the thread, then
 *      nbd_close.
 *
 * Under TLS (--tls-psk FILE: nbdkit and the handle use the PSK file,
 * user "concurrent-writer"), nbd_set_concurrent_writer_encrypt (h, true)
 * makes the writer thread encrypt: the ring gets plaintext (payloads lent,
 * with --zero-copy), and nbd_concurrent_writer_send makes the TLS records
 * on the thread that calls it, while the main thread decrypts the replies.
 * Without TLS the setting changes nothing, so the program always sets it.
 *
 * With --zero-copy it uses the zero-copy variant instead,
 * nbd_set_concurrent_writer_zero_copy (h, &ring, enqueue_zero_copy): write
 * payloads are not copied but lent (flags LIBNBD_WRITER_LENT).  The ring
 * then holds two kinds of entries, in order: chunks of copied bytes
 * (handshake, request headers) and references to the caller's buffers.
 * The thread sends both alike, many entries per send (a writev on the
 * socket), and after each successful send gives back
 * the lent bytes it sent with nbd_concurrent_writer_release (h, n).  If a
 * send fails it drops the ring and gives back every lent byte it still
 * holds (the writes complete, with the error, only then), and keeps doing
 * so for anything lent later, until it is told to stop.
 *
 * The program writes SIZE MiB (default 1024) of a pattern to an nbdkit
 * memory disk in 256 KiB requests, 64 in flight, with its own poll loop
 * that only ever waits for POLLIN (the library never needs POLLOUT with a
 * writer), then reads everything back, verifies it and prints MiB/s and
 * requests per second for each.  --no-writer does the same without a
 * writer (the loop then polls for POLLOUT too when the library asks), to
 * compare; --request-size and --in-flight change the shape.
 *
 *   concurrent-writer [--zero-copy | --no-writer] [--request-size BYTES[K|M]]
 *                     [--in-flight N] [--tls-psk FILE] [SIZE_MIB]
 *
 * Build: cc concurrent-writer.c $(pkg-config --cflags --libs libnbd-core) -lpthread
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <libnbd.h>

#define MIB (1024 * 1024)
#define CHUNK_SIZE (1024 * 1024)  /* the ring's unit of allocation */
#define MAX_IOV 64                /* entries per send */
#define DIRECT_MIN (64 * 1024)    /* enqueue sends pieces this large itself */

enum mode { COPY, ZERO_COPY, NO_WRITER };
static const char *const mode_names[] = { "copying writer", "zero-copy writer", "no writer" };

/* ---- The ring ---------------------------------------------------------- */

/* An entry: copied bytes (lent == NULL; data holds CHUNK_SIZE bytes), or
 * a write payload the library lent us (lent; no data).  Either way bytes
 * [start, end) are still to be sent. */
struct chunk {
  struct chunk *next;
  size_t start, end;
  const char *lent;
  char data[];
};

struct ring {
  pthread_mutex_t lock;
  pthread_cond_t cond;          /* bytes queued, end of stream, or stop */
  struct chunk *head, *tail;    /* the thread sends from head; enqueue fills tail */
  struct chunk *spare;          /* sent chunks, kept for reuse */
  size_t queued;                /* bytes in the ring */
  bool end_of_stream;           /* the library will send nothing more */
  bool failed;                  /* sending failed: drop everything (and give it back) */
  size_t lost_lent;             /* lent bytes we had no room to queue (after ENOMEM) */
  bool stop;                    /* main thread: exit now */
  bool sending;                 /* a sender (the thread, or a batch's end) is at work */
  bool batch;                   /* the main loop issues a burst: it sends it itself */
  bool direct;                  /* enqueue may send large pieces itself (see send_direct) */
  uint64_t direct_bytes;        /* ... and these went out from there, uncopied */
  bool encrypting;              /* TLS, with this writer's thread making the records */
  struct nbd_handle *h;
  int fd;                       /* -1 until the thread first needs it */
};

static size_t send_direct (struct ring *r, const char *p, size_t len);

/* Runs inside the library, with the handle's lock held: it must not block
 * and must not call nbd_* on this handle -- except the lock-free
 * nbd_concurrent_writer_error and nbd_concurrent_writer_send. */
static void
enqueue (void *data, const void *buf, size_t len)
{
  struct ring *r = data;
  const char *p = buf;

  pthread_mutex_lock (&r->lock);
  /* A large piece (a write payload): what the socket takes now needs no
   * copy. */
  if (len >= DIRECT_MIN && r->direct) {
    size_t sent = send_direct (r, p, len);

    p += sent;
    len -= sent;
  }
  if (buf == NULL && len == 0)
    r->end_of_stream = true;
  while (len > 0 && !r->failed) {
    struct chunk *c = r->tail;
    size_t n;

    if (c == NULL || c->lent || c->end == CHUNK_SIZE) {
      /* The tail is full (or lent): take a spare chunk or allocate one. */
      c = r->spare;
      if (c)
        r->spare = c->next;
      else if ((c = malloc (sizeof *c + CHUNK_SIZE)) == NULL) {
        r->failed = true;
        nbd_concurrent_writer_error (r->h, ENOMEM);
        break;
      }
      c->next = NULL;
      c->lent = NULL;
      c->start = c->end = 0;
      if (r->tail)
        r->tail->next = c;
      else
        r->head = c;
      r->tail = c;
    }
    n = CHUNK_SIZE - c->end < len ? CHUNK_SIZE - c->end : len;
    memcpy (c->data + c->end, p, n);
    c->end += n;
    p += n;
    len -= n;
    r->queued += n;
  }
  /* Inside a batch the main loop sends at the batch's end: no wake-up. */
  if (!r->batch || r->end_of_stream || r->failed)
    pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* The zero-copy writer callback: the same, except that a write payload
 * comes with LIBNBD_WRITER_LENT and stays valid until we give it back, so
 * the ring only keeps a reference to it.  (After a failure it is queued
 * anyway: the thread drops it and gives it back.) */
static void
enqueue_zero_copy (void *data, const void *buf, size_t len, unsigned flags)
{
  struct ring *r = data;
  struct chunk *c;

  if (!(flags & LIBNBD_WRITER_LENT)) {
    enqueue (data, buf, len);
    return;
  }
  /* Allocated before taking the lock: malloc may be slow. */
  c = malloc (sizeof *c);
  pthread_mutex_lock (&r->lock);
  if (c == NULL) {
    /* No room to queue it: the stream is broken.  Report it, and count
     * the bytes: the thread gives them back with the rest it drops. */
    r->failed = true;
    r->lost_lent += len;
    nbd_concurrent_writer_error (r->h, ENOMEM);
  }
  else {
    c->next = NULL;
    c->lent = buf;
    c->start = 0;
    c->end = len;
    if (r->tail)
      r->tail->next = c;
    else
      r->head = c;
    r->tail = c;
    r->queued += len;
  }
  if (!r->batch || r->failed)
    pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* Called with the lock held, after @n bytes from the head went out.
 * Returns how many of them were lent bytes. */
static size_t
consume (struct ring *r, size_t n)
{
  size_t lent = 0;

  r->queued -= n;
  while (n > 0) {
    struct chunk *c = r->head;
    size_t take = c->end - c->start < n ? c->end - c->start : n;

    c->start += take;
    n -= take;
    if (c->lent) {
      lent += take;
      if (c->start == c->end) {
        /* A lent entry is done with once sent: forget it. */
        r->head = c->next;
        if (c == r->tail)
          r->tail = NULL;
        free (c);
      }
    }
    else if (c->start == c->end) {
      if (c == r->tail)
        c->start = c->end = 0;  /* empty tail: fill it again from the start */
      else {
        r->head = c->next;
        c->next = r->spare;
        r->spare = c;
      }
    }
  }
  return lent;
}

/* After a failure (or when told to stop): drop everything queued.
 * Returns how many lent bytes were among it, to give back. */
static size_t
drop_all (struct ring *r)
{
  size_t lent = r->lost_lent;

  for (struct chunk *c = r->head, *next; c; c = next) {
    next = c->next;
    if (c->lent) {
      lent += c->end - c->start;
      free (c);
    }
    else {
      c->next = r->spare;
      r->spare = c;
    }
  }
  r->head = r->tail = NULL;
  r->queued = 0;
  r->lost_lent = 0;
  return lent;
}

/* Give lent bytes back (lock held; dropped around the call). */
static void
give_back (struct ring *r, size_t lent)
{
  if (lent == 0)
    return;
  pthread_mutex_unlock (&r->lock);
  if (nbd_concurrent_writer_release (r->h, lent) == -1)
    /* Only if we gave back more than was lent: a bug in this program. */
    fprintf (stderr, "concurrent-writer: %s\n", nbd_get_error ());
  pthread_mutex_lock (&r->lock);
}

/* One send of everything the ring holds, copied chunks and lent buffers
 * alike, in one nbd_concurrent_writer_send (the library's non-blocking
 * sendmsg; under TLS with the writer encrypting, the records are made
 * there, on this thread); what went out is retired and the lent part
 * given back.  Called with the lock held and nobody sending; the lock is
 * dropped around the send, while r->sending keeps the
 * other sender (the thread, or a batch's end) away, so only this call
 * retires entries, and enqueue only writes past each chunk's end: these
 * bytes stay put.  Returns 0, or EAGAIN when the socket was full; a
 * failure is reported and marks the ring failed. */
static int
send_queued (struct ring *r)
{
  struct iovec iov[MAX_IOV];
  ssize_t sent;
  int n = 0, err;

  for (struct chunk *c = r->head; c && n < MAX_IOV; c = c->next)
    if (c->end > c->start) {
      iov[n].iov_base = (char *) (c->lent ? c->lent : c->data) + c->start;
      iov[n++].iov_len = c->end - c->start;
    }
  r->sending = true;
  pthread_mutex_unlock (&r->lock);

  sent = nbd_concurrent_writer_send (r->h, iov, n);
  err = sent == -1 ? errno : 0;

  pthread_mutex_lock (&r->lock);
  if (sent > 0)
    give_back (r, consume (r, (size_t) sent));  /* sent: the caller may have them back */
  else if (err == EWOULDBLOCK)
    err = EAGAIN;
  else if (err && err != EAGAIN && err != EINTR) {
    nbd_concurrent_writer_error (r->h, err);
    r->failed = true;
  }
  r->sending = false;
  return err == EAGAIN ? EAGAIN : 0;
}

/* Direct sends, the copying writer's answer to its own copy: enqueue
 * sends a large piece at once, after the bytes queued before it, with the
 * non-blocking nbd_concurrent_writer_send, if nobody else is sending; only
 * what the socket does not take is copied into the ring.  Called with the
 * lock held (dropped around the send, like send_queued); returns how many
 * bytes of p went out.  Only with the copying writer (nothing lent is in
 * the ring) and without TLS (under TLS with the writer encrypting, a send
 * here would encrypt on the thread driving the handle). */
static size_t
send_direct (struct ring *r, const char *p, size_t len)
{
  struct iovec iov[MAX_IOV];
  size_t queued = 0;
  ssize_t sent;
  int n = 0, err;

  if (r->sending || r->failed || r->stop || r->fd < 0)
    return 0;
  for (struct chunk *c = r->head; c; c = c->next)
    if (c->end > c->start) {
      if (n == MAX_IOV - 1)
        return 0;               /* too much queued: leave it to the others */
      iov[n].iov_base = c->data + c->start;
      iov[n++].iov_len = c->end - c->start;
      queued += c->end - c->start;
    }
  iov[n].iov_base = (char *) p;
  iov[n++].iov_len = len;
  r->sending = true;
  pthread_mutex_unlock (&r->lock);

  sent = nbd_concurrent_writer_send (r->h, iov, n);
  err = sent == -1 ? errno : 0;
  if (err && err != EAGAIN)
    nbd_concurrent_writer_error (r->h, err);

  pthread_mutex_lock (&r->lock);
  r->sending = false;
  if (sent == -1) {
    r->failed = err != EAGAIN;
    return 0;
  }
  consume (r, (size_t) sent < queued ? (size_t) sent : queued);
  r->direct_bytes += (size_t) sent > queued ? (size_t) sent - queued : 0;
  return (size_t) sent > queued ? (size_t) sent - queued : 0;
}

static void *
writer_thread (void *arg)
{
  struct ring *r = arg;

  pthread_mutex_lock (&r->lock);
  for (;;) {
    /* One sender at a time: while the main loop sends a batch, wait. */
    while (r->sending || (!r->stop && !r->failed && r->queued == 0 && !r->end_of_stream))
      pthread_cond_wait (&r->cond, &r->lock);
    if (r->stop || r->failed) {
      /* Nothing queued will ever be sent: drop it and give back what was
       * lent, so that those writes can complete (with the error).  Then
       * wait: the library may still lend a payload or two before it has
       * noticed the failure. */
      give_back (r, drop_all (r));
      if (r->stop)
        break;
      while (!r->stop && r->head == NULL && r->lost_lent == 0)
        pthread_cond_wait (&r->cond, &r->lock);
      continue;
    }
    if (r->fd == -1)
      r->fd = nbd_aio_get_fd (r->h);
    if (r->queued == 0) {
      /* End of stream and everything sent: pass the mark on (under TLS
       * close_notify, then in any case shutdown (fd, SHUT_WR)). */
      ssize_t e;

      pthread_mutex_unlock (&r->lock);
      while ((e = nbd_concurrent_writer_send (r->h, NULL, 0)) == -1 && errno == EAGAIN) {
        struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };

        poll (&pfd, 1, 1000);
      }
      if (e == -1)
        nbd_concurrent_writer_error (r->h, errno);
      pthread_mutex_lock (&r->lock);
      break;
    }
    if (send_queued (r) == EAGAIN) {
      /* The socket is non-blocking (it is the library's): wait until it
       * takes more.  Bounded, so that a stop request is seen. */
      struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };

      pthread_mutex_unlock (&r->lock);
      poll (&pfd, 1, 1000);
      pthread_mutex_lock (&r->lock);
    }
  }
  pthread_mutex_unlock (&r->lock);
  return NULL;
}

/* Batches: the main loop marks a burst of requests.  Their bytes are
 * queued without waking the thread; at the end of the burst (before the
 * loop waits for replies) the loop sends them itself, with one
 * non-blocking send, and only what the socket did not take is left to
 * the thread.  So the thread is handed work only when the socket is full,
 * where it pays (a big write drains while the loop reads replies), and a
 * small request costs no thread hand-off at all.  Bytes queued outside a
 * batch (the handshake, sync calls) wake the thread at once. */
static void
ring_batch_begin (struct ring *r)
{
  pthread_mutex_lock (&r->lock);
  r->batch = true;
  pthread_mutex_unlock (&r->lock);
}

static void
ring_batch_end (struct ring *r)
{
  pthread_mutex_lock (&r->lock);
  r->batch = false;
  /* Not when there is nothing to send, or it is the thread's turn; and
   * not when the thread makes the TLS records (a send here would encrypt
   * on this thread): then the whole batch is the thread's. */
  if (r->queued > 0 && !r->sending && !r->failed && !r->stop && !r->end_of_stream &&
      !r->encrypting)
    send_queued (r);
  /* What is left (the socket was full) is the thread's. */
  if (r->queued > 0 || r->failed)
    pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

static void
ring_free (struct ring *r)
{
  struct chunk *lists[] = { r->head, r->spare };

  for (int i = 0; i < 2; i++)
    for (struct chunk *c = lists[i], *next; c; c = next) {
      next = c->next;
      free (c);
    }
  pthread_cond_destroy (&r->cond);
  pthread_mutex_destroy (&r->lock);
}

/* ---- The copy -------------------------------------------------------- */

struct slot {
  unsigned char *buf;
  uint64_t offset;
  bool busy;
};

static enum mode mode = COPY;
static size_t request_size = 256 * 1024;
static int max_in_flight = 64;
static struct slot *slots;
static int in_flight;
static uint64_t mismatch_at = UINT64_MAX;
static int command_error;

static void
die (const char *call)
{
  const char *msg = nbd_get_error ();

  fprintf (stderr, "concurrent-writer: %s\n", msg ? msg : call);
  exit (1);
}

/* Every 8-byte word holds a mix of its own offset. */
static void
fill_pattern (unsigned char *buf, size_t len, uint64_t offset)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = (offset + i) * UINT64_C (0x9e3779b97f4a7c15) + 1;

    memcpy (buf + i, &word, 8);
  }
}

static int
write_done (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error && !command_error)
    command_error = *error;
  s->busy = false;
  in_flight--;
  return 1;                     /* retire the command */
}

static int
read_done (void *user_data, int *error)
{
  struct slot *s = user_data;
  unsigned char expect[4096];

  if (*error && !command_error)
    command_error = *error;
  for (size_t i = 0; !*error && i < request_size && mismatch_at == UINT64_MAX;
       i += sizeof expect) {
    fill_pattern (expect, sizeof expect, s->offset + i);
    if (memcmp (s->buf + i, expect, sizeof expect) != 0)
      mismatch_at = s->offset + i;
  }
  s->busy = false;
  in_flight--;
  return 1;
}

static struct slot *
free_slot (void)
{
  for (int i = 0; i < max_in_flight; i++)
    if (!slots[i].busy)
      return &slots[i];
  return NULL;
}

/* The poll loop: with a writer only POLLIN, ever. */
static void
wait_for_replies (struct nbd_handle *h, int fd)
{
  unsigned dir = nbd_aio_get_direction (h);
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  assert (mode == NO_WRITER || (dir & LIBNBD_AIO_DIRECTION_WRITE) == 0);
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  if (poll (&pfd, 1, -1) == -1) {
    perror ("poll");
    exit (1);
  }
  if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (h) == -1)
    die ("nbd_aio_notify_read");
  if ((pfd.revents & POLLOUT) && (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE) &&
      nbd_aio_notify_write (h) == -1)
    die ("nbd_aio_notify_write");
}

static double
seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Issue @size bytes of writes (or reads), 64 at a time, until all done. */
static void
run_phase (struct nbd_handle *h, struct ring *r, int fd, uint64_t size, bool writing)
{
  uint64_t next = 0;

  while (next < size || in_flight > 0) {
    struct slot *s;

    if (r)
      ring_batch_begin (r);
    while (next < size && (s = free_slot ()) != NULL) {
      nbd_completion_callback cb = { .callback = writing ? write_done : read_done,
                                     .user_data = s };
      int64_t cookie;

      s->busy = true;
      s->offset = next;
      if (writing) {
        /* Safe even with --zero-copy: the slot is free only once its last
         * write completed, and that is after the thread gave it back. */
        fill_pattern (s->buf, request_size, next);
        cookie = nbd_aio_pwrite (h, s->buf, request_size, next, cb, 0);
      }
      else
        cookie = nbd_aio_pread (h, s->buf, request_size, next, cb, 0);
      if (cookie == -1)
        die (writing ? "nbd_aio_pwrite" : "nbd_aio_pread");
      in_flight++;
      next += request_size;
    }
    if (r)
      ring_batch_end (r);
    if (command_error) {
      fprintf (stderr, "concurrent-writer: a %s failed: %s\n", writing ? "write" : "read",
               strerror (command_error));
      exit (1);
    }
    if (in_flight > 0)
      wait_for_replies (h, fd);
  }
  if (command_error) {
    fprintf (stderr, "concurrent-writer: a %s failed: %s\n", writing ? "write" : "read",
             strerror (command_error));
    exit (1);
  }
}

static void
usage (void)
{
  fprintf (stderr, "usage: concurrent-writer [--zero-copy | --no-writer] "
           "[--request-size BYTES[K|M]] [--in-flight N] [--tls-psk FILE] "
           "[SIZE_MIB (default 1024)]\n");
  exit (1);
}

/* A size in bytes, with an optional K or M. */
static size_t
parse_size (const char *arg)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (arg, &end, 10);
  if (errno || end == arg)
    usage ();
  if (*end == 'K' || *end == 'k')
    v *= 1024, end++;
  else if (*end == 'M' || *end == 'm')
    v *= MIB, end++;
  if (*end != '\0')
    usage ();
  return (size_t) v;
}

int
main (int argc, char *argv[])
{
  static const struct option long_options[] = {
    { "zero-copy", no_argument, NULL, 'z' },
    { "no-writer", no_argument, NULL, 'n' },
    { "request-size", required_argument, NULL, 'r' },
    { "in-flight", required_argument, NULL, 'q' },
    { "tls-psk", required_argument, NULL, 't' },
    { NULL },
  };
  const char *psk_file = NULL;
  char *psk_arg = NULL;
  unsigned long mib = 1024;
  char size_arg[32];
  struct ring ring = { .fd = -1 };
  struct nbd_handle *h;
  pthread_t thread;
  double t0, t_write, t_read;
  uint64_t size, nr_requests;
  int fd, err, c;

  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1)
    switch (c) {
    case 'z':
      if (mode == NO_WRITER)
        usage ();
      mode = ZERO_COPY;
      break;
    case 'n':
      if (mode == ZERO_COPY)
        usage ();
      mode = NO_WRITER;
      break;
    case 'r':
      request_size = parse_size (optarg);
      break;
    case 'q':
      max_in_flight = atoi (optarg);
      break;
    case 't':
      psk_file = optarg;
      break;
    default:
      usage ();
    }
  if (argc - optind > 1 ||
      (argc - optind == 1 && (sscanf (argv[optind], "%lu", &mib) != 1 || mib == 0 ||
                              mib > 65536)))
    usage ();
  /* Whole 4 KiB units (the read check's), at most the protocol's 32 MiB. */
  if (request_size < 4096 || request_size % 4096 || request_size > 32 * MIB ||
      max_in_flight < 1 || max_in_flight > 4096)
    usage ();
  size = (uint64_t) mib * MIB;
  if (size % request_size) {
    fprintf (stderr, "concurrent-writer: SIZE_MIB must be a multiple of the request size\n");
    exit (1);
  }
  nr_requests = size / request_size;
  snprintf (size_arg, sizeof size_arg, "size=%luM", mib);
  if (psk_file) {
    size_t n = strlen ("--tls-psk=") + strlen (psk_file) + 1;

    if ((psk_arg = malloc (n)) == NULL) {
      perror ("malloc");
      exit (1);
    }
    snprintf (psk_arg, n, "--tls-psk=%s", psk_file);
  }
  char *server[] = { "nbdkit", "-s", "--exit-with-parent", "memory", size_arg, NULL, NULL, NULL };
  if (psk_file) {
    server[3] = "--tls=require";
    server[4] = psk_arg;
    server[5] = "memory";
    server[6] = size_arg;
  }

  slots = calloc (max_in_flight, sizeof *slots);
  if (slots == NULL) {
    perror ("calloc");
    exit (1);
  }
  for (int i = 0; i < max_in_flight; i++)
    if ((slots[i].buf = malloc (request_size)) == NULL) {
      perror ("malloc");
      exit (1);
    }

  /* 1. The handle, the ring and the writer thread. */
  h = nbd_create ();
  if (h == NULL)
    die ("nbd_create");
  if (psk_file && (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 ||
                   nbd_set_tls_psk_file (h, psk_file) == -1 ||
                   nbd_set_tls_username (h, "concurrent-writer") == -1))
    die ("nbd_set_tls");
  if (mode != NO_WRITER) {
    /* Under TLS the writer thread makes the records (in send_queued's
     * nbd_concurrent_writer_send); without TLS this changes nothing. */
    if (nbd_set_concurrent_writer_encrypt (h, true) == -1)
      die ("nbd_set_concurrent_writer_encrypt");
    ring.h = h;
    ring.direct = mode == COPY && psk_file == NULL;
    ring.encrypting = psk_file != NULL;
    pthread_mutex_init (&ring.lock, NULL);
    pthread_cond_init (&ring.cond, NULL);
    err = pthread_create (&thread, NULL, writer_thread, &ring);
    if (err) {
      fprintf (stderr, "pthread_create: %s\n", strerror (err));
      exit (1);
    }

    /* 2. Every byte the library sends now goes through enqueue (or, with
     * --zero-copy, enqueue_zero_copy). */
    if (mode == ZERO_COPY) {
      if (nbd_set_concurrent_writer_zero_copy (h, &ring, enqueue_zero_copy) == -1)
        die ("nbd_set_concurrent_writer_zero_copy");
    }
    else if (nbd_set_concurrent_writer (h, &ring, enqueue) == -1)
      die ("nbd_set_concurrent_writer");
  }

  /* 3. Connect and work as usual. */
  if (nbd_connect_command (h, server) == -1)
    die ("nbd_connect_command");
  if (nbd_get_size (h) != (int64_t) size) {
    fprintf (stderr, "concurrent-writer: unexpected export size %" PRId64 "\n",
             nbd_get_size (h));
    exit (1);
  }
  fd = nbd_aio_get_fd (h);
  if (fd == -1)
    die ("nbd_aio_get_fd");

  t0 = seconds ();
  run_phase (h, mode == NO_WRITER ? NULL : &ring, fd, size, true);
  if (nbd_flush (h, 0) == -1)
    die ("nbd_flush");
  t_write = seconds () - t0;

  t0 = seconds ();
  run_phase (h, mode == NO_WRITER ? NULL : &ring, fd, size, false);
  t_read = seconds () - t0;
  if (mismatch_at != UINT64_MAX) {
    fprintf (stderr, "concurrent-writer: data differs in the 4 KiB at offset %" PRIu64 "\n",
             mismatch_at);
    exit (1);
  }

  /* 4. Disconnect: the writer thread sends NBD_CMD_DISC, then shuts its
   * half of the socket down and ends by itself (had the handle died
   * instead, we would set ring.stop and signal ring.cond); then close. */
  if (nbd_shutdown (h, 0) == -1)
    die ("nbd_shutdown");
  if (mode != NO_WRITER)
    pthread_join (thread, NULL);
  nbd_close (h);
  if (mode != NO_WRITER)
    ring_free (&ring);
  for (int i = 0; i < max_in_flight; i++)
    free (slots[i].buf);
  free (slots);

  free (psk_arg);
  if (ring.direct)
    printf ("concurrent-writer: %" PRIu64 " of %" PRIu64 " payload bytes went out from the "
            "callback, uncopied\n", ring.direct_bytes, size);
  printf ("concurrent-writer: %s%s, %lu MiB in %zu KiB requests, %d in flight, verified: "
          "write %.1f MiB/s %.0f ops/s, read %.1f MiB/s %.0f ops/s\n",
          mode_names[mode], psk_file ? " (TLS)" : "", mib, request_size / 1024, max_in_flight, (double) mib / t_write,
          (double) nr_requests / t_write, (double) mib / t_read, (double) nr_requests / t_read);
  return 0;
}
