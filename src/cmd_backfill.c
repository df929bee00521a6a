/* cmd_backfill.c — `mailfeed backfill MAILBOX --since DATE [--dry-run]`:
 * older mail of a mapping posted on purpose.
 *
 * A mapping starts with the mail that arrives after it is first seen
 * (start = new).  Backfill takes what was already in the folder since DATE
 * and below the checkpoint, stores it "held", then releases it to the
 * pipeline in date order (INTERNALDATE, as the server's SINCE sees it) at
 * a limited rate, so that the group is not flooded and threads form in
 * order.  The running daemon (or `run --once`) posts what is released.  An
 * interrupted backfill goes on where it stopped when run again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/imap.h"
#include "mailfeed/ingest.h"
#include "mailfeed/messages.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

#define BACKFILL_RATE 60 /* messages a minute unless --rate says */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mailfeed [-c FILE] backfill MAILBOX --since DATE [--rate N] [--dry-run]\n\n"
		"Posts the mail of MAILBOX's folder that arrived since DATE (YYYY-MM-DD, or a\n"
		"duration back from now such as 30d) and was there before the mapping started,\n"
		"oldest first, at most N messages a minute (default %d).  --dry-run lists what\n"
		"would be posted and changes nothing.  The running daemon posts what is\n"
		"released; messages already taken are never taken twice.\n",
		BACKFILL_RATE);
}

/* YYYY-MM-DD (UTC midnight) or a duration back from now. 0 or -1. */
static int since_parse(const char *s, time_t *out)
{
	struct tm tm = {0};
	long secs;
	const char *end = strptime(s, "%Y-%m-%d", &tm);
	if (end && !*end) {
		*out = timegm(&tm);
		return 0;
	}
	if (parse_duration(s, &secs) == 0 && secs > 0) {
		*out = time(NULL) - secs;
		return 0;
	}
	return -1;
}

struct listing {
	time_t since;
	size_t n;
};

static void put_safe(const char *s)
{
	for (const char *p = s ? s : "-"; *p; p++)
		putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
}

static int list_one(const struct imap_fetched *f, void *arg)
{
	struct listing *l = arg;
	char when[32];
	if (f->internaldate < l->since)
		return 0; /* SINCE is by day; the time of day is ours to judge */
	l->n++;
	printf("%s  uid %-6u ", time_iso(f->internaldate, when, sizeof when), f->uid);
	if (!f->raw) {
		printf("(over max_message_size: %u bytes, would be skipped)\n", f->size);
		return 0;
	}
	char *from = raw_header_value(f->raw, f->raw_len, "From", 80);
	char *subject = raw_header_value(f->raw, f->raw_len, "Subject", 100);
	put_safe(from);
	fputs("  ", stdout);
	put_safe(subject);
	putchar('\n');
	free(from);
	free(subject);
	return 0;
}

/* Fetches the older mail of mb since `since` into the store as held (or
 * lists it).  Returns 0, 1 (runtime failure, message printed) or 2. */
