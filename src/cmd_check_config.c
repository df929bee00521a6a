/* cmd_check_config.c — `mailfeed check-config`, and the config loading that
 * every other sub-command shares (problems printed, exit code 2). */
#include <stdio.h>
#include <string.h>

#include "mailfeed/auth.h"
#include "mailfeed/cli.h"
#include "mailfeed/config.h"

static const char *const backend_label[] = {
    [FEED_LOCAL] = "local",
    [FEED_CHATTER] = "chatter",
    [FEED_MATTERMOST] = "mattermost",
    [FEED_WEBHOOK] = "webhook",
};

static void print_diag(const struct mf_diag *diag)
{
	for (size_t i = 0; i < diag->msgs.n; i++)
		fprintf(stderr, "%s\n", diag->msgs.v[i]);
}

struct mf_config *cli_load_config(const char *path)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg = config_load(path, 0, &diag);
	if (!cfg)
		print_diag(&diag);
	diag_free(&diag);
	return cfg;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] check-config\n\n"
		     "Parses and validates the config, opens every secret file and runs\n"
		     "every token command.  Each problem is printed as FILE:LINE: message.\n"
		     "Exit status: 0 clean, 2 on any problem.\n");
}

int cmd_check_config(int argc, char **argv, const char *config)
{
	struct mf_diag diag = {0};

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		fprintf(stderr, "mailfeed check-config: unexpected argument '%s'\n", argv[i]);
		usage(stderr);
		return 2;
	}
	struct mf_config *cfg = config_load(config, 1, &diag);
	if (!cfg) {
		print_diag(&diag);
		diag_free(&diag);
		return 2;
	}
	printf("%s: ok: %zu account%s, %zu mailbox%s, backend %s\n", config, cfg->n_accounts,
	       cfg->n_accounts == 1 ? "" : "s", cfg->n_mailboxes, cfg->n_mailboxes == 1 ? "" : "es",
	       backend_label[cfg->feed.backend]);
	struct strlist warn = {0};
	auth_config_warnings(cfg, &warn);
	for (size_t i = 0; i < warn.n; i++)
		printf("%s: warning: %s\n", config, warn.v[i]);
	strlist_free(&warn);
	diag_free(&diag);
	config_free(cfg);
	return 0;
}
