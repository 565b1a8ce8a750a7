/* io-aio-basic: the asynchronous calls with many commands in flight.
 *
 * Proves: 16 nbd_aio_pread against nbdkit pattern and 16 nbd_aio_pwrite then
 * 16 nbd_aio_pread against nbdkit memory get increasing cookies, count 16
 * in nbd_aio_in_flight right after queueing (nbd_aio_peek_command_completed
 * 0: nothing done yet), fall to 0 in flight once all replied, and are each
 * retired exactly once through the peek/command_completed loop, with the
 * right data; a completion callback runs exactly once per command with
 * *error 0 (EIO from an error-filter server), its .free once; a callback
 * returning 1 retires its command itself (peek never returns it, and
 * nbd_aio_command_completed then answers 0 as for any cookie not among
 * the completed, as libnbd 1.14); one returning -1 with *error set makes
 * the command fail with that errno; cookie 0 and peek with nothing in
 * flight are EINVAL.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define N 16
#define SZ 65536

struct cb_state {
  unsigned calls, frees;
  int error_in;
  int ret;                      /* what the callback returns */
  int set_error;                /* written to *error if non-zero */
};

static int
completion_cb (void *user_data, int *error)
{
  struct cb_state *s = user_data;

  s->calls++;
  s->error_in = *error;
  if (s->set_error)
    *error = s->set_error;
  return s->ret;
}

static void
completion_free (void *user_data)
{
  ((struct cb_state *) user_data)->frees++;
}

static nbd_completion_callback
closure (struct cb_state *s)
{
  return (nbd_completion_callback) { .callback = completion_cb, .user_data = s,
                                     .free = completion_free };
}

static bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

static unsigned char
pattern_byte (uint64_t pos)
{
  return (unsigned char) ((pos & ~UINT64_C (7)) >> (8 * (7 - (pos & 7))));
}

static bool
is_pattern (const unsigned char *buf, size_t count, uint64_t offset)
{
  for (size_t i = 0; i < count; i++)
    if (buf[i] != pattern_byte (offset + i))
      return false;
  return true;
}

/* Poll until nothing is in flight (bounded). */
static bool
drain (struct nbd_handle *h)
{
  for (int i = 0; i < 1000 && nbd_aio_in_flight (h) > 0; i++)
    if (nbd_poll (h, 5000) != 1)
      return false;
  return nbd_aio_in_flight (h) == 0;
}

/* Retire every completed command through peek; returns how many, and
 * checks each cookie is one of @c and retired once. */
static int
retire_all (struct nbd_handle *h, const int64_t *c, int n, bool *seen, int *failures)
{
  int64_t cookie;
  int count = 0;

  while ((cookie = nbd_aio_peek_command_completed (h)) > 0) {
    int r = nbd_aio_command_completed (h, (uint64_t) cookie);
    int i;

    for (i = 0; i < n && c[i] != cookie; i++)
      ;
    if (i == n || seen[i]) {
      diag ("peek returned cookie %" PRId64 " unknown or twice", cookie);
      return -1;
    }
    seen[i] = true;
    if (r != 1)
      (*failures)++;
    count++;
  }
  return count;
}

