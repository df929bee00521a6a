/* subscribers.c — who gets digests: the subscribers table ([subscriber]
 * sections, `subscribe`, email commands) and, with [digest] subscribers =
 * feed, the members of the mapped groups at the feed service, whose
 * digest state is kept per (email, frequency); an address with a
 * subscription of its own is not taken from the feed.  Also what a person
 * asked to hear less of: the threads they muted (mutes).  The only module
 * that touches these tables (subscribers.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/subscribers.h"

static void bind_text(struct db_stmt *s, int i, const char *v)
{
	if (s && v)
		db_bind_text(s, i, v, -1);
}

/* ------------------------------------------------------------------ */
/* Subscriptions of their own                                          */

int subscribers_set_frequency(struct store *st, const char *email, const char *frequency,
			      const char *source)
{
	/* group_concat is SQLite's, string_agg PostgreSQL's (SQLite has it
	 * from 3.44 only) */
	static const char *const sql[][2] = {
	    {"UPDATE subscribers SET frequency=?2 WHERE email=lower(?1)", NULL},
	    {"INSERT INTO subscribers(email, groups, frequency, since, source)"
	     " SELECT lower(?1), group_concat(grp, ','), ?2, ?3, ?4 FROM"
	     " (SELECT DISTINCT grp FROM feed_members WHERE email=lower(?1)) AS g"
	     " HAVING count(*) > 0",
	     "INSERT INTO subscribers(email, groups, frequency, since, source)"
	     " SELECT lower(?1), string_agg(grp, ','), ?2, ?3, ?4 FROM"
	     " (SELECT DISTINCT grp FROM feed_members WHERE email=lower(?1)) AS g"
	     " HAVING count(*) > 0"},
	};
	for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
		struct db_stmt *s;
		if (!(s = db_prepare(store_db(st), db_sql(store_db(st), sql[i][0], sql[i][1]))))
			return -1;
		db_bind_text(s, 1, email, -1);
		db_bind_text(s, 2, frequency, -1);
		if (i == 1) {
			db_bind_int64(s, 3, (int64_t)time(NULL));
			db_bind_text(s, 4, source, -1);
		}
		int rc = db_step(s);
		db_finalize(s);
		if (rc != DB_DONE)
			return -1;
		if ((int)db_changes(store_db(st)) > 0)
			return 1;
	}
	return 0;
}

int subscribers_leave_group(struct store *st, const char *email, const char *group, char **left)
{
	struct db_stmt *s;
	struct strlist groups = {0}, keep = {0};
	int found = 0, gone = 0, rc = -1;
	*left = NULL;
	if (!(s = db_prepare(store_db(st), "SELECT groups FROM subscribers WHERE email=lower(?1)")))
		return -1;
	db_bind_text(s, 1, email, -1);
	if (db_step(s) == DB_ROW) {
		strlist_split(&groups, db_column_text(s, 0));
		found = 1;
	}
	db_finalize(s);
	for (size_t i = 0; i < groups.n; i++) {
		if (strcasecmp(groups.v[i], group) == 0)
			gone = 1;
		else
			strlist_add(&keep, groups.v[i]);
	}
	if (!found || !gone) {
		rc = 0;
		goto out;
	}
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < keep.n; i++)
		buf_printf(&b, "%s%s", i ? "," : "", keep.v[i]);
	if ((s = db_prepare(
		 store_db(st),
		 keep.n ? "UPDATE subscribers SET groups=?2, source='email' WHERE email=lower(?1)"
			: "UPDATE subscribers SET frequency='never', source='email' WHERE "
			  "email=lower(?1)"))) {
		db_bind_text(s, 1, email, -1);
		if (keep.n)
			db_bind_text(s, 2, b.data, -1);
		rc = db_step(s) == DB_DONE ? 1 : -1;
		db_finalize(s);
	}
	if (rc == 1 && keep.n)
		*left = xstrdup(b.data);
	buf_free(&b);
out:
	strlist_free(&groups);
	strlist_free(&keep);
	return rc;
}

