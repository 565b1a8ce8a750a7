/* fuzz-record.c: the seed corpus recorder.  For each scenario it starts a
 * real server (nbdkit, qemu-nbd, nbd-server), runs the harness's session
 * (fuzz-session.c) with the server's real bytes relayed through a real
 * socketpair, and writes what the server sent, in the harness's input
 * format, to OUTDIR/SCENARIO.  Then it replays the file it wrote, over the
 * in-memory socket as the harness does (fuzz-socket.h), and checks that the
 * replay saw exactly what the live session saw.
 *
 *   fuzz-record OUTDIR [SCENARIO...]     (all scenarios without names)
 *   fuzz-record --list
 *
 * Owns the servers it starts (one at a time, stopped by PID) and the
 * connection to each; never writes outside OUTDIR.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz-session.h"
#include "servers.h"

/* How long the server may stay silent before its stream counts as ended. */
#define SILENCE_MS 3000

enum server { NBDKIT, QEMU_NBD, NBD_SERVER };
enum image { NO_IMAGE, QCOW2_HOLES, QCOW2_BITMAP, RAW_HOLES };

/* Header bits, short. */
#define OPT FUZZ_H0_OPT_MODE
#define NOSR FUZZ_H0_NO_SR
#define MB FUZZ_H0_META_BASE
#define MQ FUZZ_H0_META_QEMU
#define FI FUZZ_H0_FULL_INFO
#define SO FUZZ_H0_STRICT_OFF
#define NF FUZZ_H0_NO_FIXED
#define NZ FUZZ_H0_NO_NOZEROES
#define MR FUZZ_H1_MANUAL_RETIRE
#define DBG FUZZ_H1_DEBUG
#define NBS FUZZ_H1_NO_BLOCK_SIZE
#define NTF FUZZ_H1_NOTIFY
#define DISC FUZZ_H2_DISCONNECT
#define FAIL FUZZ_H2_FAIL_CHUNK
#define LARGE FUZZ_H2_LARGE
#define TLSA FUZZ_H2_TLS_ALLOW
#define TLSR FUZZ_H2_TLS_REQUIRE
/* Export names (fuzz-session.c's export_names) and slice indexes. */
#define N_DISK 1
#define N_NONE 2
#define S_1 1
#define S_3 3
#define S_7 5
#define S_16 8
#define S_512 12
#define S_4096 14

struct scenario {
  const char *name;
  enum server server;
  enum image image;
  const char *args[16];         /* "@IMG" stands for the image's path */
  uint8_t hdr[FUZZ_HDR_LEN];
};

#define MEM "memory", "size=1M"
#define BSP "--filter=blocksize-policy", MEM, "blocksize-minimum=512", \
    "blocksize-preferred=4096", "blocksize-maximum=65536", "blocksize-error-policy=error"

