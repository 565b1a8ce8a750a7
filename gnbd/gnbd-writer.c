/* gnbd-writer.c: the writer task, one for the whole process, sending for
 * every connection that has the concurrent writer on.
 *
 * Owns, per connection, the queue the core's zero-copy writer callback
 * fills (copied chunks for headers, references to lent write payloads),
 * and the one GTask thread that empties those queues into the sockets:
 * nbd_concurrent_writer_send of many entries at once (the core's
 * non-blocking send; under TLS it makes the records there, on the sending
 * thread: nbd_set_concurrent_writer_encrypt), each lent byte given back
 * with nbd_concurrent_writer_release right after it is sent,
 * nbd_concurrent_writer_error on a failed send, and at the end-of-stream
 * mark nbd_concurrent_writer_send (NULL) (close_notify under TLS, then
 * shutdown(SHUT_WR)).  When nothing is queued it sleeps in poll(2)
 * on a wake-up eventfd plus the sockets that were full.
 *
 * Batches: a thread that issues requests inside gnbd_writer_batch_begin/end
 * (every gnbd_conn_submit, every dispatch of results: the callbacks that
 * issue the next requests) does not wake the task for them; at the end of
 * the batch it sends what its requests queued itself, one non-blocking
 * sendmsg for the lot, and hands over to the task only what the socket
 * would not take, or all of it when that is more than INLINE_MAX bytes
 * (big writes: the caller goes on while the task sends them), or under
 * TLS (a send would encrypt on the caller's thread).  The task stays asleep while the sockets keep up: no
 * thread hop per request, and a sync call goes caller -> server -> I/O
 * thread -> caller.  One sender at a time per connection (w->sender).
 *
 * Why one task for all: the GTask pool has 10 threads on GLib 2.74, shared
 * with DNS lookups; a task parked per connection would starve the process
 * with ten clients.  The task ends when no connection is registered (its
 * result says how it went) and is started again, on the I/O thread, by the
 * next registration.
 *
 * It must never: block in a send, take a handle's lock (it calls only the
 * core's lock-free calls: nbd_aio_get_fd, _send, _release, _error), or run user
 * code.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>
#include <libnbd.h>

#include "gnbd-io-private.h"
#include "gnbd-tsan-private.h"
#include "gnbd-writer-private.h"

/* Copied bytes go into chunks of this size (bigger if one piece is). */
#define CHUNK_SIZE (64 * 1024)
/* A batch sends what it queued itself up to this many bytes; more (a big
 * write's payload) is the task's to send, so that the caller goes on while
 * the socket drains. */
#define INLINE_MAX (256 * 1024)
/* Entries per sendmsg; sends per connection before serving the next. */
#define MAX_IOV 64
#define MAX_ROUNDS 16

/* One run of bytes to send: copied (base owns them, cap is its size, more
 * may be appended while it is the last entry) or lent (base NULL: the
 * caller's payload, given back once sent). */
typedef struct {
  guint8 *base;
  gsize cap;
  guint8 *ptr;
  gsize len;
} Entry;

struct _GnbdWriterConn {
  gint ref_count;               /* registration, batches that deferred it */
  struct nbd_handle *nbd;
  GnbdWriterReleased released;
  gpointer released_data;

  /* Shared by the callback (any thread driving the handle) and the writer
   * thread. */
  pthread_mutex_t lock;
  Entry *ring;
  guint ring_cap;
  guint head;
  guint count;
  gsize bytes;                  /* queued, not sent yet */
  guint64 lent_total;           /* payload bytes lent, ever (for the tests) */
  guint8 *spare;                /* one CHUNK_SIZE buffer kept for reuse */
  gboolean eos;                 /* end-of-stream mark: shut down once empty */
  gboolean shut;
  gboolean failed;              /* drop and give back everything */
  gboolean blocked;             /* the socket was full: wait for POLLOUT */
  gboolean stopped;             /* gnbd_writer_conn_free: nobody sends more */
  gboolean sender;              /* a thread sends from the queue */
  pthread_cond_t idle;          /* sender went FALSE */

  /* Atomic: set once the connection is ready (gnbd_writer_conn_set_tls). */
  gint tls;                     /* TLS negotiated: the task makes the records */

  /* Under writer.lock: the thread works on it outside that lock. */
  gboolean sending;
};

/* gnbd_writer_delay_releases: 0 except in a test (atomic). */
static gint release_delay_ms;