int subscribers_seed(struct store *st, const struct mf_config *cfg)
{
	struct db_stmt *s;
	int added = 0;
	if (cfg->n_subscribers == 0)
		return 0;
	if (store_begin(st) < 0)
		return -1;
	if (!(s = db_prepare(
		  store_db(st),
		  "INSERT INTO subscribers(email, groups, frequency, hour, tz,"
		  " since, source) VALUES(lower(?),?,?,?,?,?,'config') ON CONFLICT DO NOTHING"))) {
		store_rollback(st);
		return -1;
	}
	for (size_t i = 0; i < cfg->n_subscribers; i++) {
		const struct mf_subscriber *sub = &cfg->subscribers[i];
		struct buf g;
		buf_init(&g);
		for (size_t k = 0; k < sub->groups.n; k++)
			buf_printf(&g, "%s%s", k ? "," : "", sub->groups.v[k]);
		db_bind_text(s, 1, sub->email, -1);
		db_bind_text(s, 2, g.data ? g.data : "", -1);
		db_bind_text(s, 3, frequency_name(sub->frequency), -1);
		if (sub->hour >= 0)
			db_bind_int64(s, 4, sub->hour);
		else
			db_bind_null(s, 4);
		if (sub->timezone)
			db_bind_text(s, 5, sub->timezone, -1);
		else
			db_bind_null(s, 5);
		db_bind_int64(s, 6, (int64_t)time(NULL));
		if (db_step(s) != DB_DONE) {
			buf_free(&g);
			db_finalize(s);
			store_rollback(st);
			return -1;
		}
		added += (int)db_changes(store_db(st));
		db_reset(s);
		buf_free(&g);
	}
	db_finalize(s);
	if (store_commit(st) < 0)
		return -1;
	if (added)
		log_info("digest.seeded subscribers=%d", added);
	return added;
}

/* One statement with text parameters ?1..?4 (NULL ones stay NULL) and an
 * integer ?5.  The number of rows changed, or -1. */
static int exec_bind(struct store *st, const char *sql, const char *a, const char *b, const char *c,
		     const char *d, int64_t n)
{
	struct db_stmt *s;
	int rc;
	if (!(s = db_prepare(store_db(st), sql)))
		return -1;
	const char *v[4] = {a, b, c, d};
	int np = db_param_count(s);
	for (int i = 0; i < 4 && i < np; i++)
		if (v[i])
			db_bind_text(s, i + 1, v[i], -1);
	if (np >= 5)
		db_bind_int64(s, 5, n);
	rc = db_step(s) == DB_DONE ? (int)db_changes(store_db(st)) : -1;
	db_finalize(s);
	return rc;
}

int subscribers_put(struct store *st, const char *email, const char *groups, const char *frequency,
		    int hour, const char *tz, const char *source, int replace)
{
	static const char insert_sql[] =
	    "INSERT INTO subscribers(email, groups, frequency, hour, tz, since, source)"
	    " VALUES(lower(?1),?2,?3,?4,?5,?6,?7)";
	static const char upsert_sql[] =
	    "INSERT INTO subscribers(email, groups, frequency, hour, tz, since, source)"
	    " VALUES(lower(?1),?2,?3,?4,?5,?6,?7)"
	    " ON CONFLICT(email) DO UPDATE SET groups=?2, frequency=?3, hour=?4, tz=?5";
	struct db_stmt *s;
	int rc;
	if (!(s = db_prepare(store_db(st), replace ? upsert_sql : insert_sql)))
		return -1;
	bind_text(s, 1, email);
	bind_text(s, 2, groups);
	bind_text(s, 3, frequency);
	if (hour >= 0)
		db_bind_int64(s, 4, hour);
	bind_text(s, 5, tz);
	db_bind_int64(s, 6, (int64_t)time(NULL));
	bind_text(s, 7, source);
	rc = db_step(s) == DB_DONE ? 0 : -1;
	db_finalize(s);
	return rc;
}

