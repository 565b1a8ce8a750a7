/* sink-server: the benchmark's own NBD server, as cheap as a server can be,
 * so that what the benchmark measures is the client's cost.
 *
 * Fixed newstyle handshake with NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME,
 * NBD_OPT_STRUCTURED_REPLY (unless --no-sr), NBD_OPT_LIST and NBD_OPT_ABORT;
 * meta-context options are acknowledged with no context.  In transmission
 * every read is answered with zeroes (from one shared zero mapping, never
 * copied), every write is discarded, and every other command succeeds.
 * Each connection is served by its own thread: one recv(2) takes as many
 * requests as the socket holds, and all the replies they need leave in as
 * few sendmsg(2) calls as IOV_MAX allows.
 *
 *   sink-server --unix PATH | --tcp ADDR [--port N] [--port-file FILE]
 *               [--size BYTES] [--no-sr]
 *
 * --tcp listens on ADDR (an IPv4 address: the benchmark uses 127.0.0.1) at
 * port N, or with --port 0 (the default) at a free port the kernel picks;
 * --port-file then names a file it writes that port to (a line, written
 * once it listens, so a reader that sees the newline can connect).
 * Accepted TCP sockets get TCP_NODELAY, as nbdkit and the libraries do.
 *
 * It never touches the data and never checks bounds beyond the protocol's
 * framing: it is a benchmark fixture, not a storage server.  It stops on
 * SIGTERM, or when its parent dies (PR_SET_PDEATHSIG).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "protocol.h"

/* The largest read the zero mapping can answer (libnbd's and the core's
 * request limit). */
#define MAX_READ NBD_MAX_REQUEST_SIZE
/* Receive buffer: thousands of 4 KiB write requests or headers per recv. */
#define RBUF (4 * 1024 * 1024)
/* Write payloads at least this large still to come go straight into the
 * discard buffer instead of through the receive buffer. */
#define DIRECT_MIN (64 * 1024)
/* Replies queued per sendmsg: a header and maybe a payload each. */
#define MAX_REPLIES 512

static uint64_t export_size = UINT64_C (1) << 30;
static bool allow_sr = true;
static const char *zeroes;          /* MAX_READ bytes of the zero page */

struct reply {
  /* Simple reply (16 bytes), or structured chunk header (20) + offset (8). */
  unsigned char hdr[28];
};

struct conn {
  int fd;
  bool sr;
  unsigned char *rbuf;
  unsigned char *discard;
  size_t rstart, rend;
  uint64_t skip;                /* write payload bytes still to discard */
  uint64_t skip_cookie;         /* the write whose payload is being skipped */
  struct reply replies[MAX_REPLIES];
  struct iovec iov[2 * MAX_REPLIES];
  int nr_replies, nr_iov;
};

/* ---- Blocking helpers (handshake and replies) ------------------------- */

static int
read_full (int fd, void *buf, size_t len)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = recv (fd, p, len, 0);
    if (r == 0)
      return -1;
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

static int
write_full (int fd, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t r = send (fd, p, len, MSG_NOSIGNAL);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

static int
sendmsg_full (int fd, struct iovec *iov, int n)
{
  while (n > 0) {
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n < IOV_MAX ? n : IOV_MAX };
    ssize_t r = sendmsg (fd, &msg, MSG_NOSIGNAL);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    while (n > 0 && (size_t) r >= iov->iov_len) {
      r -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *) iov->iov_base + r;
      iov->iov_len -= r;
    }
  }
  return 0;
}

/* ---- Handshake -------------------------------------------------------- */

static int
opt_reply (int fd, uint32_t option, uint32_t type, const void *data, uint32_t len)
{
  struct nbd_option_reply_hdr h = {
    .magic = htobe64 (NBD_REP_MAGIC),
    .option = htobe32 (option),
    .type = htobe32 (type),
    .len = htobe32 (len),
  };

  if (write_full (fd, &h, sizeof h) == -1)
    return -1;
  return len ? write_full (fd, data, len) : 0;
}

static uint16_t
eflags (void)
{
  return NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
         NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN;
}

