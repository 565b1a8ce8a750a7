/* bench: one benchmark run of an NBD client library, written against the
 * libnbd C API only (<libnbd.h>, nbd_* calls), so the same source builds
 * against libnbd-core (bench-core) and against the system's libnbd
 * (bench-libnbd).  bench/run.sh runs both, alternating, and writes
 * bench/RESULTS.md.
 *
 * A run starts its server (the project's sink-server, or nbdkit's memory or
 * null plugin) on a Unix socket in a private directory, or connects to one
 * given with --connect; keeps QD requests in flight with nbd_aio_pread /
 * nbd_aio_pwrite and completion callbacks that retire themselves, driven by
 * nbd_poll, as a libnbd program does; and prints one line of key=value
 * figures.  Requests are issued from the loop, never from a callback.
 *
 *   bench [--server sink|memory|null | --connect SOCKET] [--pin CPU]
 *         [--workload randread|randwrite|seqread|seqwrite|mixed] [--bs SIZE]
 *         [--qd N] [--read-pct P] [--duration SECONDS | --requests N]
 *         [--writer] [--export-size SIZE] [--sink PATH]
 *
 * --writer (libnbd-core only) sends through nbd_set_concurrent_writer: the
 * callback copies every byte into a ring and a writer thread of ours writes
 * the ring to the socket, the four documented steps as a user writes them.
 * --pin pins this process (and so its writer thread) and the server it
 * starts to one CPU, the same one.  --requests runs a fixed number of
 * requests with no clock in the loop (for callgrind and strace, where a
 * long run minus a short run gives the cost of one request).
 *
 * Transports: Unix sockets only for now; TCP on 127.0.0.1 and multi-conn
 * belong in struct options (transport, conns), start_server and connect_one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#ifndef SINK_SERVER_PATH
#define SINK_SERVER_PATH "sink-server"
#endif

#define MIB (1024.0 * 1024.0)

enum workload { W_RANDREAD, W_RANDWRITE, W_SEQREAD, W_SEQWRITE, W_MIXED };
static const char *const workload_names[] = {
  "randread", "randwrite", "seqread", "seqwrite", "mixed",
};

struct options {
  const char *server;           /* sink, memory, null; NULL with --connect */
  const char *connect;
  const char *sink_path;
  enum workload workload;
  uint32_t bs;
  int qd;
  int read_pct;                 /* mixed only */
  double duration;
  uint64_t requests;            /* 0: run for duration */
  bool writer;
  int pin;                      /* -1: not pinned */
  uint64_t export_size;
  /* Later: transport (unix, tcp 127.0.0.1) and conns (multi-conn). */
};

static void
die (const char *what)
{
  const char *msg = nbd_get_error ();

  fprintf (stderr, "bench: %s: %s\n", what, msg ? msg : "(no message)");
  exit (1);
}

static void
die_errno (const char *what)
{
  fprintf (stderr, "bench: %s: %s\n", what, strerror (errno));
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- The server ------------------------------------------------------- */

static char tmpdir[PATH_MAX];
static char sockpath[PATH_MAX + 8];
static char pidpath[PATH_MAX + 8];
static pid_t server_pid;

static void
pin_to (int cpu)
{
  cpu_set_t set;

  CPU_ZERO (&set);
  CPU_SET (cpu, &set);
  if (sched_setaffinity (0, sizeof set, &set) == -1)
    die_errno ("sched_setaffinity");
}

/* Wait until the server listens: 10 ms steps, 10 s at most.  nbdkit says
 * so by writing its PID file (probing it with a connection would make it
 * log an aborted handshake); the sink server is probed with connect(2). */
static void
wait_listening (const char *path, const char *pidfile)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };

  strcpy (sun.sun_path, path);
  for (int i = 0; i < 1000; i++) {
    int status;

    if (pidfile) {
      char buf[32];
      int fd = open (pidfile, O_RDONLY | O_CLOEXEC);
      ssize_t n = fd >= 0 ? read (fd, buf, sizeof buf) : -1;

      if (fd >= 0)
        close (fd);
      if (n > 0 && buf[n - 1] == '\n')
        return;
    }
    else {
      int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

      if (fd == -1)
        die_errno ("socket");
      if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0) {
        close (fd);
        return;
      }
      close (fd);
    }
    if (server_pid > 0 && waitpid (server_pid, &status, WNOHANG) == server_pid) {
      fprintf (stderr, "bench: the server exited before listening\n");
      server_pid = 0;
      exit (1);
    }
    usleep (10000);
  }
  fprintf (stderr, "bench: the server did not listen on %s within 10 s\n", path);
  exit (1);
}

