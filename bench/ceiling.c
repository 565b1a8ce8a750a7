/* ceiling: the transport's own limit, for bench/RESULTS.md -- a bare socket
 * pump that speaks the benchmark's messages to the sink server with no
 * library at all: the same request headers and write payloads, QD in
 * flight, many requests per sendmsg(2), many replies per recv(2), large read
 * payloads received straight into the request's buffer, and after one the
 * next reply's header received alone so that its payload goes straight in
 * too.  What payload arrives with a header is copied into the request's
 * buffer, as a client must (an earlier version dropped it, which flattered
 * the ceiling by up to a copy of RBUF per reply).  Like bench, each
 * request slot has its own buffer, filled with data (a zero-page buffer
 * would flatter the copies).  No checks beyond the framing, no callbacks,
 * no locks: what is left is the socket's cost.
 *
 *   ceiling [--transport unix|tcp] --connect SOCKET|HOST:PORT
 *           [--workload randread|randwrite|seqread|seqwrite]
 *           [--bs SIZE] [--qd N] [--duration SECONDS | --total BYTES]
 *
 * --total moves that many bytes, however long it takes (bench/copy.py
 * pumps as much as its copies move).
 *
 * --transport tcp connects to HOST:PORT (the sink server on 127.0.0.1)
 * and sets TCP_NODELAY, as the libraries do.
 *
 * It negotiates with NBD_OPT_EXPORT_NAME, so replies are simple replies (a
 * read reply is 16 bytes of header where a structured one is 28).  Prints
 * one line of key=value figures, as bench does.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

#define RBUF (256 * 1024)
#define DIRECT_MIN (16 * 1024)
#define IOV_BATCH 128

static void
die (const char *what)
{
  fprintf (stderr, "ceiling: %s: %s\n", what, strerror (errno));
  exit (1);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
read_full (int fd, void *buf, size_t len)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = recv (fd, p, len, 0);
    if (r <= 0) {
      if (r == -1 && errno == EINTR)
        continue;
      die ("handshake recv");
    }
    p += r;
    len -= r;
  }
}

static void
write_full (int fd, const void *buf, size_t len)
{
  if (send (fd, buf, len, MSG_NOSIGNAL) != (ssize_t) len)
    die ("handshake send");
}

int
main (int argc, char *argv[])
{
  const char *path = NULL, *workload = "randread", *transport = "unix";
  uint32_t bs = 4096;
  int qd = 64;
  double duration = 1.0;
  uint64_t total_bytes = 0, issued = 0;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  unsigned char greet[18], info[10];
  struct nbd_option_hdr oh;
  uint32_t cflags = htobe32 (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  uint64_t size, rng = UINT64_C (0x9e3779b97f4a7c15), seq = 0, done = 0;
  bool writes, random;
  struct nbd_request *reqs;
  int *sendq, nsend = 0, fd, *free_slots, nfree, cur = 0;
  size_t out_pos = 0;
  char **bufs, *rbuf;
  size_t rstart = 0, rend = 0, hdr_have = 0;
  unsigned char hdr[16];
  uint64_t data_left = 0;
  double t0, deadline;
  bool issuing = true, hdr_only = false;
  int in_flight = 0;

  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp (argv[i], "--connect"))
      path = argv[i + 1];
    else if (!strcmp (argv[i], "--transport"))
      transport = argv[i + 1];
    else if (!strcmp (argv[i], "--workload"))
      workload = argv[i + 1];
    else if (!strcmp (argv[i], "--bs")) {
      char *end;
      bs = (uint32_t) strtoul (argv[i + 1], &end, 0);
      if (*end == 'k' || *end == 'K')
        bs <<= 10;
      else if (*end == 'm' || *end == 'M')
        bs <<= 20;
    }
    else if (!strcmp (argv[i], "--qd"))
      qd = atoi (argv[i + 1]);
    else if (!strcmp (argv[i], "--duration"))
      duration = atof (argv[i + 1]);
    else if (!strcmp (argv[i], "--total"))
      total_bytes = strtoull (argv[i + 1], NULL, 0);
    else
      goto usage;
  }
  if (!path || qd < 1 || bs == 0 || strlen (path) >= sizeof sun.sun_path ||
      (strcmp (transport, "unix") && strcmp (transport, "tcp")))
    goto usage;
  writes = strstr (workload, "write") != NULL;
  random = strncmp (workload, "rand", 4) == 0;

  if (!strcmp (transport, "tcp")) {
    struct sockaddr_in sin = { .sin_family = AF_INET };
    char host[64];
    const char *colon = strrchr (path, ':');
    int one = 1;

    if (!colon || (size_t) (colon - path) >= sizeof host)
      goto usage;
    memcpy (host, path, colon - path);
    host[colon - path] = '\0';
    sin.sin_port = htons ((uint16_t) atoi (colon + 1));
    if (inet_pton (AF_INET, host, &sin.sin_addr) != 1)
      goto usage;
    fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1 || connect (fd, (struct sockaddr *) &sin, sizeof sin) == -1)
      die ("connect");
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  else {
    strcpy (sun.sun_path, path);
    int sndbuf = 4 * 1024 * 1024;   /* as libnbd-core asks for its Unix sockets */

    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1 || connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1)
      die ("connect");
    setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  read_full (fd, greet, sizeof greet);
  write_full (fd, &cflags, 4);
  oh.magic = htobe64 (NBD_NEW_VERSION);
  oh.option = htobe32 (NBD_OPT_EXPORT_NAME);
  oh.len = 0;
  write_full (fd, &oh, sizeof oh);
  read_full (fd, info, sizeof info);
  memcpy (&size, info, 8);
  size = be64toh (size);
  if (size < bs) {
    fprintf (stderr, "ceiling: export smaller than one request\n");
    return 1;
  }
  /* Non-blocking from here: one thread sends and receives. */
  if (fcntl (fd, F_SETFL, O_NONBLOCK) == -1)
    die ("fcntl");

  reqs = calloc (qd, sizeof *reqs);
  sendq = calloc (qd, sizeof *sendq);
  free_slots = calloc (qd, sizeof *free_slots);
  if (!free_slots)
    die ("malloc");
  for (nfree = 0; nfree < qd; nfree++)
    free_slots[nfree] = nfree;
  bufs = calloc (qd, sizeof *bufs);
  rbuf = malloc (RBUF);
  if (!reqs || !sendq || !bufs || !rbuf)
    die ("malloc");
  for (int i = 0; i < qd; i++) {
    bufs[i] = malloc (bs);
    if (!bufs[i])
      die ("malloc");
    memset (bufs[i], 0xa5 ^ i, bs);
  }

  t0 = now ();
  deadline = t0 + duration;
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };

    /* Refill: every free slot gets a new request, queued to send. */
    while (issuing && nfree > 0) {
      int i;
      uint64_t off;

      if (total_bytes && issued >= total_bytes) {
        issuing = false;
        break;
      }
      issued += bs;
      i = free_slots[--nfree];

      if (random) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        off = ((rng * UINT64_C (2685821657736338717)) % (size / bs)) * bs;
      }
      else {
        if (seq + bs > size)
          seq = 0;
        off = seq;
        seq += bs;
      }
      reqs[i].magic = htobe32 (NBD_REQUEST_MAGIC);
      reqs[i].flags = 0;
      reqs[i].type = htobe16 (writes ? NBD_CMD_WRITE : NBD_CMD_READ);
      reqs[i].cookie = htobe64 ((uint64_t) i);
      reqs[i].offset = htobe64 (off);
      reqs[i].count = htobe32 (bs);
      sendq[nsend++] = i;
      in_flight++;
    }
    /* Send as much of the queue as the socket takes. */
    while (nsend > 0) {
      struct iovec iov[IOV_BATCH];
      struct msghdr msg = { .msg_iov = iov };
      size_t skip = out_pos, want = 0;
      int n = 0, k;
      ssize_t r;

      for (k = 0; k < nsend && n + 2 <= IOV_BATCH; k++) {
        size_t wire = sizeof (struct nbd_request) + (writes ? bs : 0);
        if (skip >= wire) {
          skip -= wire;
          continue;
        }
        if (skip < sizeof (struct nbd_request)) {
          iov[n].iov_base = (char *) &reqs[sendq[k]] + skip;
          iov[n++].iov_len = sizeof (struct nbd_request) - skip;
          skip = 0;
        }
        else
          skip -= sizeof (struct nbd_request);
        if (writes) {
          iov[n].iov_base = bufs[sendq[k]] + skip;
          iov[n++].iov_len = bs - skip;
          skip = 0;
        }
      }
      for (int j = 0; j < n; j++)
        want += iov[j].iov_len;
      msg.msg_iovlen = n;
      r = sendmsg (fd, &msg, MSG_NOSIGNAL);
      if (r == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        if (errno == EINTR)
          continue;
        die ("sendmsg");
      }
      {
        size_t wire = sizeof (struct nbd_request) + (writes ? bs : 0);
        size_t total = out_pos + (size_t) r, gone = total / wire;
        memmove (sendq, sendq + gone, (nsend - gone) * sizeof *sendq);
        nsend -= (int) gone;
        out_pos = total % wire;
      }
      if ((size_t) r < want)
        break;
    }
    if (in_flight == 0)
      break;
    if (nsend > 0)
      p.events |= POLLOUT;
    if (poll (&p, 1, -1) == -1 && errno != EINTR)
      die ("poll");
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    /* Receive everything there is, replies and read payloads. */
    for (;;) {
      size_t asked;
      ssize_t n;

      if (data_left >= DIRECT_MIN && rstart == rend) {
        asked = data_left;
        n = recv (fd, bufs[cur] + (bs - data_left), asked, 0);
        if (n > 0 && (data_left -= n) == 0) {
          hdr_only = true;
          free_slots[nfree++] = cur;
          in_flight--;
          done++;
        }
      }
      else {
        asked = RBUF - rend;
        /* After a large payload, the next reply's header alone: then
         * its payload too goes straight into its buffer (the receive
         * strategy that won; libnbd-core's too). */
        if (hdr_only && rstart == rend && hdr_have == 0)
          asked = sizeof hdr;
        n = recv (fd, rbuf + rend, asked, 0);
        if (n > 0)
          hdr_only = false;
        if (n > 0)
          rend += n;
      }
      if (n == 0) {
        fprintf (stderr, "ceiling: server closed the connection\n");
        return 1;
      }
      if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        if (errno == EINTR)
          continue;
        die ("recv");
      }
      while (rstart < rend) {
        size_t avail = rend - rstart, take;
        bool complete = false;

        if (data_left) {
          take = data_left < avail ? data_left : avail;
          /* Payload that came with a header goes where a client must put
           * it: the request's buffer. */
          memcpy (bufs[cur] + (bs - data_left), rbuf + rstart, take);
          rstart += take;
          data_left -= take;
          complete = data_left == 0;
        }
        else {
          uint64_t cookie;

          take = sizeof hdr - hdr_have < avail ? sizeof hdr - hdr_have : avail;
          memcpy (hdr + hdr_have, rbuf + rstart, take);
          hdr_have += take;
          rstart += take;
          if (hdr_have < sizeof hdr)
            break;
          hdr_have = 0;
          memcpy (&cookie, hdr + 8, 8);
          cur = (int) be64toh (cookie);
          if (cur < 0 || cur >= qd) {
            fprintf (stderr, "ceiling: reply with an unknown cookie\n");
            return 1;
          }
          if (writes)
            complete = true;
          else
            data_left = bs;
        }
        if (complete) {
          /* Its slot takes the next request. */
          free_slots[nfree++] = cur;
          in_flight--;
          done++;
        }
      }
      if (rstart == rend)
        rstart = rend = 0;
      if ((size_t) n < asked)
        break;                  /* drained */
    }
    if (issuing && !total_bytes && now () >= deadline)
      issuing = false;
  }

  {
    double secs = now () - t0;
    printf ("lib=ceiling version=0 server=external workload=%s bs=%" PRIu32 " qd=%d writer=0 "
            "pin=-1 ops=%" PRIu64 " secs=%.6f ops_s=%.1f mib_s=%.2f writer_writes=0 "
            "writer_wakeups=0\n",
            workload, bs, qd, done, secs, done / secs, done * (double) bs / (1024.0 * 1024.0) / secs);
  }
  close (fd);
  return 0;

usage:
  fprintf (stderr, "usage: ceiling [--transport unix|tcp] --connect SOCKET|HOST:PORT "
                   "[--workload W] [--bs SIZE] [--qd N] [--duration SECONDS | --total BYTES]\n");
  return 2;
}
