/* io-pread-initialize: nbd_set_pread_initialize.
 *
 * Proves: it is on by default; while on, a read that fails leaves the
 * caller's buffer all zeroes (first filled with 0xAA), whether the server
 * failed it (nbdkit error filter; structured replies on and off; nbd_pread,
 * nbd_pread_structured, nbd_aio_pread) or the library refused it before
 * sending (out of bounds, a bad flag, a request over 64 MiB, a handle not
 * connected or already shut down) — libnbd's documented "zeroed before any
 * other check"; turned off, every successful read still fills every byte
 * correctly: nbdkit pattern at unaligned places with and without
 * structured replies, and qemu-nbd qcow2 holes (HOLE chunks) read as zeroes.
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

#define K 1024
#define M (1024 * 1024)
#define ESIZE (128 * M)

static char errfile[4200];

static bool
all_zero (const unsigned char *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (b[i])
      return false;
  return true;
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

static void
errors_on (bool on)
{
  if (on) {
    FILE *f = fopen (errfile, "w");
    if (!f || fclose (f) == EOF)
      bail_out ("cannot create %s", errfile);
  }
  else
    unlink (errfile);
}

static int
chunk_cb (void *user_data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  (void) user_data; (void) subbuf; (void) count; (void) offset; (void) status; (void) error;
  return 0;
}

/* ---- Server errors: the buffer comes back zeroed ---------------------- */

static void
server_failures (const char *uri, bool sr)
{
  const char *mode = sr ? "sr" : "no sr";
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[256 * K];

  if (!h)
    bail_out ("nbd_create");
  is_int (nbd_get_pread_initialize (h), 1, "%s: pread_initialize is on by default", mode);
  must (nbd_set_request_structured_replies (h, sr));
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect", mode))
    bail_out ("%s", nbd_get_error ());
  is_int (nbd_get_structured_replies_negotiated (h), sr, "%s: negotiated as asked", mode);

  /* Some real data first, so a zeroed buffer cannot be old contents. */
  memset (buf, 0x5a, sizeof buf);
  is_int (nbd_pwrite (h, buf, sizeof buf, 0, 0), 0, "%s: write 0x5a", mode);

  errors_on (true);
  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "%s: nbd_pread fails (error filter)", mode);
  is_errno (EIO, "%s: with EIO", mode);
  ok (all_zero (buf, sizeof buf), "%s: the buffer is all zeroes", mode);

  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread_structured (h, buf, 1000, 3, (nbd_chunk_callback) { .callback = chunk_cb },
                            0) == -1,
      "%s: nbd_pread_structured fails", mode);
  ok (all_zero (buf, 1000), "%s: its buffer is all zeroes", mode);
  is_int (buf[1000], 0xaa, "%s: and nothing past the request was touched", mode);

  {
    int64_t c;
    int r = 0;

    memset (buf, 0xaa, sizeof buf);
    c = nbd_aio_pread (h, buf, 4096, 4096, NBD_NULL_COMPLETION, 0);
    ok (c > 0, "%s: nbd_aio_pread queued", mode);
    while (c > 0 && (r = nbd_aio_command_completed (h, c)) == 0)
      if (nbd_poll (h, 5000) == -1)
        break;
    is_int (r, -1, "%s: the aio read failed", mode);
    is_errno (EIO, "%s: with EIO", mode);
    ok (all_zero (buf, 4096), "%s: the aio buffer is all zeroes", mode);
  }
  errors_on (false);

  memset (buf, 0xaa, sizeof buf);
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "%s: with errors off the read works", mode);
  {
    unsigned char want[256 * K];
    memset (want, 0x5a, sizeof want);
    ok (memcmp (buf, want, sizeof buf) == 0, "%s: and returns the data", mode);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", mode);
  nbd_close (h);
}

/* ---- Refused by the library: zeroed before the checks ---------------- */

static void
refused (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  unsigned char *big = malloc (64 * M + 1);
  static unsigned char buf[4096];

  if (!h || !big)
    bail_out ("nbd_create/malloc");

  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "not connected: nbd_pread fails");
  is_errno (ENOTCONN, "not connected: with ENOTCONN");
  ok (all_zero (buf, sizeof buf), "not connected: the buffer is zeroed");

  if (!is_int (nbd_connect_uri (h, uri), 0, "refused: connect"))
    bail_out ("%s", nbd_get_error ());

  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, ESIZE - 100, 0) == -1, "out of bounds: nbd_pread fails");
  is_errno (EINVAL, "out of bounds: EINVAL");
  ok (all_zero (buf, sizeof buf), "out of bounds: the buffer is zeroed");

  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_FUA) == -1, "bad flag: nbd_pread fails");
  is_errno (EINVAL, "bad flag: EINVAL");
  ok (all_zero (buf, sizeof buf), "bad flag: the buffer is zeroed");

  memset (big, 0xaa, 64 * M + 1);
  ok (nbd_pread (h, big, 64 * M + 1, 0, 0) == -1, "64M+1: nbd_pread fails");
  is_errno (ERANGE, "64M+1: ERANGE");
  ok (all_zero (big, 64 * M + 1), "64M+1: the buffer is zeroed");

  memset (buf, 0xaa, sizeof buf);
  ok (nbd_aio_pread (h, buf, sizeof buf, ESIZE - 1, NBD_NULL_COMPLETION, 0) == -1,
      "aio out of bounds: nbd_aio_pread fails");
  is_errno (EINVAL, "aio out of bounds: EINVAL");
  ok (all_zero (buf, sizeof buf), "aio out of bounds: the buffer is zeroed");

  is_int (nbd_shutdown (h, 0), 0, "refused: shutdown");
  memset (buf, 0xaa, sizeof buf);
  ok (nbd_pread (h, buf, sizeof buf, 0, 0) == -1, "after shutdown: nbd_pread fails");
  ok (all_zero (buf, sizeof buf), "after shutdown: the buffer is zeroed");
  nbd_close (h);
  free (big);
}

