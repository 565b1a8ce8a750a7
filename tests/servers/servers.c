/* servers.c: the processes behind servers.h.
 *
 * Owns spawning (fork + execv with a reset signal state), readiness polling
 * with plain sockets, stopping by PID with bounded waits, the guardian that
 * outlives a crashed test to stop a daemonized nbd-server, the registry that
 * the atexit handler drains, and the scratch directory.  It never links
 * libnbd-core and never signals a process it did not start: nbd-server's
 * PID (from its pid file) is checked against /proc/PID/comm first.
 *
 * Between fork and exec only async-signal-safe calls run: test programs are
 * often multi-threaded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "servers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_INTERVAL_MS 20
#define STOP_TIMEOUT_MS 5000
#define TCP_ATTEMPTS 5

struct server_node {
  struct server_node *next;
  const char *program;
  pid_t pid;          /* 0: not running (or reaped) */
  bool daemon;        /* not our child: poll /proc instead of waitpid */
  pid_t guardian;
  int guardian_fd;
  int status;         /* wait status, own children only */
  char *dir;
  char *sock;
  char *uri;
  char *export_name;
  int port;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct server_node *running;
static char *scratch;
static pid_t owner;     /* the process whose atexit handler this is */

/* ---- Small utilities -------------------------------------------------- */

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000 };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static void
describe_status (char *buf, size_t n, int status)
{
  if (WIFEXITED (status))
    snprintf (buf, n, "exited with status %d", WEXITSTATUS (status));
  else if (WIFSIGNALED (status))
    snprintf (buf, n, "killed by signal %d (%s)", WTERMSIG (status),
              strsignal (WTERMSIG (status)));
  else
    snprintf (buf, n, "wait status 0x%x", (unsigned) status);
}

/* A path to @program: as given if it has a '/', else the first executable
 * in $PATH.  NULL with errno ENOENT if there is none.
 */
static char *
find_program (const char *program)
{
  const char *path = getenv ("PATH");
  const char *p, *end;
  char *candidate;

  if (strchr (program, '/'))
    return strdup (program);
  if (!path || !*path)
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (p = path; *p; p = *end ? end + 1 : end) {
    end = strchrnul (p, ':');
    if (asprintf (&candidate, "%.*s/%s", (int) (end - p), end == p ? "." : p, program) == -1)
      return NULL;
    if (access (candidate, X_OK) == 0)
      return candidate;
    free (candidate);
  }
  errno = ENOENT;
  return NULL;
}

static int
mkdir_p (const char *dir)
{
  char *copy = strdup (dir);
  char *p;
  int r = 0;

  if (!copy)
    return -1;
  for (p = copy + 1; r == 0; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;

      *p = '\0';
      if (mkdir (copy, 0755) == -1 && errno != EEXIST)
        r = -1;
      *p = c;
      if (c == '\0')
        break;
    }
  }
  free (copy);
  return r;
}

/* Where temporary directories go.  A Unix socket path must fit in sun_path,
 * so a base too long for "<base>/<prefix>-XXXXXX/sock" falls back to /tmp.
 */
