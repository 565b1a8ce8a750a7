/* gnbd-errors: every failure maps to the right domain and code, sync and
 * async, and a refused request leaves the connection usable:
 *  - a write to a read-only export: GNBD_ERROR_PERMISSION;
 *  - a read past the end: GNBD_ERROR_INVALID;
 *  - EIO from nbdkit's error filter: GNBD_ERROR_IO;
 *  - a metadata context never negotiated: GNBD_ERROR_NOT_SUPPORTED;
 *  - not connected yet: G_IO_ERROR_NOT_CONNECTED;
 *  - the server killed with a request in flight: G_IO_ERROR for it, for
 *    the `closed` signal, and G_IO_ERROR_CLOSED for what comes after.
 */
#include "gnbd-test.h"

static struct test_server readonly, errors;

/* Run @name sync or async (by @async) and leave the error in @error. */
#define CALL(c, async, name, ...)                                                   \
  ((async) ? ({                                                                     \
     GtAsync a_ = { 0 };                                                            \
     __auto_type r_ = (gnbd_client_##name##_async ((c), __VA_ARGS__, NULL,          \
                                                   gt_async_cb, &a_),               \
                       gnbd_client_##name##_finish ((c), gt_async_wait (&a_), &error)); \
     gt_async_clear (&a_);                                                          \
     r_;                                                                            \
   }) : gnbd_client_##name ((c), __VA_ARGS__, NULL, &error))

/* The connection still serves: a read succeeds. */
static void
assert_usable (GnbdClient *c)
{
  GError *error = NULL;
  g_autoptr (GBytes) b = gnbd_client_pread (c, 0, 512, GNBD_COMMAND_FLAG_NONE, NULL, &error);

  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), ==, 512);
}

static void
test_read_only (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&readonly, TRUE);
  g_autoptr (GBytes) b = gt_pattern (4096, 1);
  GError *error = NULL;
  gboolean read_only;

  g_object_get (c, "read-only", &read_only, NULL);
  g_assert_true (read_only);

  g_assert_false (CALL (c, async, pwrite, b, 0, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_PERMISSION);
  g_assert_nonnull (strstr (error->message, "read-only"));
  g_clear_error (&error);
  /* As libnbd: a read-only nbdkit offers no zero or trim, and a request
   * the server does not offer is EINVAL before it is EPERM. */
  g_assert_false (CALL (c, async, zero, 0, 4096, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_false (CALL (c, async, trim, 0, 4096, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
  assert_usable (c);
}

static void
test_out_of_range (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&readonly, TRUE);
  GError *error = NULL;
  GBytes *b;

  b = CALL (c, async, pread, 1024 * 1024 - 512, 1024, GNBD_COMMAND_FLAG_NONE);
  g_assert_null (b);
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
  b = CALL (c, async, pread, G_MAXUINT64 - 10, 512, GNBD_COMMAND_FLAG_NONE);
  g_assert_null (b);
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
  assert_usable (c);
}

/* nbdkit's error filter fails every read with EIO; writes still work. */
static void
test_server_eio (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&errors, TRUE);
  g_autoptr (GBytes) pattern = gt_pattern (4096, 2);
  GError *error = NULL;
  GBytes *b;

  for (int i = 0; i < 3; i++) {
    b = CALL (c, async, pread, 0, 4096, GNBD_COMMAND_FLAG_NONE);
    g_assert_null (b);
    gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_IO);
    /* It says the server did it. */
    g_assert_nonnull (strstr (error->message, "server refused"));
    g_clear_error (&error);
  }
  g_assert_true (CALL (c, async, pwrite, pattern, 0, GNBD_COMMAND_FLAG_NONE));
  g_assert_no_error (error);
}

static void
test_context_not_negotiated (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gt_client_unix (&readonly, TRUE);
  GError *error = NULL;
  GPtrArray *extents;

  extents = CALL (c, async, block_status, 0, 4096, "qemu:dirty-bitmap:nope",
                  GNBD_COMMAND_FLAG_NONE);
  g_assert_null (extents);
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED);
  g_clear_error (&error);
  assert_usable (c);
}

