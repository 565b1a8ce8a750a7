/* gnbd-copy-data: GnbdCopy copies the data right, between every kind of
 * side, through real servers.
 *
 * nbdkit pattern -> nbdkit memory -> a local file -> another nbdkit memory,
 * each step checked with SHA-256 against the pattern computed here; a
 * qcow2 image through qemu-nbd, checked against `qemu-img convert`;
 * multi-conn (the connections counted in nbdkit's log, and refused where
 * the server does not advertise it); a null destination; sizes that are
 * not multiples of the request size; flush; sync and async runs.
 */
#include "copy-test.h"

static void
check_counters (GnbdCopy *copy, guint64 size)
{
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, size);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (copy), ==, size);
}

/* pattern -> memory -> file -> memory, with every run form. */
static void
test_chain (void)
{
  const guint64 size = 48 * CT_MiB;
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, size);
  struct test_server pattern = { 0 }, mem1 = { 0 }, mem2 = { 0 };
  g_autofree char *expected = ct_sum_pattern (size);
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "chain.img", NULL);
  g_autofree char *sum1 = NULL, *sum2 = NULL, *sum3 = NULL;
  g_autoptr (GFile) file = g_file_new_for_path (path);
  GnbdClient *src, *c1, *c2;
  GnbdCopy *copy;
  GError *error = NULL;

  gt_start_nbdkit (&pattern, (const char *[]) { "pattern", size_arg, NULL });
  gt_start_nbdkit (&mem1, (const char *[]) { "memory", size_arg, NULL });
  gt_start_nbdkit (&mem2, (const char *[]) { "memory", size_arg, NULL });
  src = ct_client (&pattern, NULL);
  c1 = ct_client (&mem1, NULL);
  c2 = ct_client (&mem2, NULL);

  /* NBD -> NBD, async. */
  copy = gnbd_copy_new ();
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, c1, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  g_object_unref (copy);
  sum1 = ct_sum_client (c1, size);
  g_assert_cmpstr (sum1, ==, expected);

  /* NBD -> file, sync, small requests. */
  copy = gnbd_copy_new ();
  g_object_set (copy, "request-size", 64 * 1024, "requests", 4, NULL);
  gnbd_copy_set_source_client (copy, c1, NULL);
  gnbd_copy_set_destination_file (copy, file);
  g_assert_true (gnbd_copy_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  g_object_unref (copy);
  sum2 = ct_sum_file (path, G_MAXUINT64);
  g_assert_cmpstr (sum2, ==, expected);

  /* file -> NBD, async. */
  copy = gnbd_copy_new ();
  gnbd_copy_set_source_file (copy, file);
  gnbd_copy_set_destination_client (copy, c2, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  g_object_unref (copy);
  sum3 = ct_sum_client (c2, size);
  g_assert_cmpstr (sum3, ==, expected);

  g_object_unref (src);
  g_object_unref (c1);
  g_object_unref (c2);
  server_stop (&pattern);
  server_stop (&mem1);
  server_stop (&mem2);
}

/* A size that is not a multiple of anything the copy uses. */
static void
test_odd_size (void)
{
  const guint64 size = 5 * CT_MiB + 3 * 512;
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, size);
  struct test_server pattern = { 0 }, mem = { 0 };
  g_autofree char *expected = ct_sum_pattern (size);
  g_autofree char *sum = NULL;
  GnbdClient *src, *dst;
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;

  gt_start_nbdkit (&pattern, (const char *[]) { "pattern", size_arg, NULL });
  gt_start_nbdkit (&mem, (const char *[]) { "memory", size_arg, NULL });
  src = ct_client (&pattern, NULL);
  dst = ct_client (&mem, NULL);
  g_object_set (copy, "request-size", 1024 * 1024 + 4096, "requests", 2, NULL);
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  sum = ct_sum_client (dst, size);
  g_assert_cmpstr (sum, ==, expected);

  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&pattern);
  server_stop (&mem);
}

