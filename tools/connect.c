/* connect.c: what an operand names (an NBD URI, a server command, a file,
 * stdin/stdout, null:), and a GnbdClient connected to an NBD one.
 *
 * A `[ CMD ARGS ... ]` server runs through GnbdClient's systemd socket
 * activation and lives as long as its client.  Listing is the exception:
 * gnbd lists exports from a URI only, so for a command the tool runs the
 * server itself (activate.c) and lists through its socket's URI.
 */
#include <string.h>

#include "gnbd-tool.h"
#include "activate.h"

/* "nbd://", "nbds+unix://", ...: a scheme starting with "nbd" and "://". */
static gboolean
is_nbd_uri (const char *s)
{
  const char *colon = strstr (s, "://");

  if (!colon || g_ascii_strncasecmp (s, "nbd", 3) != 0)
    return FALSE;
  for (const char *p = s; p < colon; p++)
    if (!g_ascii_isalnum (*p) && *p != '+')
      return FALSE;
  return TRUE;
}

GtSide
gt_side_from_word (const GtWord *w)
{
  GtSide side = { .text = w->text };

  if (w->argv) {
    side.kind = GT_SIDE_COMMAND;
    side.argv = (const char *const *) w->argv;
  }
  else if (strcmp (w->text, "-") == 0)
    side.kind = GT_SIDE_STDIO;
  else if (strcmp (w->text, "null:") == 0)
    side.kind = GT_SIDE_NULL;
  else if (is_nbd_uri (w->text))
    side.kind = GT_SIDE_URI;
  else
    side.kind = GT_SIDE_FILE;
  return side;
}

gboolean
gt_side_is_nbd (const GtSide *side)
{
  if (side->kind == GT_SIDE_URI || side->kind == GT_SIDE_COMMAND)
    return TRUE;
  gt_usage_error ("'%s' is not an NBD URI (nbd://, nbd+unix://, nbds://, ...) "
                  "nor a server command '[ CMD ARGS ... ]'", side->text);
  return FALSE;
}

GnbdClient *
gt_connect (const GtSide *side, const char *const *meta_contexts, GCancellable *cancellable,
            GError **error)
{
  GnbdClient *client = gnbd_client_new ();
  gboolean ok;

  g_object_set (client, "handle-name", side->text, NULL);
  if (meta_contexts)
    g_object_set (client, "meta-contexts", meta_contexts, NULL);
  if (side->kind == GT_SIDE_URI)
    ok = gnbd_client_connect_uri (client, side->text, cancellable, error);
  else
    ok = gnbd_client_connect_systemd_socket_activation (client, side->argv, cancellable, error);
  if (!ok)
    g_clear_object (&client);
  return client;
}

GPtrArray *
gt_list_exports (const GtSide *side, GCancellable *cancellable, GError **error)
{
  g_autoptr (GnbdClient) client = gnbd_client_new ();
  GtActivated *server = NULL;
  GPtrArray *exports;

  if (side->kind == GT_SIDE_URI)
    return gnbd_client_list_exports (client, side->text, cancellable, error);
  if (!(server = gt_activate (side->argv, error)))
    return NULL;
  exports = gnbd_client_list_exports (client, gt_activated_uri (server), cancellable, error);
  gt_activated_stop (server);
  return exports;
}
