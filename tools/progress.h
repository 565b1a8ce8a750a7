/* progress.h: how `gnbd copy` shows its progress: a live bar on stderr
 * when it is a terminal (-p), and machine-readable lines on a file
 * descriptor (--progress=FD), whose format gnbd(1) documents:
 *
 *   PERCENT/100 copied=BYTES skipped=BYTES total=BYTES seconds=S.SS status=WORD
 *
 * status is "running" on every line but the last, which says "done",
 * "failed" or "cancelled".  total=0 while the size is unknown (a stream).
 */
#pragma once

#include <glib.h>

typedef struct GtProgress GtProgress;

typedef enum {
  GT_PROGRESS_RUNNING,
  GT_PROGRESS_DONE,
  GT_PROGRESS_FAILED,
  GT_PROGRESS_CANCELLED,
} GtProgressStatus;

/* @bar: draw the bar (only if stderr is a terminal); @fd: -1, or where
 * the lines go.  NULL when there is nothing to show. */
GtProgress *gt_progress_new (gboolean bar, int fd);
/* The counters now; a line on the fd and a redraw of the bar. */
void gt_progress_update (GtProgress *p, guint64 copied, guint64 skipped, guint64 total,
                         GtProgressStatus status);
/* The last update (status other than RUNNING) ends the bar's line. */
void gt_progress_free (GtProgress *p);
