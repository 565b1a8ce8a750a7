/* gnbd-copy-engine.c: the copy pipeline: what to read, write and zero, in
 * what order, on which connection, and how far the copy got.
 *
 * Owns the plan (the source's allocation map, fetched ahead with block
 * status or SEEK_HOLE, cut into items of at most request-size bytes of
 * data, or larger runs of zeroes), the items in flight (up to requests x
 * connections), the zero detection in the data read, the order of a
 * stream destination, the watermark below which the destination is
 * complete, and the first error.  It never does I/O itself
 * (gnbd-copy-side.c does) and never emits anything (gnbd-copy.c does,
 * rate-limited, from the progress callback).
 *
 * Everything runs in the context of the caller of run_async: side
 * requests complete there, so the engine needs no lock.  A request's
 * completion calls pump(), which starts whatever may start and notices the
 * end; the engine is freed from an idle source of its own once every
 * request is done, never under a callback.
 */
#include <string.h>

#include "gnbd-copy-side-private.h"
#include "gnbd-error.h"

/* The largest zero request (NBD lengths are 32 bits). */
#define ZERO_MAX (1024 * 1024 * 1024)
/* The largest range one block status asks about. */
#define EXTENTS_MAX (1024 * 1024 * 1024)
/* The most threads a file side uses for its system calls. */
#define FILE_THREADS_MAX 8

typedef enum {
  PHASE_SETUP,                  /* opening the sides, connecting more */
  PHASE_COPY,
  PHASE_FINISH,
  PHASE_DONE,
} Phase;

typedef struct _Engine Engine;

/* A range of the source being copied: one read (unless a hole), then the
 * writes and zeroes it needs. */
typedef struct {
  guint64 offset;               /* first: the key of Engine.done and .ready */
  guint64 length;
  gboolean zero;                /* a hole of the source: nothing to read */
  guint conn;
  guint pending;                /* requests, and holds (see item_release) */
  gboolean parked;              /* waiting in Engine.ready for its turn */
  guint64 skipped;              /* bytes zeroed or skipped, not written */
  GBytes *data;                 /* stream destination: what to write */
} Item;

/* A range done beyond the watermark. */
typedef struct {
  guint64 offset;               /* first: the key of Engine.done */
  guint64 end;
} Range;

typedef enum {
  OP_OPEN,
  OP_CONNECT,
  OP_EXTENTS,
  OP_READ,
  OP_WRITE,
  OP_ZERO,
  OP_FINISH,
} OpKind;

typedef struct {
  GnbdSideOp op;                /* first */
  Engine *e;
  Item *item;                   /* READ, WRITE, ZERO */
  OpKind kind;
} Op;

struct _Engine {
  GTask *task;
  GMainContext *context;
  GnbdCopyParams params;
  GnbdCopyProgressFunc progress;
  gpointer progress_data;
  GCancellable *cancel;         /* every request's; cancelled on error too */
  GCancellable *user_cancel;
  gulong cancel_handler;
  GnbdSide *src, *dst;
  Phase phase;
  guint ops;                    /* side requests outstanding */
  GError *error;                /* the first failure: the copy stops */
  gboolean pumping, repump;

  /* Set when the copy starts. */
  guint request_size;
  guint max_items;
  guint conns;
  guint64 zero_max;
  gboolean dst_known_zero;
  gboolean detect_zeroes;
  gboolean fast_zero;
  GBytes *zero_bytes;           /* request_size zeroes, to write as data */

  /* The plan: [planned, runs_end) is described by runs, from the source's
   * allocation map; beyond it, nothing is known yet. */
  gboolean size_known;
  guint64 size;
  guint64 planned;
  GQueue runs;                  /* of GnbdRun */
  guint64 runs_end;
  gboolean extents_on;
  gboolean extents_busy;
  gboolean src_busy, src_eof;   /* a stream source: one read at a time */

