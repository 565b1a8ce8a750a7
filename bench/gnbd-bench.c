/* gnbd-bench: one benchmark run through gnbd, the GObject/GIO library, or
 * through libnbd-core's synchronous calls, for the gnbd rows of the
 * benchmark (bench/gnbd.py runs it beside bench-core and bench-libnbd and
 * writes its section of bench/RESULTS.md).
 *
 * Connects to a server that is already listening (bench/gnbd.py starts the
 * sink server) and runs one workload, then prints one line of key=value
 * figures in bench.c's format, so the same parser reads both.
 *
 *   gnbd-bench --connect SOCKET [--api gnbd|gnbd-sync|core-sync]
 *              [--workload randread|randwrite|seqwrite] [--bs SIZE] [--qd N]
 *              [--duration SECONDS | --requests N] [--no-writer]
 *              [--export-size SIZE]
 *
 * --api gnbd (the default): gnbd_client_pread_async/pwrite_async with QD
 *   requests in flight, on a GMainLoop of this thread's default context;
 *   each completion issues the next request from its callback, as a GIO
 *   program does.  Writes send one GBytes (g_bytes_new_static over one
 *   buffer, never copied) through the concurrent writer, the GTask writer,
 *   unless --no-writer.
 * --api gnbd-sync: gnbd_client_pread/pwrite, one at a time (QD 1).
 * --api core-sync: libnbd-core's nbd_pread/nbd_pwrite, one at a time: what
 *   gnbd-sync is compared with.
 * --requests runs a fixed number of requests with no clock in the loop (for
 *   callgrind and strace: a long run minus a short run is one request's
 *   cost).  Random offsets come from bench.c's xorshift64*.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnbd/gnbd.h>
#include <libnbd.h>

#define MIB (1024.0 * 1024.0)

enum api { API_GNBD, API_GNBD_SYNC, API_CORE_SYNC };
static const char *const api_names[] = { "gnbd", "gnbd-sync", "core-sync" };
enum workload { W_RANDREAD, W_RANDWRITE, W_SEQWRITE };
static const char *const workload_names[] = { "randread", "randwrite", "seqwrite" };

typedef struct {
  enum api api;
  enum workload workload;
  const char *connect;
  guint64 bs;
  guint qd;
  double duration;
  guint64 requests;             /* 0: run for duration */
  gboolean writer;
  guint64 export_size;
} Options;

typedef struct {
  const Options *o;
  GnbdClient *client;
  struct nbd_handle *h;
  GBytes *payload;              /* every write's data */
  guint64 size, seq, rng;
  guint64 issued, completed, stop_at;
  guint in_flight;
  gboolean issuing;
  double deadline, t_end;
  GError *error;
} Bench;

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static G_NORETURN void
die (const char *what, const char *msg)
{
  fprintf (stderr, "gnbd-bench: %s: %s\n", what, msg ? msg : "(no message)");
  exit (1);
}

/* The next request's offset, and whether it reads. */
static guint64
next_offset (Bench *b, gboolean *rd)
{
  const Options *o = b->o;
  guint64 off;

  if (o->workload == W_SEQWRITE) {
    if (b->seq + o->bs > b->size)
      b->seq = 0;
    off = b->seq;
    b->seq += o->bs;
  }
  else {
    /* xorshift64*, as bench.c: the same offsets for every library. */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    off = (b->rng * G_GUINT64_CONSTANT (2685821657736338717) % (b->size / o->bs)) * o->bs;
  }
  *rd = o->workload == W_RANDREAD;
  return off;
}

/* ---- gnbd, asynchronous --------------------------------------------------- */

static void issue_async (Bench *b);

static void
request_done (Bench *b)
{
  b->in_flight--;
  b->completed++;
  if (b->issuing && b->o->requests == 0 && now () >= b->deadline)
    b->issuing = FALSE;
  if (b->issuing && b->error == NULL)
    issue_async (b);
}

static void
read_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Bench *b = user_data;
  GError *error = NULL;
  GBytes *data = gnbd_client_pread_finish (GNBD_CLIENT (object), result, &error);

  if (data == NULL && b->error == NULL)
    b->error = error;
  else if (data == NULL)
    g_error_free (error);
  g_clear_pointer (&data, g_bytes_unref);
  request_done (b);
}

