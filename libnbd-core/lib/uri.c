/* uri.c: parse and format NBD URIs (the NBD project's doc/uri.md, plus
 * libnbd's +vsock schemes and its socket, tls-certificates and tls-psk-file
 * query parameters).
 *
 * Owns only strings.  It never opens a file or socket, never touches a
 * handle and applies no policy: which transports, TLS modes and local files a
 * URI may use is decided by connect.c.  What it returns is validated and
 * percent-decoded; nbd_internal_format_uri is its inverse.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errors.h"
#include "uri.h"

#define DEFAULT_PORT "10809"    /* IANA's port for NBD */
#define MAX_NAME_LEN 4096       /* NBD_MAX_STRING: export and user names */
#define VSOCK_CID_HOST 2        /* VMADDR_CID_HOST: the hypervisor */

static const struct {
  const char *name;
  bool tls;
  enum nbd_uri_transport transport;
} schemes[] = {
  { "nbd",        false, NBD_URI_TCP },
  { "nbds",       true,  NBD_URI_TCP },
  { "nbd+unix",   false, NBD_URI_UNIX },
  { "nbds+unix",  true,  NBD_URI_UNIX },
  { "nbd+vsock",  false, NBD_URI_VSOCK },
  { "nbds+vsock", true,  NBD_URI_VSOCK },
};
#define N_SCHEMES (sizeof schemes / sizeof schemes[0])

/* Character classes of RFC 3986 section 2, as bits so that each component
 * can name the raw characters it accepts.
 */
enum {
  CH_UNRESERVED = 1,            /* ALPHA DIGIT - . _ ~ */
  CH_SUBDELIM = 2,              /* ! $ & ' ( ) * + , ; = */
  CH_COLON = 4,
  CH_AT = 8,
  CH_SLASH = 16,
  CH_QUESTION = 32,
};
#define CH_USER (CH_UNRESERVED | CH_SUBDELIM)  /* ':' refused separately */
#define CH_REGNAME (CH_UNRESERVED | CH_SUBDELIM)
#define CH_PATH (CH_UNRESERVED | CH_SUBDELIM | CH_COLON | CH_AT | CH_SLASH)
#define CH_QUERY (CH_PATH | CH_QUESTION)

/* Not isalpha() and friends: URIs are ASCII whatever the locale. */
static unsigned
char_class (unsigned char c)
{
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~')
    return CH_UNRESERVED;
  switch (c) {
  case '!': case '$': case '&': case '\'': case '(': case ')':
  case '*': case '+': case ',': case ';': case '=':
    return CH_SUBDELIM;
  case ':': return CH_COLON;
  case '@': return CH_AT;
  case '/': return CH_SLASH;
  case '?': return CH_QUESTION;
  default: return 0;
  }
}

