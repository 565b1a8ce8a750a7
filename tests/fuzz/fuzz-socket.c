/* fuzz-socket.c: the in-memory socket fuzz-socket.h describes — its two
 * buffers and the wrappers the linker puts between the core and the
 * kernel.  Owns the buffers and the real socketpair behind the client's
 * descriptor; must never block, and never change what a call does for any
 * other descriptor.
 *
 * A flag or a message the wrappers do not know (a core that starts to use
 * MSG_PEEK, ancillary data, ...) aborts with the reason, rather than
 * behaving unlike a socket without a word.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-socket.h"

/* What the client may have unread: more than any phase of a recorded
 * session, like a socket's buffer. */
#define RECV_CAP (256 * 1024)
/* What the client may have sent before the harness takes it. */
#define SEND_CAP (256 * 1024)

/* The real calls, and the wrappers the core's references are bound to. */
ssize_t __real_recv (int fd, void *buf, size_t len, int flags);
ssize_t __real_send (int fd, const void *buf, size_t len, int flags);
ssize_t __real_sendmsg (int fd, const struct msghdr *msg, int flags);
int __real_poll (struct pollfd *fds, nfds_t nfds, int timeout);
int __real_shutdown (int fd, int how);
int __real_close (int fd);
ssize_t __wrap_recv (int fd, void *buf, size_t len, int flags);
ssize_t __wrap_send (int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_sendmsg (int fd, const struct msghdr *msg, int flags);
int __wrap_poll (struct pollfd *fds, nfds_t nfds, int timeout);
int __wrap_shutdown (int fd, int how);
int __wrap_close (int fd);

static struct {
  int fd;                       /* the client's descriptor; -1: no socket */
  int peer;                     /* the real socket's other end, never written */
  bool server_shut;             /* the client reads end of file after the data */
  bool server_gone;             /* closed: the client's writes fail */
  int client_err;               /* reported once, by a read that finds no data */
  bool client_shut_rd, client_shut_wr;
  size_t window;                /* of SEND_CAP */
  size_t in_head, in_tail;      /* server to client: in[in_head..in_tail) unread */
  size_t out_len;               /* client to server: out[0..out_len) not yet taken */
  unsigned char in[RECV_CAP];
  unsigned char out[SEND_CAP];
} sock = { .fd = -1, .peer = -1 };

static void __attribute__((noreturn))
unsupported (const char *what)
{
  fprintf (stderr, "fuzz-socket.c: the core did what the in-memory socket does not do: %s\n",
           what);
  abort ();
}

static bool
mine (int fd)
{
  return sock.fd >= 0 && fd == sock.fd;
}

int
fuzz_socket_open (size_t window)
{
  int sv[2];

  if (sock.fd >= 0 || sock.peer >= 0)
    unsupported ("two in-memory sockets at once");
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    return -1;
  sock.fd = sv[0];
  sock.peer = sv[1];
  sock.server_shut = sock.server_gone = sock.client_shut_rd = sock.client_shut_wr = false;
  sock.client_err = 0;
  sock.window = window < SEND_CAP ? window : SEND_CAP;
  sock.in_head = sock.in_tail = sock.out_len = 0;
  return sock.fd;
}

ssize_t
fuzz_socket_put (const void *buf, size_t len)
{
  size_t room;

  /* As a socket whose peer closed or shut its reading. */
  if (sock.fd < 0 || sock.client_shut_rd || sock.server_gone) {
    errno = EPIPE;
    return -1;
  }
  if (sock.in_head > 0) {
    memmove (sock.in, sock.in + sock.in_head, sock.in_tail - sock.in_head);
    sock.in_tail -= sock.in_head;
    sock.in_head = 0;
  }
  room = RECV_CAP - sock.in_tail;
  if (room == 0 && len > 0) {
    errno = EAGAIN;
    return -1;
  }
  if (len > room)
    len = room;
  memcpy (sock.in + sock.in_tail, buf, len);
  sock.in_tail += len;
  return len;
}

void
fuzz_socket_shut_server (void)
{
  sock.server_shut = true;
}

void
fuzz_socket_reset_server (void)
{
  sock.server_shut = sock.server_gone = true;
  sock.client_err = ECONNRESET;
  sock.out_len = 0;
}

size_t
fuzz_socket_take (void *buf, size_t len)
{
  if (len > sock.out_len)
    len = sock.out_len;
  memcpy (buf, sock.out, len);
  memmove (sock.out, sock.out + len, sock.out_len - len);
  sock.out_len -= len;
  return len;
}

void
fuzz_socket_set_window (size_t window)
{
  sock.window = window < SEND_CAP ? window : SEND_CAP;
  if (sock.window < sock.out_len)
    sock.window = sock.out_len;
}

size_t
fuzz_socket_pending (void)
{
  return sock.in_tail - sock.in_head;
}

bool
fuzz_socket_release (void)
{
  bool closed = sock.fd < 0, quiet;
  char c;

  if (!closed)
    __real_close (sock.fd);
  /* Closed and never written: end of file at once. */
  quiet = __real_recv (sock.peer, &c, 1, MSG_DONTWAIT) == 0;
  __real_close (sock.peer);
  sock.fd = sock.peer = -1;
  return closed && quiet;
}

/* ---- The wrappers ------------------------------------------------------- */

ssize_t
__wrap_recv (int fd, void *buf, size_t len, int flags)
{
  size_t n;

  if (!mine (fd))
    return __real_recv (fd, buf, len, flags);
  n = sock.in_tail - sock.in_head;
  if (flags & ~MSG_DONTWAIT)
    unsupported ("recv flags");
  /* The descriptor is non-blocking (the core made it so): an empty
   * buffer is EAGAIN, or end of file once either side shut it (after a
   * reset, once the error was reported). */
  if (n == 0) {
    if (sock.client_err) {
      errno = sock.client_err;
      sock.client_err = 0;
      return -1;
    }
    if (sock.server_shut || sock.client_shut_rd)
      return 0;
    errno = EAGAIN;
    return -1;
  }
  if (n > len)
    n = len;
  memcpy (buf, sock.in + sock.in_head, n);
  sock.in_head += n;
  if (sock.in_head == sock.in_tail)
    sock.in_head = sock.in_tail = 0;
  return n;
}

/* Take what the client sends, as far as the window goes.  Copied, not
 * counted: the copy is what lets ASan see a send from memory the client
 * must no longer touch. */
static ssize_t
take_from_client (const struct iovec *iov, size_t iovcnt, int flags)
{
  size_t want = 0, total = 0;

  if (flags & ~(MSG_NOSIGNAL | MSG_MORE | MSG_DONTWAIT))
    unsupported ("send flags");
  for (size_t i = 0; i < iovcnt; i++)
    want += iov[i].iov_len;
  if (want == 0)
    return 0;
  if (sock.client_shut_wr || sock.server_gone) {
    errno = EPIPE;
    return -1;
  }
  if (sock.out_len == sock.window) {
    errno = EAGAIN;
    return -1;
  }
  for (size_t i = 0; i < iovcnt && sock.out_len < sock.window; i++) {
    size_t room = sock.window - sock.out_len;
    size_t n = iov[i].iov_len < room ? iov[i].iov_len : room;

    memcpy (sock.out + sock.out_len, iov[i].iov_base, n);
    sock.out_len += n;
    total += n;
  }
  return total;
}

ssize_t
__wrap_send (int fd, const void *buf, size_t len, int flags)
{
  struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };

  if (!mine (fd))
    return __real_send (fd, buf, len, flags);
  return take_from_client (&iov, 1, flags);
}

