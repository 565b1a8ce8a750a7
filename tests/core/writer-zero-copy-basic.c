/* writer-zero-copy-basic: the zero-copy concurrent writer
 * (nbd_set_concurrent_writer_zero_copy) against nbdkit memory.
 *  - setting it: a NULL writer is EFAULT; a second writer (zero-copy or
 *    copying, either way round) is EINVAL; each message names the call;
 *  - set when Created (the sync connect goes through it) or when Connected
 *    (after a write sent directly): every aio call (pwrite, with FUA too,
 *    flush, pread, pread_structured, trim, cache, zero, block_status, a
 *    burst, disconnect) and the sync calls work; the callback gets flags
 *    LIBNBD_WRITER_LENT for exactly the write payloads, one call each, with
 *    buf equal to the caller's own buffer (pointer comparison: no copy);
 *    the handshake and every header come with flags 0; the stream is the
 *    requests issued, in order, payloads included; data reads back;
 *  - 64 and 256 mixed reads, writes, zeroes, trims and flushes in flight,
 *    every write buffer scribbled over as soon as its write completes:
 *    every read matches a model, and so does the whole disk at the end;
 *  - no write's completion callback runs before the writer thread has
 *    begun giving back all of its payload (nbd_concurrent_writer_release);
 *  - the thread released exactly the bytes lent, no release failed, the
 *    end-of-stream mark came once, last, after everything was sent, and
 *    nbd_aio_get_direction never had the WRITE bit;
 *  - option mode: nbd_opt_abort through the zero-copy writer ends with the
 *    end-of-stream mark too (once, flags 0), nothing lent.
 */
#include <endian.h>
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
#define POLL_MS WR_WAIT_MS

static struct wring *cur;       /* the ring of the handle being tested */
static unsigned write_bits_seen;
static unsigned early_completions;      /* writes completed before their release */
static unsigned write_completions;

static void
fill (unsigned char *buf, size_t len, uint64_t offset, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char) (((offset + i) * 2654435761u) >> 13) ^ (unsigned char) seed;
}

static bool
is_filled (const unsigned char *buf, size_t len, uint64_t offset, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    if (buf[i] != ((unsigned char) (((offset + i) * 2654435761u) >> 13) ^ (unsigned char) seed))
      return false;
  return true;
}

static bool
is_zero (const unsigned char *buf, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (buf[i])
      return false;
  return true;
}

/* One turn of a POLLIN-only loop. */
static int
poll_in (struct nbd_handle *h)
{
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

  write_bits_seen |= nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE;
  if (poll (&pfd, 1, POLL_MS) <= 0)
    return -1;
  return nbd_aio_notify_read (h);
}

static int
wait_cookie (struct nbd_handle *h, int64_t cookie)
{
  int r;

  if (cookie <= 0)
    return -1;
  while ((r = nbd_aio_command_completed (h, cookie)) == 0)
    if (poll_in (h) == -1) {
      diag ("poll loop failed: %s", nbd_get_error ());
      return -1;
    }
  return r;
}

/* ---- Writes that check their own completion -------------------------- */

struct wdone {
  uint64_t lent_end;            /* the ring's lent count once this payload was lent */
};

static int
write_done (void *user_data, int *error)
{
  struct wdone *w = user_data;

  write_completions++;
  if (atomic_load (&cur->releasing) < w->lent_end)
    early_completions++;
  free (w);
  return 0;
}

static int64_t
aio_write (struct nbd_handle *h, const void *buf, size_t len, uint64_t off, uint32_t flags)
{
  struct wdone *w = malloc (sizeof *w);
  int64_t ck;

  if (!w)
    bail_out ("malloc");
  w->lent_end = UINT64_MAX;
  ck = nbd_aio_pwrite (h, buf, len, off,
                       (nbd_completion_callback) { .callback = write_done, .user_data = w },
                       flags);
  /* The payload was handed over inside the call: the ring's count now
   * ends with it. */
  if (ck >= 1)
    w->lent_end = WR_GET (cur, lent);
  return ck;
}

/* ---- The expected stream --------------------------------------------- */

struct req {
  uint16_t type, flags;
  uint64_t offset;
  uint32_t count;
  const unsigned char *payload;
};

static struct req expect[64];
static size_t nr_expect;

static void
expect_req (uint16_t type, uint16_t flags, uint64_t offset, uint32_t count,
            const unsigned char *payload)
{
  expect[nr_expect++] = (struct req) { type, flags, offset, count, payload };
}

enum { T_READ = 0, T_WRITE = 1, T_DISC = 2, T_FLUSH = 3, T_TRIM = 4, T_CACHE = 5,
       T_ZERO = 6, T_BLOCK_STATUS = 7 };

