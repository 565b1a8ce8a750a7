/* gnbd-client.c: GnbdClient, the public object: its properties, its
 * `closed` signal, and the sync/_async/_finish triple of every operation.
 *
 * Owns the client's settings, the facts of the export it is connected to,
 * and which connection (GnbdConn) is current.  The protocol lives in
 * gnbd-conn.c; this file never calls libnbd-core.  Every _async call makes a
 * GTask in the caller's thread-default context and hands it to the
 * connection; every sync call runs its _async twin on a fresh context of its
 * own, so it works from any thread and never runs the caller's context.
 *
 * Signals and property notifications of the facts reach the client's
 * context: the thread-default main context of the thread that created the
 * client (GDBusConnection's rule).  They are never emitted from the I/O or
 * writer threads.
 */
#include <pthread.h>
#include <string.h>

#include "gnbd-client.h"
#include "gnbd-conn-private.h"
#include "gnbd-enum-types.h"
#include "gnbd-error.h"
#include "gnbd-result-private.h"
#include "gnbd-tsan-private.h"

/**
 * GnbdClient:
 *
 * One connection to an NBD server.
 *
 * Create it with [ctor@Client.new], set the settings (properties such as
 * [property@Client:export-name] and [property@Client:tls]), then connect
 * with one of the `connect_*` methods.  Once connected, the read-only
 * properties ([property@Client:size], [property@Client:read-only],
 * [property@Client:can-flush]...) describe the export, and the I/O methods
 * ([method@Client.pread], [method@Client.pwrite], [method@Client.flush],
 * [method@Client.trim], [method@Client.zero], [method@Client.cache],
 * [method@Client.block_status]) send requests to it.
 *
 * Every operation exists in three forms: a blocking one that may be called
 * from any thread, including one with no main loop; `_async`, whose
 * callback runs in the thread-default main context of the calling thread;
 * and `_finish`.  Any number of requests may be in flight at once, from any
 * number of threads.
 *
 * Errors: a request that the client or the server refuses fails in the
 * %GNBD_ERROR domain, and the connection stays usable.  A broken, closed or
 * never-opened connection gives `G_IO_ERROR` codes.  Cancelling a request
 * makes it fail with `G_IO_ERROR_CANCELLED` at once; the request itself is
 * never cut in half on the wire, so the connection stays usable, and its
 * reply, when it comes, is discarded.  A cancelled write or trim may still
 * have reached the server.
 *
 * The [signal@Client::closed] signal and the notifications of the
 * connection's properties are emitted in the thread-default main context
 * of the thread that created the client, which should therefore run a main
 * loop if you want them.
 *
 * A client connects once at a time: once its connection is closed, it may
 * connect again, with the settings as they are then.  Dropping the last
 * reference to a connected client closes the connection at once, without
 * telling the server; call [method@Client.shutdown] first to close it
 * cleanly.  A client may be finalized on any thread.
 */
struct _GnbdClient {
  GObject parent_instance;

  /* Emissions go here (see the file comment). */
  GMainContext *context;

  /* Protects everything below: properties are read and written from any
   * thread, and the connection's callbacks run on the I/O thread. */
  pthread_mutex_t lock;
  GnbdSettings settings;
  GnbdFacts facts;
  enum { STATE_IDLE, STATE_CONNECTING, STATE_CONNECTED, STATE_CLOSED } state;
  GnbdConn *conn;
  GError *close_error; /* why the last connection ended, if it broke */
};

G_DEFINE_FINAL_TYPE (GnbdClient, gnbd_client, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_EXPORT_NAME,
  PROP_TLS,
  PROP_TLS_CERTIFICATES,
  PROP_TLS_PSK_FILE,
  PROP_TLS_USERNAME,
  PROP_REQUEST_STRUCTURED_REPLIES,
  PROP_META_CONTEXTS,
  PROP_HANDLE_NAME,
  PROP_CONCURRENT_WRITER,
  /* The facts: read-only. */
  PROP_CONNECTED,
  PROP_SIZE,
  PROP_READ_ONLY,
  PROP_CAN_FLUSH,
  PROP_CAN_FUA,
  PROP_CAN_TRIM,
  PROP_CAN_ZERO,
  PROP_CAN_FAST_ZERO,
  PROP_CAN_CACHE,
  PROP_CAN_DF,
  PROP_CAN_MULTI_CONN,
  PROP_IS_ROTATIONAL,
  PROP_PROTOCOL,
  PROP_TLS_NEGOTIATED,
  PROP_STRUCTURED_REPLIES_NEGOTIATED,
  PROP_BLOCK_SIZE_MINIMUM,
  PROP_BLOCK_SIZE_PREFERRED,
  PROP_BLOCK_SIZE_MAXIMUM,
  PROP_EXPORT_DESCRIPTION,
  PROP_CANONICAL_NAME,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_CLOSED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

/* ---- Emitting in the client's context ---------------------------------- */

/* One batch of notifications and maybe the closed signal.  It holds the
 * client weakly: a client finalized meanwhile gets nothing, and a context
 * nobody runs keeps no client alive. */
typedef struct {
  GWeakRef client;
  GParamSpec *pspecs[N_PROPS];
  guint n_pspecs;
  gboolean closed;
  GError *error;
} Emission;

static void
emission_free (gpointer data)
{
  Emission *e = data;

  GNBD_TAKEOVER (e);
  g_weak_ref_clear (&e->client);
  g_clear_error (&e->error);
  g_free (e);
}

static gboolean
emission_run (gpointer data)
{
  Emission *e = data;
  GnbdClient *self;

  GNBD_TAKEOVER (e);
  self = g_weak_ref_get (&e->client);
  if (!self)
    return G_SOURCE_REMOVE;
  g_object_freeze_notify (G_OBJECT (self));
  for (guint i = 0; i < e->n_pspecs; i++)
    g_object_notify_by_pspec (G_OBJECT (self), e->pspecs[i]);
  g_object_thaw_notify (G_OBJECT (self));
  if (e->closed)
    g_signal_emit (self, signals[SIGNAL_CLOSED], 0, e->error);
  g_object_unref (self);
  return G_SOURCE_REMOVE;
}

static void
emission_post (GnbdClient *self, Emission *e)
{
  GSource *source;

  if (e->n_pspecs == 0 && !e->closed) {
    emission_free (e);
    return;
  }
  source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, emission_run, e, emission_free);
  g_source_set_static_name (source, "[gnbd] client notifications");
  GNBD_HANDOFF (e);
  g_source_attach (source, self->context);
  g_source_unref (source);
}

static Emission *
emission_new (GnbdClient *self)
{
  Emission *e = g_new0 (Emission, 1);

  g_weak_ref_init (&e->client, self);
  return e;
}

static void
emission_add (Emission *e, guint prop)
{
  e->pspecs[e->n_pspecs++] = properties[prop];
}

/* ---- Settings and facts ------------------------------------------------ */

void
gnbd_settings_copy (GnbdSettings *dst, const GnbdSettings *src)
{
  dst->export_name = g_strdup (src->export_name);
  dst->tls = src->tls;
  dst->tls_certificates = g_strdup (src->tls_certificates);
  dst->tls_psk_file = g_strdup (src->tls_psk_file);
  dst->tls_username = g_strdup (src->tls_username);
  dst->request_structured_replies = src->request_structured_replies;
  dst->meta_contexts = g_strdupv (src->meta_contexts);
  dst->handle_name = g_strdup (src->handle_name);
  dst->concurrent_writer = src->concurrent_writer;
}

