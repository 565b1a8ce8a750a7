/* fault-error-filter: 100 000 requests, 64 in flight, against nbdkit's
 * error filter failing 10% of them at random.
 *
 * Proves, for reads, writes, zeroes, trims, block status and cache mixed
 * (and flushes, which the filter never fails):
 *  - every failure carries the errno configured for its command type (each
 *    type has its own: pread EIO, pwrite ENOSPC, zero EPERM, trim EINVAL,
 *    extents ENOMEM, cache ESHUTDOWN), so an error delivered to the wrong
 *    request shows up as the wrong errno;
 *  - the server's own log (nbdkit's log filter, in front of the error
 *    filter) lists exactly the requests the client saw fail, with the same
 *    errno, and exactly the ones it saw succeed: the same multiset of
 *    (type, offset, count, errno) on both sides;
 *  - every completion callback runs once and every .free once;
 *  - every successful read returns the data a model of the disk predicts:
 *    the pattern plugin's offsets (pure reads), or, on a memory plugin
 *    with writes, zeroes and trims, the last successful write to each
 *    block.  A failed write, zero or trim never counts as done: the error
 *    filter fails the request before the plugin sees it (filters/error
 *    calls next only when it injects nothing), so the model keeps the old
 *    contents and both later reads and a final read of the whole disk
 *    check that the server did too;
 *  - a block status extent that claims ZERO covers only bytes the model
 *    says are zero, and a failed block status never calls its extent
 *    callback;
 *  - the failure rate of each type is 10% within a generous binomial bound
 *    (6 standard deviations);
 *  - the sync calls report the same errnos, with messages that start with
 *    the call's name.
 *
 * Overlapping requests in flight at once would have no defined order at a
 * parallel server, so writes never overlap anything in flight and reads
 * never overlap a write in flight.  FAULT_SEED=N replays a run (the seed is
 * printed); FAULT_REQUESTS=N changes the total (default 100 000).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define INFLIGHT 64
#define BLK 512
#define MAXBLKS 16
#define MEM_SIZE (8 * 1024 * 1024)
#define NBLK (MEM_SIZE / BLK)
#define PATTERN_SIZE (UINT64_C (1) << 30)
#define PATTERN_MAXLEN (16 * 1024)
/* Room for the sync calls and the final reads (with retries) besides. */
#define EXTRA 8000

enum op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_EXTENTS, OP_CACHE, OP_FLUSH, NR_OPS };

static const char *const op_name[NR_OPS] = {
  "pread", "pwrite", "zero", "trim", "block_status", "cache", "flush"
};
/* The log filter's names for the same requests. */
static const char *const log_name[NR_OPS] = {
  "Read", "Write", "Zero", "Trim", "Extents", "Cache", "Flush"
};
/* The errno the error filter is told to inject for each (flush: none). */
static const int op_errno[NR_OPS] = { EIO, ENOSPC, EPERM, EINVAL, ENOMEM, ESHUTDOWN, 0 };

