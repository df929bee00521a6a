/* outbox.c — the durable queue between the pipeline and the feed service:
 * the only module that touches the outbox, outbox_payloads and attachments
 * tables.
 *
 * An item is written once (inside the pipeline's transaction): its row in
 * outbox (key, state, claim, the columns the choice of due items reads),
 * its payload as JSON in a row of outbox_payloads (so that the many
 * rewrites of the small row leave the text alone) and its attachments as
 * rows.  This file keeps the rows:
 * enqueue, the choice of due items (claimed as inflight), every state
 * change, the dead list and what the digest reads back.  deliver.c runs the
 * delivery passes over it.
 *
 * Comments wait for their post's remote id, and for the earlier comments of
 * the same post, so that a thread keeps its date order at the service.
 *
 * Two statements read messages.c's tables, read-only, joined to the items
 * they list or change: the dead list (one list of dead items and dead or
 * skipped messages) and the re-mapping of an item sent again (its
 * message's mailbox and hashtags).  Messages change only through
 * messages.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/claims.h"
#include "mailfeed/decide.h"
#include "mailfeed/feed.h"
#include "mailfeed/log.h"
#include "mailfeed/messages.h"
#include "mailfeed/notes.h"
#include "mailfeed/outbox.h"
#include "mailfeed/recipients.h"
#include "mailfeed/thread.h"
#include "mailfeed/utf8.h"
#include "mailfeed/util.h"
#include "outbox_internal.h"

#define OUTBOX_MAX_TEXT (512 * 1024)
#define OUTBOX_MAX_SUBJECT 998
#define OUTBOX_MAX_TAGS 64

/* s cut to at most max bytes on a UTF-8 character boundary (*cut set when
 * it was).  Owned. */
static char *cut_copy(const char *s, size_t max, int *cut)
{
	size_t n = strlen(s), k = utf8_cut(s, n, max);
	*cut = k < n;
	return xstrndup(s, k);
}

/* The payload is JSON text written directly, byte for byte as jansson's
 * json_dumps(JSON_COMPACT) wrote the object it was once built as: keys in
 * this order; author name and email, message id and date as
 * json_str_or_null makes them; the other strings as json_string took them,
 * so that one which is not valid UTF-8 leaves out its key (or its place in
 * a list) rather than changing. */
static int utf8_str(const char *s) { return s && utf8_valid(s, strlen(s)); }

static void put_strict(struct buf *b, const char *key, const char *s)
{
	if (!utf8_str(s))
		return;
	json_put_key(b, key);
	json_put_str(b, s);
}

static void put_strict_list(struct buf *b, const char *key, const struct strlist *l, size_t max)
{
	int first = 1;
	json_put_key(b, key);
	buf_putc(b, '[');
	for (size_t i = 0; i < l->n && i < max; i++) {
		if (!utf8_str(l->v[i]))
			continue;
		if (!first)
			buf_putc(b, ',');
		json_put_str(b, l->v[i]);
		first = 0;
	}
	buf_putc(b, ']');
}

static void payload_author(struct buf *b, const struct outbox_new *n)
{
	const struct mf_message *m = n->msg;
	json_put_key(b, "author");
	buf_putc(b, '{');
	json_put_key(b, "name");
	json_put_str(b, n->author_name ? n->author_name : m ? m->from_name : NULL);
	json_put_key(b, "email");
	json_put_str(b, n->author_email ? n->author_email : m ? m->from_email : NULL);
	/* whether the sender may be acted as (auth.h), and why */
	json_put_key(b, "verified");
	buf_puts(b, n->author_verified ? "true" : "false");
	if (n->author_check)
		put_strict(b, "check", n->author_check);
	buf_putc(b, '}');
}

static char *payload_build(const struct outbox_new *n)
{
	const struct mf_message *m = n->msg;
	struct strlist seen = {0};
	struct buf b;
	char datebuf[32];
	int cut;

	buf_init(&b);
	buf_putc(&b, '{');
	payload_author(&b, n);
	char *subject = cut_copy(m && m->subject ? m->subject : "", OUTBOX_MAX_SUBJECT, &cut);
	put_strict(&b, "subject", subject);
	free(subject);

	char *text = cut_copy(m && m->text ? m->text : "", OUTBOX_MAX_TEXT, &cut);
	if (cut) {
		char *t = xasprintf("%s\n[message shortened]", text);
		free(text);
		text = t;
	}
	put_strict(&b, "text", text);
	free(text);

	/* the hashtags decide_message announced to preview and inspect */
	decide_hashtags(n->extra_hashtags, m, &seen);
	put_strict_list(&b, "hashtags", &seen, seen.n);
	strlist_free(&seen);
	json_put_key(&b, "message_id");
	json_put_str(&b, m ? m->message_id : NULL);
	json_put_key(&b, "date");
	json_put_str(&b, m && m->date ? time_iso(m->date, datebuf, sizeof datebuf) : NULL);
	if (n->parent_remote_id)
		put_strict(&b, "parent_remote_id", n->parent_remote_id);
	if (n->recipients && n->recipients->n)
		put_strict_list(&b, "recipients", n->recipients, RECIPIENTS_MAX);
	buf_putc(&b, '}');
	return buf_steal(&b);
}

static int64_t id_of_key(struct store *st, const char *key)
{
	struct db_stmt *s = store_prep(st, "SELECT id FROM outbox WHERE key=?");
	int64_t id = -1;
	if (!s)
		return -1;
	db_bind_text(s, 1, key, -1);
	if (db_step(s) == DB_ROW)
		id = db_column_int64(s, 0);
	db_finalize(s);
	return id;
}

/* The new item's payload row.  0 or -1. */
static int payload_insert(struct store *st, int64_t id, const struct outbox_new *n)
{
	struct db_stmt *s =
	    store_kept(st, "INSERT INTO outbox_payloads(item, payload) VALUES(?,?)");
	if (!s)
		return -1;
	char *payload = payload_build(n);
	db_bind_int64(s, 1, id);
	db_bind_text(s, 2, payload, -1);
	free(payload);
	return store_run_kept(st, s);
}

int64_t outbox_enqueue(struct store *st, const struct outbox_new *n)
{
	if (!n->key || !n->kind || !n->group ||
	    (strcmp(n->kind, "post") != 0 && strcmp(n->kind, "comment") != 0)) {
		log_error("outbox.error error=\"item without key, group or valid kind\"");
		return -1;
	}
	struct db_stmt *s =
	    store_kept(st, "INSERT INTO outbox(key, message, kind, grp,"
			   " thread_id, parent, created, sort_date, ext_parent)"
			   " VALUES(?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING id");
	if (!s)
		return -1;
	db_bind_text(s, 1, n->key, -1);
	if (n->message > 0)
		db_bind_int64(s, 2, n->message);
	db_bind_text(s, 3, n->kind, -1);
	db_bind_text(s, 4, n->group, -1);
	if (n->thread_id > 0)
		db_bind_int64(s, 5, n->thread_id);
	if (n->parent > 0)
		db_bind_int64(s, 6, n->parent);
	db_bind_int64(s, 7, (int64_t)time(NULL));
	/* the payload's date and parent as columns: the due-item query reads
	 * them for every candidate, and must not parse the payload for that */
	char datebuf[32] = "";
	if (n->msg && n->msg->date)
		time_iso(n->msg->date, datebuf, sizeof datebuf);
	db_bind_text(s, 8, datebuf, -1);
	db_bind_int64(s, 9, n->parent_remote_id ? 1 : 0);
	int rc = db_step(s); /* a row: the id of the new item */
	int64_t id = rc == DB_ROW ? db_column_int64(s, 0) : 0;
	store_stmt_done(st, s);
	if (rc != DB_ROW && rc != DB_DONE) {
		log_error("outbox.error error=%s", LOG_Q(store_errmsg(st)));
		return -1;
	}
	if (rc == DB_DONE)
		return id_of_key(st, n->key);
	if (payload_insert(st, id, n) < 0)
		return -1;
	const struct mf_message *m = n->msg;
	for (size_t i = 0; m && i < m->n_attachments; i++) {
		const struct mf_attachment *a = &m->attachments[i];
		s = store_kept(st, "INSERT INTO attachments(item, filename, content_type, size,"
				   " sha256, data) VALUES(?,?,?,?,?,?)");
		if (!s)
			return -1;
		db_bind_int64(s, 1, id);
		db_bind_text(s, 2, a->filename ? a->filename : "attachment", -1);
		db_bind_text(s, 3, a->content_type ? a->content_type : "application/octet-stream",
			     -1);
		db_bind_int64(s, 4, (int64_t)a->size);
		db_bind_text(s, 5, a->sha256, -1);
		if (a->data)
			db_bind_blob(s, 6, a->data, (size_t)(a->size));
		if (store_run_kept(st, s) < 0)
			return -1;
	}
	return id;
}