void
gnbd_settings_clear (GnbdSettings *s)
{
  g_clear_pointer (&s->export_name, g_free);
  g_clear_pointer (&s->tls_certificates, g_free);
  g_clear_pointer (&s->tls_psk_file, g_free);
  g_clear_pointer (&s->tls_username, g_free);
  g_clear_pointer (&s->meta_contexts, g_strfreev);
  g_clear_pointer (&s->handle_name, g_free);
}

void
gnbd_facts_clear (GnbdFacts *f)
{
  g_free (f->protocol);
  g_free (f->export_description);
  g_free (f->canonical_name);
  memset (f, 0, sizeof *f);
}

/* The facts that differ between @a and @b, as properties to notify. */
static void
facts_diff (Emission *e, const GnbdFacts *a, const GnbdFacts *b)
{
#define FACT(field, prop)                                                  \
  if (a->field != b->field)                                                \
    emission_add (e, prop);
#define FACT_STR(field, prop)                                              \
  if (g_strcmp0 (a->field, b->field) != 0)                                 \
    emission_add (e, prop);
  FACT (size, PROP_SIZE)
  FACT (read_only, PROP_READ_ONLY)
  FACT (can_flush, PROP_CAN_FLUSH)
  FACT (can_fua, PROP_CAN_FUA)
  FACT (can_trim, PROP_CAN_TRIM)
  FACT (can_zero, PROP_CAN_ZERO)
  FACT (can_fast_zero, PROP_CAN_FAST_ZERO)
  FACT (can_cache, PROP_CAN_CACHE)
  FACT (can_df, PROP_CAN_DF)
  FACT (can_multi_conn, PROP_CAN_MULTI_CONN)
  FACT (is_rotational, PROP_IS_ROTATIONAL)
  FACT_STR (protocol, PROP_PROTOCOL)
  FACT (tls_negotiated, PROP_TLS_NEGOTIATED)
  FACT (structured_replies_negotiated, PROP_STRUCTURED_REPLIES_NEGOTIATED)
  FACT (block_size_minimum, PROP_BLOCK_SIZE_MINIMUM)
  FACT (block_size_preferred, PROP_BLOCK_SIZE_PREFERRED)
  FACT (block_size_maximum, PROP_BLOCK_SIZE_MAXIMUM)
  FACT_STR (export_description, PROP_EXPORT_DESCRIPTION)
  FACT_STR (canonical_name, PROP_CANONICAL_NAME)
#undef FACT
#undef FACT_STR
}

/* ---- Events from the connection (threads: see GnbdConnEvents) ---------- */

/* The connection's link back to its client: weak, so that a connection
 * outliving its client (replies still due) reports to nobody. */
typedef struct {
  GWeakRef client;
} ClientLink;

static void
client_link_free (gpointer data)
{
  ClientLink *link = data;

  g_weak_ref_clear (&link->client);
  g_free (link);
}

static void
on_conn_ready (GnbdConn *conn, GnbdFacts *facts, gpointer data)
{
  ClientLink *link = data;
  GnbdClient *self = g_weak_ref_get (&link->client);
  Emission *e;

  if (!self) {
    gnbd_facts_clear (facts);
    g_free (facts);
    return;
  }
  e = emission_new (self);
  pthread_mutex_lock (&self->lock);
  if (self->conn == conn && self->state == STATE_CONNECTING) {
    facts_diff (e, &self->facts, facts);
    gnbd_facts_clear (&self->facts);
    self->facts = *facts;
    memset (facts, 0, sizeof *facts);
    self->state = STATE_CONNECTED;
    emission_add (e, PROP_CONNECTED);
  }
  pthread_mutex_unlock (&self->lock);
  gnbd_facts_clear (facts);
  g_free (facts);
  emission_post (self, e);
  g_object_unref (self);
}

static void
on_conn_closed (GnbdConn *conn, GError *error, gpointer data)
{
  ClientLink *link = data;
  GnbdClient *self = g_weak_ref_get (&link->client);
  Emission *e;

  if (!self) {
    g_clear_error (&error);
    return;
  }
  e = emission_new (self);
  pthread_mutex_lock (&self->lock);
  /* A connect that failed leaves the client as if never connected, so
   * that it may try again; only an established connection "closes". */
  if (self->conn == conn && self->state == STATE_CONNECTING)
    self->state = STATE_IDLE;
  else if (self->conn == conn && self->state == STATE_CONNECTED) {
    self->state = STATE_CLOSED;
    g_clear_error (&self->close_error);
    self->close_error = error ? g_error_copy (error) : NULL;
    emission_add (e, PROP_CONNECTED);
    e->closed = TRUE;
    e->error = error;
    error = NULL;
  }
  pthread_mutex_unlock (&self->lock);
  g_clear_error (&error);
  emission_post (self, e);
  g_object_unref (self);
}

/* The connection requests go to, or NULL with @error set: not connected
 * yet, or closed (and why). */
static GnbdConn *
connected_conn (GnbdClient *self, GError **error)
{
  GnbdConn *conn = NULL;

  pthread_mutex_lock (&self->lock);
  switch (self->state) {
  case STATE_CONNECTED:
    conn = gnbd_conn_ref (self->conn);
    break;
  case STATE_IDLE:
  case STATE_CONNECTING:
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                 "The client is not connected to an NBD server yet: call one of the "
                 "gnbd_client_connect_* functions first, and wait for it to complete");
    break;
  case STATE_CLOSED:
    if (self->close_error)
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED,
                   "The connection to the NBD server is closed (%s); connect again to send "
                   "more requests", self->close_error->message);
    else
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED,
                   "The connection to the NBD server was shut down; connect again to send "
                   "more requests");
    break;
  }
  pthread_mutex_unlock (&self->lock);
  return conn;
}

/* ---- Sync calls --------------------------------------------------------- */

/* A sync call runs the _async call on a context of its own, pushed as the
 * thread's default, and iterates it until the callback ran: the caller's
 * context is never run, and nothing here depends on the thread.  The
 * context is private to this file and to its thread, made on the thread's
 * first sync call and dropped when the thread ends: as fresh as a new one
 * each time (only this file's callbacks ever run in it), without making and
 * closing an eventfd per call. */
static GPrivate sync_context = G_PRIVATE_INIT ((GDestroyNotify) g_main_context_unref);

typedef struct {
  GMainContext *context;
  GAsyncResult *result;
} SyncCall;

static void
sync_begin (SyncCall *s)
{
  s->context = g_private_get (&sync_context);
  if (!s->context) {
    s->context = g_main_context_new ();
    g_private_set (&sync_context, s->context);
  }
  s->result = NULL;
  g_main_context_push_thread_default (s->context);
}

static void
sync_done (GObject *source, GAsyncResult *result, gpointer data)
{
  SyncCall *s = data;

  s->result = g_object_ref (result);
}

/* Returns the result; the caller unrefs it after _finish. */
static GAsyncResult *
sync_wait (SyncCall *s)
{
  while (!s->result)
    g_main_context_iteration (s->context, TRUE);
  g_main_context_pop_thread_default (s->context);
  return s->result;
}

/* ---- Object ------------------------------------------------------------- */

