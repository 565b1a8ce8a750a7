/* fault-durability: no acknowledged write is lost when the server process
 * dies, and a failed write is never reported done.
 *
 * Proves, on a file exported by nbdkit's file plugin (and by qemu-nbd):
 *  - 16 writes with FUA and 16 plain writes followed by a successful
 *    nbd_flush, all acknowledged, are in the file after the server is
 *    killed with SIGKILL (no clean shutdown): read back with pread(2) from
 *    the file itself, and through a new server started on the same file
 *    after a reconnect.  (The page cache survives a process crash, so this
 *    is what a server crash can lose; a power cut cannot be tested here.)
 *  - nbdkit's log filter, placed between the error filter and the plugin,
 *    shows every FUA write reached the plugin with fua=1 and the flush
 *    after every plain write had returned;
 *  - writes failed by the error filter (error-pwrite-file: only while a
 *    trigger file exists), aio and sync: each completion callback gets
 *    ENOSPC, nbd_aio_command_completed returns -1 with ENOSPC, nbd_pwrite
 *    returns -1 with ENOSPC and "nbd_pwrite: ..."; none reached the plugin
 *    (the log has no write for them), and after the crash and restart the
 *    regions hold their old data (a region written before) or zeroes
 *    (never written): a failed write's data is never counted;
 *  - a flush after the failed writes succeeds and does not revive them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define REG (64 * 1024)
#define NREG 48
#define DISK (NREG * REG * 2)   /* regions at every other 64 KiB */

/* Regions: 0-15 FUA writes, 16-31 plain writes + flush, 32-39 written
 * (FUA) then failed writes, 40-47 only failed writes. */
enum { FUA0 = 0, PLAIN0 = 16, OLD0 = 32, NEVER0 = 40 };

static uint64_t
reg_off (int r)
{
  return (uint64_t) r * REG * 2;
}

/* Distinct contents for region @r, generation @g (0: zeroes). */
static void
fill (uint8_t *buf, int r, int g)
{
  uint64_t x = (uint64_t) (r + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t) g << 40;

  if (g == 0) {
    memset (buf, 0, REG);
    return;
  }
  for (size_t i = 0; i < REG; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy (buf + i, &x, 8);
  }
}

static bool
error_prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':' && e[n + 1] == ' ';
}

struct rec {
  unsigned calls;
  int error;
};

static int
completion_cb (void *user_data, int *error)
{
  struct rec *r = user_data;

  r->calls++;
  r->error = *error;
  return 0;                     /* retired by nbd_aio_command_completed */
}

/* Issue writes to regions [r0, r1) (gen @g, @flags), wait for all, and
 * check each: want_err 0 = all succeed, else all fail with want_err. */
static void
aio_writes (struct nbd_handle *h, const char *what, int r0, int r1, int g, uint32_t flags,
            int want_err)
{
  static uint8_t bufs[NREG][REG];
  struct rec rec[NREG];
  int64_t c[NREG];
  unsigned cb_ok = 0, cc_ok = 0, msg_ok = 0;

  memset (rec, 0, sizeof rec);
  for (int r = r0; r < r1; r++) {
    fill (bufs[r], r, g);
    c[r] = nbd_aio_pwrite (h, bufs[r], REG, reg_off (r),
                           (nbd_completion_callback) { .callback = completion_cb,
                                                       .user_data = &rec[r] }, flags);
    if (c[r] == -1)
      bail_out ("%s: nbd_aio_pwrite: %s", what, nbd_get_error ());
  }
  for (int i = 0; i < 200 && nbd_aio_in_flight (h) > 0; i++)
    if (nbd_poll (h, 100) == -1)
      bail_out ("%s: nbd_poll: %s", what, nbd_get_error ());
  for (int r = r0; r < r1; r++) {
    int cc;

    cb_ok += rec[r].calls == 1 && rec[r].error == want_err;
    cc = nbd_aio_command_completed (h, (uint64_t) c[r]);
    if (want_err == 0)
      cc_ok += cc == 1;
    else {
      cc_ok += cc == -1 && nbd_get_errno () == want_err;
      msg_ok += cc == -1 && error_prefix_is ("nbd_aio_command_completed");
    }
  }
  is_int (cb_ok, r1 - r0, "%s: %d completion callbacks, each once with %s", what, r1 - r0,
          want_err ? tap_errname_ (want_err) : "no error");
  is_int (cc_ok, r1 - r0, "%s: nbd_aio_command_completed says %s for each", what,
          want_err ? "-1 and the errno" : "1 (done)");
  if (want_err)
    is_int (msg_ok, r1 - r0, "%s: with messages \"nbd_aio_command_completed: ...\"", what);
}