static int
hex_value (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static bool
is_digits (const char *s, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return n > 0;
}

/* Parse n decimal digits no greater than max (at most UINT32_MAX, so the
 * accumulator cannot overflow).  Leading zeros are allowed.
 */
static bool
parse_number (const char *s, size_t n, uint64_t max, uint64_t *v)
{
  size_t i;

  if (!is_digits (s, n))
    return false;
  *v = 0;
  for (i = 0; i < n; i++) {
    *v = *v * 10 + (uint64_t) (s[i] - '0');
    if (*v > max)
      return false;
  }
  return true;
}

/* Every later message quotes raw URI text, which this makes printable. */
static int
check_characters (const char *s)
{
  size_t i;

  for (i = 0; s[i]; i++) {
    unsigned char c = s[i];

    if (c < 0x20 || c == 0x7f) {
      set_error (EINVAL, "URI contains a control character (byte 0x%02x at offset %zu)",
                 c, i);
      return -1;
    }
    if (c >= 0x80) {
      set_error (EINVAL, "URI contains a non-ASCII byte at offset %zu "
                 "(it must be percent-encoded)", i);
      return -1;
    }
  }
  return 0;
}

static char *
copy_string (const char *s, size_t n)
{
  char *r = malloc (n + 1);

  if (!r) {
    set_error (ENOMEM, "malloc");
    return NULL;
  }
  memcpy (r, s, n);
  r[n] = '\0';
  return r;
}

/* Percent-decode the n bytes at s, the URI component called what, into a new
 * NUL-terminated string.  Raw characters outside allowed are refused, and so
 * is %00 unless nul_ok (the result then needs *len to be read).
 */
static char *
decode (const char *s, size_t n, unsigned allowed, bool nul_ok, const char *what,
        size_t *len)
{
  char *r = malloc (n + 1);
  size_t i, j = 0;

  if (!r) {
    set_error (ENOMEM, "malloc");
    return NULL;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = s[i];

    if (c == '%') {
      int hi = n - i >= 3 ? hex_value (s[i + 1]) : -1;
      int lo = n - i >= 3 ? hex_value (s[i + 2]) : -1;

      if (hi < 0 || lo < 0) {
        set_error (EINVAL, "invalid percent-encoding '%.*s' in the URI %s",
                   (int) (n - i < 3 ? n - i : 3), &s[i], what);
        goto err;
      }
      c = hi * 16 + lo;
      if (c == '\0' && !nul_ok) {
        set_error (EINVAL, "the URI %s must not contain %%00 (NUL)", what);
        goto err;
      }
      i += 2;
    }
    else if (!(char_class (c) & allowed)) {
      set_error (EINVAL, "invalid character '%c' in the URI %s (it must be "
                 "percent-encoded as %%%02X)", c, what, c);
      goto err;
    }
    r[j++] = c;
  }
  r[j] = '\0';
  if (len)
    *len = j;
  return r;

 err:
  free (r);
  return NULL;
}

/* An RFC 3986 IP-literal without its brackets: an IPv6 address, optionally
 * with an RFC 6874 zone ("fe80::1%25eth0").  The address itself is left for
 * getaddrinfo to judge; this only keeps out what cannot be one.
 */
static char *
parse_ip_literal (const char *s, size_t n)
{
  const char *zone = memchr (s, '%', n);
  size_t alen = zone ? (size_t) (zone - s) : n;
  size_t i, zlen;
  char *addr, *zid;
  bool colon = false;

  if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
    set_error (EINVAL, "IPvFuture address '[%.*s]' in the URI is not supported",
               (int) n, s);
    return NULL;
  }
  for (i = 0; i < alen; i++) {
    if (s[i] == ':')
      colon = true;
    else if (s[i] != '.' && hex_value (s[i]) < 0)
      break;
  }
  if (i < alen || !colon) {
    set_error (EINVAL, "invalid IPv6 address '[%.*s]' in the URI", (int) n, s);
    return NULL;
  }
  if (!zone)
    return copy_string (s, n);

  zlen = n - alen;
  if (zlen <= 3 || zone[1] != '2' || zone[2] != '5') {
    set_error (EINVAL, "the IPv6 zone in '[%.*s]' must be written as %%25 "
               "followed by its name", (int) n, s);
    return NULL;
  }
  zid = decode (zone + 3, zlen - 3, CH_UNRESERVED, false, "IPv6 zone", &zlen);
  if (!zid)
    return NULL;
  addr = copy_string (s, alen + 1 + zlen);
  if (addr)
    memcpy (&addr[alen + 1], zid, zlen + 1);
  free (zid);
  return addr;
}

static int
set_port (struct nbd_uri *u, const char *s, size_t n, bool present)
{
  char buf[16];
  uint64_t v;

  if (!present) {
    u->port = copy_string (DEFAULT_PORT, strlen (DEFAULT_PORT));
    return u->port ? 0 : -1;
  }
  if (u->transport == NBD_URI_TCP) {
    if (!parse_number (s, n, 65535, &v) || v == 0) {
      set_error (EINVAL, "URI port '%.*s' is not a number from 1 to 65535",
                 (int) n, s);
      return -1;
    }
  }
  else if (!parse_number (s, n, UINT32_MAX, &v)) {
    set_error (EINVAL, "URI vsock port '%.*s' is not a 32-bit number", (int) n, s);
    return -1;
  }
  /* Canonical form, so that "nbd://h:010809" and "nbd://h" compare equal. */
  snprintf (buf, sizeof buf, "%" PRIu64, v);
  u->port = copy_string (buf, strlen (buf));
  return u->port ? 0 : -1;
}

