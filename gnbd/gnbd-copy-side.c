/* gnbd-copy-side.c: the I/O of each kind of side of a copy: an NBD export
 * (one GnbdClient per connection), a local file or block device, a GIO
 * stream, or nothing.
 *
 * Owns opening a side, its facts (size, holes, zeroing), and each request
 * the engine makes of it; never decides what to copy (gnbd-copy-engine.c
 * does).  Every request completes by calling its op's done function in the
 * copy's context, never inside the call that made it: a file's system
 * calls run on the side's thread pool, and their results come back through
 * an idle source.  Errors carry the cause only; the engine says which side
 * and offset.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include <gio/gunixinputstream.h>
#include <gio/gunixoutputstream.h>

#include "gnbd-copy-side-private.h"
#include "gnbd-tsan-private.h"

/* base:allocation: the range reads as zeroes. */
#define STATE_ZERO 2

GnbdSide *
gnbd_side_new (const GnbdSideSpec *spec, gboolean is_source)
{
  GnbdSide *side = g_new0 (GnbdSide, 1);

  side->kind = spec->kind;
  side->is_source = is_source;
  side->name = is_source ? "source" : "destination";
  side->context = g_main_context_ref_thread_default ();
  side->fd = -1;
  switch (spec->kind) {
  case GNBD_SIDE_CLIENT:
    side->clients = g_ptr_array_new_with_free_func (g_object_unref);
    g_ptr_array_add (side->clients, g_object_ref (spec->client));
    side->uri = g_strdup (spec->uri);
    break;
  case GNBD_SIDE_FILE:
    side->file = g_object_ref (spec->file);
    break;
  case GNBD_SIDE_STREAM:
    if (is_source)
      side->in = G_INPUT_STREAM (g_object_ref (spec->stream));
    else
      side->out = G_OUTPUT_STREAM (g_object_ref (spec->stream));
    break;
  case GNBD_SIDE_NULL:
  case GNBD_SIDE_UNSET:
    break;
  }
  return side;
}

/* Every request is done by now: the pool is idle. */
void
gnbd_side_free (GnbdSide *side)
{
  if (side->pool)
    g_thread_pool_free (side->pool, FALSE, TRUE);
  if (side->fd >= 0)
    close (side->fd);
  g_clear_pointer (&side->clients, g_ptr_array_unref);
  g_free (side->uri);
  g_clear_object (&side->file);
  g_clear_object (&side->in);
  g_clear_object (&side->out);
  g_main_context_unref (side->context);
  g_free (side);
}

guint
gnbd_side_connections (GnbdSide *side)
{
  return side->kind == GNBD_SIDE_CLIENT ? side->clients->len : 1;
}

/* ---- Completing in the copy's context ------------------------------------ */

typedef struct {
  GnbdSideOp *op;
  GError *error;
} Completion;

static gboolean
completion_run (gpointer data)
{
  Completion *c = data;

  GNBD_TAKEOVER (c);
  c->op->done (c->op, g_steal_pointer (&c->error));
  return G_SOURCE_REMOVE;
}

static void
completion_free (gpointer data)
{
  Completion *c = data;

  g_clear_error (&c->error);
  g_free (c);
}

/* Any thread: @op is done, with @error (transfer full) or not. */
static void
complete_later (GnbdSide *side, GnbdSideOp *op, GError *error)
{
  Completion *c = g_new (Completion, 1);
  GSource *source = g_idle_source_new ();
  GMainContext *context = side->context;   /* not side's after the handoff */

  c->op = op;
  c->error = error;
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, completion_run, c, completion_free);
  g_source_set_static_name (source, "[gnbd] copy request done");
  /* What the pool's thread wrote (the side, the op) goes with it. */
  GNBD_HANDOFF (c);
  g_source_attach (source, context);
  g_source_unref (source);
}

static GError *
errno_error (int err, const char *what)
{
  return g_error_new (G_IO_ERROR, g_io_error_from_errno (err), "%s: %s", what,
                      g_strerror (err));
}

/* ---- Files: system calls on the side's pool ------------------------------ */

typedef enum {
  JOB_OPEN,
  JOB_READ,
  JOB_WRITE,
  JOB_ZERO,
  JOB_EXTENTS,
  JOB_FINISH,
} JobKind;

