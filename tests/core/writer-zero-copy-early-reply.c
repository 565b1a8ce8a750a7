/* writer-zero-copy-early-reply: a server that answers a write before it has
 * read the payload.  qemu-nbd 7.2 refuses a request above its 32 MiB
 * buffer limit as soon as it has the 28-byte header: EINVAL comes back
 * while the payload is still lent to the zero-copy writer, unsent (the
 * writer thread here sends the header, then holds the payload for 500 ms).
 * The write must not complete before the thread has given its payload
 * back: a caller frees its buffer in the completion callback (as this one
 * does), and the thread would then send from freed memory.
 *  - the completion callback runs once, with EINVAL, only after the thread
 *    began giving the payload back (and so after those 500 ms);
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
  double when;
  uint64_t releasing;
  unsigned char *buf;
};

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  r->when = wr_now ();
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
  double t0, lift, end;
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

  /* The header goes out now, the payload only from `lift` on. */
  ok (wr_wait_sent (&ring, 5000), "the handshake was sent");
  t0 = wr_now ();
  lift = t0 + 0.5;
  pthread_mutex_lock (&ring.lock);
  ring.send_limit = ring.sent + 28;
  ring.send_limit_until = lift;
  pthread_mutex_unlock (&ring.lock);
  ck = nbd_aio_pwrite (h, rec.buf, WLEN, 0,
                       (nbd_completion_callback) { .callback = done_cb, .user_data = &rec }, 0);
  ok (ck >= 1, "a 33 MiB nbd_aio_pwrite is queued");
  end = t0 + 10;
  while (rec.calls == 0 && wr_now () < end) {
    struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    if (poll (&pfd, 1, 100) > 0)
      nbd_aio_notify_read (h);
    nbd_aio_in_flight (h);
  }
  is_uint (rec.calls, 1, "the write completed once");
  is_int (rec.error, EINVAL, "with qemu-nbd's EINVAL");
  ok (rec.releasing >= WLEN,
      "only after the thread began giving back its payload (%" PRIu64 " of %d bytes then)",
      rec.releasing, WLEN);
  ok (rec.when >= lift, "so not before the payload could go (%.0f ms after queueing)",
      (rec.when - t0) * 1000);
  ok (wr_now () < end, "within the time limit");

  /* qemu-nbd drops the connection after such a request. */
  wr_wait_released (&ring, WLEN, 5000);
  is_uint (WR_GET (&ring, released), WLEN, "the thread gave back every lent byte");
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