/* The authority is "[userinfo@]host[:port]", n bytes at s. */
static int
parse_authority (struct nbd_uri *u, const char *scheme, const char *s, size_t n)
{
  const char *at = memchr (s, '@', n);
  const char *host, *port = NULL;
  size_t hlen, plen = 0, len;
  bool ip_literal = false;
  uint64_t cid;

  if (at) {
    if (memchr (s, ':', at - s)) {
      set_error (EINVAL, "the URI user name must not contain ':' "
                 "(passwords are not supported; percent-encode it as %%3A)");
      return -1;
    }
    u->username = decode (s, at - s, CH_USER, false, "user name", &len);
    if (!u->username)
      return -1;
    if (len > MAX_NAME_LEN) {
      set_error (ENAMETOOLONG, "the URI user name is longer than %d bytes",
                 MAX_NAME_LEN);
      return -1;
    }
    if (len == 0) {             /* "nbd://@host": no user name */
      free (u->username);
      u->username = NULL;
    }
    n -= at + 1 - s;
    s = at + 1;
  }

  host = s;
  if (n > 0 && s[0] == '[') {
    const char *rbracket = memchr (s, ']', n);

    if (!rbracket) {
      set_error (EINVAL, "unterminated '[' in the URI host");
      return -1;
    }
    host = s + 1;
    hlen = rbracket - host;
    ip_literal = true;
    if (rbracket + 1 < s + n) {
      if (rbracket[1] != ':') {
        set_error (EINVAL, "unexpected '%c' after ']' in the URI host", rbracket[1]);
        return -1;
      }
      port = rbracket + 2;
    }
  }
  else {
    const char *colon = memchr (s, ':', n);

    hlen = colon ? (size_t) (colon - s) : n;
    if (colon)
      port = colon + 1;
  }
  if (port)
    plen = s + n - port;

  switch (u->transport) {
  case NBD_URI_TCP:
    if (ip_literal)
      u->host = parse_ip_literal (host, hlen);
    else
      u->host = decode (host, hlen, CH_REGNAME, false, "host name", NULL);
    if (!u->host)
      return -1;
    if (u->host[0] == '\0') {
      set_error (EINVAL, "the URI has no host name (expected %s://host/export)",
                 scheme);
      return -1;
    }
    return set_port (u, port, plen, port != NULL);

  case NBD_URI_UNIX:
    if (hlen > 0 || ip_literal) {
      set_error (EINVAL, "a %s URI must not have a host name: the socket= "
                 "parameter names the server (%s:///export?socket=PATH)",
                 scheme, scheme);
      return -1;
    }
    if (port) {
      set_error (EINVAL, "a %s URI must not have a port", scheme);
      return -1;
    }
    return 0;

  case NBD_URI_VSOCK:
    if (ip_literal || (hlen > 0 && !parse_number (host, hlen, UINT32_MAX, &cid))) {
      set_error (EINVAL, "URI vsock CID '%.*s' is not a 32-bit number",
                 (int) (ip_literal ? hlen + 2 : hlen), ip_literal ? host - 1 : host);
      return -1;
    }
    u->cid = hlen > 0 ? (uint32_t) cid : VSOCK_CID_HOST;
    return set_port (u, port, plen, port != NULL);
  }
  set_error (EINVAL, "internal error: unknown transport %d", (int) u->transport);
  return -1;
}

static int
parse_query_param (struct nbd_uri *u, const char *s, size_t n)
{
  const char *eq = memchr (s, '=', n);
  size_t klen = eq ? (size_t) (eq - s) : n;
  char *key, **target;
  size_t len;

  key = decode (s, klen, CH_QUERY, false, "query parameter name", NULL);
  if (!key)
    return -1;
  if (strncmp (key, "x-", 2) == 0) {     /* experimental: doc/uri.md */
    free (key);
    return 0;
  }

  if (strcmp (key, "socket") == 0)
    target = &u->socket;
  else if (strcmp (key, "tls-certificates") == 0)
    target = &u->tls_certificates;
  else if (strcmp (key, "tls-psk-file") == 0)
    target = &u->tls_psk_file;
  else {
    free (key);
    if (klen == 0)
      set_error (EINVAL, "the URI has a query parameter with no name");
    else
      set_error (EINVAL, "unknown URI query parameter '%.*s'", (int) klen, s);
    return -1;
  }
  if (*target) {
    set_error (EINVAL, "URI query parameter '%s' appears more than once", key);
    goto err;
  }
  if (!eq || eq + 1 == s + n) {
    set_error (EINVAL, "URI query parameter '%s' needs a value", key);
    goto err;
  }

  *target = decode (eq + 1, s + n - eq - 1, CH_QUERY, target == &u->socket,
                    "query parameter value", &len);
  if (!*target)
    goto err;
  if (target == &u->socket) {
    /* An abstract socket's name starts with NUL and may hold more;
     * a path cannot hold any.
     */
    if (u->socket[0] != '\0' && memchr (u->socket, '\0', len)) {
      set_error (EINVAL, "the URI socket= path must not contain %%00 (NUL), "
                 "except as its first byte for an abstract socket");
      goto err;
    }
    u->socket_len = len;
  }
  free (key);
  return 0;

 err:
  free (key);
  return -1;
}

