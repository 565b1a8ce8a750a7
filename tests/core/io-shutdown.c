/* io-shutdown: nbd_shutdown.
 *
 * Proves: a flag outside LIBNBD_SHUTDOWN_MASK (0x1, 0x20000) is refused
 * with EINVAL and the handle stays connected and usable; on a handle never
 * connected it is ENOTCONN; nbd_shutdown(0) with 16 large writes queued
 * sends them all before disconnecting, so all succeed and their data is on
 * the server; with LIBNBD_SHUTDOWN_ABANDON_PENDING the request already
 * going out completes and every one not yet sent fails with ENOTCONN, its
 * data never reaching the server; afterwards the handle is closed, nothing
 * is in flight, and nbd_pread, nbd_aio_pread, nbd_shutdown and
 * nbd_aio_disconnect fail with EINVAL naming the call.
 * nbdkit runs with -t 1 so it handles requests in order.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define N 16
#define WSIZE (4 * 1024 * 1024)

static unsigned char *bufs[N];

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

/* Region i of the export holds byte @fill throughout. */
static bool
region_is (const char *uri, int i, unsigned char fill)
{
  struct nbd_handle *h = nbd_create ();
  unsigned char *b = malloc (WSIZE);
  bool r = false;

  if (h && b && nbd_connect_uri (h, uri) == 0 &&
      nbd_pread (h, b, WSIZE, (uint64_t) i * WSIZE, 0) == 0) {
    r = true;
    for (size_t j = 0; j < WSIZE && r; j++)
      r = b[j] == fill;
    nbd_shutdown (h, 0);
  }
  nbd_close (h);
  free (b);
  return r;
}

static void
after_shutdown (struct nbd_handle *h, const char *m)
{
  char buf[512];

  is_int (nbd_aio_is_closed (h), 1, "%s: the handle is closed", m);
  is_int (nbd_aio_in_flight (h), 0, "%s: nothing in flight", m);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "%s: nbd_pread after shutdown fails", m);
  is_errno (EINVAL, "%s: EINVAL", m);
  ok (prefix_is ("nbd_pread"), "%s: message begins with nbd_pread: (%s)", m, nbd_get_error ());
  is_int (nbd_aio_pread (h, buf, sizeof buf, 0, NBD_NULL_COMPLETION, 0), -1,
          "%s: nbd_aio_pread after shutdown fails", m);
  is_errno (EINVAL, "%s: EINVAL", m);
  ok (nbd_shutdown (h, 0) == -1, "%s: a second nbd_shutdown fails", m);
  is_errno (EINVAL, "%s: EINVAL", m);
  ok (prefix_is ("nbd_shutdown"), "%s: message begins with nbd_shutdown: (%s)", m,
      nbd_get_error ());
  ok (nbd_aio_disconnect (h, 0) == -1, "%s: nbd_aio_disconnect fails", m);
  is_errno (EINVAL, "%s: EINVAL", m);
}

