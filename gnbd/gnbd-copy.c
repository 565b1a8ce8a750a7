/* gnbd-copy.c: GnbdCopy, the public object of the copy engine: its
 * settings (properties), its two sides, its counters, the rate-limited
 * `progress` signal, and run / run_async / run_finish.
 *
 * Owns what the caller sees.  The pipeline itself (what to read, write and
 * zero, in what order, on which connection) is gnbd-copy-engine.c; the I/O
 * of each kind of side is gnbd-copy-side.c.  Everything here runs in the
 * context of the caller of run_async, except the counter getters, which
 * any thread may call.
 */
#include "gnbd-copy.h"
#include "gnbd-copy-private.h"

/**
 * GnbdCopy:
 *
 * Copies the contents of a source to a destination as fast as the two
 * allow, keeping holes, and reports its progress.
 *
 * Each side is one of:
 *
 * - an NBD export: a connected [class@Client], given with
 *   [method@Copy.set_source_client] or [method@Copy.set_destination_client];
 * - a local file or block device, as a [iface@Gio.File] with a local path
 *   ([method@Copy.set_source_file], [method@Copy.set_destination_file]);
 *   a FIFO or a character device is read or written as a stream;
 * - a stream: a [class@Gio.InputStream] source or a
 *   [class@Gio.OutputStream] destination (a pipe, standard input or
 *   output, a [class@Gio.Subprocess]), read or written in order, once;
 * - for the destination only, nothing ([method@Copy.set_destination_null]):
 *   the data is read and thrown away.
 *
 * Then [method@Copy.run] (blocking) or [method@Copy.run_async] copies
 * everything, [property@Copy:requests] requests in flight on each of
 * [property@Copy:connections] connections.  Data travels from the read to
 * the write as one [struct@GLib.Bytes], never copied.
 *
 * Holes: where the source says that a range reads as zeroes (NBD block
 * status `base:allocation`, or `SEEK_HOLE` in a file), and where the data
 * read holds whole blocks of zeroes (see [property@Copy:sparse]), nothing
 * is written as data: the destination is zeroed instead (an NBD zero
 * request, with the fast-zero flag when the server offers it; a punched
 * hole in a file), or left alone when it is known to read as zeroes
 * already (see [property@Copy:destination-is-zero]).  Such bytes are
 * counted in [property@Copy:bytes-skipped].
 *
 * Errors: any read, write, zero or flush that fails ends the copy with an
 * error whose message says which side failed (`source` or `destination`),
 * at which offset, and why; its domain and code are those of the cause
 * (for instance %GNBD_ERROR_IO when the NBD server reported an I/O error).
 * No failure is ever skipped.
 *
 * Cancelling stops the copy promptly, with `G_IO_ERROR_CANCELLED`.
 * Whether cancelled or failed, the destination then holds the source's
 * contents up to [property@Copy:bytes-copied] at least; what lies beyond
 * may be partly written.
 *
 * Progress: while the copy runs, [signal@Copy::progress] is emitted at
 * most ten times a second, in the thread-default main context of the
 * caller of [method@Copy.run_async] (the calling thread, for
 * [method@Copy.run]), together with the notifications of the counters.
 * When the copy ends the counters hold their final values and are
 * notified once more; the signal is not emitted again.
 *
 * A #GnbdCopy is used from one thread at a time; only the counters may be
 * read from any thread.  It may run again once a run has completed.
 */
struct _GnbdCopy {
  GObject parent_instance;

  GnbdCopyParams params;
  GnbdSideSpec source;
  GnbdSideSpec destination;

  /* The running copy: its task, and where its progress goes. */
  GTask *task;
  GMainContext *context;
  GSource *tick;                /* the next progress emission, if due */
  gint64 last_tick;             /* monotonic time of the last one */

  /* The counters: written in the copy's context, read by any thread
   * (atomically: see counter_get). */
  guint64 bytes_copied;
  guint64 bytes_total;
  guint64 bytes_skipped;
  /* Their values when last notified. */
  guint64 notified_copied;
  guint64 notified_total;
  guint64 notified_skipped;
};

