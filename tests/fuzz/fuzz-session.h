/* fuzz-session.h: one libnbd-core client session whose server is a byte
 * stream.  The libFuzzer harness (fuzz-client.c) plays that stream from the
 * fuzz input; the corpus recorder (fuzz-record.c) relays it from a real
 * server and writes it down in the same format, so that every recording
 * replays exactly.
 *
 * Owns the connection (the in-memory socket of fuzz-socket.h, or for the
 * recorder's live session a real socketpair), the handle and the records
 * of every command and option it issues; checks, in the callbacks and
 * after nbd_close, that the client kept its promises (each completion
 * once, each .free once, chunks and extents inside their request, unfilled
 * read bytes zeroed, the socket closed and used only through the calls
 * fuzz-socket.c wraps).  A broken promise aborts, which libFuzzer reports
 * as a crash.  Never blocks: the client is driven with nbd_poll (h, 0) or
 * nbd_aio_notify_*, and every loop is bounded.
 *
 * The input format (what the recorder writes, what the harness reads):
 *
 *   4 header bytes (FUZZ_H*): the client's settings and how to feed it;
 *   then segments, each a big-endian u16 length and that many bytes of
 *   the server's stream.
 *
 * The session runs in phases (the handshake, in opt mode each option, then
 * batches of commands); a phase starts by issuing its requests, then feeds
 * whole segments until every request of the phase has its answer or the
 * stream ends.  The end of the stream is an end of file for the client
 * (or, with FUZZ_H3_RESET, a reset).  Header byte 1 can cut the start of
 * each phase into small slices, driving the client after each.
 */
#ifndef GNBD_TESTS_FUZZ_SESSION_H
#define GNBD_TESTS_FUZZ_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FUZZ_HDR_LEN 4

/* Header byte 0: what the client asks for. */
#define FUZZ_H0_OPT_MODE 0x01     /* nbd_set_opt_mode: LIST, LIST_META, INFO, GO */
#define FUZZ_H0_NO_SR 0x02        /* no NBD_OPT_STRUCTURED_REPLY */
#define FUZZ_H0_META_BASE 0x04    /* request base:allocation */
#define FUZZ_H0_META_QEMU 0x08    /* request qemu:allocation-depth, qemu:dirty-bitmap:bitmap0 */
#define FUZZ_H0_FULL_INFO 0x10    /* nbd_set_full_info */
#define FUZZ_H0_STRICT_OFF 0x20   /* nbd_set_strict_mode (0): out-of-range requests go out */
#define FUZZ_H0_NO_FIXED 0x40     /* handshake flags without FIXED_NEWSTYLE */
#define FUZZ_H0_NO_NOZEROES 0x80  /* handshake flags without NO_ZEROES */
/* Header byte 1: low nibble, the slice size index (fuzz-session.c); then: */
#define FUZZ_H1_SLICE_MASK 0x0f
#define FUZZ_H1_MANUAL_RETIRE 0x10 /* completions return 0; nbd_aio_command_completed retires */
#define FUZZ_H1_DEBUG 0x20         /* debug messages on, to a callback */
#define FUZZ_H1_NO_BLOCK_SIZE 0x40 /* nbd_set_request_block_size (false) */
#define FUZZ_H1_NOTIFY 0x80        /* drive with nbd_aio_notify_* instead of nbd_poll */
/* Header byte 2: low two bits, the export name index; then: */
#define FUZZ_H2_NAME_MASK 0x03
#define FUZZ_H2_LARGE 0x04         /* one read of 17 KiB (straight into the buffer) */
#define FUZZ_H2_SEND_SLICES 0x08   /* in memory: the client's sends are taken a slice at a time */
#define FUZZ_H2_DISCONNECT 0x10    /* end with nbd_aio_disconnect */
#define FUZZ_H2_FAIL_CHUNK 0x20    /* a chunk and an extent callback fail */
/* TLS allowed or required, with certificates from a directory that does
 * not exist: a server that accepts STARTTLS ends the connection there (the
 * fuzzer cannot play GnuTLS's handshake), one that refuses is handled. */
#define FUZZ_H2_TLS_ALLOW 0x40
#define FUZZ_H2_TLS_REQUIRE 0x80
/* Header byte 3: low seven bits, every command offset moves by this many
 * 4 KiB blocks; then: */
#define FUZZ_H3_SHIFT_MASK 0x7f
/* In memory: the stream ends as a server that closed with the client's
 * bytes unread (ECONNRESET, then EPIPE), not with an end of file. */
#define FUZZ_H3_RESET 0x80

struct fuzz_session;

/* Where the server's bytes come from. */
struct fuzz_source {
  /* Hand the client more of the stream (fuzz_session_send); 0 once the
   * stream has ended. */
  int (*feed) (struct fuzz_session *s, void *opaque);
  /* Bytes the client sent; may be NULL (they are discarded). */
  void (*client_bytes) (void *opaque, const void *buf, size_t len);
  /* A phase ended: what follows answers the next phase.  May be NULL. */
  void (*boundary) (void *opaque);
  void *opaque;
  /* Connect through a real socketpair, not the in-memory socket: the
   * recorder's live session, whose replay in memory must see the same. */
  bool socketpair;
};

/* What happened, one line per event, to compare a recording with its
 * replay.  Kept only when fuzz_session_run gets one. */
struct fuzz_log {
  char *buf;
  size_t len, cap;
};

void fuzz_log_free (struct fuzz_log *log);

/* Run a whole session.  @hdr: the FUZZ_HDR_LEN header bytes. */
void fuzz_session_run (const uint8_t *hdr, const struct fuzz_source *src, struct fuzz_log *log);

/* Give the client @len bytes of the server's stream, in the session's
 * slices, driving the client after each. */
void fuzz_session_send (struct fuzz_session *s, const void *buf, size_t len);

/* Let the client send and receive what it can now; drain what it sent. */
void fuzz_session_drive (struct fuzz_session *s);

/* Replay one input in the format above (the harness, and the recorder's
 * check of what it wrote). */
void fuzz_replay (const uint8_t *data, size_t size, struct fuzz_log *log);

#endif /* GNBD_TESTS_FUZZ_SESSION_H */
