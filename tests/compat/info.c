/* info: what an nbdinfo-like tool sees, asserted value by value, as a
 * libnbd 1.14 program would query it.
 *
 * Against nbdkit memory behind the blocksize-policy filter: protocol,
 * structured replies, TLS, size, every can_* / is_* flag, the three block
 * sizes, and the base:allocation meta context.  Against nbdkit pattern
 * (read-only) and nbdkit -o (oldstyle): the flags and facts that change.
 * Against qemu-nbd serving a qcow2 with known holes: option mode, nbd_opt_list
 * (name and -D description), nbd_opt_info with full info, then nbd_opt_go and
 * the exact extents nbd_block_status reports (whole image, from the middle
 * of an extent, and with LIBNBD_CMD_FLAG_REQ_ONE).
 * Built against libnbd-core and the system libnbd; both must pass.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#include "tap.h"
#include "servers.h"

#define KiB 1024
#define MiB (1024 * 1024)

/* ---- Collecting extents ---- */

#define MAX_EXTENTS 64

struct extents {
  int calls;
  char *context;
  uint64_t offset;
  size_t n;                     /* number of uint32_t entries, pairs */
  uint32_t e[MAX_EXTENTS];
  int frees;
};

static int
collect (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
         size_t nr_entries, int *error)
{
  struct extents *x = user_data;

  x->calls++;
  free (x->context);
  x->context = strdup (metacontext);
  x->offset = offset;
  x->n = nr_entries < MAX_EXTENTS ? nr_entries : MAX_EXTENTS;
  memcpy (x->e, entries, x->n * sizeof *entries);
  return 0;
}

static void
collect_free (void *user_data)
{
  struct extents *x = user_data;
  x->frees++;
}

static void
reset (struct extents *x)
{
  free (x->context);
  memset (x, 0, sizeof *x);
}

/* ---- Listing exports ---- */

struct listing {
  int count;
  char *name;
  char *description;
};

static int
list_one (void *user_data, const char *name, const char *description)
{
  struct listing *l = user_data;

  if (l->count++ == 0) {
    l->name = strdup (name);
    l->description = strdup (description);
  }
  return 0;
}

/* DF needs structured replies, which oldstyle servers cannot offer. */
static void
flags_memory (struct nbd_handle *h, int df)
{
  is_int (nbd_is_read_only (h), 0, "memory: is_read_only");
  is_int (nbd_can_flush (h), 1, "memory: can_flush");
  is_int (nbd_can_fua (h), 1, "memory: can_fua");
  is_int (nbd_is_rotational (h), 0, "memory: is_rotational");
  is_int (nbd_can_trim (h), 1, "memory: can_trim");
  is_int (nbd_can_zero (h), 1, "memory: can_zero");
  is_int (nbd_can_fast_zero (h), 1, "memory: can_fast_zero");
  is_int (nbd_can_df (h), df, "memory: can_df");
  is_int (nbd_can_multi_conn (h), 1, "memory: can_multi_conn");
  is_int (nbd_can_cache (h), 1, "memory: can_cache");
}

