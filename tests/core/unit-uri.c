/* unit-uri: white-box tests of lib/uri.c and lib/subprocess.c.
 *
 * Calls the internal functions directly (no handle, no server): every URI
 * scheme and error case with its errno and message, parse/format round trips,
 * and the two ways of spawning a server, each wait bounded.  TAP output.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

#include "errors.h"
#include "subprocess.h"
#include "uri.h"

#define TIMEOUT_MS 10000

static unsigned test_num;
static unsigned failures;

/* The description is escaped for TAP: '#' would start a directive, and a
 * control character (URIs under test hold some) could end the line.
 */
__attribute__((format (printf, 2, 3)))
static bool
ok (bool pass, const char *fs, ...)
{
  char text[512];
  va_list ap;
  size_t i;

  va_start (ap, fs);
  vsnprintf (text, sizeof text, fs, ap);
  va_end (ap);
  printf ("%sok %u - ", pass ? "" : "not ", ++test_num);
  for (i = 0; text[i]; i++) {
    unsigned char c = text[i];

    if (c == '#' || c == '\\')
      printf ("\\%c", c);
    else if (c < 0x20 || c == 0x7f)
      printf ("\\x%02x", c);
    else
      putchar (c);
  }
  printf ("\n");
  fflush (stdout);
  if (!pass)
    failures++;
  return pass;
}

static void
skip (const char *why)
{
  printf ("ok %u # SKIP %s\n", ++test_num, why);
}

__attribute__((format (printf, 1, 2)))
static void
diag (const char *fs, ...)
{
  va_list ap;

  printf ("# ");
  va_start (ap, fs);
  vprintf (fs, ap);
  va_end (ap);
  printf ("\n");
}

/* Expected parse results.  NULL strings are expected to be NULL. */
struct good {
  const char *uri;
  bool tls;
  enum nbd_uri_transport transport;
  const char *host, *port;
  uint32_t cid;
  const char *socket;
  size_t socket_len;            /* 0: strlen (socket) */
  const char *export_name, *username, *certs, *psk;
};

