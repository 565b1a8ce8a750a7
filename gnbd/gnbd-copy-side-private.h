/* gnbd-copy-side-private.h: one side of a copy once opened, and the
 * requests the engine makes of it.  Never installed.
 *
 * Every request completes by calling its op's done function, in the
 * copy's main context, exactly once: an NBD side through GnbdClient's
 * async calls, a file side on a small thread pool of its own, a stream
 * through GIO's async calls, the null side at once (inside the call).
 */
#pragma once

#include "gnbd-copy-private.h"

G_BEGIN_DECLS

typedef struct _GnbdSide GnbdSide;

/* What a side is once opened: a file that is a FIFO or a character
 * device becomes a STREAM. */
struct _GnbdSide {
  GnbdSideKind kind;
  const char *name;             /* "source" or "destination", for messages */
  gboolean is_source;
  GMainContext *context;        /* where requests complete */

  gboolean size_known;
  guint64 size;
  guint block_size_maximum;     /* 0: no limit of the side's own */
  gboolean has_extents;         /* can say where its holes are */
  gboolean can_zero;            /* zero without sending data */
  gboolean known_zero;          /* reads as zeroes before the copy writes */

  /* CLIENT: [0] is the caller's, then the extra connections. */
  GPtrArray *clients;
  char *uri;
  gboolean can_multi_conn;
  gboolean can_fast_zero;
  gboolean can_flush;

  /* FILE */
  GFile *file;
  int fd;
  gboolean truncate_at_end;     /* a regular file sized only at the end */
  GThreadPool *pool;

  /* STREAM */
  GInputStream *in;
  GOutputStream *out;
};

/* A run of the source's allocation map, from block status or SEEK_HOLE. */
typedef struct {
  guint64 length;
  gboolean zero;                /* reads as zeroes */
} GnbdRun;

typedef struct _GnbdSideOp GnbdSideOp;

/* @error is transfer full, NULL on success. */
typedef void (*GnbdSideOpDone) (GnbdSideOp *op, GError *error);

/* The engine's request, embedded first in its own structure. */
struct _GnbdSideOp {
  GnbdSideOpDone done;
  GnbdSide *side;
  guint conn;                   /* which connection of a CLIENT side */
  guint64 offset;
  guint64 length;
  GnbdCommandFlags flags;       /* zero: FAST_ZERO */
  GBytes *bytes;                /* read: the data (out); write: the data (in) */
  GArray *runs;                 /* extents: GnbdRun from @offset (out) */
};

GnbdSide *gnbd_side_new (const GnbdSideSpec *spec, gboolean is_source);
void gnbd_side_free (GnbdSide *side);

/* Opens the side: the file, the facts of a client.  A destination file is
 * given the source's size (@size, if @size_known). */
void gnbd_side_open (GnbdSide *side, gboolean size_known, guint64 size, guint threads,
                     GnbdSideOp *op);
/* Opens @n - 1 more connections to a CLIENT side's export. */
void gnbd_side_connect (GnbdSide *side, guint n, GCancellable *cancellable, GnbdSideOp *op);
guint gnbd_side_connections (GnbdSide *side);

void gnbd_side_read (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable);
void gnbd_side_extents (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable);
void gnbd_side_write (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable);
void gnbd_side_zero (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable);
/* The end of a successful copy: size a file, flush (@flush, or always for
 * a stream), shut the extra connections down. */
void gnbd_side_finish (GnbdSide *side, gboolean flush, guint64 total, GnbdSideOp *op);

G_END_DECLS