/* The connections this thread's batch queued bytes for: it sends them at
 * the batch's end.  A fixed array: a batch over more connections than it
 * holds wakes the task for the others. */
#define BATCH_MAX 16
static __thread guint batch_depth;
static __thread guint batch_len;
static __thread GnbdWriterConn *batch_conns[BATCH_MAX];

static gsize count_sends;       /* atomic: send calls, any thread */
static gsize count_wakes;       /* atomic: the task woken from its poll */

/* How one run of the task went: its GTask result. */
typedef struct {
  guint64 bytes;
  guint64 sends;
  guint64 wakeups;
  guint conns_max;
} WriterReport;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;                   /* a send ended; a task ended */
  GPtrArray *conns;             /* registered connections */
  gboolean running;             /* a task runs or is about to */
  guint live_tasks;             /* started, callback not yet run */
  int wake_fd;
  gint sleeping;                /* atomic: the thread is (about to be) in poll */
} writer = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .wake_fd = -1 };

/* ---- The queue (w->lock held) ------------------------------------------- */

static Entry *
ring_push (GnbdWriterConn *w)
{
  if (w->count == w->ring_cap) {
    guint cap = w->ring_cap ? w->ring_cap * 2 : 64;
    Entry *ring = g_new (Entry, cap);

    for (guint i = 0; i < w->count; i++)
      ring[i] = w->ring[(w->head + i) % w->ring_cap];
    g_free (w->ring);
    w->ring = ring;
    w->ring_cap = cap;
    w->head = 0;
  }
  return &w->ring[(w->head + w->count++) % w->ring_cap];
}

static void
push_copy (GnbdWriterConn *w, const void *buf, gsize len)
{
  Entry *tail = w->count ? &w->ring[(w->head + w->count - 1) % w->ring_cap] : NULL;
  Entry *e;

  if (tail && tail->base && (gsize) (tail->base + tail->cap - (tail->ptr + tail->len)) >= len) {
    memcpy (tail->ptr + tail->len, buf, len);
    tail->len += len;
    w->bytes += len;
    return;
  }
  e = ring_push (w);
  e->cap = MAX (len, CHUNK_SIZE);
  e->base = e->cap == CHUNK_SIZE && w->spare ? g_steal_pointer (&w->spare) : g_malloc (e->cap);
  e->ptr = e->base;
  memcpy (e->ptr, buf, len);
  e->len = len;
  w->bytes += len;
}

static void
push_lent (GnbdWriterConn *w, const void *buf, gsize len)
{
  Entry *e = ring_push (w);

  e->base = NULL;
  e->cap = 0;
  e->ptr = (guint8 *) buf;
  e->len = len;
  w->bytes += len;
  w->lent_total += len;
}

static void
entry_drop (GnbdWriterConn *w, Entry *e)
{
  if (e->base && e->cap == CHUNK_SIZE && !w->spare)
    w->spare = e->base;
  else
    g_free (e->base);
}

/* Take @n sent bytes off the front; returns how many of them were lent,
 * and whether a lent run was sent to its end. */
static gsize
consume (GnbdWriterConn *w, gsize n, gboolean *lent_ended)
{
  gsize lent = 0;

  *lent_ended = FALSE;
  w->bytes -= n;
  while (n > 0) {
    Entry *e = &w->ring[w->head];
    gsize take = MIN (n, e->len);

    if (!e->base)
      lent += take;
    e->ptr += take;
    e->len -= take;
    n -= take;
    if (e->len == 0) {
      if (!e->base)
        *lent_ended = TRUE;
      entry_drop (w, e);
      w->head = (w->head + 1) % w->ring_cap;
      w->count--;
    }
  }
  return lent;
}

/* Empty the queue; returns how many lent bytes it held. */
static gsize
drop_all (GnbdWriterConn *w)
{
  gsize lent = 0;

  w->bytes = 0;
  for (; w->count; w->count--, w->head = (w->head + 1) % w->ring_cap) {
    Entry *e = &w->ring[w->head];

    if (!e->base)
      lent += e->len;
    entry_drop (w, e);
  }
  return lent;
}

/* ---- Waking the thread ---------------------------------------------------- */

/* The thread sets `sleeping` before it looks at the queues for the last
 * time, and producers look at it after queuing: one of the two sees the
 * other, so bytes never wait for a thread that did not see them. */
