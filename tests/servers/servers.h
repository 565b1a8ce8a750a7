/* servers.h: start and stop real NBD servers for the tests.
 *
 * Owns the server processes a test program starts (nbdkit, qemu-nbd,
 * nbd-server), their private directories, and the scratch images the tests
 * serve.  It must never depend on libnbd-core: readiness is checked with
 * plain connect() calls, so these helpers can test the library they serve.
 *
 * Rules it keeps:
 *  - every server listens on a Unix socket in its own mkdtemp directory (or,
 *    for the _tcp variants, on 127.0.0.1 and a free port), and the start call
 *    returns only once connect() succeeds: polled every 20 ms, 10 s at most;
 *  - every process is stopped by its own PID (SIGTERM, a bounded wait, then
 *    SIGKILL); every wait is bounded; nothing is ever killed by name;
 *  - a test that crashes leaks no server: children get PR_SET_PDEATHSIG
 *    (and nbdkit --exit-with-parent); nbd-server, which daemonizes, is
 *    watched by a small guardian process that stops it when the test dies.
 *    PR_SET_PDEATHSIG follows the thread that forked, so start servers from
 *    the main thread (or one that outlives them);
 *  - servers still running at exit() are stopped by an atexit handler, and
 *    the scratch directory is removed.
 *
 * Server output goes to the test's stderr, never into the TAP stream.
 * Errors are reported on stderr with the program's name; calls return -1 (or
 * NULL) with errno set; errno is ENOENT when the program is not installed, so
 * a test can skip.  Temporary files go under $LIBNBD_CORE_TEST_TMP (set by
 * tests/meson.build), else $TMPDIR, else /tmp.
 *
 * nbd-server 3.24 notes (measured): its -d ("do not fork") mode serves ONE
 * client and then exits, and without -d it always daemonizes.  So it runs
 * without -d, with -p PIDFILE; the daemon's PID comes from that file, and it
 * is stopped by that PID (SIGTERM makes it stop its per-client children too).
 * Being a daemon it is not our child: "gone" means no such process or a
 * zombie waiting for init (which can take about a second here).
 * nbd-server opens the exported file only when a client connects (the
 * helper checks the image exists before starting it).  Its NBD_OPT_INFO
 * reports size 0 (NBD_OPT_GO is right).  Each start connects once to see it
 * listening, so the server logs one aborted handshake on stderr: harmless.
 */
#ifndef GNBD_TESTS_SERVERS_H
#define GNBD_TESTS_SERVERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct server_node;

/* How long a start may wait for the server to listen, in milliseconds. */
#define SERVER_START_TIMEOUT_MS 10000

/* Filled in by a successful start; all zero (pid 0, strings NULL) after a
 * failed one and after server_stop.  The strings belong to the helpers and
 * stay valid until server_stop.
 */
struct test_server {
  pid_t pid;           /* the server process; 0 once stopped */
  char *dir;           /* private directory, removed by server_stop */
  char *sock;          /* Unix socket inside dir; NULL for the _tcp variants */
  char *uri;           /* URI of the default export (see server_uri) */
  int tcp_port;        /* port on 127.0.0.1 for the _tcp variants, else 0 */
  char *export_name;   /* the export uri names: "" (nbdkit), -x (qemu-nbd), section */
  const char *program; /* "nbdkit", "qemu-nbd" or "nbd-server", for messages */
  int status;          /* wait status once stopped (own children only), else -1 */

  struct server_node *node_; /* private to servers.c: owns the strings above */
};

/* nbdkit -f --exit-with-parent -U SOCK ARGS...
 * @args: the arguments after the socket options, NULL-terminated, e.g.
 *   {"memory", "size=1M", NULL}, {"-o", "memory", "1M", NULL} (oldstyle),
 *   {"--filter=error", "memory", "size=1M", "error-rate=10%", NULL}.
 * The URI names the default export "".
 */
int server_start_nbdkit (struct test_server *s, const char *const *args);
/* The same on 127.0.0.1 (-i 127.0.0.1 -p PORT, retried on a port clash). */
int server_start_nbdkit_tcp (struct test_server *s, const char *const *args);

/* qemu-nbd -t -k SOCK ARGS...  (-t: keep serving after the first client)
 * @args e.g. {"-f", "qcow2", "-x", "disk", path, NULL}; the URI names the
 * export given with -x / --export-name, else "".
 */