G_DEFINE_FINAL_TYPE (GnbdCopy, gnbd_copy, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_REQUEST_SIZE,
  PROP_REQUESTS,
  PROP_CONNECTIONS,
  PROP_SPARSE,
  PROP_USE_EXTENTS,
  PROP_FLUSH,
  PROP_DESTINATION_IS_ZERO,
  PROP_BYTES_COPIED,
  PROP_BYTES_TOTAL,
  PROP_BYTES_SKIPPED,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_PROGRESS,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

/* At most ten progress signals a second. */
#define TICK_INTERVAL_US (G_USEC_PER_SEC / 10)

/* The largest request: the NBD payload limit libnbd and nbdkit apply. */
#define REQUEST_SIZE_MAX (32 * 1024 * 1024)

/* ---- Sides --------------------------------------------------------------- */

void
gnbd_side_spec_copy (GnbdSideSpec *dst, const GnbdSideSpec *src)
{
  dst->kind = src->kind;
  dst->client = src->client ? g_object_ref (src->client) : NULL;
  dst->uri = g_strdup (src->uri);
  dst->file = src->file ? g_object_ref (src->file) : NULL;
  dst->stream = src->stream ? g_object_ref (src->stream) : NULL;
}

void
gnbd_side_spec_clear (GnbdSideSpec *spec)
{
  g_clear_object (&spec->client);
  g_clear_pointer (&spec->uri, g_free);
  g_clear_object (&spec->file);
  g_clear_object (&spec->stream);
  spec->kind = GNBD_SIDE_UNSET;
}

static void
side_set (GnbdSideSpec *spec, GnbdSideKind kind, GnbdClient *client, const char *uri,
          GFile *file, GObject *stream)
{
  GnbdSideSpec s = { kind, client, (char *) uri, file, stream };
  GnbdSideSpec copy;

  /* Copy first: @client, @file or @stream may be held only by @spec. */
  gnbd_side_spec_copy (&copy, &s);
  gnbd_side_spec_clear (spec);
  *spec = copy;
}

/**
 * gnbd_copy_set_source_client:
 * @self: a #GnbdCopy
 * @client: a connected #GnbdClient to read from
 * @uri: (nullable): the URI @client was connected with, or %NULL
 *
 * Copies from the export @client is connected to.
 *
 * With @uri, the copy may open more connections to the same export (see
 * [property@Copy:connections]): each is a new #GnbdClient with @client's
 * settings (every read-write property), connected to @uri, and shut down
 * when the copy ends.  Without it, @client is the only connection.
 */
void
gnbd_copy_set_source_client (GnbdCopy *self, GnbdClient *client, const char *uri)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (GNBD_IS_CLIENT (client));
  side_set (&self->source, GNBD_SIDE_CLIENT, client, uri, NULL, NULL);
}

/**
 * gnbd_copy_set_source_file:
 * @self: a #GnbdCopy
 * @file: a local file or block device (it must have a path)
 *
 * Copies from a local file or block device, read at any offset, its holes
 * found with `SEEK_HOLE`.  A FIFO or a character device is read as a
 * stream, in order.  The file is opened when the copy starts.
 */
void
gnbd_copy_set_source_file (GnbdCopy *self, GFile *file)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (G_IS_FILE (file));
  side_set (&self->source, GNBD_SIDE_FILE, NULL, NULL, file, NULL);
}

/**
 * gnbd_copy_set_source_stream:
 * @self: a #GnbdCopy
 * @stream: the stream to read from
 *
 * Copies from @stream, read in order until its end; its size is known only
 * then.  The copy does not close it.
 */
void
gnbd_copy_set_source_stream (GnbdCopy *self, GInputStream *stream)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (G_IS_INPUT_STREAM (stream));
  side_set (&self->source, GNBD_SIDE_STREAM, NULL, NULL, NULL, G_OBJECT (stream));
}