static const char *
base_dir (const char *prefix)
{
  const char *base = getenv ("LIBNBD_CORE_TEST_TMP");

  if (base && *base) {
    if (mkdir_p (base) == -1)
      fprintf (stderr, "servers: cannot create %s: %m: using TMPDIR or /tmp\n", base);
    else
      goto check;
  }
  base = getenv ("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
 check:
  if (strlen (base) + strlen (prefix) + sizeof "/-XXXXXX/sock" > sizeof ((struct sockaddr_un *) 0)->sun_path)
    base = "/tmp";
  return base;
}

static char *
make_temp_dir (const char *prefix)
{
  char *dir;

  if (asprintf (&dir, "%s/%s-XXXXXX", base_dir (prefix), prefix) == -1)
    return NULL;
  if (!mkdtemp (dir)) {
    fprintf (stderr, "servers: mkdtemp %s: %m\n", dir);
    free (dir);
    return NULL;
  }
  return dir;
}

static int
remove_one (const char *path, const struct stat *st, int type, struct FTW *ftw)
{
  if (remove (path) == -1 && errno != ENOENT) {
    fprintf (stderr, "servers: remove %s: %m\n", path);
    return -1;
  }
  return 0;
}

static int
remove_tree (const char *dir)
{
  if (nftw (dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) == -1 && errno != ENOENT)
    return -1;
  return access (dir, F_OK) == 0 ? -1 : 0;
}

/* A NULL-terminated argv: @head then @tail (either may be NULL).  The strings
 * are borrowed.
 */
static char **
join_argv (const char *const *head, const char *const *tail)
{
  size_t nh = 0, nt = 0;
  char **argv;

  while (head && head[nh])
    nh++;
  while (tail && tail[nt])
    nt++;
  argv = calloc (nh + nt + 1, sizeof *argv);
  if (!argv)
    return NULL;
  for (size_t i = 0; i < nh; i++)
    argv[i] = (char *) head[i];
  for (size_t i = 0; i < nt; i++)
    argv[nh + i] = (char *) tail[i];
  return argv;
}

/* ---- Processes -------------------------------------------------------- */

/* Fork and exec @argv[0] (searched in PATH).  The child gets stdin from
 * /dev/null, stdout onto our stderr (so nothing lands in the TAP stream),
 * default signal dispositions and an empty mask, and dies with us.
 */
static pid_t
spawn (char *const *argv)
{
  char *path = find_program (argv[0]);
  sigset_t empty;
  pid_t parent = getpid ();
  pid_t pid;
  int devnull;

  if (!path) {
    fprintf (stderr, "servers: %s: not found in PATH\n", argv[0]);
    errno = ENOENT;
    return -1;
  }
  devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull == -1) {
    free (path);
    return -1;
  }
  sigemptyset (&empty);
  fflush (stderr);

  pid = fork ();
  if (pid == 0) {
    static const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGALRM, SIGUSR1 };
    static const char msg[] = "servers: exec failed\n";

    if (prctl (PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid () != parent)
      _exit (127);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
      signal (sigs[i], SIG_DFL);
    sigprocmask (SIG_SETMASK, &empty, NULL);
    if (dup2 (devnull, STDIN_FILENO) == -1 || dup2 (STDERR_FILENO, STDOUT_FILENO) == -1)
      _exit (127);
    execv (path, argv);
    if (write (STDERR_FILENO, msg, sizeof msg - 1) < 0)
      _exit (126);
    _exit (127);
  }
  int saved = errno;
  close (devnull);
  free (path);
  if (pid == -1) {
    errno = saved;
    fprintf (stderr, "servers: fork: %m\n");
  }
  return pid;
}

/* Wait for our child @pid for up to @ms milliseconds.  Returns true once it
 * has exited (its wait status in *status, or -1 if someone else reaped it).
 */
static bool
wait_child (pid_t pid, int ms, int *status)
{
  int64_t deadline = now_ms () + ms;

  for (;;) {
    pid_t r = waitpid (pid, status, WNOHANG);

    if (r == pid)
      return true;
    if (r == -1 && errno == ECHILD) {
      *status = -1;
      return true;
    }
    if (now_ms () >= deadline)
      return false;
    sleep_ms (10);
  }
}

bool
server_pid_running (pid_t pid)
{
  char path[64], buf[512];
  const char *paren;
  ssize_t n;
  int fd;

  if (pid <= 0)
    return false;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return errno == ENOENT ? false : (kill (pid, 0) == 0 || errno == EPERM);
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  /* "PID (comm) S ...": the state follows the last ')'. */
  paren = strrchr (buf, ')');
  if (!paren || paren[1] != ' ')
    return true;
  return paren[2] != 'Z' && paren[2] != 'X';
}

/* Whether live process @pid runs @comm (guards against a reused PID). */
static bool
pid_is (pid_t pid, const char *comm)
{
  char path[64], buf[64];
  ssize_t n;
  int fd;

  snprintf (path, sizeof path, "/proc/%d/comm", (int) pid);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return false;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  buf[strcspn (buf, "\n")] = '\0';
  return strcmp (buf, comm) == 0;
}

static bool
wait_gone (pid_t pid, int ms)
{
  int64_t deadline = now_ms () + ms;

  while (server_pid_running (pid)) {
    if (now_ms () >= deadline)
      return false;
    sleep_ms (10);
  }
  return true;
}

/* Is the node's server still alive?  Reaps our own child if it exited. */
static bool
node_alive (struct server_node *n)
{
  if (n->pid <= 0)
    return false;
  if (n->daemon)
    return server_pid_running (n->pid);
  if (wait_child (n->pid, 0, &n->status)) {
    n->pid = 0;
    return false;
  }
  return true;
}

