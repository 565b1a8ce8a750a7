/* gnbd-buffers-private.h: the buffers replies are read into, reused
 * (gnbd-buffers.c).  Never installed.
 *
 * A 4 KiB read used to cost a malloc and a free of its buffer (about 650
 * instructions, more than the rest of gnbd's work on it); a buffer given
 * back goes to a small pool of its size class instead, for the next read. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* @size bytes (at least one), or NULL if memory is short. */
gpointer gnbd_buffer_take (gsize size);
/* Back to the pool (or freed): @buf from gnbd_buffer_take, unused. */
void gnbd_buffer_give (gpointer buf);
/* A GBytes of the first @size bytes of @buf (from gnbd_buffer_take), which
 * gives it back when the GBytes is freed. */
GBytes *gnbd_buffer_to_bytes (gpointer buf, gsize size);

/* For tests: how many buffers were allocated since the process started. */
guint64 gnbd_buffer_count_allocated (void);

G_END_DECLS