static int
parse_query (struct nbd_uri *u, const char *s, size_t n)
{
  const char *end = s + n;

  while (s < end) {
    const char *amp = memchr (s, '&', end - s);
    size_t len = amp ? (size_t) (amp - s) : (size_t) (end - s);

    if (len > 0 && parse_query_param (u, s, len) == -1)
      return -1;
    s += len + 1;
  }
  return 0;
}

void
nbd_internal_free_uri (struct nbd_uri *u)
{
  if (!u)
    return;
  free (u->host);
  free (u->port);
  free (u->socket);
  free (u->export_name);
  free (u->username);
  free (u->tls_certificates);
  free (u->tls_psk_file);
  memset (u, 0, sizeof *u);
}

int
nbd_internal_parse_uri (const char *s, struct nbd_uri *u)
{
  const char *scheme = NULL, *p, *query;
  size_t i, n, len;

  memset (u, 0, sizeof *u);
  if (check_characters (s) == -1)
    return -1;

  n = strcspn (s, ":/?#");
  if (s[n] != ':' || n == 0) {
    set_error (EINVAL, "'%s' is not a URI: it has no scheme (expected e.g. "
               "nbd://host/export)", s);
    return -1;
  }
  /* Schemes are case-insensitive (RFC 3986 section 3.1). */
  for (i = 0; i < N_SCHEMES; i++) {
    if (strlen (schemes[i].name) == n && strncasecmp (s, schemes[i].name, n) == 0) {
      scheme = schemes[i].name;
      u->tls = schemes[i].tls;
      u->transport = schemes[i].transport;
      break;
    }
  }
  if (!scheme) {
    set_error (EINVAL, "URI has an unknown scheme '%.*s' (expected nbd, nbds, "
               "nbd+unix, nbds+unix, nbd+vsock or nbds+vsock)", (int) n, s);
    return -1;
  }
  p = s + n + 1;
  if (strncmp (p, "//", 2) != 0) {
    set_error (EINVAL, "URI must begin with '%s://'", scheme);
    goto err;
  }
  p += 2;

  /* A '#' cannot start anything but the fragment, so it ends the URI. */
  if (strchr (p, '#')) {
    set_error (EINVAL, "URI fragments ('#...') are not supported "
               "(percent-encode '#' as %%23)");
    goto err;
  }

  n = strcspn (p, "/?");
  if (parse_authority (u, scheme, p, n) == -1)
    goto err;
  p += n;

  /* The export name is the path without its leading '/'. */
  n = strcspn (p, "?");
  u->export_name = decode (n > 0 ? p + 1 : p, n > 0 ? n - 1 : 0, CH_PATH, false,
                           "export name", &len);
  if (!u->export_name)
    goto err;
  if (len > MAX_NAME_LEN) {
    set_error (ENAMETOOLONG, "the URI export name is longer than %d bytes",
               MAX_NAME_LEN);
    goto err;
  }
  p += n;

  if (*p == '?') {
    query = p + 1;
    if (parse_query (u, query, strlen (query)) == -1)
      goto err;
  }

  if (u->transport == NBD_URI_UNIX && !u->socket) {
    set_error (EINVAL, "a %s URI needs a socket= query parameter "
               "(%s:///export?socket=PATH)", scheme, scheme);
    goto err;
  }
  if (u->transport != NBD_URI_UNIX && u->socket) {
    set_error (EINVAL, "the socket= query parameter is only allowed with "
               "nbd+unix:// and nbds+unix:// URIs, not %s://", scheme);
    goto err;
  }
  return 0;

 err:
  nbd_internal_free_uri (u);
  return -1;
}