/* NBD_OPT_INFO / NBD_OPT_GO: the export (and block sizes if asked). */
static int
info_replies (int fd, uint32_t option, const unsigned char *data, uint32_t len)
{
  unsigned char exp[12], bs[14];
  uint32_t namelen;
  uint16_t nr, v16;
  uint64_t v64;
  bool want_bs = false;

  if (len < 6)
    return opt_reply (fd, option, NBD_REP_ERR_INVALID, NULL, 0);
  memcpy (&namelen, data, 4);
  namelen = be32toh (namelen);
  if (namelen > len - 6)
    return opt_reply (fd, option, NBD_REP_ERR_INVALID, NULL, 0);
  memcpy (&nr, data + 4 + namelen, 2);
  nr = be16toh (nr);
  if (len != 6 + namelen + 2 * (uint32_t) nr)
    return opt_reply (fd, option, NBD_REP_ERR_INVALID, NULL, 0);
  for (uint16_t i = 0; i < nr; i++) {
    uint16_t t;
    memcpy (&t, data + 6 + namelen + 2 * i, 2);
    if (be16toh (t) == NBD_INFO_BLOCK_SIZE)
      want_bs = true;
  }
  v16 = htobe16 (NBD_INFO_EXPORT);
  memcpy (exp, &v16, 2);
  v64 = htobe64 (export_size);
  memcpy (exp + 2, &v64, 8);
  v16 = htobe16 (eflags ());
  memcpy (exp + 10, &v16, 2);
  if (opt_reply (fd, option, NBD_REP_INFO, exp, sizeof exp) == -1)
    return -1;
  if (want_bs) {
    uint32_t v32;
    v16 = htobe16 (NBD_INFO_BLOCK_SIZE);
    memcpy (bs, &v16, 2);
    v32 = htobe32 (1);
    memcpy (bs + 2, &v32, 4);
    v32 = htobe32 (4096);
    memcpy (bs + 6, &v32, 4);
    v32 = htobe32 (32 * 1024 * 1024);
    memcpy (bs + 10, &v32, 4);
    if (opt_reply (fd, option, NBD_REP_INFO, bs, sizeof bs) == -1)
      return -1;
  }
  return opt_reply (fd, option, NBD_REP_ACK, NULL, 0);
}

