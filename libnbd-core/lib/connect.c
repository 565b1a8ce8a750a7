/* connect.c: every way of getting a socket to a server (Unix, TCP, vsock,
 * a given fd, a command on a socketpair, systemd socket activation, URIs)
 * and the public nbd_[aio_]connect_* calls.
 *
 * Owns the socket until the handshake starts; never reads or writes NBD.
 * URI policy (allowed transports, TLS, local files) is applied here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/vm_sockets.h>
#endif

#include "internal.h"
#include "subprocess.h"
#include "uri.h"

static int
set_nonblock_cloexec (int fd)
{
  int fl = fcntl (fd, F_GETFL);

  if (fl == -1 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) == -1)
    return -1;
  fl = fcntl (fd, F_GETFD);
  if (fl == -1 || fcntl (fd, F_SETFD, fl | FD_CLOEXEC) == -1)
    return -1;
  return 0;
}

/* A connect that fails at once leaves the handle dead, as libnbd's does: a
 * handle connects once. */
static int
fail_connect (struct nbd_handle *h, int err)
{
  nbd_internal_set_dead (h, err);
  return -1;
}

/* The writer's promise (libnbd.h): with a concurrent writer set, the
 * descriptor number the handle has given out stays valid and the same until
 * nbd_close, because the writer's thread may have cached it and
 * nbd_concurrent_writer_error shuts it down without the lock.  So a later
 * socket (the next TCP address, or a new connect after a failed one) is
 * moved onto that number; closing it and opening another could hand the
 * number to some other file in between. */
static int
adopt_socket (struct nbd_handle *h, int fd)
{
  if (h->writer && h->fd >= 0) {
    int r = dup3 (fd, h->fd, O_CLOEXEC), err = errno;

    close (fd);
    if (r == -1) {
      set_error (err, "dup3");
      return -1;
    }
    return 0;
  }
  nbd_internal_set_fd (h, fd);
  return 0;
}

int
nbd_internal_start_socket (struct nbd_handle *h, int fd, bool connecting)
{
  if (adopt_socket (h, fd) == -1)
    return fail_connect (h, nbd_get_errno ());
  if (connecting) {
    h->state = ST_CONNECTING;
    return 0;
  }
  return nbd_internal_hs_begin (h);
}

/* A Unix socket the core made: room for a large write in its send buffer.
 * The default (212,992 bytes on Linux) is less than one 256 KiB request,
 * so a large write leaves in pieces, each waiting for the server to drain
 * the last; with one CPU for client and server that halves the speed of
 * 256 KiB writes.  A hint: the kernel caps it at net.core.wmem_max, and
 * sockets the caller gives (nbd_connect_socket) are left as they are. */
#define UNIX_SNDBUF (4 * 1024 * 1024)

static void
tune_unix_socket (int fd)
{
  int want = UNIX_SNDBUF;

  (void) setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
}

int
nbd_internal_connect_sockaddr (struct nbd_handle *h, const struct sockaddr *sa, socklen_t len)
{
  int fd, one = 1;

  fd = socket (sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    set_error (errno, "socket");
    return fail_connect (h, errno);
  }
  if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  else if (sa->sa_family == AF_UNIX)
    tune_unix_socket (fd);
  if (connect (fd, sa, len) == 0)
    return nbd_internal_start_socket (h, fd, false);
  if (errno == EINPROGRESS || errno == EAGAIN)
    return nbd_internal_start_socket (h, fd, true);
  set_error (errno, "connect");
  int err = errno;
  close (fd);
  return fail_connect (h, err);
}

/* TCP: try each resolved address in turn. */
static void
tcp_done (struct nbd_handle *h)
{
  if (h->tcp_all)
    freeaddrinfo (h->tcp_all);
  h->tcp_all = h->tcp_next = NULL;
}

/* As libnbd: when the name does not resolve or no address answers, the
 * handle goes back to created, so that the program can connect it again
 * (to a server still starting, say).  Under a writer the refused socket
 * keeps the handle's descriptor number for that next connect.  The error
 * must already be set. */
