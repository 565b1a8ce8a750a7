/* hostile-handshake: a server that breaks the handshake cannot crash,
 * hang or fool the client.
 *
 * Against hostile-server.py: a wrong magic or version, option replies with
 * the wrong magic, for another option, longer than the client's limit or
 * of the wrong type, an ACK with a payload, NBD_INFO payloads of the wrong
 * length, names with a NUL or too long, GO acknowledged without an export,
 * short or duplicate meta context replies, a flood of 100 000 meta
 * contexts (never asked for, or the one asked for again and again under
 * fresh ids: the first such reply is refused, nothing piles up) and
 * contradictory block sizes must each fail nbd_connect_unix with EPROTO and
 * a message naming the fault, and leave a dead handle that refuses further
 * calls (EINVAL).  A
 * GO error's text reaches the message with control characters replaced.
 * An export size above INT64_MAX connects but nbd_get_size says EOVERFLOW
 * and the handle works.  NBD_OPT_GO refused with ERR_UNSUP falls back to
 * NBD_OPT_EXPORT_NAME (with and without the 124 zero bytes) and works.
 * With TLS required, an oldstyle, a non-fixed newstyle and a
 * STARTTLS-refusing server are refused (ENOTSUP) before anything else goes
 * out; a server that accepts STARTTLS but then sends no TLS (EPROTO) or
 * hangs up (ECONNRESET) fails the connect, and one that goes silent leaves
 * a handle nbd_close ends.  In option mode, NBD_REP_SERVER entries whose
 * name length exceeds the reply fail nbd_opt_list after the good entries,
 * while the longest legal entry (4096-byte name and description) passes, and
 * a 100 000-entry NBD_OPT_LIST_META_CONTEXT reaches the callback whole (a
 * listing stores nothing, so it has no limit); a
 * server dying in NBD_OPT_GO fails nbd_opt_go (CVE-2021-20286).  The server
 * checks each time that the client then hung up (or carried on) as it
 * should.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>

#include "hostile.h"

/* flags */
#define NEEDS_META 1            /* the client asks for base:allocation */
#define X509 2                  /* TLS with certificates (system trust), not a PSK */