/* Returns 1 when transmission starts, 0 on a clean abort, -1 on error. */
static int
handshake (struct conn *c)
{
  unsigned char greet[18];
  uint64_t v64;
  uint16_t v16;
  uint32_t cflags;
  unsigned char *data = NULL;
  int r = -1;

  v64 = htobe64 (NBD_MAGIC);
  memcpy (greet, &v64, 8);
  v64 = htobe64 (NBD_NEW_VERSION);
  memcpy (greet + 8, &v64, 8);
  v16 = htobe16 (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  memcpy (greet + 16, &v16, 2);
  if (write_full (c->fd, greet, sizeof greet) == -1 || read_full (c->fd, &cflags, 4) == -1)
    return -1;
  cflags = be32toh (cflags);
  data = malloc (NBD_MAX_STRING * 4);
  if (!data)
    return -1;

  for (;;) {
    struct nbd_option_hdr oh;
    uint32_t option, len;

    if (read_full (c->fd, &oh, sizeof oh) == -1 || be64toh (oh.magic) != NBD_NEW_VERSION)
      goto out;
    option = be32toh (oh.option);
    len = be32toh (oh.len);
    if (len > NBD_MAX_STRING * 4)
      goto out;                 /* nothing legitimate is this long */
    if (read_full (c->fd, data, len) == -1)
      goto out;
    switch (option) {
    case NBD_OPT_EXPORT_NAME: {
      unsigned char rep[10 + 124] = { 0 };
      v64 = htobe64 (export_size);
      memcpy (rep, &v64, 8);
      v16 = htobe16 (eflags ());
      memcpy (rep + 8, &v16, 2);
      if (write_full (c->fd, rep, (cflags & NBD_FLAG_NO_ZEROES) ? 10 : sizeof rep) == -1)
        goto out;
      r = 1;
      goto out;
    }
    case NBD_OPT_GO:
    case NBD_OPT_INFO:
      if (info_replies (c->fd, option, data, len) == -1)
        goto out;
      if (option == NBD_OPT_GO) {
        r = 1;
        goto out;
      }
      break;
    case NBD_OPT_STRUCTURED_REPLY:
      if (!allow_sr || len != 0) {
        if (opt_reply (c->fd, option, allow_sr ? NBD_REP_ERR_INVALID : NBD_REP_ERR_UNSUP,
                       NULL, 0) == -1)
          goto out;
        break;
      }
      c->sr = true;
      if (opt_reply (c->fd, option, NBD_REP_ACK, NULL, 0) == -1)
        goto out;
      break;
    case NBD_OPT_LIST: {
      uint32_t zero = 0;
      if (opt_reply (c->fd, option, NBD_REP_SERVER, &zero, 4) == -1 ||
          opt_reply (c->fd, option, NBD_REP_ACK, NULL, 0) == -1)
        goto out;
      break;
    }
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      if (opt_reply (c->fd, option, NBD_REP_ACK, NULL, 0) == -1)
        goto out;
      break;
    case NBD_OPT_ABORT:
      opt_reply (c->fd, option, NBD_REP_ACK, NULL, 0);
      r = 0;
      goto out;
    default:
      if (opt_reply (c->fd, option, NBD_REP_ERR_UNSUP, NULL, 0) == -1)
        goto out;
      break;
    }
  }
out:
  free (data);
  return r;
}

/* ---- Transmission ----------------------------------------------------- */

static int
flush_replies (struct conn *c)
{
  int r = 0;

  if (c->nr_iov)
    r = sendmsg_full (c->fd, c->iov, c->nr_iov);
  c->nr_iov = c->nr_replies = 0;
  return r;
}

/* Queue the reply to one request; a read's payload is the zero mapping. */
static int
queue_reply (struct conn *c, uint64_t cookie, uint16_t type, uint64_t offset, uint32_t count,
             uint32_t error)
{
  struct reply *rp;
  bool data = type == NBD_CMD_READ && error == 0;

  if (c->nr_replies == MAX_REPLIES && flush_replies (c) == -1)
    return -1;
  rp = &c->replies[c->nr_replies++];
  if (c->sr && data) {
    struct nbd_structured_reply h = {
      .magic = htobe32 (NBD_STRUCTURED_REPLY_MAGIC),
      .flags = htobe16 (NBD_REPLY_FLAG_DONE),
      .type = htobe16 (NBD_REPLY_TYPE_OFFSET_DATA),
      .cookie = cookie,
      .length = htobe32 (8 + count),
    };
    uint64_t off = htobe64 (offset);
    memcpy (rp->hdr, &h, sizeof h);
    memcpy (rp->hdr + sizeof h, &off, 8);
    c->iov[c->nr_iov].iov_base = rp->hdr;
    c->iov[c->nr_iov++].iov_len = sizeof h + 8;
  }
  else {
    struct nbd_simple_reply h = {
      .magic = htobe32 (NBD_SIMPLE_REPLY_MAGIC),
      .error = htobe32 (error),
      .cookie = cookie,
    };
    memcpy (rp->hdr, &h, sizeof h);
    c->iov[c->nr_iov].iov_base = rp->hdr;
    c->iov[c->nr_iov++].iov_len = sizeof h;
  }
  if (data) {
    c->iov[c->nr_iov].iov_base = (void *) zeroes;
    c->iov[c->nr_iov++].iov_len = count;
  }
  return 0;
}

/* Parse what the receive buffer holds.  Returns 1 on NBD_CMD_DISC. */
static int
parse (struct conn *c)
{
  while (c->rstart < c->rend) {
    size_t avail = c->rend - c->rstart;
    struct nbd_request rq;
    uint16_t type;
    uint32_t count, error = 0;

    if (c->skip) {
      size_t take = c->skip < avail ? c->skip : avail;
      c->rstart += take;
      c->skip -= take;
      if (c->skip == 0 && queue_reply (c, c->skip_cookie, NBD_CMD_WRITE, 0, 0, 0) == -1)
        return -1;
      continue;
    }
    if (avail < sizeof rq)
      break;
    memcpy (&rq, c->rbuf + c->rstart, sizeof rq);
    c->rstart += sizeof rq;
    if (be32toh (rq.magic) != NBD_REQUEST_MAGIC)
      return -1;
    type = be16toh (rq.type);
    count = be32toh (rq.count);
    switch (type) {
    case NBD_CMD_DISC:
      return 1;
    case NBD_CMD_WRITE:
      if (count == 0)
        break;
      c->skip = count;
      c->skip_cookie = rq.cookie;
      continue;
    case NBD_CMD_READ:
      if (count > MAX_READ)
        error = NBD_EINVAL;
      break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_CACHE:
      break;
    default:
      error = NBD_EINVAL;
      break;
    }
    if (queue_reply (c, rq.cookie, type, be64toh (rq.offset), count, error) == -1)
      return -1;
  }
  /* Keep a partial header at the front. */
  if (c->rstart == c->rend)
    c->rstart = c->rend = 0;
  else if (c->rstart > 0 && c->rend - c->rstart < sizeof (struct nbd_request)) {
    memmove (c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
    c->rend -= c->rstart;
    c->rstart = 0;
  }
  return 0;
}

static void
transmission (struct conn *c)
{
  for (;;) {
    ssize_t n;

    if (c->skip >= DIRECT_MIN && c->rstart == c->rend) {
      /* A large write payload: straight into the discard buffer. */
      size_t want = c->skip < RBUF ? c->skip : RBUF;
      n = recv (c->fd, c->discard, want, 0);
      if (n > 0) {
        c->skip -= n;
        if (c->skip == 0 && queue_reply (c, c->skip_cookie, NBD_CMD_WRITE, 0, 0, 0) == -1)
          return;
      }
    }
    else {
      if (c->rend == RBUF) {
        memmove (c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
      }
      n = recv (c->fd, c->rbuf + c->rend, RBUF - c->rend, 0);
      if (n > 0) {
        int r;
        c->rend += n;
        r = parse (c);
        if (r != 0) {
          flush_replies (c);
          return;
        }
      }
    }
    if (n == 0)
      return;
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return;
    }
    /* Everything this recv brought is answered before the next one. */
    if (flush_replies (c) == -1)
      return;
  }
}

static void *
serve (void *arg)
{
  struct conn *c = arg;

  c->rbuf = malloc (RBUF);
  c->discard = malloc (RBUF);
  if (c->rbuf && c->discard && handshake (c) == 1)
    transmission (c);
  close (c->fd);
  free (c->rbuf);
  free (c->discard);
  free (c);
  return NULL;
}

static void
usage (void)
{
  fprintf (stderr, "usage: sink-server --unix PATH | --tcp ADDR [--port N] [--port-file FILE]\n"
                   "                   [--size BYTES] [--no-sr]\n");
  exit (2);
}

/* Listen on 127.0.0.1 (or ADDR) at PORT, 0 for a free one; write the
 * port chosen to PORT_FILE (a temporary name, renamed once complete). */
static int
listen_tcp (const char *addr, int port, const char *port_file)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
  socklen_t len = sizeof sin;
  int one = 1, fd;

  if (inet_pton (AF_INET, addr, &sin.sin_addr) != 1) {
    fprintf (stderr, "sink-server: --tcp %s: not an IPv4 address\n", addr);
    exit (2);
  }
  fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
      bind (fd, (struct sockaddr *) &sin, sizeof sin) == -1 || listen (fd, 64) == -1 ||
      getsockname (fd, (struct sockaddr *) &sin, &len) == -1) {
    perror ("sink-server: listen");
    exit (1);
  }
  if (port_file) {
    char tmp[PATH_MAX], line[16];
    int n = snprintf (line, sizeof line, "%u\n", ntohs (sin.sin_port));
    int pf;

    snprintf (tmp, sizeof tmp, "%s.tmp", port_file);
    pf = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (pf == -1 || write (pf, line, n) != n || close (pf) == -1 || rename (tmp, port_file) == -1) {
      perror ("sink-server: port file");
      exit (1);
    }
  }
  return fd;
}

