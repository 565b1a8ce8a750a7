/* copy.c: `gnbd copy SRC DST`: a GnbdCopy between two sides, each an NBD
 * URI, a server run for the duration, a local file or block device, or
 * stdin/stdout; null: as the destination throws the data away.
 *
 * Owns turning the command line into a GnbdCopy, running it on a main loop
 * (progress and signals arrive there), and how it ended: a failure names
 * the side, the offset and the cause (GnbdCopy's message); SIGINT or
 * SIGTERM cancels the copy, which then stops cleanly, and the tool says
 * how far the destination holds the source.
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <gio/gunixinputstream.h>
#include <gio/gunixoutputstream.h>
#include <glib-unix.h>

#include "gnbd-tool.h"
#include "progress.h"

static const char usage[] =
  "Usage: gnbd copy [OPTIONS] SRC DST\n"
  "\n"
  "Copy everything from SRC to DST, keeping holes.  Each side is an NBD URI,\n"
  "a server run for the duration ([ CMD ARGS ... ], by socket activation), a\n"
  "local file or block device, or - for stdin (SRC) / stdout (DST).  DST may\n"
  "be null: to read SRC and throw the data away.\n"
  "\n"
  "Options:\n"
  "  -C, --connections=N      connections to each NBD side when both allow\n"
  "                           multi-conn (default: the CPUs, at most 4; a\n"
  "                           [ CMD ] side has one)\n"
  "  -R, --requests=N         requests in flight per connection (default 64)\n"
  "      --request-size=SIZE  largest read or write (default 256K, at most 32M)\n"
  "  -S, --sparse=SIZE        blocks of zeroes this large are not written as\n"
  "                           data (default 4K; 0: off)\n"
  "      --no-extents         read the holes of SRC too (ignore its block status)\n"
  "      --flush              flush DST to stable storage at the end\n"
  "      --destination-is-zero, --target-is-zero\n"
  "                           DST already reads as zeroes: skip holes entirely\n"
  "  -p, --progress           a progress bar on stderr, if it is a terminal\n"
  "      --progress=FD        progress lines on file descriptor FD:\n"
  "                           PERCENT/100 copied=N skipped=N total=N seconds=S status=W\n"
  "  -v, --verbose            say what is copied, with what settings, and how it went\n"
  "  -h, --help               show this help\n"
  "SIZE takes a suffix K, M, G or T (powers of 1024).\n"
  "\n"
  "Exit status: 0 done, 1 failure (the message names the side and offset),\n"
  "3 bad command line, 130 interrupted (SIGINT), 143 terminated (SIGTERM).\n";

enum {
  OPT_CONNECTIONS = 1, OPT_REQUESTS, OPT_REQUEST_SIZE, OPT_SPARSE, OPT_NO_EXTENTS, OPT_FLUSH,
  OPT_DESTINATION_IS_ZERO, OPT_PROGRESS, OPT_VERBOSE, OPT_HELP,
};

static const GtOption options[] = {
  { "connections", 'C', GT_ARG_REQUIRED, OPT_CONNECTIONS },
  { "requests", 'R', GT_ARG_REQUIRED, OPT_REQUESTS },
  { "request-size", 0, GT_ARG_REQUIRED, OPT_REQUEST_SIZE },
  { "sparse", 'S', GT_ARG_REQUIRED, OPT_SPARSE },
  { "no-extents", 0, GT_ARG_NONE, OPT_NO_EXTENTS },
  { "flush", 0, GT_ARG_NONE, OPT_FLUSH },
  { "destination-is-zero", 0, GT_ARG_NONE, OPT_DESTINATION_IS_ZERO },
  { "target-is-zero", 0, GT_ARG_NONE, OPT_DESTINATION_IS_ZERO },
  { "progress", 'p', GT_ARG_OPTIONAL, OPT_PROGRESS },
  { "verbose", 'v', GT_ARG_NONE, OPT_VERBOSE },
  { "help", 'h', GT_ARG_NONE, OPT_HELP },
  { NULL },
};

/* GnbdCopy's limits (its properties' ranges). */
#define MAX_CONNECTIONS 64
#define MAX_REQUESTS 1024
#define MIN_REQUEST_SIZE 512
#define MAX_REQUEST_SIZE (32 * 1024 * 1024)

typedef struct {
  GnbdCopy *copy;
  GCancellable *cancellable;
  GMainLoop *loop;
  GtProgress *progress;
  GError *error;
  int signal;         /* the signal that cancelled the copy, or 0 */
  gboolean finished;
} Run;

