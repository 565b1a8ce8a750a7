/* writer-ring.h: the test side of the concurrent writer, shared by the
 * writer-*.c tests (header-only; include it from one .c file).
 *
 * A ring of fixed-size chunks filled by the writer callback (under the
 * ring's mutex, never blocking) and drained by a writer thread that sends
 * from the head outside the mutex, as many bytes per sendmsg(2) as the ring
 * holds, polling for POLLOUT on EAGAIN.  On the end-of-stream mark (buf
 * NULL, len 0) it sends what is queued, then shutdown(fd, SHUT_WR), and ends.
 * The fd comes from nbd_aio_get_fd, asked by the thread itself when it first
 * has bytes to send (as a user would, possibly while a sync call holds the
 * handle lock).
 *
 * Knobs for the tests, all under the ring's lock:
 *  - gate_closed: the thread sends nothing while set (a slow writer);
 *    gate_open_on (a call's name, e.g. "nbd_shutdown") opens it when the
 *    handle enters that call: wr_gate_on_enter, the handle's debug
 *    callback (wr_open_gate_on_enter sets it up), sees "enter: NAME" with
 *    the handle lock held, so the writer wakes only once that call runs;
 *  - fail_after: send exactly that many bytes, wait until `armed` and, if
 *    set, until fail_ready (fail_ready_data) says yes and the thread
 *    fail_poller is blocked in poll(2) (so the report finds the handle's
 *    user waiting: an event, not a delay), then
 *    nbd_concurrent_writer_error(h, fail_errno) (and a second one with
 *    fail_errno2 if set) and send nothing more; fail_saw_poller says
 *    whether it saw that thread in poll(2) (the wait is bounded);
 *  - cb_fail_at: the callback itself reports cb_errno once it has accepted
 *    that many bytes (it runs with the handle lock held);
 *  - record: keep a copy of every byte handed over (log), and of every
 *    callback call (calls: buf, len, flags, where in the stream).
 * Counters record what happened, for the tests to check.
 *
 * The zero-copy writer (nbd_set_concurrent_writer_zero_copy with
 * wr_enqueue_zc): bytes that come with flags 0 are copied as above; a lent
 * write payload (LIBNBD_WRITER_LENT) becomes an entry of its own that
 * references the caller's buffer, between the copied chunks, in order.  The
 * thread sends copied and lent entries alike in one sendmsg and, after each
 * successful send, gives back the lent bytes it sent with
 * nbd_concurrent_writer_release.  After a failure (its own send error,
 * fail_after, fail_now, or the socket shut down under it) it drops the
 * ring and releases every lent byte it still holds.  Knobs:
 *  - fail_now: report that errno (nbd_concurrent_writer_error) at once,
 *    gate or no gate, and send nothing more;
 *  - hold_on_failure: no drop while set (the test clears it when it has
 *    seen what it needs, or stops the thread instead);
 *  - drop_poller: after a failure, drop only once the handle has said its
 *    connection is dead (dead_seen, from wr_watch's debug callback) and
 *    that thread is blocked in poll(2) again, still waiting for the lent
 *    bytes (drop_saw_poller then), or once the test sets poller_returned
 *    (its call came back without waiting); bounded by WR_WAIT_MS;
 *  - manual_release: never release: the test calls
 *    nbd_concurrent_writer_release itself (sent bytes count in sent_lent);
 *  - send_limit: send no byte past this stream offset (0: no limit) until
 *    the test raises it;
 *  - use_send: send with nbd_concurrent_writer_send instead of sendmsg, and
 *    pass the end-of-stream mark on with nbd_concurrent_writer_send (NULL,
 *    0) instead of shutdown(2): the library's own send, which makes the
 *    TLS records when nbd_set_concurrent_writer_encrypt is on.
 * releasing counts the lent bytes whose release the thread has begun (it
 * is raised just before each nbd_concurrent_writer_release).
 * giving_back is set (atomically, readable from any thread) just before the
 * thread's first release after a drop; drop_sum is the byte sum of what
 * the lent buffers held when they were dropped.
 *
 * Every wait on an event (here and in the tests) is bounded by WR_WAIT_MS.
 */
