/* aio-loop: drive libnbd from a poll(2) loop of one's own, as a libnbd 1.14
 * program embedding it in an event loop would.
 *
 * Connects with nbd_aio_connect_unix and runs the handshake by hand
 * (nbd_aio_get_fd, nbd_aio_get_direction, nbd_aio_notify_read/write) until
 * nbd_aio_is_ready.  Then keeps 32 nbd_aio_pread requests in flight over a
 * 16 MiB nbdkit pattern export, each completion callback checking its
 * buffer against the pattern and auto-retiring (returns 1); then 32
 * nbd_aio_pwrite in flight to an nbdkit memory export, an nbd_aio_flush,
 * and reads back.  Also: commands whose completion returns 0 stay until
 * nbd_aio_command_completed, nbd_aio_peek_command_completed and
 * nbd_aio_in_flight agree with what is outstanding, and every .free runs
 * exactly once.  Built against libnbd-core and the system libnbd.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define EXPORT_SIZE (16 * 1024 * 1024)
#define REQ_SIZE (64 * 1024)
#define NR_REQS (EXPORT_SIZE / REQ_SIZE)
#define MAX_IN_FLIGHT 32
#define POLL_MS 10000

struct slot {
  char *buf;
  uint64_t offset;
  int busy;
};

static struct slot slots[MAX_IN_FLIGHT];
static unsigned completed, bad_data, bad_error, frees, in_flight_now;
static unsigned max_in_flight_seen;

static int
check_pattern (const char *buf, uint64_t off, size_t len)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t w;
    memcpy (&w, buf + i, 8);
    if (be64toh (w) != off + i)
      return -1;
  }
  return 0;
}

static void
fill_pattern (char *buf, uint64_t off, size_t len)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t w = htobe64 (off + i);
    memcpy (buf + i, &w, 8);
  }
}

/* Completion of a read from the pattern export: check and free the slot. */
static int
read_done (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error != 0)
    bad_error++;
  else if (check_pattern (s->buf, s->offset, REQ_SIZE) == -1)
    bad_data++;
  s->busy = 0;
  completed++;
  in_flight_now--;
  return 1;                     /* retire it now */
}

static int
write_done (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error != 0)
    bad_error++;
  s->busy = 0;
  completed++;
  in_flight_now--;
  return 1;
}

static void
count_free (void *user_data)
{
  frees++;
}

/* One step of the event loop: wait for what libnbd asks for, tell it. */
static int
loop_once (struct nbd_handle *h)
{
  struct pollfd pfd;
  unsigned dir;
  int fd, r;

  fd = nbd_aio_get_fd (h);
  if (fd == -1) {
    diag ("nbd_aio_get_fd: %s", nbd_get_error ());
    return -1;
  }
  dir = nbd_aio_get_direction (h);
  pfd.fd = fd;
  pfd.events = 0;
  pfd.revents = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  if (pfd.events == 0) {
    diag ("nbd_aio_get_direction returned %u: nothing to wait for", dir);
    return -1;
  }
  r = poll (&pfd, 1, POLL_MS);
  if (r == -1) {
    diag ("poll: %s", strerror (errno));
    return -1;
  }
  if (r == 0) {
    diag ("poll: timed out after %d ms (direction %u)", POLL_MS, dir);
    return -1;
  }
  if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (h) == -1) {
    diag ("nbd_aio_notify_read: %s", nbd_get_error ());
    return -1;
  }
  else if ((pfd.revents & POLLOUT) && nbd_aio_notify_write (h) == -1) {
    diag ("nbd_aio_notify_write: %s", nbd_get_error ());
    return -1;
  }
  return 0;
}

static struct slot *
free_slot (void)
{
  for (int i = 0; i < MAX_IN_FLIGHT; i++)
    if (!slots[i].busy)
      return &slots[i];
  return NULL;
}

/* Connect with aio_connect_unix and run the handshake from our loop. */
static int
connect_by_hand (struct nbd_handle *h, const char *sock)
{
  if (nbd_aio_connect_unix (h, sock) == -1) {
    diag ("nbd_aio_connect_unix: %s", nbd_get_error ());
    return -1;
  }
  while (!nbd_aio_is_ready (h)) {
    if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h)) {
      diag ("handshake failed: %s", nbd_get_error ());
      return -1;
    }
    if (loop_once (h) == -1)
      return -1;
  }
  return 0;
}

