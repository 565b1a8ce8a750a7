/* gnbd-copy-stream: GnbdCopy reads and writes GIO streams and FIFOs in
 * order, however the NBD side answers.
 *
 * A pipe from `cat` as the source (into NBD, and into a new file whose
 * size comes only at the end), a pipe into `sha256sum` as the destination
 * (from a source with holes, read on four connections, so replies come
 * out of order), FIFOs given as files, and a stream larger than its
 * destination.
 */
#include <sys/stat.h>

#include "copy-test.h"

/* A file of the pattern, then @zeroes zero bytes: its path. */
static char *
pattern_file (const char *name, gsize size, gsize zeroes)
{
  char *path = g_build_filename (servers_scratch_dir (), name, NULL);
  guint8 *buf = g_malloc0 (size + zeroes);

  ct_pattern_fill (buf, 0, size);
  g_assert_true (g_file_set_contents (path, (const char *) buf, size + zeroes, NULL));
  g_free (buf);
  return path;
}

static GSubprocess *
spawn (GSubprocessFlags flags, const char *const *argv)
{
  GError *error = NULL;
  GSubprocess *p = g_subprocess_newv (argv, flags, &error);

  g_assert_no_error (error);
  return p;
}

static void
wait_ok (GSubprocess *p)
{
  GError *error = NULL;

  g_assert_true (g_subprocess_wait_check (p, NULL, &error));
  g_assert_no_error (error);
}

/* `cat FILE |` into NBD: the size is known at the end. */
static void
test_pipe_source (void)
{
  const gsize size = 20 * CT_MiB + 1000;
  g_autofree char *path = pattern_file ("pipe-src.img", size, 0);
  g_autofree char *expected = ct_sum_file (path, G_MAXUINT64), *sum = NULL;
  struct test_server d = { 0 };
  GSubprocess *cat = spawn (G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                            (const char *[]) { "cat", path, NULL });
  GnbdCopy *copy = gnbd_copy_new ();
  GnbdClient *dst;
  GError *error = NULL;

  gt_start_nbdkit (&d, (const char *[]) { "memory", "size=32M", NULL });
  dst = ct_client (&d, NULL);
  gnbd_copy_set_source_stream (copy, g_subprocess_get_stdout_pipe (cat));
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (copy), ==, size);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, size);
  sum = ct_sum_client (dst, size);
  g_assert_cmpstr (sum, ==, expected);
  wait_ok (cat);

  g_object_unref (cat);
  g_object_unref (copy);
  g_object_unref (dst);
  server_stop (&d);
}

/* `cat FILE |` into a new file: data, then zeroes that zero detection
 * skips; the file gets its size at the end. */
static void
test_pipe_to_file (void)
{
  const gsize size = 6 * CT_MiB, zeroes = 2 * CT_MiB;
  g_autofree char *path = pattern_file ("pipe-src2.img", size, zeroes);
  g_autofree char *out = g_build_filename (servers_scratch_dir (), "pipe-out.img", NULL);
  g_autoptr (GFile) out_file = g_file_new_for_path (out);
  g_autofree char *expected = ct_sum_file (path, G_MAXUINT64), *sum = NULL;
  GSubprocess *cat = spawn (G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                            (const char *[]) { "cat", path, NULL });
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;
  struct stat st;

  /* Junk there before: the copy replaces it. */
  g_assert_true (g_file_set_contents (out, "junk", -1, NULL));
  gnbd_copy_set_source_stream (copy, g_subprocess_get_stdout_pipe (cat));
  gnbd_copy_set_destination_file (copy, out_file);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, size + zeroes);
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, zeroes);
  g_assert_cmpint (stat (out, &st), ==, 0);
  g_assert_cmpint (st.st_size, ==, size + zeroes);
  sum = ct_sum_file (out, G_MAXUINT64);
  g_assert_cmpstr (sum, ==, expected);
  wait_ok (cat);

  g_object_unref (cat);
  g_object_unref (copy);
}

/* NBD with holes, on four connections, `| sha256sum`: in order, holes as
 * zeroes. */
