/* internal.h: the handle, the command record and the calls between the
 * core's files.  Nothing here is installed or seen by users.
 *
 * Locking: every field of struct nbd_handle is protected by h->lock except
 * the _Atomic ones, which lock-free calls read.
 */
#ifndef NBD_CORE_INTERNAL_H
#define NBD_CORE_INTERNAL_H

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct addrinfo;

#include "config.h"
#include "errors.h"
/* The public header marks pointer parameters nonnull (as libnbd's does) for
 * callers' compilers.  Inside the library that would let GCC drop the very
 * checks that turn a NULL into EFAULT, so here the attribute says nothing. */
#define LIBNBD_ATTRIBUTE_NONNULL(...)
#include "libnbd.h"
#include "protocol.h"

#define EXPORT __attribute__((visibility ("default")))

/* The receive buffer: many small replies arrive in one recv(2); payloads
 * that are still large once it is drained go straight to the caller. */
#define RBUF_SIZE (64 * 1024)
#define DIRECT_RECV_MIN (16 * 1024)

/* TLS is built in whenever GnuTLS is (tls.c); the uses test HAVE_GNUTLS too. */
#define NBD_CORE_TLS_READY 1

/* ---- States ----------------------------------------------------------- */

/* The real state; the public one (aio_is_*) is derived from it and the I/O
 * progress, and published atomically when a locked call returns. */
enum state {
  ST_CREATED,
  ST_CONNECTING,                /* socket connect(2) in progress */
  ST_HANDSHAKE,                 /* magic, flags and options on the wire */
  ST_NEGOTIATING,               /* opt mode: waiting for an nbd_opt_* call */
  ST_READY,                     /* transmission phase */
  ST_DEAD,
  ST_CLOSED,
};

/* Bits for permitted-state checks at API entry. */
enum {
  PS_CREATED = 1 << 0,
  PS_CONNECTING = 1 << 1,
  PS_NEGOTIATING = 1 << 2,
  PS_CONNECTED = 1 << 3,
  PS_CLOSED = 1 << 4,
  PS_DEAD = 1 << 5,
  PS_ANY = 0x3f,
};

enum public_state {
  PUB_CREATED,
  PUB_CONNECTING,
  PUB_NEGOTIATING,
  PUB_READY,
  PUB_PROCESSING,
  PUB_DEAD,
  PUB_CLOSED,
};

/* ---- Commands --------------------------------------------------------- */

/* CMD_PINNED: failed, but its payload is still lent to a zero-copy writer,
 * so it cannot complete (and free the caller to reuse the buffer) yet. */
enum cmd_state { CMD_FREE, CMD_QUEUED, CMD_IN_FLIGHT, CMD_PINNED, CMD_DONE };

/* A byte range already filled by a structured read reply, relative to the
 * command's offset: a read may reach 2^64 (LIBNBD_STRICT_BOUNDS off), where
 * absolute ends would wrap; relative ones never pass the 32-bit count. */
struct range {
  uint32_t start, end;
};

struct command {
  struct command *next;         /* to-issue, done or free list */
  enum cmd_state state;
  uint32_t slot;                /* index in h->slots; the wire cookie's low half */
  uint64_t cookie;              /* what the user sees, >= 1 */
  uint16_t type;
  uint16_t flags;
  uint64_t offset;
  uint32_t count;
  void *data;                   /* read: destination; write: source */
  nbd_completion_callback cb;
  union {
    nbd_chunk_callback chunk;
    nbd_extent_callback extent;
  } mcb;                        /* mid-command callback */
  int error;                    /* first error, 0 if none */
  const char *why;              /* what went wrong, for the error message */
  bool initialize;              /* zero what the server did not fill, at the end */
  uint64_t data_seen;           /* bytes of a read filled so far */
  uint32_t fill_end;            /* [0, fill_end) of a read arrived in order */
  struct range *ranges;         /* out-of-order chunks (rare), sorted */
  size_t nr_ranges, cap_ranges;
  uint64_t borrow_end;          /* zero-copy writer: lent bytes up to this payload's end */
  struct nbd_request req;       /* the header as sent, big-endian */
};