/**
 * gnbd_copy_set_destination_client:
 * @self: a #GnbdCopy
 * @client: a connected #GnbdClient to write to
 * @uri: (nullable): the URI @client was connected with, or %NULL
 *
 * Copies to the export @client is connected to, which must be writable
 * and at least as large as the source.  With @uri, the copy may open more
 * connections to it, as [method@Copy.set_source_client] explains.
 */
void
gnbd_copy_set_destination_client (GnbdCopy *self, GnbdClient *client, const char *uri)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (GNBD_IS_CLIENT (client));
  side_set (&self->destination, GNBD_SIDE_CLIENT, client, uri, NULL, NULL);
}

/**
 * gnbd_copy_set_destination_file:
 * @self: a #GnbdCopy
 * @file: a local file or block device (it must have a path)
 *
 * Copies to a local file or block device.  A regular file is created if
 * needed and set to the size of the source: it then holds exactly the
 * source, its holes as holes (a new or empty file is known to read as
 * zeroes; in a file that held data, holes are punched).  A block device
 * must be at least as large as the source.  A FIFO or a character device
 * is written as a stream, in order.
 */
void
gnbd_copy_set_destination_file (GnbdCopy *self, GFile *file)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (G_IS_FILE (file));
  side_set (&self->destination, GNBD_SIDE_FILE, NULL, NULL, file, NULL);
}

/**
 * gnbd_copy_set_destination_stream:
 * @self: a #GnbdCopy
 * @stream: the stream to write to
 *
 * Copies to @stream, written in order, holes as zeroes.  The copy flushes
 * it at the end but does not close it.
 */
void
gnbd_copy_set_destination_stream (GnbdCopy *self, GOutputStream *stream)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (G_IS_OUTPUT_STREAM (stream));
  side_set (&self->destination, GNBD_SIDE_STREAM, NULL, NULL, NULL, G_OBJECT (stream));
}

/**
 * gnbd_copy_set_destination_null:
 * @self: a #GnbdCopy
 *
 * Reads the source and throws the data away, as fast as the source goes
 * (nbdcopy's `null:`).  Holes of the source are not read.
 */
void
gnbd_copy_set_destination_null (GnbdCopy *self)
{
  g_return_if_fail (GNBD_IS_COPY (self));
  side_set (&self->destination, GNBD_SIDE_NULL, NULL, NULL, NULL, NULL);
}

/* ---- Counters and progress ----------------------------------------------- */

/* Each counter on its own: nobody needs the three as one snapshot. */
static guint64
counter_get (const guint64 *counter)
{
  return __atomic_load_n (counter, __ATOMIC_RELAXED);
}

static void
counter_set (guint64 *counter, guint64 value)
{
  __atomic_store_n (counter, value, __ATOMIC_RELAXED);
}

/* Notify the counters that changed since the last time; the copy's
 * context. */
static void
notify_counters (GnbdCopy *self)
{
  guint64 c = counter_get (&self->bytes_copied), t = counter_get (&self->bytes_total);
  guint64 s = counter_get (&self->bytes_skipped);
  gboolean copied = c != self->notified_copied, total = t != self->notified_total;
  gboolean skipped = s != self->notified_skipped;

  self->notified_copied = c;
  self->notified_total = t;
  self->notified_skipped = s;

  g_object_freeze_notify (G_OBJECT (self));
  if (copied)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BYTES_COPIED]);
  if (total)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BYTES_TOTAL]);
  if (skipped)
    g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BYTES_SKIPPED]);
  g_object_thaw_notify (G_OBJECT (self));
}

static gboolean
tick_run (gpointer data)
{
  GnbdCopy *self = data;

  g_clear_pointer (&self->tick, g_source_unref);
  self->last_tick = g_get_monotonic_time ();
  notify_counters (self);
  g_signal_emit (self, signals[SIGNAL_PROGRESS], 0, counter_get (&self->bytes_copied),
                 counter_get (&self->bytes_total));
  return G_SOURCE_REMOVE;
}

