/* gnbd-connect: the five ways to connect, sync and async, against nbdkit
 * (Unix socket, TCP on 127.0.0.1, a command on a socket pair, systemd
 * socket activation) and qemu-nbd (a named export); list_exports; the
 * facts after connecting; connecting again after a shutdown; and connects
 * that fail, with the right domain and code: no such socket, nobody on the
 * port, no such export, TLS required by the server, a malformed URI,
 * connecting twice.
 */
#include "gnbd-test.h"

#include <glib/gstdio.h>

static struct test_server unix_server, tcp_server, qemu, listing, tls_only;
static struct tls_material material;   /* its strings live until exit */

/* Connect @c with @how (sync or async by @async), returning the result. */
typedef enum {
  HOW_URI,
  HOW_UNIX,
  HOW_TCP,
  HOW_COMMAND,
  HOW_SA,
} How;

static gboolean
connect_with (GnbdClient *c, How how, const char *a, const char *b, const char *const *argv,
              gboolean async, GError **error)
{
  GtAsync r = { 0 };
  gboolean ok = FALSE;

  switch (how) {
  case HOW_URI:
    if (!async)
      return gnbd_client_connect_uri (c, a, NULL, error);
    gnbd_client_connect_uri_async (c, a, NULL, gt_async_cb, &r);
    ok = gnbd_client_connect_uri_finish (c, gt_async_wait (&r), error);
    break;
  case HOW_UNIX:
    if (!async)
      return gnbd_client_connect_unix (c, a, NULL, error);
    gnbd_client_connect_unix_async (c, a, NULL, gt_async_cb, &r);
    ok = gnbd_client_connect_unix_finish (c, gt_async_wait (&r), error);
    break;
  case HOW_TCP:
    if (!async)
      return gnbd_client_connect_tcp (c, a, b, NULL, error);
    gnbd_client_connect_tcp_async (c, a, b, NULL, gt_async_cb, &r);
    ok = gnbd_client_connect_tcp_finish (c, gt_async_wait (&r), error);
    break;
  case HOW_COMMAND:
    if (!async)
      return gnbd_client_connect_command (c, argv, NULL, error);
    gnbd_client_connect_command_async (c, argv, NULL, gt_async_cb, &r);
    ok = gnbd_client_connect_command_finish (c, gt_async_wait (&r), error);
    break;
  case HOW_SA:
    if (!async)
      return gnbd_client_connect_systemd_socket_activation (c, argv, NULL, error);
    gnbd_client_connect_systemd_socket_activation_async (c, argv, NULL, gt_async_cb, &r);
    ok = gnbd_client_connect_systemd_socket_activation_finish (c, gt_async_wait (&r), error);
    break;
  }
  gt_async_clear (&r);
  return ok;
}

/* Connected to an export of @size: the facts say so, a write reads back,
 * and a shutdown closes it. */
static void
check_connected (GnbdClient *c, guint64 size)
{
  g_autoptr (GBytes) pattern = gt_pattern (4096, 5);
  g_autoptr (GBytes) got = NULL;
  g_autofree char *protocol = NULL;
  GError *error = NULL;
  gboolean connected;
  guint64 got_size;

  g_object_get (c, "connected", &connected, "size", &got_size, "protocol", &protocol, NULL);
  g_assert_true (connected);
  g_assert_cmpuint (got_size, ==, size);
  g_assert_cmpstr (protocol, ==, "newstyle-fixed");
  g_assert_true (gnbd_client_pwrite (c, pattern, 8192, GNBD_COMMAND_FLAG_NONE, NULL, &error));
  g_assert_no_error (error);
  got = gnbd_client_pread (c, 8192, 4096, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, pattern));
  g_assert_true (gnbd_client_shutdown (c, NULL, &error));
  g_assert_no_error (error);
  g_object_get (c, "connected", &connected, NULL);
  g_assert_false (connected);
}

typedef struct {
  How how;
  gboolean async;
} FormCase;

