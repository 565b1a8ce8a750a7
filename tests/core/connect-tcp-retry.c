/* connect-tcp-retry: the concurrent writer's socket promise when a TCP
 * connect tries several addresses.
 *
 * The host names below are this test's own: it resolves them itself (it
 * defines getaddrinfo, which the library's call binds to; any other name
 * goes to the C library).  REFUSE_FIRST gives two addresses, a port on
 * 127.0.0.1 that is bound but not listening (so it refuses), then nbdkit's;
 * REFUSE_ALL gives only the refusing one.  That makes the retry
 * deterministic on any machine, whatever its resolver says about
 * "localhost"; and the test checks that it really happened (the name was
 * resolved, the first socket was still connecting when the call returned,
 * and the socket under the descriptor number changed), failing rather than
 * skipping otherwise.
 *
 * Proves, with a writer set (nbd_set_concurrent_writer, its thread sending
 * on nbd_aio_get_fd):
 *  - nbd_aio_connect_tcp and nbd_aio_connect_uri to REFUSE_FIRST, driven
 *    by a hand-written poll loop: nbd_aio_get_fd gives the same number from
 *    the call's return until nbd_close, although the refused socket was
 *    replaced (a lower number was freed meanwhile, which a new socket would
 *    take), and that number ends connected to nbdkit, close-on-exec; the
 *    connection works (write, read back, shutdown);
 *  - nbd_connect_tcp to REFUSE_ALL fails with ECONNREFUSED and leaves the
 *    handle created, still holding its number; the next connect (to
 *    REFUSE_FIRST) keeps that number too;
 * and without a writer (nothing promised): REFUSE_FIRST connects, and
 * REFUSE_ALL leaves no descriptor behind.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "writer-ring.h"

#define REFUSE_FIRST "refuse-first.gnbd.test"
#define REFUSE_ALL "refuse-all.gnbd.test"
#define POLL_MS 10000           /* every wait is bounded by this */

/* ---- The test's own resolver ------------------------------------------- */

static in_port_t refusing_port, server_port; /* network byte order */
static unsigned resolved;                    /* our names, resolved so far */

struct fake_ai {
  struct addrinfo ai;
  struct sockaddr_in sin;
};
static struct addrinfo *fake_lists[8];

static struct addrinfo *
fake_list (const in_port_t *ports, size_t n)
{
  struct addrinfo *head = NULL, **tail = &head;

  for (size_t i = 0; i < n; i++) {
    struct fake_ai *f = calloc (1, sizeof *f);

    if (!f)
      bail_out ("calloc");
    f->sin.sin_family = AF_INET;
    f->sin.sin_port = ports[i];
    f->sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    f->ai.ai_family = AF_INET;
    f->ai.ai_socktype = SOCK_STREAM;
    f->ai.ai_protocol = IPPROTO_TCP;
    f->ai.ai_addrlen = sizeof f->sin;
    f->ai.ai_addr = (struct sockaddr *) &f->sin;
    *tail = &f->ai;
    tail = &f->ai.ai_next;
  }
  for (size_t i = 0; i < sizeof fake_lists / sizeof fake_lists[0]; i++)
    if (!fake_lists[i]) {
      fake_lists[i] = head;
      return head;
    }
  bail_out ("too many fake address lists at once");
}

int
getaddrinfo (const char *node, const char *service, const struct addrinfo *hints,
             struct addrinfo **res)
{
  int (*real) (const char *, const char *, const struct addrinfo *, struct addrinfo **) =
    (int (*) (const char *, const char *, const struct addrinfo *, struct addrinfo **))
    dlsym (RTLD_NEXT, "getaddrinfo");
  in_port_t ports[2] = { refusing_port, server_port };

  if (node && strcmp (node, REFUSE_FIRST) == 0) {
    resolved++;
    *res = fake_list (ports, 2);
    return 0;
  }
  if (node && strcmp (node, REFUSE_ALL) == 0) {
    resolved++;
    *res = fake_list (ports, 1);
    return 0;
  }
  return real (node, service, hints, res);
}

void
freeaddrinfo (struct addrinfo *res)
{
  void (*real) (struct addrinfo *) = (void (*) (struct addrinfo *)) dlsym (RTLD_NEXT,
                                                                           "freeaddrinfo");

  for (size_t i = 0; i < sizeof fake_lists / sizeof fake_lists[0]; i++)
    if (fake_lists[i] && fake_lists[i] == res) {
      fake_lists[i] = NULL;
      while (res) {
        struct addrinfo *next = res->ai_next;

        free (res);             /* the addrinfo is the fake_ai's first member */
        res = next;
      }
      return;
    }
  real (res);
}

