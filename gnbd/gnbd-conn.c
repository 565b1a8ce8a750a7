/* gnbd-conn.c: one NBD connection: a libnbd-core handle, driven from the
 * I/O thread, sending through the writer task (see gnbd-conn-private.h).
 *
 * Owns the handle's whole life (create, connect, requests, end, close), the
 * request records between the core and their GTasks, and the mapping of
 * every failure to a GError that says what the server did.
 *
 * Threads: requests are issued (nbd_aio_*) on the caller's thread, inside
 * conn_enter/conn_leave; a sync call's thread also reads replies while it
 * waits for its own (conn_drive); everything else that calls the core
 * (reading replies, noticing the end, nbd_close) runs on the I/O thread,
 * which is also where the handle is closed, once no caller is inside it.  Completion
 * callbacks only complete GTasks, which deliver to their own contexts.  The
 * lock order is the handle's lock, then conn->lock: no core call is ever
 * made with conn->lock held.
 *
 * Errors: a request that fails while the connection lives was refused
 * (GNBD_ERROR); one that fails because the connection died failed with it
 * (G_IO_ERROR).  The core reports both alike to the completion callback,
 * and its public state is updated only when the call that killed the
 * handle returns, so failed requests wait in conn->failed and are
 * classified on the I/O thread after a call that takes the handle lock
 * (which waits for any call in progress to finish).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include <libnbd.h>

#include "gnbd-buffers-private.h"
#include "gnbd-conn-private.h"
#include "gnbd-error-private.h"
#include "gnbd-io-private.h"
#include "gnbd-result-private.h"
#include "gnbd-tsan-private.h"
#include "gnbd-types-private.h"
#include "gnbd-writer-private.h"

G_STATIC_ASSERT (GNBD_COMMAND_FLAG_FUA == LIBNBD_CMD_FLAG_FUA);
G_STATIC_ASSERT (GNBD_COMMAND_FLAG_NO_HOLE == LIBNBD_CMD_FLAG_NO_HOLE);
G_STATIC_ASSERT (GNBD_COMMAND_FLAG_DF == LIBNBD_CMD_FLAG_DF);
G_STATIC_ASSERT (GNBD_COMMAND_FLAG_REQ_ONE == LIBNBD_CMD_FLAG_REQ_ONE);
G_STATIC_ASSERT (GNBD_COMMAND_FLAG_FAST_ZERO == LIBNBD_CMD_FLAG_FAST_ZERO);
G_STATIC_ASSERT ((int) GNBD_TLS_DISABLE == LIBNBD_TLS_DISABLE);
G_STATIC_ASSERT ((int) GNBD_TLS_ALLOW == LIBNBD_TLS_ALLOW);
G_STATIC_ASSERT ((int) GNBD_TLS_REQUIRE == LIBNBD_TLS_REQUIRE);

typedef enum {
  PHASE_NEW,
  PHASE_CONNECTING,
  PHASE_READY,
  PHASE_ENDED,
} Phase;

struct _GnbdConn {
  gint ref_count;
  GnbdSettings settings;
  GnbdConnEvents events;
  gboolean list_mode;           /* list_exports: option mode, then abort */

  /* Set once at connect; cleared by conn_close_handle (I/O thread) when
   * no caller is inside it. */
  struct nbd_handle *nbd;
  GnbdWriterConn *writer;       /* I/O thread, until the end */

  pthread_mutex_t lock;
  Phase phase;
  GSource *source;              /* the reader on the I/O context */
  GTask *connect_task;          /* connect or list_exports, until it returns */
  GCancellable *connect_cancellable;
  gulong connect_cancel_id;
  GQueue failed;                /* Requests to classify, with a ref each */
  gint n_failed;                /* atomic: its length, read without the lock */
  GPtrArray *shutdown_waits;    /* ShutdownWait */
  int users;                    /* callers inside a core call (conn_enter) */
  gint sync_driver;             /* atomic: a sync caller reads the socket */
  gint reader_passive;          /* atomic: the I/O thread's last poll did not */
  GSource *home;                /* the home reader, until teardown */
  GMainContext *home_context;   /* its context (a reference), set once under
                                 * the lock, read without it (atomic) */
  gint home_active;             /* atomic: the home reader polls */
  gint home_off;                /* atomic: shutting down: no standing back */
  gint foreign;                 /* atomic: async requests of other contexts,
                                 * or before there was a home, in flight */
  gboolean torn_down;           /* nothing new starts */
  gboolean close_pending;       /* the handle closes when users reaches 0 */
  gboolean self_owned;          /* list mode: the connection holds itself */
  int end_errno;                /* the first cause of the end */
  char *end_message;

  /* I/O thread only. */
  gboolean announced;           /* conn_ready ran */
  gboolean closing_handle;      /* nbd_close runs: .free returns tasks */
  GPtrArray *exports;           /* list mode */
  gboolean list_issued;
  int list_errno;               /* -1 until the list completes */
};

static void conn_teardown (GnbdConn *conn);
static void conn_close_handle (GnbdConn *conn);

/* How many connections are not freed yet (gnbd_conn_wait_none). */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  guint count;
} live = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

/* ---- Life ---------------------------------------------------------------- */

GnbdConn *
gnbd_conn_new (const GnbdSettings *settings, const GnbdConnEvents *events)
{
  GnbdConn *conn = g_new0 (GnbdConn, 1);

  conn->ref_count = 1;
  gnbd_settings_copy (&conn->settings, settings);
  if (events)
    conn->events = *events;
  pthread_mutex_init (&conn->lock, NULL);
  g_queue_init (&conn->failed);
  conn->shutdown_waits = g_ptr_array_new ();
  conn->list_errno = -1;
  pthread_mutex_lock (&live.lock);
  live.count++;
  pthread_mutex_unlock (&live.lock);
  return conn;
}

GnbdConn *
gnbd_conn_ref (GnbdConn *conn)
{
  g_atomic_int_inc (&conn->ref_count);
  return conn;
}

static gboolean
conn_free (gpointer data)
{
  GnbdConn *conn = data;

  conn_teardown (conn);
  g_assert (conn->nbd == NULL && g_queue_is_empty (&conn->failed));
  gnbd_settings_clear (&conn->settings);
  g_clear_pointer (&conn->home_context, g_main_context_unref);
  if (conn->events.destroy)
    conn->events.destroy (conn->events.data);
  g_ptr_array_unref (conn->shutdown_waits);
  g_clear_pointer (&conn->exports, g_ptr_array_unref);
  g_free (conn->end_message);
  pthread_mutex_destroy (&conn->lock);
  g_free (conn);
  pthread_mutex_lock (&live.lock);
  if (--live.count == 0)
    pthread_cond_broadcast (&live.cond);
  pthread_mutex_unlock (&live.lock);
  return G_SOURCE_REMOVE;
}

gboolean
gnbd_conn_wait_none (gint64 timeout_us)
{
  struct timespec end;
  gboolean r;

  gnbd_deadline (&end, timeout_us);
  pthread_mutex_lock (&live.lock);
  while (live.count > 0 && pthread_cond_timedwait (&live.cond, &live.lock, &end) == 0)
    ;
  r = live.count == 0;
  pthread_mutex_unlock (&live.lock);
  return r;
}

/* The last reference may go on any thread, inside a core callback too:
 * the handle is closed, and the memory freed, on the I/O thread later. */
void
gnbd_conn_unref (GnbdConn *conn)
{
  if (g_atomic_int_dec_and_test (&conn->ref_count))
    gnbd_io_schedule (conn_free, conn, NULL);
}

/* A caller's thread about to call the core on conn->nbd: FALSE if the
 * connection is closed or closing. */
static gboolean
conn_enter (GnbdConn *conn)
{
  gboolean ok;

  pthread_mutex_lock (&conn->lock);
  ok = !conn->torn_down && conn->nbd != NULL;
  if (ok)
    conn->users++;
  pthread_mutex_unlock (&conn->lock);
  return ok;
}

