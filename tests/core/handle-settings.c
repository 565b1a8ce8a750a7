/* handle-settings: every setting of a new handle, its default, what the
 * setter stores and what it refuses.
 *
 * No server: nbd_create/nbd_close (and nbd_close (NULL)), handle names,
 * private data, export name (4096 bytes ok, 4097 ENAMETOOLONG), debug flag,
 * package name and version, supports_tls/uri, full info, structured
 * replies, handshake flags and strict mode (EINVAL for unknown bits), pread
 * initialize, block size requests, opt mode, meta context requests (EINVAL
 * out of range), TLS settings (ALLOW/REQUIRE are ENOTSUP in a build without
 * GnuTLS, stored in one with it: supports_tls says which),
 * the TLS username ($LOGNAME by default) and the URI policy setters.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"

/* The last error is this call's: "nbd_xxx: ..." */
static bool
error_from (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  if (msg && strncmp (msg, call, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
    return true;
  diag ("error message '%s' does not start with '%s: '", msg ? msg : "(null)", call);
  return false;
}

/* libnbd-core has TLS exactly when it was built with GnuTLS, which is then
 * loaded into this process. */
static bool
gnutls_loaded (void)
{
  FILE *f = fopen ("/proc/self/maps", "r");
  char line[1024];
  bool found = false;

  if (!f)
    bail_out ("/proc/self/maps: %m");
  while (!found && fgets (line, sizeof line, f))
    found = strstr (line, "/libgnutls.so") != NULL;
  fclose (f);
  return found;
}

static void
is_str_free (char *got, const char *want, const char *what)
{
  is_str (got, want, "%s", what);
  free (got);
}

static void
test_create_close (void)
{
  struct nbd_handle *h1, *h2;
  char *n1, *n2;

  /* A no-op: no crash, and the thread's last error stays as it was. */
  h1 = nbd_create ();
  ok (h1 && nbd_aio_get_fd (h1) == -1, "nbd_aio_get_fd on a new handle fails");
  nbd_close (NULL);
  is_errno (EINVAL, "nbd_close (NULL) is a no-op: the last error is untouched");
  nbd_close (h1);

  h1 = nbd_create ();
  h2 = nbd_create ();
  if (!ok (h1 != NULL && h2 != NULL, "nbd_create makes two handles"))
    bail_out ("nbd_create: %s", nbd_get_error ());
  ok (h1 != h2, "the two handles are distinct");

  n1 = nbd_get_handle_name (h1);
  n2 = nbd_get_handle_name (h2);
  ok (n1 && n1[0] != '\0', "a new handle has a default name (%s)", n1 ? n1 : "NULL");
  ok (n1 && n2 && strcmp (n1, n2) != 0, "default names differ per handle (%s, %s)",
      n1 ? n1 : "NULL", n2 ? n2 : "NULL");
  free (n1);
  free (n2);

  is_int (nbd_set_handle_name (h1, "my-handle"), 0, "nbd_set_handle_name");
  is_str_free (nbd_get_handle_name (h1), "my-handle", "nbd_get_handle_name returns it");
  is_int (nbd_set_handle_name (h1, ""), 0, "nbd_set_handle_name to the empty string");
  is_str_free (nbd_get_handle_name (h1), "", "and it is stored");
  n2 = nbd_get_handle_name (h2);
  ok (n2 && strcmp (n2, "my-handle") != 0 && n2[0] != '\0',
      "the other handle keeps its own name");
  free (n2);

  /* Private data: the setter returns the old value. */
  is_uint (nbd_get_private_data (h1), 0, "private data defaults to 0");
  is_uint (nbd_set_private_data (h1, 42), 0, "nbd_set_private_data returns the old value 0");
  is_uint (nbd_set_private_data (h1, (uintptr_t) &h1), 42, "and then the old value 42");
  is_uint (nbd_get_private_data (h1), (uintptr_t) &h1, "nbd_get_private_data returns a pointer");
  is_uint (nbd_get_private_data (h2), 0, "private data is per handle");

  nbd_close (h1);
  nbd_close (h2);
}

static void
test_facts (struct nbd_handle *h)
{
  const char *v;
  const char *p;
  int dots = 0;

  is_str (nbd_get_package_name (h), "libnbd-core", "nbd_get_package_name");
  v = nbd_get_version (h);
  ok (v && v[0] != '\0', "nbd_get_version is not empty (%s)", v ? v : "NULL");
  for (p = v ? v : ""; *p; p++) {
    if (*p == '.')
      dots++;
    else if (*p < '0' || *p > '9')
      break;
  }
  ok (v && *p == '\0' && dots >= 1 && v[0] != '.' && p[-1] != '.',
      "the version is dotted decimal");
  is_int (nbd_supports_uri (h), 1, "nbd_supports_uri is true");
  is_int (nbd_supports_tls (h), gnutls_loaded (),
          "nbd_supports_tls is true exactly when libnbd-core is built with GnuTLS (%s)",
          gnutls_loaded () ? "it is" : "it is not");
}

static void
test_export_name (struct nbd_handle *h)
{
  char *big = malloc (4098);

  is_str_free (nbd_get_export_name (h), "", "the export name defaults to \"\"");
  is_int (nbd_set_export_name (h, "disk"), 0, "nbd_set_export_name");
  is_str_free (nbd_get_export_name (h), "disk", "nbd_get_export_name returns it");

  memset (big, 'x', 4097);
  big[4096] = '\0';
  is_int (nbd_set_export_name (h, big), 0, "an export name of 4096 bytes is accepted");
  is_str_free (nbd_get_export_name (h), big, "and stored whole");
  big[4096] = 'y';
  big[4097] = '\0';
  is_int (nbd_set_export_name (h, big), -1, "an export name of 4097 bytes is refused");
  is_errno (ENAMETOOLONG, "with ENAMETOOLONG");
  ok (error_from ("nbd_set_export_name"), "the message names nbd_set_export_name");
  big[4096] = '\0';
  is_str_free (nbd_get_export_name (h), big, "the old name is kept");
  is_int (nbd_set_export_name (h, ""), 0, "back to the empty name");
  is_str_free (nbd_get_export_name (h), "", "stored");
  free (big);
}

static void
test_bools (struct nbd_handle *h)
{
  is_int (nbd_get_debug (h), 0, "debug defaults to off (LIBNBD_DEBUG unset)");
  is_int (nbd_set_debug (h, true), 0, "nbd_set_debug (true)");
  is_int (nbd_get_debug (h), 1, "nbd_get_debug is 1");
  is_int (nbd_set_debug (h, false), 0, "nbd_set_debug (false)");
  is_int (nbd_get_debug (h), 0, "nbd_get_debug is 0");

  is_int (nbd_get_full_info (h), 0, "full info defaults to off");
  is_int (nbd_set_full_info (h, true), 0, "nbd_set_full_info (true)");
  is_int (nbd_get_full_info (h), 1, "nbd_get_full_info is 1");
  is_int (nbd_set_full_info (h, false), 0, "nbd_set_full_info (false)");
  is_int (nbd_get_full_info (h), 0, "nbd_get_full_info is 0");

  is_int (nbd_get_request_structured_replies (h), 1, "structured replies are requested by default");
  is_int (nbd_set_request_structured_replies (h, false), 0, "nbd_set_request_structured_replies (false)");
  is_int (nbd_get_request_structured_replies (h), 0, "nbd_get_request_structured_replies is 0");
  is_int (nbd_set_request_structured_replies (h, true), 0, "nbd_set_request_structured_replies (true)");
  is_int (nbd_get_request_structured_replies (h), 1, "nbd_get_request_structured_replies is 1");

  is_int (nbd_get_pread_initialize (h), 1, "pread initialize defaults to on");
  is_int (nbd_set_pread_initialize (h, false), 0, "nbd_set_pread_initialize (false)");
  is_int (nbd_get_pread_initialize (h), 0, "nbd_get_pread_initialize is 0");
  is_int (nbd_set_pread_initialize (h, true), 0, "nbd_set_pread_initialize (true)");
  is_int (nbd_get_pread_initialize (h), 1, "nbd_get_pread_initialize is 1");

  is_int (nbd_get_request_block_size (h), 1, "block size is requested by default");
  is_int (nbd_set_request_block_size (h, false), 0, "nbd_set_request_block_size (false)");
  is_int (nbd_get_request_block_size (h), 0, "nbd_get_request_block_size is 0");
  is_int (nbd_set_request_block_size (h, true), 0, "nbd_set_request_block_size (true)");
  is_int (nbd_get_request_block_size (h), 1, "nbd_get_request_block_size is 1");

  is_int (nbd_get_opt_mode (h), 0, "opt mode defaults to off");
  is_int (nbd_set_opt_mode (h, true), 0, "nbd_set_opt_mode (true)");
  is_int (nbd_get_opt_mode (h), 1, "nbd_get_opt_mode is 1");
  is_int (nbd_set_opt_mode (h, false), 0, "nbd_set_opt_mode (false)");
  is_int (nbd_get_opt_mode (h), 0, "nbd_get_opt_mode is 0");
}

static void
test_flags (struct nbd_handle *h)
{
  is_uint (nbd_get_handshake_flags (h), LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE |
           LIBNBD_HANDSHAKE_FLAG_NO_ZEROES, "handshake flags default to FIXED_NEWSTYLE|NO_ZEROES");
  is_int (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_NO_ZEROES), 0,
          "nbd_set_handshake_flags (NO_ZEROES)");
  is_uint (nbd_get_handshake_flags (h), LIBNBD_HANDSHAKE_FLAG_NO_ZEROES, "stored");
  is_int (nbd_set_handshake_flags (h, 0), 0, "nbd_set_handshake_flags (0)");
  is_uint (nbd_get_handshake_flags (h), 0, "stored");
  is_int (nbd_set_handshake_flags (h, 0x4), -1, "handshake flag 0x4 is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_set_handshake_flags"), "the message names nbd_set_handshake_flags");
  is_int (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_MASK | 0x80000000U), -1,
          "known bits plus an unknown one are refused");
  is_errno (EINVAL, "with EINVAL");
  is_uint (nbd_get_handshake_flags (h), 0, "the flags are unchanged after a refusal");
  is_int (nbd_set_handshake_flags (h, LIBNBD_HANDSHAKE_FLAG_MASK), 0, "back to the default");

  is_uint (nbd_get_strict_mode (h), LIBNBD_STRICT_MASK, "strict mode defaults to every check (0x1f)");
  is_int (nbd_set_strict_mode (h, LIBNBD_STRICT_BOUNDS | LIBNBD_STRICT_ALIGN), 0,
          "nbd_set_strict_mode (BOUNDS|ALIGN)");
  is_uint (nbd_get_strict_mode (h), LIBNBD_STRICT_BOUNDS | LIBNBD_STRICT_ALIGN, "stored");
  is_int (nbd_set_strict_mode (h, 0), 0, "nbd_set_strict_mode (0)");
  is_uint (nbd_get_strict_mode (h), 0, "stored");
  is_int (nbd_set_strict_mode (h, 0x100), -1, "strict flag 0x100 is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_set_strict_mode"), "the message names nbd_set_strict_mode");
  is_int (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK + 1), -1, "strict flag 0x20 is refused");
  is_errno (EINVAL, "with EINVAL");
  is_uint (nbd_get_strict_mode (h), 0, "strict mode unchanged after a refusal");
  is_int (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK), 0, "back to the default");
}

