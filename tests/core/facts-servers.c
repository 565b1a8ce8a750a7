/* facts-servers: the export facts each real server configuration gives.
 *
 * nbdkit memory, nbdkit -r, the nozero filter (zero off; zero on but fast
 * zero off), qemu-nbd (read-write, -r, -e 2 for multi-conn), nbd-server
 * 3.24 (flush, FUA, trim, zero and multi-conn, never DF, cache or fast
 * zero; "readonly = true").  Every value is asserted, so a fact that comes
 * from the wrong bit fails somewhere.  A read-only export also refuses a
 * write on the client side with EPERM.
 *
 * Not here: an export size above INT64_MAX (nbd_get_size must then fail
 * with EOVERFLOW) — no real server can be made to announce one; it belongs
 * to the hostile-server tests.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define has_prefix(s, p) ((s) != NULL && strncmp ((s), (p), strlen (p)) == 0)

enum fact {
  RO, FLUSH, FUA, TRIM, ZERO, FAST_ZERO, CACHE, MULTI_CONN, ROTATIONAL, DF, NR_FACTS
};

static const struct {
  const char *name;
  int (*get) (struct nbd_handle *);
} getters[NR_FACTS] = {
  [RO] = { "nbd_is_read_only", nbd_is_read_only },
  [FLUSH] = { "nbd_can_flush", nbd_can_flush },
  [FUA] = { "nbd_can_fua", nbd_can_fua },
  [TRIM] = { "nbd_can_trim", nbd_can_trim },
  [ZERO] = { "nbd_can_zero", nbd_can_zero },
  [FAST_ZERO] = { "nbd_can_fast_zero", nbd_can_fast_zero },
  [CACHE] = { "nbd_can_cache", nbd_can_cache },
  [MULTI_CONN] = { "nbd_can_multi_conn", nbd_can_multi_conn },
  [ROTATIONAL] = { "nbd_is_rotational", nbd_is_rotational },
  [DF] = { "nbd_can_df", nbd_can_df },
};

enum kind { NBDKIT, QEMU, NBD_SERVER };

struct config {
  const char *label;
  enum kind kind;
  const char *args[8];          /* nbdkit / qemu-nbd arguments; IMAGE is replaced */
  const char *nbd_server_lines; /* extra export lines for nbd-server */
  int want[NR_FACTS];           /* RO FL FUA TR ZE FZ CA MC ROT DF */
};

#define IMAGE "@IMAGE@"

static const struct config configs[] = {
  { "nbdkit memory", NBDKIT, { "memory", "size=1M" }, NULL,
    { 0, 1, 1, 1, 1, 1, 1, 1, 0, 1 } },
  { "nbdkit -r memory", NBDKIT, { "-r", "memory", "size=1M" }, NULL,
    { 1, 1, 0, 0, 0, 0, 1, 1, 0, 1 } },
  { "nbdkit --filter=nozero", NBDKIT, { "--filter=nozero", "memory", "size=1M" }, NULL,
    { 0, 1, 1, 1, 0, 0, 1, 1, 0, 1 } },
  { "nbdkit --filter=nozero zeromode=plugin fastzeromode=none", NBDKIT,
    { "--filter=nozero", "memory", "size=1M", "zeromode=plugin", "fastzeromode=none" }, NULL,
    { 0, 1, 1, 1, 1, 0, 1, 1, 0, 1 } },
  { "qemu-nbd", QEMU, { "-f", "raw", IMAGE }, NULL,
    { 0, 1, 1, 1, 1, 1, 1, 0, 0, 1 } },
  /* qemu-nbd 7.2 keeps FUA on a read-only export (measured). */
  { "qemu-nbd -r", QEMU, { "-r", "-f", "raw", IMAGE }, NULL,
    { 1, 1, 1, 0, 0, 0, 1, 0, 0, 1 } },
  { "qemu-nbd -e 2", QEMU, { "-e", "2", "-f", "raw", IMAGE }, NULL,
    { 0, 1, 1, 1, 1, 1, 1, 1, 0, 1 } },
  /* nbd-server 3.24 offers flush, FUA and trim only when its config says
   * so (measured: all three off by default). */
  { "nbd-server", NBD_SERVER, { NULL }, NULL,
    { 0, 0, 0, 0, 1, 0, 0, 1, 0, 0 } },
  { "nbd-server flush fua trim", NBD_SERVER, { NULL },
    "flush = true\nfua = true\ntrim = true\n",
    { 0, 1, 1, 1, 1, 0, 0, 1, 0, 0 } },
  /* ...and still advertises WRITE_ZEROES on a read-only export (measured). */
  { "nbd-server readonly", NBD_SERVER, { NULL }, "readonly = true\nflush = true\nfua = true\n",
    { 1, 1, 1, 0, 1, 0, 0, 1, 0, 0 } },
};

static void
check_config (const struct config *c, const char *image)
{
  struct test_server s;
  struct nbd_handle *h;
  const char *args[8];
  int r = -1;
  char buf[512] = { 0 };

  for (size_t i = 0; i < 8; i++)
    args[i] = c->args[i] && strcmp (c->args[i], IMAGE) == 0 ? image : c->args[i];
  switch (c->kind) {
  case NBDKIT: r = server_start_nbdkit (&s, args); break;
  case QEMU: r = server_start_qemu_nbd (&s, args); break;
  case NBD_SERVER: r = server_start_nbd_server (&s, image, "disk", c->nbd_server_lines); break;
  }
  if (r == -1)
    bail_out ("cannot start %s", c->label);

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  if (!ok (nbd_connect_uri (h, s.uri) == 0, "%s: connects", c->label)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  for (int f = 0; f < NR_FACTS; f++)
    is_int (getters[f].get (h), c->want[f], "%s: %s", c->label, getters[f].name);
  is_int (nbd_get_size (h), 1048576, "%s: size", c->label);
  if (c->want[RO]) {
    ok (nbd_pwrite (h, buf, sizeof buf, 0, 0) == -1, "%s: a write is refused", c->label);
    is_errno (EPERM, "%s: with EPERM", c->label);
    ok (has_prefix (nbd_get_error (), "nbd_pwrite: "), "%s: the message names nbd_pwrite",
        c->label);
  }
  else {
    memset (buf, 0xa5, sizeof buf);
    ok (nbd_pwrite (h, buf, sizeof buf, 0, 0) == 0, "%s: a write works", c->label);
  }
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", c->label);
  ok (nbd_aio_is_closed (h), "%s: closed", c->label);
  nbd_close (h);
  ok (server_stop (&s) == 0, "%s: server stopped", c->label);
}

int
main (void)
{
  char *image;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  image = image_create_raw (1048576);
  if (!image)
    bail_out ("cannot create the image");
  for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
    check_config (&configs[i], image);
  free (image);
  return done_testing ();
}
