/* notes.c — the daemon's notes and counters in the state (table
 * `daemon`); the only code that reads or writes that table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/notes.h"
#include "mailfeed/util.h"

static int step_once(struct db_stmt *s)
{
	int rc = db_step(s);
	db_finalize(s);
	return rc == DB_DONE || rc == DB_ROW ? 0 : -1;
}

int note_set(struct store *st, const char *key, const char *value, time_t at)
{
	struct db_stmt *s;
	if (!(s = db_prepare(store_db(st), "INSERT INTO daemon(key, value, at) VALUES(?1, ?2, ?3)"
					   " ON CONFLICT(key) DO UPDATE SET value=?2, at=?3")))
		return -1;
	db_bind_text(s, 1, key, -1);
	if (value)
		db_bind_text(s, 2, value, -1);
	db_bind_int64(s, 3, (int64_t)(at ? at : time(NULL)));
	return step_once(s);
}

int note_delete(struct store *st, const char *key)
{
	struct db_stmt *s;
	if (!(s = db_prepare(store_db(st), "DELETE FROM daemon WHERE key=?")))
		return -1;
	db_bind_text(s, 1, key, -1);
	return step_once(s);
}

int note_get(struct store *st, const char *key, char **value, time_t *at)
{
	struct db_stmt *s;
	int found = 0;
	if (value)
		*value = NULL;
	if (at)
		*at = 0;
	if (!(s = db_prepare(store_db(st), "SELECT value, at FROM daemon WHERE key=?")))
		return -1;
	db_bind_text(s, 1, key, -1);
	if (db_step(s) == DB_ROW) {
		found = 1;
		const char *v = db_column_text(s, 0);
		if (value && v)
			*value = xstrdup(v);
		if (at)
			*at = (time_t)db_column_int64(s, 1);
	}
	db_finalize(s);
	return found;
}

int note_count(struct store *st, const char *key, long n)
{
	struct db_stmt *s;
	if (n == 0)
		return 0;
	if (!(s = db_prepare(
		  store_db(st),
		  "INSERT INTO daemon(key, value, at) VALUES(?1, CAST(?2 AS TEXT), ?3)"
		  " ON CONFLICT(key) DO UPDATE SET"
		  " value=CAST(CAST(COALESCE(daemon.value, '0') AS BIGINT) + ?2 AS TEXT),"
		  " at=?3")))
		return -1;
	db_bind_text(s, 1, key, -1);
	db_bind_int64(s, 2, n);
	db_bind_int64(s, 3, (int64_t)time(NULL));
	return step_once(s);
}

long long note_counter(struct store *st, const char *key)
{
	char *v = NULL;
	long long n = 0;
	if (note_get(st, key, &v, NULL) == 1 && v)
		n = strtoll(v, NULL, 10);
	free(v);
	return n;
}

int notes_auth_backoff(struct store *st, time_t now, char *why, size_t whylen)
{
	struct db_stmt *s;
	int found = 0;
	if (!(s = db_prepare(store_db(st),
			     "SELECT substr(key, CAST(?1 AS INTEGER)), value, at FROM daemon WHERE"
			     " substr(key, 1, CAST(?2 AS INTEGER))=?3 AND at > ?4"
			     " ORDER BY key LIMIT 1")))
		return -1;
	db_bind_int64(s, 1, (int)strlen(NOTE_AUTH_BACKOFF) + 1);
	db_bind_int64(s, 2, (int)strlen(NOTE_AUTH_BACKOFF));
	db_bind_text(s, 3, NOTE_AUTH_BACKOFF, -1);
	db_bind_int64(s, 4, (int64_t)now);
	if (db_step(s) == DB_ROW) {
		char when[32];
		found = 1;
		snprintf(why, whylen, "account %s: login refused, next attempt at %s: %s",
			 db_column_text(s, 0),
			 time_iso((time_t)db_column_int64(s, 2), when, sizeof when),
			 db_column_text(s, 1) ? db_column_text(s, 1) : "");
	}
	db_finalize(s);
	return found;
}
