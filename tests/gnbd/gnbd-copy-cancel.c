/* gnbd-copy-cancel: cancelling a GnbdCopy stops it, and the destination
 * holds the source up to bytes-copied.
 *
 * The copies are slowed by nbdkit's rate filter so that they are mid-way
 * when cancelled (from the progress signal, or from another thread while
 * a sync run blocks); a copy cancelled before it starts writes nothing.
 */
#include <pthread.h>

#include "copy-test.h"

#define SIZE ((guint64) 64 * CT_MiB)
/* 32 MB/s (the rate filter counts bits): about 2 s for SIZE.  Its bucket
 * would let 2 s of data through at once (the default burstiness): 0.1 s. */
#define RATE "rate=256M"
#define BURST "burstiness=0.1"

static void
start_servers (struct test_server *s, struct test_server *d, const char *dst_log)
{
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  g_autofree char *log_arg = g_strdup_printf ("logfile=%s", dst_log);

  if (s)
    gt_start_nbdkit (s, (const char *[]) { "--filter=rate", "pattern", size_arg, RATE, BURST,
                                           NULL });
  unlink (dst_log);
  gt_start_nbdkit (d, (const char *[]) { "--filter=log", "--filter=rate", "memory", size_arg,
                                         log_arg, RATE, BURST, NULL });
}

/* The destination holds the pattern up to bytes-copied, which stopped
 * short of the end. */
static void
check_prefix (GnbdCopy *copy, GnbdClient *dst)
{
  guint64 copied = gnbd_copy_get_bytes_copied (copy);
  g_autofree char *expected = ct_sum_pattern (copied), *sum = ct_sum_client (dst, copied);

  g_test_message ("bytes-copied: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT, copied, SIZE);
  g_assert_cmpuint (copied, >, 0);
  g_assert_cmpuint (copied, <, SIZE);
  g_assert_cmpstr (sum, ==, expected);
}

static void
on_progress_cancel (GnbdCopy *copy, guint64 copied, guint64 total, gpointer data)
{
  if (copied > 0)
    g_cancellable_cancel (data);
}

/* Cancelled at the first progress signal that shows bytes copied. */
static void
test_mid_copy (void)
{
  struct test_server s = { 0 }, d = { 0 };
  g_autofree char *log = g_build_filename (servers_scratch_dir (), "cancel.log", NULL);
  GCancellable *cancellable = g_cancellable_new ();
  GnbdCopy *copy = gnbd_copy_new ();
  GnbdClient *src, *dst;
  GError *error = NULL;

  start_servers (&s, &d, log);
  src = ct_client (&s, NULL);
  dst = ct_client (&d, NULL);
  g_signal_connect (copy, "progress", G_CALLBACK (on_progress_cancel), cancellable);
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_false (ct_run (copy, cancellable, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  check_prefix (copy, dst);

  g_clear_error (&error);
  g_object_unref (cancellable);
  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&s);
  server_stop (&d);
}

/* Cancelled before it starts: nothing written. */
static void
test_before_start (void)
{
  struct test_server s = { 0 }, d = { 0 };
  g_autofree char *log = g_build_filename (servers_scratch_dir (), "cancel0.log", NULL);
  GCancellable *cancellable = g_cancellable_new ();
  GnbdCopy *copy = gnbd_copy_new ();
  GnbdClient *src, *dst;
  GError *error = NULL;

  start_servers (&s, &d, log);
  src = ct_client (&s, NULL);
  dst = ct_client (&d, NULL);
  g_cancellable_cancel (cancellable);
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_false (ct_run (copy, cancellable, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, 0);
  g_assert_cmpuint (ct_log_count (log, " Write id="), ==, 0);

  g_clear_error (&error);
  g_object_unref (cancellable);
  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&s);
  server_stop (&d);
}

/* pthread's lock and condition: ThreadSanitizer sees them, not GLib's. */
typedef struct {
  GnbdCopy *copy;
  GCancellable *cancellable;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  gboolean moved;
} Canceller;

/* In the copy's thread: bytes-copied moved; wake the canceller. */
static void
on_copied (GObject *copy, GParamSpec *pspec, gpointer data)
{
  Canceller *c = data;

  if (gnbd_copy_get_bytes_copied (GNBD_COPY (copy)) == 0)
    return;
  pthread_mutex_lock (&c->lock);
  c->moved = TRUE;
  pthread_cond_broadcast (&c->cond);
  pthread_mutex_unlock (&c->lock);
}

/* Another thread: cancel once bytes-copied moved (the notification wakes
 * it; the test's alarm bounds the wait). */
static gpointer
canceller (gpointer data)
{
  Canceller *c = data;

  pthread_mutex_lock (&c->lock);
  while (!c->moved)
    pthread_cond_wait (&c->cond, &c->lock);
  pthread_mutex_unlock (&c->lock);
  g_cancellable_cancel (c->cancellable);
  return NULL;
}

/* A sync run, cancelled from another thread; a file source (its reads on
 * the copy's thread pool) for a change. */
static void
test_sync_from_thread (void)
{
  struct test_server d = { 0 };
  g_autofree char *log = g_build_filename (servers_scratch_dir (), "cancel-t.log", NULL);
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "cancel-src.img", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);
  Canceller c = { gnbd_copy_new (), g_cancellable_new (), PTHREAD_MUTEX_INITIALIZER,
                  PTHREAD_COND_INITIALIZER, FALSE };
  GnbdClient *dst;
  GThread *thread;
  GError *error = NULL;
  guint8 *buf = g_malloc (SIZE);

  ct_pattern_fill (buf, 0, SIZE);
  g_assert_true (g_file_set_contents (path, (const char *) buf, SIZE, NULL));
  g_free (buf);
  start_servers (NULL, &d, log);
  dst = ct_client (&d, NULL);
  gnbd_copy_set_source_file (c.copy, file);
  gnbd_copy_set_destination_client (c.copy, dst, NULL);
  g_signal_connect (c.copy, "notify::bytes-copied", G_CALLBACK (on_copied), &c);
  thread = g_thread_new ("canceller", canceller, &c);
  g_assert_false (gnbd_copy_run (c.copy, c.cancellable, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_thread_join (thread);
  check_prefix (c.copy, dst);

  g_clear_error (&error);
  g_object_unref (c.cancellable);
  g_object_unref (c.copy);
  g_object_unref (dst);
  server_stop (&d);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy-cancel/mid-copy", test_mid_copy);
  g_test_add_func ("/copy-cancel/before-start", test_before_start);
  g_test_add_func ("/copy-cancel/sync-from-thread", test_sync_from_thread);
  return g_test_run ();
}