/* --- states ------------------------------------------------------- */

static const char *const state_names[OUTBOX_STATE_COUNT] = {
    [OUTBOX_PENDING] = "pending",   [OUTBOX_INFLIGHT] = "inflight",
    [OUTBOX_RETRYING] = "retrying", [OUTBOX_DELIVERED] = "delivered",
    [OUTBOX_DEAD] = "dead",	    [OUTBOX_DROPPED] = "dropped",
};

const char *outbox_state_name(enum outbox_state s)
{
	return (unsigned)s < OUTBOX_STATE_COUNT ? state_names[s] : NULL;
}

int outbox_state_parse(const char *name, enum outbox_state *s)
{
	for (int i = 0; name && i < OUTBOX_STATE_COUNT; i++)
		if (strcmp(name, state_names[i]) == 0) {
			*s = (enum outbox_state)i;
			return 0;
		}
	return -1;
}

#define KEY_EXISTS "SELECT 1 FROM outbox WHERE key=?"

/* The answer of a KEY_EXISTS statement bound and stepped. */
static int key_found(int rc) { return rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : -1; }

int outbox_key_exists(struct db *db, const char *key)
{
	struct db_stmt *s;
	if (!(s = db_prepare(db, KEY_EXISTS)))
		return -1;
	db_bind_text(s, 1, key, -1);
	int rc = db_step(s);
	db_finalize(s);
	return key_found(rc);
}

int outbox_key_taken(struct store *st, const char *key)
{
	struct db_stmt *s = store_stmt(st, KEY_EXISTS);
	if (!s)
		return -1;
	db_bind_text(s, 1, key, -1);
	int rc = db_step(s);
	store_stmt_done(st, s);
	return key_found(rc);
}

int outbox_counts(struct store *st, struct outbox_counts *c)
{
	struct db_stmt *s = store_prep(st, "SELECT state, COUNT(*) FROM outbox GROUP BY state");
	memset(c, 0, sizeof *c);
	if (!s)
		return -1;
	while (db_step(s) == DB_ROW) {
		enum outbox_state state;
		long v = (long)db_column_int64(s, 1);
		if (outbox_state_parse(db_column_text(s, 0), &state) < 0)
			continue;
		switch (state) {
		case OUTBOX_PENDING:
			c->pending = v;
			break;
		case OUTBOX_INFLIGHT:
			c->inflight = v;
			break;
		case OUTBOX_RETRYING:
			c->retrying = v;
			break;
		case OUTBOX_DELIVERED:
			c->delivered = v;
			break;
		case OUTBOX_DEAD:
			c->dead = v;
			break;
		case OUTBOX_DROPPED:
			c->dropped = v;
			break;
		}
	}
	db_finalize(s);
	return 0;
}

long outbox_count(struct store *st, enum outbox_state state)
{
	struct db_stmt *s = store_prep(st, "SELECT COUNT(*) FROM outbox WHERE state=?");
	long n = 0;
	if (!s || !outbox_state_name(state)) {
		db_finalize(s);
		return 0;
	}
	db_bind_text(s, 1, outbox_state_name(state), -1);
	if (db_step(s) == DB_ROW)
		n = (long)db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

int outbox_retry_status(struct store *st, char **error, time_t *next_at)
{
	struct db_stmt *s = store_prep(st, "SELECT error, (SELECT MIN(next_at) FROM outbox WHERE"
					   " state='retrying') FROM outbox WHERE state='retrying'"
					   " ORDER BY id LIMIT 1");
	*error = NULL;
	*next_at = 0;
	if (!s)
		return -1;
	int rc = db_step(s);
	if (rc == DB_ROW) {
		const char *e = db_column_text(s, 0);
		*error = e ? xstrdup(e) : NULL;
		*next_at = (time_t)db_column_int64(s, 1);
	}
	db_finalize(s);
	return rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : -1;
}

/* --- one item, loaded from its row for the backend ------------------- */

static char *col_dup(struct db_stmt *s, int i)
{
	const char *t = db_column_text(s, i);
	return t ? xstrdup(t) : NULL;
}

static char *json_dup(json_t *o, const char *k)
{
	const char *t = json_string_value(json_object_get(o, k));
	return t ? xstrdup(t) : NULL;
}

static time_t iso_parse(const char *s)
{
	struct tm tm = {0};
	if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	return timegm(&tm);
}

void outbox_loaded_free(struct outbox_loaded *l)
{
	free(l->key);
	free(l->group);
	free(l->parent_remote_id);
	free(l->author_name);
	free(l->author_email);
	free(l->subject);
	free(l->text);
	free(l->message_id);
	strlist_free(&l->tags);
	strlist_free(&l->recipients);
	for (size_t i = 0; i < l->n_att; i++) {
		free((char *)l->att[i].filename);
		free((char *)l->att[i].content_type);
		free((char *)l->att[i].sha256);
		free((unsigned char *)l->att[i].data);
		free((char *)l->att[i].remote);
	}
	free(l->att);
	memset(l, 0, sizeof *l);
}

static int load_attachments(struct store *st, struct outbox_loaded *l)
{
	struct db_stmt *s = store_kept(st, "SELECT filename, content_type, size, sha256, data, id,"
					   " remote FROM attachments WHERE item=? ORDER BY id");
	if (!s)
		return -1;
	db_bind_int64(s, 1, l->item.id);
	while (db_step(s) == DB_ROW) {
		l->att = xrealloc(l->att, (l->n_att + 1) * sizeof *l->att);
		struct feed_attachment *a = &l->att[l->n_att++];
		memset(a, 0, sizeof *a);
		a->filename = col_dup(s, 0);
		a->content_type = col_dup(s, 1);
		a->size = (size_t)db_column_int64(s, 2);
		a->sha256 = col_dup(s, 3);
		if (!db_column_is_null(s, 4)) {
			size_t n = 0;
			const void *blob = db_column_blob(s, 4, &n);
			unsigned char *d = xmalloc(n ? n : 1);
			if (n)
				memcpy(d, blob, n);
			a->data = d;
			a->size = n;
		}
		a->id = db_column_int64(s, 5);
		a->remote = col_dup(s, 6);
	}
	store_stmt_done(st, s);
	return 0;
}

/* --- the payload read back ---------------------------------------------

 * Delivery reads every item's payload: the fields it needs are taken from
 * the text in one pass, without building a tree of JSON values.  The pass
 * accepts only what jansson accepts and reads it as jansson does; text it
 * is not sure of (not UTF-8, a number, a \u escape of NUL or of a
 * surrogate, a repeated key, deep nesting) is read by jansson instead, so
 * the result is always what json_loads would give. */
struct ptext {
	const char *p, *end;
	int depth;
};

static void pt_ws(struct ptext *t)
{
	while (t->p < t->end && (*t->p == ' ' || *t->p == '\t' || *t->p == '\n' || *t->p == '\r'))
		t->p++;
}

static int pt_lit(struct ptext *t, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(t->end - t->p) < n || memcmp(t->p, lit, n) != 0)
		return -1;
	t->p += n;
	return 0;
}

