/* db_pg.c — PostgreSQL under db.h, through libpq: connecting (with a
 * connect timeout and TCP keepalives so that a vanished server is noticed),
 * reconnecting on the next call after a loss, typed parameters, walking a
 * result's rows, and telling "the database is away" from "the SQL failed"
 * by SQLSTATE and connection state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "mailfeed/util.h"

static void ignore_notice(void *arg, const char *message) {}

/* Connection exceptions (class 08), the server shutting down or starting
 * up (57P01-57P03), too many connections (53300): away, not wrong. */
static int sqlstate_unavailable(const char *state)
{
	if (!state)
		return 0;
	return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	       strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0 ||
	       strcmp(state, "53300") == 0;
}

/* Records why res (NULL: no answer at all) failed. */
static void pg_error(struct db *db, const PGresult *res)
{
	PGconn *c = db->pg;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : "";
	if (!msg || !*msg)
		msg = PQerrorMessage(c);
	int away = PQstatus(c) != CONNECTION_OK || sqlstate_unavailable(state);
	if (away && db->in_tx)
		db->tx_lost = 1;
	db_set_error(db, away ? DB_ERR_UNAVAILABLE : DB_ERR_SQL, "%s%s%s", msg,
		     state ? " SQLSTATE " : "", state ? state : "");
}

int dbpg_connect(struct db *db, char *err, size_t errlen, int *unavailable)
{
	/* our defaults first: what the DSN says (processed last) wins */
	const char *const keys[] = {
	    "connect_timeout",	   "application_name", "keepalives", "keepalives_idle",
	    "keepalives_interval", "keepalives_count", "dbname",     NULL};
	const char *const vals[] = {"10", "mailfeed", "1", "10", "5", "3", db->target, NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	db->pg = c;
	if (!c) {
		snprintf(err, errlen, "cannot connect to PostgreSQL: out of memory");
		return -1;
	}
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	if (PQstatus(c) == CONNECTION_OK)
		return 0;
	/* libpq's message names host and port, never the password */
	snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(c));
	for (char *p = err; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (unavailable) {
		/* a refused login or an unknown database will not heal by waiting */
		const char *m = PQerrorMessage(c);
		*unavailable = !strstr(m, "authentication failed") &&
			       !strstr(m, "does not exist") && !strstr(m, "password") &&
			       !strstr(m, "invalid");
	}
	return -1;
}

void dbpg_close(struct db *db)
{
	if (db->pg)
		PQfinish(db->pg);
	db->pg = NULL;
}

/* A usable connection, re-established when it was lost; a transaction
 * that was open on the lost one is not silently continued outside. */
static int ready(struct db *db)
{
	PGconn *c = db->pg;
	if (db->tx_lost) {
		db_set_error(db, DB_ERR_UNAVAILABLE,
			     "the connection to the database was lost inside a transaction; "
			     "roll back and start again");
		return -1;
	}
	if (PQstatus(c) == CONNECTION_OK)
		return 0;
	PQreset(c);
	if (PQstatus(c) == CONNECTION_OK) {
		PQsetNoticeProcessor(c, ignore_notice, NULL);
		return 0;
	}
	db_set_error(db, DB_ERR_UNAVAILABLE, "cannot reach PostgreSQL: %s", PQerrorMessage(c));
	return -1;
}

static void note_changes(struct db *db, PGresult *res)
{
	const char *cmd = PQcmdStatus(res);
	if (strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 ||
	    strncmp(cmd, "DELETE", 6) == 0)
		db->changes = strtoll(PQcmdTuples(res), NULL, 10);
}

int dbpg_exec(struct db *db, const char *sql)
{
	if (ready(db) < 0)
		return -1;
	PGresult *res = PQexec(db->pg, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if ((st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) && strcmp(sql, "COMMIT") == 0 &&
	    strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
		/* COMMIT of a transaction a failed statement aborted */
		db_set_error(db, DB_ERR_SQL, "the transaction had failed and was rolled back");
		PQclear(res);
		return -1;
	}
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		note_changes(db, res);
		PQclear(res);
		return 0;
	}
	pg_error(db, res);
	PQclear(res);
	return -1;
}

int dbpg_bind(struct db_stmt *s, int i, unsigned type, int format, const void *v, size_t len)
{
	if (i < 1 || i > s->nparams || len > 0x7fffffff) {
		db_set_error(s->db, DB_ERR_SQL, "parameter %d out of range (1..%d)", i, s->nparams);
		return -1;
	}
	struct db_param *p = &s->params[i - 1];
	free(p->data);
	p->type = type;
	p->format = format;
	p->len = (int)len;
	p->data = NULL;
	if (v) {
		p->data = xmalloc(len + 1);
		memcpy(p->data, v, len);
		p->data[len] = 0;
	}
	return 0;
}

static void clear_bytea(struct db_stmt *s)
{
	for (int i = 0; s->bytea && i < s->ncols; i++) {
		free(s->bytea[i]);
		s->bytea[i] = NULL;
	}
}

/* Drops the result and every parameter. */
void dbpg_stmt_clear(struct db_stmt *s)
{
	clear_bytea(s);
	free(s->bytea);
	free(s->bytea_len);
	s->bytea = NULL;
	s->bytea_len = NULL;
	s->ncols = 0;
	PQclear(s->res);
	s->res = NULL;
	s->row = -1;
	for (int i = 0; i < s->nparams; i++) {
		free(s->params[i].data);
		memset(&s->params[i], 0, sizeof s->params[i]);
	}
}

static int run(struct db_stmt *s)
{
	struct db *db = s->db;
	db_clear_error(db);
	if (ready(db) < 0)
		return -1;
	int n = s->nparams;
	Oid *types = xcalloc((size_t)n + 1, sizeof *types);
	const char **vals = xcalloc((size_t)n + 1, sizeof *vals);
	int *lens = xcalloc((size_t)n + 1, sizeof *lens);
	int *fmts = xcalloc((size_t)n + 1, sizeof *fmts);
	for (int i = 0; i < n; i++) {
		types[i] = s->params[i].type;
		vals[i] = s->params[i].data;
		lens[i] = s->params[i].len;
		fmts[i] = s->params[i].format;
	}
	PGresult *res = PQexecParams(db->pg, s->sql, n, types, vals, lens, fmts, 0);
	free(types);
	free(vals);
	free(lens);
	free(fmts);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_error(db, res);
		PQclear(res);
		return -1;
	}
	note_changes(db, res);
	s->res = res;
	s->ncols = PQnfields(res);
	s->bytea = xcalloc((size_t)s->ncols + 1, sizeof *s->bytea);
	s->bytea_len = xcalloc((size_t)s->ncols + 1, sizeof *s->bytea_len);
	return 0;
}

