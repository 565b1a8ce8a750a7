/* copy-test.h: what the GnbdCopy test programs share (header-only), on top
 * of gnbd-test.h.
 *
 * Owns: running a copy on the thread-default context (bounded), the
 * checksums that prove a copy (of an export through gnbd, of a file, of
 * nbdkit's pattern computed here), the allocation maps of a destination
 * (NBD block status, a file's SEEK_HOLE), and reading nbdkit's log filter.
 * It never checks a copy with the code under test alone: data is compared
 * with what the source is known to hold.
 */
#ifndef GNBD_TESTS_COPY_TEST_H
#define GNBD_TESTS_COPY_TEST_H

#include <fcntl.h>
#include <sys/stat.h>

#include "gnbd-test.h"

#define CT_MiB (1024 * 1024)

/* Run @copy with run_async on this thread's default context and wait;
 * returns its result, @error set on failure. */
static inline gboolean
ct_run (GnbdCopy *copy, GCancellable *cancellable, GError **error)
{
  GtAsync a = { 0 };
  gboolean ok;

  gnbd_copy_run_async (copy, cancellable, gt_async_cb, &a);
  ok = gnbd_copy_run_finish (copy, gt_async_wait (&a), error);
  gt_async_clear (&a);
  return ok;
}

/* SHA-256 of @size bytes of @client from offset 0, read through gnbd. */
static inline char *
ct_sum_client (GnbdClient *client, guint64 size)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  char *r;

  for (guint64 off = 0; off < size;) {
    gsize n = MIN (size - off, 4 * CT_MiB);
    GError *error = NULL;
    GBytes *b = gnbd_client_pread (client, off, n, GNBD_COMMAND_FLAG_NONE, NULL, &error);

    g_assert_no_error (error);
    g_checksum_update (sum, g_bytes_get_data (b, NULL), n);
    g_bytes_unref (b);
    off += n;
  }
  r = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return r;
}

/* SHA-256 of the first @size bytes of the file at @path (all of it if
 * @size is G_MAXUINT64). */
static inline char *
ct_sum_file (const char *path, guint64 size)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  guint8 *buf = g_malloc (4 * CT_MiB);
  char *r;
  ssize_t n;

  g_assert_cmpint (fd, >=, 0);
  while (size > 0 && (n = read (fd, buf, MIN (size, 4 * CT_MiB))) > 0) {
    g_checksum_update (sum, buf, n);
    size -= (guint64) n;
  }
  close (fd);
  g_free (buf);
  r = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return r;
}

/* nbdkit's pattern plugin: each 8-byte word holds its own offset, big
 * endian.  Fills @buf with the pattern of [offset, + n), offset and n
 * multiples of 8. */
static inline void
ct_pattern_fill (guint8 *buf, guint64 offset, gsize n)
{
  for (gsize i = 0; i < n; i += 8) {
    guint64 v = GUINT64_TO_BE (offset + i);

    memcpy (buf + i, &v, 8);
  }
}

/* SHA-256 of the first @size bytes of nbdkit's pattern, computed here. */
static inline char *
ct_sum_pattern (guint64 size)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  guint8 *buf = g_malloc (4 * CT_MiB);
  char *r;

  for (guint64 off = 0; off < size;) {
    gsize n = MIN (size - off, 4 * CT_MiB);

    ct_pattern_fill (buf, off, n);
    g_checksum_update (sum, buf, n);
    off += n;
  }
  g_free (buf);
  r = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return r;
}

/* A connected client to @s (default export), and its URI in @uri if not
 * NULL (the caller frees it). */
static inline GnbdClient *
ct_client (const struct test_server *s, char **uri)
{
  GnbdClient *c = gt_client_unix (s, TRUE);

  if (uri)
    *uri = server_uri (s, s->export_name ? s->export_name : "");
  return c;
}

/* ---- Allocation maps ----------------------------------------------------- */

/* The destination's map as a string of one letter per @block bytes over
 * [0, size): 'z' where block status says zero (flag 2), 'd' elsewhere. */