/* The engine's report: store, and make sure a tick comes, no sooner than
 * TICK_INTERVAL_US after the last one (or the start). */
static void
on_engine_progress (guint64 copied, guint64 skipped, guint64 total, gpointer data)
{
  GnbdCopy *self = data;
  gint64 due;

  counter_set (&self->bytes_copied, copied);
  counter_set (&self->bytes_skipped, skipped);
  counter_set (&self->bytes_total, total);

  if (self->tick)
    return;
  due = self->last_tick + TICK_INTERVAL_US - g_get_monotonic_time ();
  self->tick = g_timeout_source_new (due > 0 ? (guint) ((due + 999) / 1000) : 0);
  g_source_set_priority (self->tick, G_PRIORITY_DEFAULT);
  g_source_set_callback (self->tick, tick_run, self, NULL);
  g_source_set_static_name (self->tick, "[gnbd] copy progress");
  g_source_attach (self->tick, self->context);
}

/**
 * gnbd_copy_get_bytes_copied:
 * @self: a #GnbdCopy
 *
 * Gets [property@Copy:bytes-copied].  Any thread may call it.
 *
 * Returns: the number of bytes at the start of the destination that hold
 *   their final contents
 */
guint64
gnbd_copy_get_bytes_copied (GnbdCopy *self)
{
  g_return_val_if_fail (GNBD_IS_COPY (self), 0);
  return counter_get (&self->bytes_copied);
}

/**
 * gnbd_copy_get_bytes_total:
 * @self: a #GnbdCopy
 *
 * Gets [property@Copy:bytes-total].  Any thread may call it.
 *
 * Returns: the size of the source, or 0 while unknown
 */
guint64
gnbd_copy_get_bytes_total (GnbdCopy *self)
{
  g_return_val_if_fail (GNBD_IS_COPY (self), 0);
  return counter_get (&self->bytes_total);
}

/**
 * gnbd_copy_get_bytes_skipped:
 * @self: a #GnbdCopy
 *
 * Gets [property@Copy:bytes-skipped].  Any thread may call it.
 *
 * Returns: the number of bytes done without being written as data
 */
guint64
gnbd_copy_get_bytes_skipped (GnbdCopy *self)
{
  g_return_val_if_fail (GNBD_IS_COPY (self), 0);
  return counter_get (&self->bytes_skipped);
}

/* ---- Running ------------------------------------------------------------- */

static void
on_engine_done (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdCopy *self = GNBD_COPY (source);
  GTask *task = g_steal_pointer (&self->task);
  GError *error = NULL;

  if (self->tick) {
    g_source_destroy (self->tick);
    g_clear_pointer (&self->tick, g_source_unref);
  }
  g_clear_pointer (&self->context, g_main_context_unref);
  notify_counters (self);
  if (g_task_propagate_boolean (G_TASK (result), &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
  g_object_unref (task);
}

static gboolean
check_side (const GnbdSideSpec *spec, const char *side, GError **error)
{
  gboolean connected;

  switch (spec->kind) {
  case GNBD_SIDE_UNSET:
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "The copy has no %s: set one with gnbd_copy_set_%s_*", side, side);
    return FALSE;
  case GNBD_SIDE_CLIENT:
    g_object_get (spec->client, "connected", &connected, NULL);
    if (!connected) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                   "%s: the client is not connected: connect it before the copy starts",
                   side);
      return FALSE;
    }
    return TRUE;
  case GNBD_SIDE_FILE:
  case GNBD_SIDE_STREAM:
  case GNBD_SIDE_NULL:
    return TRUE;
  }
  g_assert_not_reached ();
}

/**
 * gnbd_copy_run_async:
 * @self: a #GnbdCopy with both sides set
 * @cancellable: (nullable): a #GCancellable to stop the copy
 * @callback: (scope async): called when the copy is over
 * @user_data: data for @callback
 *
 * Starts the copy.  Its requests, [signal@Copy::progress] and @callback
 * all run in the thread-default main context of the calling thread, which
 * must run until @callback has been called.  The properties are read now:
 * changing them during the copy affects the next run only.
 */