static gboolean
close_handle_cb (gpointer data)
{
  conn_close_handle (data);
  return G_SOURCE_REMOVE;
}

static void
conn_leave (GnbdConn *conn)
{
  gboolean close_now;

  pthread_mutex_lock (&conn->lock);
  close_now = --conn->users == 0 && conn->close_pending;
  if (close_now)
    conn->close_pending = FALSE;
  pthread_mutex_unlock (&conn->lock);
  if (close_now)
    gnbd_io_schedule (close_handle_cb, gnbd_conn_ref (conn), (GDestroyNotify) gnbd_conn_unref);
}

/* Have the I/O thread run the reader's dispatch soon. */
static void
conn_poke (GnbdConn *conn)
{
  GSource *source;

  pthread_mutex_lock (&conn->lock);
  source = conn->source ? g_source_ref (conn->source) : NULL;
  pthread_mutex_unlock (&conn->lock);
  if (source) {
    gnbd_io_source_poke (source);
    g_source_unref (source);
  }
}

/* Keep the first cause of the end: the one error message that says why. */
static void
note_end (GnbdConn *conn, int err, const char *msg)
{
  pthread_mutex_lock (&conn->lock);
  if (!conn->end_errno) {
    conn->end_errno = err ? err : ENOTCONN;
    conn->end_message = g_strdup (msg);
  }
  pthread_mutex_unlock (&conn->lock);
}

static gboolean
handle_ended (struct nbd_handle *nbd)
{
  return nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd);
}

/* After a caller's thread called the core (still inside conn_enter): wake
 * the I/O thread if it must send (no writer), notice an end, or classify
 * failures. */
static void
conn_after_call (GnbdConn *conn)
{
  if (!conn->settings.concurrent_writer &&
      (nbd_aio_get_direction (conn->nbd) & LIBNBD_AIO_DIRECTION_WRITE))
    gnbd_io_wakeup ();
  if (g_atomic_int_get (&conn->n_failed) || handle_ended (conn->nbd))
    conn_poke (conn);
}

/* ---- Errors -------------------------------------------------------------- */

/* The transport is gone: G_IO_ERROR, with why it ended. */
static GError *
transport_error (GnbdConn *conn, const char *what)
{
  GError *e;

  pthread_mutex_lock (&conn->lock);
  if (conn->end_errno)
    e = g_error_new (G_IO_ERROR, gnbd_io_error_code_from_errno (conn->end_errno),
                     "%s%sthe connection to the NBD server broke: %s (%s)",
                     what ? what : "", what ? ": " : "",
                     conn->end_message ? conn->end_message : g_strerror (conn->end_errno),
                     gnbd_errno_name (conn->end_errno));
  else
    e = g_error_new (G_IO_ERROR, G_IO_ERROR_CLOSED, "%s%sthe connection to the NBD server "
                     "was closed", what ? what : "", what ? ": " : "");
  pthread_mutex_unlock (&conn->lock);
  /* Capitalize the first letter of a sentence we built. */
  e->message[0] = g_ascii_toupper (e->message[0]);
  return e;
}

/* What to change, for a refusal with @err. */
static const char *
refusal_hint (int err)
{
  switch (err) {
  case EPERM:
  case EACCES:
  case EROFS:
    return "the export may be read-only (see the read-only property) or the server's "
           "policy forbids it";
  case EINVAL:
  case ERANGE:
    return "check the offset, count and flags against the export's size, block sizes "
           "and can-* properties";
  case ENOSPC:
    return "the server has no space left for the data";
  case EOVERFLOW:
    return "the request is too large: split it below block-size-maximum";
  case ENOTSUP:
    return "the server does not support this request or flag: see the can-* properties";
  case ESHUTDOWN:
    return "the server is shutting down";
  case EIO:
    return "the server's storage failed";
  case ENOMEM:
    return "out of memory";
  default:
    return NULL;
  }
}

/* A connect that failed: @err and @msg from the core.  Before the server
 * said anything it is the transport (G_IO_ERROR); once negotiating, the
 * server refused (GNBD_ERROR), TLS included. */
static GError *
connect_error (int err, const char *msg, gboolean before_socket)
{
  const char *m = msg ? msg : g_strerror (err);

  /* libnbd-core reports the server's NBD_REP_ERR_TLS_REQD as ENOTSUP, as
   * libnbd does; only its message tells it from other refusals. */
  if (msg && strstr (msg, "TLS is required by the server"))
    return g_error_new (GNBD_ERROR, GNBD_ERROR_TLS_REQUIRED,
                        "The NBD server requires TLS, and the client did not offer it: set the "
                        "client's tls property to GNBD_TLS_REQUIRE (or GNBD_TLS_ALLOW) with "
                        "tls-certificates or tls-psk-file, or connect with an nbds:// URI");
  if (msg && strstr (msg, "TLS"))
    return g_error_new (GNBD_ERROR, GNBD_ERROR_TLS_FAILED,
                        "TLS negotiation with the NBD server failed: %s (%s)", m,
                        gnbd_errno_name (err));
  if (msg && strstr (msg, "handshake:") &&
      err != ECONNRESET && err != EPIPE && err != ENOTCONN)
    return g_error_new (GNBD_ERROR, gnbd_error_code_from_errno (err),
                        "The NBD server refused the connection: %s (%s)", m,
                        gnbd_errno_name (err));
  if (before_socket && (err == EINVAL || err == EPERM || err == ENOTSUP || err == ENOMEM))
    return g_error_new (GNBD_ERROR, gnbd_error_code_from_errno (err),
                        "The client cannot connect like this: %s (%s)", m, gnbd_errno_name (err));
  return g_error_new (G_IO_ERROR, gnbd_io_error_code_from_errno (err),
                      "Cannot connect to the NBD server: %s (%s)", m, gnbd_errno_name (err));
}

/* ---- Connecting ------------------------------------------------------------ */

/* The connect (or list) task fails: the client hears `closed` first (so
 * that it may connect again), then the task returns, then the connection
 * is torn down on the I/O thread.  Any thread. */
static gboolean teardown_cb (gpointer data);

static void
connect_fail_full (GnbdConn *conn, GError *error, gboolean then_teardown)
{
  GTask *task;

  pthread_mutex_lock (&conn->lock);
  task = g_steal_pointer (&conn->connect_task);
  if (task)
    conn->phase = PHASE_ENDED;
  pthread_mutex_unlock (&conn->lock);
  if (!task) {
    g_error_free (error);
    return;
  }
  if (conn->events.closed)
    conn->events.closed (conn, g_error_copy (error), conn->events.data);
  GNBD_HANDOFF (task);
  g_task_return_error (task, error);
  g_object_unref (task);
  if (then_teardown)
    gnbd_io_schedule (teardown_cb, gnbd_conn_ref (conn), (GDestroyNotify) gnbd_conn_unref);
}

static void
connect_fail (GnbdConn *conn, GError *error)
{
  connect_fail_full (conn, error, TRUE);
}

/* Runs in the cancelling thread: the connect returns at once; the
 * connection goes.  (The handler is disconnected later, in teardown or
 * ready: never from inside itself.) */
static void
connect_cancelled (GCancellable *cancellable, gpointer data)
{
  GnbdConn *conn = data;
  GError *error = NULL;

  GNBD_TAKEOVER (conn);
  g_cancellable_set_error_if_cancelled (cancellable, &error);
  connect_fail (conn, error);
}

static gboolean io_dispatch (gpointer data, GIOCondition revents);

/* While a sync caller reads the replies itself, or the home reader does
 * (for the requests of its context only), the I/O thread does not. */
static gboolean
conn_passive (gpointer data)
{
  GnbdConn *conn = data;
  gboolean passive = g_atomic_int_get (&conn->sync_driver) != 0 ||
                     (g_atomic_int_get (&conn->home_active) &&
                      !g_atomic_int_get (&conn->home_off) &&
                      g_atomic_int_get (&conn->foreign) == 0);

  g_atomic_int_set (&conn->reader_passive, passive);
  return passive;
}

/* The socket exists and the handshake runs: from now on the I/O thread
 * reads (and, without a writer, writes). */