static void
writer_wake (void)
{
  if (g_atomic_int_compare_and_exchange (&writer.sleeping, 1, 0)) {
    eventfd_t one = 1;

    g_atomic_pointer_add (&count_wakes, 1);
    while (eventfd_write (writer.wake_fd, one) == -1 && errno == EINTR)
      ;
  }
}

static GnbdWriterConn *
writer_conn_ref (GnbdWriterConn *w)
{
  g_atomic_int_inc (&w->ref_count);
  return w;
}

static void
writer_conn_unref (GnbdWriterConn *w)
{
  if (!g_atomic_int_dec_and_test (&w->ref_count))
    return;
  g_free (w->ring);
  g_free (w->spare);
  pthread_cond_destroy (&w->idle);
  pthread_mutex_destroy (&w->lock);
  g_free (w);
}

/* In a batch: @w's bytes wait for its end.  FALSE if the batch is full. */
static gboolean
batch_defer (GnbdWriterConn *w)
{
  for (guint i = 0; i < batch_len; i++)
    if (batch_conns[i] == w)
      return TRUE;
  if (batch_len == BATCH_MAX)
    return FALSE;
  batch_conns[batch_len++] = writer_conn_ref (w);
  return TRUE;
}

/* The core's zero-copy writer callback: runs with the handle lock held, on
 * whichever thread drives the handle.  Never blocks, never calls the core
 * except to give back what a failed connection is lent. */
static void
writer_callback (void *data, const void *buf, size_t len, unsigned flags)
{
  GnbdWriterConn *w = data;
  gsize give_back = 0;
  gboolean wake;

  pthread_mutex_lock (&w->lock);
  if (w->failed)
    give_back = (flags & LIBNBD_WRITER_LENT) ? len : 0;
  else if (!buf)
    w->eos = TRUE;
  else if (flags & LIBNBD_WRITER_LENT)
    push_lent (w, buf, len);
  else
    push_copy (w, buf, len);
  /* A full socket is polled for POLLOUT already; a sender sees it. */
  wake = !w->failed && !w->blocked && !w->stopped;
  pthread_mutex_unlock (&w->lock);
  if (give_back)
    nbd_concurrent_writer_release (w->nbd, give_back);
  if (wake && !(batch_depth > 0 && batch_defer (w)))
    writer_wake ();
}

/* ---- Sending -------------------------------------------------------------- */

static void
conn_fail (GnbdWriterConn *w, int err)
{
  gsize lent;

  /* The core shuts the socket down and kills the connection; every lent
   * payload must come back for the writes to complete. */
  nbd_concurrent_writer_error (w->nbd, err);
  pthread_mutex_lock (&w->lock);
  w->failed = TRUE;
  lent = drop_all (w);
  pthread_mutex_unlock (&w->lock);
  if (lent)
    nbd_concurrent_writer_release (w->nbd, lent);
}

/* Send what @w has queued until it is empty, the socket is full, or
 * MAX_ROUNDS sendmsg calls (the others wait their turn).  The caller is
 * w's sender: the handle stays open meanwhile. */
static void
send_queued (GnbdWriterConn *w, WriterReport *report)
{
  for (int round = 0; round < MAX_ROUNDS; round++) {
    struct iovec iov[MAX_IOV];
    int n = 0;
    gboolean shut = FALSE;
    gsize lent;
    gboolean lent_ended;
    ssize_t r;

    pthread_mutex_lock (&w->lock);
    if (w->failed || w->blocked) {
      pthread_mutex_unlock (&w->lock);
      return;
    }
    for (guint i = 0; i < w->count && n < MAX_IOV; i++) {
      Entry *e = &w->ring[(w->head + i) % w->ring_cap];

      iov[n].iov_base = e->ptr;
      iov[n++].iov_len = e->len;
    }
    if (n == 0 && w->eos && !w->shut)
      shut = w->shut = TRUE;
    pthread_mutex_unlock (&w->lock);

    if (shut) {
      /* Everything before the mark is out: close_notify under TLS, then
       * the server may see EOF. */
      if (nbd_concurrent_writer_send (w->nbd, NULL, 0) == -1) {
        if (errno != EAGAIN) {
          conn_fail (w, errno);
          return;
        }
        pthread_mutex_lock (&w->lock);
        w->shut = FALSE;        /* again once the socket takes more */
        w->blocked = TRUE;
        pthread_mutex_unlock (&w->lock);
      }
      return;
    }
    if (n == 0)
      return;
    r = nbd_concurrent_writer_send (w->nbd, iov, n);
    g_atomic_pointer_add (&count_sends, 1);
    if (report)
      report->sends++;
    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pthread_mutex_lock (&w->lock);
        w->blocked = TRUE;
        pthread_mutex_unlock (&w->lock);
        return;
      }
      conn_fail (w, errno);
      return;
    }
    if (report)
      report->bytes += (guint64) r;
    pthread_mutex_lock (&w->lock);
    lent = consume (w, (gsize) r, &lent_ended);
    pthread_mutex_unlock (&w->lock);
    /* Right after the send, before anything that could wait: the write
     * completes only once its payload is back.  Only a payload given back
     * to its end can complete a write whose reply came first: the
     * connection hears of those only (a 2 MiB payload leaves in several
     * sends, and each would wake the I/O thread for nothing). */
    if (lent) {
      guint delay = (guint) g_atomic_int_get (&release_delay_ms);

      if (delay)
        g_usleep (delay * G_TIME_SPAN_MILLISECOND);
      nbd_concurrent_writer_release (w->nbd, lent);
      if (lent_ended)
        w->released (w->released_data);
    }
  }
}