int server_start_qemu_nbd (struct test_server *s, const char *const *args);
/* The same on 127.0.0.1 (-b 127.0.0.1 -p PORT). */
int server_start_qemu_nbd_tcp (struct test_server *s, const char *const *args);

/* nbd-server with a generated config: [generic] unixsock=SOCK (or, with
 * .tcp, listenaddr=127.0.0.1 and a free port: TCP only), allowlist = true,
 * then one export section [EXPORT] exportname = IMAGE.
 */
struct nbd_server_config {
  const char *image;         /* file to serve; made absolute */
  const char *export_name;   /* the section name; NULL means "disk" */
  const char *generic_lines; /* extra "key = value\n" lines for [generic]
                                (e.g. certfile=, keyfile=, force_tls=), or NULL */
  const char *export_lines;  /* extra lines for the export section
                                (e.g. "readonly = true\n"), or NULL */
  bool tcp;                  /* listen on 127.0.0.1:free port instead */
};
int server_start_nbd_server_config (struct test_server *s, const struct nbd_server_config *c);
/* Shorthand: Unix socket, @extra_config_lines (or NULL) go to the export. */
int server_start_nbd_server (struct test_server *s, const char *image,
                             const char *export_name, const char *extra_config_lines);

/* Stop the server by its PID (SIGTERM, up to 5 s, SIGKILL, up to 5 s more),
 * remove its directory and free its strings.  Safe to call twice.  Returns 0
 * when the process is gone and the directory removed, else -1.
 */
int server_stop (struct test_server *s);

/* A URI for @export_name ("" for the default) on server @s: nbd+unix:///
 * EXPORT?socket=SOCK or nbd://127.0.0.1:PORT/EXPORT, percent-encoded.
 * The caller frees it.
 */
char *server_uri (const struct test_server *s, const char *export_name);

/* Whether @pid is a live process (not gone, not a zombie). */
bool server_pid_running (pid_t pid);

/* ---- Scratch files ---------------------------------------------------- */

/* This process's scratch directory (made on first use, removed at exit). */
const char *servers_scratch_dir (void);

/* Create a fresh image in the scratch directory and return its path (the
 * caller frees it; the file goes with the scratch directory).
 * @format: "raw" (a sparse file of @size bytes) or "qcow2" (qemu-img create).
 * @qemu_io_cmds: NULL, or qemu-io commands run on the image in order, e.g.
 *   {"write -P 0xab 0 64k", "write -z 1M 64k", NULL}: known data, the rest holes.
 */
char *image_create (const char *format, uint64_t size, const char *const *qemu_io_cmds);
char *image_create_raw (uint64_t size);
char *image_create_qcow2 (uint64_t size);

/* Run a program (searched in PATH) to completion, output to stderr, killing
 * it after @timeout_s seconds.  Returns its exit status (0-255), or -1 if it
 * could not run, was killed by a signal or timed out.
 */
int servers_run (const char *const *argv, unsigned timeout_s);

/* nbdkit's pause filter (--filter=pause ... pause-control=PATH, with PATH
 * e.g. in servers_scratch_dir ()): send @cmd, 'p' to pause or 'r' to
 * resume, to its control socket @path, and wait (bounded, 60 s) for the
 * filter's acknowledgement: 'P' comes once the requests already in progress
 * are done, and every later one waits until 'r'.  A server the test holds
 * on an event, rather than on a delay.  Returns 0, or -1 with errno set.
 */
int server_pause_control (const char *path, char cmd);

/* nbdkit's log filter (--filter=log logfile=PATH): how many lines of @path
 * contain one of @words (NULL-terminated); 0 while there is no file. */
int server_log_count (const char *path, const char *const *words);

/* Wait until server_log_count (@path, @words) reaches @n, waking on each
 * write to the file (inotify on its directory), not on a clock; at most
 * @timeout_s seconds, a bound for a broken server.  Returns the count. */
int server_log_wait (const char *path, const char *const *words, int n, unsigned timeout_s);

/* The log filter's request lines: reads and writes the server has taken. */
extern const char *const server_log_requests[];

#endif /* GNBD_TESTS_SERVERS_H */