static const struct good good[] = {
  { "nbd://example.com", false, NBD_URI_TCP, "example.com", "10809", 0, NULL, 0,
    "", NULL, NULL, NULL },
  { "nbds://example.com:10810/disk", true, NBD_URI_TCP, "example.com", "10810", 0,
    NULL, 0, "disk", NULL, NULL, NULL },
  { "nbd://example.com/", false, NBD_URI_TCP, "example.com", "10809", 0, NULL, 0,
    "", NULL, NULL, NULL },
  { "nbd://example.com//disk", false, NBD_URI_TCP, "example.com", "10809", 0, NULL,
    0, "/disk", NULL, NULL, NULL },
  { "nbd://example.com/hello%20world", false, NBD_URI_TCP, "example.com", "10809",
    0, NULL, 0, "hello world", NULL, NULL, NULL },
  { "nbd://h/a%2Fb%3fc/%E2%82%AC", false, NBD_URI_TCP, "h", "10809", 0, NULL, 0,
    "a/b?c/\xe2\x82\xac", NULL, NULL, NULL },
  { "nbd://h/a:b@c!$&'()*+,;=~", false, NBD_URI_TCP, "h", "10809", 0, NULL, 0,
    "a:b@c!$&'()*+,;=~", NULL, NULL, NULL },
  { "nbd://192.0.2.1:65535", false, NBD_URI_TCP, "192.0.2.1", "65535", 0, NULL, 0,
    "", NULL, NULL, NULL },
  { "nbd://h:010809/", false, NBD_URI_TCP, "h", "10809", 0, NULL, 0, "", NULL, NULL,
    NULL },
  { "nbd://[::1]:1234/x", false, NBD_URI_TCP, "::1", "1234", 0, NULL, 0, "x", NULL,
    NULL, NULL },
  { "nbds://[2001:db8::192.0.2.1]", true, NBD_URI_TCP, "2001:db8::192.0.2.1",
    "10809", 0, NULL, 0, "", NULL, NULL, NULL },
  { "nbd://[fe80::1%25eth0]/", false, NBD_URI_TCP, "fe80::1%eth0", "10809", 0,
    NULL, 0, "", NULL, NULL, NULL },
  { "nbd://my%2Dhost/", false, NBD_URI_TCP, "my-host", "10809", 0, NULL, 0, "",
    NULL, NULL, NULL },
  { "nbds://alice@h/e", true, NBD_URI_TCP, "h", "10809", 0, NULL, 0, "e", "alice",
    NULL, NULL },
  { "nbds://al%40ice%3Ax@h/", true, NBD_URI_TCP, "h", "10809", 0, NULL, 0, "",
    "al@ice:x", NULL, NULL },
  { "nbd://@h/", false, NBD_URI_TCP, "h", "10809", 0, NULL, 0, "", NULL, NULL,
    NULL },
  { "NBDS://Example.COM/", true, NBD_URI_TCP, "Example.COM", "10809", 0, NULL, 0,
    "", NULL, NULL, NULL },
  { "nbd+unix:///foo?socket=/tmp/nbd.sock", false, NBD_URI_UNIX, NULL, NULL, 0,
    "/tmp/nbd.sock", 0, "foo", NULL, NULL, NULL },
  { "nbd+unix://?socket=rel.sock", false, NBD_URI_UNIX, NULL, NULL, 0, "rel.sock",
    0, "", NULL, NULL, NULL },
  { "nbds+unix://alice@/?socket=/tmp/s&tls-certificates=certs", true,
    NBD_URI_UNIX, NULL, NULL, 0, "/tmp/s", 0, "", "alice", "certs", NULL },
  { "nbd+unix:///?socket=%00/abstract", false, NBD_URI_UNIX, NULL, NULL, 0,
    "\0/abstract", 10, "", NULL, NULL, NULL },
  { "nbd+unix:///?socket=%00a%00b", false, NBD_URI_UNIX, NULL, NULL, 0,
    "\0a\0b", 4, "", NULL, NULL, NULL },
  { "nbd+unix:///e?socket=/a%20b%26c=d+e;f", false, NBD_URI_UNIX, NULL, NULL, 0,
    "/a b&c=d+e;f", 0, "e", NULL, NULL, NULL },
  { "nbd+unix:///?&socket=/s&&x-foo=1&x-foo=2&", false, NBD_URI_UNIX, NULL, NULL, 0,
    "/s", 0, "", NULL, NULL, NULL },
  { "nbd+unix:///?%73ocket=/s", false, NBD_URI_UNIX, NULL, NULL, 0, "/s", 0, "",
    NULL, NULL, NULL },
  { "nbd+vsock:///", false, NBD_URI_VSOCK, NULL, "10809", 2, NULL, 0, "", NULL,
    NULL, NULL },
  { "nbds+vsock://3:1234/e", true, NBD_URI_VSOCK, NULL, "1234", 3, NULL, 0, "e",
    NULL, NULL, NULL },
  { "nbd+vsock://4294967295:4294967295", false, NBD_URI_VSOCK, NULL, "4294967295",
    4294967295u, NULL, 0, "", NULL, NULL, NULL },
  { "nbds://h/?tls-psk-file=/keys.psk", true, NBD_URI_TCP, "h", "10809", 0, NULL, 0,
    "", NULL, NULL, "/keys.psk" },
  { "nbds://u@h/e?tls-certificates=/c%20d&tls-psk-file=k?x", true, NBD_URI_TCP, "h",
    "10809", 0, NULL, 0, "e", "u", "/c d", "k?x" },
  { "nbd://h/e?", false, NBD_URI_TCP, "h", "10809", 0, NULL, 0, "e", NULL, NULL,
    NULL },
};
#define N_GOOD (sizeof good / sizeof good[0])

struct bad {
  const char *uri;
  int err;
  const char *mentions;         /* in nbd_get_error () */
};

