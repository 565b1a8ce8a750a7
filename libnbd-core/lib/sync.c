/* sync.c: the synchronous calls — each is its aio twin plus the internal
 * poll loop until that command (or the handshake) has finished.
 *
 * Owns nothing of its own; a failed command reports its own errno and
 * message, which name the transport's failure if the connection died while
 * waiting (the errno is then ENOTCONN, as libnbd's commands get).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

int
nbd_internal_wait_connected (struct nbd_handle *h)
{
  while (h->state == ST_CONNECTING || h->state == ST_HANDSHAKE)
    if (nbd_internal_poll (h, -1) == -1)
      return -1;
  switch (h->state) {
  case ST_READY:
  case ST_NEGOTIATING:
    return 0;
  case ST_CLOSED:
    set_error (ENOTCONN, "server closed the connection during the handshake");
    return -1;
  default:
    if (!nbd_get_error ())
      set_error (ENOTCONN, "connection failed");
    return -1;
  }
}

static bool
is_done (struct nbd_handle *h, uint64_t cookie)
{
  for (struct command *c = h->done; c; c = c->next)
    if (c->cookie == cookie)
      return true;
  return false;
}

int
nbd_internal_wait_command (struct nbd_handle *h, int64_t cookie)
{
  if (cookie < 0)
    return -1;
  while (!is_done (h, cookie)) {
    if (nbd_internal_poll (h, -1) == -1) {
      /* A write whose buffer a zero-copy writer still holds completes once
       * the writer gives it back (it must, once its sends fail). */
      while (h->nr_pinned && !is_done (h, cookie)) {
        nbd_internal_wait_release (h, 1000);
        nbd_internal_unpin (h);
      }
      if (!is_done (h, cookie))
        return -1;
    }
  }
  /* A command the connection's death ended names the cause itself. */
  return nbd_internal_aio_command_completed (h, cookie) == 1 ? 0 : -1;
}

/* The sync form of aio.c's aio_command: the same checks, then the wait. */
static int
sync_command (struct nbd_handle *h, const char *name, uint16_t type, uint32_t flags,
              uint32_t allowed, uint64_t offset, uint64_t count, void *data,
              nbd_chunk_callback *chunk, nbd_extent_callback *extent)
{
  int r = -1;

  if (nbd_internal_enter_command (h, name, type, data)) {
    r = nbd_internal_wait_command (h, nbd_internal_checked_command (h, type, flags, allowed,
                                                                    offset, count, data, NULL,
                                                                    chunk, extent));
    LEAVE (h);
  }
  else if (type == NBD_CMD_READ && data && count)
    memset (data, 0, count);    /* pread_initialize is on unless the handle says */
  nbd_internal_free_closures (NULL, chunk, extent);
  return r;
}

EXPORT int
nbd_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset, uint32_t flags)
{
  return sync_command (h, "nbd_pread", NBD_CMD_READ, flags, 0, offset, count, buf, NULL, NULL);
}

EXPORT int
nbd_pread_structured (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                      nbd_chunk_callback chunk, uint32_t flags)
{
  return sync_command (h, "nbd_pread_structured", NBD_CMD_READ, flags, LIBNBD_CMD_FLAG_DF,
                       offset, count, buf, &chunk, NULL);
}

EXPORT int
nbd_pwrite (struct nbd_handle *h, const void *buf, size_t count, uint64_t offset, uint32_t flags)
{
  return sync_command (h, "nbd_pwrite", NBD_CMD_WRITE, flags, LIBNBD_CMD_FLAG_FUA, offset, count,
                       (void *) buf, NULL, NULL);
}

EXPORT int
nbd_flush (struct nbd_handle *h, uint32_t flags)
{
  return sync_command (h, "nbd_flush", NBD_CMD_FLUSH, flags, 0, 0, 0, NULL, NULL, NULL);
}

EXPORT int
nbd_trim (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
{
  return sync_command (h, "nbd_trim", NBD_CMD_TRIM, flags, LIBNBD_CMD_FLAG_FUA, offset, count,
                       NULL, NULL, NULL);
}

EXPORT int
nbd_cache (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
{
  return sync_command (h, "nbd_cache", NBD_CMD_CACHE, flags, 0, offset, count, NULL, NULL, NULL);
}

EXPORT int
nbd_zero (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
{
  return sync_command (h, "nbd_zero", NBD_CMD_WRITE_ZEROES, flags,
                       LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FAST_ZERO,
                       offset, count, NULL, NULL, NULL);
}

EXPORT int
nbd_block_status (struct nbd_handle *h, uint64_t count, uint64_t offset,
                  nbd_extent_callback extent, uint32_t flags)
{
  return sync_command (h, "nbd_block_status", NBD_CMD_BLOCK_STATUS, flags,
                       LIBNBD_CMD_FLAG_REQ_ONE, offset, count, NULL, NULL, &extent);
}

EXPORT int
nbd_shutdown (struct nbd_handle *h, uint32_t flags)
{
  int r = 0;

  ENTER (h, "nbd_shutdown", PS_CONNECTED, -1);
  if (flags & ~LIBNBD_SHUTDOWN_MASK) {
    set_error (EINVAL, "flags: invalid value for flag: 0x%" PRIx32, flags);
    LEAVE (h);
    return -1;
  }
  /* libnbd sends each request as soon as it is queued, so "not yet sent"
   * means the socket could not take it: send what is queued before
   * abandoning anything.  Then wait for the replies before NBD_CMD_DISC
   * (servers such as nbdkit fail requests still in progress when it
   * arrives with ESHUTDOWN). */
  if (h->state == ST_READY && h->to_issue && nbd_internal_flush_out (h) == -1)
    r = -1;
  if (r == 0 && (flags & LIBNBD_SHUTDOWN_ABANDON_PENDING))
    nbd_internal_abandon_unsent (h);
  while (r == 0 && !h->disc_queued && h->state == ST_READY && h->in_flight > 0)
    if (nbd_internal_poll (h, -1) == -1)
      r = -1;
  if (r == 0 && !h->disc_queued &&
      nbd_internal_command (h, NBD_CMD_DISC, 0, 0, 0, NULL, NULL, NULL, NULL) == -1)
    r = -1;
  while (r == 0 && h->state == ST_READY)
    if (nbd_internal_poll (h, -1) == -1)
      r = -1;
  if (r == 0 && h->state == ST_DEAD) {
    set_error (ENOTCONN, "the connection died during shutdown");
    r = -1;
  }
  LEAVE (h);
  return r;
}
