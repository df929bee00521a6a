/* thread.c — which thread a message belongs to.
 *
 * Three parts: subject normalisation (reply/forward prefixes in many
 * languages and [list] tags stripped, case and whitespace folded); the
 * persistent assignment of a message to a thread of its group, by every
 * Message-ID the thread has seen and then by subject within one mailbox and
 * a time window; and an in-memory JWZ threader used to order a batch and to
 * check the algorithm against the classic test case.  The JWZ threader never
 * loses a message: reference loops are broken, duplicates get their own node. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/log.h"
#include "mailfeed/thread.h"

/* --- subject normalisation ------------------------------------------- */

/* Reply/forward prefixes, lower-case, without the colon. */
static const char *const subject_prefixes[] = {
    "re",   "fwd",  "fw",   "aw",    "wg",     "sv",   "vs",   "antw",	     "doorst",
    "rif",  "r",    "tr",   "enc",   "rv",     "odp",  "pd",   "res",	     "ref",
    "réf",  "rép",  "ynt",  "ilt",   "vl",     "vb",   "vá",   "továbbítás", "απ",
    "σχετ", "πρθ",  "отв",  "ответ", "пересл", "fwd.", "回复", "回覆",	     "答复",
    "转发", "轉寄", "转寄", "返信",  "転送",   "회신", "전달",
};

/* Appends the lower-case form of one UTF-8 character at s (n bytes long)
 * to b: ASCII, Latin-1 letters, Greek and Cyrillic; others unchanged. */
static void put_lower(struct buf *b, const unsigned char *s, size_t n)
{
	unsigned char c0 = s[0], c1 = n > 1 ? s[1] : 0;
	char out[2];
	if (n == 1) {
		buf_putc(b, (char)tolower(c0));
		return;
	}
	if (n == 2) {
		if (c0 == 0xC3 && c1 >= 0x80 && c1 <= 0x9E && c1 != 0x97) {
			c1 += 0x20;
		} else if (c0 == 0xCE && c1 >= 0x91 && c1 <= 0x9F) {
			c1 += 0x20;
		} else if (c0 == 0xCE && c1 >= 0xA0 && c1 <= 0xAB) {
			c0 = 0xCF;
			c1 -= 0x20;
		} else if (c0 == 0xD0 && c1 >= 0x90 && c1 <= 0x9F) {
			c1 += 0x20;
		} else if (c0 == 0xD0 && c1 >= 0xA0 && c1 <= 0xAF) {
			c0 = 0xD1;
			c1 -= 0x20;
		} else if (c0 == 0xD0 && c1 >= 0x80 && c1 <= 0x8F) {
			c0 = 0xD1;
			c1 += 0x10;
		}
		out[0] = (char)c0;
		out[1] = (char)c1;
		buf_append(b, out, 2);
		return;
	}
	buf_append(b, s, n);
}

static size_t utf8_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0)
		return 2;
	if ((c & 0xF0) == 0xE0)
		return 3;
	if ((c & 0xF8) == 0xF0)
		return 4;
	return 1;
}

/* Lower-cases s and folds every run of whitespace into one space, trimmed. */
static char *fold_subject(const char *subject)
{
	struct buf b;
	const unsigned char *s = (const unsigned char *)subject;
	int space = 0;
	buf_init(&b);
	while (*s) {
		size_t n = utf8_len(*s);
		if (isspace(*s)) {
			space = 1;
			s++;
			continue;
		}
		for (size_t i = 1; i < n; i++)
			if ((s[i] & 0xC0) != 0x80) { /* invalid UTF-8: byte by byte */
				n = 1;
				break;
			}
		if (space && b.len)
			buf_putc(&b, ' ');
		space = 0;
		put_lower(&b, s, n);
		s += n;
	}
	return buf_steal(&b);
}

/* Length of a reply/forward prefix at s ("re:", "re[2]:", "re^2 :", "回复：",
 * with the whitespace after it), or 0. */
