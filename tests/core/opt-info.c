/* opt-info: nbd_opt_info fetches an export's facts while the handle stays
 * negotiating, for whichever export nbd_set_export_name names last.
 *
 * An nbdkit eval server whose answers depend on the export name (a: 1M,
 * writable, flush; b: 2M, read-only, no flush; anything else: open fails)
 * shows the facts follow the export asked about; qemu-nbd adds canonical
 * name, description, block sizes and meta contexts before GO; an export
 * the server does not have fails with ENOENT, names nbd_opt_info, and
 * leaves the handle negotiating with no facts; nbd_opt_go afterwards
 * gives the same facts.  nbd-server 3.24 answers NBD_OPT_INFO with size 0
 * (its GO is right): the test asserts what the server really sends.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)
#define MiB (1024 * 1024)

static struct nbd_handle *
negotiating (const char *uri, bool full_info, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  must (nbd_set_opt_mode (h, true));
  must (nbd_set_full_info (h, full_info));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects in opt mode", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  ok (nbd_aio_is_negotiating (h), "%s: negotiating", what);
  return h;
}

static void
info_ok (struct nbd_handle *h, const char *what)
{
  if (!ok (nbd_opt_info (h) == 0, "%s: nbd_opt_info", what))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating after INFO", what);
}

static void
info_fails (struct nbd_handle *h, const char *name, const char *what)
{
  ok (nbd_set_export_name (h, name) == 0, "%s: nbd_set_export_name (%s)", what, name);
  ok (nbd_opt_info (h) == -1, "%s: nbd_opt_info on a missing export fails", what);
  is_errno (ENOENT, "%s: with ENOENT", what);
  ok (has_prefix (nbd_get_error (), "nbd_opt_info: "), "%s: the message names nbd_opt_info",
      what);
  diag ("%s: %s", what, nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "%s: still negotiating after the failure", what);
  ok (nbd_get_size (h) == -1, "%s: no size after the failed INFO", what);
  is_errno (EINVAL, "%s: nbd_get_size: EINVAL", what);
  ok (nbd_is_read_only (h) == -1, "%s: no read-only fact either", what);
  is_errno (EINVAL, "%s: nbd_is_read_only: EINVAL", what);
}

static void
finish (struct nbd_handle *h, const char *what)
{
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  nbd_close (h);
}

static void
nbdkit_tests (void)
{
  static const char *const args[] = {
    "eval",
    "open=case \"$3\" in a|b) echo \"$3\";; *) echo 'ENOENT no such export' >&2; exit 1;; esac",
    "get_size=case \"$2\" in a) echo 1M;; b) echo 2M;; esac",
    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    "can_write=case \"$2\" in b) exit 3;; esac; exit 0",
    "pwrite=cat >/dev/null",
    "can_flush=case \"$2\" in a) exit 0;; esac; exit 3",
    "flush=exit 0",
    NULL
  };
  struct test_server s;
  struct nbd_handle *h;
  char *uri;

  if (server_start_nbdkit (&s, args) == -1)
    bail_out ("cannot start nbdkit eval");
  uri = server_uri (&s, "a");
  if (!uri)
    bail_out ("server_uri failed");

  h = negotiating (uri, false, "nbdkit");
  ok (nbd_get_size (h) == -1, "nbdkit: no size before INFO");
  is_errno (EINVAL, "nbdkit: with EINVAL");
  info_ok (h, "nbdkit, export a");
  is_int (nbd_get_size (h), MiB, "nbdkit, export a: size");
  is_int (nbd_is_read_only (h), 0, "nbdkit, export a: writable");
  is_int (nbd_can_flush (h), 1, "nbdkit, export a: can flush");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "nbdkit, export a: base:allocation negotiated before INFO");

  ok (nbd_set_export_name (h, "b") == 0, "nbdkit: nbd_set_export_name (b)");
  info_ok (h, "nbdkit, export b");
  is_int (nbd_get_size (h), 2 * MiB, "nbdkit, export b: size");
  is_int (nbd_is_read_only (h), 1, "nbdkit, export b: read-only");
  is_int (nbd_can_flush (h), 0, "nbdkit, export b: cannot flush");

  /* nbdkit turns a failed open into an option error (measured). */
  info_fails (h, "c", "nbdkit, export c");

  ok (nbd_set_export_name (h, "b") == 0, "nbdkit: back to export b");
  info_ok (h, "nbdkit, export b again");
  is_int (nbd_get_size (h), 2 * MiB, "nbdkit, export b again: size");
  if (!ok (nbd_opt_go (h) == 0, "nbdkit: nbd_opt_go to b"))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "nbdkit: ready");
  is_int (nbd_get_size (h), 2 * MiB, "nbdkit, after GO: the same size as INFO said");
  is_int (nbd_is_read_only (h), 1, "nbdkit, after GO: the same read-only flag");
  is_int (nbd_can_flush (h), 0, "nbdkit, after GO: the same flush flag");
  finish (h, "nbdkit");

  free (uri);
  ok (server_stop (&s) == 0, "nbdkit eval stopped");
}

