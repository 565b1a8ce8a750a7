/* tls-bench: TLS throughput, the same source against libnbd-core and the
 * system's libnbd 1.14.  Not a test (not in tls.tests): built and run by
 * hand, side by side in one run, e.g.
 *
 *   B=build-tls-rel
 *   cc -O2 -D_GNU_SOURCE tests/core/tls-bench.c -o $B/tls-bench-core \
 *      -Ilibnbd-core/include -L$B/libnbd-core -lnbd-core -Wl,-rpath,$PWD/$B/libnbd-core -lpthread
 *   cc -O2 -D_GNU_SOURCE tests/core/tls-bench.c -o $B/tls-bench-libnbd \
 *      $(pkg-config --cflags --libs libnbd) -lpthread
 *   for tls in none psk x509; do
 *     $B/tls-bench-libnbd --tls $tls; $B/tls-bench-core --tls $tls
 *     $B/tls-bench-core --tls $tls --writer
 *   done
 *
 * Each run starts nbdkit (memory plugin, --tls=require with a PSK or X.509
 * certificates, or plaintext) on a Unix socket, connects, then writes SIZE
 * MiB in BS KiB requests with QD in flight and reads them back (verified),
 * driving the handle with nbd_poll as a libnbd program does.  --writer
 * (libnbd-core only) sends through nbd_set_concurrent_writer with a writer
 * thread.  Keys and certificates are made once in --pki DIR (certtool,
 * psktool).  One line of output: lib, tls, writer, write and read MiB/s,
 * this process's CPU time per MiB in each pass, and the server's per MiB
 * over both (from RUSAGE_CHILDREN, including the certtool runs the first
 * time --pki is made).
 *
 *   tls-bench [--tls none|psk|x509] [--writer] [--size MIB] [--bs KIB] [--qd N] [--pki DIR]
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

static void
die (const char *what)
{
  const char *e = nbd_get_error ();

  fprintf (stderr, "tls-bench: %s: %s\n", what, e ? e : strerror (errno));
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- Keys and certificates (as docs/protocol.md 3.3) ------------------ */

static void
sh (const char *cmd)
{
  if (system (cmd) != 0) {
    fprintf (stderr, "tls-bench: failed: %s\n", cmd);
    exit (1);
  }
}

static void
make_pki (const char *d)
{
  char cmd[4096], path[1024];

  snprintf (path, sizeof path, "%s/keys.psk", d);
  if (access (path, R_OK) == 0)
    return;
  mkdir (d, 0700);
  snprintf (cmd, sizeof cmd,
            "cd '%s' && exec >/dev/null 2>&1 && "
            "certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem && "
            "printf 'cn = NBD Test CA\\nca\\ncert_signing_key\\nexpiration_days = 30\\n' "
            "> ca.info && "
            "certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info "
            "--outfile ca-cert.pem && "
            "certtool --generate-privkey --key-type=ecdsa --outfile server-key.pem && "
            "printf 'cn = localhost\\ndns_name = localhost\\ntls_www_server\\nencryption_key\\n"
            "signing_key\\n' > server.info && "
            "certtool --generate-certificate --load-ca-certificate ca-cert.pem "
            "--load-ca-privkey ca-key.pem --load-privkey server-key.pem --template server.info "
            "--outfile server-cert.pem && "
            "psktool -u alice -p keys.psk", d);
  sh (cmd);
}

/* ---- The server -------------------------------------------------------- */

static pid_t
start_server (const char *sock, const char *tls, const char *pki, uint64_t size)
{
  char certs[1100], psk[1100], sz[64];
  pid_t pid;

  snprintf (certs, sizeof certs, "--tls-certificates=%s", pki);
  snprintf (psk, sizeof psk, "--tls-psk=%s/keys.psk", pki);
  snprintf (sz, sizeof sz, "size=%" PRIu64, size);
  pid = fork ();
  if (pid == -1)
    die ("fork");
  if (pid == 0) {
    prctl (PR_SET_PDEATHSIG, SIGTERM);
    if (strcmp (tls, "none") == 0)
      execlp ("nbdkit", "nbdkit", "-f", "-U", sock, "memory", sz, (char *) NULL);
    else
      execlp ("nbdkit", "nbdkit", "-f", "-U", sock, "--tls=require",
              strcmp (tls, "psk") == 0 ? psk : certs, "memory", sz, (char *) NULL);
    _exit (127);
  }
  for (int i = 0; i < 500; i++) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket (AF_UNIX, SOCK_STREAM, 0);

    memcpy (sun.sun_path, sock, strlen (sock) + 1);
    if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0) {
      close (fd);
      return pid;
    }
    close (fd);
    usleep (20000);
  }
  fprintf (stderr, "tls-bench: nbdkit did not start\n");
  exit (1);
}