/* A guardian: a forked process in its own session that holds the read end
 * of a pipe.  One byte from us means "all is well, exit"; end of file means
 * the test died, so it stops @target by PID.  It closes every other fd so it
 * never keeps the test runner's pipes open.
 */
static int
spawn_guardian (struct server_node *n)
{
  pid_t target = n->pid;
  int fds[2], devnull;
  pid_t pid;

  devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull == -1)
    return -1;
  if (pipe2 (fds, O_CLOEXEC) == -1) {
    close (devnull);
    return -1;
  }
  pid = fork ();
  if (pid == 0) {
    static const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGALRM };
    char c;
    ssize_t r;

    setsid ();
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
      signal (sigs[i], SIG_IGN);
    if (dup2 (devnull, 0) == -1 || dup2 (devnull, 1) == -1 || dup2 (devnull, 2) == -1 ||
        dup2 (fds[0], 3) == -1)
      _exit (1);
    close_range (4, ~0U, 0);
    do
      r = read (3, &c, 1);
    while (r == -1 && errno == EINTR);
    if (r == 1)
      _exit (0);
    kill (target, SIGTERM);
    for (int i = 0; i < 50 && kill (target, 0) == 0; i++) {
      struct timespec ts = { .tv_nsec = 100000000 };
      nanosleep (&ts, NULL);
    }
    kill (target, SIGKILL);
    _exit (0);
  }
  int saved = errno;
  close (devnull);
  close (fds[0]);
  if (pid == -1) {
    close (fds[1]);
    errno = saved;
    return -1;
  }
  n->guardian = pid;
  n->guardian_fd = fds[1];
  return 0;
}

/* ---- Nodes and the registry ------------------------------------------- */

static void stop_all_at_exit (void);

static void
init_once (void)
{
  owner = getpid ();
  atexit (stop_all_at_exit);
}

static struct server_node *
node_new (const char *program)
{
  struct server_node *n = calloc (1, sizeof *n);

  if (!n)
    return NULL;
  n->program = program;
  n->guardian_fd = -1;
  n->status = -1;
  n->dir = make_temp_dir (program);
  if (!n->dir) {
    free (n);
    return NULL;
  }
  return n;
}

/* Stop everything the node owns and free it.  Returns 0 when the process is
 * gone and the directory removed; *status gets our child's wait status.
 */
static int
node_stop_status (struct server_node *n, int *status)
{
  char how[96];
  int r = 0;

  if (n->pid > 0 && n->daemon) {
    if (server_pid_running (n->pid) && pid_is (n->pid, n->program)) {
      kill (n->pid, SIGTERM);
      if (!wait_gone (n->pid, STOP_TIMEOUT_MS)) {
        fprintf (stderr, "servers: %s (pid %d) ignored SIGTERM for %d ms: SIGKILL\n",
                 n->program, (int) n->pid, STOP_TIMEOUT_MS);
        kill (n->pid, SIGKILL);
        if (!wait_gone (n->pid, STOP_TIMEOUT_MS)) {
          fprintf (stderr, "servers: %s (pid %d) survived SIGKILL\n", n->program, (int) n->pid);
          r = -1;
        }
      }
    }
  }
  else if (n->pid > 0) {
    if (!wait_child (n->pid, 0, &n->status)) {
      kill (n->pid, SIGTERM);
      if (!wait_child (n->pid, STOP_TIMEOUT_MS, &n->status)) {
        fprintf (stderr, "servers: %s (pid %d) ignored SIGTERM for %d ms: SIGKILL\n",
                 n->program, (int) n->pid, STOP_TIMEOUT_MS);
        kill (n->pid, SIGKILL);
        if (!wait_child (n->pid, STOP_TIMEOUT_MS, &n->status)) {
          fprintf (stderr, "servers: %s (pid %d) survived SIGKILL\n", n->program, (int) n->pid);
          r = -1;
        }
      }
    }
    else if (n->status != -1) {
      describe_status (how, sizeof how, n->status);
      fprintf (stderr, "servers: %s (pid %d) had already %s\n", n->program, (int) n->pid, how);
    }
  }

  if (n->guardian > 0) {
    int st;

    if (write (n->guardian_fd, "", 1) != 1 || !wait_child (n->guardian, 2000, &st)) {
      kill (n->guardian, SIGKILL);
      wait_child (n->guardian, 2000, &st);
    }
  }
  if (n->guardian_fd >= 0)
    close (n->guardian_fd);

  if (n->dir && remove_tree (n->dir) == -1) {
    fprintf (stderr, "servers: could not remove %s\n", n->dir);
    r = -1;
  }
  free (n->dir);
  free (n->sock);
  free (n->uri);
  free (n->export_name);
  if (status)
    *status = n->status;
  free (n);
  return r;
}