static int hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* One escape at t->p (after the backslash) appended to out (when not
 * NULL).  0 or -1. */
static int pt_escape(struct ptext *t, struct buf *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	if (t->p >= t->end)
		return -1;
	const char *e = strchr(from, *t->p);
	if (*t->p && e) {
		if (out)
			buf_putc(out, to[e - from]);
		t->p++;
		return 0;
	}
	if (*t->p != 'u' || t->end - t->p < 5)
		return -1;
	int v = hex4(t->p + 1);
	if (v <= 0 || (v >= 0xd800 && v <= 0xdfff))
		return -1; /* NUL, a surrogate or not hex: jansson's to judge */
	t->p += 5;
	char u[3];
	size_t n;
	if (v < 0x80) {
		u[0] = (char)v;
		n = 1;
	} else if (v < 0x800) {
		u[0] = (char)(0xc0 | (v >> 6));
		u[1] = (char)(0x80 | (v & 0x3f));
		n = 2;
	} else {
		u[0] = (char)(0xe0 | (v >> 12));
		u[1] = (char)(0x80 | ((v >> 6) & 0x3f));
		u[2] = (char)(0x80 | (v & 0x3f));
		n = 3;
	}
	if (out)
		buf_append(out, u, n);
	return 0;
}

#define BYTES_1 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

/* Whether none of the 8 bytes at p ends a run of a string's plain text (a
 * quote, a backslash, a control): (v - 0x01..) & ~v has a high bit set
 * when some byte of v is zero, (x - 0x20..) & ~x when some byte of x is
 * below 0x20 (exact for the word as a whole, not per byte). */
static int pt_plain_word(const char *p)
{
	uint64_t x, q, bs;
	memcpy(&x, p, sizeof x);
	q = x ^ (BYTES_1 * '"');
	bs = x ^ (BYTES_1 * '\\');
	uint64_t hit = ((x - BYTES_1 * 0x20) & ~x) | ((q - BYTES_1) & ~q) | ((bs - BYTES_1) & ~bs);
	return !(hit & BYTES_80);
}

/* A string at t->p, its text appended to out when not NULL.  0 or -1. */
static int pt_str(struct ptext *t, struct buf *out)
{
	if (t->p >= t->end || *t->p != '"')
		return -1;
	t->p++;
	for (;;) {
		const char *run = t->p;
		/* eight bytes at a time through the plain text */
		while (t->end - t->p >= 8 && pt_plain_word(t->p))
			t->p += 8;
		while (t->p < t->end && *t->p != '"' && *t->p != '\\' &&
		       (unsigned char)*t->p >= 0x20)
			t->p++;
		if (out)
			buf_append(out, run, (size_t)(t->p - run));
		if (t->p >= t->end || (unsigned char)*t->p < 0x20)
			return -1;
		if (*t->p++ == '"')
			return 0;
		if (pt_escape(t, out) < 0)
			return -1;
	}
}

/* A string as an owned copy, or NULL for JSON null or for any other
 * value (skipped).  0 or -1. */
static int pt_skip(struct ptext *t);
static int pt_str_dup(struct ptext *t, char **out)
{
	struct buf b;
	if (t->p >= t->end || *t->p != '"')
		return pt_skip(t);
	buf_init(&b);
	if (pt_str(t, &b) < 0) {
		buf_free(&b);
		return -1;
	}
	free(*out); /* keys are never repeated here: see pt_members */
	*out = buf_steal(&b);
	return 0;
}

/* A list's strings added to l (at most max; other values skipped), or
 * any other value skipped.  0 or -1. */
static int pt_strings(struct ptext *t, struct strlist *l, size_t max)
{
	if (t->p >= t->end || *t->p != '[')
		return pt_skip(t);
	t->p++;
	pt_ws(t);
	if (t->p < t->end && *t->p == ']') {
		t->p++;
		return 0;
	}
	for (;;) {
		pt_ws(t);
		if (t->p < t->end && *t->p == '"') {
			char *s = NULL;
			if (pt_str_dup(t, &s) < 0)
				return -1;
			if (l->n < max)
				strlist_add(l, s);
			free(s);
		} else if (pt_skip(t) < 0) {
			return -1;
		}
		pt_ws(t);
		if (t->p < t->end && *t->p == ',') {
			t->p++;
			continue;
		}
		if (t->p < t->end && *t->p == ']') {
			t->p++;
			return 0;
		}
		return -1;
	}
}

static int key_seen(const struct strlist *keys, const char *key)
{
	for (size_t i = 0; i < keys->n; i++)
		if (strcmp(keys->v[i], key) == 0)
			return 1;
	return 0;
}

/* The members of an object at t->p: each value read by field(ctx, key, t)
 * (which reads or skips it).  A repeated key, which jansson resolves its
 * own way, is left to jansson.  0 or -1. */
static int pt_members(struct ptext *t, int (*field)(void *, const char *, struct ptext *),
		      void *ctx)
{
	struct strlist keys = {0};
	struct buf key;
	int rc = -1;
	if (t->p >= t->end || *t->p != '{' || ++t->depth > 16)
		return -1;
	t->p++;
	buf_init(&key);
	pt_ws(t);
	if (t->p < t->end && *t->p == '}') {
		t->p++;
		rc = 0;
		goto out;
	}
	for (;;) {
		pt_ws(t);
		key.len = 0;
		if (pt_str(t, &key) < 0)
			goto out;
		buf_putc(&key, 0);
		if (strlen(key.data) != key.len - 1 || key_seen(&keys, key.data))
			goto out;
		strlist_add(&keys, key.data);
		pt_ws(t);
		if (t->p >= t->end || *t->p != ':')
			goto out;
		t->p++;
		pt_ws(t);
		if (field(ctx, key.data, t) < 0)
			goto out;
		pt_ws(t);
		if (t->p < t->end && *t->p == ',') {
			t->p++;
			continue;
		}
		if (t->p < t->end && *t->p == '}') {
			t->p++;
			rc = 0;
		}
		goto out;
	}
out:
	t->depth--;
	buf_free(&key);
	strlist_free(&keys);
	return rc;
}

static int skip_field(void *ctx, const char *key, struct ptext *t)
{
	(void)ctx;
	(void)key;
	return pt_skip(t);
}

/* Any value, checked and passed over; numbers are left to jansson. */
static int pt_skip(struct ptext *t)
{
	if (t->p >= t->end)
		return -1;
	switch (*t->p) {
	case '"':
		return pt_str(t, NULL);
	case '{':
		return pt_members(t, skip_field, NULL);
	case '[': {
		if (++t->depth > 16)
			return -1;
		struct strlist none = {0};
		int rc = pt_strings(t, &none, 0);
		t->depth--;
		return rc;
	}
	case 't':
		return pt_lit(t, "true");
	case 'f':
		return pt_lit(t, "false");
	case 'n':
		return pt_lit(t, "null");
	default:
		return -1;
	}
}

static int author_field(void *ctx, const char *key, struct ptext *t)
{
	struct outbox_loaded *l = ctx;
	if (strcmp(key, "name") == 0)
		return pt_str_dup(t, &l->author_name);
	if (strcmp(key, "email") == 0)
		return pt_str_dup(t, &l->author_email);
	if (strcmp(key, "verified") == 0) {
		l->item.author_verified = t->p < t->end && *t->p == 't';
		return pt_skip(t);
	}
	return pt_skip(t);
}