/* w->lock held. */
static gboolean
work_left (GnbdWriterConn *w)
{
  return !w->failed && !w->blocked && !w->stopped && (w->count > 0 || (w->eos && !w->shut));
}

/* Work for the task: some, and no other thread sending it. */
static gboolean
has_work (GnbdWriterConn *w)
{
  gboolean r;

  pthread_mutex_lock (&w->lock);
  r = !w->sender && work_left (w);
  pthread_mutex_unlock (&w->lock);
  return r;
}

/* Become @w's one sender, or FALSE if another thread is (it will see the
 * new bytes) or @w stopped. */
static gboolean
sender_claim (GnbdWriterConn *w)
{
  gboolean ok;

  pthread_mutex_lock (&w->lock);
  ok = !w->sender && !w->stopped;
  if (ok)
    w->sender = TRUE;
  pthread_mutex_unlock (&w->lock);
  return ok;
}

/* Stop being the sender; TRUE if the task must now look at @w: bytes are
 * left, or the socket was full and must be polled. */
static gboolean
sender_release (GnbdWriterConn *w)
{
  gboolean wake;

  pthread_mutex_lock (&w->lock);
  w->sender = FALSE;
  pthread_cond_broadcast (&w->idle);
  wake = work_left (w) || (w->blocked && !w->failed && !w->stopped);
  pthread_mutex_unlock (&w->lock);
  return wake;
}

void
gnbd_writer_batch_begin (void)
{
  batch_depth++;
}

void
gnbd_writer_batch_end (void)
{
  g_return_if_fail (batch_depth > 0);
  if (--batch_depth > 0)
    return;
  /* What the batch queued, sent from this thread. */
  for (guint i = 0; i < batch_len; i++) {
    GnbdWriterConn *w = batch_conns[i];
    gboolean small;

    pthread_mutex_lock (&w->lock);
    small = w->bytes <= INLINE_MAX;
    pthread_mutex_unlock (&w->lock);
    if (!small || g_atomic_int_get (&w->tls))
      writer_wake ();
    else if (sender_claim (w)) {
      send_queued (w, NULL);
      if (sender_release (w))
        writer_wake ();
    }
    writer_conn_unref (w);
  }
  batch_len = 0;
}

/* ---- The task ------------------------------------------------------------- */

