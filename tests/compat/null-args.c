/* null-args: every pointer argument of every call, passed NULL.
 *
 * As libnbd: the call fails (-1) with EFAULT and "nbd_<call>: <param>
 * cannot be NULL", but only once the handle's state permits the call; in a
 * state it does not, the state error (ENOTCONN on a new handle, else
 * EINVAL) comes first.  Each call is tried on a new handle, a negotiating
 * one and a connected one, and must leave the handle unlocked (a locked
 * call follows it).  Read buffers are walked with pread_initialize off:
 * libnbd 1.14 zeroes the buffer before any check when it is on, and
 * crashes; libnbd-core walks them once more with it on.
 *
 * The table cannot fall behind the header: the program reads the header it
 * was compiled against (COMPAT_LIBNBD_H, from meson) and checks that each
 * pointer parameter there (but the handle and the writer's user data) has
 * exactly one entry here, under the same name, and each entry one parameter
 * there; so a call added to the header without an entry fails this test.
 * Built against libnbd-core and the system libnbd; both must pass.
 */
/* Passing NULL on purpose: the header's nonnull attributes would make the
 * compiler refuse these calls. */
#define LIBNBD_ATTRIBUTE_NONNULL(...)

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

/* The states a call is tried in. */
#define CR 1                    /* newly created */
#define NE 2                    /* negotiating (opt mode) */
#define RE 4                    /* connected, ready */
#define ALL_STATES (CR | NE | RE)

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  return 0;
}

#define CHUNK ((nbd_chunk_callback) { .callback = chunk_cb })

/* X (call, parameter index from 1, parameter name, states that permit the
 * call, the call's arguments with NULL for that parameter). */
#define ENTRIES(X)                                                                        \
  X (nbd_set_handle_name, 2, handle_name, ALL_STATES, (h, NULL))                          \
  X (nbd_set_export_name, 2, export_name, CR | NE, (h, NULL))                             \
  X (nbd_set_tls_certificates, 2, dir, CR, (h, NULL))                                     \
  X (nbd_set_tls_username, 2, username, CR, (h, NULL))                                    \
  X (nbd_set_tls_psk_file, 2, filename, CR, (h, NULL))                                    \
  X (nbd_add_meta_context, 2, name, CR | NE, (h, NULL))                                   \
  X (nbd_can_meta_context, 2, metacontext, NE | RE, (h, NULL))                            \
  X (nbd_connect_uri, 2, uri, CR, (h, NULL))                                              \
  X (nbd_connect_unix, 2, unixsocket, CR, (h, NULL))                                      \
  X (nbd_connect_tcp, 2, hostname, CR, (h, NULL, "10809"))                                \
  X (nbd_connect_tcp, 3, port, CR, (h, "127.0.0.1", NULL))                                \
  X (nbd_connect_command, 2, argv, CR, (h, NULL))                                         \
  X (nbd_connect_systemd_socket_activation, 2, argv, CR, (h, NULL))                       \
  X (nbd_aio_connect, 2, addr, CR, (h, NULL, sizeof (struct sockaddr_un)))                \
  X (nbd_aio_connect_uri, 2, uri, CR, (h, NULL))                                          \
  X (nbd_aio_connect_unix, 2, unixsocket, CR, (h, NULL))                                  \
  X (nbd_aio_connect_tcp, 2, hostname, CR, (h, NULL, "10809"))                            \
  X (nbd_aio_connect_tcp, 3, port, CR, (h, "127.0.0.1", NULL))                            \
  X (nbd_aio_connect_command, 2, argv, CR, (h, NULL))                                     \
  X (nbd_aio_connect_systemd_socket_activation, 2, argv, CR, (h, NULL))                   \
  X (nbd_pread, 2, buf, RE, (h, NULL, 512, 0, 0))                                         \
  X (nbd_pread_structured, 2, buf, RE, (h, NULL, 512, 0, CHUNK, 0))                       \
  X (nbd_pwrite, 2, buf, RE, (h, NULL, 512, 0, 0))                                        \
  X (nbd_aio_pread, 2, buf, RE, (h, NULL, 512, 0, NBD_NULL_COMPLETION, 0))                \
  X (nbd_aio_pread_structured, 2, buf, RE,                                                \
     (h, NULL, 512, 0, CHUNK, NBD_NULL_COMPLETION, 0))                                    \
  X (nbd_aio_pwrite, 2, buf, RE, (h, NULL, 512, 0, NBD_NULL_COMPLETION, 0))