#ifndef WRITER_RING_H
#define WRITER_RING_H

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define WR_CHUNK (256 * 1024)
#define WR_MAX_IOV 64

/* The bound on a wait for an event: a bound, never a timing, so generous
 * for a loaded 2-core machine under a sanitizer (10x slower) where the
 * event itself takes milliseconds. */
#define WR_WAIT_MS 60000

/* Copied bytes (lent NULL: data holds WR_CHUNK bytes), or a lent write
 * payload (bytes [start, end) of lent; no data). */
struct wr_chunk {
  struct wr_chunk *next;
  size_t start, end;
  const char *lent;
  char data[];
};

/* One callback call, for record. */
struct wr_call {
  const void *buf;
  size_t len;
  unsigned flags;
  uint64_t pos;                 /* stream offset of its first byte */
};

struct wring {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct wr_chunk *head, *tail, *spare;
  size_t queued;
  struct nbd_handle *h;
  int fd;                       /* the writer thread's own copy */
  pthread_t thread;
  bool started, stop, thread_done;

  /* What happened. */
  uint64_t accepted;            /* bytes handed to the callback */
  uint64_t sent;                /* bytes the thread sent */
  unsigned calls;               /* callback calls with bytes */
  unsigned eos_count;           /* end-of-stream marks */
  bool bytes_after_eos;         /* bytes handed over after the mark */
  bool bad_call;                /* buf NULL with len > 0, or len 0 with buf */
  bool shut_wr;                 /* the thread did shutdown(SHUT_WR) */
  uint64_t queued_at_shut_wr;   /* bytes still in the ring then (must be 0) */
  uint64_t sent_at_shut_wr;
  int send_errno;               /* a real send failure, reported */
  bool failed;                  /* the thread stopped sending */
  unsigned sendmsg_calls;       /* successful sendmsg calls */

  /* Knobs. */
  bool gate_closed;
  const char *gate_open_on;     /* the call whose entry opens the gate */
  uint64_t queued_at_gate_open;
  unsigned eos_at_gate_open;
  uint64_t fail_after;
  int fail_errno, fail_errno2;
  bool armed;
  pid_t fail_poller;            /* report once this thread is in poll(2) */
  bool (*fail_ready) (void *);  /* and once this says yes */
  void *fail_ready_data;
  bool fail_saw_poller;
  int fail_rc, fail_rc2;        /* what the reports returned */
  int fail_reported_errno;      /* nbd_get_errno () after a failed report */
  struct timespec fail_time;
  bool fail_done;
  uint64_t cb_fail_at;
  int cb_errno, cb_fail_rc;
  bool cb_failed;
  bool record;
  char *log;
  size_t log_len, log_cap;
  struct wr_call *calls_log;
  size_t nr_calls, cap_calls;

  /* The zero-copy writer. */
  bool zero_copy;               /* wr_enqueue_zc was called */
  uint64_t lent;                /* bytes lent to the ring */
  uint64_t released;            /* bytes the thread gave back */
  uint64_t sent_lent;           /* lent bytes sent */
  unsigned lent_calls, copy_calls;
  bool bad_flags;               /* flags other than 0 and LIBNBD_WRITER_LENT */
  unsigned release_calls;       /* nbd_concurrent_writer_release calls that succeeded */
  unsigned release_failures;    /* nbd_concurrent_writer_release returned -1 */
  int release_errno;
  int fail_now, fail_now_rc;
  bool fail_now_done;
  bool hold_on_failure;
  pid_t drop_poller;            /* drop once this thread waits again */
  bool dead_seen;               /* the handle said "connection is dead" */
  bool poller_returned;         /* the test's call came back */
  bool drop_saw_poller;
  bool manual_release;
  uint64_t send_limit;
  bool use_send;
  int eos_send_rc;              /* use_send: what passing the mark on returned */
  double failed_at;             /* wr_now () when failed was set */
  unsigned drops;
  uint64_t dropped_lent;        /* lent bytes dropped (unsent), all drops */
  uint64_t drop_sum;
  _Atomic bool giving_back;
  _Atomic uint64_t releasing;   /* lent bytes whose release has begun */
};