static const struct scenario scenarios[] = {
  { "nbdkit-memory", NBDKIT, NO_IMAGE, { MEM }, { MB, 0, DISC, 0 } },
  { "nbdkit-memory-slice7", NBDKIT, NO_IMAGE, { MEM }, { MB, S_7, DISC, 0 } },
  { "nbdkit-memory-slice1-notify", NBDKIT, NO_IMAGE, { MEM }, { MB, S_1 | NTF | MR, DISC, 0 } },
  { "nbdkit-memory-large", NBDKIT, NO_IMAGE, { MEM }, { MB, S_4096, DISC | LARGE, 0 } },
  { "nbdkit-memory-client-no-sr", NBDKIT, NO_IMAGE, { MEM }, { MB | NOSR, S_512, DISC | LARGE, 0 } },
  { "nbdkit-no-sr", NBDKIT, NO_IMAGE, { "--no-sr", MEM }, { MB, S_512, DISC, 0 } },
  { "nbdkit-oldstyle", NBDKIT, NO_IMAGE, { "-o", MEM }, { 0, 0, DISC, 0 } },
  { "nbdkit-oldstyle-slice3", NBDKIT, NO_IMAGE, { "-o", MEM }, { MB, S_3, DISC | FAIL, 0 } },
  { "nbdkit-blocksize-policy", NBDKIT, NO_IMAGE, { BSP }, { MB, 0, DISC, 0 } },
  { "nbdkit-blocksize-policy-strict-off", NBDKIT, NO_IMAGE, { BSP },
    { MB | SO, S_16, DISC, 0 } },
  { "nbdkit-blocksize-policy-no-request", NBDKIT, NO_IMAGE, { BSP }, { MB, NBS, DISC, 0 } },
  { "nbdkit-error", NBDKIT, NO_IMAGE,
    { "--filter=error", MEM, "error-rate=40%", "error=EIO" }, { MB, 0, DISC, 0 } },
  { "nbdkit-error-no-sr", NBDKIT, NO_IMAGE,
    { "--filter=error", MEM, "error-rate=40%", "error=ENOSPC" }, { MB | NOSR, S_512, DISC, 0 } },
  { "nbdkit-opt", NBDKIT, NO_IMAGE, { MEM }, { OPT | MB | FI, 0, DISC, 0 } },
  { "nbdkit-opt-exports", NBDKIT, NO_IMAGE,
    { "--filter=exportname", MEM, "exportname=disk", "exportname=other",
      "exportdesc=fixed:a description", "exportname-list=explicit" },
    { OPT | MB | FI, S_4096, N_DISK | DISC, 0 } },
  { "nbdkit-opt-no-sr", NBDKIT, NO_IMAGE, { MEM }, { OPT | NOSR | MB, 0, DISC, 0 } },
  { "nbdkit-not-fixed", NBDKIT, NO_IMAGE, { MEM }, { NF | MB, 0, DISC, 0 } },
  { "nbdkit-not-fixed-zeroes", NBDKIT, NO_IMAGE, { MEM }, { NF | NZ, S_7, DISC, 0 } },
  { "nbdkit-small-strict-off", NBDKIT, NO_IMAGE, { "memory", "size=4k" },
    { MB | SO, 0, DISC, 0 } },
  { "nbdkit-debug-manual-retire", NBDKIT, NO_IMAGE, { MEM },
    { MB, S_16 | DBG | MR, DISC | FAIL, 0 } },
  { "nbdkit-readonly", NBDKIT, NO_IMAGE, { "-r", MEM }, { MB, 0, DISC, 0 } },
  { "nbdkit-readonly-strict-off", NBDKIT, NO_IMAGE, { "-r", MEM }, { MB | SO, NTF, DISC, 0 } },
  { "nbdkit-no-disconnect", NBDKIT, NO_IMAGE, { MEM }, { MB, 0, 0, 0 } },
  { "nbdkit-tls-allow", NBDKIT, NO_IMAGE, { MEM }, { MB, 0, DISC | TLSA, 0 } },
  { "nbdkit-tls-require", NBDKIT, NO_IMAGE, { MEM }, { MB, 0, DISC | TLSR, 0 } },
  { "nbdkit-sparse-random", NBDKIT, NO_IMAGE,
    { "sparse-random", "size=1M", "seed=1", "percent=50", "runlength=4096" },
    { MB, 0, DISC, 0 } },
  { "qemu-qcow2", QEMU_NBD, QCOW2_HOLES, { "-f", "qcow2", "@IMG" }, { MB, 0, DISC, 0 } },
  { "qemu-qcow2-far", QEMU_NBD, QCOW2_HOLES, { "-f", "qcow2", "@IMG" },
    { MB, S_512 | MR, DISC, 16 } },
  { "qemu-qcow2-depth", QEMU_NBD, QCOW2_HOLES, { "-A", "-f", "qcow2", "@IMG" },
    { MB | MQ, 0, DISC, 0 } },
  { "qemu-qcow2-bitmap", QEMU_NBD, QCOW2_BITMAP, { "-B", "bitmap0", "-f", "qcow2", "@IMG" },
    { MB | MQ, S_7 | NTF, DISC, 0 } },
  { "qemu-opt", QEMU_NBD, QCOW2_BITMAP,
    { "-A", "-B", "bitmap0", "-x", "disk", "-f", "qcow2", "@IMG" },
    { OPT | MB | MQ | FI, 0, N_DISK | DISC, 0 } },
  { "qemu-no-sr", QEMU_NBD, QCOW2_HOLES, { "-f", "qcow2", "@IMG" },
    { MB | NOSR, 0, DISC, 0 } },
  { "qemu-readonly-strict-off", QEMU_NBD, QCOW2_HOLES, { "-r", "-f", "qcow2", "@IMG" },
    { MB | SO, 0, DISC | FAIL, 0 } },
  { "qemu-raw-large", QEMU_NBD, RAW_HOLES, { "-f", "raw", "@IMG" },
    { MB, S_512, DISC | LARGE, 0 } },
  { "qemu-raw-tls-allow", QEMU_NBD, RAW_HOLES, { "-f", "raw", "@IMG" },
    { MB | MQ, S_16, DISC | TLSA, 0 } },
  { "qemu-wrong-name", QEMU_NBD, QCOW2_HOLES, { "-x", "disk", "-f", "qcow2", "@IMG" },
    { MB, 0, N_NONE | DISC, 0 } },
  { "qemu-opt-wrong-name", QEMU_NBD, QCOW2_HOLES, { "-x", "disk", "-f", "qcow2", "@IMG" },
    { OPT | MB, 0, N_NONE | DISC, 0 } },
  { "nbd-server", NBD_SERVER, RAW_HOLES, { NULL }, { MB, 0, N_DISK | DISC, 0 } },
  { "nbd-server-opt", NBD_SERVER, RAW_HOLES, { NULL }, { OPT | FI | MB, 0, N_DISK | DISC, 0 } },
};

