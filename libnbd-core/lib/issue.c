/* issue.c: requests out — command records, the client-side (strict mode)
 * checks, the to-issue FIFO and sending many requests in one sendmsg(2).
 *
 * Command records live in a pool that only grows: the record at slots[i]
 * always has slot i, and the wire cookie is (user cookie's low 32 bits << 32
 * | slot), so a reply finds its command in O(1) with no hashing and no
 * allocation on the request path once the pool is warm.  Write payloads are
 * sent from the caller's buffer; nothing is copied.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* iovecs per sendmsg: two per command (header and payload). */
#define IOV_BATCH 128
/* TLS: plaintext encrypted ahead of the socket, without a writer. */
#define TLS_OUT_BATCH (64 * 1024)

/* ---- The pool --------------------------------------------------------- */

static struct command *
get_command (struct nbd_handle *h)
{
  struct command *cmd = h->free_cmds;

  if (cmd) {
    h->free_cmds = cmd->next;
    return cmd;
  }
  if (h->nr_slots == UINT32_MAX) {
    set_error (ENOMEM, "too many commands in flight");
    return NULL;
  }
  /* Grow the slot table by doubling; records are allocated one at a time
   * and never move. */
  if (h->nr_slots == h->cap_slots) {
    uint32_t cap = h->cap_slots ? h->cap_slots * 2 : 16;
    struct command **ns = realloc (h->slots, cap * sizeof *ns);
    if (!ns) {
      set_error (ENOMEM, "growing the command table");
      return NULL;
    }
    h->slots = ns;
    h->cap_slots = cap;
  }
  cmd = calloc (1, sizeof *cmd);
  if (!cmd) {
    set_error (ENOMEM, "allocating a command");
    return NULL;
  }
  cmd->slot = h->nr_slots;
  h->slots[h->nr_slots++] = cmd;
  return cmd;
}

void
nbd_internal_release_command (struct nbd_handle *h, struct command *cmd)
{
  cmd->state = CMD_FREE;
  cmd->nr_ranges = 0;
  cmd->next = h->free_cmds;
  h->free_cmds = cmd;
}

void
nbd_internal_free_commands (struct nbd_handle *h)
{
  for (uint32_t i = 0; i < h->nr_slots; i++) {
    struct command *cmd = h->slots[i];

    /* libnbd's order: the mid-command free, then the completion free. */
    FREE_CALLBACK (cmd->mcb.chunk);
    FREE_CALLBACK (cmd->cb);
    free (cmd->ranges);
    free (cmd);
  }
  free (h->slots);
  h->slots = NULL;
  h->nr_slots = h->cap_slots = 0;
  free (h->lost_why);           /* the text those commands' messages shared */
  h->lost_why = NULL;
  h->free_cmds = h->to_issue = h->to_issue_tail = h->done = h->done_tail = NULL;
  h->in_flight = 0;
}

struct command *
nbd_internal_lookup (struct nbd_handle *h, uint64_t wire)
{
  uint32_t slot = (uint32_t) wire;
  struct command *cmd;

  if (slot >= h->nr_slots)
    return NULL;
  cmd = h->slots[slot];
  if (cmd->state != CMD_IN_FLIGHT || (uint32_t) cmd->cookie != (uint32_t) (wire >> 32))
    return NULL;
  return cmd;
}

/* ---- Client-side checks (strict mode) --------------------------------- */

static const char *
command_name (uint16_t type)
{
  switch (type) {
  case NBD_CMD_READ: return "read";
  case NBD_CMD_WRITE: return "write";
  case NBD_CMD_DISC: return "disconnect";
  case NBD_CMD_FLUSH: return "flush";
  case NBD_CMD_TRIM: return "trim";
  case NBD_CMD_CACHE: return "cache";
  case NBD_CMD_WRITE_ZEROES: return "zero";
  case NBD_CMD_BLOCK_STATUS: return "block status";
  }
  return "unknown";
}