/* The concurrent writer is libnbd-core's own (allowed while connecting or
 * connected, not while negotiating). */
#ifdef LIBNBD_CORE
#define CORE_ENTRIES(X)                                                                   \
  X (nbd_set_concurrent_writer, 3, writer, CR | RE, (h, NULL, NULL))                      \
  X (nbd_set_concurrent_writer_zero_copy, 3, writer, CR | RE, (h, NULL, NULL))
#else
#define CORE_ENTRIES(X)
#endif

/* Pointer parameters that may be NULL: user data handed back to the
 * caller's own callback; the writer's send, where iov NULL (iovcnt 0) is
 * the end-of-stream mark (tls-writer-encrypt tests iov NULL with iovcnt
 * 1: EFAULT). */
static const struct {
  const char *call;
  int index;
} nullable[] = {
  { "nbd_set_concurrent_writer", 2 },
  { "nbd_set_concurrent_writer_zero_copy", 2 },
  { "nbd_concurrent_writer_send", 2 },
};

#define THUNK(fn, idx, pname, states, args)                              \
  static int64_t fn##_##idx (struct nbd_handle *h) { return fn args; }
ENTRIES (THUNK)
CORE_ENTRIES (THUNK)

struct entry {
  const char *call;
  int index;
  const char *param;
  unsigned states;
  int64_t (*run) (struct nbd_handle *h);
  bool in_header;
};

#define ROW(fn, idx, pname, states, args) { #fn, idx, #pname, states, fn##_##idx },
static struct entry entries[] = { ENTRIES (ROW) CORE_ENTRIES (ROW) };
#define NR_ENTRIES (sizeof entries / sizeof entries[0])

/* ---- The header's pointer parameters ---------------------------------- */

static char *
read_header (const char *path)
{
  FILE *f = fopen (path, "r");
  char *text = NULL;
  size_t len = 0;

  if (!f)
    bail_out ("%s: %s", path, strerror (errno));
  if (getdelim (&text, &len, '\0', f) == -1)
    bail_out ("reading %s: %s", path, strerror (errno));
  fclose (f);

  /* Comments out: the writer's manual page quotes its declarations. */
  for (char *p = text; (p = strstr (p, "/*")) != NULL;) {
    char *end = strstr (p + 2, "*/");
    if (!end)
      bail_out ("%s: unterminated comment", path);
    memset (p, ' ', end + 2 - p);
  }
  return text;
}

/* The names of function pointer typedefs ("typedef void (*name) (...)"):
 * parameters of those types are pointers too. */
static bool
is_fn_pointer_type (const char *text, const char *type, size_t len)
{
  for (const char *p = text; (p = strstr (p, "(*")) != NULL; p += 2) {
    const char *q = p + 2;
    while (*q == ' ')
      q++;
    if (strncmp (q, type, len) == 0 && !isalnum ((unsigned char) q[len]) && q[len] != '_') {
      const char *stmt = p;
      while (stmt > text && stmt[-1] != ';' && stmt[-1] != '}' && stmt[-1] != '\n')
        stmt--;
      while (*stmt == ' ')
        stmt++;
      if (strncmp (stmt, "typedef", 7) == 0)
        return true;
    }
  }
  return false;
}

static struct entry *
find_entry (const char *call, int index)
{
  for (size_t i = 0; i < NR_ENTRIES; i++)
    if (strcmp (entries[i].call, call) == 0 && entries[i].index == index)
      return &entries[i];
  return NULL;
}

static bool
is_nullable (const char *call, int index)
{
  for (size_t i = 0; i < sizeof nullable / sizeof nullable[0]; i++)
    if (strcmp (nullable[i].call, call) == 0 && nullable[i].index == index)
      return true;
  return false;
}

/* One parameter: "const char *name", "nbd_writer_cb writer", "void".
 * Returns whether it is a pointer, and its name. */
