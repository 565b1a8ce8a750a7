/* Thread-local error state shared by every file of the core.
 *
 * Each public entry point names itself with nbd_internal_set_context(); an
 * error is then set once, where its cause is known, with set_error().  The
 * message is "<call>: <text>" and, when errnum is not 0, ": <strerror>".
 */
#ifndef NBD_CORE_ERRORS_H
#define NBD_CORE_ERRORS_H

#include <errno.h>

void nbd_internal_set_context (const char *context);
const char *nbd_internal_get_context (void);
void nbd_internal_set_error (int errnum, const char *fs, ...)
  __attribute__((format (printf, 2, 3)));

#define set_error(errnum, fs, ...) nbd_internal_set_error ((errnum), (fs), ##__VA_ARGS__)

#endif