static void
stop_server (void)
{
  int status;

  if (server_pid > 0) {
    kill (server_pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
      if (waitpid (server_pid, &status, WNOHANG) == server_pid) {
        server_pid = 0;
        break;
      }
      usleep (10000);
    }
    if (server_pid > 0) {
      kill (server_pid, SIGKILL);
      waitpid (server_pid, &status, 0);
      server_pid = 0;
    }
  }
  if (sockpath[0])
    unlink (sockpath);
  if (pidpath[0])
    unlink (pidpath);
  if (tmpdir[0])
    rmdir (tmpdir);
  sockpath[0] = pidpath[0] = tmpdir[0] = '\0';
}

static void
start_server (const struct options *o)
{
  const char *tmp = getenv ("TMPDIR");
  char size[32];
  const char *argv[16];
  int n = 0;

  snprintf (tmpdir, sizeof tmpdir, "%s/nbd-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp (tmpdir))
    die_errno ("mkdtemp");
  snprintf (sockpath, sizeof sockpath, "%s/sock", tmpdir);
  snprintf (pidpath, sizeof pidpath, "%s/pid", tmpdir);
  atexit (stop_server);

  if (!strcmp (o->server, "sink")) {
    snprintf (size, sizeof size, "%" PRIu64, o->export_size);
    argv[n++] = o->sink_path;
    argv[n++] = "--unix";
    argv[n++] = sockpath;
    argv[n++] = "--size";
    argv[n++] = size;
  }
  else {
    /* nbdkit's memory and null plugins, with their default thread pool. */
    snprintf (size, sizeof size, "size=%" PRIu64, o->export_size);
    argv[n++] = "nbdkit";
    argv[n++] = "-f";
    argv[n++] = "--exit-with-parent";
    argv[n++] = "-P";
    argv[n++] = pidpath;
    argv[n++] = "-U";
    argv[n++] = sockpath;
    argv[n++] = o->server;
    argv[n++] = size;
  }
  argv[n] = NULL;

  server_pid = fork ();
  if (server_pid == -1)
    die_errno ("fork");
  if (server_pid == 0) {
    prctl (PR_SET_PDEATHSIG, SIGTERM);
    execvp (argv[0], (char **) argv);
    fprintf (stderr, "bench: %s: %s\n", argv[0], strerror (errno));
    _exit (127);
  }
  wait_listening (sockpath, strcmp (o->server, "sink") ? pidpath : NULL);
}

/* ---- The concurrent writer: a ring and a thread ------------------------ */

#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
struct ring {
  unsigned char *buf;
  size_t cap;                   /* a power of 2 */
  _Atomic size_t head;          /* bytes ever queued (the callback) */
  _Atomic size_t tail;          /* bytes ever written (the thread) */
  _Atomic bool sleeping;
  _Atomic bool eof;             /* writer (NULL, 0): end of stream */
  _Atomic bool overflow;
  _Atomic bool stop;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct nbd_handle *h;
  int fd;
  pthread_t thread;
  _Atomic uint64_t writes;      /* writev calls */
  _Atomic uint64_t wakeups;     /* sleeps ended */
};

static void
ring_wake (struct ring *r)
{
  if (atomic_load (&r->sleeping)) {
    pthread_mutex_lock (&r->lock);
    pthread_cond_signal (&r->cond);
    pthread_mutex_unlock (&r->lock);
  }
}

/* The writer callback: runs under the handle lock, must not block. */
static void
ring_enqueue (void *data, const void *buf, size_t len)
{
  struct ring *r = data;
  size_t head, tail, off, first;

  if (!buf) {
    atomic_store (&r->eof, true);
    pthread_mutex_lock (&r->lock);
    pthread_cond_signal (&r->cond);
    pthread_mutex_unlock (&r->lock);
    return;
  }
  head = atomic_load_explicit (&r->head, memory_order_relaxed);
  tail = atomic_load_explicit (&r->tail, memory_order_acquire);
  if (len > r->cap - (head - tail)) {
    /* Cannot happen with the ring sized for twice QD requests (bytes the
     * thread wrote but has not yet counted, and the requests issued since
     * their replies came); the thread reports it, since the callback may
     * not call into the handle. */
    atomic_store (&r->overflow, true);
    ring_wake (r);
    return;
  }
  off = head & (r->cap - 1);
  first = len < r->cap - off ? len : r->cap - off;
  memcpy (r->buf + off, buf, first);
  memcpy (r->buf, (const char *) buf + first, len - first);
  atomic_store (&r->head, head + len);
  ring_wake (r);
}

static void *
ring_thread (void *arg)
{
  struct ring *r = arg;

  for (;;) {
    size_t tail = atomic_load_explicit (&r->tail, memory_order_relaxed);
    size_t head = atomic_load (&r->head);
    struct iovec iov[2];
    int n = 0;
    ssize_t w;

    if (atomic_load (&r->overflow)) {
      nbd_concurrent_writer_error (r->h, ENOBUFS);
      return NULL;
    }
    if (head == tail) {
      if (atomic_load (&r->eof) && atomic_load (&r->head) == tail) {
        shutdown (r->fd, SHUT_WR);
        return NULL;
      }
      if (atomic_load (&r->stop))
        return NULL;
      pthread_mutex_lock (&r->lock);
      atomic_store (&r->sleeping, true);
      while (atomic_load (&r->head) == tail && !atomic_load (&r->eof) &&
             !atomic_load (&r->stop) && !atomic_load (&r->overflow))
        pthread_cond_wait (&r->cond, &r->lock);
      atomic_store (&r->sleeping, false);
      pthread_mutex_unlock (&r->lock);
      atomic_fetch_add_explicit (&r->wakeups, 1, memory_order_relaxed);
      continue;
    }
    {
      size_t off = tail & (r->cap - 1), len = head - tail;
      size_t first = len < r->cap - off ? len : r->cap - off;

      iov[n].iov_base = r->buf + off;
      iov[n++].iov_len = first;
      if (len > first) {
        iov[n].iov_base = r->buf;
        iov[n++].iov_len = len - first;
      }
    }
    w = writev (r->fd, iov, n);
    atomic_fetch_add_explicit (&r->writes, 1, memory_order_relaxed);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = { .fd = r->fd, .events = POLLOUT };
        poll (&p, 1, -1);
        continue;
      }
      nbd_concurrent_writer_error (r->h, errno);
      return NULL;
    }
    atomic_store_explicit (&r->tail, tail + (size_t) w, memory_order_release);
  }
}

