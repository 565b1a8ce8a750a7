/* connect-socket-command: connecting over a socket the program made, to a
 * command on a socketpair, and by systemd socket activation; and
 * nbd_kill_subprocess.
 *
 * Proves:
 *  - nbd_connect_socket with a Unix socket we connected ourselves, and with
 *    our end of a socketpair whose other end is `nbdkit -s`, works; get_uri
 *    then fails (EINVAL, "nbd_get_uri: ") and kill_subprocess says ESRCH;
 *    a negative fd is EBADF and leaves the handle created;
 *  - nbd_connect_command (nbdkit -s --exit-with-parent memory 1M) works and
 *    reads back what it wrote; get_uri fails; nbd_kill_subprocess (0) sends
 *    SIGTERM (nbdkit then refuses requests); after SIGKILL the connection
 *    dies (ENOTCONN, the message naming the send's EPIPE; handle dead); bad
 *    signal numbers are EINVAL; close reaps the
 *    child; an empty argv is EINVAL (handle still created); a program that
 *    does not exist fails the connect (ENOENT) and leaves the handle dead;
 *  - nbd_connect_systemd_socket_activation (nbdkit memory 1M) works, its URI
 *    names the private socket and a second handle can connect with it while
 *    the first lives; kill_subprocess ends the server; close reaps it.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static char *nbdkit_s[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "1M", NULL };
static char *nbdkit_sa[] = { "nbdkit", "--exit-with-parent", "memory", "1M", NULL };

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

/* Children of this thread (the one that forks), live or zombie. */
static int
count_children (void)
{
  char path[64], buf[4096];
  FILE *f;
  int n = 0;
  size_t len;

  snprintf (path, sizeof path, "/proc/self/task/%d/children", (int) gettid ());
  f = fopen (path, "r");
  if (!f)
    return -1;
  len = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[len] = '\0';
  for (char *p = strtok (buf, " \n"); p; p = strtok (NULL, " \n"))
    n++;
  return n;
}

/* Wait (10 s at most) until the server closed its end: the fd reads EOF. */
static bool
wait_eof (struct nbd_handle *h)
{
  struct pollfd p = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

  return p.fd >= 0 && poll (&p, 1, 10000) == 1 && (p.revents & (POLLIN | POLLHUP));
}

static void
check_no_uri (struct nbd_handle *h, const char *what)
{
  char *uri = nbd_get_uri (h);

  ok (uri == NULL, "%s: nbd_get_uri has no URI to give", what);
  is_errno (EINVAL, "%s: EINVAL, as libnbd 1.14", what);
  ok (error_from ("nbd_get_uri"), "%s: the message starts with nbd_get_uri", what);
  free (uri);
}

static void
test_socket (const struct test_server *s)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct nbd_handle *h;
  int fd, sv[2];
  pid_t pid;
  char buf[512];

  /* A Unix socket we connected ourselves. */
  strcpy (sun.sun_path, s->sock);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
    bail_out ("connect %s: %m", s->sock);
  h = nbd_create ();
  is_int (nbd_connect_socket (h, fd), 0, "nbd_connect_socket with our own connected socket");
  is_int (nbd_get_size (h), 1048576, "size 1M");
  is_int (nbd_aio_get_fd (h), fd, "nbd_aio_get_fd is the socket we gave");
  check_no_uri (h, "socket");
  is_int (nbd_kill_subprocess (h, 0), -1, "nbd_kill_subprocess with no subprocess fails");
  is_errno (ESRCH, "with ESRCH");
  ok (error_from ("nbd_kill_subprocess"), "naming nbd_kill_subprocess");
  nbd_close (h);

  /* Our end of a socketpair, nbdkit -s on the other. */
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    bail_out ("socketpair: %m");
  pid = fork ();
  if (pid == -1)
    bail_out ("fork: %m");
  if (pid == 0) {
    dup2 (sv[1], 0);
    dup2 (sv[1], 1);
    execvp ("nbdkit", nbdkit_s);
    _exit (127);
  }
  close (sv[1]);
  h = nbd_create ();
  is_int (nbd_connect_socket (h, sv[0]), 0, "nbd_connect_socket with a socketpair to nbdkit -s");
  is_int (nbd_get_size (h), 1048576, "size 1M");
  memset (buf, 0x5a, sizeof buf);
  is_int (nbd_pwrite (h, buf, sizeof buf, 4096, 0), 0, "nbd_pwrite");
  memset (buf, 0, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 4096, 0) == 0 && buf[0] == 0x5a && buf[511] == 0x5a,
      "nbd_pread reads it back");
  check_no_uri (h, "socketpair");
  nbd_close (h);
  {
    int status = -1, i;
    pid_t w = 0;

    for (i = 0; i < 500 && (w = waitpid (pid, &status, WNOHANG)) == 0; i++)
      usleep (20000);
    ok (w == pid && WIFEXITED (status) && WEXITSTATUS (status) == 0,
        "closing the handle ended nbdkit -s cleanly");
    if (w == 0) {
      kill (pid, SIGKILL);
      waitpid (pid, NULL, 0);
    }
  }

  h = nbd_create ();
  is_int (nbd_connect_socket (h, -1), -1, "nbd_connect_socket (-1) fails");
  is_errno (EBADF, "with EBADF");
  ok (nbd_aio_is_created (h), "and leaves the handle newly created");
  nbd_close (h);
}

