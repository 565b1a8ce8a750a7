/* aio-no-deadlock: a half-sent request never stops replies from being read.
 *
 * Against an nbdkit that serves one request at a time, in order, queue large
 * reads and then a write larger than the socket buffers.  The server blocks
 * writing read replies until the client reads them, and the client cannot
 * finish sending the write until the server reads it: only a client that
 * keeps reading while a send is half done gets through.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"

#define NREADS 8
#define READ_SIZE (8 * 1024 * 1024)
#define WRITE_SIZE (32 * 1024 * 1024)

static void
fill (char *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (char) (seed + i * 7 + (i >> 12));
}

int
main (void)
{
  struct test_server srv;
  struct nbd_handle *h;
  char *rbuf[NREADS], *wbuf, *check;
  int64_t rc[NREADS], wc;
  bool saw_both = false;
  int polls = 0;

  tap_timeout (120);
  if (server_start_nbdkit (&srv, (const char *const[]) { "--filter=noparallel", "memory",
                                                          "size=256M", "serialize=requests",
                                                          NULL }) == -1)
    bail_out ("cannot start nbdkit");
  h = nbd_create ();
  ok (h != NULL, "nbd_create");
  is_int (nbd_connect_uri (h, srv.uri), 0, "connect: %s", nbd_get_error ());

  /* Known contents for the regions the reads cover. */
  wbuf = malloc (WRITE_SIZE);
  check = malloc (WRITE_SIZE);
  fill (wbuf, READ_SIZE, 1);
  for (int i = 0; i < NREADS; i++)
    if (nbd_pwrite (h, wbuf, READ_SIZE, (uint64_t) i * READ_SIZE, 0) == -1)
      bail_out ("pwrite: %s", nbd_get_error ());

  for (int i = 0; i < NREADS; i++) {
    rbuf[i] = malloc (READ_SIZE);
    rc[i] = nbd_aio_pread (h, rbuf[i], READ_SIZE, (uint64_t) i * READ_SIZE, NBD_NULL_COMPLETION, 0);
    ok (rc[i] > 0, "aio_pread %d queued", i);
  }
  fill (wbuf, WRITE_SIZE, 2);
  wc = nbd_aio_pwrite (h, wbuf, WRITE_SIZE, 128 * 1024 * 1024, NBD_NULL_COMPLETION, 0);
  ok (wc > 0, "aio_pwrite of %d MiB queued behind the reads", WRITE_SIZE >> 20);

  while (nbd_aio_in_flight (h) > 0 && polls < 100000) {
    if (nbd_aio_get_direction (h) == LIBNBD_AIO_DIRECTION_BOTH)
      saw_both = true;
    if (nbd_poll (h, 10000) <= 0) {
      diag ("nbd_poll made no progress: %s", nbd_get_error ());
      break;
    }
    polls++;
  }
  is_int (nbd_aio_in_flight (h), 0, "every command completed (%d polls)", polls);
  ok (saw_both, "while the write was half sent the handle waited for reading and writing");
  for (int i = 0; i < NREADS; i++) {
    is_int (nbd_aio_command_completed (h, rc[i]), 1, "read %d succeeded", i);
    fill (check, READ_SIZE, 1);
    ok (memcmp (rbuf[i], check, READ_SIZE) == 0, "read %d returned the data", i);
    free (rbuf[i]);
  }
  is_int (nbd_aio_command_completed (h, wc), 1, "write succeeded");
  if (nbd_pread (h, check, WRITE_SIZE, 128 * 1024 * 1024, 0) == -1)
    bail_out ("pread: %s", nbd_get_error ());
  ok (memcmp (check, wbuf, WRITE_SIZE) == 0, "the large write reached the server intact");
  is_int (nbd_shutdown (h, 0), 0, "shutdown");
  nbd_close (h);
  free (wbuf);
  free (check);
  server_stop (&srv);
  return done_testing ();
}
