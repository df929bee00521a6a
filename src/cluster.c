/* cluster.c — instances and leases over db.h (rules in cluster.h).  The
 * SQL of both engines sits side by side where it differs: the database
 * clock and string aggregation.  Claims on work items live with the
 * tables they claim (outbox, digest runs, queued notices; claims.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailfeed/claims.h"
#include "mailfeed/cluster.h"
#include "mailfeed/log.h"
#include "mailfeed/util.h"

/* The database's clock in milliseconds, per engine. */
#define NOW_SQLITE DB_NOW_MS_SQLITE
#define NOW_PG DB_NOW_MS_PG

/* the part of a lease's length held locally */
#define LOCAL_SHARE 0.9

static const struct db_migration migrations[] = {
    /* 1: instances, leases (and a generic work queue, dropped by 2) */
    {"CREATE TABLE instances("
     " id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
     " version TEXT NOT NULL, started INTEGER NOT NULL, heartbeat INTEGER NOT NULL);"
     "CREATE TABLE leases("
     " name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires INTEGER NOT NULL,"
     " since INTEGER NOT NULL, epoch INTEGER NOT NULL DEFAULT 1);"
     "CREATE INDEX leases_holder ON leases(holder);"
     "CREATE TABLE work_queue("
     " id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload BLOB,"
     " state TEXT NOT NULL DEFAULT 'pending', claimed_by TEXT, claim_until INTEGER,"
     " attempts INTEGER NOT NULL DEFAULT 0, reclaimed INTEGER NOT NULL DEFAULT 0,"
     " created INTEGER NOT NULL, done_at INTEGER);"
     "CREATE INDEX work_queue_due ON work_queue(queue, state, claim_until, id);",
     "CREATE TABLE instances("
     " id TEXT PRIMARY KEY, host TEXT NOT NULL, pid BIGINT NOT NULL,"
     " version TEXT NOT NULL, started BIGINT NOT NULL, heartbeat BIGINT NOT NULL);"
     "CREATE TABLE leases("
     " name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires BIGINT NOT NULL,"
     " since BIGINT NOT NULL, epoch BIGINT NOT NULL DEFAULT 1);"
     "CREATE INDEX leases_holder ON leases(holder);"
     "CREATE TABLE work_queue("
     " id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, payload BYTEA,"
     " state TEXT NOT NULL DEFAULT 'pending', claimed_by TEXT, claim_until BIGINT,"
     " attempts BIGINT NOT NULL DEFAULT 0, reclaimed BIGINT NOT NULL DEFAULT 0,"
     " created BIGINT NOT NULL, done_at BIGINT);"
     "CREATE INDEX work_queue_due ON work_queue(queue, state, claim_until, id);"},
    /* 2: the generic work queue goes: the outbox, digest runs and queued
     * notices are claimed in their own tables */
    {"DROP TABLE work_queue;", "DROP TABLE work_queue;"},
};

struct held {
	char *name;
	double deadline; /* monotonic */
	int64_t epoch;
};

struct cluster {
	struct db *db;
	char *id;
	char *version;
	int64_t lease_ms;
	/* the leases held: written by the thread that asks the database,
	 * read by the threads that check them (cluster_lease_held) */
	pthread_mutex_t mu;
	struct held *held;
	size_t n_held;
};

const char *cluster_instance_id(const struct cluster *cl) { return cl->id; }
int64_t cluster_lease_ms(const struct cluster *cl) { return cl->lease_ms; }

/* Prepares the engine's text of a statement. */
static struct db_stmt *prep(struct cluster *cl, const char *sqlite, const char *pg)
{
	return db_prepare(cl->db, db_sql(cl->db, sqlite, pg));
}

/* Runs a statement without rows and finalizes it: DB_DONE or DB_FAIL. */
static int run(struct db_stmt *s)
{
	if (!s)
		return DB_FAIL;
	int rc = db_step(s);
	db_finalize(s);
	return rc;
}

