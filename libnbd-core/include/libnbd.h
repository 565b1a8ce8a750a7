/* libnbd-core: a Network Block Device client library.
 *
 * This header is source-compatible with libnbd 1.14: the same struct, calls,
 * callback structs and constants, with the semantics of libnbd's manual
 * (man 3 libnbd, man nbd_<call>).  Programs written for libnbd build against
 * it unchanged; `pkg-config --cflags libnbd-core` puts this directory first so
 * that `#include <libnbd.h>` finds it and never the system's libnbd.
 */
#ifndef LIBNBD_H
#define LIBNBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef LIBNBD_ATTRIBUTE_NONNULL
#if defined(__GNUC__) && __GNUC__ >= 12
#define LIBNBD_ATTRIBUTE_NONNULL(...) __attribute__((__nonnull__(__VA_ARGS__)))
#else
#define LIBNBD_ATTRIBUTE_NONNULL(...)
#endif
#endif

#if defined(__GNUC__) && __GNUC__ >= 12
#define LIBNBD_ATTRIBUTE_ALLOC_DEALLOC(fn) __attribute__((__malloc__, __malloc__(fn, 1)))
#else
#define LIBNBD_ATTRIBUTE_ALLOC_DEALLOC(fn)
#endif

/* Marks this header as libnbd-core's, for programs that care. */
#define LIBNBD_CORE 1

struct nbd_handle;

/* ---- Constants -------------------------------------------------------- */

#define LIBNBD_TLS_DISABLE 0
#define LIBNBD_TLS_ALLOW 1
#define LIBNBD_TLS_REQUIRE 2

#define LIBNBD_SIZE_MINIMUM 0
#define LIBNBD_SIZE_PREFERRED 1
#define LIBNBD_SIZE_MAXIMUM 2

#define LIBNBD_CMD_FLAG_FUA 0x01U
#define LIBNBD_CMD_FLAG_NO_HOLE 0x02U
#define LIBNBD_CMD_FLAG_DF 0x04U
#define LIBNBD_CMD_FLAG_REQ_ONE 0x08U
#define LIBNBD_CMD_FLAG_FAST_ZERO 0x10U
#define LIBNBD_CMD_FLAG_MASK 0x1fU

#define LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE 0x01U
#define LIBNBD_HANDSHAKE_FLAG_NO_ZEROES 0x02U
#define LIBNBD_HANDSHAKE_FLAG_MASK 0x03U

#define LIBNBD_STRICT_COMMANDS 0x01U
#define LIBNBD_STRICT_FLAGS 0x02U
#define LIBNBD_STRICT_BOUNDS 0x04U
#define LIBNBD_STRICT_ZERO_SIZE 0x08U
#define LIBNBD_STRICT_ALIGN 0x10U
#define LIBNBD_STRICT_MASK 0x1fU

#define LIBNBD_ALLOW_TRANSPORT_TCP 0x01U
#define LIBNBD_ALLOW_TRANSPORT_UNIX 0x02U
#define LIBNBD_ALLOW_TRANSPORT_VSOCK 0x04U
#define LIBNBD_ALLOW_TRANSPORT_MASK 0x07U

#define LIBNBD_SHUTDOWN_ABANDON_PENDING 0x10000U
#define LIBNBD_SHUTDOWN_MASK 0x10000U

#define LIBNBD_AIO_DIRECTION_READ 1
#define LIBNBD_AIO_DIRECTION_WRITE 2
#define LIBNBD_AIO_DIRECTION_BOTH 3

#define LIBNBD_READ_DATA 1
#define LIBNBD_READ_HOLE 2
#define LIBNBD_READ_ERROR 3

#define LIBNBD_NAMESPACE_BASE "base:"
#define LIBNBD_CONTEXT_BASE_ALLOCATION "base:allocation"
#define LIBNBD_STATE_HOLE 1
#define LIBNBD_STATE_ZERO 2

/* ---- Callbacks (passed by value; .free runs exactly once) ------------- */