int subscribers_known(struct store *st, const char *email, int feed, int wanting_mail)
{
	struct db_stmt *s;
	int found;
	if (!email ||
	    !(s = db_prepare(store_db(st), "SELECT 1 FROM subscribers WHERE email=lower(?1)"
					   " AND (?3 = 0 OR frequency<>'never') UNION ALL"
					   " SELECT 1 FROM feed_members WHERE ?2 <> 0 AND"
					   " email=lower(?1) AND (?3 = 0 OR frequency<>'never')"
					   " LIMIT 1")))
		return 0;
	bind_text(s, 1, email);
	db_bind_int64(s, 2, feed != 0);
	db_bind_int64(s, 3, wanting_mail != 0);
	found = db_step(s) == DB_ROW;
	db_finalize(s);
	return found;
}

int subscribers_list(struct store *st, int feed,
		     void (*fn)(void *arg, const struct subscription_row *row), void *arg)
{
	struct db_stmt *s;
	int rc;
	if (!(s = db_prepare(store_db(st),
			     "SELECT email, frequency, last_sent, source FROM subscribers"
			     " UNION ALL SELECT f.email, f.frequency, f.last_sent, 'feed'"
			     " FROM feed_subscribers f WHERE ?1 <> 0 AND NOT EXISTS"
			     " (SELECT 1 FROM subscribers o WHERE o.email=f.email)"
			     " ORDER BY 1, 2")))
		return -1;
	db_bind_int64(s, 1, feed != 0);
	while ((rc = db_step(s)) == DB_ROW) {
		struct subscription_row row = {
		    .email = db_column_text(s, 0),
		    .frequency = db_column_text(s, 1),
		    .source = db_column_text(s, 3),
		    .last_sent = (time_t)db_column_int64(s, 2),
		};
		fn(arg, &row);
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Subscribers from the feed's group membership                        */

#define MEMBERS_REFRESH 3600 /* a group's members are read at most hourly */
#define MEMBERS_RETRY 600    /* and again 10 minutes after a failed read */

static int gid_listed(const struct strlist *l, const char *gid)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], gid) == 0)
			return 1;
	return 0;
}

static int members_due(struct store *st, const char *gid, time_t now)
{
	struct db_stmt *s;
	int due = 1;
	if (!(s = db_prepare(store_db(st), "SELECT at, ok FROM feed_member_reads WHERE grp=?")))
		return 0;
	db_bind_text(s, 1, gid, -1);
	if (db_step(s) == DB_ROW) {
		time_t at = (time_t)db_column_int64(s, 0);
		long wait = (int)db_column_int64(s, 1) ? MEMBERS_REFRESH : MEMBERS_RETRY;
		due = now < at || now - at >= wait;
	}
	db_finalize(s);
	return due;
}

static const char orphans_sql[] =
    "DELETE FROM feed_subscribers WHERE NOT EXISTS (SELECT 1 FROM feed_members m"
    " WHERE m.email=feed_subscribers.email AND m.frequency=feed_subscribers.frequency)";

/* Members of groups no longer mapped get no more digests of them. */
static void members_prune(struct store *st, const struct strlist *gids)
{
	struct db_stmt *s;
	struct strlist gone = {0};
	if (!(s = db_prepare(store_db(st), "SELECT grp FROM feed_member_reads")))
		return;
	while (db_step(s) == DB_ROW) {
		const char *g = db_column_text(s, 0);
		if (g && !gid_listed(gids, g))
			strlist_add(&gone, g);
	}
	db_finalize(s);
	if (gone.n && store_begin(st) == 0) {
		int ok = 1;
		for (size_t i = 0; i < gone.n && ok; i++)
			ok = exec_bind(st, "DELETE FROM feed_members WHERE grp=?1", gone.v[i], NULL,
				       NULL, NULL, 0) >= 0 &&
			     exec_bind(st, "DELETE FROM feed_member_reads WHERE grp=?1", gone.v[i],
				       NULL, NULL, NULL, 0) >= 0;
		if (ok && exec_bind(st, orphans_sql, NULL, NULL, NULL, NULL, 0) >= 0 &&
		    store_commit(st) == 0) {
			for (size_t i = 0; i < gone.n; i++)
				log_info(
				    "digest.members_dropped group=%s reason=\"no longer mapped\"",
				    gone.v[i]);
		} else if (!ok) {
			store_rollback(st);
		}
	}
	strlist_free(&gone);
}

