/* subprocess.c: start the servers the client runs itself
 * (nbd_connect_command, nbd_connect_systemd_socket_activation).
 *
 * The caller may be multithreaded, so the child of fork() may find locks
 * (malloc's among them) held forever by threads that no longer exist: it
 * must call only async-signal-safe functions until exec, and everything it
 * needs is prepared before fork().  A close-on-exec pipe carries the child's
 * errno back when exec fails, so that the call fails instead of returning a
 * dead server.  This file never kills or reaps a server that did start; the
 * owner of the pid does.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errors.h"
#include "subprocess.h"

#define LISTEN_PID_VAR "LISTEN_PID="
#define LISTEN_FDS_VAR "LISTEN_FDS="
#define LISTEN_FDNAMES_VAR "LISTEN_FDNAMES="
#define ACTIVATION_FD 3          /* SD_LISTEN_FDS_START */

/* What went wrong in the child, written to the error pipe. */
enum child_step { CHILD_EXEC, CHILD_DUP2, CHILD_FCNTL };

struct child_failure {
  int step;
  int err;
};

/* What the child uses to put signals back the way a new program expects:
 * the caller may ignore SIGPIPE (most network programs do) or block signals
 * in the forking thread, and both would be inherited through exec.
 */
struct child_signals {
  struct sigaction dfl;
  sigset_t none;
};

static void
prepare_signals (struct child_signals *cs)
{
  memset (cs, 0, sizeof *cs);
  cs->dfl.sa_handler = SIG_DFL;
  sigemptyset (&cs->dfl.sa_mask);
  sigemptyset (&cs->none);
}

/* In the child.  Async-signal-safe. */
static void
reset_signals (const struct child_signals *cs)
{
  sigaction (SIGPIPE, &cs->dfl, NULL);
  sigprocmask (SIG_SETMASK, &cs->none, NULL);
}

/* In the child.  Async-signal-safe. */
__attribute__((noreturn)) static void
child_fail (int errfd, enum child_step step)
{
  struct child_failure f = { .step = step, .err = errno };
  ssize_t r;

  do
    r = write (errfd, &f, sizeof f);
  while (r == -1 && errno == EINTR);
  _exit (127);
}

/* The child rearranges low descriptors (0 and 1, or 3) with dup2; ours must
 * not be among them or dup2 would close them under us.
 */
static int
move_fd_up (int *fd, int min)
{
  int nfd;

  if (*fd >= min)
    return 0;
  nfd = fcntl (*fd, F_DUPFD_CLOEXEC, min);
  if (nfd == -1) {
    set_error (errno, "fcntl: F_DUPFD_CLOEXEC");
    return -1;
  }
  close (*fd);
  *fd = nfd;
  return 0;
}

static void
close_fd (int *fd)
{
  if (*fd >= 0) {
    close (*fd);
    *fd = -1;
  }
}

/* Above fd 3 so that both the command's stdio and the activation socket can
 * be placed without touching it.
 */
static int
make_error_pipe (int fds[2])
{
  if (pipe2 (fds, O_CLOEXEC) == -1) {
    set_error (errno, "pipe2");
    fds[0] = fds[1] = -1;
    return -1;
  }
  if (move_fd_up (&fds[0], ACTIVATION_FD + 1) == -1 ||
      move_fd_up (&fds[1], ACTIVATION_FD + 1) == -1) {
    close_fd (&fds[0]);
    close_fd (&fds[1]);
    return -1;
  }
  return 0;
}

static void
reap (pid_t pid)
{
  while (waitpid (pid, NULL, 0) == -1 && errno == EINTR)
    ;
}

/* In the parent, after fork, with the write end of the pipe closed: EOF means
 * exec succeeded (close-on-exec closed the child's end).
 */
