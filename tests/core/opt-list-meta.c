/* opt-list-meta: nbd_opt_list_meta_context asks the server which meta
 * contexts match the queries added with nbd_add_meta_context (all of them
 * when there are none) and returns how many it named.
 *
 * qemu-nbd -A -B b0 on a qcow2 with bitmap b0: no queries list
 * base:allocation, qemu:allocation-depth and qemu:dirty-bitmap:b0; the
 * query "qemu:" lists the two qemu ones; an unknown namespace lists
 * nothing.  nbdkit lists base:allocation.  Without structured replies
 * (nbd-server 3.24, or a client that turned them off) the call fails with
 * ENOTSUP before anything is sent, as in libnbd 1.14.  The callback's
 * .free runs once; the handle stays negotiating; the query list is not
 * changed by listing, and nbd_opt_go then negotiates from it.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)
#define MAX_CONTEXTS 8

struct seen {
  unsigned calls, frees;
  char *names[MAX_CONTEXTS];
};

static int
context_cb (void *opaque, const char *name)
{
  struct seen *s = opaque;

  if (s->calls < MAX_CONTEXTS)
    s->names[s->calls] = strdup (name);
  s->calls++;
  return 0;
}

static void
context_free (void *opaque)
{
  struct seen *s = opaque;

  s->frees++;
}

static bool
seen_has (const struct seen *s, const char *name)
{
  for (unsigned i = 0; i < s->calls && i < MAX_CONTEXTS; i++)
    if (s->names[i] && strcmp (s->names[i], name) == 0)
      return true;
  return false;
}

static void
seen_clear (struct seen *s)
{
  for (unsigned i = 0; i < MAX_CONTEXTS; i++)
    free (s->names[i]);
  memset (s, 0, sizeof *s);
}

static struct nbd_handle *
negotiating (const char *uri, bool sr, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_opt_mode (h, true));
  if (!sr)
    must (nbd_set_request_structured_replies (h, false));
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects in opt mode", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  return h;
}

/* List with the current queries; expect exactly @want (NULL-terminated). */
static void
list_expect (struct nbd_handle *h, const char *const *want, const char *what)
{
  struct seen s = { 0 };
  unsigned n = 0;
  int r;

  while (want[n])
    n++;
  r = nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                             .user_data = &s,
                                                             .free = context_free });
  if (!is_int (r, n, "%s: nbd_opt_list_meta_context returns the count", what))
    diag ("error: %s", r == -1 ? nbd_get_error () : "");
  is_uint (s.calls, n, "%s: the callback ran once per context", what);
  is_uint (s.frees, 1, "%s: .free ran once", what);
  for (unsigned i = 0; i < n; i++)
    ok (seen_has (&s, want[i]), "%s: %s listed", what, want[i]);
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating", what);
  seen_clear (&s);
}

static void
list_refused (struct nbd_handle *h, const char *what)
{
  struct seen s = { 0 };

  ok (nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                              .user_data = &s,
                                                              .free = context_free }) == -1,
      "%s: nbd_opt_list_meta_context fails", what);
  is_errno (ENOTSUP, "%s: with ENOTSUP", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_list_meta_context: "),
      "%s: the message names the call", what);
  is_uint (s.calls, 0, "%s: the callback never ran", what);
  is_uint (s.frees, 1, "%s: .free ran once", what);
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating", what);
}

static void
go_and_finish (struct nbd_handle *h, const char *what)
{
  if (!ok (nbd_opt_go (h) == 0, "%s: nbd_opt_go", what))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "%s: ready", what);
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  nbd_close (h);
}

