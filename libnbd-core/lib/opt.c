/* opt.c: option mode (nbd_set_opt_mode) — the nbd_[aio_]opt_* calls that let
 * the user drive negotiation: list exports, list contexts, INFO, GO, ABORT.
 *
 * Owns the one option request in progress and its callbacks; the wire work
 * is handshake.c's.  A failed option leaves the handle negotiating, so the
 * user can try again (another export name, say).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Finish the option request: its completion callback sees the error, then
 * every callback of the request is freed, exactly once. */
void
nbd_internal_opt_complete (struct nbd_handle *h, int error, const char *msg)
{
  struct opt_request *o = &h->opt;
  int err = error;

  if (o->kind == OPTK_NONE)
    return;
  /* As libnbd: a GO or INFO that failed leaves nothing of the attempt,
   * not even the meta contexts its SET_META_CONTEXT obtained, so that
   * nbd_can_meta_context fails until an export is known again. */
  if (error && (o->kind == OPTK_GO || o->kind == OPTK_INFO))
    nbd_internal_free_meta (h);
  o->kind = OPTK_NONE;
  o->error = error;
  free (o->errmsg);
  o->errmsg = msg ? strdup (msg) : NULL;
  if (o->cb.callback)
    o->cb.callback (o->cb.user_data, &err);
  FREE_CALLBACK (o->list);
  FREE_CALLBACK (o->context);
  FREE_CALLBACK (o->cb);
}

static int
aio_opt (struct nbd_handle *h, enum opt_kind kind, nbd_completion_callback *cb,
         nbd_list_callback *list, nbd_context_callback *context)
{
  struct opt_request *o = &h->opt;

  if (kind != OPTK_GO && !(h->gflags & NBD_FLAG_FIXED_NEWSTYLE)) {
    set_error (ENOTSUP, "server is not using fixed newstyle protocol");
    return -1;
  }
  /* The spec: meta context options need structured replies first. */
  if (kind == OPTK_LIST_META && !h->sr) {
    set_error (ENOTSUP, "server lacks structured replies");
    return -1;
  }
  o->error = 0;
  if (cb)
    TAKE_CALLBACK (o->cb, cb);
  if (list)
    TAKE_CALLBACK (o->list, list);
  if (context)
    TAKE_CALLBACK (o->context, context);
  return nbd_internal_opt_start (h, kind);
}

/* The sync form: run the option to its end, then report its outcome. */
static int
wait_opt (struct nbd_handle *h)
{
  while (h->state == ST_HANDSHAKE)
    if (nbd_internal_poll (h, -1) == -1)
      return -1;
  if (h->opt.error) {
    set_error (h->opt.error, "%s", h->opt.errmsg ? h->opt.errmsg : "option failed");
    return -1;
  }
  if (h->state == ST_DEAD) {
    set_error (ENOTCONN, "the connection died during negotiation");
    return -1;
  }
  return 0;
}

#define OPT_STATES PS_NEGOTIATING

EXPORT int
nbd_aio_opt_go (struct nbd_handle *h, nbd_completion_callback cb)
{
  int r;

  if (!nbd_internal_enter (h, "nbd_aio_opt_go", OPT_STATES)) {
    FREE_CALLBACK (cb);
    return -1;
  }
  r = aio_opt (h, OPTK_GO, &cb, NULL, NULL);
  LEAVE (h);
  FREE_CALLBACK (cb);
  return r;
}

EXPORT int
nbd_aio_opt_info (struct nbd_handle *h, nbd_completion_callback cb)
{
  int r;

  if (!nbd_internal_enter (h, "nbd_aio_opt_info", OPT_STATES)) {
    FREE_CALLBACK (cb);
    return -1;
  }
  r = aio_opt (h, OPTK_INFO, &cb, NULL, NULL);
  LEAVE (h);
  FREE_CALLBACK (cb);
  return r;
}

/* As libnbd: a server that is not fixed newstyle knows no option but
 * NBD_OPT_EXPORT_NAME, so aborting sends nothing; the connection just
 * ends, dead (not closed: nothing was negotiated to an end).  Returns
 * whether it did. */
static bool
abort_without_option (struct nbd_handle *h)
{
  if (h->gflags & NBD_FLAG_FIXED_NEWSTYLE)
    return false;
  debug (h, "server is not fixed newstyle: dropping the connection without NBD_OPT_ABORT");
  nbd_internal_set_dead (h, ENOTCONN);
  return true;
}

EXPORT int
nbd_aio_opt_abort (struct nbd_handle *h)
{
  int r = 0;

  ENTER (h, "nbd_aio_opt_abort", OPT_STATES, -1);
  if (!abort_without_option (h))
    r = aio_opt (h, OPTK_ABORT, NULL, NULL, NULL);
  LEAVE (h);
  return r;
}

