/* gio-copy: copy one NBD export to another with gnbd, asynchronously, and
 * verify the copy.
 *
 * A GIO program: everything runs in callbacks on one GMainLoop, with
 * REQUESTS requests in flight at once.  Each slot of the copy reads a
 * chunk from SRC and, when it arrives, writes that very GBytes to DST
 * (gnbd passes it on to the socket without copying it), then takes the
 * next chunk.  Once every chunk is written it flushes DST, then reads both
 * exports back, chunk by chunk with the same number in flight, and compares.
 *
 *   gio-copy [-n REQUESTS] [-s CHUNK_BYTES] SRC-URI DST-URI
 *
 * DST must be at least as large as SRC and writable.  Exits 0 once the copy
 * compares equal, 1 with a message on the first error.
 *
 * Build: cc gio-copy.c $(pkg-config --cflags --libs gnbd-1.0)
 */
#include <stdio.h>
#include <stdlib.h>

#include <gnbd/gnbd.h>

typedef enum {
  PHASE_CONNECT,
  PHASE_COPY,
  PHASE_FLUSH,
  PHASE_VERIFY,
  PHASE_DONE,
} Phase;

typedef struct {
  GnbdClient *src, *dst;
  GMainLoop *loop;
  Phase phase;
  guint64 size;          /* SRC's size: what is copied */
  guint64 next;          /* the next offset to hand to a slot */
  gsize chunk;
  guint requests;
  guint busy;            /* slots with a request in flight */
  guint connecting;      /* connections still under way */
  GError *error;         /* the first error; stops the run */
  gint64 started;
} Copy;

/* One of the REQUESTS chunks in flight.  During the verify phase it reads
 * the chunk from both exports and keeps the first answer until the other
 * one arrives.
 */
typedef struct {
  Copy *copy;
  guint64 offset;
  gsize len;
  guint reads;           /* verify reads still in flight */
  GBytes *data[2];       /* verify: from SRC, from DST */
} Slot;

static void start_phase (Copy *copy, Phase phase);
static void slot_next (Slot *slot);

static void
fail (Copy *copy, GError *error)
{
  if (copy->error == NULL)
    copy->error = error;
  else
    g_error_free (error);
}

/* A slot whose request is over: take the next chunk, or, once the last
 * slot is idle, move on.
 */
static void
slot_done (Slot *slot)
{
  Copy *copy = slot->copy;

  copy->busy--;
  if (copy->error == NULL && copy->next < copy->size) {
    slot_next (slot);
    return;
  }
  g_free (slot);
  if (copy->busy > 0)
    return;
  if (copy->error != NULL)
    g_main_loop_quit (copy->loop);
  else
    start_phase (copy, copy->phase + 1);
}

static void
write_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  GError *error = NULL;

  if (!gnbd_client_pwrite_finish (GNBD_CLIENT (object), result, &error))
    fail (slot->copy, error);
  slot_done (slot);
}

static void
copy_read_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  Copy *copy = slot->copy;
  GError *error = NULL;
  GBytes *data = gnbd_client_pread_finish (GNBD_CLIENT (object), result, &error);

  if (data == NULL) {
    fail (copy, error);
    slot_done (slot);
    return;
  }
  /* The write takes its own reference: the bytes go to the socket as they
   * came from it.
   */
  gnbd_client_pwrite_async (copy->dst, data, slot->offset, GNBD_COMMAND_FLAG_NONE,
                            NULL, write_done, slot);
  g_bytes_unref (data);
}

static void
verify_read_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  Copy *copy = slot->copy;
  GError *error = NULL;
  GBytes *data = gnbd_client_pread_finish (GNBD_CLIENT (object), result, &error);

  if (data == NULL)
    fail (copy, error);
  slot->data[GNBD_CLIENT (object) == copy->src ? 0 : 1] = data;
  if (--slot->reads > 0)
    return;
  if (slot->data[0] != NULL && slot->data[1] != NULL
      && !g_bytes_equal (slot->data[0], slot->data[1]))
    fail (copy, g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED,
                             "the copy differs from the source in the %" G_GSIZE_FORMAT
                             " bytes at offset %" G_GUINT64_FORMAT,
                             slot->len, slot->offset));
  g_clear_pointer (&slot->data[0], g_bytes_unref);
  g_clear_pointer (&slot->data[1], g_bytes_unref);
  slot_done (slot);
}

/* Give @slot the next chunk and start its request(s). */
static void
slot_next (Slot *slot)
{
  Copy *copy = slot->copy;

  slot->offset = copy->next;
  slot->len = MIN ((guint64) copy->chunk, copy->size - copy->next);
  copy->next += slot->len;
  copy->busy++;

  if (copy->phase == PHASE_COPY) {
    gnbd_client_pread_async (copy->src, slot->offset, slot->len, GNBD_COMMAND_FLAG_NONE,
                             NULL, copy_read_done, slot);
  }
  else {
    slot->reads = 2;
    gnbd_client_pread_async (copy->src, slot->offset, slot->len, GNBD_COMMAND_FLAG_NONE,
                             NULL, verify_read_done, slot);
    gnbd_client_pread_async (copy->dst, slot->offset, slot->len, GNBD_COMMAND_FLAG_NONE,
                             NULL, verify_read_done, slot);
  }
}