/* Issue NR_REQS commands of REQ_SIZE, never more than MAX_IN_FLIGHT at
 * once, until all have completed.  Returns 0 or -1. */
static int
run_batch (struct nbd_handle *h, int writing)
{
  unsigned issued = 0;

  completed = 0;
  while (completed < NR_REQS) {
    struct slot *s;

    while (issued < NR_REQS && (s = free_slot ()) != NULL) {
      nbd_completion_callback cb = {
        .callback = writing ? write_done : read_done,
        .user_data = s,
        .free = count_free,
      };
      int64_t cookie;

      s->offset = (uint64_t) issued * REQ_SIZE;
      s->busy = 1;
      in_flight_now++;          /* before the call: its callback may run inside it */
      if (in_flight_now > max_in_flight_seen)
        max_in_flight_seen = in_flight_now;
      if (writing) {
        fill_pattern (s->buf, s->offset, REQ_SIZE);
        cookie = nbd_aio_pwrite (h, s->buf, REQ_SIZE, s->offset, cb, 0);
      }
      else {
        memset (s->buf, 0, REQ_SIZE);
        cookie = nbd_aio_pread (h, s->buf, REQ_SIZE, s->offset, cb, 0);
      }
      if (cookie == -1) {
        diag ("nbd_aio_%s: %s", writing ? "pwrite" : "pread", nbd_get_error ());
        return -1;
      }
      issued++;
      if (nbd_aio_in_flight (h) > MAX_IN_FLIGHT) {
        diag ("nbd_aio_in_flight says %d, more than %d", nbd_aio_in_flight (h), MAX_IN_FLIGHT);
        return -1;
      }
    }
    if (completed < NR_REQS && loop_once (h) == -1)
      return -1;
  }
  return 0;
}

static int flush_calls;

static int
flush_done (void *user_data, int *error)
{
  int *err = user_data;
  *err = *error;
  flush_calls++;
  return 0;                     /* keep it for nbd_aio_command_completed */
}

