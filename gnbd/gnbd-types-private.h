/* gnbd-types-private.h: constructors of the boxed results, for the library
 * only (never installed). */
#pragma once

#include "gnbd-types.h"

G_BEGIN_DECLS

GnbdExtent *gnbd_extent_new (guint64 offset, guint64 length, guint32 flags);
GnbdExport *gnbd_export_new (const char *name, const char *description);

G_END_DECLS
