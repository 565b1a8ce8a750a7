/* handshake.c: everything before transmission — the server's magic,
 * oldstyle and (fixed) newstyle, the options in lockstep (STARTTLS first,
 * then STRUCTURED_REPLY, SET_META_CONTEXT, GO/INFO with the EXPORT_NAME
 * fallback, LIST, LIST_META_CONTEXT, ABORT) and the export facts they bring.
 * With TLS required, anything short of a TLS session ends the connection;
 * after STARTTLS the same I/O goes through tls.c's records.
 *
 * The handshake is small and strictly request/reply, so it has its own
 * simple I/O: one outgoing buffer and one exact-length incoming target at a
 * time; when both are done, the step's handler decides what comes next.
 * Never blocks; never trusts a length from the server before checking it.
 */
#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

static int send_option (struct nbd_handle *h, uint32_t option, const void *a, size_t alen,
                        const void *b, size_t blen);
static int start_go (struct nbd_handle *h, uint32_t option);
static int after_structured_reply (struct nbd_handle *h);
static int after_tls_decided (struct nbd_handle *h);
static int bad_reply_type (struct nbd_handle *h);

/* ---- Handshake I/O ---------------------------------------------------- */

static int
hs_append (struct nbd_handle *h, const void *p, size_t n)
{
  if (h->hs_out_len + n > h->hs_out_cap) {
    size_t cap = h->hs_out_cap ? h->hs_out_cap : 256;
    char *nb;

    while (cap < h->hs_out_len + n)
      cap *= 2;
    nb = realloc (h->hs_out, cap);
    if (!nb) {
      set_error (ENOMEM, "handshake buffer");
      return -1;
    }
    h->hs_out = nb;
    h->hs_out_cap = cap;
  }
  memcpy (h->hs_out + h->hs_out_len, p, n);
  h->hs_out_len += n;
  return 0;
}

static void
hs_expect (struct nbd_handle *h, void *dst, size_t n, enum hs_step next)
{
  h->hs_in = dst;
  h->hs_in_len = n;
  h->hs_in_pos = 0;
  h->hs = next;
}

/* A protocol violation during the handshake: the connection is unusable. */
static int
hs_protocol_error (struct nbd_handle *h, const char *what)
{
  set_error (EPROTO, "handshake: %s", what);
  return -1;
}

int
nbd_internal_nbd_error_to_errno (uint32_t err)
{
  switch (err) {
  case NBD_EPERM: return EPERM;
  case NBD_EIO: return EIO;
  case NBD_ENOMEM: return ENOMEM;
  case NBD_EINVAL: return EINVAL;
  case NBD_ENOSPC: return ENOSPC;
  case NBD_EOVERFLOW: return EOVERFLOW;
  case NBD_ENOTSUP: return ENOTSUP;
  case NBD_ESHUTDOWN: return ESHUTDOWN;
  default: return EINVAL;       /* the spec: unknown values mean EINVAL */
  }
}

static int
option_error_to_errno (uint32_t type)
{
  switch (type) {
  case NBD_REP_ERR_UNSUP: return ENOTSUP;
  case NBD_REP_ERR_POLICY: return EPERM;
  case NBD_REP_ERR_INVALID: return EINVAL;
  case NBD_REP_ERR_PLATFORM: return EOPNOTSUPP;
  case NBD_REP_ERR_TLS_REQD: return ENOTSUP;
  case NBD_REP_ERR_UNKNOWN: return ENOENT;
  case NBD_REP_ERR_SHUTDOWN: return ESHUTDOWN;
  case NBD_REP_ERR_BLOCK_SIZE_REQD: return EINVAL;
  case NBD_REP_ERR_TOO_BIG: return ERANGE;
  default: return EINVAL;
  }
}

static const char *
option_name (uint32_t option)
{
  switch (option) {
  case NBD_OPT_EXPORT_NAME: return "NBD_OPT_EXPORT_NAME";
  case NBD_OPT_ABORT: return "NBD_OPT_ABORT";
  case NBD_OPT_LIST: return "NBD_OPT_LIST";
  case NBD_OPT_STARTTLS: return "NBD_OPT_STARTTLS";
  case NBD_OPT_INFO: return "NBD_OPT_INFO";
  case NBD_OPT_GO: return "NBD_OPT_GO";
  case NBD_OPT_STRUCTURED_REPLY: return "NBD_OPT_STRUCTURED_REPLY";
  case NBD_OPT_LIST_META_CONTEXT: return "NBD_OPT_LIST_META_CONTEXT";
  case NBD_OPT_SET_META_CONTEXT: return "NBD_OPT_SET_META_CONTEXT";
  default: return "unknown option";
  }
}

