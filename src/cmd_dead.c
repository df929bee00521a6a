/* cmd_dead.c — `mailfeed dead [list|retry ID|retry --all|drop ID] [--json]`:
 * what could not be delivered, and why.  Lists outbox items the feed
 * service refused or that ran out of retries ("oN") and messages skipped or
 * dead-lettered before they became items ("mN"); retry puts one back in the
 * queue with the mailbox's current mapping, drop takes it off the list (and
 * lets its message's after-action run).  Works while the daemon runs
 * (short transactions). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/messages.h"
#include "mailfeed/outbox.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] dead [list] [--json]\n"
		     "       mailfeed [-c FILE] dead retry ID\n"
		     "       mailfeed [-c FILE] dead retry --all [--mailbox NAME]\n"
		     "       mailfeed [-c FILE] dead drop ID\n\n"
		     "Lists what could not be delivered (oN: feed items, mN: messages skipped or\n"
		     "dead-lettered) with the reason; retry queues one again with the mailbox's\n"
		     "current mapping (--all: every dead entry, or those of one mailbox; skipped\n"
		     "messages are retried one by one), drop forgets it and lets the message's\n"
		     "after-action run.\n");
}

/* Prints untrusted text on one line, control characters shown as '?'. */
static void put_safe(const char *s, size_t max)
{
	size_t n = 0;
	for (const char *p = s ? s : "-"; *p && n < max; p++, n++)
		putchar((unsigned char)*p < 0x20 || *p == 0x7F ? '?' : *p);
	if (s && strlen(s) > max)
		fputs("...", stdout);
}

static int dead_list(struct store *st, int as_json)
{
	struct outbox_dead *d;
	size_t n;
	char when[32];
	if (outbox_dead_list(st, &d, &n) < 0) {
		fprintf(stderr, "mailfeed: cannot read the dead list: %s\n", store_errmsg(st));
		return 1;
	}
	if (as_json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(
			    arr,
			    json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", d[i].id,
				      "state", d[i].state ? d[i].state : msg_state_name(MSG_DEAD),
				      "when", time_iso(d[i].when, when, sizeof when), "mailbox",
				      json_str_or_null(d[i].mailbox), "uid",
				      d[i].uid ? json_integer(d[i].uid) : json_null(), "from",
				      json_str_or_null(d[i].from), "subject",
				      json_str_or_null(d[i].subject), "reason",
				      json_str_or_null(d[i].reason)));
		json_t *o = json_pack("{s:o}", "dead", arr);
		char *s = json_dumps(o, JSON_INDENT(2));
		puts(s);
		free(s);
		json_decref(o);
	} else if (n == 0) {
		puts("The dead list is empty.");
	} else {
		for (size_t i = 0; i < n; i++) {
			printf("%-6s %s  %-7s mailbox: ", d[i].id,
			       time_iso(d[i].when, when, sizeof when),
			       d[i].state ? d[i].state : msg_state_name(MSG_DEAD));
			put_safe(d[i].mailbox, 80);
			if (d[i].uid)
				printf(" uid %u", d[i].uid);
			fputs("\n       from: ", stdout);
			put_safe(d[i].from, 120);
			fputs("  subject: ", stdout);
			put_safe(d[i].subject, 120);
			fputs("\n       reason: ", stdout);
			put_safe(d[i].reason, 400);
			putchar('\n');
		}
		printf("\n%zu entr%s. `mailfeed dead retry ID` queues one again, "
		       "`mailfeed dead drop ID` forgets it.\n",
		       n, n == 1 ? "y" : "ies");
	}
	outbox_dead_free(d, n);
	return 0;
}