static int
node_stop (struct server_node *n)
{
  return node_stop_status (n, NULL);
}

static void
publish (struct test_server *s, struct server_node *n)
{
  pthread_mutex_lock (&lock);
  n->next = running;
  running = n;
  pthread_mutex_unlock (&lock);

  s->pid = n->pid;
  s->dir = n->dir;
  s->sock = n->sock;
  s->uri = n->uri;
  s->tcp_port = n->port;
  s->export_name = n->export_name;
  s->program = n->program;
  s->status = -1;
  s->node_ = n;
}

int
server_stop (struct test_server *s)
{
  struct server_node *n = s->node_, **pp;
  int r, status;

  if (!n)
    return 0;
  pthread_mutex_lock (&lock);
  for (pp = &running; *pp; pp = &(*pp)->next) {
    if (*pp == n) {
      *pp = n->next;
      break;
    }
  }
  pthread_mutex_unlock (&lock);

  r = node_stop_status (n, &status);
  *s = (struct test_server) { .status = status };
  return r;
}

static void
stop_all_at_exit (void)
{
  struct server_node *n;

  if (getpid () != owner)
    return;
  for (;;) {
    pthread_mutex_lock (&lock);
    n = running;
    if (n)
      running = n->next;
    pthread_mutex_unlock (&lock);
    if (!n)
      break;
    fprintf (stderr, "servers: %s (pid %d) still running at exit: stopping it\n",
             n->program, (int) n->pid);
    node_stop (n);
  }
  pthread_mutex_lock (&lock);
  if (scratch) {
    remove_tree (scratch);
    free (scratch);
    scratch = NULL;
  }
  pthread_mutex_unlock (&lock);
}

/* ---- Readiness -------------------------------------------------------- */

/* One non-blocking connect attempt, bounded by 200 ms for TCP. */
static bool
try_connect (const struct sockaddr *sa, socklen_t len)
{
  int fd = socket (sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  bool ok = false;

  if (fd == -1)
    return false;
  if (connect (fd, sa, len) == 0)
    ok = true;
  else if (errno == EINPROGRESS) {
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int err = 0;
    socklen_t elen = sizeof err;

    if (poll (&pfd, 1, 200) == 1 &&
        getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
      ok = true;
  }
  close (fd);
  return ok;
}

static bool
try_connect_node (const struct server_node *n)
{
  if (n->sock) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    memcpy (sun.sun_path, n->sock, strlen (n->sock) + 1);
    return try_connect ((struct sockaddr *) &sun, sizeof sun);
  }
  struct sockaddr_in sin = {
    .sin_family = AF_INET,
    .sin_port = htons ((uint16_t) n->port),
    .sin_addr.s_addr = htonl (INADDR_LOOPBACK),
  };
  return try_connect ((struct sockaddr *) &sin, sizeof sin);
}

/* Poll until the server accepts a connection.  Returns 0, or -1 with errno
 * ECHILD if it exited first, ETIMEDOUT after SERVER_START_TIMEOUT_MS.
 */
static int
wait_listening (struct server_node *n)
{
  int64_t start = now_ms ();
  char how[96];

  for (;;) {
    bool alive = node_alive (n);

    if (alive && try_connect_node (n)) {
      /* On TCP the listener could be someone else's: the server must be alive. */
      if (node_alive (n))
        return 0;
      alive = false;
    }
    if (!alive) {
      if (n->status != -1)
        describe_status (how, sizeof how, n->status);
      else
        snprintf (how, sizeof how, "exited");
      fprintf (stderr, "servers: %s %s before it listened\n", n->program, how);
      errno = ECHILD;
      return -1;
    }
    if (now_ms () - start >= SERVER_START_TIMEOUT_MS) {
      fprintf (stderr, "servers: %s (pid %d) not listening after %d ms\n",
               n->program, (int) n->pid, SERVER_START_TIMEOUT_MS);
      errno = ETIMEDOUT;
      return -1;
    }
    sleep_ms (POLL_INTERVAL_MS);
  }
}

/* A port on 127.0.0.1 that was free a moment ago. */
static int
free_port (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int port = -1;

  if (fd == -1)
    return -1;
  if (bind (fd, (struct sockaddr *) &sin, sizeof sin) == 0 &&
      getsockname (fd, (struct sockaddr *) &sin, &len) == 0)
    port = ntohs (sin.sin_port);
  close (fd);
  return port;
}

/* ---- URIs ------------------------------------------------------------- */

static void
put_encoded (FILE *f, const char *s)
{
  for (; *s; s++) {
    unsigned char c = (unsigned char) *s;

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr ("-._~/", c))
      fputc (c, f);
    else
      fprintf (f, "%%%02X", c);
  }
}