/* What region @r must hold now: the generation of its last good write. */
static int expect_gen[NREG];

/* Check every region of @path with pread(2), or through @h. */
static void
verify (const char *what, const char *path, struct nbd_handle *h)
{
  static uint8_t got[REG], want[REG];
  unsigned good = 0;
  int fd = -1;

  if (path && (fd = open (path, O_RDONLY | O_CLOEXEC)) == -1)
    bail_out ("open %s: %m", path);
  for (int r = 0; r < NREG; r++) {
    bool same;

    fill (want, r, expect_gen[r]);
    if (fd >= 0) {
      memset (got, 0xee, REG);
      same = pread (fd, got, REG, (off_t) reg_off (r)) == REG && memcmp (got, want, REG) == 0;
    }
    else
      same = nbd_pread (h, got, REG, reg_off (r), 0) == 0 && memcmp (got, want, REG) == 0;
    if (!same)
      diag ("%s: region %d (offset %" PRIu64 ") does not hold generation %d", what, r,
            reg_off (r), expect_gen[r]);
    good += same;
  }
  if (fd >= 0)
    close (fd);
  is_int (good, NREG, "%s: all %d regions hold their last acknowledged data "
          "(FUA, flushed, old under failed writes, zeroes)", what, NREG);
}

static void
kill_server (struct test_server *s, const char *what)
{
  if (kill (s->pid, SIGKILL) == -1)
    bail_out ("kill: %m");
  is_int (server_stop (s), 0, "%s: killed with SIGKILL and reaped", what);
  ok (s->status != -1 && WIFSIGNALED (s->status) && WTERMSIG (s->status) == SIGKILL,
      "%s: it died of SIGKILL, no clean shutdown (wait status 0x%x)", what, (unsigned) s->status);
}

static struct nbd_handle *
connect_to (struct test_server *s, const char *what)
{
  struct nbd_handle *h = nbd_create ();

  if (!h || nbd_connect_uri (h, s->uri) == -1)
    bail_out ("%s: connect: %s", what, nbd_get_error ());
  return h;
}

/* The log filter's view: write lines per region, their fua flag, and
 * whether the first successful flush came after every plain write had
 * returned. */
