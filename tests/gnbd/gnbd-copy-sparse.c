/* gnbd-copy-sparse: GnbdCopy keeps holes: the source's holes are never
 * read, and the destination's allocation map shows them afterwards.
 *
 * A source with holes every few MiB (nbdkit memory with data written at
 * known places, or a sparse file) is copied to an NBD export (its block
 * status checked), a new file and a file full of junk (SEEK_HOLE checked);
 * nbdkit's log proves no hole was read.  Zero detection turns blocks of
 * zeroes in the data into holes, and sparse=0 turns that off; a
 * destination that refuses fast zeroes, or any zeroes, still ends up
 * right; destination-is-zero skips the holes without a request.
 */
#include "copy-test.h"

/* The source: one letter per MiB, 'd' data, 'z' a hole. */
static const char MAP[] = "dzzddzzzzdzzzzzd";
#define SIZE ((guint64) (sizeof MAP - 1) * CT_MiB)
#define HOLES ((guint64) 11 * CT_MiB)      /* the z's of MAP */

static void
fill (GnbdClient *c, guint64 offset, guint64 length, guint8 byte)
{
  guint8 *buf = g_malloc (length);
  GBytes *b;
  GError *error = NULL;

  memset (buf, byte, length);
  b = g_bytes_new_take (buf, length);
  g_assert_true (gnbd_client_pwrite (c, b, offset, GNBD_COMMAND_FLAG_NONE, NULL, &error));
  g_assert_no_error (error);
  g_bytes_unref (b);
}

/* Writes MAP's data blocks into @c: a pattern, different in each MiB. */
static void
fill_map (GnbdClient *c)
{
  for (guint i = 0; MAP[i]; i++)
    if (MAP[i] == 'd') {
      GBytes *b = gt_pattern (CT_MiB, (guint8) (i * 13 + 1));
      GError *error = NULL;

      g_assert_true (gnbd_client_pwrite (c, b, i * (guint64) CT_MiB, GNBD_COMMAND_FLAG_NONE,
                                         NULL, &error));
      g_assert_no_error (error);
      g_bytes_unref (b);
    }
}

/* MAP's contents, as a file at @path (holes left unwritten). */
static void
write_map_file (const char *path)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (ftruncate (fd, SIZE), ==, 0);
  for (guint i = 0; MAP[i]; i++)
    if (MAP[i] == 'd') {
      GBytes *b = gt_pattern (CT_MiB, (guint8) (i * 13 + 1));

      g_assert_cmpint (pwrite (fd, g_bytes_get_data (b, NULL), CT_MiB, i * (off_t) CT_MiB), ==,
                       CT_MiB);
      g_bytes_unref (b);
    }
  close (fd);
}

/* The SHA-256 of MAP's contents. */
static char *
map_sum (void)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  guint8 *zero = g_malloc0 (CT_MiB);
  char *r;

  for (guint i = 0; MAP[i]; i++) {
    GBytes *b = gt_pattern (CT_MiB, (guint8) (i * 13 + 1));

    g_checksum_update (sum, MAP[i] == 'd' ? g_bytes_get_data (b, NULL) : zero, CT_MiB);
    g_bytes_unref (b);
  }
  g_free (zero);
  r = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return r;
}

/* No @verb request of nbdkit's log @log after @since bytes touched a hole
 * of MAP. */
static void
assert_holes_untouched (const char *log, gsize since, const char *verb)
{
  for (guint i = 0; MAP[i]; i++)
    if (MAP[i] == 'z' && ct_log_touches (log, since, verb, i * (guint64) CT_MiB, CT_MiB))
      g_error ("the copy sent a %s request to the hole at %u MiB", verb, i);
}

/* A memory server with a log and @filters (options and their parameters),
 * its client connected. */
typedef struct {
  struct test_server server;
  GnbdClient *client;
  char *log;
} Mem;