  /* Progress. */
  guint items;
  guint next_conn;
  GHashTable *done;             /* offset -> Range done beyond the watermark */
  guint64 copied;               /* the watermark */
  guint64 skipped;

  /* A stream destination: items written in order of offset. */
  GHashTable *ready;            /* offset -> parked Item */
  guint64 write_next;
  gboolean writing;
};

static void pump (Engine *e);
static void op_done (GnbdSideOp *sop, GError *error);

/* ---- Requests ------------------------------------------------------------ */

static Op *
op_new (Engine *e, OpKind kind, GnbdSide *side, Item *item)
{
  Op *op = g_new0 (Op, 1);

  op->op.done = op_done;
  op->op.side = side;
  op->e = e;
  op->kind = kind;
  op->item = item;
  if (item) {
    op->op.conn = item->conn;
    item->pending++;
  }
  e->ops++;
  return op;
}

static void
op_free (Op *op)
{
  g_clear_pointer (&op->op.bytes, g_bytes_unref);
  g_clear_pointer (&op->op.runs, g_array_unref);
  g_free (op);
}

/* ---- Failing ------------------------------------------------------------- */

/* The copy stops with @error (transfer full) as the cause: "Reading the
 * source at offset 4096: <cause>", keeping the cause's domain and code;
 * or with the cancellation, if the caller cancelled.  Requests in flight
 * are cancelled; the end comes when they all returned. */
G_GNUC_PRINTF (3, 4) static void
fail (Engine *e, GError *error, const char *format, ...)
{
  va_list args;
  g_autofree char *what = NULL;

  if (e->error) {
    g_error_free (error);
    return;
  }
  if (e->user_cancel && g_cancellable_is_cancelled (e->user_cancel)) {
    g_error_free (error);
    e->error = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "The copy was cancelled");
  }
  else {
    va_start (args, format);
    what = g_strdup_vprintf (format, args);
    va_end (args);
    g_prefix_error (&error, "%s: ", what);
    e->error = error;
  }
  g_cancellable_cancel (e->cancel);
}

/* ---- Progress ------------------------------------------------------------ */

static void
report (Engine *e)
{
  guint64 total = e->size_known ? e->size : e->src_eof ? e->planned : 0;

  e->progress (e->copied, e->skipped, total, e->progress_data);
}

static void
item_free (gpointer data)
{
  Item *item = data;

  g_clear_pointer (&item->data, g_bytes_unref);
  g_free (item);
}

/* @item is on the destination: move the watermark over it and the ranges
 * done after it. */
static void
item_done (Engine *e, Item *item)
{
  Range *r;

  e->items--;
  e->skipped += item->skipped;
  if (item->length > 0) {
    if (item->offset == e->copied) {
      e->copied += item->length;
      while ((r = g_hash_table_lookup (e->done, &e->copied))) {
        guint64 end = r->end;

        g_hash_table_remove (e->done, &e->copied);
        e->copied = end;
      }
    }
    else {
      r = g_new (Range, 1);
      r->offset = item->offset;
      r->end = item->offset + item->length;
      g_hash_table_insert (e->done, &r->offset, r);
    }
  }
  item_free (item);
  report (e);
}

/* One request or hold of @item is over: it is done once none is left
 * (unless parked, waiting for its turn on a stream), or dropped if the
 * copy failed. */
static void
item_release (Engine *e, Item *item)
{
  if (--item->pending > 0 || item->parked)
    return;
  if (e->error) {
    e->items--;
    item_free (item);
  }
  else
    item_done (e, item);
}

/* ---- Writing ------------------------------------------------------------- */

static void
write_data (Engine *e, Item *item, guint64 offset, GBytes *data)
{
  Op *op = op_new (e, OP_WRITE, e->dst, item);

  op->op.offset = offset;
  op->op.length = g_bytes_get_size (data);
  op->op.bytes = g_bytes_ref (data);
  gnbd_side_write (e->dst, &op->op, e->cancel);
}