static const struct {
  const char *name;
  int err;
} errnames[] = {
  { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EPERM", EPERM },
  { "EINVAL", EINVAL }, { "ENOMEM", ENOMEM }, { "ESHUTDOWN", ESHUTDOWN },
};

/* One finished request, as the client saw it or as the server logged it. */
struct rec {
  uint64_t off;
  uint32_t len;
  uint8_t op;
  int err;
};

struct slot {
  bool active;
  enum op op;
  uint64_t off;
  uint32_t len;
  uint32_t gen;                 /* write: the generation it writes (unique) */
  unsigned extent_calls;
  uint8_t *buf;
};

static uint64_t rng;

static uint64_t
rnd (void)
{
  /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (2685821657736338717);
}

static double
root (double x)
{
  double r = x > 1 ? x : 1;

  for (int i = 0; i < 60; i++)
    r = (r + x / r) / 2;
  return r;
}

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- The run's state (one run at a time) ------------------------------ */

static bool pattern_mode;       /* pattern plugin, reads only */
static struct slot slots[INFLIGHT];
static int nr_active;
static uint32_t gen_of[NBLK];   /* 0: zeroes; else the generation written */
static int16_t busy[NBLK];      /* >0 readers in flight, -1 a writer */
static uint32_t next_gen;
static struct rec *recs;        /* what the client saw, in completion order */
static size_t nr_recs;
static unsigned long n_ops[NR_OPS], n_fail[NR_OPS];
static unsigned long bad_errno, bad_data, bad_extents, extent_on_failure, double_cb, frees;
static bool first_bad_reported;

/* The byte at @off of a block of generation @gen: 64 words, each naming
 * the block, the generation and its own place (never zero for gen != 0).
 */
static void
fill_block (uint8_t *dst, uint32_t blk, uint32_t gen)
{
  if (gen == 0) {
    memset (dst, 0, BLK);
    return;
  }
  for (unsigned i = 0; i < BLK / 8; i++) {
    uint64_t w = ((uint64_t) gen << 24) ^ ((uint64_t) blk << 8) ^ i ^ (UINT64_C (1) << 63);
    memcpy (dst + i * 8, &w, 8);
  }
}

/* What the disk holds in [off, off+len), by the model. */
static void
expect_range (uint8_t *dst, uint64_t off, size_t len)
{
  if (pattern_mode) {
    for (size_t i = 0; i < len; i++) {
      uint64_t o = off + i, word = o & ~UINT64_C (7);
      dst[i] = (uint8_t) (word >> (8 * (7 - (o & 7))));
    }
    return;
  }
  while (len > 0) {
    uint8_t tmp[BLK];
    uint32_t blk = (uint32_t) (off / BLK), in = (uint32_t) (off % BLK);
    size_t n = BLK - in < len ? BLK - in : len;

    fill_block (tmp, blk, gen_of[blk]);
    memcpy (dst, tmp + in, n);
    dst += n;
    off += n;
    len -= n;
  }
}

static bool
range_matches (const uint8_t *buf, uint64_t off, size_t len)
{
  uint8_t *want = malloc (len ? len : 1);
  bool r;

  if (!want)
    bail_out ("malloc");
  expect_range (want, off, len);
  r = memcmp (buf, want, len) == 0;
  free (want);
  return r;
}

static void
record (enum op op, uint64_t off, uint32_t len, int err)
{
  recs[nr_recs++] = (struct rec) { .off = off, .len = len, .op = (uint8_t) op, .err = err };
  n_ops[op]++;
  if (err)
    n_fail[op]++;
  if (err != 0 && err != op_errno[op]) {
    if (bad_errno++ == 0)
      diag ("%s at %" PRIu64 "+%" PRIu32 " failed with errno %d (%s), configured %s",
            op_name[op], off, len, err, tap_errname_ (err), tap_errname_ (op_errno[op]));
  }
}

/* ---- Callbacks (the handle lock is held: no nbd_* calls) -------------- */

static int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct slot *s = user_data;
  uint64_t pos = offset, end = s->off + s->len;
  bool good = strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0 &&
              offset == s->off && nr_entries >= 2 && nr_entries % 2 == 0;

  (void) error;
  s->extent_calls++;
  for (size_t i = 0; good && i + 1 < nr_entries; i += 2) {
    uint64_t a = pos, b = pos + entries[i];

    if (entries[i] == 0)
      good = false;
    /* Bytes it calls zero must read as zero: only inside the request, the
     * part no write in flight can touch. */
    if ((entries[i + 1] & LIBNBD_STATE_ZERO) && a < end) {
      uint8_t *z = calloc (1, (b < end ? b : end) - a);

      if (!z)
        bail_out ("calloc");
      if (!range_matches (z, a, (b < end ? b : end) - a))
        good = false;
      free (z);
    }
    pos = b;
  }
  if (!good && bad_extents++ == 0)
    diag ("block status at %" PRIu64 "+%" PRIu32 ": bad extents (context %s, offset %" PRIu64
          ", %zu entries)", s->off, s->len, metacontext, offset, nr_entries);
  return 0;
}

static void
release_range (struct slot *s)
{
  if (pattern_mode || s->op == OP_FLUSH)
    return;
  for (uint32_t b = (uint32_t) (s->off / BLK); b < (s->off + s->len) / BLK; b++)
    busy[b] = busy[b] == -1 ? 0 : busy[b] - 1;
}

static int
completion_cb (void *user_data, int *error)
{
  struct slot *s = user_data;
  int err = *error;

  if (!s->active) {
    double_cb++;
    return 1;
  }
  record (s->op, s->off, s->len, err);
  if (err == 0) {
    switch (s->op) {
    case OP_READ:
      if (!range_matches (s->buf, s->off, s->len)) {
        bad_data++;
        if (!first_bad_reported) {
          first_bad_reported = true;
          diag ("read at %" PRIu64 "+%" PRIu32 " returned data the model does not predict",
                s->off, s->len);
        }
      }
      break;
    case OP_WRITE:
      for (uint32_t b = (uint32_t) (s->off / BLK); b < (s->off + s->len) / BLK; b++)
        gen_of[b] = s->gen;
      break;
    case OP_ZERO:
    case OP_TRIM:               /* the memory plugin's trimmed blocks read as zero */
      for (uint32_t b = (uint32_t) (s->off / BLK); b < (s->off + s->len) / BLK; b++)
        gen_of[b] = 0;
      break;
    default:
      break;
    }
  }
  else if (s->op == OP_EXTENTS && s->extent_calls)
    extent_on_failure++;
  release_range (s);
  s->active = false;
  nr_active--;
  return 1;                     /* retire it */
}