static void
attach_source (GnbdConn *conn)
{
  GSource *source;

  /* conn->nbd is read under the lock, once the connection is known not
   * to be torn down: a cancelled connect's teardown may close the handle
   * (conn_close_handle, on the I/O thread) at any moment after this
   * thread left it.  Making the source takes no GLib lock. */
  pthread_mutex_lock (&conn->lock);
  if (conn->torn_down) {
    pthread_mutex_unlock (&conn->lock);
    return;
  }
  source = gnbd_io_source_new (conn->nbd, io_dispatch, conn_passive, conn);
  /* conn->source is the connection's reference, which the I/O thread may
   * drop as soon as the source is attached: this call keeps its own. */
  conn->source = g_source_ref (source);
  pthread_mutex_unlock (&conn->lock);
  g_source_attach (source, gnbd_io_context ());
  /* The core may have gone through the whole handshake inside the
   * connect call already: nothing would come to read. */
  gnbd_io_source_poke (source);
  g_source_unref (source);
}

typedef struct {
  GnbdConn *conn;
  GnbdConnectKind kind;
  char *a;
  char *b;
  char **argv;
  int err;                      /* the core's errno, 0 on success */
  char *msg;
} ConnectArgs;

static void
connect_args_free (gpointer data)
{
  ConnectArgs *args = data;

  /* The task's last reference, and so this, may go on the GTask thread. */
  GNBD_TAKEOVER (args);
  gnbd_conn_unref (args->conn);
  g_free (args->a);
  g_free (args->b);
  g_strfreev (args->argv);
  g_free (args->msg);
  g_free (args);
}

/* The core's connect call: quick for every form but a TCP one, which
 * resolves the name (getaddrinfo) first. */
static void
connect_call (ConnectArgs *args)
{
  GnbdConn *conn = args->conn;
  struct nbd_handle *nbd = conn->nbd;
  int r = -1;

  if (!conn_enter (conn)) {
    args->err = ECANCELED;
    return;
  }
  switch (args->kind) {
  case GNBD_CONNECT_URI:
    r = nbd_aio_connect_uri (nbd, args->a);
    break;
  case GNBD_CONNECT_UNIX:
    r = nbd_aio_connect_unix (nbd, args->a);
    break;
  case GNBD_CONNECT_TCP:
    r = nbd_aio_connect_tcp (nbd, args->a, args->b);
    break;
  case GNBD_CONNECT_COMMAND:
    r = nbd_aio_connect_command (nbd, args->argv);
    break;
  case GNBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION:
    r = nbd_aio_connect_systemd_socket_activation (nbd, args->argv);
    break;
  }
  if (r == -1) {
    args->err = nbd_get_errno () ? nbd_get_errno () : EIO;
    args->msg = g_strdup (nbd_get_error ());
  }
  conn_leave (conn);
}

static void
connect_called (ConnectArgs *args)
{
  if (args->err == ECANCELED && !args->msg)
    return;                     /* torn down meanwhile: the task returned */
  if (args->err)
    connect_fail (args->conn, connect_error (args->err, args->msg, TRUE));
  else
    attach_source (args->conn);
}

static void
connect_thread (GTask *task, gpointer source_object, gpointer task_data,
                GCancellable *cancellable)
{
  GNBD_TAKEOVER (task_data);
  connect_call (task_data);
  GNBD_HANDOFF (task_data);
  g_task_return_boolean (task, TRUE);
}

/* Back in the caller's context, before the connect task can return: a
 * sync connect's private context is thus never left with this pending. */
static void
connect_thread_done (GObject *source, GAsyncResult *result, gpointer data)
{
  ConnectArgs *args = g_task_get_task_data (G_TASK (result));

  GNBD_TAKEOVER (args);
  connect_called (args);
  GNBD_HANDOFF (args);
}

/* Make the handle as the settings say. */
static gboolean
create_handle (GnbdConn *conn, GError **error)
{
  const GnbdSettings *s = &conn->settings;
  struct nbd_handle *nbd = nbd_create ();
  gboolean ok;

  if (!nbd) {
    g_set_error (error, GNBD_ERROR, gnbd_error_code_from_errno (nbd_get_errno ()),
                 "Cannot create an NBD handle: %s", nbd_get_error ());
    return FALSE;
  }
  /* The URI comes from the application, not from a stranger: its
   * tls-certificates and tls-psk-file may name local files. */
  ok = nbd_set_uri_allow_local_file (nbd, true) == 0 &&
       (!s->handle_name || nbd_set_handle_name (nbd, s->handle_name) == 0) &&
       nbd_set_export_name (nbd, s->export_name ? s->export_name : "") == 0 &&
       nbd_set_tls (nbd, (int) s->tls) == 0 &&
       (!s->tls_certificates || nbd_set_tls_certificates (nbd, s->tls_certificates) == 0) &&
       (!s->tls_psk_file || nbd_set_tls_psk_file (nbd, s->tls_psk_file) == 0) &&
       (!s->tls_username || nbd_set_tls_username (nbd, s->tls_username) == 0) &&
       nbd_set_request_structured_replies (nbd, s->request_structured_replies) == 0 &&
       nbd_set_full_info (nbd, true) == 0 &&
       (!conn->list_mode || nbd_set_opt_mode (nbd, true) == 0);
  if (ok && !s->meta_contexts)
    ok = nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0;
  for (char **m = s->meta_contexts; ok && m && *m; m++)
    ok = nbd_add_meta_context (nbd, *m) == 0;
  if (ok && s->concurrent_writer && !conn->list_mode)
    ok = (conn->writer = gnbd_writer_conn_new (nbd, (GnbdWriterReleased) conn_poke, conn)) != NULL;
  if (!ok) {
    g_set_error (error, GNBD_ERROR, gnbd_error_code_from_errno (nbd_get_errno ()),
                 "The client's settings are not valid: %s (%s)", nbd_get_error (),
                 gnbd_errno_name (nbd_get_errno ()));
    nbd_close (nbd);
    return FALSE;
  }
  conn->nbd = nbd;
  return TRUE;
}

void
gnbd_conn_connect (GnbdConn *conn, GnbdConnectKind kind, const char *a, const char *b,
                   const char *const *argv, GTask *task)
{
  GCancellable *cancellable = g_task_get_cancellable (task);
  GError *error = NULL;
  ConnectArgs *args;

  pthread_mutex_lock (&conn->lock);
  conn->connect_task = g_object_ref (task);
  conn->phase = PHASE_CONNECTING;
  pthread_mutex_unlock (&conn->lock);

  if (!create_handle (conn, &error)) {
    connect_fail (conn, error);
    return;
  }
  if (cancellable) {
    gboolean cancelled;
    gulong id;

    GNBD_HANDOFF (conn);
    id = g_cancellable_connect (cancellable, G_CALLBACK (connect_cancelled),
                                gnbd_conn_ref (conn), (GDestroyNotify) gnbd_conn_unref);
    pthread_mutex_lock (&conn->lock);
    cancelled = conn->connect_task == NULL;
    if (!cancelled) {
      /* Teardown (or the connect completing) disconnects it. */
      conn->connect_cancellable = g_object_ref (cancellable);
      conn->connect_cancel_id = id;
    }
    pthread_mutex_unlock (&conn->lock);
    if (cancelled) {
      /* Returned and being torn down already; the handler holds a
       * reference to the connection until it is disconnected. */
      if (id)
        g_cancellable_disconnect (cancellable, id);
      return;
    }
  }

  args = g_new0 (ConnectArgs, 1);
  args->conn = gnbd_conn_ref (conn);
  args->kind = kind;
  args->a = g_strdup (a);
  args->b = g_strdup (b);
  args->argv = g_strdupv ((char **) argv);
  if (kind == GNBD_CONNECT_TCP || kind == GNBD_CONNECT_URI) {
    /* Name resolution blocks: a short GTask thread does it, never the
     * caller's thread or the I/O thread. */
    GTask *resolve = g_task_new (NULL, NULL, connect_thread_done, NULL);

    g_task_set_source_tag (resolve, connect_thread);
    g_task_set_name (resolve, "[gnbd] connect");
    g_task_set_task_data (resolve, args, connect_args_free);
    GNBD_HANDOFF (args);
    g_task_run_in_thread (resolve, connect_thread);
    g_object_unref (resolve);
    return;
  }
  connect_call (args);
  connect_called (args);
  connect_args_free (args);
}

