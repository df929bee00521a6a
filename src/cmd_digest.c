/* cmd_digest.c — the digest and subscription commands: `digest [--now]
 * [--to EMAIL]`, `subscribe EMAIL --groups ...` and `unsubscribe EMAIL`.
 * They work on the same state database as the daemon and may run while it
 * does (SQLite WAL, short transactions). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/digest.h"
#include "mailfeed/feed.h"
#include "mailfeed/store.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/util.h"

static const char digest_usage[] =
    "usage: mailfeed [-c FILE] digest [--now] [--to EMAIL]\n\n"
    "Sends digests.  Without --now only the periods that are due are sent, as the\n"
    "daemon does.  With --now every subscriber (or only EMAIL with --to) gets a\n"
    "digest at once covering everything since their last one; it is recorded like\n"
    "any other.  Subscribers with frequency 'each' get their pending notifications.\n"
    "Exit status: 0 all sent, 1 a mail could not be sent, 2 usage or config error.\n";

static const char subscribe_usage[] =
    "usage: mailfeed [-c FILE] subscribe EMAIL --groups G1,G2 [--daily|--weekly|--each|--mine]\n"
    "                [--hour H] [--tz ZONE]\n\n"
    "Adds EMAIL as a digest subscriber, or changes an existing subscription.\n"
    "Groups are [mailbox NAME] section names or group ids of the feed service.\n"
    "Default frequency daily; --mine is a daily digest of only the threads EMAIL\n"
    "started, commented on or is named in; --hour (0-23) and --tz (an IANA zone such as\n"
    "Europe/Berlin) default to the [digest] section's hour and timezone.\n";

static const char unsubscribe_usage[] =
    "usage: mailfeed [-c FILE] unsubscribe EMAIL\n\n"
    "Stops digests and notifications to EMAIL (its frequency becomes 'never', so\n"
    "neither a [subscriber] section of the config nor, with [digest] subscribers =\n"
    "feed, its membership of a group brings it back).\n";

static int open_state(const char *config, struct mf_config **cfg, struct store **st)
{
	*cfg = cli_load_config(config);
	if (!*cfg)
		return 2;
	*st = cli_open_store(*cfg);
	if (!*st) {
		config_free(*cfg);
		return 1;
	}
	return 0;
}

int cmd_digest(int argc, char **argv, const char *config)
{
	int force = 0, rc;
	const char *to = NULL;
	struct mf_config *cfg;
	struct store *st;
	void *ctx = NULL;
	char err[512];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--now") == 0) {
			force = 1;
		} else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
			to = argv[++i];
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(digest_usage, stdout);
			return 0;
		} else {
			fputs(digest_usage, stderr);
			return 2;
		}
	}
	if ((rc = open_state(config, &cfg, &st)) != 0)
		return rc;
	rc = 2;
	if (!cfg->smtp.present) {
		fprintf(stderr, "mailfeed: %s has no [smtp] section; digests cannot be sent\n",
			cfg->path ? cfg->path : config);
		goto out;
	}
	if (subscribers_seed(st, cfg) < 0) {
		fprintf(stderr, "mailfeed: cannot record subscribers: %s\n", store_errmsg(st));
		rc = 1;
		goto out;
	}
	const struct feed_backend_ops *ops = feed_backend(cfg->feed.backend);
	if (!ops || ops->open(cfg, st, &ctx, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed: cannot open the feed service: %s\n",
			ops ? err : "backend not available in this build");
		rc = 1;
		goto out;
	}
	/* --now works on the current group members, not last hour's */
	subscribers_refresh_members(st, cfg, ops, ctx, time(NULL), force);
	if (to && !subscribers_known(st, to, cfg->digest.subscribers == SUBSCRIBERS_FEED, 0)) {
		fprintf(stderr,
			"mailfeed: %s is not a subscriber; add it with `mailfeed subscribe`\n", to);
		ops->close(ctx);
		rc = 1;
		goto out;
	}
	int sent = digest_run(st, cfg, ops, ctx, time(NULL), force, to);
	ops->close(ctx);
	if (sent < 0) {
		fprintf(stderr, "mailfeed: some digests could not be sent; see the log above\n");
		rc = 1;
	} else {
		printf("%d email%s sent\n", sent, sent == 1 ? "" : "s");
		rc = 0;
	}
out:
	store_close(st);
	config_free(cfg);
	return rc;
}

/* Each group must be a mailbox section name or look like a group id. */
static int groups_valid(const struct mf_config *cfg, const struct strlist *g, char *bad,
			size_t badlen)
{
	if (g->n == 0) {
		snprintf(bad, badlen, "--groups names no group");
		return 0;
	}
	for (size_t i = 0; i < g->n; i++) {
		const char *p = g->v[i];
		if (config_mailbox(cfg, p))
			continue;
		for (; *p; p++)
			if (!isalnum((unsigned char)*p) && !strchr("-_.:@", *p))
				break;
		if (*p || strlen(g->v[i]) > 200) {
			snprintf(bad, badlen,
				 "\"%s\" is neither a [mailbox] name of the config nor a group id",
				 g->v[i]);
			return 0;
		}
	}
	return 1;
}

