/* handle.c: creating and closing handles, the settings a user makes before
 * (or while) connecting, and the export facts learnt from the server.
 *
 * Owns the check-and-lock entry pattern every public call goes through.
 * Never does I/O: closing only hands pending commands to aio.c to fail.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "subprocess.h"

static _Atomic unsigned handle_counter;

/* ---- The entry pattern ------------------------------------------------ */

unsigned
nbd_internal_permitted_bit (const struct nbd_handle *h)
{
  switch (h->state) {
  case ST_CREATED: return PS_CREATED;
  case ST_CONNECTING:
  case ST_HANDSHAKE: return PS_CONNECTING;
  case ST_NEGOTIATING: return PS_NEGOTIATING;
  case ST_READY: return PS_CONNECTED;
  case ST_CLOSED: return PS_CLOSED;
  case ST_DEAD: return PS_DEAD;
  }
  return 0;
}

const char *
nbd_internal_state_name (const struct nbd_handle *h)
{
  switch (h->state) {
  case ST_CREATED: return "created";
  case ST_CONNECTING: return "connecting";
  case ST_HANDSHAKE: return "handshake";
  case ST_NEGOTIATING: return "negotiating";
  case ST_READY: return "ready";
  case ST_CLOSED: return "closed";
  case ST_DEAD: return "dead";
  }
  return "unknown";
}

static const char *
permitted_words (unsigned permitted)
{
  if (permitted == PS_CREATED) return "newly created";
  if (permitted == PS_CONNECTED) return "connected with the server";
  if (permitted == PS_NEGOTIATING) return "negotiating";
  if (permitted == (PS_CREATED | PS_NEGOTIATING)) return "newly created, or negotiating";
  if (permitted == (PS_CREATED | PS_CONNECTING | PS_CONNECTED))
    return "newly created, or connecting, or connected with the server";
  if (permitted == (PS_NEGOTIATING | PS_CONNECTED | PS_CLOSED))
    return "negotiating, or connected with the server, or shut down";
  if (permitted == (PS_CONNECTED | PS_CLOSED | PS_DEAD))
    return "connected with the server, or shut down, or dead";
  if (permitted == (PS_CONNECTING | PS_NEGOTIATING | PS_CONNECTED | PS_CLOSED | PS_DEAD))
    return "connecting, negotiating, connected with the server, shut down, or dead";
  return "in another state";
}

bool
nbd_internal_enter_args (struct nbd_handle *h, const char *name, unsigned permitted,
                         const struct nonnull_arg *args, size_t n)
{
  unsigned bit;

  nbd_internal_set_context (name);
  pthread_mutex_lock (&h->lock);
  bit = nbd_internal_permitted_bit (h);
  if (!(bit & permitted)) {
    /* As libnbd: a handle that never connected is ENOTCONN; any other
     * mismatch (including a dead or closed handle) is EINVAL. */
    int err = h->state == ST_CREATED ? ENOTCONN : EINVAL;
    set_error (err, "invalid state: %s: the handle must be %s", nbd_internal_state_name (h),
               permitted_words (permitted));
    pthread_mutex_unlock (&h->lock);
    return false;
  }
  for (size_t i = 0; i < n; i++)
    if (args[i].p == NULL) {
      set_error (EFAULT, "%s cannot be NULL", args[i].name);
      pthread_mutex_unlock (&h->lock);
      return false;
    }
  if (__builtin_expect (h->nr_pinned != 0, 0))
    nbd_internal_unpin (h);
  debug (h, "enter: %s", name);
  return true;
}

bool
nbd_internal_enter (struct nbd_handle *h, const char *name, unsigned permitted)
{
  return nbd_internal_enter_args (h, name, permitted, NULL, 0);
}

int
nbd_internal_public_state (const struct nbd_handle *h)
{
  switch (h->state) {
  case ST_CREATED: return PUB_CREATED;
  case ST_CONNECTING:
  case ST_HANDSHAKE: return PUB_CONNECTING;
  case ST_NEGOTIATING: return PUB_NEGOTIATING;
  case ST_READY:
    return h->to_issue || h->rhdr_len || h->rstate ? PUB_PROCESSING : PUB_READY;
  case ST_DEAD: return PUB_DEAD;
  case ST_CLOSED: return PUB_CLOSED;
  }
  return PUB_DEAD;
}

