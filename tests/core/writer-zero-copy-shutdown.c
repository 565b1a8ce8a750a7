/* writer-zero-copy-shutdown: nbd_shutdown while lent write payloads are
 * still in the zero-copy writer's ring (its thread holds everything until
 * the handle enters nbd_shutdown, then sends).
 *  - nbd_shutdown (flags 0, and LIBNBD_SHUTDOWN_ABANDON_PENDING: lent
 *    writes were handed over, so they are not abandoned) returns 0; every
 *    write completes once without error, never before its payload was given
 *    back; the ring held all of them when the thread started sending;
 *  - the stream ends with NBD_CMD_DISC and then the end-of-stream mark,
 *    once, with nothing after it; the thread shut the write side down only
 *    after sending every byte, and gave back every lent byte;
 *  - a second connection (no writer) reads every write back from nbdkit.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define KiB 1024
#define NR 32
#define WLEN (256 * KiB)

static struct wring *cur;

struct rec {
  unsigned calls;
  int error;
  uint64_t lent_end;
  bool early;
};

static struct rec recs[NR];
static unsigned char *bufs[NR];

static int
done_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  if (atomic_load (&cur->releasing) < r->lent_end)
    r->early = true;
  return 1;
}

static void
shutdown_with_lent (const char *uri, uint32_t flags, const char *mode, unsigned seed)
{
  struct nbd_handle *h = nbd_create (), *h2;
  struct wring r;
  unsigned ok_calls = 0, errs = 0, early = 0, same = 0;
  bool issued = true;
  uint64_t lent;
  unsigned char *back = malloc (WLEN);

  if (!h || !back || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  cur = &r;
  memset (recs, 0, sizeof recs);
  r.record = true;
  if (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc) == -1 ||
      nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  for (int i = 0; i < NR; i++)
    for (size_t j = 0; j < WLEN; j++)
      bufs[i][j] = (unsigned char) (j * 13 + i * 31 + seed);
  /* An event, not a delay: the thread wakes once nbd_shutdown holds the
   * handle, whatever the machine's load. */
  if (wr_open_gate_on_enter (&r, h, "nbd_shutdown") == -1)
    bail_out ("debug callback: %s", nbd_get_error ());
  for (int i = 0; i < NR; i++) {
    recs[i].lent_end = UINT64_MAX;
    if (nbd_aio_pwrite (h, bufs[i], WLEN, (uint64_t) i * WLEN,
                        (nbd_completion_callback) { .callback = done_cb,
                                                    .user_data = &recs[i] }, 0) < 1)
      issued = false;
    else
      recs[i].lent_end = WR_GET (&r, lent);
  }
  ok (issued, "%s: %d writes of 256 KiB lent to the ring", mode, NR);
  lent = WR_GET (&r, lent);
  is_uint (lent, (uint64_t) NR * WLEN, "%s: %" PRIu64 " bytes lent", mode, lent);
  ok (WR_GET (&r, gate_closed), "%s: the thread is still held", mode);
  is_uint (WR_GET (&r, sent_lent), 0, "%s: it has sent none of them yet", mode);

  is_int (nbd_shutdown (h, flags), 0, "%s: nbd_shutdown", mode);
  ok (nbd_aio_is_closed (h), "%s: the handle is closed", mode);
  ok (WR_GET (&r, queued_at_gate_open) >= lent,
      "%s: the ring held every payload when nbd_shutdown began (%" PRIu64 ")", mode,
      WR_GET (&r, queued_at_gate_open));
  is_int (WR_GET (&r, eos_at_gate_open), 0,
          "%s: before NBD_CMD_DISC and the end-of-stream mark", mode);
  for (int i = 0; i < NR; i++) {
    if (recs[i].calls == 1)
      ok_calls++;
    if (recs[i].error)
      errs++;
    if (recs[i].early)
      early++;
  }
  is_uint (ok_calls, NR, "%s: each write completed exactly once", mode);
  is_uint (errs, 0, "%s: none failed", mode);
  is_uint (early, 0, "%s: none before its payload was given back", mode);

  /* Bounded, not timed: the thread has nothing left but to end. */
  ok (wr_wait_done (&r, 60000), "%s: the thread ended after the end-of-stream mark", mode);
  is_int (WR_GET (&r, eos_count), 1, "%s: exactly one end-of-stream mark", mode);
  ok (!WR_GET (&r, bytes_after_eos), "%s: no bytes after it", mode);
  ok (WR_GET (&r, shut_wr), "%s: the thread shut the write side down", mode);
  is_uint (WR_GET (&r, sent_at_shut_wr), WR_GET (&r, accepted),
           "%s: after sending every byte handed over", mode);
  is_uint (WR_GET (&r, released), lent, "%s: every lent byte was given back", mode);
  is_uint (WR_GET (&r, sent_lent), lent, "%s: after being sent", mode);
  is_int (WR_GET (&r, send_errno), 0, "%s: no send failed", mode);
  pthread_mutex_lock (&r.lock);
  {
    const struct wr_call *last = &r.calls_log[r.nr_calls - 1];
    const struct wr_call *disc = &r.calls_log[r.nr_calls - 2];
    uint16_t type = 0xffff;

    if (disc->len == 28 && disc->flags == 0)
      memcpy (&type, r.log + disc->pos + 6, 2);
    ok (last->buf == NULL && last->len == 0 && last->flags == 0,
        "%s: the last call is the end-of-stream mark", mode);
    is_int (be16toh (type), 2, "%s: right after the NBD_CMD_DISC header", mode);
    is_uint (disc->pos + 28, r.log_len, "%s: which is the last byte of the stream", mode);
  }
  pthread_mutex_unlock (&r.lock);
  nbd_close (h);
  wr_free (&r);

  h2 = nbd_create ();
  if (!h2 || nbd_connect_uri (h2, uri) == -1)
    bail_out ("second connection: %s", nbd_get_error ());
  for (int i = 0; i < NR; i++) {
    memset (back, 0, WLEN);
    if (nbd_pread (h2, back, WLEN, (uint64_t) i * WLEN, 0) == 0 &&
        memcmp (back, bufs[i], WLEN) == 0)
      same++;
  }
  is_uint (same, NR, "%s: a second connection reads every write back", mode);
  nbd_shutdown (h2, 0);
  nbd_close (h2);
  free (back);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=16M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  for (int i = 0; i < NR; i++)
    if ((bufs[i] = malloc (WLEN)) == NULL)
      bail_out ("malloc");
  shutdown_with_lent (s.uri, 0, "shutdown", 1);
  shutdown_with_lent (s.uri, LIBNBD_SHUTDOWN_ABANDON_PENDING, "abandon pending", 2);
  for (int i = 0; i < NR; i++)
    free (bufs[i]);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
