/* gnbd-io.c: the I/O thread, and the reader source that drives a
 * libnbd-core handle from it.
 *
 * One thread for the whole process, owning a private GMainContext (GDBus's
 * design): every connection's reader source lives there, so replies are
 * read whatever the application's threads and contexts are doing, and a
 * sync call can wait on a context of its own without running the caller's.
 * Code here never runs user callbacks (tasks return to their own contexts)
 * and never uses the global default context.
 */
#include <poll.h>

#include <libnbd.h>

#include "gnbd-io-private.h"
#include "gnbd-result-private.h"
#include "gnbd-tsan-private.h"

G_STATIC_ASSERT (GNBD_IO_RDHUP == POLLRDHUP);

static GMainContext *io_context;
static GThread *io_thread;

static gpointer
io_thread_main (gpointer data)
{
  GMainLoop *loop = g_main_loop_new (io_context, FALSE);

  g_main_context_push_thread_default (io_context);
  g_main_loop_run (loop);       /* never quits: the thread lives with the process */
  return NULL;
}

GMainContext *
gnbd_io_context (void)
{
  static gsize once;

  if (g_once_init_enter (&once)) {
    io_context = g_main_context_new ();
    io_thread = g_thread_new ("gnbd-io", io_thread_main, NULL);
    g_once_init_leave (&once, 1);
  }
  return io_context;
}

gboolean
gnbd_io_in_thread (void)
{
  return io_thread != NULL && g_thread_self () == io_thread;
}

typedef struct {
  GSourceFunc func;
  gpointer data;
  GDestroyNotify notify;
} Work;

static gboolean
work_run (gpointer data)
{
  Work *w = data;

  GNBD_TAKEOVER (w);
  return w->func (w->data);
}

static void
work_free (gpointer data)
{
  Work *w = data;

  GNBD_TAKEOVER (w);
  if (w->notify)
    w->notify (w->data);
  g_free (w);
}

void
gnbd_io_schedule (GSourceFunc func, gpointer data, GDestroyNotify notify)
{
  GSource *source = g_idle_source_new ();
  Work *w = g_new (Work, 1);

  w->func = func;
  w->data = data;
  w->notify = notify;
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, work_run, w, work_free);
  g_source_set_static_name (source, "[gnbd] io work");
  GNBD_HANDOFF (w);
  g_source_attach (source, gnbd_io_context ());
  g_source_unref (source);
}

void
gnbd_io_wakeup (void)
{
  g_main_context_wakeup (gnbd_io_context ());
}

/* ---- The reader source -------------------------------------------------- */

typedef struct {
  GSource source;
  struct nbd_handle *nbd;
  int fd;                       /* the fd polled, or -1 */
  gpointer tag;
  GIOCondition events;          /* what the tag polls */
  gint poked;                   /* atomic */
  GnbdIoFunc func;
  GnbdIoPassive passive;
  gpointer data;
} IoSource;

/* The fd and the events to poll follow the handle: a TCP connect may try
 * several sockets, and the direction changes with the state.  With no
 * direction (dead, closed, waiting in option mode) the fd is not polled at
 * all: poll(2) reports a hangup even for no events, and nothing would
 * consume it. */
static gboolean
io_source_prepare (GSource *source, gint *timeout)
{
  IoSource *s = (IoSource *) source;
  GIOCondition events = 0;
  unsigned dir;
  int fd;

  GNBD_TAKEOVER (s);
  dir = nbd_aio_get_direction (s->nbd);                 /* lock-free */
  fd = dir ? nbd_aio_get_fd (s->nbd) : -1;              /* lock-free */
  *timeout = -1;
  if ((dir & LIBNBD_AIO_DIRECTION_READ) && s->passive && s->passive (s->data))
    /* Another thread reads: only the end of the connection wakes us (a
     * TCP peer's FIN is POLLRDHUP, not POLLHUP, while we still send). */
    events |= G_IO_HUP | G_IO_ERR | GNBD_IO_RDHUP;
  else if (dir & LIBNBD_AIO_DIRECTION_READ)
    events |= G_IO_IN | G_IO_HUP | G_IO_ERR;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    events |= G_IO_OUT;
  /* Only on a change: each of these wakes the context up, so calling them
   * in every prepare would spin. */
  if (fd != s->fd) {
    if (s->tag)
      g_source_remove_unix_fd (source, s->tag);
    s->tag = fd >= 0 ? g_source_add_unix_fd (source, fd, events) : NULL;
    s->fd = fd;
    s->events = events;
  }
  else if (s->tag && events != s->events) {
    g_source_modify_unix_fd (source, s->tag, events);
    s->events = events;
  }
  return g_atomic_int_get (&s->poked);
}

static gboolean
io_source_check (GSource *source)
{
  IoSource *s = (IoSource *) source;

  return g_atomic_int_get (&s->poked) ||
         (s->tag && g_source_query_unix_fd (source, s->tag) != 0);
}

static gboolean
io_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  IoSource *s = (IoSource *) source;
  GIOCondition revents;
  gboolean ret;

  GNBD_TAKEOVER (s);
  revents = s->tag ? g_source_query_unix_fd (source, s->tag) : 0;
  g_atomic_int_set (&s->poked, 0);
  gnbd_result_batch_begin ();
  ret = s->func (s->data, revents);
  gnbd_result_batch_end ();
  return ret;
}

static GSourceFuncs io_source_funcs = {
  .prepare = io_source_prepare,
  .check = io_source_check,
  .dispatch = io_source_dispatch,
};

GSource *
gnbd_io_source_new (struct nbd_handle *nbd, GnbdIoFunc func, GnbdIoPassive passive,
                    gpointer data)
{
  GSource *source = g_source_new (&io_source_funcs, sizeof (IoSource));
  IoSource *s = (IoSource *) source;

  s->nbd = nbd;
  s->fd = -1;
  s->func = func;
  s->passive = passive;
  s->data = data;
  g_source_set_static_name (source, "[gnbd] reader");
  /* GLib blocks a source that may not recurse while it dispatches: it takes
   * its fds out of the poll set and puts them back, and each of the two
   * wakes the context with a write to its eventfd, then costs a poll and a
   * read: three system calls per dispatch for nothing, for the func never
   * iterates the I/O context. */
  g_source_set_can_recurse (source, TRUE);
  GNBD_HANDOFF (s);
  return source;
}

void
gnbd_io_source_poke (GSource *source)
{
  IoSource *s = (IoSource *) source;

  GNBD_HANDOFF (s);
  g_atomic_int_set (&s->poked, 1);
  g_main_context_wakeup (gnbd_io_context ());
}

void
gnbd_deadline (struct timespec *ts, gint64 timeout_us)
{
  clock_gettime (CLOCK_REALTIME, ts);
  ts->tv_sec += timeout_us / G_USEC_PER_SEC;
  ts->tv_nsec += (timeout_us % G_USEC_PER_SEC) * 1000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}
