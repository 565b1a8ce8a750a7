/* gnbd-writer: the writer task against the server's timing (linked with
 * gnbd's objects, for its test hooks): a reply that overtakes the release of
 * its write's payload still completes the write; and a writer failure
 * reaches every pending request and the `closed` signal, never a hang.
 *
 * nbdkit (pause filter) holds every request while 64 MiB of writes and
 * some reads are sent: its workers take a few, the socket fills, and the
 * writer task is left holding lent payloads, waiting for POLLOUT.  Then the
 * server is killed: the writer's send fails (EPIPE or a reset), the core
 * kills the connection, every write gets its payload back and fails, every
 * read fails, all in G_IO_ERROR, and `closed` comes with a G_IO_ERROR.  The
 * same without the writer, where the I/O thread's own send fails.
 */
#include "gnbd-test.h"

#include "gnbd-conn-private.h"
#include "gnbd-writer-private.h"

enum { WRITES = 32, WRITE_LEN = 2 * 1024 * 1024, READS = 16 };

typedef struct {
  gint emitted;
  GError *error;
} Closed;

static void
on_closed (GnbdClient *c, GError *error, gpointer data)
{
  Closed *closed = data;

  g_assert_false (g_atomic_int_get (&closed->emitted));
  closed->error = error ? g_error_copy (error) : NULL;
  g_atomic_int_set (&closed->emitted, 1);
}

static void
test_server_killed (gconstpointer data)
{
  gboolean writer = GPOINTER_TO_INT (data);
  struct test_server s;
  g_autofree char *pause = gt_pause_path (writer ? "pause-writer" : "pause-nowriter");
  g_autofree char *arg = g_strdup_printf ("pause-control=%s", pause);
  const char *args[] = { "--filter=pause", "memory", "128M", arg, NULL };
  g_autoptr (GBytes) payload = gt_pattern (WRITE_LEN, 7);
  GtAsync w[WRITES] = { 0 }, r[READS] = { 0 };
  Closed closed = { 0 };
  GnbdClient *c;
  GError *error = NULL;
  gint64 t0;

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, writer);
  g_signal_connect (c, "closed", G_CALLBACK (on_closed), &closed);

  gt_pause_control (pause, 'p');
  for (int i = 0; i < WRITES; i++)
    gnbd_client_pwrite_async (c, payload, (guint64) i * WRITE_LEN, GNBD_COMMAND_FLAG_NONE,
                              NULL, gt_async_cb, &w[i]);
  for (int i = 0; i < READS; i++)
    gnbd_client_pread_async (c, (guint64) i * 4096, 4096, GNBD_COMMAND_FLAG_NONE, NULL,
                             gt_async_cb, &r[i]);
  /* 64 MiB cannot all be taken by a paused nbdkit (its 16 workers hold
   * one request each): the rest stays queued, lent, in the writer. */
  t0 = g_get_monotonic_time ();
  g_assert_cmpint (kill (s.pid, SIGKILL), ==, 0);
  for (int i = 0; i < WRITES; i++) {
    g_assert_false (gnbd_client_pwrite_finish (c, gt_async_wait (&w[i]), &error));
    g_assert_nonnull (error);
    g_assert_true (error->domain == G_IO_ERROR);
    if (i == 0)
      g_test_message ("a pending write: %s", error->message);
    g_clear_error (&error);
    gt_async_clear (&w[i]);
  }
  for (int i = 0; i < READS; i++) {
    g_assert_null (gnbd_client_pread_finish (c, gt_async_wait (&r[i]), &error));
    g_assert_nonnull (error);
    g_assert_true (error->domain == G_IO_ERROR);
    g_clear_error (&error);
    gt_async_clear (&r[i]);
  }
  gt_iterate_until (&closed.emitted);
  g_test_message ("every request failed and `closed` came %" G_GINT64_FORMAT
                  " us after the kill: %s", g_get_monotonic_time () - t0,
                  closed.error ? closed.error->message : "(no error)");
  g_assert_nonnull (closed.error);
  g_assert_true (closed.error->domain == G_IO_ERROR);
  g_clear_error (&closed.error);

  /* Nothing is left running: the connection is freed and the writer task
   * has ended. */
  g_object_unref (c);
  g_assert_true (gnbd_conn_wait_none (GT_WAIT_SECONDS * G_USEC_PER_SEC));
  g_assert_true (gnbd_writer_wait_stopped (GT_WAIT_SECONDS * G_USEC_PER_SEC));
  server_stop (&s);
}

/* A reply that overtakes the writer's release: the core pins the write
 * until the next call into the handle after the release, and nothing comes
 * on the socket to make one.  The writer tells the connection after each
 * release, and the write completes.  (Releases are held back 300 ms here;
 * the core waits 20 ms before pinning.) */
static void
test_reply_before_release (void)
{
  struct test_server s;
  const char *args[] = { "memory", "1M", NULL };
  g_autoptr (GBytes) payload = gt_pattern (4096, 9);
  GError *error = NULL;
  GnbdClient *c;

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  gnbd_writer_delay_releases (300);
  for (int i = 0; i < 3; i++) {
    GtAsync a = { 0 };

    gnbd_client_pwrite_async (c, payload, (guint64) i * 4096, GNBD_COMMAND_FLAG_NONE, NULL,
                              gt_async_cb, &a);
    g_assert_true (gnbd_client_pwrite_finish (c, gt_async_wait (&a), &error));
    g_assert_no_error (error);
    gt_async_clear (&a);
  }
  gnbd_writer_delay_releases (0);
  g_object_unref (c);
  server_stop (&s);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/writer/reply-before-release", test_reply_before_release);
  g_test_add_data_func ("/writer/server-killed/writer", GINT_TO_POINTER (1),
                        test_server_killed);
  g_test_add_data_func ("/writer/server-killed/no-writer", GINT_TO_POINTER (0),
                        test_server_killed);
  return g_test_run ();
}
