/* handle-errors-threads: the last error is per thread.
 *
 * Proves: nbd_get_error () is NULL and nbd_get_errno () 0 before any handle
 * exists or any call failed; an error in one thread (even on the same
 * handle) does not change another thread's nbd_get_error/nbd_get_errno; a
 * new thread starts with no error while others have one; a later error in
 * the same thread replaces the earlier one.  The threads take turns under
 * a barrier so the interleaving is fixed.  No server.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"

static struct nbd_handle *shared;
static pthread_barrier_t barrier;

static bool
starts_with (const char *s, const char *prefix)
{
  return s && strncmp (s, prefix, strlen (prefix)) == 0;
}

/* Thread A: ENAMETOOLONG from nbd_set_export_name on the shared handle. */
static void *
thread_a (void *arg)
{
  char *big = malloc (5000);

  (void) arg;
  memset (big, 'a', 4999);
  big[4999] = '\0';
  ok (nbd_set_export_name (shared, big) == -1, "thread A: nbd_set_export_name (5000 bytes) fails");
  free (big);
  pthread_barrier_wait (&barrier);      /* 1: A has its error */
  pthread_barrier_wait (&barrier);      /* 2: B has made its own */
  is_int (nbd_get_errno (), ENAMETOOLONG, "thread A: still ENAMETOOLONG after B's error");
  ok (starts_with (nbd_get_error (), "nbd_set_export_name: "),
      "thread A: the message is still nbd_set_export_name's (%s)",
      nbd_get_error () ? nbd_get_error () : "NULL");
  pthread_barrier_wait (&barrier);      /* 3: A checked */
  pthread_barrier_wait (&barrier);      /* 4: C ran */
  is_int (nbd_get_errno (), ENAMETOOLONG, "thread A: still ENAMETOOLONG after thread C");
  return NULL;
}

/* Thread B: ENOTCONN from nbd_pread on the same (unconnected) handle. */
static void *
thread_b (void *arg)
{
  char buf[512];

  (void) arg;
  pthread_barrier_wait (&barrier);      /* 1 */
  is_int (nbd_get_errno (), 0, "thread B: no error before its first call (A has one)");
  ok (nbd_get_error () == NULL, "thread B: nbd_get_error is NULL");
  ok (nbd_pread (shared, buf, sizeof buf, 0, 0) == -1, "thread B: nbd_pread fails");
  is_int (nbd_get_errno (), ENOTCONN, "thread B: ENOTCONN");
  ok (starts_with (nbd_get_error (), "nbd_pread: "), "thread B: the message is nbd_pread's");
  pthread_barrier_wait (&barrier);      /* 2 */
  pthread_barrier_wait (&barrier);      /* 3 */
  is_int (nbd_get_errno (), ENOTCONN, "thread B: still ENOTCONN after A looked at its own");
  ok (starts_with (nbd_get_error (), "nbd_pread: "), "thread B: still nbd_pread's message");
  pthread_barrier_wait (&barrier);      /* 4 */
  return NULL;
}

static void *
thread_c (void *arg)
{
  (void) arg;
  is_int (nbd_get_errno (), 0, "thread C: a new thread starts with errno 0");
  ok (nbd_get_error () == NULL, "thread C: and no message");
  ok (nbd_set_strict_mode (shared, 0x8000) == -1, "thread C: nbd_set_strict_mode (0x8000) fails");
  is_int (nbd_get_errno (), EINVAL, "thread C: EINVAL");
  return NULL;
}

int
main (void)
{
  pthread_t a, b, c;
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  /* Before any handle or any call. */
  ok (nbd_get_error () == NULL, "nbd_get_error works before any handle exists (NULL)");
  is_int (nbd_get_errno (), 0, "nbd_get_errno is 0 before any handle exists");

  shared = nbd_create ();
  if (!shared)
    bail_out ("nbd_create: %s", nbd_get_error ());

  /* Same thread: a later error replaces the earlier one. */
  ok (nbd_get_meta_context (shared, 3) == NULL, "main: nbd_get_meta_context (3) fails");
  is_int (nbd_get_errno (), EINVAL, "main: EINVAL");
  ok (starts_with (nbd_get_error (), "nbd_get_meta_context: "), "main: its message");
  ok (nbd_shutdown (shared, 0) == -1, "main: nbd_shutdown on a new handle fails");
  is_int (nbd_get_errno (), ENOTCONN, "main: now ENOTCONN");
  ok (starts_with (nbd_get_error (), "nbd_shutdown: "), "main: and nbd_shutdown's message");

  /* Main takes part in every barrier, so the order is fixed: A errs (1), B
   * errs (2), A checks (3), then C runs alone (4), then A and B check. */
  pthread_barrier_init (&barrier, NULL, 3);
  pthread_create (&a, NULL, thread_a, NULL);
  pthread_create (&b, NULL, thread_b, NULL);
  pthread_barrier_wait (&barrier);      /* 1 */
  pthread_barrier_wait (&barrier);      /* 2 */
  pthread_barrier_wait (&barrier);      /* 3 */
  pthread_create (&c, NULL, thread_c, NULL);
  pthread_join (c, NULL);
  pthread_barrier_wait (&barrier);      /* 4 */
  pthread_join (a, NULL);
  pthread_join (b, NULL);
  pthread_barrier_destroy (&barrier);

  is_int (nbd_get_errno (), ENOTCONN, "main: its own error survived the other threads");
  ok (starts_with (nbd_get_error (), "nbd_shutdown: "), "main: and its message");

  nbd_close (shared);
  h = nbd_create ();
  ok (h != NULL, "a new handle after closing the shared one");
  nbd_close (h);
  return done_testing ();
}