/* Replaces the stored members of gid with m; each (email, frequency) that
 * is new gets its digest state, one that no group asks for any more loses
 * it.  0 or -1. */
static int members_store(struct store *st, const char *gid, const struct feed_member *m, size_t n,
			 time_t now, int counts[FREQ_MINE + 1])
{
	struct db_stmt *ins = NULL, *sub = NULL, *rd = NULL;
	int rc = -1;
	if (store_begin(st) < 0)
		return -1;
	if (exec_bind(st, "DELETE FROM feed_members WHERE grp=?1", gid, NULL, NULL, NULL, 0) < 0 ||
	    !(ins = db_prepare(store_db(st), "INSERT INTO feed_members(grp, email, name, frequency)"
					     " VALUES(?1,?2,?3,?4) ON CONFLICT DO NOTHING")) ||
	    !(sub = db_prepare(store_db(st), "INSERT INTO feed_subscribers(email, frequency, since)"
					     " VALUES(?1,?2,?3) ON CONFLICT DO NOTHING")) ||
	    !(rd = db_prepare(
		  store_db(st),
		  "INSERT INTO feed_member_reads(grp, at, ok, members, error)"
		  " VALUES(?1,?2,1,?3,NULL) ON CONFLICT(grp) DO UPDATE SET at=excluded.at,"
		  " ok=excluded.ok, members=excluded.members, error=excluded.error")))
		goto out;
	for (size_t i = 0; i < n; i++) {
		counts[m[i].frequency]++;
		if (m[i].frequency == FREQ_NEVER)
			continue;
		const char *f = frequency_name(m[i].frequency);
		db_reset(ins);
		db_bind_text(ins, 1, gid, -1);
		db_bind_text(ins, 2, m[i].email, -1);
		db_bind_text(ins, 3, m[i].name, -1);
		db_bind_text(ins, 4, f, -1);
		db_reset(sub);
		db_bind_text(sub, 1, m[i].email, -1);
		db_bind_text(sub, 2, f, -1);
		db_bind_int64(sub, 3, (int64_t)now);
		if (db_step(ins) != DB_DONE || db_step(sub) != DB_DONE)
			goto out;
	}
	db_bind_text(rd, 1, gid, -1);
	db_bind_int64(rd, 2, (int64_t)now);
	db_bind_int64(rd, 3, (int64_t)n);
	if (db_step(rd) != DB_DONE || exec_bind(st, orphans_sql, NULL, NULL, NULL, NULL, 0) < 0)
		goto out;
	rc = 0;
out:
	db_finalize(ins);
	db_finalize(sub);
	db_finalize(rd);
	if (rc == 0)
		return store_commit(st);
	store_rollback(st);
	return -1;
}

/* Notes a failed read of gid's members (tried again after MEMBERS_RETRY). */
static void members_read_failed(struct store *st, const char *gid, const char *err, time_t now)
{
	struct db_stmt *s =
	    db_prepare(store_db(st), "INSERT INTO feed_member_reads(grp, at, ok, error)"
				     " VALUES(?1,?2,0,?3) ON CONFLICT(grp) DO UPDATE SET"
				     " at=excluded.at, ok=0, error=excluded.error");
	if (!s)
		return;
	db_bind_text(s, 1, gid, -1);
	db_bind_int64(s, 2, (int64_t)now);
	db_bind_text(s, 3, err, -1);
	db_step(s);
	db_finalize(s);
}

