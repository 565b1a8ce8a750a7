/* gnbd-error-private.h: errno to GError codes (gnbd-error.c); never installed. */
#pragma once

#include <gio/gio.h>

#include "gnbd-error.h"

G_BEGIN_DECLS

/* A refusal (the connection is still usable): GNBD_ERROR's code. */
GnbdError gnbd_error_code_from_errno (int err);
/* A broken, closed or never-opened transport: G_IO_ERROR's code. */
GIOErrorEnum gnbd_io_error_code_from_errno (int err);
/* "EIO", "ECONNRESET"...: for messages. */
const char *gnbd_errno_name (int err);

G_END_DECLS