static void
qemu_tests (void)
{
  struct test_server s;
  struct nbd_handle *h;
  char *raw = image_create_raw (4 * MiB);
  const char *args[] = { "-f", "raw", "-x", "disk", "-D", "test disk", NULL, NULL };
  char *str;

  if (!raw)
    bail_out ("cannot create the image");
  args[6] = raw;
  if (server_start_qemu_nbd (&s, args) == -1)
    bail_out ("cannot start qemu-nbd");

  h = negotiating (s.uri, true, "qemu-nbd");
  info_ok (h, "qemu-nbd");
  is_int (nbd_get_size (h), 4 * MiB, "qemu-nbd: size while negotiating");
  is_int (nbd_is_read_only (h), 0, "qemu-nbd: writable");
  str = nbd_get_canonical_export_name (h);
  is_str (str, "disk", "qemu-nbd: canonical name while negotiating");
  free (str);
  str = nbd_get_export_description (h);
  is_str (str, "test disk", "qemu-nbd: description while negotiating");
  free (str);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), 1, "qemu-nbd: minimum block size");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 4096, "qemu-nbd: preferred block size");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), 32 * MiB, "qemu-nbd: maximum block size");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd: base:allocation negotiated before INFO");

  info_fails (h, "nosuchexport", "qemu-nbd, missing export");

  ok (nbd_set_export_name (h, "disk") == 0, "qemu-nbd: back to disk");
  if (!ok (nbd_opt_go (h) == 0, "qemu-nbd: nbd_opt_go"))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_ready (h), "qemu-nbd: ready");
  is_int (nbd_get_size (h), 4 * MiB, "qemu-nbd: size after GO");
  finish (h, "qemu-nbd");

  ok (server_stop (&s) == 0, "qemu-nbd stopped");
  free (raw);
}

static void
nbd_server_tests (void)
{
  struct test_server s;
  struct nbd_handle *h;
  char *one = image_create_raw (MiB), *two = image_create_raw (2 * MiB);
  char *lines = NULL;
  struct nbd_server_config c = { 0 };

  if (!one || !two ||
      asprintf (&lines, "\n[second]\nexportname = %s\nreadonly = true\n", two) == -1)
    bail_out ("cannot create the images");
  c.image = one;
  c.export_name = "first";
  c.export_lines = lines;
  if (server_start_nbd_server_config (&s, &c) == -1)
    bail_out ("cannot start nbd-server");

  h = negotiating (s.uri, false, "nbd-server");
  info_ok (h, "nbd-server, first");
  /* nbd-server 3.24 sends size 0 in NBD_INFO_EXPORT (measured). */
  is_int (nbd_get_size (h), 0, "nbd-server, first: INFO reports size 0");
  is_int (nbd_is_read_only (h), 0, "nbd-server, first: writable");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "nbd-server: no meta contexts");
  ok (nbd_set_export_name (h, "second") == 0, "nbd-server: nbd_set_export_name (second)");
  info_ok (h, "nbd-server, second");
  is_int (nbd_is_read_only (h), 1, "nbd-server, second: read-only");
  info_fails (h, "third", "nbd-server, missing export");
  ok (nbd_set_export_name (h, "second") == 0, "nbd-server: back to second");
  if (!ok (nbd_opt_go (h) == 0, "nbd-server: nbd_opt_go"))
    diag ("error: %s", nbd_get_error ());
  is_int (nbd_get_size (h), 2 * MiB, "nbd-server: GO reports the right size");
  is_int (nbd_is_read_only (h), 1, "nbd-server, second after GO: read-only");
  finish (h, "nbd-server");

  ok (server_stop (&s) == 0, "nbd-server stopped");
  free (lines);
  free (one);
  free (two);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  nbdkit_tests ();
  qemu_tests ();
  nbd_server_tests ();
  return done_testing ();
}
