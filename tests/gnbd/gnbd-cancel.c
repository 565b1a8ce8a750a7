/* gnbd-cancel: cancellation is G_IO_ERROR_CANCELLED, at once, and leaves
 * the connection usable:
 *  - before a request: nothing is sent;
 *  - during a request the server holds (nbdkit's pause filter): the
 *    cancelled request returns while the server still holds it, an
 *    uncancelled one sent with it completes after, the late reply of the
 *    cancelled one is dropped, and the connection then reads and writes
 *    the right data; for reads and writes, writer on and off;
 *  - a sync call cancelled from another thread;
 *  - a connect to a socket that never speaks.
 */
#include "gnbd-test.h"

static struct test_server paused;
static char *pause_path;

#define CALL(c, async, name, cancellable, ...)                                      \
  ((async) ? ({                                                                     \
     GtAsync a_ = { 0 };                                                            \
     __auto_type r_ = (gnbd_client_##name##_async ((c), __VA_ARGS__, (cancellable), \
                                                   gt_async_cb, &a_),               \
                       gnbd_client_##name##_finish ((c), gt_async_wait (&a_), &error)); \
     gt_async_clear (&a_);                                                          \
     r_;                                                                            \
   }) : gnbd_client_##name ((c), __VA_ARGS__, (cancellable), &error))

static void
test_before (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&paused, TRUE);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GBytes) pattern = gt_pattern (4096, 3);
  g_autoptr (GBytes) got = NULL;
  GError *error = NULL;

  g_cancellable_cancel (cancellable);
  g_assert_null (CALL (c, async, pread, cancellable, 0, 4096, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  /* Not sent: the data stays as it was. */
  g_assert_false (CALL (c, async, pwrite, cancellable, pattern, 0, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  got = CALL (c, async, pread, NULL, 0, 4096, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_false (g_bytes_equal (got, pattern));
}

typedef struct {
  gboolean writer;
  gboolean write;               /* cancel a write, else a read */
} DuringCase;

static void
test_during (gconstpointer data)
{
  const DuringCase *k = data;
  g_autoptr (GnbdClient) c = gt_client_unix (&paused, k->writer);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GBytes) pattern = gt_pattern (64 * 1024, k->writer + 2 * k->write);
  g_autoptr (GBytes) got = NULL;
  GtAsync cancelled = { 0 }, other = { 0 };
  GError *error = NULL;
  gboolean ok;

  /* Both requests go out; the server holds them. */
  gt_pause_control (pause_path, 'p');
  if (k->write)
    gnbd_client_pwrite_async (c, pattern, 65536, GNBD_COMMAND_FLAG_NONE, cancellable,
                              gt_async_cb, &cancelled);
  else
    gnbd_client_pread_async (c, 65536, 65536, GNBD_COMMAND_FLAG_NONE, cancellable,
                             gt_async_cb, &cancelled);
  gnbd_client_pread_async (c, 0, 4096, GNBD_COMMAND_FLAG_NONE, NULL, gt_async_cb, &other);
  g_cancellable_cancel (cancellable);

  /* The cancelled one returns while the server still holds both. */
  gt_async_wait (&cancelled);
  g_assert_false (g_atomic_int_get (&other.done));
  if (k->write)
    g_assert_false (gnbd_client_pwrite_finish (c, cancelled.result, &error));
  else
    g_assert_null (gnbd_client_pread_finish (c, cancelled.result, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  gt_async_clear (&cancelled);

  /* The server goes on: the other completes, the late reply is dropped. */
  gt_pause_control (pause_path, 'r');
  got = gnbd_client_pread_finish (c, gt_async_wait (&other), &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (got), ==, 4096);
  g_clear_pointer (&got, g_bytes_unref);
  gt_async_clear (&other);

  /* The stream is whole: a write and a read of the same range agree.  (A
   * cancelled write may have reached the server; this one overwrites it.) */
  ok = CALL (c, TRUE, pwrite, NULL, pattern, 65536, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (ok);
  got = CALL (c, FALSE, pread, NULL, 65536, 65536, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, pattern));
}

typedef struct {
  GCancellable *cancellable;
  gint go;
} Canceller;

static gpointer
cancel_thread (gpointer data)
{
  Canceller *t = data;

  while (!g_atomic_int_get (&t->go))
    g_thread_yield ();
  g_cancellable_cancel (t->cancellable);
  return NULL;
}

/* A sync read in one thread, cancelled from another.  The server is
 * paused, so the read can only return through the cancel, whether it came
 * before the request went out or while the server held it. */
static void
test_sync_from_thread (void)
{
  g_autoptr (GnbdClient) c = gt_client_unix (&paused, TRUE);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  Canceller t = { .cancellable = cancellable };
  GError *error = NULL;
  GThread *thread;
  GBytes *b;

  gt_pause_control (pause_path, 'p');
  thread = g_thread_new ("canceller", cancel_thread, &t);
  g_atomic_int_set (&t.go, 1);
  b = gnbd_client_pread (c, 0, 4096, GNBD_COMMAND_FLAG_NONE, cancellable, &error);
  g_assert_null (b);
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_thread_join (thread);
  gt_pause_control (pause_path, 'r');
  b = gnbd_client_pread (c, 0, 4096, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_bytes_unref (b);
}

/* A connect to a socket whose owner never accepts, so the server's
 * greeting never comes: only the cancel ends it (async here, sync with a
 * cancel from another thread), and the client then connects elsewhere. */
static void
test_connect (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autofree char *path = gt_pause_path (async ? "silent-a" : "silent-s");
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Canceller t = { .cancellable = cancellable };
  GError *error = NULL;
  GtAsync a = { 0 };
  gboolean connected;

  g_strlcpy (sun.sun_path, path, sizeof sun.sun_path);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sun, sizeof sun), ==, 0);
  g_assert_cmpint (listen (fd, 4), ==, 0);

  if (async) {
    gnbd_client_connect_unix_async (c, path, cancellable, gt_async_cb, &a);
    g_cancellable_cancel (cancellable);
    g_assert_false (gnbd_client_connect_unix_finish (c, gt_async_wait (&a), &error));
    gt_async_clear (&a);
  }
  else {
    GThread *thread = g_thread_new ("canceller", cancel_thread, &t);

    g_atomic_int_set (&t.go, 1);
    g_assert_false (gnbd_client_connect_unix (c, path, cancellable, &error));
    g_thread_join (thread);
  }
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_object_get (c, "connected", &connected, NULL);
  g_assert_false (connected);
  close (fd);
  unlink (path);

  g_assert_true (gnbd_client_connect_unix (c, paused.sock, NULL, &error));
  g_assert_no_error (error);
  g_object_get (c, "connected", &connected, NULL);
  g_assert_true (connected);
}

int
main (int argc, char **argv)
{
  g_autofree char *arg = NULL;
  static DuringCase during[2][2];
  int r;

  gt_init (&argc, &argv, 600);
  pause_path = gt_pause_path ("pause-cancel");
  arg = g_strdup_printf ("pause-control=%s", pause_path);
  {
    const char *args[] = { "--filter=pause", "memory", "1M", arg, NULL };

    gt_start_nbdkit (&paused, args);
  }
  g_test_add_data_func ("/cancel/before/sync", GINT_TO_POINTER (0), test_before);
  g_test_add_data_func ("/cancel/before/async", GINT_TO_POINTER (1), test_before);
  for (int w = 0; w < 2; w++)
    for (int wr = 0; wr < 2; wr++) {
      g_autofree char *p = g_strdup_printf ("/cancel/during/%s/%s", wr ? "write" : "read",
                                            w ? "writer" : "no-writer");

      during[w][wr].writer = w;
      during[w][wr].write = wr;
      g_test_add_data_func (p, &during[w][wr], test_during);
    }
  g_test_add_func ("/cancel/sync-from-thread", test_sync_from_thread);
  g_test_add_data_func ("/cancel/connect/sync", GINT_TO_POINTER (0), test_connect);
  g_test_add_data_func ("/cancel/connect/async", GINT_TO_POINTER (1), test_connect);
  r = g_test_run ();
  server_stop (&paused);
  g_free (pause_path);
  return r;
}