int
main (void)
{
  const char *pattern_args[] = { "pattern", "size=16M", NULL };
  const char *memory_args[] = { "memory", "size=16M", NULL };
  struct test_server psrv, msrv;
  struct nbd_handle *h, *w;
  int flush_err = -1;
  int64_t cookie;
  int r;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  if (server_start_nbdkit (&psrv, pattern_args) == -1 ||
      server_start_nbdkit (&msrv, memory_args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  for (int i = 0; i < MAX_IN_FLIGHT; i++) {
    slots[i].buf = malloc (REQ_SIZE);
    if (!slots[i].buf)
      bail_out ("malloc");
  }

  /* ---- Reads from the pattern export ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  ok (nbd_aio_is_created (h), "a new handle is created");
  if (!ok (connect_by_hand (h, psrv.sock) == 0, "handshake run from our own poll loop"))
    bail_out ("cannot connect");
  ok (nbd_aio_is_ready (h), "the handle is ready");
  is_int (nbd_aio_is_processing (h), 0, "and not processing");
  is_uint (nbd_aio_get_direction (h), LIBNBD_AIO_DIRECTION_READ,
           "an idle ready handle waits to read");
  is_int (nbd_aio_in_flight (h), 0, "nothing in flight");
  is_int (nbd_get_size (h), EXPORT_SIZE, "nbd_get_size");

  frees = 0;
  max_in_flight_seen = 0;
  r = run_batch (h, 0);
  ok (r == 0, "256 reads of 64 KiB, 32 at a time, from our own loop");
  is_uint (completed, NR_REQS, "every read completed");
  is_uint (bad_error, 0, "no read completed with an error");
  is_uint (bad_data, 0, "every read returned the pattern");
  is_uint (frees, NR_REQS, "each completion's .free ran exactly once");
  is_uint (max_in_flight_seen, MAX_IN_FLIGHT, "32 requests were in flight at once");
  is_int (nbd_aio_in_flight (h), 0, "nothing left in flight");

  /* Completions returning 0 stay until nbd_aio_command_completed. */
  {
    int64_t c[3];
    int calls_before = flush_calls;
    int errs[3] = { -1, -1, -1 };
    char *b = slots[0].buf;

    frees = 0;
    for (int i = 0; i < 3; i++) {
      nbd_completion_callback cb = { .callback = flush_done, .user_data = &errs[i],
                                     .free = count_free };
      c[i] = nbd_aio_pread (h, b + i * 4096, 4096, (uint64_t) i * 4096, cb, 0);
    }
    ok (c[0] > 0 && c[1] > c[0] && c[2] > c[1], "cookies are positive and increasing");
    while (flush_calls - calls_before < 3 && loop_once (h) == 0)
      ;
    is_int (flush_calls - calls_before, 3, "three completion callbacks ran");
    /* libnbd calls .free when the command is retired (see "Callbacks
     * with .callback=NULL and .free!=NULL" in libnbd(3)), and a completion
     * returning 0 leaves it to nbd_aio_command_completed. */
    is_uint (frees, 0, "their .free waits for the commands to be retired");
    ok (errs[0] == 0 && errs[1] == 0 && errs[2] == 0, "each with *error == 0");
    is_int (nbd_aio_in_flight (h), 0, "completed commands are not in flight");
    cookie = nbd_aio_peek_command_completed (h);
    ok (cookie == c[0] || cookie == c[1] || cookie == c[2],
        "nbd_aio_peek_command_completed names one of them");
    for (int i = 0; i < 3; i++) {
      is_int (nbd_aio_command_completed (h, c[i]), 1, "nbd_aio_command_completed retires #%d", i);
      is_uint (frees, i + 1, "and that runs its .free, once");
    }
    /* A cookie not among the completed commands (here: already retired)
     * reads as "not completed": 0, not an error. */
    is_int (nbd_aio_command_completed (h, c[0]), 0, "a retired cookie gives 0");
    is_int (nbd_aio_command_completed (h, 0), -1, "cookie 0 is an error");
    is_errno (EINVAL, "with EINVAL");
    ok (strncmp (nbd_get_error (), "nbd_aio_command_completed: ", 27) == 0,
        "the message names nbd_aio_command_completed");
    is_int (nbd_aio_peek_command_completed (h), -1, "nbd_aio_peek_command_completed with none");
    is_errno (EINVAL, "is EINVAL: no commands are in flight");
    is_uint (frees, 3, "no .free ran twice");
    ok (check_pattern (b, 0, 3 * 4096) == 0, "the three reads hold the pattern");
  }

  ok (nbd_aio_disconnect (h, 0) == 0, "nbd_aio_disconnect");
  r = 0;
  while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h) && (r = loop_once (h)) == 0)
    ;
  ok (nbd_aio_is_closed (h), "the loop runs the handle to closed");
  nbd_close (h);

  /* ---- Writes to the memory export, then read back ---- */
  w = nbd_create ();
  if (!w)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (!ok (connect_by_hand (w, msrv.sock) == 0, "second handshake from our loop"))
    bail_out ("cannot connect");
  frees = 0;
  max_in_flight_seen = 0;
  bad_error = 0;
  r = run_batch (w, 1);
  ok (r == 0, "256 writes of 64 KiB, 32 at a time");
  is_uint (completed, NR_REQS, "every write completed");
  is_uint (bad_error, 0, "no write completed with an error");
  is_uint (frees, NR_REQS, "each .free ran exactly once");
  is_uint (max_in_flight_seen, MAX_IN_FLIGHT, "32 writes were in flight at once");

  frees = 0;
  cookie = nbd_aio_flush (w, (nbd_completion_callback) { .callback = flush_done,
                                                          .user_data = &flush_err,
                                                          .free = count_free }, 0);
  ok (cookie > 0, "nbd_aio_flush");
  while ((r = nbd_aio_command_completed (w, cookie)) == 0)
    if (loop_once (w) == -1)
      break;
  is_int (r, 1, "the flush completed");
  is_int (flush_err, 0, "its callback saw *error == 0");
  is_uint (frees, 1, "its .free ran once");

  bad_data = 0;
  bad_error = 0;
  r = run_batch (w, 0);
  ok (r == 0, "read everything back, 32 at a time");
  is_uint (bad_error, 0, "no read-back failed");
  is_uint (bad_data, 0, "the memory export holds the pattern everywhere");

  ok (nbd_shutdown (w, 0) == 0, "nbd_shutdown");
  ok (nbd_aio_is_closed (w), "closed after nbd_shutdown");
  nbd_close (w);

  for (int i = 0; i < MAX_IN_FLIGHT; i++)
    free (slots[i].buf);
  server_stop (&psrv);
  server_stop (&msrv);
  return done_testing ();
}