/* qcow2 through qemu-nbd, compared with qemu-img's own conversion. */
static void
test_qcow2 (void)
{
  const guint64 size = 16 * CT_MiB;
  g_autofree char *qcow2 = image_create ("qcow2", size, (const char *[]) {
      "write -P 0xab 0 1M", "write -P 0x5a 3M 64k", "write -z 5M 1M",
      "write -P 0x11 15M 1M", NULL });
  g_autofree char *raw = g_build_filename (servers_scratch_dir (), "qcow2.raw", NULL);
  g_autofree char *expected = NULL, *sum = NULL;
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, size);
  struct test_server qemu = { 0 }, mem = { 0 };
  GnbdClient *src, *dst;
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;

  if (!qcow2) {
    g_test_skip ("qemu-img is not installed");
    g_object_unref (copy);
    return;
  }
  g_assert_cmpint (servers_run ((const char *[]) { "qemu-img", "convert", "-f", "qcow2", "-O",
                                                   "raw", qcow2, raw, NULL }, 60), ==, 0);
  expected = ct_sum_file (raw, G_MAXUINT64);
  if (server_start_qemu_nbd (&qemu, (const char *[]) { "-f", "qcow2", "-r", qcow2, NULL }) ==
      -1) {
    g_test_skip ("qemu-nbd did not start");
    g_object_unref (copy);
    return;
  }
  gt_start_nbdkit (&mem, (const char *[]) { "memory", size_arg, NULL });
  src = ct_client (&qemu, NULL);
  dst = ct_client (&mem, NULL);
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  sum = ct_sum_client (dst, size);
  g_assert_cmpstr (sum, ==, expected);
  /* qemu-nbd said where the holes are: most of the image was not read. */
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), >=, size - 3 * CT_MiB);

  g_object_unref (copy);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&qemu);
  server_stop (&mem);
}

/* Four connections to each side when both advertise multi-conn and the
 * copy has their URIs; one otherwise. */
static void
run_multi_conn (gboolean src_multi, gboolean with_uris, guint expect_src, guint expect_dst)
{
  const guint64 size = 32 * CT_MiB;
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, size);
  g_autofree char *src_log = g_build_filename (servers_scratch_dir (), "mc-src.log", NULL);
  g_autofree char *dst_log = g_build_filename (servers_scratch_dir (), "mc-dst.log", NULL);
  g_autofree char *src_log_arg = g_strdup_printf ("logfile=%s", src_log);
  g_autofree char *dst_log_arg = g_strdup_printf ("logfile=%s", dst_log);
  g_autofree char *src_uri = NULL, *dst_uri = NULL, *expected = ct_sum_pattern (size);
  g_autofree char *sum = NULL;
  struct test_server pattern = { 0 }, mem = { 0 };
  GnbdClient *src, *dst;
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;

  unlink (src_log);
  unlink (dst_log);
  gt_start_nbdkit (&pattern, (const char *[]) {
      "--filter=log", "--filter=multi-conn", "pattern", size_arg, src_log_arg,
      src_multi ? "multi-conn-mode=plugin" : "multi-conn-mode=disable", NULL });
  gt_start_nbdkit (&mem, (const char *[]) { "--filter=log", "memory", size_arg, dst_log_arg,
                                            NULL });
  src = ct_client (&pattern, &src_uri);
  dst = ct_client (&mem, &dst_uri);
  g_object_set (copy, "connections", 4, "requests", 4, "request-size", 256 * 1024, NULL);
  gnbd_copy_set_source_client (copy, src, with_uris ? src_uri : NULL);
  gnbd_copy_set_destination_client (copy, dst, with_uris ? dst_uri : NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  g_object_unref (copy);

  sum = ct_sum_client (dst, size);
  g_assert_cmpstr (sum, ==, expected);
  /* The test's own connection, and the copy's extra ones, which it shut
   * down (nbdkit logs that when it notices: wait for it, bounded). */
  g_assert_cmpuint (ct_log_count (src_log, " Connect export="), ==, expect_src);
  g_assert_cmpuint (ct_log_count (dst_log, " Connect export="), ==, expect_dst);
  ct_log_wait (src_log, " Disconnect ", expect_src - 1);
  ct_log_wait (dst_log, " Disconnect ", expect_dst - 1);

  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&pattern);
  server_stop (&mem);
}

