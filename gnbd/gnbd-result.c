/* gnbd-result.c: the GAsyncResult of every request, recycled, delivered in
 * batches (see gnbd-result-private.h).
 *
 * Owns the results, the delivery sources (one per GMainContext that ever
 * had a request made from it, attached to it and owned by it: it goes when
 * the context goes) and their pools.  A result that waits in a queue holds
 * a reference on its context, so a context never dies with results queued
 * in it, and the delivery of a context found in the table is alive.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gnbd-result-private.h"
#include "gnbd-writer-private.h"

/* Results kept for reuse per context; a burst beyond it is freed. */
#define POOL_MAX 1024

typedef struct _Delivery Delivery;

struct _GnbdResult {
  GObject parent_instance;

  GnbdResult *next;             /* in a delivery's queue or pool */
  Delivery *delivery;           /* NULL: a sync call's */
  GMainContext *context;        /* a reference, while in use */
  GObject *source_object;
  GCancellable *cancellable;
  GAsyncReadyCallback callback;
  gpointer user_data;
  gpointer tag;

  gboolean returned;
  gpointer value;
  GDestroyNotify destroy;
  gboolean boolean;
  GError *error;

  /* A sync call's: the waiting thread polls its eventfd (and maybe the
   * socket, gnbd-conn.c); done and the wake-up happen under the lock. */
  pthread_mutex_t lock;
  gboolean done;
  pthread_t waiter;
  int wake_fd;
};

struct _Delivery {
  GSource source;
  GMainContext *context;        /* not a reference: the context owns us */
  pthread_mutex_t lock;
  GnbdResult *head;             /* returned, in order */
  GnbdResult *tail;
  gint pending;                 /* atomic: head != NULL */
  GnbdResult *pool;
  guint n_pool;
};

static pthread_mutex_t deliveries_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *deliveries;  /* GMainContext * -> Delivery * */

/* One spare result per thread for its sync calls. */
static GPrivate sync_spare = G_PRIVATE_INIT (g_object_unref);

/* Each thread that makes sync calls waits on an eventfd of its own (kept
 * for the thread's life: one per thread, not one per call).  Stored + 1:
 * 0 is "none yet". */
static void
wake_fd_close (gpointer data)
{
  close (GPOINTER_TO_INT (data) - 1);
}

static GPrivate thread_wake_fd = G_PRIVATE_INIT (wake_fd_close);

/* The contexts this thread's returns must wake, at the end of its batch
 * (gnbd_result_batch_begin), each with a reference. */
#define WAKE_MAX 16
static __thread guint wake_depth;
static __thread guint wake_len;
static __thread GMainContext *wake_contexts[WAKE_MAX];

static gsize count_made;        /* atomic */
static gsize count_wakeups;     /* atomic */

static void gnbd_result_iface_init (GAsyncResultIface *iface);

G_DEFINE_FINAL_TYPE_WITH_CODE (GnbdResult, gnbd_result, G_TYPE_OBJECT,
                               G_IMPLEMENT_INTERFACE (G_TYPE_ASYNC_RESULT,
                                                      gnbd_result_iface_init))

/* ---- The object ------------------------------------------------------------ */

/* Everything a use left, so that the result is as new. */
static void
result_clear (GnbdResult *self)
{
  g_clear_object (&self->source_object);
  g_clear_object (&self->cancellable);
  if (self->value && self->destroy)
    self->destroy (self->value);        /* returned, never finished */
  self->value = NULL;
  self->destroy = NULL;
  g_clear_error (&self->error);
  g_clear_pointer (&self->context, g_main_context_unref);
  self->delivery = NULL;
  self->callback = NULL;
  self->user_data = NULL;
  self->tag = NULL;
  self->returned = FALSE;
  self->boolean = FALSE;
  self->done = FALSE;
  self->wake_fd = -1;
  self->next = NULL;
}

static void
gnbd_result_finalize (GObject *object)
{
  GnbdResult *self = GNBD_RESULT (object);

  result_clear (self);
  pthread_mutex_destroy (&self->lock);
  G_OBJECT_CLASS (gnbd_result_parent_class)->finalize (object);
}

static void
gnbd_result_class_init (GnbdResultClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gnbd_result_finalize;
}

static void
gnbd_result_init (GnbdResult *self)
{
  pthread_mutex_init (&self->lock, NULL);
  self->wake_fd = -1;
}

static GObject *
result_get_source_object (GAsyncResult *result)
{
  GnbdResult *self = GNBD_RESULT (result);

  return self->source_object ? g_object_ref (self->source_object) : NULL;
}

static gpointer
result_get_user_data (GAsyncResult *result)
{
  return GNBD_RESULT (result)->user_data;
}

static gboolean
result_is_tagged (GAsyncResult *result, gpointer tag)
{
  return GNBD_RESULT (result)->tag == tag;
}