static const struct bad bad[] = {
  { "http://example.com/", EINVAL, "unknown scheme 'http'" },
  { "nbd+tcp://h/", EINVAL, "unknown scheme 'nbd+tcp'" },
  { "", EINVAL, "no scheme" },
  { "example.com/disk", EINVAL, "no scheme" },
  { "nbd:/x", EINVAL, "'nbd://'" },
  { "nbd+unix:?socket=/s", EINVAL, "'nbd+unix://'" },
  { "nbd:///x", EINVAL, "no host" },
  { "nbds://:10809/", EINVAL, "no host" },
  { "nbd://alice@/", EINVAL, "no host" },
  { "nbd://h:/x", EINVAL, "port ''" },
  { "nbd://h:abc/", EINVAL, "port 'abc'" },
  { "nbd://h:-1/", EINVAL, "port '-1'" },
  { "nbd://h:0/", EINVAL, "port '0'" },
  { "nbd://h:65536/", EINVAL, "port '65536'" },
  { "nbd://h:99999999999999999999999/", EINVAL, "port '99999999999999999999999'" },
  { "nbd://[::1/", EINVAL, "unterminated '['" },
  { "nbd://[::1]x/", EINVAL, "after ']'" },
  { "nbd://[example.com]/", EINVAL, "IPv6" },
  { "nbd://[v1.fe]/", EINVAL, "IPvFuture" },
  { "nbd://[fe80::1%eth0]/", EINVAL, "%25" },
  { "nbd://a@b@h/", EINVAL, "'@'" },
  { "nbd://u:secret@h/", EINVAL, "':'" },
  { "nbd+unix://h/?socket=/s", EINVAL, "host" },
  { "nbd+unix://:5/?socket=/s", EINVAL, "port" },
  { "nbd+unix:///e", EINVAL, "socket=" },
  { "nbd+unix:///?socket=", EINVAL, "'socket' needs a value" },
  { "nbd+unix:///?socket", EINVAL, "'socket' needs a value" },
  { "nbd+unix:///?socket=/a&socket=/b", EINVAL, "'socket' appears more than once" },
  { "nbd+unix:///?socket=/a%00b", EINVAL, "%00" },
  { "nbd://h/?socket=/s", EINVAL, "socket=" },
  { "nbd+vsock:///?socket=/s", EINVAL, "socket=" },
  { "nbd+vsock://abc/", EINVAL, "CID 'abc'" },
  { "nbd+vsock://4294967296/", EINVAL, "CID '4294967296'" },
  { "nbd+vsock://-1/", EINVAL, "CID '-1'" },
  { "nbd+vsock://[::1]/", EINVAL, "CID '[::1]'" },
  { "nbd+vsock://2:4294967296/", EINVAL, "port '4294967296'" },
  { "nbd://h/?foo=bar", EINVAL, "unknown URI query parameter 'foo'" },
  { "nbds://h/?tls-type=psk", EINVAL, "'tls-type'" },
  { "nbd://h/?=1", EINVAL, "no name" },
  { "nbds://h/?tls-psk-file=a&tls-psk-file=b", EINVAL, "'tls-psk-file' appears" },
  { "nbds://h/?tls-certificates=a&tls-certificates=a", EINVAL, "'tls-certificates'" },
  { "nbd://h/a%00b", EINVAL, "export name must not contain %00" },
  { "nbd://a%00@h/", EINVAL, "user name must not contain %00" },
  { "nbd://h%00/", EINVAL, "host name must not contain %00" },
  { "nbds://h/?tls-psk-file=a%00", EINVAL, "%00" },
  { "nbd://h/a%zz", EINVAL, "percent-encoding '%zz'" },
  { "nbd://h/a%4", EINVAL, "percent-encoding '%4'" },
  { "nbd://h/a%", EINVAL, "percent-encoding '%'" },
  { "nbd://h/a\tb", EINVAL, "control character" },
  { "nbd://h/a\nb", EINVAL, "control character" },
  { "nbd://h/a\x7f", EINVAL, "control character" },
  { "nbd://h/a b", EINVAL, "invalid character ' '" },
  { "nbd://h/[x]", EINVAL, "invalid character '['" },
  { "nbd://h/x\"", EINVAL, "invalid character '\"'" },
  { "nbd://h/\xc3\xa9", EINVAL, "non-ASCII" },
  { "nbd://h/e#frag", EINVAL, "fragment" },
  { "nbd+unix:///?socket=/tmp/a#b", EINVAL, "fragment" },
};
#define N_BAD (sizeof bad / sizeof bad[0])