static size_t prefix_len(const char *s)
{
	for (size_t i = 0; i < sizeof subject_prefixes / sizeof *subject_prefixes; i++) {
		size_t n = strlen(subject_prefixes[i]);
		const char *p = s + n;
		if (strncmp(s, subject_prefixes[i], n) != 0)
			continue;
		if (*p == '[' || *p == '(') {
			char close = *p == '[' ? ']' : ')';
			const char *q = p + 1;
			while (isdigit((unsigned char)*q))
				q++;
			if (q == p + 1 || *q != close)
				continue;
			p = q + 1;
		} else if (*p == '^') {
			const char *q = p + 1;
			while (isdigit((unsigned char)*q))
				q++;
			if (q == p + 1)
				continue;
			p = q;
		}
		if (*p == ' ' && (p[1] == ':' || strncmp(p + 1, "\xef\xbc\x9a", 3) == 0))
			p++;
		if (*p == ':')
			p++;
		else if (strncmp(p, "\xef\xbc\x9a", 3) == 0) /* full-width colon */
			p += 3;
		else
			continue;
		while (*p == ' ')
			p++;
		return (size_t)(p - s);
	}
	return 0;
}

/* Length of a "[list tag] " at s, or 0.  Tags are short and hold no ']'. */
static size_t tag_len(const char *s)
{
	const char *p = s + 1;
	if (*s != '[')
		return 0;
	while (*p && *p != ']' && *p != '[' && p - s < 80)
		p++;
	if (*p != ']' || p == s + 1)
		return 0;
	p++;
	while (*p == ' ')
		p++;
	return (size_t)(p - s);
}

/* A renamed thread keeps its old name at the end: "new name (was: old
 * name)"; replies may keep or drop it, so it is no part of the key. */
static void strip_was(char *s)
{
	static const char *const was[] = {"(was:", "(was ", "(war:", "(était:", "(era:", "(antes:"};
	size_t n = strlen(s);
	if (n == 0 || s[n - 1] != ')')
		return;
	for (size_t i = 0; i < sizeof was / sizeof *was; i++) {
		char *p = strstr(s, was[i]);
		if (!p || p == s)
			continue;
		while (p > s && p[-1] == ' ')
			p--;
		if (p > s)
			*p = 0;
		return;
	}
}

/* Normalises subject; *replies counts the reply/forward prefixes seen. */
static char *subject_normalise_count(const char *subject, int *replies)
{
	char *folded = fold_subject(subject ? subject : "");
	const char *s = folded;
	char *out;
	*replies = 0;
	for (;;) {
		size_t n = prefix_len(s);
		if (n) {
			*replies += 1;
			s += n;
			continue;
		}
		n = tag_len(s);
		if (n && s[n]) {
			s += n;
			continue;
		}
		break;
	}
	out = xstrdup(s);
	free(folded);
	strip_was(out);
	return out;
}

char *thread_subject_normalise(const char *subject)
{
	int replies;
	return subject_normalise_count(subject, &replies);
}

/* --- persistent assignment -------------------------------------------- */

/* At most this many references of one message are looked up and recorded
 * (the most recent ones): a header is untrusted and may be huge. */
#define THREAD_MAX_REFS 100

