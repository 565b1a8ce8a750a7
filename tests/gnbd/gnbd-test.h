/* gnbd-test.h: what the gnbd GTest programs share (header-only).
 *
 * Owns: starting the real servers a program needs (through
 * tests/servers/servers.h, stopped at exit by their PID), waiting for an
 * async result on the thread-default context (bounded), error assertions
 * that print the message, and counting the process's threads and fds.
 * It never starts a main loop of its own and never uses a mock server.
 *
 * Every program calls gt_init first: GTest's TAP output, and a watchdog
 * that ends a hung program (servers.h stops the servers at exit).
 */
#ifndef GNBD_TESTS_GNBD_TEST_H
#define GNBD_TESTS_GNBD_TEST_H

#include <dirent.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnbd/gnbd.h>

#include "servers.h"
#include "tls-material.h"

/* Every wait of the tests is bounded by this (a loaded 2-core machine
 * under TSan is ten times slower): a bound, never a performance claim. */
#define GT_WAIT_SECONDS 60

static inline void
gt_alarm_ (int sig)
{
  static const char msg[] = "Bail out! the test ran too long\n";
  ssize_t r = write (STDOUT_FILENO, msg, sizeof msg - 1);

  (void) r;
  (void) sig;
  _exit (1);
}

/* GTest with TAP (GLib's default), and an overall watchdog in seconds. */
static inline void
gt_init (int *argc, char ***argv, unsigned seconds)
{
  struct sigaction sa = { .sa_handler = gt_alarm_ };

  g_test_init (argc, argv, NULL);
  sigemptyset (&sa.sa_mask);
  sigaction (SIGALRM, &sa, NULL);
  alarm (seconds);
}

/* ---- Async results ------------------------------------------------------- */

/* One async call's outcome, and the thread its callback ran on. */
typedef struct {
  GAsyncResult *result;
  GThread *thread;
  gint done;                    /* atomic */
} GtAsync;

static inline void
gt_async_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  GtAsync *a = data;

  a->result = g_object_ref (result);
  a->thread = g_thread_self ();
  g_atomic_int_set (&a->done, 1);
}

static inline gboolean
gt_tick_ (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* Iterate the thread-default context until @flag is set, failing after
 * GT_WAIT_SECONDS (a tick wakes the loop to look at the clock). */
static inline void
gt_iterate_until (gint *flag)
{
  GMainContext *ctx = g_main_context_ref_thread_default ();
  gint64 end = g_get_monotonic_time () + GT_WAIT_SECONDS * G_USEC_PER_SEC;
  GSource *tick = g_timeout_source_new (250);

  g_source_set_callback (tick, gt_tick_, NULL, NULL);
  g_source_attach (tick, ctx);
  while (!g_atomic_int_get (flag)) {
    if (g_get_monotonic_time () > end)
      g_error ("gave up waiting after %d s", GT_WAIT_SECONDS);
    g_main_context_iteration (ctx, TRUE);
  }
  g_source_destroy (tick);
  g_source_unref (tick);
  g_main_context_unref (ctx);
}

/* Wait for @a's callback on this thread's default context; returns the
 * result (owned by @a until gt_async_clear) and checks the callback ran on
 * this thread. */
static inline GAsyncResult *
gt_async_wait (GtAsync *a)
{
  gt_iterate_until (&a->done);
  g_assert_true (a->thread == g_thread_self ());
  return a->result;
}

static inline void
gt_async_clear (GtAsync *a)
{
  g_clear_object (&a->result);
  a->thread = NULL;
  g_atomic_int_set (&a->done, 0);
}

/* ---- Errors -------------------------------------------------------------- */

/* g_assert_error, and the message shown in the log either way. */
#define gt_assert_error(err, dom, c)                                          \
  G_STMT_START {                                                              \
    if (err)                                                                  \
      g_test_message ("error: %s (%s %d)", (err)->message,                    \
                      g_quark_to_string ((err)->domain), (err)->code);        \
    g_assert_error ((err), (dom), (c));                                       \
  } G_STMT_END

/* ---- The process --------------------------------------------------------- */

static inline guint
gt_count_dir_ (const char *path)
{
  DIR *d = opendir (path);
  struct dirent *e;
  guint n = 0;

  g_assert_nonnull (d);
  while ((e = readdir (d)))
    if (e->d_name[0] != '.')
      n++;
  closedir (d);
  return n;
}

/* Threads of this process. */
static inline guint
gt_count_threads (void)
{
  return gt_count_dir_ ("/proc/self/task");
}

/* Open fds of this process (the directory's own fd excluded). */
static inline guint
gt_count_fds (void)
{
  return gt_count_dir_ ("/proc/self/fd") - 1;
}

/* ---- Servers ------------------------------------------------------------- */

/* Start nbdkit with @args (NULL-terminated) or skip the whole program. */
static inline void
gt_start_nbdkit (struct test_server *s, const char *const *args)
{
  if (server_start_nbdkit (s, args) == -1) {
    if (errno == ENOENT) {
      printf ("1..0 # SKIP nbdkit is not installed\n");
      exit (0);
    }
    g_error ("cannot start nbdkit");
  }
}

/* A connected client (sync connect to @s's Unix socket), writer @writer. */
static inline GnbdClient *
gt_client_unix (const struct test_server *s, gboolean writer)
{
  GnbdClient *c = gnbd_client_new ();
  GError *error = NULL;

  g_object_set (c, "concurrent-writer", writer, NULL);
  if (s->export_name && *s->export_name)
    g_object_set (c, "export-name", s->export_name, NULL);
  gnbd_client_connect_unix (c, s->sock, NULL, &error);
  g_assert_no_error (error);
  return c;
}

/* A GBytes of @n bytes of a pattern that depends on @seed and the offset. */
static inline GBytes *
gt_pattern (gsize n, guint8 seed)
{
  guint8 *p = g_malloc (n);

  for (gsize i = 0; i < n; i++)
    p[i] = (guint8) (seed + i * 7 + (i >> 9));
  return g_bytes_new_take (p, n);
}

/* ---- nbdkit's pause filter ---------------------------------------------- */

/* A path for a pause-control socket (the caller frees it). */
static inline char *
gt_pause_path (const char *name)
{
  return g_build_filename (servers_scratch_dir (), name, NULL);
}

/* Send @cmd ('p' or 'r') to nbdkit's pause filter and wait for its
 * answer ('P' once every request received before is done, or 'R'). */
static inline void
gt_pause_control (const char *path, char cmd)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  char answer = 0;

  g_assert_cmpint (fd, >=, 0);
  g_strlcpy (sun.sun_path, path, sizeof sun.sun_path);
  g_assert_cmpint (connect (fd, (struct sockaddr *) &sun, sizeof sun), ==, 0);
  g_assert_cmpint (write (fd, &cmd, 1), ==, 1);
  g_assert_cmpint (read (fd, &answer, 1), ==, 1);
  g_assert_cmpint (answer, ==, g_ascii_toupper (cmd));
  close (fd);
}

#endif /* GNBD_TESTS_GNBD_TEST_H */
