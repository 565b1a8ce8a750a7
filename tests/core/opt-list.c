/* opt-list: nbd_opt_list reports every export the server lists, with its
 * description, and returns how many there were.
 *
 * qemu-nbd -x disk -D "test disk" lists one export with that description;
 * nbd-server with two config sections lists both, without descriptions;
 * nbdkit's eval plugin lists what its list_exports script prints (names
 * and descriptions interleaved); nbdkit memory lists its default export.
 * The callback gets the caller's user_data, its .free runs exactly once,
 * the handle stays negotiating, a second list gives the same answer, and
 * nbd_opt_go afterwards still works.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define MAX_EXPORTS 8

struct listing {
  unsigned calls;
  unsigned frees;
  char *names[MAX_EXPORTS];
  char *descs[MAX_EXPORTS];
};

static int
list_cb (void *opaque, const char *name, const char *desc)
{
  struct listing *l = opaque;

  if (l->calls < MAX_EXPORTS) {
    l->names[l->calls] = strdup (name);
    l->descs[l->calls] = strdup (desc);
  }
  l->calls++;
  return 0;
}

static void
list_free (void *opaque)
{
  struct listing *l = opaque;

  l->frees++;
}

static void
listing_clear (struct listing *l)
{
  for (unsigned i = 0; i < MAX_EXPORTS; i++) {
    free (l->names[i]);
    free (l->descs[i]);
  }
  memset (l, 0, sizeof *l);
}

/* List on @h and compare with @want_names/@want_descs (in order). */
static void
check_list (struct nbd_handle *h, const char *const *want_names, const char *const *want_descs,
            unsigned n, const char *what)
{
  struct listing l = { 0 };
  int r;

  r = nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &l,
                                             .free = list_free });
  if (!is_int (r, n, "%s: nbd_opt_list returns the count", what))
    diag ("error: %s", r == -1 ? nbd_get_error () : "");
  is_uint (l.calls, n, "%s: the callback ran once per export", what);
  is_uint (l.frees, 1, "%s: .free ran once", what);
  for (unsigned i = 0; i < n && i < l.calls; i++) {
    is_str (l.names[i], want_names[i], "%s: export %u name", what, i);
    is_str (l.descs[i], want_descs[i], "%s: export %u description", what, i);
  }
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating", what);
  listing_clear (&l);
}

static struct nbd_handle *
negotiating (const char *uri, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_opt_mode (h, true));
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects in opt mode", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  return h;
}

static void
go_and_finish (struct nbd_handle *h, int64_t size, const char *what)
{
  if (!ok (nbd_opt_go (h) == 0, "%s: nbd_opt_go after listing", what))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "%s: ready", what);
  is_int (nbd_get_size (h), size, "%s: size of the export", what);
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  nbd_close (h);
}

int
main (void)
{
  static const char *const memory_args[] = { "memory", "size=1M", NULL };
  static const char *const eval_args[] = {
    "eval",
    "list_exports=printf 'INTERLEAVED\\nalpha\\nthe first\\nbeta\\n\\ngamma\\nthe third\\n'",
    "get_size=echo 2M",
    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    NULL
  };
  static const char *const qemu_names[] = { "disk" }, *const qemu_descs[] = { "test disk" };
  static const char *const srv_names[] = { "first", "second" }, *const srv_descs[] = { "", "" };
  static const char *const eval_names[] = { "alpha", "beta", "gamma" };
  static const char *const eval_descs[] = { "the first", "", "the third" };
  static const char *const mem_names[] = { "" }, *const mem_descs[] = { "" };
  struct test_server qemu, nbdsrv, eval, memory;
  struct nbd_handle *h;
  char *raw = image_create_raw (1048576), *two = image_create_raw (2 * 1048576);
  const char *qemu_args[] = { "-f", "raw", "-x", "disk", "-D", "test disk", NULL, NULL };
  char *lines = NULL;
  struct nbd_server_config c = { 0 };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (!raw || !two || asprintf (&lines, "\n[second]\nexportname = %s\n", two) == -1)
    bail_out ("cannot create the images");
  qemu_args[6] = raw;
  c.image = raw;
  c.export_name = "first";
  c.export_lines = lines;
  if (server_start_qemu_nbd (&qemu, qemu_args) == -1 ||
      server_start_nbd_server_config (&nbdsrv, &c) == -1 ||
      server_start_nbdkit (&eval, eval_args) == -1 ||
      server_start_nbdkit (&memory, memory_args) == -1)
    bail_out ("cannot start the servers");

  h = negotiating (qemu.uri, "qemu-nbd");
  check_list (h, qemu_names, qemu_descs, 1, "qemu-nbd");
  check_list (h, qemu_names, qemu_descs, 1, "qemu-nbd, second list");
  go_and_finish (h, 1048576, "qemu-nbd");

  h = negotiating (nbdsrv.uri, "nbd-server");
  check_list (h, srv_names, srv_descs, 2, "nbd-server");
  go_and_finish (h, 1048576, "nbd-server");

  /* Choose an export from the list, then go to it. */
  h = negotiating (nbdsrv.uri, "nbd-server, to second");
  check_list (h, srv_names, srv_descs, 2, "nbd-server, to second");
  ok (nbd_set_export_name (h, "second") == 0, "nbd-server: nbd_set_export_name (second)");
  go_and_finish (h, 2 * 1048576, "nbd-server, export second");

  h = negotiating (eval.uri, "nbdkit eval");
  check_list (h, eval_names, eval_descs, 3, "nbdkit eval");
  ok (nbd_set_export_name (h, "beta") == 0, "nbdkit eval: nbd_set_export_name (beta)");
  go_and_finish (h, 2 * 1048576, "nbdkit eval");

  h = negotiating (memory.uri, "nbdkit memory");
  check_list (h, mem_names, mem_descs, 1, "nbdkit memory");
  go_and_finish (h, 1048576, "nbdkit memory");

  /* A callback with no function but a .free: still freed once. */
  {
    struct listing l = { 0 };

    h = negotiating (qemu.uri, "qemu-nbd, free only");
    is_int (nbd_opt_list (h, (nbd_list_callback) { .user_data = &l, .free = list_free }), 1,
            "qemu-nbd: nbd_opt_list with only .free still counts the export");
    is_uint (l.frees, 1, "qemu-nbd: .free ran once");
    go_and_finish (h, 1048576, "qemu-nbd, free only");
  }

  ok (server_stop (&qemu) == 0, "qemu-nbd stopped");
  ok (server_stop (&nbdsrv) == 0, "nbd-server stopped");
  ok (server_stop (&eval) == 0, "nbdkit eval stopped");
  ok (server_stop (&memory) == 0, "nbdkit memory stopped");
  free (lines);
  free (raw);
  free (two);
  return done_testing ();
}
