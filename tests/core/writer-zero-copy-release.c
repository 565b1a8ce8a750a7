/* writer-zero-copy-release: the accounting of nbd_concurrent_writer_release.
 *  - with no writer, or the copying writer, nothing is lent: releasing 1
 *    byte is EINVAL (the message names the call); releasing 0 is fine;
 *  - three writes lent (64 KiB, 64 KiB, 4 KiB) and held unsent, then the
 *    writer fails (EPIPE): all three are pinned; releasing more than lent
 *    (lent + 1, and SIZE_MAX, which must not wrap the counter round) is
 *    EINVAL and changes nothing: giving back in pieces then completes each
 *    write exactly when the pieces cover its payload, in order, with EPIPE,
 *    once; one byte short keeps a write pinned; past the last byte lent is
 *    EINVAL again;
 *  - a 16 MiB write through a live connection: the thread gives back what
 *    each sendmsg took, in several pieces, adding up to the payload.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define KiB 1024

static bool
names_call (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  return msg && strncmp (msg, call, n) == 0 && strncmp (msg + n, ": ", 2) == 0;
}

static void
dummy_writer (void *data, const void *buf, size_t len)
{
}

/* ---- Nothing lent ----------------------------------------------------- */

static void
nothing_lent (void)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_concurrent_writer_release (h, 1), -1, "no writer: releasing 1 byte fails");
  is_errno (EINVAL, "no writer: with EINVAL");
  ok (names_call ("nbd_concurrent_writer_release"), "no writer: the message names the call (%s)",
      nbd_get_error ());
  is_int (nbd_concurrent_writer_release (h, 0), 0, "no writer: releasing 0 bytes is fine");
  nbd_close (h);

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_set_concurrent_writer (h, NULL, dummy_writer), 0, "copying writer set");
  is_int (nbd_concurrent_writer_release (h, 1), -1, "copying writer: releasing 1 byte fails");
  is_errno (EINVAL, "copying writer: with EINVAL");
  nbd_close (h);
}

/* ---- Pieces ----------------------------------------------------------- */

struct rec {
  unsigned calls;
  int error;
};

static struct rec recs[3];

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 1;
}

static int
poll_in (struct nbd_handle *h, int ms)
{
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

  if (poll (&pfd, 1, ms) <= 0)
    return 0;
  return nbd_aio_notify_read (h);
}

/* Let the handle run its pinned commands' completions (any locked call
 * does), and say which have completed: a bit per write. */
static unsigned
completed (struct nbd_handle *h)
{
  unsigned bits = 0;

  nbd_aio_in_flight (h);
  for (int i = 0; i < 3; i++)
    if (recs[i].calls)
      bits |= 1u << i;
  return bits;
}

