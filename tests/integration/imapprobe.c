/* imapprobe.c — drives src/imap.c directly for tests/integration/test_imap.py:
 * one [account] of a config file, one folder, one command.
 *
 *   imapprobe CONFIG ACCOUNT FOLDER fetch FROM_UID MAX_SIZE
 *       prints "uidvalidity=N uidnext=N exists=N", then per message
 *       "uid=N size=N date=EPOCH sha256=HEX|none"
 *   imapprobe CONFIG ACCOUNT FOLDER wait SECONDS
 *       selects, waits once (IDLE or poll), prints "wait=R idle=0|1
 *       elapsed_ms=N" and then the UIDs found by a new search: "uid=N"
 *   imapprobe CONFIG ACCOUNT FOLDER search FROM_UID
 *       prints "count=N first=N last=N ascending=0|1 elapsed_ms=N"
 *   imapprobe CONFIG ACCOUNT FOLDER after keep|seen|delete|move:DEST UID...
 *       applies the after-action, prints "ok"
 *
 * Errors go to stderr as the module words them; exit status 1. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/imap.h"

static int print_message(const struct imap_fetched *m, void *arg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	(void)arg;
	printf("uid=%u size=%u date=%lld sha256=", m->uid, m->size, (long long)m->internaldate);
	if (!m->raw) {
		printf("none\n");
		return 0;
	}
	EVP_Digest(m->raw, m->raw_len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < mdlen; i++)
		printf("%02x", md[i]);
	printf("\n");
	return 0;
}

static int cmd_fetch(struct imap_session *s, int argc, char **argv, char *err, size_t errlen)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	int rc;
	if (argc < 2)
		return fprintf(stderr, "fetch FROM_UID MAX_SIZE\n"), -1;
	if (imap_search_from(s, (uint32_t)strtoul(argv[0], NULL, 10), &uids, &n, err, errlen) < 0)
		return -1;
	rc = imap_fetch(s, uids, n, strtoll(argv[1], NULL, 10), print_message, NULL, err, errlen);
	free(uids);
	return rc;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmd_wait(struct imap_session *s, int argc, char **argv, char *err, size_t errlen)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	if (argc < 1)
		return fprintf(stderr, "wait SECONDS\n"), -1;
	printf("ready\n");
	fflush(stdout);
	long long t0 = now_ms();
	int r = imap_wait(s, -1, strtol(argv[0], NULL, 10), err, errlen);
	printf("wait=%d idle=%d elapsed_ms=%lld\n", r, imap_has_idle(s), now_ms() - t0);
	if (r < 0)
		return -1;
	if (imap_search_from(s, 1, &uids, &n, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		printf("uid=%u\n", uids[i]);
	free(uids);
	return 0;
}

static int cmd_search(struct imap_session *s, int argc, char **argv, char *err, size_t errlen)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	int asc = 1;
	if (argc < 1)
		return fprintf(stderr, "search FROM_UID\n"), -1;
	long long t0 = now_ms();
	if (imap_search_from(s, (uint32_t)strtoul(argv[0], NULL, 10), &uids, &n, err, errlen) < 0)
		return -1;
	long long t1 = now_ms();
	for (size_t i = 1; i < n; i++)
		if (uids[i - 1] >= uids[i])
			asc = 0;
	printf("count=%zu first=%u last=%u ascending=%d elapsed_ms=%lld\n", n, n ? uids[0] : 0,
	       n ? uids[n - 1] : 0, asc, t1 - t0);
	free(uids);
	return 0;
}

static int cmd_after(struct imap_session *s, int argc, char **argv, char *err, size_t errlen)
{
	enum after_action a;
	const char *dest = NULL;
	if (argc < 1)
		return fprintf(stderr, "after ACTION UID...\n"), -1;
	if (strcmp(argv[0], "keep") == 0)
		a = AFTER_KEEP;
	else if (strcmp(argv[0], "seen") == 0)
		a = AFTER_SEEN;
	else if (strcmp(argv[0], "delete") == 0)
		a = AFTER_DELETE;
	else if (strncmp(argv[0], "move:", 5) == 0)
		a = AFTER_MOVE, dest = argv[0] + 5;
	else
		return fprintf(stderr, "unknown action %s\n", argv[0]), -1;
	size_t n = (size_t)(argc - 1);
	uint32_t *uids = calloc(n ? n : 1, sizeof *uids);
	if (!uids)
		return -1;
	for (size_t i = 0; i < n; i++)
		uids[i] = (uint32_t)strtoul(argv[i + 1], NULL, 10);
	int rc = imap_after(s, a, dest, uids, n, err, errlen);
	free(uids);
	if (rc == 0)
		printf("ok\n");
	return rc;
}

int main(int argc, char **argv)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg;
	struct imap_session *s;
	struct imap_folder_info info;
	char err[512] = "";
	int rc = 1;

	if (argc < 5) {
		fprintf(stderr, "usage: imapprobe CONFIG ACCOUNT FOLDER fetch|wait|after ...\n");
		return 2;
	}
	cfg = config_load(argv[1], 0, &diag);
	if (!cfg) {
		for (size_t i = 0; i < diag.msgs.n; i++)
			fprintf(stderr, "%s\n", diag.msgs.v[i]);
		diag_free(&diag);
		return 2;
	}
	diag_free(&diag);
	const struct mf_account *acct = config_account(cfg, argv[2]);
	if (!acct) {
		fprintf(stderr, "no account %s\n", argv[2]);
		config_free(cfg);
		return 2;
	}
	s = imap_open(acct, err, sizeof err);
	if (!s) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	if (imap_select(s, argv[3], &info, err, sizeof err) == 0) {
		printf("uidvalidity=%u uidnext=%u exists=%u\n", info.uidvalidity, info.uidnext,
		       info.exists);
		if (strcmp(argv[4], "fetch") == 0)
			rc = cmd_fetch(s, argc - 5, argv + 5, err, sizeof err);
		else if (strcmp(argv[4], "wait") == 0)
			rc = cmd_wait(s, argc - 5, argv + 5, err, sizeof err);
		else if (strcmp(argv[4], "search") == 0)
			rc = cmd_search(s, argc - 5, argv + 5, err, sizeof err);
		else if (strcmp(argv[4], "after") == 0)
			rc = cmd_after(s, argc - 5, argv + 5, err, sizeof err);
		else
			snprintf(err, sizeof err, "unknown command %s", argv[4]);
		rc = rc == 0 ? 0 : 1;
	}
	if (rc != 0 && err[0])
		fprintf(stderr, "%s\n", err);
	if (rc == 0)
		imap_close(s);
	else
		imap_abort(s);
	config_free(cfg);
	return rc;
}