/* parse (in) must format exactly as out (as libnbd's nbd_get_uri, with
 * the port always, also the default one). */
static const struct {
  const char *in, *out;
} formats[] = {
  { "nbd://example.com", "nbd://example.com:10809/" },
  { "NBD://h:010809", "nbd://h:10809/" },
  { "nbds://h:123/e", "nbds://h:123/e" },
  { "nbd+unix:///?socket=%00/abstract", "nbd+unix:///?socket=%00/abstract" },
  { "nbd://[fe80::1%25eth0]:99/a%20b", "nbd://[fe80::1%25eth0]:99/a%20b" },
  { "nbds+unix://a%40b@/e?tls-psk-file=/k%26&socket=/s",
    "nbds+unix://a%40b@/e?socket=/s&tls-psk-file=/k%26" },
  { "nbd+vsock:///", "nbd+vsock://2:10809/" },
  { "nbd://h/?x-a=1", "nbd://h:10809/" },
  { "nbd+unix:///?socket=/a+b;c=d", "nbd+unix:///?socket=/a%2Bb%3Bc%3Dd" },
  { "nbd://h/%e2%82%ac%0a", "nbd://h:10809/%E2%82%AC%0A" },
};
#define N_FORMATS (sizeof formats / sizeof formats[0])

#define N_SPAWN 19

static bool
str_eq (const char *what, const char *want, const char *got)
{
  if ((want == NULL) != (got == NULL) || (want && strcmp (want, got) != 0)) {
    diag ("%s: expected %s%s%s, got %s%s%s", what,
          want ? "\"" : "", want ? want : "NULL", want ? "\"" : "",
          got ? "\"" : "", got ? got : "NULL", got ? "\"" : "");
    return false;
  }
  return true;
}

static bool
uri_eq (const struct nbd_uri *want, const struct nbd_uri *got)
{
  bool r = true;

  if (want->tls != got->tls) {
    diag ("tls: expected %d, got %d", want->tls, got->tls);
    r = false;
  }
  if (want->transport != got->transport) {
    diag ("transport: expected %d, got %d", want->transport, got->transport);
    r = false;
  }
  if (want->cid != got->cid) {
    diag ("cid: expected %u, got %u", want->cid, got->cid);
    r = false;
  }
  r &= str_eq ("host", want->host, got->host);
  r &= str_eq ("port", want->port, got->port);
  r &= str_eq ("export_name", want->export_name, got->export_name);
  r &= str_eq ("username", want->username, got->username);
  r &= str_eq ("tls_certificates", want->tls_certificates, got->tls_certificates);
  r &= str_eq ("tls_psk_file", want->tls_psk_file, got->tls_psk_file);
  if ((want->socket == NULL) != (got->socket == NULL) ||
      want->socket_len != got->socket_len ||
      (want->socket && memcmp (want->socket, got->socket, want->socket_len + 1) != 0)) {
    diag ("socket: expected %zu bytes \"%s\", got %zu bytes \"%s\"",
          want->socket_len, want->socket ? want->socket + !want->socket[0] : "NULL",
          got->socket_len, got->socket ? got->socket + !got->socket[0] : "NULL");
    r = false;
  }
  return r;
}

/* s shortened for a test name. */
static const char *
shorten (const char *s, char *buf, size_t size)
{
  if (!*s)
    return "\"\"";
  if (strlen (s) < size)
    return s;
  snprintf (buf, size, "%.*s...", (int) size - 4, s);
  return buf;
}

static bool
is_zero (const struct nbd_uri *u)
{
  static const struct nbd_uri zero;

  return memcmp (u, &zero, sizeof zero) == 0;
}

