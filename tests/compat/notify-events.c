/* notify-events: nbd_aio_notify_read and nbd_aio_notify_write in every
 * state a program can reach.
 *
 * As libnbd: an event is valid exactly when nbd_aio_get_direction includes
 * it.  Valid, the call returns 0; otherwise -1 with EINVAL and a message
 * starting "nbd_aio_notify_<event>: ", and the handle is unchanged.  So
 * notify_write on a ready handle with nothing to send fails, as does any
 * event on a new, negotiating, closed or dead handle; while a large write
 * waits for a server that is not reading (stopped with SIGSTOP), the
 * direction asks for both and notify_write succeeds.  Right after
 * nbd_aio_connect_unix the libraries differ in where they stand (libnbd
 * waits to write, libnbd-core may already be reading), but each follows
 * its own direction.  libnbd-core only: a notify_write answering the same
 * poll as a notify_read that already sent what was queued succeeds, once.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define BIG_WRITE (32 * 1024 * 1024)    /* far more than a socket buffers */

enum kase { NEW, CONNECT_CALLED, NEGOTIATING, READY, READ_IN_FLIGHT, CLOSED, DEAD, NR_CASES };

static const char *const case_names[] = {
  "a new handle", "just after nbd_aio_connect_unix", "a negotiating handle", "a ready handle",
  "a ready handle with a read in flight", "a closed handle", "a dead handle",
};

static struct test_server srv;
static char buf[512];

static struct nbd_handle *
prepare (enum kase k)
{
  struct nbd_handle *h = nbd_create ();
  char *true_argv[] = { (char *) "true", NULL };
  int r = 0;

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  switch (k) {
  case NEW:
    break;
  case CONNECT_CALLED:
    r = nbd_aio_connect_unix (h, srv.sock);
    break;
  case NEGOTIATING:
    if (nbd_set_opt_mode (h, true) == -1)
      bail_out ("nbd_set_opt_mode: %s", nbd_get_error ());
    r = nbd_connect_unix (h, srv.sock);
    break;
  case READY:
    r = nbd_connect_unix (h, srv.sock);
    break;
  case READ_IN_FLIGHT:
    r = nbd_connect_unix (h, srv.sock);
    if (r == 0 && nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0) == -1)
      r = -1;
    break;
  case CLOSED:
    r = nbd_connect_unix (h, srv.sock);
    if (r == 0)
      r = nbd_shutdown (h, 0);
    break;
  case DEAD:
    /* A server that exits at once: the handshake fails, the handle dies. */
    if (nbd_connect_command (h, true_argv) != -1)
      bail_out ("connecting to \"true\" succeeded");
    if (!nbd_aio_is_dead (h))
      bail_out ("the handle is not dead after a failed handshake");
    break;
  case NR_CASES:
    abort ();
  }
  if (r == -1)
    bail_out ("%s: %s", case_names[k], nbd_get_error ());
  return h;
}

/* One event on @h: valid exactly when the direction asks for it. */
static void
check_event (struct nbd_handle *h, bool write, const char *what)
{
  const char *fn = write ? "nbd_aio_notify_write" : "nbd_aio_notify_read";
  unsigned want = write ? LIBNBD_AIO_DIRECTION_WRITE : LIBNBD_AIO_DIRECTION_READ;
  unsigned dir = nbd_aio_get_direction (h);
  int r = write ? nbd_aio_notify_write (h) : nbd_aio_notify_read (h);

  if (dir & want) {
    if (!ok (r == 0, "%s: %s, which the direction (%u) asks for, succeeds", what, fn, dir))
      diag ("got %d: %s", r, nbd_get_error ());
  }
  else {
    int err = nbd_get_errno ();
    const char *msg = nbd_get_error ();
    size_t n = strlen (fn);

    if (!ok (r == -1 && err == EINVAL && msg && strncmp (msg, fn, n) == 0 && msg[n] == ':',
             "%s: %s, which the direction (%u) does not ask for, fails with EINVAL", what, fn,
             dir))
      diag ("got %d, %s, \"%s\"", r, err ? strerrorname_np (err) : "errno 0",
            msg ? msg : "(no message)");
  }
}

/* Wait until @pid (our child: nbdkit run in the foreground) is stopped,
 * so it reads nothing more: waitpid reports the stop itself, no clock. */
