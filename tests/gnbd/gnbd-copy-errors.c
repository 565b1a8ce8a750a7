/* gnbd-copy-errors: a GnbdCopy that cannot read or write fails loudly,
 * naming the side and the offset, and never completes a bad copy
 * (nbdcopy's CVE-2022-0485 was a copy that ignored a failed read).
 *
 * nbdkit's error filter fails reads of the source, writes or zeroes of
 * the destination; the eval plugin fails from one offset on, so the
 * offset named can be checked exactly; a server killed mid-copy; then
 * every setup mistake.  After a failure the destination holds the source
 * up to bytes-copied.
 */
#include "copy-test.h"

#define SIZE ((guint64) 32 * CT_MiB)

/* The offset named in "<What> the <side> at offset N: cause". */
static guint64
error_offset (const GError *error, const char *what, const char *side)
{
  g_autofree char *pattern = g_strdup_printf ("^%s the %s at offset ([0-9]+): .+", what, side);
  g_autoptr (GRegex) re = g_regex_new (pattern, G_REGEX_DOTALL, 0, NULL);
  g_autoptr (GMatchInfo) m = NULL;
  g_autofree char *n = NULL;

  g_test_message ("error: %s", error->message);
  if (!g_regex_match (re, error->message, 0, &m))
    g_error ("the message does not match /%s/: %s", pattern, error->message);
  n = g_match_info_fetch (m, 1);
  return g_ascii_strtoull (n, NULL, 10);
}

/* The destination holds the pattern up to bytes-copied. */
static void
check_prefix (GnbdCopy *copy, GnbdClient *dst)
{
  guint64 copied = gnbd_copy_get_bytes_copied (copy);
  g_autofree char *expected = ct_sum_pattern (copied), *sum = ct_sum_client (dst, copied);

  g_test_message ("bytes-copied: %" G_GUINT64_FORMAT, copied);
  g_assert_cmpuint (copied, <, SIZE);
  g_assert_cmpstr (sum, ==, expected);
}

static void
start_pair (struct test_server *src, const char *const *src_extra, struct test_server *dst,
            const char *const *dst_extra)
{
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  GPtrArray *a = g_ptr_array_new ();

  for (guint i = 0; src_extra && src_extra[i] && g_str_has_prefix (src_extra[i], "--"); i++)
    g_ptr_array_add (a, (gpointer) src_extra[i]);
  g_ptr_array_add (a, "pattern");
  g_ptr_array_add (a, size_arg);
  for (guint i = 0; src_extra && src_extra[i]; i++)
    if (!g_str_has_prefix (src_extra[i], "--"))
      g_ptr_array_add (a, (gpointer) src_extra[i]);
  g_ptr_array_add (a, NULL);
  gt_start_nbdkit (src, (const char *const *) a->pdata);
  g_ptr_array_set_size (a, 0);

  for (guint i = 0; dst_extra && dst_extra[i] && g_str_has_prefix (dst_extra[i], "--"); i++)
    g_ptr_array_add (a, (gpointer) dst_extra[i]);
  g_ptr_array_add (a, "memory");
  g_ptr_array_add (a, size_arg);
  for (guint i = 0; dst_extra && dst_extra[i]; i++)
    if (!g_str_has_prefix (dst_extra[i], "--"))
      g_ptr_array_add (a, (gpointer) dst_extra[i]);
  g_ptr_array_add (a, NULL);
  gt_start_nbdkit (dst, (const char *const *) a->pdata);
  g_ptr_array_unref (a);
}

/* A copy between the servers @s and @d (started by the test), with a
 * client for each. */
typedef struct {
  struct test_server s, d;
  GnbdClient *src, *dst;
  GnbdCopy *copy;
  GError *error;
} Pair;

static void
pair_connect (Pair *p)
{
  p->src = ct_client (&p->s, NULL);
  p->dst = ct_client (&p->d, NULL);
  p->copy = gnbd_copy_new ();
  gnbd_copy_set_source_client (p->copy, p->src, NULL);
  gnbd_copy_set_destination_client (p->copy, p->dst, NULL);
}

static void
pair_end (Pair *p)
{
  g_clear_error (&p->error);
  g_object_unref (p->copy);
  g_object_unref (p->src);
  g_object_unref (p->dst);
  if (p->s.pid)
    server_stop (&p->s);
  server_stop (&p->d);
}

