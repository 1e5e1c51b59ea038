/* placeholder: replaced by the real command */
#include <stdio.h>
#include "tools/commands.h"
int qs_cmd_eval(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "qstream: not yet implemented\n"); return 2; }
