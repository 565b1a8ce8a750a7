/* gnbd-result-private.h: the GAsyncResult of every request (gnbd-result.c).
 * Never installed.
 *
 * A GTask costs a new GObject (about 2,400 instructions to make and free)
 * and an idle source with a wake-up of the caller's context for each
 * return: at 64 requests in flight that was most of a request's cost.  A
 * GnbdResult does what a request needs and no more:
 *
 *  - Results are recycled: once the callback returned and nobody else holds
 *    the result (no reference, no qdata), it goes back to a pool of its
 *    context instead of being freed.
 *  - Returns are batched: each context has one delivery source; a return
 *    queues the result there and wakes the context only when the queue was
 *    empty, and one dispatch runs every queued callback, in return order.
 *  - A sync call has no context at all: its return wakes the waiting thread
 *    directly (gnbd_result_wait), and that thread keeps one result to reuse.
 *    Or the waiting thread reads the reply itself (gnbd-conn.c, "Sync
 *    calls"), and nothing needs waking.
 *
 * The callback never runs inside the _async call, always in a later
 * iteration of the thread-default context of the thread that made the
 * result, as with GTask.
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define GNBD_TYPE_RESULT (gnbd_result_get_type ())
G_DECLARE_FINAL_TYPE (GnbdResult, gnbd_result, GNBD, RESULT, GObject)

/* A result delivered to @callback in the current thread-default context.
 * Returns a reference for the caller. */
GnbdResult *gnbd_result_new (gpointer source_object, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data, gpointer tag);

/* A result for a sync call on this thread: no callback; the thread waits
 * with gnbd_result_wait, then finishes it and calls gnbd_result_sync_done.
 * A return from another thread writes to the thread's eventfd
 * (gnbd_result_wake_fd), which a thread may poll along with other fds,
 * checking gnbd_result_is_done after each wake-up. */
GnbdResult *gnbd_result_new_sync (gpointer source_object, GCancellable *cancellable,
                                  gpointer tag);
int gnbd_result_wake_fd (void);
gboolean gnbd_result_is_sync (GnbdResult *self);
/* The context an async result is delivered in (NULL for a sync call's). */
GMainContext *gnbd_result_get_context (GnbdResult *self);
gboolean gnbd_result_is_done (GnbdResult *self);
void gnbd_result_wait (GnbdResult *self);
void gnbd_result_sync_done (GnbdResult *self);

GCancellable *gnbd_result_get_cancellable (GnbdResult *self);

/* Once per result, from any thread; each consumes the reference it is
 * given (the result then belongs to the delivery) and takes @value and
 * @error. */
void gnbd_result_return_pointer (GnbdResult *self, gpointer value, GDestroyNotify destroy);
void gnbd_result_return_boolean (GnbdResult *self, gboolean value);
void gnbd_result_return_error (GnbdResult *self, GError *error);
void gnbd_result_return_new_error (GnbdResult *self, GQuark domain, gint code,
                                   const char *format, ...) G_GNUC_PRINTF (4, 5);
/* If the cancellable is cancelled: returns G_IO_ERROR_CANCELLED (consuming
 * the reference) and TRUE; else FALSE and the reference is still yours. */
gboolean gnbd_result_return_error_if_cancelled (GnbdResult *self);

/* Around code that returns many results (nesting allowed): the contexts
 * are woken at the outermost end, once each, rather than as each one's
 * first result comes.  The I/O thread's reader does this: the completions
 * run under the handle's lock, which the callers issuing requests need. */
void gnbd_result_batch_begin (void);
void gnbd_result_batch_end (void);

/* For the _finish functions. */
gboolean gnbd_result_is_valid (gpointer result, gpointer source_object, gpointer tag);
gpointer gnbd_result_propagate_pointer (GnbdResult *self, GError **error);
gboolean gnbd_result_propagate_boolean (GnbdResult *self, GError **error);

/* For tests: how many results were made, and how many times a context was
 * woken for a batch, since the process started. */
guint64 gnbd_result_count_made (void);
guint64 gnbd_result_count_wakeups (void);

G_END_DECLS
