/* connect: every way a libnbd 1.14 program connects, what nbd_get_uri then
 * says, and how a handle ends.
 *
 * nbd_connect_command (nbdkit -s, then nbd_kill_subprocess) and
 * nbd_aio_connect_command driven with nbd_poll; a command that exits at once
 * fails the handshake; nbd_connect_systemd_socket_activation (nbdkit reads
 * LISTEN_FDS); nbd_connect_uri with nbd+unix:// and with nbd:// on TCP
 * 127.0.0.1, nbd_connect_unix, nbd_connect_tcp and nbd_connect_socket, each
 * with its nbd_get_uri (exact, or NULL with EINVAL where no URI can be made)
 * and the export name the URI set.  A TCP connect that no server answers
 * leaves the handle created, so it can connect again.  nbd_shutdown with
 * requests queued lets every one of them complete (with
 * LIBNBD_SHUTDOWN_ABANDON_PENDING too, as the socket took them), then it is
 * closed: I/O and a second nbd_shutdown fail with EINVAL, while facts such
 * as the size and the URI stay readable.  nbd_close of a handle in any state.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define MiB (1024 * 1024)

static int
starts_with (const char *s, const char *prefix)
{
  return s && strncmp (s, prefix, strlen (prefix)) == 0;
}

/* nbd_get_uri, compared with @want (NULL: must fail with EINVAL). */
static void
check_uri (struct nbd_handle *h, const char *want, const char *what)
{
  char *u = nbd_get_uri (h);

  if (want) {
    is_str (u, want, "%s: nbd_get_uri", what);
  }
  else {
    ok (u == NULL, "%s: nbd_get_uri has no URI to give", what);
    is_errno (EINVAL, "%s: with EINVAL", what);
    ok (starts_with (nbd_get_error (), "nbd_get_uri: "), "%s: message names nbd_get_uri", what);
  }
  free (u);
}

