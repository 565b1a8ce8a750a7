/* writer-basic: with a concurrent writer set, every aio call (pread,
 * pread_structured, pwrite, flush, trim, cache, zero, block_status,
 * disconnect) and the sync calls work against nbdkit memory; the bytes the
 * writer callback receives are exactly the requests issued, in order
 * (parsed from a copy of the stream) and the data reads back; the writer
 * can be set when Created (then a sync connect works: the writer thread
 * asks nbd_aio_get_fd while nbd_connect_uri holds the handle), during an
 * aio connect (then the rest of the handshake goes through it), or when
 * Connected; nbd_aio_get_direction never has the
 * WRITE bit, from the handshake to the end; the end-of-stream mark comes
 * exactly once, last, and the thread shuts the write side down after
 * sending everything.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define EXPORT_SIZE (8 * 1024 * 1024)
#define KiB 1024

/* Every wait is bounded by this: a bound, not a timing. */
#define POLL_MS WR_WAIT_MS

static unsigned write_bits_seen;

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

static void
check_direction (struct nbd_handle *h)
{
  write_bits_seen |= nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE;
}

/* One turn of a POLLIN-only loop. */
static int
poll_in (struct nbd_handle *h)
{
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h), .events = POLLIN };
  int r;

  check_direction (h);
  r = poll (&pfd, 1, POLL_MS);
  if (r <= 0)
    return -1;
  return nbd_aio_notify_read (h);
}

/* Wait for @cookie with our own loop; returns what
 * nbd_aio_command_completed returned (1, or -1 with the error set). */
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
  check_direction (h);
  return r;
}

/* ---- The expected request stream ------------------------------------- */

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

/* Parse the transmission-phase bytes the writer received and compare them
 * with the requests issued, in order, payloads included. */
static void
check_stream (const char *mode, const char *p, size_t len)
{
  size_t i = 0, pos = 0;
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
      pos += count;
    }
    i++;
  }
  ok (same, "%s: the writer got each request as issued, in order", mode);
  is_uint (i, nr_expect, "%s: %zu requests in the stream", mode, nr_expect);
  is_uint (pos, len, "%s: and nothing else", mode);
}

/* ---- Callbacks -------------------------------------------------------- */

struct counts {
  unsigned chunks, chunk_bytes, extents_calls, extent_entries;
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
  c->extent_entries += nr_entries / 2;
  if (nr_entries >= 2)
    c->first_flags = entries[1];
  for (size_t i = 0; i + 1 < nr_entries; i += 2)
    c->extent_len += entries[i];
  return 0;
}

/* ---- Every aio call through the writer ------------------------------- */

static unsigned char wbuf_a[64 * KiB], wbuf_b[4 * KiB], wbuf_c[64 * KiB], rbuf[256 * KiB];

