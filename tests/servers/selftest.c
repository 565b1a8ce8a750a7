/* selftest: the server helpers start what they say and stop it completely.
 *
 * For each server (nbdkit memory, nbdkit oldstyle, nbdkit on TCP, qemu-nbd on
 * a raw file and on a qcow2 with data, nbd-server on a Unix socket and on
 * TCP): it listens, greets a plain-socket client with "NBDMAGIC" and the
 * right second magic, and after server_stop its PID is gone and its
 * directory removed.  Also: a server that cannot start fails fast and
 * leaves nothing behind.  Uses no libnbd at all.
 */
#include "tap.h"
#include "servers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GREETING_TIMEOUT_MS 5000

static const unsigned char oldstyle_magic[8] = { 0x00, 0x00, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53 };

static int
connect_server (const struct test_server *s)
{
  int fd;

  if (s->sock) {
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen (s->sock) >= sizeof sun.sun_path)
      return -1;
    strcpy (sun.sun_path, s->sock);
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0)
      return fd;
  }
  else {
    struct sockaddr_in sin = {
      .sin_family = AF_INET,
      .sin_port = htons ((uint16_t) s->tcp_port),
      .sin_addr.s_addr = htonl (INADDR_LOOPBACK),
    };

    fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect (fd, (struct sockaddr *) &sin, sizeof sin) == 0)
      return fd;
  }
  if (fd >= 0)
    close (fd);
  return -1;
}

/* Read exactly @n bytes within GREETING_TIMEOUT_MS.  Returns bytes read. */
static size_t
read_bounded (int fd, unsigned char *buf, size_t n)
{
  struct timespec start, now;
  size_t got = 0;

  clock_gettime (CLOCK_MONOTONIC, &start);
  while (got < n) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    long elapsed;
    ssize_t r;

    clock_gettime (CLOCK_MONOTONIC, &now);
    elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed >= GREETING_TIMEOUT_MS || poll (&pfd, 1, (int) (GREETING_TIMEOUT_MS - elapsed)) <= 0)
      break;
    r = read (fd, buf + got, n - got);
    if (r <= 0)
      break;
    got += (size_t) r;
  }
  return got;
}

/* The server greets with NBDMAGIC then IHAVEOPT (newstyle) or the oldstyle
 * magic.
 */
static void
check_greeting (const struct test_server *s, const char *what, bool oldstyle)
{
  unsigned char buf[16];
  int fd = connect_server (s);
  size_t n;

  if (!ok (fd >= 0, "%s: accepts a connection", what)) {
    skip ("%s: no connection, no greeting", what);
    return;
  }
  n = read_bounded (fd, buf, sizeof buf);
  close (fd);
  ok (n >= 8 && memcmp (buf, "NBDMAGIC", 8) == 0, "%s: sends NBDMAGIC first (got %zu bytes)",
      what, n);
  if (oldstyle)
    ok (n == 16 && memcmp (buf + 8, oldstyle_magic, 8) == 0, "%s: then the oldstyle magic", what);
  else
    ok (n == 16 && memcmp (buf + 8, "IHAVEOPT", 8) == 0, "%s: then IHAVEOPT", what);
}

/* Stop @s and check that nothing is left: the PID and the directory. */
static void
check_stop (struct test_server *s, const char *what)
{
  pid_t pid = s->pid;
  char *dir = strdup (s->dir);
  struct stat st;

  is_int (server_stop (s), 0, "%s: server_stop", what);
  ok (!server_pid_running (pid), "%s: pid %d is gone", what, (int) pid);
  ok (dir && stat (dir, &st) == -1 && errno == ENOENT, "%s: %s removed", what, dir ? dir : "?");
  ok (s->pid == 0 && s->node_ == NULL && s->uri == NULL, "%s: struct cleared", what);
  is_int (server_stop (s), 0, "%s: server_stop again is a no-op", what);
  free (dir);
}

/* Start with @r (the start call's result), then greet and stop. */
static void
check_server (struct test_server *s, int r, const char *what, bool oldstyle,
              const char *uri_prefix)
{
  if (r == -1 && errno == ENOENT) {
    skip ("%s: program not installed", what);
    return;
  }
  if (!ok (r == 0, "%s: starts", what))
    return;
  note ("%s: pid %d, uri %s", what, (int) s->pid, s->uri);
  ok (s->pid > 0 && server_pid_running (s->pid), "%s: pid %d is running", what, (int) s->pid);
  ok (strncmp (s->uri, uri_prefix, strlen (uri_prefix)) == 0, "%s: uri %s starts with %s", what,
      s->uri, uri_prefix);
  check_greeting (s, what, oldstyle);
  check_stop (s, what);
}