static void
wait_stopped (pid_t pid)
{
  int status;
  pid_t r;

  while ((r = waitpid (pid, &status, WUNTRACED)) == -1 && errno == EINTR)
    ;
  if (r != pid)
    bail_out ("waitpid: %s", strerror (errno));
  if (!WIFSTOPPED (status))
    bail_out ("the server ended instead of stopping (status 0x%x)", status);
}

#ifdef LIBNBD_CORE
/* libnbd-core's direction asks to write while requests wait to leave
 * together, and notify_read sends them after the replies: the loop that
 * polled for both and calls notify_read, then notify_write for the same
 * poll, must not fail for it.  (libnbd sends each request at once, so its
 * direction seldom asks for both.)  Once only: a second notify_write is
 * invalid again. */
static void
absorbed_write (void)
{
  struct nbd_handle *h = prepare (READY);
  static char buf2[512];
  struct pollfd pfd = { .events = POLLIN };

  if (nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0) == -1 ||
      nbd_aio_pread (h, buf2, sizeof buf2, 0, NBD_NULL_COMPLETION, 0) == -1)
    bail_out ("nbd_aio_pread: %s", nbd_get_error ());
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_BOTH,
           "the second read waits to go out: the direction asks for both");
  pfd.fd = nbd_aio_get_fd (h);
  if (poll (&pfd, 1, 60000) != 1)
    bail_out ("no reply within 60 s");
  ok (nbd_aio_notify_read (h) == 0, "notify_read reads the first reply, sends the second read");
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ, "nothing is left to send");
  ok (nbd_aio_notify_write (h) == 0, "notify_write for the same poll succeeds");
  check_event (h, true, "after that");
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 60000) != 1)
      bail_out ("nbd_poll: no progress in 60 s: %s", nbd_get_error ());
  nbd_close (h);
}
#endif

int
main (void)
{
  const char *args[] = { "memory", "size=64M", NULL };
  struct nbd_handle *h;
  char *big;
  unsigned dir;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&srv, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));

  for (enum kase k = 0; k < NR_CASES; k++)
    for (int write = 0; write <= 1; write++) {
      h = prepare (k);
      dir = nbd_aio_get_direction (h);
      switch (k) {
      case NEW:
      case NEGOTIATING:
      case CLOSED:
      case DEAD:
        is_uint (dir, 0, "%s waits for nothing", case_names[k]);
        break;
      case READY:
      case READ_IN_FLIGHT:
        /* The regression: notify_write here used to succeed. */
        is_uint (dir, LIBNBD_AIO_DIRECTION_READ, "%s waits only to read", case_names[k]);
        break;
      default:
        break;
      }
      check_event (h, write, case_names[k]);
      nbd_close (h);
    }

  /* A write stuck behind a server that reads nothing: the direction asks
   * for both events, and notify_write, valid, leaves it so.  (notify_read
   * is not tried: with nothing to read, libnbd 1.14 pauses the write to wait
   * for a reply, which the server cannot send before the rest of the write,
   * and stalls.) */
  big = calloc (1, BIG_WRITE);
  if (!big)
    bail_out ("calloc");
  h = prepare (READY);
  if (kill (srv.pid, SIGSTOP) == -1)
    bail_out ("SIGSTOP: %s", strerror (errno));
  wait_stopped (srv.pid);
  ok (nbd_aio_pwrite (h, big, BIG_WRITE, 0, NBD_NULL_COMPLETION, 0) > 0,
      "a 32 MiB write to a stopped server is queued");
  dir = nbd_aio_get_direction (h);
  is_uint (dir, LIBNBD_AIO_DIRECTION_BOTH, "and the direction asks to read and to write");
  check_event (h, true, "a write the server does not read");
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_BOTH, "and still does");
  if (kill (srv.pid, SIGCONT) == -1)
    bail_out ("SIGCONT: %s", strerror (errno));
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, 60000) != 1)
      bail_out ("nbd_poll: no progress in 60 s: %s", nbd_get_error ());
  ok (nbd_shutdown (h, 0) == 0, "the write completes once the server runs again");
  nbd_close (h);
  free (big);

#ifdef LIBNBD_CORE
  absorbed_write ();
#endif

  server_stop (&srv);
  return done_testing ();
}