static int register_instance(struct cluster *cl)
{
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	struct db_stmt *s = prep(cl,
				 "INSERT INTO instances(id, host, pid, version, started, heartbeat)"
				 " VALUES(?1, ?2, ?3, ?4, " NOW_SQLITE ", " NOW_SQLITE ")"
				 " ON CONFLICT(id) DO UPDATE SET heartbeat=excluded.heartbeat",
				 "INSERT INTO instances(id, host, pid, version, started, heartbeat)"
				 " VALUES(?1, ?2, ?3, ?4, " NOW_PG ", " NOW_PG ")"
				 " ON CONFLICT(id) DO UPDATE SET heartbeat=excluded.heartbeat");
	if (!s)
		return -1;
	db_bind_text(s, 1, cl->id, -1);
	db_bind_text(s, 2, host, -1);
	db_bind_int64(s, 3, (int64_t)getpid());
	db_bind_text(s, 4, cl->version, -1);
	if (run(s) != DB_DONE)
		return -1;
	/* an instance silent for a day is gone (kill -9, host lost): until
	 * then status shows it with its last heartbeat */
	s = prep(cl, "DELETE FROM instances WHERE heartbeat < " NOW_SQLITE " - 86400000",
		 "DELETE FROM instances WHERE heartbeat < " NOW_PG " - 86400000");
	return run(s) == DB_DONE ? 0 : -1;
}

/* Instances of this host whose process no longer runs (a daemon killed
 * and started again): their leases end now, not at their expiry, so that
 * a restart does not wait a lease time for its own folders.  Best effort:
 * a pid taken by another process meanwhile leaves it to the expiry. */
static void forget_gone_here(struct cluster *cl, const char *host)
{
	struct strlist gone = {0};
	struct db_stmt *s = prep(cl, "SELECT id FROM instances WHERE host=?1", NULL);
	if (!s)
		return;
	db_bind_text(s, 1, host, -1);
	while (db_step(s) == DB_ROW)
		if (claims_claimer_gone(db_column_text(s, 0)))
			strlist_add(&gone, db_column_text(s, 0));
	db_finalize(s);
	for (size_t i = 0; i < gone.n; i++) {
		/* expired rather than deleted: the next holder's epoch follows */
		s = prep(cl, "UPDATE leases SET expires=0 WHERE holder=?1", NULL);
		if (s)
			db_bind_text(s, 1, gone.v[i], -1);
		if (run(s) != DB_DONE)
			break;
		s = prep(cl, "DELETE FROM instances WHERE id=?1", NULL);
		if (s)
			db_bind_text(s, 1, gone.v[i], -1);
		if (run(s) != DB_DONE)
			break;
		log_info("cluster.instance_gone instance=%s reason=\"process gone\"",
			 LOG_Q(gone.v[i]));
	}
	strlist_free(&gone);
}

struct cluster *cluster_open(struct db *db, const char *version, int64_t lease_ms, char *err,
			     size_t errlen)
{
	if (db_migrate(db, "cluster", migrations, (int)(sizeof migrations / sizeof *migrations),
		       NULL) < 0) {
		snprintf(err, errlen, "%s", db_errmsg(db));
		return NULL;
	}
	struct cluster *cl = xcalloc(1, sizeof *cl);
	pthread_mutex_init(&cl->mu, NULL);
	cl->db = db;
	cl->lease_ms = lease_ms > 0 ? lease_ms : CLUSTER_LEASE_MS_DEFAULT;
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	unsigned char rnd[6];
	char hex[13];
	if (random_bytes(rnd, sizeof rnd) < 0)
		memset(rnd, 0, sizeof rnd);
	hex_encode(rnd, sizeof rnd, hex);
	cl->id = xasprintf("%s:%ld:%s", host, (long)getpid(), hex);
	cl->version = xstrdup(version ? version : "");
	forget_gone_here(cl, host);
	if (register_instance(cl) < 0) {
		snprintf(err, errlen, "cannot register the instance: %s", db_errmsg(db));
		cluster_close(cl);
		return NULL;
	}
	return cl;
}

