/* writer.c: the concurrent writer (nbd_set_concurrent_writer), which hands
 * every outgoing byte to the user's non-blocking callback so that another
 * thread sends while this one receives.
 *
 * Owns the writer's error, the only state touched without the handle lock:
 * nbd_concurrent_writer_error is lock-free (an atomic compare-and-swap and a
 * shutdown(2)) so it is safe from the writer thread at any moment.
 *
 * And the writer thread's own send, nbd_concurrent_writer_send: the bytes
 * it is given are sent as they are up to h->wr_raw_end (cleartext before
 * STARTTLS, the TLS handshake's records), and encrypted after it, when the
 * handle hands the writer plaintext (nbd_set_concurrent_writer_encrypt).
 * Its state (h->wr_sent, and tls.c's output side once h->tls_plain is on)
 * belongs to whoever calls it, one caller at a time.
 */
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

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
  h->wr_handed += len;
  if (h->writer_zc)
    h->writer_zc (h->writer_data, buf, len, 0);
  else
    h->writer (h->writer_data, buf, len);
}

void
nbd_internal_writer_lend (struct nbd_handle *h, struct command *cmd, const void *buf, size_t len)
{
  h->wr_handed += len;
  if (!h->writer_zc) {
    h->writer (h->writer_data, buf, len);
    return;
  }
  cmd->borrow_end = atomic_load (&h->zc_lent) + len;
  atomic_store (&h->zc_lent, cmd->borrow_end);
  h->writer_zc (h->writer_data, buf, len, LIBNBD_WRITER_LENT);
}

void
nbd_internal_unpin (struct nbd_handle *h)
{
  uint64_t released = atomic_load (&h->zc_released);

  for (uint32_t i = 0; i < h->nr_slots && h->nr_pinned; i++) {
    struct command *cmd = h->slots[i];

    if (cmd->state == CMD_PINNED && (h->closing || cmd->borrow_end <= released)) {
      h->nr_pinned--;
      cmd->state = CMD_IN_FLIGHT;
      nbd_internal_finish_command (h, cmd);
    }
  }
  if (h->nr_pinned == 0)
    atomic_store (&h->zc_want_wake, false);
}

void
nbd_internal_wait_release (struct nbd_handle *h, int timeout_ms)
{
  struct pollfd p = { .fd = h->zc_wake, .events = POLLIN };
  uint64_t v;

  if (h->zc_wake < 0)
    return;
  if (poll (&p, 1, timeout_ms) == 1 && read (h->zc_wake, &v, sizeof v) == -1)
    return;
}

/* The marker in h->writer while the zero-copy variant is set: every test
 * for "is there a writer" stays one pointer test. */