/* EIO on 10% of the source's reads (256 reads: P(no error) < 1e-11). */
static void
test_source_read (void)
{
  Pair p = { 0 };
  guint64 off;

  start_pair (&p.s, (const char *[]) { "--filter=error", "error-pread=EIO",
                                       "error-pread-rate=10%", NULL }, &p.d, NULL);
  pair_connect (&p);
  g_object_set (p.copy, "request-size", 128 * 1024, NULL);
  g_assert_false (ct_run (p.copy, NULL, &p.error));
  gt_assert_error (p.error, GNBD_ERROR, GNBD_ERROR_IO);
  off = error_offset (p.error, "Reading", "source");
  g_assert_cmpuint (off % (128 * 1024), ==, 0);
  g_assert_cmpuint (off, <, SIZE);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (p.copy), <=, off);
  check_prefix (p.copy, p.dst);
  pair_end (&p);
}

/* EIO on 10% of the destination's writes. */
static void
test_destination_write (void)
{
  Pair p = { 0 };
  guint64 off;

  start_pair (&p.s, NULL, &p.d, (const char *[]) { "--filter=error", "error-pwrite=EIO",
                                                   "error-pwrite-rate=10%", NULL });
  pair_connect (&p);
  g_object_set (p.copy, "request-size", 128 * 1024, NULL);
  g_assert_false (ct_run (p.copy, NULL, &p.error));
  gt_assert_error (p.error, GNBD_ERROR, GNBD_ERROR_IO);
  off = error_offset (p.error, "Writing", "destination");
  g_assert_cmpuint (off % (128 * 1024), ==, 0);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (p.copy), <=, off);
  check_prefix (p.copy, p.dst);
  pair_end (&p);
}

/* The destination fails every zero request: a hole of the source fails
 * the copy (never left unzeroed). */
static void
test_destination_zero (void)
{
  Pair p = { 0 };
  GBytes *b = gt_pattern (4 * CT_MiB, 3);

  /* The source: data, then holes from 4 MiB on (nbdkit memory, written
   * here). */
  gt_start_nbdkit (&p.s, (const char *[]) { "memory", "size=8M", NULL });
  gt_start_nbdkit (&p.d, (const char *[]) { "--filter=error", "memory", "size=8M",
                                            "error-zero=ENOSPC", "error-zero-rate=100%", NULL });
  pair_connect (&p);
  g_assert_true (gnbd_client_pwrite (p.src, b, 0, GNBD_COMMAND_FLAG_NONE, NULL, &p.error));
  g_assert_no_error (p.error);
  g_bytes_unref (b);
  g_assert_false (ct_run (p.copy, NULL, &p.error));
  gt_assert_error (p.error, GNBD_ERROR, GNBD_ERROR_NO_SPACE);
  g_assert_cmpuint (error_offset (p.error, "Zeroing", "destination"), >=, 4 * CT_MiB);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (p.copy), <=, 4 * CT_MiB);
  pair_end (&p);
}

/* Reads fail from 8 MiB on: one request at a time, the offset named is
 * exactly 8 MiB, and exactly 8 MiB were copied. */
static void
test_exact_offset (void)
{
  Pair p = { 0 };
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  g_autofree char *expected = NULL, *sum = NULL;

  gt_start_nbdkit (&p.s, (const char *[]) {
      "eval", "get_size=echo 33554432",
      "pread=if [ $4 -ge 8388608 ]; then echo 'EIO injected' >&2; exit 1; fi; "
      "head -c $3 /dev/zero | tr '\\0' 'a'", NULL });
  gt_start_nbdkit (&p.d, (const char *[]) { "memory", size_arg, NULL });
  pair_connect (&p);
  g_object_set (p.copy, "request-size", 1024 * 1024, "requests", 1, "use-extents", FALSE,
                NULL);
  g_assert_false (gnbd_copy_run (p.copy, NULL, &p.error));
  gt_assert_error (p.error, GNBD_ERROR, GNBD_ERROR_IO);
  g_assert_cmpuint (error_offset (p.error, "Reading", "source"), ==, 8 * CT_MiB);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (p.copy), ==, 8 * CT_MiB);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (p.copy), ==, SIZE);
  {
    guint8 *a = g_malloc (8 * CT_MiB);
    GChecksum *c = g_checksum_new (G_CHECKSUM_SHA256);

    memset (a, 'a', 8 * CT_MiB);
    g_checksum_update (c, a, 8 * CT_MiB);
    expected = g_strdup (g_checksum_get_string (c));
    g_checksum_free (c);
    g_free (a);
  }
  sum = ct_sum_client (p.dst, 8 * CT_MiB);
  g_assert_cmpstr (sum, ==, expected);
  pair_end (&p);
}

/* The source cannot say where its holes are: the copy reads everything
 * and is right. */
static void
test_extents_refused (void)
{
  Pair p = { 0 };
  g_autofree char *expected = ct_sum_pattern (SIZE), *sum = NULL;

  start_pair (&p.s, (const char *[]) { "--filter=error", "error-extents=EIO",
                                       "error-extents-rate=100%", NULL }, &p.d, NULL);
  pair_connect (&p);
  g_assert_true (ct_run (p.copy, NULL, &p.error));
  g_assert_no_error (p.error);
  sum = ct_sum_client (p.dst, SIZE);
  g_assert_cmpstr (sum, ==, expected);
  pair_end (&p);
}

