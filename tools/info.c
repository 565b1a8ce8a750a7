/* info.c: `gnbd info`: what a server says about an export, as text, as
 * JSON (nbdinfo's keys, so scripts written for it keep working), its size
 * alone, or one flag answered by the exit status (--can, --is).
 *
 * The metadata contexts shown are those the server agreed to among the
 * ones gnbd asks for (base:allocation, qemu:allocation-depth and each
 * --context): gnbd does not list a server's contexts, so each is asked for
 * and then tried.
 */
#include <string.h>

#include "gnbd-tool.h"

static const char usage[] =
  "Usage: gnbd info [--json] [--context CTX]... NBD\n"
  "       gnbd info --size NBD\n"
  "       gnbd info --can FLAG NBD | --is FLAG NBD\n"
  "\n"
  "Show what the server says about an export: protocol, TLS, size, every\n"
  "can_* flag, block sizes, metadata contexts, description.\n"
  "NBD is an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,\n"
  "nbds://... for TLS) or a server to run for the duration: [ CMD ARGS ... ]\n"
  "(nbdkit, qemu-nbd: systemd socket activation).\n"
  "\n"
  "Options:\n"
  "      --json           JSON output (the keys of nbdinfo --json; see gnbd(1))\n"
  "      --size           print the size in bytes, nothing else\n"
  "      --can FLAG       exit 0 if the export can FLAG, 2 if not: cache, connect,\n"
  "                       df, fast-zero, flush, fua, multi-conn, read,\n"
  "                       structured-reply, trim, write, zero\n"
  "      --is FLAG        exit 0 if the export is FLAG, 2 if not: read-only,\n"
  "                       rotational, tls\n"
  "      --context CTX    also ask for metadata context CTX (repeatable)\n"
  "  -h, --help           show this help\n"
  "\n"
  "Exit status: 0 done (or the flag is true), 1 failure, 2 the flag is false,\n"
  "3 bad command line.\n";

enum { OPT_JSON = 1, OPT_SIZE, OPT_CAN, OPT_IS, OPT_CONTEXT, OPT_HELP };

static const GtOption options[] = {
  { "json", 0, GT_ARG_NONE, OPT_JSON },
  { "size", 0, GT_ARG_NONE, OPT_SIZE },
  { "can", 0, GT_ARG_REQUIRED, OPT_CAN },
  { "is", 0, GT_ARG_REQUIRED, OPT_IS },
  { "context", 0, GT_ARG_REQUIRED, OPT_CONTEXT },
  { "help", 'h', GT_ARG_NONE, OPT_HELP },
  { NULL },
};

/* --can and --is: a flag's name and the property holding it ("connect"
 * and "read" are true of any connected export). */
typedef struct {
  const char *name;
  const char *property; /* NULL: true once connected */
  gboolean negate;      /* "write" is !read-only */
} Flag;

static const Flag can_flags[] = {
  { "cache", "can-cache" },
  { "connect", NULL },
  { "df", "can-df" },
  { "fast-zero", "can-fast-zero" },
  { "flush", "can-flush" },
  { "fua", "can-fua" },
  { "multi-conn", "can-multi-conn" },
  { "read", NULL },
  { "structured-reply", "structured-replies-negotiated" },
  { "trim", "can-trim" },
  { "write", "read-only", TRUE },
  { "zero", "can-zero" },
  { NULL },
};

static const Flag is_flags[] = {
  { "read-only", "read-only" },
  { "rotational", "is-rotational" },
  { "tls", "tls-negotiated" },
  { NULL },
};

static const Flag *
find_flag (const Flag *table, const char *name)
{
  for (const Flag *f = table; f->name; f++)
    if (strcmp (f->name, name) == 0)
      return f;
  return NULL;
}

static gboolean
get_bool (GnbdClient *c, const char *property)
{
  gboolean v;

  g_object_get (c, property, &v, NULL);
  return v;
}

static guint
get_uint (GnbdClient *c, const char *property)
{
  guint v;

  g_object_get (c, property, &v, NULL);
  return v;
}

/* The export a URI names (its path without the leading "/"); "" for a
 * command, which serves its default export. */
static char *
export_name_of (const GtSide *side)
{
  g_autoptr (GUri) uri = NULL;
  const char *path;

  if (side->kind != GT_SIDE_URI ||
      !(uri = g_uri_parse (side->text, G_URI_FLAGS_ENCODED_PATH, NULL)))
    return g_strdup ("");
  path = g_uri_get_path (uri);
  if (*path == '/')
    path++;
  return g_uri_unescape_string (path, NULL);
}

/* The contexts among @asked that the server agreed to (see the file
 * comment): a block status request for one it refused fails at once with
 * GNBD_ERROR_NOT_SUPPORTED, before anything is sent. */
