/* writer-inflight: many requests in flight, with and without a concurrent
 * writer, driven by a poll loop of our own.
 *  - 64 and 256 reads in flight from nbdkit's pattern plugin, of mixed and
 *    unaligned sizes and offsets: each completes once, without error, with
 *    exactly the pattern's bytes, and the in-flight count reaches 64 / 256;
 *  - 64 mixed reads, writes, zeroes, trims and flushes in flight against an
 *    nbdkit memory disk, never two overlapping ones at once: every read
 *    returns what a model kept in memory says, and at the end the whole
 *    disk equals the model.
 * With the writer, nbd_aio_get_direction never has the WRITE bit.
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

#define PATTERN_SIZE (UINT64_C (64) << 20)
#define DISK_SIZE (16 << 20)
#define BLOCK 4096
#define NR_BLOCKS (DISK_SIZE / BLOCK)
#define MAX_REQ (64 * 1024)

struct conn {
  struct nbd_handle *h;
  struct wring r;
  bool writer;
  unsigned write_bits;
  const char *mode;
};

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
conn_open (struct conn *c, const char *uri, bool writer, const char *mode)
{
  c->writer = writer;
  c->write_bits = 0;
  c->mode = mode;
  c->h = nbd_create ();
  if (!c->h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (writer) {
    if (wr_start (&c->r, c->h) == -1)
      bail_out ("writer thread");
    if (nbd_set_concurrent_writer (c->h, &c->r, wr_enqueue) == -1)
      bail_out ("nbd_set_concurrent_writer: %s", nbd_get_error ());
  }
  if (!is_int (nbd_connect_uri (c->h, uri), 0, "%s: connect", mode))
    bail_out ("connect: %s", nbd_get_error ());
}

/* One turn of our loop: poll for what the library wants, tell it. */
static int
conn_poll (struct conn *c)
{
  unsigned dir = nbd_aio_get_direction (c->h);
  struct pollfd pfd = { .fd = nbd_aio_get_fd (c->h) };
  int r;

  if (c->writer)
    c->write_bits |= dir & LIBNBD_AIO_DIRECTION_WRITE;
  pfd.events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
               ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
  r = poll (&pfd, 1, WR_WAIT_MS);
  if (r <= 0) {
    diag ("%s: poll: %s", c->mode, r == 0 ? "timed out" : strerror (errno));
    return -1;
  }
  if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (c->h) == -1)
    return -1;
  if ((pfd.revents & POLLOUT) &&
      (nbd_aio_get_direction (c->h) & LIBNBD_AIO_DIRECTION_WRITE) &&
      nbd_aio_notify_write (c->h) == -1)
    return -1;
  return 0;
}

static void
conn_close (struct conn *c)
{
  is_int (nbd_shutdown (c->h, 0), 0, "%s: nbd_shutdown", c->mode);
  if (c->writer) {
    is_uint (c->write_bits, 0, "%s: nbd_aio_get_direction never had the WRITE bit", c->mode);
    ok (wr_wait_done (&c->r, WR_WAIT_MS), "%s: writer thread ended after the end-of-stream mark",
        c->mode);
    is_int (WR_GET (&c->r, eos_count), 1, "%s: one end-of-stream mark", c->mode);
    is_uint (WR_GET (&c->r, sent), WR_GET (&c->r, accepted),
             "%s: the writer sent every byte it was given (%" PRIu64 ")", c->mode,
             WR_GET (&c->r, accepted));
    is_int (WR_GET (&c->r, send_errno), 0, "%s: no send failed", c->mode);
  }
  nbd_close (c->h);
  if (c->writer)
    wr_free (&c->r);
}

/* ---- Reads from the pattern plugin ----------------------------------- */

struct rslot {
  unsigned char buf[MAX_REQ];
  uint64_t offset;
  size_t count;
  bool busy;
  unsigned calls;
};

static struct rslot rslots[256];
static unsigned completions, errors, mismatches;
static int in_flight;

