/* tls-large: large and many transfers over TLS arrive intact.  Requests of
 * every size — 32 MiB, odd sizes that never fill a TLS record, 1 byte, a
 * thousand 512-byte ones in flight at once — are checked against a shadow
 * copy; replies that span many records (nbdkit pattern, 128 MiB) and
 * structured replies with holes (qemu-nbd) are checked byte for byte.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

#define MIB (1024 * 1024)
#define MEM_SIZE (96 * MIB)

static struct tls_material m;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

static uint64_t rng = 88172645463325252ull;

static uint64_t
next_rand (void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static struct nbd_handle *
connect_tls (const struct test_server *srv, bool psk, const char *what)
{
  struct nbd_handle *h = nbd_create ();
  int rc;

  must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
  if (psk) {
    must (nbd_set_tls_psk_file (h, m.psk_file));
    must (nbd_set_tls_username (h, "alice"));
  }
  else
    must (nbd_set_tls_certificates (h, m.client_dir));
  if (srv->export_name && *srv->export_name)
    must (nbd_set_export_name (h, srv->export_name));
  rc = nbd_connect_unix (h, srv->sock);
  if (!is_int (rc, 0, "%s: connect (%s)", what, errmsg ()) ||
      !is_int (nbd_get_tls_negotiated (h), 1, "%s: TLS", what))
    bail_out ("%s: no TLS connection", what);
  return h;
}

static int
count_cb (void *data, int *error)
{
  int *c = data;

  c[0]++;
  if (*error)
    c[1]++;
  return 1;
}

/* Random writes and reads against a shadow copy of the disk. */
static void
shadow_test (struct nbd_handle *h, const char *what)
{
  char *shadow = calloc (1, MEM_SIZE), *buf = malloc (32 * MIB), *small;
  int rc, counts[2] = { 0, 0 };
  bool same = true;

  /* Two requests of the largest size, straight through. */
  for (size_t i = 0; i < 32 * MIB; i++)
    buf[i] = (char) next_rand ();
  rc = nbd_pwrite (h, buf, 32 * MIB, 8 * MIB, 0);
  is_int (rc, 0, "%s: 32 MiB pwrite (%s)", what, errmsg ());
  memcpy (shadow + 8 * MIB, buf, 32 * MIB);
  memset (buf, 0, 32 * MIB);
  rc = nbd_pread (h, buf, 32 * MIB, 8 * MIB, 0);
  is_int (rc, 0, "%s: 32 MiB pread (%s)", what, errmsg ());
  ok (memcmp (buf, shadow + 8 * MIB, 32 * MIB) == 0, "%s: 32 MiB intact", what);

  /* Odd sizes at odd offsets, sync, checked one by one. */
  for (int i = 0; i < 200 && same; i++) {
    size_t len = 1 + next_rand () % (3 * MIB);
    uint64_t off = next_rand () % (MEM_SIZE - len);

    if (i % 2 == 0) {
      for (size_t j = 0; j < len; j++)
        buf[j] = (char) next_rand ();
      if (nbd_pwrite (h, buf, len, off, 0) == -1) {
        diag ("pwrite %zu at %" PRIu64 ": %s", len, off, errmsg ());
        same = false;
      }
      memcpy (shadow + off, buf, len);
    }
    else if (nbd_pread (h, buf, len, off, 0) == -1 || memcmp (buf, shadow + off, len) != 0) {
      diag ("pread %zu at %" PRIu64 ": %s", len, off, errmsg ());
      same = false;
    }
  }
  ok (same, "%s: 200 requests of odd sizes (1 byte to 3 MiB) agree with the shadow", what);
  rc = nbd_pread (h, buf, 1, MEM_SIZE - 1, 0);
  ok (rc == 0 && buf[0] == shadow[MEM_SIZE - 1], "%s: a 1-byte read at the end", what);

  /* A thousand small writes in flight, then a thousand small reads. */
  small = malloc (1000 * 512);
  for (size_t j = 0; j < 1000 * 512; j++)
    small[j] = (char) next_rand ();
  for (int i = 0; i < 1000; i++)
    if (nbd_aio_pwrite (h, small + i * 512, 512, (uint64_t) i * 1024, (nbd_completion_callback) {
                          .callback = count_cb, .user_data = counts }, 0) == -1)
      bail_out ("aio_pwrite: %s", errmsg ());
  while (counts[0] < 1000)
    if (nbd_poll (h, 10000) <= 0)
      bail_out ("poll: %s", errmsg ());
  is_int (counts[1], 0, "%s: 1000 small writes in flight succeeded", what);
  for (int i = 0; i < 1000; i++)
    memcpy (shadow + (uint64_t) i * 1024, small + i * 512, 512);
  counts[0] = counts[1] = 0;
  memset (buf, 0, 1000 * 512);
  for (int i = 0; i < 1000; i++)
    if (nbd_aio_pread (h, buf + i * 512, 512, (uint64_t) i * 1024, (nbd_completion_callback) {
                         .callback = count_cb, .user_data = counts }, 0) == -1)
      bail_out ("aio_pread: %s", errmsg ());
  while (counts[0] < 1000)
    if (nbd_poll (h, 10000) <= 0)
      bail_out ("poll: %s", errmsg ());
  is_int (counts[1], 0, "%s: 1000 small reads in flight succeeded", what);
  ok (memcmp (buf, small, 1000 * 512) == 0, "%s: and returned what was written", what);

  /* Random sizes in flight, 16 at a time, over the whole disk. */
  {
    char *big = malloc (MEM_SIZE);
    uint64_t off = 0;
    int issued = 0;

    counts[0] = counts[1] = 0;
    while (off < MEM_SIZE) {
      size_t len = 1 + next_rand () % (2 * MIB);

      if (len > MEM_SIZE - off)
        len = MEM_SIZE - off;
      if (nbd_aio_pread (h, big + off, len, off, (nbd_completion_callback) {
                           .callback = count_cb, .user_data = counts }, 0) == -1)
        bail_out ("aio_pread: %s", errmsg ());
      issued++;
      off += len;
      while (issued - counts[0] >= 16)
        if (nbd_poll (h, 10000) <= 0)
          bail_out ("poll: %s", errmsg ());
    }
    while (counts[0] < issued)
      if (nbd_poll (h, 10000) <= 0)
        bail_out ("poll: %s", errmsg ());
    is_int (counts[1], 0, "%s: %d reads of random sizes covering the disk", what, issued);
    ok (memcmp (big, shadow, MEM_SIZE) == 0, "%s: the whole %d MiB disk agrees with the shadow",
        what, MEM_SIZE / MIB);
    free (big);
  }

  /* Zero and trim go through TLS too. */
  rc = nbd_zero (h, 5 * MIB + 3, 1 * MIB + 1, 0);
  is_int (rc, 0, "%s: zero (%s)", what, errmsg ());
  memset (shadow + MIB + 1, 0, 5 * MIB + 3);
  rc = nbd_pread (h, buf, 8 * MIB, 0, 0);
  ok (rc == 0 && memcmp (buf, shadow, 8 * MIB) == 0, "%s: the zeroed range reads as zero",
      what);
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "%s: shutdown (%s)", what, errmsg ());
  free (small);
  free (shadow);
  free (buf);
}

