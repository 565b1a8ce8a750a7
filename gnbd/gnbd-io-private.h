/* gnbd-io-private.h: the process's I/O thread and the reader source
 * (gnbd-io.c).  Never installed. */
#pragma once

#include <glib.h>

struct nbd_handle;

#include <time.h>

G_BEGIN_DECLS

/* The I/O thread's context, starting the thread on first use.  The thread
 * lives as long as the process (like GDBus's worker): one for all clients. */
GMainContext *gnbd_io_context (void);
gboolean gnbd_io_in_thread (void);

/* Run @func on the I/O thread, in a later iteration (never inline, even
 * from the I/O thread itself: callers may hold locks @func takes). */
void gnbd_io_schedule (GSourceFunc func, gpointer data, GDestroyNotify notify);

/* Make the I/O thread recompute what it polls (a direction changed). */
void gnbd_io_wakeup (void);

/* The reader: a source on the I/O context that polls @nbd's fd for what
 * nbd_aio_get_direction asks (IN, HUP and ERR whenever it reads; OUT when it
 * writes, which never happens under a concurrent writer), following the fd
 * as it changes, and calls @func with what happened.  @func also runs,
 * with revents 0, after gnbd_io_source_poke. */
typedef gboolean (*GnbdIoFunc) (gpointer data, GIOCondition revents);

/* Asked in each prepare: TRUE while another thread reads @nbd; the source
 * then polls only for the end of the connection (HUP, ERR, GNBD_IO_RDHUP),
 * and must be poked when that stops while replies are awaited. */
typedef gboolean (*GnbdIoPassive) (gpointer data);

/* POLLRDHUP, which GIOCondition lacks; GLib passes it to poll(2). */
#define GNBD_IO_RDHUP ((GIOCondition) 0x2000)

GSource *gnbd_io_source_new (struct nbd_handle *nbd, GnbdIoFunc func, GnbdIoPassive passive,
                             gpointer data);
/* From any thread: have @source's func run soon. */
void gnbd_io_source_poke (GSource *source);

/* @ts = now + @timeout_us on CLOCK_REALTIME, for pthread_cond_timedwait
 * (the tests' bounded waits). */
void gnbd_deadline (struct timespec *ts, gint64 timeout_us);

G_END_DECLS