static const char *
option_error_name (uint32_t type)
{
  switch (type) {
  case NBD_REP_ERR_UNSUP: return "unsupported";
  case NBD_REP_ERR_POLICY: return "denied by server policy";
  case NBD_REP_ERR_INVALID: return "invalid";
  case NBD_REP_ERR_PLATFORM: return "unsupported on this platform";
  case NBD_REP_ERR_TLS_REQD: return "TLS is required by the server";
  case NBD_REP_ERR_UNKNOWN: return "export not found";
  case NBD_REP_ERR_SHUTDOWN: return "server is shutting down";
  case NBD_REP_ERR_BLOCK_SIZE_REQD: return "block size constraints are required";
  case NBD_REP_ERR_TOO_BIG: return "request too big";
  default: return "unknown error";
  }
}

/* The server's optional human-readable text, made safe to print. */
static void
server_text (const char *p, size_t len, char *out, size_t outlen)
{
  size_t j = 0;

  for (size_t i = 0; i < len && j + 1 < outlen; i++)
    out[j++] = isprint ((unsigned char) p[i]) ? p[i] : '?';
  out[j] = '\0';
}

/* ---- Entering the next phase ------------------------------------------ */

static int
enter_transmission (struct nbd_handle *h)
{
  h->state = ST_READY;
  h->hs = HS_NONE;
  h->hs_in = NULL;
  h->hs_in_len = h->hs_in_pos = 0;
  debug (h, "transmission: size %" PRIu64 ", flags 0x%x, structured replies %s",
         h->exportsize, h->eflags, h->sr ? "on" : "off");
  if (h->opt.kind == OPTK_GO)
    nbd_internal_opt_complete (h, 0, NULL);
  return 0;
}

static int
enter_negotiating (struct nbd_handle *h)
{
  h->state = ST_NEGOTIATING;
  h->hs = HS_NONE;
  h->hs_in = NULL;
  h->hs_in_len = h->hs_in_pos = 0;
  return 0;
}

/* An option failed in a way the user may recover from (opt mode), or that
 * ends the connection (automatic negotiation). */
static int
option_failed (struct nbd_handle *h, int err, const char *what, const char *text)
{
  char msg[NBD_MAX_STRING + 256];

  snprintf (msg, sizeof msg, "%s%s%s", what, *text ? ": " : "", text);
  set_error (err, "handshake: %s", msg);
  if (h->opt_mode && h->opt.kind != OPTK_NONE) {
    enter_negotiating (h);
    nbd_internal_opt_complete (h, err, msg);
    return 0;
  }
  return -1;
}

/* ---- Steps ------------------------------------------------------------ */

int
nbd_internal_hs_begin (struct nbd_handle *h)
{
  h->state = ST_HANDSHAKE;
  h->hs_out_len = h->hs_out_pos = 0;
  hs_expect (h, h->hs_small, 16, HS_MAGIC);
  return nbd_internal_hs_run (h);
}

static int
step_magic (struct nbd_handle *h)
{
  uint64_t magic, version;

  memcpy (&magic, h->hs_small, 8);
  memcpy (&version, h->hs_small + 8, 8);
  magic = be64toh (magic);
  version = be64toh (version);
  if (magic != NBD_MAGIC)
    return hs_protocol_error (h, "server did not send the NBD magic "
                              "(is this an NBD server?)");
  if (version == NBD_OLD_VERSION) {
    if (h->tls == LIBNBD_TLS_REQUIRE) {
      set_error (ENOTSUP, "handshake: server is oldstyle, which cannot do TLS, but TLS is "
                 "required");
      return -1;
    }
    hs_expect (h, h->hs_small, 8 + 4 + 124, HS_OLDSTYLE);
    return 0;
  }
  if (version == NBD_NEW_VERSION) {
    hs_expect (h, h->hs_small, 2, HS_GFLAGS);
    return 0;
  }
  return hs_protocol_error (h, "unknown handshake version after NBDMAGIC");
}

static void
set_eflags (struct nbd_handle *h, uint64_t size, uint16_t eflags)
{
  h->have_export = true;
  h->exportsize = size;
  h->eflags = (eflags & NBD_FLAG_HAS_FLAGS) ? eflags : 0;
  /* DF only means something with structured replies. */
  if (!h->sr)
    h->eflags &= ~NBD_FLAG_SEND_DF;
}