static void
pattern_reads (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[N][SZ];
  struct cb_state st[N];
  int64_t c[N];
  bool seen[N] = { false };
  int failures = 0, n;

  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  is_int (nbd_aio_in_flight (h), 0, "pattern: nothing in flight at first");
  ok (nbd_aio_peek_command_completed (h) == -1, "pattern: peek with nothing in flight fails");
  is_errno (EINVAL, "pattern: EINVAL");
  ok (prefix_is ("nbd_aio_peek_command_completed"),
      "pattern: message begins with nbd_aio_peek_command_completed: (%s)", nbd_get_error ());

  memset (st, 0, sizeof st);
  for (int i = 0; i < N; i++) {
    memset (buf[i], 0xaa, SZ);
    st[i].error_in = -1;
    c[i] = nbd_aio_pread (h, buf[i], SZ, (uint64_t) i * 100003, closure (&st[i]), 0);
  }
  {
    bool inc = c[0] > 0;
    for (int i = 1; i < N; i++)
      inc &= c[i] > c[i - 1];
    ok (inc, "pattern: 16 increasing cookies (%" PRId64 "..%" PRId64 ")", c[0], c[N - 1]);
  }
  is_int (nbd_aio_in_flight (h), N, "pattern: 16 in flight");
  is_int (nbd_aio_peek_command_completed (h), 0, "pattern: peek says none completed yet");
  is_int (nbd_aio_command_completed (h, (uint64_t) c[5]), 0,
          "pattern: command_completed on one still in flight says 0");
  ok (drain (h), "pattern: all replied");
  is_int (nbd_aio_in_flight (h), 0, "pattern: 0 in flight");
  {
    bool once = true, err0 = true;
    for (int i = 0; i < N; i++) {
      once &= st[i].calls == 1 && st[i].frees == 0;
      err0 &= st[i].error_in == 0;
    }
    ok (once, "pattern: each completion callback ran once, not yet freed (not retired)");
    ok (err0, "pattern: each saw *error 0");
  }
  n = retire_all (h, c, N, seen, &failures);
  is_int (n, N, "pattern: peek + command_completed retired all 16");
  is_int (failures, 0, "pattern: all succeeded");
  {
    bool freed = true, right = true;
    for (int i = 0; i < N; i++) {
      freed &= st[i].frees == 1;
      right &= is_pattern (buf[i], SZ, (uint64_t) i * 100003);
    }
    ok (freed, "pattern: each .free ran once at retirement");
    ok (right, "pattern: each buffer holds the pattern");
  }
  ok (nbd_aio_peek_command_completed (h) == -1, "pattern: peek with nothing left fails");
  is_errno (EINVAL, "pattern: EINVAL");
  ok (nbd_aio_command_completed (h, 0) == -1, "pattern: cookie 0 is invalid");
  is_errno (EINVAL, "pattern: EINVAL");
  ok (prefix_is ("nbd_aio_command_completed"),
      "pattern: message begins with nbd_aio_command_completed: (%s)", nbd_get_error ());
  is_int (nbd_shutdown (h, 0), 0, "pattern: shutdown");
  nbd_close (h);
}