/* Steps 1-2 on a connected handle: the ring, the thread, the hook. */
static struct ring *
ring_start (struct nbd_handle *h, size_t need)
{
  struct ring *r = calloc (1, sizeof *r);
  size_t cap = 65536;

  if (!r)
    die_errno ("calloc");
  while (cap < need)
    cap *= 2;
  r->buf = malloc (cap);
  if (!r->buf)
    die_errno ("malloc");
  r->cap = cap;
  r->h = h;
  r->fd = nbd_aio_get_fd (h);
  if (r->fd == -1)
    die ("nbd_aio_get_fd");
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->cond, NULL);
  if (pthread_create (&r->thread, NULL, ring_thread, r) != 0)
    die_errno ("pthread_create");
  if (nbd_set_concurrent_writer (h, r, ring_enqueue) == -1)
    die ("nbd_set_concurrent_writer");
  return r;
}

/* Step 4: after nbd_shutdown, stop the thread (before nbd_close). */
static void
ring_stop (struct ring *r)
{
  atomic_store (&r->stop, true);
  pthread_mutex_lock (&r->lock);
  pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
  pthread_join (r->thread, NULL);
  pthread_mutex_destroy (&r->lock);
  pthread_cond_destroy (&r->cond);
  free (r->buf);
  free (r);
}
#endif

/* ---- The workload ----------------------------------------------------- */

struct bench;

struct slot {
  struct bench *b;
  int idx;
  unsigned char *buf;
};

struct bench {
  struct nbd_handle *h;
  const struct options *o;
  uint64_t size;
  struct slot *slots;
  int *free_stack;
  int nfree;
  uint64_t rng;
  uint64_t seq;
  uint64_t issued, completed, bytes, errors;
  int first_error;
};

static uint64_t
rng_next (struct bench *b)
{
  /* xorshift64*: cheap and the same sequence for both libraries. */
  b->rng ^= b->rng >> 12;
  b->rng ^= b->rng << 25;
  b->rng ^= b->rng >> 27;
  return b->rng * UINT64_C (2685821657736338717);
}