int thread_id_usable(const char *id)
{
	const char *at;
	size_t n;
	if (!id)
		return 0;
	n = strlen(id);
	at = strrchr(id, '@');
	/* "yes" from a prompt, "", "<>", "12345": not ids */
	if (n < 3 || n > 998 || !at || at == id || !at[1])
		return 0;
	for (const char *p = id; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
			return 0;
	return 1;
}

/* Every message's normalised subject is recorded among the thread's ids
 * under this key ("\n" never occurs in a usable id nor in a normalised
 * subject), so that a reply whose headers were lost finds the sub-thread
 * or the patch of a series it answers, not only the thread's first
 * subject. */
static char *subject_key(const char *mailbox, const char *subject_norm)
{
	return xasprintf("subject\n%s\n%s", mailbox, subject_norm);
}

/* Where the look-ups run: the store's statements kept prepared (the
 * daemon, once per message), or a bare connection (preview, inspect). */
struct lookup {
	struct store *st;
	struct db *db;
};

static struct db_stmt *lookup_prep(const struct lookup *q, const char *sql)
{
	return q->st ? store_stmt(q->st, sql) : db_prepare(q->db, sql);
}

static void lookup_done(const struct lookup *q, struct db_stmt *s)
{
	if (q->st)
		store_stmt_done(q->st, s);
	else
		db_finalize(s);
}

static int64_t lookup_key(const struct lookup *q, const char *grp, const char *id)
{
	struct db_stmt *st;
	int64_t tid = 0;
	if (!(st = lookup_prep(q, "SELECT thread_id FROM thread_ids WHERE message_id=? AND grp=?")))
		return -1;
	db_bind_text(st, 1, id, -1);
	db_bind_text(st, 2, grp, -1);
	if (db_step(st) == DB_ROW)
		tid = db_column_int64(st, 0);
	lookup_done(q, st);
	return tid;
}

static int64_t lookup_id(const struct lookup *q, const char *grp, const char *id)
{
	return thread_id_usable(id) ? lookup_key(q, grp, id) : 0;
}

static int64_t lookup_subject(const struct lookup *q, const char *grp, const char *mailbox,
			      const char *subject_norm, time_t when, long window)
{
	struct db_stmt *st;
	int64_t tid = 0;
	if (!(st = lookup_prep(q,
			       "SELECT id FROM threads WHERE grp=? AND mailbox=? AND subject_norm=?"
			       " AND last_date BETWEEN ? AND ? ORDER BY last_date DESC LIMIT 1")))
		return -1;
	db_bind_text(st, 1, grp, -1);
	db_bind_text(st, 2, mailbox, -1);
	db_bind_text(st, 3, subject_norm, -1);
	db_bind_int64(st, 4, (int64_t)when - window);
	db_bind_int64(st, 5, (int64_t)when + window);
	if (db_step(st) == DB_ROW)
		tid = db_column_int64(st, 0);
	lookup_done(q, st);
	if (tid != 0)
		return tid;
	/* the subject of any message of a thread active within the window */
	char *key = subject_key(mailbox, subject_norm);
	if (!(st = lookup_prep(q,
			       "SELECT t.id FROM thread_ids i JOIN threads t ON t.id = i.thread_id"
			       " WHERE i.message_id=? AND i.grp=? AND t.mailbox=?"
			       " AND t.last_date BETWEEN ? AND ?"))) {
		free(key);
		return -1;
	}
	db_bind_text(st, 1, key, -1);
	free(key);
	db_bind_text(st, 2, grp, -1);
	db_bind_text(st, 3, mailbox, -1);
	db_bind_int64(st, 4, (int64_t)when - window);
	db_bind_int64(st, 5, (int64_t)when + window);
	if (db_step(st) == DB_ROW)
		tid = db_column_int64(st, 0);
	lookup_done(q, st);
	return tid;
}

/* The latest thread with a message of that subject owns the key (a row
 * that already names it is left as it is, not written again). */
static int register_subject(struct store *sto, const char *grp, const char *mailbox,
			    const char *subject_norm, int64_t tid)
{
	struct db_stmt *st;
	int rc;
	if (!*subject_norm)
		return 0;
	if (!(st = store_stmt(sto, "INSERT INTO thread_ids(message_id, grp, thread_id)"
				   " VALUES(?,?,?) ON CONFLICT(message_id, grp)"
				   " DO UPDATE SET thread_id=excluded.thread_id"
				   " WHERE thread_ids.thread_id <> excluded.thread_id")))
		return -1;
	char *key = subject_key(mailbox, subject_norm);
	db_bind_text(st, 1, key, -1);
	free(key);
	db_bind_text(st, 2, grp, -1);
	db_bind_int64(st, 3, tid);
	rc = db_step(st);
	store_stmt_done(sto, st);
	return rc == DB_DONE ? 0 : -1;
}

static int register_id(struct store *sto, const char *grp, const char *id, int64_t tid)
{
	struct db_stmt *st;
	int rc;
	if (!thread_id_usable(id))
		return 0;
	if (!(st = store_stmt(sto, "INSERT INTO thread_ids(message_id, grp, thread_id)"
				   " VALUES(?,?,?) ON CONFLICT DO NOTHING")))
		return -1;
	db_bind_text(st, 1, id, -1);
	db_bind_text(st, 2, grp, -1);
	db_bind_int64(st, 3, tid);
	rc = db_step(st);
	store_stmt_done(sto, st);
	return rc == DB_DONE ? 0 : -1;
}

static int64_t create_thread(struct store *sto, const char *grp, const char *mailbox,
			     const char *subject_norm, time_t when)
{
	struct db_stmt *st;
	int rc;
	if (!(st = store_stmt(
		  sto, "INSERT INTO threads(grp, mailbox, subject_norm, first_date, last_date)"
		       " VALUES(?,?,?,?,?) RETURNING id")))
		return -1;
	db_bind_text(st, 1, grp, -1);
	db_bind_text(st, 2, mailbox, -1);
	db_bind_text(st, 3, subject_norm, -1);
	db_bind_int64(st, 4, (int64_t)when);
	db_bind_int64(st, 5, (int64_t)when);
	rc = db_step(st);
	int64_t id = rc == DB_ROW ? db_column_int64(st, 0) : -1;
	store_stmt_done(sto, st);
	return id;
}

static int touch_thread(struct store *sto, int64_t tid, time_t when)
{
	struct db_stmt *st;
	int rc;
	if (!(st = store_stmt(sto, "UPDATE threads SET last_date=CASE WHEN last_date IS NULL"
				   " OR last_date < ?1 THEN ?1 ELSE last_date END,"
				   " first_date=CASE WHEN first_date IS NULL OR first_date > ?1"
				   " THEN ?1 ELSE first_date END WHERE id=?2")))
		return -1;
	db_bind_int64(st, 1, (int64_t)when);
	db_bind_int64(st, 2, tid);
	rc = db_step(st);
	store_stmt_done(sto, st);
	return rc == DB_DONE ? 0 : -1;
}

static int assign_fail(struct store *st, const char *what)
{
	log_error("thread.assign.failed step=%s error=%s", what, LOG_Q(store_errmsg(st)));
	return -1;
}

static int64_t find_thread(const struct lookup *q, const char *grp, const char *mailbox,
			   const struct mf_message *m, long window)
{
	time_t when = m->date ? m->date : time(NULL);
	size_t nref = m->references.n, first = nref > THREAD_MAX_REFS ? nref - THREAD_MAX_REFS : 0;
	int64_t tid = lookup_id(q, grp, m->message_id);
	int replies;
	char *subject_norm;

	if (tid == 0)
		tid = lookup_id(q, grp, m->in_reply_to);
	for (size_t i = nref; tid == 0 && i > first; i--)
		tid = lookup_id(q, grp, m->references.v[i - 1]);
	if (tid != 0)
		return tid;
	subject_norm = subject_normalise_count(m->subject, &replies);
	if (*subject_norm && (replies || thread_id_usable(m->in_reply_to) || nref > 0))
		tid = lookup_subject(q, grp, mailbox, subject_norm, when, window);
	free(subject_norm);
	return tid;
}

int64_t thread_find(struct db *db, const char *grp, const char *mailbox, const struct mf_message *m,
		    long window)
{
	struct lookup q = {NULL, db};
	return find_thread(&q, grp, mailbox, m, window);
}

int64_t thread_find_kept(struct store *st, const char *grp, const char *mailbox,
			 const struct mf_message *m, long window)
{
	struct lookup q = {st, store_db(st)};
	return find_thread(&q, grp, mailbox, m, window);
}

int thread_record(struct store *st, const char *grp, const char *mailbox,
		  const struct mf_message *m, int64_t found, int64_t *thread_id, int *is_new)
{
	time_t when = m->date ? m->date : time(NULL);
	size_t nref = m->references.n, first = nref > THREAD_MAX_REFS ? nref - THREAD_MAX_REFS : 0;
	int replies;
	char *subject_norm = subject_normalise_count(m->subject, &replies);
	int64_t tid = found;

	*is_new = 0;
	if (tid == 0) {
		tid = create_thread(st, grp, mailbox, subject_norm, when);
		*is_new = 1;
	}
	if (tid < 0 || register_subject(st, grp, mailbox, subject_norm, tid) < 0) {
		free(subject_norm);
		return assign_fail(st, tid < 0 ? "create" : "register");
	}
	free(subject_norm);
	if (register_id(st, grp, m->message_id, tid) < 0 ||
	    register_id(st, grp, m->in_reply_to, tid) < 0)
		return assign_fail(st, "register");
	for (size_t i = first; i < nref; i++)
		if (register_id(st, grp, m->references.v[i], tid) < 0)
			return assign_fail(st, "register");
	/* a thread just created has this message's date as its first and last */
	if (!*is_new && touch_thread(st, tid, when) < 0)
		return assign_fail(st, "update");
	*thread_id = tid;
	return 0;
}

int thread_assign(struct store *st, const char *grp, const char *mailbox,
		  const struct mf_message *m, long window, int64_t *thread_id, int *is_new)
{
	int64_t tid = thread_find_kept(st, grp, mailbox, m, window);
	if (tid < 0)
		return assign_fail(st, "lookup");
	return thread_record(st, grp, mailbox, m, tid, thread_id, is_new);
}

int thread_set_root(struct store *st, int64_t thread_id, int64_t outbox_item)
{
	struct db_stmt *s;
	int rc;
	if (!(s = store_stmt(st, "UPDATE threads SET root_item=? WHERE id=?")))
		return assign_fail(st, "set-root");
	db_bind_int64(s, 1, outbox_item);
	db_bind_int64(s, 2, thread_id);
	rc = db_step(s);
	store_stmt_done(st, s);
	return rc == DB_DONE ? 0 : assign_fail(st, "set-root");
}

/* One statement of thread_move, with thread_id as ?1 and grp as ?2. */
static int move_step(struct store *st, const char *sql, int64_t thread_id, const char *grp)
{
	struct db_stmt *s = store_prep(st, sql);
	if (!s)
		return -1;
	db_bind_int64(s, 1, thread_id);
	db_bind_text(s, 2, grp, -1);
	return store_run(st, s);
}

int thread_move(struct store *st, int64_t thread_id, const char *grp)
{
	/* an id the new group already gives to a thread of its own stays
	 * there: the moved thread gives it up */
	if (move_step(st, "UPDATE threads SET grp=?2 WHERE id=?1", thread_id, grp) < 0 ||
	    move_step(st,
		      "DELETE FROM thread_ids WHERE thread_id=?1 AND grp<>?2 AND message_id IN"
		      " (SELECT message_id FROM thread_ids WHERE grp=?2)",
		      thread_id, grp) < 0 ||
	    move_step(st, "UPDATE thread_ids SET grp=?2 WHERE thread_id=?1", thread_id, grp) < 0)
		return assign_fail(st, "move");
	return 0;
}

static int64_t root_item(const struct lookup *q, int64_t thread_id)
{
	struct db_stmt *s;
	int64_t item = 0;
	if (!(s = lookup_prep(q, "SELECT root_item FROM threads WHERE id=?")))
		return -1;
	db_bind_int64(s, 1, thread_id);
	int rc = db_step(s);
	if (rc == DB_ROW)
		item = db_column_int64(s, 0);
	else if (rc != DB_DONE)
		item = -1; /* not "no post yet" */
	lookup_done(q, s);
	return item;
}

int64_t thread_root_item(struct db *db, int64_t thread_id)
{
	struct lookup q = {NULL, db};
	return root_item(&q, thread_id);
}

int64_t thread_root(struct store *st, int64_t thread_id)
{
	struct lookup q = {st, store_db(st)};
	int64_t item = root_item(&q, thread_id);
	return item < 0 ? assign_fail(st, "root") : item;
}

/* --- in-memory JWZ threading ------------------------------------------ */

/* Containers live in one array and point at each other by index; -1 = none.
 * Children are kept in arrival order (first/last child, next sibling). */
struct jwz_node {
	const char *id;
	long msg; /* index into msgs, -1 for an empty container */
	long parent, first, last, next;
};

struct jwz {
	struct jwz_node *nodes;
	size_t n, cap;
	long *table; /* open addressing over ids, -1 = free */
	size_t table_cap;
};

static uint64_t id_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static long jwz_add_node(struct jwz *j, const char *id, long msg)
{
	if (j->n == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 64;
		j->nodes = xrealloc(j->nodes, j->cap * sizeof *j->nodes);
	}
	j->nodes[j->n] = (struct jwz_node){id, msg, -1, -1, -1, -1};
	return (long)j->n++;
}

/* The container of id, created empty when unknown. */
static long jwz_get(struct jwz *j, const char *id)
{
	size_t i = id_hash(id) & (j->table_cap - 1);
	long k;
	while (j->table[i] >= 0) {
		if (strcmp(j->nodes[j->table[i]].id, id) == 0)
			return j->table[i];
		i = (i + 1) & (j->table_cap - 1);
	}
	k = jwz_add_node(j, id, -1);
	j->table[i] = k;
	return k;
}

static void jwz_unlink(struct jwz *j, long c)
{
	long p = j->nodes[c].parent, prev = -1;
	if (p < 0)
		return;
	for (long k = j->nodes[p].first; k >= 0; prev = k, k = j->nodes[k].next) {
		if (k != c)
			continue;
		if (prev >= 0)
			j->nodes[prev].next = j->nodes[c].next;
		else
			j->nodes[p].first = j->nodes[c].next;
		if (j->nodes[p].last == c)
			j->nodes[p].last = prev;
		break;
	}
	j->nodes[c].parent = -1;
	j->nodes[c].next = -1;
}

static void jwz_append_child(struct jwz *j, long p, long c)
{
	jwz_unlink(j, c);
	j->nodes[c].parent = p;
	j->nodes[c].next = -1;
	if (j->nodes[p].last >= 0)
		j->nodes[j->nodes[p].last].next = c;
	else
		j->nodes[p].first = c;
	j->nodes[p].last = c;
}

/* Whether c is a (or one of a's ancestors): linking c under a would then
 * make a loop. */
static int jwz_is_ancestor(const struct jwz *j, long c, long a)
{
	for (long k = a; k >= 0; k = j->nodes[k].parent)
		if (k == c)
			return 1;
	return 0;
}

/* Puts c (unlinked) into p's children just before sibling before. */
static void jwz_insert_before(struct jwz *j, long p, long c, long before)
{
	long prev = -1;
	jwz_unlink(j, c);
	for (long k = j->nodes[p].first; k >= 0 && k != before; k = j->nodes[k].next)
		prev = k;
	j->nodes[c].parent = p;
	j->nodes[c].next = before;
	if (prev >= 0)
		j->nodes[prev].next = c;
	else
		j->nodes[p].first = c;
	if (before < 0)
		j->nodes[p].last = c;
}

static const char *jwz_subject(const struct jwz *j, const struct jwz_msg *msgs, long c)
{
	if (j->nodes[c].msg < 0 && j->nodes[c].first >= 0)
		c = j->nodes[c].first;
	if (j->nodes[c].msg < 0)
		return NULL;
	return msgs[j->nodes[c].msg].subject ? msgs[j->nodes[c].msg].subject : "";
}

/* Step 4: empty containers without children vanish; an empty container's
 * children move up into its place (at the root only when there is one). */
static void jwz_prune(struct jwz *j, long parent, int at_root)
{
	long c = j->nodes[parent].first;
	while (c >= 0) {
		struct jwz_node *n = &j->nodes[c];
		long next = n->next;
		jwz_prune(j, c, 0);
		n = &j->nodes[c];
		if (n->msg < 0 && (!at_root || n->first < 0 || j->nodes[n->first].next < 0)) {
			while (n->first >= 0)
				jwz_insert_before(j, parent, n->first, c);
			jwz_unlink(j, c); /* its children were pruned already */
		}
		c = next;
	}
}

static void jwz_print_tree(const struct jwz *j, const struct jwz_msg *msgs, long c, int depth,
			   FILE *out)
{
	for (; c >= 0; c = j->nodes[c].next) {
		const struct jwz_node *n = &j->nodes[c];
		fprintf(out, "%*s%s\n", depth * 3, "",
			n->msg >= 0 ? (msgs[n->msg].subject ? msgs[n->msg].subject : "") : "dummy");
		jwz_print_tree(j, msgs, n->first, depth + 1, out);
	}
}

/* Step 5: roots with the same normalised subject are gathered under the
 * first one's place: an empty container takes the others, a message without
 * a reply prefix takes the replies, otherwise a new empty container takes
 * both. */
static void jwz_group_subjects(struct jwz *j, const struct jwz_msg *msgs, long root)
{
	size_t cap = 16;
	long *seen;
	char **keys;
	int *reply;
	while (cap < j->n * 2 + 16)
		cap *= 2;
	seen = xmalloc(cap * sizeof *seen);
	keys = xcalloc(cap, sizeof *keys);
	reply = xcalloc(cap, sizeof *reply);
	for (size_t i = 0; i < cap; i++)
		seen[i] = -1;
	for (long c = j->nodes[root].first, next; c >= 0; c = next) {
		const char *subj = jwz_subject(j, msgs, c);
		int replies;
		char *key;
		size_t h;
		long o;
		next = j->nodes[c].next;
		if (!subj)
			continue;
		key = subject_normalise_count(subj, &replies);
		if (!*key) {
			free(key);
			continue;
		}
		h = id_hash(key) & (cap - 1);
		while (seen[h] >= 0 && strcmp(keys[h], key) != 0)
			h = (h + 1) & (cap - 1);
		if (seen[h] < 0) {
			seen[h] = c;
			keys[h] = key;
			reply[h] = replies > 0;
			continue;
		}
		free(key);
		o = seen[h];
		if (j->nodes[o].msg < 0 && j->nodes[c].msg < 0) {
			while (j->nodes[c].first >= 0)
				jwz_append_child(j, o, j->nodes[c].first);
			jwz_unlink(j, c);
		} else if (j->nodes[o].msg < 0 || (!reply[h] && replies)) {
			jwz_append_child(j, o, c);
		} else if (j->nodes[c].msg < 0 || (reply[h] && !replies)) {
			jwz_insert_before(j, root, c, o);
			jwz_append_child(j, c, o);
			seen[h] = c;
			reply[h] = replies > 0;
		} else {
			long d = jwz_add_node(j, NULL, -1);
			jwz_insert_before(j, root, d, o);
			jwz_append_child(j, d, o);
			jwz_append_child(j, d, c);
			seen[h] = d;
		}
	}
	for (size_t i = 0; i < cap; i++)
		free(keys[i]);
	free(keys);
	free(seen);
	free(reply);
}

/* Step 1: containers for every message and reference, parent links from
 * each References chain, never making a loop. */
static void jwz_link(struct jwz *j, const struct jwz_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct jwz_msg *m = &msgs[i];
		long c = -1, prev = -1;
		if (m->message_id && *m->message_id) {
			c = jwz_get(j, m->message_id);
			if (j->nodes[c].msg >= 0)
				c = -1; /* a duplicate Message-ID gets a node of its own */
		}
		if (c < 0)
			c = jwz_add_node(j, NULL, (long)i);
		j->nodes[c].msg = (long)i;
		size_t first =
		    m->n_references > THREAD_MAX_REFS ? m->n_references - THREAD_MAX_REFS : 0;
		for (size_t k = first; k < m->n_references; k++) {
			long r;
			if (!m->references[k] || !*m->references[k])
				continue;
			r = jwz_get(j, m->references[k]);
			if (r == c)
				continue; /* a message cannot follow itself */
			if (prev >= 0 && r != prev && j->nodes[r].parent < 0 &&
			    !jwz_is_ancestor(j, r, prev))
				jwz_append_child(j, prev, r);
			prev = r;
		}
		if (prev >= 0 && prev != c && !jwz_is_ancestor(j, c, prev))
			jwz_append_child(j, prev, c);
	}
}

void thread_jwz_print(const struct jwz_msg *msgs, size_t n, FILE *out)
{
	struct jwz j = {0};
	size_t ids = n, count;
	long root;
	for (size_t i = 0; i < n; i++)
		ids += msgs[i].n_references;
	j.table_cap = 16;
	while (j.table_cap < ids * 2 + 16)
		j.table_cap *= 2;
	j.table = xmalloc(j.table_cap * sizeof *j.table);
	for (size_t i = 0; i < j.table_cap; i++)
		j.table[i] = -1;
	jwz_link(&j, msgs, n);
	count = j.n;
	root = jwz_add_node(&j, NULL, -1);
	for (size_t i = 0; i < count; i++)
		if (j.nodes[i].parent < 0)
			jwz_append_child(&j, root, (long)i);
	jwz_prune(&j, root, 1);
	jwz_group_subjects(&j, msgs, root);
	jwz_print_tree(&j, msgs, j.nodes[root].first, 0, out);
	free(j.table);
	free(j.nodes);
}