static void
test_good (const struct good *g)
{
  struct nbd_uri want = {
    .tls = g->tls, .transport = g->transport, .cid = g->cid,
    .host = (char *) g->host, .port = (char *) g->port,
    .socket = (char *) g->socket,
    .socket_len = g->socket ? (g->socket_len ? g->socket_len : strlen (g->socket)) : 0,
    .export_name = (char *) g->export_name, .username = (char *) g->username,
    .tls_certificates = (char *) g->certs, .tls_psk_file = (char *) g->psk,
  };
  struct nbd_uri u, u2;
  char *s = NULL, *s2 = NULL;

  if (nbd_internal_parse_uri (g->uri, &u) == -1) {
    diag ("error: %s", nbd_get_error ());
    ok (false, "parse %s", g->uri);
    ok (false, "round trip %s", g->uri);
    return;
  }
  ok (uri_eq (&want, &u), "parse %s", g->uri);

  /* parse (format (parse (s))) == parse (s), and format is then a fixed point. */
  s = nbd_internal_format_uri (&u);
  if (!s)
    diag ("format failed: %s", nbd_get_error ());
  else if (nbd_internal_parse_uri (s, &u2) == -1)
    diag ("re-parsing %s failed: %s", s, nbd_get_error ());
  else {
    bool same = uri_eq (&u, &u2);

    s2 = nbd_internal_format_uri (&u2);
    ok (same && s2 && strcmp (s, s2) == 0, "round trip %s -> %s", g->uri, s);
    nbd_internal_free_uri (&u2);
    free (s2);
    free (s);
    nbd_internal_free_uri (&u);
    return;
  }
  ok (false, "round trip %s", g->uri);
  free (s);
  nbd_internal_free_uri (&u);
}

static void
test_bad (const char *uri, int err, const char *mentions)
{
  struct nbd_uri u;
  const char *msg;
  char name[80];
  int r, e;

  memset (&u, 0x55, sizeof u);  /* must come back zeroed */
  r = nbd_internal_parse_uri (uri, &u);
  e = nbd_get_errno ();
  msg = nbd_get_error ();
  if (r != -1)
    diag ("parse succeeded");
  else {
    if (e != err)
      diag ("errno: expected %d (%s), got %d (%s)", err, strerror (err), e, strerror (e));
    if (!msg || !strstr (msg, mentions))
      diag ("error: expected a message mentioning \"%s\", got \"%s\"", mentions,
            msg ? msg : "NULL");
    if (!is_zero (&u))
      diag ("the struct was not left zeroed");
  }
  ok (r == -1 && e == err && msg && strstr (msg, mentions) && is_zero (&u),
      "rejects %s (%s)", shorten (uri, name, sizeof name), mentions);
  if (r == 0)
    nbd_internal_free_uri (&u);
}

static void
test_format (const char *in, const char *want)
{
  struct nbd_uri u;
  char *s = NULL;

  if (nbd_internal_parse_uri (in, &u) == 0) {
    s = nbd_internal_format_uri (&u);
    nbd_internal_free_uri (&u);
  }
  else
    diag ("error: %s", nbd_get_error ());
  if (!str_eq ("formatted", want, s))
    ok (false, "format %s", in);
  else
    ok (true, "format %s -> %s", in, want);
  free (s);
}

/* Names of exactly the limit pass, one byte more fails with ENAMETOOLONG. */
static void
test_long_names (void)
{
  static const char pre_export[] = "nbd://h/", pre_user[] = "nbds://";
  char *uri = malloc (sizeof pre_user + 4097 + 3);
  struct nbd_uri u;
  int r;

  if (!uri) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  strcpy (uri, pre_export);
  memset (uri + strlen (pre_export), 'e', 4096);
  uri[strlen (pre_export) + 4096] = '\0';
  r = nbd_internal_parse_uri (uri, &u);
  ok (r == 0 && strlen (u.export_name) == 4096, "export name of 4096 bytes accepted");
  if (r == 0)
    nbd_internal_free_uri (&u);

  strcat (uri, "e");
  test_bad (uri, ENAMETOOLONG, "export name is longer than 4096");

  /* 4096 bytes decoded from more than 4096 encoded ones is still fine. */
  strcpy (uri, pre_export);
  memset (uri + strlen (pre_export), 'e', 4095);
  strcpy (uri + strlen (pre_export) + 4095, "%20");
  r = nbd_internal_parse_uri (uri, &u);
  ok (r == 0 && strlen (u.export_name) == 4096,
      "the limit applies to the decoded export name");
  if (r == 0)
    nbd_internal_free_uri (&u);

  strcpy (uri, pre_user);
  memset (uri + strlen (pre_user), 'u', 4097);
  strcpy (uri + strlen (pre_user) + 4097, "@h");
  test_bad (uri, ENAMETOOLONG, "user name is longer than 4096");
  free (uri);
}

