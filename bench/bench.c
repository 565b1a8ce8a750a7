/* bench: one benchmark run of an NBD client library, written against the
 * libnbd C API only (<libnbd.h>, nbd_* calls), so the same source builds
 * against libnbd-core (bench-core) and against the system's libnbd
 * (bench-libnbd).  bench/run.sh runs both, alternating, and writes
 * bench/RESULTS.md.
 *
 * A run starts its server (the project's sink-server, or nbdkit's memory or
 * null plugin) on a Unix socket in a private directory or on 127.0.0.1 at a
 * free port, or connects to one given with --connect; keeps QD requests in
 * flight with nbd_aio_pread / nbd_aio_pwrite and completion callbacks that
 * retire themselves, driven by nbd_poll, as a libnbd program does; and
 * prints one line of key=value figures.  Requests are issued from the loop,
 * never from a callback.
 *
 *   bench [--server sink|memory|null | --connect SOCKET|HOST:PORT] [--pin CPU]
 *         [--transport unix|tcp] [--conns N]
 *         [--workload randread|randwrite|seqread|seqwrite|mixed] [--bs SIZE]
 *         [--qd N] [--read-pct P] [--duration SECONDS | --requests N]
 *         [--writer | --zero-copy] [--no-batch] [--export-size SIZE] [--sink PATH]
 *         [--tls psk|x509 --pki DIR] [--encrypt]
 *
 * --writer (libnbd-core only) sends through nbd_set_concurrent_writer: the
 * callback copies every byte into a ring and a writer thread of ours writes
 * the ring to the socket, the four documented steps as a user writes them.
 * --zero-copy (libnbd-core only) sends through
 * nbd_set_concurrent_writer_zero_copy instead: the callback copies headers
 * (flags 0) into a byte ring and queues a reference to each lent write
 * payload (LIBNBD_WRITER_LENT); the thread sends both with one writev(2)
 * across many ring entries and gives the lent bytes back with
 * nbd_concurrent_writer_release once sent.  Both writers batch (the
 * documented pattern, docs/concurrent-writer.md): the loop that issues a
 * burst sends what it queued itself at the burst's end, one non-blocking
 * sendmsg, and the writer thread only gets what the socket did not take;
 * --no-batch wakes the thread for every request instead (the pattern
 * before).  Either writer is set before
 * connecting, and its thread asks nbd_aio_get_fd for the socket itself
 * when it first has bytes to send: that call takes no lock, so it answers
 * even while nbd_connect_* holds the handle waiting for the handshake
 * bytes the thread has yet to send.
 *
 * --transport tcp: the server listens on 127.0.0.1 at a free port and the
 * client uses nbd_connect_tcp (--connect then takes HOST:PORT).  --conns N
 * (multi-conn) opens N handles to the same export, which must advertise
 * CAN_MULTI_CONN, one per thread: each thread keeps QD requests in flight
 * on its own handle with its own nbd_poll loop (and its own writer thread
 * with --writer or --zero-copy), as libnbd's one-handle-per-thread model
 * has it; the figures are the sum over the handles.
 *
 * --tls psk|x509 (nbdkit only): the server requires TLS, with the PSK file
 * DIR/keys.psk (user "bench") or the X.509 certificates in DIR (ca-cert.pem,
 * server-cert.pem, server-key.pem; bench/run.py makes them), and the client
 * uses the same.  --encrypt (libnbd-core, with a writer): the writer thread
 * makes the TLS records (nbd_set_concurrent_writer_encrypt), and the
 * writers send through nbd_concurrent_writer_send instead of sendmsg.
 *
 * --pin pins this process (and so every thread of it) and the server it
 * starts to one CPU, the same one.  --requests runs a fixed number of
 * requests (split over the handles) with no clock in the loop (for
 * callgrind and strace, where a long run minus a short run gives the cost
 * of one request).
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#ifndef SINK_SERVER_PATH
#define SINK_SERVER_PATH "sink-server"
#endif

#define MIB (1024.0 * 1024.0)

enum workload { W_RANDREAD, W_RANDWRITE, W_SEQREAD, W_SEQWRITE, W_MIXED, W_COPY };
static const char *const workload_names[] = {
  "randread", "randwrite", "seqread", "seqwrite", "mixed", "copy",
};

enum transport { T_UNIX, T_TCP };
enum writer_mode { WR_NONE, WR_COPY, WR_ZERO_COPY };

struct options {
  const char *server;           /* sink, memory, null; NULL with --connect */
  const char *connect;
  const char *source;           /* copy: the source's Unix socket */
  const char *sink_path;
  enum transport transport;
  int conns;                    /* handles to the export, one per thread */
  enum workload workload;
  uint32_t bs;
  int qd;
  int read_pct;                 /* mixed only */
  double duration;
  uint64_t requests;            /* 0: run for duration */
  enum writer_mode writer;
  int pin;                      /* -1: not pinned */
  uint64_t export_size;
  const char *tls;              /* NULL, "psk" or "x509" */
  const char *pki;              /* --pki DIR */
  bool encrypt;                 /* --encrypt */
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
clock_seconds (clockid_t id)
{
  struct timespec ts;

  clock_gettime (id, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double
now (void)
{
  return clock_seconds (CLOCK_MONOTONIC);
}

/* ---- The server ------------------------------------------------------- */

static char tmpdir[PATH_MAX];
static char sockpath[PATH_MAX + 8];
static char pidpath[PATH_MAX + 8];
static char portpath[PATH_MAX + 8];
static pid_t server_pid;

/* Where to connect: a Unix socket path, or 127.0.0.1 and a port. */
static char tcp_host[64] = "127.0.0.1";
static char tcp_port[16];

static void
pin_to (int cpu)
{
  cpu_set_t set;

  CPU_ZERO (&set);
  CPU_SET (cpu, &set);
  if (sched_setaffinity (0, sizeof set, &set) == -1)
    die_errno ("sched_setaffinity");
}

/* A line ending in a newline in FILE, complete: nbdkit's PID file, or the
 * sink server's port file. */
static bool
read_line_file (const char *file, char *buf, size_t size)
{
  int fd = open (file, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read (fd, buf, size - 1) : -1;

  if (fd >= 0)
    close (fd);
  if (n <= 0 || buf[n - 1] != '\n')
    return false;
  buf[n - 1] = '\0';
  return true;
}

/* Wait until the server listens: 10 ms steps, 10 s at most.  nbdkit says
 * so by writing its PID file (probing it with a connection would make it
 * log an aborted handshake); the sink server on TCP by writing its port
 * file; the sink server on a Unix socket is probed with connect(2).
 * Returns false if the server exited first. */
static bool
wait_listening (const char *path, const char *pidfile, const char *portfile)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };

  if (path)
    strcpy (sun.sun_path, path);
  for (int i = 0; i < 1000; i++) {
    char buf[32];
    int status;

    if (pidfile) {
      if (read_line_file (pidfile, buf, sizeof buf))
        return true;
    }
    else if (portfile) {
      char port[sizeof tcp_port];

      if (read_line_file (portfile, port, sizeof port)) {
        memcpy (tcp_port, port, sizeof port);
        return true;
      }
    }
    else {
      int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

      if (fd == -1)
        die_errno ("socket");
      if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0) {
        close (fd);
        return true;
      }
      close (fd);
    }
    if (server_pid > 0 && waitpid (server_pid, &status, WNOHANG) == server_pid) {
      server_pid = 0;
      return false;
    }
    usleep (10000);
  }
  fprintf (stderr, "bench: the server did not listen within 10 s\n");
  exit (1);
}