static void
zero_request (Engine *e, Item *item, guint64 offset, guint64 length)
{
  Op *op = op_new (e, OP_ZERO, e->dst, item);

  op->op.offset = offset;
  op->op.length = length;
  op->op.flags = e->fast_zero ? GNBD_COMMAND_FLAG_FAST_ZERO : GNBD_COMMAND_FLAG_NONE;
  gnbd_side_zero (e->dst, &op->op, e->cancel);
}

/* [offset, + length) of @item reads as zeroes in the source: skip it on a
 * destination known to be zero, zero it where that sends no data, else
 * write zeroes (length <= request_size then: see zero_max). */
static void
zero_range (Engine *e, Item *item, guint64 offset, guint64 length)
{
  if (e->dst_known_zero)
    item->skipped += length;
  else if (e->dst->can_zero)
    zero_request (e, item, offset, length);
  else {
    g_autoptr (GBytes) zeroes = g_bytes_new_from_bytes (e->zero_bytes, 0, length);

    write_data (e, item, offset, zeroes);
  }
}

static gboolean
is_zero (const guint8 *p, gsize n)
{
  /* memcmp against itself shifted by one: as fast as memcmp gets. */
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* The data of @item, read: write it, its blocks of zeroes zeroed or
 * skipped (blocks aligned to multiples of the sparse size). */
static void
write_item (Engine *e, Item *item, GBytes *data)
{
  const guint8 *p;
  guint64 sparse = e->params.sparse, end = item->offset + item->length;
  guint64 seg = item->offset, at = item->offset;
  gboolean seg_zero = FALSE;

  if (!e->detect_zeroes) {
    write_data (e, item, item->offset, data);
    return;
  }
  p = g_bytes_get_data (data, NULL);
  while (at < end) {
    guint64 block_end = MIN (end, (at / sparse + 1) * sparse);
    gboolean zero = is_zero (p + (at - item->offset), block_end - at);

    if (at > seg && zero != seg_zero) {
      if (seg_zero)
        zero_range (e, item, seg, at - seg);
      else {
        g_autoptr (GBytes) slice = g_bytes_new_from_bytes (data, seg - item->offset, at - seg);

        write_data (e, item, seg, slice);
      }
      seg = at;
    }
    seg_zero = zero;
    at = block_end;
  }
  if (seg_zero)
    zero_range (e, item, seg, end - seg);
  else if (seg == item->offset)
    write_data (e, item, seg, data);    /* all data: the buffer read, as is */
  else {
    g_autoptr (GBytes) slice = g_bytes_new_from_bytes (data, seg - item->offset, end - seg);

    write_data (e, item, seg, slice);
  }
}

/* A stream destination: write the item whose turn it is, one at a time. */
static void
stream_write_next (Engine *e)
{
  Item *item;

  if (e->writing || e->error || !(item = g_hash_table_lookup (e->ready, &e->write_next)))
    return;
  g_hash_table_steal (e->ready, &item->offset);
  item->parked = FALSE;
  e->writing = TRUE;
  write_data (e, item, item->offset, item->data);
  g_clear_pointer (&item->data, g_bytes_unref);
}

/* @item's data (or zeroes) waits for its turn on the stream. */
static void
park (Engine *e, Item *item, GBytes *data)
{
  item->data = data;
  item->parked = TRUE;
  g_hash_table_insert (e->ready, &item->offset, item);
}

/* ---- Reading and planning ------------------------------------------------ */

static Item *
item_new (Engine *e, guint64 offset, guint64 length, gboolean zero)
{
  Item *item = g_new0 (Item, 1);

  item->offset = offset;
  item->length = length;
  item->zero = zero;
  item->conn = e->next_conn++ % e->conns;
  e->items++;
  return item;
}

/* The next item to start, or NULL: all planned, or waiting for the
 * allocation map, or for the stream's previous read. */
static Item *
plan (Engine *e)
{
  GnbdRun *run;
  Item *item;
  guint64 length;

  if (e->src->kind == GNBD_SIDE_STREAM) {
    if (e->src_busy || e->src_eof)
      return NULL;
    e->src_busy = TRUE;
    /* Its offset and length are known once read. */
    return item_new (e, e->planned, e->request_size, FALSE);
  }
  if ((run = g_queue_peek_head (&e->runs))) {
    length = MIN (run->length, run->zero ? e->zero_max : e->request_size);
    item = item_new (e, e->planned, length, run->zero);
    e->planned += length;
    run->length -= length;
    if (run->length == 0)
      g_free (g_queue_pop_head (&e->runs));
    return item;
  }
  if (e->planned >= e->size || e->extents_on)
    return NULL;
  length = MIN (e->request_size, e->size - e->planned);
  item = item_new (e, e->planned, length, FALSE);
  e->planned += length;
  e->runs_end = e->planned;
  return item;
}

static void
start_item (Engine *e, Item *item)
{
  Op *op;

  if (!item->zero) {
    op = op_new (e, OP_READ, e->src, item);
    op->op.offset = item->offset;
    op->op.length = item->length;
    gnbd_side_read (e->src, &op->op, e->cancel);
    return;
  }
  /* A hole: never read. */
  item->pending++;
  if (e->dst->kind == GNBD_SIDE_STREAM)
    park (e, item, g_bytes_new_from_bytes (e->zero_bytes, 0, item->length));
  else if (e->dst->kind != GNBD_SIDE_NULL)
    zero_range (e, item, item->offset, item->length);
  else
    item->skipped = item->length;
  item_release (e, item);
}

/* Ask for the allocation map ahead of the items, while less than one
 * round of items is planned. */
static void
fetch_extents (Engine *e)
{
  Op *op;

  if (!e->extents_on || e->extents_busy || e->error || e->runs_end >= e->size ||
      e->runs_end - e->planned >= (guint64) e->max_items * e->request_size)
    return;
  e->extents_busy = TRUE;
  op = op_new (e, OP_EXTENTS, e->src, NULL);
  op->op.offset = e->runs_end;
  op->op.length = MIN (e->size - e->runs_end, EXTENTS_MAX);
  gnbd_side_extents (e->src, &op->op, e->cancel);
}

static void
extents_done (Engine *e, Op *op, GError *error)
{
  guint64 covered = 0;

  e->extents_busy = FALSE;
  if (error && error->domain == GNBD_ERROR && !e->error) {
    /* The server cannot tell (no base:allocation, or it refused): read
     * everything from here on. */
    g_debug ("copy: no allocation map from the source (%s): reading everything",
             error->message);
    g_error_free (error);
    e->extents_on = FALSE;
    return;
  }
  if (error) {
    fail (e, error, "Querying the allocation of the source at offset %" G_GUINT64_FORMAT,
          op->op.offset);
    return;
  }
  for (guint i = 0; i < op->op.runs->len; i++) {
    GnbdRun *r = &g_array_index (op->op.runs, GnbdRun, i);
    GnbdRun *tail = g_queue_peek_tail (&e->runs);

    if (tail && tail->zero == r->zero)
      tail->length += r->length;
    else
      g_queue_push_tail (&e->runs, g_memdup2 (r, sizeof *r));
    covered += r->length;
  }
  if (covered == 0) {
    /* Nothing usable: read the next request's worth, and ask again. */
    GnbdRun r = { MIN (e->request_size, e->size - e->runs_end), FALSE };

    g_queue_push_tail (&e->runs, g_memdup2 (&r, sizeof r));
    covered = r.length;
  }
  e->runs_end += covered;
}

static void
read_done (Engine *e, Op *op, GError *error)
{
  Item *item = op->item;
  GBytes *data;
  gsize n;

  if (e->src->kind == GNBD_SIDE_STREAM)
    e->src_busy = FALSE;
  if (error) {
    fail (e, error, "Reading the source at offset %" G_GUINT64_FORMAT, item->offset);
    return;
  }
  if (e->error)
    return;
  data = g_steal_pointer (&op->op.bytes);
  n = g_bytes_get_size (data);

  if (e->src->kind == GNBD_SIDE_STREAM) {
    if (n < item->length)
      e->src_eof = TRUE;
    item->length = n;
    e->planned += n;
    if (e->dst->size_known && e->planned > e->dst->size) {
      fail (e, g_error_new (G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                            "the source is larger than the destination (%" G_GUINT64_FORMAT
                            " bytes)", e->dst->size),
            "Writing the destination at offset %" G_GUINT64_FORMAT, e->dst->size);
      g_bytes_unref (data);
      return;
    }
  }

  if (n == 0 || e->dst->kind == GNBD_SIDE_NULL)
    g_bytes_unref (data);
  else if (e->dst->kind == GNBD_SIDE_STREAM)
    park (e, item, data);
  else {
    write_item (e, item, data);
    g_bytes_unref (data);
  }
}

static void
write_done (Engine *e, Op *op, GError *error)
{
  if (e->dst->kind == GNBD_SIDE_STREAM) {
    e->writing = FALSE;
    e->write_next += op->item->length;
  }
  if (error)
    fail (e, error, "Writing the destination at offset %" G_GUINT64_FORMAT, op->op.offset);
}

static void
zero_done (Engine *e, Op *op, GError *error)
{
  if (error && (op->op.flags & GNBD_COMMAND_FLAG_FAST_ZERO) &&
      g_error_matches (error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED) && !e->error) {
    /* No fast zero here after all: let the server zero its own way. */
    g_error_free (error);
    e->fast_zero = FALSE;
    zero_request (e, op->item, op->op.offset, op->op.length);
    return;
  }
  if (error)
    fail (e, error, "Zeroing the destination at offset %" G_GUINT64_FORMAT, op->op.offset);
  else
    op->item->skipped += op->op.length;
}

/* ---- Setting up ------------------------------------------------------------ */

static void
start_copy (Engine *e)
{
  GnbdSide *src = e->src, *dst = e->dst;
  guint sparse = e->params.sparse;
  gboolean stream = dst->kind == GNBD_SIDE_STREAM;

  e->request_size = e->params.request_size;
  if (src->block_size_maximum)
    e->request_size = MIN (e->request_size, src->block_size_maximum);
  if (dst->block_size_maximum)
    e->request_size = MIN (e->request_size, dst->block_size_maximum);
  e->max_items = e->params.requests * e->conns;
  e->size_known = src->size_known;
  e->size = src->size;
  e->extents_on = e->params.use_extents && src->has_extents;
  /* A stream cannot skip: its zeroes are written, whatever was promised. */
  e->dst_known_zero = !stream && (e->params.destination_is_zero || dst->known_zero);
  e->fast_zero = dst->can_fast_zero;
  /* Zero requests may be large where they send no data. */
  e->zero_max = e->dst_known_zero || dst->can_zero ? ZERO_MAX : e->request_size;
  /* Detecting zeroes pays only where they are not written as data. */
  e->detect_zeroes = sparse > 0 && !stream && dst->kind != GNBD_SIDE_NULL &&
                     (e->dst_known_zero || dst->can_zero);
  e->zero_bytes = g_bytes_new_take (g_malloc0 (e->request_size), e->request_size);
  e->phase = PHASE_COPY;
  report (e);
}

static void
open_done (Engine *e, Op *op, GError *error)
{
  GnbdSide *src = e->src, *dst = e->dst;
  GnbdSide *side = op->op.side;

  if (error) {
    fail (e, error, "Opening the %s", side->name);
    return;
  }
  if (e->error)
    return;
  if (side == src) {
    /* The destination next: a file there takes the source's size. */
    Op *next = op_new (e, OP_OPEN, dst, NULL);

    gnbd_side_open (dst, src->size_known, src->size,
                    MIN (FILE_THREADS_MAX, e->params.requests * e->params.connections),
                    &next->op);
    return;
  }

  if (src->size_known && dst->size_known && dst->size < src->size) {
    fail (e, g_error_new (G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                          "it is smaller (%" G_GUINT64_FORMAT " bytes) than the source (%"
                          G_GUINT64_FORMAT " bytes)", dst->size, src->size),
          "Opening the destination");
    return;
  }
  /* Multi-conn only where every NBD side allows it and can be reached
   * again; as nbdcopy, files and streams do not limit it. */
  e->conns = e->params.connections;
  for (GnbdSide **s = (GnbdSide *[]) { src, dst, NULL }; *s; s++)
    if ((*s)->kind == GNBD_SIDE_CLIENT && (!(*s)->can_multi_conn || !(*s)->uri))
      e->conns = 1;
  gnbd_side_connect (src, e->conns, e->cancel, &op_new (e, OP_CONNECT, src, NULL)->op);
  gnbd_side_connect (dst, e->conns, e->cancel, &op_new (e, OP_CONNECT, dst, NULL)->op);
}

static void
connect_done (Engine *e, Op *op, GError *error)
{
  if (error) {
    fail (e, error, "Opening the %s", op->op.side->name);
    return;
  }
  if (!e->error && e->ops == 0)
    start_copy (e);
}

/* ---- The end ------------------------------------------------------------- */

static void
engine_free (Engine *e)
{
  if (e->cancel_handler)
    g_cancellable_disconnect (e->user_cancel, e->cancel_handler);
  g_clear_object (&e->user_cancel);
  g_clear_object (&e->cancel);
  gnbd_side_free (e->src);
  gnbd_side_free (e->dst);
  g_queue_clear_full (&e->runs, g_free);
  g_hash_table_unref (e->done);
  g_hash_table_unref (e->ready);
  g_clear_pointer (&e->zero_bytes, g_bytes_unref);
  g_clear_error (&e->error);
  g_main_context_unref (e->context);
  g_free (e);
}

static gboolean
engine_return (gpointer data)
{
  Engine *e = data;
  GTask *task = e->task;

  if (e->error)
    g_task_return_error (task, g_steal_pointer (&e->error));
  else
    g_task_return_boolean (task, TRUE);
  engine_free (e);
  g_object_unref (task);
  return G_SOURCE_REMOVE;
}

/* Every request is done: return from an idle source, out of every
 * callback. */
static void
engine_end (Engine *e)
{
  GSource *source = g_idle_source_new ();

  e->phase = PHASE_DONE;
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, engine_return, e, NULL);
  g_source_set_static_name (source, "[gnbd] copy done");
  g_source_attach (source, e->context);
  g_source_unref (source);
}

