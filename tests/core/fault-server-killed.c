/* fault-server-killed: the server dies (kill -9) with requests in flight.
 *
 * Proves, for 64 aio reads and writes in flight when nbdkit is killed:
 *  - every completion callback runs exactly once, with a non-zero errno,
 *    and every .free once; nothing stays in flight;
 *  - the nbd_poll that meets the dead socket returns -1 soon after the
 *    kill (SLOW_MS), the handle is dead, a new command is refused (EINVAL,
 *    message "nbd_aio_pread: ..."), a later nbd_poll returns -1 without
 *    waiting for its timeout, and nbd_close leaves no file descriptor
 *    behind;
 *  - "idle": the server had read all 64 requests (its log filter says so)
 *    and sat on them (delay filter), so the socket just ends: the poll and
 *    each command fail with ENOTCONN (libnbd 1.14: ENOTCONN for the
 *    commands too, but its handle ends closed, not dead);
 *  - "mid-transfer": 1 MiB reads and writes, the server stopped (SIGSTOP)
 *    as the first reply arrives (and the client has taken in what the
 *    socket held once every server thread is stopped), so some requests
 *    are half sent and some
 *    replies half received, then killed: the socket fails (the server died
 *    with our bytes unread), the poll that meets it reports the transport's
 *    errno (ECONNRESET or EPIPE), and every command fails with ENOTCONN,
 *    as in libnbd 1.14 (the cause is in the message: io-connection-lost);
 *  - a sync nbd_pread (and nbd_pwrite) blocked waiting for its reply when
 *    another thread kills the server returns -1 soon after (SLOW_MS) with
 *    ENOTCONN and a message starting with its name; a sync nbd_pwrite of
 *    32 MiB blocked mid-send (server stopped, then killed) returns -1 soon
 *    after with ENOTCONN too, its message naming the transport's error
 *    (ECONNRESET's or EPIPE's).  The other thread kills once the
 *    caller is blocked in poll(2) (/proc/self/task/TID/syscall) and, for
 *    the first two, the server has read the request (its log filter says
 *    so): events, not a delay.
 * Time is measured only where promptness is the point, and bounded
 * loosely: see SLOW_MS.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define NR 64

/* "Soon": a dead server's socket ends at once, while the delay filter
 * would have answered after 30 s; half of that is generous for a loaded
 * 2-core machine under a sanitizer and still tells the two apart. */
#define SLOW_MS 15000

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms (int ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static int
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  struct dirent *e;
  int n = 0;

  if (!d)
    bail_out ("opendir /proc/self/fd");
  while ((e = readdir (d)))
    if (e->d_name[0] != '.')
      n++;
  closedir (d);
  return n - 1;                 /* the directory's own fd */
}

static bool
error_prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':' && e[n + 1] == ' ';
}

/* Every thread of @pid is stopped (SIGSTOP has taken effect): nothing
 * more can reach the socket. */
static bool
process_stopped (pid_t pid)
{
  char path[64], line[512];
  struct dirent *e;
  DIR *d;
  bool all = true;
  int n = 0;

  snprintf (path, sizeof path, "/proc/%d/task", (int) pid);
  if (!(d = opendir (path)))
    return false;
  while (all && (e = readdir (d))) {
    FILE *f;
    char *p;

    if (e->d_name[0] == '.')
      continue;
    snprintf (path, sizeof path, "/proc/%d/task/%.20s/stat", (int) pid, e->d_name);
    if (!(f = fopen (path, "r")))
      continue;                 /* the thread just ended */
    p = fgets (line, sizeof line, f) ? strrchr (line, ')') : NULL;
    fclose (f);
    all = p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
    n++;
  }
  closedir (d);
  return all && n > 0;
}

/* Stop a server we killed: it must be gone, killed by SIGKILL. */
static void
reap_killed (struct test_server *s, const char *what)
{
  is_int (server_stop (s), 0, "%s: the killed nbdkit is reaped", what);
  ok (s->status != -1 && WIFSIGNALED (s->status) && WTERMSIG (s->status) == SIGKILL,
      "%s: it died of SIGKILL (wait status 0x%x)", what, (unsigned) s->status);
}

/* ---- 64 aio commands ---------------------------------------------------- */

struct rec {
  unsigned calls, frees;
  int error;
};

static int
completion_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 1;
}

static void
free_cb (void *user_data)
{
  ((struct rec *) user_data)->frees++;
}

