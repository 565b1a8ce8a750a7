/* fuzz-socket.h: an in-memory socket for the fuzz session.  The client's
 * descriptor is a real socket (the core sets its flags and closes it), but
 * its traffic never reaches the kernel: the harness's link wraps the core's
 * recv, send, sendmsg, poll, shutdown and close (-Wl,--wrap=..., see
 * meson.build), and for the one descriptor fuzz_socket_open returned they
 * serve the client from two buffers in this process.  Every other
 * descriptor goes to the real call.  No system call per byte, no thread:
 * the harness puts the server's bytes in, drives the client, and takes out
 * what the client sent, all on one thread.
 *
 * As a socket would: a read finds what was put and not yet read, then
 * EAGAIN, or 0 once the server's end is shut for writing; a write takes
 * what fits in the window (EAGAIN when full), EPIPE after the client shut
 * its writes; poll reports POLLIN for data or end of file, POLLOUT while
 * the window has room, POLLHUP once both directions are shut.  After a
 * reset, as Linux's AF_UNIX after a peer closed with data unread: the data
 * already put, then one ECONNRESET (POLLERR), then end of file; writes fail
 * with EPIPE.  One socket at a time per process.
 */
#ifndef GNBD_TESTS_FUZZ_SOCKET_H
#define GNBD_TESTS_FUZZ_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The client's descriptor of a new in-memory socket, or -1.  @window: how
 * many bytes the client may send before the harness takes them. */
int fuzz_socket_open (size_t window);

/* The server's end, as send(2) and recv(2) on it would be: put bytes for
 * the client to read (how many fit in the receive buffer; -1 with EAGAIN
 * when none, EPIPE once the client closed or shut its reading), shut the
 * server's writes (the client reads end of file) or reset the connection
 * (the server closed without reading everything), take up to @len bytes of
 * what the client sent (how many). */
ssize_t fuzz_socket_put (const void *buf, size_t len);
void fuzz_socket_shut_server (void);
void fuzz_socket_reset_server (void);
size_t fuzz_socket_take (void *buf, size_t len);

/* How many bytes the client may send before the harness takes them. */
void fuzz_socket_set_window (size_t window);

/* Bytes the client has yet to read (FIONREAD). */
size_t fuzz_socket_pending (void);

/* Once the client is done: free the socket.  False if the client left its
 * descriptor open, or wrote to the real socket around the wrapped calls (a
 * call this file does not wrap yet). */
bool fuzz_socket_release (void);

#endif /* GNBD_TESTS_FUZZ_SOCKET_H */
