/* reply.c: replies in — simple replies and structured reply chunks, read
 * through a receive buffer that takes many replies per recv(2), with large
 * read payloads received straight into the caller's buffer.
 *
 * Never blocks and never stops mid-reply waiting: the parse state is kept in
 * the handle and resumed on the next event.  Every length, offset and count
 * from the server is checked (with overflow-safe arithmetic) before it is
 * used; nothing the server sends reaches an assert.  A violation that
 * breaks the framing kills the connection (EPROTO); one that leaves the
 * stream in step only fails its command.
 *
 * Owns a structured read's coverage: which bytes the chunks filled, kept
 * relative to the command's offset (a read may reach 2^64, where absolute
 * ends wrap), and the zeroing of the rest when the read completes.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

enum { R_HDR = 0, R_DATA, R_GATHER };

/* What a gathered payload is for. */
enum { G_DATA_OFFSET, G_HOLE, G_BLOCK_STATUS, G_ERROR };

#define MAX_ERROR_CHUNK (4 + 2 + NBD_MAX_STRING + 8)

void
nbd_internal_reset_reply (struct nbd_handle *h)
{
  h->rstate = R_HDR;
  h->rhdr_len = 0;
  h->rcmd = NULL;
  h->rdst = NULL;
  h->rremain = 0;
  h->chunk_len = 0;
  h->rdirect = false;
  h->rhdr_only = false;
}

static int
protocol_error (struct nbd_handle *h, const char *what)
{
  set_error (EPROTO, "server protocol error: %s", what);
  nbd_internal_set_dead (h, EPROTO);
  return -1;
}

/* A fault the stream survives: the command fails, the connection lives. */
static void
command_error (struct command *cmd, int err, const char *why)
{
  if (!cmd->error) {
    cmd->error = err;
    cmd->why = why;
  }
}

static int
gather (struct nbd_handle *h, uint32_t len, int what)
{
  if (len > h->chunk_cap) {
    size_t cap = h->chunk_cap ? h->chunk_cap : 4096;
    char *nb;

    while (cap < len)
      cap *= 2;
    nb = realloc (h->chunk_buf, cap);
    if (!nb) {
      set_error (ENOMEM, "receive buffer for a reply chunk");
      nbd_internal_set_dead (h, ENOMEM);
      return -1;
    }
    h->chunk_buf = nb;
    h->chunk_cap = cap;
  }
  h->rstate = R_GATHER;
  h->rlen = len;
  h->chunk_len = 0;
  h->rtype_gather = what;
  return 0;
}

static void
expect_data (struct nbd_handle *h, char *dst, uint64_t len)
{
  h->rstate = R_DATA;
  h->rdst = dst;
  h->rremain = len;
  h->rdirect = false;
  h->rhdr_only = false;         /* the header is in */
}

/* The reply for this command is complete. */
static void
complete (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;

  nbd_internal_reset_reply (h);
  /* A server may answer a write before reading its payload (qemu-nbd
   * refuses one above its limit at once), and a reply can overtake the
   * writer thread's release: while a zero-copy writer still holds the
   * payload, the caller must not get its buffer back.  The release is
   * normally microseconds away; wait a little, never long: after that the
   * command is pinned and completes at the first step after the release
   * (nbd_poll also wakes on it). */
  if (cmd->type == NBD_CMD_WRITE && cmd->borrow_end > atomic_load (&h->zc_released)) {
    atomic_store (&h->zc_want_wake, true);
    for (int i = 0; i < 20 && cmd->borrow_end > atomic_load (&h->zc_released); i++)
      nbd_internal_wait_release (h, 1);
    if (cmd->borrow_end > atomic_load (&h->zc_released)) {
      cmd->state = CMD_PINNED;
      h->nr_pinned++;
      return;
    }
    if (h->nr_pinned == 0)
      atomic_store (&h->zc_want_wake, false);
  }
  nbd_internal_finish_command (h, cmd);
}