static void
writer_thread (GTask *task, gpointer source_object, gpointer task_data,
               GCancellable *cancellable)
{
  WriterReport *report = g_new0 (WriterReport, 1);
  g_autoptr (GPtrArray) work = g_ptr_array_new ();
  g_autoptr (GPtrArray) polled = g_ptr_array_new ();
  g_autoptr (GArray) pfds = g_array_new (FALSE, FALSE, sizeof (struct pollfd));
  int poll_errno = 0;

  for (;;) {
    pthread_mutex_lock (&writer.lock);
    if (writer.conns->len == 0) {
      writer.running = FALSE;
      pthread_mutex_unlock (&writer.lock);
      break;
    }
    report->conns_max = MAX (report->conns_max, writer.conns->len);
    g_atomic_int_set (&writer.sleeping, 1);
    g_ptr_array_set_size (work, 0);
    for (guint i = 0; i < writer.conns->len; i++) {
      GnbdWriterConn *w = writer.conns->pdata[i];

      if (has_work (w)) {
        w->sending = TRUE;
        g_ptr_array_add (work, w);
      }
    }
    if (work->len) {
      g_atomic_int_set (&writer.sleeping, 0);
      pthread_mutex_unlock (&writer.lock);
      for (guint i = 0; i < work->len; i++) {
        GnbdWriterConn *w = work->pdata[i];

        if (sender_claim (w)) {
          send_queued (w, report);
          sender_release (w);   /* the loop looks at it again */
        }
      }
      pthread_mutex_lock (&writer.lock);
      for (guint i = 0; i < work->len; i++)
        ((GnbdWriterConn *) work->pdata[i])->sending = FALSE;
      pthread_cond_broadcast (&writer.cond);
      pthread_mutex_unlock (&writer.lock);
      continue;
    }

    /* Nothing to send: sleep until woken, or until a full socket drains. */
    g_array_set_size (pfds, 0);
    g_ptr_array_set_size (polled, 0);
    g_array_append_val (pfds, ((struct pollfd) { .fd = writer.wake_fd, .events = POLLIN }));
    for (guint i = 0; i < writer.conns->len; i++) {
      GnbdWriterConn *w = writer.conns->pdata[i];
      gboolean blocked;

      pthread_mutex_lock (&w->lock);
      blocked = w->blocked && !w->failed;
      pthread_mutex_unlock (&w->lock);
      if (blocked) {
        g_array_append_val (pfds, ((struct pollfd) { .fd = nbd_aio_get_fd (w->nbd),
                                                     .events = POLLOUT }));
        g_ptr_array_add (polled, w);
      }
    }
    pthread_mutex_unlock (&writer.lock);

    if (poll ((struct pollfd *) pfds->data, pfds->len, -1) == -1 && errno != EINTR) {
      poll_errno = errno;
      break;
    }
    report->wakeups++;
    g_atomic_int_set (&writer.sleeping, 0);
    if (g_array_index (pfds, struct pollfd, 0).revents) {
      eventfd_t v;

      (void) eventfd_read (writer.wake_fd, &v);
    }
    /* The polled connections may have gone meanwhile: only those still
     * registered are touched. */
    pthread_mutex_lock (&writer.lock);
    for (guint i = 0; i < polled->len; i++) {
      GnbdWriterConn *w = polled->pdata[i];

      if (g_array_index (pfds, struct pollfd, i + 1).revents &&
          g_ptr_array_find (writer.conns, w, NULL)) {
        pthread_mutex_lock (&w->lock);
        w->blocked = FALSE;
        pthread_mutex_unlock (&w->lock);
      }
    }
    pthread_mutex_unlock (&writer.lock);
  }

  if (poll_errno) {
    /* Cannot happen short of a broken system; then every connection
     * fails rather than hang, and the task reports why. */
    pthread_mutex_lock (&writer.lock);
    for (guint i = 0; i < writer.conns->len; i++)
      conn_fail (writer.conns->pdata[i], poll_errno);
    writer.running = FALSE;
    pthread_mutex_unlock (&writer.lock);
    g_free (report);
    GNBD_HANDOFF (task);
    g_task_return_new_error (task, G_IO_ERROR, g_io_error_from_errno (poll_errno),
                             "gnbd's writer task stopped: poll: %s", g_strerror (poll_errno));
    return;
  }
  GNBD_HANDOFF (task);
  g_task_return_pointer (task, report, g_free);
}

static gboolean writer_task_start (gpointer data);

/* On the I/O thread, where the task was made: how the run went. */
static void
writer_task_done (GObject *source, GAsyncResult *result, gpointer data)
{
  g_autoptr (GError) error = NULL;
  WriterReport *report;
  gboolean restart;

  GNBD_TAKEOVER (result);
  report = g_task_propagate_pointer (G_TASK (result), &error);
  if (report)
    g_debug ("writer task ended, no connection left: %" G_GUINT64_FORMAT " bytes in %"
             G_GUINT64_FORMAT " sendmsg calls, %" G_GUINT64_FORMAT " wake-ups, up to %u "
             "connections", report->bytes, report->sends, report->wakeups, report->conns_max);
  else
    g_warning ("%s", error->message);
  g_free (report);

  pthread_mutex_lock (&writer.lock);
  writer.live_tasks--;
  /* A task that failed left connections behind: serve them again. */
  restart = !writer.running && writer.conns->len > 0;
  if (restart) {
    writer.running = TRUE;
    writer.live_tasks++;
  }
  pthread_cond_broadcast (&writer.cond);
  pthread_mutex_unlock (&writer.lock);
  if (restart)
    writer_task_start (NULL);
}