static void
every_aio_call (struct nbd_handle *h, const char *mode)
{
  struct counts c = { .chunk_ok = true };
  int64_t ck;

  fill (wbuf_a, sizeof wbuf_a, 0, 0xa1);
  fill (wbuf_b, sizeof wbuf_b, 1024 * KiB, 0xb2);
  fill (wbuf_c, sizeof wbuf_c, 2048 * KiB, 0xc3);

  ck = nbd_aio_pwrite (h, wbuf_a, sizeof wbuf_a, 0, NBD_NULL_COMPLETION, 0);
  ok (ck >= 1, "%s: nbd_aio_pwrite gives a cookie", mode);
  expect_req (T_WRITE, 0, 0, sizeof wbuf_a, wbuf_a);
  is_int (wait_cookie (h, ck), 1, "%s: nbd_aio_pwrite 64 KiB at 0 completes", mode);

  ck = nbd_aio_pwrite (h, wbuf_b, sizeof wbuf_b, 1024 * KiB, NBD_NULL_COMPLETION,
                       LIBNBD_CMD_FLAG_FUA);
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
  ok (is_filled (rbuf, 64 * KiB, 0, 0xa1), "%s: and the buffer holds them", mode);

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
  ok (c.extent_len > 0 && c.extent_len <= 4096 * KiB,
      "%s: extents cover part of the range (%" PRIu64 " bytes)", mode, c.extent_len);
  is_uint (c.first_flags, LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO,
           "%s: the never-written second half is a hole reading as zeros", mode);

  /* A burst, all in flight at once, in the order issued. */
  {
    int64_t cks[3];

    cks[0] = nbd_aio_pwrite (h, wbuf_c, sizeof wbuf_c, 2048 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_WRITE, 0, 2048 * KiB, sizeof wbuf_c, wbuf_c);
    cks[1] = nbd_aio_pwrite (h, wbuf_b, sizeof wbuf_b, 3072 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_WRITE, 0, 3072 * KiB, sizeof wbuf_b, wbuf_b);
    cks[2] = nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
    expect_req (T_FLUSH, 0, 0, 0, NULL);
    check_direction (h);
    is_int (nbd_aio_in_flight (h), 3, "%s: a burst of 3 in flight", mode);
    for (int i = 0; i < 3; i++)
      is_int (wait_cookie (h, cks[i]), 1, "%s: burst command %d completes", mode, i);
    ck = nbd_aio_pread (h, rbuf, 64 * KiB, 2048 * KiB, NBD_NULL_COMPLETION, 0);
    expect_req (T_READ, 0, 2048 * KiB, 64 * KiB, NULL);
    is_int (wait_cookie (h, ck), 1, "%s: read the burst back", mode);
    ok (is_filled (rbuf, 64 * KiB, 2048 * KiB, 0xc3), "%s: it holds the burst's data", mode);
  }
}

/* End: nbd_aio_disconnect, our loop until closed; the writer ends. */
static void
aio_disconnect (struct nbd_handle *h, struct wring *r, const char *mode)
{
  double end;

  is_int (nbd_aio_disconnect (h, 0), 0, "%s: nbd_aio_disconnect", mode);
  expect_req (T_DISC, 0, 0, 0, NULL);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h) && wr_now () < end)
    if (poll_in (h) == -1)
      break;
  ok (nbd_aio_is_closed (h), "%s: the handle is closed after the server's EOF", mode);
}

static void
check_end (struct wring *r, const char *mode)
{
  ok (wr_wait_done (r, WR_WAIT_MS), "%s: the writer thread ended after the end-of-stream mark",
      mode);
  is_int (WR_GET (r, eos_count), 1, "%s: exactly one end-of-stream mark", mode);
  ok (!WR_GET (r, bytes_after_eos), "%s: no bytes after it", mode);
  ok (!WR_GET (r, bad_call), "%s: no malformed writer calls (NULL with length, or 0 bytes)",
      mode);
  ok (WR_GET (r, shut_wr), "%s: the thread shut the write side down", mode);
  is_uint (WR_GET (r, queued_at_shut_wr), 0, "%s: with nothing left in the ring", mode);
  is_uint (WR_GET (r, sent_at_shut_wr), WR_GET (r, accepted),
           "%s: after sending every byte handed over", mode);
  is_int (WR_GET (r, send_errno), 0, "%s: no send failed", mode);
}

/* ---- A: set in Created, sync connect, aio calls ---------------------- */

static void
set_when_created (const struct test_server *s)
{
  const char *mode = "created";
  struct nbd_handle *h = nbd_create ();
  struct wring r;
  size_t tx_start;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  r.record = true;
  nr_expect = 0;
  write_bits_seen = 0;
  is_int (nbd_add_meta_context (h, "base:allocation"), 0, "%s: add base:allocation", mode);
  ok (nbd_aio_is_created (h), "%s: handle is created", mode);
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0,
          "%s: nbd_set_concurrent_writer when created", mode);
  /* The sync connect holds the handle while it waits for the server; the
   * writer thread fetches the fd with nbd_aio_get_fd meanwhile. */
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: sync nbd_connect_uri through the writer",
               mode))
    bail_out ("connect: %s", nbd_get_error ());
  ok (WR_GET (&r, accepted) > 0, "%s: the handshake's bytes went through the writer (%" PRIu64
      ")", mode, WR_GET (&r, accepted));
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ,
           "%s: connected: direction is READ only", mode);
  is_int (nbd_can_meta_context (h, "base:allocation"), 1, "%s: base:allocation negotiated", mode);
  tx_start = WR_GET (&r, log_len);

  every_aio_call (h, mode);
  aio_disconnect (h, &r, mode);
  is_uint (write_bits_seen, 0, "%s: nbd_aio_get_direction never had the WRITE bit", mode);
  check_end (&r, mode);
  pthread_mutex_lock (&r.lock);
  check_stream (mode, r.log + tx_start, r.log_len - tx_start);
  pthread_mutex_unlock (&r.lock);
  nbd_close (h);
  wr_free (&r);
}