#define NR_SCENARIOS (sizeof scenarios / sizeof scenarios[0])

/* ---- Images ------------------------------------------------------------- */

/* 1 MiB; qcow2 clusters are 64 KiB: data, hole, zeroes, data, then holes. */
static const char *const holes_cmds[] = {
  "write -P 0x11 0 8k", "write -P 0x22 12k 2k", "write -z 128k 64k", "write -P 0x33 192k 4k",
  NULL,
};

static char *
make_image (enum image img)
{
  char *path;

  switch (img) {
  case QCOW2_HOLES:
    return image_create ("qcow2", 1 << 20, holes_cmds);
  case QCOW2_BITMAP: {
    path = image_create ("qcow2", 1 << 20, holes_cmds);
    if (!path)
      return NULL;
    const char *add[] = { "qemu-img", "bitmap", "--add", path, "bitmap0", NULL };
    const char *dirty[] = { "qemu-io", "-f", "qcow2", "-c", "write -P 0x44 64k 4k", "-c",
                            "write -P 0x55 256k 64k", path, NULL };
    if (servers_run (add, 60) != 0 || servers_run (dirty, 60) != 0) {
      free (path);
      return NULL;
    }
    return path;
  }
  case RAW_HOLES: {
    static const char *const cmds[] = {
      "write -P 0x11 0 4k", "write -P 0x22 12k 4k", "write -P 0x33 64k 4k", NULL,
    };
    return image_create ("raw", 1 << 20, cmds);
  }
  case NO_IMAGE:
    break;
  }
  return NULL;
}

/* ---- The relay ---------------------------------------------------------- */

struct bytes {
  uint8_t *p;
  size_t len, cap;
};

static void
append (struct bytes *b, const void *p, size_t n)
{
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;

    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc (b->p, cap);
    if (!b->p) {
      perror ("realloc");
      exit (EXIT_FAILURE);
    }
    b->cap = cap;
  }
  memcpy (b->p + b->len, p, n);
  b->len += n;
}

struct recorder {
  int fd;                       /* to the real server; -1 once its stream ended */
  struct bytes phase;           /* what the server sent in the phase running */
  struct bytes out;             /* the input file: header, then segments */
};

static void
end_stream (struct recorder *r)
{
  if (r->fd >= 0)
    close (r->fd);
  r->fd = -1;
}

static int
rec_feed (struct fuzz_session *s, void *opaque)
{
  struct recorder *r = opaque;
  static char buf[65536];
  struct pollfd pfd;
  ssize_t n;

  if (r->fd < 0)
    return 0;
  pfd.fd = r->fd;
  pfd.events = POLLIN;
  if (poll (&pfd, 1, SILENCE_MS) <= 0) {
    end_stream (r);
    return 0;
  }
  n = recv (r->fd, buf, sizeof buf, 0);
  if (n <= 0) {
    end_stream (r);
    return 0;
  }
  append (&r->phase, buf, n);
  fuzz_session_send (s, buf, n);
  return 1;
}

static void
rec_client_bytes (void *opaque, const void *buf, size_t len)
{
  struct recorder *r = opaque;
  const char *p = buf;

  while (len > 0 && r->fd >= 0) {
    struct pollfd pfd = { .fd = r->fd, .events = POLLOUT };
    ssize_t n;

    if (poll (&pfd, 1, SILENCE_MS) <= 0)
      return;
    n = send (r->fd, p, len, MSG_NOSIGNAL);
    if (n <= 0)
      return;                   /* the server went; its stream will end */
    p += n;
    len -= n;
  }
}

/* Close the phase's bytes into segments of at most 65535. */
static void
rec_boundary (void *opaque)
{
  struct recorder *r = opaque;

  for (size_t pos = 0; pos < r->phase.len;) {
    size_t n = r->phase.len - pos > 65535 ? 65535 : r->phase.len - pos;
    uint8_t len[2] = { (uint8_t) (n >> 8), (uint8_t) n };

    append (&r->out, len, 2);
    append (&r->out, r->phase.p + pos, n);
    pos += n;
  }
  r->phase.len = 0;
}