static void
gnbd_result_iface_init (GAsyncResultIface *iface)
{
  iface->get_source_object = result_get_source_object;
  iface->get_user_data = result_get_user_data;
  iface->is_tagged = result_is_tagged;
}

/* Only the caller holds @self: no other reference, no qdata (a binding's
 * wrapper, a weak pointer), so nothing can tell it from a new one. */
static gboolean
sole_owner (GnbdResult *self)
{
  GObject *o = G_OBJECT (self);

  return g_atomic_int_get ((gint *) &o->ref_count) == 1 &&
         ((gsize) g_atomic_pointer_get (&o->qdata) & ~(gsize) G_DATALIST_FLAGS_MASK) == 0;
}

static GnbdResult *
result_made (void)
{
  g_atomic_pointer_add (&count_made, 1);
  return g_object_new (GNBD_TYPE_RESULT, NULL);
}

static void
result_setup (GnbdResult *self, gpointer source_object, GCancellable *cancellable,
              GAsyncReadyCallback callback, gpointer user_data, gpointer tag)
{
  self->source_object = source_object ? g_object_ref (source_object) : NULL;
  self->cancellable = cancellable ? g_object_ref (cancellable) : NULL;
  self->callback = callback;
  self->user_data = user_data;
  self->tag = tag;
}

/* ---- Delivery ------------------------------------------------------------------ */

/* Give @done (a result its dispatch is finished with, cleared; or NULL)
 * to the pool, and take the next queued result, under one lock.  Returns
 * @done back if the pool is full, for the caller to free. */
static GnbdResult *
delivery_pop (Delivery *d, GnbdResult **done)
{
  GnbdResult *r;

  pthread_mutex_lock (&d->lock);
  if (*done && d->n_pool < POOL_MAX) {
    (*done)->next = d->pool;
    d->pool = *done;
    d->n_pool++;
    *done = NULL;
  }
  r = d->head;
  if (r) {
    d->head = r->next;
    r->next = NULL;
    if (!d->head) {
      d->tail = NULL;
      g_atomic_int_set (&d->pending, 0);
    }
  }
  pthread_mutex_unlock (&d->lock);
  return r;
}

static gboolean
delivery_prepare (GSource *source, gint *timeout)
{
  *timeout = -1;
  return g_atomic_int_get (&((Delivery *) source)->pending);
}

static gboolean
delivery_check (GSource *source)
{
  return g_atomic_int_get (&((Delivery *) source)->pending);
}

/* Every result queued when it starts (not those its callbacks cause: other
 * sources get their turn), popped one at a time: a callback that iterates
 * the context itself (the source may recurse) gets the next ones. */
static gboolean
delivery_dispatch (GSource *source, GSourceFunc func, gpointer data)
{
  Delivery *d = (Delivery *) source;
  GnbdResult *done = NULL;
  GnbdResult *last, *r;

  pthread_mutex_lock (&d->lock);
  last = d->tail;
  pthread_mutex_unlock (&d->lock);

  /* The requests the callbacks issue go out together, at the end. */
  gnbd_writer_batch_begin ();
  while (last) {
    gboolean was_last;

    r = delivery_pop (d, &done);
    g_clear_object (&done);     /* the pool was full */
    if (!r)
      break;
    was_last = r == last;
    if (r->callback)
      r->callback (r->source_object, (GAsyncResult *) r, r->user_data);
    /* Reused if nobody kept it; its callback's next request may already
     * take it from the pool. */
    if (sole_owner (r)) {
      result_clear (r);
      done = r;
    }
    else
      g_object_unref (r);
    if (was_last)
      break;
  }
  if (done) {
    pthread_mutex_lock (&d->lock);
    if (d->n_pool < POOL_MAX) {
      done->next = d->pool;
      d->pool = done;
      d->n_pool++;
      done = NULL;
    }
    pthread_mutex_unlock (&d->lock);
    g_clear_object (&done);
  }
  gnbd_writer_batch_end ();
  return G_SOURCE_CONTINUE;
}

/* The context is going (only then is the source freed): nothing is queued,
 * for every queued result holds the context. */
static void
delivery_finalize (GSource *source)
{
  Delivery *d = (Delivery *) source;
  GnbdResult *pool;

  pthread_mutex_lock (&deliveries_lock);
  if (deliveries && g_hash_table_lookup (deliveries, d->context) == d)
    g_hash_table_remove (deliveries, d->context);
  pthread_mutex_unlock (&deliveries_lock);
  /* Locked for the memory's sake: the context may die on another thread
   * than the one that used the source last. */
  pthread_mutex_lock (&d->lock);
  pool = g_steal_pointer (&d->pool);
  g_warn_if_fail (d->head == NULL);
  pthread_mutex_unlock (&d->lock);
  while (pool) {
    GnbdResult *r = pool;

    pool = r->next;
    r->next = NULL;
    g_object_unref (r);
  }
  pthread_mutex_destroy (&d->lock);
}

