/* gnbd-tls: TLS through gnbd's properties and nbds URIs, with a PSK and
 * with X.509 certificates, the writer on and off (under TLS the writer's
 * task makes the records: it gets write payloads lent, as plaintext, which
 * the test sees in gnbd_writer_count_lent), sync and async: tls-negotiated
 * says so and data goes both ways.  And what fails: a wrong key, a server that requires TLS the
 * client does not offer (GNBD_ERROR_TLS_REQUIRED), a client that requires
 * TLS from a server without it (GNBD_ERROR_TLS_FAILED).
 */
#include "gnbd-test.h"
#include "gnbd-writer-private.h"

static struct tls_material m;
static struct test_server psk_server, x509_server, plain_server;

/* I/O over the connection, and the facts of a TLS session. */
static void
check_session (GnbdClient *c, gboolean writer)
{
  g_autoptr (GBytes) pattern = gt_pattern (256 * 1024, 11);
  g_autoptr (GBytes) got = NULL;
  GError *error = NULL;
  gboolean tls;
  guint64 lent = gnbd_writer_count_lent ();

  g_object_get (c, "tls-negotiated", &tls, NULL);
  g_assert_true (tls);
  g_assert_true (gnbd_client_pwrite (c, pattern, 4096, GNBD_COMMAND_FLAG_NONE, NULL, &error));
  g_assert_no_error (error);
  /* The payload went to the writer as it is (to be encrypted by its
   * task), not as records made on this side. */
  if (writer)
    g_assert_cmpuint (gnbd_writer_count_lent () - lent, >=, 256 * 1024);
  else
    g_assert_cmpuint (gnbd_writer_count_lent () - lent, ==, 0);
  got = gnbd_client_pread (c, 4096, 256 * 1024, GNBD_COMMAND_FLAG_NONE, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, pattern));
  g_assert_true (gnbd_client_shutdown (c, NULL, &error));
  g_assert_no_error (error);
}

static gboolean
connect_unix (GnbdClient *c, const char *sock, gboolean async, GError **error)
{
  GtAsync a = { 0 };
  gboolean ok;

  if (!async)
    return gnbd_client_connect_unix (c, sock, NULL, error);
  gnbd_client_connect_unix_async (c, sock, NULL, gt_async_cb, &a);
  ok = gnbd_client_connect_unix_finish (c, gt_async_wait (&a), error);
  gt_async_clear (&a);
  return ok;
}

static gboolean
connect_uri (GnbdClient *c, const char *uri, gboolean async, GError **error)
{
  GtAsync a = { 0 };
  gboolean ok;

  if (!async)
    return gnbd_client_connect_uri (c, uri, NULL, error);
  gnbd_client_connect_uri_async (c, uri, NULL, gt_async_cb, &a);
  ok = gnbd_client_connect_uri_finish (c, gt_async_wait (&a), error);
  gt_async_clear (&a);
  return ok;
}

typedef struct {
  gboolean writer;
  gboolean async;
} Case;

static void
test_psk (gconstpointer data)
{
  const Case *k = data;
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_object_set (c, "concurrent-writer", k->writer, "tls", GNBD_TLS_REQUIRE,
                "tls-psk-file", m.psk_file, "tls-username", "alice", NULL);
  g_assert_true (connect_unix (c, psk_server.sock, k->async, &error));
  g_assert_no_error (error);
  check_session (c, k->writer);
}

static void
test_x509 (gconstpointer data)
{
  const Case *k = data;
  g_autoptr (GnbdClient) props = gnbd_client_new ();
  g_autoptr (GnbdClient) by_uri = gnbd_client_new ();
  g_autofree char *query = g_strdup_printf ("tls-certificates=%s", m.client_dir);
  g_autofree char *uri = tls_uri (&x509_server, NULL, NULL, NULL, "", query);
  GError *error = NULL;

  g_object_set (props, "concurrent-writer", k->writer, "tls", GNBD_TLS_REQUIRE,
                "tls-certificates", m.client_dir, NULL);
  g_assert_true (connect_unix (props, x509_server.sock, k->async, &error));
  g_assert_no_error (error);
  check_session (props, k->writer);

  /* An nbds URI requires TLS whatever the tls property says. */
  g_object_set (by_uri, "concurrent-writer", k->writer, NULL);
  g_assert_true (connect_uri (by_uri, uri, k->async, &error));
  g_assert_no_error (error);
  check_session (by_uri, k->writer);
}