static int dead_change(struct store *st, const struct mf_config *cfg, const char *verb,
		       const char *id)
{
	char err[512] = "";
	int rc = strcmp(verb, "retry") == 0 ? outbox_dead_retry(st, cfg, id, err, sizeof err)
					    : outbox_dead_drop(st, id, err, sizeof err);
	if (rc == 1) {
		fprintf(stderr, "mailfeed: no dead entry \"%s\"; see `mailfeed dead list`\n", id);
		return 2;
	}
	if (rc < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
		return 1;
	}
	if (strcmp(verb, "drop") == 0)
		printf("%s dropped from the dead list.\n", id);
	else if (id[0] == 'o')
		printf("%s queued for delivery again (with any comment that waited for it); the "
		       "running daemon delivers it on its next pass.\n",
		       id);
	else
		printf("%s will be processed again.  A message skipped by a rule (allow_senders, "
		       "bulk, auto-reply) is skipped again unless the config changed.\n",
		       id);
	return 0;
}

/* Retries every entry in state dead (of one mailbox, or all). */
static int dead_retry_all(struct store *st, const struct mf_config *cfg, const char *mailbox)
{
	struct outbox_dead *d;
	size_t n, done = 0, failed = 0;
	char err[512];
	if (outbox_dead_list(st, &d, &n) < 0) {
		fprintf(stderr, "mailfeed: cannot read the dead list: %s\n", store_errmsg(st));
		return 1;
	}
	/* oldest first, so that posts come back before what hangs on them */
	for (size_t k = n; k-- > 0;) {
		/* items and messages share the name of the dead state */
		if (!d[k].state || strcmp(d[k].state, msg_state_name(MSG_DEAD)) != 0)
			continue;
		if (mailbox && (!d[k].mailbox || strcmp(d[k].mailbox, mailbox) != 0))
			continue;
		int rc = outbox_dead_retry(st, cfg, d[k].id, err, sizeof err);
		if (rc >= 0) {
			done++; /* 1: already back, with the post it hangs on */
		} else if (rc < 0) {
			failed++;
			fprintf(stderr, "mailfeed: %s: %s\n", d[k].id, err);
		}
	}
	outbox_dead_free(d, n);
	printf("%zu dead entr%s queued again with the current mapping%s%s.\n", done,
	       done == 1 ? "y" : "ies", mailbox ? " of mailbox " : "", mailbox ? mailbox : "");
	return failed ? 1 : 0;
}

int cmd_dead(int argc, char **argv, const char *config)
{
	const char *verb = "list", *id = NULL, *mailbox = NULL;
	int as_json = 0, nargs = 0, all = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--json") == 0) {
			as_json = 1;
		} else if (strcmp(argv[i], "--all") == 0) {
			all = 1;
		} else if (strcmp(argv[i], "--mailbox") == 0 && i + 1 < argc) {
			mailbox = argv[++i];
		} else if (argv[i][0] == '-') {
			usage(stderr);
			return 2;
		} else if (nargs == 0 &&
			   (strcmp(argv[i], "list") == 0 || strcmp(argv[i], "retry") == 0 ||
			    strcmp(argv[i], "drop") == 0)) {
			verb = argv[i];
			nargs++;
		} else if (nargs == 1 && strcmp(verb, "list") != 0 && !id) {
			id = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if ((all || mailbox) && (strcmp(verb, "retry") != 0 || id || !all)) {
		usage(stderr);
		return 2;
	}
	if (strcmp(verb, "list") != 0 && ((!id && !all) || as_json)) {
		usage(stderr);
		return 2;
	}
	struct mf_config *cfg = cli_load_config(config);
	if (!cfg)
		return 2;
	if (mailbox && !config_mailbox(cfg, mailbox)) {
		fprintf(stderr, "mailfeed: no [mailbox %s] in %s\n", mailbox, config);
		config_free(cfg);
		return 2;
	}
	struct store *st = cli_open_store(cfg);
	if (!st) {
		config_free(cfg);
		return 1;
	}
	int rc = all  ? dead_retry_all(st, cfg, mailbox)
		 : id ? dead_change(st, cfg, verb, id)
		      : dead_list(st, as_json);
	store_close(st);
	config_free(cfg);
	return rc;
}
