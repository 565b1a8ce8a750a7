/* gnbd-error.h: the GNBD_ERROR domain, for requests that the client or the
 * server refuses.  A broken or closed transport is G_IO_ERROR instead, and
 * cancellation G_IO_ERROR_CANCELLED; see gnbd-error.c.
 */
#pragma once

#if !defined(__GNBD_INSIDE__) && !defined(GNBD_COMPILATION)
#error "Only <gnbd/gnbd.h> can be included directly."
#endif

#include <glib.h>

#include <gnbd/gnbd-version-macros.h>

G_BEGIN_DECLS

/**
 * GNBD_ERROR:
 *
 * The error domain of requests that the client or the NBD server refused.
 * The connection stays usable after such an error.  Errors of the transport
 * (the connection broke, was closed or never opened) are in the
 * `G_IO_ERROR` domain instead.
 */
#define GNBD_ERROR (gnbd_error_quark ())

/**
 * GnbdError:
 * @GNBD_ERROR_FAILED: any other refusal; the message says what happened
 * @GNBD_ERROR_PERMISSION: the server refused the operation (NBD_EPERM),
 *   for instance a write to a read-only export
 * @GNBD_ERROR_IO: the server reported an I/O error (NBD_EIO)
 * @GNBD_ERROR_NO_MEMORY: the server, or the client, ran out of memory (NBD_ENOMEM)
 * @GNBD_ERROR_INVALID: an invalid request: out of range, misaligned, bad
 *   flags (NBD_EINVAL), refused by the server or by the client's checks
 * @GNBD_ERROR_NO_SPACE: the server is out of space (NBD_ENOSPC)
 * @GNBD_ERROR_OVERFLOW: the request is too large (NBD_EOVERFLOW)
 * @GNBD_ERROR_NOT_SUPPORTED: the server does not support the operation or
 *   flag (NBD_ENOTSUP)
 * @GNBD_ERROR_SHUTDOWN: the server is shutting down (NBD_ESHUTDOWN)
 * @GNBD_ERROR_PROTOCOL: the server broke the NBD protocol during the
 *   handshake
 * @GNBD_ERROR_NOT_FOUND: the server has no export of that name
 * @GNBD_ERROR_TLS_REQUIRED: the server requires TLS, and the client's
 *   #GnbdClient:tls setting does not allow it
 * @GNBD_ERROR_TLS_FAILED: TLS negotiation failed: the certificate was not
 *   trusted, the pre-shared key did not match, or the server offers no TLS
 *   while the client requires it
 *
 * Error codes of the %GNBD_ERROR domain.
 */
typedef enum {
  GNBD_ERROR_FAILED,
  GNBD_ERROR_PERMISSION,
  GNBD_ERROR_IO,
  GNBD_ERROR_NO_MEMORY,
  GNBD_ERROR_INVALID,
  GNBD_ERROR_NO_SPACE,
  GNBD_ERROR_OVERFLOW,
  GNBD_ERROR_NOT_SUPPORTED,
  GNBD_ERROR_SHUTDOWN,
  GNBD_ERROR_PROTOCOL,
  GNBD_ERROR_NOT_FOUND,
  GNBD_ERROR_TLS_REQUIRED,
  GNBD_ERROR_TLS_FAILED,
} GnbdError;

GNBD_AVAILABLE_IN_ALL
GQuark gnbd_error_quark (void);

G_END_DECLS
