/* cmd_pending.c — fallbacks for commands whose module is being built. */
#include <stdio.h>

#include "mailfeed/cli.h"

#define PENDING(fn)                                                                                \
	__attribute__((weak)) int fn(int argc, char **argv, const char *config)                    \
	{                                                                                          \
		fprintf(stderr, "mailfeed: %s is not available in this build\n", argv[0]);         \
		return 1;                                                                          \
	}
PENDING(cmd_check_config)
PENDING(cmd_run)
PENDING(cmd_status)
PENDING(cmd_dead)
PENDING(cmd_inspect)
PENDING(cmd_preview)
PENDING(cmd_digest)
PENDING(cmd_subscribe)
PENDING(cmd_unsubscribe)
PENDING(cmd_parse_worker)
