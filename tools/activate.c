/* activate.c: running a server with systemd socket activation by hand.
 *
 * The tool binds a Unix socket in a private directory, and the server gets
 * it as fd 3 with LISTEN_FDS=1 and LISTEN_PID set to its own pid.  The pid
 * is only known after fork, so a shell sets it and then execs the server in
 * its place (same pid): no code of ours runs between fork and exec.  The
 * server gets SIGTERM if the tool dies (PR_SET_PDEATHSIG, kept across exec).
 */
#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "activate.h"

struct GtActivated {
  GSubprocess *process;
  char *dir, *sock, *uri;
};

/* In the child, between fork and exec: async-signal-safe calls only. */
static void
child_setup (gpointer data)
{
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

static void
activated_free (GtActivated *a)
{
  if (a->sock)
    g_unlink (a->sock);
  if (a->dir)
    g_rmdir (a->dir);
  g_clear_object (&a->process);
  g_free (a->dir);
  g_free (a->sock);
  g_free (a->uri);
  g_free (a);
}

GtActivated *
gt_activate (const char *const *argv, GError **error)
{
  static const char shell[] = "export LISTEN_PID=$$; exec \"$@\"";
  GtActivated *a = g_new0 (GtActivated, 1);
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GPtrArray) full = g_ptr_array_new ();
  g_autofree char *escaped = NULL, *program = g_find_program_in_path (argv[0]);
  int s = -1;

  /* Said here: once the shell runs, a missing program is only a refused
   * connection. */
  if (!program) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                 "Cannot run the server: %s: no such program", argv[0]);
    goto err;
  }
  if (!(a->dir = g_dir_make_tmp ("gnbd-XXXXXX", error)))
    goto err;
  a->sock = g_build_filename (a->dir, "sock", NULL);
  if (strlen (a->sock) >= sizeof sun.sun_path) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG,
                 "The socket path %s is too long (set TMPDIR to a shorter directory)", a->sock);
    g_clear_pointer (&a->sock, g_free);
    goto err;
  }
  strcpy (sun.sun_path, a->sock);
  s = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s == -1 || bind (s, (struct sockaddr *) &sun, sizeof sun) == -1 ||
      listen (s, SOMAXCONN) == -1) {
    int e = errno;

    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e),
                 "Cannot listen on %s: %s", a->sock, g_strerror (e));
    goto err;
  }

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_FDNAMES");
  g_subprocess_launcher_setenv (launcher, "LISTEN_FDS", "1", TRUE);
  g_subprocess_launcher_take_fd (launcher, s, 3);
  s = -1;
  g_subprocess_launcher_set_child_setup (launcher, child_setup, NULL, NULL);
  g_ptr_array_add (full, "/bin/sh");
  g_ptr_array_add (full, "-c");
  g_ptr_array_add (full, (char *) shell);
  g_ptr_array_add (full, "gnbd");
  for (const char *const *p = argv; *p; p++)
    g_ptr_array_add (full, (char *) *p);
  g_ptr_array_add (full, NULL);
  a->process = g_subprocess_launcher_spawnv (launcher, (const char *const *) full->pdata, error);
  if (!a->process)
    goto err;

  escaped = g_uri_escape_string (a->sock, "/", FALSE);
  a->uri = g_strdup_printf ("nbd+unix:///?socket=%s", escaped);
  return a;

 err:
  if (s != -1)
    close (s);
  activated_free (a);
  return NULL;
}

const char *
gt_activated_uri (GtActivated *a)
{
  return a->uri;
}

static void
wait_done (GObject *source, GAsyncResult *result, gpointer data)
{
  *(gboolean *) data = TRUE;
}

static gboolean
timed_out (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Whether the process ended within @seconds (on a private context: the
 * caller's is never run). */
static gboolean
wait_bounded (GSubprocess *p, guint seconds)
{
  g_autoptr (GMainContext) ctx = g_main_context_new ();
  gboolean done = FALSE, late = FALSE;
  GSource *timer = g_timeout_source_new_seconds (seconds);

  g_main_context_push_thread_default (ctx);
  g_subprocess_wait_async (p, NULL, wait_done, &done);
  g_source_set_callback (timer, timed_out, &late, NULL);
  g_source_attach (timer, ctx);
  while (!done && !late)
    g_main_context_iteration (ctx, TRUE);
  g_source_destroy (timer);
  g_source_unref (timer);
  /* The wait callback must not outlive `done`: let it run. */
  if (!done) {
    g_subprocess_force_exit (p);
    while (!done)
      g_main_context_iteration (ctx, TRUE);
  }
  g_main_context_pop_thread_default (ctx);
  return !late;
}

void
gt_activated_stop (GtActivated *a)
{
  g_subprocess_send_signal (a->process, SIGTERM);
  if (!wait_bounded (a->process, 5))
    g_printerr ("gnbd: the server did not stop within 5 s of SIGTERM, and was killed\n");
  activated_free (a);
}