static inline double
wr_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The calling thread's id, for fail_poller and drop_poller. */
static inline pid_t
wr_gettid (void)
{
  return (pid_t) syscall (SYS_gettid);
}

/* The thread @tid (of this process) is blocked in poll(2) or ppoll(2): the
 * first field of /proc/self/task/TID/syscall is the system call it sleeps
 * in ("running" while it runs). */
static inline bool
wr_in_poll (pid_t tid)
{
  char path[64], line[256];
  FILE *f;
  long nr = -1;

  snprintf (path, sizeof path, "/proc/self/task/%d/syscall", (int) tid);
  if (!(f = fopen (path, "r")))
    return false;
  if (fgets (line, sizeof line, f) && line[0] >= '0' && line[0] <= '9')
    nr = strtol (line, NULL, 10);
  fclose (f);
#ifdef SYS_poll
  if (nr == SYS_poll)
    return true;
#endif
  return nr == SYS_ppoll;
}

static inline void
wr_log (struct wring *r, const void *buf, size_t len)
{
  if (r->log_len + len > r->log_cap) {
    size_t cap = r->log_cap ? r->log_cap * 2 : 65536;
    char *p;

    while (cap < r->log_len + len)
      cap *= 2;
    p = realloc (r->log, cap);
    if (!p)
      abort ();
    r->log = p;
    r->log_cap = cap;
  }
  memcpy (r->log + r->log_len, buf, len);
  r->log_len += len;
}

static inline void
wr_log_call (struct wring *r, const void *buf, size_t len, unsigned flags)
{
  if (r->nr_calls == r->cap_calls) {
    size_t cap = r->cap_calls ? r->cap_calls * 2 : 256;
    struct wr_call *p = realloc (r->calls_log, cap * sizeof *p);

    if (!p)
      abort ();
    r->calls_log = p;
    r->cap_calls = cap;
  }
  r->calls_log[r->nr_calls++] = (struct wr_call) { buf, len, flags, r->accepted };
}

