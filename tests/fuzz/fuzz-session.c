/* fuzz-session.c: the session fuzz-session.h describes — the client's
 * settings from the header, the phases and their requests, the checks of
 * every callback, and the feeding and driving of the connection.
 *
 * Everything it issues is fixed by the header and by what the handshake
 * negotiated (the export size above all), never by timing: a recording and
 * its replay issue the same requests in the same order, so the cookies in a
 * recorded stream still match.  Must never block or loop without bound.
 */
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-session.h"
#include "fuzz-socket.h"

#define GUARD 64                /* bytes either side of every data buffer */
#define GUARD_BYTE 0x5a
#define CANARY_BYTE 0xa5        /* a read buffer's bytes before the read */
#define MAX_CMDS 64
#define COVER_MAX (64 * 1024)   /* the structured reads' counts, summed */
#define MAX_OPTS 8
#define DRIVE_MAX 256           /* events per fuzz_session_drive */
#define SLICES_MAX 256          /* small slices per phase, then whole segments */
#define SEND_TRIES 64           /* full socket: drive and retry this often */
#define FLUSH_DRIVES 16         /* drives for the client's sends before a segment */
#define MAX_NAME 4096           /* NBD_MAX_STRING */

/* Header byte 1's low nibble: how many bytes go in before the client is
 * driven again (0: a whole segment). */
static const size_t slice_sizes[16] = {
  0, 1, 2, 3, 4, 7, 8, 13, 16, 20, 28, 100, 512, 4095, 4096, 16384,
};

static const char *const export_names[4] = {
  "", "disk", "no-such-export", "a longer export name, with spaces",
};

