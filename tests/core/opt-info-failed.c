/* opt-info-failed: what a failed NBD_OPT_INFO or NBD_OPT_GO leaves behind,
 * in option mode, against qemu-nbd -x disk (which refuses other names with
 * NBD_REP_ERR_UNKNOWN) with base:allocation requested.
 *
 * Proves, as libnbd 1.14 does (compat-opt-mode checks it against both
 * libraries): after nbd_opt_info or nbd_aio_opt_info fails with ENOENT,
 * nbd_can_meta_context ("base:allocation") fails (EINVAL,
 * "nbd_can_meta_context: ...") instead of answering from the failed
 * attempt, on a fresh handle and after an earlier successful INFO alike;
 * so do nbd_get_size and nbd_is_read_only; a successful INFO answers 1 again;
 * after a failed nbd_opt_go the same, and a successful one answers 1.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

/* Nothing of the export is known: the fact calls fail with EINVAL. */
static void
nothing_known (struct nbd_handle *h, const char *what)
{
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), -1,
          "%s: nbd_can_meta_context (base:allocation) fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  ok (has_prefix (nbd_get_error (), "nbd_can_meta_context: "), "%s: naming itself: %s", what,
      nbd_get_error ());
  is_int (nbd_get_size (h), -1, "%s: nbd_get_size fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
  is_int (nbd_is_read_only (h), -1, "%s: nbd_is_read_only fails", what);
  is_errno (EINVAL, "%s: with EINVAL", what);
}

static int
completion_cb (void *user_data, int *error)
{
  *(int *) user_data = *error;
  return 1;
}

int
main (void)
{
  struct test_server q;
  struct nbd_handle *h;
  char *img = image_create_raw (1024 * 1024);
  const char *args[] = { "-f", "raw", "-x", "disk", NULL, NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!img)
    bail_out ("cannot create an image");
  args[4] = img;
  if (server_start_qemu_nbd (&q, args) == -1)
    bail_out ("cannot start qemu-nbd: %s", strerror (errno));

  h = nbd_create ();
  if (!h || nbd_set_opt_mode (h, true) == -1 ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (nbd_connect_unix (h, q.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());

  nbd_set_export_name (h, "nope");
  is_int (nbd_opt_info (h), -1, "nbd_opt_info of an unknown export fails");
  is_errno (ENOENT, "with ENOENT");
  nothing_known (h, "after a failed nbd_opt_info");

  nbd_set_export_name (h, "disk");
  is_int (nbd_opt_info (h), 0, "nbd_opt_info of disk");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "then base:allocation is negotiated");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:x"), 0, "and another context is not");

  nbd_set_export_name (h, "nope");
  is_int (nbd_opt_info (h), -1, "nbd_opt_info of the unknown export again");
  is_errno (ENOENT, "with ENOENT");
  nothing_known (h, "a failed nbd_opt_info after a good one");

  {
    int err = -1;

    is_int (nbd_aio_opt_info (h, (nbd_completion_callback) { .callback = completion_cb,
                                                             .user_data = &err }), 0,
            "nbd_aio_opt_info of the unknown export");
    while (err == -1 && !nbd_aio_is_dead (h))
      if (nbd_poll (h, 10000) != 1)
        break;
    is_int (err, ENOENT, "its completion sees ENOENT");
    nothing_known (h, "after a failed nbd_aio_opt_info");
  }

  is_int (nbd_opt_go (h), -1, "nbd_opt_go of the unknown export fails");
  is_errno (ENOENT, "with ENOENT");
  ok (nbd_aio_is_negotiating (h), "still negotiating");
  nothing_known (h, "after a failed nbd_opt_go");

  nbd_set_export_name (h, "disk");
  is_int (nbd_opt_go (h), 0, "nbd_opt_go of disk");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "base:allocation is negotiated for it");
  is_int (nbd_get_size (h), 1024 * 1024, "and its size is known");
  nbd_shutdown (h, 0);
  nbd_close (h);

  server_stop (&q);
  free (img);
  return done_testing ();
}