static inline char *
ct_map_client (GnbdClient *client, guint64 size, guint64 block)
{
  GString *map = g_string_new (NULL);
  guint64 off = 0;

  while (off < size) {
    GError *error = NULL;
    GPtrArray *ext = gnbd_client_block_status (client, off, size - off, NULL,
                                               GNBD_COMMAND_FLAG_NONE, NULL, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (ext->len, >, 0);
    for (guint i = 0; i < ext->len && off < size; i++) {
      GnbdExtent *e = ext->pdata[i];
      guint64 len = MIN (gnbd_extent_get_length (e), size - off);

      g_assert_cmpuint (gnbd_extent_get_offset (e), ==, off);
      g_assert_cmpuint (len % block, ==, 0);
      for (guint64 j = 0; j < len / block; j++)
        g_string_append_c (map, (gnbd_extent_get_flags (e) & 2) ? 'z' : 'd');
      off += len;
    }
    g_ptr_array_unref (ext);
  }
  return g_string_free (map, FALSE);
}

/* A file's map by SEEK_DATA/SEEK_HOLE: one letter per @block bytes, 'z'
 * for a hole, 'd' for data. */
static inline char *
ct_map_file (const char *path, guint64 block)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  GString *map = g_string_new (NULL);
  off_t off = 0;

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (fstat (fd, &st), ==, 0);
  while (off < st.st_size) {
    off_t data = lseek (fd, off, SEEK_DATA);
    off_t hole;

    if (data < 0) {
      g_assert_cmpint (errno, ==, ENXIO);
      data = st.st_size;
    }
    for (; off < data; off += block)
      g_string_append_c (map, 'z');
    if (off >= st.st_size)
      break;
    hole = lseek (fd, off, SEEK_HOLE);
    g_assert_cmpint (hole, >=, 0);
    for (; off < hole; off += block)
      g_string_append_c (map, 'd');
  }
  close (fd);
  return g_string_free (map, FALSE);
}

/* ---- nbdkit's log filter ------------------------------------------------- */

/* How many lines of nbdkit's log file @path contain @word. */
static inline guint
ct_log_count (const char *path, const char *word)
{
  const char *words[] = { word, NULL };

  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  return (guint) server_log_count (path, words);
}

/* Wait (bounded, woken by the file's writes) until @path has @n lines with
 * @word; then exactly @n. */
static inline void
ct_log_wait (const char *path, const char *word, guint n)
{
  const char *words[] = { word, NULL };

  g_assert_cmpint (server_log_wait (path, words, (int) n, GT_WAIT_SECONDS), ==, (int) n);
}

/* The size of nbdkit's log file @path now: what ct_log_touches may skip. */
static inline gsize
ct_log_mark (const char *path)
{
  g_autofree char *text = NULL;
  gsize n;

  g_assert_true (g_file_get_contents (path, &text, &n, NULL));
  return n;
}

/* Whether a request @verb ("Read", "Write", "Zero") in nbdkit's log file
 * @path ("connection=1 Read id=N offset=0x.. count=0x.. ...") after the
 * first @since bytes touches [offset, + length). */
static inline gboolean
ct_log_touches (const char *path, gsize since, const char *verb, guint64 offset,
                guint64 length)
{
  g_autofree char *text = NULL;
  g_autofree char *key = g_strdup_printf (" %s id=", verb);
  g_auto (GStrv) lines = NULL;
  gsize n;

  g_assert_true (g_file_get_contents (path, &text, &n, NULL));
  g_assert_cmpuint (n, >=, since);
  lines = g_strsplit (text + since, "\n", -1);
  for (guint i = 0; lines[i]; i++) {
    const char *o = strstr (lines[i], " offset=0x"), *c = strstr (lines[i], " count=0x");
    guint64 ro, rc;

    /* The request's line; its answer is "...Read id=N return=..". */
    if (!strstr (lines[i], key) || !o || !c)
      continue;
    ro = g_ascii_strtoull (o + strlen (" offset=0x"), NULL, 16);
    rc = g_ascii_strtoull (c + strlen (" count=0x"), NULL, 16);
    if (ro < offset + length && offset < ro + rc)
      return TRUE;
  }
  return FALSE;
}

#endif /* GNBD_TESTS_COPY_TEST_H */
