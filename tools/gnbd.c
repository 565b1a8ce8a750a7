/* gnbd.c: the `gnbd` command: picks the subcommand (info, list, map, copy)
 * and hands it the rest of the command line; --help and --version.
 * Everything a subcommand does lives in its own file.
 */
#include <locale.h>
#include <string.h>

#include "gnbd-tool.h"

static const char usage[] =
  "Usage: gnbd COMMAND [OPTIONS] ARGS...\n"
  "\n"
  "Query and copy NBD (Network Block Device) exports.\n"
  "\n"
  "Commands:\n"
  "  info  NBD              what the server says about an export\n"
  "  list  NBD              the exports of a server\n"
  "  map   NBD              which parts of an export hold data\n"
  "  copy  SRC DST          copy between NBD exports, files, pipes\n"
  "\n"
  "NBD is an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,\n"
  "nbds://... with TLS) or a server run for the duration: [ CMD ARGS ... ]\n"
  "(nbdkit or qemu-nbd, by systemd socket activation).\n"
  "\n"
  "  gnbd COMMAND --help    the options of a command\n"
  "  gnbd --version         the version\n"
  "\n"
  "Exit status: 0 done, 1 failure, 2 a --can/--is flag is false, 3 bad command\n"
  "line, 130 interrupted.  See gnbd(1).\n";

static const struct {
  const char *name;
  int (*main) (int argc, char **argv);
} commands[] = {
  { "info", gt_info_main },
  { "list", gt_list_main },
  { "map", gt_map_main },
  { "copy", gt_copy_main },
};

int
main (int argc, char **argv)
{
  const char *cmd = argc > 1 ? argv[1] : NULL;

  setlocale (LC_ALL, "");
  if (!cmd)
    return gt_usage_error ("which command? info, list, map or copy");
  if (strcmp (cmd, "--help") == 0 || strcmp (cmd, "-h") == 0 || strcmp (cmd, "help") == 0) {
    /* "gnbd help copy" is "gnbd copy --help". */
    if (argc > 2 && strcmp (cmd, "help") == 0) {
      char *help_argv[] = { argv[2], "--help", NULL };

      for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
        if (strcmp (argv[2], commands[i].name) == 0)
          return commands[i].main (2, help_argv);
      return gt_usage_error ("no command '%s': info, list, map or copy", argv[2]);
    }
    fputs (usage, stdout);
    return gt_finish_output (GT_EXIT_OK);
  }
  if (strcmp (cmd, "--version") == 0 || strcmp (cmd, "-V") == 0) {
    printf ("gnbd %s\n", GNBD_TOOL_VERSION);
    return gt_finish_output (GT_EXIT_OK);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (strcmp (cmd, commands[i].name) == 0)
      return commands[i].main (argc - 1, argv + 1);
  return gt_usage_error ("no command '%s': info, list, map or copy", cmd);
}