void
nbd_internal_leave (struct nbd_handle *h)
{
  atomic_store (&h->public_state, nbd_internal_public_state (h));
  atomic_store (&h->public_dir, nbd_internal_direction (h));
  debug (h, "leave: %s", nbd_internal_get_context ());
  pthread_mutex_unlock (&h->lock);
}

/* ---- Small containers ------------------------------------------------- */

int
nbd_internal_strvec_append (struct string_vector *v, const char *s)
{
  char *copy;

  if (v->len == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 4;
    char **nv = realloc (v->v, cap * sizeof *nv);
    if (!nv)
      return -1;
    v->v = nv;
    v->cap = cap;
  }
  copy = strdup (s);
  if (!copy)
    return -1;
  v->v[v->len++] = copy;
  return 0;
}

void
nbd_internal_strvec_clear (struct string_vector *v)
{
  for (size_t i = 0; i < v->len; i++)
    free (v->v[i]);
  free (v->v);
  v->v = NULL;
  v->len = v->cap = 0;
}

void
nbd_internal_free_meta (struct nbd_handle *h)
{
  for (size_t i = 0; i < h->nr_meta; i++)
    free (h->meta[i].name);
  free (h->meta);
  h->meta = NULL;
  h->nr_meta = 0;
  h->meta_valid = false;
}

void
nbd_internal_reset_export_facts (struct nbd_handle *h)
{
  h->have_export = false;
  h->exportsize = 0;
  h->eflags = 0;
  free (h->canonical_name);
  h->canonical_name = NULL;
  free (h->description);
  h->description = NULL;
  h->block_min = h->block_pref = h->block_max = 0;
}

/* ---- Create and close ------------------------------------------------- */

EXPORT struct nbd_handle *
nbd_create (void)
{
  struct nbd_handle *h;
  const char *s;

  nbd_internal_set_context ("nbd_create");
  h = calloc (1, sizeof *h);
  if (!h) {
    set_error (errno, "calloc");
    return NULL;
  }
  h->rbuf = malloc (RBUF_SIZE);
  h->opt_payload = malloc (NBD_MAX_OPTION_REPLY + 1);
  if (!h->rbuf || !h->opt_payload ||
      asprintf (&h->hname, "nbd%u", atomic_fetch_add (&handle_counter, 1) + 1) < 0) {
    set_error (ENOMEM, "allocating a handle");
    free (h->rbuf);
    free (h->opt_payload);
    free (h);
    return NULL;
  }
  h->export_name = strdup ("");
  s = getenv ("LOGNAME");
  h->tls_username = s ? strdup (s) : NULL;
  if (!h->export_name) {
    set_error (ENOMEM, "strdup");
    free (h->rbuf);
    free (h->opt_payload);
    free (h->hname);
    free (h->tls_username);
    free (h);
    return NULL;
  }
  pthread_mutex_init (&h->lock, NULL);
  nbd_internal_set_fd (h, -1);
  h->zc_wake = -1;
  atomic_store (&h->wr_raw_end, UINT64_MAX);
  h->pid = -1;
  h->unique = 1;
  h->tls_verify_peer = true;
  h->request_sr = true;
  h->request_block_size = true;
  h->pread_initialize = true;
  h->handshake_flags = LIBNBD_HANDSHAKE_FLAG_MASK;
  h->strict = LIBNBD_STRICT_MASK;
  h->uri_allow_transports = LIBNBD_ALLOW_TRANSPORT_MASK;
  h->uri_allow_tls = LIBNBD_TLS_ALLOW;
  h->protocol = NULL;
  s = getenv ("LIBNBD_DEBUG");
  h->debug = s && strcmp (s, "1") == 0;
  atomic_store (&h->public_state, PUB_CREATED);
  debug (h, "opening handle, libnbd-core %s", PACKAGE_VERSION);
  return h;
}

