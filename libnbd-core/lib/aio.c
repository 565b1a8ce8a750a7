/* aio.c: the asynchronous API — nbd_aio_* commands, the two events that
 * drive the state machine (notify_read, notify_write), the lock-free state
 * queries, and the retirement of completed commands.
 *
 * Owns the moves to DEAD and CLOSED; never blocks (poll.c waits).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* ---- Death and closing ------------------------------------------------ */

/* The socket goes at once, except under a concurrent writer: its thread
 * may still be writing to the fd, which must not be closed (and its number
 * reused) before nbd_close.  Shutting it down stops all traffic. */
static void
drop_socket (struct nbd_handle *h)
{
  if (h->fd < 0)
    return;
  if (h->writer) {
    /* Closing is orderly: what the writer still holds (NBD_OPT_ABORT)
     * must go out, and its thread shuts the write side itself. */
    if (h->state != ST_CLOSED)
      shutdown (h->fd, SHUT_RDWR);
    return;
  }
  close (h->fd);
  nbd_internal_set_fd (h, -1);
}

/* What the commands stranded by a death fail with.  As libnbd, ENOTCONN
 * when the connection broke under them (ECONNRESET, EPIPE...: programs
 * test for ENOTCONN; the cause goes into the message); a lying server's
 * EPROTO and the concurrent writer's own errno (its documented contract)
 * stay. */
static int
stranded_errno (struct nbd_handle *h, int errnum)
{
  if (errnum == EPROTO || (h->writer && errnum == atomic_load (&h->writer_err)))
    return errnum;
  return ENOTCONN;
}

/* The stranded commands' message: the cause, without the "<call>: " of
 * whichever call met it, nor its strerror when that is also the commands'
 * (@err's, which their message ends with anyway). */
static void
keep_cause (struct nbd_handle *h, int err)
{
  const char *msg = nbd_get_error (), *ctx = nbd_internal_get_context ();
  const char *tail = strerror (err);
  size_t n = strlen (ctx), len, tlen = strlen (tail);

  if (!msg || h->lost_why)
    return;
  if (strncmp (msg, ctx, n) == 0 && strncmp (msg + n, ": ", 2) == 0)
    msg += n + 2;
  len = strlen (msg);
  if (nbd_get_errno () == err && len > tlen + 2 && strcmp (msg + len - tlen, tail) == 0 &&
      strncmp (msg + len - tlen - 2, ": ", 2) == 0)
    len -= tlen + 2;
  if (asprintf (&h->lost_why, "the connection died before the server replied (%.*s)", (int) len,
                msg) == -1)
    h->lost_why = NULL;         /* the commands fall back to the short text */
}

void
nbd_internal_set_dead (struct nbd_handle *h, int errnum)
{
  int cmd_err;

  if (h->state == ST_DEAD || h->state == ST_CLOSED)
    return;
  debug (h, "connection is dead: %s", nbd_get_error () ? nbd_get_error () : "");
  h->state = ST_DEAD;
  if (!errnum)
    errnum = ENOTCONN;
  cmd_err = stranded_errno (h, errnum);
  if (h->in_flight > 0)
    keep_cause (h, cmd_err);
  nbd_internal_abort_commands (h, cmd_err);
  if (h->opt.kind != OPTK_NONE)
    nbd_internal_opt_complete (h, errnum, "the connection died");
  drop_socket (h);
}

void
nbd_internal_set_closed (struct nbd_handle *h)
{
  if (h->state == ST_DEAD || h->state == ST_CLOSED)
    return;
  h->state = ST_CLOSED;
  nbd_internal_abort_commands (h, ENOTCONN);
  drop_socket (h);
}

/* ---- Events ----------------------------------------------------------- */

unsigned
nbd_internal_direction (const struct nbd_handle *h)
{
  switch (h->state) {
  /* With a concurrent writer nothing ever waits for POLLOUT: even a TCP
   * connect in progress is finished by the server's first bytes. */
  case ST_CONNECTING:
    return h->writer ? LIBNBD_AIO_DIRECTION_READ : LIBNBD_AIO_DIRECTION_WRITE;
  case ST_HANDSHAKE:
    return (h->hs_out_pos < h->hs_out_len || nbd_internal_tls_out_waiting (h)) && !h->writer
           ? LIBNBD_AIO_DIRECTION_WRITE : LIBNBD_AIO_DIRECTION_READ;
  case ST_READY:
    return LIBNBD_AIO_DIRECTION_READ |
           ((h->to_issue || nbd_internal_tls_out_waiting (h)) && !h->writer
            ? LIBNBD_AIO_DIRECTION_WRITE : 0);
  default:
    return 0;
  }
}

