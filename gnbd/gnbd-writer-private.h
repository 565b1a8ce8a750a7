/* gnbd-writer-private.h: the process's writer task (gnbd-writer.c).
 * Never installed. */
#pragma once

#include <glib.h>

struct nbd_handle;

G_BEGIN_DECLS

typedef struct _GnbdWriterConn GnbdWriterConn;

/* Called after lent bytes were given back up to the end of a lent run (a
 * write's payload), on the sending thread (the task's or a batch's).  A
 * write whose reply overtook that release is pinned by the core until the
 * next call into the handle (nbd_poll would wake on the release, a loop of
 * one's own does not): the connection must then call into it. */
typedef void (*GnbdWriterReleased) (gpointer data);

/* Make @nbd (newly created) send through the writer task: sets the core's
 * zero-copy writer on it and registers it, starting the task if it is not
 * running.  @released (with @data) runs as said above, only while @nbd is
 * registered.  NULL with the core's error set if the core refused. */
GnbdWriterConn *gnbd_writer_conn_new (struct nbd_handle *nbd, GnbdWriterReleased released,
                                      gpointer data);

/* Stop serving @w and drop it: waits for a send in progress on it (never
 * more than a few non-blocking sendmsg calls), drops what is queued and
 * gives every lent byte back.  Nothing touches the handle afterwards, so
 * the caller may nbd_close it.  The task ends once no connection is left. */
void gnbd_writer_conn_free (GnbdWriterConn *w);

/* Around code that issues requests (nesting allowed): the bytes they queue
 * on connections with the writer are sent by this thread at the outermost
 * end, at once, rather than by the task after a wake-up; the task takes
 * over only what the socket would not take.  Never blocks. */
void gnbd_writer_batch_begin (void);
void gnbd_writer_batch_end (void);

/* For tests: wait until no writer task is running or starting, at most
 * @timeout_us; TRUE if it got there. */
gboolean gnbd_writer_wait_stopped (gint64 timeout_us);

/* For tests: sendmsg calls made for connections with the writer, by the
 * task or by batches, since the process started. */
guint64 gnbd_writer_count_sends (void);
/* Once the connection is ready: whether TLS was negotiated.  With TLS,
 * batches leave the sending, and so the encrypting, to the task. */
void gnbd_writer_conn_set_tls (GnbdWriterConn *w, gboolean tls);
/* Payload bytes lent so far to the queues of the connections registered
 * now (a test's before and after, around I/O on a live connection). */
guint64 gnbd_writer_count_lent (void);
/* For tests: how many times a thread woke the task from its poll. */
guint64 gnbd_writer_count_wakes (void);

/* For tests: give lent bytes back @delay_ms after sending them (0, the
 * default: at once), so that the server's replies overtake the releases. */
void gnbd_writer_delay_releases (guint delay_ms);

G_END_DECLS