/* The server a connection started (nbdkit -P @pidfile) is gone, reaped:
 * not running, not a zombie. */
static void
assert_server_reaped (const char *pidfile)
{
  g_autofree char *text = NULL;
  g_autofree char *proc = NULL;

  g_assert_true (g_file_get_contents (pidfile, &text, NULL, NULL));
  proc = g_strdup_printf ("/proc/%d", atoi (text));
  g_assert_false (g_file_test (proc, G_FILE_TEST_EXISTS));
}

typedef struct {
  gint last;
  GMainContext *ctx;
} Toggle;

static void
toggled (gpointer data, GObject *object, gboolean is_last_ref)
{
  Toggle *t = data;

  /* Maybe on another thread, ordered with the waiter by GObject's toggle
   * lock, which ThreadSanitizer does not see: atomics only.  The flag is
   * the last thing touched, for once it is seen, @t (on the waiter's
   * stack) goes. */
  if (is_last_ref) {
    g_main_context_wakeup (g_atomic_pointer_get (&t->ctx));
    g_atomic_int_set (&t->last, 1);
  }
}

/* Drop the last reference to @c on this thread, off gnbd's I/O thread.
 * A result or an event on its way to this context, or a task another
 * thread finishes, may hold one more for a moment: a toggle reference
 * tells when ours is the only one left (an event, waited for on this
 * thread's context, bounded by GT_WAIT_SECONDS), and dropping it then is
 * the last unref. */
static void
drop_last_ref (GnbdClient **c)
{
  GObject *obj = G_OBJECT (g_steal_pointer (c));
  Toggle t;

  g_atomic_int_set (&t.last, 0);
  g_atomic_pointer_set (&t.ctx, g_main_context_ref_thread_default ());
  g_object_add_toggle_ref (obj, toggled, &t);
  g_object_unref (obj);
  gt_iterate_until (&t.last);
  g_object_remove_toggle_ref (obj, toggled, &t);
  g_main_context_unref (t.ctx);
}

static void
test_form (gconstpointer data)
{
  const FormCase *k = data;
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  g_autofree char *uri = NULL;
  g_autofree char *port = g_strdup_printf ("%d", tcp_server.tcp_port);
  g_autofree char *dir = g_dir_make_tmp ("gnbd-connect-XXXXXX", NULL);
  g_autofree char *pidfile = g_build_filename (dir, "pid", NULL);
  const char *command[] = { "nbdkit", "-s", "--exit-with-parent", "-P", pidfile, "memory", "2M",
                            NULL };
  const char *sa[] = { "nbdkit", "--exit-with-parent", "-P", pidfile, "memory", "3M", NULL };
  GError *error = NULL;
  guint64 size = 1024 * 1024;
  gboolean ok = FALSE;

  switch (k->how) {
  case HOW_URI:
    /* Over TCP, so the name goes through the resolver thread. */
    uri = g_strdup_printf ("nbd://127.0.0.1:%d/", tcp_server.tcp_port);
    ok = connect_with (c, HOW_URI, uri, NULL, NULL, k->async, &error);
    break;
  case HOW_UNIX:
    ok = connect_with (c, HOW_UNIX, unix_server.sock, NULL, NULL, k->async, &error);
    break;
  case HOW_TCP:
    ok = connect_with (c, HOW_TCP, "localhost", port, NULL, k->async, &error);
    break;
  case HOW_COMMAND:
    ok = connect_with (c, HOW_COMMAND, NULL, NULL, command, k->async, &error);
    size = 2 * 1024 * 1024;
    break;
  case HOW_SA:
    ok = connect_with (c, HOW_SA, NULL, NULL, sa, k->async, &error);
    size = 3 * 1024 * 1024;
    break;
  }
  g_assert_no_error (error);
  g_assert_true (ok);
  check_connected (c, size);
  /* The last unref (not on gnbd's I/O thread) returns once the handle is
   * closed: a server the connection started has exited and is reaped by
   * the time the client is finalized. */
  drop_last_ref (&c);
  if (k->how == HOW_COMMAND || k->how == HOW_SA)
    assert_server_reaped (pidfile);
  g_remove (pidfile);
  g_rmdir (dir);
}