static struct held *find_held(const struct cluster *cl, const char *name)
{
	for (size_t i = 0; i < cl->n_held; i++)
		if (strcmp(cl->held[i].name, name) == 0)
			return &cl->held[i];
	return NULL;
}

static void forget(struct cluster *cl, const char *name)
{
	pthread_mutex_lock(&cl->mu);
	struct held *h = find_held(cl, name);
	if (h) {
		free(h->name);
		*h = cl->held[--cl->n_held];
	}
	pthread_mutex_unlock(&cl->mu);
}

static void keep(struct cluster *cl, const char *name, double sent, int64_t epoch)
{
	pthread_mutex_lock(&cl->mu);
	struct held *h = find_held(cl, name);
	if (!h) {
		cl->held = xrealloc(cl->held, (cl->n_held + 1) * sizeof *cl->held);
		h = &cl->held[cl->n_held++];
		h->name = xstrdup(name);
		h->epoch = 0;
	}
	h->deadline = sent + (double)cl->lease_ms * LOCAL_SHARE / 1000.0;
	if (epoch > 0)
		h->epoch = epoch;
	pthread_mutex_unlock(&cl->mu);
}

void cluster_leave(struct cluster *cl)
{
	/* expired rather than deleted: the next holder's epoch follows ours */
	struct db_stmt *s = prep(cl, "UPDATE leases SET expires=0 WHERE holder=?1", NULL);
	if (s) {
		db_bind_text(s, 1, cl->id, -1);
		run(s);
	}
	s = prep(cl, "DELETE FROM instances WHERE id=?1", NULL);
	if (s) {
		db_bind_text(s, 1, cl->id, -1);
		run(s);
	}
	while (cl->n_held)
		forget(cl, cl->held[0].name);
}

void cluster_close(struct cluster *cl)
{
	if (!cl)
		return;
	cluster_leave(cl);
	free(cl->held);
	pthread_mutex_destroy(&cl->mu);
	free(cl->id);
	free(cl->version);
	free(cl);
}

/* --- leases ------------------------------------------------------------ */

#define ACQUIRE(NOW)                                                                               \
	"INSERT INTO leases(name, holder, expires, since, epoch)"                                  \
	" VALUES(?1, ?2, " NOW " + ?3, " NOW ", 1)"                                                \
	" ON CONFLICT(name) DO UPDATE SET"                                                         \
	" epoch=CASE WHEN leases.holder=excluded.holder THEN leases.epoch"                         \
	" ELSE leases.epoch + 1 END,"                                                              \
	" since=CASE WHEN leases.holder=excluded.holder THEN leases.since"                         \
	" ELSE excluded.since END,"                                                                \
	" holder=excluded.holder, expires=excluded.expires"                                        \
	" WHERE leases.holder=excluded.holder OR leases.expires < " NOW " RETURNING epoch"

int cluster_lease_acquire(struct cluster *cl, const char *name, int64_t *epoch)
{
	double sent = now_monotonic();
	struct db_stmt *s = prep(cl, ACQUIRE(NOW_SQLITE), ACQUIRE(NOW_PG));
	if (!s)
		return -1;
	db_bind_text(s, 1, name, -1);
	db_bind_text(s, 2, cl->id, -1);
	db_bind_int64(s, 3, cl->lease_ms);
	int rc = db_step(s);
	int64_t e = rc == DB_ROW ? db_column_int64(s, 0) : 0;
	if (rc == DB_ROW)
		rc = db_step(s) == DB_FAIL ? DB_FAIL : DB_ROW;
	db_finalize(s);
	if (rc == DB_FAIL)
		return -1;
	if (rc == DB_DONE) {
		forget(cl, name);
		return 0;
	}
	keep(cl, name, sent, e);
	if (epoch)
		*epoch = e;
	return 1;
}