static GPtrArray *
agreed_contexts (GnbdClient *c, const char *const *asked)
{
  GPtrArray *agreed = g_ptr_array_new ();
  guint64 size;
  guint count;

  g_object_get (c, "size", &size, NULL);
  count = MAX (get_uint (c, "block-size-minimum"), 1);
  if (size > 0 && count > size)
    count = size;
  if (!get_bool (c, "structured-replies-negotiated"))
    return agreed;
  for (const char *const *a = asked; *a; a++) {
    g_autoptr (GError) error = NULL;
    GPtrArray *extents = gnbd_client_block_status (c, 0, count, *a, 0, NULL, &error);

    if (extents)
      g_ptr_array_unref (extents);
    if (!g_error_matches (error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED))
      g_ptr_array_add (agreed, (gpointer) *a);
  }
  return agreed;
}

static const char *
yes_no (gboolean b)
{
  return b ? "yes" : "no";
}

static const char *
true_false (gboolean b)
{
  return b ? "true" : "false";
}

/* The flags in the order of nbdinfo's output. */
static const struct { const char *property, *key, *label; } facts[] = {
  { "is-rotational", "is_rotational", "rotational:" },
  { "read-only", "is_read_only", "read-only:" },
  { "can-cache", "can_cache", "can cache:" },
  { "can-df", "can_df", "can df:" },
  { "can-fast-zero", "can_fast_zero", "can fast-zero:" },
  { "can-flush", "can_flush", "can flush:" },
  { "can-fua", "can_fua", "can fua:" },
  { "can-multi-conn", "can_multi_conn", "can multi-conn:" },
  { "can-trim", "can_trim", "can trim:" },
  { "can-zero", "can_zero", "can zero:" },
};

static const struct { const char *property, *key, *label; } block_sizes[] = {
  { "block-size-minimum", "block_size_minimum", "block size minimum:" },
  { "block-size-preferred", "block_size_preferred", "block size preferred:" },
  { "block-size-maximum", "block_size_maximum", "block size maximum:" },
};

static void
print_text (GnbdClient *c, const GtSide *side, GPtrArray *contexts)
{
  g_autofree char *protocol = NULL, *description = NULL, *canonical = NULL, *human = NULL;
  g_autofree char *name = export_name_of (side);
  guint64 size;

  g_object_get (c, "protocol", &protocol, "export-description", &description,
                "canonical-name", &canonical, "size", &size, NULL);
  human = gt_human_size (size);
  printf ("%-22s %s\n", "server:", side->text);
  printf ("%-22s ", "export:");
  gt_json_string (stdout, name);
  putchar ('\n');
  /* Worth a line only when it says something new. */
  if (canonical && strcmp (canonical, name) != 0) {
    printf ("%-22s ", "canonical name:");
    gt_json_string (stdout, canonical);
    putchar ('\n');
  }
  if (description)
    printf ("%-22s %s\n", "description:", description);
  printf ("%-22s %" G_GUINT64_FORMAT " (%s)\n", "size:", size, human);
  printf ("%-22s %s\n", "protocol:", protocol ? protocol : "unknown");
  printf ("%-22s %s\n", "TLS:", yes_no (get_bool (c, "tls-negotiated")));
  printf ("%-22s %s\n", "structured replies:",
          yes_no (get_bool (c, "structured-replies-negotiated")));
  printf ("%-22s", "meta contexts:");
  if (contexts->len == 0)
    printf (" none");
  for (guint i = 0; i < contexts->len; i++)
    printf ("%s %s", i ? "," : "", (const char *) contexts->pdata[i]);
  putchar ('\n');
  for (gsize i = 0; i < G_N_ELEMENTS (facts); i++)
    printf ("%-22s %s\n", facts[i].label, yes_no (get_bool (c, facts[i].property)));
  for (gsize i = 0; i < G_N_ELEMENTS (block_sizes); i++) {
    guint v = get_uint (c, block_sizes[i].property);

    /* 0: the server did not say. */
    if (v)
      printf ("%-22s %u\n", block_sizes[i].label, v);
  }
}

