/* args.c: reading the command line: options (long and short, GNU style,
 * before or after the operands), `[ CMD ARGS ... ]` groups as single
 * operands, sizes with suffixes, counts, and the messages of a bad command
 * line.  Never connects to anything.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gnbd-tool.h"

const char *gt_prog = "gnbd";

static void G_GNUC_PRINTF (1, 0)
vmessage (const char *fmt, va_list ap)
{
  fprintf (stderr, "%s: ", gt_prog);
  vfprintf (stderr, fmt, ap);
  fputc ('\n', stderr);
}

void
gt_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vmessage (fmt, ap);
  va_end (ap);
}

int
gt_usage_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vmessage (fmt, ap);
  va_end (ap);
  fprintf (stderr, "Try '%s --help'.\n", gt_prog);
  return GT_EXIT_USAGE;
}

/* ---- Words and groups ------------------------------------------------------ */

static void
word_free (gpointer p)
{
  GtWord *w = p;

  g_free (w->text);
  g_strfreev (w->argv);
  g_free (w);
}

/* The group starting at argv[*i] ("["), up to its matching "]"; nested
 * groups stay inside (a server's command may itself take one). */
static GtWord *
read_group (int argc, char **argv, int *i)
{
  GPtrArray *cmd = g_ptr_array_new_with_free_func (g_free);
  GString *text = g_string_new ("[");
  int depth = 1;
  GtWord *w;

  for ((*i)++; *i < argc; (*i)++) {
    if (strcmp (argv[*i], "[") == 0)
      depth++;
    else if (strcmp (argv[*i], "]") == 0 && --depth == 0)
      break;
    g_ptr_array_add (cmd, g_strdup (argv[*i]));
    g_string_append_printf (text, " %s", argv[*i]);
  }
  if (depth != 0 || cmd->len == 0) {
    if (depth != 0)
      gt_usage_error ("'[' without its ']': a server command is '[ CMD ARGS ... ]', "
                      "with spaces around the brackets");
    else
      gt_usage_error ("'[ ]' names no server command");
    g_ptr_array_free (cmd, TRUE);
    g_string_free (text, TRUE);
    return NULL;
  }
  g_ptr_array_add (cmd, NULL);
  g_string_append (text, " ]");
  w = g_new0 (GtWord, 1);
  w->argv = (char **) g_ptr_array_free (cmd, FALSE);
  w->text = g_string_free (text, FALSE);
  return w;
}

gboolean
gt_args_init (GtArgs *a, int argc, char **argv, int first)
{
  GPtrArray *items = g_ptr_array_new_with_free_func (word_free);

  memset (a, 0, sizeof *a);
  for (int i = first; i < argc; i++) {
    GtWord *w;

    if (strcmp (argv[i], "[") == 0) {
      if (!(w = read_group (argc, argv, &i))) {
        g_ptr_array_free (items, TRUE);
        return FALSE;
      }
    }
    else {
      w = g_new0 (GtWord, 1);
      w->text = g_strdup (argv[i]);
    }
    g_ptr_array_add (items, w);
  }
  a->items = items;
  a->words = g_ptr_array_new ();
  return TRUE;
}

void
gt_args_clear (GtArgs *a)
{
  if (a->words)
    g_ptr_array_free (a->words, TRUE);
  if (a->items)
    g_ptr_array_free (a->items, TRUE);
  memset (a, 0, sizeof *a);
}

/* ---- Options --------------------------------------------------------------- */

static const GtOption *
find_long (const GtOption *options, const char *name, size_t len)
{
  for (const GtOption *o = options; o->name; o++)
    if (strlen (o->name) == len && strncmp (o->name, name, len) == 0)
      return o;
  return NULL;
}

static const GtOption *
find_short (const GtOption *options, char c)
{
  for (const GtOption *o = options; o->name; o++)
    if (o->short_name == c)
      return o;
  return NULL;
}

/* The next item as an option's value, or NULL after a usage error. */
static const char *
take_value (GtArgs *a, const char *shown)
{
  GtWord *w;

  if (a->index >= a->items->len) {
    gt_usage_error ("option '%s' needs a value", shown);
    return NULL;
  }
  w = g_ptr_array_index (a->items, a->index);
  if (w->argv) {
    gt_usage_error ("option '%s' needs a value, not a server command", shown);
    return NULL;
  }
  a->index++;
  return w->text;
}

