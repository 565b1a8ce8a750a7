/* handle-witness: the header has a LIBNBD_HAVE_NBD_* witness macro for each
 * of libnbd 1.14's 126 calls (and for its six callback struct types), and
 * every one of those calls links.
 *
 * The macro list is checked at compile time (#ifndef ... #error), so a
 * missing witness fails the build of this test.  At run time: each call's
 * address is non-NULL, the names are distinct and there are exactly 126 of
 * them, and each witness macro expands to 1.
 */
#include <string.h>

#include <libnbd.h>

#include "tap.h"

/* The six callback types libnbd 1.14 marks with a witness of their own. */
#ifndef LIBNBD_HAVE_NBD_CHUNK_CALLBACK
#error "LIBNBD_HAVE_NBD_CHUNK_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_COMPLETION_CALLBACK
#error "LIBNBD_HAVE_NBD_COMPLETION_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_DEBUG_CALLBACK
#error "LIBNBD_HAVE_NBD_DEBUG_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_EXTENT_CALLBACK
#error "LIBNBD_HAVE_NBD_EXTENT_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_LIST_CALLBACK
#error "LIBNBD_HAVE_NBD_LIST_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONTEXT_CALLBACK
#error "LIBNBD_HAVE_NBD_CONTEXT_CALLBACK is not defined"
#endif

