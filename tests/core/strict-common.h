/* strict-common.h: helpers the strict-* tests share.
 *
 * prefix_is: the thread's error message starts with "NAME:".
 * extent_cb / EXTENT: an extent callback that accepts anything.
 * wait_for: poll until a command completes; -2 if polling stops progressing.
 */
#ifndef GNBD_TESTS_STRICT_COMMON_H
#define GNBD_TESTS_STRICT_COMMON_H

#include <stdbool.h>
#include <string.h>

#include <libnbd.h>

static inline bool
prefix_is (const char *name)
{
  const char *e = nbd_get_error ();
  size_t n = strlen (name);

  return e && strncmp (e, name, n) == 0 && e[n] == ':';
}

static inline int
extent_cb (void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
           size_t nr_entries, int *error)
{
  (void) user_data; (void) metacontext; (void) offset; (void) entries; (void) nr_entries;
  (void) error;
  return 0;
}

static inline int
wait_for (struct nbd_handle *h, int64_t cookie)
{
  int r;

  while ((r = nbd_aio_command_completed (h, cookie)) == 0)
    if (nbd_poll (h, 5000) != 1)
      return -2;
  return r;
}

#define EXTENT ((nbd_extent_callback) { .callback = extent_cb })

#endif