static int
step_oldstyle (struct nbd_handle *h)
{
  uint64_t size;
  uint32_t flags;

  memcpy (&size, h->hs_small, 8);
  memcpy (&flags, h->hs_small + 8, 4);
  size = be64toh (size);
  flags = be32toh (flags);
  h->protocol = "oldstyle";
  h->gflags = flags >> 16;
  set_eflags (h, size, flags & 0xffff);
  return enter_transmission (h);
}

static int
send_export_name (struct nbd_handle *h)
{
  struct nbd_option_hdr hdr = {
    .magic = htobe64 (NBD_NEW_VERSION),
    .option = htobe32 (NBD_OPT_EXPORT_NAME),
    .len = htobe32 ((uint32_t) strlen (h->export_name)),
  };

  if (hs_append (h, &hdr, sizeof hdr) == -1 ||
      hs_append (h, h->export_name, strlen (h->export_name)) == -1)
    return -1;
  h->cur_option = NBD_OPT_EXPORT_NAME;
  hs_expect (h, h->hs_small, (h->gflags & NBD_FLAG_NO_ZEROES) ? 10 : 10 + 124,
             HS_EXPORT_NAME_REPLY);
  return 0;
}

static int
step_export_name_reply (struct nbd_handle *h)
{
  uint64_t size;
  uint16_t eflags;

  memcpy (&size, h->hs_small, 8);
  memcpy (&eflags, h->hs_small + 8, 2);
  set_eflags (h, be64toh (size), be16toh (eflags));
  return enter_transmission (h);
}

static int
step_gflags (struct nbd_handle *h)
{
  uint16_t gflags;
  uint32_t cflags;

  memcpy (&gflags, h->hs_small, 2);
  gflags = be16toh (gflags);
  h->gflags = gflags & h->handshake_flags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  if (h->tls == LIBNBD_TLS_REQUIRE && !(h->gflags & NBD_FLAG_FIXED_NEWSTYLE)) {
    set_error (ENOTSUP, "handshake: %s, which cannot do TLS, but TLS is required",
               (gflags & NBD_FLAG_FIXED_NEWSTYLE)
               ? "fixed newstyle is turned off in nbd_set_handshake_flags"
               : "server is not fixed newstyle");
    return -1;
  }
  cflags = htobe32 (h->gflags);
  if (hs_append (h, &cflags, 4) == -1)
    return -1;
  if (!(h->gflags & NBD_FLAG_FIXED_NEWSTYLE)) {
    /* Plain newstyle knows only EXPORT_NAME.  As libnbd, opt mode still
     * stops here: nbd_opt_go sends EXPORT_NAME, the rest are ENOTSUP. */
    h->protocol = "newstyle";
    if (h->opt_mode)
      return enter_negotiating (h);
    return send_export_name (h);
  }
  h->protocol = "newstyle-fixed";
  /* STARTTLS first, before anything a MitM could alter in plaintext. */
  if (h->tls != LIBNBD_TLS_DISABLE)
    return send_option (h, NBD_OPT_STARTTLS, NULL, 0, NULL, 0);
  return after_tls_decided (h);
}

/* Plaintext or TLS is settled: the rest of the negotiation. */
static int
after_tls_decided (struct nbd_handle *h)
{
  if (h->request_sr)
    return send_option (h, NBD_OPT_STRUCTURED_REPLY, NULL, 0, NULL, 0);
  return after_structured_reply (h);
}

static int
reply_starttls (struct nbd_handle *h, uint32_t type, uint32_t len)
{
  char text[NBD_MAX_STRING + 1];

  if (type == NBD_REP_ACK) {
    if (len != 0)
      return hs_protocol_error (h, "ACK to NBD_OPT_STARTTLS has a payload");
    if (nbd_internal_tls_start (h) == -1)
      return -1;
    h->hs = HS_TLS_HANDSHAKE;
    h->hs_in = NULL;
    h->hs_in_len = h->hs_in_pos = 0;
    return 0;
  }
  if (!NBD_REP_IS_ERR (type))
    return bad_reply_type (h);
  server_text (h->opt_payload, len, text, sizeof text);
  if (h->tls == LIBNBD_TLS_REQUIRE) {
    set_error (ENOTSUP, "handshake: server refused NBD_OPT_STARTTLS (%s%s%s), but TLS is "
               "required", option_error_name (type), *text ? ": " : "", text);
    return -1;
  }
  debug (h, "server refused TLS (%s), continuing in plaintext as TLS is only allowed",
         option_error_name (type));
  return after_tls_decided (h);
}

/* The TLS handshake is done.  Whatever was negotiated before it counts for
 * nothing (a MitM could have injected it): start again. */