/* One step of a caller's own event loop, as libnbd documents it: poll the
 * fd for what nbd_aio_get_direction says, then notify.  If data that GnuTLS
 * already holds were left unread, this would wait for POLLIN forever. */
static void
external_step (struct nbd_handle *h)
{
  unsigned dir = nbd_aio_get_direction (h);
  struct pollfd pfd = { .fd = nbd_aio_get_fd (h),
                        .events = ((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                                  ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0) };
  int r = poll (&pfd, 1, 10000);

  if (r <= 0)
    bail_out ("external loop: no event for 10 s (%s): data left unread?",
              r == 0 ? "timeout" : strerror (errno));
  if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read (h) == -1)
    bail_out ("notify_read: %s", errmsg ());
  /* Reading may have sent the rest: notify_write only if still wanted. */
  if ((pfd.revents & POLLOUT) && (nbd_aio_get_direction (h) & LIBNBD_AIO_DIRECTION_WRITE) &&
      nbd_aio_notify_write (h) == -1)
    bail_out ("notify_write: %s", errmsg ());
}

/* nbdkit pattern: every 8-byte word holds its own offset, big-endian;
 * driven by the caller's own loop. */
static void
pattern_test (struct nbd_handle *h)
{
  size_t req = 8 * MIB;
  char *bufs[4];
  int64_t cookies[4];
  uint64_t bad = UINT64_MAX, total = 128 * MIB;
  int rc;

  for (int i = 0; i < 4; i++)
    bufs[i] = malloc (req);
  for (uint64_t base = 0; base < total && bad == UINT64_MAX; base += 4 * req) {
    for (int i = 0; i < 4; i++)
      cookies[i] = nbd_aio_pread (h, bufs[i], req, base + i * req, NBD_NULL_COMPLETION, 0);
    for (int i = 0; i < 4; i++) {
      while (nbd_aio_command_completed (h, cookies[i]) == 0)
        external_step (h);
      for (size_t j = 0; j < req; j += 8) {
        uint64_t v;

        memcpy (&v, bufs[i] + j, 8);
        if (be64toh (v) != base + i * req + j) {
          bad = base + i * req + j;
          break;
        }
      }
    }
  }
  ok (bad == UINT64_MAX, "pattern: 128 MiB read in 8 MiB requests, 4 in flight, through the "
      "caller's poll loop, every word right (first bad offset: %" PRIu64 ")", bad);
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "pattern: shutdown (%s)", errmsg ());
  for (int i = 0; i < 4; i++)
    free (bufs[i]);
}