/* ---- Option-mode requests --------------------------------------------- */

enum opt_kind { OPTK_NONE, OPTK_GO, OPTK_INFO, OPTK_LIST, OPTK_LIST_META, OPTK_ABORT };

struct opt_request {
  enum opt_kind kind;
  nbd_completion_callback cb;
  nbd_list_callback list;
  nbd_context_callback context;
  int error;
  char *errmsg;                 /* the reason, for the sync call's message */
};

/* ---- Handshake steps -------------------------------------------------- */

enum hs_step {
  HS_NONE,
  HS_MAGIC,
  HS_OLDSTYLE,
  HS_GFLAGS,
  HS_OPT_REPLY_HDR,             /* waiting for an option reply header */
  HS_OPT_REPLY_PAYLOAD,         /* waiting for its payload */
  HS_EXPORT_NAME_REPLY,
  HS_ABORT_SENT,
  HS_TLS_HANDSHAKE,             /* after STARTTLS's ACK: GnuTLS's handshake */
};

struct meta_context {
  uint32_t id;
  char *name;
};

struct string_vector {
  char **v;
  size_t len, cap;
};

/* ---- The handle ------------------------------------------------------- */

struct nbd_handle {
  pthread_mutex_t lock;
  char *hname;
  _Atomic uintptr_t private_data;

  /* Settings. */
  char *export_name;
  bool debug;
  nbd_debug_callback debug_cb;
  int tls;
  char *tls_certificates;
  bool tls_verify_peer;
  char *tls_username;
  char *tls_psk_file;
  char *tls_hostname;           /* TCP host: SNI and the certificate's name */
  bool request_sr;
  bool request_block_size;
  bool full_info;
  bool pread_initialize;
  bool opt_mode;
  uint32_t handshake_flags;
  uint32_t strict;
  uint32_t uri_allow_transports;
  int uri_allow_tls;
  bool uri_allow_local_file;
  struct string_vector request_meta;

  /* The connection. */
  enum state state;
  _Atomic int public_state;
  _Atomic unsigned public_dir;
  int fd;
  pid_t pid;                    /* connect_command / socket activation child */
  char *sa_tmpdir, *sa_sockpath;
  char *uri;                    /* what nbd_get_uri reports */
  struct addrinfo *tcp_all, *tcp_next; /* TCP addresses left to try */
  bool disc_sent;               /* NBD_CMD_DISC handed to the socket */
  bool disc_queued;
  bool shut_wr_done;
  bool write_absorbed;          /* nbd_aio_notify_read sent what a POLLOUT was for */

  /* The concurrent writer (writer.c). */
  nbd_writer_cb writer;         /* also set (to a marker) for the zero-copy writer */
  nbd_writer_zero_copy_cb writer_zc;
  void *writer_data;
  _Atomic uint64_t zc_lent;     /* payload bytes lent to the zero-copy writer */
  _Atomic uint64_t zc_released; /* ... and given back by it */
  int zc_wake;                  /* eventfd: a release happened (for waiters) */
  _Atomic bool zc_want_wake;    /* someone waits on zc_wake: releases signal it */
  uint32_t nr_pinned;
  bool closing;
  _Atomic int writer_err;       /* first error the writer reported, 0 if none */
  _Atomic int wake_fd;          /* h->fd, for nbd_concurrent_writer_error */
  /* The writer thread encrypts (nbd_set_concurrent_writer_encrypt): once
   * the TLS handshake is done, the writer gets plaintext and its thread
   * makes the records in nbd_concurrent_writer_send. */
  bool writer_encrypt;          /* the user's wish */
  bool tls_plain;               /* in effect: no record is made on this side */
  uint64_t wr_handed;           /* bytes handed to the writer, ever */
  _Atomic uint64_t wr_raw_end;  /* where its plaintext starts; UINT64_MAX: never */
  uint64_t wr_sent;             /* bytes nbd_concurrent_writer_send took (its side) */