static void
queued_writes (const char *uri, uint32_t flags)
{
  const char *m = flags ? "ABANDON_PENDING" : "flags 0";
  struct nbd_handle *h = nbd_create ();
  int64_t c[N];
  int r[N], errs[N];
  int done = 0, abandoned = 0;

  if (!h)
    bail_out ("nbd_create");
  if (nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());

  /* The server starts at zero for every region. */
  {
    unsigned char *z = calloc (1, WSIZE);
    for (int i = 0; i < N && z; i++)
      nbd_pwrite (h, z, WSIZE, (uint64_t) i * WSIZE, 0);
    free (z);
  }
  for (int i = 0; i < N; i++) {
    memset (bufs[i], flags ? 0x80 + i : 0x40 + i, WSIZE);
    c[i] = nbd_aio_pwrite (h, bufs[i], WSIZE, (uint64_t) i * WSIZE, NBD_NULL_COMPLETION, 0);
  }
  ok (c[0] > 0 && c[N - 1] > c[0], "%s: %d writes queued", m, N);
  is_int (nbd_aio_in_flight (h), N, "%s: all %d in flight", m, N);
  is_int (nbd_shutdown (h, flags), 0, "%s: nbd_shutdown succeeds", m);
  for (int i = 0; i < N; i++) {
    r[i] = nbd_aio_command_completed (h, c[i]);
    errs[i] = r[i] == -1 ? nbd_get_errno () : 0;
    if (r[i] == 1)
      done++;
    else if (r[i] == -1 && errs[i] == ENOTCONN)
      abandoned++;
  }
  is_int (done + abandoned, N, "%s: every write completed (%d done, %d abandoned)", m, done,
          abandoned);
  if (flags == 0)
    is_int (done, N, "%s: every write was sent and succeeded", m);
  else {
    is_int (r[0], 1, "%s: the write already going out succeeded", m);
    ok (abandoned > 0, "%s: the writes not yet sent were abandoned with ENOTCONN", m);
    /* In order: once one is abandoned, all after it are. */
    {
      bool ordered = true;
      for (int i = 1; i < N; i++)
        ordered &= !(r[i - 1] == -1 && r[i] == 1);
      ok (ordered, "%s: abandoned ones are the last queued", m);
    }
  }
  after_shutdown (h, m);
  nbd_close (h);

  for (int i = 0; i < N; i++)
    ok (region_is (uri, i, r[i] == 1 ? bufs[i][0] : 0),
        "%s: region %d holds %s", m, i, r[i] == 1 ? "its write" : "zeroes (never sent)");
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "-t", "1", "memory", "size=64M", NULL };
  struct nbd_handle *h;
  char buf[512];

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  for (int i = 0; i < N; i++)
    if (!(bufs[i] = malloc (WSIZE)))
      bail_out ("malloc");

  is_int (LIBNBD_SHUTDOWN_ABANDON_PENDING, 0x10000, "LIBNBD_SHUTDOWN_ABANDON_PENDING is 0x10000");
  is_int (LIBNBD_SHUTDOWN_MASK, 0x10000, "LIBNBD_SHUTDOWN_MASK is 0x10000");
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  ok (nbd_shutdown (h, 0) == -1, "never connected: nbd_shutdown fails");
  is_errno (ENOTCONN, "never connected: ENOTCONN");
  nbd_close (h);

  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }

  h = nbd_create ();
  if (!h || nbd_connect_uri (h, s.uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  ok (nbd_shutdown (h, 1) == -1, "nbd_shutdown with flag 0x1 fails");
  is_errno (EINVAL, "EINVAL");
  ok (prefix_is ("nbd_shutdown"), "message begins with nbd_shutdown: (%s)", nbd_get_error ());
  ok (nbd_shutdown (h, 0x20000) == -1, "nbd_shutdown with flag 0x20000 fails");
  is_errno (EINVAL, "EINVAL");
  ok (nbd_shutdown (h, LIBNBD_SHUTDOWN_ABANDON_PENDING | 0x1) == -1,
      "nbd_shutdown with ABANDON_PENDING|0x1 fails");
  is_errno (EINVAL, "EINVAL");
  is_int (nbd_aio_is_ready (h), 1, "the handle is still ready");
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "and still reads");
  ok (nbd_aio_disconnect (h, 1) == -1, "nbd_aio_disconnect with flag 0x1 fails");
  is_errno (EINVAL, "EINVAL");
  is_int (nbd_aio_is_ready (h), 1, "the handle is still ready");
  is_int (nbd_shutdown (h, LIBNBD_SHUTDOWN_ABANDON_PENDING), 0,
          "ABANDON_PENDING with nothing pending succeeds");
  after_shutdown (h, "idle ABANDON_PENDING");
  nbd_close (h);

  queued_writes (s.uri, 0);
  queued_writes (s.uri, LIBNBD_SHUTDOWN_ABANDON_PENDING);

  is_int (server_stop (&s), 0, "nbdkit stopped");
  for (int i = 0; i < N; i++)
    free (bufs[i]);
  return done_testing ();
}
