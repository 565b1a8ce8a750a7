/* tls-defaults: with no nbd_set_tls_certificates, certificates come from
 * libnbd's default directories — for a user, $HOME/.pki/libnbd, then
 * $HOME/.config/pki/libnbd (the first with a ca-cert.pem wins, client
 * certificates included); for root, /etc/pki/libnbd and never $HOME — and
 * failing those, the system's trusted CAs, still verified.
 *
 * The user cases run in a child process as "nobody" (when the test runs as
 * root) with a HOME of its own, connecting over TCP to nbdkit.
 */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libnbd.h>

#include "servers.h"
#include "tap.h"
#include "tls-material.h"

static struct tls_material m;
static char *base;              /* a directory "nobody" may enter */
static uid_t user_uid;
static gid_t user_gid;

static const char *
errmsg (void)
{
  const char *e = nbd_get_error ();

  return e ? e : "(no error)";
}

static int
run (const char *const *argv)
{
  return servers_run (argv, 30);
}

/* A fresh HOME; for each of @pki and @config, the directory @from (or
 * none if NULL) is copied to .pki/libnbd resp. .config/pki/libnbd. */
static char *
make_home (const char *pki, const char *config)
{
  static int n;
  char *home, *d;

  if (asprintf (&home, "%s/home%d", base, ++n) == -1 || mkdir (home, 0700) == -1)
    bail_out ("mkdir home: %m");
  if (pki) {
    if (asprintf (&d, "%s/.pki", home) == -1 || mkdir (d, 0700) == -1)
      bail_out ("mkdir: %m");
    free (d);
    if (asprintf (&d, "%s/.pki/libnbd", home) == -1 ||
        run ((const char *const[]) { "cp", "-r", pki, d, NULL }) != 0)
      bail_out ("cp %s", pki);
    free (d);
  }
  if (config) {
    if (asprintf (&d, "%s/.config", home) == -1 || mkdir (d, 0700) == -1)
      bail_out ("mkdir: %m");
    free (d);
    if (asprintf (&d, "%s/.config/pki", home) == -1 || mkdir (d, 0700) == -1)
      bail_out ("mkdir: %m");
    free (d);
    if (asprintf (&d, "%s/.config/pki/libnbd", home) == -1 ||
        run ((const char *const[]) { "cp", "-r", config, d, NULL }) != 0)
      bail_out ("cp %s", config);
    free (d);
  }
  if (user_uid != geteuid ()) {
    char owner[64];

    snprintf (owner, sizeof owner, "%u:%u", (unsigned) user_uid, (unsigned) user_gid);
    if (run ((const char *const[]) { "chown", "-R", owner, home, NULL }) != 0)
      bail_out ("chown %s", home);
  }
  return home;
}

/* Connect as the user with @home to localhost:@port, TLS required and no
 * certificates set.  Returns 0 if it connected, else -1 with the error
 * message in @msg. */
static int
user_connect (const char *home, int port, char *msg, size_t msglen)
{
  int pfd[2], st;
  pid_t pid;
  ssize_t n;

  if (pipe (pfd) == -1)
    bail_out ("pipe: %m");
  pid = fork ();
  if (pid == -1)
    bail_out ("fork: %m");
  if (pid == 0) {
    struct nbd_handle *h;
    char p[16];
    const char *out = "connected";
    int r;

    alarm (60);
    close (pfd[0]);
    if (user_uid != geteuid () && (setgid (user_gid) == -1 || setuid (user_uid) == -1))
      _exit (2);
    setenv ("HOME", home, 1);
    snprintf (p, sizeof p, "%d", port);
    h = nbd_create ();
    must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
    r = nbd_connect_tcp (h, "localhost", p);
    if (r == -1)
      out = errmsg ();
    else
      nbd_shutdown (h, 0);
    if (write (pfd[1], out, strlen (out)) < 0)
      _exit (3);
    nbd_close (h);
    _exit (r == 0 ? 0 : 1);
  }
  close (pfd[1]);
  n = read (pfd[0], msg, msglen - 1);
  msg[n > 0 ? n : 0] = '\0';
  close (pfd[0]);
  while (waitpid (pid, &st, 0) == -1 && errno == EINTR)
    ;
  return WIFEXITED (st) && WEXITSTATUS (st) == 0 ? 0 : -1;
}

