/* writer-twice: nbd_set_concurrent_writer is allowed once, in the states
 * the documentation names (created, connecting, connected), and refused
 * with EINVAL otherwise.
 *  - a second call is EINVAL in every state (created, connecting,
 *    connected), and the first writer stays the one that gets the bytes;
 *  - NULL as the writer is EFAULT;
 *  - negotiating (opt mode), closed and dead: EINVAL, message starting with
 *    "nbd_set_concurrent_writer: "; after nbd_opt_go the same handle may set
 *    one;
 *  - a writer set when created carries the whole option negotiation.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

static bool
starts_with (const char *s, const char *prefix)
{
  return s && strncmp (s, prefix, strlen (prefix)) == 0;
}

static void
refused (struct nbd_handle *h, struct wring *r, int err, const char *what)
{
  is_int (nbd_set_concurrent_writer (h, r, wr_enqueue), -1, "%s: nbd_set_concurrent_writer fails",
          what);
  is_errno (err, "%s: with %s", what, err == EINVAL ? "EINVAL" : "EFAULT");
  ok (starts_with (nbd_get_error (), "nbd_set_concurrent_writer: "),
      "%s: message starts with nbd_set_concurrent_writer: (%s)", what, nbd_get_error ());
}

/* I/O works and goes through @r, not @other. */
static void
io_through (struct nbd_handle *h, struct wring *r, struct wring *other, const char *what)
{
  unsigned char buf[4096], back[4096];
  uint64_t before = WR_GET (r, accepted);

  memset (buf, 0x3c, sizeof buf);
  is_int (nbd_pwrite (h, buf, sizeof buf, 0, 0), 0, "%s: nbd_pwrite works", what);
  is_int (nbd_pread (h, back, sizeof back, 0, 0), 0, "%s: nbd_pread works", what);
  ok (memcmp (buf, back, sizeof buf) == 0, "%s: data reads back", what);
  ok (WR_GET (r, accepted) >= before + 2 * 28 + sizeof buf, "%s: the bytes went through the "
      "first writer", what);
  if (other)
    is_uint (WR_GET (other, accepted), 0, "%s: none through the refused one", what);
}

static void
finish (struct nbd_handle *h, struct wring *r, struct wring *other, const char *what)
{
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", what);
  ok (wr_wait_done (r, WR_WAIT_MS), "%s: the writer thread ended", what);
  is_int (WR_GET (r, eos_count), 1, "%s: one end-of-stream mark", what);
  nbd_close (h);
  wr_free (r);
  if (other)
    wr_free (other);
}

static void
twice_created (const struct test_server *s)
{
  const char *what = "created";
  struct nbd_handle *h = nbd_create ();
  struct wring r, r2;

  if (!h || wr_start (&r, h) == -1 || wr_start (&r2, h) == -1)
    bail_out ("setup");
  is_int (nbd_set_concurrent_writer (h, &r, NULL), -1, "%s: NULL writer fails", what);
  is_errno (EFAULT, "%s: with EFAULT", what);
  ok (starts_with (nbd_get_error (), "nbd_set_concurrent_writer: "),
      "%s: message starts with nbd_set_concurrent_writer: (%s)", what, nbd_get_error ());
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0, "%s: first call succeeds", what);
  refused (h, &r2, EINVAL, "created, second call");
  ok (nbd_aio_is_created (h), "%s: still created", what);
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect", what))
    bail_out ("connect: %s", nbd_get_error ());
  refused (h, &r2, EINVAL, "created, third call once connected");
  io_through (h, &r, &r2, what);
  finish (h, &r, &r2, what);
}

