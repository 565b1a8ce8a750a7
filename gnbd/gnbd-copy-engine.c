/* gnbd-copy-engine.c: the copy pipeline (being written). */
#include "gnbd-copy-private.h"

void
gnbd_copy_engine_run (const GnbdSideSpec *source, const GnbdSideSpec *destination,
                      const GnbdCopyParams *params, GnbdCopyProgressFunc progress,
                      gpointer progress_data, GTask *task)
{
  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "The copy engine is not written yet");
}
