/* writer-zero-copy-early-reply: a server that answers a write before it has
 * read the payload.  qemu-nbd 7.2 refuses a request above its 32 MiB
 * buffer limit as soon as it has the 28-byte header: EINVAL comes back
 * while the payload is still lent to the zero-copy writer, unsent (the
 * writer thread here sends the header, then holds the payload until the
 * client has taken the reply and seen qemu-nbd hang up: an event, not a
 * delay).  The write must not complete before the thread has given its
 * payload back: a caller frees its buffer in the completion callback (as
 * this one does), and the thread would then send from freed memory.
 *  - once the reply is in and the connection dead, the write has not
 *    completed and its payload is unsent;
 *  - then the thread may send: the completion callback runs once, with
 *    EINVAL, only after the thread began giving the payload back;
 *  - the thread gave back every lent byte, and the handle can be closed.
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

#define MiB (1024 * 1024)
#define WLEN (33 * MiB)

static struct wring ring;

struct rec {
  unsigned calls;
  int error;
  uint64_t releasing;
  unsigned char *buf;
};

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  r->releasing = atomic_load (&ring.releasing);
  /* Done: the buffer is ours again. */
  free (r->buf);
  r->buf = NULL;
  return 1;
}

int
main (void)
{
  struct test_server s;
  struct nbd_handle *h;
  struct rec rec = { 0 };
  char *img;
  double end;
  uint64_t header_end;
  int64_t ck;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  img = image_create_raw (40 * MiB);
  if (!img)
    bail_out ("image_create_raw");
  {
    const char *args[] = { "-f", "raw", img, NULL };

    if (server_start_qemu_nbd (&s, args) == -1) {
      if (errno == ENOENT)
        skip_all ("qemu-nbd is not installed");
      bail_out ("cannot start qemu-nbd");
    }
  }
  h = nbd_create ();
  if (!h || wr_start (&ring, h) == -1)
    bail_out ("nbd_create or thread");
  if (nbd_set_concurrent_writer_zero_copy (h, &ring, wr_enqueue_zc) == -1 ||
      nbd_connect_uri (h, s.uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  rec.buf = malloc (WLEN);
  if (!rec.buf)
    bail_out ("malloc");
  memset (rec.buf, 0x5a, WLEN);

  /* The header goes out now, the payload only once the test says so. */
  ok (wr_wait_sent (&ring, WR_WAIT_MS), "the handshake was sent");
  pthread_mutex_lock (&ring.lock);
  header_end = ring.send_limit = ring.sent + 28;
  pthread_mutex_unlock (&ring.lock);
  ck = nbd_aio_pwrite (h, rec.buf, WLEN, 0,
                       (nbd_completion_callback) { .callback = done_cb, .user_data = &rec }, 0);
  ok (ck >= 1, "a 33 MiB nbd_aio_pwrite is queued");
  /* qemu-nbd answers the header, then drops the connection: once the
   * handle is dead it has read all there was (bounded, not timed). */
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (!nbd_aio_is_dead (h) && !nbd_aio_is_closed (h) && rec.calls == 0 && wr_now () < end) {
    struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    if (poll (&pfd, 1, 1000) > 0)
      nbd_aio_notify_read (h);
  }
  ok (nbd_aio_is_dead (h), "qemu-nbd answered the header and hung up: the handle is dead");
  is_uint (rec.calls, 0, "the write has not completed: its payload is still lent");
  is_uint (WR_GET (&ring, sent), header_end, "and unsent: only the header went");

  /* Now the thread may send (into a dead socket: it fails and drops). */
  WR_SET (&ring, send_limit, 0);
  ok (wr_wait_released (&ring, WLEN, WR_WAIT_MS), "the thread gave back every lent byte");
  nbd_aio_in_flight (h);
  is_uint (rec.calls, 1, "the next call into the handle completed the write, once");
  is_int (rec.error, EINVAL, "with qemu-nbd's EINVAL");
  ok (rec.releasing >= WLEN,
      "only after the thread began giving back its payload (%" PRIu64 " of %d bytes then)",
      rec.releasing, WLEN);
  is_uint (WR_GET (&ring, release_failures), 0, "no release failed");
  wr_stop (&ring);
  nbd_close (h);
  is_uint (rec.calls, 1, "nbd_close did not complete it again");
  wr_free (&ring);
  free (rec.buf);
  is_int (server_stop (&s), 0, "qemu-nbd stopped");
  free (img);
  return done_testing ();
}