static int
tcp_fail (struct nbd_handle *h)
{
  tcp_done (h);
  free (h->uri);
  h->uri = NULL;
  free (h->tls_hostname);
  h->tls_hostname = NULL;
  h->state = ST_CREATED;
  return -1;
}

static int
tcp_try_next (struct nbd_handle *h, int last_err)
{
  /* The socket that was refused goes now, unless a writer holds its
   * number: then the next socket takes the number over. */
  if (!h->writer && h->fd >= 0) {
    close (h->fd);
    nbd_internal_set_fd (h, -1);
  }
  while (h->tcp_next) {
    struct addrinfo *ai = h->tcp_next;
    int fd, one = 1;

    h->tcp_next = ai->ai_next;
    fd = socket (ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd == -1) {
      last_err = errno;
      continue;
    }
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect (fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      tcp_done (h);
      return nbd_internal_start_socket (h, fd, false);
    }
    if (errno == EINPROGRESS)
      return nbd_internal_start_socket (h, fd, true);
    last_err = errno;
    close (fd);
  }
  set_error (last_err, "connect");
  return tcp_fail (h);
}

int
nbd_internal_finish_connect (struct nbd_handle *h)
{
  int err = 0;
  socklen_t len = sizeof err;

  if (getsockopt (h->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
    err = errno;
  if (err == 0) {
    tcp_done (h);
    return nbd_internal_hs_begin (h);
  }
  if (h->tcp_all)
    return tcp_try_next (h, err);
  /* Dead: the socket goes with the connection (or, under a writer, is
   * only shut down). */
  set_error (err, "connect");
  return fail_connect (h, err);
}

int
nbd_internal_aio_connect_tcp (struct nbd_handle *h, const char *host, const char *port)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
  struct addrinfo *res = NULL;
  int r;

  r = getaddrinfo (host, port, &hints, &res);
  if (r != 0) {
    set_error (r == EAI_SYSTEM ? errno : ENOENT, "getaddrinfo: %s:%s: %s", host, port,
               gai_strerror (r));
    return tcp_fail (h);
  }
  /* TLS checks the server's certificate against the name we asked for. */
  free (h->tls_hostname);
  h->tls_hostname = strdup (host);
  if (!h->tls_hostname) {
    freeaddrinfo (res);
    set_error (ENOMEM, "strdup");
    return tcp_fail (h);
  }
  if (!h->uri) {
    struct nbd_uri u = { .transport = NBD_URI_TCP, .host = (char *) host, .port = (char *) port,
                         .export_name = h->export_name };
    h->uri = nbd_internal_format_uri (&u);
  }
  h->tcp_all = h->tcp_next = res;
  return tcp_try_next (h, ECONNREFUSED);
}

/* Unix socket with an explicit length: abstract names start with NUL and
 * have no terminating NUL in the address. */
static int
connect_unix_n (struct nbd_handle *h, const char *path, size_t len)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };

  if (len == 0 || len >= sizeof sun.sun_path) {
    set_error (ENAMETOOLONG, "socket path length %zu is not between 1 and %zu", len,
               sizeof sun.sun_path - 1);
    return fail_connect (h, ENAMETOOLONG);
  }
  memcpy (sun.sun_path, path, len);
  return nbd_internal_connect_sockaddr (h, (struct sockaddr *) &sun,
                                        offsetof (struct sockaddr_un, sun_path) + len +
                                        (path[0] != '\0'));
}

int
nbd_internal_aio_connect_unix (struct nbd_handle *h, const char *path)
{
  return connect_unix_n (h, path, strlen (path));
}

int
nbd_internal_aio_connect_vsock (struct nbd_handle *h, uint32_t cid, uint32_t port)
{
#ifdef AF_VSOCK
  struct sockaddr_vm svm = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };

  return nbd_internal_connect_sockaddr (h, (struct sockaddr *) &svm, sizeof svm);
#else
  set_error (ENOTSUP, "AF_VSOCK is not supported on this platform");
  return fail_connect (h, ENOTSUP);
#endif
}