static void
gnbd_client_dispose (GObject *object)
{
  GnbdClient *self = GNBD_CLIENT (object);
  GnbdConn *conn;

  /* Any thread, maybe the I/O thread inside a callback of this very
   * connection: there the teardown is only scheduled.  Elsewhere the last
   * unref returns once the handle is closed, so that a server the
   * connection started ([ CMD ], socket activation) has exited and been
   * reaped: a program that exits right after leaves no server behind. */
  pthread_mutex_lock (&self->lock);
  conn = g_steal_pointer (&self->conn);
  pthread_mutex_unlock (&self->lock);
  if (conn) {
    gnbd_conn_close_wait (conn);
    gnbd_conn_unref (conn);
  }
  G_OBJECT_CLASS (gnbd_client_parent_class)->dispose (object);
}

static void
gnbd_client_finalize (GObject *object)
{
  GnbdClient *self = GNBD_CLIENT (object);

  /* Maybe on another thread than the last set_property: the lock orders
   * them (for ThreadSanitizer too, which does not see GObject's refcount). */
  pthread_mutex_lock (&self->lock);
  gnbd_settings_clear (&self->settings);
  gnbd_facts_clear (&self->facts);
  g_clear_error (&self->close_error);
  pthread_mutex_unlock (&self->lock);
  g_main_context_unref (self->context);
  pthread_mutex_destroy (&self->lock);
  G_OBJECT_CLASS (gnbd_client_parent_class)->finalize (object);
}

static void
gnbd_client_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GnbdClient *self = GNBD_CLIENT (object);
  GnbdSettings *s = &self->settings;
  GnbdFacts *f = &self->facts;

  pthread_mutex_lock (&self->lock);
  switch (prop_id) {
  case PROP_EXPORT_NAME: g_value_set_string (value, s->export_name); break;
  case PROP_TLS: g_value_set_enum (value, s->tls); break;
  case PROP_TLS_CERTIFICATES: g_value_set_string (value, s->tls_certificates); break;
  case PROP_TLS_PSK_FILE: g_value_set_string (value, s->tls_psk_file); break;
  case PROP_TLS_USERNAME: g_value_set_string (value, s->tls_username); break;
  case PROP_REQUEST_STRUCTURED_REPLIES:
    g_value_set_boolean (value, s->request_structured_replies);
    break;
  case PROP_META_CONTEXTS: g_value_set_boxed (value, s->meta_contexts); break;
  case PROP_HANDLE_NAME: g_value_set_string (value, s->handle_name); break;
  case PROP_CONCURRENT_WRITER: g_value_set_boolean (value, s->concurrent_writer); break;
  case PROP_CONNECTED: g_value_set_boolean (value, self->state == STATE_CONNECTED); break;
  case PROP_SIZE: g_value_set_uint64 (value, f->size); break;
  case PROP_READ_ONLY: g_value_set_boolean (value, f->read_only); break;
  case PROP_CAN_FLUSH: g_value_set_boolean (value, f->can_flush); break;
  case PROP_CAN_FUA: g_value_set_boolean (value, f->can_fua); break;
  case PROP_CAN_TRIM: g_value_set_boolean (value, f->can_trim); break;
  case PROP_CAN_ZERO: g_value_set_boolean (value, f->can_zero); break;
  case PROP_CAN_FAST_ZERO: g_value_set_boolean (value, f->can_fast_zero); break;
  case PROP_CAN_CACHE: g_value_set_boolean (value, f->can_cache); break;
  case PROP_CAN_DF: g_value_set_boolean (value, f->can_df); break;
  case PROP_CAN_MULTI_CONN: g_value_set_boolean (value, f->can_multi_conn); break;
  case PROP_IS_ROTATIONAL: g_value_set_boolean (value, f->is_rotational); break;
  case PROP_PROTOCOL: g_value_set_string (value, f->protocol); break;
  case PROP_TLS_NEGOTIATED: g_value_set_boolean (value, f->tls_negotiated); break;
  case PROP_STRUCTURED_REPLIES_NEGOTIATED:
    g_value_set_boolean (value, f->structured_replies_negotiated);
    break;
  case PROP_BLOCK_SIZE_MINIMUM: g_value_set_uint (value, f->block_size_minimum); break;
  case PROP_BLOCK_SIZE_PREFERRED: g_value_set_uint (value, f->block_size_preferred); break;
  case PROP_BLOCK_SIZE_MAXIMUM: g_value_set_uint (value, f->block_size_maximum); break;
  case PROP_EXPORT_DESCRIPTION: g_value_set_string (value, f->export_description); break;
  case PROP_CANONICAL_NAME: g_value_set_string (value, f->canonical_name); break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
  }
  pthread_mutex_unlock (&self->lock);
}

/* Sets a string setting; TRUE if it changed. */
static gboolean
set_string (char **field, const GValue *value)
{
  const char *v = g_value_get_string (value);

  if (g_strcmp0 (*field, v) == 0)
    return FALSE;
  g_free (*field);
  *field = g_strdup (v);
  return TRUE;
}

static void
gnbd_client_set_property (GObject *object, guint prop_id, const GValue *value,
                          GParamSpec *pspec)
{
  GnbdClient *self = GNBD_CLIENT (object);
  GnbdSettings *s = &self->settings;
  gboolean changed = FALSE;

  pthread_mutex_lock (&self->lock);
  switch (prop_id) {
  case PROP_EXPORT_NAME:
    /* NULL would mean nothing the protocol knows: it is the default "". */
    if (g_value_get_string (value) == NULL) {
      changed = g_strcmp0 (s->export_name, "") != 0;
      g_free (s->export_name);
      s->export_name = g_strdup ("");
    }
    else
      changed = set_string (&s->export_name, value);
    break;
  case PROP_TLS:
    changed = s->tls != (GnbdTls) g_value_get_enum (value);
    s->tls = g_value_get_enum (value);
    break;
  case PROP_TLS_CERTIFICATES: changed = set_string (&s->tls_certificates, value); break;
  case PROP_TLS_PSK_FILE: changed = set_string (&s->tls_psk_file, value); break;
  case PROP_TLS_USERNAME: changed = set_string (&s->tls_username, value); break;
  case PROP_REQUEST_STRUCTURED_REPLIES:
    changed = s->request_structured_replies != g_value_get_boolean (value);
    s->request_structured_replies = g_value_get_boolean (value);
    break;
  case PROP_META_CONTEXTS: {
    char **v = g_value_get_boxed (value);

    changed = !(v == NULL && s->meta_contexts == NULL) &&
              !(v && s->meta_contexts && g_strv_equal ((const char *const *) v,
                                                       (const char *const *) s->meta_contexts));
    if (changed) {
      g_strfreev (s->meta_contexts);
      s->meta_contexts = g_strdupv (v);
    }
    break;
  }
  case PROP_HANDLE_NAME: changed = set_string (&s->handle_name, value); break;
  case PROP_CONCURRENT_WRITER:
    changed = s->concurrent_writer != g_value_get_boolean (value);
    s->concurrent_writer = g_value_get_boolean (value);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
  }
  pthread_mutex_unlock (&self->lock);
  if (changed)
    g_object_notify_by_pspec (object, pspec);
}

