/* protocol.h: the NBD wire format (doc/proto.md of the NBD project).
 *
 * Only constants and packed structs; integers on the wire are big-endian and
 * are converted with be*toh/htobe* where they are read or written.
 */
#ifndef NBD_CORE_PROTOCOL_H
#define NBD_CORE_PROTOCOL_H

#include <stdint.h>

#define NBD_MAGIC UINT64_C (0x4e42444d41474943)         /* "NBDMAGIC" */
#define NBD_NEW_VERSION UINT64_C (0x49484156454F5054)   /* "IHAVEOPT" */
#define NBD_OLD_VERSION UINT64_C (0x0000420281861253)
#define NBD_REP_MAGIC UINT64_C (0x3e889045565a9)
#define NBD_REQUEST_MAGIC 0x25609513
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33ef

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES 2

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS (1 << 0)
#define NBD_FLAG_READ_ONLY (1 << 1)
#define NBD_FLAG_SEND_FLUSH (1 << 2)
#define NBD_FLAG_SEND_FUA (1 << 3)
#define NBD_FLAG_ROTATIONAL (1 << 4)
#define NBD_FLAG_SEND_TRIM (1 << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1 << 6)
#define NBD_FLAG_SEND_DF (1 << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1 << 8)
#define NBD_FLAG_SEND_CACHE (1 << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1 << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_LIST 3
#define NBD_OPT_STARTTLS 5
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT 10

/* Option replies. */
#define NBD_REP_ACK 1
#define NBD_REP_SERVER 2
#define NBD_REP_INFO 3
#define NBD_REP_META_CONTEXT 4
#define NBD_REP_ERR(n) (UINT32_C (0x80000000) | (n))
#define NBD_REP_IS_ERR(t) (((t) & UINT32_C (0x80000000)) != 0)
#define NBD_REP_ERR_UNSUP NBD_REP_ERR (1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR (2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR (3)
#define NBD_REP_ERR_PLATFORM NBD_REP_ERR (4)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR (5)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR (6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR (7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR (8)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR (9)

#define NBD_INFO_EXPORT 0
#define NBD_INFO_NAME 1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE 3

/* Commands and command flags. */
#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_FLUSH 3
#define NBD_CMD_TRIM 4
#define NBD_CMD_CACHE 5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

#define NBD_CMD_FLAG_FUA (1 << 0)
#define NBD_CMD_FLAG_NO_HOLE (1 << 1)
#define NBD_CMD_FLAG_DF (1 << 2)
#define NBD_CMD_FLAG_REQ_ONE (1 << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1 << 4)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE (1 << 0)
#define NBD_REPLY_TYPE_NONE 0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR 32769
#define NBD_REPLY_TYPE_ERROR_OFFSET 32770
#define NBD_REPLY_TYPE_IS_ERR(t) (((t) & (1 << 15)) != 0)

/* Error values on the wire. */
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP 95
#define NBD_ESHUTDOWN 108

struct nbd_option_hdr {
  uint64_t magic;               /* NBD_NEW_VERSION */
  uint32_t option;
  uint32_t len;
} __attribute__((packed));

struct nbd_option_reply_hdr {
  uint64_t magic;               /* NBD_REP_MAGIC */
  uint32_t option;
  uint32_t type;
  uint32_t len;
} __attribute__((packed));

struct nbd_request {
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t count;
} __attribute__((packed));

struct nbd_simple_reply {
  uint32_t magic;
  uint32_t error;
  uint64_t cookie;
} __attribute__((packed));

struct nbd_structured_reply {
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint32_t length;
} __attribute__((packed));

/* Limits a client sets itself (the spec: strings at most 4096 bytes). */
#define NBD_MAX_STRING 4096
/* The longest option reply payload accepted: a REP_SERVER with a name and
 * a description of NBD_MAX_STRING each, plus the length field. */
#define NBD_MAX_OPTION_REPLY (4 + 2 * NBD_MAX_STRING)
/* Reads and writes larger than this are refused client-side (ERANGE). */
#define NBD_MAX_REQUEST_SIZE (64 * 1024 * 1024)
/* The most block-status descriptors accepted in one chunk. */
#define NBD_MAX_EXTENTS (1024 * 1024)

#endif