int
main (void)
{
  const char *memory_args[] = {
    "--filter=blocksize-policy", "memory", "size=1M",
    "blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=1M", NULL
  };
  const char *pattern_args[] = { "pattern", "size=3M", NULL };
  const char *oldstyle_args[] = { "-o", "memory", "size=2M", NULL };
  const char *qcow2_cmds[] = { "write -P 0xab 0 64k", "write -P 0xcd 512k 64k", NULL };
  struct test_server mem, pat, old, qemu;
  struct nbd_handle *h;
  struct extents x = { 0 };
  struct listing l = { 0 };
  char *image, *s;

  tap_timeout (TAP_DEFAULT_TIMEOUT);

  image = image_create ("qcow2", 1 * MiB, qcow2_cmds);
  if (!image)
    bail_out ("cannot create the qcow2 image");
  if (server_start_nbdkit (&mem, memory_args) == -1 ||
      server_start_nbdkit (&pat, pattern_args) == -1 ||
      server_start_nbdkit (&old, oldstyle_args) == -1)
    bail_out ("cannot start nbdkit: %s", strerror (errno));
  {
    const char *qargs[] = { "-f", "qcow2", "-x", "disk", "-D", "the disk", image, NULL };
    if (server_start_qemu_nbd (&qemu, qargs) == -1)
      bail_out ("cannot start qemu-nbd: %s", strerror (errno));
  }

  /* ---- nbdkit memory + blocksize-policy ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create: %s", nbd_get_error ());
  is_int (nbd_get_nr_meta_contexts (h), 0, "no meta contexts requested yet");
  ok (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0, "nbd_add_meta_context");
  is_int (nbd_get_nr_meta_contexts (h), 1, "one meta context requested");
  s = nbd_get_meta_context (h, 0);
  is_str (s, "base:allocation", "nbd_get_meta_context 0");
  free (s);
  ok (nbd_get_meta_context (h, 1) == NULL, "nbd_get_meta_context 1 is out of range");
  is_errno (EINVAL, "with EINVAL");
  if (!ok (nbd_connect_uri (h, mem.uri) == 0, "connect to nbdkit memory"))
    bail_out ("%s", nbd_get_error ());
  is_str (nbd_get_protocol (h), "newstyle-fixed", "nbd_get_protocol");
  is_int (nbd_get_structured_replies_negotiated (h), 1, "structured replies negotiated");
  is_int (nbd_get_tls_negotiated (h), 0, "no TLS");
  is_int (nbd_get_size (h), 1 * MiB, "nbd_get_size");
  flags_memory (h, 1);
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), 512, "block size minimum");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 4096, "block size preferred");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), 1 * MiB, "block size maximum");
  is_int (nbd_get_block_size (h, 3), -1, "block size of an unknown type");
  is_errno (EINVAL, "is EINVAL");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "can_meta_context base:allocation");
  is_int (nbd_can_meta_context (h, "qemu:dirty-bitmap:x"), 0,
          "can_meta_context of a context not requested");
  /* nbdkit memory: all data, one extent. */
  ok (nbd_block_status (h, 1 * MiB, 0, (nbd_extent_callback) { .callback = collect,
                                                               .user_data = &x,
                                                               .free = collect_free }, 0) == 0,
      "nbd_block_status on nbdkit memory");
  is_int (x.calls, 1, "one extent callback");
  is_str (x.context, "base:allocation", "for base:allocation");
  is_uint (x.offset, 0, "at offset 0");
  is_uint (x.n, 2, "one extent");
  if (x.n >= 2) {
    is_uint (x.e[0], 1 * MiB, "covering the whole export");
    is_uint (x.e[1], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO, "a fresh memory export is a hole");
  }
  is_int (x.frees, 1, "the extent callback's .free ran once");
  reset (&x);
  ok (nbd_pwrite (h, "abcdefgh", 8, 4096, 0) == -1, "an 8-byte write under a 512 minimum fails");
  is_errno (EINVAL, "with EINVAL (strict alignment)");
  nbd_shutdown (h, 0);
  nbd_close (h);

  /* ---- nbdkit pattern: read-only ---- */
  h = nbd_create ();
  if (!h || nbd_connect_unix (h, pat.sock) == -1)
    bail_out ("connect to nbdkit pattern: %s", nbd_get_error ());
  is_int (nbd_get_size (h), 3 * MiB, "pattern: nbd_get_size");
  is_int (nbd_is_read_only (h), 1, "pattern: is_read_only");
  is_int (nbd_can_flush (h), 0, "pattern: can_flush");
  is_int (nbd_can_fua (h), 0, "pattern: can_fua");
  is_int (nbd_can_trim (h), 0, "pattern: can_trim");
  is_int (nbd_can_zero (h), 0, "pattern: can_zero");
  is_int (nbd_can_fast_zero (h), 0, "pattern: can_fast_zero");
  is_int (nbd_can_df (h), 1, "pattern: can_df");
  is_int (nbd_can_multi_conn (h), 1, "pattern: can_multi_conn");
  is_int (nbd_can_cache (h), 1, "pattern: can_cache");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), 0, "pattern: no minimum block size");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 0, "pattern: no preferred block size");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), 0, "pattern: no maximum block size");
  is_int (nbd_get_nr_meta_contexts (h), 0, "pattern: no meta context was requested");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "pattern: base:allocation not negotiated when not requested");
  nbd_shutdown (h, 0);
  nbd_close (h);

  /* ---- nbdkit -o: oldstyle ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  must (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION));
  if (!ok (nbd_connect_unix (h, old.sock) == 0, "connect to an oldstyle server"))
    bail_out ("%s", nbd_get_error ());
  is_str (nbd_get_protocol (h), "oldstyle", "oldstyle: nbd_get_protocol");
  is_int (nbd_get_structured_replies_negotiated (h), 0, "oldstyle: no structured replies");
  is_int (nbd_get_size (h), 2 * MiB, "oldstyle: nbd_get_size");
  flags_memory (h, 0);
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0,
          "oldstyle: no meta contexts");
  ok (nbd_block_status (h, 4096, 0, (nbd_extent_callback) { .callback = collect,
                                                            .user_data = &x,
                                                            .free = collect_free }, 0) == -1,
      "oldstyle: nbd_block_status fails");
  is_errno (ENOTSUP, "with ENOTSUP");
  is_int (x.calls, 0, "the extent callback never ran");
  is_int (x.frees, 1, "but its .free did, once");
  reset (&x);
  nbd_shutdown (h, 0);
  nbd_close (h);

  /* ---- qemu-nbd: option mode, listing, info, go, extents ---- */
  h = nbd_create ();
  if (!h)
    bail_out ("nbd_create");
  ok (nbd_set_opt_mode (h, true) == 0, "nbd_set_opt_mode");
  is_int (nbd_get_opt_mode (h), 1, "nbd_get_opt_mode");
  if (!ok (nbd_connect_unix (h, qemu.sock) == 0, "connect to qemu-nbd in option mode"))
    bail_out ("%s", nbd_get_error ());
  ok (nbd_aio_is_negotiating (h), "the handle is negotiating");
  is_str (nbd_get_protocol (h), "newstyle-fixed", "qemu-nbd: nbd_get_protocol");
  is_int (nbd_opt_list (h, (nbd_list_callback) { .callback = list_one, .user_data = &l }), 1,
          "nbd_opt_list returns the number of exports");
  is_int (l.count, 1, "the list callback ran once");
  is_str (l.name, "disk", "the export's name");
  is_str (l.description, "the disk", "the export's description (-D)");
  ok (nbd_aio_is_negotiating (h), "still negotiating after nbd_opt_list");

  ok (nbd_set_export_name (h, "disk") == 0, "nbd_set_export_name disk");
  ok (nbd_set_full_info (h, true) == 0, "nbd_set_full_info");
  ok (nbd_opt_info (h) == 0, "nbd_opt_info");
  is_int (nbd_get_size (h), 1 * MiB, "qemu-nbd: size known after nbd_opt_info");
  s = nbd_get_export_description (h);
  is_str (s, "the disk", "nbd_get_export_description");
  free (s);
  s = nbd_get_canonical_export_name (h);
  is_str (s, "disk", "nbd_get_canonical_export_name");
  free (s);

  ok (nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0,
      "nbd_add_meta_context while negotiating");
  ok (nbd_opt_go (h) == 0, "nbd_opt_go");
  ok (nbd_aio_is_ready (h), "ready after nbd_opt_go");
  is_int (nbd_get_size (h), 1 * MiB, "qemu-nbd: nbd_get_size");
  is_int (nbd_is_read_only (h), 0, "qemu-nbd: is_read_only");
  is_int (nbd_can_flush (h), 1, "qemu-nbd: can_flush");
  is_int (nbd_can_fua (h), 1, "qemu-nbd: can_fua");
  is_int (nbd_can_trim (h), 1, "qemu-nbd: can_trim");
  is_int (nbd_can_zero (h), 1, "qemu-nbd: can_zero");
  is_int (nbd_can_fast_zero (h), 1, "qemu-nbd: can_fast_zero");
  is_int (nbd_can_df (h), 1, "qemu-nbd: can_df");
  is_int (nbd_can_multi_conn (h), 0, "qemu-nbd: can_multi_conn (writable)");
  is_int (nbd_can_cache (h), 1, "qemu-nbd: can_cache");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM), 1, "qemu-nbd: block size minimum");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_PREFERRED), 4096, "qemu-nbd: block size preferred");
  is_int (nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM), 32 * MiB, "qemu-nbd: block size maximum");
  is_int (nbd_can_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1,
          "qemu-nbd: base:allocation negotiated");

  /* data 0-64k, hole 64k-512k, data 512k-576k, hole to the end */
  ok (nbd_block_status (h, 1 * MiB, 0, (nbd_extent_callback) { .callback = collect,
                                                               .user_data = &x,
                                                               .free = collect_free }, 0) == 0,
      "nbd_block_status of the whole qcow2");
  is_int (x.calls, 1, "one extent callback");
  is_str (x.context, "base:allocation", "for base:allocation");
  is_uint (x.offset, 0, "at offset 0");
  is_uint (x.n, 8, "four extents");
  if (x.n == 8) {
    is_uint (x.e[0], 64 * KiB, "extent 0: 64 KiB");
    is_uint (x.e[1], 0, "extent 0: data");
    is_uint (x.e[2], 448 * KiB, "extent 1: 448 KiB");
    is_uint (x.e[3], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO, "extent 1: hole, zero");
    is_uint (x.e[4], 64 * KiB, "extent 2: 64 KiB");
    is_uint (x.e[5], 0, "extent 2: data");
    is_uint (x.e[6], 448 * KiB, "extent 3: 448 KiB");
    is_uint (x.e[7], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO, "extent 3: hole, zero");
  }
  is_int (x.frees, 1, ".free ran once");
  reset (&x);

  ok (nbd_block_status (h, 512 * KiB, 32 * KiB,
                        (nbd_extent_callback) { .callback = collect, .user_data = &x }, 0) == 0,
      "nbd_block_status from the middle of the first extent");
  is_uint (x.offset, 32 * KiB, "the callback's offset is the request's");
  is_uint (x.n, 6, "three extents, up to the end of the request (544 KiB)");
  if (x.n == 6) {
    is_uint (x.e[0], 32 * KiB, "the rest of the first data extent");
    is_uint (x.e[1], 0, "data");
    is_uint (x.e[2], 448 * KiB, "then the hole");
    is_uint (x.e[3], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO, "hole, zero");
    is_uint (x.e[4], 32 * KiB, "then the start of the second data extent");
    is_uint (x.e[5], 0, "data");
  }
  reset (&x);

  ok (nbd_block_status (h, 1 * MiB, 0,
                        (nbd_extent_callback) { .callback = collect, .user_data = &x },
                        LIBNBD_CMD_FLAG_REQ_ONE) == 0,
      "nbd_block_status with REQ_ONE");
  is_uint (x.n, 2, "exactly one extent");
  if (x.n == 2) {
    is_uint (x.e[0], 64 * KiB, "64 KiB");
    is_uint (x.e[1], 0, "data");
  }
  reset (&x);

  {
    char buf[4];
    ok (nbd_pread (h, buf, 4, 512 * KiB, 0) == 0 && memcmp (buf, "\xcd\xcd\xcd\xcd", 4) == 0,
        "the second data extent holds 0xcd");
  }
  ok (nbd_shutdown (h, 0) == 0, "nbd_shutdown");
  nbd_close (h);

  free (l.name);
  free (l.description);
  free (image);
  server_stop (&mem);
  server_stop (&pat);
  server_stop (&old);
  server_stop (&qemu);
  return done_testing ();
}