/* ---- B: set while an aio connect is in progress ---------------------- */

static void
set_when_connecting (void)
{
  char release[4200], script[4500];
  char *held_server[] = { "sh", "-c", script, NULL };
  const char *mode = "connecting";
  struct nbd_handle *h = nbd_create ();
  unsigned char buf[4096];
  struct wring r;
  double end;
  bool first_bytes;
  int fd;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  r.record = true;
  write_bits_seen = 0;
  /* The server starts (and greets) only once the test has set the writer
   * and creates the release file: an event, not a delay.  The client
   * sends nothing before the greeting, so all its handshake bytes must go
   * through the writer.  The script gives up after two minutes if the
   * test died. */
  snprintf (release, sizeof release, "%s/writer-basic-release", servers_scratch_dir ());
  snprintf (script, sizeof script,
            "i=0; while [ ! -e '%s' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done; "
            "exec nbdkit -s --exit-with-parent memory size=1M", release);
  is_int (nbd_aio_connect_command (h, held_server), 0, "%s: nbd_aio_connect_command", mode);
  ok (nbd_aio_is_connecting (h), "%s: handle is connecting", mode);
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0,
          "%s: nbd_set_concurrent_writer while connecting", mode);
  if ((fd = open (release, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) == -1)
    bail_out ("creating %s: %m", release);
  close (fd);
  end = wr_now () + WR_WAIT_MS / 1000.0;
  while (nbd_aio_is_connecting (h) && wr_now () < end)
    if (poll_in (h) == -1)
      break;
  ok (nbd_aio_is_ready (h), "%s: the handshake finished with a POLLIN-only loop", mode);
  is_uint (write_bits_seen, 0, "%s: no WRITE bit during the handshake", mode);
  ok (WR_GET (&r, accepted) > 0, "%s: the handshake went through the writer", mode);
  /* The client's first bytes: its 4 flags, then an option (IHAVEOPT). */
  pthread_mutex_lock (&r.lock);
  first_bytes = r.log_len >= 12 && memcmp (r.log + 4, "IHAVEOPT", 8) == 0;
  pthread_mutex_unlock (&r.lock);
  ok (first_bytes, "%s: from its first byte (the client flags, then IHAVEOPT)", mode);
  fill (buf, sizeof buf, 4096, 0x5a);
  is_int (nbd_pwrite (h, buf, sizeof buf, 4096, 0), 0, "%s: sync nbd_pwrite", mode);
  memset (buf, 0, sizeof buf);
  is_int (nbd_pread (h, buf, sizeof buf, 4096, 0), 0, "%s: sync nbd_pread", mode);
  ok (is_filled (buf, sizeof buf, 4096, 0x5a), "%s: reads back what was written", mode);
  is_int (nbd_shutdown (h, 0), 0, "%s: sync nbd_shutdown", mode);
  check_end (&r, mode);
  nbd_close (h);
  wr_free (&r);
}

/* ---- C: set when Connected, sync calls ------------------------------- */

static int
count_extents (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
               size_t nr_entries, int *error)
{
  (*(unsigned *) user_data)++;
  return 0;
}

static int
count_chunks (void *user_data, const void *subbuf, size_t count, uint64_t offset,
              unsigned status, int *error)
{
  (*(unsigned *) user_data)++;
  return 0;
}

