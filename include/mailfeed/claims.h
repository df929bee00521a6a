/* claims.h — what the claims on shared rows (digest_runs, notice_queue)
 * have in common when several instances share one state: the database's
 * clock in SQL, and when a claim may be taken from its claimer.
 *
 * A claim is a row's claimed_by (store_instance() of the claimer) and
 * claim_until (the database's clock, ms).  Another instance may take it
 * over when it is stale: no claimer or no deadline recorded (a row from
 * before claims), the deadline passed, or the claimer is a process of this
 * host that no longer runs (killed: its claims need not wait for their
 * deadline).  Instance ids begin "<host>:<pid>" (store.h). */
#ifndef MAILFEED_CLAIMS_H
#define MAILFEED_CLAIMS_H

#include <stdint.h>

#include "mailfeed/db.h"

/* The database's clock in milliseconds since the epoch, as an SQL
 * expression (the clock every instance agrees on): per engine, and the
 * one of db's engine. */
#define CLAIMS_NOW_SQLITE DB_NOW_MS_SQLITE
#define CLAIMS_NOW_PG DB_NOW_MS_PG
const char *claims_now_sql(const struct db *db);

/* 1 when claimer names a process of this host, not this one, that no
 * longer runs; 0 otherwise (another host, alive, or not an instance id). */
int claims_claimer_gone(const char *claimer);

/* 1 when a claim may be taken over (the rules above): claimer may be NULL,
 * has_until 0 when claim_until is NULL, now the database's clock. */
int claims_stale(const char *claimer, int has_until, int64_t until, int64_t now);

#endif