static int
after_tls_handshake (struct nbd_handle *h)
{
  h->tls_negotiated = true;
  h->sr = false;
  nbd_internal_free_meta (h);
  nbd_internal_reset_export_facts (h);
  return after_tls_decided (h);
}

static int
after_structured_reply (struct nbd_handle *h)
{
  if (h->opt_mode)
    return enter_negotiating (h);
  return start_go (h, NBD_OPT_GO);
}

/* Queue an option (header + up to two payload pieces) and expect its first
 * reply header. */
static int
send_option (struct nbd_handle *h, uint32_t option, const void *a, size_t alen, const void *b,
             size_t blen)
{
  struct nbd_option_hdr hdr = {
    .magic = htobe64 (NBD_NEW_VERSION),
    .option = htobe32 (option),
    .len = htobe32 ((uint32_t) (alen + blen)),
  };

  debug (h, "sending %s", option_name (option));
  if (hs_append (h, &hdr, sizeof hdr) == -1 || (alen && hs_append (h, a, alen) == -1) ||
      (blen && hs_append (h, b, blen) == -1))
    return -1;
  h->cur_option = option;
  hs_expect (h, &h->opt_hdr, sizeof h->opt_hdr, HS_OPT_REPLY_HDR);
  return 0;
}

/* Payload of SET_META_CONTEXT and LIST_META_CONTEXT: export name, then the
 * queries. */
static int
send_meta_option (struct nbd_handle *h, uint32_t option)
{
  size_t namelen = strlen (h->export_name), total = 4 + namelen + 4;
  char *buf, *p;
  int r;

  for (size_t i = 0; i < h->request_meta.len; i++)
    total += 4 + strlen (h->request_meta.v[i]);
  buf = malloc (total);
  if (!buf) {
    set_error (ENOMEM, "building %s", option_name (option));
    return -1;
  }
  p = buf;
  uint32_t be = htobe32 ((uint32_t) namelen);
  memcpy (p, &be, 4), p += 4;
  memcpy (p, h->export_name, namelen), p += namelen;
  be = htobe32 ((uint32_t) h->request_meta.len);
  memcpy (p, &be, 4), p += 4;
  for (size_t i = 0; i < h->request_meta.len; i++) {
    size_t l = strlen (h->request_meta.v[i]);
    be = htobe32 ((uint32_t) l);
    memcpy (p, &be, 4), p += 4;
    memcpy (p, h->request_meta.v[i], l), p += l;
  }
  r = send_option (h, option, buf, total, NULL, 0);
  free (buf);
  return r;
}

static int
send_go_or_info (struct nbd_handle *h, uint32_t option)
{
  size_t namelen = strlen (h->export_name);
  uint16_t infos[3];
  uint16_t n = 0;
  char head[4];
  char tail[2 + sizeof infos];
  uint32_t be = htobe32 ((uint32_t) namelen);

  if (h->full_info) {
    infos[n++] = htobe16 (NBD_INFO_NAME);
    infos[n++] = htobe16 (NBD_INFO_DESCRIPTION);
  }
  if (h->request_block_size)
    infos[n++] = htobe16 (NBD_INFO_BLOCK_SIZE);
  memcpy (head, &be, 4);
  uint16_t ben = htobe16 (n);
  memcpy (tail, &ben, 2);
  memcpy (tail + 2, infos, n * 2);
  /* The export name sits between the two fixed parts. */
  struct nbd_option_hdr hdr = {
    .magic = htobe64 (NBD_NEW_VERSION),
    .option = htobe32 (option),
    .len = htobe32 ((uint32_t) (4 + namelen + 2 + n * 2)),
  };
  debug (h, "sending %s for export \"%s\"", option_name (option), h->export_name);
  if (hs_append (h, &hdr, sizeof hdr) == -1 || hs_append (h, head, 4) == -1 ||
      hs_append (h, h->export_name, namelen) == -1 || hs_append (h, tail, 2 + n * 2) == -1)
    return -1;
  nbd_internal_reset_export_facts (h);
  h->cur_option = option;
  hs_expect (h, &h->opt_hdr, sizeof h->opt_hdr, HS_OPT_REPLY_HDR);
  return 0;
}

/* GO and INFO first (re)negotiate the meta contexts for this export. */
static int
start_go (struct nbd_handle *h, uint32_t option)
{
  nbd_internal_free_meta (h);
  if (h->sr && h->request_meta.len > 0) {
    h->hs_after_meta = option;
    return send_meta_option (h, NBD_OPT_SET_META_CONTEXT);
  }
  return send_go_or_info (h, option);
}

