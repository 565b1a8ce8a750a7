/* gnbd-lifecycle: what clients leave behind (linked with gnbd's objects,
 * for its private test hooks):
 *  - 200 clients opened at once, each reading, then all dropped: once
 *    every connection is freed and the writer task has ended (events, both
 *    bounded), the process has the fds and the threads it had before;
 *  - the writer task ends when no client needs it, and starts again for
 *    the next one;
 *  - a client finalized on another thread, with a request the server
 *    still holds (cancelled): no crash, no leak, nothing left behind.
 */
#include "gnbd-test.h"

#include "gnbd-conn-private.h"
#include "gnbd-writer-private.h"

enum { N_CLIENTS = 200 };

static struct test_server server;
static char *pause_path;

#define BOUND (GT_WAIT_SECONDS * G_USEC_PER_SEC)

/* Threads of GLib's pool (named "pool-<program>") still alive. */
static guint
count_pool_threads (void)
{
  g_autoptr (GDir) d = g_dir_open ("/proc/self/task", 0, NULL);
  const char *name;
  guint n = 0;

  while ((name = g_dir_read_name (d))) {
    g_autofree char *path = g_strdup_printf ("/proc/self/task/%s/comm", name);
    g_autofree char *comm = NULL;

    if (g_file_get_contents (path, &comm, NULL, NULL) && g_str_has_prefix (comm, "pool-"))
      n++;
  }
  return n;
}

/* Nothing of gnbd's is running: every connection freed, the writer task
 * ended, and (the pool keeps no idle thread, see main) its thread gone.
 * The first two are events; a thread's exit is not, so that last wait
 * polls /proc, bounded. */
static void
wait_quiet (void)
{
  gint64 end = g_get_monotonic_time () + BOUND;

  g_assert_true (gnbd_conn_wait_none (BOUND));
  g_assert_true (gnbd_writer_wait_stopped (BOUND));
  while (count_pool_threads () > 0) {
    g_assert_cmpint (g_get_monotonic_time (), <, end);
    g_usleep (10000);
  }
}

static void
test_200_clients (void)
{
  g_autoptr (GnbdClient) warm = gt_client_unix (&server, TRUE);
  GnbdClient *c[N_CLIENTS];
  GtAsync a[N_CLIENTS] = { 0 };
  GError *error = NULL;
  GBytes *b;
  guint fds, threads;

  /* Warm: the I/O thread and the writer's wake-up fd exist for good. */
  b = gnbd_client_pread (warm, 0, 512, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_bytes_unref (b);
  g_clear_object (&warm);
  wait_quiet ();
  fds = gt_count_fds ();
  threads = gt_count_threads ();

  for (int i = 0; i < N_CLIENTS; i++) {
    c[i] = gnbd_client_new ();
    g_object_set (c[i], "concurrent-writer", i % 4 != 0, NULL);
    gnbd_client_connect_unix_async (c[i], server.sock, NULL, gt_async_cb, &a[i]);
  }
  for (int i = 0; i < N_CLIENTS; i++) {
    g_assert_true (gnbd_client_connect_unix_finish (c[i], gt_async_wait (&a[i]), &error));
    g_assert_no_error (error);
    gt_async_clear (&a[i]);
    gnbd_client_pread_async (c[i], (guint64) i * 512, 512, GNBD_COMMAND_FLAG_NONE, NULL,
                             gt_async_cb, &a[i]);
  }
  g_test_message ("with %d clients: %u fds (%u before), %u threads (%u before)", N_CLIENTS,
                  gt_count_fds (), fds, gt_count_threads (), threads);
  for (int i = 0; i < N_CLIENTS; i++) {
    b = gnbd_client_pread_finish (c[i], gt_async_wait (&a[i]), &error);
    g_assert_no_error (error);
    g_bytes_unref (b);
    gt_async_clear (&a[i]);
    /* Half closed cleanly, half just dropped. */
    if (i % 2) {
      g_assert_true (gnbd_client_shutdown (c[i], NULL, &error));
      g_assert_no_error (error);
    }
    g_object_unref (c[i]);
  }
  wait_quiet ();
  g_assert_cmpuint (gt_count_fds (), ==, fds);
  g_assert_cmpuint (gt_count_threads (), ==, threads);
}

/* The writer task ends with its last client and serves the next. */
static void
test_writer_restarts (void)
{
  GError *error = NULL;

  for (int i = 0; i < 3; i++) {
    g_autoptr (GnbdClient) c = gt_client_unix (&server, TRUE);
    g_autoptr (GBytes) pattern = gt_pattern (65536, (guint8) i);
    g_autoptr (GBytes) got = NULL;

    g_assert_true (gnbd_client_pwrite (c, pattern, 0, GNBD_COMMAND_FLAG_NONE, NULL, &error));
    g_assert_no_error (error);
    got = gnbd_client_pread (c, 0, 65536, GNBD_COMMAND_FLAG_NONE, NULL, &error);
    g_assert_no_error (error);
    g_assert_true (g_bytes_equal (got, pattern));
    g_clear_object (&c);
    wait_quiet ();
  }
}

static gpointer
unref_thread (gpointer data)
{
  g_object_unref (data);
  return NULL;
}

static void
test_finalize_other_thread (void)
{
  GnbdClient *c = gt_client_unix (&server, TRUE);
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  GWeakRef weak;
  GError *error = NULL;
  GtAsync a = { 0 };
  guint fds;

  fds = gt_count_fds ();
  g_weak_ref_init (&weak, c);
  /* A read the server holds, cancelled: the client no longer waits for
   * it, the core still does. */
  gt_pause_control (pause_path, 'p');
  gnbd_client_pread_async (c, 0, 4096, GNBD_COMMAND_FLAG_NONE, cancellable, gt_async_cb, &a);
  g_cancellable_cancel (cancellable);
  g_assert_null (gnbd_client_pread_finish (c, gt_async_wait (&a), &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  gt_async_clear (&a);

  /* The last reference goes on another thread. */
  g_thread_join (g_thread_new ("unref", unref_thread, c));
  g_assert_null (g_weak_ref_get (&weak));
  g_weak_ref_clear (&weak);
  g_assert_true (gnbd_conn_wait_none (BOUND));
  /* Its socket is closed (the held request went with it). */
  g_assert_cmpuint (gt_count_fds (), <, fds);
  gt_pause_control (pause_path, 'r');
  wait_quiet ();
}

int
main (int argc, char **argv)
{
  g_autofree char *arg = NULL;
  int r;

  gt_init (&argc, &argv, 900);
  /* Idle pool threads exit at once, so that "no thread left" is exact. */
  g_thread_pool_set_max_unused_threads (0);
  pause_path = gt_pause_path ("pause-lifecycle");
  arg = g_strdup_printf ("pause-control=%s", pause_path);
  {
    const char *args[] = { "--filter=pause", "memory", "16M", arg, NULL };

    gt_start_nbdkit (&server, args);
  }
  g_test_add_func ("/lifecycle/200-clients", test_200_clients);
  g_test_add_func ("/lifecycle/writer-restarts", test_writer_restarts);
  g_test_add_func ("/lifecycle/finalize-other-thread", test_finalize_other_thread);
  r = g_test_run ();
  server_stop (&server);
  g_free (pause_path);
  return r;
}
