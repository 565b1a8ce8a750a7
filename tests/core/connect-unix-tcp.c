/* connect-unix-tcp: nbd_connect_unix and nbd_connect_tcp, their URIs and
 * their failures.
 *
 * Proves, against nbdkit memory 1M (Unix and 127.0.0.1) and qemu-nbd -x:
 *  - connect_unix reaches ready with the right size; get_uri gives exactly
 *    nbd+unix:///EXPORT?socket=PATH, which connect_uri accepts again;
 *  - connect_tcp to "127.0.0.1" and to "localhost" (which may resolve to ::1
 *    first: the next address is tried) works, TCP_NODELAY is set on the
 *    socket, get_uri gives nbd://127.0.0.1:PORT/ which connects again;
 *  - a missing socket fails with ENOENT, the message starting
 *    "nbd_connect_unix: ", and leaves the handle dead;
 *  - a port nobody listens on fails with ECONNREFUSED ("nbd_connect_tcp: ")
 *    and, as in libnbd 1.14, leaves the handle newly created so that it can
 *    connect again;
 *  - connecting a connected handle again fails with EINVAL and changes
 *    nothing.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static bool
error_from (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  if (msg && strncmp (msg, call, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
    return true;
  diag ("message '%s' does not start with '%s: '", msg ? msg : "(null)", call);
  return false;
}

/* A fresh handle connects to @uri and sees @size bytes. */
static void
reconnect_uri (const char *uri, int64_t size, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!uri) {
    ok (0, "%s: no URI to reconnect with", what);
    nbd_close (h);
    return;
  }
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: nbd_connect_uri (%s) accepts it again", what, uri))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h), size, "%s: and sees the same export", what);
  nbd_close (h);
}

static void
check_nodelay (struct nbd_handle *h, const char *what)
{
  int fd = nbd_aio_get_fd (h), v = 0;
  socklen_t len = sizeof v;

  ok (fd >= 0 && getsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v != 0,
      "%s: TCP_NODELAY is set on the socket", what);
}

/* A TCP port on 127.0.0.1 that nobody listens on (bound, then closed). */
static int
dead_port (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM, 0), port;

  if (fd == -1 || bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1)
    bail_out ("cannot find a free port: %m");
  port = ntohs (sin.sin_port);
  close (fd);
  return port;
}

static void
test_unix (const struct test_server *s)
{
  struct nbd_handle *h = nbd_create ();
  char *uri, want[600];
  char buf[512];

  is_int (nbd_connect_unix (h, s->sock), 0, "nbd_connect_unix to nbdkit");
  ok (nbd_aio_is_ready (h), "the handle is ready");
  is_int (nbd_get_size (h), 1048576, "nbd_get_size is 1M");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "nbd_pread works");

  uri = nbd_get_uri (h);
  snprintf (want, sizeof want, "nbd+unix:///?socket=%s", s->sock);
  is_str (uri, want, "nbd_get_uri after nbd_connect_unix");
  reconnect_uri (uri, 1048576, "unix");
  free (uri);

  /* Connecting twice. */
  is_int (nbd_connect_unix (h, s->sock), -1, "a second nbd_connect_unix fails");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_connect_unix"), "naming nbd_connect_unix");
  is_int (nbd_aio_connect_unix (h, s->sock), -1, "so does nbd_aio_connect_unix");
  is_errno (EINVAL, "with EINVAL");
  ok (nbd_aio_is_ready (h), "the handle is still ready");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "and still works");
  nbd_close (h);
}

static void
test_unix_export_name (void)
{
  struct test_server q;
  struct nbd_handle *h;
  char *img = image_create_raw (2 * 1024 * 1024);
  char *uri, want[600], *name;

  if (!img || server_start_qemu_nbd (&q, (const char *const[]) { "-f", "raw", "-e", "2",
                                                                 "-x", "disk", img, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  h = nbd_create ();
  must (nbd_set_export_name (h, "disk"));
  is_int (nbd_connect_unix (h, q.sock), 0, "nbd_connect_unix to qemu-nbd -x disk");
  is_int (nbd_get_size (h), 2 * 1024 * 1024, "size 2M");
  uri = nbd_get_uri (h);
  snprintf (want, sizeof want, "nbd+unix:///disk?socket=%s", q.sock);
  is_str (uri, want, "nbd_get_uri names the export");
  reconnect_uri (uri, 2 * 1024 * 1024, "unix with export name");
  free (uri);
  name = nbd_get_export_name (h);
  is_str (name, "disk", "the export name is unchanged");
  free (name);
  nbd_close (h);
  server_stop (&q);
  free (img);
}

static void
test_tcp (void)
{
  struct test_server t;
  struct nbd_handle *h;
  char port[16], want[64], *uri;

  if (server_start_nbdkit_tcp (&t, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit on TCP");
  snprintf (port, sizeof port, "%d", t.tcp_port);

  h = nbd_create ();
  is_int (nbd_connect_tcp (h, "127.0.0.1", port), 0, "nbd_connect_tcp (127.0.0.1, %s)", port);
  is_int (nbd_get_size (h), 1048576, "nbd_get_size is 1M");
  check_nodelay (h, "127.0.0.1");
  uri = nbd_get_uri (h);
  snprintf (want, sizeof want, "nbd://127.0.0.1:%d/", t.tcp_port);
  is_str (uri, want, "nbd_get_uri after nbd_connect_tcp");
  reconnect_uri (uri, 1048576, "tcp");
  free (uri);
  is_int (nbd_connect_tcp (h, "127.0.0.1", port), -1, "a second nbd_connect_tcp fails");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_connect_tcp"), "naming nbd_connect_tcp");
  nbd_close (h);

  h = nbd_create ();
  is_int (nbd_connect_tcp (h, "localhost", port), 0, "nbd_connect_tcp (localhost, %s)", port);
  is_int (nbd_get_size (h), 1048576, "nbd_get_size is 1M");
  check_nodelay (h, "localhost");
  nbd_close (h);

  server_stop (&t);
}

static void
test_failures (const struct test_server *s)
{
  struct nbd_handle *h;
  char path[600], port[16];

  snprintf (path, sizeof path, "%s.missing", s->sock);
  h = nbd_create ();
  is_int (nbd_connect_unix (h, path), -1, "nbd_connect_unix to a missing socket fails");
  is_errno (ENOENT, "with ENOENT");
  ok (error_from ("nbd_connect_unix"), "the message starts with nbd_connect_unix");
  ok (nbd_aio_is_dead (h), "the handle is dead");
  is_int (nbd_connect_unix (h, s->sock), -1, "a dead handle cannot connect again");
  is_errno (EINVAL, "with EINVAL");
  nbd_close (h);

  snprintf (port, sizeof port, "%d", dead_port ());
  h = nbd_create ();
  is_int (nbd_connect_tcp (h, "127.0.0.1", port), -1, "nbd_connect_tcp to a closed port fails");
  is_errno (ECONNREFUSED, "with ECONNREFUSED");
  ok (error_from ("nbd_connect_tcp"), "the message starts with nbd_connect_tcp");
  /* libnbd 1.14 leaves the handle newly created after a TCP failure. */
  ok (nbd_aio_is_created (h), "the handle is newly created again (as libnbd 1.14)");
  is_int (nbd_connect_unix (h, s->sock), 0, "so it can connect to a live server");
  is_int (nbd_get_size (h), 1048576, "which works");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  test_unix (&s);
  test_unix_export_name ();
  test_tcp ();
  test_failures (&s);

  server_stop (&s);
  return done_testing ();
}