static void
aio_killed (bool mid_transfer)
{
  const char *what = mid_transfer ? "mid-transfer" : "idle";
  size_t len = mid_transfer ? 1024 * 1024 : 65536;
  char logpath[4200], logarg[4300];
  struct test_server srv;
  struct nbd_handle *h;
  struct rec r[NR];
  char *buf[NR];
  int64_t c[NR];
  int fds_before, inflight_at_kill, done_before = 0, poll_err = 0, pr = 1;
  int64_t t_kill, t_dead = -1;
  bool all_ok = true;

  snprintf (logpath, sizeof logpath, "%s/killed-%s.log", servers_scratch_dir (), what);
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  {
    /* -t 64: a thread for each request, so the server reads them all. */
    const char *idle_args[] = { "-t", "64", "--filter=log", "--filter=delay", "memory",
                                "size=64M", logarg, "delay-read=30", "delay-write=30", NULL };
    const char *mid_args[] = { "memory", "size=64M", NULL };

    if (server_start_nbdkit (&srv, mid_transfer ? mid_args : idle_args) == -1)
      bail_out ("%s: cannot start nbdkit", what);
  }
  fds_before = count_fds ();
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  if (nbd_connect_uri (h, srv.uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());

  memset (r, 0, sizeof r);
  for (int i = 0; i < NR; i++) {
    nbd_completion_callback cb = { .callback = completion_cb, .user_data = &r[i],
                                   .free = free_cb };

    if (!(buf[i] = malloc (len)))
      bail_out ("malloc");
    memset (buf[i], 'a' + i % 26, len);
    c[i] = (i % 2)
           ? nbd_aio_pwrite (h, buf[i], len, (uint64_t) i * len, cb, 0)
           : nbd_aio_pread (h, buf[i], len, (uint64_t) i * len, cb, 0);
    all_ok &= c[i] > 0;
  }
  ok (all_ok, "%s: %d reads and writes of %zu bytes issued", what, NR, len);

  if (mid_transfer) {
    /* Until the first reply (bounded, not timed), then freeze the server
     * where it is. */
    for (int64_t end = now_ms () + 60000; now_ms () < end;) {
      done_before = 0;
      for (int i = 0; i < NR; i++)
        done_before += r[i].calls;
      if (done_before)
        break;
      if (nbd_poll (h, 100) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    }
    if (kill (srv.pid, SIGSTOP) == -1)
      bail_out ("SIGSTOP: %m");
    for (int64_t end = now_ms () + 60000; !process_stopped (srv.pid) && now_ms () < end;)
      sleep_ms (1);
    ok (process_stopped (srv.pid), "%s: the server is stopped", what);
    /* Take in what the socket already holds; nothing more can come. */
    for (int i = 0, more = 1; i < 100000 && more == 1; i++)
      if ((more = nbd_poll (h, 0)) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    done_before = 0;
    for (int i = 0; i < NR; i++)
      done_before += r[i].calls;
  }
  else {
    int n = 0;

    /* Until the server has all 64: each sits in the delay filter.
     * Bounded, not timed. */
    for (int64_t end = now_ms () + 60000;
         now_ms () < end && (n = server_log_count (logpath, server_log_requests)) < NR;)
      if (nbd_poll (h, 20) == -1)
        bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    is_int (n, NR, "%s: the server has read all %d requests", what, NR);
  }
  inflight_at_kill = nbd_aio_in_flight (h);
  note ("%s: %d completed, %d in flight when the server is killed", what, done_before,
        inflight_at_kill);
  if (mid_transfer)
    ok (inflight_at_kill > 0 && inflight_at_kill < NR,
        "%s: some commands done, %d still in flight at the kill", what, inflight_at_kill);
  else
    is_int (inflight_at_kill, NR, "%s: all %d in flight at the kill", what, NR);

  if (kill (srv.pid, SIGKILL) == -1)
    bail_out ("SIGKILL: %m");
  t_kill = now_ms ();
  /* The poll that meets the end: bounded, and it must come soon. */
  for (int i = 0; i < 60 && nbd_aio_in_flight (h) > 0; i++) {
    pr = nbd_poll (h, 1000);
    if (pr == -1) {
      t_dead = now_ms ();
      poll_err = nbd_get_errno ();
      ok (error_prefix_is ("nbd_poll"), "%s: nbd_poll fails: %s", what, nbd_get_error ());
      break;
    }
  }
  reap_killed (&srv, what);
  is_int (pr, -1, "%s: nbd_poll reports the death", what);
  ok (t_dead >= 0 && t_dead - t_kill < SLOW_MS, "%s: soon after the kill (%" PRId64 " ms)",
      what, t_dead - t_kill);
  if (mid_transfer)
    ok (poll_err == ECONNRESET || poll_err == EPIPE,
        "%s: nbd_poll's errno is the transport's, ECONNRESET or EPIPE: %s", what,
        tap_errname_ (poll_err));
  else
    is_int (poll_err, ENOTCONN, "%s: nbd_poll's errno is ENOTCONN (the socket ended): %s", what,
            tap_errname_ (poll_err));

  {
    unsigned once = 0, freed = 0, failed = 0, same = 0;
    int other = 0;

    for (int i = 0; i < NR; i++) {
      once += r[i].calls == 1;
      freed += r[i].frees == 1;
      if (r[i].calls == 1 && r[i].error != 0) {
        failed++;
        if (r[i].error == ENOTCONN)
          same++;
        else if (!other)
          other = r[i].error;
      }
    }
    is_int (once, NR, "%s: every completion callback ran exactly once", what);
    is_int (freed, NR, "%s: every .free ran exactly once", what);
    is_int (failed, (unsigned) inflight_at_kill,
            "%s: the %d commands in flight at the kill all failed", what, inflight_at_kill);
    is_int (same, (unsigned) inflight_at_kill, "%s: each with ENOTCONN (other: %s)", what,
            tap_errname_ (other));
  }
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", what);
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight", what);
  {
    char b[512];
    int64_t t0 = now_ms ();

    is_int (nbd_aio_pread (h, b, sizeof b, 0, NBD_NULL_COMPLETION, 0), -1,
            "%s: a new command is refused", what);
    is_errno (EINVAL, "%s: with EINVAL", what);
    ok (error_prefix_is ("nbd_aio_pread"), "%s: message: %s", what, nbd_get_error ());
    is_int (nbd_pread (h, b, sizeof b, 0, 0), -1, "%s: a sync read fails too", what);
    /* A timeout twice SLOW_MS: failing at once and waiting it out differ. */
    is_int (nbd_poll (h, 2 * SLOW_MS), -1, "%s: a later nbd_poll fails", what);
    ok (now_ms () - t0 < SLOW_MS, "%s: without waiting for its timeout (%" PRId64 " ms)", what,
        now_ms () - t0);
  }
  nbd_close (h);
  is_int (count_fds (), fds_before, "%s: nbd_close leaves no file descriptor open", what);
  for (int i = 0; i < NR; i++)
    free (buf[i]);
}

/* ---- A sync call blocked when the server dies --------------------------- */

struct killer {
  pid_t pid;                    /* the server */
  pid_t caller;                 /* the thread in the sync call */
  const char *log;              /* the server's log, if it must have the request */
  bool blocked;                 /* it was seen blocked in poll(2) */
  bool logged;                  /* the server had read the request */
  int64_t at;                   /* when the kill happened */
};

/* The thread @tid is blocked in poll(2) or ppoll(2): the first field of
 * /proc/self/task/TID/syscall is the system call it sleeps in. */
static bool
in_poll (pid_t tid)
{
  char path[64], line[256];
  FILE *f;
  long nr = -1;

  snprintf (path, sizeof path, "/proc/self/task/%d/syscall", (int) tid);
  if (!(f = fopen (path, "r")))
    return false;
  if (fgets (line, sizeof line, f) && line[0] >= '0' && line[0] <= '9')
    nr = strtol (line, NULL, 10);
  fclose (f);
#ifdef SYS_poll
  if (nr == SYS_poll)
    return true;
#endif
  return nr == SYS_ppoll;
}

/* Kill the server once the caller waits in poll(2): for its reply (once
 * the server has read the whole request: a request still unread in its
 * socket would make the end a reset, ECONNRESET), or to send the rest of a
 * write the stopped server does not read.  Bounded: a caller never seen
 * blocked is killed anyway, and the test says so. */
static void *
killer_thread (void *arg)
{
  struct killer *k = arg;

  for (int64_t end = now_ms () + 60000; !(k->blocked && k->logged) && now_ms () < end;) {
    k->logged = !k->log || server_log_count (k->log, server_log_requests) > 0;
    k->blocked = k->logged && in_poll (k->caller);
    if (!k->blocked)
      sleep_ms (1);
  }
  k->at = now_ms ();
  if (kill (k->pid, SIGKILL) == -1)
    k->at = -1;
  return NULL;
}

enum sync_kind { SYNC_PREAD, SYNC_PWRITE, SYNC_PWRITE_MID };

static void
sync_killed (enum sync_kind kind)
{
  const char *what = kind == SYNC_PREAD ? "sync pread" : kind == SYNC_PWRITE ? "sync pwrite"
                     : "sync pwrite mid-send";
  const char *fn = kind == SYNC_PREAD ? "nbd_pread" : "nbd_pwrite";
  char logpath[4200], logarg[4300];
  /* The log filter first: it logs a request as the server takes it in. */
  const char *delay_args[] = { "--filter=log", "--filter=delay", "memory", "size=64M", logarg,
                               "delay-read=30", "delay-write=30", NULL };
  const char *plain_args[] = { "memory", "size=64M", NULL };
  size_t len = kind == SYNC_PWRITE_MID ? 32 * 1024 * 1024 : 65536;
  struct test_server srv;
  struct killer k = { .caller = (pid_t) syscall (SYS_gettid) };
  struct nbd_handle *h;
  pthread_t th;
  char *buf = calloc (1, len);
  int r, err, fds_before;
  char *msg;
  int64_t t_back;

  if (!buf)
    bail_out ("calloc");
  snprintf (logpath, sizeof logpath, "%s/killed-sync-%d.log", servers_scratch_dir (), (int) kind);
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  if (kind != SYNC_PWRITE_MID)
    k.log = logpath;
  if (server_start_nbdkit (&srv, kind == SYNC_PWRITE_MID ? plain_args : delay_args) == -1)
    bail_out ("%s: cannot start nbdkit", what);
  fds_before = count_fds ();
  h = nbd_create ();
  if (!h || nbd_connect_uri (h, srv.uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  /* Mid-send: a server that reads nothing more, so the 32 MiB cannot all
   * leave; the kill comes while nbd_pwrite waits to send the rest. */
  if (kind == SYNC_PWRITE_MID && kill (srv.pid, SIGSTOP) == -1)
    bail_out ("SIGSTOP: %m");
  k.pid = srv.pid;
  if (pthread_create (&th, NULL, killer_thread, &k) != 0)
    bail_out ("pthread_create");
  r = kind == SYNC_PREAD ? nbd_pread (h, buf, len, 0, 0) : nbd_pwrite (h, buf, len, 0, 0);
  err = nbd_get_errno ();
  msg = nbd_get_error () ? strdup (nbd_get_error ()) : NULL;
  t_back = now_ms ();
  ok (r == -1 && error_prefix_is (fn), "%s: %s fails: %s", what, fn,
      r == -1 ? nbd_get_error () : "it succeeded");
  pthread_join (th, NULL);
  if (k.log)
    ok (k.logged, "%s: the server had read the request", what);
  ok (k.blocked, "%s: %s was blocked in poll(2)", what, fn);
  ok (k.at > 0, "%s: the server was killed while %s waited", what, fn);
  ok (t_back - k.at >= 0 && t_back - k.at < SLOW_MS, "%s: %s returns soon after the kill "
      "(%" PRId64 " ms)", what, fn, t_back - k.at);
  is_int (err, ENOTCONN, "%s: errno ENOTCONN: %s", what, tap_errname_ (err));
  if (kind == SYNC_PWRITE_MID)
    ok (msg && (strstr (msg, strerror (EPIPE)) || strstr (msg, strerror (ECONNRESET))),
        "%s: the message names the transport's EPIPE or ECONNRESET: %s", what,
        msg ? msg : "(none)");
  ok (nbd_aio_is_dead (h), "%s: the handle is dead", what);
  reap_killed (&srv, what);
  nbd_close (h);
  is_int (count_fds (), fds_before, "%s: nbd_close leaves no file descriptor open", what);
  free (msg);
  free (buf);
}

int
main (void)
{
  tap_timeout (120);
  /* SIGPIPE keeps its default action: a send to the dead socket that
   * raised it (instead of failing with EPIPE) would end the test. */
  aio_killed (false);
  aio_killed (true);
  sync_killed (SYNC_PREAD);
  sync_killed (SYNC_PWRITE);
  sync_killed (SYNC_PWRITE_MID);
  return done_testing ();
}
