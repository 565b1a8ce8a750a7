/* map.c: `gnbd map`: the extent map of an export from block status
 * (base:allocation unless --context says otherwise), extent by extent or
 * as totals per type, as text or JSON, in the formats of nbdinfo --map
 * (adjacent extents of one type are merged, as nbdinfo does).
 *
 * The map is asked for in chunks of at most 2 GiB and written as it comes,
 * so an export of any size maps in constant memory.  Extents are clipped
 * to the range asked for, and a reply that does not advance is an error:
 * a lying server cannot make the tool loop or print past the end.
 */
#include <stdlib.h>
#include <string.h>

#include "gnbd-tool.h"

static const char usage[] =
  "Usage: gnbd map [--context CTX] [--totals] [--json] NBD\n"
  "\n"
  "Show which parts of an export hold data and which are holes or zeroes,\n"
  "from the server's block status.  Text columns: offset, length, type (the\n"
  "raw flags), description.  With --totals: bytes, percent of the export,\n"
  "type, description, one line per type.\n"
  "NBD is an NBD URI or [ CMD ARGS ... ].\n"
  "\n"
  "Options:\n"
  "      --context CTX    the metadata context to map (default\n"
  "                       base:allocation; e.g. qemu:allocation-depth,\n"
  "                       qemu:dirty-bitmap:NAME)\n"
  "      --totals         bytes of each type instead of the extents\n"
  "      --json           JSON output (the format of nbdinfo --map --json)\n"
  "  -h, --help           show this help\n"
  "\n"
  "Exit status: 0 done, 1 failure, 3 bad command line.\n";

enum { OPT_CONTEXT = 1, OPT_TOTALS, OPT_JSON, OPT_HELP };

static const GtOption options[] = {
  { "context", 0, GT_ARG_REQUIRED, OPT_CONTEXT },
  { "totals", 0, GT_ARG_NONE, OPT_TOTALS },
  { "json", 0, GT_ARG_NONE, OPT_JSON },
  { "help", 'h', GT_ARG_NONE, OPT_HELP },
  { NULL },
};

/* A power of two: a multiple of any block size the server may require. */
#define CHUNK ((guint64) 1 << 31)

typedef struct {
  const char *context;
  gboolean json, totals;
  guint64 size;
  guint n_printed;
  /* The run being merged. */
  gboolean have_run;
  guint64 run_offset, run_length;
  guint32 run_type;
  /* --totals: bytes per type. */
  GHashTable *by_type;
} Map;

/* What a type means in the well-known contexts; NULL elsewhere. */
static char *
describe (const char *context, guint32 type)
{
  if (strcmp (context, "base:allocation") == 0) {
    static const char *const names[] = { "data", "hole", "zero", "hole,zero" };

    if (type < G_N_ELEMENTS (names))
      return g_strdup (names[type]);
    return g_strdup_printf ("%s,unknown 0x%x", names[type & 3], type & ~3u);
  }
  if (strcmp (context, "qemu:allocation-depth") == 0) {
    if (type == 0)
      return g_strdup ("absent");
    if (type == 1)
      return g_strdup ("local");
    return g_strdup_printf ("backing depth %u", type);
  }
  if (g_str_has_prefix (context, "qemu:dirty-bitmap:"))
    return g_strdup (type == 0 ? "clean" : type == 1 ? "dirty" : "unknown");
  return NULL;
}

static void
print_extent (Map *m, guint64 offset, guint64 length, guint32 type)
{
  g_autofree char *d = describe (m->context, type);

  if (m->json) {
    printf ("%s\n{ \"offset\": %" G_GUINT64_FORMAT ", \"length\": %" G_GUINT64_FORMAT
            ", \"type\": %u", m->n_printed ? "," : "[", offset, length, type);
    if (d) {
      printf (", \"description\": ");
      gt_json_string (stdout, d);
    }
    printf (" }");
  }
  else
    printf ("%10" G_GUINT64_FORMAT "  %10" G_GUINT64_FORMAT "  %3u%s%s\n", offset, length, type,
            d ? "  " : "", d ? d : "");
  m->n_printed++;
}

static void
flush_run (Map *m)
{
  if (!m->have_run)
    return;
  if (m->totals) {
    guint64 *total = g_hash_table_lookup (m->by_type, GUINT_TO_POINTER (m->run_type));

    if (!total) {
      total = g_new0 (guint64, 1);
      g_hash_table_insert (m->by_type, GUINT_TO_POINTER (m->run_type), total);
    }
    *total += m->run_length;
  }
  else
    print_extent (m, m->run_offset, m->run_length, m->run_type);
  m->have_run = FALSE;
}