static char *
make_uri (const char *sock, int port, const char *export_name)
{
  char *uri = NULL;
  size_t len;
  FILE *f = open_memstream (&uri, &len);

  if (!f)
    return NULL;
  if (sock)
    fputs ("nbd+unix:///", f);
  else
    fprintf (f, "nbd://127.0.0.1:%d/", port);
  put_encoded (f, export_name ? export_name : "");
  if (sock) {
    fputs ("?socket=", f);
    put_encoded (f, sock);
  }
  if (fclose (f) == EOF) {
    free (uri);
    return NULL;
  }
  return uri;
}

char *
server_uri (const struct test_server *s, const char *export_name)
{
  if (!s->node_) {
    errno = EINVAL;
    return NULL;
  }
  return make_uri (s->node_->sock, s->node_->port, export_name);
}

/* ---- Starting --------------------------------------------------------- */

/* The shared tail of every start: name the export, make the URI, publish. */
static int
finish_start (struct test_server *s, struct server_node *n, const char *export_name)
{
  n->export_name = strdup (export_name ? export_name : "");
  n->uri = n->export_name ? make_uri (n->sock, n->port, n->export_name) : NULL;
  if (!n->uri) {
    node_stop (n);
    return -1;
  }
  publish (s, n);
  return 0;
}

/* Argument builders: fill @opts (a NULL-terminated head of argv) for a
 * server listening on @n's socket or port.  @buf holds the port string.
 */
typedef void (*head_fn) (const char **opts, const struct server_node *n, char *buf);

static void
nbdkit_head (const char **opts, const struct server_node *n, char *buf)
{
  size_t i = 0;

  opts[i++] = "nbdkit";
  opts[i++] = "-f";
  opts[i++] = "--exit-with-parent";
  if (n->sock) {
    opts[i++] = "-U";
    opts[i++] = n->sock;
  }
  else {
    opts[i++] = "-i";
    opts[i++] = "127.0.0.1";
    opts[i++] = "-p";
    opts[i++] = buf;
  }
  opts[i] = NULL;
}

static void
qemu_nbd_head (const char **opts, const struct server_node *n, char *buf)
{
  size_t i = 0;

  opts[i++] = "qemu-nbd";
  opts[i++] = "-t";
  if (n->sock) {
    opts[i++] = "-k";
    opts[i++] = n->sock;
  }
  else {
    opts[i++] = "-b";
    opts[i++] = "127.0.0.1";
    opts[i++] = "-p";
    opts[i++] = buf;
  }
  opts[i] = NULL;
}

/* Start a foreground server (our own child) on a Unix socket, or on TCP with
 * a fresh free port per attempt.
 */
static int
start_child (struct test_server *s, const char *program, head_fn head,
             const char *const *args, bool tcp, const char *export_name)
{
  pthread_once (&once, init_once);
  *s = (struct test_server) { .status = -1 };

  for (int attempt = 1; attempt <= (tcp ? TCP_ATTEMPTS : 1); attempt++) {
    struct server_node *n = node_new (program);
    const char *opts[12];
    char portbuf[16];
    char **argv;
    int err;

    if (!n)
      return -1;
    if (tcp) {
      n->port = free_port ();
      if (n->port <= 0) {
        node_stop (n);
        return -1;
      }
    }
    else if (asprintf (&n->sock, "%s/sock", n->dir) == -1) {
      n->sock = NULL;
      node_stop (n);
      return -1;
    }
    snprintf (portbuf, sizeof portbuf, "%d", n->port);
    head (opts, n, portbuf);
    argv = join_argv (opts, args);
    if (!argv) {
      node_stop (n);
      return -1;
    }
    n->pid = spawn (argv);
    free (argv);
    if (n->pid == -1) {
      err = errno;
      n->pid = 0;
      node_stop (n);
      errno = err;
      return -1;
    }
    if (wait_listening (n) == 0)
      return finish_start (s, n, export_name);
    err = errno;
    node_stop (n);
    errno = err;
    if (!tcp || err != ECHILD)
      return -1;
    fprintf (stderr, "servers: %s: port may have been taken, retrying (%d/%d)\n",
             program, attempt, TCP_ATTEMPTS);
  }
  return -1;
}