static int
wait_for_exec (int errfd, pid_t pid, const char *prog)
{
  struct child_failure f;
  ssize_t r;

  do
    r = read (errfd, &f, sizeof f);
  while (r == -1 && errno == EINTR);

  if (r == 0)
    return 0;
  if (r == (ssize_t) sizeof f) {
    reap (pid);
    switch (f.step) {
    case CHILD_EXEC:
      set_error (f.err, "exec: %s", prog);
      break;
    case CHILD_DUP2:
      set_error (f.err, "dup2 in the child before exec: %s", prog);
      break;
    default:
      set_error (f.err, "fcntl in the child before exec: %s", prog);
      break;
    }
    return -1;
  }
  /* Cannot happen (pipe writes this small are atomic); do not leave a child
   * in an unknown state behind.
   */
  set_error (r == -1 ? errno : EIO, "reading the exec status of %s", prog);
  kill (pid, SIGKILL);
  reap (pid);
  return -1;
}

int
nbd_internal_spawn_command (char **argv, int *sock, pid_t *pid)
{
  int sv[2] = { -1, -1 }, errpipe[2] = { -1, -1 };
  struct child_signals cs;
  int flags;
  pid_t p;

  if (!argv || !argv[0]) {
    set_error (EINVAL, "the command is empty");
    return -1;
  }

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    set_error (errno, "socketpair");
    sv[0] = sv[1] = -1;
    goto err;
  }
  if (move_fd_up (&sv[0], STDERR_FILENO + 1) == -1 ||
      move_fd_up (&sv[1], STDERR_FILENO + 1) == -1)
    goto err;
  /* Only our end: the two ends are separate open file descriptions. */
  flags = fcntl (sv[0], F_GETFL);
  if (flags == -1 || fcntl (sv[0], F_SETFL, flags | O_NONBLOCK) == -1) {
    set_error (errno, "fcntl: O_NONBLOCK");
    goto err;
  }
  if (make_error_pipe (errpipe) == -1)
    goto err;
  prepare_signals (&cs);

  p = fork ();
  if (p == -1) {
    set_error (errno, "fork");
    goto err;
  }
  if (p == 0) {
    /* dup2 leaves close-on-exec clear on 0 and 1; sv[1] closes at exec. */
    if (dup2 (sv[1], STDIN_FILENO) == -1 || dup2 (sv[1], STDOUT_FILENO) == -1)
      child_fail (errpipe[1], CHILD_DUP2);
    reset_signals (&cs);
    execvp (argv[0], argv);
    child_fail (errpipe[1], CHILD_EXEC);
  }

  close_fd (&sv[1]);
  close_fd (&errpipe[1]);
  if (wait_for_exec (errpipe[0], p, argv[0]) == -1)
    goto err;
  close_fd (&errpipe[0]);
  *sock = sv[0];
  *pid = p;
  return 0;

 err:
  close_fd (&sv[0]);
  close_fd (&sv[1]);
  close_fd (&errpipe[0]);
  close_fd (&errpipe[1]);
  return -1;
}

/* In the child: the decimal digits of v at buf, NUL-terminated.
 * Async-signal-safe (no snprintf, which may allocate).
 */
static void
format_pid (char *buf, pid_t pid)
{
  unsigned long v = (unsigned long) pid;
  char digits[24];
  size_t n = 0;

  do {
    digits[n++] = '0' + v % 10;
    v /= 10;
  } while (v);
  while (n)
    *buf++ = digits[--n];
  *buf = '\0';
}

/* The caller's environment without stale LISTEN_* variables, plus
 * LISTEN_PID (pid_var: its digits are filled in by the child) and
 * LISTEN_FDS=1.  Only the array is allocated; the strings are borrowed.
 */
static char **
make_activation_env (char *pid_var)
{
  static char listen_fds[] = LISTEN_FDS_VAR "1";
  size_t i, j = 0, n = 0;
  char **env;

  if (environ)
    while (environ[n])
      n++;
  env = malloc ((n + 3) * sizeof *env);
  if (!env) {
    set_error (ENOMEM, "malloc");
    return NULL;
  }
  for (i = 0; i < n; i++) {
    if (strncmp (environ[i], LISTEN_PID_VAR, strlen (LISTEN_PID_VAR)) == 0 ||
        strncmp (environ[i], LISTEN_FDS_VAR, strlen (LISTEN_FDS_VAR)) == 0 ||
        strncmp (environ[i], LISTEN_FDNAMES_VAR, strlen (LISTEN_FDNAMES_VAR)) == 0)
      continue;
    env[j++] = environ[i];
  }
  env[j++] = pid_var;
  env[j++] = listen_fds;
  env[j] = NULL;
  return env;
}