typedef struct {
  JobKind kind;
  GnbdSideOp *op;
  gboolean size_known;          /* OPEN */
  guint64 size;                 /* OPEN; FINISH: the total */
  gboolean flush;               /* FINISH */
} FileJob;

static const guint8 zeroes[64 * 1024];

static GError *
file_pread (int fd, guint8 *buf, gsize count, guint64 offset)
{
  while (count > 0) {
    ssize_t r = pread (fd, buf, count, (off_t) offset);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return errno_error (errno, "pread");
    if (r == 0)
      return g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED,
                          "the file ended at offset %" G_GUINT64_FORMAT
                          ", before its size (did it shrink during the copy?)", offset);
    buf += r;
    count -= r;
    offset += r;
  }
  return NULL;
}

static GError *
file_pwrite (int fd, const guint8 *buf, gsize count, guint64 offset)
{
  while (count > 0) {
    ssize_t r = pwrite (fd, buf, count, (off_t) offset);

    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return errno_error (errno, "pwrite");
    buf += r;
    count -= r;
    offset += r;
  }
  return NULL;
}

/* Zero without data if the file system or device can (a punched hole reads
 * as zeroes), else write zeroes. */
static GError *
file_zero (int fd, guint64 offset, guint64 length)
{
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset,
                 (off_t) length) == 0)
    return NULL;
  if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
    return errno_error (errno, "fallocate (punch hole)");
  if (fallocate (fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t) offset,
                 (off_t) length) == 0)
    return NULL;
  if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
    return errno_error (errno, "fallocate (zero range)");
  while (length > 0) {
    gsize n = MIN (length, sizeof zeroes);
    GError *error = file_pwrite (fd, zeroes, n, offset);

    if (error)
      return error;
    offset += n;
    length -= n;
  }
  return NULL;
}

/* The data and holes of [offset, offset + length) by SEEK_DATA/SEEK_HOLE;
 * a file system without them reports all data. */
static GError *
file_extents (int fd, guint64 offset, guint64 length, GArray *runs)
{
  guint64 end = offset + length;

  while (offset < end) {
    off_t data = lseek (fd, (off_t) offset, SEEK_DATA);
    off_t hole;
    GnbdRun run;

    if (data < 0 && errno == ENXIO)
      data = (off_t) end;         /* a hole to the end of the file */
    else if (data < 0 && errno == EINVAL) {
      run = (GnbdRun) { end - offset, FALSE };
      g_array_append_val (runs, run);
      return NULL;
    }
    else if (data < 0)
      return errno_error (errno, "lseek (SEEK_DATA)");
    if ((guint64) data > offset) {
      run = (GnbdRun) { MIN ((guint64) data, end) - offset, TRUE };
      g_array_append_val (runs, run);
      offset += run.length;
      if (offset >= end)
        break;
    }
    hole = lseek (fd, (off_t) offset, SEEK_HOLE);
    if (hole < 0)
      return errno_error (errno, "lseek (SEEK_HOLE)");
    run = (GnbdRun) { MIN ((guint64) hole, end) - offset, FALSE };
    if (run.length == 0)          /* the file changed under us: say data */
      run.length = end - offset;
    g_array_append_val (runs, run);
    offset += run.length;
  }
  return NULL;
}

static guint64
block_device_size (int fd, GError **error)
{
  guint64 size;

  if (ioctl (fd, BLKGETSIZE64, &size) == -1) {
    g_propagate_error (error, errno_error (errno, "ioctl (BLKGETSIZE64)"));
    return 0;
  }
  return size;
}