/* What `subscribe` was asked. */
struct subscribe_args {
	const char *email, *groups, *tz, *freq;
	int hour; /* -1: the [digest] section's */
};

/* Parses and checks the arguments: 0 go on, -1 --help (the usage was
 * printed), 2 a usage error (told on stderr). */
static int subscribe_parse(int argc, char **argv, struct subscribe_args *a)
{
	*a = (struct subscribe_args){.freq = "daily", .hour = -1};
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
			fputs(subscribe_usage, stdout);
			return -1;
		} else if (strcmp(s, "--groups") == 0 && i + 1 < argc) {
			a->groups = argv[++i];
		} else if (strcmp(s, "--daily") == 0 || strcmp(s, "--weekly") == 0 ||
			   strcmp(s, "--each") == 0 || strcmp(s, "--mine") == 0) {
			a->freq = s + 2;
		} else if (strcmp(s, "--hour") == 0 && i + 1 < argc) {
			char *end;
			long h = strtol(argv[++i], &end, 10);
			if (*end || end == argv[i] || h < 0 || h > 23) {
				fprintf(stderr, "mailfeed: --hour must be 0 to 23\n");
				return 2;
			}
			a->hour = (int)h;
		} else if (strcmp(s, "--tz") == 0 && i + 1 < argc) {
			a->tz = argv[++i];
		} else if (s[0] != '-' && !a->email) {
			a->email = s;
		} else {
			fputs(subscribe_usage, stderr);
			return 2;
		}
	}
	if (!a->email || !a->groups) {
		fputs(subscribe_usage, stderr);
		return 2;
	}
	if (!email_address_valid(a->email)) {
		fprintf(stderr, "mailfeed: \"%s\" is not an email address\n", a->email);
		return 2;
	}
	if (a->tz && strcmp(a->tz, "UTC") != 0 && !digest_zone_valid(a->tz)) {
		fprintf(stderr,
			"mailfeed: unknown time zone \"%s\" (expected a name under "
			"/usr/share/zoneinfo, e.g. Europe/Berlin)\n",
			a->tz);
		return 2;
	}
	return 0;
}

int cmd_subscribe(int argc, char **argv, const char *config)
{
	struct subscribe_args a;
	struct mf_config *cfg;
	struct store *st;
	struct strlist gl = {0};
	char bad[300];
	int rc = subscribe_parse(argc, argv, &a);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if ((rc = open_state(config, &cfg, &st)) != 0)
		return rc;
	strlist_split(&gl, a.groups);
	rc = 2;
	if (!groups_valid(cfg, &gl, bad, sizeof bad)) {
		fprintf(stderr, "mailfeed: %s\n", bad);
		goto out;
	}
	struct buf g;
	buf_init(&g);
	for (size_t i = 0; i < gl.n; i++)
		buf_printf(&g, "%s%s", i ? "," : "", gl.v[i]);
	rc = subscribers_put(st, a.email, g.data, a.freq, a.hour, a.tz, "cli", 1) == 0 ? 0 : 1;
	if (rc == 0)
		printf("%s subscribed to %s: %s at %02d:00 %s\n", a.email, g.data, a.freq,
		       a.hour >= 0 ? a.hour : cfg->digest.hour,
		       a.tz		      ? a.tz
		       : cfg->digest.timezone ? cfg->digest.timezone
					      : "UTC");
	else
		fprintf(stderr, "mailfeed: cannot record the subscription: %s\n", store_errmsg(st));
	buf_free(&g);
out:
	strlist_free(&gl);
	store_close(st);
	config_free(cfg);
	return rc;
}

int cmd_unsubscribe(int argc, char **argv, const char *config)
{
	const char *email = NULL;
	struct mf_config *cfg;
	struct store *st;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(unsubscribe_usage, stdout);
			return 0;
		} else if (argv[i][0] != '-' && !email) {
			email = argv[i];
		} else {
			fputs(unsubscribe_usage, stderr);
			return 2;
		}
	}
	if (!email) {
		fputs(unsubscribe_usage, stderr);
		return 2;
	}
	if ((rc = open_state(config, &cfg, &st)) != 0)
		return rc;
	/* a [subscriber] section not yet in the table is recorded first, so
	 * that the 'never' sticks */
	subscribers_seed(st, cfg);
	/* a member of a feed group gets a 'never' of its own, overriding the
	 * membership's setting */
	switch (subscribers_set_frequency(st, email, "never", "cli")) {
	case 1:
		rc = 0;
		break;
	case 0:
		rc = 3;
		break;
	default:
		rc = 1;
	}
	if (rc == 0)
		printf("%s unsubscribed\n", email);
	else if (rc == 3)
		fprintf(stderr, "mailfeed: %s is not a subscriber\n", email);
	else
		fprintf(stderr, "mailfeed: cannot record it: %s\n", store_errmsg(st));
	store_close(st);
	config_free(cfg);
	return rc ? 1 : 0;
}
