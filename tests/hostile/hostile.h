/* hostile.h: what the hostile-server tests share — starting
 * hostile-server.py for one scenario, its verdict, and the checks every
 * scenario makes on the client's answer.
 *
 * Owns the server process of the scenario running now (one at a time,
 * started from the main thread, stopped by its PID, killed at exit if a test
 * bails out) and nothing of libnbd-core but the handles the tests pass in.
 * Header-only (static inline), because tap.h keeps its counters in the one
 * translation unit of each test program.  HOSTILE_PYTHON and HOSTILE_SERVER
 * (the interpreter and the script) come from meson.build.
 *
 * Conventions of the scenarios (see hostile-server.py): the export holds
 * 1 + offset % 127 at every offset; reads use READ_COUNT bytes at
 * READ_OFFSET into buffers filled with STALE_BYTE first, so that a byte the
 * server never sent and the client never zeroed shows up.
 */
#ifndef GNBD_TESTS_HOSTILE_H
#define GNBD_TESTS_HOSTILE_H

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"
#include "tap.h"

#define EXPORT_SIZE (UINT64_C (1) << 20)
#define READ_OFFSET 8192
#define READ_COUNT 4096
#define STALE_BYTE 0xaa
/* How long nbd_poll waits for what cannot come: the server has said it
 * went silent (hostile_wait_silent), so any timeout would do. */
#define SILENCE_MS 200
/* The bound on the server's start, on its exit once the client left, and
 * on the wait for it to go silent: a bound, not a timing, so generous for
 * a loaded machine (the client may run under valgrind). */
#define SERVER_WAIT_MS 60000

struct hostile {
  const char *scenario;
  pid_t pid;
  int out;                      /* the server's stdout, for its READY line */
  char *sock;
};

/* One scenario: its name (also the server's scenario), its checks, and what
 * table-driven checks need. */
struct scenario {
  const char *name;
  void (*run) (const struct scenario *sc);
  int err;                      /* the errno expected */
  const char *text;             /* what the message must say */
  unsigned flags;               /* the program's own */
};

/* ---- The server --------------------------------------------------------- */

static pid_t hostile_running_;

static inline void
hostile_kill_at_exit_ (void)
{
  if (hostile_running_ > 0) {
    kill (hostile_running_, SIGKILL);
    while (waitpid (hostile_running_, NULL, 0) == -1 && errno == EINTR)
      ;
    hostile_running_ = 0;
  }
}