static void
test_not_connected (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_assert_null (CALL (c, async, pread, 0, 512, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED);
  g_clear_error (&error);
  g_assert_false (CALL (c, async, flush, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED);
  g_clear_error (&error);
}

typedef struct {
  gint emitted;
  GError *error;
} Closed;

static void
on_closed (GnbdClient *c, GError *error, gpointer data)
{
  Closed *closed = data;

  g_assert_false (closed->emitted);
  g_assert_nonnull (error);
  closed->error = g_error_copy (error);
  g_atomic_int_set (&closed->emitted, 1);
}

/* The server dies with a read in flight: that read fails in G_IO_ERROR,
 * `closed` says so, and later requests fail with G_IO_ERROR_CLOSED. */
static void
test_server_killed (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  struct test_server s;
  g_autofree char *pause = gt_pause_path (async ? "pause-killed-a" : "pause-killed-s");
  g_autofree char *pause_arg = g_strdup_printf ("pause-control=%s", pause);
  const char *args[] = { "--filter=pause", "memory", "1M", pause_arg, NULL };
  g_autoptr (GnbdClient) c = NULL;
  GError *error = NULL;
  Closed closed = { 0 };
  GtAsync a = { 0 };
  GBytes *b;

  gt_start_nbdkit (&s, args);
  c = gt_client_unix (&s, TRUE);
  g_signal_connect (c, "closed", G_CALLBACK (on_closed), &closed);

  /* The read is sent, and the server holds it. */
  gt_pause_control (pause, 'p');
  gnbd_client_pread_async (c, 0, 4096, GNBD_COMMAND_FLAG_NONE, NULL, gt_async_cb, &a);
  g_assert_cmpint (kill (s.pid, SIGKILL), ==, 0);
  b = gnbd_client_pread_finish (c, gt_async_wait (&a), &error);
  gt_async_clear (&a);
  g_assert_null (b);
  g_assert_true (error->domain == G_IO_ERROR);
  g_test_message ("pending read: %s", error->message);
  g_clear_error (&error);

  /* `closed` comes in this (the creating) thread's context. */
  gt_iterate_until (&closed.emitted);
  g_assert_true (closed.error->domain == G_IO_ERROR);
  g_test_message ("closed: %s", closed.error->message);
  g_clear_error (&closed.error);

  g_assert_null (CALL (c, async, pread, 0, 512, GNBD_COMMAND_FLAG_NONE));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED);
  g_clear_error (&error);
  server_stop (&s);
}

int
main (int argc, char **argv)
{
  const char *ro_args[] = { "-r", "memory", "1M", NULL };
  const char *err_args[] = { "--filter=error", "memory", "1M", "error-pread=EIO",
                             "error-pread-rate=100%", NULL };
  int r;

  gt_init (&argc, &argv, 600);
  gt_start_nbdkit (&readonly, ro_args);
  gt_start_nbdkit (&errors, err_args);

  for (int async = 0; async < 2; async++) {
    const char *m = async ? "async" : "sync";
    gpointer d = GINT_TO_POINTER (async);
    g_autofree char *p1 = g_strdup_printf ("/errors/read-only/%s", m);
    g_autofree char *p2 = g_strdup_printf ("/errors/out-of-range/%s", m);
    g_autofree char *p3 = g_strdup_printf ("/errors/server-eio/%s", m);
    g_autofree char *p4 = g_strdup_printf ("/errors/context-not-negotiated/%s", m);
    g_autofree char *p5 = g_strdup_printf ("/errors/not-connected/%s", m);
    g_autofree char *p6 = g_strdup_printf ("/errors/server-killed/%s", m);

    g_test_add_data_func (p1, d, test_read_only);
    g_test_add_data_func (p2, d, test_out_of_range);
    g_test_add_data_func (p3, d, test_server_eio);
    g_test_add_data_func (p4, d, test_context_not_negotiated);
    g_test_add_data_func (p5, d, test_not_connected);
    g_test_add_data_func (p6, d, test_server_killed);
  }
  r = g_test_run ();
  server_stop (&readonly);
  server_stop (&errors);
  return r;
}