static gboolean
writer_task_start (gpointer data)
{
  GTask *task = g_task_new (NULL, NULL, writer_task_done, NULL);

  g_task_set_source_tag (task, writer_task_start);
  g_task_set_name (task, "[gnbd] writer");
  g_task_run_in_thread (task, writer_thread);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

/* ---- Registration --------------------------------------------------------- */

GnbdWriterConn *
gnbd_writer_conn_new (struct nbd_handle *nbd, GnbdWriterReleased released, gpointer data)
{
  GnbdWriterConn *w = g_new0 (GnbdWriterConn, 1);
  gboolean start = FALSE;

  w->ref_count = 1;
  pthread_mutex_init (&w->lock, NULL);
  pthread_cond_init (&w->idle, NULL);
  w->nbd = nbd;
  w->released = released;
  w->released_data = data;
  /* Under TLS the task makes the records, while the I/O thread decrypts;
   * without TLS this changes nothing. */
  if (nbd_set_concurrent_writer_encrypt (nbd, true) == -1 ||
      nbd_set_concurrent_writer_zero_copy (nbd, w, writer_callback) == -1) {
    writer_conn_unref (w);
    return NULL;
  }
  pthread_mutex_lock (&writer.lock);
  if (!writer.conns) {
    writer.conns = g_ptr_array_new ();
    writer.wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (writer.wake_fd == -1)
      g_error ("gnbd: eventfd: %s", g_strerror (errno));
  }
  g_ptr_array_add (writer.conns, w);
  if (!writer.running) {
    writer.running = TRUE;
    writer.live_tasks++;
    start = TRUE;
  }
  pthread_mutex_unlock (&writer.lock);
  /* The task is made on the I/O thread so that its result comes back
   * there, whatever thread connects. */
  if (start)
    gnbd_io_schedule (writer_task_start, NULL, NULL);
  return w;
}

void
gnbd_writer_conn_free (GnbdWriterConn *w)
{
  gsize lent;

  pthread_mutex_lock (&writer.lock);
  g_ptr_array_remove_fast (writer.conns, w);
  while (w->sending)
    pthread_cond_wait (&writer.cond, &writer.lock);
  pthread_mutex_unlock (&writer.lock);
  /* The thread may be asleep with nothing left to serve: it must see that
   * and end. */
  writer_wake ();

  /* A batch's sender (another thread) finishes its sendmsg first; none
   * starts after: the handle may close once this returns. */
  pthread_mutex_lock (&w->lock);
  w->stopped = TRUE;
  while (w->sender)
    pthread_cond_wait (&w->idle, &w->lock);
  lent = drop_all (w);
  pthread_mutex_unlock (&w->lock);
  if (lent)
    nbd_concurrent_writer_release (w->nbd, lent);
  /* Batches that deferred it still hold it, stopped. */
  writer_conn_unref (w);
}

gboolean
gnbd_writer_wait_stopped (gint64 timeout_us)
{
  struct timespec end;
  gboolean r;

  gnbd_deadline (&end, timeout_us);
  pthread_mutex_lock (&writer.lock);
  while ((writer.running || writer.live_tasks > 0) &&
         pthread_cond_timedwait (&writer.cond, &writer.lock, &end) == 0)
    ;
  r = !writer.running && writer.live_tasks == 0;
  pthread_mutex_unlock (&writer.lock);
  return r;
}

void
gnbd_writer_delay_releases (guint delay_ms)
{
  g_atomic_int_set (&release_delay_ms, (gint) delay_ms);
}

guint64
gnbd_writer_count_sends (void)
{
  return (guint64) g_atomic_pointer_get (&count_sends);
}

void
gnbd_writer_conn_set_tls (GnbdWriterConn *w, gboolean tls)
{
  g_atomic_int_set (&w->tls, tls);
}

guint64
gnbd_writer_count_lent (void)
{
  guint64 sum = 0;

  pthread_mutex_lock (&writer.lock);
  for (guint i = 0; writer.conns && i < writer.conns->len; i++) {
    GnbdWriterConn *w = writer.conns->pdata[i];

    pthread_mutex_lock (&w->lock);
    sum += w->lent_total;
    pthread_mutex_unlock (&w->lock);
  }
  pthread_mutex_unlock (&writer.lock);
  return sum;
}

guint64
gnbd_writer_count_wakes (void)
{
  return (guint64) g_atomic_pointer_get (&count_wakes);
}