ssize_t
__wrap_sendmsg (int fd, const struct msghdr *msg, int flags)
{
  if (!mine (fd))
    return __real_sendmsg (fd, msg, flags);
  if (msg->msg_name || msg->msg_controllen)
    unsupported ("sendmsg with an address or ancillary data");
  return take_from_client (msg->msg_iov, msg->msg_iovlen, flags);
}

static short
revents (short events)
{
  short r = 0;

  if ((events & POLLIN) &&
      (sock.in_tail > sock.in_head || sock.server_shut || sock.client_shut_rd))
    r |= POLLIN;
  if ((events & POLLOUT) && sock.out_len < sock.window)
    r |= POLLOUT;
  /* As Linux's AF_UNIX: hung up once neither direction carries data. */
  if ((sock.server_shut || sock.client_shut_rd) && (sock.client_shut_wr || sock.server_gone))
    r |= POLLHUP;
  if (sock.client_err)
    r |= POLLERR;
  return r;
}

int
__wrap_poll (struct pollfd *fds, nfds_t nfds, int timeout)
{
  struct pollfd *m = NULL;
  int ready, r;

  for (nfds_t i = 0; i < nfds; i++)
    if (mine (fds[i].fd)) {
      if (m)
        unsupported ("poll with the descriptor twice");
      m = &fds[i];
    }
  if (!m)
    return __real_poll (fds, nfds, timeout);
  m->revents = revents (m->events);
  ready = m->revents != 0;
  /* Nothing arrives while this thread waits, the harness being the
   * server: a timeout ends at once, with what it would end with. */
  if (!ready && timeout < 0 && nfds == 1)
    unsupported ("poll waiting for ever on the in-memory socket (a blocking call in an aio path?)");
  if (nfds == 1)
    return ready;
  /* The other descriptors (an eventfd, say) are real: poll them alone. */
  m->fd = -1;
  r = __real_poll (fds, nfds, ready ? 0 : timeout);
  m->fd = sock.fd;
  m->revents = revents (m->events);
  return r == -1 ? -1 : r + ready;
}

int
__wrap_shutdown (int fd, int how)
{
  if (!mine (fd))
    return __real_shutdown (fd, how);
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
    errno = EINVAL;
    return -1;
  }
  sock.client_shut_rd |= how != SHUT_WR;
  sock.client_shut_wr |= how != SHUT_RD;
  return 0;
}

int
__wrap_close (int fd)
{
  if (mine (fd))
    sock.fd = -1;
  return __real_close (fd);
}
