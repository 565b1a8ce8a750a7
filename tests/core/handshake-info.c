/* handshake-info: what NBD_OPT_GO brings back — size, canonical name,
 * description and block sizes — and how an unknown export name fails.
 *
 * qemu-nbd -x disk -D "test disk" sends its name and description when the
 * client asks (nbd_set_full_info) and block sizes 1/4096/32M; nbdkit with
 * the blocksize-policy filter sends the sizes it was given; nbdkit memory
 * sends none.  An export qemu-nbd does not have fails the connect with
 * ENOENT and a message that says so; nbd-server serves the export its
 * config section names.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define MiB (1024 * 1024)

/* The error message starts with the failing call's name. */
#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

static struct nbd_handle *
connect_to (const char *uri, bool full_info, bool request_block_size, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_get_full_info (h), 0, "%s: full info is off by default", what);
  is_int (nbd_get_request_block_size (h), 1, "%s: block sizes are requested by default", what);
  ok (nbd_set_full_info (h, full_info) == 0, "%s: nbd_set_full_info", what);
  ok (nbd_set_request_block_size (h, request_block_size) == 0,
      "%s: nbd_set_request_block_size", what);
  is_int (nbd_get_full_info (h), full_info, "%s: full info reads back", what);
  is_int (nbd_get_request_block_size (h), request_block_size,
          "%s: the block size request reads back", what);
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  return h;
}

static void
check_block_sizes (struct nbd_handle *h, int64_t min, int64_t pref, int64_t max,
                   const char *what)
{
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), min, "%s: minimum block size", what);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), pref, "%s: preferred block size", what);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), max, "%s: maximum block size", what);
}

static void
finish (struct nbd_handle *h, const char *what)
{
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  nbd_close (h);
}

static void
check_string (char *got, const char *want, const char *what)
{
  is_str (got, want, "%s", what);
  if (!got)
    diag ("error: %s", nbd_get_error ());
  free (got);
}

static void
qemu_tests (void)
{
  struct test_server s;
  struct nbd_handle *h;
  char *raw = image_create_raw (4 * MiB);
  char *uri;
  const char *args[] = { "-f", "raw", "-x", "disk", "-D", "test disk", NULL, NULL };
  char *name;

  if (!raw)
    bail_out ("cannot create the image");
  args[6] = raw;
  if (server_start_qemu_nbd (&s, args) == -1)
    bail_out ("cannot start qemu-nbd");

  h = connect_to (s.uri, true, true, "qemu-nbd, full info");
  is_int (nbd_get_size (h), 4 * MiB, "qemu-nbd: size");
  check_string (nbd_get_canonical_export_name (h), "disk", "qemu-nbd: canonical export name");
  check_string (nbd_get_export_description (h), "test disk", "qemu-nbd: export description");
  check_block_sizes (h, 1, 4096, 32 * MiB, "qemu-nbd");
  ok (nbd_get_block_size (h, 99) == -1, "qemu-nbd: an unknown block size type fails");
  is_errno (EINVAL, "qemu-nbd: with EINVAL");
  ok (has_prefix (nbd_get_error (), "nbd_get_block_size: "),
      "qemu-nbd: the message names nbd_get_block_size");
  name = nbd_get_export_name (h);
  is_str (name, "disk", "qemu-nbd: the export name requested (from the URI)");
  free (name);
  finish (h, "qemu-nbd, full info");

  /* Without the hint qemu-nbd keeps its canonical name to itself... */
  h = connect_to (s.uri, false, true, "qemu-nbd, no full info");
  is_int (nbd_get_size (h), 4 * MiB, "qemu-nbd, no full info: size");
  ok (nbd_get_canonical_export_name (h) == NULL,
      "qemu-nbd, no full info: no canonical export name");
  is_errno (ENOTSUP, "qemu-nbd, no full info: with ENOTSUP");
  ok (has_prefix (nbd_get_error (), "nbd_get_canonical_export_name: "),
      "qemu-nbd, no full info: the message names the call");
  /* ...but not the description, which it sends unasked (measured with
   * qemu-nbd 7.2: only NBD_INFO_NAME waits for the request). */
  check_string (nbd_get_export_description (h), "test disk",
                "qemu-nbd, no full info: the description arrives anyway");
  finish (h, "qemu-nbd, no full info");

  /* qemu-nbd sends NBD_INFO_BLOCK_SIZE to GO even unasked (measured), and
   * the client keeps what the server said. */
  h = connect_to (s.uri, false, false, "qemu-nbd, no block size request");
  check_block_sizes (h, 1, 4096, 32 * MiB, "qemu-nbd, no block size request");
  finish (h, "qemu-nbd, no block size request");

  /* An export qemu-nbd does not have. */
  uri = server_uri (&s, "nosuchexport");
  h = nbd_create ();
  if (!h || !uri)
    bail_out ("nbd_create or server_uri failed");
  ok (nbd_connect_uri (h, uri) == -1, "qemu-nbd: an unknown export fails the connect");
  is_errno (ENOENT, "qemu-nbd: with ENOENT");
  ok (has_prefix (nbd_get_error (), "nbd_connect_uri: "),
      "qemu-nbd: the message names nbd_connect_uri");
  ok (strstr (nbd_get_error (), "export") != NULL, "qemu-nbd: the message speaks of the export");
  ok (strstr (nbd_get_error (), "nosuchexport") != NULL,
      "qemu-nbd: the message carries the server's text naming the export");
  diag ("the message: %s", nbd_get_error ());
  ok (nbd_aio_is_dead (h), "qemu-nbd: the handle is dead after the failed connect");
  ok (nbd_get_size (h) == -1, "qemu-nbd: no size after the failed connect");
  is_errno (EINVAL, "qemu-nbd: with EINVAL (the handle is dead)");
  nbd_close (h);
  free (uri);

  ok (server_stop (&s) == 0, "qemu-nbd stopped");
  free (raw);
}