/* One side opened: the client of an NBD side (shut down at the end). */
typedef struct {
  GtSide side;
  GnbdClient *client;
} Side;

/* Give GnbdCopy one side (checked by check_sides); FALSE with a message
 * printed if it cannot connect. */
static gboolean
open_side (GnbdCopy *copy, Side *s, gboolean source)
{
  const char *what = source ? "source" : "destination";
  g_autoptr (GError) error = NULL;
  g_autoptr (GFile) file = NULL;

  switch (s->side.kind) {
  case GT_SIDE_URI:
  case GT_SIDE_COMMAND:
    s->client = gt_connect (&s->side, NULL, NULL, &error);
    if (!s->client) {
      gt_error ("%s %s: %s", what, s->side.text, error->message);
      return FALSE;
    }
    /* A URI lets the copy open more connections (multi-conn). */
    if (source)
      gnbd_copy_set_source_client (copy, s->client,
                                   s->side.kind == GT_SIDE_URI ? s->side.text : NULL);
    else
      gnbd_copy_set_destination_client (copy, s->client,
                                        s->side.kind == GT_SIDE_URI ? s->side.text : NULL);
    return TRUE;
  case GT_SIDE_FILE:
    file = g_file_new_for_path (s->side.text);
    if (source)
      gnbd_copy_set_source_file (copy, file);
    else
      gnbd_copy_set_destination_file (copy, file);
    return TRUE;
  case GT_SIDE_STDIO:
    if (source) {
      g_autoptr (GInputStream) in = g_unix_input_stream_new (STDIN_FILENO, FALSE);

      gnbd_copy_set_source_stream (copy, in);
    }
    else {
      g_autoptr (GOutputStream) out = g_unix_output_stream_new (STDOUT_FILENO, FALSE);

      gnbd_copy_set_destination_stream (copy, out);
    }
    return TRUE;
  case GT_SIDE_NULL:
    gnbd_copy_set_destination_null (copy);
    return TRUE;
  }
  g_assert_not_reached ();
}

/* What the command line asks that cannot work, said before any server is
 * run or connected to; FALSE after a usage error. */
static gboolean
check_sides (const Side *src, const Side *dst, int progress_fd)
{
  if (src->side.kind == GT_SIDE_NULL) {
    gt_usage_error ("null: is a destination only");
    return FALSE;
  }
  if (dst->side.kind == GT_SIDE_STDIO && isatty (STDOUT_FILENO)) {
    gt_usage_error ("the destination is standard output, which is a terminal: "
                    "redirect it to a file or a pipe");
    return FALSE;
  }
  if (dst->side.kind == GT_SIDE_STDIO && progress_fd == STDOUT_FILENO) {
    gt_usage_error ("--progress=1 would mix progress lines into the data on standard output");
    return FALSE;
  }
  return TRUE;
}

static void
describe_side (const char *what, const Side *s)
{
  g_autofree char *human = NULL;
  gboolean multi_conn, fast_zero;
  guint64 size;

  if (!s->client) {
    g_printerr ("%s: %s: %s\n", gt_prog, what, s->side.text);
    return;
  }
  g_object_get (s->client, "size", &size, "can-multi-conn", &multi_conn, "can-fast-zero",
                &fast_zero, NULL);
  human = gt_human_size (size);
  g_printerr ("%s: %s: %s, %" G_GUINT64_FORMAT " bytes (%s), multi-conn %s, fast zero %s\n",
              gt_prog, what, s->side.text, size, human, multi_conn ? "yes" : "no",
              fast_zero ? "yes" : "no");
}

/* SIGINT or SIGTERM: cancel the copy, which stops cleanly. */
static void
interrupted (Run *run, int sig)
{
  if (run->signal) {
    /* A second one: the user means it. */
    gt_error ("interrupted again: exiting without waiting for the copy to stop");
    _exit (128 + sig);
  }
  run->signal = sig;
  g_cancellable_cancel (run->cancellable);
}

