/* gnbd-buffers.c: reply buffers by size class, reused (see
 * gnbd-buffers-private.h).
 *
 * Classes are powers of two from 4 KiB to 4 MiB; a buffer carries its
 * class in a 16-byte header before the bytes it hands out (which stay
 * 16-byte aligned, as malloc's).  Each class keeps at most 256 buffers and
 * 8 MiB; what does not fit, and anything bigger than 4 MiB, is freed.
 */
#include <pthread.h>

#include "gnbd-buffers-private.h"

#define MIN_SHIFT 12
#define MAX_SHIFT 22
#define N_CLASSES (MAX_SHIFT - MIN_SHIFT + 1)
#define CLASS_MAX_COUNT 256
#define CLASS_MAX_BYTES (8 * 1024 * 1024)
#define HEADER 16
#define UNPOOLED G_MAXUINT

typedef struct {
  pthread_mutex_t lock;
  guint n;
  gpointer bufs[CLASS_MAX_COUNT];
} Class;

static Class classes[N_CLASSES] = {
  [0 ... N_CLASSES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};
static gsize count_allocated;   /* atomic */

static guint
class_of (gsize size)
{
  guint shift = MIN_SHIFT;

  if (size > (gsize) 1 << MAX_SHIFT)
    return UNPOOLED;
  while (((gsize) 1 << shift) < size)
    shift++;
  return shift - MIN_SHIFT;
}

static guint
class_capacity (guint cls)
{
  return MIN (CLASS_MAX_COUNT, CLASS_MAX_BYTES >> (cls + MIN_SHIFT));
}

gpointer
gnbd_buffer_take (gsize size)
{
  guint cls = class_of (MAX (size, 1));
  gsize alloc;
  guint8 *base = NULL;

  if (cls != UNPOOLED) {
    Class *c = &classes[cls];

    pthread_mutex_lock (&c->lock);
    if (c->n)
      base = c->bufs[--c->n];
    pthread_mutex_unlock (&c->lock);
    if (base)
      return base + HEADER;
    alloc = (gsize) 1 << (cls + MIN_SHIFT);
  }
  else
    alloc = size;
  if (alloc > G_MAXSIZE - HEADER)
    return NULL;
  base = g_try_malloc (alloc + HEADER);
  if (!base)
    return NULL;
  g_atomic_pointer_add (&count_allocated, 1);
  *(guint *) base = cls;
  return base + HEADER;
}

void
gnbd_buffer_give (gpointer buf)
{
  guint8 *base = (guint8 *) buf - HEADER;
  guint cls = *(guint *) base;

  if (cls != UNPOOLED) {
    Class *c = &classes[cls];
    gboolean kept = FALSE;

    pthread_mutex_lock (&c->lock);
    if (c->n < class_capacity (cls)) {
      c->bufs[c->n++] = base;
      kept = TRUE;
    }
    pthread_mutex_unlock (&c->lock);
    if (kept)
      return;
  }
  g_free (base);
}

GBytes *
gnbd_buffer_to_bytes (gpointer buf, gsize size)
{
  return g_bytes_new_with_free_func (buf, size, gnbd_buffer_give, buf);
}

guint64
gnbd_buffer_count_allocated (void)
{
  return (guint64) g_atomic_pointer_get (&count_allocated);
}
