/* progress.c: the copy's progress, for people (a bar redrawn in place on
 * a terminal, with the rate over the last few seconds and the time left)
 * and for programs (one line per update on a file descriptor; see
 * progress.h for the format).
 *
 * Progress is advisory: if its file descriptor stops taking lines (the
 * reader went away), the lines stop, with one warning, and the copy goes
 * on.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "gnbd-tool.h"
#include "progress.h"

/* The rate is measured over this many of the last samples (10 a second). */
#define RATE_SAMPLES 30

struct GtProgress {
  gboolean bar;
  int fd;
  gint64 start;             /* monotonic, microseconds */
  struct { gint64 t; guint64 done; } samples[RATE_SAMPLES];
  guint n_samples, next_sample;
};

GtProgress *
gt_progress_new (gboolean bar, int fd)
{
  GtProgress *p;

  bar = bar && isatty (STDERR_FILENO);
  if (!bar && fd < 0)
    return NULL;
  p = g_new0 (GtProgress, 1);
  p->bar = bar;
  p->fd = fd;
  p->start = g_get_monotonic_time ();
  return p;
}

static void
write_all (GtProgress *p, const char *s, gsize n)
{
  while (n > 0) {
    ssize_t r = write (p->fd, s, n);

    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      gt_error ("progress file descriptor: %s; no more progress lines",
                r < 0 ? g_strerror (errno) : "nothing written");
      p->fd = -1;
      return;
    }
    s += r;
    n -= r;
  }
}

static const char *const status_words[] = { "running", "done", "failed", "cancelled" };

static unsigned
percent_of (guint64 done, guint64 total, GtProgressStatus status)
{
  if (total == 0)
    return 0;
  /* Rounded down: 100 only once the copy is done; every byte may be
   * copied a little before (the destination's flush is still to come). */
  if (done >= total)
    return status == GT_PROGRESS_DONE ? 100 : 99;
  return (unsigned) MIN (done <= G_MAXUINT64 / 100 ? done * 100 / total : done / (total / 100),
                         99);
}

/* Bytes a second over the samples kept; 0 until there are two. */
static double
rate_of (GtProgress *p, gint64 now, guint64 done)
{
  guint oldest;
  gint64 dt;

  p->samples[p->next_sample].t = now;
  p->samples[p->next_sample].done = done;
  p->next_sample = (p->next_sample + 1) % RATE_SAMPLES;
  if (p->n_samples < RATE_SAMPLES)
    p->n_samples++;
  if (p->n_samples < 2)
    return 0;
  oldest = p->n_samples < RATE_SAMPLES ? 0 : p->next_sample;
  dt = now - p->samples[oldest].t;
  if (dt <= 0 || done < p->samples[oldest].done)
    return 0;
  return (double) (done - p->samples[oldest].done) * G_USEC_PER_SEC / dt;
}

static char *
format_duration (double seconds)
{
  guint64 s = (guint64) (seconds + 0.5);

  if (s >= 3600)
    return g_strdup_printf ("%" G_GUINT64_FORMAT ":%02u:%02u", s / 3600,
                            (unsigned) (s / 60 % 60), (unsigned) (s % 60));
  return g_strdup_printf ("%u:%02u", (unsigned) (s / 60), (unsigned) (s % 60));
}

static void
draw_bar (GtProgress *p, guint64 done, guint64 total, GtProgressStatus status, gint64 now)
{
  struct winsize ws = { 0 };
  unsigned columns = 80, width, filled;
  unsigned percent = percent_of (done, total, status);
  double elapsed = (double) (now - p->start) / G_USEC_PER_SEC;
  double rate = rate_of (p, now, done);
  g_autofree char *done_s = gt_human_size (done), *total_s = NULL, *rate_s = NULL;
  g_autofree char *tail = NULL, *when = NULL;
  GString *line = g_string_new ("\r");

  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
    columns = ws.ws_col;
  total_s = total ? gt_human_size (total) : g_strdup ("?");
  if (status == GT_PROGRESS_RUNNING) {
    rate_s = rate > 0 ? gt_human_size ((guint64) rate) : g_strdup ("-");
    when = rate > 0 && total > done ? format_duration ((total - done) / rate) : g_strdup ("-:--");
    tail = g_strdup_printf (" %3u%%  %s / %s  %s/s  ETA %s", percent, done_s, total_s,
                            rate_s, when);
  }
  else {
    /* The end: the average rate and the time taken. */
    rate_s = elapsed > 0 ? gt_human_size ((guint64) (done / elapsed)) : g_strdup ("-");
    when = format_duration (elapsed);
    tail = g_strdup_printf (" %3u%%  %s / %s  %s/s  in %s  %s", percent, done_s, total_s,
                            rate_s, when, status_words[status]);
  }
  /* The bar takes what the text leaves, within [10, 50]. */
  width = columns > strlen (tail) + 13 ? columns - strlen (tail) - 3 : 10;
  width = CLAMP (width, 10, 50);
  filled = total ? (unsigned) ((double) MIN (done, total) * width / total) : 0;
  g_string_append_c (line, '[');
  for (unsigned i = 0; i < width; i++)
    g_string_append_c (line, i < filled ? '#' : '.');
  g_string_append_c (line, ']');
  g_string_append (line, tail);
  /* Erase what a longer previous line left. */
  g_string_append (line, "\033[K");
  if (status != GT_PROGRESS_RUNNING)
    g_string_append_c (line, '\n');
  fputs (line->str, stderr);
  fflush (stderr);
  g_string_free (line, TRUE);
}

void
gt_progress_update (GtProgress *p, guint64 copied, guint64 skipped, guint64 total,
                    GtProgressStatus status)
{
  gint64 now = g_get_monotonic_time ();

  if (!p)
    return;
  if (p->fd >= 0) {
    g_autofree char *line =
      g_strdup_printf ("%u/100 copied=%" G_GUINT64_FORMAT " skipped=%" G_GUINT64_FORMAT
                       " total=%" G_GUINT64_FORMAT " seconds=%.2f status=%s\n",
                       percent_of (copied, total, status), copied, skipped, total,
                       (double) (now - p->start) / G_USEC_PER_SEC, status_words[status]);

    write_all (p, line, strlen (line));
  }
  if (p->bar)
    draw_bar (p, copied, total, status, now);
}

void
gt_progress_free (GtProgress *p)
{
  g_free (p);
}