static void
test_context (void)
{
  struct nbd_uri u;
  const char *msg;

  nbd_internal_set_context ("nbd_connect_uri");
  nbd_internal_parse_uri ("gopher://h/", &u);
  msg = nbd_get_error ();
  ok (msg && strncmp (msg, "nbd_connect_uri: URI has an unknown scheme 'gopher'",
                      strlen ("nbd_connect_uri: URI has an unknown scheme 'gopher'")) == 0,
      "the message names the call: %s", msg ? msg : "NULL");
}

/* Spawning. */

static int
wait_child (pid_t pid, int *status)
{
  int waited;

  for (waited = 0; waited < TIMEOUT_MS; waited += 10) {
    pid_t r = waitpid (pid, status, WNOHANG);

    if (r == pid)
      return 0;
    if (r == -1) {
      perror ("waitpid");
      return -1;
    }
    poll (NULL, 0, 10);
  }
  diag ("child %d did not exit within %d ms; killing it", (int) pid, TIMEOUT_MS);
  kill (pid, SIGKILL);
  waitpid (pid, status, 0);
  return -1;
}

static bool
exited_with (pid_t pid, int code)
{
  int status;

  if (wait_child (pid, &status) == -1)
    return false;
  if (!WIFEXITED (status) || WEXITSTATUS (status) != code) {
    diag ("child status: expected exit %d, got 0x%x", code, status);
    return false;
  }
  return true;
}

/* Read until n bytes or EOF (n == 0: until EOF) from the non-blocking fd. */
static ssize_t
read_all (int fd, char *buf, size_t n, size_t size)
{
  size_t got = 0;

  while (got < size && (n == 0 || got < n)) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    ssize_t r;

    if (poll (&pfd, 1, TIMEOUT_MS) != 1) {
      diag ("timed out reading from the child");
      return -1;
    }
    r = read (fd, buf + got, size - got);
    if (r == -1 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (r == -1) {
      diag ("read: %s", strerror (errno));
      return -1;
    }
    if (r == 0)
      break;
    got += r;
  }
  return got;
}

static int
count_entries (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  int n = 0;

  if (!d)
    return -1;
  while ((e = readdir (d)) != NULL)
    if (strcmp (e->d_name, ".") != 0 && strcmp (e->d_name, "..") != 0)
      n++;
  closedir (d);
  return n;
}

static int
count_fds (void)
{
  int fd, n = 0;

  for (fd = 0; fd < 1024; fd++)
    if (fcntl (fd, F_GETFD) != -1)
      n++;
  return n;
}

static void
test_command (void)
{
  static char *cat[] = { "cat", NULL };
  static char *missing[] = { "libnbd-core-no-such-program", NULL };
  static char *empty[] = { NULL };
  static const char msg[] = "hello, server\n\0binary\xff";
  char buf[256];
  int sock = -1, fl, fd_flags;
  pid_t pid;
  ssize_t n;
  const char *err;

  if (!ok (nbd_internal_spawn_command (cat, &sock, &pid) == 0, "spawn cat")) {
    diag ("error: %s", nbd_get_error ());
    ok (false, "our end of the socketpair is non-blocking and close-on-exec");
    ok (false, "cat echoes bytes back");
    ok (false, "cat exits 0 at EOF");
  }
  else {
    fl = fcntl (sock, F_GETFL);
    fd_flags = fcntl (sock, F_GETFD);
    ok (fl != -1 && (fl & O_NONBLOCK) && fd_flags != -1 && (fd_flags & FD_CLOEXEC),
        "our end of the socketpair is non-blocking and close-on-exec");
    n = write (sock, msg, sizeof msg);
    ok (n == (ssize_t) sizeof msg &&
        read_all (sock, buf, sizeof msg, sizeof buf) == (ssize_t) sizeof msg &&
        memcmp (buf, msg, sizeof msg) == 0, "cat echoes %zu bytes back", sizeof msg);
    close (sock);
    ok (exited_with (pid, 0), "cat exits 0 at EOF");
  }

  ok (nbd_internal_spawn_command (missing, &sock, &pid) == -1 &&
      nbd_get_errno () == ENOENT, "a missing program fails with ENOENT");
  err = nbd_get_error ();
  ok (err && strstr (err, "exec: libnbd-core-no-such-program"),
      "the message names exec and the program: %s", err ? err : "NULL");
  ok (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD,
      "the failed child was reaped");

  ok (nbd_internal_spawn_command (empty, &sock, &pid) == -1 &&
      nbd_get_errno () == EINVAL, "an empty argv fails with EINVAL");
}