/* Parse the transmission phase as the writer got it (log from tx_start)
 * against the requests issued; then every callback call against the
 * payload ranges found. */
static void
check_stream (const char *mode, struct wring *r, size_t tx_start)
{
  struct { uint64_t start; uint32_t len; const void *ptr; unsigned hits; } pay[64];
  const char *p = r->log;
  size_t len = r->log_len, i = 0, pos = tx_start, nr_pay = 0;
  unsigned lent_ok = 0, lent_bad = 0, copy_in_payload = 0, lent_in_handshake = 0;
  bool same = true;

  while (pos + 28 <= len && i < nr_expect) {
    uint32_t magic, count;
    uint16_t flags, type;
    uint64_t offset;

    memcpy (&magic, p + pos, 4);
    memcpy (&flags, p + pos + 4, 2);
    memcpy (&type, p + pos + 6, 2);
    memcpy (&offset, p + pos + 16, 8);
    memcpy (&count, p + pos + 24, 4);
    magic = be32toh (magic);
    flags = be16toh (flags);
    type = be16toh (type);
    offset = be64toh (offset);
    count = be32toh (count);
    pos += 28;
    if (magic != 0x25609513 || type != expect[i].type || flags != expect[i].flags ||
        offset != expect[i].offset || count != expect[i].count) {
      diag ("%s: request %zu: magic 0x%x type %u flags 0x%x offset %" PRIu64 " count %u; "
            "expected type %u flags 0x%x offset %" PRIu64 " count %u", mode, i, magic, type,
            flags, offset, count, expect[i].type, expect[i].flags, expect[i].offset,
            expect[i].count);
      same = false;
      break;
    }
    if (type == T_WRITE) {
      if (pos + count > len || memcmp (p + pos, expect[i].payload, count) != 0) {
        diag ("%s: request %zu: the write payload differs", mode, i);
        same = false;
        break;
      }
      pay[nr_pay].start = pos;
      pay[nr_pay].len = count;
      pay[nr_pay].ptr = expect[i].payload;
      pay[nr_pay++].hits = 0;
      pos += count;
    }
    i++;
  }
  ok (same, "%s: the writer got each request as issued, in order", mode);
  is_uint (i, nr_expect, "%s: %zu requests in the stream", mode, nr_expect);
  is_uint (pos, len, "%s: and nothing else", mode);

  for (size_t c = 0; c < r->nr_calls; c++) {
    const struct wr_call *k = &r->calls_log[c];

    if (k->flags == LIBNBD_WRITER_LENT) {
      bool found = false;

      if (k->pos < tx_start)
        lent_in_handshake++;
      for (size_t j = 0; j < nr_pay; j++)
        if (pay[j].start == k->pos) {
          found = true;
          pay[j].hits++;
          if (k->len == pay[j].len && k->buf == pay[j].ptr)
            lent_ok++;
          else {
            diag ("%s: lent call at %" PRIu64 ": %zu bytes at %p, the write's buffer is %u "
                  "bytes at %p", mode, k->pos, k->len, k->buf, pay[j].len, pay[j].ptr);
            lent_bad++;
          }
        }
      if (!found) {
        diag ("%s: lent call at stream offset %" PRIu64 " (%zu bytes) is no write payload",
              mode, k->pos, k->len);
        lent_bad++;
      }
    }
    else if (k->len > 0)
      for (size_t j = 0; j < nr_pay; j++)
        if (k->pos < pay[j].start + pay[j].len && pay[j].start < k->pos + k->len) {
          diag ("%s: a flags-0 call (%zu bytes at stream offset %" PRIu64 ") carries write "
                "payload bytes", mode, k->len, k->pos);
          copy_in_payload++;
        }
  }
  ok (nr_pay >= 6, "%s: %zu writes in the stream", mode, nr_pay);
  is_uint (lent_ok, nr_pay, "%s: each write payload came in one LIBNBD_WRITER_LENT call, buf "
           "pointing at the caller's buffer", mode);
  is_uint (lent_bad, 0, "%s: no other lent call", mode);
  is_uint (copy_in_payload, 0, "%s: no payload byte came with flags 0 (copied)", mode);
  is_uint (lent_in_handshake, 0, "%s: the handshake came with flags 0 only", mode);
  {
    unsigned twice = 0;

    for (size_t j = 0; j < nr_pay; j++)
      if (pay[j].hits != 1)
        twice++;
    is_uint (twice, 0, "%s: no payload was lent twice", mode);
  }
}

/* ---- Callbacks -------------------------------------------------------- */