void
gnbd_copy_run_async (GnbdCopy *self, GCancellable *cancellable,
                     GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task, *engine_task;
  GError *error = NULL;

  g_return_if_fail (GNBD_IS_COPY (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, gnbd_copy_run_async);
  if (self->task) {
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_PENDING,
                             "The copy is already running");
    g_object_unref (task);
    return;
  }
  if (g_task_return_error_if_cancelled (task) ||
      !check_side (&self->source, "source", &error) ||
      !check_side (&self->destination, "destination", &error)) {
    if (error)
      g_task_return_error (task, error);
    g_object_unref (task);
    return;
  }

  self->task = task;
  self->context = g_main_context_ref_thread_default ();
  self->last_tick = g_get_monotonic_time ();
  counter_set (&self->bytes_copied, 0);
  counter_set (&self->bytes_total, 0);
  counter_set (&self->bytes_skipped, 0);
  notify_counters (self);

  engine_task = g_task_new (self, cancellable, on_engine_done, NULL);
  g_task_set_source_tag (engine_task, gnbd_copy_engine_run);
  gnbd_copy_engine_run (&self->source, &self->destination, &self->params,
                        on_engine_progress, self, engine_task);
  g_object_unref (engine_task);
}

/**
 * gnbd_copy_run_finish:
 * @self: a #GnbdCopy
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Copy.run_async].
 *
 * Returns: %TRUE once everything was copied (and flushed, with
 *   [property@Copy:flush]); %FALSE with @error set if the copy failed,
 *   naming the side and the offset, or was cancelled
 */
gboolean
gnbd_copy_run_finish (GnbdCopy *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gnbd_copy_run_async, FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
run_sync_done (GObject *source, GAsyncResult *result, gpointer data)
{
  GAsyncResult **out = data;

  *out = g_object_ref (result);
}

/**
 * gnbd_copy_run:
 * @self: a #GnbdCopy with both sides set
 * @cancellable: (nullable): a #GCancellable to stop the copy
 * @error: return location for a #GError
 *
 * Copies, blocking until done.  The copy runs on a main context of its
 * own, pushed as the calling thread's default: [signal@Copy::progress] is
 * emitted in the calling thread during the call, and the caller's own
 * context does not run meanwhile.
 *
 * Returns: %TRUE once everything was copied; %FALSE with @error set (see
 *   [method@Copy.run_finish])
 */
gboolean
gnbd_copy_run (GnbdCopy *self, GCancellable *cancellable, GError **error)
{
  GMainContext *context;
  GAsyncResult *result = NULL;
  gboolean ok;

  g_return_val_if_fail (GNBD_IS_COPY (self), FALSE);
  context = g_main_context_new ();
  g_main_context_push_thread_default (context);
  gnbd_copy_run_async (self, cancellable, run_sync_done, &result);
  while (!result)
    g_main_context_iteration (context, TRUE);
  ok = gnbd_copy_run_finish (self, result, error);
  g_object_unref (result);
  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
  return ok;
}

/* ---- Object -------------------------------------------------------------- */

static void
gnbd_copy_finalize (GObject *object)
{
  GnbdCopy *self = GNBD_COPY (object);

  /* A running copy holds a reference through its task: not here. */
  gnbd_side_spec_clear (&self->source);
  gnbd_side_spec_clear (&self->destination);
  G_OBJECT_CLASS (gnbd_copy_parent_class)->finalize (object);
}

static void
gnbd_copy_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GnbdCopy *self = GNBD_COPY (object);
  GnbdCopyParams *p = &self->params;

  switch (prop_id) {
  case PROP_REQUEST_SIZE: g_value_set_uint (value, p->request_size); break;
  case PROP_REQUESTS: g_value_set_uint (value, p->requests); break;
  case PROP_CONNECTIONS: g_value_set_uint (value, p->connections); break;
  case PROP_SPARSE: g_value_set_uint (value, p->sparse); break;
  case PROP_USE_EXTENTS: g_value_set_boolean (value, p->use_extents); break;
  case PROP_FLUSH: g_value_set_boolean (value, p->flush); break;
  case PROP_DESTINATION_IS_ZERO: g_value_set_boolean (value, p->destination_is_zero); break;
  case PROP_BYTES_COPIED: g_value_set_uint64 (value, gnbd_copy_get_bytes_copied (self)); break;
  case PROP_BYTES_TOTAL: g_value_set_uint64 (value, gnbd_copy_get_bytes_total (self)); break;
  case PROP_BYTES_SKIPPED: g_value_set_uint64 (value, gnbd_copy_get_bytes_skipped (self)); break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
  }
}