int
nbd_internal_notify_read (struct nbd_handle *h)
{
  if (nbd_internal_writer_check (h) == -1)
    return -1;
  switch (h->state) {
  case ST_CONNECTING:
    return h->writer ? nbd_internal_finish_connect (h) : 0;
  case ST_HANDSHAKE:
    return nbd_internal_hs_run (h);
  case ST_READY:
    if (nbd_internal_recv_replies (h) == -1)
      return -1;
    /* Replies free the server to take more: send what queued meanwhile
     * (under TLS also what GnuTLS itself answered while reading). */
    if (h->state == ST_READY && (h->to_issue || nbd_internal_tls_out_waiting (h)))
      return nbd_internal_flush_out (h);
    return 0;
  default:
    return 0;
  }
}

int
nbd_internal_notify_write (struct nbd_handle *h)
{
  if (nbd_internal_writer_check (h) == -1)
    return -1;
  switch (h->state) {
  case ST_CONNECTING:
    return nbd_internal_finish_connect (h);
  case ST_HANDSHAKE:
    return nbd_internal_hs_run (h);
  case ST_READY:
    return nbd_internal_flush_out (h);
  default:
    return 0;
  }
}

/* As libnbd: an event the state machine is not waiting for, one not in
 * nbd_aio_get_direction, is EINVAL in every state (notify_write in READY
 * with nothing to send, notify_read while the handshake has bytes to send,
 * either with no socket).  Event numbers as libnbd's: 0 read, 1 write. */
static bool
event_valid (struct nbd_handle *h, int event, unsigned direction)
{
  if (nbd_internal_direction (h) & direction)
    return true;
  set_error (EINVAL, "external event %d is invalid in state %s", event,
             nbd_internal_state_name (h));
  return false;
}

/* Unlike libnbd, which sends each request as it is queued, the core's
 * direction asks to write whenever requests wait to go out together, and
 * notify_read sends them after reading replies.  So a loop that got POLLIN
 * and POLLOUT from one poll and calls notify_read, then notify_write (as
 * libnbd programs do, though its manual advises notify_read alone), often
 * finds the write already done: that one notify_write succeeds. */
EXPORT int
nbd_aio_notify_read (struct nbd_handle *h)
{
  int r = -1;

  ENTER (h, "nbd_aio_notify_read", PS_ANY, -1);
  h->write_absorbed = false;
  if (event_valid (h, 0, LIBNBD_AIO_DIRECTION_READ)) {
    bool wanted_write = nbd_internal_direction (h) & LIBNBD_AIO_DIRECTION_WRITE;

    r = nbd_internal_notify_read (h);
    h->write_absorbed = wanted_write && h->state == ST_READY &&
                        !(nbd_internal_direction (h) & LIBNBD_AIO_DIRECTION_WRITE);
  }
  LEAVE (h);
  return r;
}

EXPORT int
nbd_aio_notify_write (struct nbd_handle *h)
{
  int r = -1;
  bool absorbed;

  ENTER (h, "nbd_aio_notify_write", PS_ANY, -1);
  absorbed = h->write_absorbed && h->state == ST_READY;
  h->write_absorbed = false;
  if (absorbed && !(nbd_internal_direction (h) & LIBNBD_AIO_DIRECTION_WRITE))
    r = 0;
  else if (event_valid (h, 1, LIBNBD_AIO_DIRECTION_WRITE))
    r = nbd_internal_notify_write (h);
  LEAVE (h);
  return r;
}

EXPORT int
nbd_aio_get_fd (struct nbd_handle *h)
{
  int r;

  /* Lock-free (wake_fd mirrors h->fd): a concurrent writer's thread asks
   * for the fd while a sync call holds the lock across poll(2), waiting
   * for replies to the very bytes that thread has yet to send. */
  ENTER_NOLOCK ("nbd_aio_get_fd");
  r = atomic_load (&h->wake_fd);
  if (r < 0)
    set_error (EINVAL, "connection is not established");
  return r;
}

EXPORT unsigned
nbd_aio_get_direction (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_aio_get_direction");
  return atomic_load (&h->public_dir);
}