static int
check_command (struct nbd_handle *h, uint16_t type, uint16_t flags, uint64_t offset,
               uint64_t count)
{
  uint32_t strict = h->strict;

  if (h->disc_queued) {
    set_error (EINVAL, "cannot request more commands after NBD_CMD_DISC");
    return -1;
  }
  if (type == NBD_CMD_DISC)
    return 0;
  if (strict & LIBNBD_STRICT_COMMANDS) {
    uint16_t need = 0;

    switch (type) {
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
      /* As libnbd: a missing trim/zero flag (EINVAL) before read-only (EPERM). */
      need = type == NBD_CMD_TRIM ? NBD_FLAG_SEND_TRIM
             : type == NBD_CMD_WRITE_ZEROES ? NBD_FLAG_SEND_WRITE_ZEROES : 0;
      if (need && !(h->eflags & need)) {
        set_error (EINVAL, "server does not support %s operations", command_name (type));
        return -1;
      }
      if (h->eflags & NBD_FLAG_READ_ONLY) {
        set_error (EPERM, "server does not support write operations");
        return -1;
      }
      break;
    case NBD_CMD_FLUSH: need = NBD_FLAG_SEND_FLUSH; break;
    case NBD_CMD_CACHE: need = NBD_FLAG_SEND_CACHE; break;
    case NBD_CMD_BLOCK_STATUS:
      if (h->nr_meta == 0) {
        set_error (ENOTSUP, "did not negotiate any metadata contexts: either nbd_add_meta_context "
                   "was not called before connecting or the server does not support it");
        return -1;
      }
      break;
    }
    if (need && !(h->eflags & need)) {
      set_error (EINVAL, "server does not support %s operations", command_name (type));
      return -1;
    }
    if ((flags & NBD_CMD_FLAG_FUA) && !(h->eflags & NBD_FLAG_SEND_FUA)) {
      set_error (EINVAL, "server does not support the FUA flag");
      return -1;
    }
    if ((flags & NBD_CMD_FLAG_DF) && !(h->eflags & NBD_FLAG_SEND_DF)) {
      set_error (EINVAL, "server does not support the DF flag");
      return -1;
    }
    if ((flags & NBD_CMD_FLAG_FAST_ZERO) && !(h->eflags & NBD_FLAG_SEND_FAST_ZERO)) {
      set_error (EINVAL, "server does not support the fast zero flag");
      return -1;
    }
  }
  if (type == NBD_CMD_FLUSH)
    return 0;
  /* libnbd 1.14's order and errnos: zero size, bounds (ENOSPC for the
   * commands that write), alignment, then the request size limits.  Like
   * libnbd 1.14 it sends requests above the server's maximum block size. */
  if ((strict & LIBNBD_STRICT_ZERO_SIZE) && count == 0) {
    set_error (EINVAL, "count cannot be 0");
    return -1;
  }
  if (strict & LIBNBD_STRICT_BOUNDS) {
    uint64_t end;

    if (__builtin_add_overflow (offset, count, &end) || end > h->exportsize) {
      set_error (type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
                 type == NBD_CMD_WRITE_ZEROES ? ENOSPC : EINVAL, "request out of bounds");
      return -1;
    }
  }
  if ((strict & LIBNBD_STRICT_ALIGN) && h->block_min > 1 &&
      ((offset | count) & (h->block_min - 1))) {
    set_error (EINVAL, "request is unaligned: offset and count must be multiples of the "
               "server's minimum block size %" PRIu32, h->block_min);
    return -1;
  }
  if ((type == NBD_CMD_READ || type == NBD_CMD_WRITE) && count > NBD_MAX_REQUEST_SIZE) {
    set_error (ERANGE, "request too large: maximum request size is %d", NBD_MAX_REQUEST_SIZE);
    return -1;
  }
  if (count > UINT32_MAX) {
    set_error (ERANGE, "request too large: the count must fit in 32 bits");
    return -1;
  }
  return 0;
}