static void
pieces (const struct test_server *s)
{
  static unsigned char a[64 * KiB], b[64 * KiB], c[4 * KiB];
  const uint64_t lent = sizeof a + sizeof b + sizeof c;
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  double end;
  bool all_once = true;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  r.manual_release = true;
  if (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc) == -1 ||
      nbd_connect_uri (h, s->uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  WR_SET (&r, gate_closed, true);
  memset (a, 1, sizeof a);
  memset (b, 2, sizeof b);
  memset (c, 3, sizeof c);
  ok (nbd_aio_pwrite (h, a, sizeof a, 0,
                      (nbd_completion_callback) { .callback = done_cb, .user_data = &recs[0] },
                      0) >= 1 &&
      nbd_aio_pwrite (h, b, sizeof b, 64 * KiB,
                      (nbd_completion_callback) { .callback = done_cb, .user_data = &recs[1] },
                      0) >= 1 &&
      nbd_aio_pwrite (h, c, sizeof c, 128 * KiB,
                      (nbd_completion_callback) { .callback = done_cb, .user_data = &recs[2] },
                      0) >= 1, "three writes queued, held by the writer");
  is_uint (WR_GET (&r, lent), lent, "%" PRIu64 " bytes lent", lent);

  is_int (nbd_concurrent_writer_release (h, lent + 1), -1, "releasing lent + 1 fails");
  is_errno (EINVAL, "with EINVAL");
  ok (names_call ("nbd_concurrent_writer_release"), "the message names the call (%s)",
      nbd_get_error ());
  is_int (nbd_concurrent_writer_release (h, 0), 0, "releasing 0 is fine");

  /* The writer fails with all three still lent: they are pinned. */
  WR_SET (&r, fail_now, EPIPE);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (!nbd_aio_is_dead (h) && wr_now () < end)
    poll_in (h, 100);
  ok (nbd_aio_is_dead (h), "the writer's failure killed the connection");
  is_uint (completed (h), 0, "no write completed: all are pinned");
  is_int (nbd_aio_in_flight (h), 3, "all three still count as in flight");

  is_int (nbd_concurrent_writer_release (h, 32 * KiB), 0, "release 32 KiB");
  is_uint (completed (h), 0, "half of the first payload back: nothing completes");
  is_int (nbd_concurrent_writer_release (h, SIZE_MAX), -1, "releasing SIZE_MAX fails");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_concurrent_writer_release (h, lent - 32 * KiB + 1), -1,
          "releasing 1 byte more than is still lent fails");
  is_errno (EINVAL, "with EINVAL");
  is_uint (completed (h), 0, "the failed releases completed nothing");
  is_int (nbd_concurrent_writer_release (h, 32 * KiB - 1), 0, "release 32 KiB - 1");
  is_uint (completed (h), 0, "one byte of the first payload still lent: still pinned");
  is_int (nbd_concurrent_writer_release (h, 1), 0, "release the last byte of the first payload");
  is_uint (completed (h), 1, "exactly the first write completes");
  is_int (nbd_concurrent_writer_release (h, 64 * KiB + 4 * KiB - 1), 0,
          "release all but one byte of the rest");
  is_uint (completed (h), 3, "the second write completes, the third is still pinned");
  is_int (nbd_concurrent_writer_release (h, 2), -1, "releasing 2 bytes with 1 left fails");
  is_errno (EINVAL, "with EINVAL");
  is_uint (completed (h), 3, "and completes nothing");
  is_int (nbd_concurrent_writer_release (h, 1), 0, "release the last byte");
  is_uint (completed (h), 7, "the third write completes");
  is_int (nbd_concurrent_writer_release (h, 1), -1, "everything is back: 1 more byte fails");
  is_errno (EINVAL, "with EINVAL");
  for (int i = 0; i < 3; i++) {
    if (recs[i].calls != 1)
      all_once = false;
    is_int (recs[i].error, EPIPE, "write %d completed with EPIPE", i);
  }
  ok (all_once, "each completion callback ran exactly once");
  is_int (nbd_aio_in_flight (h), 0, "nothing in flight any more");
  wr_stop (&r);
  nbd_close (h);
  for (int i = 0; i < 3; i++)
    if (recs[i].calls != 1)
      all_once = false;
  ok (all_once, "nbd_close called none of them again");
  wr_free (&r);
}

/* ---- In several pieces, as the thread sends -------------------------- */

static void
live (const struct test_server *s)
{
  const size_t len = 16 << 20;
  unsigned char *buf = malloc (len), *back = malloc (len);
  struct nbd_handle *h = nbd_create ();
  struct wring r;

  if (!buf || !back || !h || wr_start (&r, h) == -1)
    bail_out ("malloc, nbd_create or thread");
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char) (i * 7 + (i >> 12));
  if (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc) == -1 ||
      nbd_connect_uri (h, s->uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_pwrite (h, buf, len, 0, 0), 0, "live: a 16 MiB write");
  is_uint (WR_GET (&r, lent), len, "live: its payload was lent");
  is_uint (atomic_load (&r.releasing), len,
           "live: nbd_pwrite returned once the thread was giving all of it back");
  wr_wait_released (&r, len, WR_WAIT_MS);
  is_uint (WR_GET (&r, released), len, "live: all of it was given back");
  ok (WR_GET (&r, release_calls) > 1, "live: in %u pieces, one per sendmsg that took some",
      WR_GET (&r, release_calls));
  is_uint (WR_GET (&r, release_failures), 0, "live: no release failed");
  is_int (nbd_concurrent_writer_release (h, 1), -1, "live: 1 byte more fails");
  is_errno (EINVAL, "live: with EINVAL");
  memset (back, 0, len);
  is_int (nbd_pread (h, back, len, 0, 0), 0, "live: read it back");
  ok (memcmp (buf, back, len) == 0, "live: the disk holds it");
  is_int (nbd_shutdown (h, 0), 0, "live: nbd_shutdown");
  ok (wr_wait_done (&r, WR_WAIT_MS), "live: the writer thread ended");
  nbd_close (h);
  wr_free (&r);
  free (buf);
  free (back);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=32M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  nothing_lent ();
  pieces (&s);
  live (&s);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
