/* takein_bench.c — take-in alone: fetch + durable store of one mailbox.
 *
 * usage: takein_bench CONFIG [MAILBOX] [--fetch-only]
 * Syncs the mailbox (the first one of CONFIG when not named) once, as the
 * daemon's watcher does: select, search, fetch every new message and store
 * it with its checkpoint, the state as CONFIG says.  Nothing is parsed or
 * delivered.  --fetch-only fetches every message the same way and stores
 * nothing (the ceiling of take-in on this server).  Prints one line: msgs, seconds, msgs/s, CPU
 * seconds (user + system of every thread) and peak RSS. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "mailfeed/config.h"
#include "mailfeed/imap.h"
#include "mailfeed/ingest.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* This process's own peak (getrusage's also counts what ran before exec). */
static long peak_rss_kb(void)
{
	char line[256];
	long kb = 0;
	FILE *f = fopen("/proc/self/status", "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

static int count_one(const struct imap_fetched *m, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

/* Every message of the folder fetched as take-in does, then dropped. */
static int fetch_only(struct imap_session *s, const struct mf_mailbox *mb, long long max_size,
		      int *count, char *err, size_t errlen)
{
	struct imap_folder_info info;
	uint32_t *uids = NULL;
	size_t n = 0;
	int rc = imap_select(s, mb->folder, &info, err, errlen) < 0 ||
			 imap_search_from(s, 1, &uids, &n, err, errlen) < 0 ||
			 imap_fetch(s, uids, n, max_size, count_one, count, err, errlen) < 0
		     ? -1
		     : 0;
	free(uids);
	return rc;
}

int main(int argc, char **argv)
{
	struct mf_diag diag = {0};
	char err[512];
	mallopt(M_TRIM_THRESHOLD, 1 << 20); /* as mailfeed's main() */
	if (argc < 2) {
		fprintf(stderr, "usage: takein_bench CONFIG [MAILBOX]\n");
		return 2;
	}
	struct mf_config *cfg = config_load(argv[1], 0, &diag);
	if (!cfg || cfg->n_mailboxes == 0) {
		for (size_t i = 0; i < diag.msgs.n; i++)
			fprintf(stderr, "%s\n", diag.msgs.v[i]);
		fprintf(stderr, "takein_bench: no mailbox in %s\n", argv[1]);
		return 2;
	}
	int only = argc > 2 && strcmp(argv[argc - 1], "--fetch-only") == 0;
	if (only)
		argc--;
	const struct mf_mailbox *mb = argc > 2 ? config_mailbox(cfg, argv[2]) : &cfg->mailboxes[0];
	if (!mb) {
		fprintf(stderr, "takein_bench: no mailbox %s\n", argv[2]);
		return 2;
	}
	struct store *st = store_open(cfg->gateway.state, err, sizeof err);
	if (!st) {
		fprintf(stderr, "takein_bench: %s\n", err);
		return 1;
	}
	double t0 = now_monotonic(), c0 = cpu_seconds();
	struct imap_session *s = imap_open(mb->acct, err, sizeof err);
	if (!s) {
		fprintf(stderr, "takein_bench: %s\n", err);
		return 1;
	}
	struct ingest_folder f = {.key = mb->name,
				  .acct = mb->acct,
				  .folder = mb->folder,
				  .max_size = cfg->gateway.max_message_size,
				  .start = START_ALL};
	atomic_int stop = 0;
	int fresh = 0;
	int rc = only ? fetch_only(s, mb, f.max_size, &fresh, err, sizeof err)
		      : ingest_sync_folder(s, st, &f, &stop, &fresh, err, sizeof err);
	double secs = now_monotonic() - t0, cpu = cpu_seconds() - c0;
	imap_close(s);
	store_close(st);
	if (rc < 0) {
		fprintf(stderr, "takein_bench: %s\n", err);
		return 1;
	}
	printf("%d msgs %.3f s %.0f msgs/s %.3f cpu_s %.1f MB\n", fresh, secs,
	       fresh / (secs > 0 ? secs : 1e-9), cpu, peak_rss_kb() / 1024.0);
	config_free(cfg);
	return 0;
}
