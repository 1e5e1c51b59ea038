/* tools/commands.h - the qstream subcommands. Each returns the process exit status and prints
 * its own one-line errors ("qstream <cmd>: FILE: what is wrong"). argv[0] is the subcommand. */
#ifndef QS_TOOLS_COMMANDS_H
#define QS_TOOLS_COMMANDS_H

int qs_cmd_import_gguf(int argc, char **argv); /* tools/cmd_import_gguf.c */
int qs_cmd_logits(int argc, char **argv);      /* tools/cmd_logits.c */
int qs_cmd_eval(int argc, char **argv);        /* tools/cmd_eval.c */
int qs_cmd_tokenize(int argc, char **argv);    /* tools/cmd_tokenize.c */
int qs_cmd_quantize(int argc, char **argv);    /* tools/cmd_quantize.c */
int qs_cmd_verify(int argc, char **argv);      /* tools/cmd_verify.c */
int qs_cmd_inspect(int argc, char **argv);     /* tools/cmd_inspect.c */
int qs_cmd_export(int argc, char **argv);      /* tools/cmd_export.c */
int qs_cmd_dump(int argc, char **argv);        /* tools/cmd_dump.c */

#endif