/* The facts of the export, as the handle knows them once ready. */
static GnbdFacts *
read_facts (struct nbd_handle *nbd)
{
  GnbdFacts *f = g_new0 (GnbdFacts, 1);
  const char *protocol = nbd_get_protocol (nbd);
  char *s;

  f->size = (guint64) MAX (nbd_get_size (nbd), 0);
  f->read_only = nbd_is_read_only (nbd) == 1;
  f->can_flush = nbd_can_flush (nbd) == 1;
  f->can_fua = nbd_can_fua (nbd) == 1;
  f->can_trim = nbd_can_trim (nbd) == 1;
  f->can_zero = nbd_can_zero (nbd) == 1;
  f->can_fast_zero = nbd_can_fast_zero (nbd) == 1;
  f->can_cache = nbd_can_cache (nbd) == 1;
  f->can_df = nbd_can_df (nbd) == 1;
  f->can_multi_conn = nbd_can_multi_conn (nbd) == 1;
  f->is_rotational = nbd_is_rotational (nbd) == 1;
  f->tls_negotiated = nbd_get_tls_negotiated (nbd) == 1;
  f->structured_replies_negotiated = nbd_get_structured_replies_negotiated (nbd) == 1;
  f->block_size_minimum = (guint) CLAMP (nbd_get_block_size (nbd, LIBNBD_SIZE_MINIMUM), 0,
                                         G_MAXUINT);
  f->block_size_preferred = (guint) CLAMP (nbd_get_block_size (nbd, LIBNBD_SIZE_PREFERRED), 0,
                                           G_MAXUINT);
  f->block_size_maximum = (guint) CLAMP (nbd_get_block_size (nbd, LIBNBD_SIZE_MAXIMUM), 0,
                                         G_MAXUINT);
  f->protocol = g_strdup (protocol);
  if ((s = nbd_get_export_description (nbd))) {
    f->export_description = g_strdup (s);
    free (s);
  }
  if ((s = nbd_get_canonical_export_name (nbd))) {
    f->canonical_name = g_strdup (s);
    free (s);
  }
  return f;
}

/* I/O thread: the handshake is done. */
static void
conn_ready (GnbdConn *conn)
{
  GTask *task;
  GCancellable *cancellable;
  gulong id;

  pthread_mutex_lock (&conn->lock);
  task = g_steal_pointer (&conn->connect_task);
  if (task)
    conn->phase = PHASE_READY;
  cancellable = g_steal_pointer (&conn->connect_cancellable);
  id = conn->connect_cancel_id;
  conn->connect_cancel_id = 0;
  pthread_mutex_unlock (&conn->lock);
  if (id)
    g_cancellable_disconnect (cancellable, id);
  g_clear_object (&cancellable);
  if (!task)
    return;                     /* cancelled meanwhile: being torn down */
  /* Whatever asked for it (the tls property, an nbds URI, "allow"), the
   * handle knows now whether the records are the writer's to make. */
  if (conn->writer)
    gnbd_writer_conn_set_tls (conn->writer, nbd_get_tls_negotiated (conn->nbd) == 1);
  if (conn->events.ready)
    conn->events.ready (conn, read_facts (conn->nbd), conn->events.data);
  GNBD_HANDOFF (task);
  g_task_return_boolean (task, TRUE);
  g_object_unref (task);
}

/* ---- Requests ---------------------------------------------------------------- */

typedef struct {
  gint ref_count;               /* the core's closure, the failed queue, submit */
  GnbdConn *conn;
  GnbdRequestKind kind;
  GnbdResult *result;           /* until returned (then NULL) */
  gint claimed;                 /* atomic: whoever sets it returns the result */
  GCancellable *cancellable;
  gulong cancel_id;
  guint64 offset;
  guint64 count;
  gpointer buf;                 /* pread: the buffer the core fills */
  GBytes *data;                 /* pwrite: the payload, lent to the core */
  char *context;                /* block_status */
  GPtrArray *extents;
  int err;
  gboolean foreign;             /* counted in conn->foreign until freed */
} Request;

static Request *
request_ref (Request *r)
{
  g_atomic_int_inc (&r->ref_count);
  return r;
}

static void
request_unref (Request *r)
{
  if (!g_atomic_int_dec_and_test (&r->ref_count))
    return;
  g_clear_object (&r->result);
  g_clear_object (&r->cancellable);
  if (r->buf)
    gnbd_buffer_give (r->buf);
  g_clear_pointer (&r->data, g_bytes_unref);
  g_free (r->context);
  g_clear_pointer (&r->extents, g_ptr_array_unref);
  gnbd_conn_unref (r->conn);
  g_free (r);
}

static gboolean
request_claim (Request *r)
{
  return g_atomic_int_compare_and_exchange (&r->claimed, 0, 1);
}

/* "read of 4096 bytes at offset 0": for messages. */
static char *
request_describe (const Request *r)
{
  switch (r->kind) {
  case GNBD_REQUEST_PREAD:
    return g_strdup_printf ("read of %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT,
                            r->count, r->offset);
  case GNBD_REQUEST_PWRITE:
    return g_strdup_printf ("write of %" G_GUINT64_FORMAT " bytes at offset %"
                            G_GUINT64_FORMAT, r->count, r->offset);
  case GNBD_REQUEST_FLUSH:
    return g_strdup ("flush");
  case GNBD_REQUEST_TRIM:
    return g_strdup_printf ("trim of %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT,
                            r->count, r->offset);
  case GNBD_REQUEST_ZERO:
    return g_strdup_printf ("zero of %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT,
                            r->count, r->offset);
  case GNBD_REQUEST_CACHE:
    return g_strdup_printf ("cache of %" G_GUINT64_FORMAT " bytes at offset %"
                            G_GUINT64_FORMAT, r->count, r->offset);
  case GNBD_REQUEST_BLOCK_STATUS:
    return g_strdup_printf ("block status of %" G_GUINT64_FORMAT " bytes at offset %"
                            G_GUINT64_FORMAT " (context %s)", r->count, r->offset, r->context);
  }
  g_assert_not_reached ();
}

/* Return @r's result with an error: refused by @who ("server" or "client",
 * with the core's @msg if any), or lost with the connection. */
static void
request_fail (Request *r, int err, const char *who, const char *msg, gboolean transport)
{
  g_autofree char *what = request_describe (r);
  const char *hint = refusal_hint (err);
  GError *e;

  if (transport) {
    g_autofree char *ctx = g_strdup_printf ("The %s failed", what);

    e = transport_error (r->conn, ctx);
  }
  else
    e = g_error_new (GNBD_ERROR, gnbd_error_code_from_errno (err),
                     "The %s refused the %s: %s%s%s%s (%s)", who, what,
                     msg ? msg : g_strerror (err), hint ? " (" : "", hint ? hint : "",
                     hint ? ")" : "", gnbd_errno_name (err));
  gnbd_result_return_error (g_steal_pointer (&r->result), e);
}

static void
request_succeed (Request *r)
{
  GnbdResult *result = g_steal_pointer (&r->result);

  switch (r->kind) {
  case GNBD_REQUEST_PREAD:
    /* The buffer the reply was received into, handed over. */
    gnbd_result_return_pointer (result,
                                gnbd_buffer_to_bytes (g_steal_pointer (&r->buf), r->count),
                                (GDestroyNotify) g_bytes_unref);
    break;
  case GNBD_REQUEST_BLOCK_STATUS:
    gnbd_result_return_pointer (result, g_steal_pointer (&r->extents),
                                (GDestroyNotify) g_ptr_array_unref);
    break;
  default:
    gnbd_result_return_boolean (result, TRUE);
  }
}