typedef struct {
  int (*callback) (void *user_data, const void *subbuf, size_t count,
                   uint64_t offset, unsigned status, int *error);
  void *user_data;
  void (*free) (void *user_data);
} nbd_chunk_callback;

typedef struct {
  int (*callback) (void *user_data, int *error);
  void *user_data;
  void (*free) (void *user_data);
} nbd_completion_callback;

typedef struct {
  int (*callback) (void *user_data, const char *context, const char *msg);
  void *user_data;
  void (*free) (void *user_data);
} nbd_debug_callback;

typedef struct {
  int (*callback) (void *user_data, const char *metacontext, uint64_t offset,
                   uint32_t *entries, size_t nr_entries, int *error);
  void *user_data;
  void (*free) (void *user_data);
} nbd_extent_callback;

typedef struct {
  int (*callback) (void *user_data, const char *name, const char *description);
  void *user_data;
  void (*free) (void *user_data);
} nbd_list_callback;

typedef struct {
  int (*callback) (void *user_data, const char *name);
  void *user_data;
  void (*free) (void *user_data);
} nbd_context_callback;

/* libnbd 1.14 has a witness for each callback type too. */
#define LIBNBD_HAVE_NBD_CHUNK_CALLBACK 1
#define LIBNBD_HAVE_NBD_COMPLETION_CALLBACK 1
#define LIBNBD_HAVE_NBD_DEBUG_CALLBACK 1
#define LIBNBD_HAVE_NBD_EXTENT_CALLBACK 1
#define LIBNBD_HAVE_NBD_LIST_CALLBACK 1
#define LIBNBD_HAVE_NBD_CONTEXT_CALLBACK 1

#define NBD_NULL_COMPLETION ((nbd_completion_callback){ .callback = NULL })

/* ---- Handle, errors, debug -------------------------------------------- */

extern void nbd_close (struct nbd_handle *h);
extern struct nbd_handle *nbd_create (void) LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (nbd_close);
extern const char *nbd_get_error (void);
extern int nbd_get_errno (void);

