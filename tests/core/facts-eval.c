/* facts-eval: each export fact the client reports follows the server's
 * transmission flags, one flag at a time.
 *
 * One nbdkit eval server decides its can_* answers from the export name
 * (the open script makes the name the handle), so each export turns one
 * fact off (or, for is_rotational, on): nbd_is_read_only, nbd_can_flush,
 * nbd_can_fua, nbd_can_trim, nbd_can_zero, nbd_can_fast_zero,
 * nbd_can_cache, nbd_can_multi_conn, nbd_is_rotational, nbd_can_df.  The
 * others must stay as they were.  nbdkit's own rules show through (all
 * measured with nbdkit 1.32): a read-only export has no FUA, trim, zero or
 * fast zero; a plugin without zero support still gets WRITE_ZEROES,
 * emulated by nbdkit; "emulate" FUA and cache are advertised; DF comes
 * only with structured replies.  Also: every getter refuses a handle that
 * has not connected (ENOTCONN) and names itself in the message.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
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

/* The expected value of each fact, in enum order. */
struct row {
  const char *export;
  bool sr;
  int want[NR_FACTS];
};

/*                                   RO FL FUA TR ZE FZ CA MC ROT DF */
static const struct row rows[] = {
  { "all", true,                   { 0, 1, 1,  1, 1, 1, 1, 1, 0,  1 } },
  { "read-only", true,             { 1, 1, 0,  0, 0, 0, 1, 1, 0,  1 } },
  { "no-flush", true,              { 0, 0, 1,  1, 1, 1, 1, 1, 0,  1 } },
  { "no-fua", true,                { 0, 1, 0,  1, 1, 1, 1, 1, 0,  1 } },
  { "fua-emulate", true,           { 0, 1, 1,  1, 1, 1, 1, 1, 0,  1 } },
  { "no-trim", true,               { 0, 1, 1,  0, 1, 1, 1, 1, 0,  1 } },
  { "no-zero", true,               { 0, 1, 1,  1, 1, 1, 1, 1, 0,  1 } },
  { "no-fast-zero", true,          { 0, 1, 1,  1, 1, 0, 1, 1, 0,  1 } },
  { "no-cache", true,              { 0, 1, 1,  1, 1, 1, 0, 1, 0,  1 } },
  { "cache-emulate", true,         { 0, 1, 1,  1, 1, 1, 1, 1, 0,  1 } },
  { "no-multi-conn", true,         { 0, 1, 1,  1, 1, 1, 1, 0, 0,  1 } },
  { "rotational", true,            { 0, 1, 1,  1, 1, 1, 1, 1, 1,  1 } },
  { "all", false,                  { 0, 1, 1,  1, 1, 1, 1, 1, 0,  0 } },
  { "no-flush", false,             { 0, 0, 1,  1, 1, 1, 1, 1, 0,  0 } },
};

static void
check_row (const struct test_server *s, const struct row *r)
{
  struct nbd_handle *h = nbd_create ();
  char *uri = server_uri (s, r->export);
  char what[96];

  snprintf (what, sizeof what, "export %s%s", r->export,
            r->sr ? "" : " without structured replies");
  if (!h || !uri)
    bail_out ("nbd_create or server_uri failed");
  if (!r->sr)
    must (nbd_set_request_structured_replies (h, false));
  if (!ok (nbd_connect_uri (h, uri) == 0, "%s: connects", what)) {
    diag ("error: %s", nbd_get_error ());
    bail_out ("cannot go on without the connection");
  }
  for (int f = 0; f < NR_FACTS; f++)
    is_int (getters[f].get (h), r->want[f], "%s: %s", what, getters[f].name);
  is_int (nbd_get_size (h), 1048576, "%s: size", what);
  ok (nbd_shutdown (h, 0) == 0, "%s: shutdown", what);
  ok (nbd_aio_is_closed (h), "%s: closed", what);
  /* The facts stay readable once the connection is shut down. */
  for (int f = 0; f < NR_FACTS; f++)
    is_int (getters[f].get (h), r->want[f], "%s: %s after shutdown", what, getters[f].name);
  nbd_close (h);
  free (uri);
}

int
main (void)
{
  static const char *const args[] = {
    "eval",
    "open=echo \"$3\"",
    "get_size=echo 1M",
    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    "can_write=case \"$2\" in read-only) exit 3;; esac; exit 0",
    "pwrite=cat >/dev/null",
    "can_flush=case \"$2\" in no-flush) exit 3;; esac; exit 0",
    "flush=exit 0",
    "can_fua=case \"$2\" in no-fua) echo none;; fua-emulate) echo emulate;; *) echo native;; esac",
    "can_trim=case \"$2\" in no-trim) exit 3;; esac; exit 0",
    "trim=exit 0",
    "can_zero=case \"$2\" in no-zero) exit 3;; esac; exit 0",
    "zero=exit 0",
    "can_fast_zero=case \"$2\" in no-fast-zero) exit 3;; esac; exit 0",
    "can_cache=case \"$2\" in no-cache) echo none;; cache-emulate) echo emulate;; *) echo native;; esac",
    "cache=exit 0",
    "can_multi_conn=case \"$2\" in no-multi-conn) exit 3;; esac; exit 0",
    "is_rotational=case \"$2\" in rotational) exit 0;; esac; exit 3",
    NULL
  };
  struct test_server s;
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  /* No facts before connecting. */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  for (int f = 0; f < NR_FACTS; f++) {
    char prefix[64];

    snprintf (prefix, sizeof prefix, "%s: ", getters[f].name);
    ok (getters[f].get (h) == -1, "%s before connecting fails", getters[f].name);
    is_errno (ENOTCONN, "%s: with ENOTCONN", getters[f].name);
    ok (has_prefix (nbd_get_error (), prefix), "%s: the message names the call",
        getters[f].name);
  }
  ok (nbd_get_size (h) == -1, "nbd_get_size before connecting fails");
  is_errno (ENOTCONN, "nbd_get_size: with ENOTCONN");
  nbd_close (h);

  if (server_start_nbdkit (&s, args) == -1)
    bail_out ("cannot start nbdkit eval");
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    check_row (&s, &rows[i]);
  ok (server_stop (&s) == 0, "nbdkit eval stopped");

  return done_testing ();
}
