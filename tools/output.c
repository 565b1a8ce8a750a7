/* output.c: what the tool writes on stdout: JSON strings, and the final
 * check that everything written arrived (a full disk or a closed pipe is
 * an error, not a silent truncation).
 */
#include <errno.h>
#include <string.h>

#include "gnbd-tool.h"

void
gt_json_string (FILE *f, const char *s)
{
  /* Server strings should be UTF-8; JSON must be. */
  g_autofree char *valid = g_utf8_make_valid (s ? s : "", -1);

  fputc ('"', f);
  for (const unsigned char *p = (const unsigned char *) valid; *p; p++) {
    switch (*p) {
    case '"': fputs ("\\\"", f); break;
    case '\\': fputs ("\\\\", f); break;
    case '\n': fputs ("\\n", f); break;
    case '\r': fputs ("\\r", f); break;
    case '\t': fputs ("\\t", f); break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        fprintf (f, "\\u%04x", *p);
      else
        fputc (*p, f);
    }
  }
  fputc ('"', f);
}

int
gt_finish_output (int code)
{
  if (fflush (stdout) == EOF) {
    gt_error ("writing to standard output: %s", g_strerror (errno));
    return GT_EXIT_FAILED;
  }
  if (ferror (stdout)) {
    gt_error ("writing to standard output failed");
    return GT_EXIT_FAILED;
  }
  return code;
}