static void
test_wrong_key (void)
{
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_object_set (c, "tls", GNBD_TLS_REQUIRE, "tls-psk-file", m.psk_wrongkey_file,
                "tls-username", "alice", NULL);
  g_assert_false (gnbd_client_connect_unix (c, psk_server.sock, NULL, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_TLS_FAILED);
  g_clear_error (&error);
}

static void
test_server_requires (void)
{
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_assert_false (gnbd_client_connect_unix (c, psk_server.sock, NULL, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_TLS_REQUIRED);
  g_clear_error (&error);
}

static void
test_client_requires (void)
{
  g_autoptr (GnbdClient) c = gnbd_client_new ();
  GError *error = NULL;

  g_object_set (c, "tls", GNBD_TLS_REQUIRE, "tls-psk-file", m.psk_file, "tls-username",
                "alice", NULL);
  g_assert_false (gnbd_client_connect_unix (c, plain_server.sock, NULL, &error));
  gt_assert_error (error, GNBD_ERROR, GNBD_ERROR_TLS_FAILED);
  g_clear_error (&error);
}

/* ALLOW: TLS with a server that has it, none with one that has not. */
static void
test_allow (void)
{
  g_autoptr (GnbdClient) with = gnbd_client_new ();
  g_autoptr (GnbdClient) without = gnbd_client_new ();
  GError *error = NULL;
  gboolean tls;

  g_object_set (with, "tls", GNBD_TLS_ALLOW, "tls-psk-file", m.psk_file, "tls-username",
                "alice", NULL);
  g_assert_true (gnbd_client_connect_unix (with, psk_server.sock, NULL, &error));
  g_assert_no_error (error);
  check_session (with, TRUE);     /* the writer is on by default */
  g_object_set (without, "tls", GNBD_TLS_ALLOW, "tls-psk-file", m.psk_file, "tls-username",
                "alice", NULL);
  g_assert_true (gnbd_client_connect_unix (without, plain_server.sock, NULL, &error));
  g_assert_no_error (error);
  g_object_get (without, "tls-negotiated", &tls, NULL);
  g_assert_false (tls);
}

int
main (int argc, char **argv)
{
  g_autofree char *psk_arg = NULL, *cert_arg = NULL;
  const char *plain[] = { "memory", "1M", NULL };
  static Case cases[2][2];
  int r;

  gt_init (&argc, &argv, 600);
  if (!tls_material_available ()) {
    printf ("1..0 # SKIP certtool or psktool is not installed\n");
    return 0;
  }
  if (tls_material_create (&m) == -1)
    g_error ("cannot make TLS material");
  psk_arg = g_strdup_printf ("--tls-psk=%s", m.psk_file);
  cert_arg = g_strdup_printf ("--tls-certificates=%s", m.server_dir);
  {
    const char *psk[] = { "--tls=require", psk_arg, "memory", "16M", NULL };
    const char *x509[] = { "--tls=require", cert_arg, "memory", "16M", NULL };

    gt_start_nbdkit (&psk_server, psk);
    gt_start_nbdkit (&x509_server, x509);
  }
  gt_start_nbdkit (&plain_server, plain);

  for (int w = 0; w < 2; w++)
    for (int a = 0; a < 2; a++) {
      g_autofree char *sfx = g_strdup_printf ("%s/%s", w ? "writer" : "no-writer",
                                              a ? "async" : "sync");
      g_autofree char *p1 = g_strdup_printf ("/tls/psk/%s", sfx);
      g_autofree char *p2 = g_strdup_printf ("/tls/x509/%s", sfx);

      cases[w][a].writer = w;
      cases[w][a].async = a;
      g_test_add_data_func (p1, &cases[w][a], test_psk);
      g_test_add_data_func (p2, &cases[w][a], test_x509);
    }
  g_test_add_func ("/tls/fail/wrong-key", test_wrong_key);
  g_test_add_func ("/tls/fail/server-requires", test_server_requires);
  g_test_add_func ("/tls/fail/client-requires", test_client_requires);
  g_test_add_func ("/tls/allow", test_allow);
  r = g_test_run ();
  server_stop (&psk_server);
  server_stop (&x509_server);
  server_stop (&plain_server);
  return r;
}