/* After a chunk: the command completes if the chunk carried DONE. */
static void
chunk_done (struct nbd_handle *h)
{
  if (h->rflags & NBD_REPLY_FLAG_DONE)
    complete (h);
  else
    nbd_internal_reset_reply (h);
}

/* ---- Structured read coverage ----------------------------------------- */

/* Record [start, end) (relative to the command's offset, see struct range)
 * as filled; false if it overlaps what came before. */
static bool
record_range (struct command *cmd, uint32_t start, uint32_t end)
{
  size_t i;

  if (start < cmd->fill_end)
    return false;
  for (i = 0; i < cmd->nr_ranges; i++) {
    if (start < cmd->ranges[i].end && end > cmd->ranges[i].start)
      return false;
    if (cmd->ranges[i].start >= end)
      break;
  }
  cmd->data_seen += end - start;
  if (start == cmd->fill_end) {
    cmd->fill_end = end;
    /* Absorb out-of-order ranges that now join the in-order prefix. */
    size_t k = 0;
    while (k < cmd->nr_ranges && cmd->ranges[k].start == cmd->fill_end)
      cmd->fill_end = cmd->ranges[k++].end;
    if (k) {
      memmove (cmd->ranges, cmd->ranges + k, (cmd->nr_ranges - k) * sizeof *cmd->ranges);
      cmd->nr_ranges -= k;
    }
    return true;
  }
  if (cmd->nr_ranges == cmd->cap_ranges) {
    size_t cap = cmd->cap_ranges ? cmd->cap_ranges * 2 : 8;
    struct range *nr = realloc (cmd->ranges, cap * sizeof *nr);
    if (!nr) {
      /* Without room to remember the range, forget that it was filled:
       * it is zeroed at the end and the read reports a short read. */
      cmd->data_seen -= end - start;
      return true;
    }
    cmd->ranges = nr;
    cmd->cap_ranges = cap;
  }
  memmove (cmd->ranges + i + 1, cmd->ranges + i, (cmd->nr_ranges - i) * sizeof *cmd->ranges);
  cmd->ranges[i].start = start;
  cmd->ranges[i].end = end;
  cmd->nr_ranges++;
  return true;
}

/* Zero what the server did not fill, so a buffer never shows old memory. */
void
nbd_internal_zero_unfilled (struct command *cmd)
{
  uint32_t pos = cmd->fill_end;
  char *buf = cmd->data;

  if (cmd->data_seen == cmd->count && !cmd->error)
    return;
  for (size_t i = 0; i < cmd->nr_ranges; i++) {
    if (cmd->ranges[i].start > pos)
      memset (buf + pos, 0, cmd->ranges[i].start - pos);
    if (cmd->ranges[i].end > pos)
      pos = cmd->ranges[i].end;
  }
  if (pos < cmd->count)
    memset (buf + pos, 0, cmd->count - pos);
}

/* The chunk [off, off+len) must lie inside the request.  Compared relative
 * to the command's offset: off + len may pass 2^64. */
static bool
in_bounds (const struct command *cmd, uint64_t off, uint64_t len)
{
  return off >= cmd->offset && len <= cmd->count && off - cmd->offset <= cmd->count - len;
}

static void
call_chunk (struct nbd_handle *h, struct command *cmd, const void *buf, size_t len, uint64_t off,
            unsigned status)
{
  int err = cmd->error;

  if (cmd->mcb.chunk.callback &&
      cmd->mcb.chunk.callback (cmd->mcb.chunk.user_data, buf, len, off, status, &err) == -1)
    command_error (cmd, err ? err : EPROTO, "the chunk callback failed");
}

/* ---- Headers ---------------------------------------------------------- */

static void data_done (struct nbd_handle *h);

