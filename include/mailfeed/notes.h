/* notes.h — the daemon's notes in the state (table `daemon`): facts the
 * daemon leaves for `status`, metrics and /healthz to read (heartbeat, a
 * refused reload, accounts backing off after refused logins) and counters
 * of events that leave no row of their own (retries, dead letters).
 * Several instances may write the same key at once: note_set and
 * note_count are each one upsert, so two counts add up and the last note
 * wins, on PostgreSQL (read committed) as on SQLite. */
#ifndef MAILFEED_NOTES_H
#define MAILFEED_NOTES_H

#include <time.h>

#include "mailfeed/store.h"

/* Sets key to value (NULL allowed) at time `at` (0: now).  0 or -1. */
int note_set(struct store *st, const char *key, const char *value, time_t at);
int note_delete(struct store *st, const char *key);
/* The value (owned, may be NULL) and time of key.  1 found, 0 not, -1. */
int note_get(struct store *st, const char *key, char **value, time_t *at);
/* Adds n to the counter key (inside the caller's transaction, if any). */
int note_count(struct store *st, const char *key, long n);
long long note_counter(struct store *st, const char *key);

/* The error of a configuration reload that was refused (value), removed
 * once a reload succeeds. */
#define NOTE_RELOAD_ERROR "reload_error"

/* Counters of the metrics (the total of delivered items and sent digests
 * are rows of their own). */
#define NOTE_COUNT_RETRIED "count:retried"
#define NOTE_COUNT_DEAD "count:dead"

/* Accounts whose logins were refused: key "auth_backoff:ACCOUNT", value
 * the server's answer, at = when the next attempt is due. */
#define NOTE_AUTH_BACKOFF "auth_backoff:"
/* For /healthz and status: 1 when some account is backing off now, with
 * "account NAME: ... (next attempt at ...)" in why; 0 when none; -1. */
int notes_auth_backoff(struct store *st, time_t now, char *why, size_t whylen);

#endif