/* A growing string; after the first allocation failure every append is a
 * no-op and the caller checks failed once at the end.
 */
struct strbuf {
  char *s;
  size_t len, cap;
  bool failed;
};

static void
sb_add (struct strbuf *b, const char *s, size_t n)
{
  if (b->failed)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    char *p;

    while (cap < b->len + n + 1)
      cap *= 2;
    p = realloc (b->s, cap);
    if (!p) {
      b->failed = true;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  memcpy (&b->s[b->len], s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void
sb_str (struct strbuf *b, const char *s)
{
  sb_add (b, s, strlen (s));
}

/* Append n bytes, percent-encoding every byte outside allowed and every byte
 * in also (characters a component allows but that would be ambiguous).
 */
static void
sb_encode (struct strbuf *b, const char *s, size_t n, unsigned allowed,
           const char *also)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t i;

  for (i = 0; i < n; i++) {
    unsigned char c = s[i];

    if ((char_class (c) & allowed) && !(c && strchr (also, c)))
      sb_add (b, (const char *) &s[i], 1);
    else {
      char esc[3] = { '%', hex[c >> 4], hex[c & 15] };

      sb_add (b, esc, 3);
    }
  }
}

/* '&' separates parameters; '=', ';' and '+' are escaped as well because
 * other parsers give them meanings in queries (form encoding).
 */
static void
sb_param (struct strbuf *b, bool *first, const char *key, const char *v, size_t n)
{
  sb_str (b, *first ? "?" : "&");
  *first = false;
  sb_str (b, key);
  sb_str (b, "=");
  sb_encode (b, v, n, CH_QUERY, "&=;+");
}

char *
nbd_internal_format_uri (const struct nbd_uri *u)
{
  struct strbuf b = { 0 };
  bool first = true;
  size_t i;

  for (i = 0; i < N_SCHEMES; i++)
    if (schemes[i].tls == u->tls && schemes[i].transport == u->transport)
      sb_str (&b, schemes[i].name);
  sb_str (&b, "://");

  if (u->username && u->username[0]) {
    sb_encode (&b, u->username, strlen (u->username), CH_USER, "");
    sb_str (&b, "@");
  }

  switch (u->transport) {
  case NBD_URI_TCP:
    if (u->host && strchr (u->host, ':')) {
      const char *zone = strchr (u->host, '%');
      size_t alen = zone ? (size_t) (zone - u->host) : strlen (u->host);

      sb_str (&b, "[");
      sb_add (&b, u->host, alen);
      if (zone) {
        sb_str (&b, "%25");
        sb_encode (&b, zone + 1, strlen (zone + 1), CH_UNRESERVED, "");
      }
      sb_str (&b, "]");
    }
    else if (u->host)
      sb_encode (&b, u->host, strlen (u->host), CH_REGNAME, "");
    break;
  case NBD_URI_VSOCK: {
    char cid[16];

    snprintf (cid, sizeof cid, "%" PRIu32, u->cid);
    sb_str (&b, cid);
    break;
  }
  case NBD_URI_UNIX:
    break;
  }
  /* As libnbd: the port always, also the default one. */
  if (u->transport != NBD_URI_UNIX && u->port) {
    sb_str (&b, ":");
    sb_str (&b, u->port);
  }

  sb_str (&b, "/");
  if (u->export_name)
    sb_encode (&b, u->export_name, strlen (u->export_name), CH_PATH, "");

  if (u->socket)
    sb_param (&b, &first, "socket", u->socket, u->socket_len);
  if (u->tls_certificates)
    sb_param (&b, &first, "tls-certificates", u->tls_certificates,
              strlen (u->tls_certificates));
  if (u->tls_psk_file)
    sb_param (&b, &first, "tls-psk-file", u->tls_psk_file, strlen (u->tls_psk_file));

  if (b.failed) {
    free (b.s);
    set_error (ENOMEM, "realloc");
    errno = ENOMEM;
    return NULL;
  }
  return b.s;
}