static bool
param_is_pointer (const char *text, const char *param, char *name, size_t name_size)
{
  const char *end = param + strlen (param), *start, *type;
  size_t type_len;

  while (end > param && isspace ((unsigned char) end[-1]))
    end--;
  start = end;
  while (start > param && (isalnum ((unsigned char) start[-1]) || start[-1] == '_'))
    start--;
  snprintf (name, name_size, "%.*s", (int) (end - start), start);
  if (memchr (param, '*', end - param))
    return true;
  type = param;
  while (isspace ((unsigned char) *type))
    type++;
  if (strncmp (type, "const ", 6) == 0)
    type += 6;
  type_len = strcspn (type, " \t\n");
  return is_fn_pointer_type (text, type, type_len);
}

/* Every "extern ... nbd_<call> (params) attributes;" of the header. */
static void
check_header (const char *path)
{
  char *text = read_header (path);
  char *pristine = strdup (text); /* for typedefs: the loop cuts text up */
  unsigned calls = 0, pointers = 0, missing = 0, nonnull_bad = 0;

  if (!pristine)
    bail_out ("strdup");

  for (char *p = text; (p = strstr (p, "extern ")) != NULL;) {
    char *semi = strchr (p, ';'), *open = p, *close, *attr;
    char call[128], *params, *save = NULL;
    int index = 0, depth = 0;
    unsigned long nonnull = 0;  /* bit i: parameter i is in LIBNBD_ATTRIBUTE_NONNULL */

    if (!semi)
      break;
    if (p[7] == '"') {          /* extern "C" { */
      p += 7;
      continue;
    }
    *semi = '\0';
    /* The call's name: the identifier "nbd_..." right before a '('. */
    while ((open = strchr (open, '(')) != NULL) {
      char *q = open;
      while (q > p && q[-1] == ' ')
        q--;
      char *id = q;
      while (id > p && (isalnum ((unsigned char) id[-1]) || id[-1] == '_'))
        id--;
      if (q - id > 4 && strncmp (id, "nbd_", 4) == 0) {
        snprintf (call, sizeof call, "%.*s", (int) (q - id), id);
        break;
      }
      open++;
    }
    if (!open) {
      p = semi + 1;
      continue;
    }
    for (close = open; *close; close++) {
      if (*close == '(')
        depth++;
      else if (*close == ')' && --depth == 0)
        break;
    }
    if (!*close)
      bail_out ("%s: %s: unbalanced parentheses", path, call);
    *close = '\0';
    attr = strstr (close + 1, "LIBNBD_ATTRIBUTE_NONNULL");
    if (attr && (attr = strchr (attr, '(')) != NULL)
      for (char *q = attr + 1; *q && *q != ')'; q++)
        if (isdigit ((unsigned char) *q)) {
          nonnull |= 1UL << strtoul (q, &q, 10);
          q--;
        }
    calls++;

    params = open + 1;
    for (char *param = strtok_r (params, ",", &save); param; param = strtok_r (NULL, ",", &save)) {
      char name[64];
      struct entry *e;

      index++;
      if (index == 1 || !param_is_pointer (pristine, param, name, sizeof name))
        continue;
      pointers++;
      e = find_entry (call, index);
      if (is_nullable (call, index)) {
        if (e) {
          missing++;
          diag ("%s parameter %d (%s) may be NULL, but the table has it", call, index, name);
        }
        continue;
      }
      if (!e) {
        missing++;
        diag ("%s parameter %d (%s) is a pointer with no NULL entry here", call, index, name);
        continue;
      }
      e->in_header = true;
      if (strcmp (e->param, name) != 0) {
        missing++;
        diag ("%s parameter %d is \"%s\" in the header, \"%s\" here", call, index, name,
              e->param);
      }
      /* libnbd's header marks exactly these nonnull; libnbd-core's too,
       * except the writer's function pointer (tests pass NULL there). */
      if (!(nonnull & (1UL << index)) && strcmp (e->param, "writer") != 0) {
        nonnull_bad++;
        diag ("%s parameter %d (%s) is not in LIBNBD_ATTRIBUTE_NONNULL", call, index, name);
      }
    }
    p = semi + 1;
  }

  /* A parser that found nothing would pass everything: libnbd 1.14 has 126
   * calls and 26 pointer parameters besides the handle. */
  ok (calls >= 126, "the header declares %u calls (at least 126)", calls);
  ok (pointers >= 26, "%u pointer parameters besides the handle (at least 26)", pointers);
  is_int (missing, 0, "every pointer parameter of %s has its entry, under its own name", path);
  is_int (nonnull_bad, 0, "and each is marked nonnull for the caller's compiler");
  for (size_t i = 0; i < NR_ENTRIES; i++)
    if (!entries[i].in_header)
      diag ("the table has %s parameter %d (%s), which the header does not", entries[i].call,
            entries[i].index, entries[i].param);
  {
    unsigned stale = 0;
    for (size_t i = 0; i < NR_ENTRIES; i++)
      stale += !entries[i].in_header;
    is_int (stale, 0, "every entry names a pointer parameter of the header");
  }
  free (pristine);
  free (text);
}