static void
print_json (GnbdClient *c, const GtSide *side, GPtrArray *contexts)
{
  g_autofree char *protocol = NULL, *description = NULL, *canonical = NULL;
  g_autofree char *name = export_name_of (side);
  guint64 size;

  g_object_get (c, "protocol", &protocol, "export-description", &description,
                "canonical-name", &canonical, "size", &size, NULL);
  printf ("{\n  \"protocol\": ");
  gt_json_string (stdout, protocol ? protocol : "");
  printf (",\n  \"TLS\": %s,\n  \"structured\": %s,\n  \"exports\": [\n    {\n",
          true_false (get_bool (c, "tls-negotiated")),
          true_false (get_bool (c, "structured-replies-negotiated")));
  printf ("      \"export-name\": ");
  gt_json_string (stdout, name);
  if (canonical) {
    printf (",\n      \"canonical-name\": ");
    gt_json_string (stdout, canonical);
  }
  if (description) {
    printf (",\n      \"description\": ");
    gt_json_string (stdout, description);
  }
  printf (",\n      \"contexts\": [");
  for (guint i = 0; i < contexts->len; i++) {
    printf ("%s", i ? ", " : "");
    gt_json_string (stdout, contexts->pdata[i]);
  }
  printf ("]");
  for (gsize i = 0; i < G_N_ELEMENTS (facts); i++)
    printf (",\n      \"%s\": %s", facts[i].key, true_false (get_bool (c, facts[i].property)));
  for (gsize i = 0; i < G_N_ELEMENTS (block_sizes); i++) {
    guint v = get_uint (c, block_sizes[i].property);

    if (v)
      printf (",\n      \"%s\": %u", block_sizes[i].key, v);
  }
  printf (",\n      \"export-size\": %" G_GUINT64_FORMAT "\n    }\n  ]\n}\n", size);
}

int
gt_info_main (int argc, char **argv)
{
  static const char *const default_contexts[] = { "base:allocation", "qemu:allocation-depth" };
  g_autoptr (GPtrArray) asked = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) contexts = NULL;
  g_autoptr (GnbdClient) client = NULL;
  g_autoptr (GError) error = NULL;
  gboolean json = FALSE, size_only = FALSE;
  const Flag *flag = NULL;
  const char *value;
  GtSide side;
  GtArgs a;
  int opt, code = GT_EXIT_USAGE;

  gt_prog = "gnbd info";
  for (gsize i = 0; i < G_N_ELEMENTS (default_contexts); i++)
    g_ptr_array_add (asked, g_strdup (default_contexts[i]));
  if (!gt_args_init (&a, argc, argv, 1))
    return GT_EXIT_USAGE;
  while ((opt = gt_next_option (&a, options, &value)) > 0) {
    switch (opt) {
    case OPT_JSON: json = TRUE; break;
    case OPT_SIZE: size_only = TRUE; break;
    case OPT_CAN:
    case OPT_IS:
      flag = find_flag (opt == OPT_CAN ? can_flags : is_flags, value);
      if (!flag) {
        gt_usage_error ("unknown flag '%s' for --%s (see --help)", value,
                        opt == OPT_CAN ? "can" : "is");
        goto out;
      }
      break;
    case OPT_CONTEXT:
      if (!g_ptr_array_find_with_equal_func (asked, value, g_str_equal, NULL))
        g_ptr_array_add (asked, g_strdup (value));
      break;
    case OPT_HELP:
      fputs (usage, stdout);
      code = gt_finish_output (GT_EXIT_OK);
      goto out;
    }
  }
  if (opt < 0)
    goto out;
  if (a.words->len != 1) {
    gt_usage_error (a.words->len ? "one NBD URI or [ CMD ARGS ... ], not %u operands"
                                 : "which server? Give an NBD URI or [ CMD ARGS ... ]",
                    a.words->len);
    goto out;
  }
  if ((size_only ? 1 : 0) + (flag ? 1 : 0) > 1 || (json && flag)) {
    gt_usage_error ("--size, --can and --is go alone");
    goto out;
  }
  side = gt_side_from_word (a.words->pdata[0]);
  if (!gt_side_is_nbd (&side))
    goto out;

  g_ptr_array_add (asked, NULL);
  client = gt_connect (&side, (const char *const *) asked->pdata, NULL, &error);
  g_ptr_array_remove_index (asked, asked->len - 1);
  if (!client) {
    gt_error ("%s: %s", side.text, error->message);
    /* --can connect: not connecting is the answer, not a failure. */
    code = flag && strcmp (flag->name, "connect") == 0 ? GT_EXIT_FALSE : GT_EXIT_FAILED;
    goto out;
  }

  if (flag) {
    gboolean v = !flag->property || get_bool (client, flag->property);

    code = v != flag->negate ? GT_EXIT_OK : GT_EXIT_FALSE;
  }
  else if (size_only) {
    guint64 size;

    g_object_get (client, "size", &size, NULL);
    printf ("%" G_GUINT64_FORMAT "\n", size);
    code = gt_finish_output (GT_EXIT_OK);
  }
  else {
    g_ptr_array_add (asked, NULL);
    contexts = agreed_contexts (client, (const char *const *) asked->pdata);
    g_ptr_array_remove_index (asked, asked->len - 1);
    if (json)
      print_json (client, &side, contexts);
    else
      print_text (client, &side, contexts);
    code = gt_finish_output (GT_EXIT_OK);
  }
  gnbd_client_shutdown (client, NULL, NULL);

 out:
  gt_args_clear (&a);
  return code;
}