static int
short_option (GtArgs *a, const GtOption *options, const char **value)
{
  char c = *a->cluster++;
  const GtOption *o = find_short (options, c);
  char shown[3] = { '-', c, 0 };

  if (!o) {
    a->cluster = NULL;
    gt_usage_error ("unknown option '-%c'", c);
    return -1;
  }
  if (o->arg == GT_ARG_REQUIRED) {
    if (*a->cluster)
      *value = a->cluster;
    else if (!(*value = take_value (a, shown)))
      return -1;
    a->cluster = NULL;
  }
  return o->id;
}

int
gt_next_option (GtArgs *a, const GtOption *options, const char **value)
{
  *value = NULL;
  for (;;) {
    GtWord *w;
    const char *t, *eq;
    const GtOption *o;

    if (a->cluster && *a->cluster)
      return short_option (a, options, value);
    a->cluster = NULL;
    if (a->index >= a->items->len)
      return 0;
    w = g_ptr_array_index (a->items, a->index++);
    t = w->text;
    if (w->argv || a->options_done || t[0] != '-' || t[1] == '\0') {
      g_ptr_array_add (a->words, w);
      continue;
    }
    if (strcmp (t, "--") == 0) {
      a->options_done = TRUE;
      continue;
    }
    if (t[1] != '-') {
      a->cluster = t + 1;
      continue;
    }
    t += 2;
    eq = strchr (t, '=');
    o = find_long (options, t, eq ? (size_t) (eq - t) : strlen (t));
    if (!o) {
      gt_usage_error ("unknown option '--%.*s'", eq ? (int) (eq - t) : (int) strlen (t), t);
      return -1;
    }
    if (o->arg == GT_ARG_NONE && eq) {
      gt_usage_error ("option '--%s' takes no value", o->name);
      return -1;
    }
    if (eq)
      *value = eq + 1;
    else if (o->arg == GT_ARG_REQUIRED) {
      g_autofree char *shown = g_strconcat ("--", o->name, NULL);

      if (!(*value = take_value (a, shown)))
        return -1;
    }
    return o->id;
  }
}

/* ---- Numbers ----------------------------------------------------------------- */

/* Digits only (no sign, no space: strtoull would take both). */
static gboolean
parse_digits (const char *s, const char **end, guint64 *out)
{
  char *e;

  if (!g_ascii_isdigit (*s))
    return FALSE;
  errno = 0;
  *out = g_ascii_strtoull (s, &e, 10);
  if (errno)
    return FALSE;
  *end = e;
  return TRUE;
}

gboolean
gt_parse_size (const char *s, guint64 *out)
{
  static const char units[] = "KMGT";
  const char *end, *u;
  guint64 n, mult = 1;

  if (!parse_digits (s, &end, &n))
    return FALSE;
  if (*end) {
    if (!(u = strchr (units, g_ascii_toupper (*end))))
      return FALSE;
    for (const char *p = units; p <= u; p++)
      mult *= 1024;
    end++;
    if (g_ascii_strcasecmp (end, "iB") == 0 || g_ascii_strcasecmp (end, "B") == 0)
      end += strlen (end);
    if (*end)
      return FALSE;
  }
  return g_uint64_checked_mul (out, n, mult);
}

gboolean
gt_parse_count (const char *s, guint64 min, guint64 max, guint64 *out)
{
  const char *end;

  return parse_digits (s, &end, out) && *end == '\0' && *out >= min && *out <= max;
}

char *
gt_human_size (guint64 bytes)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = bytes;
  int u = -1;

  if (bytes < 1024)
    return g_strdup_printf ("%" G_GUINT64_FORMAT " byte%s", bytes, bytes == 1 ? "" : "s");
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  /* Whole numbers without a decimal: "1 GiB", not "1.0 GiB". */
  if (bytes % ((guint64) 1 << (10 * (u + 1))) == 0)
    return g_strdup_printf ("%.0f %s", v, units[u]);
  return g_strdup_printf ("%.1f %s", v, units[u]);
}