static void
mem_start (Mem *m, const char *name, const char *const *filters)
{
  g_autofree char *size_arg = g_strdup_printf ("size=%" G_GUINT64_FORMAT, SIZE);
  g_autofree char *log_arg = NULL;
  GPtrArray *args = g_ptr_array_new ();

  m->log = g_build_filename (servers_scratch_dir (), name, NULL);
  unlink (m->log);
  log_arg = g_strdup_printf ("logfile=%s", m->log);
  /* Options before the plugin's name, parameters after. */
  g_ptr_array_add (args, "--filter=log");
  for (guint i = 0; filters && filters[i]; i++)
    if (g_str_has_prefix (filters[i], "--"))
      g_ptr_array_add (args, (gpointer) filters[i]);
  g_ptr_array_add (args, "memory");
  g_ptr_array_add (args, size_arg);
  g_ptr_array_add (args, log_arg);
  for (guint i = 0; filters && filters[i]; i++)
    if (!g_str_has_prefix (filters[i], "--"))
      g_ptr_array_add (args, (gpointer) filters[i]);
  g_ptr_array_add (args, NULL);
  gt_start_nbdkit (&m->server, (const char *const *) args->pdata);
  g_ptr_array_unref (args);
  m->client = ct_client (&m->server, NULL);
}

static void
mem_stop (Mem *m)
{
  g_clear_object (&m->client);
  server_stop (&m->server);
  g_clear_pointer (&m->log, g_free);
}

