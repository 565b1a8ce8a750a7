/* gnbd-client.h: GnbdClient, one connection to an NBD server.
 *
 * Settings are properties set before connecting; export facts are read-only
 * properties once connected.  Every operation comes in three forms: sync
 * (blocking, any thread), _async and _finish (callback in the caller's
 * thread-default main context).  See gnbd-client.c for the reference.
 */
#pragma once

#if !defined(__GNBD_INSIDE__) && !defined(GNBD_COMPILATION)
#error "Only <gnbd/gnbd.h> can be included directly."
#endif

#include <gio/gio.h>

#include <gnbd/gnbd-version-macros.h>
#include <gnbd/gnbd-types.h>

G_BEGIN_DECLS

#define GNBD_TYPE_CLIENT (gnbd_client_get_type ())

GNBD_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (GnbdClient, gnbd_client, GNBD, CLIENT, GObject)

GNBD_AVAILABLE_IN_ALL
GnbdClient *gnbd_client_new (void);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_uri (GnbdClient *self,
                                  const char *uri,
                                  GCancellable *cancellable,
                                  GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_connect_uri_async (GnbdClient *self,
                                    const char *uri,
                                    GCancellable *cancellable,
                                    GAsyncReadyCallback callback,
                                    gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_uri_finish (GnbdClient *self,
                                         GAsyncResult *result,
                                         GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_unix (GnbdClient *self,
                                   const char *path,
                                   GCancellable *cancellable,
                                   GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_connect_unix_async (GnbdClient *self,
                                     const char *path,
                                     GCancellable *cancellable,
                                     GAsyncReadyCallback callback,
                                     gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_unix_finish (GnbdClient *self,
                                          GAsyncResult *result,
                                          GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_tcp (GnbdClient *self,
                                  const char *host,
                                  const char *port,
                                  GCancellable *cancellable,
                                  GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_connect_tcp_async (GnbdClient *self,
                                    const char *host,
                                    const char *port,
                                    GCancellable *cancellable,
                                    GAsyncReadyCallback callback,
                                    gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_tcp_finish (GnbdClient *self,
                                         GAsyncResult *result,
                                         GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_command (GnbdClient *self,
                                      const char * const *argv,
                                      GCancellable *cancellable,
                                      GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_connect_command_async (GnbdClient *self,
                                        const char * const *argv,
                                        GCancellable *cancellable,
                                        GAsyncReadyCallback callback,
                                        gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_command_finish (GnbdClient *self,
                                             GAsyncResult *result,
                                             GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_systemd_socket_activation (GnbdClient *self,
                                                        const char * const *argv,
                                                        GCancellable *cancellable,
                                                        GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_connect_systemd_socket_activation_async (GnbdClient *self,
                                                          const char * const *argv,
                                                          GCancellable *cancellable,
                                                          GAsyncReadyCallback callback,
                                                          gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_connect_systemd_socket_activation_finish (GnbdClient *self,
                                                               GAsyncResult *result,
                                                               GError **error);

GNBD_AVAILABLE_IN_ALL
GPtrArray *gnbd_client_list_exports (GnbdClient *self,
                                     const char *uri,
                                     GCancellable *cancellable,
                                     GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_list_exports_async (GnbdClient *self,
                                     const char *uri,
                                     GCancellable *cancellable,
                                     GAsyncReadyCallback callback,
                                     gpointer user_data);
GNBD_AVAILABLE_IN_ALL
GPtrArray *gnbd_client_list_exports_finish (GnbdClient *self,
                                            GAsyncResult *result,
                                            GError **error);

GNBD_AVAILABLE_IN_ALL
GBytes *gnbd_client_pread (GnbdClient *self,
                           guint64 offset,
                           gsize count,
                           GnbdCommandFlags flags,
                           GCancellable *cancellable,
                           GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_pread_async (GnbdClient *self,
                              guint64 offset,
                              gsize count,
                              GnbdCommandFlags flags,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data);
GNBD_AVAILABLE_IN_ALL
GBytes *gnbd_client_pread_finish (GnbdClient *self,
                                  GAsyncResult *result,
                                  GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_pwrite (GnbdClient *self,
                             GBytes *data,
                             guint64 offset,
                             GnbdCommandFlags flags,
                             GCancellable *cancellable,
                             GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_pwrite_async (GnbdClient *self,
                               GBytes *data,
                               guint64 offset,
                               GnbdCommandFlags flags,
                               GCancellable *cancellable,
                               GAsyncReadyCallback callback,
                               gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_pwrite_finish (GnbdClient *self,
                                    GAsyncResult *result,
                                    GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_flush (GnbdClient *self,
                            GnbdCommandFlags flags,
                            GCancellable *cancellable,
                            GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_flush_async (GnbdClient *self,
                              GnbdCommandFlags flags,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_flush_finish (GnbdClient *self,
                                   GAsyncResult *result,
                                   GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_trim (GnbdClient *self,
                           guint64 offset,
                           guint64 count,
                           GnbdCommandFlags flags,
                           GCancellable *cancellable,
                           GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_trim_async (GnbdClient *self,
                             guint64 offset,
                             guint64 count,
                             GnbdCommandFlags flags,
                             GCancellable *cancellable,
                             GAsyncReadyCallback callback,
                             gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_trim_finish (GnbdClient *self,
                                  GAsyncResult *result,
                                  GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_zero (GnbdClient *self,
                           guint64 offset,
                           guint64 count,
                           GnbdCommandFlags flags,
                           GCancellable *cancellable,
                           GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_zero_async (GnbdClient *self,
                             guint64 offset,
                             guint64 count,
                             GnbdCommandFlags flags,
                             GCancellable *cancellable,
                             GAsyncReadyCallback callback,
                             gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_zero_finish (GnbdClient *self,
                                  GAsyncResult *result,
                                  GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_cache (GnbdClient *self,
                            guint64 offset,
                            guint64 count,
                            GnbdCommandFlags flags,
                            GCancellable *cancellable,
                            GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_cache_async (GnbdClient *self,
                              guint64 offset,
                              guint64 count,
                              GnbdCommandFlags flags,
                              GCancellable *cancellable,
                              GAsyncReadyCallback callback,
                              gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_cache_finish (GnbdClient *self,
                                   GAsyncResult *result,
                                   GError **error);

GNBD_AVAILABLE_IN_ALL
GPtrArray *gnbd_client_block_status (GnbdClient *self,
                                     guint64 offset,
                                     guint64 count,
                                     const char *context,
                                     GnbdCommandFlags flags,
                                     GCancellable *cancellable,
                                     GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_block_status_async (GnbdClient *self,
                                     guint64 offset,
                                     guint64 count,
                                     const char *context,
                                     GnbdCommandFlags flags,
                                     GCancellable *cancellable,
                                     GAsyncReadyCallback callback,
                                     gpointer user_data);
GNBD_AVAILABLE_IN_ALL
GPtrArray *gnbd_client_block_status_finish (GnbdClient *self,
                                            GAsyncResult *result,
                                            GError **error);

GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_shutdown (GnbdClient *self,
                               GCancellable *cancellable,
                               GError **error);
GNBD_AVAILABLE_IN_ALL
void gnbd_client_shutdown_async (GnbdClient *self,
                                 GCancellable *cancellable,
                                 GAsyncReadyCallback callback,
                                 gpointer user_data);
GNBD_AVAILABLE_IN_ALL
gboolean gnbd_client_shutdown_finish (GnbdClient *self,
                                      GAsyncResult *result,
                                      GError **error);

G_END_DECLS