/* The core's completion callback: on whichever thread drives the handle,
 * with its lock held.  Success returns the result now; a failure waits to be
 * classified (see the file comment). */
static int
request_completed (void *data, int *error)
{
  Request *r = data;
  GnbdConn *conn = r->conn;

  if (*error) {
    r->err = *error;
    pthread_mutex_lock (&conn->lock);
    g_queue_push_tail (&conn->failed, request_ref (r));
    g_atomic_int_inc (&conn->n_failed);
    pthread_mutex_unlock (&conn->lock);
    if (!gnbd_io_in_thread ())
      conn_poke (conn);
  }
  else if (request_claim (r))
    request_succeed (r);
  return 1;
}

/* The core is done with the request (also when the call failed at once,
 * and for every request still pending at nbd_close).  Buffers lent to the
 * core stay owned by the request until here, even when its result returned
 * early. */
static void
request_freed (void *data)
{
  Request *r = data;

  if (r->cancel_id)
    g_cancellable_disconnect (r->cancellable, r->cancel_id);
  r->cancel_id = 0;
  GNBD_TAKEOVER (r);            /* a cancel handler that ran is over */
  if (r->foreign)
    g_atomic_int_add (&r->conn->foreign, -1);
  if (r->conn->closing_handle && request_claim (r))
    gnbd_result_return_new_error (g_steal_pointer (&r->result), G_IO_ERROR, G_IO_ERROR_CLOSED,
                                  "The client closed the connection before the server "
                                  "replied");
  request_unref (r);
}

/* In the cancelling thread: the result returns CANCELLED now; the request
 * stays with the core, whole, and its reply will be dropped.  The result
 * (and with it the client) is let go at once. */
static void
request_cancelled (GCancellable *cancellable, gpointer data)
{
  Request *r = data;

  GNBD_TAKEOVER (r);
  if (request_claim (r))
    gnbd_result_return_new_error (g_steal_pointer (&r->result), G_IO_ERROR,
                                  G_IO_ERROR_CANCELLED, "Operation was cancelled");
  GNBD_HANDOFF (r);
}

static int
extent_received (void *data, const char *metacontext, uint64_t offset, uint32_t *entries,
                 size_t nr_entries, int *error)
{
  Request *r = data;

  if (strcmp (metacontext, r->context) != 0)
    return 0;
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    g_ptr_array_add (r->extents, gnbd_extent_new (offset, entries[i], entries[i + 1]));
    /* The core checked the lengths against the request; a wrap would still
     * end the list rather than loop. */
    if (!g_uint64_checked_add (&offset, offset, entries[i]))
      break;
  }
  return 0;
}

/* ---- The home reader --------------------------------------------------------------- */

/* The replies to the async requests of one main context, the connection's
 * home (the context of its first async request), are read in that context,
 * by a source there: the thread that will run their callbacks reads them,
 * as a libnbd aio loop does, with no hop from the I/O thread and no other
 * CPU touching them.  The I/O thread stands back while only home requests
 * are in flight; a request from any other context (counted in
 * conn->foreign) has it read again, so a home context that is not running
 * never holds up anyone else's replies (its own could not be delivered
 * anyway).  Nor does a shutdown, which waits for every reply: from then
 * on the I/O thread reads.  The end of the connection still wakes the I/O
 * thread (HUP, RDHUP), which finishes it as before; a sync caller reads
 * for itself.
 * Only with the concurrent writer: the home reader never sends. */

typedef struct {
  GSource source;
  GnbdConn *conn;               /* a reference */
  gpointer tag;
  gboolean polling;
} HomeSource;

static gboolean
home_prepare (GSource *source, gint *timeout)
{
  HomeSource *h = (HomeSource *) source;
  gboolean poll_in = !g_atomic_int_get (&h->conn->sync_driver);

  *timeout = -1;
  /* A sync caller reads: stand back too (both would wake). */
  if (poll_in != h->polling) {
    g_source_modify_unix_fd (source, h->tag, poll_in ? G_IO_IN | G_IO_HUP | G_IO_ERR : 0);
    h->polling = poll_in;
  }
  return FALSE;
}

static gboolean
home_check (GSource *source)
{
  HomeSource *h = (HomeSource *) source;

  return h->polling && g_source_query_unix_fd (source, h->tag) != 0;
}

static gboolean
home_dispatch (GSource *source, GSourceFunc func, gpointer data)
{
  GnbdConn *conn = ((HomeSource *) source)->conn;
  gboolean ended = TRUE;

  if (conn_enter (conn)) {
    gnbd_result_batch_begin ();
    if (!handle_ended (conn->nbd) && nbd_aio_notify_read (conn->nbd) == -1 &&
        (handle_ended (conn->nbd) || nbd_aio_is_created (conn->nbd)))
      note_end (conn, nbd_get_errno (), nbd_get_error ());
    ended = handle_ended (conn->nbd);
    conn_after_call (conn);     /* the end and failures: the I/O thread's */
    conn_leave (conn);
    gnbd_result_batch_end ();
  }
  if (!ended)
    return G_SOURCE_CONTINUE;
  /* Nothing more to read here: the I/O thread reads again, and finishes. */
  g_atomic_int_set (&conn->home_active, 0);
  conn_poke (conn);
  return G_SOURCE_REMOVE;
}

static gboolean
home_gone_cb (gpointer data)
{
  conn_poke (data);
  return G_SOURCE_REMOVE;
}

/* Destroyed (teardown, its end, or its context went away). */
static void
home_finalize (GSource *source)
{
  GnbdConn *conn = ((HomeSource *) source)->conn;

  g_atomic_int_set (&conn->home_active, 0);
  /* Maybe under the dying context's lock: the poke (which takes
   * conn->lock) is made from the I/O thread. */
  gnbd_io_schedule (home_gone_cb, conn, (GDestroyNotify) gnbd_conn_unref);
}

static GSourceFuncs home_funcs = {
  .prepare = home_prepare,
  .check = home_check,
  .dispatch = home_dispatch,
  .finalize = home_finalize,
};

/* Whether @context is the connection's home, making it the home if it has
 * none yet.  The caller is inside conn_enter. */
static gboolean
home_for (GnbdConn *conn, GMainContext *context)
{
  GMainContext *known = g_atomic_pointer_get (&conn->home_context);
  GSource *source = NULL;
  gboolean home;

  /* Set once, for good: after the first request no lock is needed. */
  if (known)
    return known == context;
  pthread_mutex_lock (&conn->lock);
  if (!conn->home_context && !conn->torn_down) {
    HomeSource *h;

    g_atomic_pointer_set (&conn->home_context, g_main_context_ref (context));
    source = g_source_new (&home_funcs, sizeof (HomeSource));
    h = (HomeSource *) source;
    h->conn = gnbd_conn_ref (conn);
    h->tag = g_source_add_unix_fd (source, nbd_aio_get_fd (conn->nbd),
                                   G_IO_IN | G_IO_HUP | G_IO_ERR);
    h->polling = TRUE;
    g_source_set_static_name (source, "[gnbd] home reader");
    g_source_set_can_recurse (source, TRUE);    /* see gnbd_io_source_new */
    conn->home = g_source_ref (source);
    g_atomic_int_set (&conn->home_active, 1);
    /* Under conn->lock, so that teardown finds it attached; GLib's lock
     * comes after conn->lock everywhere (the finalize takes no conn->lock). */
    g_source_attach (source, context);
  }
  home = conn->home_context == context;
  pthread_mutex_unlock (&conn->lock);
  if (source)
    g_source_unref (source);
  return home;
}

/* ---- Sync calls ----------------------------------------------------------------- */

/* A sync call's thread reads the replies itself until its own is in, with
 * the I/O thread standing back (conn_passive): the reply wakes only the
 * caller, as in a plain blocking libnbd call, not the I/O thread which would
 * then wake the caller.  One such reader per connection; the others wait
 * for it (or for the I/O thread) to return their results.  The handle is
 * entered only around each call into it: a close from another thread
 * fails the request and wakes the caller through its eventfd, as when the
 * I/O thread reads.  Once the thread's result is in, the I/O thread reads
 * again if replies are still awaited. */
