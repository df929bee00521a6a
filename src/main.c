/* main.c — `mailfeed` entry point: global options and sub-command dispatch. */
#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/log.h"

#ifndef MAILFEED_SYSCONFDIR
#define MAILFEED_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG MAILFEED_SYSCONFDIR "/mailfeed/mailfeed.conf"

static const struct {
	const char *name;
	int (*fn)(int, char **, const char *);
	const char *summary;
} commands[] = {
    {"check-config", cmd_check_config, "parse and validate the config"},
    {"run", cmd_run, "run the gateway in the foreground (--once: one pass)"},
    {"status", cmd_status, "mailboxes, outbox and digests at a glance (--json)"},
    {"dead", cmd_dead, "list, retry or drop what could not be delivered"},
    {"backfill", cmd_backfill, "post a mapping's older mail on purpose, in date order"},
    {"inspect", cmd_inspect, "show what mailfeed makes of one message (--json)"},
    {"preview", cmd_preview, "dry run of a mapping's newest messages"},
    {"digest", cmd_digest, "send digests now (--now [--to EMAIL])"},
    {"subscribe", cmd_subscribe, "subscribe EMAIL to digests of groups"},
    {"unsubscribe", cmd_unsubscribe, "stop digests for EMAIL"},
    {"migrate-state", cmd_migrate_state, "copy the state into an empty one (--to TARGET)"},
    {"parse-worker", cmd_parse_worker, NULL},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] COMMAND [ARGS]\n"
		     "       mailfeed --version | --help | COMMAND --help\n\n"
		     "Gateway from IMAP mailboxes to group feeds (Chatter, Mattermost,\n"
		     "webhook, local), with email digests and reply-by-email.\n\n"
		     "options:\n"
		     "  -c FILE   config file (default $MAILFEED_CONFIG or " DEFAULT_CONFIG ")\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (commands[i].summary)
			fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nSee mailfeed(8) and mailfeed.conf(5).\n");
}

int main(int argc, char **argv)
{
	const char *config = getenv("MAILFEED_CONFIG");
	int i = 1;

	signal(SIGPIPE, SIG_IGN);
	/* Each parsed message allocates and frees a few hundred KB; keeping up
	 * to 1 MB of freed heap saves returning it to the kernel (and faulting
	 * it back in) once per message. */
	mallopt(M_TRIM_THRESHOLD, 1 << 20);
	if (!config || !*config)
		config = DEFAULT_CONFIG;
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[i + 1];
			i += 2;
		} else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2]) {
			config = argv[i] + 2;
			i++;
		} else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("mailfeed %s\n", MAILFEED_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "mailfeed: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
		if (strcmp(argv[i], commands[c].name) != 0)
			continue;
		/* libcurl (HTTP feeds, SMTP) is set up here, once, before any
		 * thread exists; the parse worker never uses it. */
		if (commands[c].fn != cmd_parse_worker &&
		    curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			fprintf(stderr, "mailfeed: cannot initialise libcurl\n");
			return 1;
		}
		return commands[c].fn(argc - i, argv + i, config);
	}
	fprintf(stderr, "mailfeed: unknown command '%s' (see mailfeed --help)\n", argv[i]);
	return 2;
}
