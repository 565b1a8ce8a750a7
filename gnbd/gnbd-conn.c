/* gnbd-conn.c: one NBD connection (see gnbd-conn-private.h).
 * Work in progress: every operation fails with G_IO_ERROR_NOT_SUPPORTED
 * until the implementation lands. */
#include "gnbd-conn-private.h"

struct _GnbdConn {
  gint ref_count;
  GnbdSettings settings;
  GnbdConnEvents events;
};

GnbdConn *
gnbd_conn_new (const GnbdSettings *settings, const GnbdConnEvents *events)
{
  GnbdConn *conn = g_new0 (GnbdConn, 1);

  conn->ref_count = 1;
  gnbd_settings_copy (&conn->settings, settings);
  conn->events = *events;
  return conn;
}

GnbdConn *
gnbd_conn_ref (GnbdConn *conn)
{
  g_atomic_int_inc (&conn->ref_count);
  return conn;
}

void
gnbd_conn_unref (GnbdConn *conn)
{
  if (!g_atomic_int_dec_and_test (&conn->ref_count))
    return;
  gnbd_settings_clear (&conn->settings);
  if (conn->events.destroy)
    conn->events.destroy (conn->events.data);
  g_free (conn);
}

static void
todo (GTask *task)
{
  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "not implemented yet");
}

void
gnbd_conn_connect (GnbdConn *conn, GnbdConnectKind kind, const char *a, const char *b,
                   const char *const *argv, GTask *task)
{
  conn->events.closed (conn, NULL, conn->events.data);
  todo (task);
}

void
gnbd_conn_submit (GnbdConn *conn, GnbdRequestKind kind, GTask *task, guint64 offset,
                  guint64 count, GnbdCommandFlags flags, GBytes *data, const char *context)
{
  todo (task);
}

void
gnbd_conn_shutdown (GnbdConn *conn, GTask *task)
{
  todo (task);
}

void
gnbd_conn_close (GnbdConn *conn)
{
}

void
gnbd_conn_list_exports (const GnbdSettings *settings, const char *uri, GTask *task)
{
  todo (task);
}
