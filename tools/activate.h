/* activate.h: a server run by the tool with systemd socket activation, on
 * a Unix socket in a private directory, reachable by URI.  Used where gnbd
 * takes a URI only (listing exports); elsewhere GnbdClient runs servers. */
#pragma once

#include <gio/gio.h>

typedef struct GtActivated GtActivated;

/* Run @argv with a listening socket as fd 3 (LISTEN_FDS=1, LISTEN_PID its
 * own pid).  NULL with @error set if it cannot start. */
GtActivated *gt_activate (const char *const *argv, GError **error);
/* nbd+unix:///?socket=PATH of the server's socket. */
const char *gt_activated_uri (GtActivated *a);
/* SIGTERM, a bounded wait, SIGKILL; removes the socket and directory. */
void gt_activated_stop (GtActivated *a);