/* The 126 calls of libnbd 1.14.2's header, in alphabetical order. */
#ifndef LIBNBD_HAVE_NBD_ADD_META_CONTEXT
#error "LIBNBD_HAVE_NBD_ADD_META_CONTEXT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_BLOCK_STATUS
#error "LIBNBD_HAVE_NBD_AIO_BLOCK_STATUS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CACHE
#error "LIBNBD_HAVE_NBD_AIO_CACHE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_COMMAND_COMPLETED
#error "LIBNBD_HAVE_NBD_AIO_COMMAND_COMPLETED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT
#error "LIBNBD_HAVE_NBD_AIO_CONNECT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_COMMAND
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_COMMAND is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_SOCKET
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_SOCKET is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_SYSTEMD_SOCKET_ACTIVATION
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_SYSTEMD_SOCKET_ACTIVATION is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_TCP
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_TCP is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_UNIX
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_UNIX is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_URI
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_URI is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_CONNECT_VSOCK
#error "LIBNBD_HAVE_NBD_AIO_CONNECT_VSOCK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_DISCONNECT
#error "LIBNBD_HAVE_NBD_AIO_DISCONNECT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_FLUSH
#error "LIBNBD_HAVE_NBD_AIO_FLUSH is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_GET_DIRECTION
#error "LIBNBD_HAVE_NBD_AIO_GET_DIRECTION is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_GET_FD
#error "LIBNBD_HAVE_NBD_AIO_GET_FD is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IN_FLIGHT
#error "LIBNBD_HAVE_NBD_AIO_IN_FLIGHT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_CLOSED
#error "LIBNBD_HAVE_NBD_AIO_IS_CLOSED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_CONNECTING
#error "LIBNBD_HAVE_NBD_AIO_IS_CONNECTING is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_CREATED
#error "LIBNBD_HAVE_NBD_AIO_IS_CREATED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_DEAD
#error "LIBNBD_HAVE_NBD_AIO_IS_DEAD is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_NEGOTIATING
#error "LIBNBD_HAVE_NBD_AIO_IS_NEGOTIATING is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_PROCESSING
#error "LIBNBD_HAVE_NBD_AIO_IS_PROCESSING is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_IS_READY
#error "LIBNBD_HAVE_NBD_AIO_IS_READY is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_NOTIFY_READ
#error "LIBNBD_HAVE_NBD_AIO_NOTIFY_READ is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_NOTIFY_WRITE
#error "LIBNBD_HAVE_NBD_AIO_NOTIFY_WRITE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_OPT_ABORT
#error "LIBNBD_HAVE_NBD_AIO_OPT_ABORT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_OPT_GO
#error "LIBNBD_HAVE_NBD_AIO_OPT_GO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_OPT_INFO
#error "LIBNBD_HAVE_NBD_AIO_OPT_INFO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_OPT_LIST
#error "LIBNBD_HAVE_NBD_AIO_OPT_LIST is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT
#error "LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_PEEK_COMMAND_COMPLETED
#error "LIBNBD_HAVE_NBD_AIO_PEEK_COMMAND_COMPLETED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_PREAD
#error "LIBNBD_HAVE_NBD_AIO_PREAD is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_PREAD_STRUCTURED
#error "LIBNBD_HAVE_NBD_AIO_PREAD_STRUCTURED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_PWRITE
#error "LIBNBD_HAVE_NBD_AIO_PWRITE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_TRIM
#error "LIBNBD_HAVE_NBD_AIO_TRIM is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_AIO_ZERO
#error "LIBNBD_HAVE_NBD_AIO_ZERO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_BLOCK_STATUS
#error "LIBNBD_HAVE_NBD_BLOCK_STATUS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CACHE
#error "LIBNBD_HAVE_NBD_CACHE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_CACHE
#error "LIBNBD_HAVE_NBD_CAN_CACHE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_DF
#error "LIBNBD_HAVE_NBD_CAN_DF is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_FAST_ZERO
#error "LIBNBD_HAVE_NBD_CAN_FAST_ZERO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_FLUSH
#error "LIBNBD_HAVE_NBD_CAN_FLUSH is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_FUA
#error "LIBNBD_HAVE_NBD_CAN_FUA is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_META_CONTEXT
#error "LIBNBD_HAVE_NBD_CAN_META_CONTEXT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_MULTI_CONN
#error "LIBNBD_HAVE_NBD_CAN_MULTI_CONN is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_TRIM
#error "LIBNBD_HAVE_NBD_CAN_TRIM is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CAN_ZERO
#error "LIBNBD_HAVE_NBD_CAN_ZERO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CLEAR_DEBUG_CALLBACK
#error "LIBNBD_HAVE_NBD_CLEAR_DEBUG_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CLEAR_META_CONTEXTS
#error "LIBNBD_HAVE_NBD_CLEAR_META_CONTEXTS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CLOSE
#error "LIBNBD_HAVE_NBD_CLOSE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_COMMAND
#error "LIBNBD_HAVE_NBD_CONNECT_COMMAND is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_SOCKET
#error "LIBNBD_HAVE_NBD_CONNECT_SOCKET is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION
#error "LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_TCP
#error "LIBNBD_HAVE_NBD_CONNECT_TCP is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_UNIX
#error "LIBNBD_HAVE_NBD_CONNECT_UNIX is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_URI
#error "LIBNBD_HAVE_NBD_CONNECT_URI is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECT_VSOCK
#error "LIBNBD_HAVE_NBD_CONNECT_VSOCK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CONNECTION_STATE
#error "LIBNBD_HAVE_NBD_CONNECTION_STATE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_CREATE
#error "LIBNBD_HAVE_NBD_CREATE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_FLUSH
#error "LIBNBD_HAVE_NBD_FLUSH is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_BLOCK_SIZE
#error "LIBNBD_HAVE_NBD_GET_BLOCK_SIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_CANONICAL_EXPORT_NAME
#error "LIBNBD_HAVE_NBD_GET_CANONICAL_EXPORT_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_DEBUG
#error "LIBNBD_HAVE_NBD_GET_DEBUG is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_ERRNO
#error "LIBNBD_HAVE_NBD_GET_ERRNO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_ERROR
#error "LIBNBD_HAVE_NBD_GET_ERROR is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_EXPORT_DESCRIPTION
#error "LIBNBD_HAVE_NBD_GET_EXPORT_DESCRIPTION is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_EXPORT_NAME
#error "LIBNBD_HAVE_NBD_GET_EXPORT_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_FULL_INFO
#error "LIBNBD_HAVE_NBD_GET_FULL_INFO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_HANDLE_NAME
#error "LIBNBD_HAVE_NBD_GET_HANDLE_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_HANDSHAKE_FLAGS
#error "LIBNBD_HAVE_NBD_GET_HANDSHAKE_FLAGS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_META_CONTEXT
#error "LIBNBD_HAVE_NBD_GET_META_CONTEXT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_NR_META_CONTEXTS
#error "LIBNBD_HAVE_NBD_GET_NR_META_CONTEXTS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_OPT_MODE
#error "LIBNBD_HAVE_NBD_GET_OPT_MODE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_PACKAGE_NAME
#error "LIBNBD_HAVE_NBD_GET_PACKAGE_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_PREAD_INITIALIZE
#error "LIBNBD_HAVE_NBD_GET_PREAD_INITIALIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_PRIVATE_DATA
#error "LIBNBD_HAVE_NBD_GET_PRIVATE_DATA is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_PROTOCOL
#error "LIBNBD_HAVE_NBD_GET_PROTOCOL is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_REQUEST_BLOCK_SIZE
#error "LIBNBD_HAVE_NBD_GET_REQUEST_BLOCK_SIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_REQUEST_STRUCTURED_REPLIES
#error "LIBNBD_HAVE_NBD_GET_REQUEST_STRUCTURED_REPLIES is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_SIZE
#error "LIBNBD_HAVE_NBD_GET_SIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_STRICT_MODE
#error "LIBNBD_HAVE_NBD_GET_STRICT_MODE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_STRUCTURED_REPLIES_NEGOTIATED
#error "LIBNBD_HAVE_NBD_GET_STRUCTURED_REPLIES_NEGOTIATED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_TLS
#error "LIBNBD_HAVE_NBD_GET_TLS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_TLS_NEGOTIATED
#error "LIBNBD_HAVE_NBD_GET_TLS_NEGOTIATED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_TLS_USERNAME
#error "LIBNBD_HAVE_NBD_GET_TLS_USERNAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_TLS_VERIFY_PEER
#error "LIBNBD_HAVE_NBD_GET_TLS_VERIFY_PEER is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_URI
#error "LIBNBD_HAVE_NBD_GET_URI is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_GET_VERSION
#error "LIBNBD_HAVE_NBD_GET_VERSION is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_IS_READ_ONLY
#error "LIBNBD_HAVE_NBD_IS_READ_ONLY is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_IS_ROTATIONAL
#error "LIBNBD_HAVE_NBD_IS_ROTATIONAL is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_KILL_SUBPROCESS
#error "LIBNBD_HAVE_NBD_KILL_SUBPROCESS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_OPT_ABORT
#error "LIBNBD_HAVE_NBD_OPT_ABORT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_OPT_GO
#error "LIBNBD_HAVE_NBD_OPT_GO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_OPT_INFO
#error "LIBNBD_HAVE_NBD_OPT_INFO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_OPT_LIST
#error "LIBNBD_HAVE_NBD_OPT_LIST is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_OPT_LIST_META_CONTEXT
#error "LIBNBD_HAVE_NBD_OPT_LIST_META_CONTEXT is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_POLL
#error "LIBNBD_HAVE_NBD_POLL is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_PREAD
#error "LIBNBD_HAVE_NBD_PREAD is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_PREAD_STRUCTURED
#error "LIBNBD_HAVE_NBD_PREAD_STRUCTURED is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_PWRITE
#error "LIBNBD_HAVE_NBD_PWRITE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_DEBUG
#error "LIBNBD_HAVE_NBD_SET_DEBUG is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_DEBUG_CALLBACK
#error "LIBNBD_HAVE_NBD_SET_DEBUG_CALLBACK is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_EXPORT_NAME
#error "LIBNBD_HAVE_NBD_SET_EXPORT_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_FULL_INFO
#error "LIBNBD_HAVE_NBD_SET_FULL_INFO is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_HANDLE_NAME
#error "LIBNBD_HAVE_NBD_SET_HANDLE_NAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_HANDSHAKE_FLAGS
#error "LIBNBD_HAVE_NBD_SET_HANDSHAKE_FLAGS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_OPT_MODE
#error "LIBNBD_HAVE_NBD_SET_OPT_MODE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE
#error "LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_PRIVATE_DATA
#error "LIBNBD_HAVE_NBD_SET_PRIVATE_DATA is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_REQUEST_BLOCK_SIZE
#error "LIBNBD_HAVE_NBD_SET_REQUEST_BLOCK_SIZE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_REQUEST_STRUCTURED_REPLIES
#error "LIBNBD_HAVE_NBD_SET_REQUEST_STRUCTURED_REPLIES is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_STRICT_MODE
#error "LIBNBD_HAVE_NBD_SET_STRICT_MODE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_TLS
#error "LIBNBD_HAVE_NBD_SET_TLS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_TLS_CERTIFICATES
#error "LIBNBD_HAVE_NBD_SET_TLS_CERTIFICATES is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_TLS_PSK_FILE
#error "LIBNBD_HAVE_NBD_SET_TLS_PSK_FILE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_TLS_USERNAME
#error "LIBNBD_HAVE_NBD_SET_TLS_USERNAME is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_TLS_VERIFY_PEER
#error "LIBNBD_HAVE_NBD_SET_TLS_VERIFY_PEER is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_URI_ALLOW_LOCAL_FILE
#error "LIBNBD_HAVE_NBD_SET_URI_ALLOW_LOCAL_FILE is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS
#error "LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SET_URI_ALLOW_TRANSPORTS
#error "LIBNBD_HAVE_NBD_SET_URI_ALLOW_TRANSPORTS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SHUTDOWN
#error "LIBNBD_HAVE_NBD_SHUTDOWN is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SUPPORTS_TLS
#error "LIBNBD_HAVE_NBD_SUPPORTS_TLS is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_SUPPORTS_URI
#error "LIBNBD_HAVE_NBD_SUPPORTS_URI is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_TRIM
#error "LIBNBD_HAVE_NBD_TRIM is not defined"
#endif
#ifndef LIBNBD_HAVE_NBD_ZERO
#error "LIBNBD_HAVE_NBD_ZERO is not defined"
#endif