int
nbd_internal_spawn_socket_activation (char **argv, char **tmpdir_ret,
                                      char **sockpath_ret, pid_t *pid_ret)
{
  /* The digits are written by the child, after fork, into its copy. */
  char pid_var[sizeof LISTEN_PID_VAR + 24] = LISTEN_PID_VAR;
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  const char *base = getenv ("TMPDIR");
  char *tmpdir = NULL, *sockpath = NULL;
  int s = -1, errpipe[2] = { -1, -1 };
  bool have_dir = false, have_sock = false;
  struct child_signals cs;
  char **env = NULL;
  pid_t p;

  if (!argv || !argv[0]) {
    set_error (EINVAL, "the command is empty");
    return -1;
  }

  if (!base || !*base)
    base = "/tmp";
  if (asprintf (&tmpdir, "%s/libnbd-core-XXXXXX", base) == -1) {
    tmpdir = NULL;
    set_error (ENOMEM, "asprintf");
    goto err;
  }
  if (!mkdtemp (tmpdir)) {
    set_error (errno, "mkdtemp: %s", tmpdir);
    goto err;
  }
  have_dir = true;
  if (asprintf (&sockpath, "%s/sock", tmpdir) == -1) {
    sockpath = NULL;
    set_error (ENOMEM, "asprintf");
    goto err;
  }
  if (strlen (sockpath) >= sizeof addr.sun_path) {
    set_error (ENAMETOOLONG, "socket path %s is too long (set TMPDIR to a "
               "shorter directory)", sockpath);
    goto err;
  }
  memcpy (addr.sun_path, sockpath, strlen (sockpath) + 1);

  s = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s == -1) {
    set_error (errno, "socket");
    goto err;
  }
  /* May land exactly on ACTIVATION_FD; the child copes. */
  if (move_fd_up (&s, STDERR_FILENO + 1) == -1)
    goto err;
  if (bind (s, (struct sockaddr *) &addr, sizeof addr) == -1) {
    set_error (errno, "bind: %s", sockpath);
    goto err;
  }
  have_sock = true;
  if (listen (s, SOMAXCONN) == -1) {
    set_error (errno, "listen: %s", sockpath);
    goto err;
  }

  env = make_activation_env (pid_var);
  if (!env)
    goto err;
  if (make_error_pipe (errpipe) == -1)
    goto err;
  prepare_signals (&cs);

  p = fork ();
  if (p == -1) {
    set_error (errno, "fork");
    goto err;
  }
  if (p == 0) {
    /* dup2 (3, 3) would leave close-on-exec set. */
    if (s == ACTIVATION_FD) {
      if (fcntl (s, F_SETFD, 0) == -1)
        child_fail (errpipe[1], CHILD_FCNTL);
    }
    else if (dup2 (s, ACTIVATION_FD) == -1)
      child_fail (errpipe[1], CHILD_DUP2);
    format_pid (&pid_var[strlen (LISTEN_PID_VAR)], getpid ());
    reset_signals (&cs);
    execvpe (argv[0], argv, env);
    child_fail (errpipe[1], CHILD_EXEC);
  }

  close_fd (&s);
  close_fd (&errpipe[1]);
  free (env);
  env = NULL;
  if (wait_for_exec (errpipe[0], p, argv[0]) == -1)
    goto err;
  close_fd (&errpipe[0]);
  *tmpdir_ret = tmpdir;
  *sockpath_ret = sockpath;
  *pid_ret = p;
  return 0;

 err:
  close_fd (&s);
  close_fd (&errpipe[0]);
  close_fd (&errpipe[1]);
  free (env);
  nbd_internal_remove_socket_dir (have_dir ? tmpdir : NULL,
                                  have_sock ? sockpath : NULL);
  free (sockpath);
  free (tmpdir);
  return -1;
}

void
nbd_internal_remove_socket_dir (const char *tmpdir, const char *sockpath)
{
  if (sockpath)
    unlink (sockpath);
  if (tmpdir)
    rmdir (tmpdir);
}
