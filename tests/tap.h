/* tap.h: a tiny header-only TAP producer for the C test programs.
 *
 * Owns the TAP stream on stdout (plan, "ok N - ..." lines, "# ..." comments)
 * and the exit status; it never talks to a server and never depends on
 * libnbd-core (is_errno and must are macros, so only the test that uses
 * them needs <libnbd.h>).  Include it from exactly one .c file per test
 * program: the counters live in that translation unit.
 *
 *   int main (void) {
 *     tap_timeout (120);               // or TAP_DEFAULT_TIMEOUT
 *     plan (3);                        // or no plan and done_testing ()
 *     ok (h != NULL, "nbd_create");
 *     is_int (nbd_get_size (h), 1048576, "size of the export");
 *     ok (nbd_pread (h, buf, 1, 1 << 20, 0) == -1, "read past the end fails");
 *     is_errno (EINVAL, "and says EINVAL");
 *     must (nbd_set_opt_mode (h, true)); // set-up: bails out on failure
 *     return done_testing ();          // non-zero if any test failed
 *   }
 *
 * Failures (and diag) also go to stderr, so `meson test --print-errorlogs`
 * shows what was expected and what came back.
 * Every assertion returns whether it passed, so a test can stop early:
 * `if (!ok (...)) bail_out ("...")`.  Assertions are thread-safe.
 * Build with -D_GNU_SOURCE (tests/meson.build does) for strerrorname_np.
 */
#ifndef GNBD_TESTS_TAP_H
#define GNBD_TESTS_TAP_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAP_DEFAULT_TIMEOUT 120

#define TAP_PRINTF(fmt, args) __attribute__((__format__ (__printf__, fmt, args)))

struct tap_state {
  pthread_mutex_t lock;
  unsigned planned;   /* 0: no plan yet */
  unsigned run;
  unsigned failed;
  bool plan_printed;
};

static inline struct tap_state *
tap_state_ (void)
{
  static struct tap_state state = { .lock = PTHREAD_MUTEX_INITIALIZER };
  return &state;
}

static inline void tap_vline_ (FILE *f, const char *prefix, const char *fmt, va_list ap)
  TAP_PRINTF (3, 0);
static inline void
tap_vline_ (FILE *f, const char *prefix, const char *fmt, va_list ap)
{
  fputs (prefix, f);
  vfprintf (f, fmt, ap);
  fputc ('\n', f);
  fflush (f);
}

/* diag: a "# ..." line on stderr, which meson shows with a failing test's
 * log (--print-errorlogs).  note: the same in the TAP stream on stdout,
 * seen only in the full log.
 */
static inline void diag (const char *fmt, ...) TAP_PRINTF (1, 2);
static inline void
diag (const char *fmt, ...)
{
  struct tap_state *t = tap_state_ ();
  va_list ap;

  pthread_mutex_lock (&t->lock);
  va_start (ap, fmt);
  tap_vline_ (stderr, "# ", fmt, ap);
  va_end (ap);
  pthread_mutex_unlock (&t->lock);
}

static inline void note (const char *fmt, ...) TAP_PRINTF (1, 2);
static inline void
note (const char *fmt, ...)
{
  struct tap_state *t = tap_state_ ();
  va_list ap;

  pthread_mutex_lock (&t->lock);
  va_start (ap, fmt);
  tap_vline_ (stdout, "# ", fmt, ap);
  va_end (ap);
  pthread_mutex_unlock (&t->lock);
}

/* bail_out: stop the whole program now.  exit() runs atexit handlers, so the
 * servers helpers still stop their servers.
 */
static inline void bail_out (const char *fmt, ...) TAP_PRINTF (1, 2) __attribute__((__noreturn__));
static inline void
bail_out (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  tap_vline_ (stderr, "Bail out! ", fmt, ap);
  va_end (ap);
  va_start (ap, fmt);
  tap_vline_ (stdout, "Bail out! ", fmt, ap);
  va_end (ap);
  exit (1);
}

/* plan: announce how many tests will run.  Call once, before the first. */
static inline void
plan (unsigned n)
{
  struct tap_state *t = tap_state_ ();

  pthread_mutex_lock (&t->lock);
  t->planned = n;
  t->plan_printed = true;
  printf ("1..%u\n", n);
  fflush (stdout);
  pthread_mutex_unlock (&t->lock);
}