static bool
is_pattern (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++) {
    uint64_t pos = offset + i;
    unsigned char want = (unsigned char) ((pos & ~UINT64_C (7)) >> (8 * (7 - (pos & 7))));

    if (buf[i] != want)
      return false;
  }
  return true;
}

static int
read_done (void *user_data, int *error)
{
  struct rslot *s = user_data;

  s->calls++;
  completions++;
  if (*error)
    errors++;
  else if (!is_pattern (s->buf, s->count, s->offset))
    mismatches++;
  s->busy = false;
  in_flight--;
  return 1;
}

static void
pattern_reads (const char *uri, bool writer, int depth)
{
  static const size_t sizes[] = { 512, 4096, 1000, 16384, 65536, 3 };
  const unsigned total = 1024;
  char mode[64];
  struct conn c;
  unsigned issued = 0, extra_calls = 0;
  int max_in_flight = 0;
  bool loop_ok = true;

  snprintf (mode, sizeof mode, "pattern, %d in flight, %s", depth,
            writer ? "writer" : "no writer");
  conn_open (&c, uri, writer, mode);
  completions = errors = mismatches = 0;
  in_flight = 0;
  memset (rslots, 0, sizeof rslots);
  while (issued < total || in_flight > 0) {
    for (int i = 0; i < depth && issued < total; i++) {
      struct rslot *s = &rslots[i];

      if (s->busy)
        continue;
      s->count = sizes[issued % 6];
      s->offset = (uint64_t) issued * 104729 * 61 % (PATTERN_SIZE - s->count);
      s->busy = true;
      memset (s->buf, 0xaa, s->count);
      if (nbd_aio_pread (c.h, s->buf, s->count, s->offset,
                         (nbd_completion_callback) { .callback = read_done, .user_data = s },
                         0) == -1) {
        diag ("nbd_aio_pread: %s", nbd_get_error ());
        s->busy = false;
        loop_ok = false;
        break;
      }
      in_flight++;
      issued++;
    }
    if (nbd_aio_in_flight (c.h) > max_in_flight)
      max_in_flight = nbd_aio_in_flight (c.h);
    if (!loop_ok || conn_poll (&c) == -1) {
      diag ("%s: loop failed: %s", mode, nbd_get_error ());
      loop_ok = false;
      break;
    }
  }
  ok (loop_ok, "%s: the loop ran to the end", mode);
  is_int (max_in_flight, depth, "%s: %d commands were in flight at once", mode, depth);
  is_uint (completions, total, "%s: %u completions for %u reads", mode, completions, total);
  for (int i = 0; i < 256; i++)
    if (rslots[i].busy)
      extra_calls++;
  is_uint (extra_calls, 0, "%s: no read left pending", mode);
  is_uint (errors, 0, "%s: no read failed", mode);
  is_uint (mismatches, 0, "%s: every read holds the pattern", mode);
  conn_close (&c);
}

/* ---- Mixed commands against memory, checked against a model --------- */

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH };

struct mslot {
  unsigned char buf[MAX_REQ];
  enum op op;
  uint64_t offset;
  size_t count;
  bool busy;
};

static unsigned char model[DISK_SIZE];
static bool block_busy[NR_BLOCKS];
static struct mslot mslots[64];
static unsigned op_counts[5], op_errors, read_mismatches;

static void
mark (uint64_t offset, size_t count, bool busy)
{
  if (count == 0)
    return;
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
  if (s->op != OP_FLUSH)
    mark (s->offset, s->count, false);
  s->busy = false;
  in_flight--;
  return 1;
}