static void
test_meta (struct nbd_handle *h)
{
  is_int (nbd_get_nr_meta_contexts (h), 0, "no meta contexts requested at first");
  ok (nbd_get_meta_context (h, 0) == NULL, "nbd_get_meta_context (0) fails when there are none");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_get_meta_context"), "the message names nbd_get_meta_context");

  is_int (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0, "add base:allocation");
  is_int (nbd_add_meta_context (h, "qemu:dirty-bitmap:b0"), 0, "add qemu:dirty-bitmap:b0");
  is_int (nbd_get_nr_meta_contexts (h), 2, "two requested");
  is_str_free (nbd_get_meta_context (h, 0), "base:allocation", "the first in order");
  is_str_free (nbd_get_meta_context (h, 1), "qemu:dirty-bitmap:b0", "the second in order");
  ok (nbd_get_meta_context (h, 2) == NULL, "index 2 is out of range");
  is_errno (EINVAL, "with EINVAL");
  ok (nbd_get_meta_context (h, SIZE_MAX) == NULL, "index SIZE_MAX is out of range");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_clear_meta_contexts (h), 0, "nbd_clear_meta_contexts");
  is_int (nbd_get_nr_meta_contexts (h), 0, "none requested after clearing");
  ok (nbd_get_meta_context (h, 0) == NULL, "index 0 is out of range again");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_add_meta_context (h, "base:allocation"), 0, "add again after clearing");
  is_int (nbd_get_nr_meta_contexts (h), 1, "one requested");
  is_int (nbd_clear_meta_contexts (h), 0, "clear again");
}

