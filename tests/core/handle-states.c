/* handle-states: which calls each handle state permits, as libnbd 1.14.
 *
 * Proves, against nbdkit memory 1M:
 *  - on a newly created handle every call that needs a connection fails with
 *    ENOTCONN, its message starting with the call's name;
 *  - once connected, every "newly created only" setter (and every connect
 *    call) fails with EINVAL and changes nothing, the "created or
 *    negotiating" ones too, while getters and the any-state setters work;
 *  - in opt mode (negotiating) the created-or-negotiating setters work and
 *    the created-only ones and I/O fail with EINVAL;
 *  - after nbd_shutdown (closed) and after a failed connect (dead) the
 *    connection calls fail with EINVAL; a closed handle still answers the
 *    export facts, a dead one does not;
 *  - nbd_connection_state goes created -> ready -> closed (and
 *    negotiating, dead), with the aio_is_* predicates agreeing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

static struct test_server srv;
static char buf[512];

static bool
error_from (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  return msg && strncmp (msg, call, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ';
}

/* One assertion per call: it failed, with errno @err, and its message names it. */
static void
check_fail (bool failed, const char *call, int err, const char *state)
{
  int got = nbd_get_errno ();
  const char *msg = nbd_get_error ();

  if (!ok (failed && got == err && error_from (call), "%s: %s fails with %s", state, call,
           strerrorname_np (err)))
    diag ("failed=%d errno=%d (%s) message=%s", failed, got, got ? strerrorname_np (got) : "0",
          msg ? msg : "(null)");
}

#define FAILS(state, err, call, expr) check_fail ((expr) == -1, call, err, state)
#define FAILS_NULL(state, err, call, expr) check_fail ((expr) == NULL, call, err, state)

static int
list_cb (void *u, const char *n, const char *d)
{
  return 0;
}

static int
ctx_cb (void *u, const char *n)
{
  return 0;
}

static int
extent_cb (void *u, const char *m, uint64_t o, uint32_t *e, size_t n, int *err)
{
  return 0;
}

static int
chunk_cb (void *u, const void *b, size_t c, uint64_t o, unsigned s, int *err)
{
  return 0;
}

/* The calls that need a connection (Connected, or Negotiating for opt_*,
 * or Negotiating|Connected|Closed for facts), each expected to fail with
 * @err in the handle's present state.  @facts: include the export facts
 * (a closed handle answers them). @opt: include the nbd_opt_* calls.
 */