/* Copy @len bytes into the ring (lock held). */
static inline void
wr_enqueue_locked (struct wring *r, const void *buf, size_t len)
{
  const char *p = buf;

  if ((buf == NULL) != (len == 0))
    r->bad_call = true;
  if (buf == NULL && len == 0)
    r->eos_count++;
  else {
    if (r->eos_count)
      r->bytes_after_eos = true;
    r->calls++;
    r->accepted += len;
    if (r->record)
      wr_log (r, buf, len);
  }
  while (len > 0 && !r->failed) {
    struct wr_chunk *c = r->tail;
    size_t n;

    if (c == NULL || c->lent || c->end == WR_CHUNK) {
      c = r->spare;
      if (c)
        r->spare = c->next;
      else if ((c = malloc (sizeof *c + WR_CHUNK)) == NULL) {
        r->failed = true;
        r->failed_at = wr_now ();
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
    n = WR_CHUNK - c->end < len ? WR_CHUNK - c->end : len;
    memcpy (c->data + c->end, p, n);
    c->end += n;
    p += n;
    len -= n;
    r->queued += n;
  }
}

/* A failure reported from inside the callback, lock held. */
static inline void
wr_cb_fail (struct wring *r)
{
  if (r->cb_fail_at && !r->cb_failed && r->accepted >= r->cb_fail_at) {
    r->cb_failed = true;
    r->cb_fail_rc = nbd_concurrent_writer_error (r->h, r->cb_errno);
  }
}

/* The writer callback: runs inside libnbd-core with the handle locked. */
static inline void
wr_enqueue (void *data, const void *buf, size_t len)
{
  struct wring *r = data;

  pthread_mutex_lock (&r->lock);
  if (r->record)
    wr_log_call (r, buf, len, 0);
  wr_enqueue_locked (r, buf, len);
  wr_cb_fail (r);
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* The zero-copy writer callback: lent payloads are referenced, not copied.
 * Lent bytes that arrive after a failure are queued too: the thread drops
 * (and releases) them like the rest. */
static inline void
wr_enqueue_zc (void *data, const void *buf, size_t len, unsigned flags)
{
  struct wring *r = data;
  struct wr_chunk *c;

  pthread_mutex_lock (&r->lock);
  r->zero_copy = true;
  if (r->record)
    wr_log_call (r, buf, len, flags);
  if (flags & ~LIBNBD_WRITER_LENT)
    r->bad_flags = true;
  if (!(flags & LIBNBD_WRITER_LENT)) {
    if (buf || len)
      r->copy_calls++;
    wr_enqueue_locked (r, buf, len);
  }
  else if (buf == NULL || len == 0 || (c = malloc (sizeof *c)) == NULL)
    r->bad_call = true;
  else {
    if (r->eos_count)
      r->bytes_after_eos = true;
    r->calls++;
    r->lent_calls++;
    r->accepted += len;
    r->lent += len;
    if (r->record)
      wr_log (r, buf, len);
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
  wr_cb_fail (r);
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
}

/* @n bytes from the head went out; returns how many of them were lent. */
static inline uint64_t
wr_consume (struct wring *r, size_t n)
{
  uint64_t lent = 0;

  r->queued -= n;
  r->sent += n;
  while (n > 0) {
    struct wr_chunk *c = r->head;
    size_t take = c->end - c->start < n ? c->end - c->start : n;

    c->start += take;
    n -= take;
    if (c->lent)
      lent += take;
    if (c->start == c->end && c->lent) {
      r->head = c->next;
      if (c == r->tail)
        r->tail = NULL;
      free (c);
    }
    else if (c->start == c->end) {
      if (c == r->tail)
        c->start = c->end = 0;
      else {
        r->head = c->next;
        c->next = r->spare;
        r->spare = c;
      }
    }
  }
  r->sent_lent += lent;
  return lent;
}

/* Give @n lent bytes back (lock held on entry and exit). */
static inline void
wr_release (struct wring *r, uint64_t n)
{
  int rc, err = 0;

  if (n == 0 || r->manual_release)
    return;
  atomic_fetch_add (&r->releasing, n);
  pthread_mutex_unlock (&r->lock);
  rc = nbd_concurrent_writer_release (r->h, (size_t) n);
  if (rc == -1)
    err = nbd_get_errno ();
  pthread_mutex_lock (&r->lock);
  if (rc == -1) {
    r->release_failures++;
    r->release_errno = err;
  }
  else {
    r->released += n;
    r->release_calls++;
  }
}

/* After a failure: drop everything the ring holds and give back the lent
 * bytes among it (lock held on entry and exit). */
static inline void
wr_drop (struct wring *r)
{
  uint64_t lent = 0, sum = 0;
  struct wr_chunk *c, *next;

  for (c = r->head; c; c = next) {
    next = c->next;
    if (c->lent) {
      for (size_t i = c->start; i < c->end; i++)
        sum += (unsigned char) c->lent[i];
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
  r->drops++;
  r->dropped_lent += lent;
  r->drop_sum += sum;
  if (lent && !r->manual_release)
    atomic_store (&r->giving_back, true);
  wr_release (r, lent);
}

static inline void
wr_timed_wait (struct wring *r, unsigned ms)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long) (ms % 1000) * 1000000L;
  ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait (&r->cond, &r->lock, &ts);
}

/* Armed, the failure waits for fail_ready and fail_poller (lock held). */
static inline bool
wr_fail_due (struct wring *r)
{
  if (r->fail_ready && !r->fail_ready (r->fail_ready_data))
    return false;
  return !r->fail_poller || (r->fail_saw_poller = wr_in_poll (r->fail_poller));
}

/* Inject the configured failure (lock held on entry and exit). */
static inline void
wr_inject (struct wring *r)
{
  while (!r->armed && !r->stop)
    wr_timed_wait (r, 100);
  for (double end = wr_now () + WR_WAIT_MS / 1000.0;
       !r->stop && !wr_fail_due (r) && wr_now () < end;)
    wr_timed_wait (r, 1);
  int e1 = r->fail_errno, e2 = r->fail_errno2, rc1, rc2 = 0, rerr = 0;
  struct timespec t;

  pthread_mutex_unlock (&r->lock);
  clock_gettime (CLOCK_MONOTONIC, &t);
  rc1 = nbd_concurrent_writer_error (r->h, e1);
  if (rc1 == -1)
    rerr = nbd_get_errno ();
  if (e2)
    rc2 = nbd_concurrent_writer_error (r->h, e2);
  pthread_mutex_lock (&r->lock);
  r->fail_time = t;
  r->fail_rc = rc1;
  r->fail_rc2 = rc2;
  r->fail_reported_errno = rerr;
  r->fail_done = true;
  r->failed = true;
  r->failed_at = wr_now ();
  pthread_cond_broadcast (&r->cond);
}

/* After a failure, may the thread drop the ring now (lock held)? */
static inline bool
wr_may_drop (struct wring *r)
{
  if (r->hold_on_failure)
    return false;
  if (!r->drop_poller || r->poller_returned || wr_now () >= r->failed_at + WR_WAIT_MS / 1000.0)
    return true;
  return r->dead_seen && (r->drop_saw_poller = wr_in_poll (r->drop_poller));
}

/* use_send: pass the end-of-stream mark on (close_notify under TLS, then
 * the write side's shutdown), waiting for POLLOUT while the socket is
 * full; each wait is bounded by WR_WAIT_MS.  Lock not held. */
static inline void
wr_send_eos (struct wring *r)
{
  int rc;

  if (r->fd == -1)
    r->fd = nbd_aio_get_fd (r->h);
  while ((rc = (int) nbd_concurrent_writer_send (r->h, NULL, 0)) == -1 && errno == EAGAIN) {
    struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };

    if (poll (&pfd, 1, WR_WAIT_MS) != 1)
      break;
  }
  pthread_mutex_lock (&r->lock);
  r->eos_send_rc = rc;
  pthread_mutex_unlock (&r->lock);
}

static inline void *
wr_thread (void *arg)
{
  struct wring *r = arg;
  struct iovec iov[WR_MAX_IOV];

  pthread_mutex_lock (&r->lock);
  for (;;) {
    struct msghdr msg = { .msg_iov = iov };
    uint64_t limit = UINT64_MAX;
    ssize_t n;
    int i = 0, err;

    if (r->stop)
      break;
    if (r->fail_now && !r->failed) {
      int e = r->fail_now, rc;

      pthread_mutex_unlock (&r->lock);
      rc = nbd_concurrent_writer_error (r->h, e);
      pthread_mutex_lock (&r->lock);
      r->fail_now_rc = rc;
      r->fail_now_done = true;
      r->failed = true;
      r->failed_at = wr_now ();
      pthread_cond_broadcast (&r->cond);
      continue;
    }
    if (r->failed) {
      if (r->zero_copy && r->head && wr_may_drop (r)) {
        wr_drop (r);
        pthread_cond_broadcast (&r->cond);
        continue;
      }
      /* drop_poller is polled: 1 ms, a latency, not a timing. */
      wr_timed_wait (r, !r->zero_copy ? 100 : r->drop_poller ? 1 : 10);
      continue;
    }
    if (r->fail_after && r->sent == r->fail_after) {
      wr_inject (r);
      continue;
    }
    if (r->gate_closed) {
      wr_timed_wait (r, 100);
      continue;
    }
    if (r->queued == 0) {
      if (r->eos_count) {
        r->queued_at_shut_wr = r->queued;
        r->sent_at_shut_wr = r->sent;
        r->shut_wr = true;
        pthread_mutex_unlock (&r->lock);
        if (r->use_send)
          wr_send_eos (r);
        else
          shutdown (r->fd, SHUT_WR);
        pthread_mutex_lock (&r->lock);
        break;
      }
      wr_timed_wait (r, 100);
      continue;
    }
    if (r->fail_after)
      limit = r->fail_after - r->sent;
    if (r->send_limit) {
      if (r->sent >= r->send_limit) {
        wr_timed_wait (r, 10);
        continue;
      }
      if (r->send_limit - r->sent < limit)
        limit = r->send_limit - r->sent;
    }
    for (struct wr_chunk *c = r->head; c && i < WR_MAX_IOV && limit > 0; c = c->next)
      if (c->end > c->start) {
        size_t len = c->end - c->start;

        if (len > limit)
          len = (size_t) limit;
        iov[i].iov_base = (char *) (c->lent ? c->lent : c->data) + c->start;
        iov[i++].iov_len = len;
        limit -= len;
      }
    msg.msg_iovlen = (size_t) i;
    pthread_mutex_unlock (&r->lock);

    if (r->fd == -1)
      r->fd = nbd_aio_get_fd (r->h);
    n = r->use_send ? nbd_concurrent_writer_send (r->h, iov, i)
                    : sendmsg (r->fd, &msg, MSG_NOSIGNAL);
    err = errno;
    if (n == -1 && (err == EAGAIN || err == EWOULDBLOCK)) {
      struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };

      poll (&pfd, 1, 100);
    }
    else if (n == -1 && err != EINTR) {
      nbd_concurrent_writer_error (r->h, err);
      pthread_mutex_lock (&r->lock);
      r->send_errno = err;
      r->failed = true;
      r->failed_at = wr_now ();
      continue;
    }
    pthread_mutex_lock (&r->lock);
    if (n > 0) {
      r->sendmsg_calls++;
      wr_release (r, wr_consume (r, (size_t) n));
    }
  }
  r->thread_done = true;
  pthread_cond_broadcast (&r->cond);
  pthread_mutex_unlock (&r->lock);
  return NULL;
}

/* Make the ring for @h and start its thread (before setting the writer). */
static inline int
wr_start (struct wring *r, struct nbd_handle *h)
{
  memset (r, 0, sizeof *r);
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->cond, NULL);
  r->h = h;
  r->fd = -1;
  if (pthread_create (&r->thread, NULL, wr_thread, r) != 0)
    return -1;
  r->started = true;
  return 0;
}

/* The handle's debug callback (wr_watch): called by libnbd-core with the
 * handle lock held (the lock order is the writer callback's: handle, then
 * ring).  On "enter: NAME" of gate_open_on it opens the gate and records
 * what the ring held at that moment; on "connection is dead" (aio.c) it
 * sets dead_seen, for drop_poller. */
static inline int
wr_debug (void *data, const char *context, const char *msg)
{
  struct wring *r = data;
  size_t n;

  (void) context;
  pthread_mutex_lock (&r->lock);
  if (strncmp (msg, "connection is dead", 18) == 0) {
    r->dead_seen = true;
    pthread_cond_broadcast (&r->cond);
  }
  if (r->gate_closed && r->gate_open_on && strncmp (msg, "enter: ", 7) == 0) {
    n = strlen (r->gate_open_on);
    if (strncmp (msg + 7, r->gate_open_on, n) == 0 && (msg[7 + n] == '\0' || msg[7 + n] == ' ')) {
      r->gate_closed = false;
      r->queued_at_gate_open = r->queued;
      r->eos_at_gate_open = r->eos_count;
      pthread_cond_broadcast (&r->cond);
    }
  }
  pthread_mutex_unlock (&r->lock);
  return 0;
}

/* Let the ring follow @h's debug messages (wr_debug). */
static inline int
wr_watch (struct wring *r, struct nbd_handle *h)
{
  if (nbd_set_debug_callback (h, (nbd_debug_callback) { .callback = wr_debug,
                                                         .user_data = r }) == -1 ||
      nbd_set_debug (h, true) == -1)
    return -1;
  return 0;
}

/* Close the gate now; it opens when @h enters the call @name. */
static inline int
wr_open_gate_on_enter (struct wring *r, struct nbd_handle *h, const char *name)
{
  pthread_mutex_lock (&r->lock);
  r->gate_closed = true;
  r->gate_open_on = name;
  pthread_mutex_unlock (&r->lock);
  return wr_watch (r, h);
}

/* Set knobs before the thread can see bytes. */
#define WR_SET(r, field, value)                  \
  do {                                           \
    pthread_mutex_lock (&(r)->lock);             \
    (r)->field = (value);                        \
    pthread_cond_broadcast (&(r)->cond);         \
    pthread_mutex_unlock (&(r)->lock);           \
  } while (0)

/* Wait (bounded) until the thread has ended by itself; true if it did. */
static inline bool
wr_wait_done (struct wring *r, unsigned ms)
{
  double end = wr_now () + ms / 1000.0;
  bool done;

  pthread_mutex_lock (&r->lock);
  while (!r->thread_done && wr_now () < end)
    wr_timed_wait (r, 10);
  done = r->thread_done;
  pthread_mutex_unlock (&r->lock);
  return done;
}

/* Wait (bounded) until the thread has given back @n lent bytes in all (its
 * own count lags the library's by one nbd_concurrent_writer_release). */
static inline bool
wr_wait_released (struct wring *r, uint64_t n, unsigned ms)
{
  double end = wr_now () + ms / 1000.0;
  bool done;

  pthread_mutex_lock (&r->lock);
  while (r->released < n && wr_now () < end)
    wr_timed_wait (r, 10);
  done = r->released >= n;
  pthread_mutex_unlock (&r->lock);
  return done;
}

/* Wait (bounded) until the thread has sent every byte handed over so far:
 * a reply can arrive before the thread counts the bytes it answers. */
static inline bool
wr_wait_sent (struct wring *r, unsigned ms)
{
  double end = wr_now () + ms / 1000.0;
  bool done;

  pthread_mutex_lock (&r->lock);
  while (r->sent < r->accepted && wr_now () < end)
    wr_timed_wait (r, 10);
  done = r->sent == r->accepted;
  pthread_mutex_unlock (&r->lock);
  return done;
}

/* Wait (bounded) until the thread has made its fail_after report. */
static inline bool
wr_wait_injected (struct wring *r, unsigned ms)
{
  double end = wr_now () + ms / 1000.0;
  bool done;

  pthread_mutex_lock (&r->lock);
  while (!r->fail_done && wr_now () < end)
    wr_timed_wait (r, 10);
  done = r->fail_done;
  pthread_mutex_unlock (&r->lock);
  return done;
}

/* Stop and join the thread (if still running). */
static inline void
wr_stop (struct wring *r)
{
  if (!r->started)
    return;
  WR_SET (r, stop, true);
  pthread_join (r->thread, NULL);
  r->started = false;
}

/* After wr_stop (and nbd_close, if the callback may still run). */
static inline void
wr_free (struct wring *r)
{
  struct wr_chunk *lists[] = { r->head, r->spare };

  wr_stop (r);
  for (int i = 0; i < 2; i++)
    for (struct wr_chunk *c = lists[i], *next; c; c = next) {
      next = c->next;
      free (c);
    }
  r->head = r->tail = r->spare = NULL;
  free (r->log);
  r->log = NULL;
  free (r->calls_log);
  r->calls_log = NULL;
  pthread_cond_destroy (&r->cond);
  pthread_mutex_destroy (&r->lock);
}

/* Read a counter under the lock. */
#define WR_GET(r, field)                                        \
  __extension__ ({                                              \
    __typeof__ ((r)->field) v_;                                 \
    pthread_mutex_lock (&(r)->lock);                            \
    v_ = (r)->field;                                            \
    pthread_mutex_unlock (&(r)->lock);                          \
    v_;                                                         \
  })

#endif /* WRITER_RING_H */
