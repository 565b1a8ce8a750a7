/* gnbd-batch: what makes a request cheap, checked by counting (linked with
 * gnbd's objects, for their counters).
 *
 * The server is nbdkit with one thread (-t 1): it answers in order, so once
 * a sync read that was sent last has its answer, the reader has returned
 * every read sent before it, into a context this test has not iterated yet.
 * Then:
 *  - one wake-up of that context for all of them, and one iteration runs
 *    every callback (results are batched, not one idle source each);
 *  - the reads the callbacks issue leave in one sendmsg, from this thread:
 *    the writer task is not woken for them;
 *  - the second round makes no new result object and no new buffer (both
 *    are reused), nor does a run of sync reads;
 *  - a callback that iterates the context itself still gets the rest of
 *    the batch (no hang);
 *  - a GBytes a caller keeps is never reused under it;
 *  - a sync call reads its own reply: sync reads complete while the I/O
 *    thread is held up, and async reads mixed with sync ones from other
 *    threads all complete (the I/O thread reads again when it must);
 *  - the replies of the client's home context (its first async request's)
 *    are read in that context: they complete while the I/O thread is held
 *    up; and a request from another context completes while the home
 *    context is not running.
 */
#include <pthread.h>

#include "gnbd-test.h"

#include "gnbd-buffers-private.h"
#include "gnbd-io-private.h"
#include "gnbd-result-private.h"
#include "gnbd-writer-private.h"

enum { N = 64, LEN = 4096 };

typedef struct {
  GnbdClient *client;
  GMainContext *context;
  gint done;                    /* callbacks run */
  gint reissue;                 /* each callback issues one more read */
  gint target;                  /* reached is set when done gets there */
  gint reached;
} Round;

/* nbdkit pattern: every 8 bytes hold their own offset, big-endian. */
static void
check_pattern (GBytes *b, guint64 offset)
{
  gsize n;
  const guint8 *p = g_bytes_get_data (b, &n);

  g_assert_cmpuint (n, ==, LEN);
  for (gsize i = 0; i < n; i += 8)
    g_assert_cmpuint (GUINT64_FROM_BE (*(const guint64 *) (p + i)), ==, offset + i);
}

static void
on_read (GObject *source, GAsyncResult *result, gpointer data)
{
  Round *r = data;
  GError *error = NULL;
  GBytes *b = gnbd_client_pread_finish (GNBD_CLIENT (source), result, &error);
  int i = g_atomic_int_get (&r->done);

  /* In order: the server has one thread; reissued reads repeat 0..N-1. */
  g_assert_no_error (error);
  check_pattern (b, (guint64) (i % N) * LEN);
  g_bytes_unref (b);
  if (g_atomic_int_add (&r->done, 1) + 1 == r->target)
    g_atomic_int_set (&r->reached, 1);
  if (r->reissue)
    gnbd_client_pread_async (r->client, (guint64) (i % N) * LEN, LEN, GNBD_COMMAND_FLAG_NONE,
                             NULL, on_read, r);
}

/* Issue N reads into @r's context (not iterated), then a sync read as the
 * barrier: they have all been returned when it is. */