static void
on_progress_kill (GnbdCopy *copy, guint64 copied, guint64 total, gpointer data)
{
  struct test_server *s = data;

  if (s->pid)
    server_stop (s);
}

/* The source's server dies mid-copy: ESHUTDOWN for what it was doing,
 * or the broken connection, whichever comes first; the source named. */
static void
test_source_killed (void)
{
  Pair p = { 0 };

  /* Slow enough to be mid-copy at the first progress signal. */
  start_pair (&p.s, (const char *[]) { "--filter=rate", "rate=8M", "burstiness=0.1", NULL },
              &p.d, NULL);
  pair_connect (&p);
  g_signal_connect (p.copy, "progress", G_CALLBACK (on_progress_kill), &p.s);
  g_assert_false (ct_run (p.copy, NULL, &p.error));
  g_assert_true (p.error->domain == G_IO_ERROR ||
                 g_error_matches (p.error, GNBD_ERROR, GNBD_ERROR_SHUTDOWN));
  error_offset (p.error, "Reading", "source");
  check_prefix (p.copy, p.dst);
  pair_end (&p);
}

/* Mistakes before anything is copied. */
static void
test_setup (void)
{
  struct test_server s = { 0 }, d = { 0 };
  GnbdClient *src, *dst, *idle = gnbd_client_new ();
  GnbdCopy *copy = gnbd_copy_new ();
  GError *error = NULL;
  GtAsync a = { 0 }, b = { 0 };
  g_autofree char *missing = g_build_filename (servers_scratch_dir (), "missing.img", NULL);
  g_autoptr (GFile) missing_file = g_file_new_for_path (missing);
  g_autoptr (GFile) remote = g_file_new_for_uri ("resource:///no/such/file");

  /* The destination is 1 MiB smaller than the source. */
  gt_start_nbdkit (&s, (const char *[]) { "pattern", "size=4M", NULL });
  gt_start_nbdkit (&d, (const char *[]) { "memory", "size=3M", NULL });
  src = ct_client (&s, NULL);
  dst = ct_client (&d, NULL);

  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull (strstr (error->message, "no source"));
  g_clear_error (&error);

  gnbd_copy_set_source_client (copy, idle, NULL);
  gnbd_copy_set_destination_null (copy);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED);
  g_assert_true (g_str_has_prefix (error->message, "source: "));
  g_clear_error (&error);

  /* The pattern plugin is read-only. */
  gnbd_copy_set_source_client (copy, dst, NULL);
  gnbd_copy_set_destination_client (copy, src, NULL);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_READ_ONLY);
  g_assert_true (g_str_has_prefix (error->message, "Opening the destination: "));
  g_clear_error (&error);

  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_client (copy, dst, NULL);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NO_SPACE);
  g_assert_true (g_str_has_prefix (error->message, "Opening the destination: "));
  g_clear_error (&error);

  gnbd_copy_set_source_file (copy, missing_file);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_true (g_str_has_prefix (error->message, "Opening the source: "));
  g_clear_error (&error);

  gnbd_copy_set_source_file (copy, remote);
  g_assert_false (ct_run (copy, NULL, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_clear_error (&error);

  /* One run at a time; then it may run again. */
  gnbd_copy_set_source_client (copy, src, NULL);
  gnbd_copy_set_destination_null (copy);
  gnbd_copy_run_async (copy, NULL, gt_async_cb, &a);
  gnbd_copy_run_async (copy, NULL, gt_async_cb, &b);
  g_assert_false (gnbd_copy_run_finish (copy, gt_async_wait (&b), &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_PENDING);
  g_clear_error (&error);
  g_assert_true (gnbd_copy_run_finish (copy, gt_async_wait (&a), &error));
  g_assert_no_error (error);
  gt_async_clear (&a);
  gt_async_clear (&b);
  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, 4 * CT_MiB);

  g_object_unref (copy);
  g_object_unref (idle);
  g_object_unref (src);
  g_object_unref (dst);
  server_stop (&s);
  server_stop (&d);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy-errors/source-read", test_source_read);
  g_test_add_func ("/copy-errors/destination-write", test_destination_write);
  g_test_add_func ("/copy-errors/destination-zero", test_destination_zero);
  g_test_add_func ("/copy-errors/exact-offset", test_exact_offset);
  g_test_add_func ("/copy-errors/extents-refused", test_extents_refused);
  g_test_add_func ("/copy-errors/source-killed", test_source_killed);
  g_test_add_func ("/copy-errors/setup", test_setup);
  return g_test_run ();
}