static void
finish_done (Engine *e, Op *op, GError *error)
{
  if (error)
    fail (e, error, "Finishing the %s", op->op.side->name);
}

static void
start_finish (Engine *e)
{
  guint64 total = e->size_known ? e->size : e->planned;

  if (e->copied != total) {
    /* Never report success without every byte: a bug, if ever seen. */
    fail (e, g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED,
                          "only %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                          " bytes were accounted for", e->copied, total),
          "Copying");
    return;
  }
  e->phase = PHASE_FINISH;
  gnbd_side_finish (e->src, FALSE, total, &op_new (e, OP_FINISH, e->src, NULL)->op);
  gnbd_side_finish (e->dst, e->params.flush, total, &op_new (e, OP_FINISH, e->dst, NULL)->op);
}

/* ---- The pump ------------------------------------------------------------ */

static gboolean
all_planned (Engine *e)
{
  return e->src->kind == GNBD_SIDE_STREAM ? e->src_eof : e->planned >= e->size;
}

/* Start what may start; notice the end.  Re-entered (an item done inside
 * the loop), it only asks the outer call for another round. */
static void
pump (Engine *e)
{
  Item *item;

  if (e->pumping) {
    e->repump = TRUE;
    return;
  }
  e->pumping = TRUE;
  do {
    e->repump = FALSE;
    if (!e->error && g_cancellable_is_cancelled (e->cancel))
      fail (e, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled"),
            "Copying");
    if (e->phase == PHASE_COPY && !e->error) {
      while (e->items < e->max_items && (item = plan (e)))
        start_item (e, item);
      fetch_extents (e);
      if (e->dst->kind == GNBD_SIDE_STREAM)
        stream_write_next (e);
      if (e->items == 0 && e->ops == 0 && all_planned (e))
        start_finish (e);
    }
  } while (e->repump);
  e->pumping = FALSE;

  if (e->ops == 0 && e->phase != PHASE_DONE &&
      (e->error || e->phase == PHASE_FINISH))
    engine_end (e);
}

