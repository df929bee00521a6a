/* cmd_migrate_state.c — `mailfeed migrate-state --to TARGET`: copies a
 * whole state (SQLite file or PostgreSQL database) into another one, empty,
 * of either engine, while no daemon uses the source.
 *
 * The target's schema is made by store_open; the tables to copy and their
 * columns are read from the target's catalog (so a table added by a later
 * migration is copied without a change here), except the cluster's own
 * tables (instances, leases, its work queue: they describe running
 * processes, not mail) and the schema versions.  Every row is copied with
 * its id, in batches of multi-row INSERTs, all in one transaction on the
 * target: a failure leaves the target as empty as it was.  The source is
 * read inside one transaction too (a consistent view).  On PostgreSQL the
 * identity sequences are then moved past the highest id copied, and each
 * table's row count is checked against the source's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/cluster.h"
#include "mailfeed/config.h"
#include "mailfeed/db.h"
#include "mailfeed/messages.h"
#include "mailfeed/state_owner.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

/* Rows per INSERT, and the bytes a batch may hold before it is sent. */
#define BATCH_ROWS 500
#define BATCH_BYTES (8u << 20)
/* Parameters per statement (below SQLite's 32766 and PostgreSQL's 65535). */
#define BATCH_PARAMS 30000

/* Tables of the state that are not copied. */
static const char *const not_copied[] = {"instances", "leases", "work_queue", "schema_versions"};
/* Copied first, in this order (others refer to them); the rest by name. */
static const char *const parents[] = {"folders", "messages", "threads", "outbox"};

enum col_kind { COL_TEXT, COL_BLOB, COL_CAST };

struct column {
	char *name;
	enum col_kind kind;
	char *cast; /* PostgreSQL type a text value is cast to (COL_CAST) */
	int serial; /* PostgreSQL: an identity or sequence default */
};

struct table {
	char *name;
	struct column *cols;
	size_t ncols;
	int in_source;
	long long rows;
};

struct value {
	int null;
	char *data;
	size_t len;
};

struct migration {
	struct store *from, *to;
	struct db *src, *dst;
	const char *from_name, *to_name; /* for messages, without a password */
	struct table *tables;
	size_t ntables;
	/* the batch being filled */
	struct value *vals;
	size_t nrows, nbytes;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] migrate-state (--to TARGET | --to-dsn-file FILE)\n"
		     "                [--from PATH_OR_DSN]\n\n"
		     "Copies the state ([gateway] state or state_dsn_file of the config, or\n"
		     "--from) into TARGET: a postgresql:// DSN, or an SQLite file path.  A DSN\n"
		     "with a password belongs in a private file: --to-dsn-file FILE (its first\n"
		     "line).  The target must be empty; every table is copied in one\n"
		     "transaction and counted.  Stop every daemon using the source first.\n\n"
		     "Exit status: 0 copied, 1 refused or failed (nothing is left in the\n"
		     "target), 2 usage or configuration error.\n");
}

static int is_listed(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return 1;
	return 0;
}

#define LISTED(name, list) is_listed(name, list, sizeof list / sizeof *list)

/* --- the catalog ---------------------------------------------------------- */