int
main (void)
{
  struct test_server s;
  char *raw, *qcow2, *uri;
  unsigned char magic[4];
  struct stat st;
  FILE *f;
  int r;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  /* Images. */
  raw = image_create_raw (1 << 20);
  ok (raw && stat (raw, &st) == 0 && st.st_size == 1 << 20, "raw image of 1 MiB: %s",
      raw ? raw : "NULL");
  ok (raw && st.st_blocks == 0, "raw image is sparse");
  const char *cmds[] = { "write -P 0xab 0 64k", "write -P 0xcd 1M 64k", NULL };
  qcow2 = image_create ("qcow2", 4 << 20, cmds);
  f = qcow2 ? fopen (qcow2, "re") : NULL;
  ok (f && fread (magic, 1, 4, f) == 4 && memcmp (magic, "QFI\xfb", 4) == 0,
      "qcow2 image with data: %s", qcow2 ? qcow2 : "NULL");
  if (f)
    fclose (f);

  /* nbdkit, newstyle, Unix socket. */
  const char *memory[] = { "memory", "size=1M", NULL };
  r = server_start_nbdkit (&s, memory);
  if (r == 0) {
    uri = server_uri (&s, "other/name x");
    ok (uri && strstr (uri, "nbd+unix:///other/name%20x?socket=/") == uri,
        "server_uri encodes the export: %s", uri ? uri : "NULL");
    free (uri);
    is_str (s.export_name, "", "nbdkit: default export");
  }
  check_server (&s, r, "nbdkit memory", false, "nbd+unix:///?socket=/");

  const char *oldstyle[] = { "-o", "memory", "1M", NULL };
  r = server_start_nbdkit (&s, oldstyle);
  check_server (&s, r, "nbdkit oldstyle", true, "nbd+unix:///?socket=/");

  r = server_start_nbdkit_tcp (&s, memory);
  if (r == 0)
    ok (s.sock == NULL && s.tcp_port > 0, "nbdkit tcp: port %d, no socket", s.tcp_port);
  check_server (&s, r, "nbdkit tcp", false, "nbd://127.0.0.1:");

  /* A server that cannot start fails fast, with nothing left behind. */
  const char *bogus[] = { "no-such-plugin-here", NULL };
  time_t t0 = time (NULL);
  r = server_start_nbdkit (&s, bogus);
  ok (r == -1 && errno == ECHILD, "nbdkit with a bogus plugin fails (errno %d)", errno);
  ok (time (NULL) - t0 < 5, "and fails fast");
  ok (s.pid == 0 && s.dir == NULL && s.node_ == NULL, "and leaves the struct empty");

  /* qemu-nbd. */
  if (raw) {
    const char *args[] = { "-f", "raw", "-x", "disk", raw, NULL };
    r = server_start_qemu_nbd (&s, args);
    if (r == 0)
      is_str (s.export_name, "disk", "qemu-nbd: export from -x");
    check_server (&s, r, "qemu-nbd raw", false, "nbd+unix:///disk?socket=/");
  }
  if (qcow2) {
    const char *args[] = { "-f", "qcow2", "--export-name=q", qcow2, NULL };
    r = server_start_qemu_nbd_tcp (&s, args);
    check_server (&s, r, "qemu-nbd qcow2 tcp", false, "nbd://127.0.0.1:");
  }

  /* nbd-server. */
  if (raw) {
    r = server_start_nbd_server (&s, raw, "disk", "readonly = false\n");
    if (r == 0) {
      struct stat cst;
      char *conf = NULL;

      is_str (s.export_name, "disk", "nbd-server: export is the section name");
      ok (asprintf (&conf, "%s/nbd-server.conf", s.dir) > 0 && stat (conf, &cst) == 0,
          "nbd-server: config written");
      free (conf);
    }
    check_server (&s, r, "nbd-server", false, "nbd+unix:///disk?socket=/");

    const struct nbd_server_config c = { .image = raw, .export_name = "tcpdisk", .tcp = true };
    r = server_start_nbd_server_config (&s, &c);
    check_server (&s, r, "nbd-server tcp", false, "nbd://127.0.0.1:");
  }

  r = server_start_nbd_server (&s, "/no/such/image", NULL, NULL);
  ok (r == -1 && s.node_ == NULL, "nbd-server with a missing image fails at start");

  free (raw);
  free (qcow2);
  return done_testing ();
}