static GSourceFuncs delivery_funcs = {
  .prepare = delivery_prepare,
  .check = delivery_check,
  .dispatch = delivery_dispatch,
  .finalize = delivery_finalize,
};

/* @context's delivery, made and attached on first use.  The caller holds a
 * reference on @context. */
static Delivery *
delivery_for (GMainContext *context)
{
  Delivery *d, *other;
  GSource *source;

  pthread_mutex_lock (&deliveries_lock);
  d = deliveries ? g_hash_table_lookup (deliveries, context) : NULL;
  pthread_mutex_unlock (&deliveries_lock);
  if (d)
    return d;

  /* Attached outside the table's lock: a dying context finalizes its
   * sources with its own lock held, and then takes the table's. */
  source = g_source_new (&delivery_funcs, sizeof (Delivery));
  d = (Delivery *) source;
  d->context = context;
  pthread_mutex_init (&d->lock, NULL);
  g_source_set_can_recurse (source, TRUE);
  g_source_set_static_name (source, "[gnbd] request results");
  g_source_attach (source, context);

  pthread_mutex_lock (&deliveries_lock);
  if (!deliveries)
    deliveries = g_hash_table_new (NULL, NULL);
  other = g_hash_table_lookup (deliveries, context);
  if (!other)
    g_hash_table_insert (deliveries, context, d);
  pthread_mutex_unlock (&deliveries_lock);
  if (other) {
    /* Another thread made one first for the same context. */
    g_source_destroy (source);
    g_source_unref (source);
    return other;
  }
  /* The context's reference is the one that counts from now on. */
  g_source_unref (source);
  return d;
}

/* ---- Making --------------------------------------------------------------------- */

GnbdResult *
gnbd_result_new (gpointer source_object, GCancellable *cancellable,
                 GAsyncReadyCallback callback, gpointer user_data, gpointer tag)
{
  GMainContext *context = g_main_context_ref_thread_default ();
  Delivery *d = delivery_for (context);
  GnbdResult *self;

  pthread_mutex_lock (&d->lock);
  self = d->pool;
  if (self) {
    d->pool = self->next;
    d->n_pool--;
    self->next = NULL;
  }
  pthread_mutex_unlock (&d->lock);
  if (!self)
    self = result_made ();
  self->context = context;
  self->delivery = d;
  result_setup (self, source_object, cancellable, callback, user_data, tag);
  return self;
}

int
gnbd_result_wake_fd (void)
{
  int fd = GPOINTER_TO_INT (g_private_get (&thread_wake_fd)) - 1;

  if (fd < 0) {
    fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd == -1)
      g_error ("gnbd: eventfd: %s", g_strerror (errno));
    g_private_set (&thread_wake_fd, GINT_TO_POINTER (fd + 1));
  }
  return fd;
}

GnbdResult *
gnbd_result_new_sync (gpointer source_object, GCancellable *cancellable, gpointer tag)
{
  GnbdResult *self = g_private_get (&sync_spare);

  if (self)
    g_private_set (&sync_spare, NULL);
  else
    self = result_made ();
  result_setup (self, source_object, cancellable, NULL, NULL, tag);
  self->waiter = pthread_self ();
  self->wake_fd = gnbd_result_wake_fd ();
  return self;
}

GMainContext *
gnbd_result_get_context (GnbdResult *self)
{
  return self->context;
}

gboolean
gnbd_result_is_sync (GnbdResult *self)
{
  return self->delivery == NULL;
}

gboolean
gnbd_result_is_done (GnbdResult *self)
{
  gboolean done;

  pthread_mutex_lock (&self->lock);
  done = self->done;
  pthread_mutex_unlock (&self->lock);
  return done;
}

void
gnbd_result_wait (GnbdResult *self)
{
  g_return_if_fail (self->delivery == NULL);
  while (!gnbd_result_is_done (self)) {
    struct pollfd p = { .fd = self->wake_fd, .events = POLLIN };
    eventfd_t v;

    if (poll (&p, 1, -1) == -1 && errno != EINTR)
      g_error ("gnbd: poll: %s", g_strerror (errno));
    (void) eventfd_read (self->wake_fd, &v);
  }
}

void
gnbd_result_sync_done (GnbdResult *self)
{
  if (sole_owner (self) && !g_private_get (&sync_spare)) {
    result_clear (self);
    g_private_set (&sync_spare, self);
  }
  else
    g_object_unref (self);
}

GCancellable *
gnbd_result_get_cancellable (GnbdResult *self)
{
  return self->cancellable;
}

/* ---- Returning ------------------------------------------------------------------ */

static gboolean wake_later (GMainContext *context);