static void
free_cb (void *user_data)
{
  (void) user_data;
  frees++;
}

/* ---- Issuing ----------------------------------------------------------- */

static bool
range_free (uint32_t b0, uint32_t n, bool write)
{
  for (uint32_t b = b0; b < b0 + n; b++)
    if (write ? busy[b] != 0 : busy[b] < 0)
      return false;
  return true;
}

/* Choose a request that conflicts with nothing in flight; false if the
 * few tries all collided (then wait for completions). */
static bool
choose (struct slot *s)
{
  uint64_t r = rnd ();
  unsigned w = r % 100;

  if (pattern_mode) {
    s->op = OP_READ;
    s->len = 1 + (uint32_t) ((r >> 8) % PATTERN_MAXLEN);
    s->off = (r >> 24) % (PATTERN_SIZE - s->len);
    return true;
  }
  s->op = w < 35 ? OP_READ : w < 65 ? OP_WRITE : w < 75 ? OP_ZERO : w < 83 ? OP_TRIM
          : w < 91 ? OP_EXTENTS : w < 96 ? OP_CACHE : OP_FLUSH;
  if (s->op == OP_FLUSH) {
    s->off = 0;
    s->len = 0;
    return true;
  }
  for (int tries = 0; tries < 8; tries++) {
    uint64_t q = rnd ();
    uint32_t n = 1 + (uint32_t) (q % MAXBLKS);
    uint32_t b0 = (uint32_t) ((q >> 8) % (NBLK - n + 1));
    bool write = s->op == OP_WRITE || s->op == OP_ZERO || s->op == OP_TRIM;

    if (range_free (b0, n, write)) {
      for (uint32_t b = b0; b < b0 + n; b++)
        busy[b] = write ? -1 : busy[b] + 1;
      s->off = (uint64_t) b0 * BLK;
      s->len = n * BLK;
      return true;
    }
  }
  return false;
}