static void
connection_calls_fail (struct nbd_handle *h, const char *state, int err, bool facts, bool opt)
{
  nbd_extent_callback ext = { .callback = extent_cb };
  nbd_chunk_callback chk = { .callback = chunk_cb };

  FAILS (state, err, "nbd_pread", nbd_pread (h, buf, 512, 0, 0));
  FAILS (state, err, "nbd_pread_structured", nbd_pread_structured (h, buf, 512, 0, chk, 0));
  FAILS (state, err, "nbd_pwrite", nbd_pwrite (h, buf, 512, 0, 0));
  FAILS (state, err, "nbd_flush", nbd_flush (h, 0));
  FAILS (state, err, "nbd_trim", nbd_trim (h, 512, 0, 0));
  FAILS (state, err, "nbd_cache", nbd_cache (h, 512, 0, 0));
  FAILS (state, err, "nbd_zero", nbd_zero (h, 512, 0, 0));
  FAILS (state, err, "nbd_block_status", nbd_block_status (h, 512, 0, ext, 0));
  FAILS (state, err, "nbd_shutdown", nbd_shutdown (h, 0));
  FAILS (state, err, "nbd_aio_pread", nbd_aio_pread (h, buf, 512, 0, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_pread_structured",
         nbd_aio_pread_structured (h, buf, 512, 0, chk, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_pwrite", nbd_aio_pwrite (h, buf, 512, 0, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_flush", nbd_aio_flush (h, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_trim", nbd_aio_trim (h, 512, 0, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_cache", nbd_aio_cache (h, 512, 0, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_zero", nbd_aio_zero (h, 512, 0, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_block_status",
         nbd_aio_block_status (h, 512, 0, ext, NBD_NULL_COMPLETION, 0));
  FAILS (state, err, "nbd_aio_disconnect", nbd_aio_disconnect (h, 0));
  if (opt) {
    FAILS (state, err, "nbd_opt_go", nbd_opt_go (h));
    FAILS (state, err, "nbd_opt_abort", nbd_opt_abort (h));
    FAILS (state, err, "nbd_opt_info", nbd_opt_info (h));
    FAILS (state, err, "nbd_opt_list",
           nbd_opt_list (h, (nbd_list_callback) { .callback = list_cb }));
    FAILS (state, err, "nbd_opt_list_meta_context",
           nbd_opt_list_meta_context (h, (nbd_context_callback) { .callback = ctx_cb }));
    FAILS (state, err, "nbd_aio_opt_go", nbd_aio_opt_go (h, NBD_NULL_COMPLETION));
    FAILS (state, err, "nbd_aio_opt_abort", nbd_aio_opt_abort (h));
    FAILS (state, err, "nbd_aio_opt_info", nbd_aio_opt_info (h, NBD_NULL_COMPLETION));
    FAILS (state, err, "nbd_aio_opt_list",
           nbd_aio_opt_list (h, (nbd_list_callback) { .callback = list_cb }, NBD_NULL_COMPLETION));
    FAILS (state, err, "nbd_aio_opt_list_meta_context",
           nbd_aio_opt_list_meta_context (h, (nbd_context_callback) { .callback = ctx_cb },
                                          NBD_NULL_COMPLETION));
  }
  if (facts) {
    FAILS (state, err, "nbd_get_size", nbd_get_size (h));
    FAILS (state, err, "nbd_get_block_size", nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM));
    FAILS (state, err, "nbd_is_read_only", nbd_is_read_only (h));
    FAILS (state, err, "nbd_can_flush", nbd_can_flush (h));
    FAILS (state, err, "nbd_can_fua", nbd_can_fua (h));
    FAILS (state, err, "nbd_is_rotational", nbd_is_rotational (h));
    FAILS (state, err, "nbd_can_trim", nbd_can_trim (h));
    FAILS (state, err, "nbd_can_zero", nbd_can_zero (h));
    FAILS (state, err, "nbd_can_fast_zero", nbd_can_fast_zero (h));
    FAILS (state, err, "nbd_can_df", nbd_can_df (h));
    FAILS (state, err, "nbd_can_multi_conn", nbd_can_multi_conn (h));
    FAILS (state, err, "nbd_can_cache", nbd_can_cache (h));
    FAILS (state, err, "nbd_can_meta_context", nbd_can_meta_context (h, "base:allocation"));
    FAILS_NULL (state, err, "nbd_get_protocol", nbd_get_protocol (h));
    FAILS_NULL (state, err, "nbd_get_canonical_export_name", nbd_get_canonical_export_name (h));
    FAILS_NULL (state, err, "nbd_get_export_description", nbd_get_export_description (h));
    FAILS (state, err, "nbd_get_tls_negotiated", nbd_get_tls_negotiated (h));
    FAILS (state, err, "nbd_get_structured_replies_negotiated",
           nbd_get_structured_replies_negotiated (h));
  }
}

/* The setters permitted only on a newly created handle, and the connects. */
static void
created_only_fail (struct nbd_handle *h, const char *state)
{
  char *argv[] = { "nbdkit", "-s", "--exit-with-parent", "memory", "1M", NULL };
  char uri[600];

  snprintf (uri, sizeof uri, "nbd+unix:///?socket=%s", srv.sock);
  FAILS (state, EINVAL, "nbd_set_tls", nbd_set_tls (h, LIBNBD_TLS_DISABLE));
  FAILS (state, EINVAL, "nbd_set_tls_certificates", nbd_set_tls_certificates (h, "/tmp"));
  FAILS (state, EINVAL, "nbd_set_tls_verify_peer", nbd_set_tls_verify_peer (h, false));
  FAILS (state, EINVAL, "nbd_set_tls_username", nbd_set_tls_username (h, "nobody"));
  FAILS (state, EINVAL, "nbd_set_tls_psk_file", nbd_set_tls_psk_file (h, "/tmp/x.psk"));
  FAILS (state, EINVAL, "nbd_set_request_structured_replies",
         nbd_set_request_structured_replies (h, false));
  FAILS (state, EINVAL, "nbd_set_handshake_flags", nbd_set_handshake_flags (h, 0));
  FAILS (state, EINVAL, "nbd_set_opt_mode", nbd_set_opt_mode (h, true));
  FAILS (state, EINVAL, "nbd_set_uri_allow_transports",
         nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_TCP));
  FAILS (state, EINVAL, "nbd_set_uri_allow_tls", nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE));
  FAILS (state, EINVAL, "nbd_set_uri_allow_local_file", nbd_set_uri_allow_local_file (h, true));

  FAILS (state, EINVAL, "nbd_connect_unix", nbd_connect_unix (h, srv.sock));
  FAILS (state, EINVAL, "nbd_connect_uri", nbd_connect_uri (h, uri));
  FAILS (state, EINVAL, "nbd_connect_tcp", nbd_connect_tcp (h, "127.0.0.1", "10809"));
  FAILS (state, EINVAL, "nbd_connect_socket", nbd_connect_socket (h, 0));
  FAILS (state, EINVAL, "nbd_connect_command", nbd_connect_command (h, argv));
  FAILS (state, EINVAL, "nbd_connect_systemd_socket_activation",
         nbd_connect_systemd_socket_activation (h, argv));
  FAILS (state, EINVAL, "nbd_aio_connect_unix", nbd_aio_connect_unix (h, srv.sock));
  FAILS (state, EINVAL, "nbd_aio_connect_uri", nbd_aio_connect_uri (h, uri));
  FAILS (state, EINVAL, "nbd_aio_connect_tcp", nbd_aio_connect_tcp (h, "127.0.0.1", "10809"));
  FAILS (state, EINVAL, "nbd_aio_connect_socket", nbd_aio_connect_socket (h, 0));
  FAILS (state, EINVAL, "nbd_aio_connect_command", nbd_aio_connect_command (h, argv));
  FAILS (state, EINVAL, "nbd_aio_connect_systemd_socket_activation",
         nbd_aio_connect_systemd_socket_activation (h, argv));
}

/* Permitted when newly created or negotiating. */
static void
created_or_negotiating_fail (struct nbd_handle *h, const char *state)
{
  FAILS (state, EINVAL, "nbd_set_export_name", nbd_set_export_name (h, "other"));
  FAILS (state, EINVAL, "nbd_set_request_block_size", nbd_set_request_block_size (h, false));
  FAILS (state, EINVAL, "nbd_set_full_info", nbd_set_full_info (h, true));
  FAILS (state, EINVAL, "nbd_add_meta_context", nbd_add_meta_context (h, "base:allocation"));
  FAILS (state, EINVAL, "nbd_clear_meta_contexts", nbd_clear_meta_contexts (h));
}

static void
test_created (void)
{
  struct nbd_handle *h = nbd_create ();

  is_str (nbd_connection_state (h), "created", "a new handle's state is \"created\"");
  ok (nbd_aio_is_created (h) && !nbd_aio_is_ready (h) && !nbd_aio_is_connecting (h),
      "nbd_aio_is_created and nothing else");
  connection_calls_fail (h, "created", ENOTCONN, true, true);
  FAILS ("created", ENOTCONN, "nbd_aio_in_flight", nbd_aio_in_flight (h));
  FAILS_NULL ("created", ENOTCONN, "nbd_get_uri", nbd_get_uri (h));
  ok (nbd_aio_is_created (h), "after all those failures it is still newly created");
  nbd_close (h);
}

static void
test_connected_then_closed (void)
{
  struct nbd_handle *h = nbd_create ();
  char *s;

  is_int (nbd_connect_unix (h, srv.sock), 0, "nbd_connect_unix");
  is_str (nbd_connection_state (h), "ready", "after connecting the state is \"ready\"");
  ok (nbd_aio_is_ready (h) && !nbd_aio_is_created (h), "nbd_aio_is_ready");

  created_only_fail (h, "ready");
  created_or_negotiating_fail (h, "ready");
  FAILS ("ready", EINVAL, "nbd_opt_go", nbd_opt_go (h));
  FAILS ("ready", EINVAL, "nbd_aio_opt_abort", nbd_aio_opt_abort (h));
  is_str (nbd_connection_state (h), "ready", "the refusals left the handle ready");

  /* Nothing was changed by the refusals. */
  s = nbd_get_export_name (h);
  is_str (s, "", "the export name is still \"\"");
  free (s);
  is_int (nbd_get_opt_mode (h), 0, "opt mode still off");
  is_uint (nbd_get_handshake_flags (h), LIBNBD_HANDSHAKE_FLAG_MASK, "handshake flags unchanged");
  is_int (nbd_get_tls_verify_peer (h), 1, "verify peer unchanged");
  is_int (nbd_get_request_block_size (h), 1, "request block size unchanged");
  is_int (nbd_get_nr_meta_contexts (h), 0, "no meta context was added");

  /* Any-state calls still work. */
  is_int (nbd_set_pread_initialize (h, false), 0, "ready: nbd_set_pread_initialize works");
  is_int (nbd_get_pread_initialize (h), 0, "and is stored");
  is_int (nbd_set_strict_mode (h, LIBNBD_STRICT_BOUNDS), 0, "ready: nbd_set_strict_mode works");
  is_uint (nbd_get_strict_mode (h), LIBNBD_STRICT_BOUNDS, "and is stored");
  is_int (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK), 0, "strict mode back");
  is_int (nbd_set_debug (h, false), 0, "ready: nbd_set_debug works");
  is_int (nbd_set_handle_name (h, "renamed"), 0, "ready: nbd_set_handle_name works");
  is_int (nbd_get_size (h), 1048576, "ready: nbd_get_size is 1M");
  is_int (nbd_aio_in_flight (h), 0, "ready: nbd_aio_in_flight is 0");
  is_int (nbd_get_tls_negotiated (h), 0, "ready: nbd_get_tls_negotiated is 0");
  is_str (nbd_get_protocol (h), "newstyle-fixed", "ready: protocol newstyle-fixed");
  is_int (nbd_pread (h, buf, 512, 0, 0), 0, "ready: nbd_pread works");

  is_int (nbd_shutdown (h, 0), 0, "nbd_shutdown");
  is_str (nbd_connection_state (h), "closed", "after nbd_shutdown the state is \"closed\"");
  ok (nbd_aio_is_closed (h) && !nbd_aio_is_ready (h) && !nbd_aio_is_dead (h), "nbd_aio_is_closed");

  connection_calls_fail (h, "closed", EINVAL, false, true);
  created_only_fail (h, "closed");
  created_or_negotiating_fail (h, "closed");
  is_int (nbd_get_size (h), 1048576, "closed: nbd_get_size still answers 1M");
  is_int (nbd_can_flush (h), 1, "closed: nbd_can_flush still answers");
  is_int (nbd_aio_in_flight (h), 0, "closed: nbd_aio_in_flight is 0");
  s = nbd_get_uri (h);
  ok (s != NULL, "closed: nbd_get_uri still answers (%s)", s ? s : "NULL");
  free (s);
  is_str (nbd_connection_state (h), "closed", "still closed");
  nbd_close (h);
}

