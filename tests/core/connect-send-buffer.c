/* connect-send-buffer: the Unix sockets libnbd-core makes ask for a 4 MiB
 * send buffer (a hint the kernel caps at net.core.wmem_max, and doubles),
 * so that a 256 KiB or 2 MiB write leaves in one send instead of in pieces
 * that each wait for the server; a socket the caller gives
 * (nbd_connect_socket) is left as it is.
 *
 * Proves, for nbd_connect_unix, nbd_connect_command and
 * nbd_connect_systemd_socket_activation: SO_SNDBUF of nbd_aio_get_fd is
 * 2 * min (4 MiB, wmem_max), what setsockopt (4 MiB) gives on this machine;
 * and for nbd_connect_socket: the value of a socket nobody touched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static int
send_buffer (int fd)
{
  int v = -1;
  socklen_t len = sizeof v;

  if (getsockopt (fd, SOL_SOCKET, SO_SNDBUF, &v, &len) == -1)
    bail_out ("getsockopt: %m");
  return v;
}

static long
wmem_max (void)
{
  FILE *f = fopen ("/proc/sys/net/core/wmem_max", "r");
  long v = -1;

  if (!f || fscanf (f, "%ld", &v) != 1)
    bail_out ("/proc/sys/net/core/wmem_max: %m");
  fclose (f);
  return v;
}

static void
check (struct nbd_handle *h, int want, const char *what)
{
  is_int (send_buffer (nbd_aio_get_fd (h)), want, "%s: SO_SNDBUF %d", what, want);
  must (nbd_shutdown (h, 0));
  nbd_close (h);
}

int
main (void)
{
  char *nbdkit_s[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "1M", NULL };
  char *nbdkit_sa[] = { "nbdkit", "--exit-with-parent", "memory", "1M", NULL };
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct test_server s;
  struct nbd_handle *h;
  long cap = wmem_max ();
  int want = 2 * (int) (cap < 4 * 1024 * 1024 ? cap : 4 * 1024 * 1024), fresh, pair[2], fd;

  tap_timeout (120);
  if (socketpair (AF_UNIX, SOCK_STREAM, 0, pair) == -1)
    bail_out ("socketpair: %m");
  fresh = send_buffer (pair[0]);
  close (pair[0]);
  close (pair[1]);
  note ("wmem_max %ld: a tuned socket has %d, an untouched one %d", cap, want, fresh);
  if (server_start_nbdkit (&s, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  if (!(h = nbd_create ()))
    bail_out ("nbd_create");
  must (nbd_connect_unix (h, s.sock));
  check (h, want, "nbd_connect_unix");

  if (!(h = nbd_create ()))
    bail_out ("nbd_create");
  must (nbd_connect_command (h, nbdkit_s));
  check (h, want, "nbd_connect_command");

  if (!(h = nbd_create ()))
    bail_out ("nbd_create");
  must (nbd_connect_systemd_socket_activation (h, nbdkit_sa));
  check (h, want, "nbd_connect_systemd_socket_activation");

  /* The caller's own socket: untouched. */
  strncpy (sun.sun_path, s.sock, sizeof sun.sun_path - 1);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    bail_out ("connect %s: %m", s.sock);
  if (!(h = nbd_create ()))
    bail_out ("nbd_create");
  must (nbd_connect_socket (h, fd));
  check (h, fresh, "nbd_connect_socket (the caller's socket)");

  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