/* ---- Helpers ------------------------------------------------------------ */

static int
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  struct dirent *e;
  int n = 0;

  if (!d)
    bail_out ("opendir /proc/self/fd");
  while ((e = readdir (d)))
    if (e->d_name[0] != '.')
      n++;
  closedir (d);
  return n - 1;                 /* the directory's own fd */
}

static ino_t
inode_of (int fd)
{
  struct stat st;

  return fstat (fd, &st) == 0 ? st.st_ino : 0;
}

/* fd is connected to nbdkit: its peer is 127.0.0.1 and the server's port. */
static bool
peer_is_server (int fd)
{
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;

  return getpeername (fd, (struct sockaddr *) &sin, &len) == 0 && sin.sin_family == AF_INET &&
         sin.sin_port == server_port && sin.sin_addr.s_addr == htonl (INADDR_LOOPBACK);
}

/* Drive the handle to ready with our own POLLIN loop (a writer is set, so
 * nothing waits for POLLOUT), as a user would: asking nbd_aio_get_fd each
 * turn.  Returns how many turns saw another number than @fd0. */
static unsigned
drive_to_ready (struct nbd_handle *h, int fd0)
{
  unsigned other = 0;

  for (int turn = 0; turn < 1000 && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h) &&
                     !nbd_aio_is_created (h); turn++) {
    struct pollfd p = { .fd = nbd_aio_get_fd (h), .events = POLLIN };

    if (p.fd != fd0 && other++ == 0)
      diag ("nbd_aio_get_fd said %d, not %d", p.fd, fd0);
    if (poll (&p, 1, POLL_MS) != 1) {
      diag ("poll: nothing within %d ms", POLL_MS);
      break;
    }
    if (nbd_aio_notify_read (h) == -1) {
      diag ("nbd_aio_notify_read: %s", nbd_get_error ());
      break;
    }
  }
  return other;
}

/* Start an aio connect to REFUSE_FIRST (@start), then check the promise
 * through to ready, and that the connection works. */
static void
retry_keeps_fd (struct nbd_handle *h, struct wring *r, int (*start) (struct nbd_handle *),
                int expect_fd, const char *what)
{
  unsigned before = resolved, other;
  int spare, fd0;
  ino_t first;
  char buf[512];

  /* A free number below the first socket's, once we close it: a socket
   * opened for the retry would get it. */
  spare = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (spare == -1)
    bail_out ("open /dev/null");
  if (!is_int (start (h), 0, "%s: the connect starts", what))
    diag ("%s", nbd_get_error ());
  /* The preconditions of a real retry on a published number. */
  is_uint (resolved - before, 1, "%s: the library resolved " REFUSE_FIRST " (ours)", what);
  if (!ok (nbd_aio_is_connecting (h),
           "%s: the first address (the refusing port) is still connecting", what))
    bail_out ("%s: connect(2) to a refusing port on 127.0.0.1 did not return EINPROGRESS: "
              "this test cannot make the library retry on a published descriptor", what);
  fd0 = nbd_aio_get_fd (h);
  if (expect_fd >= 0)
    is_int (fd0, expect_fd, "%s: the number the handle already held", what);
  else
    ok (fd0 > spare, "%s: nbd_aio_get_fd gives the socket (%d), above the spare number", what,
        fd0);
  first = inode_of (fd0);
  close (spare);

  other = drive_to_ready (h, fd0);
  if (!ok (nbd_aio_is_ready (h), "%s: ready, through the second address", what))
    diag ("%s", nbd_get_error ());
  is_uint (other, 0, "%s: nbd_aio_get_fd never gave another number than %d", what, fd0);
  is_int (nbd_aio_get_fd (h), fd0, "%s: and still gives %d", what, fd0);
  ok (inode_of (fd0) != first, "%s: the socket under %d was replaced (a real retry)", what, fd0);
  ok (peer_is_server (fd0), "%s: %d is now connected to nbdkit", what, fd0);
  ok (fcntl (fd0, F_GETFD) & FD_CLOEXEC, "%s: and is close-on-exec", what);
  ok (fcntl (spare, F_GETFD) == -1 && errno == EBADF,
      "%s: the number freed meanwhile is free again (no socket left on it)", what);

  memset (buf, 0xa5, sizeof buf);
  ok (nbd_pwrite (h, buf, sizeof buf, 4096, 0) == 0, "%s: a write through the writer", what);
  memset (buf, 0, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 4096, 0) == 0 && buf[0] == (char) 0xa5 &&
      buf[sizeof buf - 1] == (char) 0xa5, "%s: reads back", what);
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", what);
  ok (wr_wait_done (r, POLL_MS), "%s: the writer thread sent the rest and ended", what);
  is_int (nbd_aio_get_fd (h), fd0, "%s: the number stays until nbd_close", what);
}