static int payload_field(void *ctx, const char *key, struct ptext *t)
{
	struct outbox_loaded *l = ctx;
	char **dst = strcmp(key, "subject") == 0      ? &l->subject
		     : strcmp(key, "text") == 0	      ? &l->text
		     : strcmp(key, "message_id") == 0 ? &l->message_id
						      : NULL;
	if (dst)
		return pt_str_dup(t, dst);
	if (strcmp(key, "parent_remote_id") == 0) {
		/* the column's value, when there is one, comes first */
		if (l->parent_remote_id)
			return pt_skip(t);
		return pt_str_dup(t, &l->parent_remote_id);
	}
	if (strcmp(key, "date") == 0) {
		char *date = NULL;
		int rc = pt_str_dup(t, &date);
		l->item.date = iso_parse(date);
		free(date);
		return rc;
	}
	if (strcmp(key, "author") == 0)
		return t->p < t->end && *t->p == '{' ? pt_members(t, author_field, l) : pt_skip(t);
	if (strcmp(key, "hashtags") == 0)
		return pt_strings(t, &l->tags, SIZE_MAX);
	if (strcmp(key, "recipients") == 0)
		return pt_strings(t, &l->recipients, RECIPIENTS_MAX);
	return pt_skip(t);
}

/* The payload's fields read in one pass.  0, or -1 when jansson is to read
 * it (nothing of l changed then but what payload_fields_clear undoes). */
static int payload_read_text(const char *text, struct outbox_loaded *l)
{
	if (!text)
		return -1;
	size_t n = strlen(text);
	if (!utf8_valid(text, n))
		return -1;
	struct ptext t = {.p = text, .end = text + n};
	pt_ws(&t);
	if (pt_members(&t, payload_field, l) < 0)
		return -1;
	pt_ws(&t);
	return t.p == t.end ? 0 : -1;
}

/* Undoes what a payload reading set in l. */
static void payload_fields_clear(struct outbox_loaded *l, int parent_from_row)
{
	if (!parent_from_row) {
		free(l->parent_remote_id);
		l->parent_remote_id = NULL;
	}
	free(l->author_name);
	free(l->author_email);
	free(l->subject);
	free(l->text);
	free(l->message_id);
	l->author_name = l->author_email = l->subject = l->text = l->message_id = NULL;
	strlist_free(&l->tags);
	strlist_free(&l->recipients);
	l->item.author_verified = 0;
	l->item.date = 0;
}

/* The payload's fields read by jansson.  0, or -1 when it is not JSON. */
static int payload_read_json(const char *text, struct outbox_loaded *l)
{
	json_t *p = json_loads(text, 0, NULL);
	if (!p)
		return -1;
	if (!l->parent_remote_id)
		l->parent_remote_id = json_dup(p, "parent_remote_id");
	json_t *author = json_object_get(p, "author");
	l->author_name = json_dup(author, "name");
	l->author_email = json_dup(author, "email");
	l->item.author_verified = json_is_true(json_object_get(author, "verified"));
	l->subject = json_dup(p, "subject");
	l->text = json_dup(p, "text");
	l->message_id = json_dup(p, "message_id");
	l->item.date = iso_parse(json_string_value(json_object_get(p, "date")));
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(p, "hashtags"), i, v)
	{
		if (json_is_string(v))
			strlist_add(&l->tags, json_string_value(v));
	}
	json_array_foreach(json_object_get(p, "recipients"), i, v)
	{
		if (json_is_string(v) && l->recipients.n < RECIPIENTS_MAX)
			strlist_add(&l->recipients, json_string_value(v));
	}
	json_decref(p);
	return 0;
}

int outbox_payload_read(const char *text, struct outbox_loaded *l, int fast)
{
	int parent_from_row = l->parent_remote_id != NULL;
	if (fast && payload_read_text(text, l) == 0)
		return 0;
	payload_fields_clear(l, parent_from_row);
	return text ? payload_read_json(text, l) : -1;
}

/* Loads item id with its post's remote id.  0, or -1 (row gone or its
 * payload unreadable). */
int outbox_load(struct store *st, int64_t id, struct outbox_loaded *l)
{
	struct db_stmt *s =
	    store_kept(st, "SELECT o.key, o.kind, o.grp, t.payload, o.message, o.attempts,"
			   " o.created, p.remote_id,"
			   " EXISTS(SELECT 1 FROM attachments a WHERE a.item=o.id) FROM outbox o"
			   " LEFT JOIN outbox_payloads t ON t.item=o.id"
			   " LEFT JOIN outbox p ON p.id=o.parent WHERE o.id=?");
	memset(l, 0, sizeof *l);
	if (!s)
		return -1;
	db_bind_int64(s, 1, id);
	if (db_step(s) != DB_ROW) {
		store_stmt_done(st, s);
		return -1;
	}
	l->item.id = id;
	l->key = col_dup(s, 0);
	const char *kind = db_column_text(s, 1);
	l->item.kind = kind && strcmp(kind, "comment") == 0 ? FEED_COMMENT : FEED_POST;
	l->group = col_dup(s, 2);
	l->message = db_column_int64(s, 4);
	l->attempts = (long)db_column_int64(s, 5);
	l->created = (time_t)db_column_int64(s, 6);
	l->parent_remote_id = col_dup(s, 7);
	/* most items have no file: no second round trip for them */
	int has_files = db_column_int64(s, 8) != 0;
	int rc = outbox_payload_read(db_column_text(s, 3), l, 1);
	store_stmt_done(st, s);
	if (rc < 0) {
		outbox_loaded_free(l);
		return -1;
	}
	if (has_files && load_attachments(st, l) < 0) {
		outbox_loaded_free(l);
		return -1;
	}
	l->item.key = l->key;
	l->item.group = l->group;
	l->item.parent_remote_id = l->parent_remote_id;
	l->item.author_name = l->author_name;
	l->item.author_email = l->author_email;
	l->item.subject = l->subject ? l->subject : "";
	l->item.text = l->text ? l->text : "";
	l->item.hashtags = &l->tags;
	l->item.recipients = &l->recipients;
	l->item.message_id = l->message_id;
	l->item.attachments = l->att;
	l->item.n_attachments = l->n_att;
	l->item.created = l->created;
	return 0;
}

/* --- state changes (inside the caller's transaction) ------------------ */

static int message_follow_delivered(struct store *st, int64_t message)
{
	return messages_follow_delivered(st, message);
}

static int message_follow_dead(struct store *st, int64_t message, const char *reason)
{
	if (message <= 0)
		return 0;
	return messages_set_state(st, message, MSG_DEAD, reason, NULL);
}

/* A failure is recorded only while the claim is ours: past its deadline
 * another instance took the item over and decides what became of it. */
#define STILL_OURS " AND state='inflight' AND claimed_by=?3"
#define STILL_OURS_4 " AND state='inflight' AND claimed_by=?4"

static int claim_lost(const struct outbox_loaded *l)
{
	log_warn("outbox.claim_lost key=%s note=\"taken over by another instance; its result "
		 "is theirs to record\"",
		 l->key);
	return 0;
}

int outbox_mark_delivered(struct store *st, const struct outbox_loaded *l, const char *remote_id,
			  time_t now)
{
	struct db_stmt *s = store_kept(
	    st, "UPDATE outbox SET state='delivered', remote_id=?,"
		" delivered_at=?, error=NULL, attempts=attempts+1, claimed_by=NULL,"
		" claim_until=NULL WHERE id=? AND state IN ('inflight','pending','retrying')");
	if (!s)
		return -1;
	db_bind_text(s, 1, remote_id, -1);
	db_bind_int64(s, 2, (int64_t)now);
	db_bind_int64(s, 3, l->item.id);
	if (store_run_kept(st, s) < 0)
		return -1;
	/* already recorded by the instance that took the item over */
	if (db_changes(store_db(st)) == 0)
		return 0;
	return message_follow_delivered(st, l->message);
}

