/* gnbd-tool.h: what the files of the `gnbd` command share.
 *
 * Owns the exit codes, the command line's building blocks (options, the
 * `[ CMD ARGS ... ]` groups, sizes with suffixes), what one side of a
 * command is (an NBD URI, a server to run, a file, stdin/stdout, null:),
 * connecting a GnbdClient to it, and the small JSON writer.  The tool uses
 * gnbd's public header only: it is a user of the library like any other.
 */
#pragma once

#include <stdio.h>

#include <gnbd/gnbd.h>

/* ---- Exit codes (documented in gnbd.1, EXIT STATUS) ----------------------- */

/* And 128 + the signal when copy is interrupted (SIGINT 130, SIGTERM 143). */
enum {
  GT_EXIT_OK = 0,     /* done; or --can/--is: true */
  GT_EXIT_FAILED = 1, /* the operation failed (connection, server, I/O) */
  GT_EXIT_FALSE = 2,  /* --can/--is: false (as nbdinfo) */
  GT_EXIT_USAGE = 3,  /* bad command line */
};

/* The name messages start with: "gnbd" or "gnbd copy". */
extern const char *gt_prog;

/* "gnbd copy: MESSAGE\n" on stderr. */
void gt_error (const char *fmt, ...) G_GNUC_PRINTF (1, 2);
/* The same, then "Try 'gnbd copy --help'."; returns GT_EXIT_USAGE. */
int gt_usage_error (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

/* ---- Options --------------------------------------------------------------- */

typedef enum {
  GT_ARG_NONE,     /* --flag */
  GT_ARG_REQUIRED, /* --opt VALUE, --opt=VALUE, -o VALUE, -oVALUE */
  GT_ARG_OPTIONAL, /* --opt or --opt=VALUE (never the next word) */
} GtArgKind;

typedef struct {
  const char *name; /* long name without "--" */
  char short_name;  /* 0: none */
  GtArgKind arg;
  int id;           /* returned by gt_next_option */
} GtOption;

/* A command line being read: options, then words.  `[ ... ]` groups are
 * whole words, wherever they stand, so a server's own options never look
 * like ours and "--" is not needed before them (it is accepted). */
typedef struct {
  GPtrArray *items;    /* GtWord*: every word and group, owned */
  GPtrArray *words;    /* GtWord*: the operands among them, in order */
  guint index;         /* the next item to read */
  gboolean options_done;
  const char *cluster; /* the rest of "-pv" after 'p' */
} GtArgs;

typedef struct {
  char *text;  /* the word as given, or "[ CMD ARGS ... ]" for a group */
  char **argv; /* the group's command, NULL-terminated; NULL for a word */
} GtWord;

/* Reads argv[first..argc-1]; returns FALSE (message printed) if a group is
 * not closed or empty. */
gboolean gt_args_init (GtArgs *a, int argc, char **argv, int first);
void gt_args_clear (GtArgs *a);

/* The next option: its id and *value (or NULL), 0 at the end of the options
 * (operands are collected in a->words), or -1 after printing a usage error. */
int gt_next_option (GtArgs *a, const GtOption *options, const char **value);

/* Sizes: a decimal number with an optional suffix K, M, G, T (powers of
 * 1024, either case, "KiB"/"KB"/"k" alike).  FALSE on anything else or on
 * overflow. */
gboolean gt_parse_size (const char *s, guint64 *out);
/* A decimal count in [min, max]. */
gboolean gt_parse_count (const char *s, guint64 min, guint64 max, guint64 *out);
/* "1.5 GiB", "512 KiB", "17 bytes" (the caller frees it). */
char *gt_human_size (guint64 bytes);

/* ---- Sides ----------------------------------------------------------------- */

typedef enum {
  GT_SIDE_URI,     /* nbd://, nbd+unix://, nbds://, ... */
  GT_SIDE_COMMAND, /* [ CMD ARGS ... ]: a server run with socket activation */
  GT_SIDE_FILE,    /* a local file or block device */
  GT_SIDE_STDIO,   /* "-": stdin (source) or stdout (destination) */
  GT_SIDE_NULL,    /* "null:": discard (destination only) */
} GtSideKind;

typedef struct {
  GtSideKind kind;
  const char *text;        /* as given, for messages */
  const char *const *argv; /* GT_SIDE_COMMAND */
} GtSide;

/* What a word names. */
GtSide gt_side_from_word (const GtWord *w);
/* Whether a word is an NBD URI or a server to run (what info, list and map
 * take); prints a usage error when not. */
gboolean gt_side_is_nbd (const GtSide *side);

/* A client to @side (URI or command) asking for @meta_contexts (NULL:
 * base:allocation), connected.  NULL with @error set on failure. */
GnbdClient *gt_connect (const GtSide *side, const char *const *meta_contexts,
                        GCancellable *cancellable, GError **error);

/* The exports of the server @side names.  A command is run with socket
 * activation by the tool itself (see activate.c) for the listing. */
GPtrArray *gt_list_exports (const GtSide *side, GCancellable *cancellable, GError **error);

/* ---- JSON ------------------------------------------------------------------ */

/* @s as a JSON string, quotes included (invalid UTF-8 is replaced). */
void gt_json_string (FILE *f, const char *s);

/* ---- Output ---------------------------------------------------------------- */

/* Flush stdout; on a write error print it and return GT_EXIT_FAILED. */
int gt_finish_output (int code);

/* ---- Subcommands ------------------------------------------------------------ */

/* Each gets argv from its own name on (argv[0] = "info") and returns the
 * exit code. */
int gt_info_main (int argc, char **argv);
int gt_list_main (int argc, char **argv);
int gt_map_main (int argc, char **argv);
int gt_copy_main (int argc, char **argv);
