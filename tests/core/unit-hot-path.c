/* unit-hot-path: white-box proof of three claims of lib/issue.c and
 * lib/reply.c, against a real nbdkit:
 *  - many requests per sendmsg(2): a burst of 64 aio requests (reads, and
 *    writes with their payloads) leaves in at most 4 sendmsg calls, one of
 *    them carrying at least 32 requests (the first request goes alone, for
 *    latency; the rest wait for the next event and leave together);
 *  - no allocation per request once warm: after a warm-up, some 1 500
 *    requests (aio bursts of reads, writes, flushes and block status with
 *    structured replies; sync reads and writes) make no call at all to
 *    malloc, calloc, realloc, strdup, strndup, asprintf or vasprintf from
 *    the library, and the command pool stays at the burst's size;
 *  - big read payloads go straight into their buffers: of a run of 16
 *    reads of 256 KiB, at most the first reply's payload is received into
 *    the library's own buffer and copied from there (RBUF_SIZE at most),
 *    because after a big payload the next reply's header is received
 *    alone; with structured replies and with simple ones.
 *
 * The program links the library's objects itself (libnbd_core_internal_dep)
 * with -Wl,--wrap for sendmsg, recv and those allocators (tests/core/meson.build),
 * so every such call the library makes comes through the counters here.
 * Allocations inside libc or GnuTLS are out of sight, as are the
 * sanitizers' own; nothing on this path calls them (a plain Unix socket).
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The library's own view of the handle (and, through it, <libnbd.h>). */
#include "internal.h"
#include "servers.h"
#include "tap.h"

#define BURST 64
#define HDR 28                  /* an NBD request header */

/* ---- The counters, at the library's edge ------------------------------ */

static atomic_bool counting;
static atomic_uint allocs, sendmsgs, requests, max_batch;

ssize_t __real_sendmsg (int fd, const struct msghdr *msg, int flags);
ssize_t __real_recv (int fd, void *buf, size_t len, int flags);
void *__real_malloc (size_t n);
void *__real_calloc (size_t n, size_t size);
void *__real_realloc (void *p, size_t n);
char *__real_strdup (const char *s);
char *__real_strndup (const char *s, size_t n);
int __real_vasprintf (char **strp, const char *fmt, va_list ap);

ssize_t __wrap_sendmsg (int fd, const struct msghdr *msg, int flags);
ssize_t __wrap_recv (int fd, void *buf, size_t len, int flags);
void *__wrap_malloc (size_t n);
void *__wrap_calloc (size_t n, size_t size);
void *__wrap_realloc (void *p, size_t n);
char *__wrap_strdup (const char *s);
char *__wrap_strndup (const char *s, size_t n);
int __wrap_vasprintf (char **strp, const char *fmt, va_list ap);
int __wrap_asprintf (char **strp, const char *fmt, ...);

static void
count_alloc (void)
{
  if (atomic_load (&counting))
    atomic_fetch_add (&allocs, 1);
}

/* A request starts at an iovec that holds a whole header with the request
 * magic; it counts once its first byte was sent. */
ssize_t
__wrap_sendmsg (int fd, const struct msghdr *msg, int flags)
{
  ssize_t r = __real_sendmsg (fd, msg, flags);
  size_t off = 0;
  unsigned n = 0, max;

  if (r <= 0 || !atomic_load (&counting))
    return r;
  for (size_t i = 0; i < msg->msg_iovlen && off < (size_t) r; i++) {
    const struct iovec *v = &msg->msg_iov[i];
    uint32_t magic;

    if (v->iov_len == HDR) {
      memcpy (&magic, v->iov_base, 4);
      if (be32toh (magic) == 0x25609513)
        n++;
    }
    off += v->iov_len;
  }
  atomic_fetch_add (&sendmsgs, 1);
  atomic_fetch_add (&requests, n);
  max = atomic_load (&max_batch);
  while (n > max && !atomic_compare_exchange_weak (&max_batch, &max, n))
    ;
  return r;
}

void *
__wrap_malloc (size_t n)
{
  count_alloc ();
  return __real_malloc (n);
}

void *
__wrap_calloc (size_t n, size_t size)
{
  count_alloc ();
  return __real_calloc (n, size);
}