EXPORT void
nbd_close (struct nbd_handle *h)
{
  if (!h)
    return;
  nbd_internal_set_context ("nbd_close");
  pthread_mutex_lock (&h->lock);
  debug (h, "closing handle");
  /* libnbd 1.18's rule: every command not yet completed gets its
   * completion callback, with ENOTCONN, before anything is freed. */
  h->closing = true;
  nbd_internal_abort_commands (h, ENOTCONN);
  nbd_internal_unpin (h);
  if (h->opt.kind != OPTK_NONE)
    nbd_internal_opt_complete (h, ENOTCONN, "handle closed");
  nbd_internal_free_commands (h);
  FREE_CALLBACK (h->debug_cb);
  nbd_internal_tls_free (h);
  if (h->fd >= 0)
    close (h->fd);
  if (h->zc_wake >= 0)
    close (h->zc_wake);
  if (h->tcp_all)
    freeaddrinfo (h->tcp_all);
  if (h->pid > 0) {
    if (h->sa_tmpdir)
      kill (h->pid, SIGTERM);
    while (waitpid (h->pid, NULL, 0) == -1 && errno == EINTR)
      ;
  }
  nbd_internal_remove_socket_dir (h->sa_tmpdir, h->sa_sockpath);
  free (h->sa_tmpdir);
  free (h->sa_sockpath);
  nbd_internal_reset_export_facts (h);
  nbd_internal_free_meta (h);
  nbd_internal_strvec_clear (&h->request_meta);
  free (h->hname);
  free (h->export_name);
  free (h->tls_certificates);
  free (h->tls_username);
  free (h->tls_psk_file);
  free (h->tls_hostname);
  free (h->uri);
  free (h->hs_out);
  free (h->opt_payload);
  free (h->opt.errmsg);
  free (h->rbuf);
  free (h->chunk_buf);
  pthread_mutex_unlock (&h->lock);
  pthread_mutex_destroy (&h->lock);
  free (h);
}

/* ---- Names, private data, debug --------------------------------------- */

static char *
dup_or_error (const char *s)
{
  char *r = strdup (s ? s : "");

  if (!r)
    set_error (errno, "strdup");
  return r;
}

EXPORT int
nbd_set_handle_name (struct nbd_handle *h, const char *handle_name)
{
  char *copy;

  ENTER_ARGS (h, "nbd_set_handle_name", PS_ANY, -1, NONNULL (handle_name));
  copy = dup_or_error (handle_name);
  if (copy) {
    free (h->hname);
    h->hname = copy;
  }
  LEAVE (h);
  return copy ? 0 : -1;
}

EXPORT char *
nbd_get_handle_name (struct nbd_handle *h)
{
  char *r;

  ENTER (h, "nbd_get_handle_name", PS_ANY, NULL);
  r = dup_or_error (h->hname);
  LEAVE (h);
  return r;
}

EXPORT uintptr_t
nbd_set_private_data (struct nbd_handle *h, uintptr_t data)
{
  ENTER_NOLOCK ("nbd_set_private_data");
  return atomic_exchange (&h->private_data, data);
}

EXPORT uintptr_t
nbd_get_private_data (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_get_private_data");
  return atomic_load (&h->private_data);
}

EXPORT int
nbd_set_debug (struct nbd_handle *h, bool debug)
{
  ENTER (h, "nbd_set_debug", PS_ANY, -1);
  h->debug = debug;
  LEAVE (h);
  return 0;
}

EXPORT int
nbd_get_debug (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_get_debug", PS_ANY, -1);
  r = h->debug;
  LEAVE (h);
  return r;
}

EXPORT int
nbd_set_debug_callback (struct nbd_handle *h, nbd_debug_callback cb)
{
  if (!nbd_internal_enter (h, "nbd_set_debug_callback", PS_ANY)) {
    FREE_CALLBACK (cb);
    return -1;
  }
  if (!cb.callback && !cb.free) {
    set_error (EFAULT, "debug cannot be NULL");   /* as libnbd */
    LEAVE (h);
    return -1;
  }
  FREE_CALLBACK (h->debug_cb);
  h->debug_cb = cb;
  LEAVE (h);
  return 0;
}

