/* gnbd-error.c: the GNBD_ERROR domain, and the one place where an errno
 * from libnbd-core becomes a GError.
 *
 * The rule: an errno from a request that the client's checks or the server
 * refused becomes GNBD_ERROR (the connection is still usable); an errno from
 * a connection that broke, was closed or never opened becomes G_IO_ERROR.
 * The caller says which it is (it knows whether the handle is dead); this
 * file only maps codes and never decides that.
 */
#include <errno.h>
#include <string.h>

#include "gnbd-error-private.h"

/**
 * gnbd_error_quark:
 *
 * The quark of the %GNBD_ERROR domain.
 *
 * Returns: the error domain of #GnbdError
 */
G_DEFINE_QUARK (gnbd-error-quark, gnbd_error)

GnbdError
gnbd_error_code_from_errno (int err)
{
  switch (err) {
  case EPERM:
  case EACCES:
  case EROFS:
    return GNBD_ERROR_PERMISSION;
  case EIO:
    return GNBD_ERROR_IO;
  case ENOMEM:
    return GNBD_ERROR_NO_MEMORY;
  case EINVAL:
  case ERANGE:
  case EFAULT:
    return GNBD_ERROR_INVALID;
  case ENOSPC:
  case EDQUOT:
  case EFBIG:
    return GNBD_ERROR_NO_SPACE;
  case EOVERFLOW:
  case E2BIG:
    return GNBD_ERROR_OVERFLOW;
  case ENOTSUP:
    return GNBD_ERROR_NOT_SUPPORTED;
  case ESHUTDOWN:
    return GNBD_ERROR_SHUTDOWN;
  case EPROTO:
  case EBADMSG:
    return GNBD_ERROR_PROTOCOL;
  case ENOENT:
    return GNBD_ERROR_NOT_FOUND;
  default:
    return GNBD_ERROR_FAILED;
  }
}

GIOErrorEnum
gnbd_io_error_code_from_errno (int err)
{
  switch (err) {
  case EPIPE:
    return G_IO_ERROR_BROKEN_PIPE;
  case ECONNRESET:
  case ENOTCONN:
  case ESHUTDOWN:
  case ECONNABORTED:
    return G_IO_ERROR_CONNECTION_CLOSED;
  case ECONNREFUSED:
    return G_IO_ERROR_CONNECTION_REFUSED;
  case 0:
    return G_IO_ERROR_FAILED;
  default:
    return g_io_error_from_errno (err);
  }
}

const char *
gnbd_errno_name (int err)
{
  const char *name = err ? strerrorname_np (err) : NULL;

  return name ? name : "no errno";
}