void *
__wrap_realloc (void *p, size_t n)
{
  count_alloc ();
  return __real_realloc (p, n);
}

char *
__wrap_strdup (const char *s)
{
  count_alloc ();
  return __real_strdup (s);
}

char *
__wrap_strndup (const char *s, size_t n)
{
  count_alloc ();
  return __real_strndup (s, n);
}

int
__wrap_vasprintf (char **strp, const char *fmt, va_list ap)
{
  count_alloc ();
  return __real_vasprintf (strp, fmt, ap);
}

int
__wrap_asprintf (char **strp, const char *fmt, ...)
{
  va_list ap;
  int r;

  count_alloc ();
  va_start (ap, fmt);
  r = __real_vasprintf (strp, fmt, ap);
  va_end (ap);
  return r;
}

/* The big reads' buffers, and the bytes received straight into them. */
#define BIG (256 * 1024)
#define BIG_RUN 16
static char big[BIG_RUN][BIG];
static atomic_size_t direct;

ssize_t
__wrap_recv (int fd, void *buf, size_t len, int flags)
{
  ssize_t r = __real_recv (fd, buf, len, flags);

  if (r > 0 && atomic_load (&counting) && (char *) buf >= big[0] &&
      (char *) buf < big[0] + sizeof big)
    atomic_fetch_add (&direct, (size_t) r);
  return r;
}

static void
start_counting (void)
{
  atomic_store (&allocs, 0);
  atomic_store (&sendmsgs, 0);
  atomic_store (&requests, 0);
  atomic_store (&max_batch, 0);
  atomic_store (&direct, 0);
  atomic_store (&counting, true);
}

/* ---- Traffic ----------------------------------------------------------- */

struct done {
  unsigned calls, errors;
};

static int
done_cb (void *user_data, int *error)
{
  struct done *d = user_data;

  d->calls++;
  if (*error)
    d->errors++;
  return 1;
}

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  (void) metacontext; (void) offset; (void) entries; (void) error;
  *(size_t *) user_data += nr_entries;
  return 0;
}

static char bufs[BURST][4096];
static size_t extents;

enum mix { READS, WRITES, MIXED };

/* Queue BURST aio requests without waiting, then poll until all are done
 * (bounded).  Returns how many completed without error. */
static unsigned
burst (struct nbd_handle *h, enum mix mix, size_t len)
{
  struct done d = { 0 };
  nbd_completion_callback cb = { .callback = done_cb, .user_data = &d };
  int issued = 0;

  for (int i = 0; i < BURST; i++) {
    uint64_t off = (uint64_t) i * 4096;
    int kind = mix == READS ? 0 : mix == WRITES ? 1 : i % 4;
    int64_t c;

    switch (kind) {
    case 0: c = nbd_aio_pread (h, bufs[i], len, off, cb, 0); break;
    case 1: c = nbd_aio_pwrite (h, bufs[i], len, off, cb, 0); break;
    case 2: c = nbd_aio_flush (h, cb, 0); break;
    default:
      c = nbd_aio_block_status (h, len, off,
                                (nbd_extent_callback) { .callback = extent_cb,
                                                        .user_data = &extents },
                                cb, 0);
    }
    if (c == -1)
      bail_out ("aio request %d: %s", i, nbd_get_error ());
    issued++;
  }
  for (int i = 0; i < 10000 && d.calls < (unsigned) issued; i++)
    if (nbd_poll (h, 10000) == -1)
      bail_out ("nbd_poll: %s", nbd_get_error ());
  return d.calls - d.errors;
}

static void
batching (struct nbd_handle *h, enum mix mix, size_t len, const char *what)
{
  unsigned good;

  start_counting ();
  good = burst (h, mix, len);
  atomic_store (&counting, false);
  is_uint (good, BURST, "%s: all %d completed", what, BURST);
  is_uint (atomic_load (&requests), BURST, "%s: %d requests sent", what, BURST);
  ok (atomic_load (&sendmsgs) <= 4, "%s: in %u sendmsg calls (at most 4)", what,
      atomic_load (&sendmsgs));
  ok (atomic_load (&max_batch) >= 32, "%s: %u requests in the largest (at least 32)", what,
      atomic_load (&max_batch));
}