int
nbd_internal_aio_connect_command (struct nbd_handle *h, char **argv)
{
  int sock;
  pid_t pid;

  if (!argv[0]) {
    set_error (EINVAL, "argv is empty");
    return -1;
  }
  if (nbd_internal_spawn_command (argv, &sock, &pid) == -1)
    return fail_connect (h, nbd_get_errno ());
  h->pid = pid;
  tune_unix_socket (sock);
  return nbd_internal_start_socket (h, sock, false);
}

int
nbd_internal_aio_connect_sa (struct nbd_handle *h, char **argv)
{
  if (!argv[0]) {
    set_error (EINVAL, "argv is empty");
    return -1;
  }
  if (nbd_internal_spawn_socket_activation (argv, &h->sa_tmpdir, &h->sa_sockpath, &h->pid) == -1)
    return fail_connect (h, nbd_get_errno ());
  /* As libnbd: the URI of the private socket (good while the handle lives). */
  if (!h->uri) {
    struct nbd_uri u = { .transport = NBD_URI_UNIX, .socket = h->sa_sockpath,
                         .socket_len = strlen (h->sa_sockpath), .export_name = h->export_name };
    h->uri = nbd_internal_format_uri (&u);
  }
  return nbd_internal_aio_connect_unix (h, h->sa_sockpath);
}

/* URIs: parse, apply the handle's URI policy, set what the URI says, then
 * connect the way it says. */
int
nbd_internal_aio_connect_uri (struct nbd_handle *h, const char *str)
{
  struct nbd_uri u;
  uint32_t transport_bit;
  int r = -1;

  if (nbd_internal_parse_uri (str, &u) == -1)
    return -1;
  transport_bit = u.transport == NBD_URI_TCP ? LIBNBD_ALLOW_TRANSPORT_TCP
                  : u.transport == NBD_URI_UNIX ? LIBNBD_ALLOW_TRANSPORT_UNIX
                  : LIBNBD_ALLOW_TRANSPORT_VSOCK;
  if (!(h->uri_allow_transports & transport_bit)) {
    set_error (EPERM, "URI transport %s is not allowed on this handle",
               u.transport == NBD_URI_TCP ? "tcp" : u.transport == NBD_URI_UNIX ? "unix" : "vsock");
    goto out;
  }
  if (u.tls && h->uri_allow_tls == LIBNBD_TLS_DISABLE) {
    set_error (EPERM, "URI requires TLS, which is not allowed on this handle");
    goto out;
  }
  if (!u.tls && h->uri_allow_tls == LIBNBD_TLS_REQUIRE) {
    set_error (EPERM, "URI does not use TLS, but TLS is required on this handle");
    goto out;
  }
  if ((u.tls_certificates || u.tls_psk_file) && !h->uri_allow_local_file) {
    set_error (EPERM, "URI refers to a local file (%s), which is not allowed: see "
               "nbd_set_uri_allow_local_file", u.tls_certificates ? "tls-certificates"
               : "tls-psk-file");
    goto out;
  }
  if ((u.tls_certificates || u.tls_psk_file) && !u.tls) {
    set_error (EINVAL, "URI gives %s, but its scheme does not use TLS",
               u.tls_certificates ? "tls-certificates" : "tls-psk-file");
    goto out;
  }
  if (u.tls) {
    if (!(HAVE_GNUTLS && NBD_CORE_TLS_READY)) {
      set_error (ENOTSUP, "URI requires TLS (nbds), but libnbd-core was built without TLS "
                 "support");
      goto out;
    }
    h->tls = LIBNBD_TLS_REQUIRE;
  }
  free (h->export_name);
  h->export_name = strdup (u.export_name);
  if (u.username) {
    free (h->tls_username);
    h->tls_username = strdup (u.username);
  }
  if (u.tls_certificates) {
    free (h->tls_certificates);
    h->tls_certificates = strdup (u.tls_certificates);
  }
  if (u.tls_psk_file) {
    free (h->tls_psk_file);
    h->tls_psk_file = strdup (u.tls_psk_file);
  }
  if (!h->export_name) {
    set_error (ENOMEM, "strdup");
    goto out;
  }
  free (h->uri);
  h->uri = strdup (str);
  switch (u.transport) {
  case NBD_URI_TCP:
    r = nbd_internal_aio_connect_tcp (h, u.host, u.port);
    break;
  case NBD_URI_UNIX:
    r = connect_unix_n (h, u.socket, u.socket_len);
    break;
  case NBD_URI_VSOCK:
    r = nbd_internal_aio_connect_vsock (h, u.cid, (uint32_t) strtoul (u.port, NULL, 10));
    break;
  }
out:
  nbd_internal_free_uri (&u);
  return r;
}

