/* write-read: write a pattern to an NBD export and read it back.
 *
 * A plain libnbd program: it uses only <libnbd.h> and nbd_* calls, so it
 * builds unchanged against libnbd or libnbd-core.  It starts its own server,
 * an nbdkit memory disk, as a subprocess (nbd_connect_command), writes SIZE
 * MiB of a deterministic pattern in 1 MiB requests, flushes, reads it all
 * back and compares, then prints the throughput of each half.
 *
 *   write-read [SIZE_MIB]        (default 64)
 *
 * Build: cc write-read.c $(pkg-config --cflags --libs libnbd-core)
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define MIB (1024 * 1024)
#define REQUEST_SIZE MIB

/* libnbd's error message already starts with the failing call's name. */
static void
die (const char *call)
{
  const char *msg = nbd_get_error ();

  fprintf (stderr, "write-read: %s\n", msg ? msg : call);
  exit (1);
}

/* The pattern: every 8-byte word holds a mix of its own offset, so a block
 * written to or read from the wrong place cannot compare equal.
 */
static void
fill_pattern (unsigned char *buf, size_t len, uint64_t offset)
{
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = (offset + i) * UINT64_C (0x9e3779b97f4a7c15) + 1;

    memcpy (buf + i, &word, 8);
  }
}

static double
seconds (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int
main (int argc, char *argv[])
{
  unsigned long mib = 64;
  char size_arg[32];
  unsigned char *wbuf, *rbuf;
  struct nbd_handle *nbd;
  double t0, t_write, t_read;
  uint64_t size, offset;
  int64_t export_size;

  if (argc > 2 || (argc == 2 && (sscanf (argv[1], "%lu", &mib) != 1 || mib == 0 ||
                                 mib > 1024))) {
    fprintf (stderr, "usage: write-read [SIZE_MIB (1-1024, default 64)]\n");
    exit (1);
  }
  size = (uint64_t) mib * MIB;
  snprintf (size_arg, sizeof size_arg, "size=%luM", mib);
  char *server[] = { "nbdkit", "-s", "--exit-with-parent", "memory", size_arg, NULL };

  wbuf = malloc (REQUEST_SIZE);
  rbuf = malloc (REQUEST_SIZE);
  if (!wbuf || !rbuf) {
    perror ("malloc");
    exit (1);
  }

  nbd = nbd_create ();
  if (nbd == NULL)
    die ("nbd_create");
  if (nbd_connect_command (nbd, server) == -1)
    die ("nbd_connect_command");

  export_size = nbd_get_size (nbd);
  if (export_size == -1)
    die ("nbd_get_size");
  if ((uint64_t) export_size != size) {
    fprintf (stderr, "write-read: export size is %" PRId64 ", expected %" PRIu64 "\n",
             export_size, size);
    exit (1);
  }

  t0 = seconds ();
  for (offset = 0; offset < size; offset += REQUEST_SIZE) {
    fill_pattern (wbuf, REQUEST_SIZE, offset);
    if (nbd_pwrite (nbd, wbuf, REQUEST_SIZE, offset, 0) == -1)
      die ("nbd_pwrite");
  }
  if (nbd_flush (nbd, 0) == -1)
    die ("nbd_flush");
  t_write = seconds () - t0;

  t0 = seconds ();
  for (offset = 0; offset < size; offset += REQUEST_SIZE) {
    if (nbd_pread (nbd, rbuf, REQUEST_SIZE, offset, 0) == -1)
      die ("nbd_pread");
    fill_pattern (wbuf, REQUEST_SIZE, offset);
    if (memcmp (rbuf, wbuf, REQUEST_SIZE) != 0) {
      size_t i = 0;

      while (rbuf[i] == wbuf[i])
        i++;
      fprintf (stderr, "write-read: data differs at offset %" PRIu64 "\n", offset + i);
      exit (1);
    }
  }
  t_read = seconds () - t0;

  if (nbd_shutdown (nbd, 0) == -1)
    die ("nbd_shutdown");
  nbd_close (nbd);
  free (wbuf);
  free (rbuf);

  printf ("write-read: %lu MiB in %d KiB requests verified: write %.1f MiB/s, read %.1f MiB/s\n",
          mib, REQUEST_SIZE / 1024, (double) mib / t_write, (double) mib / t_read);
  return 0;
}