static int
step_opt_reply_hdr (struct nbd_handle *h)
{
  uint64_t magic = be64toh (h->opt_hdr.magic);
  uint32_t option = be32toh (h->opt_hdr.option);
  uint32_t len = be32toh (h->opt_hdr.len);

  if (magic != NBD_REP_MAGIC)
    return hs_protocol_error (h, "option reply has the wrong magic");
  if (option != h->cur_option) {
    set_error (EPROTO, "handshake: server replied to option %" PRIu32 " while %s was asked",
               option, option_name (h->cur_option));
    return -1;
  }
  if (len > NBD_MAX_OPTION_REPLY) {
    set_error (EPROTO, "handshake: reply to %s is %" PRIu32 " bytes, more than the limit of %d",
               option_name (h->cur_option), len, NBD_MAX_OPTION_REPLY);
    return -1;
  }
  h->opt_hdr.option = option;
  h->opt_hdr.type = be32toh (h->opt_hdr.type);
  h->opt_hdr.len = len;
  hs_expect (h, h->opt_payload, len, HS_OPT_REPLY_PAYLOAD);
  return 0;
}

/* Expect the next reply to the same option. */
static int
more_replies (struct nbd_handle *h)
{
  hs_expect (h, &h->opt_hdr, sizeof h->opt_hdr, HS_OPT_REPLY_HDR);
  return 0;
}

static int
bad_reply_type (struct nbd_handle *h)
{
  set_error (EPROTO, "handshake: unexpected reply type %" PRIu32 " to %s", h->opt_hdr.type,
             option_name (h->cur_option));
  return -1;
}

static int
reply_structured_reply (struct nbd_handle *h, uint32_t type, uint32_t len)
{
  if (type == NBD_REP_ACK) {
    if (len != 0)
      return hs_protocol_error (h, "ACK to NBD_OPT_STRUCTURED_REPLY has a payload");
    h->sr = true;
  }
  else if (NBD_REP_IS_ERR (type)) {
    debug (h, "server refused structured replies");
    h->sr = false;
  }
  else
    return bad_reply_type (h);
  return after_structured_reply (h);
}

/* REP_META_CONTEXT: u32 id, then the name (the rest). */
static int
parse_meta_reply (struct nbd_handle *h, uint32_t len, uint32_t *id, char **name)
{
  if (len < 5 || len > 4 + NBD_MAX_STRING)
    return hs_protocol_error (h, "meta context reply has an invalid length");
  memcpy (id, h->opt_payload, 4);
  *id = be32toh (*id);
  h->opt_payload[len] = '\0';
  if (memchr (h->opt_payload + 4, '\0', len - 4))
    return hs_protocol_error (h, "meta context name contains a NUL byte");
  *name = h->opt_payload + 4;
  return 0;
}

/* A selected context the client refuses: EPROTO, naming it. */
static int
meta_refused (const char *name, const char *why)
{
  char shown[NBD_MAX_STRING + 1];

  server_text (name, strlen (name), shown, sizeof shown);
  set_error (EPROTO, "handshake: server selected meta context %s%s", shown, why);
  return -1;
}

/* The server may select only what was asked for, by exact name, and each
 * context once.  (nbdkit and qemu-nbd select nothing for a namespace query
 * such as "base:"; only a listing expands one.)  So what is stored never
 * outnumbers the queries, whatever the server sends: it cannot make the
 * client store, or scan, contexts without end. */
static int
reply_set_meta (struct nbd_handle *h, uint32_t type, uint32_t len)
{
  if (type == NBD_REP_META_CONTEXT) {
    uint32_t id;
    char *name, *copy;
    bool asked = false;

    if (parse_meta_reply (h, len, &id, &name) == -1)
      return -1;
    for (size_t i = 0; i < h->nr_meta; i++) {
      if (h->meta[i].id == id)
        return hs_protocol_error (h, "server gave two meta contexts one id");
      if (strcmp (h->meta[i].name, name) == 0)
        return meta_refused (name, " twice");
    }
    for (size_t i = 0; i < h->request_meta.len && !asked; i++)
      asked = strcmp (h->request_meta.v[i], name) == 0;
    if (!asked)
      return meta_refused (name, ", which was not asked for");
    /* Room for one context per query, sized at the first: each one stored
     * matches a different query, and the queries cannot change while an
     * option is in flight (nbd_add_meta_context needs the negotiating
     * state). */
    if (h->nr_meta == 0) {
      struct meta_context *nm = realloc (h->meta, h->request_meta.len * sizeof *nm);

      if (!nm) {
        set_error (ENOMEM, "storing the meta contexts");
        return -1;
      }
      h->meta = nm;
    }
    copy = strdup (name);
    if (!copy) {
      set_error (ENOMEM, "storing a meta context");
      return -1;
    }
    h->meta[h->nr_meta].id = id;
    h->meta[h->nr_meta].name = copy;
    h->nr_meta++;
    debug (h, "negotiated meta context %s with id %" PRIu32, copy, id);
    return more_replies (h);
  }
  if (type == NBD_REP_ACK || NBD_REP_IS_ERR (type)) {
    if (NBD_REP_IS_ERR (type)) {
      debug (h, "server refused NBD_OPT_SET_META_CONTEXT");
      nbd_internal_free_meta (h);
    }
    h->meta_valid = true;
    return send_go_or_info (h, h->hs_after_meta);
  }
  return bad_reply_type (h);
}