int
server_start_nbdkit (struct test_server *s, const char *const *args)
{
  return start_child (s, "nbdkit", nbdkit_head, args, false, "");
}

int
server_start_nbdkit_tcp (struct test_server *s, const char *const *args)
{
  return start_child (s, "nbdkit", nbdkit_head, args, true, "");
}

/* The export qemu-nbd serves: the value of -x / --export-name, else "". */
static const char *
qemu_nbd_export (const char *const *args)
{
  const char *name = "";

  for (size_t i = 0; args && args[i]; i++) {
    if ((strcmp (args[i], "-x") == 0 || strcmp (args[i], "--export-name") == 0) && args[i + 1])
      name = args[++i];
    else if (strncmp (args[i], "--export-name=", 14) == 0)
      name = args[i] + 14;
  }
  return name;
}

int
server_start_qemu_nbd (struct test_server *s, const char *const *args)
{
  return start_child (s, "qemu-nbd", qemu_nbd_head, args, false, qemu_nbd_export (args));
}

int
server_start_qemu_nbd_tcp (struct test_server *s, const char *const *args)
{
  return start_child (s, "qemu-nbd", qemu_nbd_head, args, true, qemu_nbd_export (args));
}

static int
write_nbd_server_config (const char *conf, const struct server_node *n, const char *image,
                         const char *export_name, const struct nbd_server_config *c)
{
  FILE *f = fopen (conf, "we");

  if (!f) {
    fprintf (stderr, "servers: %s: %m\n", conf);
    return -1;
  }
  fprintf (f, "[generic]\n");
  if (n->sock)
    fprintf (f, "unixsock = %s\n", n->sock);
  else
    fprintf (f, "listenaddr = 127.0.0.1\nport = %d\n", n->port);
  fprintf (f, "allowlist = true\n%s", c->generic_lines ? c->generic_lines : "");
  fprintf (f, "\n[%s]\nexportname = %s\n%s", export_name, image,
           c->export_lines ? c->export_lines : "");
  if (fclose (f) == EOF) {
    fprintf (stderr, "servers: %s: %m\n", conf);
    return -1;
  }
  return 0;
}

/* Read a PID from nbd-server's pid file, waiting until it is written. */
static pid_t
read_pid_file (const char *path, int64_t deadline)
{
  for (;;) {
    FILE *f = fopen (path, "re");
    int pid = 0;

    if (f) {
      if (fscanf (f, "%d", &pid) != 1)
        pid = 0;
      fclose (f);
      if (pid > 0)
        return pid;
    }
    if (now_ms () >= deadline)
      return -1;
    sleep_ms (POLL_INTERVAL_MS);
  }
}

/* One attempt: write the config, run the launcher (which daemonizes and
 * exits), take the daemon's PID from the pid file, put a guardian on it and
 * wait until it listens.
 */
static int
start_nbd_server_once (struct server_node *n, const char *image, const char *export_name,
                       const struct nbd_server_config *c)
{
  int64_t deadline = now_ms () + SERVER_START_TIMEOUT_MS;
  char *conf = NULL, *pidfile = NULL;
  pid_t launcher, pid;
  int st, r = -1;
  char how[96];

  if (asprintf (&conf, "%s/nbd-server.conf", n->dir) == -1 ||
      asprintf (&pidfile, "%s/nbd-server.pid", n->dir) == -1)
    goto out;
  if (write_nbd_server_config (conf, n, image, export_name, c) == -1)
    goto out;

  const char *argv[] = { "nbd-server", "-C", conf, "-p", pidfile, NULL };
  launcher = spawn ((char *const *) argv);
  if (launcher == -1)
    goto out;
  if (!wait_child (launcher, SERVER_START_TIMEOUT_MS, &st)) {
    kill (launcher, SIGKILL);
    wait_child (launcher, STOP_TIMEOUT_MS, &st);
    fprintf (stderr, "servers: nbd-server did not daemonize\n");
    errno = ETIMEDOUT;
    goto out;
  }
  if (st != 0) {
    describe_status (how, sizeof how, st);
    fprintf (stderr, "servers: nbd-server %s\n", how);
    errno = ECHILD;
    goto out;
  }
  pid = read_pid_file (pidfile, deadline);
  if (pid <= 0) {
    fprintf (stderr, "servers: nbd-server wrote no pid file %s\n", pidfile);
    errno = ETIMEDOUT;
    goto out;
  }
  n->pid = pid;
  n->daemon = true;
  if (spawn_guardian (n) == -1) {
    fprintf (stderr, "servers: guardian for nbd-server: %m\n");
    goto out;
  }
  r = wait_listening (n);

 out:
  free (conf);
  free (pidfile);
  return r;
}