EXPORT int
nbd_clear_debug_callback (struct nbd_handle *h)
{
  ENTER (h, "nbd_clear_debug_callback", PS_ANY, -1);
  FREE_CALLBACK (h->debug_cb);
  LEAVE (h);
  return 0;
}

/* ---- Settings --------------------------------------------------------- */

EXPORT int
nbd_set_export_name (struct nbd_handle *h, const char *export_name)
{
  char *copy = NULL;

  ENTER_ARGS (h, "nbd_set_export_name", PS_CREATED | PS_NEGOTIATING, -1, NONNULL (export_name));
  if (strlen (export_name) > NBD_MAX_STRING)
    set_error (ENAMETOOLONG, "export name too long for NBD protocol");
  else if ((copy = dup_or_error (export_name)) != NULL) {
    free (h->export_name);
    h->export_name = copy;
    /* Contexts negotiated for another export no longer apply. */
    nbd_internal_free_meta (h);
  }
  LEAVE (h);
  return copy ? 0 : -1;
}

EXPORT char *
nbd_get_export_name (struct nbd_handle *h)
{
  char *r;

  ENTER (h, "nbd_get_export_name", PS_ANY, NULL);
  r = dup_or_error (h->export_name);
  LEAVE (h);
  return r;
}

/* The boolean settings share one shape: a setter allowed in some states and
 * a getter allowed in all. */