/* The names of db's tables (owned array of owned strings). */
static int list_tables(struct db *db, char ***names, size_t *n)
{
	struct db_stmt *s =
	    db_prepare(db, db_sql(db,
				  "SELECT name FROM sqlite_master WHERE type='table'"
				  " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
				  "SELECT table_name FROM information_schema.tables WHERE"
				  " table_schema=current_schema() AND table_type='BASE TABLE'"
				  " ORDER BY table_name"));
	*names = NULL;
	*n = 0;
	if (!s)
		return -1;
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		*names = xrealloc(*names, (*n + 1) * sizeof **names);
		(*names)[(*n)++] = xstrdup(db_column_text(s, 0));
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The kind of a column from its declared type: SQLite's affinity rules
 * (a text value bound to an INTEGER column is stored as an integer), or
 * PostgreSQL's type, which text is cast to. */
static void column_kind(struct db *db, struct column *c, const char *type)
{
	char *t = xstrdup(type ? type : "");
	str_lower(t);
	c->kind = COL_TEXT;
	if (db_engine(db) == DB_SQLITE) {
		if (!strstr(t, "int") && !strstr(t, "char") && !strstr(t, "clob") &&
		    !strstr(t, "text"))
			c->kind = strstr(t, "blob") || !*t ? COL_BLOB : COL_TEXT;
	} else if (strcmp(t, "bytea") == 0) {
		c->kind = COL_BLOB;
	} else if (strcmp(t, "text") != 0 && strncmp(t, "character", 9) != 0 &&
		   t[strspn(t, "abcdefghijklmnopqrstuvwxyz ")] == 0) {
		c->kind = COL_CAST;
		c->cast = xstrdup(t);
	}
	free(t);
}

/* The columns of table in db, in their order. */
static int list_columns(struct db *db, const char *table, struct column **cols, size_t *n)
{
	struct db_stmt *s = db_prepare(
	    db, db_sql(db, "SELECT name, type, 0 FROM pragma_table_info(?1) ORDER BY cid",
		       "SELECT column_name, data_type, is_identity='YES' OR"
		       " COALESCE(column_default, '') LIKE 'nextval(%'"
		       " FROM information_schema.columns WHERE table_schema=current_schema()"
		       " AND table_name=?1 ORDER BY ordinal_position"));
	*cols = NULL;
	*n = 0;
	if (!s)
		return -1;
	db_bind_text(s, 1, table, -1);
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		*cols = xrealloc(*cols, (*n + 1) * sizeof **cols);
		struct column *c = &(*cols)[(*n)++];
		memset(c, 0, sizeof *c);
		c->name = xstrdup(db_column_text(s, 0));
		column_kind(db, c, db_column_text(s, 1));
		c->serial = (int)db_column_int64(s, 2);
	}
	db_finalize(s);
	return rc == DB_DONE ? 0 : -1;
}

static void free_columns(struct column *cols, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(cols[i].name);
		free(cols[i].cast);
	}
	free(cols);
}

static int has_column(const struct column *cols, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(cols[i].name, name) == 0)
			return 1;
	return 0;
}

/* Whether table holds a row: 1, 0, or -1. */
static int table_has_rows(struct db *db, const char *table)
{
	char *sql = xasprintf("SELECT 1 FROM \"%s\" LIMIT 1", table);
	struct db_stmt *s = db_prepare(db, sql);
	free(sql);
	if (!s)
		return -1;
	int rc = db_step(s);
	db_finalize(s);
	return rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : -1;
}

static long long table_count(struct db *db, const char *table)
{
	char *sql = xasprintf("SELECT COUNT(*) FROM \"%s\"", table);
	struct db_stmt *s = db_prepare(db, sql);
	long long n = -1;
	free(sql);
	if (s && db_step(s) == DB_ROW)
		n = (long long)db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

/* --- copying ---------------------------------------------------------------- */

static void batch_clear(struct migration *m, const struct table *t)
{
	for (size_t i = 0; i < m->nrows * t->ncols; i++)
		free(m->vals[i].data);
	m->nrows = m->nbytes = 0;
}

/* INSERT of the batch's rows, each value as its target column takes it. */
static char *insert_sql(const struct migration *m, const struct table *t)
{
	struct buf b;
	int p = 1;
	buf_init(&b);
	buf_printf(&b, "INSERT INTO \"%s\"(", t->name);
	for (size_t c = 0; c < t->ncols; c++)
		buf_printf(&b, "%s\"%s\"", c ? ", " : "", t->cols[c].name);
	buf_puts(&b, db_engine(m->dst) == DB_POSTGRES ? ") OVERRIDING SYSTEM VALUE VALUES"
						      : ") VALUES");
	for (size_t r = 0; r < m->nrows; r++) {
		buf_puts(&b, r ? ", (" : " (");
		for (size_t c = 0; c < t->ncols; c++, p++) {
			const struct column *col = &t->cols[c];
			if (db_engine(m->dst) == DB_POSTGRES && col->kind == COL_CAST)
				buf_printf(&b, "%sCAST(?%d AS %s)", c ? ", " : "", p, col->cast);
			else
				buf_printf(&b, "%s?%d", c ? ", " : "", p);
		}
		buf_putc(&b, ')');
	}
	return b.data; /* owned by the caller */
}

/* Writes the batch into the target. 0 or -1. */
static int batch_flush(struct migration *m, struct table *t)
{
	if (m->nrows == 0)
		return 0;
	char *sql = insert_sql(m, t);
	struct db_stmt *s = db_prepare(m->dst, sql);
	free(sql);
	int rc = -1;
	if (s) {
		for (size_t i = 0; i < m->nrows * t->ncols; i++) {
			const struct value *v = &m->vals[i];
			int p = (int)i + 1;
			if (v->null)
				db_bind_null(s, p);
			else if (t->cols[i % t->ncols].kind == COL_BLOB)
				db_bind_blob(s, p, v->data, v->len);
			else
				db_bind_text(s, p, v->data, (int)v->len);
		}
		rc = db_step(s) == DB_DONE ? 0 : -1;
		db_finalize(s);
	}
	t->rows += rc == 0 ? (long long)m->nrows : 0;
	batch_clear(m, t);
	return rc;
}

/* Adds the source row s stands on to the batch, sending it when full. */
static int batch_add(struct migration *m, struct table *t, struct db_stmt *s)
{
	size_t per_batch = BATCH_PARAMS / t->ncols;
	if (per_batch > BATCH_ROWS)
		per_batch = BATCH_ROWS;
	for (size_t c = 0; c < t->ncols; c++) {
		struct value *v = &m->vals[m->nrows * t->ncols + c];
		const void *data;
		memset(v, 0, sizeof *v);
		v->null = db_column_is_null(s, (int)c);
		if (v->null)
			continue;
		data = db_column_blob(s, (int)c, &v->len);
		v->data = xmalloc(v->len + 1);
		if (v->len)
			memcpy(v->data, data, v->len);
		v->data[v->len] = 0;
		m->nbytes += v->len;
	}
	m->nrows++;
	if (m->nrows >= per_batch || m->nbytes >= BATCH_BYTES)
		return batch_flush(m, t);
	return 0;
}

/* Takes every row s gives into the batch: the number of rows, or -1. */
static long long take_rows(struct migration *m, struct table *t, struct db_stmt *s)
{
	long long n = 0;
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		if (batch_add(m, t, s) < 0)
			return -1;
		n++;
	}
	return rc == DB_DONE ? n : -1;
}