static int
valid_block_sizes (struct nbd_handle *h)
{
  uint32_t min = h->block_min, pref = h->block_pref, max = h->block_max;

  if (!min && !pref && !max)
    return 0;
  if (!is_power_of_2 (min) || min > 64 * 1024 || !is_power_of_2 (pref) || pref < min ||
      pref < 512 || max < pref || (max != UINT32_MAX && max % min != 0)) {
    set_error (EPROTO, "handshake: server sent contradictory block sizes: minimum %" PRIu32
               ", preferred %" PRIu32 ", maximum %" PRIu32, min, pref, max);
    return -1;
  }
  return 0;
}

static int
reply_info (struct nbd_handle *h, uint16_t info, uint32_t len)
{
  const char *p = h->opt_payload + 2;
  char **field;

  switch (info) {
  case NBD_INFO_EXPORT: {
    uint64_t size;
    uint16_t eflags;

    if (len != 12)
      return hs_protocol_error (h, "NBD_INFO_EXPORT has the wrong length");
    memcpy (&size, p, 8);
    memcpy (&eflags, p + 8, 2);
    set_eflags (h, be64toh (size), be16toh (eflags));
    return 0;
  }
  case NBD_INFO_BLOCK_SIZE: {
    uint32_t v[3];

    if (len != 14)
      return hs_protocol_error (h, "NBD_INFO_BLOCK_SIZE has the wrong length");
    memcpy (v, p, 12);
    h->block_min = be32toh (v[0]);
    h->block_pref = be32toh (v[1]);
    h->block_max = be32toh (v[2]);
    return 0;
  }
  case NBD_INFO_NAME:
  case NBD_INFO_DESCRIPTION:
    if (len > 2 + NBD_MAX_STRING)
      return hs_protocol_error (h, "export name or description too long");
    if (memchr (p, '\0', len - 2))
      return hs_protocol_error (h, "export name or description holds a NUL");
    field = info == NBD_INFO_NAME ? &h->canonical_name : &h->description;
    free (*field);
    *field = strndup (p, len - 2);
    if (!*field) {
      set_error (ENOMEM, "strndup");
      return -1;
    }
    return 0;
  default:
    debug (h, "ignoring unknown NBD_INFO type %u", info);
    return 0;
  }
}

static int
reply_go (struct nbd_handle *h, uint32_t type, uint32_t len)
{
  char text[NBD_MAX_STRING + 1];

  if (type == NBD_REP_INFO) {
    uint16_t info;

    if (len < 2)
      return hs_protocol_error (h, "NBD_REP_INFO shorter than its type field");
    memcpy (&info, h->opt_payload, 2);
    if (reply_info (h, be16toh (info), len) == -1)
      return -1;
    return more_replies (h);
  }
  if (type == NBD_REP_ACK) {
    if (!h->have_export)
      return hs_protocol_error (h, "server acknowledged the export without "
                                "sending NBD_INFO_EXPORT");
    if (valid_block_sizes (h) == -1)
      return -1;
    if (h->cur_option == NBD_OPT_GO)
      return enter_transmission (h);
    enter_negotiating (h);
    nbd_internal_opt_complete (h, 0, NULL);
    return 0;
  }
  if (!NBD_REP_IS_ERR (type))
    return bad_reply_type (h);
  nbd_internal_reset_export_facts (h);
  if (type == NBD_REP_ERR_UNSUP && h->cur_option == NBD_OPT_GO && !h->tls_negotiated) {
    debug (h, "server lacks NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME");
    return send_export_name (h);
  }
  server_text (h->opt_payload, len, text, sizeof text);
  return option_failed (h, option_error_to_errno (type),
                        h->cur_option == NBD_OPT_GO
                        ? (type == NBD_REP_ERR_UNKNOWN ? "server has no such export (NBD_OPT_GO)"
                           : option_error_name (type))
                        : option_error_name (type), text);
}