static void
set_uint (GObject *object, guint *field, const GValue *value, GParamSpec *pspec)
{
  if (*field == g_value_get_uint (value))
    return;
  *field = g_value_get_uint (value);
  g_object_notify_by_pspec (object, pspec);
}

static void
set_boolean (GObject *object, gboolean *field, const GValue *value, GParamSpec *pspec)
{
  if (*field == g_value_get_boolean (value))
    return;
  *field = g_value_get_boolean (value);
  g_object_notify_by_pspec (object, pspec);
}

static void
gnbd_copy_set_property (GObject *object, guint prop_id, const GValue *value,
                        GParamSpec *pspec)
{
  GnbdCopy *self = GNBD_COPY (object);
  GnbdCopyParams *p = &self->params;

  switch (prop_id) {
  case PROP_REQUEST_SIZE: set_uint (object, &p->request_size, value, pspec); break;
  case PROP_REQUESTS: set_uint (object, &p->requests, value, pspec); break;
  case PROP_CONNECTIONS: set_uint (object, &p->connections, value, pspec); break;
  case PROP_SPARSE: set_uint (object, &p->sparse, value, pspec); break;
  case PROP_USE_EXTENTS: set_boolean (object, &p->use_extents, value, pspec); break;
  case PROP_FLUSH: set_boolean (object, &p->flush, value, pspec); break;
  case PROP_DESTINATION_IS_ZERO:
    set_boolean (object, &p->destination_is_zero, value, pspec);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
  }
}