/* Reads table t of the source into the target: on PostgreSQL through a
 * cursor (a result is held whole in memory), on SQLite row by row. */
static int copy_rows(struct migration *m, struct table *t)
{
	struct buf sel;
	int rc = 0;
	buf_init(&sel);
	buf_puts(&sel, "SELECT ");
	for (size_t c = 0; c < t->ncols; c++)
		buf_printf(&sel, "%s\"%s\"", c ? ", " : "", t->cols[c].name);
	buf_printf(&sel, " FROM \"%s\"", t->name);
	m->vals = xrealloc(m->vals, BATCH_ROWS * t->ncols * sizeof *m->vals);
	if (db_engine(m->src) == DB_SQLITE) {
		struct db_stmt *s = db_prepare(m->src, sel.data);
		rc = s && take_rows(m, t, s) >= 0 ? 0 : -1;
		db_finalize(s);
	} else {
		char *declare = xasprintf("DECLARE mf_copy NO SCROLL CURSOR FOR %s", sel.data);
		struct db_stmt *s = NULL;
		rc = db_exec(m->src, declare);
		free(declare);
		if (rc == 0 && !(s = db_prepare(m->src, "FETCH FORWARD 1000 FROM mf_copy")))
			rc = -1;
		for (long long got = 1; rc == 0 && got > 0; db_reset(s))
			if ((got = take_rows(m, t, s)) < 0)
				rc = -1;
		db_finalize(s);
		if (rc == 0)
			rc = db_exec(m->src, "CLOSE mf_copy");
	}
	buf_free(&sel);
	if (rc == 0)
		rc = batch_flush(m, t);
	batch_clear(m, t);
	return rc;
}

/* PostgreSQL: the next id a sequence gives is past the highest copied. */
static int move_sequences(struct migration *m, const struct table *t)
{
	for (size_t c = 0; c < t->ncols; c++) {
		if (!t->cols[c].serial)
			continue;
		char *sql = xasprintf("SELECT setval(pg_get_serial_sequence(?1, ?2),"
				      " COALESCE(MAX(\"%s\"), 0) + 1, false) FROM \"%s\"",
				      t->cols[c].name, t->name);
		struct db_stmt *s = db_prepare(m->dst, sql);
		free(sql);
		if (!s)
			return -1;
		db_bind_text(s, 1, t->name, -1);
		db_bind_text(s, 2, t->cols[c].name, -1);
		int rc = db_step(s);
		db_finalize(s);
		if (rc != DB_ROW)
			return -1;
	}
	return 0;
}