/* The child starts with SIGPIPE at its default and no signal blocked, even
 * when the caller ignores SIGPIPE and blocks SIGUSR1.
 */
static void
test_command_signals (void)
{
  static char *status[] = { "cat", "/proc/self/status", NULL };
  struct sigaction ign = { .sa_handler = SIG_IGN }, old;
  sigset_t usr1, oldmask;
  char buf[8192];
  const char *p;
  unsigned long long ignored = ~0ULL, blocked = ~0ULL;
  int sock;
  pid_t pid;
  ssize_t n;

  if (access ("/proc/self/status", R_OK) != 0) {
    skip ("no /proc/self/status");
    return;
  }
  sigemptyset (&usr1);
  sigaddset (&usr1, SIGUSR1);
  sigaction (SIGPIPE, &ign, &old);
  sigprocmask (SIG_BLOCK, &usr1, &oldmask);
  if (nbd_internal_spawn_command (status, &sock, &pid) == -1) {
    diag ("error: %s", nbd_get_error ());
    n = -1;
  }
  else {
    n = read_all (sock, buf, 0, sizeof buf - 1);
    close (sock);
    if (!exited_with (pid, 0))
      n = -1;
  }
  sigprocmask (SIG_SETMASK, &oldmask, NULL);
  sigaction (SIGPIPE, &old, NULL);
  if (n > 0) {
    buf[n] = '\0';
    if ((p = strstr (buf, "\nSigIgn:")) != NULL)
      ignored = strtoull (p + 8, NULL, 16);
    if ((p = strstr (buf, "\nSigBlk:")) != NULL)
      blocked = strtoull (p + 8, NULL, 16);
  }
  ok (n > 0 && !(ignored & (1ULL << (SIGPIPE - 1))) && blocked == 0,
      "the server starts with SIGPIPE default (SigIgn %llx) and nothing blocked "
      "(SigBlk %llx)", ignored, blocked);
}