struct counts {
  unsigned chunks, chunk_bytes, extents_calls;
  uint64_t extent_len;
  uint32_t first_flags;
  char ctx[64];
  bool chunk_ok;
};

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  struct counts *c = user_data;

  c->chunks++;
  if (status == LIBNBD_READ_DATA) {
    c->chunk_bytes += count;
    if (!is_filled (subbuf, count, offset, 0xa1))
      c->chunk_ok = false;
  }
  return 0;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct counts *c = user_data;

  c->extents_calls++;
  snprintf (c->ctx, sizeof c->ctx, "%s", metacontext);
  if (nr_entries >= 2)
    c->first_flags = entries[1];
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    c->extent_len += entries[i];
  return 0;
}

/* ---- Every aio call --------------------------------------------------- */

static unsigned char wbuf_a[64 * KiB], wbuf_b[4 * KiB], wbuf_c[64 * KiB], rbuf[256 * KiB];
static unsigned char big[2 * 1024 * KiB];

static void
every_aio_call (struct nbd_handle *h, const char *mode)
{
  struct counts c = { .chunk_ok = true };
  int64_t ck;

  fill (wbuf_a, sizeof wbuf_a, 0, 0xa1);
  fill (wbuf_b, sizeof wbuf_b, 1024 * KiB, 0xb2);
  fill (wbuf_c, sizeof wbuf_c, 2048 * KiB, 0xc3);

  ck = aio_write (h, wbuf_a, sizeof wbuf_a, 0, 0);
  ok (ck >= 1, "%s: nbd_aio_pwrite gives a cookie", mode);
  expect_req (T_WRITE, 0, 0, sizeof wbuf_a, wbuf_a);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_pwrite 64 KiB at 0 completes", mode);

  ck = aio_write (h, wbuf_b, sizeof wbuf_b, 1024 * KiB, LIBNBD_CMD_FLAG_FUA);
  expect_req (T_WRITE, LIBNBD_CMD_FLAG_FUA, 1024 * KiB, sizeof wbuf_b, wbuf_b);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_pwrite with FUA completes", mode);

  ck = nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
  expect_req (T_FLUSH, 0, 0, 0, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_flush completes", mode);

  memset (rbuf, 0, sizeof rbuf);
  ck = nbd_aio_pread (h, rbuf, 64 * KiB, 0, NBD_NULL_COMPLETION, 0);
  expect_req (T_READ, 0, 0, 64 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_pread completes", mode);
  ok (is_filled (rbuf, 64 * KiB, 0, 0xa1), "%s: and reads back what was written", mode);

  memset (rbuf, 0, sizeof rbuf);
  ck = nbd_aio_pread_structured (h, rbuf, 64 * KiB, 0,
                                 (nbd_chunk_callback) { .callback = chunk_cb, .user_data = &c },
                                 NBD_NULL_COMPLETION, 0);
  expect_req (T_READ, 0, 0, 64 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_pread_structured completes", mode);
  ok (c.chunks >= 1 && c.chunk_bytes == 64 * KiB && c.chunk_ok,
      "%s: its chunks carry the 64 KiB written (%u chunks, %u bytes)", mode, c.chunks,
      c.chunk_bytes);

  ck = nbd_aio_trim (h, 64 * KiB, 0, NBD_NULL_COMPLETION, 0);
  expect_req (T_TRIM, 0, 0, 64 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_trim completes", mode);
  memset (rbuf, 0xee, sizeof rbuf);
  ck = nbd_aio_pread (h, rbuf, 64 * KiB, 0, NBD_NULL_COMPLETION, 0);
  expect_req (T_READ, 0, 0, 64 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: read after trim", mode);
  ok (is_zero (rbuf, 64 * KiB), "%s: the trimmed range reads as zeros", mode);

  ck = nbd_aio_cache (h, 1024 * KiB, 0, NBD_NULL_COMPLETION, 0);
  expect_req (T_CACHE, 0, 0, 1024 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_cache completes", mode);

  ck = nbd_aio_zero (h, 4 * KiB, 1024 * KiB, NBD_NULL_COMPLETION, 0);
  expect_req (T_ZERO, 0, 1024 * KiB, 4 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_zero completes", mode);
  memset (rbuf, 0xee, sizeof rbuf);
  ck = nbd_aio_pread (h, rbuf, 4 * KiB, 1024 * KiB, NBD_NULL_COMPLETION, 0);
  expect_req (T_READ, 0, 1024 * KiB, 4 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: read after zero", mode);
  ok (is_zero (rbuf, 4 * KiB), "%s: the zeroed range reads as zeros", mode);

  ck = nbd_aio_block_status (h, 4096 * KiB, 4096 * KiB,
                             (nbd_extent_callback) { .callback = extent_cb, .user_data = &c },
                             NBD_NULL_COMPLETION, 0);
  expect_req (T_BLOCK_STATUS, 0, 4096 * KiB, 4096 * KiB, NULL);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_block_status completes", mode);
  is_int (c.extents_calls, 1, "%s: the extent callback ran once", mode);
  is_str (c.ctx, "base:allocation", "%s: for base:allocation", mode);
  is_uint (c.first_flags, LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO,
           "%s: the never-written range is a hole reading as zeros", mode);

  /* A burst, all in flight at once: payloads from the middle of a buffer
   * too, so the pointer comparison sees offsets. */
  {
    int64_t cks[5];

    fill (big, 128 * KiB, 0, 0xd4);
    cks[0] = aio_write (h, wbuf_c, sizeof wbuf_c, 2048 * KiB, 0);
    expect_req (T_WRITE, 0, 2048 * KiB, sizeof wbuf_c, wbuf_c);
    cks[1] = aio_write (h, wbuf_b, sizeof wbuf_b, 3072 * KiB, 0);
    expect_req (T_WRITE, 0, 3072 * KiB, sizeof wbuf_b, wbuf_b);
    cks[2] = aio_write (h, big + 4 * KiB, 60 * KiB, 4096 * KiB + 4 * KiB, 0);
    expect_req (T_WRITE, 0, 4096 * KiB + 4 * KiB, 60 * KiB, big + 4 * KiB);
    cks[3] = aio_write (h, big + 64 * KiB + 1, 1000, 5000 * KiB, 0);
    expect_req (T_WRITE, 0, 5000 * KiB, 1000, big + 64 * KiB + 1);
    cks[4] = nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
    expect_req (T_FLUSH, 0, 0, 0, NULL);
    is_int (nbd_aio_in_flight (h), 5, "%s: a burst of 5 in flight", mode);
    for (int i = 0; i < 5; i++)
      is_int (wait_cookie (h, cks[i]), 1, "%s: burst command %d completes", mode, i);
    ck = nbd_aio_pread (h, rbuf, 64 * KiB, 2048 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_READ, 0, 2048 * KiB, 64 * KiB, NULL);
    is_int (wait_cookie (h, ck), 1, "%s: read the burst back", mode);
    ok (is_filled (rbuf, 64 * KiB, 2048 * KiB, 0xc3), "%s: it holds the burst's data", mode);
    ck = nbd_aio_pread (h, rbuf, 60 * KiB, 4096 * KiB + 4 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_READ, 0, 4096 * KiB + 4 * KiB, 60 * KiB, NULL);
    is_int (wait_cookie (h, ck), 1, "%s: read the mid-buffer write back", mode);
    ok (memcmp (rbuf, big + 4 * KiB, 60 * KiB) == 0, "%s: it holds the buffer's bytes", mode);
    ck = nbd_aio_pread (h, rbuf, 1000, 5000 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_READ, 0, 5000 * KiB, 1000, NULL);
    is_int (wait_cookie (h, ck), 1, "%s: read the unaligned write back", mode);
    ok (memcmp (rbuf, big + 64 * KiB + 1, 1000) == 0, "%s: it holds the buffer's bytes", mode);
  }
}

/* The end of a handle's life: the thread ended by itself, everything lent
 * was sent and given back. */
static void
check_end (struct wring *r, const char *mode, unsigned nr_writes)
{
  ok (wr_wait_done (r, WR_WAIT_MS), "%s: the writer thread ended after the end-of-stream mark",
      mode);
  is_int (WR_GET (r, eos_count), 1, "%s: exactly one end-of-stream mark", mode);
  ok (!WR_GET (r, bytes_after_eos), "%s: no bytes after it", mode);
  ok (!WR_GET (r, bad_call), "%s: no malformed writer calls", mode);
  ok (!WR_GET (r, bad_flags), "%s: no flags but 0 and LIBNBD_WRITER_LENT", mode);
  ok (WR_GET (r, shut_wr), "%s: the thread shut the write side down", mode);
  is_uint (WR_GET (r, queued_at_shut_wr), 0, "%s: with nothing left in the ring", mode);
  is_uint (WR_GET (r, sent_at_shut_wr), WR_GET (r, accepted),
           "%s: after sending every byte handed over", mode);
  is_int (WR_GET (r, send_errno), 0, "%s: no send failed", mode);
  is_uint (WR_GET (r, lent_calls), nr_writes, "%s: %u payloads were lent", mode, nr_writes);
  ok (WR_GET (r, lent) > 0, "%s: %" PRIu64 " bytes lent", mode, WR_GET (r, lent));
  is_uint (WR_GET (r, released), WR_GET (r, lent), "%s: all of them given back", mode);
  is_uint (WR_GET (r, sent_lent), WR_GET (r, lent), "%s: after being sent", mode);
  is_uint (WR_GET (r, release_failures), 0, "%s: no release failed", mode);
  is_uint (write_bits_seen, 0, "%s: nbd_aio_get_direction never had the WRITE bit", mode);
  is_uint (early_completions, 0,
           "%s: no write completed before its payload was given back (%u writes checked)",
           mode, write_completions);
}

/* ---- Setting the writer ---------------------------------------------- */

static void
dummy_writer (void *data, const void *buf, size_t len)
{
}

static void
dummy_zc (void *data, const void *buf, size_t len, unsigned flags)
{
}

static void
setting (void)
{
  struct nbd_handle *h = nbd_create ();
  const char *msg;

  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_set_concurrent_writer_zero_copy (h, NULL, NULL), -1, "a NULL writer fails");
  is_errno (EFAULT, "with EFAULT");
  msg = nbd_get_error ();
  ok (msg && strncmp (msg, "nbd_set_concurrent_writer_zero_copy: ", 37) == 0,
      "the message names the call (%s)", msg ? msg : "(none)");
  is_int (nbd_set_concurrent_writer_zero_copy (h, NULL, dummy_zc), 0, "set once");
  is_int (nbd_set_concurrent_writer_zero_copy (h, NULL, dummy_zc), -1, "set twice fails");
  is_errno (EINVAL, "with EINVAL");
  msg = nbd_get_error ();
  ok (msg && strncmp (msg, "nbd_set_concurrent_writer_zero_copy: ", 37) == 0,
      "the message names the call (%s)", msg ? msg : "(none)");
  is_int (nbd_set_concurrent_writer (h, NULL, dummy_writer), -1,
          "the copying writer after the zero-copy one fails");
  is_errno (EINVAL, "with EINVAL");
  nbd_close (h);

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_set_concurrent_writer (h, NULL, dummy_writer), 0, "the copying writer");
  is_int (nbd_set_concurrent_writer_zero_copy (h, NULL, dummy_zc), -1,
          "then the zero-copy one fails");
  is_errno (EINVAL, "with EINVAL");
  nbd_close (h);
}

/* ---- A: set when Created, sync connect, every aio call --------------- */

static void
set_when_created (const struct test_server *s)
{
  const char *mode = "created";
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  size_t tx_start;
  double end;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  cur = &r;
  r.record = true;
  nr_expect = 0;
  write_bits_seen = early_completions = write_completions = 0;
  must (nbd_add_meta_context (h, "base:allocation"));
  is_int (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc), 0,
          "%s: nbd_set_concurrent_writer_zero_copy", mode);
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: sync nbd_connect_uri through the writer",
               mode))
    bail_out ("connect: %s", nbd_get_error ());
  ok (WR_GET (&r, copy_calls) > 0, "%s: the handshake went through the writer", mode);
  is_uint (WR_GET (&r, lent_calls), 0, "%s: nothing was lent during the handshake", mode);
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ,
           "%s: connected: direction is READ only", mode);
  tx_start = WR_GET (&r, log_len);

  every_aio_call (h, mode);

  is_int (nbd_aio_disconnect (h, 0), 0, "%s: nbd_aio_disconnect", mode);
  expect_req (T_DISC, 0, 0, 0, NULL);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h) && wr_now () < end)
    if (poll_in (h) == -1)
      break;
  ok (nbd_aio_is_closed (h), "%s: closed after the server's EOF", mode);
  check_end (&r, mode, 6);
  pthread_mutex_lock (&r.lock);
  check_stream (mode, &r, tx_start);
  pthread_mutex_unlock (&r.lock);
  nbd_close (h);
  wr_free (&r);
}