static GError *
file_open (GnbdSide *side, gboolean size_known, guint64 size)
{
  g_autofree char *path = g_file_get_path (side->file);
  struct stat st;
  GError *error = NULL;
  int fd;

  if (!path) {
    g_autofree char *uri = g_file_get_uri (side->file);

    return g_error_new (G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "%s is not a local file: give it as a stream instead", uri);
  }
  fd = side->is_source ? open (path, O_RDONLY | O_CLOEXEC)
                       : open (path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0)
    return g_error_new (G_IO_ERROR, g_io_error_from_errno (errno), "cannot open %s: %s", path,
                        g_strerror (errno));
  if (fstat (fd, &st) == -1) {
    error = errno_error (errno, "fstat");
    close (fd);
    return error;
  }

  if (S_ISREG (st.st_mode)) {
    side->fd = fd;
    side->can_zero = TRUE;
    if (side->is_source) {
      side->size_known = TRUE;
      side->size = (guint64) st.st_size;
      side->has_extents = TRUE;
      return NULL;
    }
    /* The destination: exactly the source's size, holes where it has
     * them.  An empty file extended reads as zeroes; one sized only at
     * the end (a stream source) is emptied first. */
    side->known_zero = st.st_size == 0 || !size_known;
    side->truncate_at_end = !size_known;
    side->size_known = size_known;
    side->size = size;
    if ((size_known && (guint64) st.st_size != size) || (!size_known && st.st_size != 0)) {
      if (ftruncate (fd, size_known ? (off_t) size : 0) == -1)
        return errno_error (errno, "ftruncate");
    }
    return NULL;
  }
  if (S_ISBLK (st.st_mode)) {
    side->fd = fd;
    side->can_zero = TRUE;
    side->size_known = TRUE;
    side->size = block_device_size (fd, &error);
    return error;
  }
  /* A FIFO, a character device, a socket: in order, as a stream. */
  side->kind = GNBD_SIDE_STREAM;
  if (side->is_source)
    side->in = g_unix_input_stream_new (fd, TRUE);
  else
    side->out = g_unix_output_stream_new (fd, TRUE);
  return NULL;
}

static void
file_job_run (gpointer data, gpointer user_data)
{
  FileJob *job = data;
  GnbdSide *side = user_data;
  GnbdSideOp *op;
  GError *error = NULL;

  GNBD_TAKEOVER (job);
  op = job->op;
  switch (job->kind) {
  case JOB_OPEN:
    error = file_open (side, job->size_known, job->size);
    break;
  case JOB_READ: {
    guint8 *buf = g_malloc (op->length);

    error = file_pread (side->fd, buf, op->length, op->offset);
    if (error)
      g_free (buf);
    else
      op->bytes = g_bytes_new_take (buf, op->length);
    break;
  }
  case JOB_WRITE: {
    gsize n;
    const guint8 *p = g_bytes_get_data (op->bytes, &n);

    error = file_pwrite (side->fd, p, n, op->offset);
    break;
  }
  case JOB_ZERO:
    error = file_zero (side->fd, op->offset, op->length);
    break;
  case JOB_EXTENTS:
    op->runs = g_array_new (FALSE, FALSE, sizeof (GnbdRun));
    error = file_extents (side->fd, op->offset, op->length, op->runs);
    break;
  case JOB_FINISH:
    if (side->truncate_at_end && ftruncate (side->fd, (off_t) job->size) == -1)
      error = errno_error (errno, "ftruncate");
    else if (job->flush && fsync (side->fd) == -1)
      error = errno_error (errno, "fsync");
    break;
  }
  complete_later (side, op, error);
  g_free (job);
}

/* The pool's thread gets the job, and what this thread wrote before. */
static void
job_push (GnbdSide *side, FileJob *job)
{
  GNBD_HANDOFF (job);
  g_thread_pool_push (side->pool, job, NULL);
}

static void
file_job_push (GnbdSide *side, JobKind kind, GnbdSideOp *op)
{
  FileJob *job = g_new0 (FileJob, 1);

  job->kind = kind;
  job->op = op;
  job_push (side, job);
}

/* ---- Opening ------------------------------------------------------------- */

static GError *
client_open (GnbdSide *side)
{
  GnbdClient *client = side->clients->pdata[0];
  gboolean read_only;

  g_object_get (client,
                "size", &side->size,
                "read-only", &read_only,
                "can-zero", &side->can_zero,
                "can-fast-zero", &side->can_fast_zero,
                "can-flush", &side->can_flush,
                "can-multi-conn", &side->can_multi_conn,
                "block-size-maximum", &side->block_size_maximum,
                NULL);
  side->size_known = TRUE;
  side->has_extents = side->is_source;
  if (!side->is_source && read_only)
    return g_error_new (G_IO_ERROR, G_IO_ERROR_READ_ONLY,
                        "the export is read-only: the copy cannot write to it");
  return NULL;
}