/* A port on 127.0.0.1 free at this moment, for nbdkit (which cannot say
 * which port it picked itself); start_server tries again if it is taken
 * before nbdkit binds it. */
static void
pick_free_port (void)
{
  struct sockaddr_in sin = { .sin_family = AF_INET };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  inet_pton (AF_INET, tcp_host, &sin.sin_addr);
  if (fd == -1 || bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1)
    die_errno ("choosing a free TCP port");
  snprintf (tcp_port, sizeof tcp_port, "%u", ntohs (sin.sin_port));
  close (fd);
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
  if (portpath[0])
    unlink (portpath);
  if (tmpdir[0])
    rmdir (tmpdir);
  sockpath[0] = pidpath[0] = portpath[0] = tmpdir[0] = '\0';
}

static void
start_server (const struct options *o)
{
  const char *tmp = getenv ("TMPDIR");
  bool sink = !strcmp (o->server, "sink"), tcp = o->transport == T_TCP;
  char size[32], tls_arg[PATH_MAX + 32];
  const char *argv[24];

  snprintf (tmpdir, sizeof tmpdir, "%s/nbd-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp (tmpdir))
    die_errno ("mkdtemp");
  snprintf (sockpath, sizeof sockpath, "%s/sock", tmpdir);
  snprintf (pidpath, sizeof pidpath, "%s/pid", tmpdir);
  snprintf (portpath, sizeof portpath, "%s/port", tmpdir);
  atexit (stop_server);

  /* Only nbdkit on TCP can lose its port to someone else: a few tries. */
  for (int attempt = 0; attempt < 5; attempt++) {
    int n = 0;

    if (sink) {
      snprintf (size, sizeof size, "%" PRIu64, o->export_size);
      argv[n++] = o->sink_path;
      if (tcp) {
        argv[n++] = "--tcp";
        argv[n++] = tcp_host;
        argv[n++] = "--port";
        argv[n++] = "0";
        argv[n++] = "--port-file";
        argv[n++] = portpath;
      }
      else {
        argv[n++] = "--unix";
        argv[n++] = sockpath;
      }
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
      if (tcp) {
        pick_free_port ();
        argv[n++] = "-i";
        argv[n++] = tcp_host;
        argv[n++] = "-p";
        argv[n++] = tcp_port;
      }
      else {
        argv[n++] = "-U";
        argv[n++] = sockpath;
      }
      if (o->tls) {
        snprintf (tls_arg, sizeof tls_arg, "%s=%s%s",
                  !strcmp (o->tls, "psk") ? "--tls-psk" : "--tls-certificates", o->pki,
                  !strcmp (o->tls, "psk") ? "/keys.psk" : "");
        argv[n++] = "--tls=require";
        argv[n++] = tls_arg;
      }
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
    if (wait_listening (tcp ? NULL : sockpath, sink ? NULL : pidpath, sink && tcp ? portpath : NULL))
      return;
    if (sink || !tcp)
      break;
  }
  fprintf (stderr, "bench: the server exited before listening\n");
  exit (1);
}

/* ---- The concurrent writer: a ring and a thread ------------------------ */

static bool batches = true;     /* --no-batch turns them off: see ring_batch_end */
static bool encrypting;         /* --encrypt: the writers send with nbd_concurrent_writer_send */
static bool direct_sends = true; /* --no-direct turns them off: see ring_send_direct */

#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
static _Thread_local bool in_batch;
#endif

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
  _Atomic bool busy;            /* one sender at a time: the thread or a batch's end */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct nbd_handle *h;
  int fd;                       /* -1 until the thread first has bytes to send */
  _Atomic int batch_fd;         /* the fd once known, for the batches' ends */
  pthread_t thread;
  _Atomic uint64_t writes;      /* writev calls, the thread's and the batches' */
  _Atomic uint64_t wakeups;     /* sleeps ended */
  uint64_t copied;              /* bytes the callback copied into the ring: the
                                 * handle's thread's (read by it, and after join) */
};

/* Batches (--batch): the thread that issues a burst of requests queues
 * their bytes without waking the writer thread, then, at the end of the
 * burst (before it waits for replies), sends them itself: one
 * non-blocking sendmsg for the lot, from the thread that has them in its
 * cache.  Only what the socket does not take goes to the writer thread.
 * So the hand-off to the writer thread is paid only when the socket is
 * full (big writes, where the overlap pays), never per request.  Bytes
 * queued outside a batch (sync calls, the handshake) wake the thread as
 * before. */

/* Claim the right to send: the writer thread and a batch's end take
 * turns (each sends without blocking, so the wait is short). */
static bool
sender_try_claim (_Atomic bool *busy)
{
  bool idle = false;

  return atomic_compare_exchange_strong (busy, &idle, true);
}

static void
sender_claim (_Atomic bool *busy)
{
  while (!sender_try_claim (busy))
    sched_yield ();
}

/* The socket, from the writer thread, when it first needs it:
 * nbd_aio_get_fd takes no lock, so this may run at any moment, also while
 * a sync call (nbd_connect_unix, nbd_connect_tcp) holds the handle waiting
 * for replies to the very bytes this thread is about to send. */
static bool
writer_fd (struct nbd_handle *h, int *fd)
{
  if (*fd < 0) {
    if ((*fd = nbd_aio_get_fd (h)) == -1) {
      nbd_concurrent_writer_error (h, ENOTCONN);
      return false;
    }
  }
  return true;
}

/* The writers' non-blocking send: the library's with --encrypt (the
 * records are made there, on the calling thread), else sendmsg. */
static ssize_t
writer_sendv (struct nbd_handle *h, int fd, struct iovec *iov, int n)
{
  struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };

#ifdef LIBNBD_HAVE_NBD_CONCURRENT_WRITER_SEND
  if (encrypting)
    return nbd_concurrent_writer_send (h, iov, n);
#endif
  return sendmsg (fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The end of the stream, once everything queued is sent: close_notify
 * (with --encrypt, under TLS) and the write side's shutdown. */
static void
writer_shutdown (struct nbd_handle *h, int fd)
{
#ifdef LIBNBD_HAVE_NBD_CONCURRENT_WRITER_SEND
  if (encrypting) {
    while (nbd_concurrent_writer_send (h, NULL, 0) == -1) {
      struct pollfd p = { .fd = fd, .events = POLLOUT };

      if (errno != EAGAIN || poll (&p, 1, 1000) == -1) {
        nbd_concurrent_writer_error (h, errno);
        return;
      }
    }
    return;
  }
#endif
  shutdown (fd, SHUT_WR);
}

static void
ring_wake (struct ring *r)
{
  if (atomic_load (&r->sleeping)) {
    pthread_mutex_lock (&r->lock);
    pthread_cond_signal (&r->cond);
    pthread_mutex_unlock (&r->lock);
  }
}

static int ring_iov (struct ring *r, size_t tail, size_t head, struct iovec *iov);

/* Direct sends from the callback (the copying writer's answer to its own
 * copy): a piece of at least DIRECT_MIN bytes goes to the socket at once,
 * with MSG_DONTWAIT (which never blocks), after the bytes queued before
 * it, if nobody else is sending; only what the socket does not take is
 * copied into the ring.  Not with --encrypt (that would encrypt here).
 * --no-direct turns it off. */
#define DIRECT_MIN (64 * 1024)

/* Returns how many bytes of buf went out (0 if none, or if another
 * sender holds the claim). */
static size_t
ring_send_direct (struct ring *r, const void *buf, size_t len)
{
  int fd = atomic_load (&r->batch_fd);
  size_t tail, head, queued, sent = 0;
  struct iovec iov[3];
  int n;
  ssize_t w;

  if (fd < 0 || encrypting || !sender_try_claim (&r->busy))
    return 0;
  tail = atomic_load_explicit (&r->tail, memory_order_relaxed);
  head = atomic_load_explicit (&r->head, memory_order_relaxed);
  queued = head - tail;
  n = queued ? ring_iov (r, tail, head, iov) : 0;
  iov[n].iov_base = (void *) buf;
  iov[n++].iov_len = len;
  w = writer_sendv (r->h, fd, iov, n);
  atomic_fetch_add_explicit (&r->writes, 1, memory_order_relaxed);
  if (w > 0) {
    if ((size_t) w >= queued) {
      sent = (size_t) w - queued;
      w = (ssize_t) queued;
    }
    atomic_store_explicit (&r->tail, tail + (size_t) w, memory_order_release);
  }
  else if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    nbd_concurrent_writer_error (r->h, errno);
  atomic_store (&r->busy, false);
  return sent;
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
  /* A large piece (a write payload): send it from here if the socket
   * takes it, after what the ring holds, and copy only the rest. */
  if (len >= DIRECT_MIN && direct_sends) {
    size_t sent = ring_send_direct (r, buf, len);

    buf = (const char *) buf + sent;
    len -= sent;
    if (len == 0)
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
  r->copied += len;
  atomic_store (&r->head, head + len);
  if (!in_batch)
    ring_wake (r);
}

/* The ring's bytes from tail to head, as at most two iovecs. */
static int
ring_iov (struct ring *r, size_t tail, size_t head, struct iovec *iov)
{
  size_t off = tail & (r->cap - 1), len = head - tail;
  size_t first = len < r->cap - off ? len : r->cap - off;
  int n = 0;

  iov[n].iov_base = r->buf + off;
  iov[n++].iov_len = first;
  if (len > first) {
    iov[n].iov_base = r->buf;
    iov[n++].iov_len = len - first;
  }
  return n;
}

/* The end of a burst: send what it queued from here, if the writer
 * thread is not sending; what the socket does not take is the thread's. */
static void
ring_batch_end (struct ring *r)
{
  int fd = atomic_load (&r->batch_fd);

  if (!batches)
    return;
  in_batch = false;
  if (atomic_load (&r->head) == atomic_load (&r->tail))
    return;
  /* With --encrypt a send here would encrypt on this thread: the whole
   * batch is the writer thread's. */
  if (fd >= 0 && !encrypting && sender_try_claim (&r->busy)) {
    size_t tail = atomic_load_explicit (&r->tail, memory_order_relaxed);
    size_t head = atomic_load (&r->head);
    struct iovec iov[2];
    ssize_t w;

    if (head != tail) {
      w = writer_sendv (r->h, fd, iov, ring_iov (r, tail, head, iov));
      atomic_fetch_add_explicit (&r->writes, 1, memory_order_relaxed);
      if (w > 0)
        atomic_store_explicit (&r->tail, tail + (size_t) w, memory_order_release);
      else if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        nbd_concurrent_writer_error (r->h, errno);
    }
    atomic_store (&r->busy, false);
    if (atomic_load (&r->head) == atomic_load (&r->tail))
      return;
  }
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
    int n;
    ssize_t w;

    if (atomic_load (&r->overflow)) {
      nbd_concurrent_writer_error (r->h, ENOBUFS);
      return NULL;
    }
    if (head == tail) {
      if (atomic_load (&r->eof) && atomic_load (&r->head) == tail) {
        if (writer_fd (r->h, &r->fd))
          writer_shutdown (r->h, r->fd);
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
    if (!writer_fd (r->h, &r->fd))
      return NULL;
    atomic_store (&r->batch_fd, r->fd);
    sender_claim (&r->busy);
    /* A batch's end may have sent some meanwhile. */
    tail = atomic_load_explicit (&r->tail, memory_order_relaxed);
    head = atomic_load (&r->head);
    if (head == tail) {
      atomic_store (&r->busy, false);
      continue;
    }
    n = ring_iov (r, tail, head, iov);
    w = writer_sendv (r->h, r->fd, iov, n);
    /* What went out leaves the ring before the next sender looks. */
    if (w > 0)
      atomic_store_explicit (&r->tail, tail + (size_t) w, memory_order_release);
    atomic_store (&r->busy, false);
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
  }
}

/* Steps 1-2, before connecting: the ring, the thread, the hook. */
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
  r->fd = -1;
  atomic_store (&r->batch_fd, -1);
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

#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
/* The zero-copy writer: the same thread, but the queue holds entries, in
 * order: runs of copied bytes (headers, the handshake; flags 0) in a byte
 * ring, and references to the write payloads the library lends
 * (LIBNBD_WRITER_LENT), which stay valid until we give them back.  One
 * producer (the callback, under the handle lock) and one consumer (the
 * thread), no lock on the way: entries are published by the release store
 * of ehead, and given back by the release stores of etail and btail. */
struct zent {
  const unsigned char *p;
  size_t len;
  bool lent;
};

struct zring {
  unsigned char *buf;           /* the copied bytes */
  size_t cap;                   /* a power of 2 */
  size_t bhead;                 /* bytes ever copied in (the callback only) */
  _Atomic size_t btail;         /* bytes ever sent or dropped (the thread) */
  struct zent *ents;
  size_t ecap;                  /* a power of 2 */
  _Atomic size_t ehead;         /* entries ever queued */
  _Atomic size_t etail;         /* entries ever sent or dropped */
  size_t eoff;                  /* bytes of entry etail already sent (the thread) */
  _Atomic size_t lost_lent;     /* lent bytes that found no room (overflow) */
  _Atomic bool sleeping;
  _Atomic bool eof;
  _Atomic bool overflow;
  _Atomic bool stop;
  _Atomic bool busy;            /* one sender at a time (see struct ring) */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct nbd_handle *h;
  int fd;                       /* -1 until the thread first has bytes to send */
  _Atomic int batch_fd;
  pthread_t thread;
  _Atomic uint64_t writes;
  _Atomic uint64_t wakeups;
};

static void
zring_wake (struct zring *r)
{
  if (atomic_load (&r->sleeping)) {
    pthread_mutex_lock (&r->lock);
    pthread_cond_signal (&r->cond);
    pthread_mutex_unlock (&r->lock);
  }
}

static void
zring_push (struct zring *r, size_t *eh, const unsigned char *p, size_t len, bool lent)
{
  struct zent *e = &r->ents[*eh & (r->ecap - 1)];

  e->p = p;
  e->len = len;
  e->lent = lent;
  (*eh)++;
}

/* The zero-copy writer callback: under the handle lock, must not block. */
static void
zring_enqueue (void *data, const void *buf, size_t len, unsigned flags)
{
  struct zring *r = data;
  size_t eh = atomic_load_explicit (&r->ehead, memory_order_relaxed);
  size_t et = atomic_load_explicit (&r->etail, memory_order_acquire);

  if (!buf) {
    atomic_store (&r->eof, true);
    pthread_mutex_lock (&r->lock);
    pthread_cond_signal (&r->cond);
    pthread_mutex_unlock (&r->lock);
    return;
  }
  if (r->ecap - (eh - et) < 2)
    goto overflow;
  if (flags & LIBNBD_WRITER_LENT)
    zring_push (r, &eh, buf, len, true);
  else {
    size_t off = r->bhead & (r->cap - 1), first = len < r->cap - off ? len : r->cap - off;

    if (len > r->cap - (r->bhead - atomic_load_explicit (&r->btail, memory_order_acquire)))
      goto overflow;
    memcpy (r->buf + off, buf, first);
    zring_push (r, &eh, r->buf + off, first, false);
    if (len > first) {
      memcpy (r->buf, (const char *) buf + first, len - first);
      zring_push (r, &eh, r->buf, len - first, false);
    }
    r->bhead += len;
  }
  atomic_store (&r->ehead, eh);
  if (!in_batch)
    zring_wake (r);
  return;

overflow:
  /* Sized so that it cannot happen (see main); the thread reports it and
   * gives back what was lent. */
  if (flags & LIBNBD_WRITER_LENT)
    atomic_fetch_add (&r->lost_lent, len);
  atomic_store (&r->overflow, true);
  zring_wake (r);
}

static void
zring_release (struct zring *r, size_t lent)
{
  if (lent && nbd_concurrent_writer_release (r->h, lent) == -1) {
    /* Only if we gave back more than was lent: a bug here. */
    fprintf (stderr, "bench: %s\n", nbd_get_error ());
    abort ();
  }
}

/* After a failure: drop every entry queued and give back what was lent. */
static void
zring_drop (struct zring *r)
{
  size_t eh = atomic_load (&r->ehead), et = atomic_load_explicit (&r->etail, memory_order_relaxed);
  size_t lent = atomic_exchange (&r->lost_lent, 0), copied = 0;

  for (; et != eh; et++) {
    const struct zent *e = &r->ents[et & (r->ecap - 1)];
    size_t left = e->len - r->eoff;

    if (e->lent)
      lent += left;
    else
      copied += left;
    r->eoff = 0;
  }
  atomic_store_explicit (&r->btail, atomic_load_explicit (&r->btail, memory_order_relaxed) + copied,
                         memory_order_release);
  atomic_store_explicit (&r->etail, et, memory_order_release);
  zring_release (r, lent);
}

/* The entries from et to eh as iovecs: copied runs that lie end to end
 * in the byte ring become one iovec, each lent payload one more.  The
 * caller is the sender. */
static int
zring_iov (struct zring *r, size_t et, size_t eh, struct iovec *iov)
{
  int n = 0;

  for (size_t k = et; k != eh && n < IOV_MAX; k++) {
    const struct zent *e = &r->ents[k & (r->ecap - 1)];
    const unsigned char *p = e->p + (k == et ? r->eoff : 0);
    size_t len = e->len - (k == et ? r->eoff : 0);

    if (n > 0 && !e->lent && !r->ents[(k - 1) & (r->ecap - 1)].lent &&
        (const unsigned char *) iov[n - 1].iov_base + iov[n - 1].iov_len == p)
      iov[n - 1].iov_len += len;
    else {
      iov[n].iov_base = (void *) p;
      iov[n++].iov_len = len;
    }
  }
  return n;
}

/* @sent bytes from entry et on went out: retire them, and give back the
 * lent part at once. */
static void
zring_retire (struct zring *r, size_t et, size_t sent)
{
  size_t copied = 0, lent = 0;

  while (sent > 0) {
    const struct zent *e = &r->ents[et & (r->ecap - 1)];
    size_t left = e->len - r->eoff, take = left < sent ? left : sent;

    if (e->lent)
      lent += take;
    else
      copied += take;
    sent -= take;
    if (take == left) {
      et++;
      r->eoff = 0;
    }
    else
      r->eoff += take;
  }
  atomic_store_explicit (&r->btail, atomic_load_explicit (&r->btail, memory_order_relaxed) + copied,
                         memory_order_release);
  atomic_store_explicit (&r->etail, et, memory_order_release);
  zring_release (r, lent);
}

/* As ring_batch_end. */
static void
zring_batch_end (struct zring *r)
{
  int fd = atomic_load (&r->batch_fd);

  if (!batches)
    return;
  in_batch = false;
  if (atomic_load (&r->ehead) == atomic_load (&r->etail))
    return;
  /* As in ring_batch_end: with --encrypt the batch is the thread's. */
  if (fd >= 0 && !encrypting && sender_try_claim (&r->busy)) {
    size_t et = atomic_load_explicit (&r->etail, memory_order_relaxed);
    size_t eh = atomic_load (&r->ehead);
    struct iovec iov[IOV_MAX];
    ssize_t w;

    /* Not after a failure: the thread owns the queue then. */
    if (eh != et && !atomic_load (&r->overflow)) {
      w = writer_sendv (r->h, fd, iov, zring_iov (r, et, eh, iov));
      atomic_fetch_add_explicit (&r->writes, 1, memory_order_relaxed);
      if (w > 0)
        zring_retire (r, et, (size_t) w);
      else if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        nbd_concurrent_writer_error (r->h, errno);
    }
    atomic_store (&r->busy, false);
    if (atomic_load (&r->ehead) == atomic_load (&r->etail))
      return;
  }
  zring_wake (r);
}

static void *
zring_thread (void *arg)
{
  struct zring *r = arg;
  struct iovec iov[IOV_MAX];
  bool failed = false;

  for (;;) {
    size_t et = atomic_load_explicit (&r->etail, memory_order_relaxed);
    size_t eh = atomic_load (&r->ehead);
    int n;
    ssize_t w;

    if (!failed && atomic_load (&r->overflow)) {
      nbd_concurrent_writer_error (r->h, ENOBUFS);
      failed = true;
    }
    if (failed) {
      /* Nothing more will be sent: keep giving back whatever is lent,
       * so that those writes complete (with the error), until told to
       * stop. */
      sender_claim (&r->busy);        /* a batch's end may be retiring */
      zring_drop (r);
      atomic_store (&r->busy, false);
      if (atomic_load (&r->stop))
        return NULL;
      pthread_mutex_lock (&r->lock);
      atomic_store (&r->sleeping, true);
      while (atomic_load (&r->ehead) == atomic_load_explicit (&r->etail, memory_order_relaxed) &&
             !atomic_load (&r->stop) && !atomic_load (&r->lost_lent))
        pthread_cond_wait (&r->cond, &r->lock);
      atomic_store (&r->sleeping, false);
      pthread_mutex_unlock (&r->lock);
      continue;
    }
    if (eh == et) {
      if (!failed && atomic_load (&r->eof) && atomic_load (&r->ehead) == et) {
        if (writer_fd (r->h, &r->fd))
          writer_shutdown (r->h, r->fd);
        return NULL;
      }
      if (atomic_load (&r->stop))
        return NULL;
      pthread_mutex_lock (&r->lock);
      atomic_store (&r->sleeping, true);
      while (atomic_load (&r->ehead) == atomic_load_explicit (&r->etail, memory_order_relaxed) &&
             !atomic_load (&r->eof) && !atomic_load (&r->stop) && !atomic_load (&r->overflow) &&
             !atomic_load (&r->lost_lent))
        pthread_cond_wait (&r->cond, &r->lock);
      atomic_store (&r->sleeping, false);
      pthread_mutex_unlock (&r->lock);
      atomic_fetch_add_explicit (&r->wakeups, 1, memory_order_relaxed);
      continue;
    }
    if (!writer_fd (r->h, &r->fd)) {
      failed = true;
      continue;
    }
    atomic_store (&r->batch_fd, r->fd);
    /* Every entry queued, in one writev (a batch's end may have sent
     * some meanwhile). */
    sender_claim (&r->busy);
    et = atomic_load_explicit (&r->etail, memory_order_relaxed);
    eh = atomic_load (&r->ehead);
    if (eh == et) {
      atomic_store (&r->busy, false);
      continue;
    }
    n = zring_iov (r, et, eh, iov);
    w = writer_sendv (r->h, r->fd, iov, n);
    if (w > 0)
      zring_retire (r, et, (size_t) w);
    atomic_store (&r->busy, false);
    atomic_fetch_add_explicit (&r->writes, 1, memory_order_relaxed);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = { .fd = r->fd, .events = POLLOUT };
        poll (&p, 1, 1000);
        continue;
      }
      nbd_concurrent_writer_error (r->h, errno);
      failed = true;
      continue;
    }
  }
}

/* Steps 1-2, before connecting: the rings, the thread, the hook.  need:
 * copied bytes, ents: entries the ring must hold at once. */
static struct zring *
zring_start (struct nbd_handle *h, size_t need, size_t ents)
{
  struct zring *r = calloc (1, sizeof *r);
  size_t cap = 65536, ecap = 256;

  if (!r)
    die_errno ("calloc");
  while (cap < need)
    cap *= 2;
  while (ecap < ents)
    ecap *= 2;
  r->buf = malloc (cap);
  r->ents = calloc (ecap, sizeof *r->ents);
  if (!r->buf || !r->ents)
    die_errno ("malloc");
  r->cap = cap;
  r->ecap = ecap;
  r->h = h;
  r->fd = -1;
  atomic_store (&r->batch_fd, -1);
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->cond, NULL);
  if (pthread_create (&r->thread, NULL, zring_thread, r) != 0)
    die_errno ("pthread_create");
  if (nbd_set_concurrent_writer_zero_copy (h, r, zring_enqueue) == -1)
    die ("nbd_set_concurrent_writer_zero_copy");
  return r;
}

/* Step 4: after nbd_shutdown, stop the thread (before nbd_close). */
static void
zring_stop (struct zring *r)
{
  atomic_store (&r->stop, true);
  pthread_mutex_lock (&r->lock);
  pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
  pthread_join (r->thread, NULL);
  pthread_mutex_destroy (&r->lock);
  pthread_cond_destroy (&r->cond);
  free (r->ents);
  free (r->buf);
  free (r);
}
#endif
#endif

/* ---- The workload ----------------------------------------------------- */

struct bench;

struct slot {
  struct bench *b;
  int idx;
  unsigned char *buf;
};

/* One connection: its handle, its requests, its writer (if any), and with
 * --conns the thread that drives it. */
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
  uint64_t requests;            /* --requests: this connection's share */
  double t_end;                 /* when its measured phase drained */
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  struct ring *ring;
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  struct zring *zring;
#endif
  uint64_t writes0, wakeups0;   /* the writer's counters when measuring began */
  uint64_t copied0;
  pthread_t thread;
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

/* The batch is this thread's (in_batch): whichever of its handles'
 * callbacks run until writer_batch_end queue without a wake-up. */
static void
writer_batch_begin (struct bench *b)
{
  (void) b;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  in_batch = batches;
#endif
}

static void
writer_batch_end (struct bench *b)
{
  (void) b;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (b->ring)
    ring_batch_end (b->ring);
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  if (b->zring)
    zring_batch_end (b->zring);
#endif
}

/* Keep QD in flight until the deadline (or until `count` requests were
 * issued), then drain. */
static void
run_phase (struct bench *b, double deadline, uint64_t count)
{
  bool issuing = true;
  uint64_t stop_at = b->issued + count;

  for (;;) {
    writer_batch_begin (b);
    while (issuing && b->nfree > 0) {
      issue (b);
      if (count && b->issued == stop_at)
        issuing = false;
    }
    writer_batch_end (b);
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
           "usage: bench [--server sink|memory|null | --connect SOCKET|HOST:PORT] [--pin CPU]\n"
           "             [--transport unix|tcp] [--conns N]\n"
           "             [--workload randread|randwrite|seqread|seqwrite|mixed] [--bs SIZE]\n"
           "             [--qd N] [--read-pct P] [--duration SECONDS | --requests N]\n"
           "             [--writer | --zero-copy] [--no-batch] [--export-size SIZE]\n"
           "             [--sink PATH] [--tls psk|x509 --pki DIR] [--encrypt]\n");
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
    .transport = T_UNIX,
    .conns = 1,
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (!strcmp (a, "--writer") || !strcmp (a, "--zero-copy")) {
      if (o->writer)
        usage ();
      o->writer = a[2] == 'w' ? WR_COPY : WR_ZERO_COPY;
      continue;
    }
    if (!strcmp (a, "--no-batch")) {
      batches = false;
      continue;
    }
    if (!strcmp (a, "--no-direct")) {
      direct_sends = false;
      continue;
    }
    if (!strcmp (a, "--encrypt")) {
      o->encrypt = encrypting = true;
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
    else if (!strcmp (a, "--source"))
      o->source = v;
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
    else if (!strcmp (a, "--transport")) {
      if (!strcmp (v, "unix"))
        o->transport = T_UNIX;
      else if (!strcmp (v, "tcp"))
        o->transport = T_TCP;
      else
        usage ();
    }
    else if (!strcmp (a, "--conns"))
      o->conns = atoi (v);
    else if (!strcmp (a, "--tls")) {
      if (strcmp (v, "psk") && strcmp (v, "x509"))
        usage ();
      o->tls = v;
    }
    else if (!strcmp (a, "--pki"))
      o->pki = v;
    else
      usage ();
  }
  if (o->qd < 1 || o->qd > 4096 || o->duration <= 0 || o->read_pct < 0 || o->read_pct > 100 ||
      o->conns < 1 || o->conns > 64)
    usage ();
  if (o->connect && o->transport == T_TCP) {
    const char *colon = strrchr (o->connect, ':');

    if (!colon || (size_t) (colon - o->connect) >= sizeof tcp_host ||
        strlen (colon + 1) >= sizeof tcp_port)
      usage ();
    memcpy (tcp_host, o->connect, colon - o->connect);
    tcp_host[colon - o->connect] = '\0';
    strcpy (tcp_port, colon + 1);
  }
  if (o->server && strcmp (o->server, "sink") && strcmp (o->server, "memory") &&
      strcmp (o->server, "null"))
    usage ();
  /* TLS: nbdkit started here (the sink server has none); --encrypt needs a
   * writer, and a library that has the call. */
  if ((o->tls && (!o->pki || !o->server || !strcmp (o->server, "sink"))) ||
      (o->encrypt && !o->writer))
    usage ();
#ifndef LIBNBD_HAVE_NBD_CONCURRENT_WRITER_SEND
  if (o->encrypt) {
    fprintf (stderr, "bench: --encrypt: this library has no nbd_concurrent_writer_send\n");
    exit (2);
  }
#endif
  /* copy: from --source to --connect, both Unix sockets, one handle each. */
  if ((o->workload == W_COPY) != (o->source != NULL) ||
      (o->workload == W_COPY && (!o->connect || o->transport != T_UNIX || o->conns != 1)))
    usage ();
}

/* ---- The connections -------------------------------------------------- */

static pthread_barrier_t barrier;
static double t0, deadline;
static double cpu0_self, cpu0_server; /* CPU seconds at t0 */

/* CPU seconds used so far by the server this process started (0 if
 * none); with clock_seconds (CLOCK_PROCESS_CPUTIME_ID), this process's
 * (all its threads): what bounds a run on 2 CPUs. */
static double
cpu_server (void)
{
  char path[64], buf[1024], *p;
  unsigned long long ut, st;
  FILE *f;
  int ok;

  if (server_pid <= 0)
    return 0;
  snprintf (path, sizeof path, "/proc/%d/stat", (int) server_pid);
  if (!(f = fopen (path, "r")))
    return 0;
  p = fgets (buf, sizeof buf, f);
  fclose (f);
  /* Fields 14 and 15 (utime, stime), after the command's closing paren. */
  if (!p || !(p = strrchr (buf, ')')))
    return 0;
  ok = sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
  return ok == 2 ? (double) (ut + st) / (double) sysconf (_SC_CLK_TCK) : 0;
}

/* Create connection i: its handle (with its writer, set before connecting:
 * the four documented steps), connected, and its requests. */
static void
conn_open (struct bench *b, const struct options *o, int i, const char *path)
{
  bool writes_data = o->workload != W_RANDREAD && o->workload != W_SEQREAD;

  b->o = o;
  /* Connection 0 has the seed a single connection always had. */
  b->rng = UINT64_C (0x9e3779b97f4a7c15) + (uint64_t) i * UINT64_C (0x2545f4914f6cdd1d);
  b->h = nbd_create ();
  if (!b->h)
    die ("nbd_create");
  if (o->tls) {
    char psk[PATH_MAX + 16];

    snprintf (psk, sizeof psk, "%s/keys.psk", o->pki);
    if (nbd_set_tls (b->h, LIBNBD_TLS_REQUIRE) == -1 ||
        (!strcmp (o->tls, "psk")
         ? nbd_set_tls_psk_file (b->h, psk) == -1 || nbd_set_tls_username (b->h, "bench") == -1
         : nbd_set_tls_certificates (b->h, o->pki) == -1))
      die ("TLS settings");
  }
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ENCRYPT
  if (o->encrypt && nbd_set_concurrent_writer_encrypt (b->h, true) == -1)
    die ("nbd_set_concurrent_writer_encrypt");
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  /* Room for twice QD requests (see ring_enqueue), and the handshake. */
  if (o->writer == WR_COPY)
    b->ring = ring_start (b->h, 2 * ((size_t) o->qd * (28 + (writes_data ? o->bs : 0)) + 4096));
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  /* Only headers are copied; a request is at most three entries (its
   * header split at the ring's end, and its lent payload).  Under TLS
   * with the handle's thread encrypting, nothing is lent: room for the
   * records of the payloads too. */
  if (o->writer == WR_ZERO_COPY)
    b->zring = zring_start (b->h, 2 * ((size_t) o->qd * (28 + 64 + (o->tls && !o->encrypt &&
                                                                       writes_data ? o->bs * 2 : 0))
                                       + 4096), 6 * (size_t) o->qd + 64);
#endif
  (void) writes_data;
  if (o->transport == T_TCP) {
    if (nbd_connect_tcp (b->h, tcp_host, tcp_port) == -1)
      die ("nbd_connect_tcp");
  }
  else if (nbd_connect_unix (b->h, path ? path : o->server ? sockpath : o->connect) == -1)
    die ("nbd_connect_unix");
  b->size = (uint64_t) nbd_get_size (b->h);
  if ((int64_t) b->size < (int64_t) o->bs)
    die ("nbd_get_size");
  if (o->conns > 1 && nbd_can_multi_conn (b->h) != 1) {
    fprintf (stderr, "bench: --conns %d: the export does not advertise CAN_MULTI_CONN\n",
             o->conns);
    exit (1);
  }
  /* Sequential workloads: each connection starts at its own part. */
  b->seq = b->size / (uint64_t) o->conns * (uint64_t) i / o->bs * o->bs;

  b->slots = calloc (o->qd, sizeof *b->slots);
  b->free_stack = calloc (o->qd, sizeof *b->free_stack);
  if (!b->slots || !b->free_stack)
    die_errno ("calloc");
  for (int k = 0; k < o->qd; k++) {
    b->slots[k].b = b;
    b->slots[k].idx = k;
    b->slots[k].buf = malloc (o->bs);
    if (!b->slots[k].buf)
      die_errno ("malloc");
    memset (b->slots[k].buf, 0xa5 ^ k, o->bs);
    b->free_stack[b->nfree++] = o->qd - 1 - k;
  }
}

static void
writer_counts (const struct bench *b, uint64_t *writes, uint64_t *wakeups)
{
  *writes = *wakeups = 0;
  (void) b;                     /* libnbd: no writer */
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (b->ring) {
    *writes = atomic_load (&b->ring->writes);
    *wakeups = atomic_load (&b->ring->wakeups);
  }
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  if (b->zring) {
    *writes = atomic_load (&b->zring->writes);
    *wakeups = atomic_load (&b->zring->wakeups);
  }
#endif
}

/* Bytes the copying writer's callback copied so far (0 for the others). */
static uint64_t
writer_copied (const struct bench *b)
{
  (void) b;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (b->ring)
    return b->ring->copied;
#endif
  return 0;
}

/* One connection's run: warm up, wait for the others, measure until the
 * common deadline (or its share of --requests), drain. */
static void *
conn_run (void *arg)
{
  struct bench *b = arg;
  const struct options *o = b->o;

  if (!o->requests)
    /* Warm the pools and the server's threads first. */
    run_phase (b, now () + (o->duration < 1 ? o->duration / 10 : 0.1), 0);
  b->issued = b->completed = b->bytes = 0;
  writer_counts (b, &b->writes0, &b->wakeups0);
  b->copied0 = writer_copied (b);
  if (pthread_barrier_wait (&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
    t0 = now ();
    deadline = t0 + o->duration;
    cpu0_self = clock_seconds (CLOCK_PROCESS_CPUTIME_ID);
    cpu0_server = cpu_server ();
  }
  pthread_barrier_wait (&barrier);
  if (o->requests)
    run_phase (b, 0, b->requests);
  else
    run_phase (b, deadline, 0);
  b->t_end = now ();
  return NULL;
}

static void
conn_close (struct bench *b)
{
  if (nbd_shutdown (b->h, 0) == -1)
    die ("nbd_shutdown");
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (b->ring)
    ring_stop (b->ring);
#endif
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  if (b->zring)
    zring_stop (b->zring);
#endif
  nbd_close (b->h);
  for (int k = 0; k < b->o->qd; k++)
    free (b->slots[k].buf);
  free (b->slots);
  free (b->free_stack);
}

/* ---- The copy: a real, mixed workload ---------------------------------- */

/* Copy the source export into the destination (the smaller size), QD
 * requests of bs in flight: each slot reads a block from the source, then
 * writes it to the destination, then takes the next block; reads and
 * writes are in flight together, on two handles driven by one poll loop
 * of ours (nbd_aio_get_direction, poll, nbd_aio_notify_*), as nbdcopy's
 * copy loop is.  Requests are issued from the loop, never from a
 * callback, each round of them one batch per handle. */
enum { C_FREE, C_READING, C_READ, C_WRITING };

struct cslot {
  int state;
  uint64_t offset;
  int error;
};

static int
cslot_done (void *user_data, int *error)
{
  struct cslot *s = user_data;

  if (*error && !s->error)
    s->error = *error;
  s->state = s->state == C_READING ? C_READ : C_FREE;
  return 1;
}

static int
copy_main (const struct options *o)
{
  struct bench src = { 0 }, dst = { 0 };
  struct bench *hs[2] = { &src, &dst };
  struct cslot *cs = calloc (o->qd, sizeof *cs);
  uint64_t size, next = 0, copied = 0, blocks = 0, writes = 0, wakeups = 0;
  double start, secs;
  int error = 0;

  if (!cs)
    die_errno ("calloc");
  conn_open (&src, o, 0, o->source);
  conn_open (&dst, o, 0, o->connect);
  size = src.size < dst.size ? src.size : dst.size;
  size = size / o->bs * o->bs;
  for (int i = 0; i < 2; i++)
    writer_counts (hs[i], &hs[i]->writes0, &hs[i]->wakeups0);
  start = now ();
  while (copied < size && !error) {
    struct pollfd p[2];
    bool busy = false;

    writer_batch_begin (&src);  /* the thread's: both handles' callbacks */
    for (int k = 0; k < o->qd; k++) {
      struct cslot *s = &cs[k];
      nbd_completion_callback cb = { .callback = cslot_done, .user_data = s };

      if (s->error && !error)
        error = s->error;
      if (s->state == C_FREE && next < size) {
        s->state = C_READING;
        s->offset = next;
        next += o->bs;
        if (nbd_aio_pread (src.h, src.slots[k].buf, o->bs, s->offset, cb, 0) == -1)
          die ("nbd_aio_pread");
      }
      else if (s->state == C_READ) {
        s->state = C_WRITING;
        if (nbd_aio_pwrite (dst.h, src.slots[k].buf, o->bs, s->offset, cb, 0) == -1)
          die ("nbd_aio_pwrite");
        copied += o->bs;        /* counted once the write is issued; drained below */
        blocks++;
      }
      busy |= s->state != C_FREE;
    }
    for (int i = 0; i < 2; i++)
      writer_batch_end (hs[i]);
    if (!busy)
      break;
    for (int i = 0; i < 2; i++) {
      unsigned dir = nbd_aio_get_direction (hs[i]->h);

      p[i] = (struct pollfd) { .fd = nbd_aio_get_fd (hs[i]->h), .events = 0 };
      if (dir & LIBNBD_AIO_DIRECTION_READ)
        p[i].events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE)
        p[i].events |= POLLOUT;
    }
    if (poll (p, 2, -1) == -1 && errno != EINTR)
      die_errno ("poll");
    for (int i = 0; i < 2; i++) {
      if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (hs[i]->h) == -1)
        die ("nbd_aio_notify_read");
      if ((p[i].revents & POLLOUT) && nbd_aio_notify_write (hs[i]->h) == -1)
        die ("nbd_aio_notify_write");
    }
  }
  /* The last writes. */
  for (int k = 0; k < o->qd && !error; k++)
    while (cs[k].state != C_FREE && !cs[k].error)
      if (nbd_poll (dst.h, -1) == -1)
        die ("nbd_poll");
  secs = now () - start;
  for (int k = 0; k < o->qd; k++)
    if (cs[k].error && !error)
      error = cs[k].error;
  if (error) {
    fprintf (stderr, "bench: copy: a request failed: %s\n", strerror (error));
    return 1;
  }
  for (int i = 0; i < 2; i++) {
    uint64_t w, k;

    writer_counts (hs[i], &w, &k);
    writes += w - hs[i]->writes0;
    wakeups += k - hs[i]->wakeups0;
  }
  printf ("lib=%s version=%s server=external transport=unix conns=1 workload=copy bs=%" PRIu32
          " qd=%d writer=%d pin=%d ops=%" PRIu64 " secs=%.6f ops_s=%.1f mib_s=%.2f"
          " writer_writes=%" PRIu64 " writer_wakeups=%" PRIu64 "\n",
          nbd_get_package_name (src.h), nbd_get_version (src.h), o->bs, o->qd, (int) o->writer,
          o->pin, blocks, secs, blocks / secs, copied / MIB / secs, writes, wakeups);
  fflush (stdout);
  conn_close (&src);
  conn_close (&dst);
  free (cs);
  return 0;
}