static int64_t
issue (struct nbd_handle *h, struct slot *s)
{
  nbd_completion_callback cb = { .callback = completion_cb, .user_data = s, .free = free_cb };
  uint64_t r = rnd ();

  s->active = true;
  s->extent_calls = 0;
  nr_active++;
  switch (s->op) {
  case OP_READ:
    return nbd_aio_pread (h, s->buf, s->len, s->off, cb, 0);
  case OP_WRITE:
    s->gen = next_gen++;
    for (uint32_t i = 0; i < s->len / BLK; i++)
      fill_block (s->buf + i * BLK, (uint32_t) (s->off / BLK) + i, s->gen);
    return nbd_aio_pwrite (h, s->buf, s->len, s->off, cb, (r & 1) ? LIBNBD_CMD_FLAG_FUA : 0);
  case OP_ZERO:
    return nbd_aio_zero (h, s->len, s->off, cb, (r & 1) ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
  case OP_TRIM:
    return nbd_aio_trim (h, s->len, s->off, cb, 0);
  case OP_EXTENTS:
    return nbd_aio_block_status (h, s->len, s->off,
                                 (nbd_extent_callback) { .callback = extent_cb, .user_data = s },
                                 cb, 0);
  case OP_CACHE:
    return nbd_aio_cache (h, s->len, s->off, cb, 0);
  default:
    return nbd_aio_flush (h, cb, 0);
  }
}

/* ---- The server's log -------------------------------------------------- */

static int
rec_cmp (const void *a, const void *b)
{
  const struct rec *x = a, *y = b;

  if (x->op != y->op)
    return x->op < y->op ? -1 : 1;
  if (x->off != y->off)
    return x->off < y->off ? -1 : 1;
  if (x->len != y->len)
    return x->len < y->len ? -1 : 1;
  return x->err < y->err ? -1 : x->err > y->err;
}

/* Parse nbdkit's log filter file: "connection=C Write id=N offset=0x.. count=0x.. ..."
 * then "connection=C ...Write id=N return=0" or "return=-1 error=ENOSPC".
 * Returns the finished requests of every connection (malloc'd), or NULL.
 */
static struct rec *
parse_log (const char *path, size_t max, size_t *nr)
{
  FILE *f = fopen (path, "r");
  struct rec *pend = calloc (max + 1, sizeof *pend), *out = calloc (max + 1, sizeof *out);
  char line[512];
  size_t n = 0;

  *nr = 0;
  if (!f || !pend || !out)
    bail_out ("cannot read %s", path);
  while (fgets (line, sizeof line, f)) {
    char *p = strstr (line, "connection=");
    unsigned long long id = 0, off = 0, cnt = 0;
    bool leave;
    int op = -1;
    char *q;

    if (!p)
      continue;
    p = strchr (p, ' ');
    if (!p)
      continue;
    p++;
    leave = strncmp (p, "...", 3) == 0;
    if (leave)
      p += 3;
    for (int i = 0; i < NR_OPS; i++) {
      size_t l = strlen (log_name[i]);
      if (strncmp (p, log_name[i], l) == 0 && p[l] == ' ')
        op = i;
    }
    if (op < 0 || !(q = strstr (p, " id=")) || sscanf (q, " id=%llu", &id) != 1 || id > max)
      continue;
    if (!leave) {
      if ((q = strstr (p, " offset=")))
        sscanf (q, " offset=%llx", &off);
      if ((q = strstr (p, " count=")))
        sscanf (q, " count=%llx", &cnt);
      pend[id] = (struct rec) { .off = off, .len = (uint32_t) cnt, .op = (uint8_t) op, .err = -1 };
    }
    else if (pend[id].err == -1 && pend[id].op == op && n < max) {
      struct rec r = pend[id];

      r.err = 0;
      if ((q = strstr (p, " error="))) {
        q += 7;
        r.err = -2;             /* an errno name we did not configure */
        for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++) {
          size_t l = strlen (errnames[i].name);
          if (strncmp (q, errnames[i].name, l) == 0 && (q[l] == '\n' || q[l] == ' '))
            r.err = errnames[i].err;
        }
      }
      out[n++] = r;
      pend[id].err = 0;
    }
  }
  fclose (f);
  free (pend);
  *nr = n;
  return out;
}

/* ---- One run ------------------------------------------------------------ */

static bool
error_prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':' && e[n + 1] == ' ';
}

/* The sync calls: each type until it has failed once (10%: 200 tries make
 * a miss a 1-in-10^9 event), checking errno and message. */
static void
sync_checks (struct nbd_handle *h)
{
  static uint8_t buf[BLK];
  enum op ops[] = { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_EXTENTS, OP_CACHE };
  const char *fn[] = { "nbd_pread", "nbd_pwrite", "nbd_zero", "nbd_trim", "nbd_block_status",
                       "nbd_cache" };

  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    enum op op = ops[k];
    int failed = 0, tries;
    bool good_errno = false, good_msg = false;

    if (pattern_mode && op != OP_READ)
      continue;
    for (tries = 0; tries < 200 && !failed; tries++) {
      uint64_t off = (uint64_t) (rnd () % NBLK) * BLK;
      struct slot s = { .op = OP_EXTENTS, .off = off, .len = BLK };
      int r;

      switch (op) {
      case OP_READ:
        r = nbd_pread (h, buf, BLK, off, 0);
        if (r == 0 && !range_matches (buf, off, BLK))
          bad_data++;
        break;
      case OP_WRITE:
        fill_block (buf, (uint32_t) (off / BLK), next_gen);
        r = nbd_pwrite (h, buf, BLK, off, 0);
        if (r == 0)
          gen_of[off / BLK] = next_gen;
        next_gen++;
        break;
      case OP_ZERO:
        r = nbd_zero (h, BLK, off, 0);
        break;
      case OP_TRIM:
        r = nbd_trim (h, BLK, off, 0);
        break;
      case OP_EXTENTS:
        r = nbd_block_status (h, BLK, off,
                              (nbd_extent_callback) { .callback = extent_cb, .user_data = &s }, 0);
        if (r == -1 && s.extent_calls)
          extent_on_failure++;
        break;
      default:
        r = nbd_cache (h, BLK, off, 0);
        break;
      }
      if ((op == OP_ZERO || op == OP_TRIM) && r == 0)
        gen_of[off / BLK] = 0;
      if (r == -1) {
        failed = 1;
        good_errno = nbd_get_errno () == op_errno[op];
        good_msg = error_prefix_is (fn[k]);
        if (!good_errno || !good_msg)
          diag ("%s: errno %d, message: %s", fn[k], nbd_get_errno (), nbd_get_error ());
      }
      record (op, off, BLK, r == -1 ? nbd_get_errno () : 0);
    }
    ok (failed, "sync %s: fails within %d tries", fn[k], tries);
    ok (good_errno, "sync %s: errno %s", fn[k], tap_errname_ (op_errno[op]));
    ok (good_msg, "sync %s: the message starts with \"%s: \"", fn[k], fn[k]);
  }
}