static int
simple_reply (struct nbd_handle *h)
{
  struct nbd_simple_reply r;
  struct command *cmd;
  uint32_t error;

  memcpy (&r, h->rhdr, sizeof r);
  cmd = nbd_internal_lookup (h, be64toh (r.cookie));
  if (!cmd)
    return protocol_error (h, "simple reply with an unknown cookie");
  error = be32toh (r.error);
  h->rcmd = cmd;
  if (cmd->type == NBD_CMD_READ && h->sr)
    return protocol_error (h, "simple reply to a read, but structured replies were negotiated");
  if (error) {
    command_error (cmd, nbd_internal_nbd_error_to_errno (error), "the server reported an error");
    complete (h);
    return 0;
  }
  if (cmd->type == NBD_CMD_READ) {
    expect_data (h, cmd->data, cmd->count);
    h->rtype = NBD_REPLY_TYPE_NONE;     /* marks the simple read payload */
    h->rflags = NBD_REPLY_FLAG_DONE;
    if (cmd->count == 0)
      data_done (h);                    /* no payload follows to trigger it */
    return 0;
  }
  complete (h);
  return 0;
}

static int
structured_reply (struct nbd_handle *h)
{
  struct nbd_structured_reply r;
  struct command *cmd;
  uint32_t len;

  memcpy (&r, h->rhdr, sizeof r);
  if (!h->sr)
    return protocol_error (h, "structured reply, but structured replies were not negotiated");
  cmd = nbd_internal_lookup (h, be64toh (r.cookie));
  if (!cmd)
    return protocol_error (h, "structured reply chunk with an unknown cookie");
  h->rcmd = cmd;
  h->rflags = be16toh (r.flags);
  h->rtype = be16toh (r.type);
  len = be32toh (r.length);

  switch (h->rtype) {
  case NBD_REPLY_TYPE_NONE:
    if (len != 0)
      return protocol_error (h, "NBD_REPLY_TYPE_NONE chunk with a payload");
    if (!(h->rflags & NBD_REPLY_FLAG_DONE))
      return protocol_error (h, "NBD_REPLY_TYPE_NONE chunk without the DONE flag");
    complete (h);
    return 0;
  case NBD_REPLY_TYPE_OFFSET_DATA:
    if (cmd->type != NBD_CMD_READ)
      return protocol_error (h, "data chunk in the reply to a command that is not a read");
    if (len < 9)
      return protocol_error (h, "data chunk too short");
    if (len - 8 > cmd->count)
      return protocol_error (h, "data chunk larger than the read request");
    h->rlen_data = len - 8;
    return gather (h, 8, G_DATA_OFFSET);
  case NBD_REPLY_TYPE_OFFSET_HOLE:
    if (cmd->type != NBD_CMD_READ)
      return protocol_error (h, "hole chunk in the reply to a command that is not a read");
    if (len != 12)
      return protocol_error (h, "hole chunk with the wrong length");
    return gather (h, 12, G_HOLE);
  case NBD_REPLY_TYPE_BLOCK_STATUS:
    if (cmd->type != NBD_CMD_BLOCK_STATUS)
      return protocol_error (h, "block status chunk in the reply to another command");
    if (len < 12 || (len - 4) % 8 != 0 || (len - 4) / 8 > NBD_MAX_EXTENTS)
      return protocol_error (h, "block status chunk with an invalid length");
    return gather (h, len, G_BLOCK_STATUS);
  default:
    if (NBD_REPLY_TYPE_IS_ERR (h->rtype)) {
      uint32_t min = h->rtype == NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;
      if (len < min || len > MAX_ERROR_CHUNK)
        return protocol_error (h, "error chunk with an invalid length");
      return gather (h, len, G_ERROR);
    }
    return protocol_error (h, "reply chunk of an unknown type");
  }
}

/* ---- Gathered payloads ------------------------------------------------ */

static int
data_offset (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;
  uint64_t off;

  memcpy (&off, h->chunk_buf, 8);
  off = be64toh (off);
  if (!in_bounds (cmd, off, h->rlen_data))
    return protocol_error (h, "data chunk outside the read request");
  h->roffset = off;
  expect_data (h, (char *) cmd->data + (off - cmd->offset), h->rlen_data);
  return 0;
}