/* --- the plan --------------------------------------------------------------- */

static int name_in(char **names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return 1;
	return 0;
}

/* Table name of the target, with the target's columns the source has too. */
static int plan_table(struct migration *m, const char *name, char **src_names, size_t ns)
{
	struct table *t;
	struct column *src_cols = NULL;
	size_t nsrc = 0, kept = 0;
	m->tables = xrealloc(m->tables, (m->ntables + 1) * sizeof *m->tables);
	t = &m->tables[m->ntables++];
	memset(t, 0, sizeof *t);
	t->name = xstrdup(name);
	t->in_source = name_in(src_names, ns, name);
	if (list_columns(m->dst, name, &t->cols, &t->ncols) < 0 ||
	    (t->in_source && list_columns(m->src, name, &src_cols, &nsrc) < 0))
		return -1;
	for (size_t c = 0; c < t->ncols; c++) {
		if (t->in_source && has_column(src_cols, nsrc, t->cols[c].name)) {
			t->cols[kept++] = t->cols[c];
			continue;
		}
		free(t->cols[c].name);
		free(t->cols[c].cast);
	}
	t->ncols = kept;
	free_columns(src_cols, nsrc);
	return 0;
}

/* Every table to copy, parents first; every table of the source must have
 * its place in the target. 0, or -1 with err. */
static int plan(struct migration *m, char *err, size_t errlen)
{
	char **dn = NULL, **sn = NULL;
	size_t nd = 0, ns = 0;
	int rc = -1;
	if (list_tables(m->dst, &dn, &nd) < 0 || list_tables(m->src, &sn, &ns) < 0) {
		snprintf(err, errlen, "cannot list the tables: %s",
			 db_errmsg(db_error(m->dst) ? m->dst : m->src));
		goto out;
	}
	for (size_t i = 0; i < ns; i++)
		if (!LISTED(sn[i], not_copied) && !name_in(dn, nd, sn[i])) {
			snprintf(err, errlen, "table %s of %s has no counterpart in %s", sn[i],
				 m->from_name, m->to_name);
			goto out;
		}
	for (size_t i = 0; i < sizeof parents / sizeof *parents; i++)
		if (name_in(dn, nd, parents[i]) && plan_table(m, parents[i], sn, ns) < 0)
			goto catalog;
	for (size_t i = 0; i < nd; i++)
		if (!LISTED(dn[i], parents) && !LISTED(dn[i], not_copied) &&
		    plan_table(m, dn[i], sn, ns) < 0)
			goto catalog;
	rc = 0;
	goto out;
catalog:
	snprintf(err, errlen, "cannot read the columns: %s",
		 db_errmsg(db_error(m->dst) ? m->dst : m->src));
out:
	free_names(dn, nd);
	free_names(sn, ns);
	return rc;
}

static void plan_free(struct migration *m)
{
	for (size_t i = 0; i < m->ntables; i++) {
		free(m->tables[i].name);
		free_columns(m->tables[i].cols, m->tables[i].ncols);
	}
	free(m->tables);
	free(m->vals);
}

/* --- the checks before ------------------------------------------------------ */

/* 1 when target holds a row in a table that would be copied (*which: its
 * name), 0 when it is empty or not there yet, -1 with err.  Looked at
 * before the target's schema is made, so that a refused target is left
 * exactly as it was. */
static int target_used(const char *target, const char *shown, char **which, char *err,
		       size_t errlen)
{
	char **names = NULL;
	size_t n = 0;
	int found = 0;
	*which = NULL;
	if (!db_is_dsn(target) && access(target, F_OK) != 0)
		return 0;
	struct db *db =
	    db_open_flags(target, db_is_dsn(target) ? 0 : DB_OPEN_READONLY, err, errlen, NULL);
	if (!db)
		return -1;
	if (list_tables(db, &names, &n) < 0)
		found = -1;
	for (size_t i = 0; found == 0 && i < n; i++) {
		if (LISTED(names[i], not_copied))
			continue;
		if ((found = table_has_rows(db, names[i])) > 0)
			*which = xstrdup(names[i]);
	}
	if (found < 0)
		snprintf(err, errlen, "cannot read the target %s: %s", shown, db_errmsg(db));
	free_names(names, n);
	db_close(db);
	return found;
}