int
server_start_nbd_server_config (struct test_server *s, const struct nbd_server_config *c)
{
  const char *export_name = c->export_name ? c->export_name : "disk";
  char *image;
  int r = -1;

  pthread_once (&once, init_once);
  *s = (struct test_server) { .status = -1 };
  if (!c->image || !(image = realpath (c->image, NULL))) {
    fprintf (stderr, "servers: nbd-server: image %s: %m\n", c->image ? c->image : "(null)");
    return -1;
  }
  /* The export name becomes a section header; a ']' or newline would break it. */
  if (strpbrk (export_name, "[]\n") || !*export_name) {
    fprintf (stderr, "servers: nbd-server: bad export name \"%s\"\n", export_name);
    errno = EINVAL;
    goto out;
  }

  for (int attempt = 1; attempt <= (c->tcp ? TCP_ATTEMPTS : 1); attempt++) {
    struct server_node *n = node_new ("nbd-server");
    int err;

    if (!n)
      goto out;
    if (c->tcp)
      n->port = free_port ();
    else if (asprintf (&n->sock, "%s/sock", n->dir) == -1)
      n->sock = NULL;
    if ((c->tcp && n->port <= 0) || (!c->tcp && !n->sock)) {
      node_stop (n);
      goto out;
    }
    if (start_nbd_server_once (n, image, export_name, c) == 0) {
      r = finish_start (s, n, export_name);
      goto out;
    }
    err = errno;
    node_stop (n);
    errno = err;
    if (!c->tcp || err != ECHILD)
      goto out;
    fprintf (stderr, "servers: nbd-server: port may have been taken, retrying (%d/%d)\n",
             attempt, TCP_ATTEMPTS);
  }

 out:
  free (image);
  return r;
}

int
server_start_nbd_server (struct test_server *s, const char *image, const char *export_name,
                         const char *extra_config_lines)
{
  const struct nbd_server_config c = {
    .image = image,
    .export_name = export_name,
    .export_lines = extra_config_lines,
  };

  return server_start_nbd_server_config (s, &c);
}

/* ---- Scratch files ---------------------------------------------------- */

const char *
servers_scratch_dir (void)
{
  const char *dir;

  pthread_once (&once, init_once);
  pthread_mutex_lock (&lock);
  if (!scratch)
    scratch = make_temp_dir ("scratch");
  dir = scratch;
  pthread_mutex_unlock (&lock);
  return dir;
}

/* ---- nbdkit's pause filter -------------------------------------------- */