int
main (void)
{
  static const char *const nbdkit_args[] = { "memory", "size=1M", NULL };
  static const char *const all_qemu[] = {
    LIBNBD_CONTEXT_BASE_ALLOCATION, "qemu:allocation-depth", "qemu:dirty-bitmap:b0", NULL
  };
  static const char *const qemu_ns[] = { "qemu:allocation-depth", "qemu:dirty-bitmap:b0", NULL };
  static const char *const base_only[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
  static const char *const nothing[] = { NULL };
  struct test_server qemu, nbdkit, nbdsrv;
  struct nbd_handle *h;
  char *img = image_create_qcow2 (1024 * 1024), *raw = image_create_raw (1024 * 1024);
  const char *bitmap_cmd[] = { "qemu-img", "bitmap", "--add", NULL, "b0", NULL };
  const char *qemu_args[] = { "-f", "qcow2", "-A", "-B", "b0", NULL, NULL };
  char *q;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!img || !raw)
    bail_out ("cannot create the images");
  bitmap_cmd[3] = img;
  if (servers_run (bitmap_cmd, 30) != 0)
    bail_out ("qemu-img bitmap --add failed");
  qemu_args[5] = img;
  if (server_start_qemu_nbd (&qemu, qemu_args) == -1 ||
      server_start_nbdkit (&nbdkit, nbdkit_args) == -1 ||
      server_start_nbd_server (&nbdsrv, raw, "disk", NULL) == -1)
    bail_out ("cannot start the servers");

  h = negotiating (qemu.uri, true, "qemu-nbd");
  list_expect (h, all_qemu, "qemu-nbd, no queries");
  ok (nbd_add_meta_context (h, "qemu:") == 0, "qemu-nbd: nbd_add_meta_context (qemu:)");
  list_expect (h, qemu_ns, "qemu-nbd, query qemu:");
  ok (nbd_clear_meta_contexts (h) == 0, "qemu-nbd: nbd_clear_meta_contexts");
  ok (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0,
      "qemu-nbd: nbd_add_meta_context (base:allocation)");
  ok (nbd_add_meta_context (h, "qemu:dirty-bitmap:b0") == 0,
      "qemu-nbd: nbd_add_meta_context (qemu:dirty-bitmap:b0)");
  {
    static const char *const two[] = {
      LIBNBD_CONTEXT_BASE_ALLOCATION, "qemu:dirty-bitmap:b0", NULL
    };
    list_expect (h, two, "qemu-nbd, two exact queries");
  }
  is_int (nbd_get_nr_meta_contexts (h), 2, "qemu-nbd: listing left the query list alone");
  q = nbd_get_meta_context (h, 1);
  is_str (q, "qemu:dirty-bitmap:b0", "qemu-nbd: second query unchanged");
  free (q);
  if (!ok (nbd_opt_go (h) == 0, "qemu-nbd: nbd_opt_go"))
    diag ("error: %s", nbd_get_error ());
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd: GO negotiated base:allocation from the queries");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:b0"), 1,
          "qemu-nbd: and qemu:dirty-bitmap:b0");
  is_int (nbd_can_meta_context (h, "qemu:allocation-depth"), 0,
          "qemu-nbd: but not qemu:allocation-depth, which was not asked for");
  ok (nbd_shutdown (h, 0) == 0, "qemu-nbd: shutdown");
  ok (nbd_aio_is_closed (h), "qemu-nbd: closed");
  nbd_close (h);

  h = negotiating (qemu.uri, true, "qemu-nbd, unknown namespace");
  ok (nbd_add_meta_context (h, "x-nosuch:") == 0, "qemu-nbd: nbd_add_meta_context (x-nosuch:)");
  list_expect (h, nothing, "qemu-nbd, unknown namespace");
  go_and_finish (h, "qemu-nbd, unknown namespace");

  h = negotiating (nbdkit.uri, true, "nbdkit");
  list_expect (h, base_only, "nbdkit, no queries");
  go_and_finish (h, "nbdkit");

  h = negotiating (nbdkit.uri, false, "nbdkit, no structured replies");
  list_refused (h, "nbdkit, no structured replies");
  go_and_finish (h, "nbdkit, no structured replies");

  h = negotiating (nbdsrv.uri, true, "nbd-server");
  list_refused (h, "nbd-server");
  go_and_finish (h, "nbd-server");

  ok (server_stop (&qemu) == 0, "qemu-nbd stopped");
  ok (server_stop (&nbdkit) == 0, "nbdkit stopped");
  ok (server_stop (&nbdsrv) == 0, "nbd-server stopped");
  free (img);
  free (raw);
  return done_testing ();
}