/* ---- Queueing --------------------------------------------------------- */

int64_t
nbd_internal_command (struct nbd_handle *h, uint16_t type, uint16_t flags, uint64_t offset,
                      uint64_t count, void *data, nbd_completion_callback *cb,
                      nbd_chunk_callback *chunk, nbd_extent_callback *extent)
{
  struct command *cmd;

  if (nbd_internal_writer_check (h) == -1 || check_command (h, type, flags, offset, count) == -1)
    return -1;
  cmd = get_command (h);
  if (!cmd)
    return -1;
  cmd->next = NULL;
  cmd->state = CMD_QUEUED;
  cmd->cookie = h->unique++;
  cmd->type = type;
  cmd->flags = flags;
  cmd->offset = offset;
  cmd->count = (uint32_t) count;
  cmd->data = data;
  cmd->error = 0;
  cmd->why = NULL;
  cmd->data_seen = 0;
  cmd->borrow_end = 0;
  cmd->fill_end = 0;
  cmd->nr_ranges = 0;
  cmd->initialize = type == NBD_CMD_READ && h->pread_initialize;
  cmd->cb.callback = NULL;
  cmd->cb.free = NULL;
  cmd->mcb.chunk.callback = NULL;
  cmd->mcb.chunk.free = NULL;
  if (cb)
    TAKE_CALLBACK (cmd->cb, cb);
  if (chunk)
    TAKE_CALLBACK (cmd->mcb.chunk, chunk);
  if (extent) {
    nbd_extent_callback e;
    TAKE_CALLBACK (e, extent);
    cmd->mcb.extent = e;
  }
  cmd->req.magic = htobe32 (NBD_REQUEST_MAGIC);
  cmd->req.flags = htobe16 (flags);
  cmd->req.type = htobe16 (type);
  cmd->req.cookie = htobe64 (((uint64_t) (uint32_t) cmd->cookie << 32) | cmd->slot);
  cmd->req.offset = htobe64 (offset);
  cmd->req.count = htobe32 ((uint32_t) count);

  if (h->to_issue_tail)
    h->to_issue_tail->next = cmd;
  else
    h->to_issue = cmd;
  h->to_issue_tail = cmd;
  if (type == NBD_CMD_DISC)
    h->disc_queued = true;
  else
    h->in_flight++;

  /* A lone request goes out at once (latency); requests queued behind it
   * wait for the next event, so that a burst leaves in one sendmsg. */
  /* Once queued the command is the caller's: if sending kills the
   * connection, it completes with the error like any other. */
  if (h->writer || (h->to_issue == cmd && h->in_flight <= 1))
    nbd_internal_flush_out (h);
  return (int64_t) cmd->cookie;
}

/* ---- Sending ---------------------------------------------------------- */

static size_t
wire_size (const struct command *cmd)
{
  return sizeof cmd->req + (cmd->type == NBD_CMD_WRITE ? cmd->count : 0);
}

/* The head of to-issue is fully on the wire: it now awaits its reply (or,
 * for NBD_CMD_DISC, the write side closes). */
static void
issued (struct nbd_handle *h)
{
  struct command *cmd = h->to_issue;

  h->to_issue = cmd->next;
  if (!h->to_issue)
    h->to_issue_tail = NULL;
  h->out_pos = 0;
  cmd->next = NULL;
  if (cmd->type == NBD_CMD_DISC) {
    nbd_internal_release_command (h, cmd);
    h->disc_sent = true;
    if (!h->shut_wr_done) {
      /* The writer shuts the write side itself, after what it queued;
       * under TLS, close_notify goes first (the DISC is in its record). */
      if (h->tls_conn)
        nbd_internal_tls_bye (h);
      else if (h->writer)
        nbd_internal_writer_send (h, NULL, 0);
      else
        shutdown (h->fd, SHUT_WR);
      h->shut_wr_done = true;
    }
  }
  else
    cmd->state = CMD_IN_FLIGHT;
}