  /* Negotiated facts. */
  const char *protocol;
  uint16_t gflags;              /* server handshake flags actually used */
  uint16_t eflags;
  bool have_export;
  uint64_t exportsize;
  bool sr;
  bool tls_negotiated;
  struct nbd_tls *tls_conn;     /* tls.c's session; NULL while in plaintext */
  char *canonical_name;
  char *description;
  uint32_t block_min, block_pref, block_max;
  struct meta_context *meta;    /* negotiated, for the current export */
  size_t nr_meta;
  bool meta_valid;

  /* Handshake I/O: one outgoing buffer and one incoming target at a time. */
  enum hs_step hs;
  char *hs_out;
  size_t hs_out_len, hs_out_pos, hs_out_cap;
  void *hs_in;
  size_t hs_in_len, hs_in_pos;
  char hs_small[136];           /* magic/flags/oldstyle/export-name replies */
  struct nbd_option_reply_hdr opt_hdr;
  char *opt_payload;            /* NBD_MAX_OPTION_REPLY + 1 bytes */
  uint32_t cur_option;          /* option whose replies are awaited */
  int hs_after_meta;            /* option to send once SET_META_CONTEXT is done */
  bool export_name_fallback;
  struct opt_request opt;       /* the option-mode request in progress */

  /* Commands. */
  uint64_t unique;              /* next cookie */
  struct command **slots;
  uint32_t nr_slots, cap_slots;
  struct command *free_cmds;
  struct command *to_issue, *to_issue_tail;
  size_t out_pos;               /* bytes of to_issue's head already sent */
  struct command *done, *done_tail;
  int in_flight;                /* queued + sent, not yet replied */
  char *lost_why;               /* why the connection died under commands */

  /* Reply parsing. */
  char *rbuf;
  size_t rstart, rend;
  int rstate;
  char rhdr[20];
  size_t rhdr_len;
  struct command *rcmd;
  char *rdst;                   /* NULL: discard */
  uint64_t rremain;
  bool rhdr_only;               /* after a large payload: receive only the next header */
  bool rdirect;                 /* this payload goes straight to its buffer, to its end */
  uint16_t rtype, rflags;
  uint32_t rlen;                /* length of the payload being gathered */
  uint32_t rlen_data;           /* length of the data in an OFFSET_DATA chunk */
  int rtype_gather;             /* what the gathered payload is */
  uint64_t roffset;             /* offset of the data chunk being received */
  char *chunk_buf;              /* gathered non-data chunk payloads */
  size_t chunk_len, chunk_cap;
};

/* ---- Entry points ----------------------------------------------------- */

/* A pointer argument that must not be NULL, and its parameter's name (the
 * name in libnbd's manual, which the error message quotes). */
struct nonnull_arg {
  const char *name;
  const void *p;
};
#define NONNULL(param) ((struct nonnull_arg) { #param, (param) })

/* Every locked public call: name it, take the lock, check the handle is in
 * one of the permitted states, then that none of args[0..n) is NULL (as
 * libnbd: the state first, then EFAULT "<param> cannot be NULL").  Returns
 * false (error set, unlocked) if the call must not go on: the call's own
 * code never sees a NULL it cannot take. */
bool nbd_internal_enter_args (struct nbd_handle *h, const char *name, unsigned permitted,
                              const struct nonnull_arg *args, size_t n);
bool nbd_internal_enter (struct nbd_handle *h, const char *name, unsigned permitted);
/* Publish the public state and direction, then unlock. */
void nbd_internal_leave (struct nbd_handle *h);
/* Lock-free calls only name themselves. */
#define ENTER_NOLOCK(name) nbd_internal_set_context (name)

#define ENTER(h, name, permitted, failret)                       \
  do {                                                           \
    if (!nbd_internal_enter ((h), (name), (permitted)))          \
      return (failret);                                          \
  } while (0)