struct chunks {
  uint64_t data, hole;
};

static int
chunk_cb (void *data, const void *subbuf, size_t count, uint64_t offset, unsigned status,
          int *error)
{
  struct chunks *c = data;

  if (status == LIBNBD_READ_DATA)
    c->data += count;
  else if (status == LIBNBD_READ_HOLE)
    c->hole += count;
  return 0;
}

/* qemu-nbd sends holes as OFFSET_HOLE chunks: data and holes, over PSK. */
static void
qemu_test (struct nbd_handle *h)
{
  char *buf = malloc (16 * MIB), *expect = calloc (1, 16 * MIB);
  struct chunks c = { 0, 0 };
  int rc;

  for (size_t i = 0; i < 3 * MIB; i++)
    expect[4 * MIB + i] = (char) (i * 31);
  rc = nbd_pwrite (h, expect + 4 * MIB, 3 * MIB, 4 * MIB, 0);
  is_int (rc, 0, "qemu-nbd: pwrite (%s)", errmsg ());
  memset (buf, 0xff, 16 * MIB);
  rc = nbd_pread_structured (h, buf, 16 * MIB, 0,
                             (nbd_chunk_callback) { .callback = chunk_cb, .user_data = &c }, 0);
  is_int (rc, 0, "qemu-nbd: pread_structured of 16 MiB (%s)", errmsg ());
  ok (memcmp (buf, expect, 16 * MIB) == 0, "qemu-nbd: data and holes read back right");
  is_uint (c.data + c.hole, 16 * MIB, "qemu-nbd: the chunks cover the read");
  ok (c.hole >= 8 * MIB, "qemu-nbd: holes came as holes (%" PRIu64 " bytes)", c.hole);
  rc = nbd_shutdown (h, 0);
  is_int (rc, 0, "qemu-nbd: shutdown (%s)", errmsg ());
  free (buf);
  free (expect);
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *arg, *obj, *image, size[32];

  tap_timeout (300);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  snprintf (size, sizeof size, "size=%d", MEM_SIZE);

  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory", size,
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit");
  h = connect_tls (&srv, false, "nbdkit memory, X.509");
  shadow_test (h, "nbdkit memory, X.509");
  nbd_close (h);
  server_stop (&srv);
  if (server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "pattern",
                                                         "size=1G", NULL }) == -1)
    bail_out ("cannot start nbdkit pattern");
  h = connect_tls (&srv, false, "nbdkit pattern, X.509");
  pattern_test (h);
  nbd_close (h);
  server_stop (&srv);
  free (arg);

  if (asprintf (&arg, "--tls-psk=%s", m.psk_file) == -1 ||
      server_start_nbdkit (&srv, (const char *const[]) { "--tls=require", arg, "memory", size,
                                                         NULL }) == -1)
    bail_out ("cannot start nbdkit");
  h = connect_tls (&srv, true, "nbdkit memory, PSK");
  shadow_test (h, "nbdkit memory, PSK");
  nbd_close (h);
  server_stop (&srv);
  free (arg);

  image = image_create ("qcow2", 16 * MIB, NULL);
  if (!image || asprintf (&obj, "tls-creds-psk,id=tls0,dir=%s,endpoint=server", m.psk_dir) == -1 ||
      server_start_qemu_nbd (&srv, (const char *const[]) { "--object", obj, "--tls-creds",
                                                           "tls0", "-f", "qcow2", "-x", "disk",
                                                           image, NULL }) == -1)
    bail_out ("cannot start qemu-nbd");
  h = connect_tls (&srv, true, "qemu-nbd, PSK");
  qemu_test (h);
  nbd_close (h);
  server_stop (&srv);
  free (obj);
  free (image);
  return done_testing ();
}