int subscribers_refresh_members(struct store *st, const struct mf_config *cfg,
				const struct feed_backend_ops *ops, void *feed_ctx, time_t now,
				int force)
{
	struct strlist gids = {0};
	int failed = 0;
	char q[600];

	if (cfg->digest.subscribers != SUBSCRIBERS_FEED || !ops || !ops->read_members)
		return 0;
	for (size_t i = 0; i < cfg->n_mailboxes; i++)
		if (cfg->mailboxes[i].group && !gid_listed(&gids, cfg->mailboxes[i].group))
			strlist_add(&gids, cfg->mailboxes[i].group);
	members_prune(st, &gids);
	for (size_t i = 0; i < gids.n; i++) {
		const char *gid = gids.v[i];
		struct feed_member *m = NULL;
		size_t n = 0;
		char err[512] = "";
		int counts[FREQ_MINE + 1] = {0};
		if (!force && !members_due(st, gid, now))
			continue;
		if (ops->read_members(feed_ctx, gid, &m, &n, err, sizeof err) < 0) {
			log_warn(
			    "digest.members_failed group=%s error=%s action=\"keeping the last "
			    "known members\"",
			    gid, log_quote(err, q, sizeof q));
			members_read_failed(st, gid, err, now);
			failed++;
			continue;
		}
		if (members_store(st, gid, m, n, now, counts) < 0) {
			log_error(
			    "digest.error group=%s error=\"cannot record the members\" detail=%s",
			    gid, LOG_Q(store_errmsg(st)));
			failed++;
		} else {
			log_info("digest.members group=%s each=%d daily=%d weekly=%d never=%d", gid,
				 counts[FREQ_EACH], counts[FREQ_DAILY], counts[FREQ_WEEKLY],
				 counts[FREQ_NEVER]);
		}
		feed_members_free(m, n);
	}
	strlist_free(&gids);
	return failed;
}

/* ------------------------------------------------------------------ */
/* Subscriptions as a digest run reads them                            */

/* ?1 (only this address) is cast: PostgreSQL cannot tell the type of a
 * NULL parameter that is only compared with NULL. */
static const char own_sql[] =
    "SELECT email, groups, frequency, hour, tz, last_sent, since, '' FROM subscribers"
    " WHERE (CAST(?1 AS TEXT) IS NULL OR email=lower(CAST(?1 AS TEXT))) AND email > ?2"
    " ORDER BY email LIMIT ?4";

/* Feed members with their digest state, without the addresses that have a
 * subscription of their own (config, command line or email: those win).
 * The groups joined by group_concat (SQLite) or string_agg (PostgreSQL). */
#define FEED_SQL(JOIN_GROUPS)                                                                      \
	"SELECT m.email, " JOIN_GROUPS ", m.frequency, NULL, NULL, s.last_sent,"                   \
	" s.since, m.frequency FROM feed_members m JOIN feed_subscribers s"                        \
	" ON s.email=m.email AND s.frequency=m.frequency"                                          \
	" WHERE NOT EXISTS (SELECT 1 FROM subscribers o WHERE o.email=m.email)"                    \
	" AND (CAST(?1 AS TEXT) IS NULL OR m.email=lower(CAST(?1 AS TEXT)))"                       \
	" AND (m.email, m.frequency) > (?2, ?3)"                                                   \
	" GROUP BY m.email, m.frequency, s.last_sent, s.since"                                     \
	" ORDER BY m.email, m.frequency LIMIT ?4"
static const char feed_sql_sqlite[] = FEED_SQL("group_concat(m.grp, ',')");
static const char feed_sql_pg[] = FEED_SQL("string_agg(m.grp, ',')");

static int label_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A feed member's group ids as labels: the [mailbox] name mapping it. */
static void feed_labels(const struct mf_config *cfg, struct strlist *groups)
{
	for (size_t i = 0; i < groups->n; i++) {
		for (size_t k = 0; k < cfg->n_mailboxes; k++) {
			const struct mf_mailbox *mb = &cfg->mailboxes[k];
			if (mb->group && mb->name && strcmp(mb->group, groups->v[i]) == 0) {
				free(groups->v[i]);
				groups->v[i] = xstrdup(mb->name);
				break;
			}
		}
	}
	qsort(groups->v, groups->n, sizeof *groups->v, label_cmp);
}