/* ---- B: set when Connected, sync calls -------------------------------- */

static int
count_extents (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
               size_t nr_entries, int *error)
{
  (*(unsigned *) user_data)++;
  return 0;
}

static void
set_when_connected (const struct test_server *s)
{
  const char *mode = "connected";
  struct nbd_handle *h = nbd_create ();
  unsigned extents = 0;
  int64_t cks[32];
  struct wring r;
  bool all = true;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  cur = &r;
  write_bits_seen = early_completions = write_completions = 0;
  must (nbd_add_meta_context (h, "base:allocation"));
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect without a writer", mode))
    bail_out ("connect: %s", nbd_get_error ());
  fill (big, 64 * KiB, 5 * 1024 * KiB, 0x11);
  is_int (nbd_pwrite (h, big, 64 * KiB, 5 * 1024 * KiB, 0), 0, "%s: write before the writer",
          mode);
  is_int (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc), 0,
          "%s: nbd_set_concurrent_writer_zero_copy when connected", mode);
  memset (big, 0, 64 * KiB);
  is_int (nbd_pread (h, big, 64 * KiB, 5 * 1024 * KiB, 0), 0, "%s: sync nbd_pread", mode);
  ok (is_filled (big, 64 * KiB, 5 * 1024 * KiB, 0x11), "%s: sees the earlier write", mode);

  /* Sync calls: the handle is held across poll while the thread sends
   * straight from this buffer. */
  fill (big, sizeof big, 6 * 1024 * KiB, 0x22);
  is_int (nbd_pwrite (h, big, sizeof big, 6 * 1024 * KiB, 0), 0, "%s: sync 2 MiB nbd_pwrite",
          mode);
  is_uint (WR_GET (&r, lent), sizeof big, "%s: its payload was lent, whole", mode);
  is_uint (atomic_load (&r.releasing), sizeof big,
           "%s: nbd_pwrite returned once the thread was giving it back", mode);
  is_int (nbd_pwrite (h, big, 4 * KiB, 6 * 1024 * KiB, LIBNBD_CMD_FLAG_FUA), 0,
          "%s: sync nbd_pwrite with FUA", mode);
  is_int (nbd_flush (h, 0), 0, "%s: sync nbd_flush", mode);
  is_int (nbd_cache (h, 64 * KiB, 0, 0), 0, "%s: sync nbd_cache", mode);
  is_int (nbd_trim (h, 64 * KiB, 6 * 1024 * KiB, 0), 0, "%s: sync nbd_trim", mode);
  is_int (nbd_zero (h, 64 * KiB, 6 * 1024 * KiB + 64 * KiB, 0), 0, "%s: sync nbd_zero", mode);
  is_int (nbd_block_status (h, 1024 * KiB, 0,
                            (nbd_extent_callback) { .callback = count_extents,
                                                    .user_data = &extents }, 0), 0,
          "%s: sync nbd_block_status", mode);
  is_int (extents, 1, "%s: its extent callback ran once", mode);
  memset (big, 0xee, sizeof big);
  is_int (nbd_pread (h, big, sizeof big, 6 * 1024 * KiB, 0), 0, "%s: sync nbd_pread 2 MiB", mode);
  ok (is_zero (big, 128 * KiB), "%s: trimmed and zeroed ranges read as zeros", mode);
  ok (is_filled (big + 128 * KiB, sizeof big - 128 * KiB, 6 * 1024 * KiB + 128 * KiB, 0x22),
      "%s: the rest holds the 2 MiB write", mode);

  /* 32 aio writes in flight at once from one buffer, then read back. */
  fill (big, sizeof big, 0, 0x33);
  for (int i = 0; i < 32; i++)
    cks[i] = aio_write (h, big + i * 64 * KiB, 64 * KiB, (uint64_t) i * 64 * KiB, 0);
  is_int (nbd_aio_in_flight (h), 32, "%s: 32 writes in flight", mode);
  for (int i = 0; i < 32; i++)
    if (wait_cookie (h, cks[i]) != 1)
      all = false;
  ok (all, "%s: all 32 complete", mode);
  memset (big, 0, sizeof big);
  is_int (nbd_pread (h, big, sizeof big, 0, 0), 0, "%s: read the 2 MiB back", mode);
  ok (is_filled (big, sizeof big, 0, 0x33), "%s: every write landed where it was aimed", mode);

  is_int (nbd_shutdown (h, 0), 0, "%s: sync nbd_shutdown", mode);
  ok (nbd_aio_is_closed (h), "%s: closed", mode);
  check_end (&r, mode, 34);
  nbd_close (h);
  wr_free (&r);
}

