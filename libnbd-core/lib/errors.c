/* errors.c: the thread-local last error (nbd_get_error, nbd_get_errno).
 *
 * Owns only per-thread state and never touches a handle, so it is safe from
 * any thread, before nbd_create and after nbd_close.  The message buffer of a
 * thread is freed when the thread exits (a pthread key destructor).  Every
 * buffer is also on one list, so that a thread still running when the
 * library unloads (at exit, say) keeps a reachable buffer, not a leak.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "libnbd.h"

#define EXPORT __attribute__((visibility ("default")))

struct last_error {
  const char *context;
  char *msg;
  int errnum;
  struct last_error *prev, *next; /* on all_errors */
};

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct last_error *all_errors;

static void
free_last_error (void *p)
{
  struct last_error *e = p;

  if (e) {
    pthread_mutex_lock (&all_lock);
    if (e->prev)
      e->prev->next = e->next;
    else
      all_errors = e->next;
    if (e->next)
      e->next->prev = e->prev;
    pthread_mutex_unlock (&all_lock);
    free (e->msg);
    free (e);
  }
}

static void
make_key (void)
{
  pthread_key_create (&key, free_last_error);
}

static struct last_error *
get_last (void)
{
  struct last_error *e;

  pthread_once (&key_once, make_key);
  e = pthread_getspecific (key);
  if (!e) {
    e = calloc (1, sizeof *e);
    if (!e)
      return NULL;
    pthread_mutex_lock (&all_lock);
    e->next = all_errors;
    if (all_errors)
      all_errors->prev = e;
    all_errors = e;
    pthread_mutex_unlock (&all_lock);
    pthread_setspecific (key, e);
  }
  return e;
}

/* The library's own destructor: the thread that unloads us frees its own. */
__attribute__((destructor)) static void
errors_unload (void)
{
  struct last_error *e;

  pthread_once (&key_once, make_key);
  e = pthread_getspecific (key);
  pthread_setspecific (key, NULL);
  free_last_error (e);
  pthread_key_delete (key);
}

void
nbd_internal_set_context (const char *c)
{
  struct last_error *e = get_last ();

  if (e)
    e->context = c;
}

const char *
nbd_internal_get_context (void)
{
  struct last_error *e = get_last ();

  return e && e->context ? e->context : "libnbd";
}

void
nbd_internal_set_error (int errnum, const char *fs, ...)
{
  struct last_error *e = get_last ();
  char *text = NULL, *msg = NULL;
  va_list ap;
  int r;

  if (!e)
    return;
  va_start (ap, fs);
  r = vasprintf (&text, fs, ap);
  va_end (ap);
  if (r < 0)
    text = NULL;
  if (errnum)
    r = asprintf (&msg, "%s: %s: %s", nbd_internal_get_context (), text ? text : fs,
                  strerror (errnum));
  else
    r = asprintf (&msg, "%s: %s", nbd_internal_get_context (), text ? text : fs);
  if (r < 0)
    msg = NULL;
  free (text);
  free (e->msg);
  e->msg = msg;
  e->errnum = errnum;
}

EXPORT const char *
nbd_get_error (void)
{
  struct last_error *e = get_last ();

  return e ? e->msg : NULL;
}

EXPORT int
nbd_get_errno (void)
{
  struct last_error *e = get_last ();

  return e ? e->errnum : 0;
}
