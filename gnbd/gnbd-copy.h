/* gnbd-copy.h: GnbdCopy, the copy engine: from a source to a destination,
 * each an NBD export (a connected GnbdClient), a local file or block device
 * (a GFile), a GIO stream, or (destination only) nothing.
 *
 * Set the sides and the properties, then run it (sync, or _async/_finish);
 * progress comes as a rate-limited signal in the caller's context.  See
 * gnbd-copy.c for the reference.
 */
#pragma once

#if !defined(__GNBD_INSIDE__) && !defined(GNBD_COMPILATION)
#error "Only <gnbd/gnbd.h> can be included directly."
#endif

#include <gio/gio.h>

#include <gnbd/gnbd-version-macros.h>
#include <gnbd/gnbd-client.h>

G_BEGIN_DECLS

#define GNBD_TYPE_COPY (gnbd_copy_get_type ())

GNBD_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (GnbdCopy, gnbd_copy, GNBD, COPY, GObject)

GNBD_AVAILABLE_IN_ALL
GnbdCopy *gnbd_copy_new (void);

GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_source_client (GnbdCopy *self,
                                  GnbdClient *client,
                                  const char *uri);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_source_file (GnbdCopy *self,
                                GFile *file);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_source_stream (GnbdCopy *self,
                                  GInputStream *stream);

GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_destination_client (GnbdCopy *self,
                                       GnbdClient *client,
                                       const char *uri);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_destination_file (GnbdCopy *self,
                                     GFile *file);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_destination_stream (GnbdCopy *self,
                                       GOutputStream *stream);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_set_destination_null (GnbdCopy *self);

GNBD_AVAILABLE_IN_ALL
guint64 gnbd_copy_get_bytes_copied (GnbdCopy *self);
GNBD_AVAILABLE_IN_ALL
guint64 gnbd_copy_get_bytes_total (GnbdCopy *self);
GNBD_AVAILABLE_IN_ALL
guint64 gnbd_copy_get_bytes_skipped (GnbdCopy *self);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_copy_run (GnbdCopy *self,
                        GCancellable *cancellable,
                        GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_copy_run_async (GnbdCopy *self,
                          GCancellable *cancellable,
                          GAsyncReadyCallback callback,
                          gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_copy_run_finish (GnbdCopy *self,
                               GAsyncResult *result,
                               GError **error);

G_END_DECLS