static char tcp_port_str[16], tcp_uri[128];

static int
start_tcp (struct nbd_handle *h)
{
  return nbd_aio_connect_tcp (h, REFUSE_FIRST, tcp_port_str);
}

static int
start_uri (struct nbd_handle *h)
{
  return nbd_aio_connect_uri (h, tcp_uri);
}

static struct nbd_handle *
writer_handle (struct wring *r)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || wr_start (r, h) == -1 || nbd_set_concurrent_writer (h, r, wr_enqueue) == -1)
    bail_out ("a handle with a writer: %s", nbd_get_error ());
  return h;
}

int
main (void)
{
  const char *args[] = { "memory", "size=1M", NULL };
  struct test_server srv;
  struct sockaddr_in sin = { .sin_family = AF_INET };
  socklen_t len = sizeof sin;
  struct nbd_handle *h;
  struct wring r;
  int refusing, fds;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit_tcp (&srv, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  server_port = htons ((in_port_t) srv.tcp_port);
  /* Bound, never listening: connects to it are refused, and nothing else
   * can take the port while we hold it. */
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  refusing = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (refusing == -1 || bind (refusing, (struct sockaddr *) &sin, sizeof sin) == -1 ||
      getsockname (refusing, (struct sockaddr *) &sin, &len) == -1)
    bail_out ("a refusing port: %s", strerror (errno));
  refusing_port = sin.sin_port;
  snprintf (tcp_port_str, sizeof tcp_port_str, "%d", srv.tcp_port);
  snprintf (tcp_uri, sizeof tcp_uri, "nbd://" REFUSE_FIRST ":%d/", srv.tcp_port);
  fds = count_fds ();

  h = writer_handle (&r);
  retry_keeps_fd (h, &r, start_tcp, -1, "nbd_aio_connect_tcp with a writer");
  nbd_close (h);
  wr_free (&r);

  h = writer_handle (&r);
  retry_keeps_fd (h, &r, start_uri, -1, "nbd_aio_connect_uri with a writer");
  nbd_close (h);
  wr_free (&r);
  is_int (count_fds (), fds, "with a writer: nbd_close left no descriptor open");

  /* Every address refuses: back to created, the number kept; the next
   * connect goes on with it. */
  h = writer_handle (&r);
  {
    unsigned before = resolved;
    int kept;

    is_int (nbd_connect_tcp (h, REFUSE_ALL, tcp_port_str), -1,
            "a writer, every address refusing: nbd_connect_tcp fails");
    is_errno (ECONNREFUSED, "with ECONNREFUSED");
    is_uint (resolved - before, 1, "the library resolved " REFUSE_ALL " (ours)");
    ok (nbd_aio_is_created (h), "the handle is created again");
    kept = nbd_aio_get_fd (h);
    ok (kept >= 0, "the handle still holds its descriptor number (%d)", kept);
    retry_keeps_fd (h, &r, start_tcp, kept, "the next connect, after the failed one");
  }
  nbd_close (h);
  wr_free (&r);
  is_int (count_fds (), fds, "nbd_close left no descriptor open");

  /* Without a writer nothing is promised, but the retry works and nothing
   * leaks. */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  if (!is_int (nbd_connect_tcp (h, REFUSE_FIRST, tcp_port_str), 0,
               "no writer: nbd_connect_tcp gets through the second address"))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h), 1024 * 1024, "no writer: the export's size");
  ok (peer_is_server (nbd_aio_get_fd (h)), "no writer: connected to nbdkit");
  nbd_close (h);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_connect_tcp (h, REFUSE_ALL, tcp_port_str), -1,
          "no writer, every address refusing: nbd_connect_tcp fails");
  is_errno (ECONNREFUSED, "with ECONNREFUSED");
  is_int (nbd_aio_get_fd (h), -1, "no writer: the handle holds no socket then");
  is_int (count_fds (), fds, "no writer: the refused socket is closed");
  nbd_close (h);
  is_int (count_fds (), fds, "no descriptor left open at the end");

  close (refusing);
  server_stop (&srv);
  return done_testing ();
}