int outbox_mark_dead(struct store *st, const struct outbox_loaded *l, const char *error)
{
	struct db_stmt *s = store_prep(st, "UPDATE outbox SET state='dead', error=?, next_at=0,"
					   " attempts=attempts+1, claimed_by=NULL, claim_until=NULL"
					   " WHERE id=?" STILL_OURS);
	if (!s)
		return -1;
	db_bind_text(s, 1, error, -1);
	db_bind_int64(s, 2, l->item.id);
	db_bind_text(s, 3, store_instance(st), -1);
	if (store_run(st, s) < 0)
		return -1;
	if (db_changes(store_db(st)) == 0)
		return claim_lost(l);
	if (note_count(st, NOTE_COUNT_DEAD, 1) < 0)
		return -1;
	char *reason = xasprintf("feed service did not take the %s: %s",
				 l->item.kind == FEED_POST ? "post" : "comment", error);
	int rc = message_follow_dead(st, l->message, reason);
	free(reason);
	return rc;
}

int outbox_mark_retry(struct store *st, const struct outbox_loaded *l, time_t next_at,
		      const char *error)
{
	struct db_stmt *s =
	    store_prep(st, "UPDATE outbox SET state='retrying', attempts=attempts+1,"
			   " next_at=?, error=?, claimed_by=NULL, claim_until=NULL"
			   " WHERE id=?" STILL_OURS_4);
	if (!s)
		return -1;
	db_bind_int64(s, 1, (int64_t)next_at);
	db_bind_text(s, 2, error, -1);
	db_bind_int64(s, 3, l->item.id);
	db_bind_text(s, 4, store_instance(st), -1);
	if (store_run(st, s) < 0)
		return -1;
	if (db_changes(store_db(st)) == 0)
		return claim_lost(l);
	return note_count(st, NOTE_COUNT_RETRIED, 1);
}

/* Comments whose post is dead or dropped can never be placed: they go dead
 * too.  Returns how many, or -1. */
int outbox_cascade_dead(struct store *st)
{
	const char *why = "post was not delivered";
	/* driven from the (few) dead posts through the parent index, so the
	 * cost does not grow with the queue */
	if (messages_follow_dead_posts(st, why) < 0)
		return -1;
	struct db_stmt *s = store_prep(
	    st, "UPDATE outbox SET state='dead', error=?1 WHERE kind='comment'"
		" AND state IN ('pending','retrying')"
		" AND parent IN (SELECT id FROM outbox WHERE state IN ('dead','dropped'))");
	if (!s)
		return -1;
	db_bind_text(s, 1, why, -1);
	if (store_run(st, s) < 0)
		return -1;
	int n = (int)db_changes(store_db(st));
	if (n > 0)
		log_warn("outbox.dead count=%d error=%s", n, LOG_Q(why));
	if (n > 0 && note_count(st, NOTE_COUNT_DEAD, n) < 0)
		return -1;
	return n;
}

/* --- choosing due items ------------------------------------------------ */

/* Due items: posts; comments whose post is delivered (or whose parent is
 * known only at the service) and that have no earlier sibling waiting. */
#define ELIGIBLE                                                                                   \
	" o.state IN ('pending','retrying') AND (o.kind='post' OR o.ext_parent=1"                  \
	" OR (p.state='delivered' AND NOT EXISTS(SELECT 1 FROM outbox s WHERE s.parent=o.parent"   \
	" AND s.kind='comment' AND s.state IN ('pending','retrying','inflight')"                   \
	" AND (s.sort_date < o.sort_date OR (s.sort_date = o.sort_date AND s.id < o.id)))))"

long outbox_count_waiting(struct store *st)
{
	struct db_stmt *s = store_prep(
	    st, "SELECT COUNT(*) FROM outbox WHERE state IN ('pending','retrying','inflight')");
	long n = 0;
	if (!s)
		return 0;
	if (db_step(s) == DB_ROW)
		n = (long)db_column_int64(s, 0);
	db_finalize(s);
	return n;
}

long outbox_next_due(struct store *st)
{
	/* on SQLite from the waiting items' index alone */
	struct db_stmt *s =
	    store_prep(st, db_sql(store_db(st),
				  "SELECT MIN(o.next_at) FROM outbox o INDEXED BY outbox_waiting"
				  " LEFT JOIN outbox p ON p.id=o.parent WHERE" ELIGIBLE,
				  "SELECT MIN(o.next_at) FROM outbox o"
				  " LEFT JOIN outbox p ON p.id=o.parent WHERE" ELIGIBLE));
	long next = 0;
	if (!s)
		return 0;
	if (db_step(s) == DB_ROW && !db_column_is_null(s, 0)) {
		next = (long)db_column_int64(s, 0);
		if (next <= 0)
			next = 1; /* due now */
	}
	db_finalize(s);
	return next;
}

/* --- claims -------------------------------------------------------------

 * Several instances share one outbox: an item is taken by claiming it
 * (state 'inflight', claimed_by this instance, claim_until a deadline in
 * the database's clock), so that any instance delivers and none doubles.
 * The deadline is pushed on while a long delivery runs; past it another
 * instance may take the item, and checks at the service first whether it
 * was delivered (the claimer may have died after sending).  On PostgreSQL
 * the rows are picked with FOR UPDATE SKIP LOCKED, so that claimers never
 * wait on nor share a row; on SQLite the same UPDATE runs inside BEGIN
 * IMMEDIATE (one writer at a time). */

/* The database's clock in milliseconds (the expressions of cluster.c). */
#define NOW_SQLITE DB_NOW_MS_SQLITE
#define NOW_PG DB_NOW_MS_PG

#define CLAIM_SET(NOW) " SET state='inflight', claimed_by=?3, claim_until=" NOW " + ?4"
#define CLAIM_PICK(HINT)                                                                           \
	"SELECT o.id FROM outbox o" HINT " LEFT JOIN outbox p ON p.id=o.parent"                    \
	" WHERE o.next_at <= ?1 AND" ELIGIBLE " ORDER BY o.id LIMIT ?2"

/* SQLite: inside the caller's BEGIN IMMEDIATE.  Everything the choice
 * needs is in the outbox_waiting and outbox_parent indexes: no row is read
 * for a waiting item, and the waiting items are read oldest first, only
 * until the batch is full (not all of them, sorted, for every batch). */
static const char claim_sqlite[] = "UPDATE outbox" CLAIM_SET(
    NOW_SQLITE) " WHERE id IN (" CLAIM_PICK(" INDEXED BY outbox_waiting") ") RETURNING id";
/* PostgreSQL: rows locked by another claimer are skipped; the CTE runs once. */
static const char claim_pg[] = "WITH picked AS (" CLAIM_PICK(
    "") " FOR UPDATE OF o SKIP LOCKED)"
	" UPDATE outbox" CLAIM_SET(NOW_PG) " FROM picked WHERE outbox.id=picked.id"
					   " RETURNING outbox.id";

/* Claims left by a claimer that is gone: inflight past their deadline (or
 * from before claims had one), or this instance's own at the start of a
 * pass (a batch whose results could not be recorded: the database went
 * away meanwhile). */
#define STALE_PICK(NOW)                                                                            \
	"SELECT id FROM outbox WHERE state='inflight' AND (claim_until IS NULL"                    \
	" OR claim_until < " NOW " OR claimed_by=?1) ORDER BY id LIMIT ?2"
static const char stale_sqlite[] =
    "UPDATE outbox SET claimed_by=?1, claim_until=" NOW_SQLITE " + ?3"
    " WHERE id IN (" STALE_PICK(NOW_SQLITE) ") RETURNING id";
static const char stale_pg[] =
    "WITH picked AS (" STALE_PICK(NOW_PG) " FOR UPDATE SKIP LOCKED)"
					  " UPDATE outbox SET claimed_by=?1, claim_until=" NOW_PG
					  " + ?3 FROM picked WHERE outbox.id=picked.id"
					  " RETURNING outbox.id";

static int id_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* Reads the ids a claim returned, oldest first.  0 or -1. */
static int ids_read(struct db_stmt *s, int64_t **ids, size_t *n)
{
	int rc;
	while ((rc = db_step(s)) == DB_ROW) {
		*ids = xrealloc(*ids, (*n + 1) * sizeof **ids);
		(*ids)[(*n)++] = db_column_int64(s, 0);
	}
	if (*n > 1)
		qsort(*ids, *n, sizeof **ids, id_cmp);
	return rc == DB_DONE ? 0 : -1;
}