/* ---- C: many in flight, against a model ------------------------------ */

#define DISK_SIZE (64 << 20)
#define BLOCK 4096
#define NR_BLOCKS (DISK_SIZE / BLOCK)
#define MAX_REQ (64 * 1024)

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH };

struct mslot {
  unsigned char buf[MAX_REQ];
  enum op op;
  uint64_t offset;
  size_t count;
  uint64_t lent_end;
  bool busy;
};

static unsigned char model[DISK_SIZE], disk[DISK_SIZE];
static bool block_busy[NR_BLOCKS];
static struct mslot mslots[256];
static unsigned op_counts[5], op_errors, read_mismatches;
static int in_flight;
static uint64_t rng_state = 88172645463325252ULL;

static uint64_t
rnd (void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void
mark (uint64_t offset, size_t count, bool busy)
{
  for (uint64_t b = offset / BLOCK; b <= (offset + count - 1) / BLOCK; b++)
    block_busy[b] = busy;
}

static bool
range_free (uint64_t offset, size_t count)
{
  for (uint64_t b = offset / BLOCK; b <= (offset + count - 1) / BLOCK; b++)
    if (block_busy[b])
      return false;
  return true;
}

static int
mixed_done (void *user_data, int *error)
{
  struct mslot *s = user_data;

  if (*error) {
    op_errors++;
    diag ("op %d at %" PRIu64 "+%zu failed: %s", s->op, s->offset, s->count,
          strerror (*error));
  }
  else if (s->op == OP_READ && memcmp (s->buf, model + s->offset, s->count) != 0)
    read_mismatches++;
  if (s->op == OP_WRITE) {
    write_completions++;
    if (atomic_load (&cur->releasing) < s->lent_end)
      early_completions++;
    /* The buffer is ours again: had the writer not sent it yet, the disk
     * would hold this instead of the model's bytes. */
    memset (s->buf, 0xdd, s->count);
  }
  if (s->op != OP_FLUSH)
    mark (s->offset, s->count, false);
  s->busy = false;
  in_flight--;
  return 1;
}

static int64_t
issue_mixed (struct nbd_handle *h, struct mslot *s)
{
  nbd_completion_callback cb = { .callback = mixed_done, .user_data = s };
  uint64_t pick = rnd () % 100;
  int64_t ck;

  s->op = pick < 40 ? OP_READ : pick < 85 ? OP_WRITE : pick < 91 ? OP_ZERO
          : pick < 97 ? OP_TRIM : OP_FLUSH;
  if (s->op == OP_FLUSH) {
    s->offset = s->count = 0;
    op_counts[OP_FLUSH]++;
    return nbd_aio_flush (h, cb, 0);
  }
  for (int tries = 0; tries < 8; tries++) {
    s->count = 1 + rnd () % MAX_REQ;
    s->offset = rnd () % (DISK_SIZE - s->count + 1);
    if (range_free (s->offset, s->count))
      break;
    s->count = 0;
  }
  if (s->count == 0)
    return 0;
  mark (s->offset, s->count, true);
  op_counts[s->op]++;
  switch (s->op) {
  case OP_READ:
    memset (s->buf, 0xaa, s->count);
    return nbd_aio_pread (h, s->buf, s->count, s->offset, cb, 0);
  case OP_WRITE:
    for (size_t i = 0; i < s->count; i++)
      s->buf[i] = (unsigned char) rnd ();
    memcpy (model + s->offset, s->buf, s->count);
    s->lent_end = UINT64_MAX;
    ck = nbd_aio_pwrite (h, s->buf, s->count, s->offset, cb, 0);
    if (ck >= 1)
      s->lent_end = WR_GET (cur, lent);
    return ck;
  case OP_ZERO:
    memset (model + s->offset, 0, s->count);
    return nbd_aio_zero (h, s->count, s->offset, cb, 0);
  case OP_TRIM:
    memset (model + s->offset, 0, s->count);
    return nbd_aio_trim (h, s->count, s->offset, cb, 0);
  case OP_FLUSH:
    break;
  }
  return -1;
}

static void
mixed (const char *uri, int depth)
{
  const unsigned total = 3000;
  char mode[64];
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  unsigned issued = 0, left_busy = 0;
  int max_in_flight = 0;
  bool loop_ok = true;

  snprintf (mode, sizeof mode, "mixed, %d in flight", depth);
  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  cur = &r;
  write_bits_seen = early_completions = write_completions = 0;
  memset (op_counts, 0, sizeof op_counts);
  op_errors = read_mismatches = 0;
  in_flight = 0;
  memset (mslots, 0, sizeof mslots);
  if (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc) == -1)
    bail_out ("nbd_set_concurrent_writer_zero_copy: %s", nbd_get_error ());
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", mode))
    bail_out ("connect: %s", nbd_get_error ());
  while (issued < total || in_flight > 0) {
    for (int i = 0; i < depth && issued < total; i++) {
      struct mslot *s = &mslots[i];
      int64_t ck;

      if (s->busy)
        continue;
      s->busy = true;
      ck = issue_mixed (h, s);
      if (ck == 0) {
        s->busy = false;
        break;
      }
      if (ck == -1) {
        diag ("%s: issuing op %d: %s", mode, s->op, nbd_get_error ());
        s->busy = false;
        loop_ok = false;
        break;
      }
      in_flight++;
      issued++;
    }
    if (nbd_aio_in_flight (h) > max_in_flight)
      max_in_flight = nbd_aio_in_flight (h);
    if (!loop_ok || poll_in (h) == -1) {
      diag ("%s: loop failed: %s", mode, nbd_get_error ());
      loop_ok = false;
      break;
    }
  }
  ok (loop_ok, "%s: the loop ran to the end", mode);
  is_int (max_in_flight, depth, "%s: %d commands were in flight at once", mode, depth);
  ok (op_counts[OP_READ] && op_counts[OP_WRITE] && op_counts[OP_ZERO] && op_counts[OP_TRIM] &&
      op_counts[OP_FLUSH], "%s: %u reads, %u writes, %u zeroes, %u trims, %u flushes", mode,
      op_counts[OP_READ], op_counts[OP_WRITE], op_counts[OP_ZERO], op_counts[OP_TRIM],
      op_counts[OP_FLUSH]);
  for (int i = 0; i < depth; i++)
    if (mslots[i].busy)
      left_busy++;
  is_uint (left_busy, 0, "%s: every command completed", mode);
  is_uint (op_errors, 0, "%s: no command failed", mode);
  is_uint (read_mismatches, 0, "%s: every read matched the model", mode);
  memset (disk, 0xaa, sizeof disk);
  for (uint64_t off = 0; off < DISK_SIZE; off += 4 << 20)
    if (nbd_pread (h, disk + off, 4 << 20, off, 0) == -1)
      diag ("%s: final read: %s", mode, nbd_get_error ());
  ok (memcmp (disk, model, DISK_SIZE) == 0, "%s: the whole disk equals the model", mode);
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", mode);
  check_end (&r, mode, op_counts[OP_WRITE]);
  nbd_close (h);
  wr_free (&r);
}

