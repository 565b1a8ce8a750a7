/* gnbd-conn-private.h: one NBD connection under a GnbdClient (gnbd-conn.c).
 * Never installed.
 *
 * A GnbdConn wraps one libnbd-core handle for its whole life: created with
 * the client's settings at connect time, driven by a reader source on the
 * I/O thread (gnbd-io.c), sending through the process's writer task
 * (gnbd-writer.c) when the concurrent writer is on.  It knows nothing of
 * GnbdClient: it reports to it through two callbacks (GnbdConnEvents).
 */
#pragma once

#include <gio/gio.h>

#include "gnbd-result-private.h"
#include "gnbd-types.h"

G_BEGIN_DECLS

typedef struct _GnbdConn GnbdConn;

/* What the client's properties say, copied at connect time. */
typedef struct {
  char *export_name;
  GnbdTls tls;
  char *tls_certificates;
  char *tls_psk_file;
  char *tls_username;
  gboolean request_structured_replies;
  char **meta_contexts;
  char *handle_name;
  gboolean concurrent_writer;
} GnbdSettings;

/* What the server said, read once the connection is ready. */
typedef struct {
  guint64 size;
  gboolean read_only;
  gboolean can_flush;
  gboolean can_fua;
  gboolean can_trim;
  gboolean can_zero;
  gboolean can_fast_zero;
  gboolean can_cache;
  gboolean can_df;
  gboolean can_multi_conn;
  gboolean is_rotational;
  gboolean tls_negotiated;
  gboolean structured_replies_negotiated;
  guint block_size_minimum;
  guint block_size_preferred;
  guint block_size_maximum;
  char *protocol;
  char *export_description;
  char *canonical_name;
} GnbdFacts;

void gnbd_settings_copy (GnbdSettings *dst, const GnbdSettings *src);
void gnbd_settings_clear (GnbdSettings *s);
void gnbd_facts_clear (GnbdFacts *f);

typedef enum {
  GNBD_CONNECT_URI,
  GNBD_CONNECT_UNIX,
  GNBD_CONNECT_TCP,
  GNBD_CONNECT_COMMAND,
  GNBD_CONNECT_SYSTEMD_SOCKET_ACTIVATION,
} GnbdConnectKind;

/* The connection's news, for its client; no lock of the connection is held.
 * ready: on the I/O thread, when the handshake is done; @facts (transfer
 *   full, free with gnbd_facts_clear + g_free) are the export's; before the
 *   connect task returns.
 * closed: the connection ended; @error (transfer full) is NULL after a
 *   shutdown, else why it ended.  Once: after ready, on the I/O thread; or,
 *   if the connect failed or was cancelled, before the connect task
 *   returns, on the thread where that was found (the I/O thread, the
 *   caller's, or the cancelling one).  Never after gnbd_conn_close.
 */
typedef struct {
  void (*ready) (GnbdConn *conn, GnbdFacts *facts, gpointer data);
  void (*closed) (GnbdConn *conn, GError *error, gpointer data);
  gpointer data;
  GDestroyNotify destroy;
} GnbdConnEvents;

GnbdConn *gnbd_conn_new (const GnbdSettings *settings, const GnbdConnEvents *events);
GnbdConn *gnbd_conn_ref (GnbdConn *conn);
void gnbd_conn_unref (GnbdConn *conn);

/* Start connecting; @task (reference taken) returns a boolean.  @a is the
 * URI, path, host or NULL; @b the port or NULL; @argv the command. */
void gnbd_conn_connect (GnbdConn *conn, GnbdConnectKind kind, const char *a, const char *b,
                        const char *const *argv, GTask *task);

typedef enum {
  GNBD_REQUEST_PREAD,
  GNBD_REQUEST_PWRITE,
  GNBD_REQUEST_FLUSH,
  GNBD_REQUEST_TRIM,
  GNBD_REQUEST_ZERO,
  GNBD_REQUEST_CACHE,
  GNBD_REQUEST_BLOCK_STATUS,
} GnbdRequestKind;

/* Issue one request; @result (reference taken) returns a GBytes (pread), a
 * GPtrArray of GnbdExtent (block_status) or a boolean.  @data: pwrite's
 * payload (referenced until the core is done with it); @context:
 * block_status's. */
void gnbd_conn_submit (GnbdConn *conn, GnbdRequestKind kind, GnbdResult *result,
                       guint64 offset, guint64 count, GnbdCommandFlags flags, GBytes *data,
                       const char *context);

/* NBD_CMD_DISC after what is pending; @task returns TRUE once closed. */
void gnbd_conn_shutdown (GnbdConn *conn, GTask *task);

/* Drop the connection now (the client is going away or reconnecting):
 * pending requests fail with G_IO_ERROR_CLOSED, the closed callback is not
 * called.  Safe from any thread; the work happens on the I/O thread. */
void gnbd_conn_close (GnbdConn *conn);
/* The same, and off the I/O thread it waits until the teardown has run:
 * the handle is closed by then (and its server process, if it started
 * one, reaped), unless a caller is still inside it (then it closes when
 * that caller leaves).  On the I/O thread, as gnbd_conn_close. */
void gnbd_conn_close_wait (GnbdConn *conn);

/* A separate, short-lived connection in option mode; @task returns a
 * GPtrArray of GnbdExport. */
void gnbd_conn_list_exports (const GnbdSettings *settings, const char *uri, GTask *task);

/* For tests: wait until every connection ever made is freed (its handle
 * closed, its socket and child gone), at most @timeout_us; TRUE if so. */
gboolean gnbd_conn_wait_none (gint64 timeout_us);

G_END_DECLS