/* nbd_connect_unix fails with sc->err / sc->text; the handle is dead. */
static void
connect_fails (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);

  if (sc->flags & NEEDS_META)
    must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  hostile_start (&s, sc->name);
  check_error (sc->name, nbd_connect_unix (h, s.sock), "nbd_connect_unix", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* The control: a correct server, so the failures above are the faults'. */
static void
correct (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);

  is_int (nbd_get_size (h), EXPORT_SIZE, "%s: nbd_get_size", sc->name);
  is_int (nbd_get_structured_replies_negotiated (h), 1, "%s: structured replies", sc->name);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 4096, "%s: preferred block size",
          sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

static void
size_above_int64max (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);
  unsigned char buf[512];
  const uint64_t far = UINT64_C (1) << 62;

  check_error (sc->name, nbd_get_size (h), "nbd_get_size", EOVERFLOW, "larger than INT64_MAX");
  ok (nbd_aio_is_ready (h) == 1, "%s: the handle stays usable", sc->name);
  /* The export really is that large: a read 4 EiB in is inside it. */
  memset (buf, STALE_BYTE, sizeof buf);
  if (!ok (nbd_pread (h, buf, sizeof buf, far, 0) == 0, "%s: nbd_pread at 2^62", sc->name))
    diag ("error: %s", nbd_get_error ());
  ok (is_pattern (buf, far, sizeof buf), "%s: reads the export's bytes at 2^62", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* NBD_OPT_GO answered with ERR_UNSUP: the client must send
 * NBD_OPT_EXPORT_NAME (the server checks) and then work. */
static void
go_unsup_fallback (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_connect (&s, sc->name);

  is_int (nbd_get_size (h), EXPORT_SIZE, "%s: nbd_get_size from NBD_OPT_EXPORT_NAME", sc->name);
  is_str (nbd_get_protocol (h), "newstyle-fixed", "%s: nbd_get_protocol", sc->name);
  is_int (nbd_can_flush (h), 1, "%s: nbd_can_flush (from the transmission flags)", sc->name);
  is_int (nbd_is_read_only (h), 0, "%s: nbd_is_read_only", sc->name);
  /* EXPORT_NAME carries no block sizes. */
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 0, "%s: no block sizes", sc->name);
  check_usable (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* TLS required, and the server cannot or will not do TLS.  Runs once
 * libnbd-core has TLS; until then nbd_set_tls must refuse REQUIRE. */
static void
tls_required (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);

  if (!nbd_supports_tls (h)) {
    int r = nbd_set_tls (h, LIBNBD_TLS_REQUIRE);

    ok (r == -1 && nbd_get_errno () == ENOTSUP,
        "%s: without TLS support nbd_set_tls (REQUIRE) fails with ENOTSUP", sc->name);
    skip ("%s: libnbd-core has no TLS support yet (nbd_supports_tls is false)", sc->name);
    nbd_close (h);
    return;
  }
  if (!ok (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == 0, "%s: nbd_set_tls (REQUIRE)", sc->name))
    diag ("error: %s", nbd_get_error ());
  hostile_start (&s, sc->name);
  check_error (sc->name, nbd_connect_unix (h, s.sock), "nbd_connect_unix", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* A PSK file (user "hostile"), so the TLS cases need no certificates. */
static void
use_psk (struct nbd_handle *h)
{
  static char *path;

  if (!path) {
    FILE *f;

    if (asprintf (&path, "%s/hostile.psk", servers_scratch_dir ()) == -1)
      bail_out ("asprintf: %m");
    f = fopen (path, "w");
    if (!f || fprintf (f, "hostile:00112233445566778899aabbccddeeff\n") < 0 || fclose (f))
      bail_out ("%s: %m", path);
  }
  if (nbd_set_tls_psk_file (h, path) == -1 || nbd_set_tls_username (h, "hostile") == -1)
    bail_out ("PSK settings: %s", nbd_get_error ());
}

/* TLS required and STARTTLS accepted, then no TLS: garbage or a hang-up
 * instead of the server's half of the TLS handshake. */
static void
starttls_broken (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);

  if (!nbd_supports_tls (h)) {
    skip ("%s: libnbd-core has no TLS support yet (nbd_supports_tls is false)", sc->name);
    nbd_close (h);
    return;
  }
  if (!ok (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == 0, "%s: nbd_set_tls (REQUIRE)", sc->name))
    diag ("error: %s", nbd_get_error ());
  /* With a PSK a hang-up reads as the server refusing the key. */
  if (!(sc->flags & X509))
    use_psk (h);
  hostile_start (&s, sc->name);
  check_error (sc->name, nbd_connect_unix (h, s.sock), "nbd_connect_unix", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

/* STARTTLS accepted, then silence in the TLS handshake. */
static void
starttls_silent (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = hostile_handle (sc->name);
  int fd;

  if (!nbd_supports_tls (h)) {
    skip ("%s: libnbd-core has no TLS support yet (nbd_supports_tls is false)", sc->name);
    nbd_close (h);
    return;
  }
  if (!ok (nbd_set_tls (h, LIBNBD_TLS_REQUIRE) == 0, "%s: nbd_set_tls (REQUIRE)", sc->name))
    diag ("error: %s", nbd_get_error ());
  use_psk (h);
  hostile_start (&s, sc->name);
  ok (nbd_aio_connect_unix (h, s.sock) == 0, "%s: nbd_aio_connect_unix", sc->name);
  ok (hostile_wait_silent (&s, h), "%s: the server has sent all it will", sc->name);
  if (!is_int (nbd_poll (h, SILENCE_MS), 0, "%s: nbd_poll (%d ms) times out with 0", sc->name,
               SILENCE_MS))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_connecting (h) == 1, "%s: still connecting", sc->name);
  fd = nbd_aio_get_fd (h);
  ok (fd >= 0, "%s: the handle has its socket", sc->name);
  nbd_close (h);
  ok (fcntl (fd, F_GETFD) == -1 && errno == EBADF,
      "%s: nbd_close in the middle of the TLS handshake closed it", sc->name);
  hostile_end (&s);
}

/* ---- Option mode ------------------------------------------------------ */

struct listed {
  int calls, frees;
  char name[4097], desc[4097];
};

static int
list_cb (void *opaque, const char *name, const char *desc)
{
  struct listed *l = opaque;

  l->calls++;
  snprintf (l->name, sizeof l->name, "%s", name);
  snprintf (l->desc, sizeof l->desc, "%s", desc);
  return 0;
}

static void
list_free (void *opaque)
{
  struct listed *l = opaque;

  l->frees++;
}

static struct nbd_handle *
connect_opt_mode (struct hostile *s, const char *name)
{
  struct nbd_handle *h = hostile_handle (name);

  must (nbd_set_opt_mode (h, true));
  hostile_start (s, name);
  if (!ok (nbd_connect_unix (h, s->sock) == 0, "%s: nbd_connect_unix (option mode)", name))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_negotiating (h) == 1, "%s: negotiating", name);
  return h;
}

/* A good NBD_REP_SERVER, then one whose name length exceeds the reply. */
static void
list_bad_name_length (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_opt_mode (&s, sc->name);
  struct listed l = { 0 };
  int r;

  r = nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &l,
                                             .free = list_free });
  check_error (sc->name, r, "nbd_opt_list", sc->err, sc->text);
  is_int (l.calls, 1, "%s: the good entry reached the callback, the bad one did not", sc->name);
  is_str (l.name, "good", "%s: its name", sc->name);
  is_str (l.desc, "a fine export", "%s: its description", sc->name);
  is_int (l.frees, 1, "%s: the list closure was freed once", sc->name);
  check_dead (sc->name, h);
  check_error (sc->name, nbd_opt_abort (h), "nbd_opt_abort", EINVAL, "dead");
  nbd_close (h);
  hostile_end (&s);
}

/* The longest entry the limits allow is not refused. */
static void
list_longest_entry (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_opt_mode (&s, sc->name);
  struct listed l = { 0 };
  char want[4097];
  int r;

  r = nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb, .user_data = &l,
                                             .free = list_free });
  if (!is_int (r, 1, "%s: nbd_opt_list lists one export", sc->name))
    diag ("error: %s", nbd_get_error ());
  memset (want, 'n', 4096);
  want[4096] = '\0';
  ok (strcmp (l.name, want) == 0, "%s: its 4096-byte name", sc->name);
  memset (want, 'd', 4096);
  ok (strcmp (l.desc, want) == 0, "%s: its 4096-byte description", sc->name);
  is_int (l.frees, 1, "%s: the list closure was freed once", sc->name);
  if (!ok (nbd_opt_abort (h) == 0, "%s: nbd_opt_abort", sc->name))
    diag ("error: %s", nbd_get_error ());
  ok (nbd_aio_is_closed (h) == 1, "%s: the handle is closed", sc->name);
  nbd_close (h);
  hostile_end (&s);
}

