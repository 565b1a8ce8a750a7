/* subprocess.h: servers the client starts itself.
 *
 * nbd_connect_command: the server speaks NBD on its stdin/stdout, one end of
 * a socketpair.  nbd_connect_systemd_socket_activation: the server inherits a
 * listening Unix socket as fd 3 with LISTEN_PID and LISTEN_FDS set, and the
 * client then connects to that socket.
 */
#ifndef NBD_CORE_SUBPROCESS_H
#define NBD_CORE_SUBPROCESS_H

#include <sys/types.h>

/* Start argv[0] (searched on PATH) with stdin and stdout on one end of a
 * socketpair; *sock is the other end (non-blocking, close-on-exec).
 * Returns 0, or -1 with set_error. */
int nbd_internal_spawn_command (char **argv, int *sock, pid_t *pid);

/* Make a private temporary directory holding a listening Unix socket, start
 * argv[0] with it as fd 3 (LISTEN_PID=<its pid>, LISTEN_FDS=1), and return
 * the directory and socket path (malloc'd) and the pid.
 * Returns 0, or -1 with set_error. */
int nbd_internal_spawn_socket_activation (char **argv, char **tmpdir, char **sockpath,
                                          pid_t *pid);

/* Remove the socket and directory made by the call above (NULLs ignored). */
void nbd_internal_remove_socket_dir (const char *tmpdir, const char *sockpath);

#endif