void
gnbd_side_open (GnbdSide *side, gboolean size_known, guint64 size, guint threads,
                GnbdSideOp *op)
{
  FileJob *job;

  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    complete_later (side, op, client_open (side));
    return;
  case GNBD_SIDE_FILE:
    /* Opening may block (a FIFO waits for its other end): on the pool. */
    side->pool = g_thread_pool_new (file_job_run, side, (gint) threads, FALSE, NULL);
    job = g_new0 (FileJob, 1);
    job->kind = JOB_OPEN;
    job->op = op;
    job->size_known = size_known;
    job->size = size;
    job_push (side, job);
    return;
  case GNBD_SIDE_NULL:
    side->size_known = size_known;
    side->size = size;
    side->known_zero = TRUE;
    complete_later (side, op, NULL);
    return;
  case GNBD_SIDE_STREAM:
    complete_later (side, op, NULL);
    return;
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}

/* ---- More connections ---------------------------------------------------- */

typedef struct {
  GnbdSide *side;
  GnbdSideOp *op;
  guint pending;
  GError *error;
} Connecting;

/* The new client gets @from's settings: every property that can be set. */
static void
copy_settings (GnbdClient *from, GnbdClient *to)
{
  guint n;
  GParamSpec **pspecs = g_object_class_list_properties (G_OBJECT_GET_CLASS (from), &n);

  for (guint i = 0; i < n; i++) {
    GParamSpec *p = pspecs[i];
    GValue v = G_VALUE_INIT;

    if ((p->flags & G_PARAM_READWRITE) != G_PARAM_READWRITE ||
        (p->flags & G_PARAM_CONSTRUCT_ONLY))
      continue;
    g_value_init (&v, p->value_type);
    g_object_get_property (G_OBJECT (from), p->name, &v);
    g_object_set_property (G_OBJECT (to), p->name, &v);
    g_value_unset (&v);
  }
  g_free (pspecs);
}

static void
on_connected (GObject *source, GAsyncResult *result, gpointer data)
{
  Connecting *c = data;
  GError *error = NULL;

  if (gnbd_client_connect_uri_finish (GNBD_CLIENT (source), result, &error)) {
    guint64 size;

    g_object_get (source, "size", &size, NULL);
    if (size != c->side->size)
      error = g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED,
                           "another connection to %s found an export of %" G_GUINT64_FORMAT
                           " bytes, not %" G_GUINT64_FORMAT ": not the same export",
                           c->side->uri, size, c->side->size);
  }
  else
    g_prefix_error (&error, "another connection to %s: ", c->side->uri);
  if (error && !c->error)
    c->error = error;
  else
    g_clear_error (&error);
  if (--c->pending == 0) {
    c->op->done (c->op, c->error);
    g_free (c);
  }
}

void
gnbd_side_connect (GnbdSide *side, guint n, GCancellable *cancellable, GnbdSideOp *op)
{
  Connecting *c;

  if (side->kind != GNBD_SIDE_CLIENT || n <= 1) {
    complete_later (side, op, NULL);
    return;
  }
  c = g_new0 (Connecting, 1);
  c->side = side;
  c->op = op;
  c->pending = n - 1;
  for (guint i = 1; i < n; i++) {
    GnbdClient *client = gnbd_client_new ();

    copy_settings (side->clients->pdata[0], client);
    g_ptr_array_add (side->clients, client);
    gnbd_client_connect_uri_async (client, side->uri, cancellable, on_connected, c);
  }
}

/* ---- Requests ------------------------------------------------------------ */

static GnbdClient *
op_client (GnbdSideOp *op)
{
  GnbdSide *side = op->side;

  return side->clients->pdata[op->conn % side->clients->len];
}

static void
on_client_read (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;

  op->bytes = gnbd_client_pread_finish (GNBD_CLIENT (source), result, &error);
  if (op->bytes && g_bytes_get_size (op->bytes) != op->length) {
    error = g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED,
                         "the read returned %" G_GSIZE_FORMAT " bytes, not %" G_GUINT64_FORMAT,
                         g_bytes_get_size (op->bytes), op->length);
    g_clear_pointer (&op->bytes, g_bytes_unref);
  }
  op->done (op, error);
}