int cluster_lease_renew(struct cluster *cl, const char *name)
{
	double sent = now_monotonic();
	struct db_stmt *s = prep(cl,
				 "UPDATE leases SET expires=" NOW_SQLITE " + ?3"
				 " WHERE name=?1 AND holder=?2 AND expires >= " NOW_SQLITE,
				 "UPDATE leases SET expires=" NOW_PG " + ?3"
				 " WHERE name=?1 AND holder=?2 AND expires >= " NOW_PG);
	if (!s)
		return -1;
	db_bind_text(s, 1, name, -1);
	db_bind_text(s, 2, cl->id, -1);
	db_bind_int64(s, 3, cl->lease_ms);
	if (run(s) != DB_DONE)
		return -1;
	if (db_changes(cl->db) == 1) {
		keep(cl, name, sent, 0);
		return 1;
	}
	forget(cl, name);
	return 0;
}

int cluster_lease_release(struct cluster *cl, const char *name)
{
	forget(cl, name);
	struct db_stmt *s =
	    prep(cl, "UPDATE leases SET expires=0 WHERE name=?1 AND holder=?2", NULL);
	if (!s)
		return -1;
	db_bind_text(s, 1, name, -1);
	db_bind_text(s, 2, cl->id, -1);
	return run(s) == DB_DONE ? 0 : -1;
}

double cluster_lease_left(const struct cluster *cl, const char *name)
{
	struct cluster *c = (struct cluster *)cl; /* the lock only */
	pthread_mutex_lock(&c->mu);
	const struct held *h = find_held(cl, name);
	double left = h ? h->deadline - now_monotonic() : 0;
	pthread_mutex_unlock(&c->mu);
	return left > 0 ? left : 0;
}

int cluster_lease_held(const struct cluster *cl, const char *name)
{
	return cluster_lease_left(cl, name) > 0;
}

int cluster_leases_held(const struct cluster *cl, const char *prefix)
{
	struct cluster *c = (struct cluster *)cl; /* the lock only */
	size_t plen = strlen(prefix);
	int n = 0;
	double now = now_monotonic();
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < cl->n_held; i++)
		n += strncmp(cl->held[i].name, prefix, plen) == 0 && now < cl->held[i].deadline;
	pthread_mutex_unlock(&c->mu);
	return n;
}

static int has(const struct strlist *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], name) == 0)
			return 1;
	return 0;
}

/* Renews every lease of this instance in one statement (one commit,
 * however many folders); those held here and not renewed are lost.  The
 * number lost, or -1 (the leases stay held until their local deadlines). */
static int renew_all(struct cluster *cl)
{
	double sent = now_monotonic();
	struct db_stmt *s = prep(cl,
				 "UPDATE leases SET expires=" NOW_SQLITE " + ?2"
				 " WHERE holder=?1 AND expires >= " NOW_SQLITE " RETURNING name",
				 "UPDATE leases SET expires=" NOW_PG " + ?2"
				 " WHERE holder=?1 AND expires >= " NOW_PG " RETURNING name");
	if (!s)
		return -1;
	db_bind_text(s, 1, cl->id, -1);
	db_bind_int64(s, 2, cl->lease_ms);
	struct strlist renewed = {0}, held = {0};
	int rc;
	while ((rc = db_step(s)) == DB_ROW)
		if (db_column_text(s, 0))
			strlist_add(&renewed, db_column_text(s, 0));
	db_finalize(s);
	if (rc != DB_DONE) {
		strlist_free(&renewed);
		return -1;
	}
	pthread_mutex_lock(&cl->mu);
	for (size_t i = 0; i < cl->n_held; i++)
		strlist_add(&held, cl->held[i].name);
	pthread_mutex_unlock(&cl->mu);
	int lost = 0;
	for (size_t i = 0; i < held.n; i++) {
		if (has(&renewed, held.v[i]))
			continue;
		forget(cl, held.v[i]);
		lost++;
	}
	/* and what the database says is ours (an answer lost on the way) */
	for (size_t i = 0; i < renewed.n; i++)
		keep(cl, renewed.v[i], sent, 0);
	strlist_free(&renewed);
	strlist_free(&held);
	return lost;
}

