/* fault-connection-lost: a command stranded by a dying connection fails with
 * ENOTCONN (as libnbd's; compat-server-dies checks that against both
 * libraries), and its message keeps the cause.
 *
 * Proves, through nbd_aio_command_completed (errno ENOTCONN, message
 * "nbd_aio_command_completed: ..." naming the cause):
 *  - the send breaks: nbdkit -s on a socketpair (nbd_connect_command) is
 *    killed and gone; the next nbd_aio_pread is queued, its send fails with
 *    EPIPE: the completion sees ENOTCONN, the message says "Broken pipe";
 *  - the receive breaks: 1 MiB reads and writes in flight, nbdkit frozen
 *    as the first reply arrives, then killed with our bytes unread: the
 *    nbd_poll that meets it fails with the transport's errno (ECONNRESET
 *    or EPIPE, as libnbd's), every stranded command with ENOTCONN, its
 *    message naming that errno's text;
 *  - the socket just ends (nbdkit killed once its log filter shows it read
 *    every request, which it holds in its delay filter): ENOTCONN, the
 *    message saying the server closed the connection.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define NR 8
#define WAIT_MS 10000           /* every wait is bounded by this */

struct rec {
  int calls, error;
};

static int
completion_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 0;
}

/* Command @cookie failed with ENOTCONN, its message naming @cause. */
static void
stranded (struct nbd_handle *h, int64_t cookie, const struct rec *r, const char *cause,
          const char *what)
{
  const char *msg;

  is_int (r->calls, 1, "%s: the completion ran once", what);
  is_int (r->error, ENOTCONN, "%s: with ENOTCONN", what);
  is_int (nbd_aio_command_completed (h, cookie), -1, "%s: nbd_aio_command_completed fails", what);
  is_errno (ENOTCONN, "%s: with ENOTCONN", what);
  msg = nbd_get_error ();
  ok (msg && strncmp (msg, "nbd_aio_command_completed: ", 27) == 0,
      "%s: naming nbd_aio_command_completed", what);
  ok (msg && strstr (msg, cause), "%s: the message names the cause, \"%s\": %s", what, cause,
      msg ? msg : "(none)");
}

static void
send_breaks (void)
{
  const char *what = "the send breaks";
  char *argv[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "size=1M", NULL };
  struct nbd_handle *h = nbd_create ();
  struct rec r = { 0 };
  struct pollfd p;
  char buf[512];
  int64_t c;

  if (!h || nbd_connect_command (h, argv) == -1)
    bail_out ("%s: nbd_connect_command: %s", what, nbd_get_error ());
  if (nbd_kill_subprocess (h, SIGKILL) == -1)
    bail_out ("%s: nbd_kill_subprocess: %s", what, nbd_get_error ());
  /* Until the server's end is closed: our socket reads EOF. */
  p = (struct pollfd) { .fd = nbd_aio_get_fd (h), .events = POLLIN };
  ok (poll (&p, 1, WAIT_MS) == 1 && (p.revents & (POLLIN | POLLHUP)), "%s: the server is gone",
      what);
  c = nbd_aio_pread (h, buf, sizeof buf, 0,
                     (nbd_completion_callback) { .callback = completion_cb, .user_data = &r }, 0);
  ok (c > 0, "%s: nbd_aio_pread is queued (its send then fails)", what);
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", what);
  stranded (h, c, &r, strerror (EPIPE), what);
  nbd_close (h);
}

static void
connection_ends (bool mid_transfer)
{
  const char *what = mid_transfer ? "the receive breaks" : "the socket ends";
  size_t len = mid_transfer ? 1024 * 1024 : 4096;
  const char *mid_args[] = { "memory", "size=64M", NULL };
  char logpath[4200], logarg[4300];
  const char *idle_args[] = { "-t", "16", "--filter=log", "--filter=delay", "memory",
                              "size=64M", logarg, "delay-read=60", "delay-write=60", NULL };
  struct test_server srv;
  struct nbd_handle *h;
  struct rec r[NR];
  char *buf[NR];
  int64_t c[NR];
  int poll_err = 0, nr_stranded = 0;
  char cause[256];

  snprintf (logpath, sizeof logpath, "%s/lost.log", servers_scratch_dir ());
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  if (server_start_nbdkit (&srv, mid_transfer ? mid_args : idle_args) == -1)
    bail_out ("%s: cannot start nbdkit", what);
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, srv.sock) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  memset (r, 0, sizeof r);
  for (int i = 0; i < NR; i++) {
    nbd_completion_callback cb = { .callback = completion_cb, .user_data = &r[i] };

    if (!(buf[i] = calloc (1, len)))
      bail_out ("calloc");
    c[i] = (i % 2) ? nbd_aio_pwrite (h, buf[i], len, (uint64_t) i * len, cb, 0)
                   : nbd_aio_pread (h, buf[i], len, (uint64_t) i * len, cb, 0);
    if (c[i] <= 0)
      bail_out ("%s: issuing: %s", what, nbd_get_error ());
  }
  if (mid_transfer) {
    for (int turn = 0; turn < 1000 && r[0].calls + r[1].calls == 0; turn++)
      if (nbd_poll (h, WAIT_MS) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    if (kill (srv.pid, SIGSTOP) == -1)
      bail_out ("SIGSTOP: %m");
  }
  else {
    /* Until the server has read every request (its log says so): killed
     * then, it leaves nothing unread, so the socket just ends. */
    int n = 0;

    for (int turn = 0;
         turn < 1000 && (n = server_log_count (logpath, server_log_requests)) < NR; turn++)
      if (nbd_poll (h, 10) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    is_int (n, NR, "%s: the server has read all %d requests", what, NR);
  }
  if (kill (srv.pid, SIGKILL) == -1)
    bail_out ("SIGKILL: %m");
  for (int turn = 0; turn < 100 && nbd_aio_in_flight (h) > 0; turn++)
    if (nbd_poll (h, 1000) == -1) {
      poll_err = nbd_get_errno ();
      break;
    }
  if (mid_transfer) {
    ok (poll_err == ECONNRESET || poll_err == EPIPE,
        "%s: nbd_poll fails with the transport's errno, as libnbd's: %s", what,
        poll_err ? strerrorname_np (poll_err) : "none");
    snprintf (cause, sizeof cause, "%s", strerror (poll_err));
  }
  else {
    is_int (poll_err, ENOTCONN, "%s: nbd_poll fails with ENOTCONN", what);
    snprintf (cause, sizeof cause, "server closed the connection");
  }
  for (int i = 0; i < NR; i++) {
    char name[64];

    if (r[i].calls == 1 && r[i].error == 0) {
      nbd_aio_command_completed (h, c[i]);
      continue;
    }
    snprintf (name, sizeof name, "%s: command %d", what, i);
    stranded (h, c[i], &r[i], cause, name);
    nr_stranded++;
  }
  ok (nr_stranded > 0, "%s: %d commands were stranded", what, nr_stranded);
  server_stop (&srv);
  nbd_close (h);
  for (int i = 0; i < NR; i++)
    free (buf[i]);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  /* SIGPIPE keeps its default action: a send to the dead socket that
   * raised it (instead of failing with EPIPE) would end the test. */
  send_breaks ();
  connection_ends (true);
  connection_ends (false);
  return done_testing ();
}