static int claim_pick(struct store *st, time_t now, size_t batch, int64_t claim_ms, int64_t **ids,
		      size_t *n)
{
	struct db_stmt *s = store_prep(st, db_sql(store_db(st), claim_sqlite, claim_pg));
	if (!s)
		return -1;
	db_bind_int64(s, 1, (int64_t)now);
	db_bind_int64(s, 2, (int64_t)batch);
	db_bind_text(s, 3, store_instance(st), -1);
	db_bind_int64(s, 4, claim_ms);
	int rc = ids_read(s, ids, n);
	db_finalize(s);
	return rc;
}

int outbox_claim_due(struct store *st, time_t now, size_t batch, int64_t claim_ms, int64_t **ids,
		     size_t *n, int *dead)
{
	*ids = NULL;
	*n = 0;
	if (store_begin(st) < 0)
		return -1;
	int c = outbox_cascade_dead(st);
	if (c < 0 || claim_pick(st, now, batch, claim_ms, ids, n) < 0) {
		store_rollback(st);
		goto fail;
	}
	*dead += c;
	if (store_commit(st) < 0)
		goto fail;
	return 0;
fail:
	free(*ids);
	*ids = NULL;
	*n = 0;
	return -1;
}

/* Ends at once the claims of claimers of this host that are gone. */
static int release_gone(struct store *st)
{
	struct db_stmt *s = store_prep(st, "SELECT DISTINCT claimed_by FROM outbox"
					   " WHERE state='inflight' AND claimed_by IS NOT NULL"
					   " AND claimed_by <> ?1");
	struct strlist gone = {0};
	int rc;
	if (!s)
		return -1;
	db_bind_text(s, 1, store_instance(st), -1);
	while ((rc = db_step(s)) == DB_ROW)
		if (claims_claimer_gone(db_column_text(s, 0)))
			strlist_add(&gone, db_column_text(s, 0));
	db_finalize(s);
	for (size_t i = 0; rc == DB_DONE && i < gone.n; i++) {
		log_info("outbox.claims_released claimer=%s reason=\"process gone\"", gone.v[i]);
		s = store_prep(st, "UPDATE outbox SET claim_until=0 WHERE state='inflight'"
				   " AND claimed_by=?1");
		if (s)
			db_bind_text(s, 1, gone.v[i], -1);
		if (store_run(st, s) < 0)
			rc = DB_FAIL;
	}
	strlist_free(&gone);
	return rc == DB_DONE ? 0 : -1;
}

/* Whether any claim lapsed: one read, so that a pass with none takes no
 * write lock.  1, 0 or -1. */
static int any_stale(struct store *st)
{
	struct db_stmt *s = store_prep(
	    st, db_sql(store_db(st),
		       "SELECT 1 FROM outbox WHERE state='inflight' AND (claim_until IS NULL"
		       " OR claim_until < " NOW_SQLITE " OR claimed_by=?1) LIMIT 1",
		       "SELECT 1 FROM outbox WHERE state='inflight' AND (claim_until IS NULL"
		       " OR claim_until < " NOW_PG " OR claimed_by=?1) LIMIT 1"));
	if (!s)
		return -1;
	db_bind_text(s, 1, store_instance(st), -1);
	int rc = db_step(s);
	db_finalize(s);
	return rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : -1;
}

int outbox_claim_stale(struct store *st, size_t max, int64_t claim_ms, int64_t **ids, size_t *n)
{
	*ids = NULL;
	*n = 0;
	if (release_gone(st) < 0)
		return -1;
	int any = any_stale(st);
	if (any <= 0)
		return any;
	if (store_begin(st) < 0)
		return -1;
	struct db_stmt *s = store_prep(st, db_sql(store_db(st), stale_sqlite, stale_pg));
	int rc = -1;
	if (s) {
		db_bind_text(s, 1, store_instance(st), -1);
		db_bind_int64(s, 2, (int64_t)max);
		db_bind_int64(s, 3, claim_ms);
		rc = ids_read(s, ids, n);
		db_finalize(s);
	}
	if (rc < 0 || store_commit(st) < 0) {
		store_rollback(st);
		free(*ids);
		*ids = NULL;
		*n = 0;
		return -1;
	}
	return 0;
}

int outbox_claims_extend(struct store *st, int64_t claim_ms)
{
	struct db_stmt *s =
	    store_prep(st, db_sql(store_db(st),
				  "UPDATE outbox SET claim_until=" NOW_SQLITE " + ?2"
				  " WHERE state='inflight' AND claimed_by=?1",
				  "UPDATE outbox SET claim_until=" NOW_PG " + ?2"
				  " WHERE state='inflight' AND claimed_by=?1"));
	if (!s)
		return -1;
	db_bind_text(s, 1, store_instance(st), -1);
	db_bind_int64(s, 2, claim_ms);
	if (store_run(st, s) < 0)
		return -1;
	return (int)db_changes(store_db(st));
}

int outbox_claim_lapse(struct store *st, int64_t id)
{
	struct db_stmt *s = store_prep(st, "UPDATE outbox SET claim_until=0 WHERE id=?"
					   " AND state='inflight' AND claimed_by=?");
	if (s) {
		db_bind_int64(s, 1, id);
		db_bind_text(s, 2, store_instance(st), -1);
	}
	return store_run(st, s);
}

int outbox_mark_pending(struct store *st, int64_t id)
{
	struct db_stmt *s =
	    store_prep(st, "UPDATE outbox SET state='pending', claimed_by=NULL, claim_until=NULL"
			   " WHERE id=? AND state='inflight' AND claimed_by=?");
	if (s) {
		db_bind_int64(s, 1, id);
		db_bind_text(s, 2, store_instance(st), -1);
	}
	return store_run(st, s);
}

int outbox_mark_unreadable(struct store *st, int64_t id)
{
	struct db_stmt *s = store_prep(st, "UPDATE outbox SET state='dead', error='stored item is"
					   " unreadable', claimed_by=NULL, claim_until=NULL"
					   " WHERE id=?");
	if (s)
		db_bind_int64(s, 1, id);
	return store_run(st, s);
}

void outbox_note_upload(struct store *st, int64_t attachment, const char *remote)
{
	struct db_stmt *s = store_prep(st, "UPDATE attachments SET remote=? WHERE id=?");
	if (s) {
		db_bind_text(s, 1, remote, -1);
		db_bind_int64(s, 2, attachment);
	}
	store_run(st, s);
}

int outbox_remote_known(struct store *st, const char *remote)
{
	struct db_stmt *s = store_prep(st, "SELECT 1 FROM outbox WHERE remote_id=? LIMIT 1");
	int found = 0;
	if (s) {
		db_bind_text(s, 1, remote, -1);
		found = db_step(s) == DB_ROW;
		db_finalize(s);
	}
	return found;
}

/* --- digest source for backends without a read API -------------------- */

int outbox_read_delivered(struct store *st, const char *group, time_t since,
			  struct feed_entry **entries, size_t *n)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT o.remote_id, p.remote_id, t.payload, o.delivered_at"
			   " FROM outbox o JOIN outbox_payloads t ON t.item=o.id"
			   " LEFT JOIN outbox p ON p.id=o.parent"
			   " WHERE o.grp=? AND o.state='delivered' AND o.delivered_at > ?"
			   " ORDER BY o.delivered_at, o.id");
	*entries = NULL;
	*n = 0;
	if (!s)
		return -1;
	db_bind_text(s, 1, group, -1);
	db_bind_int64(s, 2, (int64_t)since);
	while (db_step(s) == DB_ROW) {
		json_t *p = json_loads(db_column_text(s, 2), 0, NULL);
		if (!p)
			continue;
		*entries = xrealloc(*entries, (*n + 1) * sizeof **entries);
		struct feed_entry *e = &(*entries)[(*n)++];
		memset(e, 0, sizeof *e);
		e->remote_id = col_dup(s, 0);
		e->parent_remote_id = col_dup(s, 1);
		if (!e->parent_remote_id)
			e->parent_remote_id = json_dup(p, "parent_remote_id");
		e->group = xstrdup(group);
		json_t *a = json_object_get(p, "author");
		e->author_name = json_dup(a, "name");
		e->author_email = json_dup(a, "email");
		e->subject = json_dup(p, "subject");
		e->text = json_dup(p, "text");
		e->created = (time_t)db_column_int64(s, 3);
		json_decref(p);
	}
	db_finalize(s);
	return 0;
}