/* The end of a listing option (LIST, LIST_META_CONTEXT): ACK, or an error
 * the user sees, either way back to negotiating. */
static int
list_end (struct nbd_handle *h, uint32_t type, uint32_t len)
{
  char text[NBD_MAX_STRING + 1];

  if (type == NBD_REP_ACK) {
    enter_negotiating (h);
    nbd_internal_opt_complete (h, 0, NULL);
    return 0;
  }
  if (!NBD_REP_IS_ERR (type))
    return bad_reply_type (h);
  server_text (h->opt_payload, len, text, sizeof text);
  return option_failed (h, option_error_to_errno (type), option_error_name (type), text);
}

static int
reply_list (struct nbd_handle *h, uint32_t type, uint32_t len)
{

  if (type == NBD_REP_SERVER) {
    uint32_t namelen;
    char name[NBD_MAX_STRING + 1], desc[NBD_MAX_STRING + 1];

    if (len < 4)
      return hs_protocol_error (h, "NBD_REP_SERVER shorter than its length field");
    memcpy (&namelen, h->opt_payload, 4);
    namelen = be32toh (namelen);
    if (namelen > len - 4 || namelen > NBD_MAX_STRING || len - 4 - namelen > NBD_MAX_STRING)
      return hs_protocol_error (h, "NBD_REP_SERVER name length is invalid");
    memcpy (name, h->opt_payload + 4, namelen);
    name[namelen] = '\0';
    memcpy (desc, h->opt_payload + 4 + namelen, len - 4 - namelen);
    desc[len - 4 - namelen] = '\0';
    if (strlen (name) != namelen || strlen (desc) != len - 4 - namelen)
      return hs_protocol_error (h, "NBD_REP_SERVER holds a NUL byte");
    if (h->opt.list.callback)
      h->opt.list.callback (h->opt.list.user_data, name, desc);
    return more_replies (h);
  }
  return list_end (h, type, len);
}

static int
reply_list_meta (struct nbd_handle *h, uint32_t type, uint32_t len)
{

  if (type == NBD_REP_META_CONTEXT) {
    uint32_t id;
    char *name;

    if (parse_meta_reply (h, len, &id, &name) == -1)
      return -1;
    if (h->opt.context.callback)
      h->opt.context.callback (h->opt.context.user_data, name);
    return more_replies (h);
  }
  return list_end (h, type, len);
}

static int
step_opt_reply (struct nbd_handle *h)
{
  uint32_t type = h->opt_hdr.type, len = h->opt_hdr.len;

  switch (h->cur_option) {
  case NBD_OPT_STARTTLS: return reply_starttls (h, type, len);
  case NBD_OPT_STRUCTURED_REPLY: return reply_structured_reply (h, type, len);
  case NBD_OPT_SET_META_CONTEXT: return reply_set_meta (h, type, len);
  case NBD_OPT_GO:
  case NBD_OPT_INFO: return reply_go (h, type, len);
  case NBD_OPT_LIST: return reply_list (h, type, len);
  case NBD_OPT_LIST_META_CONTEXT: return reply_list_meta (h, type, len);
  }
  return bad_reply_type (h);
}

static int
run_step (struct nbd_handle *h)
{
  switch (h->hs) {
  case HS_MAGIC: return step_magic (h);
  case HS_OLDSTYLE: return step_oldstyle (h);
  case HS_GFLAGS: return step_gflags (h);
  case HS_OPT_REPLY_HDR: return step_opt_reply_hdr (h);
  case HS_OPT_REPLY_PAYLOAD: return step_opt_reply (h);
  case HS_EXPORT_NAME_REPLY: return step_export_name_reply (h);
  case HS_ABORT_SENT:
    /* Nothing follows NBD_OPT_ABORT: the writer's end-of-stream mark. */
    if (h->writer)
      nbd_internal_writer_send (h, NULL, 0);
    nbd_internal_opt_complete (h, 0, NULL);
    nbd_internal_set_closed (h);
    return 0;
  case HS_TLS_HANDSHAKE:         /* nbd_internal_hs_run drives it */
  case HS_NONE: break;
  }
  set_error (EINVAL, "handshake: internal error: no step to run");
  return -1;
}

/* The handshake's I/O loop: send what is queued, then receive what the
 * current step waits for, then let the step decide; until the socket would
 * block or the handshake has ended. */
