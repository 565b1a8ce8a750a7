/* gnbd-copy-large: GnbdCopy moves a gibibyte right, through every kind of
 * step: nbdkit pattern -> nbdkit memory (four connections each) -> a
 * local file -> another nbdkit memory, each step checked with SHA-256
 * against the pattern computed here.  Suite 'slow': the AddressSanitizer
 * pass runs it, the ThreadSanitizer one does not (gnbd-copy-data runs the
 * same steps, smaller, there).
 */
#include "copy-test.h"

#define SIZE ((guint64) 1024 * CT_MiB)

static void
run (GnbdCopy *copy, gboolean sync)
{
  GError *error = NULL;
  gint64 start = g_get_monotonic_time ();

  g_assert_true (sync ? gnbd_copy_run (copy, NULL, &error) : ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, SIZE);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (copy), ==, SIZE);
  g_test_message ("copied in %.1f s", (g_get_monotonic_time () - start) / 1e6);
}

static void
test_gibibyte (void)
{
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "large.img", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autofree char *expected = ct_sum_pattern (SIZE), *sum = NULL;
  g_autofree char *pattern_uri = NULL, *mem_uri = NULL;
  struct test_server pattern = { 0 }, mem = { 0 };
  GnbdClient *src, *dst;
  GnbdCopy *copy;

  gt_start_nbdkit (&pattern, (const char *[]) { "pattern", size_arg, NULL });
  gt_start_nbdkit (&mem, (const char *[]) { "memory", size_arg, NULL });
  src = ct_client (&pattern, &pattern_uri);
  dst = ct_client (&mem, &mem_uri);

  copy = gnbd_copy_new ();
  g_object_set (copy, "connections", 4, NULL);
  gnbd_copy_set_source_client (copy, src, pattern_uri);
  gnbd_copy_set_destination_client (copy, dst, mem_uri);
  run (copy, FALSE);
  g_object_unref (copy);
  g_object_unref (src);
  server_stop (&pattern);
  sum = ct_sum_client (dst, SIZE);
  g_assert_cmpstr (sum, ==, expected);
  g_clear_pointer (&sum, g_free);

  copy = gnbd_copy_new ();
  gnbd_copy_set_source_client (copy, dst, mem_uri);
  gnbd_copy_set_destination_file (copy, file);
  run (copy, TRUE);
  g_object_unref (copy);
  g_object_unref (dst);
  server_stop (&mem);
  sum = ct_sum_file (path, G_MAXUINT64);
  g_assert_cmpstr (sum, ==, expected);
  g_clear_pointer (&sum, g_free);

  /* The memory of the first server is free again: a second one. */
  gt_start_nbdkit (&mem, (const char *[]) { "memory", size_arg, NULL });
  dst = ct_client (&mem, NULL);
  copy = gnbd_copy_new ();
  gnbd_copy_set_source_file (copy, file);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  run (copy, FALSE);
  g_object_unref (copy);
  sum = ct_sum_client (dst, SIZE);
  g_assert_cmpstr (sum, ==, expected);

  unlink (path);
  g_object_unref (dst);
  server_stop (&mem);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 1200);
  g_test_add_func ("/copy-large/gibibyte", test_gibibyte);
  return g_test_run ();
}