/* Under a concurrent writer: hand every queued byte over, then all of it
 * counts as sent. */
static int
flush_to_writer (struct nbd_handle *h)
{
  while (h->to_issue) {
    struct command *cmd = h->to_issue;
    size_t hlen = sizeof cmd->req, skip = h->out_pos;

    if (skip < hlen) {
      nbd_internal_writer_send (h, (char *) &cmd->req + skip, hlen - skip);
      skip = 0;
    }
    else
      skip -= hlen;
    if (cmd->type == NBD_CMD_WRITE && cmd->count > skip)
      nbd_internal_writer_lend (h, cmd, (char *) cmd->data + skip, cmd->count - skip);
    issued (h);
  }
  return 0;
}

/* Under TLS: requests become records (many small ones per record, large
 * payloads straight from the caller's buffer) and the ciphertext leaves in
 * as few send(2)s as the socket takes, or goes to the writer.  Without a
 * writer at most TLS_OUT_BATCH bytes are encrypted ahead of the socket. */
static int
flush_tls (struct nbd_handle *h)
{
  for (;;) {
    size_t budget = h->writer ? SIZE_MAX : TLS_OUT_BATCH;
    int r = nbd_internal_tls_flush (h);

    if (r == -1) {
      nbd_internal_set_dead (h, nbd_get_errno ());
      return -1;
    }
    if (r == 0 || !h->to_issue)
      return 0;
    while (h->to_issue && budget > 0) {
      struct command *cmd = h->to_issue;
      size_t hlen = sizeof cmd->req, len;
      const char *p;

      if (h->out_pos < hlen) {
        p = (const char *) &cmd->req + h->out_pos;
        len = hlen - h->out_pos;
      }
      else {
        p = (const char *) cmd->data + (h->out_pos - hlen);
        len = wire_size (cmd) - h->out_pos;
      }
      if (len > budget)
        len = budget;
      if (nbd_internal_tls_send (h, p, len) == -1) {
        nbd_internal_set_dead (h, nbd_get_errno ());
        return -1;
      }
      budget -= len;
      h->out_pos += len;
      if (h->out_pos == wire_size (cmd))
        issued (h);
    }
  }
}

int
nbd_internal_flush_out (struct nbd_handle *h)
{
  if (__builtin_expect (nbd_internal_tls_sends (h), 0))
    return flush_tls (h);
  if (h->writer)
    return flush_to_writer (h);
  while (h->to_issue) {
    struct iovec iov[IOV_BATCH];
    struct msghdr msg = { .msg_iov = iov };
    struct command *cmd;
    size_t skip = h->out_pos, want = 0;
    int n = 0;
    ssize_t r;

    for (cmd = h->to_issue; cmd && n + 2 <= IOV_BATCH; cmd = cmd->next) {
      size_t hlen = sizeof cmd->req;

      if (skip < hlen) {
        iov[n].iov_base = (char *) &cmd->req + skip;
        iov[n++].iov_len = hlen - skip;
        skip = 0;
      }
      else
        skip -= hlen;
      if (cmd->type == NBD_CMD_WRITE) {
        iov[n].iov_base = (char *) cmd->data + skip;
        iov[n++].iov_len = cmd->count - skip;
        skip = 0;
      }
    }
    for (int i = 0; i < n; i++)
      want += iov[i].iov_len;
    msg.msg_iovlen = n;
    r = sendmsg (h->fd, &msg, MSG_NOSIGNAL | (cmd ? MSG_MORE : 0));
    if (r == -1) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      if (errno == EINTR)
        continue;
      set_error (errno, "send");
      nbd_internal_set_dead (h, errno);
      return -1;
    }
    for (size_t done = r; done > 0 && h->to_issue;) {
      size_t left = wire_size (h->to_issue) - h->out_pos;

      if (done >= left) {
        done -= left;
        issued (h);
      }
      else {
        h->out_pos += done;
        done = 0;
      }
    }
    if ((size_t) r < want)
      return 0;                 /* the socket is full: wait for POLLOUT */
  }
  return 0;
}