static void
gnbd_client_class_init (GnbdClientClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;
  const GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;

  object_class->dispose = gnbd_client_dispose;
  object_class->finalize = gnbd_client_finalize;
  object_class->get_property = gnbd_client_get_property;
  object_class->set_property = gnbd_client_set_property;

  /**
   * GnbdClient:export-name:
   *
   * The name of the export to connect to; the empty string (the default)
   * is the server's default export.  A URI given to
   * [method@Client.connect_uri] names its own export and overrides this.
   * Used at connect time.
   */
  properties[PROP_EXPORT_NAME] =
    g_param_spec_string ("export-name", NULL, NULL, "", rw);

  /**
   * GnbdClient:tls:
   *
   * Whether to negotiate TLS.  A URI of scheme `nbds` requires it whatever
   * this says.  Used at connect time.
   */
  properties[PROP_TLS] =
    g_param_spec_enum ("tls", NULL, NULL, GNBD_TYPE_TLS, GNBD_TLS_DISABLE, rw);

  /**
   * GnbdClient:tls-certificates:
   *
   * A directory holding `ca-cert.pem` (the authority that signed the
   * server's certificate) and, if the server asks for one,
   * `client-cert.pem` and `client-key.pem`; %NULL (the default) uses the
   * system's trusted authorities.  Used at connect time, for X.509 TLS.
   */
  properties[PROP_TLS_CERTIFICATES] =
    g_param_spec_string ("tls-certificates", NULL, NULL, NULL, rw);

  /**
   * GnbdClient:tls-psk-file:
   *
   * A file of pre-shared keys (the `psktool` format, `username:hexkey`
   * lines): setting it selects PSK instead of X.509.  Used at connect time.
   */
  properties[PROP_TLS_PSK_FILE] =
    g_param_spec_string ("tls-psk-file", NULL, NULL, NULL, rw);

  /**
   * GnbdClient:tls-username:
   *
   * The user name of TLS PSK (the key looked up in
   * [property@Client:tls-psk-file]); %NULL means the login name.  Used at
   * connect time.
   */
  properties[PROP_TLS_USERNAME] =
    g_param_spec_string ("tls-username", NULL, NULL, NULL, rw);

  /**
   * GnbdClient:request-structured-replies:
   *
   * Whether to ask the server for structured replies, which
   * [method@Client.block_status] and the `DF` flag need.  Used at connect
   * time.
   */
  properties[PROP_REQUEST_STRUCTURED_REPLIES] =
    g_param_spec_boolean ("request-structured-replies", NULL, NULL, TRUE, rw);

  /**
   * GnbdClient:meta-contexts:
   *
   * The metadata contexts to ask the server for, for
   * [method@Client.block_status]; %NULL (the default) asks for
   * `base:allocation`, an empty list for none.  Used at connect time.
   */
  properties[PROP_META_CONTEXTS] =
    g_param_spec_boxed ("meta-contexts", NULL, NULL, G_TYPE_STRV, rw);

  /**
   * GnbdClient:handle-name:
   *
   * The name of the connection in debug messages of libnbd-core; %NULL
   * lets the library choose one.  Used at connect time.
   */
  properties[PROP_HANDLE_NAME] =
    g_param_spec_string ("handle-name", NULL, NULL, NULL, rw);

  /**
   * GnbdClient:concurrent-writer:
   *
   * Whether requests go to the server through the process's writer task,
   * a GTask thread that sends for every client of the process while
   * replies are read on gnbd's I/O thread, so that sending and receiving
   * overlap.  Write payloads go to the socket from the caller's #GBytes,
   * without a copy.  When %FALSE, the I/O thread sends too, in turn with
   * receiving.  Used at connect time.
   */
  properties[PROP_CONCURRENT_WRITER] =
    g_param_spec_boolean ("concurrent-writer", NULL, NULL, TRUE, rw);

  /**
   * GnbdClient:connected:
   *
   * Whether the client is connected: %TRUE from the moment a connect
   * completes until the connection closes.
   */
  properties[PROP_CONNECTED] =
    g_param_spec_boolean ("connected", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:size:
   *
   * The size of the export in bytes.  Valid after connecting.  (JavaScript
   * numbers are exact up to 2^53 bytes, 8 PiB.)
   */
  properties[PROP_SIZE] =
    g_param_spec_uint64 ("size", NULL, NULL, 0, G_MAXUINT64, 0, ro);

  /**
   * GnbdClient:read-only:
   *
   * Whether the export is read-only: writes, trims and zeroes fail with
   * %GNBD_ERROR_PERMISSION.  Valid after connecting.
   */
  properties[PROP_READ_ONLY] =
    g_param_spec_boolean ("read-only", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-flush:
   *
   * Whether the server supports [method@Client.flush].  Valid after
   * connecting.
   */
  properties[PROP_CAN_FLUSH] =
    g_param_spec_boolean ("can-flush", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-fua:
   *
   * Whether the server supports %GNBD_COMMAND_FLAG_FUA.  Valid after
   * connecting.
   */
  properties[PROP_CAN_FUA] =
    g_param_spec_boolean ("can-fua", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-trim:
   *
   * Whether the server supports [method@Client.trim].  Valid after
   * connecting.
   */
  properties[PROP_CAN_TRIM] =
    g_param_spec_boolean ("can-trim", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-zero:
   *
   * Whether the server supports [method@Client.zero].  Valid after
   * connecting.
   */
  properties[PROP_CAN_ZERO] =
    g_param_spec_boolean ("can-zero", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-fast-zero:
   *
   * Whether the server supports %GNBD_COMMAND_FLAG_FAST_ZERO.  Valid after
   * connecting.
   */
  properties[PROP_CAN_FAST_ZERO] =
    g_param_spec_boolean ("can-fast-zero", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-cache:
   *
   * Whether the server supports [method@Client.cache].  Valid after
   * connecting.
   */
  properties[PROP_CAN_CACHE] =
    g_param_spec_boolean ("can-cache", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-df:
   *
   * Whether the server supports %GNBD_COMMAND_FLAG_DF.  Valid after
   * connecting.
   */
  properties[PROP_CAN_DF] =
    g_param_spec_boolean ("can-df", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:can-multi-conn:
   *
   * Whether the server says that several connections to this export see
   * each other's writes once flushed.  Valid after connecting.
   */
  properties[PROP_CAN_MULTI_CONN] =
    g_param_spec_boolean ("can-multi-conn", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:is-rotational:
   *
   * Whether the server says the export is on rotating media.  Valid after
   * connecting.
   */
  properties[PROP_IS_ROTATIONAL] =
    g_param_spec_boolean ("is-rotational", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:protocol:
   *
   * The protocol the server speaks: "newstyle-fixed", "newstyle" or
   * "oldstyle".  Valid after connecting.
   */
  properties[PROP_PROTOCOL] =
    g_param_spec_string ("protocol", NULL, NULL, NULL, ro);

  /**
   * GnbdClient:tls-negotiated:
   *
   * Whether the connection is encrypted with TLS.  Valid after connecting.
   */
  properties[PROP_TLS_NEGOTIATED] =
    g_param_spec_boolean ("tls-negotiated", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:structured-replies-negotiated:
   *
   * Whether the server agreed to structured replies.  Valid after
   * connecting.
   */
  properties[PROP_STRUCTURED_REPLIES_NEGOTIATED] =
    g_param_spec_boolean ("structured-replies-negotiated", NULL, NULL, FALSE, ro);

  /**
   * GnbdClient:block-size-minimum:
   *
   * The smallest block the server handles well, in bytes (0 if it did not
   * say).  Valid after connecting.
   */
  properties[PROP_BLOCK_SIZE_MINIMUM] =
    g_param_spec_uint ("block-size-minimum", NULL, NULL, 0, G_MAXUINT, 0, ro);

  /**
   * GnbdClient:block-size-preferred:
   *
   * The block size the server prefers, in bytes (0 if it did not say).
   * Valid after connecting.
   */
  properties[PROP_BLOCK_SIZE_PREFERRED] =
    g_param_spec_uint ("block-size-preferred", NULL, NULL, 0, G_MAXUINT, 0, ro);

  /**
   * GnbdClient:block-size-maximum:
   *
   * The largest request the server accepts, in bytes (0 if it did not
   * say).  Valid after connecting.
   */
  properties[PROP_BLOCK_SIZE_MAXIMUM] =
    g_param_spec_uint ("block-size-maximum", NULL, NULL, 0, G_MAXUINT, 0, ro);

  /**
   * GnbdClient:export-description:
   *
   * The description of the export, if the server gave one, else %NULL.
   * Valid after connecting.
   */
  properties[PROP_EXPORT_DESCRIPTION] =
    g_param_spec_string ("export-description", NULL, NULL, NULL, ro);

  /**
   * GnbdClient:canonical-name:
   *
   * The export's canonical name, if the server gave one, else %NULL.
   * Valid after connecting.
   */
  properties[PROP_CANONICAL_NAME] =
    g_param_spec_string ("canonical-name", NULL, NULL, NULL, ro);

  g_object_class_install_properties (object_class, N_PROPS, properties);

  /**
   * GnbdClient::closed:
   * @self: the client
   * @error: (nullable): why the connection ended, or %NULL after
   *   [method@Client.shutdown]
   *
   * Emitted once when a connection that was established ends: after
   * [method@Client.shutdown] (with %NULL), or when it broke (the server
   * went away, the writer failed, the server broke the protocol), with a
   * `G_IO_ERROR`.  Every request still pending has failed by then.  It is
   * emitted in the thread-default main context of the thread that created
   * the client; disposing of the client emits nothing.
   */
  signals[SIGNAL_CLOSED] =
    g_signal_new ("closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 1, G_TYPE_ERROR);
}

static void
gnbd_client_init (GnbdClient *self)
{
  pthread_mutex_init (&self->lock, NULL);
  self->context = g_main_context_ref_thread_default ();
  self->settings.export_name = g_strdup ("");
  self->settings.tls = GNBD_TLS_DISABLE;
  self->settings.request_structured_replies = TRUE;
  self->settings.concurrent_writer = TRUE;
  self->state = STATE_IDLE;
}

/**
 * gnbd_client_new:
 *
 * Creates a client, not connected.  Its signals and notifications will be
 * emitted in the calling thread's thread-default main context.
 *
 * Returns: (transfer full): a new #GnbdClient
 */
GnbdClient *
gnbd_client_new (void)
{
  return g_object_new (GNBD_TYPE_CLIENT, NULL);
}

/* ---- Connecting ---------------------------------------------------------- */

/* Every connect form: check that the client may connect, make a new
 * connection with the settings as they are, and start it. */
static void
connect_start (GnbdClient *self, GnbdConnectKind kind, const char *a, const char *b,
               const char *const *argv, GCancellable *cancellable,
               GAsyncReadyCallback callback, gpointer user_data, gpointer tag)
{
  GTask *task = g_task_new (self, cancellable, callback, user_data);
  GnbdConn *conn = NULL, *old = NULL;
  GnbdConnEvents events = {
    .ready = on_conn_ready,
    .closed = on_conn_closed,
    .destroy = client_link_free,
  };
  ClientLink *link;

  g_task_set_source_tag (task, tag);
  if (g_task_return_error_if_cancelled (task)) {
    g_object_unref (task);
    return;
  }
  link = g_new0 (ClientLink, 1);
  g_weak_ref_init (&link->client, self);
  events.data = link;

  pthread_mutex_lock (&self->lock);
  if (self->state == STATE_CONNECTING || self->state == STATE_CONNECTED) {
    pthread_mutex_unlock (&self->lock);
    client_link_free (link);
    if (self->state == STATE_CONNECTED)
      g_task_return_new_error (task, GNBD_ERROR, GNBD_ERROR_INVALID,
                               "The client is already connected: shut it down before "
                               "connecting again, or use another client");
    else
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_PENDING,
                               "The client is already connecting");
    g_object_unref (task);
    return;
  }
  conn = gnbd_conn_new (&self->settings, &events);
  old = self->conn;
  self->conn = gnbd_conn_ref (conn);
  self->state = STATE_CONNECTING;
  g_clear_error (&self->close_error);
  pthread_mutex_unlock (&self->lock);

  if (old) {
    gnbd_conn_close (old);
    gnbd_conn_unref (old);
  }
  gnbd_conn_connect (conn, kind, a, b, argv, task);
  gnbd_conn_unref (conn);
  g_object_unref (task);
}

static gboolean
connect_finish (GnbdClient *self, GAsyncResult *result, gpointer tag, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == tag, FALSE);
  GNBD_TAKEOVER (result);
  return g_task_propagate_boolean (G_TASK (result), error);
}

/**
 * gnbd_client_connect_uri_async:
 * @self: a #GnbdClient
 * @uri: an NBD URI, such as `nbd://example.com/disk`,
 *   `nbds+unix:///disk?socket=/run/nbd.sock` or
 *   `nbds://alice@example.com/?tls-psk-file=/keys.psk`
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when connected or failed
 * @user_data: data for @callback
 *
 * Connects to the server and export that @uri names (the NBD URI
 * specification), with the client's settings for what the URI does not
 * say.  Name resolution runs on a GTask thread, never in the caller's
 * thread.
 */
void
gnbd_client_connect_uri_async (GnbdClient *self, const char *uri, GCancellable *cancellable,
                               GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (uri != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  connect_start (self, GNBD_CONNECT_URI, uri, NULL, NULL, cancellable, callback, user_data,
                 gnbd_client_connect_uri_async);
}

/**
 * gnbd_client_connect_uri_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.connect_uri_async].
 *
 * Returns: %TRUE once connected; %FALSE with @error set: `G_IO_ERROR` if
 *   the server could not be reached or the connection broke, %GNBD_ERROR if
 *   the server refused (no such export, TLS required...)
 */
gboolean
gnbd_client_connect_uri_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return connect_finish (self, result, gnbd_client_connect_uri_async, error);
}

/**
 * gnbd_client_connect_uri:
 * @self: a #GnbdClient
 * @uri: an NBD URI (see [method@Client.connect_uri_async])
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Connects to the server and export that @uri names, blocking until the
 * handshake is done.
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_uri (GnbdClient *self, const char *uri, GCancellable *cancellable,
                         GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (uri != NULL, FALSE);
  sync_begin (&s);
  gnbd_client_connect_uri_async (self, uri, cancellable, sync_done, &s);
  r = gnbd_client_connect_uri_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/**
 * gnbd_client_connect_unix_async:
 * @self: a #GnbdClient
 * @path: the path of the server's Unix socket
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when connected or failed
 * @user_data: data for @callback
 *
 * Connects to a server listening on a Unix socket.
 */
void
gnbd_client_connect_unix_async (GnbdClient *self, const char *path, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (path != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  connect_start (self, GNBD_CONNECT_UNIX, path, NULL, NULL, cancellable, callback, user_data,
                 gnbd_client_connect_unix_async);
}

/**
 * gnbd_client_connect_unix_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.connect_unix_async].
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_unix_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return connect_finish (self, result, gnbd_client_connect_unix_async, error);
}

/**
 * gnbd_client_connect_unix:
 * @self: a #GnbdClient
 * @path: the path of the server's Unix socket
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Connects to a server listening on a Unix socket, blocking until the
 * handshake is done.
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_unix (GnbdClient *self, const char *path, GCancellable *cancellable,
                          GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  sync_begin (&s);
  gnbd_client_connect_unix_async (self, path, cancellable, sync_done, &s);
  r = gnbd_client_connect_unix_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/**
 * gnbd_client_connect_tcp_async:
 * @self: a #GnbdClient
 * @host: the server's host name or address
 * @port: the port: a service name ("nbd") or a number ("10809")
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when connected or failed
 * @user_data: data for @callback
 *
 * Connects to a server over TCP, trying each address of @host in turn.
 * Name resolution runs on a GTask thread, never in the caller's thread.
 */
void
gnbd_client_connect_tcp_async (GnbdClient *self, const char *host, const char *port,
                               GCancellable *cancellable, GAsyncReadyCallback callback,
                               gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (host != NULL);
  g_return_if_fail (port != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  connect_start (self, GNBD_CONNECT_TCP, host, port, NULL, cancellable, callback, user_data,
                 gnbd_client_connect_tcp_async);
}

/**
 * gnbd_client_connect_tcp_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.connect_tcp_async].
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_tcp_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return connect_finish (self, result, gnbd_client_connect_tcp_async, error);
}

/**
 * gnbd_client_connect_tcp:
 * @self: a #GnbdClient
 * @host: the server's host name or address
 * @port: the port: a service name ("nbd") or a number ("10809")
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Connects to a server over TCP, blocking until the handshake is done.
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_tcp (GnbdClient *self, const char *host, const char *port,
                         GCancellable *cancellable, GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (host != NULL && port != NULL, FALSE);
  sync_begin (&s);
  gnbd_client_connect_tcp_async (self, host, port, cancellable, sync_done, &s);
  r = gnbd_client_connect_tcp_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/**
 * gnbd_client_connect_command_async:
 * @self: a #GnbdClient
 * @argv: (array zero-terminated=1): the server's command line, for
 *   instance `nbdkit -s memory 1G`; the server speaks NBD on its stdin and
 *   stdout
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when connected or failed
 * @user_data: data for @callback
 *
 * Runs a server as a child process and connects to it through a socket
 * pair.  The child is killed when the connection closes.
 */
void
gnbd_client_connect_command_async (GnbdClient *self, const char *const *argv,
                                   GCancellable *cancellable, GAsyncReadyCallback callback,
                                   gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (argv != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  connect_start (self, GNBD_CONNECT_COMMAND, NULL, NULL, argv, cancellable, callback,
                 user_data, gnbd_client_connect_command_async);
}

/**
 * gnbd_client_connect_command_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.connect_command_async].
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_command_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return connect_finish (self, result, gnbd_client_connect_command_async, error);
}

/**
 * gnbd_client_connect_command:
 * @self: a #GnbdClient
 * @argv: (array zero-terminated=1): the server's command line
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Runs a server as a child process and connects to it, blocking until the
 * handshake is done.
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_command (GnbdClient *self, const char *const *argv,
                             GCancellable *cancellable, GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (argv != NULL, FALSE);
  sync_begin (&s);
  gnbd_client_connect_command_async (self, argv, cancellable, sync_done, &s);
  r = gnbd_client_connect_command_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/**
 * gnbd_client_connect_systemd_socket_activation_async:
 * @self: a #GnbdClient
 * @argv: (array zero-terminated=1): the server's command line, for
 *   instance `qemu-nbd -f qcow2 disk.qcow2`
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when connected or failed
 * @user_data: data for @callback
 *
 * Runs a server as a child process with systemd socket activation (a
 * listening Unix socket as fd 3, `LISTEN_FDS=1`) and connects to it.
 */
void
gnbd_client_connect_systemd_socket_activation_async (GnbdClient *self, const char *const *argv,
                                                     GCancellable *cancellable,
                                                     GAsyncReadyCallback callback,
                                                     gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (argv != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  connect_start (self, GNBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION, NULL, NULL, argv, cancellable,
                 callback, user_data, gnbd_client_connect_systemd_socket_activation_async);
}

/**
 * gnbd_client_connect_systemd_socket_activation_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.connect_systemd_socket_activation_async].
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_systemd_socket_activation_finish (GnbdClient *self, GAsyncResult *result,
                                                      GError **error)
{
  return connect_finish (self, result, gnbd_client_connect_systemd_socket_activation_async,
                         error);
}

/**
 * gnbd_client_connect_systemd_socket_activation:
 * @self: a #GnbdClient
 * @argv: (array zero-terminated=1): the server's command line
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Runs a server with systemd socket activation and connects to it,
 * blocking until the handshake is done.
 *
 * Returns: %TRUE once connected, else %FALSE with @error set
 */
gboolean
gnbd_client_connect_systemd_socket_activation (GnbdClient *self, const char *const *argv,
                                               GCancellable *cancellable, GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (argv != NULL, FALSE);
  sync_begin (&s);
  gnbd_client_connect_systemd_socket_activation_async (self, argv, cancellable, sync_done, &s);
  r = gnbd_client_connect_systemd_socket_activation_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/* ---- Listing exports ------------------------------------------------------ */

/**
 * gnbd_client_list_exports_async:
 * @self: a #GnbdClient
 * @uri: an NBD URI naming the server (its export part is ignored)
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called with the list, or on failure
 * @user_data: data for @callback
 *
 * Asks the server which exports it has, over a short connection of its own
 * made with the client's TLS settings.  The client itself is not
 * connected by this and need not be.
 */
void
gnbd_client_list_exports_async (GnbdClient *self, const char *uri, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data)
{
  GnbdSettings settings;
  GTask *task;

  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (uri != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, gnbd_client_list_exports_async);
  if (!g_task_return_error_if_cancelled (task)) {
    pthread_mutex_lock (&self->lock);
    gnbd_settings_copy (&settings, &self->settings);
    pthread_mutex_unlock (&self->lock);
    gnbd_conn_list_exports (&settings, uri, task);
    gnbd_settings_clear (&settings);
  }
  g_object_unref (task);
}

/**
 * gnbd_client_list_exports_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.list_exports_async].
 *
 * Returns: (transfer container) (element-type GnbdExport): the exports, in
 *   the server's order, or %NULL with @error set
 */
GPtrArray *
gnbd_client_list_exports_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) ==
                        gnbd_client_list_exports_async, NULL);
  GNBD_TAKEOVER (result);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/**
 * gnbd_client_list_exports:
 * @self: a #GnbdClient
 * @uri: an NBD URI naming the server
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Asks the server which exports it has, blocking.
 *
 * Returns: (transfer container) (element-type GnbdExport): the exports, or
 *   %NULL with @error set
 */
GPtrArray *
gnbd_client_list_exports (GnbdClient *self, const char *uri, GCancellable *cancellable,
                          GError **error)
{
  SyncCall s;
  GPtrArray *r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), NULL);
  g_return_val_if_fail (uri != NULL, NULL);
  sync_begin (&s);
  gnbd_client_list_exports_async (self, uri, cancellable, sync_done, &s);
  r = gnbd_client_list_exports_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}

/* ---- Requests ----------------------------------------------------------- */

/* The sync request calls pass this as the callback of the _async call, and
 * a GnbdResult ** as its data: the request then makes a result that wakes
 * the calling thread (gnbd-result-private.h), put there for
 * request_sync_wait.  Never called. */
static void
request_sync_done (GObject *source, GAsyncResult *result, gpointer data)
{
  g_assert_not_reached ();
}

static GAsyncResult *
request_sync_wait (GnbdResult *result)
{
  if (!result)
    return NULL;                /* the _async call refused its arguments */
  gnbd_result_wait (result);
  return (GAsyncResult *) result;
}

static void
request_sync_end (GnbdResult *result)
{
  if (result)
    gnbd_result_sync_done (result);
}

/* Every request: a result for the caller's context (or its waiting
 * thread), refused at once if cancelled or not connected, else handed to
 * the connection. */
static void
request_start (GnbdClient *self, GnbdRequestKind kind, guint64 offset, guint64 count,
               GnbdCommandFlags flags, GBytes *data, const char *context,
               GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data,
               gpointer tag)
{
  GnbdResult *result;
  GnbdConn *conn;
  GError *error = NULL;

  if (callback == request_sync_done) {
    result = gnbd_result_new_sync (self, cancellable, tag);
    *(GnbdResult **) user_data = g_object_ref (result);
  }
  else
    result = gnbd_result_new (self, cancellable, callback, user_data, tag);
  if (gnbd_result_return_error_if_cancelled (result))
    return;
  conn = connected_conn (self, &error);
  if (!conn) {
    gnbd_result_return_error (result, error);
    return;
  }
  gnbd_conn_submit (conn, kind, result, offset, count, flags, data, context);
  gnbd_conn_unref (conn);
  g_object_unref (result);
}

static gboolean
request_finish_boolean (GnbdClient *self, GAsyncResult *result, gpointer tag, GError **error)
{
  g_return_val_if_fail (gnbd_result_is_valid (result, self, tag), FALSE);
  return gnbd_result_propagate_boolean ((GnbdResult *) result, error);
}

static gpointer
request_finish_pointer (GnbdClient *self, GAsyncResult *result, gpointer tag, GError **error)
{
  g_return_val_if_fail (gnbd_result_is_valid (result, self, tag), NULL);
  return gnbd_result_propagate_pointer ((GnbdResult *) result, error);
}

/**
 * gnbd_client_pread_async:
 * @self: a connected #GnbdClient
 * @offset: where to read, in bytes from the start of the export
 * @count: how many bytes to read
 * @flags: %GNBD_COMMAND_FLAG_DF or none
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called with the data, or on failure
 * @user_data: data for @callback
 *
 * Reads @count bytes at @offset.
 */
void
gnbd_client_pread_async (GnbdClient *self, guint64 offset, gsize count,
                         GnbdCommandFlags flags, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_PREAD, offset, count, flags, NULL, NULL, cancellable,
                 callback, user_data, gnbd_client_pread_async);
}

/**
 * gnbd_client_pread_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.pread_async].
 *
 * Returns: (transfer full): the data (exactly the bytes asked for: the
 *   buffer the reply was received into), or %NULL with @error set
 */
GBytes *
gnbd_client_pread_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_pointer (self, result, gnbd_client_pread_async, error);
}

/**
 * gnbd_client_pread:
 * @self: a connected #GnbdClient
 * @offset: where to read, in bytes from the start of the export
 * @count: how many bytes to read
 * @flags: %GNBD_COMMAND_FLAG_DF or none
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Reads @count bytes at @offset, blocking.
 *
 * Returns: (transfer full): the data, or %NULL with @error set
 */
GBytes *
gnbd_client_pread (GnbdClient *self, guint64 offset, gsize count, GnbdCommandFlags flags,
                   GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  GBytes *r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), NULL);
  gnbd_client_pread_async (self, offset, count, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_pread_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_pwrite_async:
 * @self: a connected #GnbdClient
 * @data: the bytes to write; referenced, not copied, until the request
 *   is done
 * @offset: where to write, in bytes from the start of the export
 * @flags: %GNBD_COMMAND_FLAG_FUA or none
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when written, or on failure
 * @user_data: data for @callback
 *
 * Writes @data at @offset.  A write that is cancelled may still have
 * reached the server.
 */
void
gnbd_client_pwrite_async (GnbdClient *self, GBytes *data, guint64 offset,
                          GnbdCommandFlags flags, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (data != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_PWRITE, offset, g_bytes_get_size (data), flags, data, NULL,
                 cancellable, callback, user_data, gnbd_client_pwrite_async);
}

/**
 * gnbd_client_pwrite_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.pwrite_async].
 *
 * Returns: %TRUE if the server wrote the data, else %FALSE with @error set
 */
gboolean
gnbd_client_pwrite_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_boolean (self, result, gnbd_client_pwrite_async, error);
}

/**
 * gnbd_client_pwrite:
 * @self: a connected #GnbdClient
 * @data: the bytes to write
 * @offset: where to write, in bytes from the start of the export
 * @flags: %GNBD_COMMAND_FLAG_FUA or none
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Writes @data at @offset, blocking.
 *
 * Returns: %TRUE if the server wrote the data, else %FALSE with @error set
 */
gboolean
gnbd_client_pwrite (GnbdClient *self, GBytes *data, guint64 offset, GnbdCommandFlags flags,
                    GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  g_return_val_if_fail (data != NULL, FALSE);
  gnbd_client_pwrite_async (self, data, offset, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_pwrite_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_flush_async:
 * @self: a connected #GnbdClient
 * @flags: none so far: pass %GNBD_COMMAND_FLAG_NONE
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when flushed, or on failure
 * @user_data: data for @callback
 *
 * Asks the server to put every completed write on stable storage.
 */
void
gnbd_client_flush_async (GnbdClient *self, GnbdCommandFlags flags, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_FLUSH, 0, 0, flags, NULL, NULL, cancellable, callback,
                 user_data, gnbd_client_flush_async);
}

/**
 * gnbd_client_flush_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.flush_async].
 *
 * Returns: %TRUE if the server flushed, else %FALSE with @error set
 */
gboolean
gnbd_client_flush_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_boolean (self, result, gnbd_client_flush_async, error);
}

/**
 * gnbd_client_flush:
 * @self: a connected #GnbdClient
 * @flags: none so far: pass %GNBD_COMMAND_FLAG_NONE
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Asks the server to put every completed write on stable storage,
 * blocking.
 *
 * Returns: %TRUE if the server flushed, else %FALSE with @error set
 */
gboolean
gnbd_client_flush (GnbdClient *self, GnbdCommandFlags flags, GCancellable *cancellable,
                   GError **error)
{
  GnbdResult *s = NULL;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  gnbd_client_flush_async (self, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_flush_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_trim_async:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: %GNBD_COMMAND_FLAG_FUA or none
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when done, or on failure
 * @user_data: data for @callback
 *
 * Tells the server that a range is no longer needed: its contents become
 * unspecified.  A trim that is cancelled may still have reached the server.
 */
void
gnbd_client_trim_async (GnbdClient *self, guint64 offset, guint64 count,
                        GnbdCommandFlags flags, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_TRIM, offset, count, flags, NULL, NULL, cancellable,
                 callback, user_data, gnbd_client_trim_async);
}

/**
 * gnbd_client_trim_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.trim_async].
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_trim_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_boolean (self, result, gnbd_client_trim_async, error);
}

/**
 * gnbd_client_trim:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: %GNBD_COMMAND_FLAG_FUA or none
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Trims a range, blocking.
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_trim (GnbdClient *self, guint64 offset, guint64 count, GnbdCommandFlags flags,
                  GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  gnbd_client_trim_async (self, offset, count, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_trim_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_zero_async:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: %GNBD_COMMAND_FLAG_FUA, %GNBD_COMMAND_FLAG_NO_HOLE,
 *   %GNBD_COMMAND_FLAG_FAST_ZERO or none
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when done, or on failure
 * @user_data: data for @callback
 *
 * Makes a range read as zeroes.  A zero that is cancelled may still have
 * reached the server.
 */
void
gnbd_client_zero_async (GnbdClient *self, guint64 offset, guint64 count,
                        GnbdCommandFlags flags, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_ZERO, offset, count, flags, NULL, NULL, cancellable,
                 callback, user_data, gnbd_client_zero_async);
}

/**
 * gnbd_client_zero_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.zero_async].
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_zero_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_boolean (self, result, gnbd_client_zero_async, error);
}

/**
 * gnbd_client_zero:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: %GNBD_COMMAND_FLAG_FUA, %GNBD_COMMAND_FLAG_NO_HOLE,
 *   %GNBD_COMMAND_FLAG_FAST_ZERO or none
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Makes a range read as zeroes, blocking.
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_zero (GnbdClient *self, guint64 offset, guint64 count, GnbdCommandFlags flags,
                  GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  gnbd_client_zero_async (self, offset, count, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_zero_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_cache_async:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: none so far: pass %GNBD_COMMAND_FLAG_NONE
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called when done, or on failure
 * @user_data: data for @callback
 *
 * Asks the server to load a range into its cache, for reads soon.
 */
void
gnbd_client_cache_async (GnbdClient *self, guint64 offset, guint64 count,
                         GnbdCommandFlags flags, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_CACHE, offset, count, flags, NULL, NULL, cancellable,
                 callback, user_data, gnbd_client_cache_async);
}

/**
 * gnbd_client_cache_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.cache_async].
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_cache_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_boolean (self, result, gnbd_client_cache_async, error);
}

/**
 * gnbd_client_cache:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @flags: none so far: pass %GNBD_COMMAND_FLAG_NONE
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Asks the server to load a range into its cache, blocking.
 *
 * Returns: %TRUE on success, else %FALSE with @error set
 */
gboolean
gnbd_client_cache (GnbdClient *self, guint64 offset, guint64 count, GnbdCommandFlags flags,
                   GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  gnbd_client_cache_async (self, offset, count, flags, cancellable, request_sync_done, &s);
  r = gnbd_client_cache_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/**
 * gnbd_client_block_status_async:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @context: (nullable): the metadata context to report, one of
 *   [property@Client:meta-contexts]; %NULL means `base:allocation`
 * @flags: %GNBD_COMMAND_FLAG_REQ_ONE or none
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called with the extents, or on failure
 * @user_data: data for @callback
 *
 * Asks the server how a range is laid out in a metadata context, for
 * instance which parts are holes or read as zeroes.  Needs structured
 * replies and the context negotiated at connect time.
 */
void
gnbd_client_block_status_async (GnbdClient *self, guint64 offset, guint64 count,
                                const char *context, GnbdCommandFlags flags,
                                GCancellable *cancellable, GAsyncReadyCallback callback,
                                gpointer user_data)
{
  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  request_start (self, GNBD_REQUEST_BLOCK_STATUS, offset, count, flags, NULL,
                 context ? context : "base:allocation", cancellable, callback, user_data,
                 gnbd_client_block_status_async);
}

/**
 * gnbd_client_block_status_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.block_status_async].
 *
 * Returns: (transfer container) (element-type GnbdExtent): the extents the
 *   server reported, in order from @offset (they may cover less than the
 *   range asked for, or more), or %NULL with @error set
 */
GPtrArray *
gnbd_client_block_status_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  return request_finish_pointer (self, result, gnbd_client_block_status_async, error);
}

/**
 * gnbd_client_block_status:
 * @self: a connected #GnbdClient
 * @offset: where the range starts, in bytes
 * @count: how many bytes
 * @context: (nullable): the metadata context; %NULL means `base:allocation`
 * @flags: %GNBD_COMMAND_FLAG_REQ_ONE or none
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Asks the server how a range is laid out, blocking.
 *
 * Returns: (transfer container) (element-type GnbdExtent): the extents, or
 *   %NULL with @error set
 */
GPtrArray *
gnbd_client_block_status (GnbdClient *self, guint64 offset, guint64 count,
                          const char *context, GnbdCommandFlags flags,
                          GCancellable *cancellable, GError **error)
{
  GnbdResult *s = NULL;
  GPtrArray *r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), NULL);
  gnbd_client_block_status_async (self, offset, count, context, flags, cancellable,
                                  request_sync_done, &s);
  r = gnbd_client_block_status_finish (self, request_sync_wait (s), error);
  request_sync_end (s);
  return r;
}

/* ---- Shutdown ------------------------------------------------------------ */

/**
 * gnbd_client_shutdown_async:
 * @self: a connected #GnbdClient
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async): called once the connection is closed
 * @user_data: data for @callback
 *
 * Closes the connection cleanly: the requests already sent complete first,
 * then the client tells the server it is leaving, and the
 * [signal@Client::closed] signal follows with no error.  Cancelling stops
 * the wait, not the shutdown.
 */
void
gnbd_client_shutdown_async (GnbdClient *self, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task;
  GnbdConn *conn;

  g_return_if_fail (GNBD_IS_CLIENT (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, gnbd_client_shutdown_async);
  if (!g_task_return_error_if_cancelled (task)) {
    GError *error = NULL;

    conn = connected_conn (self, &error);
    if (conn) {
      gnbd_conn_shutdown (conn, task);
      gnbd_conn_unref (conn);
    }
    else
      g_task_return_error (task, error);
  }
  g_object_unref (task);
}

/**
 * gnbd_client_shutdown_finish:
 * @self: a #GnbdClient
 * @result: the #GAsyncResult given to the callback
 * @error: return location for a #GError
 *
 * Finishes [method@Client.shutdown_async].
 *
 * Returns: %TRUE once the connection is closed, else %FALSE with @error
 *   set
 */
gboolean
gnbd_client_shutdown_finish (GnbdClient *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gnbd_client_shutdown_async,
                        FALSE);
  GNBD_TAKEOVER (result);
  return g_task_propagate_boolean (G_TASK (result), error);
}

/**
 * gnbd_client_shutdown:
 * @self: a connected #GnbdClient
 * @cancellable: (nullable): a #GCancellable
 * @error: return location for a #GError
 *
 * Closes the connection cleanly, blocking until it is closed.
 *
 * Returns: %TRUE once the connection is closed, else %FALSE with @error
 *   set
 */
gboolean
gnbd_client_shutdown (GnbdClient *self, GCancellable *cancellable, GError **error)
{
  SyncCall s;
  gboolean r;

  g_return_val_if_fail (GNBD_IS_CLIENT (self), FALSE);
  sync_begin (&s);
  gnbd_client_shutdown_async (self, cancellable, sync_done, &s);
  r = gnbd_client_shutdown_finish (self, sync_wait (&s), error);
  g_object_unref (s.result);
  return r;
}