static void
check_log (const char *logpath)
{
  FILE *f = fopen (logpath, "r");
  char line[512];
  unsigned writes[NREG] = { 0 }, fua[NREG] = { 0 };
  unsigned long pend_id[NREG] = { 0 };
  bool plain_done[NREG] = { false }, flush_after = false, flush_seen = false, stray = false;
  unsigned long flush_id = 0;

  if (!f)
    bail_out ("open %s: %m", logpath);
  while (fgets (line, sizeof line, f)) {
    unsigned long id;
    unsigned long long off, cnt;
    unsigned fl;
    char *p;

    if ((p = strstr (line, " Write id=")) &&
        sscanf (p, " Write id=%lu offset=%llx count=%llx fua=%u", &id, &off, &cnt, &fl) == 4) {
      int r = (int) (off / (REG * 2));

      if (off % (REG * 2) || cnt != REG || r >= NREG) {
        stray = true;
        continue;
      }
      writes[r]++;
      fua[r] += fl == 1;
      pend_id[r] = id;
    }
    else if ((p = strstr (line, " ...Write id=")) && sscanf (p, " ...Write id=%lu", &id) == 1) {
      for (int r = PLAIN0; r < OLD0; r++)
        if (pend_id[r] == id && strstr (p, "return=0"))
          plain_done[r] = true;
    }
    else if (!flush_seen && (p = strstr (line, " Flush id=")) &&
             sscanf (p, " Flush id=%lu", &flush_id) == 1) {
      flush_after = true;
      for (int r = PLAIN0; r < OLD0; r++)
        flush_after &= plain_done[r];
    }
    else if (!flush_seen && flush_id && (p = strstr (line, " ...Flush id=")) &&
             sscanf (p, " ...Flush id=%lu", &id) == 1 && id == flush_id) {
      flush_seen = strstr (p, "return=0") != NULL;
      flush_after &= flush_seen;
    }
  }
  fclose (f);
  {
    unsigned fua_ok = 0, plain_ok = 0, old_ok = 0, never_ok = 0;

    for (int r = FUA0; r < PLAIN0; r++)
      fua_ok += writes[r] == 1 && fua[r] == 1;
    for (int r = PLAIN0; r < OLD0; r++)
      plain_ok += writes[r] == 1 && fua[r] == 0;
    for (int r = OLD0; r < NEVER0; r++)
      old_ok += writes[r] == 1;
    for (int r = NEVER0; r < NREG; r++)
      never_ok += writes[r] == 0;
    is_int (fua_ok, PLAIN0 - FUA0, "log: each FUA write reached the plugin once, with fua=1");
    is_int (plain_ok, OLD0 - PLAIN0, "log: each plain write reached the plugin once, fua=0");
    ok (flush_seen && flush_after, "log: the flush returned 0 and came after every plain write "
        "had returned");
    is_int (old_ok, NEVER0 - OLD0, "log: regions with failed writes saw only their first, "
            "good write");
    is_int (never_ok, NREG - NEVER0, "log: failed writes never reached the plugin");
    ok (!stray, "log: no write anywhere else");
  }
}