static int
connect_unix (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd == -1 || strlen (path) >= sizeof sun.sun_path)
    return -1;
  strcpy (sun.sun_path, path);
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    close (fd);
    return -1;
  }
  return fd;
}

/* ---- One scenario ------------------------------------------------------- */

static int
start_server (const struct scenario *sc, struct test_server *srv, const char *image)
{
  const char *args[17];
  size_t i;

  for (i = 0; sc->args[i]; i++)
    args[i] = strcmp (sc->args[i], "@IMG") == 0 ? image : sc->args[i];
  args[i] = NULL;
  switch (sc->server) {
  case NBDKIT: return server_start_nbdkit (srv, args);
  case QEMU_NBD: return server_start_qemu_nbd (srv, args);
  case NBD_SERVER: return server_start_nbd_server (srv, image, "disk", NULL);
  }
  return -1;
}

static bool
record (const struct scenario *sc, const char *outdir)
{
  struct test_server srv = { 0 };
  struct recorder r = { .fd = -1 };
  struct fuzz_source src = { .feed = rec_feed, .client_bytes = rec_client_bytes,
                             .boundary = rec_boundary, .opaque = &r, .socketpair = true };
  struct fuzz_log live = { 0 }, replay = { 0 };
  char *image = NULL, *path = NULL;
  bool ok = false;
  FILE *fp;

  if (sc->image != NO_IMAGE && !(image = make_image (sc->image))) {
    fprintf (stderr, "fuzz-record: %s: cannot make the image\n", sc->name);
    return false;
  }
  if (start_server (sc, &srv, image) == -1) {
    fprintf (stderr, "fuzz-record: %s: cannot start %s\n", sc->name,
             sc->server == NBDKIT ? "nbdkit" : sc->server == QEMU_NBD ? "qemu-nbd" : "nbd-server");
    goto out;
  }
  r.fd = connect_unix (srv.sock);
  if (r.fd == -1) {
    fprintf (stderr, "fuzz-record: %s: connect %s: %m\n", sc->name, srv.sock);
    goto out;
  }
  append (&r.out, sc->hdr, FUZZ_HDR_LEN);
  fuzz_session_run (sc->hdr, &src, &live);
  rec_boundary (&r);
  end_stream (&r);

  fuzz_replay (r.out.p, r.out.len, &replay);
  if (live.len != replay.len || memcmp (live.buf, replay.buf, live.len) != 0) {
    fprintf (stderr, "fuzz-record: %s: the replay differs from the live session\n"
             "---- live\n%.*s---- replay\n%.*s", sc->name, (int) live.len, live.buf,
             (int) replay.len, replay.buf);
    goto out;
  }
  if (asprintf (&path, "%s/%s", outdir, sc->name) == -1)
    goto out;
  fp = fopen (path, "wb");
  if (!fp || fwrite (r.out.p, 1, r.out.len, fp) != r.out.len || fclose (fp) != 0) {
    fprintf (stderr, "fuzz-record: %s: %m\n", path);
    goto out;
  }
  printf ("%-40s %6zu bytes\n%.*s", sc->name, r.out.len, (int) live.len, live.buf);
  ok = true;
out:
  end_stream (&r);
  if (srv.pid)
    server_stop (&srv);
  free (r.phase.p);
  free (r.out.p);
  fuzz_log_free (&live);
  fuzz_log_free (&replay);
  free (image);
  free (path);
  return ok;
}

int
main (int argc, char **argv)
{
  int failed = 0, done = 0;

  signal (SIGPIPE, SIG_IGN);
  if (argc == 2 && strcmp (argv[1], "--list") == 0) {
    for (size_t i = 0; i < NR_SCENARIOS; i++)
      printf ("%s\n", scenarios[i].name);
    return EXIT_SUCCESS;
  }
  if (argc < 2) {
    fprintf (stderr, "usage: fuzz-record OUTDIR [SCENARIO...] | --list\n");
    return 2;
  }
  if (mkdir (argv[1], 0755) == -1 && errno != EEXIST) {
    fprintf (stderr, "fuzz-record: %s: %m\n", argv[1]);
    return EXIT_FAILURE;
  }
  for (size_t i = 0; i < NR_SCENARIOS; i++) {
    bool wanted = argc == 2;

    for (int a = 2; a < argc; a++)
      wanted |= strcmp (argv[a], scenarios[i].name) == 0;
    if (!wanted)
      continue;
    done++;
    if (!record (&scenarios[i], argv[1]))
      failed++;
  }
  if (done == 0) {
    fprintf (stderr, "fuzz-record: no such scenario (see --list)\n");
    return 2;
  }
  printf ("fuzz-record: %d recorded, %d failed\n", done - failed, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
