/* handle-callback-free: every callback-taking call runs each callback's
 * .free exactly once, whatever happens to the call.
 *
 * Against nbdkit memory 1M.  For each of nbd_opt_list, nbd_opt_list_meta_
 * context, nbd_aio_opt_go/info/list/list_meta_context, nbd_pread_structured,
 * nbd_block_status and every nbd_aio_* command, it proves .free runs once:
 *  - when the call fails because of the handle's state (ENOTCONN);
 *  - when it fails because of bad flags (EINVAL) or out-of-bounds (EINVAL);
 *  - when the mid-command callback is NULL (EFAULT for chunk/extent);
 *  - when it succeeds: not before the call returns, once by the time the
 *    command is retired, the completion callback having run exactly once
 *    (also when it retires the command itself by returning 1);
 *  - when the server fails the command, and when nbd_close abandons it;
 *  - for a completion callback with .callback = NULL and .free set.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define SIZE (1024 * 1024)

struct counter {
  int calls;
  int frees;
  int last_error;
  int ret;                      /* what the callback returns */
};

static char buf[65536];
static struct test_server srv;

static int
comp_fn (void *u, int *error)
{
  struct counter *c = u;

  c->calls++;
  c->last_error = *error;
  return c->ret;
}

static int
chunk_fn (void *u, const void *sub, size_t count, uint64_t off, unsigned status, int *error)
{
  struct counter *c = u;

  c->calls++;
  return 0;
}

static int
extent_fn (void *u, const char *meta, uint64_t off, uint32_t *e, size_t n, int *error)
{
  struct counter *c = u;

  c->calls++;
  return 0;
}

static int
list_fn (void *u, const char *name, const char *desc)
{
  struct counter *c = u;

  c->calls++;
  return 0;
}

static int
ctx_fn (void *u, const char *name)
{
  struct counter *c = u;

  c->calls++;
  return 0;
}

static void
free_fn (void *u)
{
  struct counter *c = u;

  c->frees++;
}

#define COMP(c) ((nbd_completion_callback) { .callback = comp_fn, .user_data = (c), .free = free_fn })
#define CHUNK(c) ((nbd_chunk_callback) { .callback = chunk_fn, .user_data = (c), .free = free_fn })
#define EXTENT(c) ((nbd_extent_callback) { .callback = extent_fn, .user_data = (c), .free = free_fn })
#define LIST(c) ((nbd_list_callback) { .callback = list_fn, .user_data = (c), .free = free_fn })
#define CTX(c) ((nbd_context_callback) { .callback = ctx_fn, .user_data = (c), .free = free_fn })
/* A closure with neither .callback nor .free is "NULL" (EFAULT); one with
 * only .free is legal, as in libnbd 1.14. */
#define NULLCHUNK ((nbd_chunk_callback) { .callback = NULL, .free = NULL })
#define NULLEXTENT ((nbd_extent_callback) { .callback = NULL, .free = NULL })
#define FREECHUNK(c) ((nbd_chunk_callback) { .callback = NULL, .user_data = (c), .free = free_fn })
#define FREEEXTENT(c) ((nbd_extent_callback) { .callback = NULL, .user_data = (c), .free = free_fn })
#define NULLCOMP(c) ((nbd_completion_callback) { .callback = NULL, .user_data = (c), .free = free_fn })

static bool
error_from (const char *call)
{
  const char *msg = nbd_get_error ();
  size_t n = strlen (call);

  return msg && strncmp (msg, call, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ';
}

/* One assertion: the call failed with @err, named itself, and each of the
 * (up to two) callbacks was freed exactly once and never called. */
static void
check_failed (const char *what, const char *call, int64_t r, int err,
              struct counter *c1, struct counter *c2)
{
  int got = nbd_get_errno ();
  bool pass = r == -1 && got == err && error_from (call) &&
              c1->frees == 1 && c1->calls == 0 &&
              (!c2 || (c2->frees == 1 && c2->calls == 0));

  if (!ok (pass, "%s: %s fails with %s and frees each callback once", what, call,
           strerrorname_np (err)))
    diag ("r=%jd errno=%s message=%s frees=%d,%d calls=%d,%d", (intmax_t) r,
          got ? strerrorname_np (got) : "0", nbd_get_error () ? nbd_get_error () : "(null)",
          c1->frees, c2 ? c2->frees : -1, c1->calls, c2 ? c2->calls : -1);
}

static void
reset (struct counter *a, struct counter *b)
{
  memset (a, 0, sizeof *a);
  memset (b, 0, sizeof *b);
}

static int64_t
deadline_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 10000;
}

