/* handshake-protocols: every handshake variant connects and keeps the
 * stream in step.
 *
 * nbdkit oldstyle (-o), plain newstyle (--mask-handshake=0), newstyle with
 * only NO_ZEROES (--mask-handshake=2), fixed newstyle without NO_ZEROES
 * (--mask-handshake=1) and the default (fixed + NO_ZEROES), each against a
 * client offering no handshake flags, FIXED_NEWSTYLE only, NO_ZEROES only
 * and all of them.  Each pair must report the protocol that follows from the
 * flags both sides share (nbd_get_protocol), the flags actually agreed
 * (nbd_get_handshake_flags) and move data correctly: a wrong guess about the
 * 124 zero bytes after NBD_OPT_EXPORT_NAME would put the reply stream out
 * of step, so each connection writes a pattern and reads it back, and reads
 * a region it did not write.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>

#include "servers.h"
#include "tap.h"

#define BLOCK 4096

/* Write a pattern unique to @seed at @offset, read it back, and read the
 * block after it (which nobody wrote: zeroes from the memory plugin). */
static void
check_io (struct nbd_handle *h, uint64_t offset, unsigned seed, const char *what)
{
  static char wbuf[BLOCK], rbuf[2 * BLOCK], zero[BLOCK];

  for (size_t i = 0; i < BLOCK; i++)
    wbuf[i] = (char) (i * 31 + seed * 7 + 1);
  memset (rbuf, 0x55, sizeof rbuf);
  if (!ok (nbd_pwrite (h, wbuf, BLOCK, offset, 0) == 0, "%s: pwrite", what))
    diag ("error: %s", nbd_get_error ());
  if (!ok (nbd_pread (h, rbuf, 2 * BLOCK, offset, 0) == 0, "%s: pread", what))
    diag ("error: %s", nbd_get_error ());
  ok (memcmp (rbuf, wbuf, BLOCK) == 0, "%s: read back what was written", what);
  ok (memcmp (rbuf + BLOCK, zero, BLOCK) == 0, "%s: the unwritten block reads as zeroes", what);
}

struct server_case {
  const char *label;
  const char *const *args;
  bool oldstyle;
  uint32_t server_flags;        /* handshake flags the server offers */
};

static const char *const args_old[] = { "-o", "memory", "size=1M", NULL };
static const char *const args_mask0[] = { "--mask-handshake=0", "memory", "size=1M", NULL };
static const char *const args_mask1[] = { "--mask-handshake=1", "memory", "size=1M", NULL };
static const char *const args_mask2[] = { "--mask-handshake=2", "memory", "size=1M", NULL };
static const char *const args_default[] = { "memory", "size=1M", NULL };

static const struct server_case servers[] = {
  { "nbdkit -o (oldstyle)", args_old, true, 0 },
  { "nbdkit --mask-handshake=0 (newstyle)", args_mask0, false, 0 },
  { "nbdkit --mask-handshake=1 (fixed, no NO_ZEROES)", args_mask1, false,
    LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE },
  { "nbdkit --mask-handshake=2 (NO_ZEROES, not fixed)", args_mask2, false,
    LIBNBD_HANDSHAKE_FLAG_NO_ZEROES },
  { "nbdkit default (fixed + NO_ZEROES)", args_default, false, LIBNBD_HANDSHAKE_FLAG_MASK },
};

static const uint32_t client_flags[] = {
  0,
  LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE,
  LIBNBD_HANDSHAKE_FLAG_NO_ZEROES,
  LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE | LIBNBD_HANDSHAKE_FLAG_NO_ZEROES,
};

static void
one_connection (const struct test_server *s, const struct server_case *sc, uint32_t cflags,
                unsigned seed)
{
  struct nbd_handle *h;
  char what[160];
  const char *want_protocol;
  uint32_t agreed = sc->server_flags & cflags;

  snprintf (what, sizeof what, "%s, client flags %u", sc->label, cflags);
  if (sc->oldstyle)
    want_protocol = "oldstyle";
  else if (agreed & LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE)
    want_protocol = "newstyle-fixed";
  else
    want_protocol = "newstyle";

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  ok (nbd_set_handshake_flags (h, cflags) == 0, "%s: nbd_set_handshake_flags", what);
  is_uint (nbd_get_handshake_flags (h), cflags,
           "%s: before connecting, nbd_get_handshake_flags returns what was set", what);
  if (!ok (nbd_connect_uri (h, s->uri) == 0, "%s: connects", what)) {
    diag ("error: %s", nbd_get_error ());
    nbd_close (h);
    return;
  }
  ok (nbd_aio_is_ready (h), "%s: ready", what);
  is_str (nbd_get_protocol (h), want_protocol, "%s: nbd_get_protocol", what);
  /* Oldstyle has no handshake flags at all; newstyle agrees on the
   * intersection of what both sides offered. */
  is_uint (nbd_get_handshake_flags (h), sc->oldstyle ? 0 : agreed,
           "%s: nbd_get_handshake_flags after connecting is what was agreed", what);
  is_int (nbd_get_size (h), 1048576, "%s: size", what);
  check_io (h, (uint64_t) seed * 2 * BLOCK, seed, what);
  /* A second round on the same connection: the stream is still in step. */
  check_io (h, (uint64_t) seed * 2 * BLOCK + 65536, seed + 100, what);
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed after shutdown", what);
  nbd_close (h);
}

int
main (void)
{
  unsigned seed = 0;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  for (size_t i = 0; i < sizeof servers / sizeof servers[0]; i++) {
    struct test_server s;

    if (server_start_nbdkit (&s, servers[i].args) == -1)
      bail_out ("cannot start %s", servers[i].label);
    for (size_t j = 0; j < sizeof client_flags / sizeof client_flags[0]; j++)
      one_connection (&s, &servers[i], client_flags[j], seed++);
    ok (server_stop (&s) == 0, "%s: server stopped", servers[i].label);
  }

  /* Unknown handshake flag bits are refused, and the setting is kept. */
  {
    struct nbd_handle *h = nbd_create ();

    if (!h)
      bail_out ("nbd_create: %s", nbd_get_error ());
    is_uint (nbd_get_handshake_flags (h), LIBNBD_HANDSHAKE_FLAG_MASK,
             "a new handle offers every handshake flag");
    ok (nbd_set_handshake_flags (h, 4) == -1, "nbd_set_handshake_flags (4) fails");
    is_errno (EINVAL, "with EINVAL");
    ok (strncmp (nbd_get_error (), "nbd_set_handshake_flags: ", 25) == 0,
        "the message names nbd_set_handshake_flags");
    is_uint (nbd_get_handshake_flags (h), LIBNBD_HANDSHAKE_FLAG_MASK,
             "the flags are unchanged after the refused call");
    ok (nbd_get_protocol (h) == NULL, "nbd_get_protocol before connecting fails");
    is_errno (ENOTCONN, "with ENOTCONN");
    ok (strncmp (nbd_get_error (), "nbd_get_protocol: ", 18) == 0,
        "the message names nbd_get_protocol");
    nbd_close (h);
  }

  return done_testing ();
}
