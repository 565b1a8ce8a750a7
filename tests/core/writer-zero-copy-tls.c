/* writer-zero-copy-tls: the zero-copy writer under TLS (nbdkit, PSK).  The
 * bytes are ciphertext made by the thread driving the handle, so nothing is
 * lent: every callback call has flags 0, nothing waits for a release, and
 * writes of 4 KiB to 4 MiB (aio, 16 in flight, and sync) read back intact;
 * nbd_shutdown ends with the end-of-stream mark, once, after everything.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"
#include "writer-ring.h"

#define KiB 1024
#define MiB (1024 * KiB)

static struct tls_material m;
static unsigned done_calls, done_errors;

static int
done_cb (void *user_data, int *error)
{
  done_calls++;
  if (*error)
    done_errors++;
  return 1;
}

int
main (void)
{
  static unsigned char wbuf[28 * MiB], rbuf[28 * MiB];
  static const size_t sizes[] = { 4 * KiB, 64 * KiB, 1 * MiB, 4 * MiB };
  struct test_server s;
  struct nbd_handle *h;
  struct wring r;
  char *arg;
  uint64_t off = 0;
  int issued = 0;
  double end;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1)
    bail_out ("asprintf");
  if (server_start_nbdkit (&s, (const char *const[]) { "--tls=require", arg, "memory",
                                                       "size=32M", NULL }) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }

  h = nbd_create ();
  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  must (nbd_set_tls_psk_file (h, m.psk_file));
  must (nbd_set_tls_username (h, "alice"));
  is_int (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc), 0,
          "zero-copy writer set");
  if (!is_int (nbd_connect_unix (h, s.sock), 0, "connect with TLS through the writer"))
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_get_tls_negotiated (h), 1, "TLS negotiated");

  for (size_t i = 0; i < sizeof wbuf; i++)
    wbuf[i] = (unsigned char) (i * 2654435761u >> 11);
  /* 16 aio writes in flight, of every size. */
  for (int i = 0; i < 16; i++) {
    size_t len = sizes[i % 4];

    if (nbd_aio_pwrite (h, wbuf + off, len, off,
                        (nbd_completion_callback) { .callback = done_cb }, 0) >= 1)
      issued++;
    off += len;
  }
  is_int (issued, 16, "16 aio writes queued");
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (done_calls < 16 && wr_now () < end) {
    struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    /* Data GnuTLS holds is announced by no POLLIN: poll briefly. */
    if (poll (&pfd, 1, 10) >= 0 && nbd_aio_notify_read (h) == -1)
      break;
  }
  is_uint (done_calls, 16, "all 16 completed");
  is_uint (done_errors, 0, "without error");
  is_int (nbd_pwrite (h, wbuf + off, 4 * MiB, off, 0), 0, "a sync 4 MiB write");
  off += 4 * MiB;
  memset (rbuf, 0, sizeof rbuf);
  is_int (nbd_pread (h, rbuf, off, 0, 0), 0, "read everything back");
  ok (memcmp (rbuf, wbuf, off) == 0, "it is what was written (%" PRIu64 " bytes)", off);
  is_uint (WR_GET (&r, lent_calls), 0, "nothing was lent: the writer got ciphertext only");
  is_uint (WR_GET (&r, lent), 0, "no lent bytes");
  ok (WR_GET (&r, copy_calls) > 0, "the ciphertext came with flags 0 (%u calls)",
      WR_GET (&r, copy_calls));
  ok (WR_GET (&r, accepted) > off, "more bytes than the payloads (%" PRIu64 ")",
      WR_GET (&r, accepted));
  ok (!WR_GET (&r, bad_flags), "no other flags");
  is_int (nbd_shutdown (h, 0), 0, "nbd_shutdown");
  ok (wr_wait_done (&r, WR_WAIT_MS), "the thread ended after the end-of-stream mark");
  is_int (WR_GET (&r, eos_count), 1, "one end-of-stream mark");
  ok (!WR_GET (&r, bytes_after_eos), "nothing after it");
  is_uint (WR_GET (&r, sent_at_shut_wr), WR_GET (&r, accepted),
           "everything was sent before the write side was shut");
  nbd_close (h);
  wr_free (&r);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  free (arg);
  return done_testing ();
}
