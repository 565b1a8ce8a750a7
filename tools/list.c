/* list.c: `gnbd list`: the exports a server offers, with their
 * descriptions, as text (one export a line) or JSON.
 */
#include "gnbd-tool.h"

static const char usage[] =
  "Usage: gnbd list [--json] NBD\n"
  "\n"
  "List the exports of a server, with their descriptions: one a line, the\n"
  "name quoted as a JSON string, then the description if the server gave one.\n"
  "NBD is an NBD URI (its export name is ignored) or [ CMD ARGS ... ].\n"
  "\n"
  "Options:\n"
  "      --json           JSON output: {\"exports\": [{\"export-name\": ...,\n"
  "                       \"description\": ...}, ...]}\n"
  "  -h, --help           show this help\n"
  "\n"
  "Exit status: 0 done, 1 failure, 3 bad command line.\n";

enum { OPT_JSON = 1, OPT_HELP };

static const GtOption options[] = {
  { "json", 0, GT_ARG_NONE, OPT_JSON },
  { "help", 'h', GT_ARG_NONE, OPT_HELP },
  { NULL },
};

static void
print_text (GPtrArray *exports)
{
  for (guint i = 0; i < exports->len; i++) {
    const GnbdExport *e = exports->pdata[i];
    const char *d = gnbd_export_get_description (e);

    gt_json_string (stdout, gnbd_export_get_name (e));
    if (d && *d)
      printf ("  %s", d);
    putchar ('\n');
  }
}

static void
print_json (GPtrArray *exports)
{
  printf ("{\n  \"exports\": [");
  for (guint i = 0; i < exports->len; i++) {
    const GnbdExport *e = exports->pdata[i];
    const char *d = gnbd_export_get_description (e);

    printf ("%s\n    { \"export-name\": ", i ? "," : "");
    gt_json_string (stdout, gnbd_export_get_name (e));
    if (d && *d) {
      printf (", \"description\": ");
      gt_json_string (stdout, d);
    }
    printf (" }");
  }
  printf ("%s]\n}\n", exports->len ? "\n  " : "");
}

int
gt_list_main (int argc, char **argv)
{
  g_autoptr (GPtrArray) exports = NULL;
  g_autoptr (GError) error = NULL;
  gboolean json = FALSE;
  const char *value;
  GtSide side;
  GtArgs a;
  int opt, code = GT_EXIT_USAGE;

  gt_prog = "gnbd list";
  if (!gt_args_init (&a, argc, argv, 1))
    return GT_EXIT_USAGE;
  while ((opt = gt_next_option (&a, options, &value)) > 0) {
    switch (opt) {
    case OPT_JSON: json = TRUE; break;
    case OPT_HELP:
      fputs (usage, stdout);
      code = gt_finish_output (GT_EXIT_OK);
      goto out;
    }
  }
  if (opt < 0)
    goto out;
  if (a.words->len != 1) {
    gt_usage_error ("give one NBD URI or [ CMD ARGS ... ]");
    goto out;
  }
  side = gt_side_from_word (a.words->pdata[0]);
  if (!gt_side_is_nbd (&side))
    goto out;

  exports = gt_list_exports (&side, NULL, &error);
  if (!exports) {
    gt_error ("%s: %s", side.text, error->message);
    code = GT_EXIT_FAILED;
    goto out;
  }
  if (json)
    print_json (exports);
  else
    print_text (exports);
  code = gt_finish_output (GT_EXIT_OK);

 out:
  gt_args_clear (&a);
  return code;
}