int
server_pause_control (const char *path, char cmd)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct pollfd pfd = { .events = POLLIN };
  char ack = 0;
  int fd, r = -1;

  if (strlen (path) >= sizeof sun.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy (sun.sun_path, path);
  if ((fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
    return -1;
  pfd.fd = fd;
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0 && write (fd, &cmd, 1) == 1) {
    /* A bound, not a timing: the filter answers once in-flight requests
     * are done, milliseconds here. */
    int n = poll (&pfd, 1, 60000);

    if (n == 0)
      errno = ETIMEDOUT;
    else if (n == 1 && read (fd, &ack, 1) == 1) {
      if (ack == cmd - 'a' + 'A')
        r = 0;
      else
        errno = EPROTO;
    }
    else if (n == 1)
      errno = ECONNRESET;
  }
  if (r == -1)
    fprintf (stderr, "servers: pause filter %s: '%c' not acknowledged (got '%c'): %m\n", path,
             cmd, ack ? ack : '-');
  close (fd);
  return r;
}

int
servers_run (const char *const *argv, unsigned timeout_s)
{
  char how[96];
  pid_t pid = spawn ((char *const *) argv);
  int st;

  if (pid == -1)
    return -1;
  if (!wait_child (pid, (int) timeout_s * 1000, &st)) {
    kill (pid, SIGKILL);
    wait_child (pid, STOP_TIMEOUT_MS, &st);
    fprintf (stderr, "servers: %s: killed after %u s\n", argv[0], timeout_s);
    errno = ETIMEDOUT;
    return -1;
  }
  if (st != -1 && WIFEXITED (st))
    return WEXITSTATUS (st);
  describe_status (how, sizeof how, st);
  fprintf (stderr, "servers: %s %s\n", argv[0], how);
  errno = ECHILD;
  return -1;
}

char *
image_create (const char *format, uint64_t size, const char *const *qemu_io_cmds)
{
  static unsigned counter;
  const char *dir = servers_scratch_dir ();
  char *path, sizebuf[32];
  unsigned id;

  if (!dir)
    return NULL;
  id = __atomic_add_fetch (&counter, 1, __ATOMIC_RELAXED);
  if (asprintf (&path, "%s/image-%u.%s", dir, id, format) == -1)
    return NULL;
  snprintf (sizebuf, sizeof sizebuf, "%" PRIu64, size);

  if (strcmp (format, "raw") == 0) {
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

    if (fd == -1 || ftruncate (fd, (off_t) size) == -1) {
      fprintf (stderr, "servers: %s: %m\n", path);
      if (fd >= 0)
        close (fd);
      goto err;
    }
    close (fd);
  }
  else {
    const char *argv[] = { "qemu-img", "create", "-q", "-f", format, path, sizebuf, NULL };

    if (servers_run (argv, 60) != 0) {
      fprintf (stderr, "servers: qemu-img create -f %s %s failed\n", format, path);
      goto err;
    }
  }

  if (qemu_io_cmds && qemu_io_cmds[0]) {
    size_t n = 0;

    while (qemu_io_cmds[n])
      n++;
    const char **argv = calloc (2 * n + 5, sizeof *argv);
    size_t i = 0;

    if (!argv)
      goto err;
    argv[i++] = "qemu-io";
    argv[i++] = "-f";
    argv[i++] = format;
    for (size_t j = 0; j < n; j++) {
      argv[i++] = "-c";
      argv[i++] = qemu_io_cmds[j];
    }
    argv[i++] = path;
    argv[i] = NULL;
    int r = servers_run (argv, 60);
    free (argv);
    if (r != 0) {
      fprintf (stderr, "servers: qemu-io on %s failed\n", path);
      goto err;
    }
  }
  return path;

 err:
  unlink (path);
  free (path);
  return NULL;
}

char *
image_create_raw (uint64_t size)
{
  return image_create ("raw", size, NULL);
}

char *
image_create_qcow2 (uint64_t size)
{
  return image_create ("qcow2", size, NULL);
}

/* ---- nbdkit's log filter ------------------------------------------------- */

const char *const server_log_requests[] = { " Read id=", " Write id=", NULL };

int
server_log_count (const char *path, const char *const *words)
{
  FILE *f = fopen (path, "r");
  char line[1024];
  int n = 0;

  if (!f)
    return 0;
  while (fgets (line, sizeof line, f))
    for (size_t i = 0; words[i]; i++)
      if (strstr (line, words[i])) {
        n++;
        break;
      }
  fclose (f);
  return n;
}

int
server_log_wait (const char *path, const char *const *words, int n, unsigned timeout_s)
{
  char dir[PATH_MAX];
  const char *slash = strrchr (path, '/');
  struct timespec start, now;
  int fd, got;

  /* The directory, so that the file may not exist yet. */
  snprintf (dir, sizeof dir, "%.*s", slash ? (int) (slash - path) : 1, slash ? path : ".");
  fd = inotify_init1 (IN_CLOEXEC | IN_NONBLOCK);
  if (fd == -1 || inotify_add_watch (fd, dir, IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE) == -1) {
    fprintf (stderr, "servers: inotify on %s: %m\n", dir);
    abort ();
  }
  clock_gettime (CLOCK_MONOTONIC, &start);
  /* Counted after the watch is set: no write falls between the two. */
  while ((got = server_log_count (path, words)) < n) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    char buf[4096];
    long left;

    clock_gettime (CLOCK_MONOTONIC, &now);
    left = (long) timeout_s * 1000 - ((now.tv_sec - start.tv_sec) * 1000 +
                                      (now.tv_nsec - start.tv_nsec) / 1000000);
    if (left <= 0 || (poll (&pfd, 1, (int) left) == -1 && errno != EINTR))
      break;
    while (read (fd, buf, sizeof buf) > 0)
      ;
  }
  close (fd);
  return got;
}
