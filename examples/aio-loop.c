/* aio-loop: the asynchronous API with a poll loop of your own.
 *
 * A plain libnbd program (it builds unchanged against libnbd): no sync
 * calls after connecting, no writer.  Every turn of the loop issues
 * commands until 64 are in flight, asks the library which way it wants to
 * go (nbd_aio_get_direction), polls the socket (nbd_aio_get_fd) for that,
 * and reports what poll saw (nbd_aio_notify_read / nbd_aio_notify_write).
 * Completion callbacks retire the commands.
 *
 * Two servers, both nbdkit subprocesses: the pattern plugin (every 8-byte
 * big-endian word holds its own offset), read in 256 KiB requests and
 * verified; and a memory disk, written with a pattern of our own in 256 KiB
 * requests, then read back and verified.  Prints MiB/s for each.
 *
 *   aio-loop [SIZE_MIB]          (default 256)
 *
 * Build: cc aio-loop.c $(pkg-config --cflags --libs libnbd-core)
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define MIB (1024 * 1024)
#define REQUEST_SIZE (256 * 1024)
#define MAX_IN_FLIGHT 64

enum job { READ_PATTERN, WRITE_MEMORY, VERIFY_MEMORY };

struct slot {
  unsigned char *buf;
  uint64_t offset;
  bool busy;
};

static struct slot slots[MAX_IN_FLIGHT];
static int in_flight;
static enum job job;
static int command_error;
static uint64_t mismatch_at = UINT64_MAX;

static void
die (const char *call)
{
  const char *msg = nbd_get_error ();

  fprintf (stderr, "aio-loop: %s\n", msg ? msg : call);
  exit (1);
}

/* Our own pattern for the memory disk: a mix of each word's offset. */
static void
fill_pattern (unsigned char *buf, size_t len, uint64_t offset)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = (offset + i) * UINT64_C (0x9e3779b97f4a7c15) + 1;

    memcpy (buf + i, &word, 8);
  }
}

/* nbdkit's pattern plugin: the big-endian offset of each word. */
static bool
is_nbdkit_pattern (const unsigned char *buf, size_t len, uint64_t offset)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = htobe64 (offset + i);

    if (memcmp (buf + i, &word, 8) != 0)
      return false;
  }
  return true;
}

static int
done (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error && !command_error)
    command_error = *error;
  else if (!*error && mismatch_at == UINT64_MAX) {
    if (job == READ_PATTERN && !is_nbdkit_pattern (s->buf, REQUEST_SIZE, s->offset))
      mismatch_at = s->offset;
    else if (job == VERIFY_MEMORY) {
      unsigned char expect[4096];

      for (size_t i = 0; i < REQUEST_SIZE; i += sizeof expect) {
        fill_pattern (expect, sizeof expect, s->offset + i);
        if (memcmp (s->buf + i, expect, sizeof expect) != 0) {
          mismatch_at = s->offset;
          break;
        }
      }
    }
  }
  s->busy = false;
  in_flight--;
  return 1;                     /* retire the command */
}

/* One turn of the event loop: wait for what the library wants, tell it. */
static void
poll_once (struct nbd_handle *h)
{
  unsigned dir = nbd_aio_get_direction (h);
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h) };

  if (pfd.fd == -1)
    die ("nbd_aio_get_fd");
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  if (poll (&pfd, 1, -1) == -1) {
    perror ("poll");
    exit (1);
  }
  /* Replies first; then send, if the library still wants to. */
  if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (h) == -1)
    die ("nbd_aio_notify_read");
  if ((pfd.revents & POLLOUT) && (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE) &&
      nbd_aio_notify_write (h) == -1)
    die ("nbd_aio_notify_write");
}

static struct nbd_handle *
connect_nbdkit (char **server)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL)
    die ("nbd_create");
  if (nbd_aio_connect_command (h, server) == -1)
    die ("nbd_aio_connect_command");
  while (nbd_aio_is_connecting (h))
    poll_once (h);
  if (!nbd_aio_is_ready (h)) {
    fprintf (stderr, "aio-loop: the handshake with %s failed\n", server[3]);
    exit (1);
  }
  return h;
}