/* ---- Off: successful reads still fill every byte --------------------- */

static void
no_initialize_pattern (const char *uri, bool sr)
{
  static const struct { uint64_t off; size_t count; } r[] = {
    { 0, 1 }, { 1, 7 }, { 4093, 9 }, { 65537, 65535 }, { 123, 3 * M + 5 },
  };
  const char *mode = sr ? "off, sr" : "off, no sr";
  struct nbd_handle *h = nbd_create ();
  unsigned char *buf = malloc (4 * M);

  if (!h || !buf)
    bail_out ("nbd_create/malloc");
  is_int (nbd_set_pread_initialize (h, false), 0, "%s: nbd_set_pread_initialize false", mode);
  is_int (nbd_get_pread_initialize (h), 0, "%s: reads back false", mode);
  must (nbd_set_request_structured_replies (h, sr));
  if (!is_int (nbd_connect_uri (h, uri), 0, "%s: connect to pattern", mode))
    bail_out ("%s", nbd_get_error ());
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
    memset (buf, 0xaa, r[i].count + 1);
    is_int (nbd_pread (h, buf, r[i].count, r[i].off, 0), 0, "%s: read %zu at %" PRIu64, mode,
            r[i].count, r[i].off);
    ok (is_pattern (buf, r[i].count, r[i].off), "%s: every byte is the pattern", mode);
    is_int (buf[r[i].count], 0xaa, "%s: guard byte untouched", mode);
  }
  is_int (nbd_shutdown (h, 0), 0, "%s: shutdown", mode);
  nbd_close (h);
  free (buf);
}

static void
no_initialize_holes (const char *uri)
{
  struct nbd_handle *h = nbd_create ();
  static unsigned char buf[M];
  bool right = true;

  if (!h)
    bail_out ("nbd_create");
  must (nbd_set_pread_initialize (h, false));
  if (!is_int (nbd_connect_uri (h, uri), 0, "off, qcow2: connect"))
    bail_out ("%s", nbd_get_error ());
  memset (buf, 0xaa, sizeof buf);
  is_int (nbd_pread (h, buf, sizeof buf, 0, 0), 0, "off, qcow2: read across holes");
  for (size_t i = 0; i < sizeof buf && right; i++)
    right = buf[i] == (i >= 64 * K && i < 128 * K ? 0x11 : 0);
  ok (right, "off, qcow2: data where written, zeroes in the holes");
  is_int (nbd_shutdown (h, 0), 0, "off, qcow2: shutdown");
  nbd_close (h);
}

int
main (void)
{
  struct test_server s;
  char errarg[4300];
  static const char *const qcmds[] = { "write -P 0x11 64k 64k", NULL };
  char *img;

  tap_timeout (TAP_DEFAULT_TIMEOUT);
  snprintf (errfile, sizeof errfile, "%s/pread-errors", servers_scratch_dir ());
  snprintf (errarg, sizeof errarg, "error-pread-file=%s", errfile);
  {
    const char *args[] = { "--filter=error", "memory", "size=128M", "error-pread-rate=100%",
                           errarg, NULL };
    if (server_start_nbdkit (&s, args) == -1) {
      if (errno == ENOENT)
        skip_all ("nbdkit is not installed");
      bail_out ("cannot start nbdkit");
    }
    server_failures (s.uri, true);
    server_failures (s.uri, false);
    refused (s.uri);
    is_int (server_stop (&s), 0, "nbdkit stopped");
  }
  {
    const char *args[] = { "pattern", "size=1G", NULL };
    if (server_start_nbdkit (&s, args) == -1)
      bail_out ("cannot start nbdkit pattern");
    no_initialize_pattern (s.uri, true);
    no_initialize_pattern (s.uri, false);
    is_int (server_stop (&s), 0, "nbdkit pattern stopped");
  }
  img = image_create ("qcow2", M, qcmds);
  if (!img)
    bail_out ("cannot create the image");
  {
    const char *args[] = { "-f", "qcow2", img, NULL };
    if (server_start_qemu_nbd (&s, args) == -1)
      bail_out ("cannot start qemu-nbd");
    no_initialize_holes (s.uri);
    is_int (server_stop (&s), 0, "qemu-nbd stopped");
  }
  free (img);
  return done_testing ();
}