static int64_t
now_ms (void)
{
  return deadline_ms () - 10000;
}

/* Retire @cookie: 1 succeeded, -1 failed, 0 timed out (10 s). */
static int
wait_cookie (struct nbd_handle *h, int64_t cookie)
{
  int64_t end = deadline_ms ();
  int r;

  while ((r = nbd_aio_command_completed (h, cookie)) == 0 && now_ms () < end)
    if (nbd_poll (h, 1000) == -1)
      return -1;
  return r;
}

/* Wait for every command to finish (completion callbacks run). */
static void
drain (struct nbd_handle *h)
{
  int64_t end = deadline_ms ();

  while (nbd_aio_in_flight (h) > 0 && now_ms () < end)
    if (nbd_poll (h, 1000) == -1)
      break;
}

/* Wait for the option in progress (the handle shows as connecting). */
static void
wait_opt (struct nbd_handle *h)
{
  int64_t end = deadline_ms ();

  while (nbd_aio_is_connecting (h) && now_ms () < end)
    if (nbd_poll (h, 1000) == -1)
      break;
}

static void
test_wrong_state (void)
{
  struct nbd_handle *h = nbd_create ();
  struct counter a, b;
  const char *st = "created";

#define F1(call, expr) do { reset (&a, &b); check_failed (st, call, (expr), ENOTCONN, &a, NULL); } while (0)
#define F2(call, expr) do { reset (&a, &b); check_failed (st, call, (expr), ENOTCONN, &a, &b); } while (0)
  F1 ("nbd_opt_list", nbd_opt_list (h, LIST (&a)));
  F1 ("nbd_opt_list_meta_context", nbd_opt_list_meta_context (h, CTX (&a)));
  F1 ("nbd_aio_opt_go", nbd_aio_opt_go (h, COMP (&a)));
  F1 ("nbd_aio_opt_info", nbd_aio_opt_info (h, COMP (&a)));
  F2 ("nbd_aio_opt_list", nbd_aio_opt_list (h, LIST (&a), COMP (&b)));
  F2 ("nbd_aio_opt_list_meta_context", nbd_aio_opt_list_meta_context (h, CTX (&a), COMP (&b)));
  F1 ("nbd_pread_structured", nbd_pread_structured (h, buf, 512, 0, CHUNK (&a), 0));
  F1 ("nbd_block_status", nbd_block_status (h, 512, 0, EXTENT (&a), 0));
  F1 ("nbd_aio_pread", nbd_aio_pread (h, buf, 512, 0, COMP (&a), 0));
  F2 ("nbd_aio_pread_structured", nbd_aio_pread_structured (h, buf, 512, 0, CHUNK (&a), COMP (&b), 0));
  F1 ("nbd_aio_pwrite", nbd_aio_pwrite (h, buf, 512, 0, COMP (&a), 0));
  F1 ("nbd_aio_flush", nbd_aio_flush (h, COMP (&a), 0));
  F1 ("nbd_aio_trim", nbd_aio_trim (h, 512, 0, COMP (&a), 0));
  F1 ("nbd_aio_cache", nbd_aio_cache (h, 512, 0, COMP (&a), 0));
  F1 ("nbd_aio_zero", nbd_aio_zero (h, 512, 0, COMP (&a), 0));
  F2 ("nbd_aio_block_status", nbd_aio_block_status (h, 512, 0, EXTENT (&a), COMP (&b), 0));
  /* A completion with only .free is freed on failure too. */
  F1 ("nbd_aio_pread", nbd_aio_pread (h, buf, 512, 0, NULLCOMP (&a), 0));
  F2 ("nbd_aio_block_status", nbd_aio_block_status (h, 512, 0, FREEEXTENT (&a), NULLCOMP (&b), 0));
  /* The state is checked before a NULL closure: ENOTCONN, not EFAULT. */
  F1 ("nbd_aio_pread_structured", nbd_aio_pread_structured (h, buf, 512, 0, NULLCHUNK, COMP (&a), 0));
  reset (&a, &b);
  ok (nbd_block_status (h, 512, 0, NULLEXTENT, 0) == -1 && nbd_get_errno () == ENOTCONN &&
      error_from ("nbd_block_status"), "created: nbd_block_status with a NULL extent is ENOTCONN");
#undef F1
#undef F2
  nbd_close (h);
}

