/* gnbd-copy-progress: GnbdCopy's progress signal comes at most ten times a
 * second, in the caller's thread, with values that only grow; the
 * counters are notified with it and once at the end.
 *
 * The copy is slowed by nbdkit's rate filter so that it lasts more than a
 * second whatever the machine (the filter sleeps; it never speeds up).
 * The test counts signals against the elapsed monotonic time: no window
 * of its own, only the bound the engine promises.
 */
#include "copy-test.h"

#define SIZE ((guint64) 48 * CT_MiB)

typedef struct {
  GThread *thread;
  guint signals;
  guint notifies;
  gint64 last;
  gint64 min_interval;
  guint64 last_copied;
  guint64 total;
} Seen;

static void
on_progress (GnbdCopy *copy, guint64 copied, guint64 total, gpointer data)
{
  Seen *seen = data;
  gint64 now = g_get_monotonic_time ();

  g_assert_true (g_thread_self () == seen->thread);
  if (seen->signals > 0)
    seen->min_interval = MIN (seen->min_interval, now - seen->last);
  seen->last = now;
  seen->signals++;
  g_assert_cmpuint (copied, >=, seen->last_copied);
  g_assert_cmpuint (copied, <=, total);
  g_assert_cmpuint (copied, ==, gnbd_copy_get_bytes_copied (copy));
  seen->last_copied = copied;
  seen->total = total;
}

static void
on_notify (GObject *object, GParamSpec *pspec, gpointer data)
{
  Seen *seen = data;

  g_assert_true (g_thread_self () == seen->thread);
  seen->notifies++;
}

static void
check_seen (const Seen *seen, gint64 elapsed)
{
  g_test_message ("%u signals, %u notifications in %" G_GINT64_FORMAT " ms, closest %"
                  G_GINT64_FORMAT " ms apart", seen->signals, seen->notifies,
                  elapsed / 1000, seen->min_interval / 1000);
  /* At most one per 100 ms since the start. */
  g_assert_cmpuint (seen->signals, <=, elapsed / (G_USEC_PER_SEC / 10) + 1);
  /* And none closer than 100 ms (minus what the emission itself takes). */
  if (seen->signals > 1)
    g_assert_cmpint (seen->min_interval, >=, 90 * 1000);
  /* The copy lasted over a second: the signal came. */
  g_assert_cmpuint (seen->signals, >=, 1);
  g_assert_cmpuint (seen->total, ==, SIZE);
  /* bytes-copied: notified with the signals, and once at the end. */
  g_assert_cmpuint (seen->notifies, <=, seen->signals + 1);
  g_assert_cmpuint (seen->notifies, >=, 1);
}

static GnbdCopy *
slow_copy (struct test_server *s, struct test_server *d, GnbdClient **src, GnbdClient **dst,
           Seen *seen)
{
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  GnbdCopy *copy = gnbd_copy_new ();

  /* 32 MB/s (the filter counts bits), with a bucket of 0.1 s (its default,
   * 2 s, would let the whole export through at once): about a second at
   * least. */
  gt_start_nbdkit (s, (const char *[]) { "--filter=rate", "pattern", size_arg, "rate=256M",
                                         "burstiness=0.1", NULL });
  gt_start_nbdkit (d, (const char *[]) { "memory", size_arg, NULL });
  *src = ct_client (s, NULL);
  *dst = ct_client (d, NULL);
  g_object_set (copy, "request-size", 128 * 1024, NULL);
  gnbd_copy_set_source_client (copy, *src, NULL);
  gnbd_copy_set_destination_client (copy, *dst, NULL);
  g_signal_connect (copy, "progress", G_CALLBACK (on_progress), seen);
  g_signal_connect (copy, "notify::bytes-copied", G_CALLBACK (on_notify), seen);
  return copy;
}

static void
test_async (void)
{
  struct test_server s = { 0 }, d = { 0 };
  Seen seen = { g_thread_self (), .min_interval = G_MAXINT64 };
  GnbdClient *src, *dst;
  GnbdCopy *copy = slow_copy (&s, &d, &src, &dst, &seen);
  GError *error = NULL;
  gint64 start = g_get_monotonic_time ();

  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_seen (&seen, g_get_monotonic_time () - start);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, SIZE);

  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&s);
  server_stop (&d);
}

typedef struct {
  GnbdCopy *copy;
  Seen *seen;
  gint64 elapsed;
} SyncRun;

static gpointer
sync_run (gpointer data)
{
  SyncRun *r = data;
  GError *error = NULL;
  gint64 start = g_get_monotonic_time ();

  r->seen->thread = g_thread_self ();
  g_assert_true (gnbd_copy_run (r->copy, NULL, &error));
  g_assert_no_error (error);
  r->elapsed = g_get_monotonic_time () - start;
  return NULL;
}

/* A sync run in a thread with no main loop: the signals come in that
 * thread, during the call. */
static void
test_sync (void)
{
  struct test_server s = { 0 }, d = { 0 };
  Seen seen = { NULL, .min_interval = G_MAXINT64 };
  GnbdClient *src, *dst;
  GnbdCopy *copy = slow_copy (&s, &d, &src, &dst, &seen);
  SyncRun r = { copy, &seen, 0 };
  GThread *thread = g_thread_new ("sync-run", sync_run, &r);

  g_thread_join (thread);
  check_seen (&seen, r.elapsed);

  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&s);
  server_stop (&d);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy-progress/async", test_async);
  g_test_add_func ("/copy-progress/sync", test_sync);
  return g_test_run ();
}