static const char *const meta_base[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
static const char *const meta_qemu[] = {
  "qemu:allocation-depth", "qemu:dirty-bitmap:bitmap0", NULL,
};

enum kind { K_PREAD, K_PREAD_SR, K_PWRITE, K_FLUSH, K_TRIM, K_ZERO, K_CACHE, K_BLOCK_STATUS };

static const char *const call_names[] = {
  "nbd_aio_pread", "nbd_aio_pread_structured", "nbd_aio_pwrite", "nbd_aio_flush",
  "nbd_aio_trim", "nbd_aio_zero", "nbd_aio_cache", "nbd_aio_block_status",
};

/* One command and what its callbacks saw. */
struct cmd {
  struct fuzz_session *s;
  unsigned idx;
  enum kind kind;
  uint64_t offset;
  size_t count;
  uint32_t flags;
  unsigned char *alloc, *buf;   /* reads and writes: count bytes between guards */
  unsigned char *cover;         /* structured reads: the status that covered each byte */
  unsigned fail_chunk;          /* the chunk or extent callback fails at this call (0: never) */
  int64_t cookie;               /* what the call returned */
  bool has_mcb;                 /* a chunk or extent closure was passed */
  int completions, cb_frees, mcb_frees;
  int error;                    /* what the completion callback saw */
  bool done, retired;
  unsigned chunks, extents;
};

enum opt_kind { O_LIST, O_LIST_META, O_INFO, O_GO, O_ABORT };

static const char *const opt_call_names[] = {
  "nbd_aio_opt_list", "nbd_aio_opt_list_meta_context", "nbd_aio_opt_info", "nbd_aio_opt_go",
  "nbd_aio_opt_abort",
};

struct opt {
  struct fuzz_session *s;
  enum opt_kind kind;
  int r;
  bool has_cb, has_list;
  int completions, cb_frees, list_frees;
  unsigned entries;
};

struct fuzz_session {
  struct nbd_handle *h;
  int cfd;                      /* the client's descriptor */
  int srv;                      /* the server's end of a socketpair; -1: in memory */
  bool eof;                     /* the server's end is shut for writing */
  bool send_slices;             /* the client's sends are taken a slice at a time */
  bool send_sliced;             /* ... and this phase has slices left */
  const struct fuzz_source *src;
  uint8_t hdr[FUZZ_HDR_LEN];
  size_t slice;
  unsigned slices_left;
  bool notify, manual_retire, debug;
  struct fuzz_log *log;
  uint64_t size;
  bool can_df;
  struct cmd cmds[MAX_CMDS];
  size_t nr_cmds;
  size_t cover_used;            /* of cover_arena */
  struct opt opts[MAX_OPTS];
  size_t nr_opts;
  int debug_frees;
};

/* The structured reads' cover arrays, carved out per session: one
 * allocation less per command (ASan makes each cost). */
static unsigned char cover_arena[COVER_MAX];

/* ---- Broken promises and the log ---------------------------------------- */

static void __attribute__((noreturn))
check_failed (int line, const char *what)
{
  fprintf (stderr, "fuzz-session.c:%d: the client broke a promise: %s\n", line, what);
  abort ();
}

#define CHECK(cond)                                              \
  do {                                                           \
    if (!(cond))                                                 \
      check_failed (__LINE__, #cond);                            \
  } while (0)

static void __attribute__((format (printf, 2, 3)))
log_event (struct fuzz_session *s, const char *fs, ...)
{
  struct fuzz_log *l = s->log;
  char line[512];
  va_list ap;
  int n;

  if (!l)
    return;
  va_start (ap, fs);
  n = vsnprintf (line, sizeof line - 1, fs, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t) n > sizeof line - 2)
    n = sizeof line - 2;
  line[n++] = '\n';
  if (l->len + n > l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4096;
    char *nb;

    while (cap < l->len + n)
      cap *= 2;
    nb = realloc (l->buf, cap);
    CHECK (nb != NULL);
    l->buf = nb;
    l->cap = cap;
  }
  memcpy (l->buf + l->len, line, n);
  l->len += n;
}

void
fuzz_log_free (struct fuzz_log *log)
{
  free (log->buf);
  log->buf = NULL;
  log->len = log->cap = 0;
}

/* A failed call names itself first and sets an errno. */
static void
check_error (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  CHECK (msg != NULL);
  CHECK (strncmp (msg, call, n) == 0 && msg[n] == ':');
  CHECK (nbd_get_errno () != 0);
}

static const char *
state_name (struct fuzz_session *s)
{
  struct nbd_handle *h = s->h;

  if (nbd_aio_is_created (h)) return "created";
  if (nbd_aio_is_connecting (h)) return "connecting";
  if (nbd_aio_is_negotiating (h)) return "negotiating";
  if (nbd_aio_is_ready (h)) return "ready";
  if (nbd_aio_is_processing (h)) return "processing";
  if (nbd_aio_is_dead (h)) return "dead";
  if (nbd_aio_is_closed (h)) return "closed";
  return "unknown";
}

static bool
alive (struct fuzz_session *s)
{
  return nbd_aio_is_connecting (s->h) || nbd_aio_is_ready (s->h) || nbd_aio_is_processing (s->h);
}

/* ---- The server's end --------------------------------------------------- */

/* A real socketpair's or the in-memory socket's, each as send(2), recv(2),
 * shutdown(2) and FIONREAD on a non-blocking socket would be. */

static ssize_t
srv_send (struct fuzz_session *s, const void *p, size_t n)
{
  if (s->srv < 0)
    return fuzz_socket_put (p, n);
  return send (s->srv, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static ssize_t
srv_recv (struct fuzz_session *s, void *buf, size_t n)
{
  if (s->srv < 0)
    return fuzz_socket_take (buf, n);
  return recv (s->srv, buf, n, MSG_DONTWAIT);
}

/* The end of the stream: an end of file, or in memory (header byte 3) a
 * server gone with the client's bytes unread. */
static void
srv_shut (struct fuzz_session *s)
{
  if (s->srv >= 0)
    shutdown (s->srv, SHUT_WR);
  else if (s->hdr[3] & FUZZ_H3_RESET)
    fuzz_socket_reset_server ();
  else
    fuzz_socket_shut_server ();
}

/* Whether the client's read would find bytes. */
static bool
client_unread (struct fuzz_session *s)
{
  int avail = 0;

  if (s->srv < 0)
    return fuzz_socket_pending () > 0;
  return ioctl (s->cfd, FIONREAD, &avail) == 0 && avail > 0;
}

/* ---- Feeding and driving ------------------------------------------------ */

/* What the client sent: forwarded (recorder) or dropped.  A sliced send
 * window spends the slices too, then opens.  True if there was any. */
static bool
drain (struct fuzz_session *s)
{
  static char buf[65536];
  bool took = false;

  for (int i = 0; i < 64; i++) {
    ssize_t n = srv_recv (s, buf, sizeof buf);

    if (n <= 0)
      break;
    took = true;
    if (s->src->client_bytes)
      s->src->client_bytes (s->src->opaque, buf, n);
    if (s->send_sliced && (s->slices_left == 0 || --s->slices_left == 0)) {
      fuzz_socket_set_window (SIZE_MAX);
      s->send_sliced = false;
    }
  }
  return took;
}

/* The aio way: the direction says what the client waits for, FIONREAD
 * whether reading would find anything.  1 if an event was delivered. */
static int
notify_step (struct fuzz_session *s)
{
  unsigned dir = nbd_aio_get_direction (s->h);
  int r = 0;

  CHECK (nbd_aio_get_fd (s->h) == s->cfd || !alive (s));
  if ((dir & LIBNBD_AIO_DIRECTION_READ) && (client_unread (s) || s->eof)) {
    nbd_aio_notify_read (s->h);
    r = 1;
  }
  if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && alive (s)) {
    nbd_aio_notify_write (s->h);
    r = 1;
  }
  return r;
}

void
fuzz_session_drive (struct fuzz_session *s)
{
  for (int i = 0; i < DRIVE_MAX; i++) {
    bool took = drain (s);
    int r;

    if (!alive (s))
      break;
    r = s->notify ? notify_step (s) : nbd_poll (s->h, 0);
    /* Taking the client's bytes is progress too: it may send more now. */
    if (r <= 0 && !took)
      break;
  }
  drain (s);
}

/* False if the client will take no more (its end closed, or it does not
 * read and the socket is full). */
static bool
send_all (struct fuzz_session *s, const char *p, size_t n)
{
  int tries = 0;

  while (n > 0) {
    ssize_t r = srv_send (s, p, n);

    if (r > 0) {
      p += r;
      n -= r;
      continue;
    }
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++tries < SEND_TRIES) {
      fuzz_session_drive (s);
      continue;
    }
    return false;
  }
  return true;
}

void
fuzz_session_send (struct fuzz_session *s, const void *buf, size_t len)
{
  const char *p = buf;

  if (s->eof)
    return;
  while (len > 0) {
    size_t n = len;

    if (s->slice && s->slices_left && n > s->slice) {
      n = s->slice;
      s->slices_left--;
    }
    if (!send_all (s, p, n))
      return;
    p += n;
    len -= n;
    fuzz_session_drive (s);
  }
}

static void
send_eof (struct fuzz_session *s)
{
  if (s->eof)
    return;
  srv_shut (s);
  s->eof = true;
  fuzz_session_drive (s);
}

/* Each phase starts with SLICES_MAX small slices (both ways, for the send
 * window): partial reads and writes wherever a phase begins, at a cost that
 * does not grow with the session. */
static void
phase_slices (struct fuzz_session *s)
{
  s->slices_left = SLICES_MAX;
  if (s->send_slices && !s->send_sliced) {
    fuzz_socket_set_window (s->slice);
    s->send_sliced = true;
  }
}

/* Feed whole segments until @done or the end of the stream, then mark the
 * phase's end (and give the next one its slices). */
static void
wait_phase (struct fuzz_session *s, const char *name, bool (*done) (struct fuzz_session *))
{
  fuzz_session_drive (s);
  while (!done (s) && !s->eof) {
    /* A server answers what it received: a sliced send window must not
     * let the answers overtake the requests. */
    for (int i = 0; i < FLUSH_DRIVES && alive (s) &&
                    (nbd_aio_get_direction (s->h) & LIBNBD_AIO_DIRECTION_WRITE); i++)
      fuzz_session_drive (s);
    if (!s->src->feed (s, s->src->opaque))
      send_eof (s);
  }
  if (s->src->boundary)
    s->src->boundary (s->src->opaque);
  log_event (s, "phase %s: %s", name, state_name (s));
  phase_slices (s);
}

static bool
connecting_done (struct fuzz_session *s)
{
  return !nbd_aio_is_connecting (s->h);
}

static bool
commands_done (struct fuzz_session *s)
{
  return nbd_aio_in_flight (s->h) <= 0;
}

static bool
session_done (struct fuzz_session *s)
{
  return !alive (s);
}

/* ---- Callbacks ---------------------------------------------------------- */

static int
debug_message (void *user_data, const char *context, const char *msg)
{
  CHECK (context != NULL && msg != NULL);
  CHECK (strlen (msg) < 1024 * 1024);
  return 0;
}

static void
debug_free (void *user_data)
{
  struct fuzz_session *s = user_data;

  s->debug_frees++;
}

static void
check_guards (const struct cmd *c)
{
  if (!c->alloc)
    return;
  for (size_t i = 0; i < GUARD; i++) {
    CHECK (c->alloc[i] == GUARD_BYTE);
    CHECK (c->buf[c->count + i] == GUARD_BYTE);
  }
}

static unsigned char
write_pattern (const struct cmd *c, size_t i)
{
  return (unsigned char) (i * 7 + c->idx + 1);
}

static int
cmd_complete (void *user_data, int *error)
{
  struct cmd *c = user_data;

  c->completions++;
  CHECK (c->completions == 1);
  CHECK (c->cb_frees == 0);
  c->done = true;
  c->error = *error;
  log_event (c->s, "done %u error %d chunks %u extents %u", c->idx, c->error, c->chunks,
             c->extents);
  check_guards (c);
  if (c->kind == K_PREAD_SR) {
    /* pread_initialize: what no chunk covered is zero; success means
     * the chunks covered all of it, and holes read as zero. */
    for (size_t i = 0; i < c->count; i++) {
      if (!c->cover[i])
        CHECK (c->buf[i] == 0);
      if (c->error == 0) {
        CHECK (c->cover[i] != 0);
        if (c->cover[i] == LIBNBD_READ_HOLE)
          CHECK (c->buf[i] == 0);
      }
    }
  }
  if (c->fail_chunk && (c->chunks >= c->fail_chunk || c->extents >= c->fail_chunk))
    CHECK (c->error != 0);
  if (c->kind == K_PWRITE)
    for (size_t i = 0; i < c->count; i++)
      CHECK (c->buf[i] == write_pattern (c, i));
  return c->s->manual_retire ? 0 : 1;
}

static void
cmd_cb_free (void *user_data)
{
  struct cmd *c = user_data;

  c->cb_frees++;
  CHECK (c->cb_frees == 1);
}

static void
cmd_mcb_free (void *user_data)
{
  struct cmd *c = user_data;

  c->mcb_frees++;
  CHECK (c->mcb_frees == 1);
}

static int
cmd_chunk (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
           int *error)
{
  struct cmd *c = user_data;
  const unsigned char *p = subbuf;

  CHECK (!c->done);
  CHECK (status == LIBNBD_READ_DATA || status == LIBNBD_READ_HOLE || status == LIBNBD_READ_ERROR);
  CHECK (offset >= c->offset && count <= c->count && offset - c->offset <= c->count - count);
  CHECK (p == c->buf + (offset - c->offset));
  c->chunks++;
  if (status != LIBNBD_READ_ERROR) {
    CHECK (count > 0);
    if (status == LIBNBD_READ_HOLE)
      for (size_t i = 0; i < count; i++)
        CHECK (p[i] == 0);
    memset (c->cover + (offset - c->offset), (int) status, count);
  }
  if (c->fail_chunk && c->chunks == c->fail_chunk) {
    *error = EIO;
    return -1;
  }
  return 0;
}

static int
cmd_extent (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
            size_t nr_entries, int *error)
{
  struct cmd *c = user_data;
  uint64_t sum = 0;

  CHECK (!c->done);
  CHECK (metacontext != NULL && metacontext[0] != '\0' && strlen (metacontext) <= MAX_NAME);
  CHECK (offset == c->offset);
  CHECK (nr_entries >= 2 && nr_entries % 2 == 0);
  for (size_t i = 0; i < nr_entries; i += 2) {
    CHECK (entries[i] > 0);
    if (i + 2 < nr_entries)
      sum += entries[i];
  }
  /* All but the last extent lie inside the request; with REQ_ONE there is
   * one, no longer than the request. */
  if (nr_entries > 2)
    CHECK (sum < c->count);
  if (c->flags & LIBNBD_CMD_FLAG_REQ_ONE)
    CHECK (nr_entries == 2 && entries[0] <= c->count);
  c->extents++;
  if (c->fail_chunk && c->extents == c->fail_chunk) {
    *error = ENOMEM;
    return -1;
  }
  return 0;
}

/* ---- Commands ----------------------------------------------------------- */

/* An offset for a request of @count bytes: inside the export when it is big
 * enough (aligned to 512), moved by header byte 3. */
static uint64_t
at (struct fuzz_session *s, uint64_t off, uint64_t count)
{
  off += (uint64_t) (s->hdr[3] & FUZZ_H3_SHIFT_MASK) * 4096;
  if (s->size == 0 || s->size < count)
    return off;
  return (off % (s->size - count + 1)) & ~(uint64_t) 511;
}

static void
issue (struct fuzz_session *s, enum kind kind, uint64_t offset, size_t count, uint32_t flags,
       unsigned fail_chunk)
{
  struct cmd *c = &s->cmds[s->nr_cmds];
  bool read = kind == K_PREAD || kind == K_PREAD_SR;
  nbd_completion_callback cb = { .callback = cmd_complete, .user_data = c, .free = cmd_cb_free };
  nbd_chunk_callback chunk = { .callback = cmd_chunk, .user_data = c, .free = cmd_mcb_free };
  nbd_extent_callback extent = { .callback = cmd_extent, .user_data = c, .free = cmd_mcb_free };
  struct nbd_handle *h = s->h;
  int64_t r = -1;

  CHECK (s->nr_cmds < MAX_CMDS);
  c->s = s;
  c->idx = s->nr_cmds;
  c->kind = kind;
  c->offset = offset;
  c->count = count;
  c->flags = flags;
  c->fail_chunk = fail_chunk;
  s->nr_cmds++;
  if (read || kind == K_PWRITE) {
    c->alloc = malloc (count + 2 * GUARD);
    CHECK (c->alloc != NULL);
    c->buf = c->alloc + GUARD;
    memset (c->alloc, GUARD_BYTE, GUARD);
    memset (c->buf + count, GUARD_BYTE, GUARD);
    if (read)
      memset (c->buf, CANARY_BYTE, count);
    else
      for (size_t i = 0; i < count; i++)
        c->buf[i] = write_pattern (c, i);
  }
  if (kind == K_PREAD_SR) {
    CHECK (count <= COVER_MAX - s->cover_used);
    c->cover = cover_arena + s->cover_used;
    s->cover_used += count;
    memset (c->cover, 0, count);
  }
  c->has_mcb = kind == K_PREAD_SR || kind == K_BLOCK_STATUS;

  switch (kind) {
  case K_PREAD: r = nbd_aio_pread (h, c->buf, count, offset, cb, flags); break;
  case K_PREAD_SR:
    r = nbd_aio_pread_structured (h, c->buf, count, offset, chunk, cb, flags);
    break;
  case K_PWRITE: r = nbd_aio_pwrite (h, c->buf, count, offset, cb, flags); break;
  case K_FLUSH: r = nbd_aio_flush (h, cb, flags); break;
  case K_TRIM: r = nbd_aio_trim (h, count, offset, cb, flags); break;
  case K_ZERO: r = nbd_aio_zero (h, count, offset, cb, flags); break;
  case K_CACHE: r = nbd_aio_cache (h, count, offset, cb, flags); break;
  case K_BLOCK_STATUS: r = nbd_aio_block_status (h, count, offset, extent, cb, flags); break;
  }
  c->cookie = r;
  if (r == -1) {
    check_error (call_names[kind]);
    /* Refused: no completion, every closure freed, a read buffer zeroed
     * (pread_initialize). */
    CHECK (c->completions == 0);
    CHECK (c->cb_frees == 1);
    CHECK (!c->has_mcb || c->mcb_frees == 1);
    if (read)
      for (size_t i = 0; i < count; i++)
        CHECK (c->buf[i] == 0);
    check_guards (c);
    log_event (s, "issue %u %s refused: errno %d", c->idx, call_names[kind], nbd_get_errno ());
  }
  else {
    CHECK (r > 0);
    log_event (s, "issue %u %s: cookie %" PRIi64, c->idx, call_names[kind], r);
  }
}

/* Manual retirement: every completed command once, with its outcome. */
static void
retire (struct fuzz_session *s)
{
  int64_t peek;

  if (!s->manual_retire)
    return;
  peek = nbd_aio_peek_command_completed (s->h);
  if (peek > 0) {
    bool found = false;

    for (size_t i = 0; i < s->nr_cmds; i++)
      if (s->cmds[i].cookie == peek)
        found = s->cmds[i].done && !s->cmds[i].retired;
    CHECK (found);
  }
  for (size_t i = 0; i < s->nr_cmds; i++) {
    struct cmd *c = &s->cmds[i];
    int r;

    if (!c->done || c->retired)
      continue;
    r = nbd_aio_command_completed (s->h, c->cookie);
    CHECK (r == (c->error ? -1 : 1));
    if (r == -1) {
      check_error ("nbd_aio_command_completed");
      CHECK (nbd_get_errno () == c->error);
    }
    c->retired = true;
    CHECK (c->cb_frees == 1);
    CHECK (!c->has_mcb || c->mcb_frees == 1);
  }
}

/* False once the handle is gone: it refuses every later command the same
 * way, as the batch that saw it go (or the first) has shown; issuing the
 * rest would only slow the fuzzer, which breaks most connections early. */
static bool
batch_end (struct fuzz_session *s, const char *name)
{
  wait_phase (s, name, commands_done);
  retire (s);
  return alive (s);
}

static void
batches (struct fuzz_session *s)
{
  uint32_t df = s->can_df ? LIBNBD_CMD_FLAG_DF : 0;
  unsigned fail = (s->hdr[2] & FUZZ_H2_FAIL_CHUNK) ? 1 : 0;

  /* Reads are small, so that most of a recorded stream is protocol, not
   * payload, and mutations land where they matter. */
  issue (s, K_PREAD, at (s, 0, 512), 512, 0, 0);
  issue (s, K_PREAD_SR, at (s, 4096, 2048), 2048, 0, 0);
  issue (s, K_BLOCK_STATUS, at (s, 0, 65536), 65536, 0, fail);
  issue (s, K_PREAD, 3, 1000, 0, 0);
  if (!batch_end (s, "read"))
    return;

  issue (s, K_PWRITE, at (s, 8192, 4096), 4096, 0, 0);
  issue (s, K_ZERO, at (s, 16384, 8192), 8192, 0, 0);
  issue (s, K_TRIM, at (s, 32768, 4096), 4096, 0, 0);
  issue (s, K_FLUSH, 0, 0, 0, 0);
  issue (s, K_CACHE, at (s, 0, 8192), 8192, 0, 0);
  issue (s, K_PWRITE, at (s, 40960, 512), 512, LIBNBD_CMD_FLAG_FUA, 0);
  if (!batch_end (s, "write"))
    return;

  issue (s, K_PREAD_SR, at (s, 8192, 2048), 2048, df, 0);
  issue (s, K_BLOCK_STATUS, at (s, 0, 1 << 20), 1 << 20, LIBNBD_CMD_FLAG_REQ_ONE, 0);
  issue (s, K_PREAD_SR, at (s, 12288, 1024), 1024, 0, fail);
  issue (s, K_ZERO, at (s, 49152, 4096), 4096,
         LIBNBD_CMD_FLAG_FAST_ZERO | LIBNBD_CMD_FLAG_NO_HOLE, 0);
  if (!batch_end (s, "reread"))
    return;

  /* Across data and holes a reply comes in several chunks; above 16 KiB a
   * payload may go straight to the caller's buffer. */
  issue (s, K_PREAD_SR, at (s, 2048, 4096), 4096, 0, 0);
  if (s->hdr[2] & FUZZ_H2_LARGE)
    issue (s, K_PREAD_SR, at (s, 0, 17408), 17408, 0, 0);
  issue (s, K_PREAD_SR, at (s, 65536, 2048), 2048, 0, 0);
  issue (s, K_PREAD, at (s, 0, 0), 0, 0, 0);
  if (!batch_end (s, "large"))
    return;

  /* Many replies in one receive. */
  for (unsigned i = 0; i < 8; i++)
    issue (s, K_PREAD, at (s, i * 4096, 256), 256, 0, 0);
  for (unsigned i = 0; i < 4; i++)
    issue (s, K_BLOCK_STATUS, at (s, i * 8192, 4096), 4096, 0, 0);
  for (unsigned i = 0; i < 2; i++)
    issue (s, K_PREAD_SR, at (s, i * 65536 + 512, 512), 512, 0, 0);
  batch_end (s, "many");
}

/* ---- Option mode -------------------------------------------------------- */

static int
opt_complete (void *user_data, int *error)
{
  struct opt *o = user_data;

  o->completions++;
  CHECK (o->completions == 1);
  CHECK (o->cb_frees == 0);
  log_event (o->s, "opt %s done: error %d, %u entries", opt_call_names[o->kind], *error,
             o->entries);
  return 1;
}

static void
opt_cb_free (void *user_data)
{
  struct opt *o = user_data;

  o->cb_frees++;
  CHECK (o->cb_frees == 1);
}

static void
opt_list_free (void *user_data)
{
  struct opt *o = user_data;

  o->list_frees++;
  CHECK (o->list_frees == 1);
}

static int
opt_export (void *user_data, const char *name, const char *description)
{
  struct opt *o = user_data;

  CHECK (o->completions == 0);
  CHECK (name != NULL && description != NULL);
  CHECK (strlen (name) <= MAX_NAME && strlen (description) <= MAX_NAME);
  o->entries++;
  return 0;
}

static int
opt_context (void *user_data, const char *name)
{
  struct opt *o = user_data;

  CHECK (o->completions == 0);
  CHECK (name != NULL && name[0] != '\0' && strlen (name) <= MAX_NAME);
  o->entries++;
  return 0;
}

static void
run_opt (struct fuzz_session *s, enum opt_kind kind)
{
  struct opt *o = &s->opts[s->nr_opts++];
  nbd_completion_callback cb = { .callback = opt_complete, .user_data = o, .free = opt_cb_free };
  nbd_list_callback list = { .callback = opt_export, .user_data = o, .free = opt_list_free };
  nbd_context_callback context = { .callback = opt_context, .user_data = o,
                                   .free = opt_list_free };
  int r = -1;

  o->s = s;
  o->kind = kind;
  o->has_cb = kind != O_ABORT;
  o->has_list = kind == O_LIST || kind == O_LIST_META;
  switch (kind) {
  case O_LIST: r = nbd_aio_opt_list (s->h, list, cb); break;
  case O_LIST_META: r = nbd_aio_opt_list_meta_context (s->h, context, cb); break;
  case O_INFO: r = nbd_aio_opt_info (s->h, cb); break;
  case O_GO: r = nbd_aio_opt_go (s->h, cb); break;
  case O_ABORT: r = nbd_aio_opt_abort (s->h); break;
  }
  o->r = r;
  log_event (s, "opt %s: %d", opt_call_names[kind], r);
  if (r == -1) {
    check_error (opt_call_names[kind]);
    CHECK (o->completions <= 1);
    CHECK (!o->has_cb || o->cb_frees == 1);
    CHECK (!o->has_list || o->list_frees == 1);
    return;
  }
  CHECK (r == 0);
  wait_phase (s, opt_call_names[kind], connecting_done);
  if (!nbd_aio_is_connecting (s->h)) {
    CHECK (!o->has_cb || (o->completions == 1 && o->cb_frees == 1));
    CHECK (!o->has_list || o->list_frees == 1);
  }
}

/* ---- Facts -------------------------------------------------------------- */

static bool
is_pow2 (int64_t v)
{
  return v > 0 && (v & (v - 1)) == 0;
}

static void
facts (struct fuzz_session *s, const char *when)
{
  struct nbd_handle *h = s->h;
  int64_t size = nbd_get_size (h);
  int64_t min = nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM);
  int64_t pref = nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED);
  int64_t max = nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM);
  const char *proto = nbd_get_protocol (h);
  char *name = nbd_get_canonical_export_name (h);
  char *desc = nbd_get_export_description (h);
  int df = nbd_can_df (h);
  int metas = 0;

  if (name)
    CHECK (strlen (name) <= MAX_NAME);
  if (desc)
    CHECK (strlen (desc) <= MAX_NAME);
  free (name);
  free (desc);
  /* The client checked the server's block sizes before it accepted them. */
  if (min > 0 || pref > 0 || max > 0) {
    CHECK (is_pow2 (min) && min <= 65536 && is_pow2 (pref) && pref >= min && pref >= 512);
    CHECK (max >= pref && (max == UINT32_MAX || max % min == 0));
  }
  for (const char *const *m = meta_base; *m; m++)
    metas += nbd_can_meta_context (h, *m) == 1;
  for (const char *const *m = meta_qemu; *m; m++)
    metas += nbd_can_meta_context (h, *m) == 1;
  log_event (s, "facts %s: size %" PRIi64 " flags %d%d%d%d%d%d%d%d%d%d block %" PRIi64 "/%"
             PRIi64 "/%" PRIi64 " protocol %s sr %d metas %d", when, size,
             nbd_is_read_only (h), nbd_can_flush (h), nbd_can_fua (h), nbd_is_rotational (h),
             nbd_can_trim (h), nbd_can_zero (h), nbd_can_fast_zero (h), df,
             nbd_can_multi_conn (h), nbd_can_cache (h), min, pref, max, proto ? proto : "-",
             nbd_get_structured_replies_negotiated (h), metas);
  if (size >= 0)
    s->size = size;
  s->can_df = df == 1;
}