static void
twice_connecting (void)
{
  const char *what = "connecting";
  char release[4200], script[4500];
  char *held_server[] = { "sh", "-c", script, NULL };
  struct nbd_handle *h = nbd_create ();
  struct wring r, r2;
  double end;
  int fd;

  if (!h || wr_start (&r, h) == -1 || wr_start (&r2, h) == -1)
    bail_out ("setup");
  /* The server starts (and greets) only once the test creates the release
   * file, after both calls: the handle is surely still connecting then.
   * An event, not a delay; the script gives up after two minutes if the
   * test died. */
  snprintf (release, sizeof release, "%s/writer-twice-release", servers_scratch_dir ());
  snprintf (script, sizeof script,
            "i=0; while [ ! -e '%s' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done; "
            "exec nbdkit -s --exit-with-parent memory size=1M", release);
  is_int (nbd_aio_connect_command (h, held_server), 0, "%s: nbd_aio_connect_command", what);
  ok (nbd_aio_is_connecting (h), "%s: the handle is connecting", what);
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0, "%s: first call succeeds", what);
  refused (h, &r2, EINVAL, "connecting, second call");
  if ((fd = open (release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) == -1)
    bail_out ("creating %s: %m", release);
  close (fd);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (nbd_aio_is_connecting (h) && wr_now () < end)
    if (nbd_poll (h, WR_WAIT_MS) == -1)
      break;
  ok (nbd_aio_is_ready (h), "%s: connected", what);
  refused (h, &r2, EINVAL, "connecting, third call once connected");
  io_through (h, &r, &r2, what);
  finish (h, &r, &r2, what);
}

static void
twice_connected (const struct test_server *s)
{
  const char *what = "connected";
  struct nbd_handle *h = nbd_create ();
  struct wring r, r2;

  if (!h || wr_start (&r, h) == -1 || wr_start (&r2, h) == -1)
    bail_out ("setup");
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect without a writer", what))
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0, "%s: first call succeeds", what);
  refused (h, &r2, EINVAL, "connected, second call");
  io_through (h, &r, &r2, what);
  finish (h, &r, &r2, what);
}

/* Opt mode: refused while negotiating, allowed once nbd_opt_go is done. */
static void
negotiating (const struct test_server *s)
{
  const char *what = "negotiating";
  struct nbd_handle *h = nbd_create ();
  struct wring r;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  is_int (nbd_set_opt_mode (h, true), 0, "%s: opt mode", what);
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect", what))
    bail_out ("connect: %s", nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: the handle is negotiating", what);
  refused (h, &r, EINVAL, what);
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating after the refusal", what);
  is_int (nbd_opt_go (h), 0, "%s: nbd_opt_go", what);
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0,
          "%s: allowed once connected by nbd_opt_go", what);
  io_through (h, &r, NULL, "negotiating, then connected");
  finish (h, &r, NULL, what);
}

/* Set when created, then opt mode: the negotiation goes through it. */
static int
count_export (void *user_data, const char *name, const char *description)
{
  (*(unsigned *) user_data)++;
  return 0;
}

static void
negotiating_through_writer (const struct test_server *s)
{
  const char *what = "opt mode through the writer";
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  unsigned exports = 0;
  uint64_t before;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0, "%s: set when created", what);
  must (nbd_set_opt_mode (h, true));
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect", what))
    bail_out ("connect: %s", nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
  refused (h, &r, EINVAL, "opt mode through the writer, second call while negotiating");
  before = WR_GET (&r, accepted);
  is_int (nbd_opt_list (h, (nbd_list_callback) { .callback = count_export,
                                                  .user_data = &exports }), 1,
          "%s: nbd_opt_list finds one export", what);
  is_uint (exports, 1, "%s: the list callback ran once", what);
  ok (WR_GET (&r, accepted) > before, "%s: NBD_OPT_LIST went through the writer", what);
  is_int (nbd_opt_go (h), 0, "%s: nbd_opt_go", what);
  io_through (h, &r, NULL, what);
  finish (h, &r, NULL, what);
}

static void
closed_and_dead (const struct test_server *s)
{
  struct nbd_handle *h = nbd_create ();
  char *victim[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "size=1M", NULL };
  unsigned char buf[512];
  struct wring r;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("setup");
  if (nbd_connect_uri (h, s->uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_shutdown (h, 0), 0, "closed: nbd_shutdown");
  ok (nbd_aio_is_closed (h), "closed: the handle is closed");
  refused (h, &r, EINVAL, "closed");
  nbd_close (h);

  h = nbd_create ();
  if (!h || nbd_connect_command (h, victim) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_kill_subprocess (h, SIGKILL), 0, "dead: the server is killed under the client");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), -1, "dead: nbd_pread fails");
  ok (nbd_aio_is_dead (h), "dead: the handle is dead");
  refused (h, &r, EINVAL, "dead");
  nbd_close (h);
  is_uint (WR_GET (&r, accepted), 0, "closed, dead: the refused writer never got a byte");
  wr_free (&r);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=1M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  twice_created (&s);
  twice_connecting ();
  twice_connected (&s);
  negotiating (&s);
  negotiating_through_writer (&s);
  closed_and_dead (&s);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