/* What hostile-server.py's list-meta-flood sends. */
#define LIST_META_FLOOD 100000

struct contexts {
  int calls, in_order, frees;
};

static int
context_cb (void *opaque, const char *name)
{
  struct contexts *c = opaque;
  char want[32];

  snprintf (want, sizeof want, "x-list:%d", c->calls++);
  if (strcmp (name, want) == 0)
    c->in_order++;
  return 0;
}

static void
context_free (void *opaque)
{
  struct contexts *c = opaque;

  c->frees++;
}

/* A listing of 100 000 contexts: every one reaches the callback, and the
 * handle goes on negotiating. */
static void
list_meta_flood (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_opt_mode (&s, sc->name);
  struct contexts c = { 0 };
  int r;

  r = nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = context_cb,
                                                             .user_data = &c,
                                                             .free = context_free });
  if (!is_int (r, LIST_META_FLOOD, "%s: nbd_opt_list_meta_context counts every context",
               sc->name))
    diag ("error: %s", nbd_get_error ());
  is_int (c.calls, LIST_META_FLOOD, "%s: the callback saw each", sc->name);
  is_int (c.in_order, LIST_META_FLOOD, "%s: by its name, in order", sc->name);
  is_int (c.frees, 1, "%s: the context closure was freed once", sc->name);
  ok (nbd_aio_is_negotiating (h) == 1, "%s: still negotiating", sc->name);
  if (!ok (nbd_opt_abort (h) == 0, "%s: nbd_opt_abort", sc->name))
    diag ("error: %s", nbd_get_error ());
  nbd_close (h);
  hostile_end (&s);
}

/* CVE-2021-20286: the server dies in the middle of NBD_OPT_GO. */
static void
opt_go_server_dies (const struct scenario *sc)
{
  struct hostile s;
  struct nbd_handle *h = connect_opt_mode (&s, sc->name);

  check_error (sc->name, nbd_opt_go (h), "nbd_opt_go", sc->err, sc->text);
  check_dead (sc->name, h);
  nbd_close (h);
  hostile_end (&s);
}