/* skip_all: the whole program does not apply here (TAP "1..0 # SKIP"). */
static inline void skip_all (const char *fmt, ...) TAP_PRINTF (1, 2) __attribute__((__noreturn__));
static inline void
skip_all (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  tap_vline_ (stdout, "1..0 # SKIP ", fmt, ap);
  va_end (ap);
  exit (0);
}

/* The core of every assertion: one numbered result line on stdout; on
 * failure the same line, the place and the "what came back" lines (@why,
 * already "# "-prefixed) on stderr, where a failing test's log shows them.
 */
static inline bool tap_result_ (const char *file, int line, bool pass, const char *why,
                                const char *fmt, va_list ap) TAP_PRINTF (5, 0);
static inline bool
tap_result_ (const char *file, int line, bool pass, const char *why,
             const char *fmt, va_list ap)
{
  struct tap_state *t = tap_state_ ();
  va_list ap2;

  pthread_mutex_lock (&t->lock);
  t->run++;
  if (!pass)
    t->failed++;
  va_copy (ap2, ap);
  printf ("%s %u - ", pass ? "ok" : "not ok", t->run);
  vprintf (fmt, ap);
  putchar ('\n');
  fflush (stdout);
  if (!pass) {
    fprintf (stderr, "# not ok %u - ", t->run);
    vfprintf (stderr, fmt, ap2);
    fprintf (stderr, "\n#   Failed at %s line %d\n%s", file, line, why ? why : "");
    fflush (stderr);
  }
  va_end (ap2);
  pthread_mutex_unlock (&t->lock);
  return pass;
}

static inline bool tap_ok_ (const char *file, int line, bool pass, const char *fmt, ...)
  TAP_PRINTF (4, 5);
static inline bool
tap_ok_ (const char *file, int line, bool pass, const char *fmt, ...)
{
  va_list ap;
  bool r;

  va_start (ap, fmt);
  r = tap_result_ (file, line, pass, NULL, fmt, ap);
  va_end (ap);
  return r;
}

static inline bool tap_is_int_ (const char *file, int line, intmax_t got, intmax_t want,
                                const char *fmt, ...) TAP_PRINTF (5, 6);
static inline bool
tap_is_int_ (const char *file, int line, intmax_t got, intmax_t want, const char *fmt, ...)
{
  char why[128];
  va_list ap;
  bool r;

  snprintf (why, sizeof why, "#          got: %jd\n#     expected: %jd\n", got, want);
  va_start (ap, fmt);
  r = tap_result_ (file, line, got == want, why, fmt, ap);
  va_end (ap);
  return r;
}

static inline bool tap_is_uint_ (const char *file, int line, uintmax_t got, uintmax_t want,
                                 const char *fmt, ...) TAP_PRINTF (5, 6);
static inline bool
tap_is_uint_ (const char *file, int line, uintmax_t got, uintmax_t want, const char *fmt, ...)
{
  char why[160];
  va_list ap;
  bool r;

  snprintf (why, sizeof why, "#          got: %ju (0x%jx)\n#     expected: %ju (0x%jx)\n",
            got, got, want, want);
  va_start (ap, fmt);
  r = tap_result_ (file, line, got == want, why, fmt, ap);
  va_end (ap);
  return r;
}

static inline bool tap_is_str_ (const char *file, int line, const char *got, const char *want,
                                const char *fmt, ...) TAP_PRINTF (5, 6);
static inline bool
tap_is_str_ (const char *file, int line, const char *got, const char *want, const char *fmt, ...)
{
  bool pass = (got == NULL || want == NULL) ? got == want : strcmp (got, want) == 0;
  char *why = NULL;
  va_list ap;
  bool r;

  if (!pass &&
      asprintf (&why, "#          got: %s%s%s\n#     expected: %s%s%s\n",
                got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
                want ? "\"" : "", want ? want : "NULL", want ? "\"" : "") == -1)
    why = NULL;
  va_start (ap, fmt);
  r = tap_result_ (file, line, pass, why, fmt, ap);
  va_end (ap);
  free (why);
  return r;
}

static inline const char *
tap_errname_ (int err)
{
  const char *name = err == 0 ? "0" : strerrorname_np (err);
  return name ? name : "unknown errno";
}

static inline bool tap_is_errno_ (const char *file, int line, int got, const char *msg,
                                  int want, const char *fmt, ...) TAP_PRINTF (6, 7);