typedef struct {
  GnbdSideOp *op;
  guint8 *buf;
} StreamRead;

static void
on_stream_read (GObject *source, GAsyncResult *result, gpointer data)
{
  StreamRead *s = data;
  GnbdSideOp *op = s->op;
  GError *error = NULL;
  gsize n = 0;

  if (g_input_stream_read_all_finish (G_INPUT_STREAM (source), result, &n, &error))
    op->bytes = g_bytes_new_take (g_realloc (s->buf, n), n);
  else
    g_free (s->buf);
  g_free (s);
  op->done (op, error);
}

/* @op->length bytes at @op->offset into @op->bytes.  A stream reads the
 * next bytes instead, and fewer at its end: op->bytes says how many. */
void
gnbd_side_read (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable)
{
  StreamRead *s;

  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    gnbd_client_pread_async (op_client (op), op->offset, op->length, GNBD_COMMAND_FLAG_NONE,
                             cancellable, on_client_read, op);
    return;
  case GNBD_SIDE_FILE:
    file_job_push (side, JOB_READ, op);
    return;
  case GNBD_SIDE_STREAM:
    s = g_new (StreamRead, 1);
    s->op = op;
    s->buf = g_malloc (op->length);
    g_input_stream_read_all_async (side->in, s->buf, op->length, G_PRIORITY_DEFAULT,
                                   cancellable, on_stream_read, s);
    return;
  case GNBD_SIDE_NULL:
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}

static void
on_client_extents (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;
  GPtrArray *extents = gnbd_client_block_status_finish (GNBD_CLIENT (source), result, &error);
  guint64 at = op->offset, end = op->offset + op->length;

  if (!extents) {
    op->done (op, error);
    return;
  }
  /* The server's extents from op->offset, clipped to the range asked
   * for; anything out of order ends the list (the rest is asked again). */
  op->runs = g_array_new (FALSE, FALSE, sizeof (GnbdRun));
  for (guint i = 0; i < extents->len && at < end; i++) {
    GnbdExtent *e = extents->pdata[i];
    GnbdRun run;

    if (gnbd_extent_get_offset (e) != at || gnbd_extent_get_length (e) == 0)
      break;
    run.length = MIN (gnbd_extent_get_length (e), end - at);
    run.zero = (gnbd_extent_get_flags (e) & STATE_ZERO) != 0;
    g_array_append_val (op->runs, run);
    at += run.length;
  }
  g_ptr_array_unref (extents);
  op->done (op, NULL);
}

/* The allocation map of [op->offset, + op->length) into @op->runs: maybe
 * less than asked for. */
void
gnbd_side_extents (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable)
{
  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    gnbd_client_block_status_async (side->clients->pdata[0], op->offset, op->length, NULL,
                                    GNBD_COMMAND_FLAG_NONE, cancellable, on_client_extents,
                                    op);
    return;
  case GNBD_SIDE_FILE:
    file_job_push (side, JOB_EXTENTS, op);
    return;
  case GNBD_SIDE_STREAM:
  case GNBD_SIDE_NULL:
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}

static void
on_client_written (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;

  gnbd_client_pwrite_finish (GNBD_CLIENT (source), result, &error);
  op->done (op, error);
}

static void
on_stream_written (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;

  g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error);
  op->done (op, error);
}

/* @op->bytes at @op->offset (a stream: next, in the order of the calls;
 * one at a time). */
void
gnbd_side_write (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable)
{
  gsize n;
  gconstpointer p;

  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    gnbd_client_pwrite_async (op_client (op), op->bytes, op->offset, GNBD_COMMAND_FLAG_NONE,
                              cancellable, on_client_written, op);
    return;
  case GNBD_SIDE_FILE:
    file_job_push (side, JOB_WRITE, op);
    return;
  case GNBD_SIDE_STREAM:
    p = g_bytes_get_data (op->bytes, &n);
    g_output_stream_write_all_async (side->out, p, n, G_PRIORITY_DEFAULT, cancellable,
                                     on_stream_written, op);
    return;
  case GNBD_SIDE_NULL:
    complete_later (side, op, NULL);
    return;
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}

