/* uri.h: NBD URIs (the NBD project's doc/uri.md, with libnbd's extensions).
 *
 * Pure parsing and formatting: no handle, no sockets, no policy.  The policy
 * (allowed transports, TLS, local files) is applied by connect.c.
 */
#ifndef NBD_CORE_URI_H
#define NBD_CORE_URI_H

#include <stdbool.h>
#include <stdint.h>

enum nbd_uri_transport { NBD_URI_TCP, NBD_URI_UNIX, NBD_URI_VSOCK };

struct nbd_uri {
  bool tls;                       /* nbds, nbds+unix, nbds+vsock */
  enum nbd_uri_transport transport;
  char *host;                     /* TCP: host without brackets; NULL otherwise */
  char *port;                     /* TCP: port, "10809" when absent; vsock: port */
  uint32_t cid;                   /* vsock only */
  char *socket;                   /* unix: the ?socket= path (may start with NUL for abstract) */
  size_t socket_len;              /* length of socket, as it may hold a NUL */
  char *export_name;              /* path without the leading '/', percent-decoded; "" if none */
  char *username;                 /* userinfo, percent-decoded; NULL if absent */
  char *tls_certificates;         /* ?tls-certificates= ; NULL if absent */
  char *tls_psk_file;             /* ?tls-psk-file= ; NULL if absent */
};

/* Parse s into *u (zeroed first).  On error returns -1 with set_error (EINVAL,
 * a message naming what is wrong); *u holds nothing to free then. */
int nbd_internal_parse_uri (const char *s, struct nbd_uri *u);
void nbd_internal_free_uri (struct nbd_uri *u);

/* Format a URI (malloc'd) from the parts; the inverse of parsing. NULL + errno on ENOMEM. */
char *nbd_internal_format_uri (const struct nbd_uri *u);

#endif