struct fn {
  const char *name;
  void (*addr) (void);
};

#define F(f) { #f, (void (*) (void)) (f) }

static struct fn fns[] = {
  F (nbd_add_meta_context),
  F (nbd_aio_block_status),
  F (nbd_aio_cache),
  F (nbd_aio_command_completed),
  F (nbd_aio_connect),
  F (nbd_aio_connect_command),
  F (nbd_aio_connect_socket),
  F (nbd_aio_connect_systemd_socket_activation),
  F (nbd_aio_connect_tcp),
  F (nbd_aio_connect_unix),
  F (nbd_aio_connect_uri),
  F (nbd_aio_connect_vsock),
  F (nbd_aio_disconnect),
  F (nbd_aio_flush),
  F (nbd_aio_get_direction),
  F (nbd_aio_get_fd),
  F (nbd_aio_in_flight),
  F (nbd_aio_is_closed),
  F (nbd_aio_is_connecting),
  F (nbd_aio_is_created),
  F (nbd_aio_is_dead),
  F (nbd_aio_is_negotiating),
  F (nbd_aio_is_processing),
  F (nbd_aio_is_ready),
  F (nbd_aio_notify_read),
  F (nbd_aio_notify_write),
  F (nbd_aio_opt_abort),
  F (nbd_aio_opt_go),
  F (nbd_aio_opt_info),
  F (nbd_aio_opt_list),
  F (nbd_aio_opt_list_meta_context),
  F (nbd_aio_peek_command_completed),
  F (nbd_aio_pread),
  F (nbd_aio_pread_structured),
  F (nbd_aio_pwrite),
  F (nbd_aio_trim),
  F (nbd_aio_zero),
  F (nbd_block_status),
  F (nbd_cache),
  F (nbd_can_cache),
  F (nbd_can_df),
  F (nbd_can_fast_zero),
  F (nbd_can_flush),
  F (nbd_can_fua),
  F (nbd_can_meta_context),
  F (nbd_can_multi_conn),
  F (nbd_can_trim),
  F (nbd_can_zero),
  F (nbd_clear_debug_callback),
  F (nbd_clear_meta_contexts),
  F (nbd_close),
  F (nbd_connect_command),
  F (nbd_connect_socket),
  F (nbd_connect_systemd_socket_activation),
  F (nbd_connect_tcp),
  F (nbd_connect_unix),
  F (nbd_connect_uri),
  F (nbd_connect_vsock),
  F (nbd_connection_state),
  F (nbd_create),
  F (nbd_flush),
  F (nbd_get_block_size),
  F (nbd_get_canonical_export_name),
  F (nbd_get_debug),
  F (nbd_get_errno),
  F (nbd_get_error),
  F (nbd_get_export_description),
  F (nbd_get_export_name),
  F (nbd_get_full_info),
  F (nbd_get_handle_name),
  F (nbd_get_handshake_flags),
  F (nbd_get_meta_context),
  F (nbd_get_nr_meta_contexts),
  F (nbd_get_opt_mode),
  F (nbd_get_package_name),
  F (nbd_get_pread_initialize),
  F (nbd_get_private_data),
  F (nbd_get_protocol),
  F (nbd_get_request_block_size),
  F (nbd_get_request_structured_replies),
  F (nbd_get_size),
  F (nbd_get_strict_mode),
  F (nbd_get_structured_replies_negotiated),
  F (nbd_get_tls),
  F (nbd_get_tls_negotiated),
  F (nbd_get_tls_username),
  F (nbd_get_tls_verify_peer),
  F (nbd_get_uri),
  F (nbd_get_version),
  F (nbd_is_read_only),
  F (nbd_is_rotational),
  F (nbd_kill_subprocess),
  F (nbd_opt_abort),
  F (nbd_opt_go),
  F (nbd_opt_info),
  F (nbd_opt_list),
  F (nbd_opt_list_meta_context),
  F (nbd_poll),
  F (nbd_pread),
  F (nbd_pread_structured),
  F (nbd_pwrite),
  F (nbd_set_debug),
  F (nbd_set_debug_callback),
  F (nbd_set_export_name),
  F (nbd_set_full_info),
  F (nbd_set_handle_name),
  F (nbd_set_handshake_flags),
  F (nbd_set_opt_mode),
  F (nbd_set_pread_initialize),
  F (nbd_set_private_data),
  F (nbd_set_request_block_size),
  F (nbd_set_request_structured_replies),
  F (nbd_set_strict_mode),
  F (nbd_set_tls),
  F (nbd_set_tls_certificates),
  F (nbd_set_tls_psk_file),
  F (nbd_set_tls_username),
  F (nbd_set_tls_verify_peer),
  F (nbd_set_uri_allow_local_file),
  F (nbd_set_uri_allow_tls),
  F (nbd_set_uri_allow_transports),
  F (nbd_shutdown),
  F (nbd_supports_tls),
  F (nbd_supports_uri),
  F (nbd_trim),
  F (nbd_zero),
};

