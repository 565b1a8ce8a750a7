/* gnbd-clients: 32 clients at once, with requests outstanding on every
 * one, leave the GTask pool free: a g_resolver_lookup_by_name_async
 * ("localhost"), which GLib 2.74 runs on that pool, completes while all of
 * them still wait for the server (nbdkit's pause filter holds their
 * requests, so "still outstanding" is a fact, not a timing); and the
 * process has no more threads with 32 clients than with one.  Then the
 * server resumes and every request completes with the right data.
 */
#include "gnbd-test.h"

enum { N_CLIENTS = 32, READS = 4, LEN = 16384 };

static struct test_server server;
static char *pause_path;

typedef struct {
  GnbdClient *client;
  GBytes *pattern;
  GtAsync write;
  GtAsync reads[READS];
} Client;

static guint
count_done (Client *cl)
{
  guint n = 0;

  for (int i = 0; i < N_CLIENTS; i++) {
    n += g_atomic_int_get (&cl[i].write.done);
    for (int j = 0; j < READS; j++)
      n += g_atomic_int_get (&cl[i].reads[j].done);
  }
  return n;
}

static void
test_32_clients (void)
{
  g_autoptr (GnbdClient) first = gt_client_unix (&server, TRUE);
  g_autoptr (GResolver) resolver = g_resolver_get_default ();
  g_autoptr (GBytes) warm = NULL;
  Client cl[N_CLIENTS] = { 0 };
  GtAsync connects[N_CLIENTS] = { 0 };
  GtAsync resolved = { 0 };
  GError *error = NULL;
  GList *addresses;
  guint threads_one, threads_all;
  gint64 t0, elapsed;

  /* One client, connected, having used the writer. */
  warm = gnbd_client_pread (first, 0, 512, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  threads_one = gt_count_threads ();

  for (int i = 0; i < N_CLIENTS; i++) {
    cl[i].client = gnbd_client_new ();
    gnbd_client_connect_unix_async (cl[i].client, server.sock, NULL, gt_async_cb,
                                    &connects[i]);
  }
  for (int i = 0; i < N_CLIENTS; i++) {
    g_assert_true (gnbd_client_connect_unix_finish (cl[i].client, gt_async_wait (&connects[i]),
                                                    &error));
    g_assert_no_error (error);
    gt_async_clear (&connects[i]);
  }

  /* The server holds every request from now on. */
  gt_pause_control (pause_path, 'p');
  for (int i = 0; i < N_CLIENTS; i++) {
    guint64 base = (guint64) i * LEN * 2;

    cl[i].pattern = gt_pattern (LEN, (guint8) i);
    gnbd_client_pwrite_async (cl[i].client, cl[i].pattern, base, GNBD_COMMAND_FLAG_NONE, NULL,
                              gt_async_cb, &cl[i].write);
    for (int j = 0; j < READS; j++)
      gnbd_client_pread_async (cl[i].client, base + LEN, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                               gt_async_cb, &cl[i].reads[j]);
  }
  threads_all = gt_count_threads ();
  g_test_message ("threads: %u with one client, %u with %d clients and %d requests "
                  "outstanding", threads_one, threads_all, N_CLIENTS, N_CLIENTS * (READS + 1));
  g_assert_cmpuint (threads_all, <=, threads_one);

  t0 = g_get_monotonic_time ();
  g_resolver_lookup_by_name_async (resolver, "localhost", NULL, gt_async_cb, &resolved);
  gt_async_wait (&resolved);
  elapsed = g_get_monotonic_time () - t0;
  addresses = g_resolver_lookup_by_name_finish (resolver, resolved.result, &error);
  g_assert_no_error (error);
  g_assert_nonnull (addresses);
  g_resolver_free_addresses (addresses);
  gt_async_clear (&resolved);
  g_test_message ("g_resolver_lookup_by_name_async (\"localhost\") took %" G_GINT64_FORMAT
                  " us with %d requests outstanding", elapsed, N_CLIENTS * (READS + 1));
  /* The event that matters: it completed while every request still waits. */
  g_assert_cmpuint (count_done (cl), ==, 0);
  /* And a bound, generous for a loaded machine under a sanitizer (the goal
   * on an idle machine is well under a second; see the message above). */
  g_assert_cmpint (elapsed, <, 30 * G_USEC_PER_SEC);

  gt_pause_control (pause_path, 'r');
  for (int i = 0; i < N_CLIENTS; i++) {
    g_assert_true (gnbd_client_pwrite_finish (cl[i].client, gt_async_wait (&cl[i].write),
                                              &error));
    g_assert_no_error (error);
    gt_async_clear (&cl[i].write);
    for (int j = 0; j < READS; j++) {
      g_autoptr (GBytes) got = gnbd_client_pread_finish (cl[i].client,
                                                         gt_async_wait (&cl[i].reads[j]),
                                                         &error);

      g_assert_no_error (error);
      g_assert_cmpuint (g_bytes_get_size (got), ==, LEN);
      gt_async_clear (&cl[i].reads[j]);
    }
  }
  /* Every client reads back what it wrote. */
  for (int i = 0; i < N_CLIENTS; i++) {
    g_autoptr (GBytes) got = gnbd_client_pread (cl[i].client, (guint64) i * LEN * 2, LEN,
                                                GNBD_COMMAND_FLAG_NONE, NULL, &error);

    g_assert_no_error (error);
    g_assert_true (g_bytes_equal (got, cl[i].pattern));
    g_bytes_unref (cl[i].pattern);
    g_object_unref (cl[i].client);
  }
}

int
main (int argc, char **argv)
{
  g_autofree char *arg = NULL;
  int r;

  gt_init (&argc, &argv, 600);
  pause_path = gt_pause_path ("pause-clients");
  arg = g_strdup_printf ("pause-control=%s", pause_path);
  {
    const char *args[] = { "--filter=pause", "memory", "16M", arg, NULL };

    gt_start_nbdkit (&server, args);
  }
  g_test_add_func ("/clients/32-at-once", test_32_clients);
  r = g_test_run ();
  server_stop (&server);
  g_free (pause_path);
  return r;
}