extern int nbd_set_debug (struct nbd_handle *h, bool debug) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_debug (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_debug_callback (struct nbd_handle *h, nbd_debug_callback debug_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_clear_debug_callback (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_handle_name (struct nbd_handle *h, const char *handle_name)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern char *nbd_get_handle_name (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern uintptr_t nbd_set_private_data (struct nbd_handle *h, uintptr_t private_data)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern uintptr_t nbd_get_private_data (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Settings --------------------------------------------------------- */

extern int nbd_set_export_name (struct nbd_handle *h, const char *export_name)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern char *nbd_get_export_name (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_request_block_size (struct nbd_handle *h, bool request)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_request_block_size (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_full_info (struct nbd_handle *h, bool request) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_full_info (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern char *nbd_get_canonical_export_name (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern char *nbd_get_export_description (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_tls (struct nbd_handle *h, int tls) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_tls (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_tls_negotiated (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_tls_certificates (struct nbd_handle *h, const char *dir)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_set_tls_verify_peer (struct nbd_handle *h, bool verify)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_tls_verify_peer (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_tls_username (struct nbd_handle *h, const char *username)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern char *nbd_get_tls_username (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_tls_psk_file (struct nbd_handle *h, const char *filename)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_set_request_structured_replies (struct nbd_handle *h, bool request)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_request_structured_replies (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_structured_replies_negotiated (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_handshake_flags (struct nbd_handle *h, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern uint32_t nbd_get_handshake_flags (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_pread_initialize (struct nbd_handle *h, bool request)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_pread_initialize (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_strict_mode (struct nbd_handle *h, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern uint32_t nbd_get_strict_mode (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_opt_mode (struct nbd_handle *h, bool enable) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_opt_mode (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Option mode ------------------------------------------------------ */

extern int nbd_opt_go (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_opt_abort (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_opt_list (struct nbd_handle *h, nbd_list_callback list_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_opt_info (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_opt_list_meta_context (struct nbd_handle *h, nbd_context_callback context_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Meta contexts ---------------------------------------------------- */

extern int nbd_add_meta_context (struct nbd_handle *h, const char *name)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern ssize_t nbd_get_nr_meta_contexts (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern char *nbd_get_meta_context (struct nbd_handle *h, size_t i)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_clear_meta_contexts (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- URIs and connecting ---------------------------------------------- */

extern int nbd_set_uri_allow_transports (struct nbd_handle *h, uint32_t mask)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_uri_allow_tls (struct nbd_handle *h, int tls) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_uri_allow_local_file (struct nbd_handle *h, bool allow)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_connect_uri (struct nbd_handle *h, const char *uri) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_connect_unix (struct nbd_handle *h, const char *unixsocket)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_connect_vsock (struct nbd_handle *h, uint32_t cid, uint32_t port)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_connect_tcp (struct nbd_handle *h, const char *hostname, const char *port)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2, 3);
extern int nbd_connect_socket (struct nbd_handle *h, int sock) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_connect_command (struct nbd_handle *h, char **argv) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_connect_systemd_socket_activation (struct nbd_handle *h, char **argv)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);

/* ---- Export facts ----------------------------------------------------- */

extern int nbd_is_read_only (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_flush (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_fua (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_is_rotational (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_trim (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_zero (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_fast_zero (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_df (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_multi_conn (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_cache (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_can_meta_context (struct nbd_handle *h, const char *metacontext)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern const char *nbd_get_protocol (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_get_size (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_get_block_size (struct nbd_handle *h, int size_type)
  LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Synchronous I/O -------------------------------------------------- */

extern int nbd_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                      uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_pread_structured (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                                 nbd_chunk_callback chunk_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_pwrite (struct nbd_handle *h, const void *buf, size_t count, uint64_t offset,
                       uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_shutdown (struct nbd_handle *h, uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_flush (struct nbd_handle *h, uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_trim (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_cache (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_zero (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_block_status (struct nbd_handle *h, uint64_t count, uint64_t offset,
                             nbd_extent_callback extent_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_poll (struct nbd_handle *h, int timeout) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Asynchronous connecting and option mode -------------------------- */

extern int nbd_aio_connect (struct nbd_handle *h, const struct sockaddr *addr, socklen_t addrlen)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_connect_uri (struct nbd_handle *h, const char *uri)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_connect_unix (struct nbd_handle *h, const char *unixsocket)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_connect_vsock (struct nbd_handle *h, uint32_t cid, uint32_t port)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_connect_tcp (struct nbd_handle *h, const char *hostname, const char *port)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2, 3);
extern int nbd_aio_connect_socket (struct nbd_handle *h, int sock) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_connect_command (struct nbd_handle *h, char **argv)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_connect_systemd_socket_activation (struct nbd_handle *h, char **argv)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_opt_go (struct nbd_handle *h, nbd_completion_callback completion_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_opt_abort (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_opt_list (struct nbd_handle *h, nbd_list_callback list_callback,
                             nbd_completion_callback completion_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_opt_info (struct nbd_handle *h, nbd_completion_callback completion_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_opt_list_meta_context (struct nbd_handle *h,
                                          nbd_context_callback context_callback,
                                          nbd_completion_callback completion_callback)
  LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Asynchronous I/O ------------------------------------------------- */

extern int64_t nbd_aio_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                              nbd_completion_callback completion_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int64_t nbd_aio_pread_structured (struct nbd_handle *h, void *buf, size_t count,
                                         uint64_t offset, nbd_chunk_callback chunk_callback,
                                         nbd_completion_callback completion_callback,
                                         uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int64_t nbd_aio_pwrite (struct nbd_handle *h, const void *buf, size_t count,
                               uint64_t offset, nbd_completion_callback completion_callback,
                               uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1, 2);
extern int nbd_aio_disconnect (struct nbd_handle *h, uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_flush (struct nbd_handle *h, nbd_completion_callback completion_callback,
                              uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_trim (struct nbd_handle *h, uint64_t count, uint64_t offset,
                             nbd_completion_callback completion_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_cache (struct nbd_handle *h, uint64_t count, uint64_t offset,
                              nbd_completion_callback completion_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_zero (struct nbd_handle *h, uint64_t count, uint64_t offset,
                             nbd_completion_callback completion_callback, uint32_t flags)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_block_status (struct nbd_handle *h, uint64_t count, uint64_t offset,
                                     nbd_extent_callback extent_callback,
                                     nbd_completion_callback completion_callback,
                                     uint32_t flags) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Event loop integration and state --------------------------------- */

extern int nbd_aio_get_fd (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern unsigned nbd_aio_get_direction (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_notify_read (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_notify_write (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_created (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_connecting (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_negotiating (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_ready (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_processing (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_dead (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_is_closed (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_command_completed (struct nbd_handle *h, uint64_t cookie)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int64_t nbd_aio_peek_command_completed (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_aio_in_flight (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern const char *nbd_connection_state (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Library facts and subprocesses ----------------------------------- */

extern const char *nbd_get_package_name (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern const char *nbd_get_version (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_kill_subprocess (struct nbd_handle *h, int signum) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_supports_tls (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_supports_uri (struct nbd_handle *h) LIBNBD_ATTRIBUTE_NONNULL (1);
extern char *nbd_get_uri (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_ALLOC_DEALLOC (__builtin_free) LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- The concurrent writer (libnbd-core only) -------------------------
 *
 * NAME
 *   nbd_set_concurrent_writer - send through a writer of your own, on
 *   another thread, so that sending and receiving overlap on one socket
 *
 * SYNOPSIS
 *   typedef void (*nbd_writer_cb) (void *data, const void *buf, size_t len);
 *   int nbd_set_concurrent_writer (struct nbd_handle *h, void *data,
 *                                  nbd_writer_cb writer);
 *   int nbd_concurrent_writer_error (struct nbd_handle *h, int err);
 *
 * DESCRIPTION
 *   Once a writer is set, every byte the state machine would send(2) is
 *   handed to writer(data, buf, len) instead, in order.  The state machine
 *   treats the bytes as sent: it never waits for the socket to be writable,
 *   so nbd_aio_get_direction(3) never includes LIBNBD_AIO_DIRECTION_WRITE,
 *   and a poll loop only watches for POLLIN.  A thread of yours writes the
 *   queued bytes to nbd_aio_get_fd(3) while the state machine reads replies
 *   on the same socket, so sending and receiving run at the same time.
 *
 *   The writer callback runs with the handle lock held, from whichever
 *   thread is driving the handle.  It must not block and must not call any
 *   nbd_* function on this handle (but the lock-free
 *   nbd_concurrent_writer_error and nbd_concurrent_writer_send).  buf is
 *   valid only during the call: copy
 *   the bytes (into a ring, say) and return.  The callback cannot fail: if
 *   it cannot queue the bytes, or if your thread later fails to send them,
 *   report it with nbd_concurrent_writer_error.
 *
 *   Under TLS the bytes are TLS records (ciphertext) from the TLS handshake
 *   after NBD_OPT_STARTTLS on: encrypting stays on the thread driving the
 *   handle, only sending moves to yours.  After NBD_CMD_DISC, TLS's
 *   close_notify comes before the end-of-stream mark.
 *
 *   End of stream: writer(data, NULL, 0) means that no more bytes will
 *   come (NBD_CMD_DISC, or NBD_OPT_ABORT in option mode, was the last
 *   request).  Your thread must send every
 *   byte queued before it and then shut down the socket's write side
 *   (shutdown(fd, SHUT_WR)); the core does not shut it down itself while a
 *   writer is set, so that the shutdown can never overtake queued bytes.
 *
 *   nbd_concurrent_writer_error(h, err) records that the writer failed with
 *   errno err (any non-zero value; 0 is EINVAL).  Only the first error is
 *   kept; later calls return 0 and change nothing.  It takes no lock and is
 *   safe from any thread at any moment, also while another thread holds the
 *   handle lock or is inside the writer callback.  It wakes any thread
 *   polling the socket (the socket is shut down in both directions); the
 *   next step of the state machine then kills the connection: the handle
 *   becomes dead and every pending command completes with err.
 *
 *   With a writer set the core never closes the socket before nbd_close(3),
 *   so the fd your thread writes to stays valid: stop your thread before
 *   calling nbd_close.  Your thread may ask nbd_aio_get_fd(3) for it at
 *   any time: that call takes no lock, so it answers even while a sync
 *   call (nbd_connect_*, nbd_pread...) holds the handle waiting for replies
 *   to the very bytes your thread has yet to send.
 *
 *   The four steps:
 *     1. create the handle and your queue (a ring) and start your thread;
 *     2. nbd_set_concurrent_writer(h, &ring, enqueue_callback);
 *     3. connect and issue commands as usual; your thread writes what the
 *        callback queued to nbd_aio_get_fd(h), reporting failures with
 *        nbd_concurrent_writer_error(h, errno), and on the end-of-stream
 *        mark sends the rest and calls shutdown(fd, SHUT_WR);
 *     4. after nbd_shutdown(3) (or the handle died), stop your thread, then
 *        nbd_close(3).
 *
 *   So that a request costs no hand-off to your thread, let the loop that
 *   issues a burst of requests mark it: inside it the callback queues
 *   without waking the thread, and at its end the loop sends what was
 *   queued itself (one non-blocking sendmsg), leaving the thread only what
 *   the socket did not take.  docs/concurrent-writer.md ("Batches") and
 *   examples/concurrent-writer.c show it.
 *
 * HANDLE STATE
 *   nbd_set_concurrent_writer may be called when the handle is newly
 *   created, connecting, or connected; once only (a second call is EINVAL).
 *
 * RETURN VALUE
 *   0 on success, -1 on error (see nbd_get_error(3), nbd_get_errno(3)).
 */
typedef void (*nbd_writer_cb) (void *data, const void *buf, size_t len);
/* The zero-copy variant.  Same contract as above, except for write
 * payloads: the callback gets flags LIBNBD_WRITER_LENT and a buf that is
 * the caller's own buffer, lent without a copy.  It stays valid until your
 * thread gives it back with nbd_concurrent_writer_release(h, len), where
 * the lens of all releases add up, in the order the lent buffers came, to
 * the bytes lent so far (release each lent byte exactly once, when sent or
 * dropped).  Everything else (headers, handshake, TLS records) still comes
 * with flags 0, valid only during the call.  A write completes only once
 * its payload is given back, also when the server answers early or the
 * connection dies (then with the error): release promptly after each send,
 * without taking the handle lock in between, and after a failure drop and
 * release what you hold.  nbd_concurrent_writer_release is lock-free, safe from any
 * thread; it fails with EINVAL if more is released than was lent. */
#define LIBNBD_WRITER_LENT 1U
typedef void (*nbd_writer_zero_copy_cb) (void *data, const void *buf, size_t len,
                                         unsigned flags);
extern int nbd_set_concurrent_writer (struct nbd_handle *h, void *data, nbd_writer_cb writer)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_concurrent_writer_error (struct nbd_handle *h, int err)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_set_concurrent_writer_zero_copy (struct nbd_handle *h, void *data,
                                                nbd_writer_zero_copy_cb writer)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_concurrent_writer_release (struct nbd_handle *h, size_t len)
  LIBNBD_ATTRIBUTE_NONNULL (1);

/* The writer thread encrypts (libnbd-core only).
 *
 *   int nbd_set_concurrent_writer_encrypt (struct nbd_handle *h, bool encrypt);
 *   int nbd_get_concurrent_writer_encrypt (struct nbd_handle *h);
 *   ssize_t nbd_concurrent_writer_send (struct nbd_handle *h,
 *                                       const struct iovec *iov, int iovcnt);
 *
 * nbd_concurrent_writer_send is the writer thread's send(2): it sends the
 * bytes the writer callback queued, from the front of iov, to the handle's
 * socket, without blocking.  It returns how many it took (they are on the
 * socket), or -1 with errno EAGAIN (the socket is full: wait for POLLOUT on
 * nbd_aio_get_fd(h), then call it again with the same bytes in front; as
 * for sendmsg this is flow control, and nbd_get_error is left alone), or
 * -1 with another errno (report it with nbd_concurrent_writer_error).
 * iov NULL (iovcnt 0) passes the end-of-stream mark on: it ends TLS with
 * close_notify when the records are this thread's, then shuts down the
 * write side; 0, or -1 with EAGAIN (call it again).  It takes no lock;
 * one caller at a time (your thread, or the loop at the end of a batch
 * while it holds your queue's sender claim).
 *
 * nbd_set_concurrent_writer_encrypt(h, true), on a newly created handle:
 * once a TLS handshake ends with a writer set, the writer gets plaintext
 * (payloads lent too, with the zero-copy writer), and the records are made
 * in nbd_concurrent_writer_send, on your thread, while the thread driving
 * the handle decrypts the replies.  Your thread must then send every byte
 * through nbd_concurrent_writer_send, never with send(2) of its own: the
 * bytes are not encrypted yet.  Without TLS nothing changes (the call
 * sends the bytes as they are).  See docs/concurrent-writer.md. */
extern int nbd_set_concurrent_writer_encrypt (struct nbd_handle *h, bool encrypt)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern int nbd_get_concurrent_writer_encrypt (struct nbd_handle *h)
  LIBNBD_ATTRIBUTE_NONNULL (1);
extern ssize_t nbd_concurrent_writer_send (struct nbd_handle *h, const struct iovec *iov,
                                           int iovcnt)
  LIBNBD_ATTRIBUTE_NONNULL (1);

/* ---- Witness macros: one per call this header declares ---------------- */

#define LIBNBD_HAVE_NBD_CREATE 1
#define LIBNBD_HAVE_NBD_CLOSE 1
#define LIBNBD_HAVE_NBD_GET_ERROR 1
#define LIBNBD_HAVE_NBD_GET_ERRNO 1
#define LIBNBD_HAVE_NBD_SET_DEBUG 1
#define LIBNBD_HAVE_NBD_GET_DEBUG 1
#define LIBNBD_HAVE_NBD_SET_DEBUG_CALLBACK 1
#define LIBNBD_HAVE_NBD_CLEAR_DEBUG_CALLBACK 1
#define LIBNBD_HAVE_NBD_SET_HANDLE_NAME 1
#define LIBNBD_HAVE_NBD_GET_HANDLE_NAME 1
#define LIBNBD_HAVE_NBD_SET_PRIVATE_DATA 1
#define LIBNBD_HAVE_NBD_GET_PRIVATE_DATA 1
#define LIBNBD_HAVE_NBD_SET_EXPORT_NAME 1
#define LIBNBD_HAVE_NBD_GET_EXPORT_NAME 1
#define LIBNBD_HAVE_NBD_SET_REQUEST_BLOCK_SIZE 1
#define LIBNBD_HAVE_NBD_GET_REQUEST_BLOCK_SIZE 1
#define LIBNBD_HAVE_NBD_SET_FULL_INFO 1
#define LIBNBD_HAVE_NBD_GET_FULL_INFO 1
#define LIBNBD_HAVE_NBD_GET_CANONICAL_EXPORT_NAME 1
#define LIBNBD_HAVE_NBD_GET_EXPORT_DESCRIPTION 1
#define LIBNBD_HAVE_NBD_SET_TLS 1
#define LIBNBD_HAVE_NBD_GET_TLS 1
#define LIBNBD_HAVE_NBD_GET_TLS_NEGOTIATED 1
#define LIBNBD_HAVE_NBD_SET_TLS_CERTIFICATES 1
#define LIBNBD_HAVE_NBD_SET_TLS_VERIFY_PEER 1
#define LIBNBD_HAVE_NBD_GET_TLS_VERIFY_PEER 1
#define LIBNBD_HAVE_NBD_SET_TLS_USERNAME 1
#define LIBNBD_HAVE_NBD_GET_TLS_USERNAME 1
#define LIBNBD_HAVE_NBD_SET_TLS_PSK_FILE 1
#define LIBNBD_HAVE_NBD_SET_REQUEST_STRUCTURED_REPLIES 1
#define LIBNBD_HAVE_NBD_GET_REQUEST_STRUCTURED_REPLIES 1
#define LIBNBD_HAVE_NBD_GET_STRUCTURED_REPLIES_NEGOTIATED 1
#define LIBNBD_HAVE_NBD_SET_HANDSHAKE_FLAGS 1
#define LIBNBD_HAVE_NBD_GET_HANDSHAKE_FLAGS 1
#define LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE 1
#define LIBNBD_HAVE_NBD_GET_PREAD_INITIALIZE 1
#define LIBNBD_HAVE_NBD_SET_STRICT_MODE 1
#define LIBNBD_HAVE_NBD_GET_STRICT_MODE 1
#define LIBNBD_HAVE_NBD_SET_OPT_MODE 1
#define LIBNBD_HAVE_NBD_GET_OPT_MODE 1
#define LIBNBD_HAVE_NBD_OPT_GO 1
#define LIBNBD_HAVE_NBD_OPT_ABORT 1
#define LIBNBD_HAVE_NBD_OPT_LIST 1
#define LIBNBD_HAVE_NBD_OPT_INFO 1
#define LIBNBD_HAVE_NBD_OPT_LIST_META_CONTEXT 1
#define LIBNBD_HAVE_NBD_ADD_META_CONTEXT 1
#define LIBNBD_HAVE_NBD_GET_NR_META_CONTEXTS 1
#define LIBNBD_HAVE_NBD_GET_META_CONTEXT 1
#define LIBNBD_HAVE_NBD_CLEAR_META_CONTEXTS 1
#define LIBNBD_HAVE_NBD_SET_URI_ALLOW_TRANSPORTS 1
#define LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS 1
#define LIBNBD_HAVE_NBD_SET_URI_ALLOW_LOCAL_FILE 1
#define LIBNBD_HAVE_NBD_CONNECT_URI 1
#define LIBNBD_HAVE_NBD_CONNECT_UNIX 1
#define LIBNBD_HAVE_NBD_CONNECT_VSOCK 1
#define LIBNBD_HAVE_NBD_CONNECT_TCP 1
#define LIBNBD_HAVE_NBD_CONNECT_SOCKET 1
#define LIBNBD_HAVE_NBD_CONNECT_COMMAND 1
#define LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION 1
#define LIBNBD_HAVE_NBD_IS_READ_ONLY 1
#define LIBNBD_HAVE_NBD_CAN_FLUSH 1
#define LIBNBD_HAVE_NBD_CAN_FUA 1
#define LIBNBD_HAVE_NBD_IS_ROTATIONAL 1
#define LIBNBD_HAVE_NBD_CAN_TRIM 1
#define LIBNBD_HAVE_NBD_CAN_ZERO 1
#define LIBNBD_HAVE_NBD_CAN_FAST_ZERO 1
#define LIBNBD_HAVE_NBD_CAN_DF 1
#define LIBNBD_HAVE_NBD_CAN_MULTI_CONN 1
#define LIBNBD_HAVE_NBD_CAN_CACHE 1
#define LIBNBD_HAVE_NBD_CAN_META_CONTEXT 1
#define LIBNBD_HAVE_NBD_GET_PROTOCOL 1
#define LIBNBD_HAVE_NBD_GET_SIZE 1
#define LIBNBD_HAVE_NBD_GET_BLOCK_SIZE 1
#define LIBNBD_HAVE_NBD_PREAD 1
#define LIBNBD_HAVE_NBD_PREAD_STRUCTURED 1
#define LIBNBD_HAVE_NBD_PWRITE 1
#define LIBNBD_HAVE_NBD_SHUTDOWN 1
#define LIBNBD_HAVE_NBD_FLUSH 1
#define LIBNBD_HAVE_NBD_TRIM 1
#define LIBNBD_HAVE_NBD_CACHE 1
#define LIBNBD_HAVE_NBD_ZERO 1
#define LIBNBD_HAVE_NBD_BLOCK_STATUS 1
#define LIBNBD_HAVE_NBD_POLL 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_URI 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_UNIX 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_VSOCK 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_TCP 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_SOCKET 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_COMMAND 1
#define LIBNBD_HAVE_NBD_AIO_CONNECT_SYSTEMD_SOCKET_ACTIVATION 1
#define LIBNBD_HAVE_NBD_AIO_OPT_GO 1
#define LIBNBD_HAVE_NBD_AIO_OPT_ABORT 1
#define LIBNBD_HAVE_NBD_AIO_OPT_LIST 1
#define LIBNBD_HAVE_NBD_AIO_OPT_INFO 1
#define LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT 1
#define LIBNBD_HAVE_NBD_AIO_PREAD 1
#define LIBNBD_HAVE_NBD_AIO_PREAD_STRUCTURED 1
#define LIBNBD_HAVE_NBD_AIO_PWRITE 1
#define LIBNBD_HAVE_NBD_AIO_DISCONNECT 1
#define LIBNBD_HAVE_NBD_AIO_FLUSH 1
#define LIBNBD_HAVE_NBD_AIO_TRIM 1
#define LIBNBD_HAVE_NBD_AIO_CACHE 1
#define LIBNBD_HAVE_NBD_AIO_ZERO 1
#define LIBNBD_HAVE_NBD_AIO_BLOCK_STATUS 1
#define LIBNBD_HAVE_NBD_AIO_GET_FD 1
#define LIBNBD_HAVE_NBD_AIO_GET_DIRECTION 1
#define LIBNBD_HAVE_NBD_AIO_NOTIFY_READ 1
#define LIBNBD_HAVE_NBD_AIO_NOTIFY_WRITE 1
#define LIBNBD_HAVE_NBD_AIO_IS_CREATED 1
#define LIBNBD_HAVE_NBD_AIO_IS_CONNECTING 1
#define LIBNBD_HAVE_NBD_AIO_IS_NEGOTIATING 1
#define LIBNBD_HAVE_NBD_AIO_IS_READY 1
#define LIBNBD_HAVE_NBD_AIO_IS_PROCESSING 1
#define LIBNBD_HAVE_NBD_AIO_IS_DEAD 1
#define LIBNBD_HAVE_NBD_AIO_IS_CLOSED 1
#define LIBNBD_HAVE_NBD_AIO_COMMAND_COMPLETED 1
#define LIBNBD_HAVE_NBD_AIO_PEEK_COMMAND_COMPLETED 1
#define LIBNBD_HAVE_NBD_AIO_IN_FLIGHT 1
#define LIBNBD_HAVE_NBD_CONNECTION_STATE 1
#define LIBNBD_HAVE_NBD_GET_PACKAGE_NAME 1
#define LIBNBD_HAVE_NBD_GET_VERSION 1
#define LIBNBD_HAVE_NBD_KILL_SUBPROCESS 1
#define LIBNBD_HAVE_NBD_SUPPORTS_TLS 1
#define LIBNBD_HAVE_NBD_SUPPORTS_URI 1
#define LIBNBD_HAVE_NBD_GET_URI 1
#define LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER 1
#define LIBNBD_HAVE_NBD_CONCURRENT_WRITER_ERROR 1
#define LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY 1
#define LIBNBD_HAVE_NBD_CONCURRENT_WRITER_RELEASE 1
#define LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ENCRYPT 1
#define LIBNBD_HAVE_NBD_GET_CONCURRENT_WRITER_ENCRYPT 1
#define LIBNBD_HAVE_NBD_CONCURRENT_WRITER_SEND 1

#ifdef __cplusplus
}
#endif

#endif /* LIBNBD_H */