static inline int64_t
hostile_now_ms_ (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Start hostile-server.py for @scenario; returns once it listens (it says
 * "READY <pid>" on its stdout).  Bails out if it cannot start. */
static inline void
hostile_start (struct hostile *s, const char *scenario)
{
  static unsigned seq;
  static bool registered;
  int fds[2];
  char line[64];
  size_t len = 0;
  int64_t deadline = hostile_now_ms_ () + SERVER_WAIT_MS;
  pid_t pid;

  if (!registered) {
    atexit (hostile_kill_at_exit_);
    registered = true;
  }
  s->scenario = scenario;
  if (asprintf (&s->sock, "%s/hostile-%u.sock", servers_scratch_dir (), ++seq) == -1)
    bail_out ("asprintf: %m");
  if (pipe2 (fds, O_CLOEXEC) == -1)
    bail_out ("pipe2: %m");
  fflush (stdout);
  fflush (stderr);
  pid = fork ();
  if (pid == -1)
    bail_out ("fork: %m");
  if (pid == 0) {
    /* The server dies with the test, however the test ends. */
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (dup2 (fds[1], STDOUT_FILENO) == -1)
      _exit (126);
    execl (HOSTILE_PYTHON, HOSTILE_PYTHON, HOSTILE_SERVER, s->sock, scenario, (char *) NULL);
    _exit (127);
  }
  close (fds[1]);
  s->pid = hostile_running_ = pid;
  s->out = fds[0];
  while (len == 0 || line[len - 1] != '\n') {
    struct pollfd p = { .fd = s->out, .events = POLLIN };
    int64_t left = deadline - hostile_now_ms_ ();
    ssize_t n;

    if (left <= 0 || len == sizeof line - 1)
      break;
    if (poll (&p, 1, (int) left) <= 0)
      continue;
    n = read (s->out, line + len, sizeof line - 1 - len);
    if (n <= 0)
      break;
    len += n;
  }
  line[len] = '\0';
  if (strncmp (line, "READY ", 6) != 0)
    bail_out ("%s: hostile-server.py did not start (it said \"%s\")", scenario, line);
}

/* After the handle is closed: wait (bounded) for the server to exit and
 * report its verdict on the client as one test. */
static inline void
hostile_end (struct hostile *s)
{
  int64_t deadline = hostile_now_ms_ () + SERVER_WAIT_MS;
  int status = 0, code = -1;
  pid_t r;

  close (s->out);
  while ((r = waitpid (s->pid, &status, WNOHANG)) == 0 && hostile_now_ms_ () < deadline)
    usleep (5000);
  if (r == 0) {
    diag ("%s: the server did not exit within %d ms: killing it", s->scenario,
          SERVER_WAIT_MS);
    kill (s->pid, SIGKILL);
    while (waitpid (s->pid, &status, 0) == -1 && errno == EINTR)
      ;
  }
  else if (r == s->pid && WIFEXITED (status))
    code = WEXITSTATUS (status);
  hostile_running_ = 0;
  if (!is_int (code, 0, "%s: the server's verdict: the client behaved as the scenario expects",
               s->scenario))
    diag ("server exit status: 1 = the client misbehaved, 2 = unknown scenario, "
          "3 = time limit, -1 = killed (reason above)");
  free (s->sock);
  s->sock = NULL;
}

/* Drive @h with nbd_poll until the server says it has gone silent (it
 * prints "SILENT" once it has sent all it ever will: an event, not a quiet
 * interval), then take in whatever the socket still holds.  Bounded by
 * SERVER_WAIT_MS; true if the server said so. */
static inline bool
hostile_wait_silent (struct hostile *s, struct nbd_handle *h)
{
  int64_t deadline = hostile_now_ms_ () + SERVER_WAIT_MS;
  char said[16];
  size_t len = 0;

  said[0] = '\0';
  while (!memchr (said, '\n', len) && len < sizeof said - 1 && hostile_now_ms_ () < deadline) {
    struct pollfd p = { .fd = s->out, .events = POLLIN };
    ssize_t n;

    if (poll (&p, 1, 0) != 1) {
      /* The client's part: 10 ms is a latency, not a timing. */
      if (nbd_poll (h, 10) == -1)
        break;
      continue;
    }
    if ((n = read (s->out, said + len, sizeof said - 1 - len)) <= 0)
      break;
    len += n;
    said[len] = '\0';
  }
  if (strcmp (said, "SILENT\n") != 0) {
    diag ("%s: the server said \"%s\", not SILENT: %s", s->scenario, said,
          nbd_get_error () ? nbd_get_error () : "");
    return false;
  }
  for (int i = 0; i < 1000 && nbd_poll (h, 0) == 1; i++)
    ;
  return true;
}

/* ---- Handles ------------------------------------------------------------ */

/* nbd_create, named after the scenario; bails out on failure. */
static inline struct nbd_handle *
hostile_handle (const char *name)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (nbd_set_handle_name (h, name) == -1)
    bail_out ("nbd_set_handle_name: %s", nbd_get_error ());
  return h;
}

/* The usual start: a server for @name and a handle connected to it. */
static inline struct nbd_handle *
hostile_connect (struct hostile *s, const char *name)
{
  struct nbd_handle *h;

  hostile_start (s, name);
  h = hostile_handle (name);
  if (!ok (nbd_connect_unix (h, s->sock) == 0, "%s: nbd_connect_unix", name))
    diag ("error: %s", nbd_get_error ());
  return h;
}

/* ---- Checks ------------------------------------------------------------- */

