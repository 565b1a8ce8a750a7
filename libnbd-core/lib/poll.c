/* poll.c: nbd_poll, the core's own event loop step, which the sync calls use.
 *
 * Waits in poll(2) with the handle lock held, as libnbd does: releasing it
 * would let another thread close the fd being polled.  Before waiting it
 * sends whatever is queued, so a burst of requests costs no extra poll.
 */
#include <errno.h>
#include <poll.h>

#include "internal.h"

int
nbd_internal_poll (struct nbd_handle *h, int timeout)
{
  struct pollfd fds[2];
  unsigned dir;
  bool held;
  int r, nfds = 1;

  if (nbd_internal_writer_check (h) == -1)
    return -1;
  if (h->state == ST_READY && h->to_issue && nbd_internal_flush_out (h) == -1)
    return -1;
  dir = nbd_internal_direction (h);
  if (dir == 0 || h->fd < 0) {
    set_error (EINVAL, "nothing to poll for: the handle is %s", nbd_internal_state_name (h));
    return -1;
  }
  fds[0].fd = h->fd;
  fds[0].events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                  ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0);
  fds[0].revents = 0;
  /* A write pinned until a zero-copy writer gives its payload back: the
   * release is an event too. */
  if (h->nr_pinned && h->zc_wake >= 0) {
    fds[1].fd = h->zc_wake;
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    nfds = 2;
  }
  /* Data GnuTLS already holds is readable now, whatever the socket says. */
  held = h->tls_conn && (dir & LIBNBD_AIO_DIRECTION_READ) && nbd_internal_tls_pending (h);
  do
    r = poll (fds, nfds, held ? 0 : timeout);
  while (r == -1 && errno == EINTR && timeout < 0);
  if (r == -1) {
    if (errno != EINTR) {
      set_error (errno, "poll");
      return -1;
    }
    if (!held)
      return 0;
  }
  if (held)
    fds[0].revents |= POLLIN;
  else if (r == 0)
    return 0;
  if (nbd_internal_writer_check (h) == -1)
    return -1;
  if (nfds == 2 && fds[1].revents) {
    nbd_internal_wait_release (h, 0);
    nbd_internal_unpin (h);
  }
  /* Replies first: reading may be what lets the server take more. */
  if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
    if (nbd_internal_notify_read (h) == -1)
      return -1;
  }
  if ((fds[0].revents & POLLOUT) && (nbd_internal_direction (h) & LIBNBD_AIO_DIRECTION_WRITE)) {
    if (nbd_internal_notify_write (h) == -1)
      return -1;
  }
  return 1;
}

EXPORT int
nbd_poll (struct nbd_handle *h, int timeout)
{
  int r;

  ENTER (h, "nbd_poll", PS_ANY, -1);
  r = nbd_internal_poll (h, timeout);
  LEAVE (h);
  return r;
}