static void
gnbd_copy_class_init (GnbdCopyClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;
  const GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;

  object_class->finalize = gnbd_copy_finalize;
  object_class->get_property = gnbd_copy_get_property;
  object_class->set_property = gnbd_copy_set_property;

  /**
   * GnbdCopy:request-size:
   *
   * The largest read or write, in bytes (at most 32 MiB, nbdcopy's
   * default of 256 KiB by default).  A smaller maximum advertised by an
   * NBD server wins.
   */
  properties[PROP_REQUEST_SIZE] =
    g_param_spec_uint ("request-size", NULL, NULL, 512, REQUEST_SIZE_MAX, 256 * 1024, rw);

  /**
   * GnbdCopy:requests:
   *
   * How many requests may be in flight on each connection.
   */
  properties[PROP_REQUESTS] =
    g_param_spec_uint ("requests", NULL, NULL, 1, 1024, 64, rw);

  /**
   * GnbdCopy:connections:
   *
   * How many connections to each NBD side the copy may use (multi-conn).
   * More than one are used only when every NBD side of the copy advertises
   * multi-conn ([property@Client:can-multi-conn]) and was given with its
   * URI: the copy then opens the extra connections itself.  Local files
   * and streams do not limit it (a stream is still read or written in
   * order).  Each connection has [property@Copy:requests] requests in
   * flight.
   *
   * 0, the default, means as many as the machine has CPUs, at most 4: what
   * nbdcopy's default works out to.  On one machine with the servers, more
   * connections than CPUs only make the servers' threads contend: the copy
   * gets slower, not faster (bench/RESULTS.md).  A server elsewhere may
   * gain from more; set them.
   */
  properties[PROP_CONNECTIONS] =
    g_param_spec_uint ("connections", NULL, NULL, 0, 64, 0, rw);

  /**
   * GnbdCopy:sparse:
   *
   * The size of the blocks checked for zeroes in the data read, in bytes:
   * a block of zeroes is not written as data but zeroed (or skipped) on
   * the destination, as a hole of the source is.  0 turns the detection
   * off.  Blocks are aligned to multiples of this size in the source.
   */
  properties[PROP_SPARSE] =
    g_param_spec_uint ("sparse", NULL, NULL, 0, REQUEST_SIZE_MAX, 4096, rw);

  /**
   * GnbdCopy:use-extents:
   *
   * Whether to ask the source where its holes are (NBD block status
   * `base:allocation`, `SEEK_HOLE` in a file) so as not to read them.
   * Turn it off for a source whose allocation map is wrong.
   */
  properties[PROP_USE_EXTENTS] =
    g_param_spec_boolean ("use-extents", NULL, NULL, TRUE, rw);

  /**
   * GnbdCopy:flush:
   *
   * Whether to flush the destination to stable storage at the end (NBD
   * flush when the server offers it, `fsync` for a file).  A stream
   * destination is always flushed (g_output_stream_flush()).
   */
  properties[PROP_FLUSH] =
    g_param_spec_boolean ("flush", NULL, NULL, FALSE, rw);

  /**
   * GnbdCopy:destination-is-zero:
   *
   * Promises that the destination reads as zeroes already, so that the
   * holes and zeroes of the source are skipped rather than zeroed.  Unsafe
   * when not true.  (A new or empty file destination is known to be zero
   * without it.)
   */
  properties[PROP_DESTINATION_IS_ZERO] =
    g_param_spec_boolean ("destination-is-zero", NULL, NULL, FALSE, rw);

  /**
   * GnbdCopy:bytes-copied:
   *
   * How far the copy got: the destination holds the source's contents in
   * full from offset 0 to this many bytes (requests further on may be
   * done too).  Notified with [signal@Copy::progress] and at the end.
   */
  properties[PROP_BYTES_COPIED] =
    g_param_spec_uint64 ("bytes-copied", NULL, NULL, 0, G_MAXUINT64, 0, ro);

  /**
   * GnbdCopy:bytes-total:
   *
   * The size of the source: what [property@Copy:bytes-copied] reaches
   * when the copy is done.  0 while unknown: a stream source has a size
   * only once it ended.
   */
  properties[PROP_BYTES_TOTAL] =
    g_param_spec_uint64 ("bytes-total", NULL, NULL, 0, G_MAXUINT64, 0, ro);

  /**
   * GnbdCopy:bytes-skipped:
   *
   * How many of the bytes done were not written as data: holes of the
   * source and blocks of zeroes, zeroed on the destination or skipped.
   */
  properties[PROP_BYTES_SKIPPED] =
    g_param_spec_uint64 ("bytes-skipped", NULL, NULL, 0, G_MAXUINT64, 0, ro);

  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * GnbdCopy::progress:
   * @self: the copy
   * @bytes_copied: the value of [property@Copy:bytes-copied]
   * @bytes_total: the value of [property@Copy:bytes-total]
   *
   * Emitted while the copy runs, at most ten times a second (by the
   * monotonic clock) and only when something changed, in the
   * thread-default main context of the caller of [method@Copy.run_async].
   */
  signals[SIGNAL_PROGRESS] =
    g_signal_new ("progress", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 2, G_TYPE_UINT64, G_TYPE_UINT64);
}

static void
gnbd_copy_init (GnbdCopy *self)
{
  self->params.request_size = 256 * 1024;
  self->params.requests = 64;
  self->params.connections = 0;        /* as many as CPUs, up to 4 */
  self->params.sparse = 4096;
  self->params.use_extents = TRUE;
}

/**
 * gnbd_copy_new:
 *
 * Creates a copy with no sides yet and the default settings.
 *
 * Returns: (transfer full): a new #GnbdCopy
 */
GnbdCopy *
gnbd_copy_new (void)
{
  return g_object_new (GNBD_TYPE_COPY, NULL);
}