static void
zero_copy_marker (void *data, const void *buf, size_t len)
{
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

static int
set_writer (struct nbd_handle *h, const char *name, void *data, nbd_writer_cb writer,
            nbd_writer_zero_copy_cb writer_zc)
{
  int r = -1;

  ENTER (h, name, PS_CREATED | PS_CONNECTING | PS_CONNECTED, -1);
  /* A NULL argument first, as ENTER_ARGS does for data pointers. */
  if (!writer && !writer_zc)
    set_error (EFAULT, "writer cannot be NULL");
  else if (h->writer)
    set_error (EINVAL, "a concurrent writer is already set on this handle");
  else if (writer_zc && (h->zc_wake = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1)
    set_error (errno, "eventfd");
  else {
    h->writer = writer ? writer : zero_copy_marker;
    h->writer_zc = writer_zc;
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
nbd_set_concurrent_writer (struct nbd_handle *h, void *data, nbd_writer_cb writer)
{
  return set_writer (h, "nbd_set_concurrent_writer", data, writer, NULL);
}

EXPORT int
nbd_set_concurrent_writer_zero_copy (struct nbd_handle *h, void *data,
                                     nbd_writer_zero_copy_cb writer)
{
  return set_writer (h, "nbd_set_concurrent_writer_zero_copy", data, NULL, writer);
}

EXPORT int
nbd_set_concurrent_writer_encrypt (struct nbd_handle *h, bool encrypt)
{
  ENTER (h, "nbd_set_concurrent_writer_encrypt", PS_CREATED, -1);
  h->writer_encrypt = encrypt;
  LEAVE (h);
  return 0;
}

EXPORT int
nbd_get_concurrent_writer_encrypt (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_get_concurrent_writer_encrypt", PS_ANY, -1);
  r = h->writer_encrypt;
  LEAVE (h);
  return r;
}

/* Send at most @limit bytes of iov as they are (UINT64_MAX: all of it). */
static ssize_t
send_raw (int fd, const struct iovec *iov, int iovcnt, uint64_t limit)
{
  struct iovec cut[64];
  struct msghdr msg = { .msg_iov = (struct iovec *) iov, .msg_iovlen = iovcnt };
  uint64_t total = 0;
  ssize_t n;

  /* The usual case (no TLS switch, a short iov) needs no look at it. */
  for (int i = 0; (limit != UINT64_MAX || iovcnt > 64) && i < iovcnt; i++) {
    total += iov[i].iov_len;
    if (total > limit || i == 64) {
      /* The handshake's last bytes end inside iov, or iov is long: a
       * copy that stops there. */
      int k = i < 64 ? i : 64;

      memcpy (cut, iov, k * sizeof *cut);
      if (k < 64 && total > limit) {
        cut[k] = iov[k];
        cut[k].iov_len -= total - limit;
        k++;
      }
      msg.msg_iov = cut;
      msg.msg_iovlen = k;
      break;
    }
  }
  do
    n = sendmsg (fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n == -1 && errno == EINTR);
  return n;
}

static ssize_t
send_failed (void)
{
  int err = errno;

  if (err == EAGAIN || err == EWOULDBLOCK)
    return nbd_internal_writer_full ();
  set_error (err, "send");
  errno = err;
  return -1;
}

EXPORT ssize_t
nbd_concurrent_writer_send (struct nbd_handle *h, const struct iovec *iov, int iovcnt)
{
  uint64_t raw_end;
  int fd;
  ssize_t n;

  ENTER_NOLOCK ("nbd_concurrent_writer_send");
  raw_end = atomic_load (&h->wr_raw_end);
  fd = atomic_load (&h->wake_fd);
  if (iovcnt < 0 || (iov == NULL && iovcnt > 0)) {
    set_error (iovcnt < 0 ? EINVAL : EFAULT, "iov cannot be NULL when iovcnt is not 0");
    return -1;
  }
  if (fd < 0) {
    set_error (ENOTCONN, "the handle has no socket");
    return -1;
  }
  if (iov == NULL) {
    /* The end of the stream: close_notify first if the records are ours. */
    if (raw_end != UINT64_MAX && nbd_internal_tls_writer_bye (h, fd) == -1)
      return -1;
    shutdown (fd, SHUT_WR);
    return 0;
  }
  if (h->wr_sent >= raw_end) {
    n = nbd_internal_tls_writer_send (h, fd, iov, iovcnt);
    if (n > 0)
      h->wr_sent += n;
    return n;
  }
  n = send_raw (fd, iov, iovcnt, raw_end == UINT64_MAX ? UINT64_MAX : raw_end - h->wr_sent);
  if (n == -1)
    return send_failed ();
  h->wr_sent += n;
  return n;
}

EXPORT int
nbd_concurrent_writer_release (struct nbd_handle *h, size_t len)
{
  uint64_t released, v = 1;

  ENTER_NOLOCK ("nbd_concurrent_writer_release");
  /* Compare and swap: a failed release never shows in the counter (not
   * even for a moment, to nbd_internal_unpin), and len cannot wrap it. */
  released = atomic_load (&h->zc_released);
  do {
    if (len > atomic_load (&h->zc_lent) - released) {
      set_error (EINVAL, "released more bytes than were lent");
      return -1;
    }
  } while (!atomic_compare_exchange_weak (&h->zc_released, &released, released + len));
  /* A system call only when the core waits for a release (a pinned
   * write), not on every send. */
  if (atomic_load (&h->zc_want_wake) && write (h->zc_wake, &v, sizeof v) == -1)
    return 0;                   /* the counter is full: a wake is pending */
  return 0;
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