/* ---- D: option mode, NBD_OPT_ABORT ------------------------------------ */

static void
opt_abort (const struct test_server *s)
{
  const char *mode = "opt_abort";
  struct nbd_handle *h = nbd_create ();
  struct wring r;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  r.record = true;
  is_int (nbd_set_opt_mode (h, true), 0, "%s: option mode", mode);
  is_int (nbd_set_concurrent_writer_zero_copy (h, &r, wr_enqueue_zc), 0,
          "%s: zero-copy writer set", mode);
  is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect", mode);
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", mode);
  is_int (WR_GET (&r, eos_count), 0, "%s: no end-of-stream mark yet", mode);
  is_int (nbd_opt_abort (h), 0, "%s: nbd_opt_abort", mode);
  ok (nbd_aio_is_closed (h), "%s: closed", mode);
  ok (wr_wait_done (&r, WR_WAIT_MS), "%s: the thread ended after the end-of-stream mark", mode);
  is_int (WR_GET (&r, eos_count), 1, "%s: exactly one end-of-stream mark", mode);
  ok (!WR_GET (&r, bytes_after_eos), "%s: no bytes after it", mode);
  ok (WR_GET (&r, shut_wr), "%s: the thread shut the write side down", mode);
  is_uint (WR_GET (&r, sent_at_shut_wr), WR_GET (&r, accepted),
           "%s: after sending every byte (NBD_OPT_ABORT last)", mode);
  is_uint (WR_GET (&r, lent_calls), 0, "%s: nothing was lent", mode);
  pthread_mutex_lock (&r.lock);
  ok (r.nr_calls >= 2 && r.calls_log[r.nr_calls - 1].buf == NULL &&
      r.calls_log[r.nr_calls - 1].len == 0 && r.calls_log[r.nr_calls - 1].flags == 0,
      "%s: the last call is the mark, with flags 0", mode);
  pthread_mutex_unlock (&r.lock);
  nbd_close (h);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s, m64, m256;
  const char *args[] = { "memory", "size=8M", NULL };
  const char *margs[] = { "memory", "size=64M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  if (server_start_nbdkit (&m64, margs) == -1 || server_start_nbdkit (&m256, margs) == -1)
    bail_out ("cannot start nbdkit memory");
  setting ();
  set_when_created (&s);
  set_when_connected (&s);
  opt_abort (&s);
  mixed (m64.uri, 64);
  /* A fresh disk: the model starts all zeros again. */
  memset (model, 0, sizeof model);
  memset (block_busy, 0, sizeof block_busy);
  mixed (m256.uri, 256);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  is_int (server_stop (&m64), 0, "nbdkit (64 in flight) stopped");
  is_int (server_stop (&m256), 0, "nbdkit (256 in flight) stopped");
  return done_testing ();
}