/* ---- The writer (libnbd-core only) ------------------------------------- */

struct ring {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  char *buf;
  size_t len, cap;
  bool eos, stop;
  int fd;
  struct nbd_handle *h;
};

#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
static void
enqueue (void *data, const void *buf, size_t len)
{
  struct ring *r = data;

  pthread_mutex_lock (&r->lock);
  if (!buf)
    r->eos = true;
  else {
    if (r->len + len > r->cap) {
      size_t cap = r->cap ? r->cap : 4 << 20;
      while (cap < r->len + len)
        cap *= 2;
      r->buf = realloc (r->buf, cap);
      if (!r->buf)
        abort ();
      r->cap = cap;
    }
    memcpy (r->buf + r->len, buf, len);
    r->len += len;
  }
  pthread_cond_signal (&r->cond);
  pthread_mutex_unlock (&r->lock);
}
#endif

static void *writer_thread (void *arg) __attribute__((unused));
static void *
writer_thread (void *arg)
{
  struct ring *r = arg;
  char *mine = NULL;
  size_t mine_cap = 0;

  for (;;) {
    size_t n;
    bool eos;

    pthread_mutex_lock (&r->lock);
    while (r->len == 0 && !r->eos && !r->stop)
      pthread_cond_wait (&r->cond, &r->lock);
    if (r->stop && r->len == 0) {
      pthread_mutex_unlock (&r->lock);
      break;
    }
    char *t = r->buf;
    size_t tc = r->cap;
    r->buf = mine;
    r->cap = mine_cap;
    mine = t;
    mine_cap = tc;
    n = r->len;
    r->len = 0;
    eos = r->eos;
    pthread_mutex_unlock (&r->lock);
    for (size_t off = 0; off < n;) {
      ssize_t s = send (r->fd, mine + off, n - off, MSG_NOSIGNAL);

      if (s == -1) {
        if (errno == EAGAIN) {
          struct pollfd p = { .fd = r->fd, .events = POLLOUT };
          poll (&p, 1, -1);
          continue;
        }
        if (errno == EINTR)
          continue;
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
        nbd_concurrent_writer_error (r->h, errno);
#endif
        goto out;
      }
      off += s;
    }
    if (eos) {
      shutdown (r->fd, SHUT_WR);
      break;
    }
  }
out:
  free (mine);
  return NULL;
}

/* ---- The run ----------------------------------------------------------- */

static int
done_cb (void *data, int *error)
{
  int *c = data;

  if (*error) {
    fprintf (stderr, "tls-bench: a request failed: %s\n", strerror (*error));
    exit (1);
  }
  (*c)++;
  return 1;
}