static void
write_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Bench *b = user_data;
  GError *error = NULL;

  if (!gnbd_client_pwrite_finish (GNBD_CLIENT (object), result, &error)) {
    if (b->error == NULL)
      b->error = error;
    else
      g_error_free (error);
  }
  request_done (b);
}

static void
issue_async (Bench *b)
{
  gboolean rd;
  guint64 off = next_offset (b, &rd);

  if (rd)
    gnbd_client_pread_async (b->client, off, b->o->bs, GNBD_COMMAND_FLAG_NONE, NULL,
                             read_done, b);
  else
    gnbd_client_pwrite_async (b->client, b->payload, off, GNBD_COMMAND_FLAG_NONE, NULL,
                              write_done, b);
  b->in_flight++;
  b->issued++;
  if (b->o->requests && b->issued == b->stop_at)
    b->issuing = FALSE;
}

/* Keep QD in flight until the deadline (or until @count were issued),
 * then drain. */
static void
run_async (Bench *b, double seconds, guint64 count)
{
  b->issuing = TRUE;
  b->deadline = now () + seconds;
  b->stop_at = b->issued + count;
  for (guint i = 0; i < b->o->qd && b->issuing; i++)
    issue_async (b);
  while (b->in_flight > 0)
    g_main_context_iteration (NULL, TRUE);
  if (b->error)
    die ("request", b->error->message);
}

/* ---- One at a time: gnbd's sync calls, or the core's ---------------------- */

static void
run_sync (Bench *b, double seconds, guint64 count)
{
  g_autofree guint8 *buf = g_malloc (b->o->bs);
  double deadline = now () + seconds;
  g_autoptr (GError) error = NULL;

  for (guint64 i = 0; count ? i < count : now () < deadline; i++) {
    gboolean rd, ok;
    guint64 off = next_offset (b, &rd);

    if (b->o->api == API_CORE_SYNC) {
      ok = (rd ? nbd_pread (b->h, buf, b->o->bs, off, 0)
               : nbd_pwrite (b->h, buf, b->o->bs, off, 0)) == 0;
      if (!ok)
        die (rd ? "nbd_pread" : "nbd_pwrite", nbd_get_error ());
    }
    else if (rd) {
      GBytes *data = gnbd_client_pread (b->client, off, b->o->bs, GNBD_COMMAND_FLAG_NONE,
                                        NULL, &error);
      if (data == NULL)
        die ("gnbd_client_pread", error->message);
      g_bytes_unref (data);
    }
    else if (!gnbd_client_pwrite (b->client, b->payload, off, GNBD_COMMAND_FLAG_NONE,
                                  NULL, &error))
      die ("gnbd_client_pwrite", error->message);
    b->issued++;
    b->completed++;
  }
}

static void
run_phase (Bench *b, double seconds, guint64 count)
{
  if (b->o->api == API_GNBD)
    run_async (b, seconds, count);
  else
    run_sync (b, seconds, count);
}

/* ---- Options ---------------------------------------------------------------- */

static guint64
parse_size (const char *s)
{
  char *end;
  guint64 v = g_ascii_strtoull (s, &end, 0);

  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  }
  if (*end || v == 0) {
    fprintf (stderr, "gnbd-bench: bad size: %s\n", s);
    exit (2);
  }
  return v;
}

static G_NORETURN void
usage (void)
{
  fprintf (stderr,
           "usage: gnbd-bench --connect SOCKET [--api gnbd|gnbd-sync|core-sync]\n"
           "                  [--workload randread|randwrite|seqwrite] [--bs SIZE] [--qd N]\n"
           "                  [--duration SECONDS | --requests N] [--no-writer]\n"
           "                  [--export-size SIZE]\n");
  exit (2);
}

static int
pick (const char *v, const char *const *names, int n)
{
  for (int i = 0; i < n; i++)
    if (v && !strcmp (v, names[i]))
      return i;
  usage ();
}