static int64_t
issue_mixed (struct conn *c, struct mslot *s)
{
  nbd_completion_callback cb = { .callback = mixed_done, .user_data = s };
  uint64_t pick = rnd () % 100;

  s->op = pick < 35 ? OP_READ : pick < 70 ? OP_WRITE : pick < 80 ? OP_ZERO
          : pick < 90 ? OP_TRIM : OP_FLUSH;
  if (s->op == OP_FLUSH) {
    s->offset = s->count = 0;
    op_counts[OP_FLUSH]++;
    return nbd_aio_flush (c->h, cb, 0);
  }
  /* A range no command in flight touches; give up after a few tries. */
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
    return nbd_aio_pread (c->h, s->buf, s->count, s->offset, cb, 0);
  case OP_WRITE:
    for (size_t i = 0; i < s->count; i++)
      s->buf[i] = (unsigned char) rnd ();
    memcpy (model + s->offset, s->buf, s->count);
    return nbd_aio_pwrite (c->h, s->buf, s->count, s->offset, cb, 0);
  case OP_ZERO:
    memset (model + s->offset, 0, s->count);
    return nbd_aio_zero (c->h, s->count, s->offset, cb, 0);
  case OP_TRIM:
    /* nbdkit's memory plugin drops trimmed bytes: they read as zeros. */
    memset (model + s->offset, 0, s->count);
    return nbd_aio_trim (c->h, s->count, s->offset, cb, 0);
  case OP_FLUSH:
    break;
  }
  return -1;
}

static void
mixed (const char *uri, bool writer)
{
  const unsigned total = 3000;
  const char *mode = writer ? "mixed, writer" : "mixed, no writer";
  static unsigned char disk[DISK_SIZE];
  struct conn c;
  unsigned issued = 0;
  int max_in_flight = 0;
  bool loop_ok = true;

  conn_open (&c, uri, writer, mode);
  memset (op_counts, 0, sizeof op_counts);
  op_errors = read_mismatches = 0;
  in_flight = 0;
  while (issued < total || in_flight > 0) {
    for (int i = 0; i < 64 && issued < total; i++) {
      struct mslot *s = &mslots[i];
      int64_t ck;

      if (s->busy)
        continue;
      s->busy = true;
      ck = issue_mixed (&c, s);
      if (ck == 0) {            /* no free range now: try later */
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
    if (nbd_aio_in_flight (c.h) > max_in_flight)
      max_in_flight = nbd_aio_in_flight (c.h);
    if (!loop_ok || conn_poll (&c) == -1) {
      diag ("%s: loop failed: %s", mode, nbd_get_error ());
      loop_ok = false;
      break;
    }
  }
  ok (loop_ok, "%s: the loop ran to the end", mode);
  is_int (max_in_flight, 64, "%s: 64 commands were in flight at once", mode);
  ok (op_counts[OP_READ] && op_counts[OP_WRITE] && op_counts[OP_ZERO] && op_counts[OP_TRIM] &&
      op_counts[OP_FLUSH], "%s: %u reads, %u writes, %u zeroes, %u trims, %u flushes", mode,
      op_counts[OP_READ], op_counts[OP_WRITE], op_counts[OP_ZERO], op_counts[OP_TRIM],
      op_counts[OP_FLUSH]);
  is_uint (op_errors, 0, "%s: no command failed", mode);
  is_uint (read_mismatches, 0, "%s: every read matched the model", mode);
  memset (disk, 0xaa, sizeof disk);
  for (uint64_t off = 0; off < DISK_SIZE; off += 4 << 20)
    if (nbd_pread (c.h, disk + off, 4 << 20, off, 0) == -1)
      diag ("%s: final read: %s", mode, nbd_get_error ());
  ok (memcmp (disk, model, DISK_SIZE) == 0, "%s: the whole disk equals the model", mode);
  conn_close (&c);
}

int
main (void)
{
  struct test_server pattern, memory;
  const char *pargs[] = { "pattern", "size=64M", NULL };
  const char *margs[] = { "memory", "size=16M", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&pattern, pargs) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit pattern");
  }
  if (server_start_nbdkit (&memory, margs) == -1)
    bail_out ("cannot start nbdkit memory");

  pattern_reads (pattern.uri, false, 64);
  pattern_reads (pattern.uri, true, 64);
  pattern_reads (pattern.uri, false, 256);
  pattern_reads (pattern.uri, true, 256);
  mixed (memory.uri, false);
  mixed (memory.uri, true);

  is_int (server_stop (&pattern), 0, "nbdkit pattern stopped");
  is_int (server_stop (&memory), 0, "nbdkit memory stopped");
  return done_testing ();
}
