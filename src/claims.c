/* claims.c — the database clock and the staleness of a claim for the
 * rows several instances claim (claims.h). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailfeed/claims.h"

const char *claims_now_sql(const struct db *db)
{
	return db_sql(db, CLAIMS_NOW_SQLITE, CLAIMS_NOW_PG);
}

int claims_claimer_gone(const char *claimer)
{
	char host[256] = "", *end;
	const char *colon = claimer ? strchr(claimer, ':') : NULL;
	if (!colon || gethostname(host, sizeof host - 1) < 0)
		return 0;
	if ((size_t)(colon - claimer) != strlen(host) || memcmp(claimer, host, strlen(host)) != 0)
		return 0;
	errno = 0;
	long pid = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || (*end && *end != ':') || pid <= 1 || pid > 0x3fffffff)
		return 0;
	if ((pid_t)pid == getpid())
		return 0;
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

int claims_stale(const char *claimer, int has_until, int64_t until, int64_t now)
{
	if (!claimer || !*claimer || !has_until || until < now)
		return 1;
	return claims_claimer_gone(claimer);
}