static int
hole (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;
  uint64_t off;
  uint32_t size, rel;

  memcpy (&off, h->chunk_buf, 8);
  memcpy (&size, h->chunk_buf + 8, 4);
  off = be64toh (off);
  size = be32toh (size);
  if (size == 0)
    return protocol_error (h, "hole chunk of size 0");
  if (!in_bounds (cmd, off, size))
    return protocol_error (h, "hole chunk outside the read request");
  rel = (uint32_t) (off - cmd->offset);        /* in_bounds: rel + size <= count */
  if (!record_range (cmd, rel, rel + size))
    command_error (cmd, EPROTO, "server sent overlapping read chunks");
  memset ((char *) cmd->data + rel, 0, size);
  call_chunk (h, cmd, (char *) cmd->data + rel, size, off, LIBNBD_READ_HOLE);
  chunk_done (h);
  return 0;
}

static const char *
meta_name (struct nbd_handle *h, uint32_t id)
{
  for (size_t i = 0; i < h->nr_meta; i++)
    if (h->meta[i].id == id)
      return h->meta[i].name;
  return NULL;
}

static int
block_status (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;
  uint32_t id, *entries = (uint32_t *) (void *) (h->chunk_buf + 4);
  size_t n = (h->rlen - 4) / 8;
  uint64_t sum = 0;
  const char *name;

  memcpy (&id, h->chunk_buf, 4);
  id = be32toh (id);
  name = meta_name (h, id);
  if (!name) {
    command_error (cmd, EPROTO, "server sent block status for a context it never negotiated");
    chunk_done (h);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    entries[2 * i] = be32toh (entries[2 * i]);
    entries[2 * i + 1] = be32toh (entries[2 * i + 1]);
    if (entries[2 * i] == 0) {
      command_error (cmd, EPROTO, "server sent a zero-length extent");
      chunk_done (h);
      return 0;
    }
    if (i + 1 < n)
      sum += entries[2 * i];
  }
  if (n > 1 && sum >= cmd->count) {
    command_error (cmd, EPROTO, "server sent extents beyond the end of the request");
    chunk_done (h);
    return 0;
  }
  if ((cmd->flags & NBD_CMD_FLAG_REQ_ONE) && (n > 1 || entries[0] > cmd->count)) {
    command_error (cmd, EPROTO, "server sent more than asked for with NBD_CMD_FLAG_REQ_ONE");
    chunk_done (h);
    return 0;
  }
  if (cmd->mcb.extent.callback) {
    int err = cmd->error;
    if (cmd->mcb.extent.callback (cmd->mcb.extent.user_data, name, cmd->offset, entries, n * 2,
                                  &err) == -1)
      command_error (cmd, err ? err : EPROTO, "the extent callback failed");
  }
  chunk_done (h);
  return 0;
}

static int
error_chunk (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;
  uint32_t error;
  uint16_t msglen;
  uint32_t fixed = h->rtype == NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;

  memcpy (&error, h->chunk_buf, 4);
  memcpy (&msglen, h->chunk_buf + 4, 2);
  error = be32toh (error);
  msglen = be16toh (msglen);
  if (msglen > h->rlen - fixed)
    return protocol_error (h, "error chunk message longer than the chunk");
  if (error == 0) {
    command_error (cmd, EPROTO, "server sent an error chunk with error 0");
    chunk_done (h);
    return 0;
  }
  debug (h, "server error %" PRIu32 " for cookie %" PRIu64 ": %.*s", error, cmd->cookie,
         (int) msglen, h->chunk_buf + 6);
  if (h->rtype == NBD_REPLY_TYPE_ERROR_OFFSET) {
    uint64_t off;

    memcpy (&off, h->chunk_buf + 6 + msglen, 8);
    off = be64toh (off);
    if (!in_bounds (cmd, off, 1))     /* the byte at off is inside */
      command_error (cmd, EPROTO, "server sent an error offset outside the request");
    else if (cmd->type == NBD_CMD_READ)
      call_chunk (h, cmd, (char *) cmd->data + (off - cmd->offset), 0, off, LIBNBD_READ_ERROR);
  }
  command_error (cmd, nbd_internal_nbd_error_to_errno (error), "the server reported an error");
  chunk_done (h);
  return 0;
}