#define IS_STATE(fn, test)                                       \
  EXPORT int fn (struct nbd_handle *h)                           \
  {                                                              \
    int s;                                                       \
    ENTER_NOLOCK (#fn);                                          \
    s = atomic_load (&h->public_state);                          \
    return (test);                                               \
  }

IS_STATE (nbd_aio_is_created, s == PUB_CREATED)
IS_STATE (nbd_aio_is_connecting, s == PUB_CONNECTING)
IS_STATE (nbd_aio_is_negotiating, s == PUB_NEGOTIATING)
IS_STATE (nbd_aio_is_ready, s == PUB_READY)
IS_STATE (nbd_aio_is_processing, s == PUB_PROCESSING)
IS_STATE (nbd_aio_is_dead, s == PUB_DEAD)
IS_STATE (nbd_aio_is_closed, s == PUB_CLOSED)

/* ---- Retiring --------------------------------------------------------- */

/* 1: done and succeeded; -1: done and failed (error set); 0: still going.
 * The command is retired when done. */
int
nbd_internal_aio_command_completed (struct nbd_handle *h, uint64_t cookie)
{
  struct command *prev = NULL, *cmd;
  int err;

  for (cmd = h->done; cmd; prev = cmd, cmd = cmd->next)
    if (cmd->cookie == cookie)
      break;
  /* As in libnbd, any cookie not among the completed commands (in flight,
   * already retired or never issued) reads as "not completed yet". */
  if (!cmd) {
    if (cookie < 1) {
      set_error (EINVAL, "invalid aio cookie %" PRIu64, cookie);
      return -1;
    }
    return 0;
  }
  if (prev)
    prev->next = cmd->next;
  else
    h->done = cmd->next;
  if (h->done_tail == cmd)
    h->done_tail = prev;
  err = cmd->error;
  if (err)
    set_error (err, "%s", cmd->why ? cmd->why : "command failed");
  FREE_CALLBACK (cmd->mcb.chunk);
  FREE_CALLBACK (cmd->cb);
  nbd_internal_release_command (h, cmd);
  return err ? -1 : 1;
}

EXPORT int
nbd_aio_command_completed (struct nbd_handle *h, uint64_t cookie)
{
  int r;

  ENTER (h, "nbd_aio_command_completed", PS_ANY, -1);
  r = nbd_internal_aio_command_completed (h, cookie);
  LEAVE (h);
  return r;
}

EXPORT int64_t
nbd_aio_peek_command_completed (struct nbd_handle *h)
{
  int64_t r = -1;

  ENTER (h, "nbd_aio_peek_command_completed", PS_ANY, -1);
  if (h->done)
    r = (int64_t) h->done->cookie;
  else if (h->in_flight > 0)
    r = 0;
  else
    set_error (EINVAL, "no commands are in flight");
  LEAVE (h);
  return r;
}

EXPORT int
nbd_aio_in_flight (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_aio_in_flight", PS_CONNECTED | PS_CLOSED | PS_DEAD, -1);
  r = h->in_flight;
  LEAVE (h);
  return r;
}

/* ---- Commands --------------------------------------------------------- */

/* Which flags each call takes (strict flags on); otherwise any 16 bits. */
static bool
flags_ok (struct nbd_handle *h, uint32_t flags, uint32_t allowed)
{
  uint32_t bad = (h->strict & LIBNBD_STRICT_FLAGS) ? flags & ~allowed : flags & ~UINT32_C (0xffff);

  if (bad) {
    set_error (EINVAL, "flags: invalid value for flag: 0x%" PRIx32, bad);
    return false;
  }
  return true;
}

/* As libnbd: a closure is missing only if both .callback and .free are NULL
 * ({.callback = NULL, .free = f} is legal: f runs at retirement), and this
 * is checked after the handle state, before the flags. */
bool
nbd_internal_closure_missing (const nbd_chunk_callback *chunk, const nbd_extent_callback *extent)
{
  if (chunk && !chunk->callback && !chunk->free) {
    set_error (EFAULT, "chunk cannot be NULL");
    return true;
  }
  if (extent && !extent->callback && !extent->free) {
    set_error (EFAULT, "extent cannot be NULL");
    return true;
  }
  return false;
}

int64_t
nbd_internal_checked_command (struct nbd_handle *h, uint16_t type, uint32_t flags,
                              uint32_t allowed, uint64_t offset, uint64_t count, void *data,
                              nbd_completion_callback *cb, nbd_chunk_callback *chunk,
                              nbd_extent_callback *extent)
{
  int64_t r = -1;

  if (!nbd_internal_closure_missing (chunk, extent) && flags_ok (h, flags, allowed))
    r = nbd_internal_command (h, type, (uint16_t) flags, offset, count, data, cb, chunk, extent);
  /* As libnbd (pread_initialize): a read refused before it was queued is
   * never left unzeroed; once queued, the command zeroes what the server
   * does not fill. */
  if (r == -1 && type == NBD_CMD_READ && h->pread_initialize && data && count)
    memset (data, 0, count);
  return r;
}

void
nbd_internal_free_closures (nbd_completion_callback *cb, nbd_chunk_callback *chunk,
                            nbd_extent_callback *extent)
{
  if (extent)
    FREE_CALLBACK (*extent);
  if (chunk)
    FREE_CALLBACK (*chunk);
  if (cb)
    FREE_CALLBACK (*cb);
}

/* ENTER for every command call, aio and sync: connected, and a read or a
 * write needs its buffer.  (libnbd 1.14 zeroes a read's buffer before this
 * check when pread_initialize is on, and crashes on NULL; here it is EFAULT
 * either way.) */
bool
nbd_internal_enter_command (struct nbd_handle *h, const char *name, uint16_t type,
                            const void *buf)
{
  const struct nonnull_arg arg = NONNULL (buf);

  return nbd_internal_enter_args (h, name, PS_CONNECTED, &arg,
                                  type == NBD_CMD_READ || type == NBD_CMD_WRITE);
}

/* The shape every aio command shares: enter, check and queue, leave, and
 * free whichever callbacks the core did not take. */
static int64_t
aio_command (struct nbd_handle *h, const char *name, uint16_t type, uint32_t flags,
             uint32_t allowed, uint64_t offset, uint64_t count, void *data,
             nbd_completion_callback *cb, nbd_chunk_callback *chunk, nbd_extent_callback *extent)
{
  int64_t r = -1;

  if (nbd_internal_enter_command (h, name, type, data)) {
    r = nbd_internal_checked_command (h, type, flags, allowed, offset, count, data, cb, chunk,
                                      extent);
    LEAVE (h);
  }
  else if (type == NBD_CMD_READ && data && count)
    memset (data, 0, count);    /* pread_initialize is on unless the handle says */
  nbd_internal_free_closures (cb, chunk, extent);
  return r;
}

EXPORT int64_t
nbd_aio_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
               nbd_completion_callback cb, uint32_t flags)
{
  return aio_command (h, "nbd_aio_pread", NBD_CMD_READ, flags, 0, offset, count, buf, &cb, NULL,
                      NULL);
}