/* ---- Completion ------------------------------------------------------- */

void
nbd_internal_finish_command (struct nbd_handle *h, struct command *cmd)
{
  int err, r = 0;

  if (cmd->type == NBD_CMD_READ) {
    if (!cmd->error && cmd->data_seen != cmd->count) {
      cmd->error = EIO;
      cmd->why = "server sent a short read: the reply did not cover the whole request";
    }
    if (cmd->initialize)
      nbd_internal_zero_unfilled (cmd);
  }
  h->in_flight--;
  cmd->state = CMD_DONE;
  err = cmd->error;
  if (cmd->cb.callback) {
    r = cmd->cb.callback (cmd->cb.user_data, &err);
    if (r == -1 && err != 0) {
      cmd->error = err;
      if (!cmd->why)
        cmd->why = "command failed in its completion callback";
    }
  }
  /* As in libnbd, the .free functions run when the command is retired:
   * here if the completion retires it, else in nbd_aio_command_completed. */
  if (r == 1) {
    FREE_CALLBACK (cmd->mcb.chunk);
    FREE_CALLBACK (cmd->cb);
    nbd_internal_release_command (h, cmd);
    return;
  }
  cmd->next = NULL;
  if (h->done_tail)
    h->done_tail->next = cmd;
  else
    h->done = cmd;
  h->done_tail = cmd;
}

void
nbd_internal_abort_commands (struct nbd_handle *h, int errnum)
{
  struct command *cmd, *next;

  /* Queued first (never sent), then those awaiting replies, in slot order. */
  for (cmd = h->to_issue; cmd; cmd = next) {
    next = cmd->next;
    if (cmd->type == NBD_CMD_DISC) {
      nbd_internal_release_command (h, cmd);
      continue;
    }
    cmd->state = CMD_IN_FLIGHT;
  }
  h->to_issue = h->to_issue_tail = NULL;
  h->out_pos = 0;
  for (uint32_t i = 0; i < h->nr_slots; i++) {
    cmd = h->slots[i];
    if (cmd->state != CMD_IN_FLIGHT)
      continue;
    if (!cmd->error)
      cmd->error = errnum;
    if (!cmd->why)
      cmd->why = h->lost_why ? h->lost_why : "the connection was lost before the server replied";
    /* The caller may free the buffer once the command completes: not while
     * a zero-copy writer still holds it.  nbd_close waits for nobody (its
     * contract: the writer's thread is stopped first). */
    if (cmd->type == NBD_CMD_WRITE && !h->closing &&
        cmd->borrow_end > atomic_load (&h->zc_released)) {
      cmd->state = CMD_PINNED;
      h->nr_pinned++;
      atomic_store (&h->zc_want_wake, true);
      continue;
    }
    nbd_internal_finish_command (h, cmd);
  }
  nbd_internal_reset_reply (h);
}

/* nbd_shutdown (ABANDON_PENDING): commands not yet on the wire fail with
 * ENOTCONN; a request already half sent must be finished, so it stays. */
void
nbd_internal_abandon_unsent (struct nbd_handle *h)
{
  struct command *keep = h->out_pos ? h->to_issue : NULL, *cmd, *next;

  cmd = keep ? keep->next : h->to_issue;
  if (keep) {
    keep->next = NULL;
    h->to_issue = h->to_issue_tail = keep;
  }
  else
    h->to_issue = h->to_issue_tail = NULL;
  for (; cmd; cmd = next) {
    next = cmd->next;
    if (cmd->type == NBD_CMD_DISC) {
      nbd_internal_release_command (h, cmd);
      h->disc_queued = false;
      continue;
    }
    cmd->error = ENOTCONN;
    cmd->why = "abandoned by nbd_shutdown before it was sent";
    nbd_internal_finish_command (h, cmd);
  }
}
