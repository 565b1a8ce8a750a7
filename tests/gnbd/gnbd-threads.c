/* gnbd-threads: where callbacks and signals run, and calls from many
 * threads on one client:
 *  - a client created in a thread with its own context emits `notify` and
 *    `closed` (with no error after a shutdown, once) there, while another
 *    thread, with no main loop, connects, reads and shuts it down with sync
 *    calls; the global default context is never used;
 *  - four threads, each with its own context, issue async requests on one
 *    shared client: each callback runs in the thread that asked;
 *  - four threads without a main loop do sync I/O on one client at once.
 */
#include "gnbd-test.h"

static struct test_server server;

typedef struct {
  GMainContext *context;
  GnbdClient *client;
  GThread *thread;
  gint ready;
  gint quit;
  gint closed;                  /* times `closed` came */
  gint elsewhere;               /* signals that came on another thread */
  gint closed_with_error;
  gint connected_notified;
} Owner;

static void
on_closed (GnbdClient *c, GError *error, gpointer data)
{
  Owner *o = data;

  if (g_thread_self () != o->thread)
    g_atomic_int_inc (&o->elsewhere);
  if (error)
    g_atomic_int_inc (&o->closed_with_error);
  g_atomic_int_inc (&o->closed);
}

static void
on_connected (GObject *object, GParamSpec *pspec, gpointer data)
{
  Owner *o = data;

  if (g_thread_self () != o->thread)
    g_atomic_int_inc (&o->elsewhere);
  g_atomic_int_inc (&o->connected_notified);
}

/* The owner thread: makes the client in its own context and runs that
 * context until told to stop. */
static gpointer
owner_main (gpointer data)
{
  Owner *o = data;

  g_main_context_push_thread_default (o->context);
  o->client = gnbd_client_new ();
  g_signal_connect (o->client, "closed", G_CALLBACK (on_closed), o);
  g_signal_connect (o->client, "notify::connected", G_CALLBACK (on_connected), o);
  g_atomic_int_set (&o->ready, 1);
  while (!g_atomic_int_get (&o->quit))
    g_main_context_iteration (o->context, TRUE);
  g_main_context_pop_thread_default (o->context);
  return NULL;
}

static gboolean
quit_cb (gpointer data)
{
  Owner *o = data;

  g_atomic_int_set (&o->quit, 1);
  return G_SOURCE_REMOVE;
}

static void
test_client_context (void)
{
  Owner o = { .context = g_main_context_new () };
  g_autoptr (GBytes) got = NULL;
  GError *error = NULL;
  gint64 end = g_get_monotonic_time () + GT_WAIT_SECONDS * G_USEC_PER_SEC;

  o.thread = g_thread_new ("owner", owner_main, &o);
  while (!g_atomic_int_get (&o.ready))
    g_thread_yield ();

  /* This thread runs no main loop at all. */
  g_assert_true (gnbd_client_connect_unix (o.client, server.sock, NULL, &error));
  g_assert_no_error (error);
  got = gnbd_client_pread (o.client, 0, 4096, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (gnbd_client_shutdown (o.client, NULL, &error));
  g_assert_no_error (error);

  /* The owner thread hears connected (TRUE then FALSE) and closed. */
  while (g_atomic_int_get (&o.closed) == 0 || g_atomic_int_get (&o.connected_notified) < 2) {
    g_assert_cmpint (g_get_monotonic_time (), <, end);
    g_usleep (1000);
  }
  {
    GSource *s = g_idle_source_new ();

    g_source_set_callback (s, quit_cb, &o, NULL);
    g_source_attach (s, o.context);
    g_source_unref (s);
  }
  g_thread_join (o.thread);
  g_assert_cmpint (o.closed, ==, 1);
  g_assert_cmpint (o.closed_with_error, ==, 0);
  g_assert_cmpint (o.elsewhere, ==, 0);
  g_assert_cmpint (o.connected_notified, ==, 2);
  /* Nothing went to the global default context. */
  g_assert_false (g_main_context_pending (g_main_context_default ()));
  g_object_unref (o.client);
  g_main_context_unref (o.context);
}

enum { THREADS = 4, PER_THREAD = 16, LEN = 4096 };

typedef struct {
  GnbdClient *client;
  int index;
  gboolean async;
} Worker;

/* Writes its own range and reads it back, PER_THREAD requests at a time
 * (async, on its own context: gt_async_wait checks each callback ran on
 * this thread) or one at a time (sync, no loop). */
static gpointer
worker_main (gpointer data)
{
  Worker *w = data;
  GMainContext *ctx = g_main_context_new ();
  GBytes *pat[PER_THREAD];
  GtAsync a[PER_THREAD] = { 0 };
  GError *error = NULL;
  guint64 base = (guint64) w->index * PER_THREAD * LEN;

  if (w->async)
    g_main_context_push_thread_default (ctx);
  for (int i = 0; i < PER_THREAD; i++) {
    pat[i] = gt_pattern (LEN, (guint8) (w->index * 31 + i));
    if (w->async)
      gnbd_client_pwrite_async (w->client, pat[i], base + i * LEN, GNBD_COMMAND_FLAG_NONE,
                                NULL, gt_async_cb, &a[i]);
    else {
      g_assert_true (gnbd_client_pwrite (w->client, pat[i], base + i * LEN,
                                         GNBD_COMMAND_FLAG_NONE, NULL, &error));
      g_assert_no_error (error);
    }
  }
  for (int i = 0; i < PER_THREAD && w->async; i++) {
    g_assert_true (gnbd_client_pwrite_finish (w->client, gt_async_wait (&a[i]), &error));
    g_assert_no_error (error);
    gt_async_clear (&a[i]);
  }
  for (int i = 0; i < PER_THREAD; i++) {
    g_autoptr (GBytes) got = NULL;

    if (w->async) {
      gnbd_client_pread_async (w->client, base + i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                               gt_async_cb, &a[i]);
      got = gnbd_client_pread_finish (w->client, gt_async_wait (&a[i]), &error);
      gt_async_clear (&a[i]);
    }
    else
      got = gnbd_client_pread (w->client, base + i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                               &error);
    g_assert_no_error (error);
    g_assert_true (g_bytes_equal (got, pat[i]));
    g_bytes_unref (pat[i]);
  }
  if (w->async)
    g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  return NULL;
}

static void
test_many_threads (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&server, TRUE);
  Worker w[THREADS];
  GThread *t[THREADS];

  for (int i = 0; i < THREADS; i++) {
    w[i] = (Worker) { .client = c, .index = i, .async = async };
    t[i] = g_thread_new ("worker", worker_main, &w[i]);
  }
  for (int i = 0; i < THREADS; i++)
    g_thread_join (t[i]);
}

int
main (int argc, char **argv)
{
  const char *args[] = { "memory", "16M", NULL };
  int r;

  gt_init (&argc, &argv, 600);
  gt_start_nbdkit (&server, args);
  g_test_add_func ("/threads/client-context", test_client_context);
  g_test_add_data_func ("/threads/async-per-thread", GINT_TO_POINTER (1), test_many_threads);
  g_test_add_data_func ("/threads/sync-no-loop", GINT_TO_POINTER (0), test_many_threads);
  r = g_test_run ();
  server_stop (&server);
  return r;
}
