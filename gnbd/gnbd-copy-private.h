/* gnbd-copy-private.h: what GnbdCopy (gnbd-copy.c, the object) hands to
 * its engine (gnbd-copy-engine.c, the pipeline) and its sides
 * (gnbd-copy-side.c, the I/O of each kind of side).  Never installed.
 */
#pragma once

#include <gio/gio.h>

#include "gnbd-client.h"

G_BEGIN_DECLS

/* What the caller set as one side of the copy. */
typedef enum {
  GNBD_SIDE_UNSET,
  GNBD_SIDE_CLIENT,
  GNBD_SIDE_FILE,
  GNBD_SIDE_STREAM,
  GNBD_SIDE_NULL,
} GnbdSideKind;

typedef struct {
  GnbdSideKind kind;
  GnbdClient *client;           /* CLIENT */
  char *uri;                    /* CLIENT: to open more connections, or NULL */
  GFile *file;                  /* FILE */
  GObject *stream;              /* STREAM: a GInputStream or GOutputStream */
} GnbdSideSpec;

void gnbd_side_spec_copy (GnbdSideSpec *dst, const GnbdSideSpec *src);
void gnbd_side_spec_clear (GnbdSideSpec *spec);

/* The properties of the copy, as they were when it started. */
typedef struct {
  guint request_size;
  guint requests;
  guint connections;
  guint sparse;
  gboolean use_extents;
  gboolean flush;
  gboolean destination_is_zero;
} GnbdCopyParams;

/* Called in the copy's context whenever a counter changed: bytes_total is
 * 0 while unknown (a stream source before its end). */
typedef void (*GnbdCopyProgressFunc) (guint64 bytes_copied, guint64 bytes_skipped,
                                      guint64 bytes_total, gpointer data);

/* Runs one copy on the thread-default main context of the caller and
 * returns @task (boolean) when it is over, every request done.  The specs
 * and params are copied. */
void gnbd_copy_engine_run (const GnbdSideSpec *source, const GnbdSideSpec *destination,
                           const GnbdCopyParams *params, GnbdCopyProgressFunc progress,
                           gpointer progress_data, GTask *task);

G_END_DECLS
