/* handle-debug: debug messages and the debug callback's lifetime.
 *
 * Proves: with debug on, messages reach the callback with the calling
 * function's name as context and the callback's own user_data; with debug
 * off none arrive; the callback's .free runs exactly once when it is
 * replaced, when it is cleared and at nbd_close (and a callback with only
 * .free still gets it); without a callback messages go to stderr as
 * "libnbd: debug: NAME: CONTEXT: MSG"; LIBNBD_DEBUG=1 in the environment
 * turns debug on at nbd_create, other values do not.  One nbdkit server
 * shows messages arriving during a real connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

struct dbg {
  int calls;
  int frees;
  bool bad_user_data;
  int context_hits;             /* messages whose context was @want */
  const char *want;
};

static int
dbg_cb (void *opaque, const char *context, const char *msg)
{
  struct dbg *d = opaque;

  d->calls++;
  if (!context || !msg)
    d->bad_user_data = true;
  else if (d->want && strcmp (context, d->want) == 0)
    d->context_hits++;
  return 0;
}

static void
dbg_free (void *opaque)
{
  struct dbg *d = opaque;

  d->frees++;
}

static nbd_debug_callback
mk (struct dbg *d)
{
  return (nbd_debug_callback) { .callback = dbg_cb, .user_data = d, .free = dbg_free };
}

/* Run @fn with stderr going to a pipe; return what it wrote (malloc'd). */
static char *
capture_stderr (void (*fn) (struct nbd_handle *), struct nbd_handle *h)
{
  int p[2], saved;
  char *buf = calloc (1, 65536);
  ssize_t n, total = 0;

  if (pipe2 (p, O_NONBLOCK | O_CLOEXEC) == -1)
    bail_out ("pipe2: %m");
  fflush (stderr);
  saved = dup (STDERR_FILENO);
  dup2 (p[1], STDERR_FILENO);
  fn (h);
  fflush (stderr);
  dup2 (saved, STDERR_FILENO);
  close (saved);
  close (p[1]);
  while (total < 65535 && (n = read (p[0], buf + total, 65535 - total)) > 0)
    total += n;
  close (p[0]);
  return buf;
}

static void
set_name_x (struct nbd_handle *h)
{
  must (nbd_set_export_name (h, "x"));
}

static void
test_lifetime (void)
{
  struct dbg a = { .want = "nbd_set_export_name" }, b = { .want = "nbd_set_export_name" };
  struct dbg c = { 0 }, d = { 0 };
  struct nbd_handle *h = nbd_create ();
  char *err;
  char *name;
  char prefix[256];

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());

  is_int (nbd_set_debug_callback (h, mk (&a)), 0, "nbd_set_debug_callback (A)");
  is_int (a.frees, 0, "A is not freed when set");
  is_int (nbd_set_export_name (h, "x"), 0, "a call with debug off");
  is_int (a.calls, 0, "debug off: no messages reach the callback");

  is_int (nbd_set_debug (h, true), 0, "nbd_set_debug (true)");
  a.calls = 0;
  is_int (nbd_set_export_name (h, "y"), 0, "a call with debug on");
  ok (a.calls > 0, "debug on: messages reach the callback (%d)", a.calls);
  ok (a.context_hits > 0, "with the calling function's name as context");
  ok (!a.bad_user_data, "context and message are never NULL");

  is_int (nbd_set_debug_callback (h, mk (&b)), 0, "nbd_set_debug_callback (B) replaces A");
  is_int (a.frees, 1, "A's .free ran once when replaced");
  is_int (b.frees, 0, "B is not freed");
  a.calls = 0;
  is_int (nbd_set_export_name (h, "z"), 0, "another call with debug on");
  is_int (a.calls, 0, "A gets no more messages");
  ok (b.calls > 0 && b.context_hits > 0, "B gets them");

  is_int (nbd_clear_debug_callback (h), 0, "nbd_clear_debug_callback");
  is_int (b.frees, 1, "B's .free ran once when cleared");
  is_int (nbd_clear_debug_callback (h), 0, "clearing again is harmless");
  is_int (b.frees, 1, "B's .free did not run again");
  is_int (a.frees, 1, "nor A's");

  /* Without a callback, messages go to stderr. */
  name = nbd_get_handle_name (h);
  snprintf (prefix, sizeof prefix, "libnbd: debug: %s: nbd_set_export_name: ", name ? name : "?");
  free (name);
  err = capture_stderr (set_name_x, h);
  ok (strstr (err, prefix) != NULL, "without a callback debug goes to stderr as '%s...'", prefix);
  if (!strstr (err, prefix))
    diag ("stderr was: %s", err);
  free (err);
  must (nbd_set_debug (h, false));
  err = capture_stderr (set_name_x, h);
  is_str (err, "", "with debug off nothing goes to stderr");
  free (err);

  /* A callback that has only .free. */
  is_int (nbd_set_debug_callback (h, (nbd_debug_callback) { .user_data = &d, .free = dbg_free }),
          0, "a debug callback with only .free is accepted");
  is_int (d.frees, 0, "and not freed yet");
  is_int (nbd_set_debug_callback (h, mk (&c)), 0, "replace it with C");
  is_int (d.frees, 1, "the .free-only callback was freed once");

  nbd_close (h);
  is_int (c.frees, 1, "C's .free ran once at nbd_close");
  is_int (a.frees + b.frees + d.frees, 3, "no other .free ran again at close");
}

static void
test_connect_messages (void)
{
  struct test_server s;
  struct dbg a = { .want = "nbd_connect_unix" };
  struct nbd_handle *h;

  if (server_start_nbdkit (&s, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  h = nbd_create ();
  must (nbd_set_debug_callback (h, mk (&a)));
  must (nbd_set_debug (h, true));
  is_int (nbd_connect_unix (h, s.sock), 0, "connect with debug on");
  ok (a.context_hits > 0, "messages arrive during the connect, context nbd_connect_unix (%d)",
      a.context_hits);
  nbd_close (h);
  is_int (a.frees, 1, ".free ran once at close of a connected handle");
  server_stop (&s);
}

static void
test_env (void)
{
  struct nbd_handle *h;
  struct dbg a = { .want = "nbd_set_export_name" };

  setenv ("LIBNBD_DEBUG", "1", 1);
  h = nbd_create ();
  is_int (nbd_get_debug (h), 1, "LIBNBD_DEBUG=1 before nbd_create turns debug on");
  must (nbd_set_debug_callback (h, mk (&a)));
  must (nbd_set_export_name (h, "x"));
  ok (a.context_hits > 0, "and messages arrive without nbd_set_debug");
  is_int (nbd_set_debug (h, false), 0, "nbd_set_debug (false) still turns it off");
  is_int (nbd_get_debug (h), 0, "off");
  nbd_close (h);
  is_int (a.frees, 1, ".free once at close");

  setenv ("LIBNBD_DEBUG", "0", 1);
  h = nbd_create ();
  is_int (nbd_get_debug (h), 0, "LIBNBD_DEBUG=0 leaves debug off");
  nbd_close (h);

  setenv ("LIBNBD_DEBUG", "yes", 1);
  h = nbd_create ();
  is_int (nbd_get_debug (h), 0, "LIBNBD_DEBUG=yes leaves debug off (only \"1\" counts)");
  nbd_close (h);

  unsetenv ("LIBNBD_DEBUG");
  h = nbd_create ();
  is_int (nbd_get_debug (h), 0, "LIBNBD_DEBUG unset: debug off");
  nbd_close (h);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  unsetenv ("LIBNBD_DEBUG");

  test_lifetime ();
  test_connect_messages ();
  test_env ();
  return done_testing ();
}