static void
test_negotiating (void)
{
  struct nbd_handle *h = nbd_create ();
  char *s;

  is_int (nbd_set_opt_mode (h, true), 0, "nbd_set_opt_mode (true)");
  is_int (nbd_connect_unix (h, srv.sock), 0, "nbd_connect_unix in opt mode");
  is_str (nbd_connection_state (h), "negotiating", "the state is \"negotiating\"");
  ok (nbd_aio_is_negotiating (h), "nbd_aio_is_negotiating");

  created_only_fail (h, "negotiating");
  FAILS ("negotiating", EINVAL, "nbd_pread", nbd_pread (h, buf, 512, 0, 0));
  FAILS ("negotiating", EINVAL, "nbd_aio_flush", nbd_aio_flush (h, NBD_NULL_COMPLETION, 0));
  FAILS ("negotiating", EINVAL, "nbd_shutdown", nbd_shutdown (h, 0));
  FAILS ("negotiating", EINVAL, "nbd_aio_in_flight", nbd_aio_in_flight (h));

  is_int (nbd_set_export_name (h, "other"), 0, "negotiating: nbd_set_export_name works");
  s = nbd_get_export_name (h);
  is_str (s, "other", "and is stored");
  free (s);
  is_int (nbd_set_export_name (h, ""), 0, "back to \"\"");
  is_int (nbd_set_full_info (h, true), 0, "negotiating: nbd_set_full_info works");
  is_int (nbd_set_request_block_size (h, false), 0, "negotiating: nbd_set_request_block_size works");
  is_int (nbd_add_meta_context (h, "base:allocation"), 0, "negotiating: nbd_add_meta_context works");
  is_int (nbd_get_nr_meta_contexts (h), 1, "one context requested");
  is_int (nbd_clear_meta_contexts (h), 0, "negotiating: nbd_clear_meta_contexts works");
  is_int (nbd_get_nr_meta_contexts (h), 0, "none requested");

  is_int (nbd_opt_go (h), 0, "nbd_opt_go");
  is_str (nbd_connection_state (h), "ready", "now \"ready\"");
  created_or_negotiating_fail (h, "ready after opt_go");
  is_int (nbd_get_size (h), 1048576, "nbd_get_size is 1M");
  nbd_close (h);
}

static void
test_dead (void)
{
  struct nbd_handle *h = nbd_create ();
  char path[600];

  snprintf (path, sizeof path, "%s.does-not-exist", srv.sock);
  is_int (nbd_connect_unix (h, path), -1, "connecting to a missing socket fails");
  is_errno (ENOENT, "with ENOENT");
  is_str (nbd_connection_state (h), "dead", "the state is \"dead\"");
  ok (nbd_aio_is_dead (h) && !nbd_aio_is_created (h) && !nbd_aio_is_closed (h), "nbd_aio_is_dead");

  connection_calls_fail (h, "dead", EINVAL, true, true);
  created_only_fail (h, "dead");
  created_or_negotiating_fail (h, "dead");
  is_int (nbd_aio_in_flight (h), 0, "dead: nbd_aio_in_flight is 0");
  is_str (nbd_connection_state (h), "dead", "still dead");
  nbd_close (h);
}

int
main (void)
{
  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&srv, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  test_created ();
  test_connected_then_closed ();
  test_negotiating ();
  test_dead ();

  server_stop (&srv);
  return done_testing ();
}
