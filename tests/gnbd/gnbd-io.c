/* gnbd-io: every I/O method, sync and async, writer on and off, against
 * nbdkit (memory) and qemu-nbd (qcow2): data written is read back, zero
 * and trim read as zeroes, block_status sees holes and data, flush and
 * cache succeed, the facts are those of the export.
 */
#include "gnbd-test.h"

static struct test_server nbdkit, qemu;

typedef struct {
  const struct test_server *server;
  gboolean writer;
  gboolean async;
} Case;

/* Each call in the mode of the case: the sync function, or _async on this
 * thread's context then _finish. */
#define CALL(c, async, name, ...)                                                   \
  ((async) ? ({                                                                     \
     GtAsync a_ = { 0 };                                                            \
     __auto_type r_ = (gnbd_client_##name##_async ((c), __VA_ARGS__, NULL,          \
                                                   gt_async_cb, &a_),               \
                       gnbd_client_##name##_finish ((c), gt_async_wait (&a_), &error)); \
     gt_async_clear (&a_);                                                          \
     r_;                                                                            \
   }) : gnbd_client_##name ((c), __VA_ARGS__, NULL, &error))

static void
check_zeroes (GBytes *b, gsize n)
{
  const guint8 *p = g_bytes_get_data (b, NULL);

  g_assert_cmpuint (g_bytes_get_size (b), ==, n);
  for (gsize i = 0; i < n; i++)
    if (p[i])
      g_error ("byte %zu is %u, not 0", i, p[i]);
}

/* The flags of the extent covering @offset. */
static guint32
flags_at (GPtrArray *extents, guint64 offset)
{
  for (guint i = 0; i < extents->len; i++) {
    GnbdExtent *e = extents->pdata[i];

    if (offset >= gnbd_extent_get_offset (e) &&
        offset - gnbd_extent_get_offset (e) < gnbd_extent_get_length (e))
      return gnbd_extent_get_flags (e);
  }
  g_error ("no extent covers offset %" G_GUINT64_FORMAT, offset);
}

static void
test_methods (gconstpointer data)
{
  const Case *k = data;
  g_autoptr (GnbdClient) c = gt_client_unix (k->server, k->writer);
  g_autoptr (GBytes) pattern = gt_pattern (64 * 1024, k->writer * 2 + k->async);
  g_autoptr (GBytes) got = NULL;
  g_autoptr (GPtrArray) extents = NULL;
  GError *error = NULL;
  guint64 size;
  gboolean ok, can_flush, can_cache;

  g_object_get (c, "size", &size, "can-flush", &can_flush, "can-cache", &can_cache, NULL);
  g_assert_cmpuint (size, ==, 16 * 1024 * 1024);

  /* pwrite, then pread of the same range gives it back. */
  ok = CALL (c, k->async, pwrite, pattern, 128 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (ok);
  got = CALL (c, k->async, pread, 128 * 1024, 64 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, pattern));
  g_clear_pointer (&got, g_bytes_unref);

  /* A FUA write too. */
  ok = CALL (c, k->async, pwrite, pattern, 0, GNBD_COMMAND_FLAG_FUA);
  g_assert_no_error (error);
  g_assert_true (ok);

  ok = CALL (c, k->async, flush, GNBD_COMMAND_FLAG_NONE);
  if (can_flush) {
    g_assert_no_error (error);
    g_assert_true (ok);
  }
  else
    g_clear_error (&error);

  /* zero: the range reads as zeroes. */
  ok = CALL (c, k->async, zero, 128 * 1024, 64 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (ok);
  got = CALL (c, k->async, pread, 128 * 1024, 64 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  check_zeroes (got, 64 * 1024);
  g_clear_pointer (&got, g_bytes_unref);

  /* trim: both servers make trimmed ranges read as zeroes. */
  ok = CALL (c, k->async, trim, 0, 64 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (ok);
  got = CALL (c, k->async, pread, 0, 64 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  check_zeroes (got, 64 * 1024);
  g_clear_pointer (&got, g_bytes_unref);

  ok = CALL (c, k->async, cache, 0, 1024 * 1024, GNBD_COMMAND_FLAG_NONE);
  if (can_cache) {
    g_assert_no_error (error);
    g_assert_true (ok);
  }
  else
    gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED);
  g_clear_error (&error);

  /* block_status: data where we wrote, a hole (reading as zero) far away. */
  ok = CALL (c, k->async, pwrite, pattern, 1024 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  extents = CALL (c, k->async, block_status, 0, 16 * 1024 * 1024, NULL,
                  GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_cmpuint (extents->len, >, 0);
  g_assert_cmpuint (gnbd_extent_get_offset (extents->pdata[0]), ==, 0);
  g_assert_cmpuint (flags_at (extents, 1024 * 1024) & 1, ==, 0);  /* not a hole */
  g_assert_cmpuint (flags_at (extents, 8 * 1024 * 1024) & 2, ==, 2);  /* reads as zero */
  g_clear_pointer (&extents, g_ptr_array_unref);

  /* REQ_ONE: one extent. */
  extents = CALL (c, k->async, block_status, 0, 16 * 1024 * 1024, "base:allocation",
                  GNBD_COMMAND_FLAG_REQ_ONE);
  g_assert_no_error (error);
  g_assert_cmpuint (extents->len, ==, 1);

  if (k->async) {
    GtAsync a = { 0 };

    gnbd_client_shutdown_async (c, NULL, gt_async_cb, &a);
    ok = gnbd_client_shutdown_finish (c, gt_async_wait (&a), &error);
    gt_async_clear (&a);
  }
  else
    ok = gnbd_client_shutdown (c, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (ok);
}

/* Many requests in flight at once on one client, async, all verified:
 * replies matched to their requests whatever order they come in. */
static void
test_in_flight (gconstpointer data)
{
  const Case *k = data;
  g_autoptr (GnbdClient) c = gt_client_unix (k->server, k->writer);
  enum { N = 64, LEN = 4096 };
  GtAsync w[N] = { 0 }, r[N] = { 0 };
  GBytes *pat[N];
  GError *error = NULL;

  for (int i = 0; i < N; i++) {
    pat[i] = gt_pattern (LEN, (guint8) i);
    gnbd_client_pwrite_async (c, pat[i], (guint64) i * LEN * 3, GNBD_COMMAND_FLAG_NONE, NULL,
                              gt_async_cb, &w[i]);
  }
  for (int i = 0; i < N; i++) {
    g_assert_true (gnbd_client_pwrite_finish (c, gt_async_wait (&w[i]), &error));
    g_assert_no_error (error);
    gt_async_clear (&w[i]);
  }
  for (int i = 0; i < N; i++)
    gnbd_client_pread_async (c, (guint64) i * LEN * 3, LEN, GNBD_COMMAND_FLAG_NONE, NULL,
                             gt_async_cb, &r[i]);
  for (int i = 0; i < N; i++) {
    g_autoptr (GBytes) got = gnbd_client_pread_finish (c, gt_async_wait (&r[i]), &error);

    g_assert_no_error (error);
    g_assert_true (g_bytes_equal (got, pat[i]));
    gt_async_clear (&r[i]);
    g_bytes_unref (pat[i]);
  }
}

/* A payload bigger than the socket buffers: the writer sends it in many
 * pieces (and without a writer, the I/O thread does). */
static void
test_large (gconstpointer data)
{
  const Case *k = data;
  g_autoptr (GnbdClient) c = gt_client_unix (k->server, k->writer);
  g_autoptr (GBytes) pattern = gt_pattern (4 * 1024 * 1024, 99);
  g_autoptr (GBytes) got = NULL;
  GError *error = NULL;
  gboolean ok;

  ok = CALL (c, k->async, pwrite, pattern, 4 * 1024 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (ok);
  got = CALL (c, k->async, pread, 4 * 1024 * 1024, 4 * 1024 * 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, pattern));
}

/* The facts, as each server states them. */
static void
test_facts (void)
{
  g_autoptr (GnbdClient) k = gt_client_unix (&nbdkit, TRUE);
  g_autoptr (GnbdClient) q = gt_client_unix (&qemu, TRUE);
  g_autofree char *protocol = NULL;
  gboolean connected, read_only, can_trim, can_zero, sr, tls, can_flush;
  guint min, pref, max;

  g_object_get (k, "connected", &connected, "read-only", &read_only, "can-trim", &can_trim,
                "can-zero", &can_zero, "protocol", &protocol,
                "structured-replies-negotiated", &sr, "tls-negotiated", &tls, NULL);
  g_assert_true (connected);
  g_assert_false (read_only);
  g_assert_true (can_trim);
  g_assert_true (can_zero);
  g_assert_cmpstr (protocol, ==, "newstyle-fixed");
  g_assert_true (sr);
  g_assert_false (tls);

  g_object_get (q, "can-flush", &can_flush, "block-size-minimum", &min,
                "block-size-preferred", &pref, "block-size-maximum", &max, NULL);
  g_assert_true (can_flush);
  /* qemu-nbd states its block sizes: 1, 4096, 32 MiB. */
  g_assert_cmpuint (min, ==, 1);
  g_assert_cmpuint (pref, ==, 4096);
  g_assert_cmpuint (max, ==, 32 * 1024 * 1024);
}

int
main (int argc, char **argv)
{
  const char *nbdkit_args[] = { "memory", "16M", NULL };
  g_autofree char *image = NULL;
  static Case cases[2][2][2];
  const char *names[2] = { "nbdkit", "qemu-nbd" };
  int r;

  gt_init (&argc, &argv, 600);
  gt_start_nbdkit (&nbdkit, nbdkit_args);
  image = image_create_qcow2 (16 * 1024 * 1024);
  g_assert_nonnull (image);
  {
    const char *qemu_args[] = { "-f", "qcow2", "--discard=unmap", "-x", "disk", image, NULL };

    if (server_start_qemu_nbd (&qemu, qemu_args) == -1)
      g_error ("cannot start qemu-nbd");
  }

  for (int s = 0; s < 2; s++)
    for (int w = 0; w < 2; w++)
      for (int a = 0; a < 2; a++) {
        Case *k = &cases[s][w][a];
        g_autofree char *suffix = g_strdup_printf ("%s/%s/%s", names[s],
                                                   w ? "writer" : "no-writer",
                                                   a ? "async" : "sync");
        g_autofree char *p1 = g_strdup_printf ("/io/methods/%s", suffix);
        g_autofree char *p2 = g_strdup_printf ("/io/large/%s", suffix);

        k->server = s ? &qemu : &nbdkit;
        k->writer = w;
        k->async = a;
        g_test_add_data_func (p1, k, test_methods);
        g_test_add_data_func (p2, k, test_large);
        if (a) {
          g_autofree char *p3 = g_strdup_printf ("/io/in-flight/%s/%s", names[s],
                                                 w ? "writer" : "no-writer");

          g_test_add_data_func (p3, k, test_in_flight);
        }
      }
  g_test_add_func ("/io/facts", test_facts);
  r = g_test_run ();
  server_stop (&nbdkit);
  server_stop (&qemu);
  return r;
}