int subscribers_load(struct store *st, const struct mf_config *cfg, int feed,
		     const char *only_email, const char *after_email, const char *after_freq,
		     struct subscriber *subs)
{
	struct db_stmt *s;
	int n = 0;
	if (!(s = db_prepare(store_db(st),
			     feed ? db_sql(store_db(st), feed_sql_sqlite, feed_sql_pg) : own_sql)))
		return -1;
	int rc = DB_DONE;
	bind_text(s, 1, only_email);
	bind_text(s, 2, after_email);
	/* bound for own_sql too, which leaves it out: PostgreSQL wants a type
	 * for every parameter up to the highest */
	bind_text(s, 3, after_freq ? after_freq : "");
	db_bind_int64(s, 4, SUBSCRIBERS_BATCH);
	while (n < SUBSCRIBERS_BATCH && (rc = db_step(s)) == DB_ROW) {
		struct subscriber *sub = &subs[n++];
		const char *tz = db_column_text(s, 4);
		memset(sub, 0, sizeof *sub);
		sub->email = xstrdup(db_column_text(s, 0));
		strlist_split(&sub->groups, db_column_text(s, 1));
		if (frequency_parse(db_column_text(s, 2), &sub->freq) < 0)
			sub->freq = FREQ_DAILY;
		sub->hour = db_column_is_null(s, 3) ? -1 : (int)db_column_int64(s, 3);
		sub->tz = tz ? xstrdup(tz) : NULL;
		sub->has_last = !db_column_is_null(s, 5);
		sub->last_sent = (time_t)db_column_int64(s, 5);
		sub->since = (time_t)db_column_int64(s, 6);
		sub->feed = feed;
		if (feed)
			feed_labels(cfg, &sub->groups);
	}
	db_finalize(s);
	if (n < SUBSCRIBERS_BATCH && rc == DB_FAIL) {
		while (n > 0)
			subscribers_clear(&subs[--n]);
		return -1;
	}
	return n;
}

void subscribers_clear(struct subscriber *sub)
{
	free(sub->email);
	free(sub->tz);
	strlist_free(&sub->groups);
}

int subscribers_move_last_sent(struct store *st, const struct subscriber *sub, time_t from,
			       int from_set, time_t to, int to_set)
{
	/* IS NOT DISTINCT FROM: both engines' "equal, NULL included" */
	static const char own[] = "UPDATE subscribers SET last_sent=?3 WHERE email=?1 AND"
				  " last_sent IS NOT DISTINCT FROM ?2";
	static const char member[] = "UPDATE feed_subscribers SET last_sent=?3 WHERE email=?1 AND"
				     " last_sent IS NOT DISTINCT FROM ?2 AND frequency=?4";
	struct db_stmt *s = store_stmt(st, sub->feed ? member : own);
	int rc;
	if (!s) {
		log_error("digest.error error=%s", LOG_Q(store_errmsg(st)));
		return -1;
	}
	bind_text(s, 1, sub->email);
	if (from_set)
		db_bind_int64(s, 2, (int64_t)from);
	if (to_set)
		db_bind_int64(s, 3, (int64_t)to);
	if (sub->feed)
		bind_text(s, 4, frequency_name(sub->freq));
	rc = db_step(s) == DB_DONE ? (int)db_changes(store_db(st)) : -1;
	store_stmt_done(st, s);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Muted threads                                                       */

int subscribers_mute(struct store *st, const char *email, const char *remote_id, int mute)
{
	struct db_stmt *s;
	if (!(s = db_prepare(store_db(st),
			     mute ? "INSERT INTO mutes(email, remote_id, at)"
				    " VALUES(lower(?1), ?2, ?3) ON CONFLICT DO NOTHING"
				  : "DELETE FROM mutes WHERE email=lower(?1) AND remote_id=?2")))
		return -1;
	db_bind_text(s, 1, email, -1);
	db_bind_text(s, 2, remote_id, -1);
	if (mute)
		db_bind_int64(s, 3, (int64_t)time(NULL));
	int rc = db_step(s);
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

int subscribers_muted(struct store *st, const char *email, struct strlist *out)
{
	struct db_stmt *s;
	int rc;
	if (!(s = db_prepare(store_db(st), "SELECT remote_id FROM mutes WHERE email=lower(?1)")))
		return -1;
	db_bind_text(s, 1, email, -1);
	while ((rc = db_step(s)) == DB_ROW)
		strlist_add(out, db_column_text(s, 0));
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}