static void
set_when_connected (const struct test_server *s)
{
  const char *mode = "connected";
  struct nbd_handle *h = nbd_create ();
  static unsigned char big[2 * 1024 * KiB];
  unsigned extents = 0, chunks = 0;
  int64_t cks[32];
  struct wring r;
  bool all = true;

  if (!h || wr_start (&r, h) == -1)
    bail_out ("nbd_create or thread");
  must (nbd_add_meta_context (h, "base:allocation"));
  if (!is_int (nbd_connect_uri (h, s->uri), 0, "%s: connect without a writer", mode))
    bail_out ("connect: %s", nbd_get_error ());
  fill (big, 64 * KiB, 5 * 1024 * KiB, 0x11);
  is_int (nbd_pwrite (h, big, 64 * KiB, 5 * 1024 * KiB, 0), 0, "%s: write before the writer",
          mode);
  is_int (nbd_set_concurrent_writer (h, &r, wr_enqueue), 0,
          "%s: nbd_set_concurrent_writer when connected", mode);
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ,
           "%s: direction is READ only now", mode);
  memset (big, 0, 64 * KiB);
  is_int (nbd_pread (h, big, 64 * KiB, 5 * 1024 * KiB, 0), 0, "%s: sync nbd_pread", mode);
  ok (is_filled (big, 64 * KiB, 5 * 1024 * KiB, 0x11), "%s: sees the earlier write", mode);

  /* Sync calls: the handle is held across poll while the thread sends. */
  fill (big, sizeof big, 6 * 1024 * KiB, 0x22);
  is_int (nbd_pwrite (h, big, sizeof big, 6 * 1024 * KiB, 0), 0, "%s: sync 2 MiB nbd_pwrite",
          mode);
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
  is_int (nbd_pread_structured (h, big, sizeof big, 6 * 1024 * KiB,
                                (nbd_chunk_callback) { .callback = count_chunks,
                                                       .user_data = &chunks }, 0), 0,
          "%s: sync nbd_pread_structured 2 MiB", mode);
  ok (chunks >= 1, "%s: with %u chunk(s)", mode, chunks);
  ok (is_zero (big, 128 * KiB), "%s: trimmed and zeroed ranges read as zeros", mode);
  ok (is_filled (big + 128 * KiB, sizeof big - 128 * KiB, 6 * 1024 * KiB + 128 * KiB, 0x22),
      "%s: the rest holds the 2 MiB write", mode);

  /* 32 aio writes in flight at once, then read them back. */
  fill (big, sizeof big, 0, 0x33);
  for (int i = 0; i < 32; i++)
    cks[i] = nbd_aio_pwrite (h, big + i * 64 * KiB, 64 * KiB, (uint64_t) i * 64 * KiB,
                             NBD_NULL_COMPLETION, 0);
  write_bits_seen = 0;
  check_direction (h);
  is_int (nbd_aio_in_flight (h), 32, "%s: 32 writes in flight", mode);
  for (int i = 0; i < 32; i++)
    if (wait_cookie (h, cks[i]) != 1)
      all = false;
  ok (all, "%s: all 32 complete", mode);
  is_uint (write_bits_seen, 0, "%s: no WRITE bit while they were in flight", mode);
  memset (big, 0, sizeof big);
  is_int (nbd_pread (h, big, sizeof big, 0, 0), 0, "%s: read the 2 MiB back", mode);
  ok (is_filled (big, sizeof big, 0, 0x33), "%s: every write landed where it was aimed", mode);

  is_int (nbd_shutdown (h, 0), 0, "%s: sync nbd_shutdown", mode);
  ok (nbd_aio_is_closed (h), "%s: closed", mode);
  check_end (&r, mode);
  nbd_close (h);
  wr_free (&r);
}

int
main (void)
{
  struct test_server s;
  const char *args[] = { "memory", "size=8M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit memory");
  }
  set_when_created (&s);
  set_when_connecting ();
  set_when_connected (&s);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