/* @self (the reference given) goes to its delivery: the queue of its
 * context, or the thread waiting for it. */
static void
result_deliver (GnbdResult *self)
{
  Delivery *d = self->delivery;

  g_return_if_fail (!self->returned);
  self->returned = TRUE;
  if (!d) {
    /* The waiter holds its own reference: drop ours first, so that it
     * finds the result its own alone and keeps it for the next call.  The
     * waiter sees done only after the unlock, so its thread (and its
     * eventfd) are still there for the wake-up; the waiter itself, reading
     * its own reply, needs none. */
    g_object_unref (self);
    pthread_mutex_lock (&self->lock);
    self->done = TRUE;
    if (!pthread_equal (self->waiter, pthread_self ())) {
      eventfd_t one = 1;

      while (eventfd_write (self->wake_fd, one) == -1 && errno == EINTR)
        ;
    }
    pthread_mutex_unlock (&self->lock);
    return;
  }
  pthread_mutex_lock (&d->lock);
  if (d->tail)
    d->tail->next = self;
  else
    d->head = self;
  d->tail = self;
  if (!g_atomic_int_get (&d->pending)) {
    g_atomic_int_set (&d->pending, 1);
    g_atomic_pointer_add (&count_wakeups, 1);
    if (!wake_later (d->context))
      /* Under the lock: the dispatch cannot take @self (and the context
       * reference it holds) before the wake-up is done. */
      g_main_context_wakeup (d->context);
  }
  pthread_mutex_unlock (&d->lock);
}

/* In a batch: wake @context at its end, not now (nor under the handle's
 * lock, which the completions run under).  The reference taken keeps it
 * alive if its results are dispatched meanwhile. */
static gboolean
wake_later (GMainContext *context)
{
  if (wake_depth == 0)
    return FALSE;
  for (guint i = 0; i < wake_len; i++)
    if (wake_contexts[i] == context)
      return TRUE;
  if (wake_len == WAKE_MAX)
    return FALSE;
  wake_contexts[wake_len++] = g_main_context_ref (context);
  return TRUE;
}

void
gnbd_result_batch_begin (void)
{
  wake_depth++;
}

void
gnbd_result_batch_end (void)
{
  g_return_if_fail (wake_depth > 0);
  if (--wake_depth > 0)
    return;
  for (guint i = 0; i < wake_len; i++) {
    /* A context this thread is running needs no wake-up: its next
     * iteration sees the results (the home reader's case). */
    if (!g_main_context_is_owner (wake_contexts[i]))
      g_main_context_wakeup (wake_contexts[i]);
    g_main_context_unref (wake_contexts[i]);
  }
  wake_len = 0;
}

void
gnbd_result_return_pointer (GnbdResult *self, gpointer value, GDestroyNotify destroy)
{
  self->value = value;
  self->destroy = destroy;
  result_deliver (self);
}

void
gnbd_result_return_boolean (GnbdResult *self, gboolean value)
{
  self->boolean = value;
  result_deliver (self);
}

void
gnbd_result_return_error (GnbdResult *self, GError *error)
{
  self->error = error;
  result_deliver (self);
}

void
gnbd_result_return_new_error (GnbdResult *self, GQuark domain, gint code, const char *format,
                              ...)
{
  va_list args;

  va_start (args, format);
  self->error = g_error_new_valist (domain, code, format, args);
  va_end (args);
  result_deliver (self);
}

gboolean
gnbd_result_return_error_if_cancelled (GnbdResult *self)
{
  GError *error = NULL;

  if (!g_cancellable_set_error_if_cancelled (self->cancellable, &error))
    return FALSE;
  gnbd_result_return_error (self, error);
  return TRUE;
}

/* ---- Finishing ------------------------------------------------------------------ */

gboolean
gnbd_result_is_valid (gpointer result, gpointer source_object, gpointer tag)
{
  GnbdResult *self;

  if (!GNBD_IS_RESULT (result))
    return FALSE;
  self = result;
  return self->returned && (GObject *) source_object == self->source_object &&
         self->tag == tag;
}

gpointer
gnbd_result_propagate_pointer (GnbdResult *self, GError **error)
{
  if (self->error) {
    g_propagate_error (error, g_steal_pointer (&self->error));
    return NULL;
  }
  self->destroy = NULL;
  return g_steal_pointer (&self->value);
}

gboolean
gnbd_result_propagate_boolean (GnbdResult *self, GError **error)
{
  if (self->error) {
    g_propagate_error (error, g_steal_pointer (&self->error));
    return FALSE;
  }
  return self->boolean;
}

guint64
gnbd_result_count_made (void)
{
  return (guint64) g_atomic_pointer_get (&count_made);
}

guint64
gnbd_result_count_wakeups (void)
{
  return (guint64) g_atomic_pointer_get (&count_wakeups);
}