int outbox_read_group(struct store *st, const struct feed_backend_ops *ops, void *ctx,
		      const char *group, time_t since, struct feed_entry **entries, size_t *n,
		      char *err, size_t errlen)
{
	if (ops && ops->read_group)
		return ops->read_group(ctx, group, since, entries, n, err, errlen);
	if (outbox_read_delivered(st, group, since, entries, n) < 0) {
		snprintf(err, errlen,
			 "the backend has no read API and the delivered items of %s could not be "
			 "read from the state database",
			 group);
		return -1;
	}
	return 0;
}

/* --- the dead list ---------------------------------------------------- */

/* The sender and subject of a dead list entry: from an item's payload or
 * from a message's parsed form (JSON read here, not in SQL, so that one
 * text serves both engines and an unreadable row does not hide the list). */
static void dead_sender(const char *payload, const char *parsed, struct outbox_dead *d)
{
	json_t *j = json_loads(payload ? payload : parsed ? parsed : "null", 0, NULL);
	d->from = json_dup(json_object_get(j, payload ? "author" : "from"), "email");
	d->subject = json_dup(j, "subject");
	json_decref(j);
}

int outbox_dead_list(struct store *st, struct outbox_dead **list, size_t *n)
{
	/* Messages whose outbox item is listed are not listed a second time.  A
	 * message that could not be parsed has no parsed subject and sender: its
	 * raw header block tells them instead. */
	struct db_stmt *s = store_prep(
	    st, "SELECT 'o', o.id, COALESCE(m.received_at, o.created), m.mailbox,"
		" t.payload, NULL, o.error, o.state, m.uid, NULL FROM outbox o"
		" LEFT JOIN outbox_payloads t ON t.item=o.id"
		" LEFT JOIN messages m ON m.id=o.message WHERE o.state='dead'"
		" UNION ALL"
		" SELECT 'm', m.id, m.received_at, m.mailbox, NULL, p.parsed,"
		" m.reason, m.state, m.uid,"
		" CASE WHEN p.parsed IS NULL THEN substr(b.raw, 1, CAST(?1 AS INTEGER)) END"
		" FROM messages m LEFT JOIN message_parsed p ON p.message=m.id"
		" LEFT JOIN message_bodies b ON b.message=m.id"
		" WHERE m.state IN ('skipped','dead')"
		" AND NOT EXISTS(SELECT 1 FROM outbox o WHERE o.message=m.id"
		" AND o.state IN ('dead','dropped'))"
		" ORDER BY 3 DESC, 2 DESC");
	*list = NULL;
	*n = 0;
	if (!s)
		return -1;
	db_bind_int64(s, 1, RAW_HEADER_SCAN);
	while (db_step(s) == DB_ROW) {
		*list = xrealloc(*list, (*n + 1) * sizeof **list);
		struct outbox_dead *d = &(*list)[(*n)++];
		memset(d, 0, sizeof *d);
		snprintf(d->id, sizeof d->id, "%s%lld", db_column_text(s, 0),
			 (long long)db_column_int64(s, 1));
		d->when = (time_t)db_column_int64(s, 2);
		d->mailbox = col_dup(s, 3);
		dead_sender(db_column_text(s, 4), db_column_text(s, 5), d);
		d->reason = col_dup(s, 6);
		d->state = col_dup(s, 7);
		d->uid = (uint32_t)db_column_int64(s, 8);
		size_t rawlen = 0;
		const char *raw = db_column_blob(s, 9, &rawlen);
		if (raw && !d->subject)
			d->subject = raw_header_value(raw, rawlen, "Subject", 200);
		if (raw && !d->from && (d->from = raw_header_value(raw, rawlen, "From", 200))) {
			/* the address, as for parsed messages */
			char *lt = strrchr(d->from, '<'), *gt = lt ? strchr(lt, '>') : NULL;
			if (gt && gt > lt + 1) {
				*gt = 0;
				memmove(d->from, lt + 1, (size_t)(gt - lt));
			}
		}
	}
	db_finalize(s);
	return 0;
}

void outbox_dead_free(struct outbox_dead *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(list[i].mailbox);
		free(list[i].from);
		free(list[i].subject);
		free(list[i].reason);
		free(list[i].state);
	}
	free(list);
}

/* "o12" / "m7" → kind and row id.  0, or -1 when malformed. */
static int dead_id_parse(const char *id, char *kind, int64_t *row)
{
	char *end;
	if (!id || (id[0] != 'o' && id[0] != 'm') || id[1] < '1' || id[1] > '9')
		return -1;
	long long v = strtoll(id + 1, &end, 10);
	if (*end || v <= 0)
		return -1;
	*kind = id[0];
	*row = v;
	return 0;
}

/* One statement of the dead list on row ?1, with ?2 the time now. */
static int run_on_row(struct store *st, const char *sql, int64_t row)
{
	struct db_stmt *s = store_prep(st, sql);
	if (s) {
		db_bind_int64(s, 1, row);
		db_bind_int64(s, 2, (int64_t)time(NULL));
	}
	return store_run(st, s);
}

static int retry_item(struct store *st, int64_t row)
{
	return run_on_row(st,
			  "UPDATE outbox SET state='pending', attempts=0, next_at=0, error=NULL,"
			  " created=?2 WHERE id=?1 AND state='dead'",
			  row);
}

static int retry_item_and_comments(struct store *st, int64_t row)
{
	return run_on_row(st,
			  "UPDATE outbox SET state='pending', attempts=0, next_at=0, error=NULL,"
			  " created=?2 WHERE (id=?1 OR (parent=?1 AND state='dead'"
			  " AND error='post was not delivered'))",
			  row);
}

static int drop_item(struct store *st, int64_t row)
{
	return run_on_row(st, "UPDATE outbox SET state='dropped' WHERE id=?1 AND state='dead'",
			  row);
}

/* Runs one update in its own transaction, and extra after it when it
 * changed something: 0 changed, 1 nothing matched, -1. */
static int update_one(struct store *st, int (*update)(struct store *, int64_t), int64_t row,
		      int (*extra)(struct store *, int64_t))
{
	if (store_begin(st) < 0)
		return -1;
	if (update(st, row) < 0) {
		store_rollback(st);
		return -1;
	}
	int changed = (int)db_changes(store_db(st));
	if (changed && extra && extra(st, row) < 0) {
		store_rollback(st);
		return -1;
	}
	if (store_commit(st) < 0)
		return -1;
	return changed ? 0 : 1;
}

/* An item's new group and payload.  0 or -1. */
static int remap_write(struct store *st, int64_t item, const char *group, const char *payload)
{
	struct db_stmt *s = store_prep(st, "UPDATE outbox SET grp=? WHERE id=?");
	if (s) {
		db_bind_text(s, 1, group, -1);
		db_bind_int64(s, 2, item);
	}
	if (store_run(st, s) < 0)
		return -1;
	s = store_prep(st, "UPDATE outbox_payloads SET payload=? WHERE item=?");
	if (s) {
		db_bind_text(s, 1, payload, -1);
		db_bind_int64(s, 2, item);
	}
	return store_run(st, s);
}

