/* gnbd-types.c: the boxed results, GnbdExtent and GnbdExport.
 *
 * Owns their memory layout (opaque to users) and their getters.  Both are
 * plain copied values: small, immutable once made, so a copy is as cheap
 * as a reference count and bindings need nothing more.
 */
#include "gnbd-types-private.h"

struct _GnbdExtent {
  guint64 offset;
  guint64 length;
  guint32 flags;
};

struct _GnbdExport {
  char *name;
  char *description;
};

G_DEFINE_BOXED_TYPE (GnbdExtent, gnbd_extent, gnbd_extent_copy, gnbd_extent_free)
G_DEFINE_BOXED_TYPE (GnbdExport, gnbd_export, gnbd_export_copy, gnbd_export_free)

GnbdExtent *
gnbd_extent_new (guint64 offset, guint64 length, guint32 flags)
{
  GnbdExtent *self = g_new (GnbdExtent, 1);

  self->offset = offset;
  self->length = length;
  self->flags = flags;
  return self;
}

/**
 * gnbd_extent_copy:
 * @self: a #GnbdExtent
 *
 * Copies an extent.
 *
 * Returns: (transfer full): a copy of @self; free it with gnbd_extent_free()
 */
GnbdExtent *
gnbd_extent_copy (const GnbdExtent *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return g_memdup2 (self, sizeof *self);
}

/**
 * gnbd_extent_free:
 * @self: (transfer full): a #GnbdExtent
 *
 * Frees an extent.
 */
void
gnbd_extent_free (GnbdExtent *self)
{
  g_free (self);
}

/**
 * gnbd_extent_get_offset:
 * @self: a #GnbdExtent
 *
 * Where the extent starts.
 *
 * Returns: the offset in bytes from the start of the export
 */
guint64
gnbd_extent_get_offset (const GnbdExtent *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->offset;
}

/**
 * gnbd_extent_get_length:
 * @self: a #GnbdExtent
 *
 * How long the extent is.
 *
 * Returns: the length in bytes
 */
guint64
gnbd_extent_get_length (const GnbdExtent *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->length;
}

/**
 * gnbd_extent_get_flags:
 * @self: a #GnbdExtent
 *
 * The extent's flags, whose meaning belongs to the metadata context: for
 * `base:allocation`, 1 is a hole and 2 reads as zeroes.
 *
 * Returns: the flags the server gave
 */
guint32
gnbd_extent_get_flags (const GnbdExtent *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->flags;
}

GnbdExport *
gnbd_export_new (const char *name, const char *description)
{
  GnbdExport *self = g_new (GnbdExport, 1);

  self->name = g_strdup (name);
  self->description = g_strdup (description);
  return self;
}

/**
 * gnbd_export_copy:
 * @self: a #GnbdExport
 *
 * Copies an export.
 *
 * Returns: (transfer full): a copy of @self; free it with gnbd_export_free()
 */
GnbdExport *
gnbd_export_copy (const GnbdExport *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return gnbd_export_new (self->name, self->description);
}

/**
 * gnbd_export_free:
 * @self: (transfer full): a #GnbdExport
 *
 * Frees an export.
 */
void
gnbd_export_free (GnbdExport *self)
{
  if (!self)
    return;
  g_free (self->name);
  g_free (self->description);
  g_free (self);
}

/**
 * gnbd_export_get_name:
 * @self: a #GnbdExport
 *
 * The export's name, as #GnbdClient:export-name or a URI's path wants it.
 *
 * Returns: the name (may be the empty string: the default export)
 */
const char *
gnbd_export_get_name (const GnbdExport *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return self->name;
}

/**
 * gnbd_export_get_description:
 * @self: a #GnbdExport
 *
 * The description the server gave for the export, often empty.
 *
 * Returns: the description (never %NULL; empty if the server gave none)
 */
const char *
gnbd_export_get_description (const GnbdExport *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return self->description ? self->description : "";
}