int cluster_heartbeat(struct cluster *cl)
{
	struct db_stmt *s = prep(cl, "UPDATE instances SET heartbeat=" NOW_SQLITE " WHERE id=?1",
				 "UPDATE instances SET heartbeat=" NOW_PG " WHERE id=?1");
	if (!s)
		return -1;
	db_bind_text(s, 1, cl->id, -1);
	if (run(s) != DB_DONE)
		return -1;
	if (db_changes(cl->db) == 0 && register_instance(cl) < 0)
		return -1;
	return renew_all(cl);
}

/* --- instances --------------------------------------------------------- */

int cluster_instances(struct cluster *cl, void (*fn)(const struct cluster_instance *in, void *arg),
		      void *arg)
{
	return cluster_instances_db(cl->db, fn, arg);
}

int cluster_instances_db(struct db *db, void (*fn)(const struct cluster_instance *in, void *arg),
			 void *arg)
{
	int version = db_schema_version(db, "cluster");
	if (version <= 0)
		return version; /* never joined: no instance to show */
	struct db_stmt *s =
	    db_prepare(db, db_sql(db,
				  "SELECT i.id, i.host, i.pid, i.version, i.started, i.heartbeat,"
				  " (SELECT group_concat(name, ',') FROM"
				  "  (SELECT name FROM leases WHERE holder=i.id"
				  "   AND expires >= " NOW_SQLITE " ORDER BY name)),"
				  " " NOW_SQLITE " FROM instances i ORDER BY i.started, i.id",
				  "SELECT i.id, i.host, i.pid, i.version, i.started, i.heartbeat,"
				  " (SELECT string_agg(name, ',' ORDER BY name) FROM leases"
				  "  WHERE holder=i.id AND expires >= " NOW_PG "),"
				  " " NOW_PG " FROM instances i ORDER BY i.started, i.id"));
	if (!s)
		return -1;
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		struct cluster_instance in = {
		    .id = db_column_text(s, 0),
		    .host = db_column_text(s, 1),
		    .pid = db_column_int64(s, 2),
		    .version = db_column_text(s, 3),
		    .started_ms = db_column_int64(s, 4),
		    .heartbeat_ms = db_column_int64(s, 5),
		    .holds = db_column_text(s, 6),
		    .now_ms = db_column_int64(s, 7),
		};
		if (!in.holds)
			in.holds = "";
		fn(&in, arg);
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

int cluster_live_instances(struct cluster *cl)
{
	struct db_stmt *s =
	    prep(cl, "SELECT COUNT(*) FROM instances WHERE heartbeat >= " NOW_SQLITE " - ?1",
		 "SELECT COUNT(*) FROM instances WHERE heartbeat >= " NOW_PG " - ?1");
	if (!s)
		return -1;
	db_bind_int64(s, 1, cl->lease_ms);
	int n = db_step(s) == DB_ROW ? (int)db_column_int64(s, 0) : -1;
	db_finalize(s);
	return n;
}

int cluster_leases(struct cluster *cl, const char *prefix,
		   void (*fn)(const struct cluster_lease *l, void *arg), void *arg)
{
	struct db_stmt *s = prep(cl,
				 "SELECT name, holder, expires - " NOW_SQLITE ", epoch FROM leases"
				 " WHERE substr(name, 1, length(?1))=?1 ORDER BY name",
				 "SELECT name, holder, expires - " NOW_PG ", epoch FROM leases"
				 " WHERE substr(name, 1, length(?1))=?1 ORDER BY name");
	if (!s)
		return -1;
	db_bind_text(s, 1, prefix, -1);
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		struct cluster_lease l = {
		    .name = db_column_text(s, 0),
		    .holder = db_column_text(s, 1),
		    .left_ms = db_column_int64(s, 2),
		    .epoch = db_column_int64(s, 3),
		};
		if (!l.name || !l.holder)
			continue;
		l.mine = strcmp(l.holder, cl->id) == 0;
		if (l.left_ms < 0)
			l.left_ms = 0; /* expired: free to take */
		fn(&l, arg);
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}