/* ---- The walk ---------------------------------------------------------- */

static const char *
state_name (unsigned state)
{
  return state == CR ? "new" : state == NE ? "negotiating" : "connected";
}

static void
walk (struct nbd_handle *h, unsigned state, const char *pass)
{
  for (size_t i = 0; i < NR_ENTRIES; i++) {
    const struct entry *e = &entries[i];
    bool permitted = (e->states & state) != 0;
    int64_t r = e->run (h);
    int err = nbd_get_errno ();
    const char *msg = nbd_get_error ();
    char want_msg[160];
    int want_err = permitted ? EFAULT : state == CR ? ENOTCONN : EINVAL;
    bool msg_ok;

    if (permitted)
      snprintf (want_msg, sizeof want_msg, "%s: %s cannot be NULL", e->call, e->param);
    else
      snprintf (want_msg, sizeof want_msg, "%s: ", e->call);
    msg_ok = msg && strncmp (msg, want_msg, strlen (want_msg)) == 0;
    if (!ok (r == -1 && err == want_err && msg_ok,
             "%s (%s = NULL) on a %s handle%s: -1, %s, \"%s...\"", e->call, e->param,
             state_name (state), pass, strerrorname_np (want_err), want_msg))
      diag ("got %" PRId64 ", %s, \"%s\"", r, err ? strerrorname_np (err) : "errno 0",
            msg ? msg : "(no message)");
    /* A failed call must not keep the handle lock: this would hang. */
    if (nbd_get_debug (h) == -1)
      ok (false, "a locked call after %s works: %s", e->call, nbd_get_error ());
  }
}

int
main (void)
{
  const char *args[] = { "memory", "size=1M", NULL };
  struct test_server srv;
  struct nbd_handle *h[3];
  const unsigned states[3] = { CR, NE, RE };
#ifdef LIBNBD_CORE
  const int passes = 2;
#else
  const int passes = 1;
#endif

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  check_header (COMPAT_LIBNBD_H);

  if (server_start_nbdkit (&srv, args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  for (int i = 0; i < 3; i++) {
    h[i] = nbd_create ();
    if (!h[i])
      bail_out ("nbd_create: %s", nbd_get_error ());
    if (states[i] == NE && nbd_set_opt_mode (h[i], true) == -1)
      bail_out ("nbd_set_opt_mode: %s", nbd_get_error ());
    if (states[i] != CR && nbd_connect_unix (h[i], srv.sock) == -1)
      bail_out ("nbd_connect_unix: %s", nbd_get_error ());
  }

  for (int pass = 0; pass < passes; pass++)
    for (int i = 0; i < 3; i++) {
      if (nbd_set_pread_initialize (h[i], pass == 1) == -1)
        bail_out ("nbd_set_pread_initialize: %s", nbd_get_error ());
      walk (h[i], states[i], pass == 1 ? " (pread_initialize on)" : "");
    }

  ok (nbd_aio_is_created (h[0]), "the new handle is still new");
  ok (nbd_aio_is_negotiating (h[1]), "the negotiating one still negotiating");
  ok (nbd_aio_is_ready (h[2]), "the connected one still ready");
  {
    char buf[512];
    ok (nbd_pread (h[2], buf, sizeof buf, 0, 0) == 0, "and it still reads");
  }
  for (int i = 0; i < 3; i++)
    nbd_close (h[i]);
  server_stop (&srv);
  return done_testing ();
}