static void
conn_drive (GnbdConn *conn, GnbdResult *result)
{
  int wake_fd = gnbd_result_wake_fd ();

  if (!g_atomic_int_compare_and_exchange (&conn->sync_driver, 0, 1))
    return;                     /* another sync caller reads */
  while (!gnbd_result_is_done (result)) {
    struct pollfd p[2] = { { .fd = wake_fd, .events = POLLIN }, { .fd = -1 } };
    nfds_t n = 1;

    if (conn_enter (conn)) {
      if (!handle_ended (conn->nbd) &&
          (nbd_aio_get_direction (conn->nbd) & LIBNBD_AIO_DIRECTION_READ)) {
        p[1] = (struct pollfd) { .fd = nbd_aio_get_fd (conn->nbd), .events = POLLIN };
        n = 2;
      }
      conn_leave (conn);
    }
    /* Nothing to read (the end came): the I/O thread fails the request. */
    if (n == 1)
      break;
    if (poll (p, n, -1) == -1 && errno != EINTR)
      break;
    if (p[0].revents) {
      eventfd_t v;

      (void) eventfd_read (wake_fd, &v);
    }
    if (p[1].revents && conn_enter (conn)) {
      gnbd_result_batch_begin ();
      if (!handle_ended (conn->nbd) && nbd_aio_notify_read (conn->nbd) == -1 &&
          (handle_ended (conn->nbd) || nbd_aio_is_created (conn->nbd)))
        note_end (conn, nbd_get_errno (), nbd_get_error ());
      conn_after_call (conn);
      conn_leave (conn);
      gnbd_result_batch_end ();
    }
  }
  g_atomic_int_set (&conn->sync_driver, 0);
  /* Replies still awaited (other callers', a cancelled request's): the
   * I/O thread must poll for them again. */
  if (conn_enter (conn)) {
    gboolean more = nbd_aio_in_flight (conn->nbd) > 0;

    conn_leave (conn);
    if (more)
      conn_poke (conn);
  }
}

void
gnbd_conn_submit (GnbdConn *conn, GnbdRequestKind kind, GnbdResult *result, guint64 offset,
                  guint64 count, GnbdCommandFlags flags, GBytes *data, const char *context)
{
  Request *r = g_new0 (Request, 1);
  GCancellable *cancellable = gnbd_result_get_cancellable (result);
  nbd_completion_callback cb = { .callback = request_completed, .free = request_freed };
  gboolean given = FALSE;
  int64_t cookie;
  int err;

  r->ref_count = 1;             /* this call's */
  r->conn = gnbd_conn_ref (conn);
  r->kind = kind;
  r->result = g_object_ref (result);
  r->offset = offset;
  r->count = count;

  if (!conn_enter (conn)) {
    request_claim (r);
    gnbd_result_return_new_error (g_steal_pointer (&r->result), G_IO_ERROR, G_IO_ERROR_CLOSED,
                                  "The connection to the NBD server is closed");
    request_unref (r);
    return;
  }
  if (kind == GNBD_REQUEST_PREAD) {
    /* Never zero-sized: the core judges count 0. */
    r->buf = gnbd_buffer_take (count);
    if (!r->buf) {
      request_claim (r);
      gnbd_result_return_new_error (g_steal_pointer (&r->result), GNBD_ERROR,
                                    GNBD_ERROR_NO_MEMORY,
                                    "Cannot allocate %" G_GUINT64_FORMAT " bytes to read into",
                                    count);
      goto out;
    }
  }
  if (kind == GNBD_REQUEST_BLOCK_STATUS) {
    r->context = g_strdup (context);
    r->extents = g_ptr_array_new_with_free_func ((GDestroyNotify) gnbd_extent_free);
    if (nbd_can_meta_context (conn->nbd, context) != 1) {
      request_claim (r);
      gnbd_result_return_new_error (g_steal_pointer (&r->result), GNBD_ERROR,
                                    GNBD_ERROR_NOT_SUPPORTED,
                                    "The server did not agree to the metadata context \"%s\" "
                                    "when connecting: ask for it in the meta-contexts property "
                                    "(and keep request-structured-replies on), or use a server "
                                    "that has it", context);
      goto out;
    }
  }
  if (kind == GNBD_REQUEST_PWRITE)
    r->data = g_bytes_ref (data);
  if (cancellable) {
    r->cancellable = g_object_ref (cancellable);
    /* Runs at once if already cancelled: then the request is not sent. */
    GNBD_HANDOFF (r);
    r->cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (request_cancelled), r, NULL);
    if (g_atomic_int_get (&r->claimed))
      goto out;
  }

  /* An async request's reply is read in its context if that is the home
   * (the home reader), else by the I/O thread.  A sync call's is read by
   * its caller, or by another sync caller who reads, or by the I/O thread
   * once none does: it counts as foreign, so that the I/O thread does not
   * stand back for the home alone while it is awaited. */
  if (gnbd_result_is_sync (result) ||
      !(conn->settings.concurrent_writer &&
        home_for (conn, gnbd_result_get_context (result)))) {
    r->foreign = TRUE;
    g_atomic_int_inc (&conn->foreign);
  }

  /* The core takes the closure and runs .free exactly once, even when the
   * call fails at once.  The request's bytes go out from this thread at
   * the batch's end (gnbd-writer-private.h). */
  gnbd_writer_batch_begin ();
  given = TRUE;
  cb.user_data = request_ref (r);
  switch (kind) {
  case GNBD_REQUEST_PREAD:
    cookie = nbd_aio_pread (conn->nbd, r->buf, count, offset, cb, flags);
    break;
  case GNBD_REQUEST_PWRITE: {
    gsize size;
    /* Referenced, not copied: the core lends it to the writer, which sends
     * from it. */
    gconstpointer p = g_bytes_get_data (r->data, &size);

    cookie = nbd_aio_pwrite (conn->nbd, p, size, offset, cb, flags);
    break;
  }
  case GNBD_REQUEST_FLUSH:
    cookie = nbd_aio_flush (conn->nbd, cb, flags);
    break;
  case GNBD_REQUEST_TRIM:
    cookie = nbd_aio_trim (conn->nbd, count, offset, cb, flags);
    break;
  case GNBD_REQUEST_ZERO:
    cookie = nbd_aio_zero (conn->nbd, count, offset, cb, flags);
    break;
  case GNBD_REQUEST_CACHE:
    cookie = nbd_aio_cache (conn->nbd, count, offset, cb, flags);
    break;
  case GNBD_REQUEST_BLOCK_STATUS: {
    nbd_extent_callback ecb = { .callback = extent_received, .user_data = request_ref (r),
                                .free = (void (*) (void *)) request_unref };

    cookie = nbd_aio_block_status (conn->nbd, count, offset, ecb, cb, flags);
    break;
  }
  default:
    g_assert_not_reached ();
  }
  if (cookie == -1) {
    err = nbd_get_errno () ? nbd_get_errno () : EIO;
    if (handle_ended (conn->nbd))
      note_end (conn, err, nbd_get_error ());
    if (request_claim (r))
      request_fail (r, err, "client", nbd_get_error (), handle_ended (conn->nbd));
  }
  conn_after_call (conn);
  gnbd_writer_batch_end ();
  /* A reply for the I/O thread to read: if it stands back, it must poll
   * for replies again (a sync caller that reads needs no poke). */
  if (cookie != -1 && r->foreign && !gnbd_result_is_sync (result) &&
      g_atomic_int_get (&conn->reader_passive))
    conn_poke (conn);
out:
  conn_leave (conn);
  /* Never given to the core, so no .free will disconnect it (not from
   * inside the handler: g_cancellable_connect ran it and returned). */
  if (!given && r->cancel_id)
    g_cancellable_disconnect (r->cancellable, r->cancel_id);
  GNBD_TAKEOVER (r);
  request_unref (r);
  if (given && gnbd_result_is_sync (result) && conn->settings.concurrent_writer)
    conn_drive (conn, result);
}