/* PostgreSQL: an instance whose heartbeat is recent is still running on
 * the source (SQLite's daemon lock tells that on one host).  0, or -1
 * with err. */
static int source_idle(struct migration *m, char *err, size_t errlen)
{
	char **names = NULL;
	size_t n = 0;
	int rc = 0;
	if (db_engine(m->src) != DB_POSTGRES)
		return 0;
	if (list_tables(m->src, &names, &n) == 0 && name_in(names, n, "instances")) {
		struct db_stmt *s = db_prepare(
		    m->src, "SELECT host, pid, (?1 - heartbeat) / 1000 FROM instances"
			    " WHERE heartbeat > ?1 - ?2 ORDER BY heartbeat DESC LIMIT 1");
		if (s) {
			db_bind_int64(s, 1, db_now_ms(m->src));
			db_bind_int64(s, 2, 2 * CLUSTER_LEASE_MS_DEFAULT);
			if (db_step(s) == DB_ROW) {
				snprintf(
				    err, errlen,
				    "a mailfeed (host %s, pid %lld) is running on %s: its last "
				    "heartbeat was %llds ago; stop every instance first",
				    db_column_text(s, 0), (long long)db_column_int64(s, 1),
				    m->from_name, (long long)db_column_int64(s, 2));
				rc = -1;
			}
			db_finalize(s);
		}
	}
	free_names(names, n);
	return rc;
}

/* --- the copy --------------------------------------------------------------- */

static const char *either_error(const struct migration *m)
{
	return db_error(m->dst) != DB_ERR_NONE ? db_errmsg(m->dst) : db_errmsg(m->src);
}

/* One table copied and counted. 0, or -1 with err. */
static int copy_table(struct migration *m, struct table *t, char *err, size_t errlen)
{
	if (t->ncols == 0) {
		snprintf(err, errlen, "table %s: no column of the target is in the source",
			 t->name);
		return -1;
	}
	if (copy_rows(m, t) < 0) {
		snprintf(err, errlen, "copying table %s failed: %s", t->name, either_error(m));
		return -1;
	}
	long long in_src = table_count(m->src, t->name), in_dst = table_count(m->dst, t->name);
	if (in_src != t->rows || in_dst != t->rows) {
		snprintf(err, errlen,
			 "table %s: %lld rows in the source, %lld copied, %lld in the target",
			 t->name, in_src, t->rows, in_dst);
		return -1;
	}
	if (db_engine(m->dst) == DB_POSTGRES && move_sequences(m, t) < 0) {
		snprintf(err, errlen, "table %s: cannot move its id sequence: %s", t->name,
			 db_errmsg(m->dst));
		return -1;
	}
	return 0;
}

/* Every planned table in one transaction on the target, read in one
 * transaction on the source.  0, or -1 with err (the target unchanged). */