static void
test_multi_conn (void)
{
  run_multi_conn (TRUE, TRUE, 4, 4);
}

static void
test_multi_conn_refused (void)
{
  /* The source does not advertise it: one connection on both sides. */
  run_multi_conn (FALSE, TRUE, 1, 1);
}

static void
test_multi_conn_no_uri (void)
{
  run_multi_conn (TRUE, FALSE, 1, 1);
}

static void
test_null (void)
{
  const guint64 size = 32 * CT_MiB;
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, size);
  struct test_server pattern = { 0 };
  GnbdClient *src;
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;

  gt_start_nbdkit (&pattern, (const char *[]) { "pattern", size_arg, NULL });
  src = ct_client (&pattern, NULL);
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_null (copy);
  g_assert_true (gnbd_copy_run (copy, NULL, &error));
  g_assert_no_error (error);
  check_counters (copy, size);
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, 0);

  g_object_unref (copy);
  g_object_unref (src);
  server_stop (&pattern);
}

/* flush: one NBD flush at the end (the log says so), none without; a
 * file destination is synced (the run succeeds through fsync). */
static void
test_flush (void)
{
  g_autofree char *log = g_build_filename (servers_scratch_dir (), "flush.log", NULL);
  g_autofree char *log_arg = g_strdup_printf ("logfile=%s", log);
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "flush.img", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);
  g_autofree char *expected = ct_sum_pattern (4 * CT_MiB), *sum = NULL;
  struct test_server pattern = { 0 }, mem = { 0 };
  GnbdClient *src, *dst;
  GError *error = NULL;

  unlink (log);
  gt_start_nbdkit (&pattern, (const char *[]) { "pattern", "size=4M", NULL });
  gt_start_nbdkit (&mem, (const char *[]) { "--filter=log", "memory", "size=4M", log_arg,
                                            NULL });
  src = ct_client (&pattern, NULL);
  dst = ct_client (&mem, NULL);
  for (int flush = 0; flush <= 1; flush++) {
    GnbdCopy *copy = gnbd_copy_new ();

    g_object_set (copy, "flush", flush, NULL);
    gnbd_copy_set_source_client (copy, src, NULL);
    gnbd_copy_set_destination_client (copy, dst, NULL);
    g_assert_true (ct_run (copy, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (ct_log_count (log, " Flush id="), ==, flush);
    g_object_unref (copy);
  }

  {
    GnbdCopy *copy = gnbd_copy_new ();

    g_object_set (copy, "flush", TRUE, NULL);
    gnbd_copy_set_source_client (copy, src, NULL);
    gnbd_copy_set_destination_file (copy, file);
    g_assert_true (ct_run (copy, NULL, &error));
    g_assert_no_error (error);
    g_object_unref (copy);
    sum = ct_sum_file (path, G_MAXUINT64);
    g_assert_cmpstr (sum, ==, expected);
  }

  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&pattern);
  server_stop (&mem);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy/chain", test_chain);
  g_test_add_func ("/copy/odd-size", test_odd_size);
  g_test_add_func ("/copy/qcow2", test_qcow2);
  g_test_add_func ("/copy/multi-conn", test_multi_conn);
  g_test_add_func ("/copy/multi-conn-refused", test_multi_conn_refused);
  g_test_add_func ("/copy/multi-conn-no-uri", test_multi_conn_no_uri);
  g_test_add_func ("/copy/null", test_null);
  g_test_add_func ("/copy/flush", test_flush);
  return g_test_run ();
}
