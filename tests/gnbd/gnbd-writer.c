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
 *
 * And a connection's Unix socket has a bigger send buffer than an untouched
 * one (libnbd-core asks for it: tests/core/connect-send-buffer), so that a
 * 256 KiB write and its header leave in one send.
 */
#include <sys/socket.h>
#include <sys/un.h>

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

/* This process's socket connected to @path, found among its fds. */
static int
unix_fd_to (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open ("/proc/self/fd", 0, NULL);
  const char *name;
  int found = -1;

  g_assert_nonnull (dir);
  while ((name = g_dir_read_name (dir))) {
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    int fd = atoi (name);

    if (getpeername (fd, (struct sockaddr *) &peer, &len) == 0 && peer.sun_family == AF_UNIX &&
        len > offsetof (struct sockaddr_un, sun_path) && strcmp (peer.sun_path, path) == 0) {
      g_assert_cmpint (found, ==, -1);
      found = fd;
    }
  }
  g_assert_cmpint (found, !=, -1);
  return found;
}

static int
send_buffer (int fd)
{
  int v = 0;
  socklen_t len = sizeof v;

  g_assert_cmpint (getsockopt (fd, SOL_SOCKET, SO_SNDBUF, &v, &len), ==, 0);
  return v;
}

/* The kernel's default (net.core.wmem_default, 208 KiB) holds less than a
 * 256 KiB write; the writer's socket must hold one, header included, and
 * more than an untouched socket. */
static void
test_unix_send_buffer (void)
{
  struct test_server s;
  const char *args[] = { "memory", "1M", NULL };
  g_autoptr (GBytes) payload = gt_pattern (4096, 3);
  GError *error = NULL;
  GnbdClient *c;
  int pair[2], fresh, tuned;

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, pair), ==, 0);
  fresh = send_buffer (pair[0]);
  close (pair[0]);
  close (pair[1]);

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  g_assert_true (gnbd_client_pwrite (c, payload, 0, GNBD_COMMAND_FLAG_NONE, NULL, &error));
  g_assert_no_error (error);
  tuned = send_buffer (unix_fd_to (s.sock));
  g_test_message ("send buffer: %d bytes (an untouched socket's: %d)", tuned, fresh);
  g_assert_cmpint (tuned, >, fresh);
  g_assert_cmpint (tuned, >=, 256 * 1024 + 32);
  g_object_unref (c);
  server_stop (&s);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/writer/reply-before-release", test_reply_before_release);
  g_test_add_func ("/writer/unix-send-buffer", test_unix_send_buffer);
  g_test_add_data_func ("/writer/server-killed/writer", GINT_TO_POINTER (1),
                        test_server_killed);
  g_test_add_data_func ("/writer/server-killed/no-writer", GINT_TO_POINTER (0),
                        test_server_killed);
  return g_test_run ();
}