int
main (void)
{
  struct test_server srv, vsrv;
  struct nbd_handle *h;
  char *arg, *home, msg[1024], port[16];
  const char *tmp = getenv ("LIBNBD_CORE_TEST_TMP");
  int rc;

  tap_timeout (180);
  h = nbd_create ();
  if (!h || !nbd_supports_tls (h))
    skip_all ("libnbd-core was built without TLS");
  nbd_close (h);
  if (tls_material_create (&m) == -1)
    bail_out ("cannot make TLS material");
  if (geteuid () == 0) {
    struct passwd *pw = getpwnam ("nobody");

    if (!pw)
      skip_all ("running as root and there is no user \"nobody\" to test the user's defaults");
    user_uid = pw->pw_uid;
    user_gid = pw->pw_gid;
  }
  else {
    user_uid = geteuid ();
    user_gid = getegid ();
  }
  if (asprintf (&base, "%s/tls-defaults-XXXXXX", tmp ? tmp : "/tmp") == -1 || !mkdtemp (base) ||
      chmod (base, 0711) == -1)
    bail_out ("mkdtemp: %m");

  if (asprintf (&arg, "--tls-certificates=%s", m.server_dir) == -1 ||
      server_start_nbdkit_tcp (&srv, (const char *const[]) { "--tls=require", arg, "memory",
                                                             "size=1M", NULL }) == -1 ||
      server_start_nbdkit_tcp (&vsrv, (const char *const[]) { "--tls=require", arg,
                                                              "--tls-verify-peer", "memory",
                                                              "size=1M", NULL }) == -1)
    bail_out ("cannot start nbdkit");

  home = make_home (m.ca_only_dir, NULL);
  rc = user_connect (home, srv.tcp_port, msg, sizeof msg);
  is_int (rc, 0, "user: $HOME/.pki/libnbd is used (%s)", msg);
  free (home);

  home = make_home (NULL, m.ca_only_dir);
  rc = user_connect (home, srv.tcp_port, msg, sizeof msg);
  is_int (rc, 0, "user: $HOME/.config/pki/libnbd is used (%s)", msg);
  free (home);

  home = make_home (m.otherca_dir, m.ca_only_dir);
  rc = user_connect (home, srv.tcp_port, msg, sizeof msg);
  is_int (rc, -1, "user: $HOME/.pki/libnbd comes first (it holds the wrong CA: refused)");
  ok (strstr (msg, "issuer is unknown") != NULL, "user: because of that CA: %s", msg);
  free (home);

  home = make_home (m.ca_only_dir, m.otherca_dir);
  rc = user_connect (home, srv.tcp_port, msg, sizeof msg);
  is_int (rc, 0, "user: and the .config directory is then not looked at (%s)", msg);
  free (home);

  home = make_home (m.client_dir, NULL);
  rc = user_connect (home, vsrv.tcp_port, msg, sizeof msg);
  is_int (rc, 0, "user: the client certificate in $HOME/.pki/libnbd is used too (%s)", msg);
  free (home);

  home = make_home (NULL, NULL);
  rc = user_connect (home, srv.tcp_port, msg, sizeof msg);
  is_int (rc, -1, "user: no directory: the system's CAs, which do not know ours: refused");
  ok (strstr (msg, "issuer is unknown") && strstr (msg, "system's trusted CAs"),
      "user: says so: %s", msg);
  free (home);

  /* Root never looks in $HOME. */
  if (geteuid () != 0)
    skip ("not root: root's default directory is not tested");
  else if (access ("/etc/pki/libnbd", F_OK) == 0)
    skip ("/etc/pki/libnbd exists: root's case would depend on it");
  else {
    home = make_home (m.ca_only_dir, m.ca_only_dir);
    setenv ("HOME", home, 1);
    h = nbd_create ();
    must (nbd_set_tls (h, LIBNBD_TLS_REQUIRE));
    snprintf (port, sizeof port, "%d", srv.tcp_port);
    rc = nbd_connect_tcp (h, "localhost", port);
    is_int (rc, -1, "root: $HOME's directories are not used (system CAs: refused)");
    ok (strstr (errmsg (), "system's trusted CAs") != NULL, "root: says so: %s", errmsg ());
    nbd_close (h);
    free (home);
  }

  server_stop (&srv);
  server_stop (&vsrv);
  run ((const char *const[]) { "rm", "-rf", base, NULL });
  free (base);
  free (arg);
  return done_testing ();
}