/* ---- Public calls ----------------------------------------------------- */

/* Each connect has an aio form and a sync form that waits for the
 * handshake (or, in opt mode, for negotiation to begin).  The trailing
 * arguments are NONNULL (param) for each pointer parameter. */
#define CONNECT_PAIR(syncname, aioname, params, args, ...)               \
  EXPORT int aioname params                                              \
  {                                                                      \
    int r;                                                               \
    ENTER_ARGS (h, #aioname, PS_CREATED, -1, __VA_ARGS__);               \
    r = IMPL args;                                                       \
    LEAVE (h);                                                           \
    return r;                                                            \
  }                                                                      \
  EXPORT int syncname params                                             \
  {                                                                      \
    int r;                                                               \
    ENTER_ARGS (h, #syncname, PS_CREATED, -1, __VA_ARGS__);              \
    r = IMPL args;                                                       \
    if (r == 0)                                                          \
      r = nbd_internal_wait_connected (h);                               \
    LEAVE (h);                                                           \
    return r;                                                            \
  }

#define IMPL nbd_internal_aio_connect_uri
CONNECT_PAIR (nbd_connect_uri, nbd_aio_connect_uri, (struct nbd_handle *h, const char *uri),
              (h, uri), NONNULL (uri))
#undef IMPL

/* As libnbd, the URI names the socket even if connecting to it fails (the
 * handle is then dead, and nbd_get_uri still answers). */
static int
connect_unix_impl (struct nbd_handle *h, const char *path)
{
  if (!h->uri) {
    struct nbd_uri u = { .transport = NBD_URI_UNIX, .socket = (char *) path,
                         .socket_len = strlen (path), .export_name = h->export_name };
    h->uri = nbd_internal_format_uri (&u);
  }
  return nbd_internal_aio_connect_unix (h, path);
}
#define IMPL connect_unix_impl
CONNECT_PAIR (nbd_connect_unix, nbd_aio_connect_unix,
              (struct nbd_handle *h, const char *unixsocket), (h, unixsocket),
              NONNULL (unixsocket))
#undef IMPL

#define IMPL nbd_internal_aio_connect_tcp
CONNECT_PAIR (nbd_connect_tcp, nbd_aio_connect_tcp,
              (struct nbd_handle *h, const char *hostname, const char *port),
              (h, hostname, port), NONNULL (hostname), NONNULL (port))
#undef IMPL

#define IMPL nbd_internal_aio_connect_vsock
CONNECT_PAIR (nbd_connect_vsock, nbd_aio_connect_vsock,
              (struct nbd_handle *h, uint32_t cid, uint32_t port), (h, cid, port))
#undef IMPL

static int
connect_socket_impl (struct nbd_handle *h, int sock)
{
  if (sock < 0) {
    set_error (EBADF, "invalid socket %d", sock);
    return -1;
  }
  if (set_nonblock_cloexec (sock) == -1) {
    set_error (errno, "fcntl");
    return fail_connect (h, errno);
  }
  return nbd_internal_start_socket (h, sock, false);
}
#define IMPL connect_socket_impl
CONNECT_PAIR (nbd_connect_socket, nbd_aio_connect_socket, (struct nbd_handle *h, int sock),
              (h, sock))
#undef IMPL

#define IMPL nbd_internal_aio_connect_command
CONNECT_PAIR (nbd_connect_command, nbd_aio_connect_command, (struct nbd_handle *h, char **argv),
              (h, argv), NONNULL (argv))
#undef IMPL

#define IMPL nbd_internal_aio_connect_sa
CONNECT_PAIR (nbd_connect_systemd_socket_activation, nbd_aio_connect_systemd_socket_activation,
              (struct nbd_handle *h, char **argv), (h, argv), NONNULL (argv))
#undef IMPL

/* As libnbd: the URI of a socket address, numeric host and port (also if
 * connecting to it then fails); NULL for an address no URI can name (an
 * unnamed socket, another family). */
static char *
sockaddr_uri (const struct sockaddr *sa, socklen_t len)
{
  struct nbd_uri u = { .export_name = "" };
  char host[NI_MAXHOST], port[NI_MAXSERV];
  const size_t path_off = offsetof (struct sockaddr_un, sun_path);

  if (len < sizeof sa->sa_family)
    return NULL;
  switch (sa->sa_family) {
  case AF_INET:
  case AF_INET6:
    if (getnameinfo (sa, len, host, sizeof host, port, sizeof port,
                     NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      return NULL;
    u.transport = NBD_URI_TCP;
    u.host = host;
    u.port = port;
    break;
  case AF_UNIX: {
    const struct sockaddr_un *sun = (const struct sockaddr_un *) sa;
    size_t n;

    if (len <= path_off)
      return NULL;
    n = len - path_off < sizeof sun->sun_path ? len - path_off : sizeof sun->sun_path;
    u.transport = NBD_URI_UNIX;
    u.socket = (char *) sun->sun_path;
    /* A path ends at its NUL; an abstract name (leading NUL) is all n bytes. */
    u.socket_len = sun->sun_path[0] ? strnlen (sun->sun_path, n) : n;
    break;
  }
#ifdef AF_VSOCK
  case AF_VSOCK: {
    const struct sockaddr_vm *svm = (const struct sockaddr_vm *) sa;

    if (len < sizeof *svm)
      return NULL;
    snprintf (port, sizeof port, "%" PRIu32, (uint32_t) svm->svm_port);
    u.transport = NBD_URI_VSOCK;
    u.cid = svm->svm_cid;
    u.port = port;
    break;
  }
#endif
  default:
    return NULL;
  }
  return nbd_internal_format_uri (&u);
}

EXPORT int
nbd_aio_connect (struct nbd_handle *h, const struct sockaddr *addr, socklen_t addrlen)
{
  int r;

  ENTER_ARGS (h, "nbd_aio_connect", PS_CREATED, -1, NONNULL (addr));
  h->uri = sockaddr_uri (addr, addrlen);
  r = nbd_internal_connect_sockaddr (h, addr, addrlen);
  LEAVE (h);
  return r;
}

/* As libnbd, the URI is rebuilt from what the handle holds now: where it
 * connected (h->uri), the export name, and TLS as it stands.  The scheme is
 * nbds whenever TLS is required or was negotiated: a URI that silently
 * dropped TLS would be a trap when reused.  The TLS files go only into an
 * nbds URI (nbd_connect_uri refuses them on a plaintext one), and the TLS
 * username only when it is not the default ($LOGNAME) that a new handle
 * would use anyway. */
static char *
current_uri (struct nbd_handle *h)
{
  const char *logname = getenv ("LOGNAME");
  struct nbd_uri where, u;
  char *r;

  if (nbd_internal_parse_uri (h->uri, &where) == -1)
    return NULL;
  u = where;
  u.tls = h->tls == LIBNBD_TLS_REQUIRE || (h->tls == LIBNBD_TLS_ALLOW && h->tls_negotiated);
  u.export_name = h->export_name;
  u.username = h->tls_username && (!logname || strcmp (h->tls_username, logname) != 0)
               ? h->tls_username : NULL;
  u.tls_certificates = u.tls ? h->tls_certificates : NULL;
  u.tls_psk_file = u.tls ? h->tls_psk_file : NULL;
  r = nbd_internal_format_uri (&u);
  nbd_internal_free_uri (&where);
  return r;
}

EXPORT char *
nbd_get_uri (struct nbd_handle *h)
{
  char *r = NULL;

  ENTER (h, "nbd_get_uri", PS_CONNECTING | PS_NEGOTIATING | PS_CONNECTED | PS_CLOSED | PS_DEAD,
         NULL);
  if (!h->uri)
    set_error (EINVAL, "this kind of connection (a socket or a command) has no URI");
  else
    r = current_uri (h);
  LEAVE (h);
  return r;
}