/* CPU seconds of this process (all its threads) so far. */
static double
cpu (void)
{
  struct rusage ru;

  getrusage (RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* MiB/s; *cpu_ms_per_mib gets this process's CPU time per MiB. */
static double
run_pass (struct nbd_handle *h, bool write, char *buf, uint64_t size, size_t bs, int qd,
          double *cpu_ms_per_mib)
{
  int done = 0, issued = 0, total = (int) (size / bs);
  double t0 = now (), c0 = cpu ();

  while (done < total) {
    while (issued < total && issued - done < qd) {
      nbd_completion_callback cb = { .callback = done_cb, .user_data = &done };
      uint64_t off = (uint64_t) issued * bs;
      int64_t c = write ? nbd_aio_pwrite (h, buf + off, bs, off, cb, 0)
                        : nbd_aio_pread (h, buf + off, bs, off, cb, 0);
      if (c == -1)
        die (write ? "nbd_aio_pwrite" : "nbd_aio_pread");
      issued++;
    }
    if (nbd_poll (h, -1) == -1)
      die ("nbd_poll");
  }
  *cpu_ms_per_mib = (cpu () - c0) * 1000.0 / ((double) size / (1024.0 * 1024.0));
  return (double) size / (1024.0 * 1024.0) / (now () - t0);
}

int
main (int argc, char *argv[])
{
  const char *tls = "none", *pki = "/tmp/tls-bench-pki";
  bool use_writer = false;
  uint64_t size = 512ull << 20;
  size_t bs = 256 << 10;
  int qd = 16;
  char dir[] = "/tmp/tls-bench-XXXXXX", sock[128];
  struct ring ring = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
  pthread_t thr;
  struct nbd_handle *h;
  char *buf, *copy;
  double wr, rd, wcpu, rcpu, scpu;
  pid_t pid;
  int fd, st;

  for (int i = 1; i < argc; i++) {
    if (strcmp (argv[i], "--tls") == 0 && i + 1 < argc)
      tls = argv[++i];
    else if (strcmp (argv[i], "--writer") == 0)
      use_writer = true;
    else if (strcmp (argv[i], "--size") == 0 && i + 1 < argc)
      size = strtoull (argv[++i], NULL, 10) << 20;
    else if (strcmp (argv[i], "--bs") == 0 && i + 1 < argc)
      bs = strtoul (argv[++i], NULL, 10) << 10;
    else if (strcmp (argv[i], "--qd") == 0 && i + 1 < argc)
      qd = atoi (argv[++i]);
    else if (strcmp (argv[i], "--pki") == 0 && i + 1 < argc)
      pki = argv[++i];
    else {
      fprintf (stderr, "usage: tls-bench [--tls none|psk|x509] [--writer] [--size MIB] "
               "[--bs KIB] [--qd N] [--pki DIR]\n");
      exit (2);
    }
  }
#ifndef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
  if (use_writer) {
    fprintf (stderr, "tls-bench: --writer needs libnbd-core\n");
    exit (2);
  }
#endif
  if (strcmp (tls, "none") != 0)
    make_pki (pki);
  if (!mkdtemp (dir))
    die ("mkdtemp");
  snprintf (sock, sizeof sock, "%s/sock", dir);
  pid = start_server (sock, tls, pki, size);

  h = nbd_create ();
  if (!h)
    die ("nbd_create");
  if (strcmp (tls, "psk") == 0) {
    char f[1100];

    snprintf (f, sizeof f, "%s/keys.psk", pki);
    if (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 || nbd_set_tls_psk_file (h, f) == -1 ||
        nbd_set_tls_username (h, "alice") == -1)
      die ("TLS settings");
  }
  else if (strcmp (tls, "x509") == 0) {
    if (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == -1 || nbd_set_tls_certificates (h, pki) == -1)
      die ("TLS settings");
  }
  {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memcpy (sun.sun_path, sock, strlen (sock) + 1);
    if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
      die ("connect");
  }
  if (use_writer) {
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
    ring.fd = fd;
    ring.h = h;
    if (pthread_create (&thr, NULL, writer_thread, &ring) != 0 ||
        nbd_set_concurrent_writer (h, &ring, enqueue) == -1)
      die ("writer");
#endif
  }
  if (nbd_connect_socket (h, fd) == -1)
    die ("nbd_connect_socket");
  if (strcmp (tls, "none") != 0 && nbd_get_tls_negotiated (h) != 1) {
    fprintf (stderr, "tls-bench: TLS was not negotiated\n");
    exit (1);
  }

  buf = malloc (size);
  copy = malloc (size);
  for (uint64_t i = 0; i < size; i += 8) {
    uint64_t v = i * UINT64_C (0x9e3779b97f4a7c15);
    memcpy (buf + i, &v, 8);
  }
  memcpy (copy, buf, size);
  wr = run_pass (h, true, buf, size, bs, qd, &wcpu);
  memset (buf, 0, size);
  rd = run_pass (h, false, buf, size, bs, qd, &rcpu);
  if (memcmp (buf, copy, size) != 0) {
    fprintf (stderr, "tls-bench: data read back differs\n");
    exit (1);
  }
  if (nbd_shutdown (h, 0) == -1)
    die ("nbd_shutdown");
  if (use_writer) {
    pthread_mutex_lock (&ring.lock);
    ring.stop = true;
    pthread_cond_signal (&ring.cond);
    pthread_mutex_unlock (&ring.lock);
    pthread_join (thr, NULL);
    free (ring.buf);
  }
  nbd_close (h);
  kill (pid, SIGTERM);
  waitpid (pid, &st, 0);
  {
    struct rusage ru;

    getrusage (RUSAGE_CHILDREN, &ru);
    scpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
            (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6) * 1000.0 /
           (2.0 * (double) size / (1024.0 * 1024.0));
  }
  unlink (sock);
  rmdir (dir);
  printf ("lib=%-11s tls=%-4s writer=%d bs=%zuK qd=%d size=%" PRIu64 "M write=%.0f MiB/s "
          "read=%.0f MiB/s  client CPU ms/MiB: write=%.2f read=%.2f  server: %.2f\n",
#ifdef LIBNBD_HAVE_NBD_SET_CONCURRENT_WRITER
          "libnbd-core",
#else
          "libnbd-1.14",
#endif
          tls, use_writer, bs >> 10, qd, size >> 20, wr, rd, wcpu, rcpu, scpu);
  free (buf);
  free (copy);
  return 0;
}