/* Every side request ends here, in the copy's context. */
static void
op_done (GnbdSideOp *sop, GError *error)
{
  Op *op = (Op *) sop;
  Engine *e = op->e;

  e->ops--;
  /* Requests made from here go to the copy's context, whatever the
   * thread that iterates it pushed. */
  g_main_context_push_thread_default (e->context);
  switch (op->kind) {
  case OP_OPEN: open_done (e, op, error); break;
  case OP_CONNECT: connect_done (e, op, error); break;
  case OP_EXTENTS: extents_done (e, op, error); break;
  case OP_READ: read_done (e, op, error); break;
  case OP_WRITE: write_done (e, op, error); break;
  case OP_ZERO: zero_done (e, op, error); break;
  case OP_FINISH: finish_done (e, op, error); break;
  }
  if (op->item)
    item_release (e, op->item);
  op_free (op);
  pump (e);
  g_main_context_pop_thread_default (e->context);
}

static void
on_user_cancel (GCancellable *user_cancel, gpointer data)
{
  /* Any thread: our cancellable stops every request, and the next pump
   * notices. */
  g_cancellable_cancel (G_CANCELLABLE (data));
}

void
gnbd_copy_engine_run (const GnbdSideSpec *source, const GnbdSideSpec *destination,
                      const GnbdCopyParams *params, GnbdCopyProgressFunc progress,
                      gpointer progress_data, GTask *task)
{
  Engine *e = g_new0 (Engine, 1);
  GCancellable *user_cancel = g_task_get_cancellable (task);

  e->task = g_object_ref (task);
  e->context = g_main_context_ref_thread_default ();
  e->params = *params;
  /* 0: as many connections as CPUs, up to 4 (GnbdCopy:connections). */
  if (e->params.connections == 0)
    e->params.connections = CLAMP (g_get_num_processors (), 1, 4);
  e->progress = progress;
  e->progress_data = progress_data;
  e->cancel = g_cancellable_new ();
  e->src = gnbd_side_new (source, TRUE);
  e->dst = gnbd_side_new (destination, FALSE);
  e->conns = 1;
  g_queue_init (&e->runs);
  e->done = g_hash_table_new_full (g_int64_hash, g_int64_equal, NULL, g_free);
  e->ready = g_hash_table_new_full (g_int64_hash, g_int64_equal, NULL, item_free);
  e->phase = PHASE_SETUP;
  if (user_cancel) {
    e->user_cancel = g_object_ref (user_cancel);
    e->cancel_handler = g_cancellable_connect (user_cancel, G_CALLBACK (on_user_cancel),
                                               g_object_ref (e->cancel), g_object_unref);
  }
  gnbd_side_open (e->src, FALSE, 0,
                  MIN (FILE_THREADS_MAX, e->params.requests * e->params.connections),
                  &op_new (e, OP_OPEN, e->src, NULL)->op);
}