static void
test_tls (struct nbd_handle *h)
{
  is_int (nbd_get_tls (h), LIBNBD_TLS_DISABLE, "TLS defaults to DISABLE");
  if (!nbd_supports_tls (h)) {
    is_int (nbd_set_tls (h, LIBNBD_TLS_ALLOW), -1, "no TLS: nbd_set_tls (ALLOW) fails");
    is_errno (ENOTSUP, "with ENOTSUP");
    ok (error_from ("nbd_set_tls"), "the message names nbd_set_tls");
    is_int (nbd_set_tls (h, LIBNBD_TLS_REQUIRE), -1, "no TLS: nbd_set_tls (REQUIRE) fails too");
    is_errno (ENOTSUP, "with ENOTSUP");
    is_int (nbd_get_tls (h), LIBNBD_TLS_DISABLE, "TLS is still DISABLE");
  }
  else {
    is_int (nbd_set_tls (h, LIBNBD_TLS_ALLOW), 0, "with TLS: nbd_set_tls (ALLOW)");
    is_int (nbd_get_tls (h), LIBNBD_TLS_ALLOW, "nbd_get_tls is ALLOW");
    is_int (nbd_set_tls (h, LIBNBD_TLS_REQUIRE), 0, "with TLS: nbd_set_tls (REQUIRE)");
    is_int (nbd_get_tls (h), LIBNBD_TLS_REQUIRE, "nbd_get_tls is REQUIRE");
  }
  is_int (nbd_set_tls (h, LIBNBD_TLS_DISABLE), 0, "nbd_set_tls (DISABLE) works");
  is_int (nbd_get_tls (h), LIBNBD_TLS_DISABLE, "and reads back");
  is_int (nbd_set_tls (h, 3), -1, "nbd_set_tls (3) is refused");
  is_errno (EINVAL, "with EINVAL");
  is_int (nbd_set_tls (h, -1), -1, "nbd_set_tls (-1) is refused");
  is_errno (EINVAL, "with EINVAL");

  /* Stored settings: there is no getter for the two paths. */
  is_int (nbd_set_tls_certificates (h, "/etc/pki/nbd"), 0, "nbd_set_tls_certificates stores a dir");
  is_int (nbd_set_tls_psk_file (h, "/tmp/keys.psk"), 0, "nbd_set_tls_psk_file stores a file");
  is_int (nbd_get_tls_verify_peer (h), 1, "TLS peer verification defaults to on");
  is_int (nbd_set_tls_verify_peer (h, false), 0, "nbd_set_tls_verify_peer (false)");
  is_int (nbd_get_tls_verify_peer (h), 0, "nbd_get_tls_verify_peer is 0");
  is_int (nbd_set_tls_verify_peer (h, true), 0, "nbd_set_tls_verify_peer (true)");
  is_int (nbd_get_tls_verify_peer (h), 1, "nbd_get_tls_verify_peer is 1");

  is_int (nbd_set_tls_username (h, "alice"), 0, "nbd_set_tls_username");
  is_str_free (nbd_get_tls_username (h), "alice", "nbd_get_tls_username returns it");
  is_int (nbd_set_tls_username (h, "bob"), 0, "nbd_set_tls_username again");
  is_str_free (nbd_get_tls_username (h), "bob", "the new one replaces it");
}

