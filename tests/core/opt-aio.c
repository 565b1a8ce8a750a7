/* opt-aio: the asynchronous option calls — nbd_aio_opt_list, _info,
 * _list_meta_context, _go and _abort — driven by nbd_poll, with completion
 * callbacks that see the option's result.
 *
 * The completion callback runs exactly once with *error 0 on success or
 * the errno (ENOENT for a missing export) on failure; every .free runs
 * exactly once, also when the call itself is refused (wrong state) and the
 * callback never runs; while an option is in flight the handle reports
 * connecting, and afterwards negotiating (or ready after GO, closed after
 * ABORT).  The connect is asynchronous too (nbd_aio_connect_uri).
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)
#define POLL_MS 5000
#define MAX_POLLS 1000

struct done {
  unsigned calls, frees;
  int error;
  unsigned items, item_frees;   /* list / context callbacks */
};

static int
completion_cb (void *opaque, int *error)
{
  struct done *d = opaque;

  d->calls++;
  d->error = *error;
  return 1;
}

static void
completion_free (void *opaque)
{
  struct done *d = opaque;

  d->frees++;
}

static int
list_cb (void *opaque, const char *name, const char *desc)
{
  struct done *d = opaque;

  d->items++;
  return 0;
}

static int
context_cb (void *opaque, const char *name)
{
  struct done *d = opaque;

  if (strcmp (name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    d->items++;
  return 0;
}

static void
item_free (void *opaque)
{
  struct done *d = opaque;

  d->item_frees++;
}

#define COMPLETION(d) \
  ((nbd_completion_callback) { .callback = completion_cb, .user_data = (d), \
                               .free = completion_free })

/* Poll until the completion callback ran (bounded). */
static void
wait_done (struct nbd_handle *h, struct done *d, const char *what)
{
  unsigned polls = 0;

  /* Until it completes, the option is in flight: the handle connects. */
  ok (d->calls > 0 || nbd_aio_is_connecting (h), "%s: connecting while the option runs", what);
  while (d->calls == 0 && polls++ < MAX_POLLS) {
    int r = nbd_poll (h, POLL_MS);
    if (r == -1) {
      diag ("%s: nbd_poll: %s", what, nbd_get_error ());
      break;
    }
    if (r == 0) {
      diag ("%s: nbd_poll timed out", what);
      break;
    }
  }
  is_uint (d->calls, 1, "%s: the completion callback ran once", what);
  is_uint (d->frees, 1, "%s: its .free ran once", what);
  ok (!nbd_aio_is_connecting (h), "%s: no longer connecting", what);
}

/* Poll until @pred holds (bounded). */
static bool
poll_until (struct nbd_handle *h, int (*pred) (struct nbd_handle *), const char *what)
{
  for (unsigned polls = 0; !pred (h) && polls < MAX_POLLS; polls++)
    if (nbd_poll (h, POLL_MS) <= 0) {
      diag ("%s: nbd_poll: %s", what, nbd_get_error () ? nbd_get_error () : "timed out");
      break;
    }
  return pred (h);
}

static struct nbd_handle *
aio_negotiating (const char *uri, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_opt_mode (h, true));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!ok (nbd_aio_connect_uri (h, uri) == 0, "%s: nbd_aio_connect_uri", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  ok (poll_until (h, nbd_aio_is_negotiating, what), "%s: polled to negotiating", what);
  return h;
}

static void
refused_calls (struct nbd_handle *h, int err, const char *what)
{
  struct done d = { 0 };

  ok (nbd_aio_opt_go (h, COMPLETION (&d)) == -1, "%s: nbd_aio_opt_go is refused", what);
  is_errno (err, "%s: nbd_aio_opt_go errno", what);
  ok (has_prefix (nbd_get_error (), "nbd_aio_opt_go: "), "%s: the message names the call", what);
  ok (nbd_aio_opt_info (h, COMPLETION (&d)) == -1, "%s: nbd_aio_opt_info is refused", what);
  is_errno (err, "%s: nbd_aio_opt_info errno", what);
  ok (nbd_aio_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &d,
                                                 .free = item_free },
                        COMPLETION (&d)) == -1,
      "%s: nbd_aio_opt_list is refused", what);
  is_errno (err, "%s: nbd_aio_opt_list errno", what);
  ok (nbd_aio_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                                 .user_data = &d,
                                                                 .free = item_free },
                                     COMPLETION (&d)) == -1,
      "%s: nbd_aio_opt_list_meta_context is refused", what);
  is_errno (err, "%s: nbd_aio_opt_list_meta_context errno", what);
  ok (nbd_aio_opt_abort (h) == -1, "%s: nbd_aio_opt_abort is refused", what);
  is_errno (err, "%s: nbd_aio_opt_abort errno", what);
  is_uint (d.calls, 0, "%s: no completion callback ran", what);
  is_uint (d.frees, 4, "%s: each refused call freed its completion closure once", what);
  is_uint (d.items, 0, "%s: no list or context callback ran", what);
  is_uint (d.item_frees, 2, "%s: each refused call freed its list/context closure once", what);
}