/* I/O thread: return the failed requests with the right domain.  Only
 * those queued before the barrier: a call that queued them has left. */
static void
drain_failed (GnbdConn *conn)
{
  guint n;
  gboolean ended;

  /* Every dispatch comes here: no lock while there is nothing. */
  n = (guint) g_atomic_int_get (&conn->n_failed);
  if (n == 0)
    return;
  if (conn->nbd) {
    nbd_aio_in_flight (conn->nbd);      /* the barrier: takes the handle lock */
    ended = handle_ended (conn->nbd);
  }
  else
    ended = TRUE;
  for (guint i = 0; i < n; i++) {
    Request *r;

    pthread_mutex_lock (&conn->lock);
    r = g_queue_pop_head (&conn->failed);
    g_atomic_int_add (&conn->n_failed, -1);
    pthread_mutex_unlock (&conn->lock);
    if (request_claim (r))
      request_fail (r, r->err, "server", NULL, ended);
    request_unref (r);
  }
}

/* ---- Shutdown ---------------------------------------------------------------- */

/* Held by the waiting list, by the cancel handler, and by
 * gnbd_conn_shutdown while it runs. */
typedef struct {
  gint ref_count;
  GnbdConn *conn;
  GTask *task;
  GCancellable *cancellable;
  gulong cancel_id;             /* under conn->lock */
} ShutdownWait;

static void
shutdown_wait_unref (gpointer data)
{
  ShutdownWait *sw = data;

  if (!g_atomic_int_dec_and_test (&sw->ref_count))
    return;
  g_object_unref (sw->task);
  g_clear_object (&sw->cancellable);
  g_free (sw);
}

/* Cancelling stops the wait, not the shutdown. */
static void
shutdown_cancelled (GCancellable *cancellable, gpointer data)
{
  ShutdownWait *sw = data;
  gboolean mine;

  GNBD_TAKEOVER (sw);
  pthread_mutex_lock (&sw->conn->lock);
  mine = g_ptr_array_remove (sw->conn->shutdown_waits, sw);
  pthread_mutex_unlock (&sw->conn->lock);
  if (mine) {
    g_task_return_error_if_cancelled (sw->task);
    shutdown_wait_unref (sw);   /* the list's */
  }
}

/* Return every waiting shutdown: TRUE, or @error (a copy each). */
static void
shutdown_waits_complete (GnbdConn *conn, const GError *error)
{
  GPtrArray *waits;

  pthread_mutex_lock (&conn->lock);
  waits = g_steal_pointer (&conn->shutdown_waits);
  conn->shutdown_waits = g_ptr_array_new ();
  pthread_mutex_unlock (&conn->lock);
  for (guint i = 0; i < waits->len; i++) {
    ShutdownWait *sw = waits->pdata[i];
    gulong id;

    pthread_mutex_lock (&conn->lock);
    id = sw->cancel_id;
    sw->cancel_id = 0;
    pthread_mutex_unlock (&conn->lock);
    if (id)
      g_cancellable_disconnect (sw->cancellable, id);
    GNBD_HANDOFF (sw->task);
    if (error)
      g_task_return_error (sw->task, g_error_copy (error));
    else
      g_task_return_boolean (sw->task, TRUE);
    shutdown_wait_unref (sw);   /* the list's */
  }
  g_ptr_array_unref (waits);
}

void
gnbd_conn_shutdown (GnbdConn *conn, GTask *task)
{
  ShutdownWait *sw = g_new0 (ShutdownWait, 1);
  GCancellable *cancellable = g_task_get_cancellable (task);
  int r = -1, err = 0;
  char *msg = NULL;
  gboolean mine;

  sw->ref_count = 2;            /* the list's and this call's */
  sw->conn = conn;
  sw->task = g_object_ref (task);
  /* The shutdown waits for every reply, whatever the home context does
   * meanwhile (the caller may be blocked in it): the I/O thread reads. */
  g_atomic_int_set (&conn->home_off, 1);
  conn_poke (conn);
  /* Waiting before asking: the end may come before nbd_aio_disconnect
   * returns. */
  pthread_mutex_lock (&conn->lock);
  g_ptr_array_add (conn->shutdown_waits, sw);
  pthread_mutex_unlock (&conn->lock);
  if (cancellable) {
    gulong id;

    sw->cancellable = g_object_ref (cancellable);
    g_atomic_int_inc (&sw->ref_count);
    GNBD_HANDOFF (sw);
    id = g_cancellable_connect (cancellable, G_CALLBACK (shutdown_cancelled), sw,
                                shutdown_wait_unref);
    pthread_mutex_lock (&conn->lock);
    sw->cancel_id = id;
    pthread_mutex_unlock (&conn->lock);
  }
  if (conn_enter (conn)) {
    r = nbd_aio_disconnect (conn->nbd, 0);
    if (r == -1) {
      err = nbd_get_errno ();
      msg = g_strdup (nbd_get_error ());
    }
    conn_after_call (conn);
    conn_leave (conn);
  }
  if (r == -1) {
    gulong id = 0;

    pthread_mutex_lock (&conn->lock);
    mine = g_ptr_array_remove (conn->shutdown_waits, sw);
    if (mine) {
      id = sw->cancel_id;
      sw->cancel_id = 0;
    }
    pthread_mutex_unlock (&conn->lock);
    if (mine) {
      if (id)
        g_cancellable_disconnect (sw->cancellable, id);
      if (msg)
        g_task_return_new_error (task, GNBD_ERROR, gnbd_error_code_from_errno (err),
                                 "The client cannot shut the connection down now: %s (%s)",
                                 msg, gnbd_errno_name (err));
      else
        g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CLOSED,
                                 "The connection to the NBD server is already closed");
      shutdown_wait_unref (sw); /* the list's */
    }
  }
  g_free (msg);
  shutdown_wait_unref (sw);     /* this call's */
}

/* ---- Listing exports ------------------------------------------------------------ */

static int
export_listed (void *data, const char *name, const char *description)
{
  GnbdConn *conn = data;

  g_ptr_array_add (conn->exports, gnbd_export_new (name, description));
  return 0;
}

static int
list_completed (void *data, int *error)
{
  GnbdConn *conn = data;

  conn->list_errno = *error;
  return 1;
}

/* I/O thread, option mode, negotiating: list, then return the list and
 * abort. */
static void
list_step (GnbdConn *conn)
{
  GTask *task;

  if (!conn->list_issued) {
    nbd_list_callback lcb = { .callback = export_listed, .user_data = conn };
    nbd_completion_callback ccb = { .callback = list_completed, .user_data = conn };

    conn->list_issued = TRUE;
    conn->exports = g_ptr_array_new_with_free_func ((GDestroyNotify) gnbd_export_free);
    if (nbd_aio_opt_list (conn->nbd, lcb, ccb) == -1) {
      conn->list_errno = nbd_get_errno () ? nbd_get_errno () : EIO;
      note_end (conn, conn->list_errno, nbd_get_error ());
    }
  }
  if (conn->list_errno == -1)
    return;
  pthread_mutex_lock (&conn->lock);
  task = g_steal_pointer (&conn->connect_task);
  pthread_mutex_unlock (&conn->lock);
  if (task) {
    GNBD_HANDOFF (task);
    if (conn->list_errno == 0)
      g_task_return_pointer (task, g_steal_pointer (&conn->exports),
                             (GDestroyNotify) g_ptr_array_unref);
    else
      g_task_return_new_error (task, GNBD_ERROR, gnbd_error_code_from_errno (conn->list_errno),
                               "The NBD server refused to list its exports (%s)",
                               gnbd_errno_name (conn->list_errno));
    g_object_unref (task);
  }
  /* Done either way: say goodbye; the end tears the connection down. */
  nbd_aio_opt_abort (conn->nbd);
}