static int
done_cb (void *user_data, int *error)
{
  struct slot *s = user_data;
  struct bench *b = s->b;

  if (*error) {
    if (!b->errors)
      b->first_error = *error;
    b->errors++;
  }
  b->completed++;
  b->bytes += b->o->bs;
  b->free_stack[b->nfree++] = s->idx;
  return 1;                     /* retire the command now */
}

static void
issue (struct bench *b)
{
  const struct options *o = b->o;
  struct slot *s = &b->slots[b->free_stack[--b->nfree]];
  nbd_completion_callback cb = { .callback = done_cb, .user_data = s };
  uint64_t off, blocks = b->size / o->bs;
  bool rd;
  int64_t c;

  switch (o->workload) {
  case W_SEQREAD:
  case W_SEQWRITE:
    if (b->seq + o->bs > b->size)
      b->seq = 0;
    off = b->seq;
    b->seq += o->bs;
    rd = o->workload == W_SEQREAD;
    break;
  default:
    off = (rng_next (b) % blocks) * o->bs;
    rd = o->workload == W_RANDREAD ||
         (o->workload == W_MIXED && (int) (rng_next (b) % 100) < o->read_pct);
    break;
  }
  if (rd)
    c = nbd_aio_pread (b->h, s->buf, o->bs, off, cb, 0);
  else
    c = nbd_aio_pwrite (b->h, s->buf, o->bs, off, cb, 0);
  if (c == -1)
    die (rd ? "nbd_aio_pread" : "nbd_aio_pwrite");
  b->issued++;
}

/* Keep QD in flight until the deadline (or until `count` requests were
 * issued), then drain. */
static void
run_phase (struct bench *b, double deadline, uint64_t count)
{
  bool issuing = true;
  uint64_t stop_at = b->issued + count;

  for (;;) {
    while (issuing && b->nfree > 0) {
      issue (b);
      if (count && b->issued == stop_at)
        issuing = false;
    }
    if (b->nfree == b->o->qd)
      break;
    if (nbd_poll (b->h, -1) == -1)
      die ("nbd_poll");
    if (!count && now () >= deadline)
      issuing = false;
  }
}

/* ---- Options ---------------------------------------------------------- */

static uint64_t
parse_size (const char *s)
{
  char *end;
  uint64_t v = strtoull (s, &end, 0);

  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  }
  if (*end || v == 0) {
    fprintf (stderr, "bench: bad size: %s\n", s);
    exit (2);
  }
  return v;
}

static void
usage (void)
{
  fprintf (stderr,
           "usage: bench [--server sink|memory|null | --connect SOCKET] [--pin CPU]\n"
           "             [--workload randread|randwrite|seqread|seqwrite|mixed] [--bs SIZE]\n"
           "             [--qd N] [--read-pct P] [--duration SECONDS | --requests N]\n"
           "             [--writer] [--export-size SIZE] [--sink PATH]\n");
  exit (2);
}

static void
parse_options (int argc, char *argv[], struct options *o)
{
  *o = (struct options) {
    .server = "sink",
    .sink_path = SINK_SERVER_PATH,
    .workload = W_RANDREAD,
    .bs = 4096,
    .qd = 64,
    .read_pct = 70,
    .duration = 1.0,
    .pin = -1,
    .export_size = UINT64_C (1) << 30,
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (!strcmp (a, "--writer")) {
      o->writer = true;
      continue;
    }
    if (!v)
      usage ();
    i++;
    if (!strcmp (a, "--server"))
      o->server = v;
    else if (!strcmp (a, "--connect")) {
      o->connect = v;
      o->server = NULL;
    }
    else if (!strcmp (a, "--sink"))
      o->sink_path = v;
    else if (!strcmp (a, "--workload")) {
      size_t k;
      for (k = 0; k < sizeof workload_names / sizeof *workload_names; k++)
        if (!strcmp (v, workload_names[k]))
          break;
      if (k == sizeof workload_names / sizeof *workload_names)
        usage ();
      o->workload = (enum workload) k;
    }
    else if (!strcmp (a, "--bs"))
      o->bs = (uint32_t) parse_size (v);
    else if (!strcmp (a, "--qd"))
      o->qd = atoi (v);
    else if (!strcmp (a, "--read-pct"))
      o->read_pct = atoi (v);
    else if (!strcmp (a, "--duration"))
      o->duration = atof (v);
    else if (!strcmp (a, "--requests"))
      o->requests = strtoull (v, NULL, 0);
    else if (!strcmp (a, "--pin"))
      o->pin = atoi (v);
    else if (!strcmp (a, "--export-size"))
      o->export_size = parse_size (v);
    else
      usage ();
  }
  if (o->qd < 1 || o->qd > 4096 || o->duration <= 0 || o->read_pct < 0 || o->read_pct > 100)
    usage ();
  if (o->server && strcmp (o->server, "sink") && strcmp (o->server, "memory") &&
      strcmp (o->server, "null"))
    usage ();
}