int
nbd_internal_hs_run (struct nbd_handle *h)
{
  for (;;) {
    if (h->state != ST_HANDSHAKE)
      return 0;
    if (h->hs_out_pos < h->hs_out_len && nbd_internal_tls_sends (h)) {
      if (nbd_internal_tls_send (h, h->hs_out + h->hs_out_pos,
                                 h->hs_out_len - h->hs_out_pos) == -1)
        goto dead;
      h->hs_out_pos = h->hs_out_len;
      continue;
    }
    if (h->hs_out_pos < h->hs_out_len && h->writer) {
      nbd_internal_writer_send (h, h->hs_out + h->hs_out_pos, h->hs_out_len - h->hs_out_pos);
      h->hs_out_pos = h->hs_out_len;
      continue;
    }
    if (h->hs_out_pos < h->hs_out_len) {
      ssize_t n = send (h->fd, h->hs_out + h->hs_out_pos, h->hs_out_len - h->hs_out_pos,
                        MSG_NOSIGNAL);
      if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return 0;
        if (errno == EINTR)
          continue;
        set_error (errno, "handshake: send");
        goto dead;
      }
      h->hs_out_pos += n;
      continue;
    }
    h->hs_out_pos = h->hs_out_len = 0;
    if (h->tls_conn) {
      int r = nbd_internal_tls_flush (h);

      if (r == -1)
        goto dead;
      if (r == 0)
        return 0;               /* the socket is full: wait for POLLOUT */
      if (h->hs == HS_TLS_HANDSHAKE) {
        r = nbd_internal_tls_handshake_step (h);
        if (r == -1)
          goto dead;
        if (r == 0) {
          if (nbd_internal_tls_out_pending (h))
            continue;           /* send GnuTLS's flight first */
          return 0;
        }
        if (after_tls_handshake (h) == -1)
          goto dead;
        continue;
      }
    }
    if (h->hs_in_pos < h->hs_in_len) {
      ssize_t n = h->tls_conn
        ? nbd_internal_tls_recv (h, (char *) h->hs_in + h->hs_in_pos, h->hs_in_len - h->hs_in_pos)
        : recv (h->fd, (char *) h->hs_in + h->hs_in_pos, h->hs_in_len - h->hs_in_pos, 0);
      if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          return 0;
        if (errno == EINTR)
          continue;
        if (!h->tls_conn)         /* TLS set its own message */
          set_error (errno, "handshake: recv");
        goto dead;
      }
      if (n == 0) {
        if (h->hs == HS_EXPORT_NAME_REPLY)
          set_error (ENOENT, "handshake: server closed the connection after "
                     "NBD_OPT_EXPORT_NAME: the export \"%s\" probably does not exist",
                     h->export_name);
        else
          set_error (ECONNRESET, "handshake: server closed the connection unexpectedly");
        goto dead;
      }
      h->hs_in_pos += n;
      continue;
    }
    if (run_step (h) == -1)
      goto dead;
  }
dead:
  if (nbd_internal_writer_check (h) == -1)
    return -1;
  nbd_internal_set_dead (h, nbd_get_errno () ? nbd_get_errno () : EPROTO);
  return -1;
}

/* ---- Option mode: start an option the user asked for ------------------ */

int
nbd_internal_opt_start (struct nbd_handle *h, enum opt_kind kind)
{
  int r;

  h->opt.kind = kind;
  h->state = ST_HANDSHAKE;
  switch (kind) {
  case OPTK_GO:
    r = (h->gflags & NBD_FLAG_FIXED_NEWSTYLE) ? start_go (h, NBD_OPT_GO) : send_export_name (h);
    break;
  case OPTK_INFO: r = start_go (h, NBD_OPT_INFO); break;
  case OPTK_LIST: r = send_option (h, NBD_OPT_LIST, NULL, 0, NULL, 0); break;
  case OPTK_LIST_META: r = send_meta_option (h, NBD_OPT_LIST_META_CONTEXT); break;
  case OPTK_ABORT:
    r = send_option (h, NBD_OPT_ABORT, NULL, 0, NULL, 0);
    /* Do not wait for the ACK: servers may just close (nbd-server does). */
    h->hs_in = NULL;
    h->hs_in_len = h->hs_in_pos = 0;
    h->hs = HS_ABORT_SENT;
    break;
  default:
    set_error (EINVAL, "internal error: unknown option request");
    r = -1;
  }
  if (r == -1) {
    nbd_internal_set_dead (h, nbd_get_errno ());
    return -1;
  }
  return nbd_internal_hs_run (h);
}