#define BOOL_SETTING(field, setname, getname, permitted)         \
  EXPORT int setname (struct nbd_handle *h, bool v)              \
  {                                                              \
    ENTER (h, #setname, (permitted), -1);                        \
    h->field = v;                                                \
    LEAVE (h);                                                   \
    return 0;                                                    \
  }                                                              \
  EXPORT int getname (struct nbd_handle *h)                      \
  {                                                              \
    int r;                                                       \
    ENTER (h, #getname, PS_ANY, -1);                             \
    r = h->field;                                                \
    LEAVE (h);                                                   \
    return r;                                                    \
  }

BOOL_SETTING (request_block_size, nbd_set_request_block_size, nbd_get_request_block_size,
              PS_CREATED | PS_NEGOTIATING)
BOOL_SETTING (full_info, nbd_set_full_info, nbd_get_full_info, PS_CREATED | PS_NEGOTIATING)
BOOL_SETTING (request_sr, nbd_set_request_structured_replies,
              nbd_get_request_structured_replies, PS_CREATED)
BOOL_SETTING (pread_initialize, nbd_set_pread_initialize, nbd_get_pread_initialize, PS_ANY)
BOOL_SETTING (opt_mode, nbd_set_opt_mode, nbd_get_opt_mode, PS_CREATED)
BOOL_SETTING (tls_verify_peer, nbd_set_tls_verify_peer, nbd_get_tls_verify_peer, PS_CREATED)

/* The flag-mask settings: a setter refusing unknown bits, and a getter. */
static int
set_flags (struct nbd_handle *h, const char *name, unsigned permitted, uint32_t *field,
           uint32_t flags, uint32_t mask)
{
  int r = 0;

  ENTER (h, name, permitted, -1);
  if (flags & ~mask) {
    set_error (EINVAL, "flags: invalid value for flag: 0x%" PRIx32, flags & ~mask);
    r = -1;
  }
  else
    *field = flags;
  LEAVE (h);
  return r;
}

EXPORT int
nbd_set_handshake_flags (struct nbd_handle *h, uint32_t flags)
{
  return set_flags (h, "nbd_set_handshake_flags", PS_CREATED, &h->handshake_flags, flags,
                    LIBNBD_HANDSHAKE_FLAG_MASK);
}

EXPORT uint32_t
nbd_get_handshake_flags (struct nbd_handle *h)
{
  uint32_t r;

  ENTER (h, "nbd_get_handshake_flags", PS_ANY, 0);
  /* As libnbd: once the server's flags are in, what both sides agreed. */
  r = h->protocol ? h->gflags : h->handshake_flags;
  LEAVE (h);
  return r;
}

EXPORT int
nbd_set_strict_mode (struct nbd_handle *h, uint32_t flags)
{
  return set_flags (h, "nbd_set_strict_mode", PS_ANY, &h->strict, flags, LIBNBD_STRICT_MASK);
}

EXPORT uint32_t
nbd_get_strict_mode (struct nbd_handle *h)
{
  uint32_t r;

  ENTER (h, "nbd_get_strict_mode", PS_ANY, 0);
  r = h->strict;
  LEAVE (h);
  return r;
}

/* ---- TLS settings (the TLS itself is another issue's) ----------------- */

EXPORT int
nbd_supports_tls (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_supports_tls");
  return HAVE_GNUTLS && NBD_CORE_TLS_READY;
}

EXPORT int
nbd_supports_uri (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_supports_uri");
  return 1;
}

EXPORT int
nbd_set_tls (struct nbd_handle *h, int tls)
{
  int r = -1;

  ENTER (h, "nbd_set_tls", PS_CREATED, -1);
  if (tls < LIBNBD_TLS_DISABLE || tls > LIBNBD_TLS_REQUIRE)
    set_error (EINVAL, "invalid TLS setting %d", tls);
  else if (tls != LIBNBD_TLS_DISABLE && !(HAVE_GNUTLS && NBD_CORE_TLS_READY))
    set_error (ENOTSUP, "libnbd-core was built without TLS support");
  else {
    h->tls = tls;
    r = 0;
  }
  LEAVE (h);
  return r;
}

EXPORT int
nbd_get_tls (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_get_tls", PS_ANY, -1);
  r = h->tls;
  LEAVE (h);
  return r;
}

static int
set_string (struct nbd_handle *h, const char *name, char **field, struct nonnull_arg value)
{
  char *copy;

  ENTER_ARGS (h, name, PS_CREATED, -1, value);
  copy = dup_or_error (value.p);
  if (copy) {
    free (*field);
    *field = copy;
  }
  LEAVE (h);
  return copy ? 0 : -1;
}

EXPORT int
nbd_set_tls_certificates (struct nbd_handle *h, const char *dir)
{
  return set_string (h, "nbd_set_tls_certificates", &h->tls_certificates, NONNULL (dir));
}

EXPORT int
nbd_set_tls_username (struct nbd_handle *h, const char *username)
{
  return set_string (h, "nbd_set_tls_username", &h->tls_username, NONNULL (username));
}

EXPORT int
nbd_set_tls_psk_file (struct nbd_handle *h, const char *filename)
{
  return set_string (h, "nbd_set_tls_psk_file", &h->tls_psk_file, NONNULL (filename));
}

EXPORT char *
nbd_get_tls_username (struct nbd_handle *h)
{
  char *r = NULL;

  ENTER (h, "nbd_get_tls_username", PS_ANY, NULL);
  if (h->tls_username)
    r = dup_or_error (h->tls_username);
  else
    set_error (EINVAL, "no TLS username: $LOGNAME is not set and none was given");
  LEAVE (h);
  return r;
}

EXPORT int
nbd_get_tls_negotiated (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_get_tls_negotiated", PS_NEGOTIATING | PS_CONNECTED | PS_CLOSED, -1);
  r = h->tls_negotiated;
  LEAVE (h);
  return r;
}

/* ---- URI policy ------------------------------------------------------- */

EXPORT int
nbd_set_uri_allow_transports (struct nbd_handle *h, uint32_t mask)
{
  int r = 0;

  ENTER (h, "nbd_set_uri_allow_transports", PS_CREATED, -1);
  if (mask & ~LIBNBD_ALLOW_TRANSPORT_MASK) {
    set_error (EINVAL, "transport mask 0x%" PRIx32 " includes unknown bits", mask);
    r = -1;
  }
  else
    h->uri_allow_transports = mask;
  LEAVE (h);
  return r;
}

EXPORT int
nbd_set_uri_allow_tls (struct nbd_handle *h, int tls)
{
  int r = 0;

  ENTER (h, "nbd_set_uri_allow_tls", PS_CREATED, -1);
  if (tls < LIBNBD_TLS_DISABLE || tls > LIBNBD_TLS_REQUIRE) {
    set_error (EINVAL, "invalid TLS setting %d", tls);
    r = -1;
  }
  else
    h->uri_allow_tls = tls;
  LEAVE (h);
  return r;
}

EXPORT int
nbd_set_uri_allow_local_file (struct nbd_handle *h, bool allow)
{
  ENTER (h, "nbd_set_uri_allow_local_file", PS_CREATED, -1);
  h->uri_allow_local_file = allow;
  LEAVE (h);
  return 0;
}

/* ---- Meta contexts ---------------------------------------------------- */

EXPORT int
nbd_add_meta_context (struct nbd_handle *h, const char *name)
{
  int r = -1;

  ENTER_ARGS (h, "nbd_add_meta_context", PS_CREATED | PS_NEGOTIATING, -1, NONNULL (name));
  if (strlen (name) > NBD_MAX_STRING)
    set_error (ENAMETOOLONG, "meta context name too long for NBD protocol");
  else if (nbd_internal_strvec_append (&h->request_meta, name) == -1)
    set_error (ENOMEM, "adding a meta context");
  else
    r = 0;
  LEAVE (h);
  return r;
}

EXPORT ssize_t
nbd_get_nr_meta_contexts (struct nbd_handle *h)
{
  ssize_t r;

  ENTER (h, "nbd_get_nr_meta_contexts", PS_ANY, -1);
  r = h->request_meta.len;
  LEAVE (h);
  return r;
}

EXPORT char *
nbd_get_meta_context (struct nbd_handle *h, size_t i)
{
  char *r = NULL;

  ENTER (h, "nbd_get_meta_context", PS_ANY, NULL);
  if (i >= h->request_meta.len)
    set_error (EINVAL, "meta context request %zu out of range (%zu requested)", i,
               h->request_meta.len);
  else
    r = dup_or_error (h->request_meta.v[i]);
  LEAVE (h);
  return r;
}

EXPORT int
nbd_clear_meta_contexts (struct nbd_handle *h)
{
  ENTER (h, "nbd_clear_meta_contexts", PS_CREATED | PS_NEGOTIATING, -1);
  nbd_internal_strvec_clear (&h->request_meta);
  LEAVE (h);
  return 0;
}

/* ---- Export facts ----------------------------------------------------- */

#define FACT_STATES (PS_NEGOTIATING | PS_CONNECTED | PS_CLOSED)

/* Facts exist once the server described an export (GO, INFO or the older
 * EXPORT_NAME); in opt mode before that there are none. */
static bool
have_export (struct nbd_handle *h)
{
  if (!h->have_export) {
    set_error (EINVAL, "no export information yet: use nbd_opt_info or nbd_opt_go first");
    return false;
  }
  return true;
}

static int
flag_fact (struct nbd_handle *h, const char *name, uint16_t flag)
{
  int r = -1;

  ENTER (h, name, FACT_STATES, -1);
  if (have_export (h))
    r = (h->eflags & flag) != 0;
  LEAVE (h);
  return r;
}

EXPORT int nbd_is_read_only (struct nbd_handle *h)
{ return flag_fact (h, "nbd_is_read_only", NBD_FLAG_READ_ONLY); }
EXPORT int nbd_can_flush (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_flush", NBD_FLAG_SEND_FLUSH); }
EXPORT int nbd_can_fua (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_fua", NBD_FLAG_SEND_FUA); }
EXPORT int nbd_is_rotational (struct nbd_handle *h)
{ return flag_fact (h, "nbd_is_rotational", NBD_FLAG_ROTATIONAL); }
EXPORT int nbd_can_trim (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_trim", NBD_FLAG_SEND_TRIM); }
EXPORT int nbd_can_zero (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_zero", NBD_FLAG_SEND_WRITE_ZEROES); }
EXPORT int nbd_can_fast_zero (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_fast_zero", NBD_FLAG_SEND_FAST_ZERO); }
EXPORT int nbd_can_df (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_df", NBD_FLAG_SEND_DF); }
EXPORT int nbd_can_multi_conn (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_multi_conn", NBD_FLAG_CAN_MULTI_CONN); }
EXPORT int nbd_can_cache (struct nbd_handle *h)
{ return flag_fact (h, "nbd_can_cache", NBD_FLAG_SEND_CACHE); }

EXPORT int
nbd_can_meta_context (struct nbd_handle *h, const char *metacontext)
{
  int r = -1;

  ENTER_ARGS (h, "nbd_can_meta_context", FACT_STATES, -1, NONNULL (metacontext));
  if (!h->meta_valid && !h->have_export)
    set_error (EINVAL, "no export information yet: use nbd_opt_info or nbd_opt_go first");
  else {
    r = 0;
    for (size_t i = 0; i < h->nr_meta; i++)
      if (strcmp (h->meta[i].name, metacontext) == 0)
        r = 1;
  }
  LEAVE (h);
  return r;
}

EXPORT const char *
nbd_get_protocol (struct nbd_handle *h)
{
  const char *r;

  ENTER (h, "nbd_get_protocol", FACT_STATES, NULL);
  r = h->protocol;
  if (!r)
    set_error (EINVAL, "the protocol is not known yet");
  LEAVE (h);
  return r;
}

EXPORT int64_t
nbd_get_size (struct nbd_handle *h)
{
  int64_t r = -1;

  ENTER (h, "nbd_get_size", FACT_STATES, -1);
  if (have_export (h)) {
    if (h->exportsize > INT64_MAX)
      set_error (EOVERFLOW, "server export size %" PRIu64 " is larger than INT64_MAX",
                 h->exportsize);
    else
      r = h->exportsize;
  }
  LEAVE (h);
  return r;
}

EXPORT int64_t
nbd_get_block_size (struct nbd_handle *h, int size_type)
{
  int64_t r = -1;

  ENTER (h, "nbd_get_block_size", FACT_STATES, -1);
  if (have_export (h)) {
    switch (size_type) {
    case LIBNBD_SIZE_MINIMUM: r = h->block_min; break;
    case LIBNBD_SIZE_PREFERRED: r = h->block_pref; break;
    case LIBNBD_SIZE_MAXIMUM: r = h->block_max; break;
    default: set_error (EINVAL, "unknown size type %d", size_type);
    }
  }
  LEAVE (h);
  return r;
}

static char *
string_fact (struct nbd_handle *h, const char *name, const char *const *field, const char *what)
{
  char *r = NULL;

  ENTER (h, name, FACT_STATES, NULL);
  if (*field)
    r = dup_or_error (*field);
  else
    set_error (ENOTSUP, "the server did not send the %s", what);
  LEAVE (h);
  return r;
}

EXPORT char *
nbd_get_canonical_export_name (struct nbd_handle *h)
{
  return string_fact (h, "nbd_get_canonical_export_name",
                      (const char *const *) &h->canonical_name, "canonical export name");
}

EXPORT char *
nbd_get_export_description (struct nbd_handle *h)
{
  return string_fact (h, "nbd_get_export_description",
                      (const char *const *) &h->description, "export description");
}

EXPORT int
nbd_get_structured_replies_negotiated (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_get_structured_replies_negotiated", FACT_STATES, -1);
  r = h->sr;
  LEAVE (h);
  return r;
}

/* ---- Library facts ---------------------------------------------------- */

EXPORT const char *
nbd_get_package_name (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_get_package_name");
  return PACKAGE_NAME;
}

EXPORT const char *
nbd_get_version (struct nbd_handle *h)
{
  ENTER_NOLOCK ("nbd_get_version");
  return PACKAGE_VERSION;
}

EXPORT int
nbd_kill_subprocess (struct nbd_handle *h, int signum)
{
  int r = -1;

  ENTER (h, "nbd_kill_subprocess", PS_ANY, -1);
  if (h->pid <= 0)
    set_error (ESRCH, "no subprocess to kill");
  else if (signum < 0 || signum >= NSIG)
    set_error (EINVAL, "invalid signal number %d", signum);
  else if (kill (h->pid, signum ? signum : SIGTERM) == -1)
    set_error (errno, "kill");
  else
    r = 0;
  LEAVE (h);
  return r;
}

EXPORT const char *
nbd_connection_state (struct nbd_handle *h)
{
  const char *r;

  ENTER (h, "nbd_connection_state", PS_ANY, NULL);
  r = nbd_internal_state_name (h);
  LEAVE (h);
  return r;
}