static void
test_command (void)
{
  struct nbd_handle *h;
  int before = count_children ();
  char buf[512];

  h = nbd_create ();
  is_int (nbd_connect_command (h, nbdkit_s), 0, "nbd_connect_command (nbdkit -s memory 1M)");
  is_int (nbd_get_size (h), 1048576, "size 1M");
  is_int (count_children (), before + 1, "the command is our child");
  memset (buf, 0xa5, sizeof buf);
  ok (nbd_pwrite (h, buf, sizeof buf, 0, 0) == 0 &&
      (memset (buf, 0, sizeof buf), nbd_pread (h, buf, sizeof buf, 0, 0)) == 0 &&
      (unsigned char) buf[100] == 0xa5, "write and read back through the command");
  check_no_uri (h, "command");
  is_int (nbd_kill_subprocess (h, -1), -1, "nbd_kill_subprocess (-1) is refused");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_kill_subprocess (h, 1000), -1, "nbd_kill_subprocess (1000) is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (nbd_aio_is_ready (h), "the refusals changed nothing");

  /* SIGTERM: nbdkit shuts down gracefully, which with a client attached
   * means either closing at once or answering ESHUTDOWN until the client
   * goes (measured: it varies).  Either proves the signal arrived. */
  is_int (nbd_kill_subprocess (h, 0), 0, "nbd_kill_subprocess (0) sends SIGTERM");
  {
    int64_t end = time (NULL) + 10;
    int r;

    while ((r = nbd_pread (h, buf, sizeof buf, 0, 0)) == 0 && time (NULL) < end)
      usleep (10000);
    ok (r == -1 && (nbd_get_errno () == ESHUTDOWN || nbd_get_errno () == ENOTCONN),
        "after SIGTERM the server refuses requests (%s: %s)",
        strerrorname_np (nbd_get_errno ()) ? strerrorname_np (nbd_get_errno ()) : "0",
        nbd_get_error () ? nbd_get_error () : "");
  }
  nbd_close (h);
  is_int (count_children (), before, "nbd_close reaped the child");

  /* SIGKILL: the connection dies. */
  h = nbd_create ();
  is_int (nbd_connect_command (h, nbdkit_s), 0, "another nbd_connect_command");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "it works");
  is_int (nbd_kill_subprocess (h, SIGKILL), 0, "nbd_kill_subprocess (SIGKILL)");
  ok (wait_eof (h), "the server is gone: its end is closed");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), -1, "then nbd_pread fails");
  /* As libnbd: ENOTCONN for the command; the send's EPIPE is the cause. */
  is_errno (ENOTCONN, "with ENOTCONN: the connection is gone");
  ok (error_from ("nbd_pread"), "naming nbd_pread");
  ok (nbd_get_error () && strstr (nbd_get_error (), "Broken pipe"),
      "and the cause, the send's EPIPE: %s", nbd_get_error () ? nbd_get_error () : "(none)");
  ok (nbd_aio_is_dead (h), "the handle is dead");
  is_int (nbd_flush (h, 0), -1, "and stays dead");
  is_errno (EINVAL, "EINVAL now (dead handle)");
  nbd_close (h);
  is_int (count_children (), before, "nbd_close reaped the killed child");

  h = nbd_create ();
  is_int (nbd_connect_command (h, (char *[]) { NULL }), -1, "an empty argv is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_connect_command"), "naming nbd_connect_command");
  ok (nbd_aio_is_created (h), "the handle is still newly created");
  is_int (nbd_connect_command (h, nbdkit_s), 0, "so it can still connect");
  nbd_close (h);

  h = nbd_create ();
  is_int (nbd_connect_command (h, (char *[]) { "/nonexistent/nbd-server-program", NULL }), -1,
          "a program that does not exist fails the connect");
  is_errno (ENOENT, "with ENOENT");
  ok (error_from ("nbd_connect_command"), "naming nbd_connect_command");
  ok (nbd_aio_is_dead (h), "the handle is dead");
  nbd_close (h);
  is_int (count_children (), before, "no child left behind");
}

static void
test_socket_activation (void)
{
  struct nbd_handle *h, *h2;
  int before = count_children ();
  char *uri;

  h = nbd_create ();
  is_int (nbd_connect_systemd_socket_activation (h, nbdkit_sa), 0,
          "nbd_connect_systemd_socket_activation (nbdkit memory 1M)");
  is_int (nbd_get_size (h), 1048576, "size 1M");
  is_int (count_children (), before + 1, "the server is our child");

  uri = nbd_get_uri (h);
  ok (uri && strncmp (uri, "nbd+unix:///?socket=", 20) == 0,
      "nbd_get_uri names the private socket (%s)", uri ? uri : "NULL");
  h2 = nbd_create ();
  ok (uri && nbd_connect_uri (h2, uri) == 0, "a second handle connects with that URI");
  is_int (nbd_get_size (h2), 1048576, "and sees the same export");
  nbd_close (h2);
  free (uri);

  is_int (nbd_kill_subprocess (h, SIGKILL), 0, "nbd_kill_subprocess (SIGKILL) works on it");
  ok (wait_eof (h), "the server is gone: the connection is closed");
  is_int (nbd_flush (h, 0), -1, "then nbd_flush fails");
  ok (nbd_aio_is_dead (h), "the handle is dead");
  nbd_close (h);
  is_int (count_children (), before, "nbd_close reaped the server");

  h = nbd_create ();
  is_int (nbd_connect_systemd_socket_activation (h, (char *[]) { NULL }), -1,
          "socket activation with an empty argv is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (nbd_aio_is_created (h), "and leaves the handle newly created");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  signal (SIGPIPE, SIG_IGN);
  if (server_start_nbdkit (&s, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  test_socket (&s);
  test_command ();
  test_socket_activation ();

  server_stop (&s);
  return done_testing ();
}