static double
seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Run @j over [0, size) in requests of REQUEST_SIZE, 64 in flight. */
static double
run (struct nbd_handle *h, enum job j, uint64_t size)
{
  double t0 = seconds ();
  uint64_t next = 0;

  job = j;
  while (next < size || in_flight > 0) {
    for (int i = 0; i < MAX_IN_FLIGHT && next < size; i++) {
      struct slot *s = &slots[i];
      nbd_completion_callback cb = { .callback = done, .user_data = s };
      int64_t cookie;

      if (s->busy)
        continue;
      s->busy = true;
      s->offset = next;
      if (j == WRITE_MEMORY) {
        fill_pattern (s->buf, REQUEST_SIZE, next);
        cookie = nbd_aio_pwrite (h, s->buf, REQUEST_SIZE, next, cb, 0);
      }
      else
        cookie = nbd_aio_pread (h, s->buf, REQUEST_SIZE, next, cb, 0);
      if (cookie == -1)
        die (j == WRITE_MEMORY ? "nbd_aio_pwrite" : "nbd_aio_pread");
      in_flight++;
      next += REQUEST_SIZE;
    }
    if (command_error)
      break;
    poll_once (h);
  }
  if (command_error) {
    fprintf (stderr, "aio-loop: a command failed: %s\n", strerror (command_error));
    exit (1);
  }
  if (mismatch_at != UINT64_MAX) {
    fprintf (stderr, "aio-loop: wrong data in the request at offset %" PRIu64 "\n",
             mismatch_at);
    exit (1);
  }
  return seconds () - t0;
}

static void
disconnect (struct nbd_handle *h)
{
  if (nbd_aio_disconnect (h, 0) == -1)
    die ("nbd_aio_disconnect");
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h))
    poll_once (h);
  if (nbd_aio_is_dead (h)) {
    fprintf (stderr, "aio-loop: the connection died while disconnecting\n");
    exit (1);
  }
  nbd_close (h);
}

int
main (int argc, char *argv[])
{
  unsigned long mib = 256;
  char size_arg[32];
  struct nbd_handle *pattern, *memory;
  double t_read, t_write, t_verify;
  uint64_t size;

  if (argc > 2 || (argc == 2 && (sscanf (argv[1], "%lu", &mib) != 1 || mib == 0 ||
                                 mib > 65536))) {
    fprintf (stderr, "usage: aio-loop [SIZE_MIB (default 256)]\n");
    exit (1);
  }
  size = (uint64_t) mib * MIB;
  snprintf (size_arg, sizeof size_arg, "size=%luM", mib);
  char *pattern_server[] = { "nbdkit", "-s", "--exit-with-parent", "pattern", size_arg, NULL };
  char *memory_server[] = { "nbdkit", "-s", "--exit-with-parent", "memory", size_arg, NULL };

  for (int i = 0; i < MAX_IN_FLIGHT; i++)
    if ((slots[i].buf = malloc (REQUEST_SIZE)) == NULL) {
      perror ("malloc");
      exit (1);
    }

  pattern = connect_nbdkit (pattern_server);
  memory = connect_nbdkit (memory_server);
  if (nbd_get_size (pattern) != (int64_t) size || nbd_get_size (memory) != (int64_t) size) {
    fprintf (stderr, "aio-loop: unexpected export sizes\n");
    exit (1);
  }

  t_read = run (pattern, READ_PATTERN, size);
  t_write = run (memory, WRITE_MEMORY, size);
  t_verify = run (memory, VERIFY_MEMORY, size);

  disconnect (pattern);
  disconnect (memory);
  for (int i = 0; i < MAX_IN_FLIGHT; i++)
    free (slots[i].buf);

  printf ("aio-loop: %lu MiB each way in %d KiB requests, %d in flight, verified: "
          "read pattern %.1f MiB/s, write memory %.1f MiB/s, read memory %.1f MiB/s\n",
          mib, REQUEST_SIZE / 1024, MAX_IN_FLIGHT, (double) mib / t_read,
          (double) mib / t_write, (double) mib / t_verify);
  return 0;
}