static int
gathered (struct nbd_handle *h)
{
  switch (h->rtype_gather) {
  case G_DATA_OFFSET: return data_offset (h);
  case G_HOLE: return hole (h);
  case G_BLOCK_STATUS: return block_status (h);
  default: return error_chunk (h);
  }
}

/* A data payload has fully arrived. */
static void
data_done (struct nbd_handle *h)
{
  struct command *cmd = h->rcmd;

  /* Only now is the range filled: a reply cut short leaves it unfilled, to
   * be zeroed (pread_initialize) before the completion callback. */
  if (h->rtype == NBD_REPLY_TYPE_OFFSET_DATA) {
    /* data_offset checked that rel + rlen_data <= count. */
    uint32_t rel = (uint32_t) (h->roffset - cmd->offset);

    if (!record_range (cmd, rel, rel + h->rlen_data))
      command_error (cmd, EPROTO, "server sent overlapping data chunks");
    call_chunk (h, cmd, (char *) cmd->data + rel, h->rlen_data, h->roffset, LIBNBD_READ_DATA);
  }
  else {                        /* a simple reply: the whole read is one chunk */
    cmd->data_seen = cmd->count;
    cmd->fill_end = cmd->count;
    call_chunk (h, cmd, cmd->data, cmd->count, cmd->offset, LIBNBD_READ_DATA);
  }
  chunk_done (h);
}

/* ---- Parsing the receive buffer --------------------------------------- */

/* Consume what the receive buffer holds; returns -1 if the connection died. */
static int
parse_buffer (struct nbd_handle *h)
{
  while (h->rstart < h->rend && h->state == ST_READY) {
    size_t avail = h->rend - h->rstart;
    const char *p = h->rbuf + h->rstart;

    switch (h->rstate) {
    case R_HDR: {
      size_t need = 4, take;

      if (h->rhdr_len >= 4) {
        uint32_t magic;
        memcpy (&magic, h->rhdr, 4);
        magic = be32toh (magic);
        if (magic == NBD_SIMPLE_REPLY_MAGIC)
          need = sizeof (struct nbd_simple_reply);
        else if (magic == NBD_STRUCTURED_REPLY_MAGIC)
          need = sizeof (struct nbd_structured_reply);
        else
          return protocol_error (h, "reply with an unknown magic number");
      }
      take = need - h->rhdr_len < avail ? need - h->rhdr_len : avail;
      memcpy (h->rhdr + h->rhdr_len, p, take);
      h->rhdr_len += take;
      h->rstart += take;
      if (h->rhdr_len == need && need > 4) {
        uint32_t magic;
        memcpy (&magic, h->rhdr, 4);
        if ((be32toh (magic) == NBD_SIMPLE_REPLY_MAGIC ? simple_reply (h)
             : structured_reply (h)) == -1)
          return -1;
      }
      break;
    }
    case R_DATA: {
      size_t take = h->rremain < avail ? h->rremain : avail;

      memcpy (h->rdst, p, take);
      h->rdst += take;
      h->rremain -= take;
      h->rstart += take;
      if (h->rremain == 0)
        data_done (h);
      break;
    }
    case R_GATHER: {
      size_t take = h->rlen - h->chunk_len < avail ? h->rlen - h->chunk_len : avail;

      memcpy (h->chunk_buf + h->chunk_len, p, take);
      h->chunk_len += take;
      h->rstart += take;
      if (h->chunk_len == h->rlen && gathered (h) == -1)
        return -1;
      break;
    }
    }
  }
  if (h->rstart == h->rend)
    h->rstart = h->rend = 0;
  return h->state == ST_READY || h->state == ST_CLOSED ? 0 : -1;
}