static gboolean
on_sigint (gpointer data)
{
  interrupted (data, SIGINT);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_sigterm (gpointer data)
{
  interrupted (data, SIGTERM);
  return G_SOURCE_CONTINUE;
}

static void
on_progress (GnbdCopy *copy, guint64 copied, guint64 total, gpointer data)
{
  Run *run = data;

  gt_progress_update (run->progress, copied, gnbd_copy_get_bytes_skipped (copy), total,
                      GT_PROGRESS_RUNNING);
}

static void
on_done (GObject *source, GAsyncResult *result, gpointer data)
{
  Run *run = data;

  gnbd_copy_run_finish (GNBD_COPY (source), result, &run->error);
  run->finished = TRUE;
  g_main_loop_quit (run->loop);
}

/* Set a GnbdCopy property from an option; FALSE after a usage error. */
static gboolean
size_option (GnbdCopy *copy, const char *property, const char *option, const char *value,
             guint64 min, guint64 max)
{
  guint64 v;

  if (!gt_parse_size (value, &v) || v < min || v > max) {
    g_autofree char *lo = gt_human_size (min), *hi = gt_human_size (max);

    gt_usage_error ("--%s: '%s' is not a size from %s to %s (suffixes K, M, G, T)", option,
                    value, lo, hi);
    return FALSE;
  }
  g_object_set (copy, property, (guint) v, NULL);
  return TRUE;
}

static gboolean
count_option (GnbdCopy *copy, const char *property, const char *option, const char *value,
              guint64 max)
{
  guint64 v;

  if (!gt_parse_count (value, 1, max, &v)) {
    gt_usage_error ("--%s: '%s' is not a number from 1 to %" G_GUINT64_FORMAT, option, value,
                    max);
    return FALSE;
  }
  g_object_set (copy, property, (guint) v, NULL);
  return TRUE;
}

/* --progress=FD: an open descriptor, not one of the tool's own streams. */
static gboolean
progress_fd_option (const char *value, int *fd)
{
  guint64 v;

  if (!gt_parse_count (value, 0, G_MAXINT, &v) || fcntl ((int) v, F_GETFD) == -1 ||
      v == STDIN_FILENO) {
    gt_usage_error ("--progress=%s: not an open file descriptor to write to", value);
    return FALSE;
  }
  *fd = (int) v;
  return TRUE;
}

/* Run the copy on a main loop with signals and progress; the exit code. */
static int
run_copy (Run *run, gboolean verbose)
{
  guint sigint, sigterm;
  gint64 start = g_get_monotonic_time ();
  GtProgressStatus status;
  guint64 copied, skipped, total;
  int code;

  run->loop = g_main_loop_new (NULL, FALSE);
  run->cancellable = g_cancellable_new ();
  sigint = g_unix_signal_add (SIGINT, on_sigint, run);
  sigterm = g_unix_signal_add (SIGTERM, on_sigterm, run);
  g_signal_connect (run->copy, "progress", G_CALLBACK (on_progress), run);

  gnbd_copy_run_async (run->copy, run->cancellable, on_done, run);
  /* The first line says the copy runs: a reader may now interrupt it. */
  gt_progress_update (run->progress, 0, 0, gnbd_copy_get_bytes_total (run->copy),
                      GT_PROGRESS_RUNNING);
  while (!run->finished)
    g_main_loop_run (run->loop);

  g_source_remove (sigint);
  g_source_remove (sigterm);
  copied = gnbd_copy_get_bytes_copied (run->copy);
  skipped = gnbd_copy_get_bytes_skipped (run->copy);
  total = gnbd_copy_get_bytes_total (run->copy);
  if (!run->error) {
    status = GT_PROGRESS_DONE;
    code = GT_EXIT_OK;
  }
  else if (g_error_matches (run->error, G_IO_ERROR, G_IO_ERROR_CANCELLED) && run->signal) {
    status = GT_PROGRESS_CANCELLED;
    code = 128 + run->signal;
  }
  else {
    status = GT_PROGRESS_FAILED;
    code = GT_EXIT_FAILED;
  }
  gt_progress_update (run->progress, copied, skipped, total, status);

  if (status == GT_PROGRESS_CANCELLED)
    gt_error ("interrupted by %s: the destination holds the source's first %" G_GUINT64_FORMAT
              " bytes", run->signal == SIGINT ? "SIGINT" : "SIGTERM", copied);
  else if (status == GT_PROGRESS_FAILED)
    gt_error ("%s", run->error->message);
  if (verbose) {
    double seconds = (double) (g_get_monotonic_time () - start) / G_USEC_PER_SEC;
    g_autofree char *rate = gt_human_size (seconds > 0 ? (guint64) (copied / seconds) : 0);

    g_printerr ("%s: %s %" G_GUINT64_FORMAT " bytes in %.2f s, %s/s; %" G_GUINT64_FORMAT
                " bytes of holes or zeroes not written as data\n", gt_prog,
                status == GT_PROGRESS_DONE ? "copied" : "stopped after", copied, seconds, rate,
                skipped);
  }
  return code;
}

int
gt_copy_main (int argc, char **argv)
{
  g_autoptr (GnbdCopy) copy = gnbd_copy_new ();
  Side sides[2] = { { { 0 } } };
  Run run = { .copy = copy };
  gboolean verbose = FALSE, bar = FALSE;
  int progress_fd = -1;
  const char *value;
  GtArgs a;
  int opt, code = GT_EXIT_USAGE;

  gt_prog = "gnbd copy";
  if (!gt_args_init (&a, argc, argv, 1))
    return GT_EXIT_USAGE;
  while ((opt = gt_next_option (&a, options, &value)) > 0) {
    gboolean ok = TRUE;

    switch (opt) {
    case OPT_CONNECTIONS:
      ok = count_option (copy, "connections", "connections", value, MAX_CONNECTIONS);
      break;
    case OPT_REQUESTS:
      ok = count_option (copy, "requests", "requests", value, MAX_REQUESTS);
      break;
    case OPT_REQUEST_SIZE:
      ok = size_option (copy, "request-size", "request-size", value, MIN_REQUEST_SIZE,
                        MAX_REQUEST_SIZE);
      break;
    case OPT_SPARSE:
      ok = size_option (copy, "sparse", "sparse", value, 0, MAX_REQUEST_SIZE);
      break;
    case OPT_NO_EXTENTS: g_object_set (copy, "use-extents", FALSE, NULL); break;
    case OPT_FLUSH: g_object_set (copy, "flush", TRUE, NULL); break;
    case OPT_DESTINATION_IS_ZERO: g_object_set (copy, "destination-is-zero", TRUE, NULL); break;
    case OPT_PROGRESS:
      if (value)
        ok = progress_fd_option (value, &progress_fd);
      else
        bar = TRUE;
      break;
    case OPT_VERBOSE: verbose = TRUE; break;
    case OPT_HELP:
      fputs (usage, stdout);
      code = gt_finish_output (GT_EXIT_OK);
      goto out;
    }
    if (!ok)
      goto out;
  }
  if (opt < 0)
    goto out;
  if (a.words->len != 2) {
    gt_usage_error ("give a source and a destination (%u operand%s given)", a.words->len,
                    a.words->len == 1 ? "" : "s");
    goto out;
  }
  sides[0].side = gt_side_from_word (a.words->pdata[0]);
  sides[1].side = gt_side_from_word (a.words->pdata[1]);
  if (!check_sides (&sides[0], &sides[1], progress_fd))
    goto out;
  /* A broken pipe is an error of the side that wrote to it, not a death. */
  signal (SIGPIPE, SIG_IGN);
  code = GT_EXIT_FAILED;
  if (!open_side (copy, &sides[0], TRUE) || !open_side (copy, &sides[1], FALSE))
    goto out;
  if (verbose) {
    guint connections, requests, request_size, sparse;
    gboolean extents;

    describe_side ("source", &sides[0]);
    describe_side ("destination", &sides[1]);
    g_object_get (copy, "connections", &connections, "requests", &requests, "request-size",
                  &request_size, "sparse", &sparse, "use-extents", &extents, NULL);
    if (connections == 0)       /* the default: GnbdCopy's rule */
      connections = CLAMP (g_get_num_processors (), 1, 4);
    g_printerr ("%s: up to %u connections, %u requests in flight on each, of up to %u bytes; "
                "zero detection in blocks of %u bytes (0: off); source extents %s\n", gt_prog,
                connections, requests, request_size, sparse, extents ? "used" : "ignored");
  }

  run.progress = gt_progress_new (bar, progress_fd);
  code = run_copy (&run, verbose);

 out:
  for (int i = 0; i < 2; i++)
    if (sides[i].client) {
      /* The data is all sent; a refused disconnect changes nothing. */
      gnbd_client_shutdown (sides[i].client, NULL, NULL);
      g_object_unref (sides[i].client);
    }
  gt_progress_free (run.progress);
  g_clear_error (&run.error);
  g_clear_object (&run.cancellable);
  g_clear_pointer (&run.loop, g_main_loop_unref);
  gt_args_clear (&a);
  return code;
}