int
main (int argc, char *argv[])
{
  const char *path = NULL, *tcp = NULL, *port_file = NULL;
  int port = 0;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int lfd;
  void *z;

  for (int i = 1; i < argc; i++) {
    if (!strcmp (argv[i], "--unix") && i + 1 < argc)
      path = argv[++i];
    else if (!strcmp (argv[i], "--tcp") && i + 1 < argc)
      tcp = argv[++i];
    else if (!strcmp (argv[i], "--port") && i + 1 < argc)
      port = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--port-file") && i + 1 < argc)
      port_file = argv[++i];
    else if (!strcmp (argv[i], "--size") && i + 1 < argc)
      export_size = strtoull (argv[++i], NULL, 0);
    else if (!strcmp (argv[i], "--no-sr"))
      allow_sr = false;
    else
      usage ();
  }
  if (!path == !tcp || (path && strlen (path) >= sizeof sun.sun_path) || port < 0 ||
      port > 65535)
    usage ();

  prctl (PR_SET_PDEATHSIG, SIGTERM);
  if (getppid () == 1)
    return 1;
  signal (SIGPIPE, SIG_IGN);

  /* Never written: every page is the kernel's zero page. */
  z = mmap (NULL, MAX_READ, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (z == MAP_FAILED) {
    perror ("sink-server: mmap");
    return 1;
  }
  zeroes = z;

  if (tcp)
    lfd = listen_tcp (tcp, port, port_file);
  else {
    strcpy (sun.sun_path, path);
    lfd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd == -1 || bind (lfd, (struct sockaddr *) &sun, sizeof sun) == -1 ||
        listen (lfd, 64) == -1) {
      perror ("sink-server: listen");
      return 1;
    }
  }

  for (;;) {
    pthread_t t;
    struct conn *c;
    int one = 1;
    int fd = accept4 (lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      perror ("sink-server: accept");
      return 1;
    }
    if (tcp)
      setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c = calloc (1, sizeof *c);
    if (!c) {
      close (fd);
      continue;
    }
    c->fd = fd;
    if (pthread_create (&t, NULL, serve, c) != 0) {
      free (c);
      close (fd);
      continue;
    }
    pthread_detach (t);
  }
}