int
main (int argc, char *argv[])
{
  struct options o;
  struct bench *conns;
  uint64_t ops = 0, bytes = 0, errors = 0, writes = 0, wakeups = 0, copied = 0;
  int first_error = 0;
  double t1 = 0, cpu1_self, cpu1_server;

  parse_options (argc, argv, &o);
  signal (SIGPIPE, SIG_IGN);
#ifndef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (o.writer == WR_COPY) {
    fprintf (stderr, "bench: --writer: this library has no nbd_set_concurrent_writer\n");
    return 2;
  }
#endif
#ifndef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER_ZERO_COPY
  if (o.writer == WR_ZERO_COPY) {
    fprintf (stderr, "bench: --zero-copy: this library has no "
             "nbd_set_concurrent_writer_zero_copy\n");
    return 2;
  }
#endif
  /* Pinned before the server starts: it inherits the CPU. */
  if (o.pin >= 0)
    pin_to (o.pin);
  if (o.server)
    start_server (&o);

  if (o.workload == W_COPY)
    return copy_main (&o);
  conns = calloc (o.conns, sizeof *conns);
  if (!conns)
    die_errno ("calloc");
  for (int i = 0; i < o.conns; i++) {
    conn_open (&conns[i], &o, i, NULL);
    conns[i].requests = o.requests / o.conns + (i == 0 ? o.requests % o.conns : 0);
  }

  /* Connection 0 runs on this thread, so one connection has no thread of
   * its own; the others each get one. */
  if (pthread_barrier_init (&barrier, NULL, (unsigned) o.conns) != 0)
    die_errno ("pthread_barrier_init");
  for (int i = 1; i < o.conns; i++)
    if (pthread_create (&conns[i].thread, NULL, conn_run, &conns[i]) != 0)
      die_errno ("pthread_create");
  conn_run (&conns[0]);
  for (int i = 1; i < o.conns; i++)
    pthread_join (conns[i].thread, NULL);
  pthread_barrier_destroy (&barrier);

  for (int i = 0; i < o.conns; i++) {
    const struct bench *b = &conns[i];
    uint64_t w, k;

    ops += b->completed;
    bytes += b->bytes;
    if (b->errors && !errors)
      first_error = b->first_error;
    errors += b->errors;
    if (b->t_end > t1)
      t1 = b->t_end;
    writer_counts (b, &w, &k);
    writes += w - b->writes0;
    wakeups += k - b->wakeups0;
    copied += writer_copied (b) - b->copied0;
  }
  if (errors) {
    fprintf (stderr, "bench: %" PRIu64 " requests failed, the first with %s\n", errors,
             strerror (first_error));
    return 1;
  }

  cpu1_self = clock_seconds (CLOCK_PROCESS_CPUTIME_ID);
  cpu1_server = cpu_server ();
  printf ("lib=%s version=%s server=%s transport=%s conns=%d workload=%s bs=%" PRIu32
          " qd=%d writer=%d pin=%d ops=%" PRIu64 " secs=%.6f ops_s=%.1f mib_s=%.2f"
          " writer_writes=%" PRIu64 " writer_wakeups=%" PRIu64 " tls=%s encrypt=%d"
          " cpu_client=%.3f cpu_server=%.3f writer_copied=%" PRIu64 "\n",
          nbd_get_package_name (conns[0].h), nbd_get_version (conns[0].h),
          o.server ? o.server : "external", o.transport == T_TCP ? "tcp" : "unix", o.conns,
          workload_names[o.workload], o.bs, o.qd, (int) o.writer, o.pin, ops, t1 - t0,
          ops / (t1 - t0), bytes / MIB / (t1 - t0), writes, wakeups, o.tls ? o.tls : "none",
          (int) o.encrypt, (cpu1_self - cpu0_self) / (t1 - t0),
          (cpu1_server - cpu0_server) / (t1 - t0), copied);
  fflush (stdout);

  for (int i = 0; i < o.conns; i++)
    conn_close (&conns[i]);
  free (conns);
  stop_server ();
  return 0;
}