/* The opt calls on a negotiating handle: success frees once; then
 * nbd_aio_opt_go leaves the handle ready for the I/O tests. */
static struct nbd_handle *
test_opt_success (void)
{
  struct nbd_handle *h = nbd_create ();
  struct counter a, b;
  int r;

  must (nbd_set_opt_mode (h, true));
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_unix (h, srv.sock) == -1 || !nbd_aio_is_negotiating (h))
    bail_out ("cannot connect in opt mode: %s", nbd_get_error ());

  /* nbdkit answers NBD_OPT_LIST once per connection (a second one gets
   * NBD_REP_ERR_INVALID), so the async list goes first. */
  reset (&a, &b);
  is_int (nbd_aio_opt_list (h, LIST (&a), COMP (&b)), 0, "nbd_aio_opt_list starts");
  /* The core (like libnbd) runs the handshake until it would block, so a
   * fast server may have answered already: then each ran once, else none. */
  ok (nbd_aio_is_connecting (h) ? a.frees == 0 && b.frees == 0 && b.calls == 0
      : a.frees == 1 && b.frees == 1 && b.calls == 1,
      "on return: nothing freed while the option is pending, or each once if it is done "
      "(calls %d,%d frees %d,%d)", a.calls, b.calls, a.frees, b.frees);
  wait_opt (h);
  ok (a.calls == 1 && a.frees == 1 && b.calls == 1 && b.frees == 1 && b.last_error == 0,
      "after it finished: list called once (%d), completion once (%d), each freed once "
      "(frees %d,%d)", a.calls, b.calls, a.frees, b.frees);

  reset (&a, &b);
  r = nbd_opt_list (h, LIST (&a));
  ok (r == -1 && error_from ("nbd_opt_list") && a.calls == 0 && a.frees == 1,
      "a second nbd_opt_list is refused by nbdkit; its callback is freed once (r %d, frees %d)",
      r, a.frees);
  ok (nbd_aio_is_negotiating (h), "the refusal leaves the handle negotiating");

  reset (&a, &b);
  r = nbd_opt_list_meta_context (h, CTX (&a));
  ok (r == 1 && a.calls == r && a.frees == 1,
      "nbd_opt_list_meta_context succeeds (%d: base:allocation), freed once", r);

  reset (&a, &b);
  is_int (nbd_aio_opt_list_meta_context (h, CTX (&a), COMP (&b)), 0,
          "nbd_aio_opt_list_meta_context starts");
  wait_opt (h);
  ok (a.calls >= 1 && a.frees == 1 && b.calls == 1 && b.frees == 1,
      "after it finished each callback was freed once (frees %d,%d)", a.frees, b.frees);

  reset (&a, &b);
  is_int (nbd_aio_opt_info (h, COMP (&a)), 0, "nbd_aio_opt_info starts");
  wait_opt (h);
  ok (a.calls == 1 && a.frees == 1 && a.last_error == 0,
      "its completion ran once and was freed once (calls %d frees %d)", a.calls, a.frees);
  ok (nbd_aio_is_negotiating (h), "still negotiating after INFO");

  /* An opt call in the wrong (negotiating) state for I/O. */
  reset (&a, &b);
  check_failed ("negotiating", "nbd_aio_pread", nbd_aio_pread (h, buf, 512, 0, COMP (&a), 0),
                EINVAL, &a, NULL);

  reset (&a, &b);
  is_int (nbd_aio_opt_go (h, COMP (&a)), 0, "nbd_aio_opt_go starts");
  wait_opt (h);
  ok (a.calls == 1 && a.frees == 1 && a.last_error == 0,
      "its completion ran once and was freed once (calls %d frees %d)", a.calls, a.frees);
  if (!ok (nbd_aio_is_ready (h), "the handle is ready after GO"))
    bail_out ("GO failed: %s", nbd_get_error ());

  /* Now the opt calls are in the wrong state (EINVAL: connected). */
