/* handshake-meta-context: the meta contexts asked for with
 * nbd_add_meta_context are negotiated with NBD_OPT_SET_META_CONTEXT, and
 * nbd_can_meta_context tells which ones the server took.
 *
 * nbdkit and qemu-nbd take base:allocation; qemu-nbd -A adds
 * qemu:allocation-depth and -B b0 (a qcow2 with that bitmap) adds
 * qemu:dirty-bitmap:b0; nobody takes a context name they do not know;
 * nbd-server 3.24 has no meta contexts (and no structured replies, which
 * they need); nor does a client that turned structured replies off.  A
 * block status request on qemu-nbd then reports every negotiated context,
 * under its own name.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

#define UNKNOWN_CONTEXT "x-nosuch:context"

static struct nbd_handle *
connect_with (const char *uri, const char *const *contexts, bool sr, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  size_t n = 0;

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  for (; contexts[n]; n++)
    ok (nbd_add_meta_context (h, contexts[n]) == 0, "%s: nbd_add_meta_context (%s)", what,
        contexts[n]);
  is_int (nbd_get_nr_meta_contexts (h), n, "%s: nbd_get_nr_meta_contexts", what);
  if (n > 0) {
    char *c = nbd_get_meta_context (h, n - 1);
    is_str (c, contexts[n - 1], "%s: nbd_get_meta_context returns the last one asked", what);
    free (c);
  }
  if (!sr)
    must (nbd_set_request_structured_replies (h, false));
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  return h;
}

static void
finish (struct nbd_handle *h, const char *what)
{
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  nbd_close (h);
}

struct seen {
  unsigned base, depth, bitmap, other;
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  struct seen *s = opaque;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
    s->base++;
  else if (strcmp (metacontext, "qemu:allocation-depth") == 0)
    s->depth++;
  else if (strcmp (metacontext, "qemu:dirty-bitmap:b0") == 0)
    s->bitmap++;
  else
    s->other++;
  return 0;
}

static void
nbdkit_tests (void)
{
  static const char *const args[] = { "memory", "size=1M", NULL };
  static const char *const base[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
  static const char *const none[] = { NULL };
  static const char *const unknown[] = { UNKNOWN_CONTEXT, NULL };
  struct test_server s;
  struct nbd_handle *h;

  if (server_start_nbdkit (&s, args) == -1)
    bail_out ("cannot start nbdkit");

  h = connect_with (s.uri, base, true, "nbdkit");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "nbdkit: base:allocation negotiated");
  is_int (nbd_can_meta_context (h, UNKNOWN_CONTEXT), 0,
          "nbdkit: a context not asked for is not there");
  finish (h, "nbdkit");

  h = connect_with (s.uri, none, true, "nbdkit, no contexts asked");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "nbdkit, no contexts asked: base:allocation is not negotiated");
  finish (h, "nbdkit, no contexts asked");

  h = connect_with (s.uri, unknown, true, "nbdkit, unknown context");
  is_int (nbd_can_meta_context (h, UNKNOWN_CONTEXT), 0,
          "nbdkit: the server does not take a context it does not know");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "nbdkit, unknown context: nor does it add one not asked for");
  finish (h, "nbdkit, unknown context");

  h = connect_with (s.uri, base, false, "nbdkit, no structured replies");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "nbdkit, no structured replies: no meta contexts either");
  finish (h, "nbdkit, no structured replies");

  ok (server_stop (&s) == 0, "nbdkit stopped");
}

static void
qemu_tests (void)
{
  static const char *const base[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
  static const char *const all[] = {
    LIBNBD_CONTEXT_BASE_ALLOCATION, "qemu:allocation-depth", "qemu:dirty-bitmap:b0",
    UNKNOWN_CONTEXT, NULL
  };
  static const char *const io[] = { "write -P 0xab 0 64k", NULL };
  struct test_server plain, full;
  struct nbd_handle *h;
  char *img = image_create ("qcow2", 1024 * 1024, io);
  const char *bitmap_cmd[] = { "qemu-img", "bitmap", "--add", NULL, "b0", NULL };
  struct seen seen = { 0 };

  if (!img)
    bail_out ("cannot create the qcow2 image");
  bitmap_cmd[3] = img;
  if (servers_run (bitmap_cmd, 30) != 0)
    bail_out ("qemu-img bitmap --add failed");
  /* Two servers on one image: both read-only, so they may share it. */
  {
    const char *ro_plain[] = { "-r", "-f", "qcow2", img, NULL };
    const char *ro_full[] = { "-r", "-f", "qcow2", "-A", "-B", "b0", img, NULL };
    if (server_start_qemu_nbd (&plain, ro_plain) == -1 ||
        server_start_qemu_nbd (&full, ro_full) == -1)
      bail_out ("cannot start qemu-nbd");
  }

  h = connect_with (plain.uri, base, true, "qemu-nbd");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd: base:allocation negotiated");
  is_int (nbd_can_meta_context (h, "qemu:allocation-depth"), 0,
          "qemu-nbd: no allocation depth when not asked for");
  finish (h, "qemu-nbd");

  h = connect_with (plain.uri, all, true, "qemu-nbd without -A -B");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd without -A -B: base:allocation negotiated");
  is_int (nbd_can_meta_context (h, "qemu:allocation-depth"), 0,
          "qemu-nbd without -A: no qemu:allocation-depth");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:b0"), 0,
          "qemu-nbd without -B: no qemu:dirty-bitmap:b0");
  is_int (nbd_can_meta_context (h, UNKNOWN_CONTEXT), 0,
          "qemu-nbd: an unknown context is not taken");
  finish (h, "qemu-nbd without -A -B");

  h = connect_with (full.uri, all, true, "qemu-nbd -A -B b0");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd -A -B b0: base:allocation negotiated");
  is_int (nbd_can_meta_context (h, "qemu:allocation-depth"), 1,
          "qemu-nbd -A: qemu:allocation-depth negotiated");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:b0"), 1,
          "qemu-nbd -B b0: qemu:dirty-bitmap:b0 negotiated");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:b1"), 0,
          "qemu-nbd -B b0: but no other bitmap");
  is_int (nbd_can_meta_context (h, UNKNOWN_CONTEXT), 0,
          "qemu-nbd -A -B b0: an unknown context is still not taken");
  /* Each negotiated context answers under its own name. */
  if (!ok (nbd_block_status (h, 65536, 0,
                             (nbd_extent_callback) { .callback = extent_cb, .user_data = &seen },
                             0) == 0,
           "qemu-nbd -A -B b0: block status"))
    diag ("error: %s", nbd_get_error ());
  is_uint (seen.base, 1, "block status: one base:allocation reply");
  is_uint (seen.depth, 1, "block status: one qemu:allocation-depth reply");
  is_uint (seen.bitmap, 1, "block status: one qemu:dirty-bitmap:b0 reply");
  is_uint (seen.other, 0, "block status: no reply for anything else");
  finish (h, "qemu-nbd -A -B b0");

  ok (server_stop (&plain) == 0, "qemu-nbd stopped");
  ok (server_stop (&full) == 0, "qemu-nbd -A -B b0 stopped");
  free (img);
}