static void
run (const char *what, unsigned long total, const char *const *args, const char *logpath)
{
  struct test_server srv;
  struct nbd_handle *h;
  unsigned long issued = 0, refused = 0, stalls = 0;
  int64_t t0;
  struct rec *srecs;
  size_t nr_srecs, mismatch = 0;

  memset (slots, 0, sizeof slots);
  memset (gen_of, 0, sizeof gen_of);
  memset (busy, 0, sizeof busy);
  memset (n_ops, 0, sizeof n_ops);
  memset (n_fail, 0, sizeof n_fail);
  nr_active = 0;
  next_gen = 1;
  nr_recs = 0;
  bad_errno = bad_data = bad_extents = extent_on_failure = double_cb = frees = 0;
  first_bad_reported = false;
  recs = calloc (total + EXTRA, sizeof *recs);
  if (!recs)
    bail_out ("calloc");
  for (int i = 0; i < INFLIGHT; i++)
    if (!(slots[i].buf = malloc (pattern_mode ? PATTERN_MAXLEN : MAXBLKS * BLK)))
      bail_out ("malloc");

  if (server_start_nbdkit (&srv, args) == -1)
    bail_out ("%s: cannot start nbdkit", what);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_uri (h, srv.uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());

  t0 = now_ms ();
  while (issued < total || nr_active > 0) {
    while (issued < total && nr_active < INFLIGHT) {
      struct slot *s = NULL;

      for (int i = 0; i < INFLIGHT && !s; i++)
        if (!slots[i].active)
          s = &slots[i];
      if (!choose (s))
        break;
      if (issue (h, s) == -1) {
        /* Not one of ours: a refused call frees (and never calls back). */
        if (refused++ == 0)
          diag ("%s: nbd_aio_%s refused: %s", what, op_name[s->op], nbd_get_error ());
        release_range (s);
        s->active = false;
        nr_active--;
      }
      issued++;
    }
    if (nr_active == 0)
      continue;
    switch (nbd_poll (h, 5000)) {
    case -1:
      bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
    case 0:
      if (++stalls > 2)
        bail_out ("%s: no reply for 15 s with %d in flight", what, nr_active);
      break;
    default:
      break;
    }
  }
  note ("%s: %lu requests, %d in flight, in %" PRId64 " ms", what, issued, INFLIGHT,
        now_ms () - t0);

  is_int (refused, 0, "%s: every aio call accepted", what);
  is_int (nr_recs, issued, "%s: every command completed once", what);
  is_int (double_cb, 0, "%s: no completion callback ran twice", what);
  is_int (frees, issued, "%s: every completion .free ran once", what);
  is_int (bad_errno, 0, "%s: every failure carries its type's errno", what);
  is_int (bad_data, 0, "%s: every successful read matches the model", what);
  if (!pattern_mode) {
    is_int (bad_extents, 0, "%s: every extent list is sane and claims zero only for zeroes",
            what);
    is_int (extent_on_failure, 0, "%s: no extent callback for a failed block status", what);
    is_int (n_fail[OP_FLUSH], 0, "%s: no flush failed (%lu flushes)", what, n_ops[OP_FLUSH]);
  }
  for (int op = 0; op < OP_FLUSH; op++) {
    double n = (double) n_ops[op], want = n * 0.1, slack = 6 * root (n * 0.09) + 3;

    if (n_ops[op] == 0)
      continue;
    ok ((double) n_fail[op] >= want - slack && (double) n_fail[op] <= want + slack,
        "%s: %s failed %lu of %lu times (%.2f%%), within 10%% +- %.0f", what, op_name[op],
        n_fail[op], n_ops[op], 100.0 * (double) n_fail[op] / n, slack);
  }

  sync_checks (h);

  /* The whole disk, by the model: failed writes left nothing behind. */
  if (!pattern_mode) {
    static uint8_t chunk[64 * 1024];
    unsigned long bad = 0, retries = 0;

    for (uint64_t off = 0; off < MEM_SIZE; off += sizeof chunk) {
      int r = -1;

      for (int t = 0; t < 30 && r == -1; t++) {
        r = nbd_pread (h, chunk, sizeof chunk, off, 0);
        if (r == -1) {
          retries++;
          if (nbd_get_errno () != EIO)
            bail_out ("%s: final read: %s", what, nbd_get_error ());
        }
        record (OP_READ, off, sizeof chunk, r == -1 ? nbd_get_errno () : 0);
      }
      if (r == -1)
        bail_out ("%s: final read at %" PRIu64 " failed 30 times", what, off);
      if (!range_matches (chunk, off, sizeof chunk)) {
        if (bad++ == 0)
          diag ("%s: the disk at %" PRIu64 " differs from the model", what, off);
      }
    }
    is_int (bad, 0, "%s: the whole disk matches the model (%lu reads retried)", what, retries);
  }

  if (nbd_shutdown (h, 0) == -1)
    diag ("%s: nbd_shutdown: %s", what, nbd_get_error ());
  nbd_close (h);
  is_int (server_stop (&srv), 0, "%s: nbdkit stopped", what);

  /* Both sides' view of every request, as multisets. */
  srecs = parse_log (logpath, total + EXTRA, &nr_srecs);
  is_int (nr_srecs, nr_recs, "%s: the server logged as many requests as the client finished",
          what);
  qsort (recs, nr_recs, sizeof *recs, rec_cmp);
  qsort (srecs, nr_srecs, sizeof *srecs, rec_cmp);
  for (size_t i = 0; i < nr_recs || i < nr_srecs; i++) {
    if (i >= nr_recs || i >= nr_srecs || rec_cmp (&recs[i], &srecs[i]) != 0) {
      if (mismatch++ == 0 && i < nr_recs && i < nr_srecs)
        diag ("%s: first difference: client %s %" PRIu64 "+%" PRIu32 " errno %d, "
              "server %s %" PRIu64 "+%" PRIu32 " errno %d", what,
              op_name[recs[i].op], recs[i].off, recs[i].len, recs[i].err,
              op_name[srecs[i].op], srecs[i].off, srecs[i].len, srecs[i].err);
    }
  }
  is_int (mismatch, 0, "%s: the server failed exactly the requests the client saw fail, "
          "with the same errno", what);
  free (srecs);
  free (recs);
  for (int i = 0; i < INFLIGHT; i++)
    free (slots[i].buf);
}