#define F1(call, expr) do { reset (&a, &b); check_failed ("ready", call, (expr), EINVAL, &a, NULL); } while (0)
#define F2(call, expr) do { reset (&a, &b); check_failed ("ready", call, (expr), EINVAL, &a, &b); } while (0)
  F1 ("nbd_opt_list", nbd_opt_list (h, LIST (&a)));
  F1 ("nbd_opt_list_meta_context", nbd_opt_list_meta_context (h, CTX (&a)));
  F1 ("nbd_aio_opt_go", nbd_aio_opt_go (h, COMP (&a)));
  F1 ("nbd_aio_opt_info", nbd_aio_opt_info (h, COMP (&a)));
  F2 ("nbd_aio_opt_list", nbd_aio_opt_list (h, LIST (&a), COMP (&b)));
  F2 ("nbd_aio_opt_list_meta_context", nbd_aio_opt_list_meta_context (h, CTX (&a), COMP (&b)));
#undef F1
#undef F2
  return h;
}

static void
test_bad_args (struct nbd_handle *h)
{
  struct counter a, b;
  const uint32_t bad = 0x100;

#define F1(what, err, call, expr) do { reset (&a, &b); check_failed (what, call, (expr), err, &a, NULL); } while (0)
#define F2(what, err, call, expr) do { reset (&a, &b); check_failed (what, call, (expr), err, &a, &b); } while (0)
  F1 ("bad flags", EINVAL, "nbd_pread_structured", nbd_pread_structured (h, buf, 512, 0, CHUNK (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_block_status", nbd_block_status (h, 512, 0, EXTENT (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_pread", nbd_aio_pread (h, buf, 512, 0, COMP (&a), bad));
  F2 ("bad flags", EINVAL, "nbd_aio_pread_structured",
      nbd_aio_pread_structured (h, buf, 512, 0, CHUNK (&a), COMP (&b), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_pwrite", nbd_aio_pwrite (h, buf, 512, 0, COMP (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_flush", nbd_aio_flush (h, COMP (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_trim", nbd_aio_trim (h, 512, 0, COMP (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_cache", nbd_aio_cache (h, 512, 0, COMP (&a), bad));
  F1 ("bad flags", EINVAL, "nbd_aio_zero", nbd_aio_zero (h, 512, 0, COMP (&a), bad));
  F2 ("bad flags", EINVAL, "nbd_aio_block_status",
      nbd_aio_block_status (h, 512, 0, EXTENT (&a), COMP (&b), bad));

  /* Out of bounds: refused before anything is queued (strict bounds). */
  F1 ("out of bounds", EINVAL, "nbd_aio_pread", nbd_aio_pread (h, buf, 512, SIZE, COMP (&a), 0));
  F2 ("out of bounds", EINVAL, "nbd_aio_block_status",
      nbd_aio_block_status (h, 512, SIZE, EXTENT (&a), COMP (&b), 0));
  F1 ("out of bounds", EINVAL, "nbd_pread_structured",
      nbd_pread_structured (h, buf, 512, SIZE, CHUNK (&a), 0));

  /* NULL mid-command callbacks: EFAULT, after the state check and before
   * the flags check (as libnbd 1.14); the completion is still freed. */
  {
    int64_t r;

#define FN(what, call, expr) do { reset (&a, &b); r = (expr);                   \
      ok (r == -1 && nbd_get_errno () == EFAULT && error_from (call),          \
          "%s: %s fails with EFAULT", what, call); } while (0)
    FN ("NULL chunk", "nbd_pread_structured", nbd_pread_structured (h, buf, 512, 0, NULLCHUNK, 0));
    FN ("NULL chunk, bad flags", "nbd_pread_structured",
        nbd_pread_structured (h, buf, 512, 0, NULLCHUNK, bad));
    FN ("NULL extent", "nbd_block_status", nbd_block_status (h, 512, 0, NULLEXTENT, 0));
    FN ("NULL extent, bad flags", "nbd_block_status", nbd_block_status (h, 512, 0, NULLEXTENT, bad));
#undef FN
  }
  F1 ("NULL chunk", EFAULT, "nbd_aio_pread_structured",
      nbd_aio_pread_structured (h, buf, 512, 0, NULLCHUNK, COMP (&a), 0));
  F1 ("NULL extent", EFAULT, "nbd_aio_block_status",
      nbd_aio_block_status (h, 512, 0, NULLEXTENT, COMP (&a), 0));
#undef F1
#undef F2
  is_int (nbd_aio_in_flight (h), 0, "none of the refused calls left a command in flight");
}

/* Issue, check nothing freed yet, retire, check freed once and the
 * completion called once. */
static void
check_success (struct nbd_handle *h, const char *call, int64_t cookie,
               struct counter *comp, struct counter *mid)
{
  bool early = cookie > 0 && comp->frees == 0 && (!mid || mid->frees == 0);
  int r = cookie > 0 ? wait_cookie (h, cookie) : -1;
  bool pass = early && r == 1 && comp->calls == 1 && comp->frees == 1 && comp->last_error == 0 &&
              (!mid || (mid->calls >= 1 && mid->frees == 1));

  if (!ok (pass, "%s succeeds; its callbacks are freed once, after the call returned", call))
    diag ("cookie=%jd early=%d retired=%d completion calls=%d frees=%d error=%d; mid calls=%d "
          "frees=%d; %s", (intmax_t) cookie, early, r, comp->calls, comp->frees,
          comp->last_error, mid ? mid->calls : -1, mid ? mid->frees : -1,
          nbd_get_error () ? nbd_get_error () : "");
}

static void
test_success (struct nbd_handle *h)
{
  struct counter a, b;
  int r;

#define S1(call, expr) do { reset (&a, &b); check_success (h, call, (expr), &a, NULL); } while (0)
#define S2(call, expr) do { reset (&a, &b); check_success (h, call, (expr), &b, &a); } while (0)
  S1 ("nbd_aio_pwrite", nbd_aio_pwrite (h, buf, 4096, 0, COMP (&a), 0));
  S1 ("nbd_aio_pread", nbd_aio_pread (h, buf, 4096, 0, COMP (&a), 0));
  S2 ("nbd_aio_pread_structured", nbd_aio_pread_structured (h, buf, 4096, 0, CHUNK (&a), COMP (&b), 0));
  S1 ("nbd_aio_flush", nbd_aio_flush (h, COMP (&a), 0));
  S1 ("nbd_aio_trim", nbd_aio_trim (h, 4096, 0, COMP (&a), 0));
  S1 ("nbd_aio_cache", nbd_aio_cache (h, 4096, 0, COMP (&a), 0));
  S1 ("nbd_aio_zero", nbd_aio_zero (h, 4096, 0, COMP (&a), 0));
  S2 ("nbd_aio_block_status", nbd_aio_block_status (h, 4096, 0, EXTENT (&a), COMP (&b), 0));
#undef S1
#undef S2

  reset (&a, &b);
  r = nbd_pread_structured (h, buf, 4096, 0, CHUNK (&a), 0);
  ok (r == 0 && a.calls >= 1 && a.frees == 1, "nbd_pread_structured succeeds, chunk freed once");
  reset (&a, &b);
  r = nbd_block_status (h, 4096, 0, EXTENT (&a), 0);
  ok (r == 0 && a.calls >= 1 && a.frees == 1, "nbd_block_status succeeds, extent freed once");

  /* A completion with only .free: the command runs, .free once. */
  {
    int64_t cookie;

    reset (&a, &b);
    cookie = nbd_aio_pread (h, buf, 4096, 0, NULLCOMP (&a), 0);
    ok (cookie > 0 && a.frees == 0, "nbd_aio_pread with a .free-only completion is queued");
    is_int (wait_cookie (h, cookie), 1, "and retires with success");
    is_int (a.frees, 1, "its .free ran exactly once");
  }

  /* Chunk and extent closures with only .free: legal, .free once. */
  reset (&a, &b);
  r = nbd_pread_structured (h, buf, 4096, 0, FREECHUNK (&a), 0);
  ok (r == 0 && a.frees == 1, "nbd_pread_structured with a .free-only chunk works, freed once");
  reset (&a, &b);
  r = nbd_block_status (h, 4096, 0, FREEEXTENT (&a), 0);
  ok (r == 0 && a.frees == 1, "nbd_block_status with a .free-only extent works, freed once");
  reset (&a, &b);
  check_success (h, "nbd_aio_block_status (.free-only extent)",
                 nbd_aio_block_status (h, 4096, 0, FREEEXTENT (&a), COMP (&b), 0), &b, NULL);
  is_int (a.frees, 1, "the .free-only extent was freed once");

  /* A completion that retires its own command by returning 1. */
  {
    int64_t cookie;

    reset (&a, &b);
    a.ret = 1;
    cookie = nbd_aio_pread (h, buf, 4096, 0, COMP (&a), 0);
    ok (cookie > 0, "nbd_aio_pread whose completion returns 1");
    drain (h);
    ok (a.calls == 1 && a.frees == 1, "completion ran once and was freed once (%d, %d)",
        a.calls, a.frees);
    /* As libnbd 1.14: a retired cookie reads as "not completed", 0. */
    is_int (nbd_aio_command_completed (h, cookie), 0,
            "the command was already retired: nbd_aio_command_completed gives 0");
    is_int (a.frees, 1, "and asking did not free anything again");
  }
}

/* The server fails the command (strict bounds off, read past the end). */
static void
test_server_error (struct nbd_handle *h)
{
  struct counter a, b;
  int64_t cookie;

  reset (&a, &b);
  must (nbd_set_strict_mode (h, 0));
  cookie = nbd_aio_pread (h, buf, 512, SIZE, COMP (&a), 0);
  ok (cookie > 0, "with strict mode off a read past the end is sent");
  is_int (wait_cookie (h, cookie), -1, "the server fails it");
  ok (a.calls == 1 && a.last_error != 0 && a.frees == 1,
      "completion saw the error (%d) once and was freed once (calls %d frees %d)",
      a.last_error, a.calls, a.frees);
  must (nbd_set_strict_mode (h, LIBNBD_STRICT_MASK));
  ok (nbd_aio_is_ready (h), "the handle is still ready");
}

/* nbd_close with commands still in flight. */
static void
test_close_in_flight (void)
{
  struct nbd_handle *h = nbd_create ();
  struct counter a, b, c;
  int64_t c1, c2;

  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (nbd_connect_unix (h, srv.sock) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  reset (&a, &b);
  memset (&c, 0, sizeof c);
  c1 = nbd_aio_pread (h, buf, 65536, 0, COMP (&a), 0);
  c2 = nbd_aio_block_status (h, 65536, 0, EXTENT (&b), COMP (&c), 0);
  ok (c1 > 0 && c2 > 0, "two commands in flight");
  nbd_close (h);
  ok (a.frees == 1 && a.calls <= 1, "nbd_close: the read's completion freed once (calls %d frees %d)",
      a.calls, a.frees);
  ok (b.frees == 1 && c.frees == 1 && c.calls <= 1,
      "nbd_close: block status' extent and completion freed once (frees %d, %d)", b.frees,
      c.frees);
}

int
main (void)
{
  struct nbd_handle *h;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&srv, (const char *const[]) { "memory", "1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  test_wrong_state ();
  h = test_opt_success ();
  test_bad_args (h);
  test_success (h);
  test_server_error (h);
  nbd_close (h);
  test_close_in_flight ();

  server_stop (&srv);
  return done_testing ();
}
