/* writer.c: the concurrent writer (nbd_set_concurrent_writer), which hands
 * every outgoing byte to the user's non-blocking callback so that another
 * thread sends while this one receives.
 *
 * Owns the writer's error, the only state touched without the handle lock:
 * nbd_concurrent_writer_error is lock-free (an atomic compare-and-swap and a
 * shutdown(2)) so it is safe from the writer thread at any moment.
 */
#include <errno.h>
#include <sys/socket.h>

#include "internal.h"

void
nbd_internal_set_fd (struct nbd_handle *h, int fd)
{
  h->fd = fd;
  atomic_store (&h->wake_fd, fd);
}

void
nbd_internal_writer_send (struct nbd_handle *h, const void *buf, size_t len)
{
  h->writer (h->writer_data, buf, len);
}

int
nbd_internal_writer_check (struct nbd_handle *h)
{
  int err = atomic_load (&h->writer_err);

  if (err == 0 || h->state == ST_DEAD || h->state == ST_CLOSED)
    return 0;
  set_error (err, "the concurrent writer failed");
  nbd_internal_set_dead (h, err);
  return -1;
}

EXPORT int
nbd_set_concurrent_writer (struct nbd_handle *h, void *data, nbd_writer_cb writer)
{
  int r = -1;

  ENTER (h, "nbd_set_concurrent_writer", PS_CREATED | PS_CONNECTING | PS_CONNECTED, -1);
  if (h->writer)
    set_error (EINVAL, "a concurrent writer is already set on this handle");
  else if (!writer)
    set_error (EFAULT, "writer cannot be NULL");
  else {
    h->writer = writer;
    h->writer_data = data;
    r = 0;
    /* Whatever was waiting for the socket now goes to the writer, after
     * the bytes already sent directly: the order on the wire holds. */
    if (h->state == ST_HANDSHAKE &&
        (h->hs_out_pos < h->hs_out_len || nbd_internal_tls_out_waiting (h)))
      r = nbd_internal_hs_run (h);
    else if (h->state == ST_READY && (h->to_issue || nbd_internal_tls_out_waiting (h)))
      r = nbd_internal_flush_out (h);
  }
  LEAVE (h);
  return r;
}

EXPORT int
nbd_concurrent_writer_error (struct nbd_handle *h, int err)
{
  int expected = 0, fd;

  ENTER_NOLOCK ("nbd_concurrent_writer_error");
  if (err == 0) {
    set_error (EINVAL, "the error must be a non-zero errno value");
    return -1;
  }
  if (!atomic_compare_exchange_strong (&h->writer_err, &expected, err))
    return 0;                   /* the first error stands */
  /* Wake every thread polling the socket; the state machine then sees the
   * error at its next step.  The socket is never closed while a writer is
   * set, so fd cannot name another file here. */
  fd = atomic_load (&h->wake_fd);
  if (fd >= 0)
    shutdown (fd, SHUT_RDWR);
  return 0;
}