/* An item sent again takes its message's current mapping: the group and
 * the mapping's hashtags (with the message's own), so that a mistake in
 * the config, fixed and reloaded, is not repeated; a comment takes its
 * post's group instead (a reply lives where its post is).  Items whose
 * mailbox is no longer mapped keep what they had. */
static int remap_item(struct store *st, const struct mf_config *cfg, int64_t item)
{
	struct db_stmt *s =
	    store_prep(st, "SELECT m.mailbox, t.payload, p.parsed, o.grp, o.thread_id, o.parent,"
			   " q.grp FROM outbox o JOIN outbox_payloads t ON t.item=o.id"
			   " JOIN messages m ON m.id=o.message LEFT JOIN message_parsed p"
			   " ON p.message=m.id LEFT JOIN outbox q ON q.id=o.parent WHERE o.id=?");
	if (!s)
		return -1;
	db_bind_int64(s, 1, item);
	if (db_step(s) != DB_ROW) {
		db_finalize(s);
		return 0;
	}
	const struct mf_mailbox *mb = config_mailbox(cfg, db_column_text(s, 0));
	json_t *payload = json_loads(db_column_text(s, 1), 0, NULL);
	json_t *parsed_json =
	    json_loads(db_column_text(s, 2) ? db_column_text(s, 2) : "{}", 0, NULL);
	json_t *own = json_object_get(parsed_json, "hashtags");
	char *old_group = col_dup(s, 3);
	int64_t thread_id = db_column_is_null(s, 4) ? 0 : db_column_int64(s, 4);
	int is_post = db_column_is_null(s, 5) || db_column_int64(s, 5) == 0;
	/* a comment stays with its post, wherever the post is */
	char *post_group = is_post ? NULL : col_dup(s, 6);
	db_finalize(s);
	const char *group = post_group ? post_group : mb ? mb->group : NULL;
	int rc = 0;
	if (mb && payload) {
		/* the same rule as a new item's: the message's own tags, as
		 * parsed, after the mapping's */
		struct mf_message parsed = {0};
		struct strlist seen = {0};
		json_t *tags = json_array(), *v;
		size_t i;
		json_array_foreach(own, i, v)
		{
			if (json_is_string(v))
				strlist_add(&parsed.hashtags, json_string_value(v));
		}
		decide_hashtags(&mb->hashtags, &parsed, &seen);
		for (i = 0; i < seen.n; i++)
			json_array_append_new(tags, json_string(seen.v[i]));
		strlist_free(&seen);
		strlist_free(&parsed.hashtags);
		json_object_set_new(payload, "hashtags", tags);
		char *text = json_dumps(payload, JSON_COMPACT);
		rc = remap_write(st, item, group, text);
		free(text);
		int moved = rc == 0 && old_group && strcmp(old_group, group) != 0;
		/* the thread goes with its post: later replies find it there */
		if (moved && is_post && thread_id > 0)
			rc = thread_move(st, thread_id, group);
		if (moved && rc == 0)
			log_info("outbox.remapped item=%lld group_was=%s group=%s", (long long)item,
				 old_group, group);
	}
	free(post_group);
	free(old_group);
	json_decref(payload);
	json_decref(parsed_json);
	return rc;
}

/* Items of a retried post: the post and the comments brought back with it. */
static int remap_retried(struct store *st, const struct mf_config *cfg, int64_t row)
{
	/* the post first: its comments follow it to its group */
	struct db_stmt *s = store_prep(st, "SELECT id FROM outbox WHERE (id=?1 OR parent=?1)"
					   " AND state='pending' ORDER BY CASE WHEN id=?1 THEN 0"
					   " ELSE 1 END, id");
	int64_t ids[256];
	size_t n = 0;
	if (!s)
		return -1;
	db_bind_int64(s, 1, row);
	while (n < sizeof ids / sizeof ids[0] && db_step(s) == DB_ROW)
		ids[n++] = db_column_int64(s, 0);
	db_finalize(s);
	if (store_begin(st) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (remap_item(st, cfg, ids[i]) < 0) {
			store_rollback(st);
			return -1;
		}
	return store_commit(st);
}

int outbox_dead_retry(struct store *st, const struct mf_config *cfg, const char *id, char *err,
		      size_t errlen)
{
	char kind;
	int64_t row;
	if (dead_id_parse(id, &kind, &row) < 0)
		return 1;
	if (kind == 'o') {
		/* The item, and the comments that died because it did. */
		int rc = update_one(st, retry_item, row, retry_item_and_comments);
		if (rc == 0) {
			messages_follow_retried(st);
			/* sent again from scratch: files are uploaded anew */
			struct db_stmt *s = store_prep(
			    st, "UPDATE attachments SET remote=NULL WHERE item=?1 OR item IN"
				" (SELECT id FROM outbox WHERE parent=?1)");
			if (s)
				db_bind_int64(s, 1, row);
			store_run(st, s);
			if (cfg && remap_retried(st, cfg, row) < 0)
				rc = -1;
		}
		if (rc < 0)
			snprintf(err, errlen, "cannot update the state database: %s",
				 store_errmsg(st));
		return rc;
	}
	int content = messages_dead_content(st, row);
	if (content <= 0)
		return 1;
	if (content == 2) {
		snprintf(err, errlen,
			 "message %s was never fetched (it was over max_message_size); raise "
			 "max_message_size and copy the message into its folder again (only new "
			 "UIDs are fetched)",
			 id);
		return -1;
	}
	int rc = update_one(st, messages_retry, row, NULL);
	if (rc < 0)
		snprintf(err, errlen, "cannot update the state database: %s", store_errmsg(st));
	return rc;
}

int outbox_dead_drop(struct store *st, const char *id, char *err, size_t errlen)
{
	char kind;
	int64_t row;
	int rc;
	if (dead_id_parse(id, &kind, &row) < 0)
		return 1;
	if (kind == 'o')
		/* its message is done with, unless another item of it is
		 * still on its way */
		rc = update_one(st, drop_item, row, messages_drop_of_item);
	else
		rc = update_one(st, messages_drop, row, NULL);
	if (rc < 0)
		snprintf(err, errlen, "cannot update the state database: %s", store_errmsg(st));
	return rc;
}

/* --- what the gateway made ------------------------------------------ */

int outbox_origin(struct store *st, const char *remote_id, struct outbox_origin *o)
{
	memset(o, 0, sizeof *o);
	if (!remote_id || !*remote_id)
		return 0;
	struct db_stmt *s =
	    store_prep(st, "SELECT t.payload, o.kind FROM outbox o"
			   " JOIN outbox_payloads t ON t.item=o.id WHERE o.remote_id=?"
			   " AND o.state='delivered' ORDER BY o.id LIMIT 1");
	if (!s)
		return -1;
	db_bind_text(s, 1, remote_id, -1);
	int rc = db_step(s);
	if (rc != DB_ROW) {
		db_finalize(s);
		return rc == DB_DONE ? 0 : -1;
	}
	json_t *p = json_loads(db_column_text(s, 0), 0, NULL);
	const char *kind = db_column_text(s, 1);
	o->comment = kind && strcmp(kind, "comment") == 0;
	db_finalize(s);
	json_t *author = json_object_get(p, "author");
	o->author_name = json_dup(author, "name");
	o->author_email = json_dup(author, "email");
	o->subject = json_dup(p, "subject");
	json_decref(p);
	return 1;
}

void outbox_origin_clear(struct outbox_origin *o)
{
	free(o->author_name);
	free(o->author_email);
	free(o->subject);
	memset(o, 0, sizeof *o);
}

int outbox_prune_files(struct store *st, time_t cutoff)
{
	return store_prune_rows(
	    st,
	    "UPDATE attachments SET data=NULL WHERE data IS NOT NULL AND item IN"
	    " (SELECT id FROM outbox WHERE state IN ('delivered','dropped')"
	    " AND COALESCE(delivered_at, created) <= ?1)",
	    cutoff);
}