/* ---- The session -------------------------------------------------------- */

static void
configure (struct fuzz_session *s)
{
  struct nbd_handle *h = s->h;
  uint8_t h0 = s->hdr[0], h1 = s->hdr[1], h2 = s->hdr[2];
  uint32_t hflags = LIBNBD_HANDSHAKE_FLAG_MASK;

  s->slice = slice_sizes[h1 & FUZZ_H1_SLICE_MASK];
  s->notify = h1 & FUZZ_H1_NOTIFY;
  s->manual_retire = h1 & FUZZ_H1_MANUAL_RETIRE;
  CHECK (nbd_set_opt_mode (h, h0 & FUZZ_H0_OPT_MODE) == 0);
  CHECK (nbd_set_request_structured_replies (h, !(h0 & FUZZ_H0_NO_SR)) == 0);
  if (h0 & FUZZ_H0_META_BASE)
    for (const char *const *m = meta_base; *m; m++)
      CHECK (nbd_add_meta_context (h, *m) == 0);
  if (h0 & FUZZ_H0_META_QEMU)
    for (const char *const *m = meta_qemu; *m; m++)
      CHECK (nbd_add_meta_context (h, *m) == 0);
  CHECK (nbd_set_full_info (h, h0 & FUZZ_H0_FULL_INFO) == 0);
  if (h0 & FUZZ_H0_STRICT_OFF)
    CHECK (nbd_set_strict_mode (h, 0) == 0);
  if (h0 & FUZZ_H0_NO_FIXED)
    hflags &= ~LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE;
  if (h0 & FUZZ_H0_NO_NOZEROES)
    hflags &= ~LIBNBD_HANDSHAKE_FLAG_NO_ZEROES;
  CHECK (nbd_set_handshake_flags (h, hflags) == 0);
  CHECK (nbd_set_request_block_size (h, !(h1 & FUZZ_H1_NO_BLOCK_SIZE)) == 0);
  CHECK (nbd_set_pread_initialize (h, true) == 0);
  CHECK (nbd_set_export_name (h, export_names[h2 & FUZZ_H2_NAME_MASK]) == 0);
  if (h2 & (FUZZ_H2_TLS_ALLOW | FUZZ_H2_TLS_REQUIRE)) {
    /* Refused in a build without GnuTLS: then the session is plaintext. */
    if (nbd_set_tls (h, (h2 & FUZZ_H2_TLS_REQUIRE) ? LIBNBD_TLS_REQUIRE : LIBNBD_TLS_ALLOW) == 0)
      CHECK (nbd_set_tls_certificates (h, "/nonexistent/fuzz-client-certificates") == 0);
  }
  if (h1 & FUZZ_H1_DEBUG) {
    nbd_debug_callback dcb = { .callback = debug_message, .user_data = s, .free = debug_free };

    CHECK (nbd_set_debug_callback (h, dcb) == 0);
    CHECK (nbd_set_debug (h, true) == 0);
    s->debug = true;
  }
}