static int copy_all(struct migration *m, char *err, size_t errlen)
{
	int rc = db_begin(m->src);
	if (rc == 0 && db_engine(m->src) == DB_POSTGRES)
		rc = db_exec(m->src, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
	if (rc < 0) {
		snprintf(err, errlen, "cannot read %s: %s", m->from_name, db_errmsg(m->src));
		db_rollback(m->src);
		return -1;
	}
	if (db_begin(m->dst) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", m->to_name, db_errmsg(m->dst));
		db_rollback(m->src);
		return -1;
	}
	for (size_t i = 0; i < m->ntables; i++)
		if (m->tables[i].in_source && copy_table(m, &m->tables[i], err, errlen) < 0)
			goto fail;
	if (db_commit(m->dst) < 0) {
		snprintf(err, errlen, "cannot commit the copy into %s: %s", m->to_name,
			 db_errmsg(m->dst));
		goto fail;
	}
	db_rollback(m->src);
	return 0;
fail:
	db_rollback(m->dst);
	db_rollback(m->src);
	return -1;
}

static void report(const struct migration *m)
{
	long long total = 0;
	printf("copied %s into %s:\n", m->from_name, m->to_name);
	for (size_t i = 0; i < m->ntables; i++) {
		printf("  %-20s %10lld\n", m->tables[i].name, m->tables[i].rows);
		total += m->tables[i].rows;
	}
	printf("  %-20s %10lld rows in %zu tables\n", "total", total, m->ntables);
}

/* --- the command ------------------------------------------------------------ */

/* The daemon locks of the SQLite sides, held until the command ends (no
 * daemon may start on them meanwhile).  0, or -1 with err. */
static int take_locks(const char *source, const char *target, int fds[2], char *err, size_t errlen)
{
	char why[512];
	if (!db_is_dsn(source) && state_lock_take(source, &fds[0], why, sizeof why) < 0) {
		snprintf(err, errlen, "the source is in use: %s", why);
		return -1;
	}
	if (!db_is_dsn(target) && state_lock_take(target, &fds[1], why, sizeof why) < 0) {
		snprintf(err, errlen, "the target is in use: %s", why);
		return -1;
	}
	return 0;
}

/* Everything before the copy: the sides checked, locked and opened.
 * 0, or the exit code with err. */
static int open_sides(struct migration *m, const char *source, const char *target, int fds[2],
		      char *err, size_t errlen)
{
	char *which = NULL;
	if (strcmp(source, target) == 0) {
		snprintf(err, errlen, "the source and the target are the same: %s", m->to_name);
		return 2;
	}
	if (!db_is_dsn(source) && access(source, F_OK) != 0) {
		snprintf(err, errlen, "there is no state database at %s: %s", source,
			 strerror(errno));
		return 1;
	}
	if (state_run_as_owner(db_is_dsn(source) ? target : source, err, errlen) < 0 ||
	    take_locks(source, target, fds, err, errlen) < 0)
		return 1;
	int used = target_used(target, m->to_name, &which, err, errlen);
	if (used > 0)
		snprintf(err, errlen,
			 "the target %s is not empty (table %s has rows): the state is copied "
			 "into an empty one only; nothing was changed",
			 m->to_name, which);
	free(which);
	if (used != 0)
		return 1;
	if (!(m->from = store_open(source, err, errlen)))
		return 1;
	m->src = store_db(m->from);
	if (source_idle(m, err, errlen) < 0 || !(m->to = store_open(target, err, errlen)))
		return 1;
	m->dst = store_db(m->to);
	/* SQLite makes this table on first use: there to receive the rows */
	if (messages_acks_table(m->to) < 0) {
		snprintf(err, errlen, "cannot prepare %s: %s", m->to_name, db_errmsg(m->dst));
		return 1;
	}
	return 0;
}

static int migrate(const char *source, const char *target)
{
	struct migration m = {0};
	char err[1024] = "";
	char *from_name = dsn_redact(source), *to_name = dsn_redact(target);
	int fds[2] = {-1, -1};
	m.from_name = from_name;
	m.to_name = to_name;
	int rc = open_sides(&m, source, target, fds, err, sizeof err);
	if (rc == 0 && (plan(&m, err, sizeof err) < 0 || copy_all(&m, err, sizeof err) < 0))
		rc = 1;
	if (rc == 0)
		report(&m);
	else
		fprintf(stderr, "mailfeed: migrate-state: %s\n", err);
	plan_free(&m);
	store_close(m.from);
	store_close(m.to);
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(from_name);
	free(to_name);
	return rc;
}

int cmd_migrate_state(int argc, char **argv, const char *config)
{
	const char *to = NULL, *to_file = NULL, *from = NULL;
	char err[512];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
			to = argv[++i];
		} else if (strcmp(argv[i], "--to-dsn-file") == 0 && i + 1 < argc) {
			to_file = argv[++i];
		} else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
			from = argv[++i];
		} else {
			fprintf(stderr, "mailfeed: migrate-state: unexpected argument %s\n",
				argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!to == !to_file || (to && !*to)) {
		fprintf(stderr, "mailfeed: migrate-state: give the target once: --to TARGET or "
				"--to-dsn-file FILE\n");
		return 2;
	}
	char *target = to ? xstrdup(to) : dsn_file_read(to_file, err, sizeof err);
	char *source = from ? xstrdup(from) : NULL;
	struct mf_config *cfg = NULL;
	int rc = 2;
	if (!target)
		fprintf(stderr, "mailfeed: migrate-state: %s\n", err);
	else if (!source && !(cfg = cli_load_config(config)))
		;
	else {
		if (!source)
			source = xstrdup(cfg->gateway.state);
		rc = migrate(source, target);
	}
	config_free(cfg);
	free(source);
	if (target)
		explicit_bzero(target, strlen(target));
	free(target);
	return rc;
}