int
main (void)
{
  const char *e;
  unsigned long total = 100000, n_pattern, n_mixed;
  char pattern_log[4200], mixed_log[4200], arg_pat_log[4300], arg_mix_log[4300];

  tap_timeout (150);
  e = getenv ("FAULT_SEED");
  rng = e ? strtoull (e, NULL, 0) : (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32);
  if (rng == 0)
    rng = 1;
  note ("FAULT_SEED=%" PRIu64, rng);
  e = getenv ("FAULT_REQUESTS");
  if (e)
    total = strtoul (e, NULL, 0);
  if (total < 1000)
    total = 1000;
  n_pattern = total / 4;
  n_mixed = total - n_pattern;

  snprintf (pattern_log, sizeof pattern_log, "%s/pattern.log", servers_scratch_dir ());
  snprintf (mixed_log, sizeof mixed_log, "%s/mixed.log", servers_scratch_dir ());
  snprintf (arg_pat_log, sizeof arg_pat_log, "logfile=%s", pattern_log);
  snprintf (arg_mix_log, sizeof arg_mix_log, "logfile=%s", mixed_log);

  {
    /* --log=null: the filter's one line per injected error stays out of
     * the test log (its own log file has them all). */
    const char *args[] = { "--log=null", "--filter=log", "--filter=error",
                           "pattern", "size=1G", arg_pat_log,
                           "error-pread=EIO", "error-pread-rate=10%", NULL };
    pattern_mode = true;
    run ("pattern reads", n_pattern, args, pattern_log);
  }
  {
    const char *args[] = { "--log=null", "--filter=log", "--filter=error",
                           "memory", "size=8M", arg_mix_log,
                           "error-pread=EIO", "error-pwrite=ENOSPC", "error-zero=EPERM",
                           "error-trim=EINVAL", "error-extents=ENOMEM", "error-cache=ESHUTDOWN",
                           "error-rate=10%", NULL };
    pattern_mode = false;
    run ("memory mixed", n_mixed, args, mixed_log);
  }
  return done_testing ();
}