static inline unsigned char
pattern_byte (uint64_t offset)
{
  return (unsigned char) (1 + offset % 127);
}

/* buf[0..len) holds the export's bytes from @offset. */
static inline bool
is_pattern (const unsigned char *buf, uint64_t offset, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (buf[i] != pattern_byte (offset + i)) {
      diag ("byte %zu is 0x%02x, expected 0x%02x", i, buf[i], pattern_byte (offset + i));
      return false;
    }
  return true;
}

/* buf[0..len) is all @byte. */
static inline bool
is_all (const unsigned char *buf, unsigned char byte, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (buf[i] != byte) {
      diag ("byte %zu is 0x%02x, expected 0x%02x", i, buf[i], byte);
      return false;
    }
  return true;
}

/* No byte of buf[0..len) is STALE_BYTE (what the test filled it with). */
static inline bool
no_stale (const unsigned char *buf, size_t len)
{
  const unsigned char *p = memchr (buf, STALE_BYTE, len);

  if (p)
    diag ("byte %td still holds the stale 0x%02x", p - buf, STALE_BYTE);
  return p == NULL;
}

/* The call that returned @r failed with @err, and nbd_get_error () starts
 * with "@call: " and says @text.  Four tests. */
static inline void
check_error (const char *name, long long r, const char *call, int err, const char *text)
{
  const char *msg;
  size_t n = strlen (call);

  ok (r == -1, "%s: %s fails", name, call);
  is_errno (err, "%s: %s fails with %s", name, call, strerrorname_np (err));
  msg = nbd_get_error ();
  note ("%s: %s says: %s", name, call, msg ? msg : "(no message)");
  if (!ok (msg && strncmp (msg, call, n) == 0 && strncmp (msg + n, ": ", 2) == 0 &&
           strncmp (msg + n + 2, call, n) != 0,
           "%s: the message starts with \"%s: \", once", name, call))
    diag ("message: %s", msg ? msg : "(none)");
  if (!ok (msg && strstr (msg, text), "%s: the message says \"%s\"", name, text))
    diag ("message: %s", msg ? msg : "(none)");
}

/* The handle is dead, and calls on it now fail with EINVAL. */
static inline void
check_dead (const char *name, struct nbd_handle *h)
{
  char buf[512];

  ok (nbd_aio_is_dead (h) == 1, "%s: the handle is dead", name);
  check_error (name, nbd_pread (h, buf, sizeof buf, 0, 0), "nbd_pread", EINVAL, "dead");
  check_error (name, nbd_poll (h, 0), "nbd_poll", EINVAL, "dead");
}

/* The connection still works: a read returns the right bytes, then
 * nbd_shutdown ends it cleanly (and the server checks NBD_CMD_DISC). */
static inline void
check_usable (const char *name, struct nbd_handle *h)
{
  unsigned char buf[READ_COUNT];

  memset (buf, STALE_BYTE, sizeof buf);
  if (!ok (nbd_pread (h, buf, sizeof buf, READ_OFFSET, 0) == 0,
           "%s: the connection still works: nbd_pread", name))
    diag ("error: %s", nbd_get_error ());
  ok (is_pattern (buf, READ_OFFSET, sizeof buf), "%s: and reads the export's bytes", name);
  if (!ok (nbd_shutdown (h, 0) == 0, "%s: nbd_shutdown", name))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_closed (h) == 1, "%s: the handle is closed", name);
}

/* ---- Main ----------------------------------------------------------------- */

/* Run @list (or only the scenario named by argv[1]), one TAP group each. */
static inline int
hostile_main (int argc, char **argv, const struct scenario *list, size_t n)
{
  bool found = false;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  for (size_t i = 0; i < n; i++) {
    if (argc > 1 && strcmp (argv[1], list[i].name) != 0)
      continue;
    found = true;
    note ("scenario %s", list[i].name);
    list[i].run (&list[i]);
  }
  if (!found)
    bail_out ("no scenario named %s", argv[1]);
  return done_testing ();
}

#endif /* GNBD_TESTS_HOSTILE_H */