static void
parse_options (int argc, char *argv[], Options *o)
{
  *o = (Options) {
    .api = API_GNBD, .workload = W_RANDREAD, .bs = 4096, .qd = 64, .duration = 1.0,
    .writer = TRUE, .export_size = G_GUINT64_CONSTANT (1) << 30,
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (!strcmp (a, "--no-writer")) {
      o->writer = FALSE;
      continue;
    }
    if (v == NULL)
      usage ();
    i++;
    if (!strcmp (a, "--connect"))
      o->connect = v;
    else if (!strcmp (a, "--api"))
      o->api = pick (v, api_names, G_N_ELEMENTS (api_names));
    else if (!strcmp (a, "--workload"))
      o->workload = pick (v, workload_names, G_N_ELEMENTS (workload_names));
    else if (!strcmp (a, "--bs"))
      o->bs = parse_size (v);
    else if (!strcmp (a, "--qd"))
      o->qd = (guint) g_ascii_strtoull (v, NULL, 10);
    else if (!strcmp (a, "--duration"))
      o->duration = g_ascii_strtod (v, NULL);
    else if (!strcmp (a, "--requests"))
      o->requests = g_ascii_strtoull (v, NULL, 10);
    else if (!strcmp (a, "--export-size"))
      o->export_size = parse_size (v);
    else
      usage ();
  }
  if (o->connect == NULL || o->qd == 0 || o->duration <= 0 || o->bs > o->export_size)
    usage ();
  /* The sync calls are one at a time by nature. */
  if (o->api != API_GNBD)
    o->qd = 1;
}

int
main (int argc, char *argv[])
{
  Options o;
  Bench b = { .o = &o, .rng = G_GUINT64_CONSTANT (0x9e3779b97f4a7c15) };
  g_autofree guint8 *wbuf = NULL;
  const char *lib, *version;
  guint64 completed0;
  double t0;

  parse_options (argc, argv, &o);
  wbuf = g_malloc0 (o.bs);
  b.payload = g_bytes_new_static (wbuf, o.bs);

  if (o.api == API_CORE_SYNC) {
    b.h = nbd_create ();
    if (b.h == NULL || nbd_connect_unix (b.h, o.connect) == -1)
      die ("nbd_connect_unix", nbd_get_error ());
    b.size = (guint64) nbd_get_size (b.h);
    lib = nbd_get_package_name (b.h);
    version = nbd_get_version (b.h);
  }
  else {
    g_autoptr (GError) error = NULL;

    b.client = g_object_new (GNBD_TYPE_CLIENT, "concurrent-writer", o.writer, NULL);
    if (!gnbd_client_connect_unix (b.client, o.connect, NULL, &error))
      die ("gnbd_client_connect_unix", error->message);
    g_object_get (b.client, "size", &b.size, NULL);
    lib = "gnbd";
    version = PACKAGE_VERSION;
  }
  b.size = MIN (b.size, o.export_size);
  if (b.size < o.bs)
    die ("connect", "the export is smaller than one request");

  /* Warm up (caches, the allocator, the writer's thread) for a tenth of the
   * measured time, 0.1 s at most, or a tenth of the requests. */
  run_phase (&b, MIN (o.duration / 10, 0.1), o.requests ? MAX (o.requests / 10, 1) : 0);
  completed0 = b.completed;
  t0 = now ();
  run_phase (&b, o.duration, o.requests);
  b.t_end = now ();

  printf ("lib=%s version=%s server=external transport=unix conns=1 workload=%s bs=%" PRIu64
          " qd=%u writer=%d pin=-1 api=%s ops=%" PRIu64 " secs=%.6f ops_s=%.1f mib_s=%.2f\n",
          lib, version, workload_names[o.workload], o.bs, o.qd,
          o.api != API_CORE_SYNC && o.writer, api_names[o.api], b.completed - completed0,
          b.t_end - t0, (b.completed - completed0) / (b.t_end - t0),
          (b.completed - completed0) * (double) o.bs / MIB / (b.t_end - t0));
  fflush (stdout);

  if (b.client) {
    g_autoptr (GError) error = NULL;

    if (!gnbd_client_shutdown (b.client, NULL, &error))
      die ("gnbd_client_shutdown", error->message);
    g_object_unref (b.client);
  }
  if (b.h)
    nbd_close (b.h);
  g_bytes_unref (b.payload);
  return 0;
}