static void
test_activation (const char *tmpdir_env)
{
  static char *check[] = {
    "sh", "-c",
    "test \"$LISTEN_FDS\" = 1 && test \"$LISTEN_PID\" = $$ && exit 0; exit 3",
    NULL
  };
  /* Also: fd 3 is the socket, and no stale LISTEN_FDNAMES got through. */
  static char *check_fd3[] = {
    "sh", "-c",
    "{ test ! -d /proc/self/fd || test -S /proc/self/fd/3; } && "
    "test -z \"${LISTEN_FDNAMES+set}\" && "
    "test \"$LISTEN_FDS\" = 1 && test \"$LISTEN_PID\" = $$ && exit 0; exit 3",
    NULL
  };
  static char *missing[] = { "libnbd-core-no-such-program", NULL };
  char *tmpdir = NULL, *sockpath = NULL;
  size_t len = strlen (tmpdir_env);
  struct stat st;
  pid_t pid;
  int r, devnull;

  /* fd 3 free: the listening socket is created as fd 3 itself. */
  if (fcntl (3, F_GETFD) != -1)
    diag ("fd 3 is already open: the socket-is-fd-3 case is not exercised");
  setenv ("LISTEN_PID", "1", 1);
  setenv ("LISTEN_FDS", "7", 1);
  r = nbd_internal_spawn_socket_activation (check, &tmpdir, &sockpath, &pid);
  if (r == -1) {
    diag ("error: %s", nbd_get_error ());
    ok (false, "socket activation makes %s/libnbd-core-XXXXXX", tmpdir_env);
    ok (false, "the socket exists");
    ok (false, "the server saw LISTEN_FDS=1 and LISTEN_PID=$$");
    ok (false, "nbd_internal_remove_socket_dir removes it all");
  }
  else {
    ok (strncmp (tmpdir, tmpdir_env, len) == 0 &&
        strncmp (tmpdir + len, "/libnbd-core-", 13) == 0,
        "socket activation makes %s/libnbd-core-XXXXXX: %s", tmpdir_env, tmpdir);
    ok (stat (sockpath, &st) == 0 && S_ISSOCK (st.st_mode) &&
        strcmp (sockpath + strlen (tmpdir), "/sock") == 0,
        "%s is a socket", sockpath);
    ok (exited_with (pid, 0), "the server saw LISTEN_FDS=1 and LISTEN_PID=$$ "
        "(the caller's stale values replaced)");
    nbd_internal_remove_socket_dir (tmpdir, sockpath);
    ok (count_entries (tmpdir_env) == 0,
        "nbd_internal_remove_socket_dir removes it all");
    free (tmpdir);
    free (sockpath);
  }

  /* fd 3 taken: the child moves the socket onto it. */
  devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull != -1 && devnull != 3 && fcntl (3, F_GETFD) == -1) {
    dup2 (devnull, 3);
    close (devnull);
    devnull = 3;
  }
  setenv ("LISTEN_FDNAMES", "stale", 1);
  r = nbd_internal_spawn_socket_activation (check_fd3, &tmpdir, &sockpath, &pid);
  ok (r == 0 && exited_with (pid, 0),
      "with fd %d already open the server still gets the socket as fd 3", devnull);
  if (r == 0) {
    nbd_internal_remove_socket_dir (tmpdir, sockpath);
    free (tmpdir);
    free (sockpath);
  }
  else
    diag ("error: %s", nbd_get_error ());
  ok (fstat (devnull, &st) == 0 && S_ISCHR (st.st_mode),
      "the caller's fd %d is untouched", devnull);
  close (devnull);
  unsetenv ("LISTEN_PID");
  unsetenv ("LISTEN_FDS");
  unsetenv ("LISTEN_FDNAMES");

  tmpdir = sockpath = NULL;
  r = nbd_internal_spawn_socket_activation (missing, &tmpdir, &sockpath, &pid);
  ok (r == -1 && nbd_get_errno () == ENOENT && tmpdir == NULL &&
      strstr (nbd_get_error (), "exec: libnbd-core-no-such-program"),
      "socket activation of a missing program fails with ENOENT: %s",
      nbd_get_error ());
  ok (count_entries (tmpdir_env) == 0 && waitpid (-1, NULL, WNOHANG) == -1 &&
      errno == ECHILD, "... leaving no directory and no child behind");
}

int
main (void)
{
  char tmpdir_env[] = "/tmp/unit-uri-XXXXXX";
  unsigned plan;
  size_t i;
  int fds;

  alarm (30);
  plan = 2 * N_GOOD + N_BAD + N_FORMATS + N_SPAWN + 5;
  printf ("1..%u\n", plan);
  fflush (stdout);
  fds = count_fds ();

  for (i = 0; i < N_GOOD; i++)
    test_good (&good[i]);
  for (i = 0; i < N_BAD; i++)
    test_bad (bad[i].uri, bad[i].err, bad[i].mentions);
  for (i = 0; i < N_FORMATS; i++)
    test_format (formats[i].in, formats[i].out);
  test_long_names ();
  test_context ();

  if (!mkdtemp (tmpdir_env)) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  setenv ("TMPDIR", tmpdir_env, 1);
  test_activation (tmpdir_env);
  test_command ();
  test_command_signals ();
  ok (rmdir (tmpdir_env) == 0, "the test's TMPDIR is empty at the end");
  ok (count_fds () == fds, "no file descriptor leaked (%d open at start, %d now)",
      fds, count_fds ());

  if (test_num != plan) {
    diag ("ran %u tests, planned %u", test_num, plan);
    failures++;
  }
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