static void
add_extent (Map *m, guint64 offset, guint64 length, guint32 type)
{
  if (m->have_run && m->run_type == type) {
    m->run_length += length;
    return;
  }
  flush_run (m);
  m->have_run = TRUE;
  m->run_offset = offset;
  m->run_length = length;
  m->run_type = type;
}

static int
compare_types (const void *a, const void *b)
{
  guint x = GPOINTER_TO_UINT (*(const gpointer *) a), y = GPOINTER_TO_UINT (*(const gpointer *) b);

  return x < y ? -1 : x > y;
}

static void
print_totals (Map *m)
{
  guint n;
  g_autofree gpointer *types = g_hash_table_get_keys_as_array (m->by_type, &n);

  qsort (types, n, sizeof *types, compare_types);
  for (guint i = 0; i < n; i++) {
    guint32 type = GPOINTER_TO_UINT (types[i]);
    guint64 bytes = *(guint64 *) g_hash_table_lookup (m->by_type, types[i]);
    double percent = m->size ? 100.0 * bytes / m->size : 0;
    g_autofree char *d = describe (m->context, type);

    if (m->json) {
      printf ("%s\n{ \"size\": %" G_GUINT64_FORMAT ", \"percent\": %g, \"type\": %u",
              i ? "," : "[", bytes, percent, type);
      if (d) {
        printf (", \"description\": ");
        gt_json_string (stdout, d);
      }
      printf (" }");
    }
    else
      printf ("%10" G_GUINT64_FORMAT " %5.1f%% %3u%s%s\n", bytes, percent, type,
              d ? " " : "", d ? d : "");
  }
  m->n_printed = n;
}

/* Map the whole export; FALSE with @error set on failure. */
static gboolean
map_export (Map *m, GnbdClient *c, GError **error)
{
  guint64 offset = 0;

  while (offset < m->size) {
    guint64 count = MIN (m->size - offset, CHUNK), end = offset + count;
    g_autoptr (GPtrArray) extents = gnbd_client_block_status (c, offset, count, m->context, 0,
                                                              NULL, error);
    guint64 start = offset;

    if (!extents) {
      /* Refused before anything was sent: the context was not agreed. */
      if (offset == 0 && g_error_matches (*error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED)) {
        g_clear_error (error);
        g_set_error (error, GNBD_ERROR, GNBD_ERROR_NOT_SUPPORTED,
                     "the server does not offer metadata context \"%s\"", m->context);
      }
      else
        g_prefix_error (error, "block status at offset %" G_GUINT64_FORMAT ": ", offset);
      return FALSE;
    }
    for (guint i = 0; i < extents->len && offset < end; i++) {
      const GnbdExtent *e = extents->pdata[i];
      guint64 e_off = gnbd_extent_get_offset (e), e_len = gnbd_extent_get_length (e);

      if (e_off != offset || e_len == 0)
        break;
      e_len = MIN (e_len, end - offset);
      add_extent (m, offset, e_len, gnbd_extent_get_flags (e));
      offset += e_len;
    }
    if (offset == start) {
      g_set_error (error, GNBD_ERROR, GNBD_ERROR_PROTOCOL,
                   "The server's block status reply at offset %" G_GUINT64_FORMAT
                   " describes no bytes there", offset);
      return FALSE;
    }
  }
  flush_run (m);
  return TRUE;
}

int
gt_map_main (int argc, char **argv)
{
  g_autoptr (GnbdClient) client = NULL;
  g_autoptr (GError) error = NULL;
  Map m = { .context = "base:allocation" };
  const char *value, *contexts[2] = { NULL, NULL };
  GtSide side;
  GtArgs a;
  int opt, code = GT_EXIT_USAGE;

  gt_prog = "gnbd map";
  if (!gt_args_init (&a, argc, argv, 1))
    return GT_EXIT_USAGE;
  while ((opt = gt_next_option (&a, options, &value)) > 0) {
    switch (opt) {
    case OPT_CONTEXT: m.context = value; break;
    case OPT_TOTALS: m.totals = TRUE; break;
    case OPT_JSON: m.json = TRUE; break;
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

  code = GT_EXIT_FAILED;
  contexts[0] = m.context;
  if (!(client = gt_connect (&side, contexts, NULL, &error))) {
    gt_error ("%s: %s", side.text, error->message);
    goto out;
  }
  g_object_get (client, "size", &m.size, NULL);
  m.by_type = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  if (!map_export (&m, client, &error))
    gt_error ("%s: %s", side.text, error->message);
  else {
    if (m.totals)
      print_totals (&m);
    if (m.json)
      printf ("%s]\n", m.n_printed ? "\n" : "[");
    code = gt_finish_output (GT_EXIT_OK);
  }
  g_hash_table_unref (m.by_type);
  gnbd_client_shutdown (client, NULL, NULL);

 out:
  gt_args_clear (&a);
  return code;
}
