/* connect-aio: every nbd_aio_connect* form, driven by the test's own poll
 * loop (nbd_aio_get_fd, nbd_aio_get_direction, nbd_aio_notify_read/write)
 * until nbd_aio_is_ready.
 *
 * Proves, against an nbdkit eval export of 1M whose open waits until the
 * test creates a release file, which it does only once the aio call has
 * returned (an event, not a delay: no handshake can finish inside the aio
 * call that starts it, while the core runs the handshake as far as the
 * socket allows, which against a fast local server can be all of it):
 * nbd_aio_connect with a sockaddr_un and
 * with a sockaddr_in (TCP_NODELAY set), nbd_aio_connect_unix, _tcp, _uri,
 * _socket, _command and _systemd_socket_activation each return at once with
 * the handle connecting, need the caller's loop to finish, and reach ready
 * with the right size; the loop sees the direction the state needs; in opt
 * mode the loop ends negotiating and nbd_aio_opt_go finishes the same way;
 * a second aio connect while connecting is EINVAL; an aio connect to a
 * closed TCP port fails with ECONNREFUSED, at once or in the loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static struct test_server nk, nkt;
/* Every server's open (and so its reply to NBD_OPT_GO) waits until the
 * release file exists, so that no aio connect can finish within its own
 * call: the handshake must need our loop.  The test creates the file once
 * the call has returned and removes it once the handle is ready; the wait
 * gives up after two minutes if the test died. */
static char release[4200], open_arg[4500];
#define HELD_MEMORY "eval", open_arg, "get_size=echo 1048576", \
                    "pread=dd if=/dev/zero count=$3 iflag=count_bytes"
static char *nbdkit_s[] = { "nbdkit", "-s", "--exit-with-parent", HELD_MEMORY, NULL };
static char *nbdkit_sa[] = { "nbdkit", "--exit-with-parent", HELD_MEMORY, NULL };

/* Let the servers open the export (and answer NBD_OPT_GO). */
static void
release_open (void)
{
  int fd = open (release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

  if (fd == -1)
    bail_out ("creating %s: %m", release);
  close (fd);
}

/* Hold the next open again. */
static void
hold_open (void)
{
  if (unlink (release) == -1 && errno != ENOENT)
    bail_out ("removing %s: %m", release);
}

struct loop_stats {
  int rounds;
  int reads, writes;            /* notify calls made */
  bool bad_direction;           /* 0 while connecting or negotiating */
};

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The caller's event loop: until @done (h) or dead, bounded (60 s, not a
 * timing).  Returns 0 when done, -1 on death or timeout. */
static int
drive (struct nbd_handle *h, int (*done) (struct nbd_handle *), struct loop_stats *st)
{
  int64_t end = now_ms () + 60000;

  memset (st, 0, sizeof *st);
  while (!done (h)) {
    struct pollfd p;
    unsigned dir;
    int r;

    if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h) || now_ms () > end)
      return -1;
    p.fd = nbd_aio_get_fd (h);
    dir = nbd_aio_get_direction (h);
    if (p.fd < 0 || dir == 0) {
      st->bad_direction = true;
      return -1;
    }
    p.events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
               ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
    p.revents = 0;
    st->rounds++;
    r = poll (&p, 1, 1000);
    if (r == -1)
      return -1;
    if (r == 0)
      continue;
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && (dir & LIBNBD_AIO_DIRECTION_READ)) {
      st->reads++;
      if (nbd_aio_notify_read (h) == -1)
        return -1;
    }
    else if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
      st->writes++;
      if (nbd_aio_notify_write (h) == -1)
        return -1;
    }
  }
  return 0;
}

static void
finish (struct nbd_handle *h, int r, const char *what)
{
  struct loop_stats st;

  if (!ok (r == 0, "%s returns 0", what))
    diag ("%s", nbd_get_error ());
  ok (nbd_aio_is_connecting (h), "%s: the handle is connecting on return", what);
  ok (!nbd_aio_is_ready (h), "%s: and not yet ready", what);
  release_open ();
  if (!ok (drive (h, nbd_aio_is_ready, &st) == 0, "%s: our loop brings it to ready", what))
    diag ("%s", nbd_get_error () ? nbd_get_error () : "");
  hold_open ();
  ok (st.rounds >= 1 && st.reads >= 1 && !st.bad_direction,
      "%s: it took the loop (%d rounds, %d reads, %d writes)", what, st.rounds, st.reads,
      st.writes);
  is_int (nbd_get_size (h), 1048576, "%s: size 1M", what);
  is_int (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ,
          "%s: once ready and idle the direction is READ", what);
}

static void
test_sockaddr_un (void)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct nbd_handle *h = nbd_create ();

  strcpy (sun.sun_path, nk.sock);
  finish (h, nbd_aio_connect (h, (struct sockaddr *) &sun, sizeof sun), "nbd_aio_connect (sockaddr_un)");
  nbd_close (h);
}