int dbpg_step(struct db_stmt *s)
{
	if (!s->res && run(s) < 0)
		return DB_FAIL;
	clear_bytea(s);
	if (s->row + 1 < PQntuples(s->res)) {
		s->row++;
		return DB_ROW;
	}
	s->row = PQntuples(s->res);
	return DB_DONE;
}

static int on_row(struct db_stmt *s, int col)
{
	return s->res && s->row >= 0 && s->row < PQntuples(s->res) && col >= 0 && col < s->ncols;
}

int dbpg_column_count(struct db_stmt *s) { return s->res ? s->ncols : 0; }

int dbpg_column_is_null(struct db_stmt *s, int col)
{
	return !on_row(s, col) || PQgetisnull(s->res, s->row, col);
}

int64_t dbpg_column_int64(struct db_stmt *s, int col)
{
	if (dbpg_column_is_null(s, col))
		return 0;
	const char *v = PQgetvalue(s->res, s->row, col);
	if (PQftype(s->res, col) == DBPG_BOOL)
		return v[0] == 't';
	return strtoll(v, NULL, 10);
}

/* bytea arrives hex-escaped in text results: unescaped once per row. */
static const unsigned char *bytea(struct db_stmt *s, int col, size_t *len)
{
	if (!s->bytea[col]) {
		const unsigned char *v = (const unsigned char *)PQgetvalue(s->res, s->row, col);
		size_t n = 0;
		unsigned char *raw = PQunescapeBytea(v, &n);
		if (!raw)
			return NULL;
		/* a copy of ours, NUL-terminated for db_column_text */
		s->bytea[col] = xmalloc(n + 1);
		memcpy(s->bytea[col], raw, n);
		s->bytea[col][n] = 0;
		PQfreemem(raw);
		s->bytea_len[col] = n;
	}
	*len = s->bytea_len[col];
	return s->bytea[col];
}

const char *dbpg_column_text(struct db_stmt *s, int col)
{
	if (dbpg_column_is_null(s, col))
		return NULL;
	size_t n;
	if (PQftype(s->res, col) == DBPG_BYTEA)
		return (const char *)bytea(s, col, &n);
	if (PQftype(s->res, col) == DBPG_BOOL) /* as SQLite shows a comparison */
		return PQgetvalue(s->res, s->row, col)[0] == 't' ? "1" : "0";
	return PQgetvalue(s->res, s->row, col);
}

const void *dbpg_column_blob(struct db_stmt *s, int col, size_t *len)
{
	*len = 0;
	if (dbpg_column_is_null(s, col))
		return NULL;
	if (PQftype(s->res, col) == DBPG_BYTEA)
		return bytea(s, col, len);
	const char *t = dbpg_column_text(s, col);
	*len = strlen(t);
	return t;
}