int
main (void)
{
  const char *unix_args[] = { "memory", "size=3M", NULL };
  const char *tcp_args[] = { "memory", "size=4M", NULL };
  struct test_server us, ts;
  struct nbd_handle *h;
  char uri[256], port[16];
  char buf[4096];
  int lowest, probe;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  if (server_start_nbdkit (&us, unix_args) == -1 || server_start_nbdkit_tcp (&ts, tcp_args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  snprintf (port, sizeof port, "%d", ts.tcp_port);

  /* ---- nbd_connect_command ---- */
  {
    char *argv[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "size=1M", NULL };

    h = nbd_create ();
    if (!h)
      bail_out ("nbd_create: %s", nbd_get_error ());
    if (!ok (nbd_connect_command (h, argv) == 0, "nbd_connect_command nbdkit -s"))
      diag ("%s", nbd_get_error ());
    is_int (nbd_get_size (h), 1 * MiB, "command: nbd_get_size");
    ok (nbd_pwrite (h, "cmd", 3, 0, 0) == 0 && nbd_pread (h, buf, 3, 0, 0) == 0 &&
        memcmp (buf, "cmd", 3) == 0, "command: write and read back");
    check_uri (h, NULL, "command");
    ok (nbd_shutdown (h, 0) == 0, "command: nbd_shutdown");
    ok (nbd_aio_is_closed (h), "command: closed");
    is_int (nbd_kill_subprocess (h, 0), 0, "command: nbd_kill_subprocess");
    nbd_close (h);
  }

  /* ---- nbd_aio_connect_command, driven by nbd_poll ---- */
  {
    char *argv[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "size=512K", NULL };
    int r = 0;

    h = nbd_create ();
    ok (nbd_aio_connect_command (h, argv) == 0, "nbd_aio_connect_command");
    while (!nbd_aio_is_ready (h) && !nbd_aio_is_dead (h) && (r = nbd_poll (h, 10000)) == 1)
      ;
    ok (nbd_aio_is_ready (h), "nbd_poll runs the handshake to ready");
    is_int (nbd_get_size (h), 512 * 1024, "aio command: nbd_get_size");
    nbd_close (h);                /* closing a ready handle kills the command */
  }

  /* ---- A command that is not a server ---- */
  {
    char *argv[] = { "/bin/false", NULL };

    h = nbd_create ();
    ok (nbd_connect_command (h, argv) == -1, "nbd_connect_command /bin/false fails");
    ok (starts_with (nbd_get_error (), "nbd_connect_command: "),
        "the message names nbd_connect_command (%s)", nbd_get_error ());
    ok (nbd_aio_is_dead (h), "and the handle is dead");
    nbd_close (h);
  }

  /* ---- Systemd socket activation ---- */
  {
    char *argv[] = { "nbdkit", "--exit-with-parent", "memory", "size=2M", NULL };
    char *u;

    h = nbd_create ();
    if (!ok (nbd_connect_systemd_socket_activation (h, argv) == 0,
             "nbd_connect_systemd_socket_activation nbdkit"))
      diag ("%s", nbd_get_error ());
    is_int (nbd_get_size (h), 2 * MiB, "socket activation: nbd_get_size");
    u = nbd_get_uri (h);
    ok (starts_with (u, "nbd+unix:///?socket=/"), "socket activation: a nbd+unix URI (%s)",
        u ? u : "NULL");
    free (u);
    ok (nbd_pread (h, buf, sizeof buf, 0, 0) == 0, "socket activation: nbd_pread");
    ok (nbd_shutdown (h, 0) == 0, "socket activation: nbd_shutdown");
    nbd_close (h);
  }

  /* ---- URIs ---- */
  h = nbd_create ();
  if (!ok (nbd_connect_uri (h, us.uri) == 0, "nbd_connect_uri %s", us.uri))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h), 3 * MiB, "nbd+unix: nbd_get_size");
  check_uri (h, us.uri, "nbd+unix");
  nbd_close (h);

  {
    char *want;

    h = nbd_create ();
    ok (nbd_connect_unix (h, us.sock) == 0, "nbd_connect_unix");
    if (asprintf (&want, "nbd+unix:///?socket=%s", us.sock) == -1)
      bail_out ("asprintf");
    check_uri (h, want, "nbd_connect_unix");
    free (want);
    nbd_close (h);
  }

  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/", port);
  h = nbd_create ();
  if (!ok (nbd_connect_uri (h, uri) == 0, "nbd_connect_uri %s", uri))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h), 4 * MiB, "nbd:// on TCP: nbd_get_size");
  check_uri (h, uri, "nbd://");
  nbd_close (h);

  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/foo", port);
  h = nbd_create ();
  ok (nbd_connect_uri (h, uri) == 0, "nbd_connect_uri with export name foo");
  {
    char *e = nbd_get_export_name (h);
    is_str (e, "foo", "the URI's path sets the export name");
    free (e);
  }
  check_uri (h, uri, "nbd:// with an export name");
  nbd_close (h);

  h = nbd_create ();
  ok (nbd_connect_tcp (h, "127.0.0.1", port) == 0, "nbd_connect_tcp");
  snprintf (uri, sizeof uri, "nbd://127.0.0.1:%s/", port);
  check_uri (h, uri, "nbd_connect_tcp");
  nbd_close (h);

  /* ---- A TCP port nobody listens on, then the real one ---- */
  h = nbd_create ();
  ok (nbd_connect_tcp (h, "127.0.0.1", "1") == -1, "nbd_connect_tcp to port 1 fails");
  is_errno (ECONNREFUSED, "with ECONNREFUSED");
  ok (starts_with (nbd_get_error (), "nbd_connect_tcp: "), "the message names nbd_connect_tcp");
  ok (nbd_aio_is_created (h), "the handle is created again");
  ok (nbd_connect_tcp (h, "127.0.0.1", port) == 0, "so it can connect to the real port");
  is_int (nbd_get_size (h), 4 * MiB, "and works");
  check_uri (h, uri, "the second connect");
  nbd_close (h);

  /* ---- nbd_connect_socket ---- */
  {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strncpy (sun.sun_path, us.sock, sizeof sun.sun_path - 1);
    if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
      bail_out ("connect %s: %s", us.sock, strerror (errno));
    h = nbd_create ();
    ok (nbd_connect_socket (h, fd) == 0, "nbd_connect_socket");
    is_int (nbd_get_size (h), 3 * MiB, "socket: nbd_get_size");
    is_int (nbd_aio_get_fd (h), fd, "nbd_aio_get_fd is our socket");
    check_uri (h, NULL, "nbd_connect_socket");
    nbd_close (h);
    ok (fcntl (fd, F_GETFD) == -1 && errno == EBADF, "nbd_close closed the socket it was given");
  }

  /* ---- nbd_shutdown with requests queued, then closed ---- */
  {
    static char rbuf[8][4096];
    int64_t c[8];
    int all_ok = 1;

    h = nbd_create ();
    ok (nbd_connect_unix (h, us.sock) == 0, "connect for shutdown");
    ok (nbd_pwrite (h, "data", 4, 8192, 0) == 0, "a write");
    for (int i = 0; i < 8; i++)
      c[i] = nbd_aio_pread (h, rbuf[i], 4096, 8192, NBD_NULL_COMPLETION, 0);
    is_int (nbd_aio_in_flight (h), 8, "eight reads in flight");
    ok (nbd_shutdown (h, 0) == 0, "nbd_shutdown with them pending");
    ok (nbd_aio_is_closed (h), "the handle is closed");
    is_int (nbd_aio_in_flight (h), 0, "nothing in flight");
    /* Each was sent before NBD_CMD_DISC and answered: with the data, or
     * (nbdkit, if NBD_CMD_DISC overtook it in the server) with ESHUTDOWN. */
    for (int i = 0; i < 8; i++) {
      int r = nbd_aio_command_completed (h, c[i]);
      if (r == 1 ? memcmp (rbuf[i], "data", 4) != 0
          : r != -1 || nbd_get_errno () != ESHUTDOWN) {
        diag ("read %d: %d: %s", i, r, r == -1 ? nbd_get_error () : "wrong data");
        all_ok = 0;
      }
    }
    ok (all_ok, "every pending read was answered before the close");

    ok (nbd_pread (h, buf, 512, 0, 0) == -1, "nbd_pread once closed fails");
    is_errno (EINVAL, "with EINVAL");
    ok (starts_with (nbd_get_error (), "nbd_pread: "), "the message names nbd_pread");
    ok (nbd_shutdown (h, 0) == -1, "a second nbd_shutdown fails");
    is_errno (EINVAL, "with EINVAL");
    ok (nbd_aio_get_fd (h) == -1, "no fd once closed");
    is_errno (EINVAL, "with EINVAL");
    is_int (nbd_get_size (h), 3 * MiB, "the size is still known");
    is_int (nbd_is_read_only (h), 0, "so are the flags");
    {
      char *want;
      if (asprintf (&want, "nbd+unix:///?socket=%s", us.sock) == -1)
        bail_out ("asprintf");
      check_uri (h, want, "closed");
      free (want);
    }
    nbd_close (h);
  }

  /* ---- ABANDON_PENDING: requests the socket took are not abandoned ---- */
  {
    static char rbuf[8][512];
    int64_t c[8];
    int done = 0;

    h = nbd_create ();
    ok (nbd_connect_unix (h, us.sock) == 0, "connect for an abandoning shutdown");
    for (int i = 0; i < 8; i++)
      c[i] = nbd_aio_pread (h, rbuf[i], 512, 8192, NBD_NULL_COMPLETION, 0);
    ok (nbd_shutdown (h, LIBNBD_SHUTDOWN_ABANDON_PENDING) == 0,
        "nbd_shutdown (LIBNBD_SHUTDOWN_ABANDON_PENDING)");
    for (int i = 0; i < 8; i++) {
      int r = nbd_aio_command_completed (h, c[i]);
      if (r == 1 ? memcmp (rbuf[i], "data", 4) == 0 : r == -1 && nbd_get_errno () == ESHUTDOWN)
        done++;
      else
        diag ("read %d: %d: %s", i, r, r == -1 ? nbd_get_error () : "wrong data");
    }
    is_int (done, 8, "eight small reads fit the socket: none abandoned (ENOTCONN), all answered");
    nbd_close (h);
  }

  /* nbd_close of handles that never connected, or died: every descriptor
   * they opened is closed again, so the lowest free one is the same (a
   * leaked one would be the lowest free one at the time). */
  lowest = dup (STDIN_FILENO);
  close (lowest);
  nbd_close (nbd_create ());
  h = nbd_create ();
  nbd_connect_unix (h, "/nonexistent/t4/socket");
  ok (nbd_aio_is_dead (h), "a failed unix connect leaves the handle dead");
  nbd_close (h);
  nbd_close (NULL);
  probe = dup (STDIN_FILENO);
  close (probe);
  is_int (probe, lowest, "nbd_close of new, dead and NULL handles leaves no descriptor open");

  server_stop (&us);
  server_stop (&ts);
  return done_testing ();
}