/* A named export of qemu-nbd, through a URI and through export-name. */
static void
test_named_export (void)
{
  g_autoptr (GnbdClient) a = gnbd_client_new ();
  g_autoptr (GnbdClient) b = gnbd_client_new ();
  g_autofree char *uri = server_uri (&qemu, "disk");
  GError *error = NULL;

  g_assert_true (gnbd_client_connect_uri (a, uri, NULL, &error));
  g_assert_no_error (error);
  check_connected (a, 4 * 1024 * 1024);
  g_object_set (b, "export-name", "disk", NULL);
  g_assert_true (gnbd_client_connect_unix (b, qemu.sock, NULL, &error));
  g_assert_no_error (error);
  check_connected (b, 4 * 1024 * 1024);
}

/* After a shutdown the client connects again, with its settings as they
 * are then. */
static void
test_reconnect (void)
{
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  for (int i = 0; i < 3; i++) {
    g_assert_true (gnbd_client_connect_unix (c, unix_server.sock, NULL, &error));
    g_assert_no_error (error);
    check_connected (c, 1024 * 1024);
  }
}

static void
test_list_exports (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  g_autofree char *uri = server_uri (&listing, "");
  g_autoptr (GPtrArray) list = NULL;
  GError *error = NULL;
  gboolean connected;

  if (async) {
    GtAsync r = { 0 };

    gnbd_client_list_exports_async (c, uri, NULL, gt_async_cb, &r);
    list = gnbd_client_list_exports_finish (c, gt_async_wait (&r), &error);
    gt_async_clear (&r);
  }
  else
    list = gnbd_client_list_exports (c, uri, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (list->len, ==, 2);
  g_assert_cmpstr (gnbd_export_get_name (list->pdata[0]), ==, "first");
  g_assert_cmpstr (gnbd_export_get_name (list->pdata[1]), ==, "second");
  g_assert_cmpstr (gnbd_export_get_description (list->pdata[0]), ==, "the export");
  /* The client itself stays as it was. */
  g_object_get (c, "connected", &connected, NULL);
  g_assert_false (connected);
}

static void
test_fail_no_socket (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  g_autofree char *path = gt_pause_path ("nobody-here");
  GError *error = NULL;

  g_assert_false (connect_with (c, HOW_UNIX, path, NULL, NULL, async, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_clear_error (&error);
  /* The same client then connects where there is a server. */
  g_assert_true (connect_with (c, HOW_UNIX, unix_server.sock, NULL, NULL, async, &error));
  g_assert_no_error (error);
}

static void
test_fail_refused (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  struct test_server gone;
  const char *args[] = { "memory", "1M", NULL };
  g_autofree char *port = NULL;
  GError *error = NULL;

  /* A port that was just in use and is free now: nobody listens. */
  if (server_start_nbdkit_tcp (&gone, args) == -1)
    g_error ("cannot start nbdkit");
  port = g_strdup_printf ("%d", gone.tcp_port);
  server_stop (&gone);
  g_assert_false (connect_with (c, HOW_TCP, "127.0.0.1", port, NULL, async, &error));
  gt_assert_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED);
  g_clear_error (&error);
}

static void
test_fail_no_export (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_object_set (c, "export-name", "no-such-export", NULL);
  g_assert_false (connect_with (c, HOW_UNIX, qemu.sock, NULL, NULL, async, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_NOT_FOUND);
  g_clear_error (&error);
}

static void
test_fail_tls_required (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_assert_false (connect_with (c, HOW_UNIX, tls_only.sock, NULL, NULL, async, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_TLS_REQUIRED);
  /* It says what the server wants and what to change. */
  g_assert_nonnull (strstr (error->message, "requires TLS"));
  g_assert_nonnull (strstr (error->message, "tls"));
  g_assert_null (strstr (error->message, "not supported"));
  g_clear_error (&error);
}

static void
test_fail_bad_uri (gconstpointer data)
{
  gboolean async = GPOINTER_TO_INT (data);
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_assert_false (connect_with (c, HOW_URI, "http://example.com/", NULL, NULL, async, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
}

static void
test_fail_twice (void)
{
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_assert_true (gnbd_client_connect_unix (c, unix_server.sock, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (gnbd_client_connect_unix (c, unix_server.sock, NULL, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_INVALID);
  g_clear_error (&error);
  /* Still connected and serving. */
  check_connected (c, 1024 * 1024);
}

int
main (int argc, char **argv)
{
  const char *mem[] = { "memory", "1M", NULL };
  const char *listing_args[] = { "--filter=exportname", "memory", "1M",
                                 "exportname-list=explicit", "exportname=first",
                                 "exportname=second", "exportdesc=fixed:the export", NULL };
  g_autofree char *image = NULL;
  g_autofree char *psk = NULL;
  static FormCase forms[5][2];
  const char *names[5] = { "uri-tcp", "unix", "tcp", "command", "systemd-socket-activation" };
  int r;

  gt_init (&argc, &argv, 600);
  gt_start_nbdkit (&unix_server, mem);
  if (server_start_nbdkit_tcp (&tcp_server, mem) == -1)
    g_error ("cannot start nbdkit on TCP");
  gt_start_nbdkit (&listing, listing_args);
  image = image_create_qcow2 (4 * 1024 * 1024);
  {
    const char *qemu_args[] = { "-f", "qcow2", "-x", "disk", image, NULL };

    if (server_start_qemu_nbd (&qemu, qemu_args) == -1)
      g_error ("cannot start qemu-nbd");
  }
  if (tls_material_create (&material) == -1)
    g_error ("cannot make TLS material");
  psk = g_strdup_printf ("--tls-psk=%s", material.psk_file);
  {
    const char *tls_args[] = { "--tls=require", psk, "memory", "1M", NULL };

    gt_start_nbdkit (&tls_only, tls_args);
  }

  for (int h = 0; h < 5; h++)
    for (int a = 0; a < 2; a++) {
      g_autofree char *p = g_strdup_printf ("/connect/form/%s/%s", names[h],
                                            a ? "async" : "sync");

      forms[h][a].how = h;
      forms[h][a].async = a;
      g_test_add_data_func (p, &forms[h][a], test_form);
    }
  g_test_add_func ("/connect/named-export", test_named_export);
  g_test_add_func ("/connect/reconnect", test_reconnect);
  g_test_add_func ("/connect/fail/twice", test_fail_twice);
  for (int a = 0; a < 2; a++) {
    const char *m = a ? "async" : "sync";
    gpointer d = GINT_TO_POINTER (a);
    g_autofree char *p1 = g_strdup_printf ("/connect/list-exports/%s", m);
    g_autofree char *p2 = g_strdup_printf ("/connect/fail/no-socket/%s", m);
    g_autofree char *p3 = g_strdup_printf ("/connect/fail/refused/%s", m);
    g_autofree char *p4 = g_strdup_printf ("/connect/fail/no-export/%s", m);
    g_autofree char *p5 = g_strdup_printf ("/connect/fail/tls-required/%s", m);
    g_autofree char *p6 = g_strdup_printf ("/connect/fail/bad-uri/%s", m);

    g_test_add_data_func (p1, d, test_list_exports);
    g_test_add_data_func (p2, d, test_fail_no_socket);
    g_test_add_data_func (p3, d, test_fail_refused);
    g_test_add_data_func (p4, d, test_fail_no_export);
    g_test_add_data_func (p5, d, test_fail_tls_required);
    g_test_add_data_func (p6, d, test_fail_bad_uri);
  }
  r = g_test_run ();
  server_stop (&unix_server);
  server_stop (&tcp_server);
  server_stop (&listing);
  server_stop (&qemu);
  server_stop (&tls_only);
  return r;
}