#define NR_FNS (sizeof fns / sizeof fns[0])
_Static_assert (NR_FNS == 126, "libnbd 1.14 has 126 calls");

int
main (void)
{
  size_t i, j, null_addrs = 0, dups = 0;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  is_int (NR_FNS, 126, "126 calls are listed");
  for (i = 0; i < NR_FNS; i++) {
    if (!fns[i].addr) {
      diag ("%s has no address", fns[i].name);
      null_addrs++;
    }
    for (j = i + 1; j < NR_FNS; j++)
      if (strcmp (fns[i].name, fns[j].name) == 0)
        dups++;
  }
  is_int (null_addrs, 0, "every call links (non-NULL address)");
  is_int (dups, 0, "no call is listed twice");

  /* A sample of witness values: each is defined as 1, as libnbd's are. */
  is_int (LIBNBD_HAVE_NBD_CREATE, 1, "LIBNBD_HAVE_NBD_CREATE is 1");
  is_int (LIBNBD_HAVE_NBD_GET_ERRNO, 1, "LIBNBD_HAVE_NBD_GET_ERRNO is 1");
  is_int (LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION, 1,
          "LIBNBD_HAVE_NBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION is 1");
  is_int (LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT, 1, "LIBNBD_HAVE_NBD_AIO_OPT_LIST_META_CONTEXT is 1");
  is_int (LIBNBD_HAVE_NBD_GET_URI, 1, "LIBNBD_HAVE_NBD_GET_URI is 1");
  is_int (LIBNBD_HAVE_NBD_COMPLETION_CALLBACK, 1, "LIBNBD_HAVE_NBD_COMPLETION_CALLBACK is 1");
  is_int (LIBNBD_HAVE_NBD_CONTEXT_CALLBACK, 1, "LIBNBD_HAVE_NBD_CONTEXT_CALLBACK is 1");

  /* And the constants a 1.14 program uses. */
  is_int (LIBNBD_TLS_REQUIRE, 2, "LIBNBD_TLS_REQUIRE is 2");
  is_int (LIBNBD_CMD_FLAG_MASK, 0x1f, "LIBNBD_CMD_FLAG_MASK is 0x1f");
  is_int (LIBNBD_STRICT_MASK, 0x1f, "LIBNBD_STRICT_MASK is 0x1f");
  is_int (LIBNBD_HANDSHAKE_FLAG_MASK, 0x3, "LIBNBD_HANDSHAKE_FLAG_MASK is 0x3");
  is_int (LIBNBD_ALLOW_TRANSPORT_MASK, 0x7, "LIBNBD_ALLOW_TRANSPORT_MASK is 0x7");
  is_int (LIBNBD_SHUTDOWN_ABANDON_PENDING, 0x10000, "LIBNBD_SHUTDOWN_ABANDON_PENDING is 0x10000");
  is_str (LIBNBD_CONTEXT_BASE_ALLOCATION, "base:allocation", "LIBNBD_CONTEXT_BASE_ALLOCATION");
  return done_testing ();
}