static void
flush_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Copy *copy = user_data;
  GError *error = NULL;

  if (!gnbd_client_flush_finish (GNBD_CLIENT (object), result, &error)) {
    fail (copy, error);
    g_main_loop_quit (copy->loop);
    return;
  }
  start_phase (copy, PHASE_VERIFY);
}

static void
start_phase (Copy *copy, Phase phase)
{
  gboolean can_flush = FALSE;

  copy->phase = phase;
  copy->next = 0;
  switch (phase) {
  case PHASE_COPY:
  case PHASE_VERIFY:
    if (copy->size == 0) {
      start_phase (copy, phase + 1);
      return;
    }
    for (guint i = 0; i < copy->requests && copy->next < copy->size; i++) {
      Slot *slot = g_new0 (Slot, 1);

      slot->copy = copy;
      slot_next (slot);
    }
    break;
  case PHASE_FLUSH:
    g_print ("copied %" G_GUINT64_FORMAT " bytes in %.3f s with %u requests in flight\n",
             copy->size, (g_get_monotonic_time () - copy->started) / 1e6, copy->requests);
    g_object_get (copy->dst, "can-flush", &can_flush, NULL);
    if (!can_flush) {
      start_phase (copy, PHASE_VERIFY);
      return;
    }
    gnbd_client_flush_async (copy->dst, GNBD_COMMAND_FLAG_NONE, NULL, flush_done, copy);
    break;
  case PHASE_DONE:
    g_print ("verified: the copy equals the source\n");
    g_main_loop_quit (copy->loop);
    break;
  case PHASE_CONNECT:
    g_assert_not_reached ();
  }
}

static void
connect_done (GObject *object, GAsyncResult *result, gpointer user_data)
{
  Copy *copy = user_data;
  GError *error = NULL;
  guint64 dst_size;
  gboolean read_only;

  if (!gnbd_client_connect_uri_finish (GNBD_CLIENT (object), result, &error))
    fail (copy, error);
  if (--copy->connecting > 0)
    return;
  if (copy->error != NULL) {
    g_main_loop_quit (copy->loop);
    return;
  }

  g_object_get (copy->src, "size", &copy->size, NULL);
  g_object_get (copy->dst, "size", &dst_size, "read-only", &read_only, NULL);
  if (read_only)
    fail (copy, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_READ_ONLY,
                                     "the destination export is read-only"));
  else if (dst_size < copy->size)
    fail (copy, g_error_new (G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                             "the destination (%" G_GUINT64_FORMAT " bytes) is smaller "
                             "than the source (%" G_GUINT64_FORMAT " bytes)",
                             dst_size, copy->size));
  if (copy->error != NULL) {
    g_main_loop_quit (copy->loop);
    return;
  }
  copy->started = g_get_monotonic_time ();
  start_phase (copy, PHASE_COPY);
}

int
main (int argc, char *argv[])
{
  gint requests = 16, chunk = 256 * 1024;
  GOptionEntry entries[] = {
    { "requests", 'n', 0, G_OPTION_ARG_INT, &requests, "Requests in flight (16)", "N" },
    { "chunk", 's', 0, G_OPTION_ARG_INT, &chunk, "Bytes per request (262144)", "BYTES" },
    { NULL },
  };
  g_autoptr (GOptionContext) options = g_option_context_new ("SRC-URI DST-URI");
  g_autoptr (GError) error = NULL;
  Copy copy = { 0 };

  g_option_context_add_main_entries (options, entries, NULL);
  g_option_context_set_summary (options, "Copy one NBD export to another and verify the copy.");
  if (!g_option_context_parse (options, &argc, &argv, &error)) {
    g_printerr ("gio-copy: %s\n", error->message);
    return 1;
  }
  if (argc != 3 || requests < 1 || chunk < 1) {
    g_printerr ("usage: gio-copy [-n REQUESTS] [-s CHUNK_BYTES] SRC-URI DST-URI\n");
    return 1;
  }
  copy.requests = requests;
  copy.chunk = chunk;
  copy.loop = g_main_loop_new (NULL, FALSE);
  copy.src = gnbd_client_new ();
  copy.dst = gnbd_client_new ();

  copy.connecting = 2;
  gnbd_client_connect_uri_async (copy.src, argv[1], NULL, connect_done, &copy);
  gnbd_client_connect_uri_async (copy.dst, argv[2], NULL, connect_done, &copy);
  g_main_loop_run (copy.loop);

  /* Close both ends cleanly (the destination's writes are flushed and
   * acknowledged by now); a failure here is worth knowing about too. */
  if (copy.error == NULL && !gnbd_client_shutdown (copy.src, NULL, &copy.error))
    g_prefix_error (&copy.error, "%s: ", argv[1]);
  if (copy.error == NULL && !gnbd_client_shutdown (copy.dst, NULL, &copy.error))
    g_prefix_error (&copy.error, "%s: ", argv[2]);
  g_object_unref (copy.src);
  g_object_unref (copy.dst);
  g_main_loop_unref (copy.loop);

  if (copy.error != NULL) {
    g_printerr ("gio-copy: %s\n", copy.error->message);
    g_error_free (copy.error);
    return 1;
  }
  return 0;
}
