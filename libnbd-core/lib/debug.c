/* debug.c: debug messages (nbd_set_debug, LIBNBD_DEBUG=1, the callback).
 *
 * Called with the handle lock held; never sets the thread's error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

void
nbd_internal_debug (struct nbd_handle *h, const char *fs, ...)
{
  va_list ap;
  char *msg = NULL;
  int saved_errno = errno;
  const char *context = nbd_internal_get_context ();

  va_start (ap, fs);
  if (vasprintf (&msg, fs, ap) < 0)
    msg = NULL;
  va_end (ap);
  if (!msg)
    goto out;
  if (h->debug_cb.callback)
    h->debug_cb.callback (h->debug_cb.user_data, context, msg);
  else
    fprintf (stderr, "libnbd: debug: %s: %s: %s\n", h->hname ? h->hname : "nbd", context, msg);
  free (msg);
out:
  errno = saved_errno;
}