/* After nbd_close: every promise about callbacks kept, then free all. */
static void
final_checks (struct fuzz_session *s)
{
  for (size_t i = 0; i < s->nr_cmds; i++) {
    struct cmd *c = &s->cmds[i];

    CHECK (c->completions == (c->cookie > 0 ? 1 : 0));
    CHECK (c->cb_frees == 1);
    CHECK (!c->has_mcb || c->mcb_frees == 1);
    check_guards (c);
    free (c->alloc);
  }
  for (size_t i = 0; i < s->nr_opts; i++) {
    struct opt *o = &s->opts[i];

    /* A call that failed may still have completed its option (the
     * connection died under it); one that succeeded always did. */
    if (o->has_cb) {
      CHECK (o->r == 0 ? o->completions == 1 : o->completions <= 1);
      CHECK (o->cb_frees == 1);
    }
    CHECK (!o->has_list || o->list_frees == 1);
  }
  if (s->debug)
    CHECK (s->debug_frees == 1);
}

void
fuzz_session_run (const uint8_t *hdr, const struct fuzz_source *src, struct fuzz_log *log)
{
  struct fuzz_session s = { .src = src, .log = log, .srv = -1 };
  int sv[2];

  memcpy (s.hdr, hdr, FUZZ_HDR_LEN);
  s.h = nbd_create ();
  CHECK (s.h != NULL);
  configure (&s);
  if (src->socketpair) {
    CHECK (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    s.srv = sv[0];
    s.cfd = sv[1];
  }
  else {
    s.send_slices = (s.hdr[2] & FUZZ_H2_SEND_SLICES) && s.slice;
    s.cfd = fuzz_socket_open (SIZE_MAX);
    CHECK (s.cfd >= 0);
  }
  phase_slices (&s);
  CHECK (nbd_aio_connect_socket (s.h, s.cfd) == 0);
  wait_phase (&s, "handshake", connecting_done);

  if (nbd_aio_is_negotiating (s.h)) {
    run_opt (&s, O_LIST);
    run_opt (&s, O_LIST_META);
    run_opt (&s, O_INFO);
    facts (&s, "info");
    run_opt (&s, O_GO);
    if (nbd_aio_is_negotiating (s.h))
      run_opt (&s, O_ABORT);
  }
  facts (&s, "go");
  batches (&s);
  if (s.hdr[2] & FUZZ_H2_DISCONNECT) {
    int r = nbd_aio_disconnect (s.h, 0);

    if (r == -1)
      check_error ("nbd_aio_disconnect");
    log_event (&s, "disconnect: %d", r);
  }
  wait_phase (&s, "end", session_done);
  send_eof (&s);
  retire (&s);
  log_event (&s, "close: %s", state_name (&s));
  nbd_close (s.h);
  /* nbd_close closed the client's descriptor, and the core's traffic all
   * went through the calls fuzz-socket.c wraps. */
  if (s.srv >= 0)
    close (s.srv);
  else
    CHECK (fuzz_socket_release ());
  final_checks (&s);
}

/* ---- Replaying an input ------------------------------------------------- */

struct input {
  const uint8_t *p;
  size_t len, pos;
};

static int
input_feed (struct fuzz_session *s, void *opaque)
{
  struct input *in = opaque;
  size_t n;

  if (in->len - in->pos < 2)
    return 0;
  n = (size_t) in->p[in->pos] << 8 | in->p[in->pos + 1];
  in->pos += 2;
  if (n > in->len - in->pos)
    n = in->len - in->pos;
  fuzz_session_send (s, in->p + in->pos, n);
  in->pos += n;
  return 1;
}

void
fuzz_replay (const uint8_t *data, size_t size, struct fuzz_log *log)
{
  uint8_t hdr[FUZZ_HDR_LEN] = { 0 };
  size_t n = size < FUZZ_HDR_LEN ? size : FUZZ_HDR_LEN;
  struct input in = { .p = data ? data + n : NULL, .len = size - n };
  struct fuzz_source src = { .feed = input_feed, .opaque = &in };

  if (!data)
    in.p = (const uint8_t *) "";
  if (n)
    memcpy (hdr, data, n);
  fuzz_session_run (hdr, &src, log);
}
