/* connect-servers: nbd_connect_uri over a Unix socket to each of the three
 * servers, nbdkit, qemu-nbd and nbd-server.
 *
 * Proves for each: the URI from the server helpers connects, nbd_get_size
 * is the exact size served (three different sizes, so a mix-up shows),
 * the export name is the one the URI names, data written by qemu-io into
 * the image (or by us, for nbdkit) reads back, get_uri returns the URI, and
 * nbd_shutdown closes cleanly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static void
check_server (const struct test_server *s, int64_t size, const char *export_name,
              int pattern)
{
  struct nbd_handle *h = nbd_create ();
  const char *who = s->program;
  char buf[4096], *got;
  int i, bad = 0;

  if (!ok (nbd_connect_uri (h, s->uri) == 0, "%s: nbd_connect_uri (%s)", who, s->uri))
    diag ("%s", nbd_get_error ());
  is_int (nbd_get_size (h), size, "%s: nbd_get_size", who);
  got = nbd_get_export_name (h);
  is_str (got, export_name, "%s: the export name came from the URI", who);
  free (got);
  got = nbd_get_uri (h);
  is_str (got, s->uri, "%s: nbd_get_uri gives the URI back", who);
  free (got);

  if (pattern < 0) {
    memset (buf, 0x3c, sizeof buf);
    is_int (nbd_pwrite (h, buf, sizeof buf, 0, 0), 0, "%s: nbd_pwrite", who);
    pattern = 0x3c;
  }
  memset (buf, 0, sizeof buf);
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "%s: nbd_pread", who);
  for (i = 0; i < (int) sizeof buf; i++)
    bad += (unsigned char) buf[i] != pattern;
  is_int (bad, 0, "%s: the first 4K reads back as 0x%02x", who, pattern);
  is_int (nbd_pread (h, buf, 512, size - 512, 0), 0, "%s: the last sector reads", who);
  is_int (nbd_shutdown (h, 0), 0, "%s: nbd_shutdown", who);
  ok (nbd_aio_is_closed (h), "%s: the handle is closed", who);
  nbd_close (h);
}

int
main (void)
{
  struct test_server nk, qn, ns;
  char *qimg, *nimg;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  qimg = image_create ("raw", 2 * 1024 * 1024, (const char *const[]) { "write -P 0xab 0 64k", NULL });
  nimg = image_create ("raw", 3 * 1024 * 1024, (const char *const[]) { "write -P 0xcd 0 64k", NULL });
  if (!qimg || !nimg)
    bail_out ("cannot make the images");

  if (server_start_nbdkit (&nk, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");
  check_server (&nk, 1024 * 1024, "", -1);
  server_stop (&nk);

  if (server_start_qemu_nbd (&qn, (const char *const[]) { "-f", "raw", "-x", "qdisk", qimg,
                                                          NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  check_server (&qn, 2 * 1024 * 1024, "qdisk", 0xab);
  server_stop (&qn);

  if (server_start_nbd_server (&ns, nimg, "ndisk", NULL) == -1)
    bail_out ("cannot start nbd-server");
  check_server (&ns, 3 * 1024 * 1024, "ndisk", 0xcd);
  server_stop (&ns);

  free (qimg);
  free (nimg);
  return done_testing ();
}