static void
test_sockaddr_in (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons (nkt.tcp_port),
                             .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  struct nbd_handle *h = nbd_create ();
  int v = 0;
  socklen_t len = sizeof v;

  finish (h, nbd_aio_connect (h, (struct sockaddr *) &sin, sizeof sin), "nbd_aio_connect (sockaddr_in)");
  ok (getsockopt (nbd_aio_get_fd (h), IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v,
      "nbd_aio_connect (sockaddr_in): TCP_NODELAY is set");
  nbd_close (h);
}

static void
test_unix_twice (void)
{
  struct nbd_handle *h = nbd_create ();
  int r = nbd_aio_connect_unix (h, nk.sock);

  is_int (nbd_aio_connect_unix (h, nk.sock), -1, "a second nbd_aio_connect_unix while connecting");
  is_errno (EINVAL, "fails with EINVAL");
  finish (h, r, "nbd_aio_connect_unix");
  nbd_close (h);
}

static void
test_tcp (void)
{
  struct nbd_handle *h = nbd_create ();
  char port[16];

  snprintf (port, sizeof port, "%d", nkt.tcp_port);
  finish (h, nbd_aio_connect_tcp (h, "127.0.0.1", port), "nbd_aio_connect_tcp");
  nbd_close (h);
}

static void
test_uri (void)
{
  struct nbd_handle *h = nbd_create ();
  char uri[600], *got;

  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", nk.sock);
  finish (h, nbd_aio_connect_uri (h, uri), "nbd_aio_connect_uri");
  got = nbd_get_uri (h);
  is_str (got, uri, "nbd_aio_connect_uri: nbd_get_uri gives it back");
  free (got);
  nbd_close (h);
}

static void
test_socket (void)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct nbd_handle *h = nbd_create ();
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  strcpy (sun.sun_path, nk.sock);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    bail_out ("connect: %m");
  finish (h, nbd_aio_connect_socket (h, fd), "nbd_aio_connect_socket");
  nbd_close (h);
}

static void
test_command (void)
{
  struct nbd_handle *h = nbd_create ();

  finish (h, nbd_aio_connect_command (h, nbdkit_s), "nbd_aio_connect_command");
  nbd_close (h);
}

static void
test_socket_activation (void)
{
  struct nbd_handle *h = nbd_create ();

  finish (h, nbd_aio_connect_systemd_socket_activation (h, nbdkit_sa),
          "nbd_aio_connect_systemd_socket_activation");
  nbd_close (h);
}

static int
go_done (struct nbd_handle *h)
{
  return !nbd_aio_is_connecting (h);
}

static void
test_opt_mode (void)
{
  struct nbd_handle *h = nbd_create ();
  struct loop_stats st;

  must (nbd_set_opt_mode (h, true));
  is_int (nbd_aio_connect_unix (h, nk.sock), 0, "opt mode: nbd_aio_connect_unix");
  ok (drive (h, nbd_aio_is_negotiating, &st) == 0, "opt mode: our loop brings it to negotiating");
  is_str (nbd_connection_state (h), "negotiating", "opt mode: the state is negotiating");
  is_int (nbd_aio_get_direction (h), 0, "opt mode: nothing to wait for while negotiating");
  is_int (nbd_aio_opt_go (h, NBD_NULL_COMPLETION), 0, "opt mode: nbd_aio_opt_go");
  release_open ();
  ok (drive (h, go_done, &st) == 0, "opt mode: our loop finishes GO");
  hold_open ();
  ok (nbd_aio_is_ready (h), "opt mode: ready after GO");
  is_int (nbd_get_size (h), 1048576, "opt mode: size 1M");
  nbd_close (h);
}

static void
test_refused (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  struct nbd_handle *h = nbd_create ();
  struct loop_stats st;
  char port[16];
  int fd = socket (AF_INET, SOCK_STREAM, 0), r;

  if (fd == -1 || bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1)
    bail_out ("no free port: %m");
  snprintf (port, sizeof port, "%d", ntohs (sin.sin_port));
  close (fd);

  r = nbd_aio_connect_tcp (h, "127.0.0.1", port);
  if (r == 0)
    r = drive (h, nbd_aio_is_ready, &st);
  is_int (r, -1, "an aio connect to a closed port fails (at once or in the loop)");
  is_errno (ECONNREFUSED, "with ECONNREFUSED");
  ok (!nbd_aio_is_ready (h) && !nbd_aio_is_connecting (h), "and the handle is not connecting");
  nbd_close (h);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  snprintf (release, sizeof release, "%s/connect-aio-release", servers_scratch_dir ());
  snprintf (open_arg, sizeof open_arg,
            "open=i=0; while [ ! -e '%s' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); "
            "done", release);
  if (server_start_nbdkit (&nk, (const char *const[]) { HELD_MEMORY, NULL }) == -1 ||
      server_start_nbdkit_tcp (&nkt, (const char *const[]) { HELD_MEMORY, NULL }) == -1)
    bail_out ("cannot start nbdkit");

  test_sockaddr_un ();
  test_sockaddr_in ();
  test_unix_twice ();
  test_tcp ();
  test_uri ();
  test_socket ();
  test_command ();
  test_socket_activation ();
  test_opt_mode ();
  test_refused ();

  server_stop (&nkt);
  server_stop (&nk);
  return done_testing ();
}
