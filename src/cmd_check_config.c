/* cmd_check_config.c — `mailfeed check-config`, and the config loading that
 * every other sub-command shares (problems printed, exit code 2).
 *
 * Run as root, check-config judges secret files for the user the service
 * runs as (--user, else the owner of the state directory), since a file
 * root can read may still be closed to the daemon. */
#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/secret.h"
#include "mailfeed/util.h"

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
	fprintf(out, "usage: mailfeed [-c FILE] check-config [--user USER]\n\n"
		     "Parses and validates the config, opens every secret file and runs\n"
		     "every token command.  Each problem is printed as FILE:LINE: message.\n\n"
		     "  --user USER  judge secret files for USER (run as root: default the\n"
		     "               owner of the state directory, the user the service runs as)\n\n"
		     "Exit status: 0 clean, 2 on any problem.\n");
}

/* Run as root without --user: the owner of the state file's directory, when
 * that is not root.  0 with *user set (owned) or NULL, -1 after a message. */
static int service_user(const char *config, char **user)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg = config_load(config, -1, &diag);
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	struct stat st;

	*user = NULL;
	diag_free(&diag);
	if (!cfg)
		return 0; /* the full load below reports the problems */
	char *copy = xstrdup(cfg->gateway.state);
	const char *dir = dirname(copy);
	if (stat(dir, &st) == 0 && st.st_uid != 0) {
		if (getpwuid_r(st.st_uid, &pw, pwbuf, sizeof pwbuf, &res) != 0 || !res) {
			fprintf(stderr,
				"mailfeed check-config: %s belongs to uid %u, which has no user "
				"name; say whom to judge secrets for with --user\n",
				dir, (unsigned)st.st_uid);
			free(copy);
			config_free(cfg);
			return -1;
		}
		*user = xstrdup(pw.pw_name);
		printf("secrets judged for user %s (owner of %s)\n", pw.pw_name, dir);
	}
	free(copy);
	config_free(cfg);
	return 0;
}

int cmd_check_config(int argc, char **argv, const char *config)
{
	struct mf_diag diag = {0};

	char *user = NULL, err[256];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			free(user);
			return 0;
		}
		if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
			free(user);
			user = xstrdup(argv[++i]);
			continue;
		}
		fprintf(stderr, "mailfeed check-config: unexpected argument '%s'\n", argv[i]);
		usage(stderr);
		free(user);
		return 2;
	}
	if (!user && geteuid() == 0 && service_user(config, &user) < 0)
		return 2;
	if (user && secret_judge_for(user, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed check-config: --user %s: %s\n", user, err);
		free(user);
		return 2;
	}
	free(user);
	struct mf_config *cfg = config_load(config, 1, &diag);
	if (!cfg) {
		print_diag(&diag);
		diag_free(&diag);
		return 2;
	}
	printf("%s: ok: %zu account%s, %zu mailbox%s, backend %s\n", config, cfg->n_accounts,
	       cfg->n_accounts == 1 ? "" : "s", cfg->n_mailboxes, cfg->n_mailboxes == 1 ? "" : "es",
	       backend_label[cfg->feed.backend]);
	diag_free(&diag);
	config_free(cfg);
	return 0;
}