/* ENTER for calls with pointer arguments: the trailing arguments are
 * NONNULL (param) for each of them. */
#define ENTER_ARGS(h, name, permitted, failret, ...)                        \
  do {                                                                     \
    const struct nonnull_arg enter_args_[] = { __VA_ARGS__ };              \
    if (!nbd_internal_enter_args ((h), (name), (permitted), enter_args_,   \
                                  sizeof enter_args_ / sizeof enter_args_[0])) \
      return (failret);                                                    \
  } while (0)
#define LEAVE(h) nbd_internal_leave (h)

unsigned nbd_internal_permitted_bit (const struct nbd_handle *h);
const char *nbd_internal_state_name (const struct nbd_handle *h);
int nbd_internal_public_state (const struct nbd_handle *h);

/* ---- debug.c ---------------------------------------------------------- */

void nbd_internal_debug (struct nbd_handle *h, const char *fs, ...)
  __attribute__((format (printf, 2, 3)));
#define debug(h, fs, ...)                                        \
  do {                                                           \
    if ((h)->debug)                                              \
      nbd_internal_debug ((h), (fs), ##__VA_ARGS__);             \
  } while (0)

/* ---- handle.c --------------------------------------------------------- */

int nbd_internal_strvec_append (struct string_vector *v, const char *s);
void nbd_internal_strvec_clear (struct string_vector *v);
void nbd_internal_reset_export_facts (struct nbd_handle *h);
void nbd_internal_free_meta (struct nbd_handle *h);

/* ---- connect.c -------------------------------------------------------- */

/* Attach a connected or connecting socket; starts the handshake. */
int nbd_internal_start_socket (struct nbd_handle *h, int fd, bool connecting);
int nbd_internal_connect_sockaddr (struct nbd_handle *h, const struct sockaddr *sa,
                                   socklen_t len);
int nbd_internal_aio_connect_uri (struct nbd_handle *h, const char *uri);
int nbd_internal_aio_connect_unix (struct nbd_handle *h, const char *path);
int nbd_internal_aio_connect_tcp (struct nbd_handle *h, const char *host, const char *port);
int nbd_internal_aio_connect_vsock (struct nbd_handle *h, uint32_t cid, uint32_t port);
int nbd_internal_aio_connect_command (struct nbd_handle *h, char **argv);
int nbd_internal_aio_connect_sa (struct nbd_handle *h, char **argv);
int nbd_internal_finish_connect (struct nbd_handle *h);

/* ---- handshake.c / opt.c ---------------------------------------------- */

int nbd_internal_hs_begin (struct nbd_handle *h);
/* Move the handshake on as far as the socket allows. */
int nbd_internal_hs_run (struct nbd_handle *h);
int nbd_internal_opt_start (struct nbd_handle *h, enum opt_kind kind);
void nbd_internal_opt_complete (struct nbd_handle *h, int error, const char *msg);
int nbd_internal_nbd_error_to_errno (uint32_t err);

/* ---- issue.c (requests out) ------------------------------------------- */

int64_t nbd_internal_command (struct nbd_handle *h, uint16_t type, uint16_t flags,
                              uint64_t offset, uint64_t count, void *data,
                              nbd_completion_callback *cb, nbd_chunk_callback *chunk,
                              nbd_extent_callback *extent);
int nbd_internal_flush_out (struct nbd_handle *h);
/* The checks every command call shares (closures, flags), then queue it;
 * a read refused here is zeroed (pread_initialize).  aio.c. */
int64_t nbd_internal_checked_command (struct nbd_handle *h, uint16_t type, uint32_t flags,
                                      uint32_t allowed, uint64_t offset, uint64_t count,
                                      void *data, nbd_completion_callback *cb,
                                      nbd_chunk_callback *chunk, nbd_extent_callback *extent);
/* nbd_internal_enter_args for a command call: connected, and a read or a
 * write with a buffer. */
bool nbd_internal_enter_command (struct nbd_handle *h, const char *name, uint16_t type,
                                 const void *buf);
void nbd_internal_free_closures (nbd_completion_callback *cb, nbd_chunk_callback *chunk,
                                 nbd_extent_callback *extent);
struct command *nbd_internal_lookup (struct nbd_handle *h, uint64_t wire_cookie);
void nbd_internal_finish_command (struct nbd_handle *h, struct command *cmd);
void nbd_internal_release_command (struct nbd_handle *h, struct command *cmd);
void nbd_internal_free_commands (struct nbd_handle *h);
void nbd_internal_abandon_unsent (struct nbd_handle *h);

/* ---- reply.c (replies in) --------------------------------------------- */

int nbd_internal_recv_replies (struct nbd_handle *h);
void nbd_internal_reset_reply (struct nbd_handle *h);
void nbd_internal_zero_unfilled (struct command *cmd);

/* ---- aio.c / poll.c / sync.c ------------------------------------------ */

/* The state machine's two events. */
int nbd_internal_notify_read (struct nbd_handle *h);
int nbd_internal_notify_write (struct nbd_handle *h);
unsigned nbd_internal_direction (const struct nbd_handle *h);
int nbd_internal_poll (struct nbd_handle *h, int timeout);
/* Kill the connection: state DEAD, every pending command fails, with
 * ENOTCONN (as libnbd), or EPROTO for a lying server, or the concurrent
 * writer's errno; the message it gets names errnum's cause.  The error
 * message must already be set. */
void nbd_internal_set_dead (struct nbd_handle *h, int errnum);
void nbd_internal_set_closed (struct nbd_handle *h);
/* Fail every command not yet completed with errnum (completion callbacks run). */
void nbd_internal_abort_commands (struct nbd_handle *h, int errnum);
int nbd_internal_wait_connected (struct nbd_handle *h);
int nbd_internal_wait_command (struct nbd_handle *h, int64_t cookie);
int nbd_internal_aio_command_completed (struct nbd_handle *h, uint64_t cookie);
/* EFAULT if a required mid-command closure has neither callback nor free. */
bool nbd_internal_closure_missing (const nbd_chunk_callback *chunk,
                                   const nbd_extent_callback *extent);

/* ---- writer.c -------------------------------------------------------- */

/* nbd_concurrent_writer_send's "the socket is full, call again": errno
 * EAGAIN and nothing else.  It is flow control, as for sendmsg, not an
 * error: no message is formatted (no allocation) on the send path. */
static inline ssize_t
nbd_internal_writer_full (void)
{
  errno = EAGAIN;
  return -1;
}
/* Hand bytes to the writer (len 0: end of stream). */
void nbd_internal_writer_send (struct nbd_handle *h, const void *buf, size_t len);
/* If the writer reported an error, kill the connection; returns -1 then. */
int nbd_internal_writer_check (struct nbd_handle *h);
/* Lend a write payload to the zero-copy writer (else copy it, as above). */
void nbd_internal_writer_lend (struct nbd_handle *h, struct command *cmd, const void *buf,
                               size_t len);
/* Complete pinned commands whose payloads the writer has given back. */
void nbd_internal_unpin (struct nbd_handle *h);
/* Wait (bounded by the writer's promise) until a release happens. */
void nbd_internal_wait_release (struct nbd_handle *h, int timeout_ms);
void nbd_internal_set_fd (struct nbd_handle *h, int fd);

/* ---- tls.c (only with GnuTLS) ----------------------------------------- */

/* Called only while h->tls_conn is set, which needs GnuTLS.  Errors are set
 * (with the cause in words) before -1 is returned. */
#if HAVE_GNUTLS
/* After STARTTLS's ACK: the session and its credentials (h->tls_conn). */
int nbd_internal_tls_start (struct nbd_handle *h);
/* Drive the handshake: 1 done, 0 waiting for the server, -1 failed. */
int nbd_internal_tls_handshake_step (struct nbd_handle *h);
/* As recv(2): bytes, 0 at end of stream, -1 with errno EAGAIN (would
 * block) or another errno (the error message is set). */
ssize_t nbd_internal_tls_recv (struct nbd_handle *h, void *buf, size_t len);
/* Encrypt all of buf: gathered into records, the ciphertext buffered (or
 * handed to the writer); nbd_internal_tls_flush sends it. */
int nbd_internal_tls_send (struct nbd_handle *h, const void *buf, size_t len);
/* Send buffered ciphertext: 1 all sent, 0 the socket is full, -1 error. */
int nbd_internal_tls_flush (struct nbd_handle *h);
/* Ciphertext (or a record being gathered) still to go out. */
bool nbd_internal_tls_out_pending (const struct nbd_handle *h);
/* Data held in user space that no POLLIN will announce. */
bool nbd_internal_tls_pending (const struct nbd_handle *h);
/* close_notify after NBD_CMD_DISC, then the end of the write side. */
void nbd_internal_tls_bye (struct nbd_handle *h);
void nbd_internal_tls_free (struct nbd_handle *h);
/* The writer thread's side once h->tls_plain is on: encrypt plaintext from
 * iov and send it (nbd_concurrent_writer_send's contract); close_notify at
 * the end of the stream (0 sent, -1 with errno EAGAIN or an error). */
ssize_t nbd_internal_tls_writer_send (struct nbd_handle *h, int fd, const struct iovec *iov,
                                      int iovcnt);
int nbd_internal_tls_writer_bye (struct nbd_handle *h, int fd);
#else
/* Never reached (tls_conn stays NULL); they only keep the callers whole. */
#define NBD_NO_TLS_CALL(h) ((void) (h), set_error (ENOTSUP, "built without TLS support"), -1)
#define nbd_internal_tls_start(h) NBD_NO_TLS_CALL (h)
#define nbd_internal_tls_handshake_step(h) NBD_NO_TLS_CALL (h)
#define nbd_internal_tls_recv(h, buf, len) \
  ((void) (buf), (void) (len), errno = ENOTSUP, NBD_NO_TLS_CALL (h))
#define nbd_internal_tls_send(h, buf, len) ((void) (buf), (void) (len), NBD_NO_TLS_CALL (h))
#define nbd_internal_tls_flush(h) NBD_NO_TLS_CALL (h)
#define nbd_internal_tls_out_pending(h) ((void) (h), false)
#define nbd_internal_tls_pending(h) ((void) (h), false)
#define nbd_internal_tls_bye(h) ((void) (h))
#define nbd_internal_tls_free(h) ((void) (h))
#define nbd_internal_tls_writer_send(h, fd, iov, iovcnt) \
  ((void) (fd), (void) (iov), (void) (iovcnt), NBD_NO_TLS_CALL (h))
#define nbd_internal_tls_writer_bye(h, fd) ((void) (fd), NBD_NO_TLS_CALL (h))
#endif
/* Records are made on this side (TLS on, and not by the writer thread). */
#define nbd_internal_tls_sends(h) ((h)->tls_conn && !(h)->tls_plain)
/* Bytes still to go out through the socket: requests or TLS ciphertext. */
#define nbd_internal_tls_out_waiting(h) ((h)->tls_conn && nbd_internal_tls_out_pending (h))

/* ---- Callbacks -------------------------------------------------------- */

#define FREE_CALLBACK(cb)                                        \
  do {                                                           \
    if ((cb).free)                                               \
      (cb).free ((cb).user_data);                                \
    (cb).callback = NULL;                                        \
    (cb).free = NULL;                                            \
  } while (0)

/* Zero the caller's copy once the core owns the closure. */
#define TAKE_CALLBACK(dst, srcp)                                 \
  do {                                                           \
    (dst) = *(srcp);                                             \
    (srcp)->callback = NULL;                                     \
    (srcp)->free = NULL;                                         \
  } while (0)

static inline bool
is_power_of_2 (uint64_t v)
{
  return v && (v & (v - 1)) == 0;
}

#endif