static void
issue_and_settle (Round *r)
{
  GError *error = NULL;
  GBytes *b;

  for (int i = 0; i < N; i++)
    gnbd_client_pread_async (r->client, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                             on_read, r);
  b = gnbd_client_pread (r->client, 0, LEN, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  check_pattern (b, 0);
  g_bytes_unref (b);
  g_assert_cmpint (g_atomic_int_get (&r->done), ==, 0);
}

static void
test_batches (void)
{
  struct test_server s;
  const char *args[] = { "-t", "1", "pattern", "1G", NULL };
  Round r = { 0 };
  guint64 wakeups, sends, wakes, made, buffers;

  gt_start_nbdkit (&s, args);
  r.context = g_main_context_new ();
  g_main_context_push_thread_default (r.context);
  r.client = gt_client_unix (&s, TRUE);

  /* Round 1: the batch is woken once and dispatched in one iteration. */
  wakeups = gnbd_result_count_wakeups ();
  issue_and_settle (&r);
  g_assert_cmpuint (gnbd_result_count_wakeups () - wakeups, ==, 1);
  g_assert_true (g_main_context_iteration (r.context, FALSE));
  g_assert_cmpint (r.done, ==, N);

  /* Rounds 2 and 3: the reads the callbacks issue in one dispatch go out
   * together.  Round 3 makes nothing new: round 2 left the pools full. */
  for (int round = 2; round <= 3; round++) {
    made = gnbd_result_count_made ();
    buffers = gnbd_buffer_count_allocated ();
    r.done = 0;
    r.reached = 0;
    r.target = 2 * N;
    r.reissue = 0;
    issue_and_settle (&r);
    r.reissue = 1;
    sends = gnbd_writer_count_sends ();
    wakes = gnbd_writer_count_wakes ();
    g_assert_true (g_main_context_iteration (r.context, FALSE));
    g_assert_cmpint (r.done, ==, N);
    g_assert_cmpuint (gnbd_writer_count_sends () - sends, ==, 1);
    g_assert_cmpuint (gnbd_writer_count_wakes () - wakes, ==, 0);
    r.reissue = 0;
    gt_iterate_until (&r.reached);
    g_test_message ("round %d: results made: %" G_GUINT64_FORMAT ", buffers allocated: %"
                    G_GUINT64_FORMAT, round, gnbd_result_count_made () - made,
                    gnbd_buffer_count_allocated () - buffers);
  }
  g_assert_cmpuint (gnbd_result_count_made () - made, ==, 0);
  g_assert_cmpuint (gnbd_buffer_count_allocated () - buffers, ==, 0);

  /* Sync reads reuse their result and buffers too. */
  made = gnbd_result_count_made ();
  buffers = gnbd_buffer_count_allocated ();
  for (int i = 0; i < N; i++) {
    GError *error = NULL;
    GBytes *b = gnbd_client_pread (r.client, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE,
                                   NULL, &error);

    g_assert_no_error (error);
    check_pattern (b, (guint64) i * LEN);
    g_bytes_unref (b);
  }
  g_assert_cmpuint (gnbd_result_count_made () - made, ==, 0);
  g_assert_cmpuint (gnbd_buffer_count_allocated () - buffers, ==, 0);

  g_object_unref (r.client);
  g_main_context_pop_thread_default (r.context);
  g_main_context_unref (r.context);
  server_stop (&s);
}

/* ---- A callback that iterates the context ------------------------------------ */

typedef struct {
  GnbdClient *client;
  gint first_done;
  gint second_done;
} Nested;

static void
on_second (GObject *source, GAsyncResult *result, gpointer data)
{
  Nested *n = data;
  g_autoptr (GBytes) b = gnbd_client_pread_finish (GNBD_CLIENT (source), result, NULL);

  g_assert_nonnull (b);
  g_atomic_int_set (&n->second_done, 1);
}

static void
on_first (GObject *source, GAsyncResult *result, gpointer data)
{
  Nested *n = data;
  g_autoptr (GBytes) b = gnbd_client_pread_finish (GNBD_CLIENT (source), result, NULL);

  g_assert_nonnull (b);
  /* The second result waits in the same batch, behind this callback. */
  gt_iterate_until (&n->second_done);
  g_atomic_int_set (&n->first_done, 1);
}

static void
test_nested_iteration (void)
{
  struct test_server s;
  const char *args[] = { "-t", "1", "pattern", "1G", NULL };
  GMainContext *ctx = g_main_context_new ();
  Nested n = { 0 };
  GError *error = NULL;
  GBytes *b;

  gt_start_nbdkit (&s, args);
  g_main_context_push_thread_default (ctx);
  n.client = gt_client_unix (&s, TRUE);
  gnbd_client_pread_async (n.client, 0, LEN, GNBD_COMMAND_FLAG_NONE, NULL, on_first, &n);
  gnbd_client_pread_async (n.client, LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL, on_second, &n);
  b = gnbd_client_pread (n.client, 0, LEN, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_bytes_unref (b);
  gt_iterate_until (&n.first_done);
  g_assert_true (n.second_done);
  g_object_unref (n.client);
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  server_stop (&s);
}

/* ---- Kept buffers ------------------------------------------------------------- */

static void
test_kept_bytes (void)
{
  struct test_server s;
  const char *args[] = { "pattern", "1G", NULL };
  GBytes *kept[N];
  GnbdClient *c;

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  for (int i = 0; i < N; i++) {
    GError *error = NULL;

    kept[i] = gnbd_client_pread (c, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                                 &error);
    g_assert_no_error (error);
    if (i % 2)
      g_clear_pointer (&kept[i], g_bytes_unref);
  }
  /* Many reads elsewhere, reusing the buffers given back. */
  for (int i = 0; i < 4 * N; i++) {
    GError *error = NULL;
    g_autoptr (GBytes) b = gnbd_client_pread (c, (guint64) (N + i) * LEN, LEN,
                                              GNBD_COMMAND_FLAG_NONE, NULL, &error);

    g_assert_no_error (error);
    check_pattern (b, (guint64) (N + i) * LEN);
  }
  for (int i = 0; i < N; i += 2) {
    check_pattern (kept[i], (guint64) i * LEN);
    g_bytes_unref (kept[i]);
  }
  g_object_unref (c);
  server_stop (&s);
}

/* ---- Holding the I/O thread ------------------------------------------------------ */

/* A flag one thread sets and another waits for: pthread's, not GLib's,
 * so that ThreadSanitizer sees them. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  gboolean set;
} Flag;

#define FLAG_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, FALSE }

static void
flag_set (Flag *f)
{
  pthread_mutex_lock (&f->lock);
  f->set = TRUE;
  pthread_cond_broadcast (&f->cond);
  pthread_mutex_unlock (&f->lock);
}

static void
flag_wait (Flag *f)
{
  pthread_mutex_lock (&f->lock);
  while (!f->set)
    pthread_cond_wait (&f->cond, &f->lock);
  pthread_mutex_unlock (&f->lock);
}

static gboolean
flag_set_cb (gpointer data)
{
  flag_set (data);
  return G_SOURCE_REMOVE;
}

/* Two callbacks run on the I/O thread one after the other: between them
 * it prepared its poll again, and so saw the connection's state as it is
 * now. */
static void
io_barrier (void)
{
  for (int i = 0; i < 2; i++) {
    Flag ran = FLAG_INIT;

    gnbd_io_schedule (flag_set_cb, &ran, NULL);
    flag_wait (&ran);
  }
}

typedef struct {
  Flag blocked;                 /* the I/O thread is held */
  Flag released;                /* and may go */
} Hold;

/* On the I/O thread: hold it until released. */
static gboolean
hold_io_thread (gpointer data)
{
  Hold *h = data;

  flag_set (&h->blocked);
  flag_wait (&h->released);
  return G_SOURCE_REMOVE;
}

/* Hold the I/O thread until hold_end; returns once it is held. */
static void
hold_begin (Hold *h)
{
  *h = (Hold) { FLAG_INIT, FLAG_INIT };
  gnbd_io_schedule (hold_io_thread, h, NULL);
  flag_wait (&h->blocked);
}

/* Let the I/O thread go; @h may go once it has left hold_io_thread, which
 * the barrier waits for. */
static void
hold_end (Hold *h)
{
  flag_set (&h->released);
  io_barrier ();
}

/* ---- Sync calls read their own replies ------------------------------------------ */

/* A client of a new nbdkit (one thread: replies in order) whose home is a
 * new context, pushed: one async read made it so. */
static void
home_client (struct test_server *s, Round *r)
{
  const char *args[] = { "-t", "1", "pattern", "1G", NULL };
  GtAsync a = { 0 };
  GError *error = NULL;
  GBytes *b;

  gt_start_nbdkit (s, args);
  r->context = g_main_context_new ();
  g_main_context_push_thread_default (r->context);
  r->client = gt_client_unix (s, TRUE);
  gnbd_client_pread_async (r->client, 0, LEN, GNBD_COMMAND_FLAG_NONE, NULL, gt_async_cb, &a);
  b = gnbd_client_pread_finish (r->client, gt_async_wait (&a), &error);
  g_assert_no_error (error);
  g_bytes_unref (b);
  gt_async_clear (&a);
}

static void
home_client_end (struct test_server *s, Round *r)
{
  g_object_unref (r->client);
  g_main_context_pop_thread_default (r->context);
  g_main_context_unref (r->context);
  server_stop (s);
}

static void
test_sync_reads_itself (void)
{
  struct test_server s;
  const char *args[] = { "pattern", "1G", NULL };
  Hold h = { 0 };
  GtAsync a = { 0 };
  GError *error = NULL;
  GnbdClient *c;
  GBytes *b;

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  hold_begin (&h);

  /* Without the caller reading, these would wait for the I/O thread. */
  for (int i = 0; i < N; i++) {
    b = gnbd_client_pread (c, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL, &error);
    g_assert_no_error (error);
    check_pattern (b, (guint64) i * LEN);
    g_bytes_unref (b);
  }

  hold_end (&h);
  gnbd_client_pread_async (c, LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL, gt_async_cb, &a);
  b = gnbd_client_pread_finish (c, gt_async_wait (&a), &error);
  g_assert_no_error (error);
  check_pattern (b, LEN);
  g_bytes_unref (b);
  gt_async_clear (&a);
  g_object_unref (c);
  server_stop (&s);
}

/* Async reads from the home context complete with the I/O thread held. */
static void
test_home_reads_itself (void)
{
  struct test_server s;
  Round r = { 0 };
  Hold h = { 0 };

  home_client (&s, &r);
  hold_begin (&h);
  r.target = N;
  for (int i = 0; i < N; i++)
    gnbd_client_pread_async (r.client, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                             on_read, &r);
  gt_iterate_until (&r.reached);
  hold_end (&h);
  home_client_end (&s, &r);
}

typedef struct {
  GnbdClient *client;
  gint done;
} Foreign;

static gpointer
foreign_reader (gpointer data)
{
  Foreign *f = data;
  GMainContext *ctx = g_main_context_new ();
  GtAsync a = { 0 };
  GError *error = NULL;
  GBytes *b;

  g_main_context_push_thread_default (ctx);
  gnbd_client_pread_async (f->client, 5 * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL, gt_async_cb,
                           &a);
  b = gnbd_client_pread_finish (f->client, gt_async_wait (&a), &error);
  g_assert_no_error (error);
  check_pattern (b, 5 * LEN);
  g_bytes_unref (b);
  gt_async_clear (&a);
  g_main_context_pop_thread_default (ctx);
  g_main_context_unref (ctx);
  g_atomic_int_set (&f->done, 1);
  return NULL;
}

/* The home context holds requests but does not run: another context's
 * request still completes (the I/O thread reads it), then the home's. */
static void
test_foreign_not_blocked (void)
{
  struct test_server s;
  Round r = { 0 };
  Foreign f = { 0 };
  GThread *t;

  home_client (&s, &r);
  /* The I/O thread has seen the home: it stands back now. */
  io_barrier ();
  r.target = N;
  for (int i = 0; i < N; i++)
    gnbd_client_pread_async (r.client, (guint64) i * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                             on_read, &r);
  f.client = r.client;
  t = g_thread_new ("foreign", foreign_reader, &f);
  g_thread_join (t);
  g_assert_true (g_atomic_int_get (&f.done));
  g_assert_cmpint (g_atomic_int_get (&r.done), ==, 0);
  gt_iterate_until (&r.reached);
  home_client_end (&s, &r);
}

enum { MIX_ROUNDS = 200 };

static gpointer
sync_reader (gpointer data)
{
  GnbdClient *c = data;

  for (int i = 0; i < MIX_ROUNDS; i++) {
    GError *error = NULL;
    GBytes *b = gnbd_client_pread (c, (guint64) (i % N) * LEN, LEN, GNBD_COMMAND_FLAG_NONE,
                                   NULL, &error);

    g_assert_no_error (error);
    check_pattern (b, (guint64) (i % N) * LEN);
    g_bytes_unref (b);
  }
  return NULL;
}

/* Async reads, each waited for, between sync reads on this thread and
 * two others: whoever reads the socket, every reply arrives. */
static void
test_sync_async_mixed (void)
{
  struct test_server s;
  const char *args[] = { "pattern", "1G", NULL };
  GnbdClient *c;
  GThread *t[2];

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  for (int k = 0; k < 2; k++)
    t[k] = g_thread_new ("sync-reader", sync_reader, c);
  for (int i = 0; i < MIX_ROUNDS; i++) {
    GtAsync a = { 0 };
    GError *error = NULL;
    GBytes *b;

    b = gnbd_client_pread (c, (guint64) (i % N) * LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                           &error);
    g_assert_no_error (error);
    check_pattern (b, (guint64) (i % N) * LEN);
    g_bytes_unref (b);
    gnbd_client_pread_async (c, (guint64) ((i + 1) % N) * LEN, LEN, GNBD_COMMAND_FLAG_NONE,
                             NULL, gt_async_cb, &a);
    b = gnbd_client_pread_finish (c, gt_async_wait (&a), &error);
    g_assert_no_error (error);
    check_pattern (b, (guint64) ((i + 1) % N) * LEN);
    g_bytes_unref (b);
    gt_async_clear (&a);
  }
  for (int k = 0; k < 2; k++)
    g_thread_join (t[k]);
  g_object_unref (c);
  server_stop (&s);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 300);
  g_test_add_func ("/batch/one-wakeup-one-send-no-allocation", test_batches);
  g_test_add_func ("/batch/nested-iteration", test_nested_iteration);
  g_test_add_func ("/batch/kept-bytes", test_kept_bytes);
  g_test_add_func ("/batch/sync-reads-itself", test_sync_reads_itself);
  g_test_add_func ("/batch/sync-async-mixed", test_sync_async_mixed);
  g_test_add_func ("/batch/home-reads-itself", test_home_reads_itself);
  g_test_add_func ("/batch/foreign-not-blocked", test_foreign_not_blocked);
  return g_test_run ();
}