static void
nbdkit_file (void)
{
  char *path = image_create_raw (DISK);
  char trigger[4200], logpath[4200], trigarg[4300], logarg[4300];
  struct test_server srv;
  struct nbd_handle *h;
  static uint8_t buf[REG];

  if (!path)
    bail_out ("image_create_raw");
  snprintf (trigger, sizeof trigger, "%s/fail-writes", servers_scratch_dir ());
  snprintf (logpath, sizeof logpath, "%s/durability.log", servers_scratch_dir ());
  snprintf (trigarg, sizeof trigarg, "error-pwrite-file=%s", trigger);
  snprintf (logarg, sizeof logarg, "logfile=%s", logpath);
  memset (expect_gen, 0, sizeof expect_gen);
  {
    const char *args[] = { "--filter=error", "--filter=log", "file", path, logarg,
                           "error-pwrite=ENOSPC", "error-pwrite-rate=100%", trigarg, NULL };

    if (server_start_nbdkit (&srv, args) == -1)
      bail_out ("cannot start nbdkit");
  }
  h = connect_to (&srv, "nbdkit file");
  is_int (nbd_can_fua (h), 1, "nbdkit file: can FUA");
  is_int (nbd_can_flush (h), 1, "nbdkit file: can flush");

  aio_writes (h, "FUA writes", FUA0, PLAIN0, 1, LIBNBD_CMD_FLAG_FUA, 0);
  aio_writes (h, "plain writes", PLAIN0, OLD0, 1, 0, 0);
  is_int (nbd_flush (h, 0), 0, "nbd_flush after the plain writes succeeds");
  aio_writes (h, "FUA writes to be overwritten", OLD0, NEVER0, 1, LIBNBD_CMD_FLAG_FUA, 0);
  for (int r = 0; r < NEVER0; r++)
    expect_gen[r] = 1;

  {
    int fd = open (trigger, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

    if (fd == -1 || close (fd) == -1)
      bail_out ("create %s: %m", trigger);
  }
  aio_writes (h, "failed writes over old data", OLD0, NEVER0, 2, LIBNBD_CMD_FLAG_FUA, ENOSPC);
  aio_writes (h, "failed writes to fresh regions", NEVER0, NREG, 2, LIBNBD_CMD_FLAG_FUA, ENOSPC);
  fill (buf, NEVER0, 3);
  is_int (nbd_pwrite (h, buf, REG, reg_off (NEVER0), LIBNBD_CMD_FLAG_FUA), -1,
          "sync nbd_pwrite while writes fail: -1");
  is_errno (ENOSPC, "sync nbd_pwrite: ENOSPC");
  ok (error_prefix_is ("nbd_pwrite"), "sync nbd_pwrite: message %s", nbd_get_error ());
  is_int (nbd_flush (h, 0), 0, "nbd_flush after the failed writes succeeds");
  if (unlink (trigger) == -1)
    bail_out ("unlink %s: %m", trigger);

  kill_server (&srv, "nbdkit file");
  nbd_close (h);
  verify ("nbdkit file, after the crash, pread(2) of the file", path, NULL);
  check_log (logpath);

  {
    const char *args[] = { "file", path, NULL };

    if (server_start_nbdkit (&srv, args) == -1)
      bail_out ("cannot restart nbdkit");
  }
  h = connect_to (&srv, "nbdkit file restarted");
  verify ("nbdkit file, restarted on the same file, read over NBD", NULL, h);
  nbd_shutdown (h, 0);
  nbd_close (h);
  is_int (server_stop (&srv), 0, "nbdkit file restarted: stopped");
  free (path);
}

/* The same crash with qemu-nbd (no error injection there). */
static void
qemu_nbd_file (void)
{
  char *path = image_create_raw (DISK);
  struct test_server srv;
  struct nbd_handle *h;
  const char *args[] = { "-f", "raw", NULL, NULL };

  if (!path)
    bail_out ("image_create_raw");
  args[2] = path;
  memset (expect_gen, 0, sizeof expect_gen);
  if (server_start_qemu_nbd (&srv, args) == -1)
    bail_out ("cannot start qemu-nbd");
  h = connect_to (&srv, "qemu-nbd");
  is_int (nbd_can_fua (h), 1, "qemu-nbd: can FUA");
  is_int (nbd_can_flush (h), 1, "qemu-nbd: can flush");
  aio_writes (h, "qemu-nbd: FUA writes", FUA0, PLAIN0, 4, LIBNBD_CMD_FLAG_FUA, 0);
  aio_writes (h, "qemu-nbd: plain writes", PLAIN0, OLD0, 4, 0, 0);
  is_int (nbd_flush (h, 0), 0, "qemu-nbd: nbd_flush succeeds");
  for (int r = 0; r < OLD0; r++)
    expect_gen[r] = 4;
  kill_server (&srv, "qemu-nbd");
  nbd_close (h);
  verify ("qemu-nbd, after the crash, pread(2) of the file", path, NULL);
  if (server_start_qemu_nbd (&srv, args) == -1)
    bail_out ("cannot restart qemu-nbd");
  h = connect_to (&srv, "qemu-nbd restarted");
  verify ("qemu-nbd, restarted on the same file, read over NBD", NULL, h);
  nbd_shutdown (h, 0);
  nbd_close (h);
  is_int (server_stop (&srv), 0, "qemu-nbd restarted: stopped");
  free (path);
}

int
main (void)
{
  tap_timeout (120);
  nbdkit_file ();
  qemu_nbd_file ();
  return done_testing ();
}