static void
test_tls_username_default (void)
{
  struct nbd_handle *h;

  setenv ("LOGNAME", "tester-logname", 1);
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_str_free (nbd_get_tls_username (h), "tester-logname",
               "the TLS username defaults to $LOGNAME at nbd_create");
  nbd_close (h);

  setenv ("LOGNAME", "someone-else", 1);
  h = nbd_create ();
  is_str_free (nbd_get_tls_username (h), "someone-else", "a new handle sees the new $LOGNAME");
  is_int (nbd_set_tls_username (h, "explicit"), 0, "nbd_set_tls_username overrides it");
  is_str_free (nbd_get_tls_username (h), "explicit", "the explicit name wins");
  nbd_close (h);
}

static void
test_uri_policy (struct nbd_handle *h)
{
  is_int (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_TCP), 0,
          "nbd_set_uri_allow_transports (TCP)");
  is_int (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_MASK), 0,
          "nbd_set_uri_allow_transports (all)");
  is_int (nbd_set_uri_allow_transports (h, 0), 0, "nbd_set_uri_allow_transports (none)");
  is_int (nbd_set_uri_allow_transports (h, 0x8), -1, "an unknown transport bit is refused");
  is_errno (EINVAL, "with EINVAL");
  ok (error_from ("nbd_set_uri_allow_transports"), "the message names the call");
  is_int (nbd_set_uri_allow_transports (h, LIBNBD_ALLOW_TRANSPORT_MASK), 0, "all again");

  is_int (nbd_set_uri_allow_tls (h, LIBNBD_TLS_DISABLE), 0, "nbd_set_uri_allow_tls (DISABLE)");
  is_int (nbd_set_uri_allow_tls (h, LIBNBD_TLS_REQUIRE), 0, "nbd_set_uri_allow_tls (REQUIRE)");
  is_int (nbd_set_uri_allow_tls (h, LIBNBD_TLS_ALLOW), 0, "nbd_set_uri_allow_tls (ALLOW)");
  is_int (nbd_set_uri_allow_tls (h, 7), -1, "nbd_set_uri_allow_tls (7) is refused");
  is_errno (EINVAL, "with EINVAL");

  is_int (nbd_set_uri_allow_local_file (h, true), 0, "nbd_set_uri_allow_local_file (true)");
  is_int (nbd_set_uri_allow_local_file (h, false), 0, "nbd_set_uri_allow_local_file (false)");
}

int
main (void)
{
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  unsetenv ("LIBNBD_DEBUG");

  test_create_close ();

  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  test_facts (h);
  test_export_name (h);
  test_bools (h);
  test_flags (h);
  test_meta (h);
  test_tls (h);
  test_uri_policy (h);
  ok (nbd_aio_is_created (h), "all of this left the handle newly created");
  nbd_close (h);

  test_tls_username_default ();

  return done_testing ();
}