EXPORT int64_t
nbd_aio_pread_structured (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                          nbd_chunk_callback chunk, nbd_completion_callback cb, uint32_t flags)
{
  return aio_command (h, "nbd_aio_pread_structured", NBD_CMD_READ, flags, LIBNBD_CMD_FLAG_DF,
                      offset, count, buf, &cb, &chunk, NULL);
}

EXPORT int64_t
nbd_aio_pwrite (struct nbd_handle *h, const void *buf, size_t count, uint64_t offset,
                nbd_completion_callback cb, uint32_t flags)
{
  return aio_command (h, "nbd_aio_pwrite", NBD_CMD_WRITE, flags, LIBNBD_CMD_FLAG_FUA, offset,
                      count, (void *) buf, &cb, NULL, NULL);
}

EXPORT int64_t
nbd_aio_flush (struct nbd_handle *h, nbd_completion_callback cb, uint32_t flags)
{
  return aio_command (h, "nbd_aio_flush", NBD_CMD_FLUSH, flags, 0, 0, 0, NULL, &cb, NULL, NULL);
}

EXPORT int64_t
nbd_aio_trim (struct nbd_handle *h, uint64_t count, uint64_t offset, nbd_completion_callback cb,
              uint32_t flags)
{
  return aio_command (h, "nbd_aio_trim", NBD_CMD_TRIM, flags, LIBNBD_CMD_FLAG_FUA, offset, count,
                      NULL, &cb, NULL, NULL);
}

EXPORT int64_t
nbd_aio_cache (struct nbd_handle *h, uint64_t count, uint64_t offset, nbd_completion_callback cb,
               uint32_t flags)
{
  return aio_command (h, "nbd_aio_cache", NBD_CMD_CACHE, flags, 0, offset, count, NULL, &cb, NULL,
                      NULL);
}

EXPORT int64_t
nbd_aio_zero (struct nbd_handle *h, uint64_t count, uint64_t offset, nbd_completion_callback cb,
              uint32_t flags)
{
  return aio_command (h, "nbd_aio_zero", NBD_CMD_WRITE_ZEROES, flags,
                      LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FAST_ZERO,
                      offset, count, NULL, &cb, NULL, NULL);
}

EXPORT int64_t
nbd_aio_block_status (struct nbd_handle *h, uint64_t count, uint64_t offset,
                      nbd_extent_callback extent, nbd_completion_callback cb, uint32_t flags)
{
  return aio_command (h, "nbd_aio_block_status", NBD_CMD_BLOCK_STATUS, flags,
                      LIBNBD_CMD_FLAG_REQ_ONE, offset, count, NULL, &cb, NULL, &extent);
}

EXPORT int
nbd_aio_disconnect (struct nbd_handle *h, uint32_t flags)
{
  int64_t r = -1;

  ENTER (h, "nbd_aio_disconnect", PS_CONNECTED, -1);
  if (flags != 0)
    set_error (EINVAL, "flags: invalid value for flag: 0x%" PRIx32, flags);
  else
    r = nbd_internal_command (h, NBD_CMD_DISC, 0, 0, 0, NULL, NULL, NULL, NULL);
  if (r >= 0 && nbd_internal_flush_out (h) == -1)
    r = -1;
  LEAVE (h);
  return r < 0 ? -1 : 0;
}