static void
nbd_server_tests (void)
{
  static const char *const base[] = { LIBNBD_CONTEXT_BASE_ALLOCATION, NULL };
  struct test_server s;
  struct nbd_handle *h;
  char *img = image_create_raw (1024 * 1024);

  if (!img || server_start_nbd_server (&s, img, "disk", NULL) == -1)
    bail_out ("cannot start nbd-server");
  h = connect_with (s.uri, base, true, "nbd-server");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "nbd-server: no meta contexts");
  finish (h, "nbd-server");
  ok (server_stop (&s) == 0, "nbd-server stopped");
  free (img);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);

  {
    struct nbd_handle *h = nbd_create ();

    if (!h)
      bail_out ("nbd_create: %s", nbd_get_error ());
    ok (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1,
        "nbd_can_meta_context before connecting fails");
    is_errno (ENOTCONN, "with ENOTCONN");
    ok (has_prefix (nbd_get_error (), "nbd_can_meta_context: "), "the message names the call");
    ok (nbd_get_meta_context (h, 0) == NULL, "nbd_get_meta_context (0) with none asked fails");
    is_errno (EINVAL, "with EINVAL");
    nbd_close (h);
  }

  nbdkit_tests ();
  qemu_tests ();
  nbd_server_tests ();
  return done_testing ();
}
