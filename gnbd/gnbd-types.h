/* gnbd-types.h: the small types of the API: the TLS setting, the command
 * flags, and the boxed results of block_status and list_exports.
 * One enum value per line: glib-mkenums misreads a one-line enum.
 */
#pragma once

#if !defined(__GNBD_INSIDE__) && !defined(GNBD_COMPILATION)
#error "Only <gnbd/gnbd.h> can be included directly."
#endif

#include <glib-object.h>

#include <gnbd/gnbd-version-macros.h>

G_BEGIN_DECLS

/**
 * GnbdTls:
 * @GNBD_TLS_DISABLE: never use TLS; a server that requires it is refused
 *   with %GNBD_ERROR_TLS_REQUIRED
 * @GNBD_TLS_ALLOW: use TLS if the server offers it, else go on without
 * @GNBD_TLS_REQUIRE: use TLS, or fail to connect
 *
 * Whether a #GnbdClient negotiates TLS (the #GnbdClient:tls property).
 * A URI of scheme `nbds` (or `nbds+unix`) requires TLS whatever this says.
 */
typedef enum {
  GNBD_TLS_DISABLE,
  GNBD_TLS_ALLOW,
  GNBD_TLS_REQUIRE,
} GnbdTls;

/**
 * GnbdCommandFlags:
 * @GNBD_COMMAND_FLAG_NONE: no flag
 * @GNBD_COMMAND_FLAG_FUA: force unit access: the data is on stable storage
 *   when the request completes (pwrite, trim, zero)
 * @GNBD_COMMAND_FLAG_NO_HOLE: zero: write zeroes, do not punch a hole
 * @GNBD_COMMAND_FLAG_DF: pread: do not fragment the reply (needs
 *   structured replies)
 * @GNBD_COMMAND_FLAG_REQ_ONE: block_status: at most one extent
 * @GNBD_COMMAND_FLAG_FAST_ZERO: zero: fail with %GNBD_ERROR_NOT_SUPPORTED
 *   rather than write zeroes slowly
 *
 * Flags of one request, as in the NBD protocol.  A flag the request or
 * the server does not support makes the request fail with
 * %GNBD_ERROR_INVALID or %GNBD_ERROR_NOT_SUPPORTED.
 */
typedef enum /*< flags >*/ {
  GNBD_COMMAND_FLAG_NONE = 0,
  GNBD_COMMAND_FLAG_FUA = 1 << 0,
  GNBD_COMMAND_FLAG_NO_HOLE = 1 << 1,
  GNBD_COMMAND_FLAG_DF = 1 << 2,
  GNBD_COMMAND_FLAG_REQ_ONE = 1 << 3,
  GNBD_COMMAND_FLAG_FAST_ZERO = 1 << 4,
} GnbdCommandFlags;

/**
 * GnbdExtent:
 *
 * One extent of a block_status reply: a range of the export and its flags
 * in the requested metadata context.  For `base:allocation`, bit 0 (1)
 * means a hole and bit 1 (2) reads as zeroes.
 */
typedef struct _GnbdExtent GnbdExtent;

#define GNBD_TYPE_EXTENT (gnbd_extent_get_type ())

GNBD_AVAILABLE_IN_ALL
GType gnbd_extent_get_type (void) G_GNUC_CONST;
GNBD_AVAILABLE_IN_ALL
GnbdExtent *gnbd_extent_copy (const GnbdExtent *self);
GNBD_AVAILABLE_IN_ALL
void gnbd_extent_free (GnbdExtent *self);
GNBD_AVAILABLE_IN_ALL
guint64 gnbd_extent_get_offset (const GnbdExtent *self);
GNBD_AVAILABLE_IN_ALL
guint64 gnbd_extent_get_length (const GnbdExtent *self);
GNBD_AVAILABLE_IN_ALL
guint32 gnbd_extent_get_flags (const GnbdExtent *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GnbdExtent, gnbd_extent_free)

/**
 * GnbdExport:
 *
 * One export a server lists: its name and its description.
 */
typedef struct _GnbdExport GnbdExport;

#define GNBD_TYPE_EXPORT (gnbd_export_get_type ())

GNBD_AVAILABLE_IN_ALL
GType gnbd_export_get_type (void) G_GNUC_CONST;
GNBD_AVAILABLE_IN_ALL
GnbdExport *gnbd_export_copy (const GnbdExport *self);
GNBD_AVAILABLE_IN_ALL
void gnbd_export_free (GnbdExport *self);
GNBD_AVAILABLE_IN_ALL
const char *gnbd_export_get_name (const GnbdExport *self);
GNBD_AVAILABLE_IN_ALL
const char *gnbd_export_get_description (const GnbdExport *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GnbdExport, gnbd_export_free)

G_END_DECLS