/* As libnbd: a required closure with neither .callback nor .free is
 * EFAULT, checked once the handle's state is known to be right. */
static bool
closure_missing (bool empty, const char *what)
{
  if (empty)
    set_error (EFAULT, "%s cannot be NULL", what);
  return empty;
}

EXPORT int
nbd_aio_opt_list (struct nbd_handle *h, nbd_list_callback list, nbd_completion_callback cb)
{
  int r = -1;

  if (!nbd_internal_enter (h, "nbd_aio_opt_list", OPT_STATES)) {
    FREE_CALLBACK (list);
    FREE_CALLBACK (cb);
    return -1;
  }
  if (!closure_missing (!list.callback && !list.free, "list"))
    r = aio_opt (h, OPTK_LIST, &cb, &list, NULL);
  LEAVE (h);
  FREE_CALLBACK (list);
  FREE_CALLBACK (cb);
  return r;
}

EXPORT int
nbd_aio_opt_list_meta_context (struct nbd_handle *h, nbd_context_callback context,
                               nbd_completion_callback cb)
{
  int r = -1;

  if (!nbd_internal_enter (h, "nbd_aio_opt_list_meta_context", OPT_STATES)) {
    FREE_CALLBACK (context);
    FREE_CALLBACK (cb);
    return -1;
  }
  if (!closure_missing (!context.callback && !context.free, "context"))
    r = aio_opt (h, OPTK_LIST_META, &cb, NULL, &context);
  LEAVE (h);
  FREE_CALLBACK (context);
  FREE_CALLBACK (cb);
  return r;
}

EXPORT int
nbd_opt_go (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_opt_go", OPT_STATES, -1);
  r = aio_opt (h, OPTK_GO, NULL, NULL, NULL);
  if (r == 0)
    r = wait_opt (h);
  LEAVE (h);
  return r;
}

EXPORT int
nbd_opt_info (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_opt_info", OPT_STATES, -1);
  r = aio_opt (h, OPTK_INFO, NULL, NULL, NULL);
  if (r == 0)
    r = wait_opt (h);
  LEAVE (h);
  return r;
}

EXPORT int
nbd_opt_abort (struct nbd_handle *h)
{
  int r;

  ENTER (h, "nbd_opt_abort", OPT_STATES, -1);
  if (abort_without_option (h))
    r = 0;
  else if ((r = aio_opt (h, OPTK_ABORT, NULL, NULL, NULL)) == 0)
    r = wait_opt (h);
  LEAVE (h);
  return r;
}

/* The sync list calls return how many entries the callback saw. */
struct counting {
  int count;
  nbd_list_callback list;
  nbd_context_callback context;
};

static int
count_list (void *opaque, const char *name, const char *desc)
{
  struct counting *c = opaque;

  c->count++;
  if (c->list.callback)
    c->list.callback (c->list.user_data, name, desc);
  return 0;
}

static int
count_context (void *opaque, const char *name)
{
  struct counting *c = opaque;

  c->count++;
  if (c->context.callback)
    c->context.callback (c->context.user_data, name);
  return 0;
}

EXPORT int
nbd_opt_list (struct nbd_handle *h, nbd_list_callback list)
{
  struct counting c = { .list = list };
  nbd_list_callback wrap = { .callback = count_list, .user_data = &c };
  int r = -1;

  if (!nbd_internal_enter (h, "nbd_opt_list", OPT_STATES)) {
    FREE_CALLBACK (list);
    return -1;
  }
  if (!closure_missing (!list.callback && !list.free, "list"))
    r = aio_opt (h, OPTK_LIST, NULL, &wrap, NULL);
  if (r == 0)
    r = wait_opt (h);
  LEAVE (h);
  FREE_CALLBACK (c.list);
  return r == 0 ? c.count : -1;
}

EXPORT int
nbd_opt_list_meta_context (struct nbd_handle *h, nbd_context_callback context)
{
  struct counting c = { .context = context };
  nbd_context_callback wrap = { .callback = count_context, .user_data = &c };
  int r = -1;

  if (!nbd_internal_enter (h, "nbd_opt_list_meta_context", OPT_STATES)) {
    FREE_CALLBACK (context);
    return -1;
  }
  if (!closure_missing (!context.callback && !context.free, "context"))
    r = aio_opt (h, OPTK_LIST_META, NULL, NULL, &wrap);
  if (r == 0)
    r = wait_opt (h);
  LEAVE (h);
  FREE_CALLBACK (c.context);
  return r == 0 ? c.count : -1;
}