static void
nbdkit_tests (void)
{
  static const char *const policy_args[] = {
    "--filter=blocksize-policy", "memory", "size=1M", "blocksize-minimum=512",
    "blocksize-preferred=4096", "blocksize-maximum=65536", NULL
  };
  static const char *const memory_args[] = { "memory", "size=3M", NULL };
  struct test_server s, m;
  struct nbd_handle *h;

  if (server_start_nbdkit (&s, policy_args) == -1 || server_start_nbdkit (&m, memory_args) == -1)
    bail_out ("cannot start nbdkit");

  h = connect_to (s.uri, false, true, "nbdkit blocksize-policy");
  is_int (nbd_get_size (h), MiB, "nbdkit blocksize-policy: size");
  check_block_sizes (h, 512, 4096, 65536, "nbdkit blocksize-policy");
  finish (h, "nbdkit blocksize-policy");

  /* nbdkit sends block sizes only to a client that asks. */
  h = connect_to (s.uri, false, false, "nbdkit blocksize-policy, not asked");
  check_block_sizes (h, 0, 0, 0, "nbdkit blocksize-policy, not asked");
  finish (h, "nbdkit blocksize-policy, not asked");

  h = connect_to (m.uri, true, true, "nbdkit memory");
  is_int (nbd_get_size (h), 3 * MiB, "nbdkit memory: size");
  check_block_sizes (h, 0, 0, 0, "nbdkit memory");
  check_string (nbd_get_canonical_export_name (h), "", "nbdkit memory: canonical name \"\"");
  finish (h, "nbdkit memory");

  ok (server_stop (&s) == 0, "nbdkit blocksize-policy stopped");
  ok (server_stop (&m) == 0, "nbdkit memory stopped");
}

static void
nbd_server_tests (void)
{
  struct test_server s;
  struct nbd_handle *h;
  char *one = image_create_raw (MiB), *two = image_create_raw (2 * MiB);
  char *lines = NULL, *uri;
  struct nbd_server_config c = { 0 };

  if (!one || !two || asprintf (&lines, "\n[second]\nexportname = %s\n", two) == -1)
    bail_out ("cannot create the images");
  c.image = one;
  c.export_name = "first";
  c.export_lines = lines;
  if (server_start_nbd_server_config (&s, &c) == -1)
    bail_out ("cannot start nbd-server");

  h = connect_to (s.uri, false, true, "nbd-server, export first");
  is_int (nbd_get_size (h), MiB, "nbd-server, export first: size");
  check_block_sizes (h, 0, 0, 0, "nbd-server, export first");
  finish (h, "nbd-server, export first");

  uri = server_uri (&s, "second");
  h = connect_to (uri, false, true, "nbd-server, export second");
  is_int (nbd_get_size (h), 2 * MiB, "nbd-server, export second: size");
  finish (h, "nbd-server, export second");
  free (uri);

  uri = server_uri (&s, "third");
  h = nbd_create ();
  if (!h || !uri)
    bail_out ("nbd_create or server_uri failed");
  ok (nbd_connect_uri (h, uri) == -1, "nbd-server: an unknown export fails the connect");
  is_errno (ENOENT, "nbd-server: with ENOENT");
  ok (has_prefix (nbd_get_error (), "nbd_connect_uri: "),
      "nbd-server: the message names nbd_connect_uri");
  diag ("the message: %s", nbd_get_error ());
  nbd_close (h);
  free (uri);

  ok (server_stop (&s) == 0, "nbd-server stopped");
  free (lines);
  free (one);
  free (two);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  qemu_tests ();
  nbdkit_tests ();
  nbd_server_tests ();
  return done_testing ();
}