static void
run_ok (GnbdCopy *copy)
{
  GError *error = NULL;

  g_assert_true (ct_run (copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gnbd_copy_get_bytes_copied (copy), ==, SIZE);
  g_assert_cmpuint (gnbd_copy_get_bytes_total (copy), ==, SIZE);
}

/* NBD -> NBD over junk: holes zeroed (with fast zero), never read. */
static void
test_nbd_to_nbd (void)
{
  Mem src = { 0 }, dst = { 0 };
  g_autofree char *expected = map_sum (), *map = NULL, *sum = NULL;
  GnbdCopy *copy = gnbd_copy_new ();

  mem_start (&src, "sp-src.log", NULL);
  mem_start (&dst, "sp-dst.log", NULL);
  fill_map (src.client);
  fill (dst.client, 0, SIZE, 0xff);
  map = ct_map_client (dst.client, SIZE, CT_MiB);
  g_assert_cmpstr (map, ==, "dddddddddddddddd");

  gnbd_copy_set_source_client (copy, src.client, NULL);
  gnbd_copy_set_destination_client (copy, dst.client, NULL);
  run_ok (copy);
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
  assert_holes_untouched (src.log, 0, "Read");
  /* Zeroed with the fast-zero flag, which nbdkit memory offers. */
  g_assert_cmpuint (ct_log_count (dst.log, " Zero id="), >, 0);
  g_assert_cmpuint (ct_log_count (dst.log, "fast=1"), >, 0);

  g_free (map);
  map = ct_map_client (dst.client, SIZE, CT_MiB);
  g_assert_cmpstr (map, ==, MAP);
  sum = ct_sum_client (dst.client, SIZE);
  g_assert_cmpstr (sum, ==, expected);

  g_object_unref (copy);
  mem_stop (&src);
  mem_stop (&dst);
}

/* NBD -> a new file (holes left as they are) and a file of junk (holes
 * punched). */
static void
test_nbd_to_file (void)
{
  Mem src = { 0 };
  g_autofree char *expected = map_sum ();
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "sparse.img", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);

  mem_start (&src, "sf-src.log", NULL);
  fill_map (src.client);

  for (int junk = 0; junk <= 1; junk++) {
    GnbdCopy *copy = gnbd_copy_new ();
    g_autofree char *map = NULL, *sum = NULL;

    unlink (path);
    if (junk) {
      int fd = open (path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      guint8 *buf = g_malloc (SIZE);

      memset (buf, 0xee, SIZE);
      g_assert_cmpint (write (fd, buf, SIZE), ==, (ssize_t) SIZE);
      close (fd);
      g_free (buf);
      map = ct_map_file (path, CT_MiB);
      g_assert_cmpstr (map, ==, "dddddddddddddddd");
    }
    gnbd_copy_set_source_client (copy, src.client, NULL);
    gnbd_copy_set_destination_file (copy, file);
    run_ok (copy);
    g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
    g_free (map);
    map = ct_map_file (path, CT_MiB);
    g_assert_cmpstr (map, ==, MAP);
    sum = ct_sum_file (path, G_MAXUINT64);
    g_assert_cmpstr (sum, ==, expected);
    g_object_unref (copy);
  }
  assert_holes_untouched (src.log, 0, "Read");
  mem_stop (&src);
}

/* A sparse file -> NBD: SEEK_HOLE finds the holes. */
static void
test_file_to_nbd (void)
{
  Mem dst = { 0 };
  g_autofree char *expected = map_sum (), *map = NULL, *sum = NULL;
  g_autofree char *path = g_build_filename (servers_scratch_dir (), "sparse-src.img", NULL);
  g_autoptr (GFile) file = g_file_new_for_path (path);
  GnbdCopy *copy = gnbd_copy_new ();

  write_map_file (path);
  map = ct_map_file (path, CT_MiB);
  if (strcmp (map, MAP) != 0) {
    g_test_skip ("the file system of the scratch directory does not report holes");
    g_object_unref (copy);
    return;
  }
  mem_start (&dst, "fs-dst.log", NULL);
  fill (dst.client, 0, SIZE, 0xff);
  /* Sparse detection off: the holes come from SEEK_HOLE alone. */
  g_object_set (copy, "sparse", 0, NULL);
  gnbd_copy_set_source_file (copy, file);
  gnbd_copy_set_destination_client (copy, dst.client, NULL);
  run_ok (copy);
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
  g_free (map);
  map = ct_map_client (dst.client, SIZE, CT_MiB);
  g_assert_cmpstr (map, ==, MAP);
  sum = ct_sum_client (dst.client, SIZE);
  g_assert_cmpstr (sum, ==, expected);

  g_object_unref (copy);
  mem_stop (&dst);
}

/* The source says it is all data (noextents): zero detection finds the
 * zeroes; with sparse=0 every byte is written.  (nbdkit memory turns
 * zeroes written into holes itself: its log tells what was sent.) */
static void
test_zero_detection (void)
{
  Mem src = { 0 };
  g_autofree char *expected = map_sum ();

  mem_start (&src, "zd-src.log", (const char *[]) { "--filter=noextents", NULL });
  fill_map (src.client);

  for (int sparse = 0; sparse <= 1; sparse++) {
    Mem dst = { 0 };
    GnbdCopy *copy = gnbd_copy_new ();
    g_autofree char *map = NULL, *sum = NULL;
    gsize mark;

    mem_start (&dst, "zd-dst.log", NULL);
    fill (dst.client, 0, SIZE, 0xff);
    mark = ct_log_mark (dst.log);
    g_object_set (copy, "sparse", sparse ? 64 * 1024 : 0, NULL);
    gnbd_copy_set_source_client (copy, src.client, NULL);
    gnbd_copy_set_destination_client (copy, dst.client, NULL);
    run_ok (copy);
    g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, sparse ? HOLES : 0);
    if (sparse) {
      assert_holes_untouched (dst.log, mark, "Write");
      g_assert_cmpuint (ct_log_count (dst.log, " Zero id="), >, 0);
    }
    else {
      g_assert_true (ct_log_touches (dst.log, mark, "Write", 1 * CT_MiB, CT_MiB));
      g_assert_cmpuint (ct_log_count (dst.log, " Zero id="), ==, 0);
    }
    map = ct_map_client (dst.client, SIZE, CT_MiB);
    g_assert_cmpstr (map, ==, MAP);
    sum = ct_sum_client (dst.client, SIZE);
    g_assert_cmpstr (sum, ==, expected);
    g_object_unref (copy);
    mem_stop (&dst);
  }
  mem_stop (&src);
}

/* use-extents=FALSE: the holes are read (and found zero by detection). */
static void
test_no_extents (void)
{
  Mem src = { 0 }, dst = { 0 };
  g_autofree char *map = NULL;
  GnbdCopy *copy = gnbd_copy_new ();

  mem_start (&src, "ne-src.log", NULL);
  mem_start (&dst, "ne-dst.log", NULL);
  fill_map (src.client);
  g_object_set (copy, "use-extents", FALSE, NULL);
  gnbd_copy_set_source_client (copy, src.client, NULL);
  gnbd_copy_set_destination_client (copy, dst.client, NULL);
  run_ok (copy);
  g_assert_cmpuint (ct_log_count (src.log, " Extents id="), ==, 0);
  g_assert_true (ct_log_touches (src.log, 0, "Read", 1 * CT_MiB, CT_MiB));
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
  map = ct_map_client (dst.client, SIZE, CT_MiB);
  g_assert_cmpstr (map, ==, MAP);

  g_object_unref (copy);
  mem_stop (&src);
  mem_stop (&dst);
}

