/* notes.c — the daemon's notes and counters in the state (table
 * `daemon`); the only code that reads or writes that table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/notes.h"
#include "mailfeed/util.h"

static int step_once(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

int note_set(struct store *st, const char *key, const char *value, time_t at)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(store_db(st),
			       "INSERT INTO daemon(key, value, at) VALUES(?1, ?2, ?3)"
			       " ON CONFLICT(key) DO UPDATE SET value=?2, at=?3",
			       -1, &s, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (value)
		sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)(at ? at : time(NULL)));
	return step_once(s);
}

int note_delete(struct store *st, const char *key)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(store_db(st), "DELETE FROM daemon WHERE key=?", -1, &s, NULL) !=
	    SQLITE_OK)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	return step_once(s);
}

int note_get(struct store *st, const char *key, char **value, time_t *at)
{
	sqlite3_stmt *s;
	int found = 0;
	if (value)
		*value = NULL;
	if (at)
		*at = 0;
	if (sqlite3_prepare_v2(store_db(st), "SELECT value, at FROM daemon WHERE key=?", -1, &s,
			       NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		found = 1;
		const char *v = (const char *)sqlite3_column_text(s, 0);
		if (value && v)
			*value = xstrdup(v);
		if (at)
			*at = (time_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	return found;
}

int note_count(struct store *st, const char *key, long n)
{
	sqlite3_stmt *s;
	if (n == 0)
		return 0;
	if (sqlite3_prepare_v2(store_db(st),
			       "INSERT INTO daemon(key, value, at) VALUES(?1, ?2, ?3)"
			       " ON CONFLICT(key) DO UPDATE SET"
			       " value=CAST(COALESCE(value, 0) AS INTEGER) + ?2, at=?3",
			       -1, &s, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, n);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)time(NULL));
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
	sqlite3_stmt *s;
	int found = 0;
	if (sqlite3_prepare_v2(store_db(st),
			       "SELECT substr(key, ?1), value, at FROM daemon WHERE"
			       " substr(key, 1, ?2)=?3 AND at > ?4 ORDER BY key LIMIT 1",
			       -1, &s, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int(s, 1, (int)strlen(NOTE_AUTH_BACKOFF) + 1);
	sqlite3_bind_int(s, 2, (int)strlen(NOTE_AUTH_BACKOFF));
	sqlite3_bind_text(s, 3, NOTE_AUTH_BACKOFF, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
	if (sqlite3_step(s) == SQLITE_ROW) {
		char when[32];
		found = 1;
		snprintf(why, whylen, "account %s: login refused, next attempt at %s: %s",
			 (const char *)sqlite3_column_text(s, 0),
			 time_iso((time_t)sqlite3_column_int64(s, 2), when, sizeof when),
			 sqlite3_column_text(s, 1) ? (const char *)sqlite3_column_text(s, 1) : "");
	}
	sqlite3_finalize(s);
	return found;
}