int
main (void)
{
  static const char *const args[] = {
    "eval",
    "list_exports=printf 'a\\nb\\n'",
    "open=case \"$3\" in a|b) echo \"$3\";; *) echo 'ENOENT no such export' >&2; exit 1;; esac",
    "get_size=case \"$2\" in a) echo 1M;; b) echo 2M;; esac",
    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    NULL
  };
  struct test_server s, nbdsrv;
  struct nbd_handle *h;
  struct done d;
  char *uri_a, *raw = image_create_raw (1048576);
  char buf[512];

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!raw)
    bail_out ("cannot create the image");
  if (server_start_nbdkit (&s, args) == -1 ||
      server_start_nbd_server (&nbdsrv, raw, "disk", NULL) == -1)
    bail_out ("cannot start the servers");
  uri_a = server_uri (&s, "a");
  if (!uri_a)
    bail_out ("server_uri failed");

  /* Refused on a handle that never connected. */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  refused_calls (h, ENOTCONN, "new handle");
  nbd_close (h);

  h = aio_negotiating (uri_a, "nbdkit");

  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &d,
                                                 .free = item_free },
                        COMPLETION (&d)) == 0, "nbd_aio_opt_list");
  wait_done (h, &d, "aio list");
  is_int (d.error, 0, "aio list: success");
  is_uint (d.items, 2, "aio list: both exports seen");
  is_uint (d.item_frees, 1, "aio list: the list closure freed once");
  ok (nbd_aio_is_negotiating (h), "aio list: negotiating");

  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_info (h, COMPLETION (&d)) == 0, "nbd_aio_opt_info (a)");
  wait_done (h, &d, "aio info a");
  is_int (d.error, 0, "aio info a: success");
  ok (nbd_aio_is_negotiating (h), "aio info a: negotiating");
  is_int (nbd_get_size (h), 1048576, "aio info a: size");

  ok (nbd_set_export_name (h, "c") == 0, "nbd_set_export_name (c)");
  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_info (h, COMPLETION (&d)) == 0, "nbd_aio_opt_info (c)");
  wait_done (h, &d, "aio info c");
  is_int (d.error, ENOENT, "aio info c: the callback sees ENOENT");
  ok (nbd_aio_is_negotiating (h), "aio info c: still negotiating");
  ok (nbd_get_size (h) == -1, "aio info c: no size");

  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_go (h, COMPLETION (&d)) == 0, "nbd_aio_opt_go (c)");
  wait_done (h, &d, "aio go c");
  is_int (d.error, ENOENT, "aio go c: the callback sees ENOENT");
  ok (nbd_aio_is_negotiating (h), "aio go c: still negotiating");

  ok (nbd_set_export_name (h, "b") == 0, "nbd_set_export_name (b)");
  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                                 .user_data = &d,
                                                                 .free = item_free },
                                     COMPLETION (&d)) == 0,
      "nbd_aio_opt_list_meta_context");
  wait_done (h, &d, "aio list meta");
  is_int (d.error, 0, "aio list meta: success");
  is_uint (d.items, 1, "aio list meta: base:allocation seen");
  is_uint (d.item_frees, 1, "aio list meta: the context closure freed once");

  /* A closure with only .free: still freed once, and the option works. */
  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_info (h, (nbd_completion_callback) { .user_data = &d,
                                                       .free = completion_free }) == 0,
      "nbd_aio_opt_info (b) with only .free");
  ok (poll_until (h, nbd_aio_is_negotiating, "aio info b"), "aio info b: back to negotiating");
  is_uint (d.frees, 1, "aio info b: .free ran once");
  is_int (nbd_get_size (h), 2 * 1048576, "aio info b: size");

  memset (&d, 0, sizeof d);
  ok (nbd_aio_opt_go (h, COMPLETION (&d)) == 0, "nbd_aio_opt_go (b)");
  wait_done (h, &d, "aio go b");
  is_int (d.error, 0, "aio go b: success");
  ok (nbd_aio_is_ready (h), "aio go b: ready");
  is_int (nbd_get_size (h), 2 * 1048576, "aio go b: size");
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == 0, "aio go b: pread works");

  refused_calls (h, EINVAL, "ready handle");
  ok (nbd_aio_is_ready (h), "the refused calls left the handle ready");
  ok (nbd_shutdown (h, 0) == 0, "shutdown");
  ok (nbd_aio_is_closed (h), "closed");
  nbd_close (h);

  /* ABORT, against nbdkit (which acknowledges) and nbd-server (which just
   * closes). */
  for (int i = 0; i < 2; i++) {
    const char *what = i == 0 ? "aio abort, nbdkit" : "aio abort, nbd-server";

    h = aio_negotiating (i == 0 ? uri_a : nbdsrv.uri, what);
    ok (nbd_aio_opt_abort (h) == 0, "%s: nbd_aio_opt_abort", what);
    ok (poll_until (h, nbd_aio_is_closed, what), "%s: polled to closed", what);
    ok (!nbd_aio_is_dead (h), "%s: not dead", what);
    refused_calls (h, EINVAL, what);
    nbd_close (h);
  }

  free (uri_a);
  ok (server_stop (&s) == 0, "nbdkit stopped");
  ok (server_stop (&nbdsrv) == 0, "nbd-server stopped");
  free (raw);
  return done_testing ();
}