static void
memory_writes_reads (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char wbuf[N][SZ], rbuf[N][SZ];
  int64_t c[N];
  bool seen[N];
  int failures = 0;

  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  for (int i = 0; i < N; i++) {
    for (int j = 0; j < SZ; j++)
      wbuf[i][j] = (unsigned char) (i * 31 + j * 7);
    c[i] = nbd_aio_pwrite (h, wbuf[i], SZ, (uint64_t) i * SZ + 3, NBD_NULL_COMPLETION,
                           i & 1 ? LIBNBD_CMD_FLAG_FUA : 0);
  }
  is_int (nbd_aio_in_flight (h), N, "memory: 16 writes in flight");
  ok (drain (h), "memory: all writes replied");
  memset (seen, 0, sizeof seen);
  is_int (retire_all (h, c, N, seen, &failures), N, "memory: 16 writes retired");
  is_int (failures, 0, "memory: all succeeded");

  for (int i = 0; i < N; i++) {
    memset (rbuf[i], 0, SZ);
    c[i] = nbd_aio_pread (h, rbuf[i], SZ, (uint64_t) i * SZ + 3, NBD_NULL_COMPLETION, 0);
  }
  is_int (nbd_aio_in_flight (h), N, "memory: 16 reads in flight");
  /* Retire each by its own cookie, in reverse order, polling as needed. */
  {
    int ok_count = 0;
    for (int i = N - 1; i >= 0; i--) {
      int r;
      while ((r = nbd_aio_command_completed (h, (uint64_t) c[i])) == 0)
        if (nbd_poll (h, 5000) != 1)
          break;
      ok_count += r == 1;
    }
    is_int (ok_count, N, "memory: 16 reads retired one by one, all succeeded");
  }
  ok (memcmp (rbuf, wbuf, sizeof rbuf) == 0, "memory: every read returns its write");
  is_int (nbd_aio_in_flight (h), 0, "memory: 0 in flight");

  /* Auto-retire and failure through the completion callback. */
  {
    struct cb_state one = { .ret = 1 }, fail = { .ret = -1, .set_error = EPERM };
    struct cb_state zero = { .ret = 0 };
    int64_t a, b, z;
    int r;

    a = nbd_aio_pread (h, rbuf[0], 512, 0, closure (&one), 0);
    b = nbd_aio_pread (h, rbuf[1], 512, 0, closure (&fail), 0);
    z = nbd_aio_pread (h, rbuf[2], 512, 0, closure (&zero), 0);
    ok (a > 0 && b > a && z > b, "memory: three reads with callbacks queued");
    ok (drain (h), "memory: replied");
    is_int (one.calls, 1, "memory: the returning-1 callback ran once");
    is_int (one.frees, 1, "memory: and was freed once (auto-retired)");
    is_int (fail.calls, 1, "memory: the failing callback ran once");
    is_int (zero.calls, 1, "memory: the returning-0 callback ran once");
    is_int (zero.frees, 0, "memory: not freed before retirement");
    {
      /* nbdkit may answer the three in any order; a is never offered. */
      int64_t p = nbd_aio_peek_command_completed (h);
      ok (p == b || p == z, "memory: peek skips the auto-retired command (%" PRId64 ")", p);
    }
    is_int (nbd_aio_command_completed (h, (uint64_t) a), 0,
            "memory: the auto-retired cookie is not among the completed (0)");
    r = nbd_aio_command_completed (h, (uint64_t) b);
    is_int (r, -1, "memory: the command whose callback failed fails");
    is_errno (EPERM, "memory: with the callback's EPERM");
    is_int (fail.frees, 1, "memory: its callback freed once at retirement");
    is_int (nbd_aio_command_completed (h, (uint64_t) z), 1, "memory: the third succeeds");
    is_int (zero.frees, 1, "memory: its callback freed once");
    ok (nbd_aio_peek_command_completed (h) == -1, "memory: nothing left");
  }
  is_int (nbd_shutdown (h, 0), 0, "memory: shutdown");
  nbd_close (h);
}

static void
error_completion (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[4096];
  struct cb_state st = { .ret = 0 };
  int64_t c;

  if (!h || nbd_connect_uri (h, uri) == -1)
    bail_out ("connect: %s", nbd_get_error ());
  memset (buf, 0xaa, sizeof buf);
  c = nbd_aio_pread (h, buf, sizeof buf, 0, closure (&st), 0);
  ok (c > 0, "error filter: aio read queued");
  ok (drain (h), "error filter: replied");
  is_int (st.calls, 1, "error filter: completion callback ran once");
  is_int (st.error_in, EIO, "error filter: with *error = EIO");
  is_int (nbd_aio_command_completed (h, (uint64_t) c), -1, "error filter: the read failed");
  is_errno (EIO, "error filter: EIO");
  is_int (st.frees, 1, "error filter: .free once");
  {
    bool z = true;
    for (size_t i = 0; i < sizeof buf; i++)
      z &= buf[i] == 0;
    ok (z, "error filter: buffer zeroed (pread_initialize)");
  }
  is_int (nbd_shutdown (h, 0), 0, "error filter: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  const char *pargs[] = { "pattern", "size=1G", NULL };
  const char *margs[] = { "memory", "size=2M", NULL };
  const char *eargs[] = { "--filter=error", "memory", "size=1M", "error-rate=100%", NULL };

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  if (server_start_nbdkit (&s, pargs) == -1) {
    if (errno == ENOENT)
      skip_all ("nbdkit is not installed");
    bail_out ("cannot start nbdkit");
  }
  pattern_reads (s.uri);
  is_int (server_stop (&s), 0, "nbdkit pattern stopped");

  if (server_start_nbdkit (&s, margs) == -1)
    bail_out ("cannot start nbdkit");
  memory_writes_reads (s.uri);
  is_int (server_stop (&s), 0, "nbdkit memory stopped");

  if (server_start_nbdkit (&s, eargs) == -1)
    bail_out ("cannot start nbdkit");
  error_completion (s.uri);
  is_int (server_stop (&s), 0, "nbdkit error stopped");
  return done_testing ();
}