static void
on_client_zeroed (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;

  gnbd_client_zero_finish (GNBD_CLIENT (source), result, &error);
  op->done (op, error);
}

/* Zeroes [op->offset, + op->length) without sending data, with
 * @op->flags; only a side with can_zero. */
void
gnbd_side_zero (GnbdSide *side, GnbdSideOp *op, GCancellable *cancellable)
{
  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    gnbd_client_zero_async (op_client (op), op->offset, op->length, op->flags, cancellable,
                            on_client_zeroed, op);
    return;
  case GNBD_SIDE_FILE:
    file_job_push (side, JOB_ZERO, op);
    return;
  case GNBD_SIDE_NULL:
    complete_later (side, op, NULL);
    return;
  case GNBD_SIDE_STREAM:
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}

/* ---- The end ------------------------------------------------------------- */

typedef struct {
  GnbdSideOp *op;
  guint pending;
  GError *error;
} Finishing;

static void
finishing_step (Finishing *f, GError *error)
{
  if (error && !f->error)
    f->error = error;
  else
    g_clear_error (&error);
  if (--f->pending == 0) {
    complete_later (f->op->side, f->op, f->error);
    g_free (f);
  }
}

static void
on_extra_shut_down (GObject *source, GAsyncResult *result, gpointer data)
{
  /* The data is safe by now (flushed, or not asked to be): a failed
   * goodbye on an extra connection changes nothing. */
  gnbd_client_shutdown_finish (GNBD_CLIENT (source), result, NULL);
  finishing_step (data, NULL);
}

static void
shut_extras_down (GnbdSide *side, Finishing *f)
{
  for (guint i = 1; i < side->clients->len; i++) {
    f->pending++;
    gnbd_client_shutdown_async (side->clients->pdata[i], NULL, on_extra_shut_down, f);
  }
}

static void
on_client_flushed (GObject *source, GAsyncResult *result, gpointer data)
{
  Finishing *f = data;
  GError *error = NULL;

  /* Flushed on one connection: with multi-conn, that covers the writes
   * every connection completed. */
  if (!gnbd_client_flush_finish (GNBD_CLIENT (source), result, &error))
    g_prefix_error (&error, "flush: ");
  else
    shut_extras_down (f->op->side, f);
  finishing_step (f, error);
}

static void
on_stream_flushed (GObject *source, GAsyncResult *result, gpointer data)
{
  GnbdSideOp *op = data;
  GError *error = NULL;

  if (!g_output_stream_flush_finish (G_OUTPUT_STREAM (source), result, &error))
    g_prefix_error (&error, "flush: ");
  op->done (op, error);
}

void
gnbd_side_finish (GnbdSide *side, gboolean flush, guint64 total, GnbdSideOp *op)
{
  Finishing *f;
  FileJob *job;

  switch (side->kind) {
  case GNBD_SIDE_CLIENT:
    f = g_new0 (Finishing, 1);
    f->op = op;
    f->pending = 1;
    if (flush && side->can_flush && !side->is_source) {
      f->pending++;
      gnbd_client_flush_async (side->clients->pdata[0], GNBD_COMMAND_FLAG_NONE, NULL,
                               on_client_flushed, f);
    }
    else
      shut_extras_down (side, f);
    finishing_step (f, NULL);
    return;
  case GNBD_SIDE_FILE:
    if (side->is_source || (!flush && !side->truncate_at_end)) {
      complete_later (side, op, NULL);
      return;
    }
    job = g_new0 (FileJob, 1);
    job->kind = JOB_FINISH;
    job->op = op;
    job->size = total;
    job->flush = flush;
    job_push (side, job);
    return;
  case GNBD_SIDE_STREAM:
    if (side->is_source)
      complete_later (side, op, NULL);
    else
      g_output_stream_flush_async (side->out, G_PRIORITY_DEFAULT, NULL, on_stream_flushed, op);
    return;
  case GNBD_SIDE_NULL:
    complete_later (side, op, NULL);
    return;
  case GNBD_SIDE_UNSET:
    break;
  }
  g_assert_not_reached ();
}