static inline bool
tap_is_errno_ (const char *file, int line, int got, const char *msg, int want,
               const char *fmt, ...)
{
  char why[1024];
  va_list ap;
  bool r;

  snprintf (why, sizeof why,
            "#          got: errno %d (%s)\n#     expected: errno %d (%s)\n"
            "#   error text: %s\n",
            got, tap_errname_ (got), want, tap_errname_ (want), msg ? msg : "(none)");
  va_start (ap, fmt);
  r = tap_result_ (file, line, got == want, why, fmt, ap);
  va_end (ap);
  return r;
}

static inline void tap_skip_ (const char *fmt, ...) TAP_PRINTF (1, 2);
static inline void
tap_skip_ (const char *fmt, ...)
{
  struct tap_state *t = tap_state_ ();
  va_list ap;

  pthread_mutex_lock (&t->lock);
  t->run++;
  printf ("ok %u # SKIP ", t->run);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  putchar ('\n');
  fflush (stdout);
  pthread_mutex_unlock (&t->lock);
}

/* ok: passes when @cond is true. */
#define ok(cond, ...) tap_ok_ (__FILE__, __LINE__, (cond) ? true : false, __VA_ARGS__)
/* is_int / is_uint: integer equality, printing both values on failure. */
#define is_int(got, want, ...) \
  tap_is_int_ (__FILE__, __LINE__, (intmax_t) (got), (intmax_t) (want), __VA_ARGS__)
#define is_uint(got, want, ...) \
  tap_is_uint_ (__FILE__, __LINE__, (uintmax_t) (got), (uintmax_t) (want), __VA_ARGS__)
/* is_str: string equality; NULL equals only NULL. */
#define is_str(got, want, ...) tap_is_str_ (__FILE__, __LINE__, (got), (want), __VA_ARGS__)
/* is_errno: the last nbd_* call on this thread failed with errno @want.  On
 * failure prints nbd_get_error() and both errno names.  Needs <libnbd.h>.
 */
#define is_errno(want, ...) \
  tap_is_errno_ (__FILE__, __LINE__, nbd_get_errno (), nbd_get_error (), (want), __VA_ARGS__)
/* skip: count one test as skipped, with a reason. */
#define skip(...) tap_skip_ (__VA_ARGS__)
/* must: a set-up call (an nbd_* call that returns -1 on failure) that has
 * to succeed, or what follows would test something else, maybe passing for
 * the wrong reason: bails out naming the call and nbd_get_error ().  Needs
 * <libnbd.h>. */
#define must(call)                                                      \
  do {                                                                  \
    if ((call) == -1)                                                   \
      bail_out ("%s line %d: %s failed: %s", __FILE__, __LINE__, #call,  \
                nbd_get_error () ? nbd_get_error () : "(no error)");    \
  } while (0)

/* done_testing: end of the program's tests.  Prints the plan if none was
 * given, checks the count against it otherwise, and returns the exit status
 * for main: 0 only if every test passed and the count is right.
 */
static inline int
done_testing (void)
{
  struct tap_state *t = tap_state_ ();
  int status;

  pthread_mutex_lock (&t->lock);
  if (!t->plan_printed) {
    printf ("1..%u\n", t->run);
    t->plan_printed = true;
    t->planned = t->run;
  }
  if (t->run != t->planned)
    fprintf (stderr, "# planned %u tests but ran %u\n", t->planned, t->run);
  if (t->failed)
    fprintf (stderr, "# failed %u of %u tests\n", t->failed, t->run);
  status = (t->failed || t->run != t->planned || t->run == 0) ? 1 : 0;
  fflush (stdout);
  fflush (stderr);
  pthread_mutex_unlock (&t->lock);
  return status;
}

static inline void
tap_alarm_ (int sig)
{
  static const char msg[] = "Bail out! timeout: the test ran too long (tap_timeout)\n";
  ssize_t r = write (STDOUT_FILENO, msg, sizeof msg - 1);

  r = write (STDERR_FILENO, msg, sizeof msg - 1);
  (void) r;
  (void) sig;
  /* Not exit(): only async-signal-safe calls here.  Servers started by the
   * servers helpers die with us (PR_SET_PDEATHSIG, guardian process).
   */
  _exit (1);
}

/* tap_timeout: end the program with "Bail out!" after @seconds, so no test
 * can hang.  Every test program calls it first (TAP_DEFAULT_TIMEOUT = 120).
 */
static inline void
tap_timeout (unsigned seconds)
{
  struct sigaction sa = { .sa_handler = tap_alarm_ };

  sigemptyset (&sa.sa_mask);
  sigaction (SIGALRM, &sa, NULL);
  alarm (seconds);
}

#endif /* GNBD_TESTS_TAP_H */
