/* threads: one handle per thread, as a multi-threaded libnbd 1.14 program
 * uses a multi-conn server.
 *
 * Four threads each connect their own handle to one nbdkit memory export
 * (which advertises multi-conn), write their own 1 MiB region in 64 KiB
 * requests, wait for each other, flush, wait again, then each reads back
 * and checks all four regions.  Errors are per thread: each thread makes a
 * different call fail (ENOSPC, EINVAL, ERANGE, ENOTCONN), and after the
 * others have made theirs, still sees its own errno and message.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define NR_THREADS 4
#define REGION (1024 * 1024)
#define REQ (64 * 1024)
#define MiB (1024 * 1024)

static const char *sock;
static pthread_barrier_t barrier;

struct result {
  int connected;
  int multi_conn;
  int wrote;
  int flushed;
  int regions_ok;               /* bitmask of regions that read back right */
  int own_errno;
  char *own_error;
  int want_errno;
  const char *want_prefix;
};

static struct result results[NR_THREADS];

static unsigned char
byte_of (int region, uint64_t off)
{
  return (unsigned char) (region * 64 + (off / 4096) % 61 + 1);
}

/* Make this thread's own call fail and say what to expect.  Returns a
 * handle to close once the error has been read, or NULL. */
static struct nbd_handle *
own_failure (struct nbd_handle *h, int i, struct result *r)
{
  static char big[8];
  struct nbd_handle *unconnected = NULL;

  switch (i) {
  case 0:
    nbd_pwrite (h, big, 8, NR_THREADS * REGION, 0);
    r->want_errno = ENOSPC;
    r->want_prefix = "nbd_pwrite: ";
    break;
  case 1:
    nbd_pread (h, big, 0, 0, 0);
    r->want_errno = EINVAL;
    r->want_prefix = "nbd_pread: ";
    break;
  case 2:
    nbd_trim (h, (uint64_t) 1 << 33, 0, 0);   /* out of bounds before too large */
    r->want_errno = ENOSPC;
    r->want_prefix = "nbd_trim: ";
    break;
  default:
    unconnected = nbd_create ();
    nbd_flush (unconnected, 0);
    r->want_errno = ENOTCONN;
    r->want_prefix = "nbd_flush: ";
    break;
  }
  return unconnected;
}

static void *
worker (void *arg)
{
  int i = (int) (intptr_t) arg;
  struct result *r = &results[i];
  struct nbd_handle *h = nbd_create ();
  char *buf = malloc (REQ);
  int failed = 0;

  if (!h || !buf || nbd_connect_unix (h, sock) == -1) {
    diag ("thread %d: connect: %s", i, nbd_get_error ());
    for (int k = 0; k < 4; k++)   /* as many as the other threads wait at */
      pthread_barrier_wait (&barrier);
    free (buf);
    nbd_close (h);
    return NULL;
  }
  r->connected = 1;
  r->multi_conn = nbd_can_multi_conn (h);

  /* Each thread writes its own region. */
  r->wrote = 1;
  for (uint64_t off = 0; off < REGION; off += REQ) {
    for (size_t k = 0; k < REQ; k++)
      buf[k] = (char) byte_of (i, off + k);
    if (nbd_pwrite (h, buf, REQ, (uint64_t) i * REGION + off, 0) == -1) {
      diag ("thread %d: nbd_pwrite: %s", i, nbd_get_error ());
      r->wrote = 0;
      break;
    }
  }

  /* Errors are per thread: make one, let the others make theirs, then
   * read it back (no libnbd call in this thread in between). */
  {
    struct nbd_handle *extra = own_failure (h, i, r);

    pthread_barrier_wait (&barrier);
    r->own_errno = nbd_get_errno ();
    r->own_error = strdup (nbd_get_error () ? nbd_get_error () : "");
    nbd_close (extra);
  }

  pthread_barrier_wait (&barrier);
  r->flushed = nbd_flush (h, 0) == 0;
  pthread_barrier_wait (&barrier);

  /* Multi-conn: after every flush, every connection sees every write. */
  for (int region = 0; region < NR_THREADS; region++) {
    int good = 1;
    for (uint64_t off = 0; off < REGION && good; off += REQ) {
      if (nbd_pread (h, buf, REQ, (uint64_t) region * REGION + off, 0) == -1) {
        diag ("thread %d: nbd_pread: %s", i, nbd_get_error ());
        good = 0;
        failed = 1;
        break;
      }
      for (size_t k = 0; k < REQ; k++)
        if ((unsigned char) buf[k] != byte_of (region, off + k)) {
          good = 0;
          break;
        }
    }
    if (good)
      r->regions_ok |= 1 << region;
  }
  (void) failed;

  pthread_barrier_wait (&barrier);
  nbd_shutdown (h, 0);
  nbd_close (h);
  free (buf);
  return NULL;
}

int
main (void)
{
  const char *args[] = { "memory", "size=4M", NULL };
  struct test_server srv;
  pthread_t t[NR_THREADS];

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  if (server_start_nbdkit (&srv, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  sock = srv.sock;
  if (pthread_barrier_init (&barrier, NULL, NR_THREADS) != 0)
    bail_out ("pthread_barrier_init");

  for (int i = 0; i < NR_THREADS; i++)
    if (pthread_create (&t[i], NULL, worker, (void *) (intptr_t) i) != 0)
      bail_out ("pthread_create");
  for (int i = 0; i < NR_THREADS; i++)
    pthread_join (t[i], NULL);

  for (int i = 0; i < NR_THREADS; i++) {
    struct result *r = &results[i];

    ok (r->connected, "thread %d: connected its own handle", i);
    is_int (r->multi_conn, 1, "thread %d: nbd_can_multi_conn", i);
    ok (r->wrote, "thread %d: wrote its 1 MiB region", i);
    ok (r->flushed, "thread %d: nbd_flush", i);
    is_int (r->regions_ok, (1 << NR_THREADS) - 1, "thread %d: sees all four regions", i);
    is_int (r->own_errno, r->want_errno, "thread %d: its own errno survives the others' errors",
            i);
    ok (r->own_error && r->want_prefix &&
        strncmp (r->own_error, r->want_prefix, strlen (r->want_prefix)) == 0,
        "thread %d: its own message, starting \"%s\" (%s)", i,
        r->want_prefix ? r->want_prefix : "?", r->own_error ? r->own_error : "NULL");
    free (r->own_error);
  }

  pthread_barrier_destroy (&barrier);
  server_stop (&srv);
  return done_testing ();
}