static const struct scenario scenarios[] = {
  { "correct", correct },
  { "bad-magic", connect_fails, EPROTO, "server did not send the NBD magic" },
  { "bad-version", connect_fails, EPROTO, "unknown handshake version" },
  { "opt-reply-bad-magic", connect_fails, EPROTO, "option reply has the wrong magic" },
  { "opt-reply-wrong-option", connect_fails, EPROTO,
    "server replied to option 7 while NBD_OPT_STRUCTURED_REPLY was asked" },
  { "opt-reply-too-long", connect_fails, EPROTO,
    "reply to NBD_OPT_GO is 8197 bytes, more than the limit of 8196" },
  { "opt-reply-huge", connect_fails, EPROTO, "reply to NBD_OPT_GO is 4294967295 bytes" },
  { "opt-reply-bad-type", connect_fails, EPROTO, "unexpected reply type 2 to NBD_OPT_GO" },
  { "info-export-short", connect_fails, EPROTO, "NBD_INFO_EXPORT has the wrong length" },
  { "info-block-size-short", connect_fails, EPROTO, "NBD_INFO_BLOCK_SIZE has the wrong length" },
  { "info-without-type", connect_fails, EPROTO, "NBD_REP_INFO shorter than its type field" },
  { "go-ack-without-export", connect_fails, EPROTO, "without sending NBD_INFO_EXPORT" },
  { "meta-context-duplicate-id", connect_fails, EPROTO, "two meta contexts one id", NEEDS_META },
  { "meta-context-short", connect_fails, EPROTO, "meta context reply has an invalid length",
    NEEDS_META },
  { "meta-context-flood-unrequested", connect_fails, EPROTO,
    "server selected meta context x-flood:0, which was not asked for", NEEDS_META },
  { "meta-context-flood-duplicate", connect_fails, EPROTO,
    "server selected meta context base:allocation twice", NEEDS_META },
  { "sr-ack-with-payload", connect_fails, EPROTO,
    "ACK to NBD_OPT_STRUCTURED_REPLY has a payload" },
  { "info-name-with-nul", connect_fails, EPROTO, "export name or description holds a NUL" },
  { "info-description-too-long", connect_fails, EPROTO, "export name or description too long" },
  /* The server's text is shown, with what a terminal would obey replaced. */
  { "go-error-message-escapes", connect_fails, EPERM, "denied by server policy: bad?[2J?name" },
  { "block-size-min-above-preferred", connect_fails, EPROTO,
    "contradictory block sizes: minimum 4096, preferred 512, maximum 65536" },
  { "block-size-max-below-preferred", connect_fails, EPROTO,
    "contradictory block sizes: minimum 512, preferred 4096, maximum 1024" },
  { "block-size-min-not-power-of-2", connect_fails, EPROTO,
    "contradictory block sizes: minimum 3, preferred 4096, maximum 65536" },
  { "block-size-max-not-multiple", connect_fails, EPROTO,
    "contradictory block sizes: minimum 4096, preferred 4096, maximum 6000" },
  { "size-above-int64max", size_above_int64max },
  { "go-unsup-fallback", go_unsup_fallback },
  { "go-unsup-fallback-zeroes", go_unsup_fallback },
  { "go-unsup-export-unknown", connect_fails, ENOENT, "probably does not exist" },
  { "oldstyle", tls_required, ENOTSUP, "oldstyle" },
  { "newstyle-not-fixed", tls_required, ENOTSUP, "TLS" },
  { "starttls-refused", tls_required, ENOTSUP, "TLS" },
  { "starttls-then-garbage", starttls_broken, EPROTO, "does not speak TLS" },
  { "starttls-then-close", starttls_broken, ECONNRESET,
    "the server closed the connection during the handshake", X509 },
  { "starttls-then-silent", starttls_silent },
  { "list-name-longer-than-reply", list_bad_name_length, EPROTO,
    "NBD_REP_SERVER name length is invalid" },
  { "list-name-length-wraps", list_bad_name_length, EPROTO,
    "NBD_REP_SERVER name length is invalid" },
  { "list-longest-entry", list_longest_entry },
  { "list-meta-flood", list_meta_flood },
  { "opt-go-server-dies", opt_go_server_dies, ECONNRESET, "server closed the connection" },
};

int
main (int argc, char **argv)
{
  return hostile_main (argc, argv, scenarios, sizeof scenarios / sizeof scenarios[0]);
}