/* A run of big reads, all in flight at once: at most the first reply's
 * payload may come through the library's buffer. */
static void
big_reads (struct nbd_handle *h, const char *what)
{
  struct done d = { 0 };
  size_t copied;

  start_counting ();
  for (int i = 0; i < BIG_RUN; i++)
    if (nbd_aio_pread (h, big[i], BIG, (uint64_t) i * BIG,
                       (nbd_completion_callback) { .callback = done_cb, .user_data = &d },
                       0) == -1)
      bail_out ("big read %d: %s", i, nbd_get_error ());
  for (int i = 0; i < 10000 && d.calls < BIG_RUN; i++)
    if (nbd_poll (h, 10000) == -1)
      bail_out ("nbd_poll: %s", nbd_get_error ());
  atomic_store (&counting, false);
  is_uint (d.calls - d.errors, BIG_RUN, "%s: %d reads of 256 KiB done", what, BIG_RUN);
  copied = sizeof big - atomic_load (&direct);
  ok (copied <= RBUF_SIZE,
      "%s: %zu of their %zu payload bytes copied from the library's buffer (at most %d)", what,
      copied, sizeof big, RBUF_SIZE);
}

/* Some 2 000 requests of every kind on the hot path. */
static unsigned
traffic (struct nbd_handle *h)
{
  unsigned good = 0;

  for (int round = 0; round < 6; round++) {
    good += burst (h, READS, 4096);
    good += burst (h, WRITES, 4096);
    good += burst (h, MIXED, 4096);
  }
  for (int i = 0; i < 400; i++) {
    uint64_t off = (uint64_t) (i % BURST) * 4096;

    if ((i % 2 ? nbd_pwrite (h, bufs[0], 4096, off, 0) : nbd_pread (h, bufs[0], 4096, off, 0))
        == -1)
      bail_out ("sync request %d: %s", i, nbd_get_error ());
    good++;
  }
  return good;
}

int
main (void)
{
  const char *args[] = { "memory", "size=64M", NULL };
  struct test_server s;
  struct nbd_handle *h;
  unsigned good, want = 6 * 3 * BURST + 400;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, args) == -1)
    bail_out ("cannot start nbdkit");
  if (!(h = nbd_create ()))
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  must (nbd_connect_uri (h, s.uri));
  is_int (nbd_get_structured_replies_negotiated (h), 1, "structured replies negotiated");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "base:allocation negotiated");
  for (int i = 0; i < BURST; i++)
    memset (bufs[i], 'a' + i % 26, sizeof bufs[i]);

  /* Requests alone: a header each, so the iovec limit is far away. */
  batching (h, READS, 512, "64 reads");
  /* With payloads: two iovecs each, 33 KiB in all, which the socket takes. */
  batching (h, WRITES, 512, "64 writes of 512 bytes");

  big_reads (h, "structured replies");
  {
    /* The same with simple replies: a 16-byte header, no chunk offset. */
    struct nbd_handle *h2 = nbd_create ();

    if (!h2)
      bail_out ("nbd_create: %s", nbd_get_error ());
    must (nbd_set_request_structured_replies (h2, false));
    must (nbd_connect_uri (h2, s.uri));
    is_int (nbd_get_structured_replies_negotiated (h2), 0, "simple replies on the second handle");
    big_reads (h2, "simple replies");
    is_int (nbd_shutdown (h2, 0), 0, "nbd_shutdown of the second handle");
    nbd_close (h2);
  }

  /* Warm up: the pool, the reply buffers, each command kind once. */
  if (traffic (h) != want)
    bail_out ("warm-up: some requests failed");
  start_counting ();
  good = traffic (h);
  atomic_store (&counting, false);
  is_uint (good, want, "%u requests, every one done", want);
  is_uint (atomic_load (&allocs), 0, "no allocation by the library while they ran");
  ok (extents > 0, "the block status requests had replies (%zu extents)", extents);
  ok (h->nr_slots <= BURST + 1, "the command pool holds %" PRIu32 " records (at most %d)",
      h->nr_slots, BURST + 1);

  is_int (nbd_shutdown (h, 0), 0, "nbd_shutdown");
  nbd_close (h);
  is_int (server_stop (&s), 0, "nbdkit stopped");
  return done_testing ();
}