static int take_older(struct store *st, const struct mf_mailbox *mb, time_t since, int dry_run,
		      long long max_size)
{
	char err[512];
	struct folder_state fs;
	struct imap_folder_info info;
	uint32_t *uids = NULL;
	size_t n = 0, older = 0;
	int rc = 1;

	store_folder_get(st, mb->name, &fs);
	if (fs.uidvalidity == 0) {
		fprintf(
		    stderr,
		    "mailfeed: mailbox %s has not been read yet; start the daemon (or `mailfeed "
		    "run --once`) first, then backfill\n",
		    mb->name);
		return 1;
	}
	struct imap_session *s = imap_open(mb->acct, err, sizeof err);
	if (!s) {
		fprintf(stderr, "mailfeed: %s\n", err);
		return 1;
	}
	if (imap_select(s, mb->folder, &info, err, sizeof err) < 0 ||
	    imap_search_since(s, since, &uids, &n, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
		goto out;
	}
	if (info.uidvalidity != fs.uidvalidity) {
		fprintf(
		    stderr,
		    "mailfeed: folder %s changed its UIDVALIDITY since it was last read; let the "
		    "daemon resynchronise it first\n",
		    mb->folder);
		goto out;
	}
	/* newer mail is the daemon's: only what lies below the checkpoint */
	while (older < n && uids[older] <= fs.last_uid)
		older++;
	older = messages_drop_known(st, mb->name, info.uidvalidity, uids, older);
	if (dry_run) {
		struct listing l = {.since = since};
		if (imap_fetch(s, uids, older, max_size, list_one, &l, err, sizeof err) < 0) {
			fprintf(stderr, "mailfeed: %s\n", err);
			goto out;
		}
		printf("%zu message%s would be considered for posting (dry run: nothing changed; "
		       "messages already taken are not posted again).\n",
		       l.n, l.n == 1 ? "" : "s");
		rc = 0;
		goto out;
	}
	atomic_int stop = 0;
	int inserted = 0;
	struct ingest_folder target = {
	    .key = mb->name, .acct = mb->acct, .folder = mb->folder, .max_size = max_size};
	int r = ingest_take(s, st, &target, info.uidvalidity, uids, older, MSG_HELD, &stop,
			    &inserted, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
		goto out;
	}
	/* SINCE matches whole days */
	messages_forget_held(st, mb->name, since);
	rc = 0;
out:
	free(uids);
	imap_close(s);
	return rc;
}

/* Releases the held messages of key oldest first, at most rate a minute,
 * in steps of a second or more.  0 or 1. */
static int release_paced(struct store *st, const char *key, long rate, const char *since_arg)
{
	long total = messages_held_count(st, key);
	if (total <= 0) {
		printf("Nothing to backfill: no older mail since %s that was not taken already.\n",
		       since_arg);
		return 0;
	}
	long step = rate >= 60 ? rate / 60 : 1;
	unsigned pause = rate >= 60 ? 1 : (unsigned)(60 / rate);
	printf("%ld message%s to post from mailbox %s, at most %ld a minute.\n", total,
	       total == 1 ? "" : "s", key, rate);
	for (long done = 0; done < total;) {
		if (messages_release_held(st, key, step) < 0) {
			fprintf(stderr, "mailfeed: cannot update the state database: %s\n",
				store_errmsg(st));
			return 1;
		}
		done += step;
		if (done < total)
			sleep(pause);
	}
	printf("Released %ld message%s; the running daemon posts them in date order.\n", total,
	       total == 1 ? "" : "s");
	return 0;
}

int cmd_backfill(int argc, char **argv, const char *config)
{
	const char *name = NULL, *since_arg = NULL;
	int dry_run = 0;
	long rate = BACKFILL_RATE;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--dry-run") == 0) {
			dry_run = 1;
		} else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
			since_arg = argv[++i];
		} else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
			char *end;
			rate = strtol(argv[++i], &end, 10);
			if (*end || rate <= 0) {
				usage(stderr);
				return 2;
			}
		} else if (argv[i][0] != '-' && !name) {
			name = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	time_t since;
	if (!name || !since_arg) {
		usage(stderr);
		return 2;
	}
	if (since_parse(since_arg, &since) < 0) {
		fprintf(stderr,
			"mailfeed: --since %s is not a date (YYYY-MM-DD) or a duration "
			"(e.g. 30d)\n",
			since_arg);
		return 2;
	}
	struct mf_config *cfg = cli_load_config(config);
	if (!cfg)
		return 2;
	const struct mf_mailbox *mb = config_mailbox(cfg, name);
	if (!mb) {
		fprintf(stderr, "mailfeed: no [mailbox %s] in %s\n", name, config);
		config_free(cfg);
		return 2;
	}
	struct store *st = cli_open_store(cfg);
	if (!st) {
		config_free(cfg);
		return 1;
	}
	int rc = take_older(st, mb, since, dry_run, cfg->gateway.max_message_size);
	if (rc == 0 && !dry_run)
		rc = release_paced(st, mb->name, rate, since_arg);
	store_close(st);
	config_free(cfg);
	return rc;
}