static int
eof (struct nbd_handle *h)
{
  if (nbd_internal_writer_check (h) == -1)
    return -1;
  if (h->disc_sent && h->in_flight == 0 && h->rstate == R_HDR && h->rhdr_len == 0) {
    nbd_internal_set_closed (h);
    return 0;
  }
  if (h->in_flight == 0 && h->rstate == R_HDR && h->rhdr_len == 0 && !h->to_issue) {
    debug (h, "server closed the connection");
    nbd_internal_set_closed (h);
    return 0;
  }
  set_error (ENOTCONN, "server closed the connection %s with %d command(s) in flight",
             h->rstate != R_HDR || h->rhdr_len ? "in the middle of a reply" : "unexpectedly",
             h->in_flight);
  nbd_internal_set_dead (h, ENOTCONN);
  return -1;
}

/* Read and parse replies until the socket has nothing more for now. */
int
nbd_internal_recv_replies (struct nbd_handle *h)
{
  /* Bounded, so one busy connection cannot starve the caller's loop; but
   * never while TLS holds data that no POLLIN would announce. */
  for (int round = 0; (round < 64 || (h->tls_conn && nbd_internal_tls_pending (h))) &&
                      h->state == ST_READY; round++) {
    ssize_t n;
    size_t asked;

    if (parse_buffer (h) == -1)
      return -1;
    if (h->state != ST_READY)
      return 0;
    /* A large payload goes straight into its buffer, to its last byte
     * (a short recv may leave a small rest: it goes the same way). */
    if (h->rstate == R_DATA && (h->rremain >= DIRECT_RECV_MIN || h->rdirect)) {
      h->rdirect = true;
      asked = h->rremain;
      n = h->tls_conn ? nbd_internal_tls_recv (h, h->rdst, asked)
                      : recv (h->fd, h->rdst, asked, 0);
      if (n > 0) {
        h->rdst += n;
        h->rremain -= n;
        if (h->rremain == 0) {
          data_done (h);
          /* Replies to big reads tend to come in runs: receive the next
           * one's header alone, so that its payload goes straight to its
           * buffer too, not partly into rbuf and then copied (up to
           * RBUF_SIZE of it).  The same number of recv(2) calls for a
           * run of big reads; one more after the last one.  Not under TLS,
           * whose records are copied out of GnuTLS's buffer anyway. */
          h->rhdr_only = !h->tls_conn;
        }
      }
    }
    else {
      asked = RBUF_SIZE - h->rend;
      if (h->rhdr_only) {
        /* What is left of a read's data header: a structured header and
         * the chunk's offset, or a simple reply's header (it may come in
         * pieces).  Anything else (the reply is not a data chunk) ends it. */
        size_t want = h->sr ? sizeof (struct nbd_structured_reply) + 8
                            : sizeof (struct nbd_simple_reply);
        size_t have = h->rend - h->rstart;

        if (h->rstate == R_HDR)
          have += h->rhdr_len;
        else if (h->rstate == R_GATHER && h->rtype_gather == G_DATA_OFFSET)
          have += sizeof (struct nbd_structured_reply) + h->chunk_len;
        else
          have = want;
        if (have < want)
          asked = want - have;
        else
          h->rhdr_only = false;
      }
      n = h->tls_conn ? nbd_internal_tls_recv (h, h->rbuf + h->rend, asked)
                      : recv (h->fd, h->rbuf + h->rend, asked, 0);
      if (n > 0)
        h->rend += n;
    }
    if (n == 0)
      return eof (h);
    if (n == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      if (errno == EINTR)
        continue;
      if (errno == ECONNRESET && h->disc_sent && h->in_flight == 0) {
        nbd_internal_set_closed (h);
        return 0;
      }
      if (nbd_internal_writer_check (h) == -1)
        return -1;
      if (!h->tls_conn)           /* TLS set its own message */
        set_error (errno, "recv");
      nbd_internal_set_dead (h, nbd_get_errno ());
      return -1;
    }
    /* A short read means the socket is drained: parse and stop, saving
     * the recv(2) that would only say EAGAIN.  Under TLS a read returns
     * one record at most: drained means nothing left in user space. */
    if ((size_t) n < asked && !(h->tls_conn && nbd_internal_tls_pending (h)))
      return parse_buffer (h);
  }
  return parse_buffer (h);
}