static void
test_pipe_destination (void)
{
  const guint64 size = 16 * CT_MiB;
  struct test_server s = { 0 };
  g_autofree char *uri = NULL, *expected = NULL, *out = NULL;
  GSubprocess *sha = spawn (G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                            (const char *[]) { "sha256sum", NULL });
  GnbdCopy *copy = gnbd_copy_new ();
  GnbdClient *src;
  GError *error = NULL;
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  guint8 *buf = g_malloc0 (size);

  /* Even MiBs hold the pattern, odd ones are holes. */
  gt_start_nbdkit (&s, (const char *[]) { "memory", "size=16M", NULL });
  src = ct_client (&s, &uri);
  for (guint64 off = 0; off < size; off += 2 * CT_MiB) {
    GBytes *b;

    ct_pattern_fill (buf + off, off, CT_MiB);
    b = g_bytes_new (buf + off, CT_MiB);
    g_assert_true (gnbd_client_pwrite (src, b, off, GNBD_COMMAND_FLAG_NONE, NULL, &error));
    g_assert_no_error (error);
    g_bytes_unref (b);
  }
  g_checksum_update (sum, buf, size);
  expected = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  g_free (buf);

  g_object_set (copy, "connections", 4, "requests", 8, "request-size", 64 * 1024, NULL);
  gnbd_copy_set_source_client (copy, src, uri);
  gnbd_copy_set_destination_stream (copy, g_subprocess_get_stdin_pipe (sha));
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, size);
  /* Holes were not read, but a stream gets them as zeroes. */
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, 0);
  g_assert_true (g_output_stream_close (g_subprocess_get_stdin_pipe (sha), NULL, &error));
  g_assert_no_error (error);
  out = g_malloc0 (256);
  g_assert_true (g_input_stream_read_all (g_subprocess_get_stdout_pipe (sha), out, 255, NULL,
                                          NULL, &error));
  g_assert_no_error (error);
  wait_ok (sha);
  g_assert_true (g_str_has_prefix (out, expected));

  g_object_unref (sha);
  g_object_unref (copy);
  g_object_unref (src);
  server_stop (&s);
}

/* FIFOs given as files: read and written as streams. */
static void
test_fifo (void)
{
  const gsize size = 8 * CT_MiB;
  g_autofree char *path = pattern_file ("fifo-src.img", size, 0);
  g_autofree char *fifo = g_build_filename (servers_scratch_dir (), "fifo", NULL);
  g_autofree char *out = g_build_filename (servers_scratch_dir (), "fifo-out.img", NULL);
  g_autofree char *to_fifo = g_strdup_printf ("cat '%s' > '%s'", path, fifo);
  g_autofree char *from_fifo = g_strdup_printf ("cat '%s' > '%s'", fifo, out);
  g_autofree char *expected = ct_sum_file (path, G_MAXUINT64), *sum = NULL;
  g_autoptr (GFile) fifo_file = g_file_new_for_path (fifo);
  struct test_server m = { 0 };
  GSubprocess *p;
  GnbdCopy *copy;
  GnbdClient *mem;
  GError *error = NULL;

  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  gt_start_nbdkit (&m, (const char *[]) { "memory", "size=8M", NULL });
  mem = ct_client (&m, NULL);

  /* FIFO -> NBD. */
  p = spawn (G_SUBPROCESS_FLAGS_NONE, (const char *[]) { "sh", "-c", to_fifo, NULL });
  copy = gnbd_copy_new ();
  gnbd_copy_set_source_file (copy, fifo_file);
  gnbd_copy_set_destination_client (copy, mem, NULL);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (copy), ==, size);
  sum = ct_sum_client (mem, size);
  g_assert_cmpstr (sum, ==, expected);
  wait_ok (p);
  g_object_unref (p);
  g_object_unref (copy);

  /* NBD -> FIFO. */
  p = spawn (G_SUBPROCESS_FLAGS_NONE, (const char *[]) { "sh", "-c", from_fifo, NULL });
  copy = gnbd_copy_new ();
  gnbd_copy_set_source_client (copy, mem, NULL);
  gnbd_copy_set_destination_file (copy, fifo_file);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  /* The copy closed its end of the FIFO when it ended: cat is done. */
  g_object_unref (copy);
  wait_ok (p);
  g_object_unref (p);
  g_free (sum);
  sum = ct_sum_file (out, G_MAXUINT64);
  g_assert_cmpstr (sum, ==, expected);

  g_object_unref (mem);
  server_stop (&m);
}

/* A stream longer than the destination: the copy fails at the
 * destination's end. */
static void
test_too_large (void)
{
  g_autofree char *path = pattern_file ("big-src.img", 5 * CT_MiB, 0);
  struct test_server d = { 0 };
  GSubprocess *cat = spawn (G_SUBPROCESS_FLAGS_STDOUT_PIPE,
                            (const char *[]) { "cat", path, NULL });
  GnbdCopy *copy = gnbd_copy_new ();
  GnbdClient *dst;
  GError *error = NULL;

  gt_start_nbdkit (&d, (const char *[]) { "memory", "size=4M", NULL });
  dst = ct_client (&d, NULL);
  gnbd_copy_set_source_stream (copy, g_subprocess_get_stdout_pipe (cat));
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NO_SPACE);
  g_assert_true (g_str_has_prefix (error->message,
                                   "Writing the destination at offset 4194304: "));
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), <=, 4 * CT_MiB);

  g_clear_error (&error);
  g_object_unref (copy);
  g_subprocess_force_exit (cat);
  g_subprocess_wait (cat, NULL, NULL);
  g_object_unref (cat);
  g_object_unref (dst);
  server_stop (&d);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy-stream/pipe-source", test_pipe_source);
  g_test_add_func ("/copy-stream/pipe-to-file", test_pipe_to_file);
  g_test_add_func ("/copy-stream/pipe-destination", test_pipe_destination);
  g_test_add_func ("/copy-stream/fifo", test_fifo);
  g_test_add_func ("/copy-stream/too-large", test_too_large);
  return g_test_run ();
}
