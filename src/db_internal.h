/* db_internal.h — what db.c (the front and SQLite) and db_pg.c
 * (PostgreSQL through libpq) share: the connection and statement structs
 * and the PostgreSQL entry points db.c dispatches to.  Not for other
 * modules: they use mailfeed/db.h. */
#ifndef MAILFEED_DB_INTERNAL_H
#define MAILFEED_DB_INTERNAL_H

#include <sqlite3.h>

#include "mailfeed/db.h"

struct pg_conn;
struct pg_result;

struct db {
	enum db_engine engine;
	sqlite3 *sq;
	void *pg;     /* PGconn */
	char *target; /* path or DSN (PostgreSQL: with its password, never logged) */
	enum db_error err;
	char errmsg[512];
	int in_tx;
	int tx_lost; /* PostgreSQL: the connection went away inside a transaction */
	int64_t changes;
	/* SQLite: this connection's transaction holds the process's writer
	 * gate (db.c); when the busy handler's current wait began */
	int gate;
	int *gate_mine; /* the holding thread's mark */
	double busy_since;
	int wal_pages; /* the WAL's size at the last commit */
};

/* A PostgreSQL parameter as it is sent. */
struct db_param {
	unsigned type; /* Oid: 0 (NULL, server infers), int8, text, bytea */
	int format;    /* 0 text, 1 binary */
	char *data;    /* NULL for SQL NULL */
	int len;
};

struct db_stmt {
	struct db *db;
	sqlite3_stmt *sq;
	/* PostgreSQL */
	char *sql; /* with $N placeholders */
	int nparams;
	struct db_param *params;
	void *res;	       /* PGresult of the run, NULL before the first step */
	int row;	       /* current row, -1 before the first */
	unsigned char **bytea; /* per column: the current row's unescaped bytea */
	size_t *bytea_len;
	int ncols;
};

void db_set_error(struct db *db, enum db_error kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void db_clear_error(struct db *db);

int dbpg_connect(struct db *db, char *err, size_t errlen, int *unavailable);
void dbpg_close(struct db *db);
int dbpg_exec(struct db *db, const char *sql);
int dbpg_step(struct db_stmt *s);
int dbpg_bind(struct db_stmt *s, int i, unsigned type, int format, const void *v, size_t len);
void dbpg_stmt_clear(struct db_stmt *s);
int dbpg_column_count(struct db_stmt *s);
int dbpg_column_is_null(struct db_stmt *s, int col);
int64_t dbpg_column_int64(struct db_stmt *s, int col);
const char *dbpg_column_text(struct db_stmt *s, int col);
const void *dbpg_column_blob(struct db_stmt *s, int col, size_t *len);

#define DBPG_INT8 20u
#define DBPG_TEXT 25u
#define DBPG_BYTEA 17u
#define DBPG_BOOL 16u

#endif
