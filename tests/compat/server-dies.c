/* server-dies: commands stranded when the server dies fail with ENOTCONN,
 * which is what libnbd programs test for.
 *
 * nbdkit is killed (SIGKILL) with requests in flight:
 *  - "idle": 16 aio reads and writes that the server has all read (its log
 *    filter says so) and holds (delay filter): the socket just ends;
 *  - "mid-transfer": 16 reads and writes of 1 MiB, the server frozen
 *    (SIGSTOP) as the first reply arrives, then killed with our bytes
 *    unread, so the socket breaks (ECONNRESET or EPIPE underneath);
 * in both, every completion callback runs once, and each command that had
 * not completed sees *error == ENOTCONN and nbd_aio_command_completed
 * fails with ENOTCONN ("nbd_aio_command_completed: ...").  A sync
 * nbd_pread waiting for its reply when the server is killed (by a thread
 * that waits for the log filter to show the read) fails with ENOTCONN.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define NR 16
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
  return 0;                     /* retired below, by nbd_aio_command_completed */
}

static void
killed_with_commands (bool mid_transfer)
{
  const char *what = mid_transfer ? "mid-transfer" : "idle";
  size_t len = mid_transfer ? 1024 * 1024 : 4096;
  char logpath[4200], logarg[4300];
  struct test_server srv;
  struct nbd_handle *h;
  struct rec r[NR];
  char *buf[NR];
  int64_t c[NR];
  int stranded = 0, cb_enotconn = 0, cc_enotconn = 0, named = 0, once = 0, succeeded = 0;

  snprintf (logpath, sizeof logpath, "%s/dies-%s.log", servers_scratch_dir (), what);
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  {
    const char *idle_args[] = { "-t", "16", "--filter=log", "--filter=delay", "memory",
                                "size=64M", logarg, "delay-read=60", "delay-write=60", NULL };
    const char *mid_args[] = { "memory", "size=64M", NULL };

    if (server_start_nbdkit (&srv, mid_transfer ? mid_args : idle_args) == -1)
      bail_out ("%s: cannot start nbdkit", what);
  }
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
    /* Until the first reply, then freeze the server where it is. */
    for (int turn = 0; turn < 1000 && r[0].calls + r[1].calls == 0; turn++)
      if (nbd_poll (h, WAIT_MS) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    if (kill (srv.pid, SIGSTOP) == -1)
      bail_out ("SIGSTOP: %m");
  }
  else {
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
    if (nbd_poll (h, 1000) == -1)
      break;
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing is left in flight", what);

  for (int i = 0; i < NR; i++) {
    int rc;

    once += r[i].calls == 1;
    if (r[i].calls != 1 || r[i].error == 0) {
      succeeded += nbd_aio_command_completed (h, c[i]) == 1;
      continue;
    }
    stranded++;
    cb_enotconn += r[i].error == ENOTCONN;
    rc = nbd_aio_command_completed (h, c[i]);
    if (rc == -1 && nbd_get_errno () == ENOTCONN)
      cc_enotconn++;
    else
      diag ("%s: command %d: %d, %s", what, i, rc, nbd_get_error ());
    named += nbd_get_error () &&
             strncmp (nbd_get_error (), "nbd_aio_command_completed: ", 27) == 0;
  }
  is_int (once, NR, "%s: every completion callback ran once", what);
  /* Those answered before the kill (mid-transfer: the first, at least)
   * succeeded; the others are the stranded ones. */
  ok (stranded > 0 && stranded + succeeded == NR,
      "%s: %d commands stranded, %d answered before the kill", what, stranded, succeeded);
  if (!mid_transfer)
    is_int (stranded, NR, "%s: all of them were stranded", what);
  is_int (cb_enotconn, stranded, "%s: each completion saw ENOTCONN", what);
  is_int (cc_enotconn, stranded, "%s: nbd_aio_command_completed fails with ENOTCONN", what);
  is_int (named, stranded, "%s: naming nbd_aio_command_completed", what);
  server_stop (&srv);
  nbd_close (h);
  for (int i = 0; i < NR; i++)
    free (buf[i]);
}

struct killer {
  pid_t pid;
  const char *log;
  bool killed;
};

/* Kill the server once its log shows the read: it is then waiting in the
 * delay filter, with the request read and its reply not sent. */
static void *
killer_thread (void *arg)
{
  struct killer *k = arg;

  k->killed = server_log_wait (k->log, server_log_requests, 1, 60) >= 1 &&
              kill (k->pid, SIGKILL) == 0;
  return NULL;
}

int
main (void)
{
  char logpath[4200], logarg[4300], buf[4096];
  struct test_server srv;
  struct nbd_handle *h;
  struct killer k;
  pthread_t th;
  int r;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  killed_with_commands (false);
  killed_with_commands (true);

  snprintf (logpath, sizeof logpath, "%s/dies-sync.log", servers_scratch_dir ());
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  {
    const char *args[] = { "--filter=log", "--filter=delay", "memory", "size=1M", logarg,
                           "delay-read=60", NULL };

    if (server_start_nbdkit (&srv, args) == -1)
      bail_out ("cannot start nbdkit");
  }
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, srv.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  k = (struct killer) { .pid = srv.pid, .log = logpath };
  if (pthread_create (&th, NULL, killer_thread, &k) != 0)
    bail_out ("pthread_create");
  r = nbd_pread (h, buf, sizeof buf, 0, 0);
  pthread_join (th, NULL);
  ok (k.killed, "sync: the server was killed while nbd_pread waited");
  is_int (r, -1, "sync: nbd_pread fails");
  is_errno (ENOTCONN, "sync: with ENOTCONN");
  ok (nbd_get_error () && strncmp (nbd_get_error (), "nbd_pread: ", 11) == 0,
      "sync: naming nbd_pread: %s", nbd_get_error () ? nbd_get_error () : "(none)");
  server_stop (&srv);
  nbd_close (h);
  return done_testing ();
}