int
main (int argc, char *argv[])
{
  struct options o;
  struct bench b = { .rng = UINT64_C (0x9e3779b97f4a7c15) };
  const char *path;
  double t0, t1;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  struct ring *ring = NULL;
  uint64_t writes0 = 0, wakeups0 = 0;
#endif
  uint64_t writes = 0, wakeups = 0;

  parse_options (argc, argv, &o);
  signal (SIGPIPE, SIG_IGN);
#ifndef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (o.writer) {
    fprintf (stderr, "bench: --writer: this library has no nbd_set_concurrent_writer\n");
    return 2;
  }
#endif
  /* Pinned before the server starts: it inherits the CPU. */
  if (o.pin >= 0)
    pin_to (o.pin);
  if (o.server) {
    start_server (&o);
    path = sockpath;
  }
  else
    path = o.connect;

  b.o = &o;
  b.h = nbd_create ();
  if (!b.h)
    die ("nbd_create");
  if (nbd_connect_unix (b.h, path) == -1)
    die ("nbd_connect_unix");
  b.size = (uint64_t) nbd_get_size (b.h);
  if ((int64_t) b.size < (int64_t) o.bs)
    die ("nbd_get_size");
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (o.writer) {
    bool writes_data = o.workload != W_RANDREAD && o.workload != W_SEQREAD;
    ring = ring_start (b.h, 2 * ((size_t) o.qd * (28 + (writes_data ? o.bs : 0)) + 4096));
  }
#endif

  b.slots = calloc (o.qd, sizeof *b.slots);
  b.free_stack = calloc (o.qd, sizeof *b.free_stack);
  if (!b.slots || !b.free_stack)
    die_errno ("calloc");
  for (int i = 0; i < o.qd; i++) {
    b.slots[i].b = &b;
    b.slots[i].idx = i;
    b.slots[i].buf = malloc (o.bs);
    if (!b.slots[i].buf)
      die_errno ("malloc");
    memset (b.slots[i].buf, 0xa5 ^ i, o.bs);
    b.free_stack[b.nfree++] = o.qd - 1 - i;
  }

  if (o.requests) {
    t0 = now ();
    run_phase (&b, 0, o.requests);
  }
  else {
    /* Warm the pools and the server's threads first. */
    run_phase (&b, now () + (o.duration < 1 ? o.duration / 10 : 0.1), 0);
    b.issued = b.completed = b.bytes = 0;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
    if (ring) {
      writes0 = atomic_load (&ring->writes);
      wakeups0 = atomic_load (&ring->wakeups);
    }
#endif
    t0 = now ();
    run_phase (&b, t0 + o.duration, 0);
  }
  t1 = now ();
  if (b.errors) {
    fprintf (stderr, "bench: %" PRIu64 " requests failed, the first with %s\n", b.errors,
             strerror (b.first_error));
    return 1;
  }

#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (ring) {
    writes = atomic_load (&ring->writes) - writes0;
    wakeups = atomic_load (&ring->wakeups) - wakeups0;
  }
#endif
  printf ("lib=%s version=%s server=%s workload=%s bs=%" PRIu32 " qd=%d writer=%d pin=%d "
          "ops=%" PRIu64 " secs=%.6f ops_s=%.1f mib_s=%.2f writer_writes=%" PRIu64
          " writer_wakeups=%" PRIu64 "\n",
          nbd_get_package_name (b.h), nbd_get_version (b.h), o.server ? o.server : "external",
          workload_names[o.workload], o.bs, o.qd, o.writer, o.pin, b.completed, t1 - t0,
          b.completed / (t1 - t0), b.bytes / MIB / (t1 - t0), writes, wakeups);
  fflush (stdout);

  if (nbd_shutdown (b.h, 0) == -1)
    die ("nbd_shutdown");
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (ring)
    ring_stop (ring);
#endif
  nbd_close (b.h);
  for (int i = 0; i < o.qd; i++)
    free (b.slots[i].buf);
  free (b.slots);
  free (b.free_stack);
  stop_server ();
  return 0;
}