void
gnbd_conn_list_exports (const GnbdSettings *settings, const char *uri, GTask *task)
{
  GnbdConn *conn = gnbd_conn_new (settings, NULL);

  conn->list_mode = TRUE;
  conn->self_owned = TRUE;      /* until torn down */
  gnbd_conn_connect (conn, GNBD_CONNECT_URI, uri, NULL, NULL, task);
}

/* ---- The I/O thread's side ------------------------------------------------------ */

/* The connection ended (dead, or closed after a shutdown): everything
 * pending fails, the client hears `closed`, the handle goes. */
static void
conn_finish (GnbdConn *conn)
{
  gboolean clean = nbd_aio_is_closed (conn->nbd);
  gboolean connecting;
  GError *error = NULL;

  if (conn->writer) {
    /* Every lent payload comes back; the writes pinned on them complete
     * at the next call into the handle. */
    gnbd_writer_conn_free (g_steal_pointer (&conn->writer));
    nbd_aio_in_flight (conn->nbd);
  }
  drain_failed (conn);

  pthread_mutex_lock (&conn->lock);
  connecting = conn->phase == PHASE_CONNECTING;
  conn->phase = PHASE_ENDED;
  pthread_mutex_unlock (&conn->lock);
  if (connecting) {
    int err;
    char *msg;

    pthread_mutex_lock (&conn->lock);
    err = conn->end_errno ? conn->end_errno : ECONNRESET;
    msg = g_strdup (conn->end_message);
    pthread_mutex_unlock (&conn->lock);
    connect_fail (conn, connect_error (err, msg ? msg : "the server closed the connection "
                                       "during the handshake", FALSE));
    g_free (msg);
  }
  else {
    if (!clean)
      error = transport_error (conn, NULL);
    if (conn->events.closed)
      conn->events.closed (conn, error ? g_error_copy (error) : NULL, conn->events.data);
    shutdown_waits_complete (conn, error);
    g_clear_error (&error);
  }
  gnbd_io_schedule (teardown_cb, gnbd_conn_ref (conn), (GDestroyNotify) gnbd_conn_unref);
}

/* The handle ended: the reader lets go and the connection finishes.
 * As libnbd, a TCP connect that no address answered leaves the handle
 * created again, not dead: for us the connect failed all the same. */
static gboolean
finish_if_ended (GnbdConn *conn)
{
  GSource *source;

  if (!handle_ended (conn->nbd) && !nbd_aio_is_created (conn->nbd))
    return FALSE;
  pthread_mutex_lock (&conn->lock);
  source = g_steal_pointer (&conn->source);
  pthread_mutex_unlock (&conn->lock);
  conn_finish (conn);
  if (source)
    g_source_unref (source);
  return TRUE;
}

static gboolean
io_dispatch (gpointer data, GIOCondition revents)
{
  GnbdConn *conn = data;
  struct nbd_handle *nbd = conn->nbd;
  int r = 0;

  if (!handle_ended (nbd)) {
    if (revents & (G_IO_IN | G_IO_HUP | G_IO_ERR | G_IO_NVAL | GNBD_IO_RDHUP))
      r = nbd_aio_notify_read (nbd);
    else if (revents & G_IO_OUT)
      r = nbd_aio_notify_write (nbd);
    else if (nbd_aio_is_ready (nbd))
      /* Poked: the writer gave payloads back, and a write whose reply came
       * first completes at the next call into the handle (any call). */
      nbd_aio_in_flight (nbd);
    if (r == -1 && (handle_ended (nbd) || nbd_aio_is_created (nbd)))
      note_end (conn, nbd_get_errno (), nbd_get_error ());
  }
  drain_failed (conn);
  if (finish_if_ended (conn))
    return G_SOURCE_REMOVE;
  if (!conn->announced && nbd_aio_is_ready (nbd)) {
    conn->announced = TRUE;
    conn_ready (conn);
  }
  else if (conn->list_mode && nbd_aio_is_negotiating (nbd)) {
    list_step (conn);
    /* The abort that ends a listing can close the handle, and its socket,
     * inside the call: finish now, for no event will come from a closed
     * descriptor (its number may already serve another connection). */
    if (finish_if_ended (conn))
      return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

/* ---- Closing ---------------------------------------------------------------------- */

/* I/O thread, no caller inside the handle: close it.  Every request the
 * core still holds is freed, and those not returned yet fail. */
static void
conn_close_handle (GnbdConn *conn)
{
  GError *error;

  if (!conn->nbd)
    return;
  conn->closing_handle = TRUE;
  nbd_close (g_steal_pointer (&conn->nbd));
  drain_failed (conn);
  error = g_error_new (G_IO_ERROR, G_IO_ERROR_CLOSED, "The client closed the connection");
  shutdown_waits_complete (conn, error);
  g_error_free (error);
}

/* I/O thread, once: nothing new starts; the reader and the writer let go;
 * the handle closes now or when the last caller leaves it. */
static void
conn_teardown (GnbdConn *conn)
{
  GSource *source, *home;
  GCancellable *cancellable;
  gulong id;
  gboolean close_now, self_owned;

  /* Only a connection with no task in flight is dropped, but say so
   * rather than leave a connect unanswered. */
  connect_fail_full (conn, g_error_new (G_IO_ERROR, G_IO_ERROR_CLOSED,
                                        "The connection was closed before it was established"),
                     FALSE);
  pthread_mutex_lock (&conn->lock);
  if (conn->torn_down) {
    pthread_mutex_unlock (&conn->lock);
    return;
  }
  conn->torn_down = TRUE;
  source = g_steal_pointer (&conn->source);
  home = g_steal_pointer (&conn->home);
  cancellable = g_steal_pointer (&conn->connect_cancellable);
  id = conn->connect_cancel_id;
  conn->connect_cancel_id = 0;
  close_now = conn->users == 0;
  conn->close_pending = !close_now;
  self_owned = conn->self_owned;
  conn->self_owned = FALSE;
  pthread_mutex_unlock (&conn->lock);

  if (source) {
    g_source_destroy (source);
    g_source_unref (source);
  }
  if (home) {
    g_atomic_int_set (&conn->home_active, 0);
    g_source_destroy (home);
    g_source_unref (home);
  }
  if (id)
    g_cancellable_disconnect (cancellable, id);
  g_clear_object (&cancellable);
  if (conn->writer)
    gnbd_writer_conn_free (g_steal_pointer (&conn->writer));
  if (close_now)
    conn_close_handle (conn);
  if (self_owned)
    gnbd_conn_unref (conn);
}

static gboolean
teardown_cb (gpointer data)
{
  conn_teardown (data);
  return G_SOURCE_REMOVE;
}

void
gnbd_conn_close (GnbdConn *conn)
{
  gnbd_io_schedule (teardown_cb, gnbd_conn_ref (conn), (GDestroyNotify) gnbd_conn_unref);
}

typedef struct {
  GnbdConn *conn;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  gboolean done;
} CloseWait;

static gboolean
close_wait_cb (gpointer data)
{
  CloseWait *w = data;

  conn_teardown (w->conn);
  pthread_mutex_lock (&w->lock);
  w->done = TRUE;
  pthread_cond_signal (&w->cond);
  pthread_mutex_unlock (&w->lock);
  return G_SOURCE_REMOVE;
}

void
gnbd_conn_close_wait (GnbdConn *conn)
{
  CloseWait w = { .conn = conn, .done = FALSE };

  /* On the I/O thread (a callback of this very connection, maybe) the
   * teardown cannot run inside the call: it runs next. */
  if (gnbd_io_in_thread ()) {
    gnbd_conn_close (conn);
    return;
  }
  pthread_mutex_init (&w.lock, NULL);
  pthread_cond_init (&w.cond, NULL);
  /* The I/O thread never waits for another thread, so this ends. */
  gnbd_io_schedule (close_wait_cb, &w, NULL);
  pthread_mutex_lock (&w.lock);
  while (!w.done)
    pthread_cond_wait (&w.cond, &w.lock);
  pthread_mutex_unlock (&w.lock);
  pthread_mutex_destroy (&w.lock);
  pthread_cond_destroy (&w.cond);
}