/* The destination refuses fast zeroes (then zeroes slowly), or refuses
 * zeroes (then they are written as data): the result is right either way. */
static void
test_zero_fallbacks (void)
{
  Mem src = { 0 };
  g_autofree char *expected = map_sum ();
  const char *const filters[][4] = {
    { "--filter=nozero", "zeromode=plugin", "fastzeromode=slow", NULL },
    { "--filter=nozero", "zeromode=none", NULL },
  };

  mem_start (&src, "zf-src.log", NULL);
  fill_map (src.client);
  for (guint i = 0; i < G_N_ELEMENTS (filters); i++) {
    Mem dst = { 0 };
    GnbdCopy *copy = gnbd_copy_new ();
    g_autofree char *sum = NULL;
    gsize mark;

    mem_start (&dst, "zf-dst.log", filters[i]);
    fill (dst.client, 0, SIZE, 0xff);
    mark = ct_log_mark (dst.log);
    gnbd_copy_set_source_client (copy, src.client, NULL);
    gnbd_copy_set_destination_client (copy, dst.client, NULL);
    run_ok (copy);
    sum = ct_sum_client (dst.client, SIZE);
    g_assert_cmpstr (sum, ==, expected);
    if (i == 0) {
      /* One fast zero refused, then plain zeroes. */
      g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
      g_assert_cmpuint (ct_log_count (dst.log, "fast=0"), >, 0);
    }
    else {
      g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, 0);
      g_assert_cmpuint (ct_log_count (dst.log, " Zero id="), ==, 0);
      g_assert_true (ct_log_touches (dst.log, mark, "Write", 1 * CT_MiB, CT_MiB));
    }
    g_object_unref (copy);
    mem_stop (&dst);
  }
  mem_stop (&src);
}

/* destination-is-zero: the holes cost no request at all. */
static void
test_destination_is_zero (void)
{
  Mem src = { 0 }, dst = { 0 };
  g_autofree char *expected = map_sum (), *map = NULL, *sum = NULL;
  GnbdCopy *copy = gnbd_copy_new ();
  const gsize mark = 0;

  mem_start (&src, "dz-src.log", NULL);
  mem_start (&dst, "dz-dst.log", NULL);
  fill_map (src.client);
  g_object_set (copy, "destination-is-zero", TRUE, NULL);
  gnbd_copy_set_source_client (copy, src.client, NULL);
  gnbd_copy_set_destination_client (copy, dst.client, NULL);
  run_ok (copy);
  g_assert_cmpuint (gnbd_copy_get_bytes_skipped (copy), ==, HOLES);
  g_assert_cmpuint (ct_log_count (dst.log, " Zero id="), ==, 0);
  g_assert_cmpuint (ct_log_count (dst.log, " Write id="), >, 0);
  assert_holes_untouched (dst.log, mark, "Write");
  map = ct_map_client (dst.client, SIZE, CT_MiB);
  g_assert_cmpstr (map, ==, MAP);
  sum = ct_sum_client (dst.client, SIZE);
  g_assert_cmpstr (sum, ==, expected);

  g_object_unref (copy);
  mem_stop (&src);
  mem_stop (&dst);
}

int
main (int argc, char **argv)
{
  gt_init (&argc, &argv, 600);
  g_test_add_func ("/copy-sparse/nbd-to-nbd", test_nbd_to_nbd);
  g_test_add_func ("/copy-sparse/nbd-to-file", test_nbd_to_file);
  g_test_add_func ("/copy-sparse/file-to-nbd", test_file_to_nbd);
  g_test_add_func ("/copy-sparse/zero-detection", test_zero_detection);
  g_test_add_func ("/copy-sparse/no-extents", test_no_extents);
  g_test_add_func ("/copy-sparse/zero-fallbacks", test_zero_fallbacks);
  g_test_add_func ("/copy-sparse/destination-is-zero", test_destination_is_zero);
  return g_test_run ();
}
