/* feed_local.c — the built-in feed: no service at all.  Posts and comments
 * are rows of local_items in the state database (the idempotency key is
 * UNIQUE there, so a repeated delivery returns the first row), and after
 * every delivery each touched group is rendered to two files in [feed] dir:
 *
 *   GROUP.atom  an Atom feed (RFC 4287): one entry per post and per comment,
 *               comments pointing at their post with thr:in-reply-to
 *               (RFC 4685); the newest LOCAL_ATOM_MAX items.
 *   GROUP.txt   the same conversation for people: threads newest first,
 *               comments indented under their post.
 *   GROUP.files/ the attachments of the group's posts and comments, each
 *               under a safe name (feed_local_safe_name; a taken name gets
 *               "-2", "-3" … before its extension), written once when the
 *               item is delivered, mode 0640; linked from the Atom entry as
 *               enclosures and listed in the text.  What [feed]
 *               max_file_size / max_files leave out is noted in the item.
 *
 * Remote ids are "local-N", N being the local_items row id. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/feed.h"
#include "mailfeed/log.h"
#include "mailfeed/message.h"
#include "mailfeed/utf8.h"
#include "mailfeed/util.h"

#define LOCAL_ATOM_MAX 1000
#define LOCAL_TXT_THREADS 200
/* Items per delivery: a row each in one transaction, no network between
 * them, so a batch is bounded only by the memory of its loaded items. */
#define LOCAL_BATCH 256

struct local_ctx {
	struct store *st;
	char *dir;
	size_t full_batch; /* what the outbox hands over when more is waiting */
	long long max_file_size;
	int max_files;
	struct strlist dirty;	 /* groups whose files are behind the table */
	struct strlist unsynced; /* files directories with names not yet synced */
	double last_render;
};

/* Renders every group whose files are behind. */
static int local_render(struct local_ctx *c, const char *group);
static void local_flush(struct local_ctx *c)
{
	for (size_t i = 0; i < c->dirty.n; i++)
		local_render(c, c->dirty.v[i]);
	strlist_free(&c->dirty);
	c->last_render = now_monotonic();
}

/* mkdir -p with mode for the missing parts. 0 or -1 (errno). */
static int mkdir_p(const char *path, mode_t mode)
{
	char *p = xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			free(p);
			return -1;
		}
		*s = '/';
	}
	int rc = mkdir(p, mode) < 0 && errno != EEXIST ? -1 : 0;
	free(p);
	return rc;
}

static int local_open(const struct mf_config *cfg, struct store *st, void **ctx, char *err,
		      size_t errlen)
{
	const char *dir = cfg->feed.dir ? cfg->feed.dir : "feeds";
	struct stat sb;
	if (mkdir_p(dir, 0750) < 0 || stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen,
			 "cannot create the local feed directory %s: %s; set [feed] dir to a "
			 "writable directory",
			 dir, strerror(errno ? errno : ENOTDIR));
		return -1;
	}
	struct local_ctx *c = xcalloc(1, sizeof *c);
	c->st = st;
	c->dir = xstrdup(dir);
	c->full_batch = LOCAL_BATCH; /* the batch the outbox hands over (ops.batch) */
	c->max_file_size = cfg->feed.max_file_size;
	c->max_files = cfg->feed.max_files;
	*ctx = c;
	return 0;
}

static void local_close(void *ctx)
{
	struct local_ctx *c = ctx;
	if (!c)
		return;
	local_flush(c);
	strlist_free(&c->unsynced);
	free(c->dir);
	free(c);
}

/* "local-N" → N, or 0. */
static long long local_id(const char *remote)
{
	char *end;
	if (!remote || strncmp(remote, "local-", 6) != 0)
		return 0;
	long long v = strtoll(remote + 6, &end, 10);
	return *end || v <= 0 ? 0 : v;
}

/* A group name as a file name: anything but [A-Za-z0-9._-] becomes '_'. */
static char *group_safe(const char *group)
{
	char *safe = xstrdup(group);
	for (char *p = safe; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			*p = '_';
	if (safe[0] == '.')
		safe[0] = '_';
	return safe;
}

static char *group_file(const struct local_ctx *c, const char *group, const char *ext)
{
	char *safe = group_safe(group);
	char *path = xasprintf("%s/%s.%s", c->dir, safe, ext);
	free(safe);
	return path;
}

char *feed_local_safe_name(const char *name)
{
	const char *base = name ? name : "";
	for (const char *p = base; *p; p++)
		if (*p == '/' || *p == '\\')
			base = p + 1;
	struct buf b;
	buf_init(&b);
	const unsigned char *p = (const unsigned char *)base;
	size_t n = strlen(base);
	while (*p) {
		size_t l = utf8_seq(p, n);
		if (l == 0) {
			buf_putc(&b, '_');
			l = 1;
		} else if (text_bidi_control(p, n)) {
			/* left out: it would disguise the name's extension */
		} else if (l == 1 && (*p < 0x20 || *p == 0x7F || strchr("\"*:<>?|`$'", *p))) {
			buf_putc(&b, '_');
		} else if (l == 3 && p[0] == 0xEF && p[1] == 0xBF && p[2] >= 0xBE) {
			buf_putc(&b, '_');
		} else {
			buf_append(&b, p, l);
		}
		p += l;
		n -= l;
	}
	char *s = b.data ? buf_steal(&b) : xstrdup("");
	/* no leading dot or dash, no trailing dots or spaces */
	size_t lead = 0;
	while (s[lead] == '.' || s[lead] == '-' || s[lead] == ' ')
		lead++;
	memmove(s, s + lead, strlen(s + lead) + 1);
	size_t len = strlen(s);
	while (len > 0 && (s[len - 1] == '.' || s[len - 1] == ' '))
		s[--len] = '\0';
	if (len == 0) {
		free(s);
		return xstrdup("attachment");
	}
	if (len > FEED_LOCAL_NAME_MAX) {
		/* keep a short extension: the part that says what the file is */
		const char *dot = strrchr(s, '.');
		size_t ext = dot && strlen(dot) <= 16 ? strlen(dot) : 0;
		size_t keep = utf8_cut(s, len, FEED_LOCAL_NAME_MAX - ext);
		memmove(s + keep, s + len - ext, ext + 1);
	}
	return s;
}

/* A kept file's name as a relative URL path segment. */
static void url_put(struct buf *b, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~')
			buf_putc(b, (char)*p);
		else
			buf_printf(b, "%%%02X", *p);
	}
}

/* file:// URL of dir/sub/name (dir made absolute), each part encoded. */
static char *file_url(const char *dir, const char *sub, const char *name)
{
	char *abs = realpath(dir, NULL);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "file://");
	for (const char *p = abs ? abs : dir; *p; p++) {
		char one[2] = {*p, 0};
		if (*p == '/')
			buf_putc(&b, '/');
		else
			url_put(&b, one);
	}
	buf_putc(&b, '/');
	url_put(&b, sub);
	buf_putc(&b, '/');
	url_put(&b, name);
	free(abs);
	return buf_steal(&b);
}

/* A size for people: 812 bytes, 48 KB, 3.2 MB. */
static void size_text(long long n, char *out, size_t outlen)
{
	if (n < 1024)
		snprintf(out, outlen, "%lld byte%s", n, n == 1 ? "" : "s");
	else if (n < 1024 * 1024)
		snprintf(out, outlen, "%lld KB", (n + 512) / 1024);
	else
		snprintf(out, outlen, "%.1f MB", (double)n / (1024.0 * 1024.0));
}

/* Writes data to the new file tmp; synced when sync (a staged file is
 * synced with its batch instead).  0, or -1 with errno (tmp removed). */
static int file_write(const char *tmp, const unsigned char *data, size_t len, int sync)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	int e = 0;
	if (fd < 0)
		return -1;
	const unsigned char *p = data;
	while (len > 0 && !e) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			e = errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (!e && (fchmod(fd, 0640) < 0 || (sync && fsync(fd) < 0)))
		e = errno;
	if (close(fd) < 0 && !e)
		e = errno;
	if (e) {
		unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

/* Links the complete, synced file tmp into dir as name, or name-2,
 * name-3 … when taken, and removes tmp.  The name used (owned), or NULL
 * with errno. */
static char *file_place(char *tmp, const char *dir, const char *name)
{
	int e = 0;
	char *used = NULL;
	const char *dot = strrchr(name, '.');
	size_t stem = dot && dot != name ? (size_t)(dot - name) : strlen(name);
	for (int k = 1; !e && k < 10000; k++) {
		char *try = k == 1 ? xstrdup(name)
				   : xasprintf("%.*s-%d%s", (int)stem, name, k, name + stem);
		char *path = xasprintf("%s/%s", dir, try);
		int rc = link(tmp, path);
		free(path);
		if (rc == 0) {
			used = try;
			break;
		}
		free(try);
		if (errno != EEXIST)
			e = errno;
	}
	if (!used && !e)
		e = EEXIST;
	unlink(tmp);
	errno = e;
	return used;
}

/* Writes data under dir/name, or name-2, name-3 … when taken: a temp file
 * synced and then linked into place, so a file is never seen half written
 * and never replaces another.  staged, when not NULL, is that temp file
 * already written and synced (with its batch: local_stage).  The directory
 * is synced by the caller (dirs_sync) before anything names the file.  The
 * name used (owned), or NULL with errno. */
static char *file_keep(const char *dir, const char *name, const unsigned char *data, size_t len,
		       char **staged)
{
	if (staged && *staged) {
		char *used = file_place(*staged, dir, name);
		int e = errno;
		free(*staged);
		*staged = NULL;
		errno = e;
		return used;
	}
	char *tmp = xasprintf("%s/.tmp.%d", dir, (int)getpid());
	char *used = file_write(tmp, data, len, 1) < 0 ? NULL : file_place(tmp, dir, name);
	int e = errno;
	free(tmp);
	errno = e;
	return used;
}

static int name_listed(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

/* Syncs the directories that got new names since the last call (once each
 * per batch rather than once per file), before the rows naming the files
 * are committed. */
static void dirs_sync(struct strlist *dirs)
{
	for (size_t i = 0; i < dirs->n; i++) {
		int dfd = open(dirs->v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	strlist_free(dirs);
}

/* Length of the valid UTF-8 sequence at s (max n bytes), 0 when invalid
 * or one of the noncharacters XML does not allow (U+FFFE, U+FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len = utf8_seq(s, n);
	if (len == 3 && s[0] == 0xEF && s[1] == 0xBF && (s[2] == 0xBE || s[2] == 0xBF))
		return 0;
	return len;
}

/* Whether byte c stands for itself in XML character data and the text
 * rendering: printable ASCII other than markup (no bidi control is ASCII). */
static int xml_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7F && c != '&' && c != '<' && c != '>' && c != '"';
}

/* Appends s as XML character data: markup escaped, characters XML does not
 * allow (controls, broken UTF-8) replaced by U+FFFD. */
static void xml_put(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)p);
	while (*p) {
		/* a run of plain printable ASCII goes in at once */
		size_t run = 0;
		while (run < n && xml_plain(p[run]))
			run++;
		if (run) {
			buf_append(b, p, run);
			p += run;
			n -= run;
			continue;
		}
		size_t l = utf8_len(p, n);
		if (l == 0 || (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7F) {
			buf_puts(b, "\xEF\xBF\xBD");
			l = l ? l : 1;
		} else if (text_bidi_control(p, n)) {
			/* left out: it would reorder what the reader sees */
		} else if (*p == '&') {
			buf_puts(b, "&amp;");
		} else if (*p == '<') {
			buf_puts(b, "&lt;");
		} else if (*p == '>') {
			buf_puts(b, "&gt;");
		} else if (*p == '"') {
			buf_puts(b, "&quot;");
		} else {
			buf_append(b, p, l);
		}
		p += l;
		n -= l;
	}
}

/* Appends s for the text rendering: controls other than newline and tab,
 * and bidi controls, dropped, each line after the first prefixed with indent. */
static void txt_put(struct buf *b, const char *s, const char *indent)
{
	for (const char *p = s ? s : ""; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch >= 0x20 && ch < 0x7F) {
			/* a run of printable ASCII goes in at once */
			size_t run = 1;
			while ((unsigned char)p[run] >= 0x20 && (unsigned char)p[run] < 0x7F)
				run++;
			buf_append(b, p, run);
			p += run - 1;
			continue;
		}
		size_t bidi = text_bidi_control((const unsigned char *)p, strnlen(p, 3));
		if (bidi) {
			p += bidi - 1; /* left out, as in the Atom feed */
		} else if (ch == '\n') {
			buf_putc(b, '\n');
			buf_puts(b, indent);
		} else if (ch >= 0x20 || ch == '\t') {
			if (ch != 0x7F)
				buf_putc(b, *p);
		}
	}
}

/* The texts of a window of TEXT_WINDOW neighbouring rows of a rendering,
 * read in one query: a big group never sits whole in memory, and a
 * rendering costs a round trip per window rather than per item (the state
 * may be a database server). */
#define TEXT_WINDOW 64
struct text_window {
	struct store *st;
	const struct row *rows;
	size_t n, lo, hi; /* rows[lo..hi) have their texts in txt */
	char *txt[TEXT_WINDOW];
};

struct row {
	long long id, parent;
	char *author_name, *author_email, *subject, *text;
	json_t *tags;
	json_t *files; /* what files_keep made of the attachments, or NULL */
	time_t created;
	struct text_window *win; /* text left in the table: read with row_text */
	size_t idx;		 /* the row's place in the window's rows */
};

static void rows_free(struct row *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(r[i].author_name);
		free(r[i].author_email);
		free(r[i].subject);
		free(r[i].text);
		json_decref(r[i].tags);
		json_decref(r[i].files);
	}
	free(r);
}

static char *col_dup(struct db_stmt *s, int i)
{
	const char *t = db_column_text(s, i);
	return t ? xstrdup(t) : NULL;
}

static void window_clear(struct text_window *w)
{
	for (size_t i = 0; i < TEXT_WINDOW; i++) {
		free(w->txt[i]);
		w->txt[i] = NULL;
	}
	w->lo = w->hi = 0;
}

/* The text query of a window: TEXT_WINDOW ids (unused ones 0). */
static const char *window_sql(void)
{
	static char sql[64 + 3 * TEXT_WINDOW];
	if (!sql[0]) {
		size_t k = (size_t)snprintf(sql, sizeof sql,
					    "SELECT id, text FROM local_items WHERE id IN (?");
		for (int i = 1; i < TEXT_WINDOW; i++)
			k += (size_t)snprintf(sql + k, sizeof sql - k, ",?");
		snprintf(sql + k, sizeof sql - k, ")");
	}
	return sql;
}

/* Reads the texts of the rows around i (half before, half after: the
 * renderings walk the rows both ways). */
static void window_load(struct text_window *w, size_t i)
{
	struct db_stmt *s;
	window_clear(w);
	w->lo = i >= TEXT_WINDOW / 2 ? i - TEXT_WINDOW / 2 : 0;
	w->hi = w->lo + TEXT_WINDOW < w->n ? w->lo + TEXT_WINDOW : w->n;
	if (!(s = store_stmt(w->st, window_sql())))
		return;
	for (size_t k = 0; k < TEXT_WINDOW; k++)
		db_bind_int64(s, (int)k + 1, w->lo + k < w->hi ? w->rows[w->lo + k].id : 0);
	while (db_step(s) == DB_ROW) {
		long long id = db_column_int64(s, 0);
		for (size_t k = w->lo; k < w->hi; k++)
			if (w->rows[k].id == id && !w->txt[k - w->lo])
				w->txt[k - w->lo] = col_dup(s, 1);
	}
	store_stmt_done(w->st, s);
}

/* The text of r (owned): loaded with the row, or read with its window. */
static char *row_text(const struct row *r)
{
	struct text_window *w = r->win;
	if (r->text || !w)
		return xstrdup(r->text ? r->text : "");
	if (r->idx < w->lo || r->idx >= w->hi)
		window_load(w, r->idx);
	const char *t = r->idx >= w->lo && r->idx < w->hi ? w->txt[r->idx - w->lo] : NULL;
	return xstrdup(t ? t : "");
}

/* Items of group created after since, oldest first (at most limit newest
 * when limit > 0), with their texts or (with_text = 0) without. 0 or -1. */
static int rows_load(struct store *st, const char *group, time_t since, int limit, int with_text,
		     struct row **out, size_t *n)
{
	struct db_stmt *s;
	*out = NULL;
	*n = 0;
	if (!(s = db_prepare(
		  store_db(st),
		  with_text
		      ? "SELECT * FROM (SELECT id, parent, author_name, author_email, subject,"
			" text, hashtags, created, attachments FROM local_items WHERE grp=?"
			" AND created>? ORDER BY created DESC, id DESC LIMIT ?) AS newest"
			" ORDER BY created, id"
		      : "SELECT * FROM (SELECT id, parent, author_name, author_email, subject,"
			" NULL, hashtags, created, attachments FROM local_items WHERE grp=?"
			" AND created>? ORDER BY created DESC, id DESC LIMIT ?) AS newest"
			" ORDER BY created, id")))
		return -1;
	db_bind_text(s, 1, group, -1);
	db_bind_int64(s, 2, (int64_t)since);
	/* no limit: the largest count both engines take (not SQLite's -1) */
	db_bind_int64(s, 3, limit > 0 ? limit : INT64_MAX);
	while (db_step(s) == DB_ROW) {
		*out = xrealloc(*out, (*n + 1) * sizeof **out);
		struct row *r = &(*out)[(*n)++];
		r->id = db_column_int64(s, 0);
		r->parent = db_column_int64(s, 1);
		r->author_name = col_dup(s, 2);
		r->author_email = col_dup(s, 3);
		r->subject = col_dup(s, 4);
		r->text = col_dup(s, 5);
		r->win = NULL;
		r->idx = 0;
		const char *t = db_column_text(s, 6);
		r->tags = t ? json_loads(t, 0, NULL) : NULL;
		r->created = (time_t)db_column_int64(s, 7);
		const char *f = db_column_text(s, 8);
		r->files = f && strcmp(f, "[]") != 0 ? json_loads(f, 0, NULL) : NULL;
	}
	db_finalize(s);
	return 0;
}

/* A file rewritten atomically while it is rendered: the text goes out in
 * pieces of OUT_CHUNK bytes, so a big group never sits whole in memory;
 * the old file stays in place until the new one is complete and synced. */
#define OUT_CHUNK (64 * 1024)
struct out_file {
	char *path, *tmp;
	int fd;
	int failed; /* errno of the first failure, or 0 */
};

static void out_open(struct out_file *o, char *path)
{
	o->path = path;
	o->tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	o->failed = o->fd < 0 ? errno : 0;
}

/* Writes out what b holds once it is a chunk (or always, when all). */
static void out_drain(struct out_file *o, struct buf *b, int all)
{
	if (!o || (b->len < OUT_CHUNK && !all))
		return;
	const char *p = b->data;
	size_t len = b->len;
	while (!o->failed && len > 0) {
		ssize_t n = write(o->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			o->failed = errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	buf_reset(b);
}

/* Syncs and renames into place; frees o.  0, or -1 with errno. */
static int out_close(struct out_file *o, struct buf *b)
{
	out_drain(o, b, 1);
	if (!o->failed && fsync(o->fd) < 0)
		o->failed = errno;
	if (o->fd >= 0 && close(o->fd) < 0 && !o->failed)
		o->failed = errno;
	if (!o->failed && rename(o->tmp, o->path) < 0)
		o->failed = errno;
	if (o->failed)
		unlink(o->tmp);
	free(o->tmp);
	errno = o->failed;
	return o->failed ? -1 : 0;
}

/* The notes of files left out, each on its own line after the text. */
static void notes_put(struct buf *b, const struct row *r,
		      void (*put)(struct buf *, const char *, const char *), const char *indent)
{
	size_t i;
	json_t *f;
	json_array_foreach(r->files, i, f)
	{
		const char *note = json_string_value(json_object_get(f, "note"));
		if (!note)
			continue;
		buf_puts(b, "\n");
		buf_puts(b, indent);
		put(b, note, indent);
	}
}

static void xml_put_ind(struct buf *b, const char *s, const char *indent)
{
	(void)indent;
	xml_put(b, s);
}

static void atom_entry(struct buf *b, const struct row *r, const char *gsafe)
{
	char when[32];
	size_t i;
	json_t *v;
	time_iso(r->created, when, sizeof when);
	buf_printf(b, "  <entry>\n    <id>urn:mailfeed:local-%lld</id>\n", r->id);
	buf_puts(b, "    <title>");
	xml_put(b, r->subject && *r->subject ? r->subject : "(no subject)");
	buf_printf(b, "</title>\n    <published>%s</published>\n    <updated>%s</updated>\n", when,
		   when);
	buf_puts(b, "    <author><name>");
	xml_put(b, r->author_name && *r->author_name	 ? r->author_name
		   : r->author_email && *r->author_email ? r->author_email
							 : "unknown");
	buf_puts(b, "</name>");
	if (r->author_email && *r->author_email) {
		buf_puts(b, "<email>");
		xml_put(b, r->author_email);
		buf_puts(b, "</email>");
	}
	buf_puts(b, "</author>\n");
	json_array_foreach(r->tags, i, v)
	{
		if (!json_is_string(v))
			continue;
		buf_puts(b, "    <category term=\"");
		xml_put(b, json_string_value(v));
		buf_puts(b, "\"/>\n");
	}
	if (r->parent > 0)
		buf_printf(b,
			   "    <thr:in-reply-to ref=\"urn:mailfeed:local-%lld\" "
			   "type=\"text/plain\"/>\n",
			   r->parent);
	json_array_foreach(r->files, i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *type = json_string_value(json_object_get(v, "content_type"));
		if (!name)
			continue;
		buf_puts(b, "    <link rel=\"enclosure\" href=\"");
		url_put(b, gsafe);
		buf_puts(b, ".files/");
		url_put(b, name);
		buf_printf(b, "\" length=\"%lld\" type=\"",
			   (long long)json_integer_value(json_object_get(v, "size")));
		xml_put(b, type && *type ? type : "application/octet-stream");
		buf_puts(b, "\" title=\"");
		xml_put(b, name);
		buf_puts(b, "\"/>\n");
	}
	buf_puts(b, "    <content type=\"text\">");
	char *text = row_text(r);
	xml_put(b, text);
	free(text);
	notes_put(b, r, xml_put_ind, "");
	buf_puts(b, "</content>\n  </entry>\n");
}

static void atom_render(struct buf *b, struct out_file *o, const char *group,
			const struct row *rows, size_t n)
{
	char when[32];
	time_t updated = n ? rows[n - 1].created : time(NULL);
	buf_puts(
	    b, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	       "<feed xmlns=\"http://www.w3.org/2005/Atom\" "
	       "xmlns:thr=\"http://purl.org/syndication/thread/1.0\">\n  <id>urn:mailfeed:group:");
	xml_put(b, group);
	buf_puts(b, "</id>\n  <title>");
	xml_put(b, group);
	buf_printf(b, "</title>\n  <updated>%s</updated>\n  <generator>mailfeed</generator>\n",
		   time_iso(updated, when, sizeof when));
	char *gsafe = group_safe(group);
	for (size_t i = n; i-- > 0;) {
		atom_entry(b, &rows[i], gsafe);
		out_drain(o, b, 0);
	}
	free(gsafe);
	buf_puts(b, "</feed>\n");
}

static void txt_author(struct buf *b, const struct row *r)
{
	char when[32];
	txt_put(b, r->author_name && *r->author_name ? r->author_name : "unknown", "");
	if (r->author_email && *r->author_email) {
		buf_puts(b, " <");
		txt_put(b, r->author_email, "");
		buf_putc(b, '>');
	}
	buf_printf(b, ", %s", time_iso(r->created, when, sizeof when));
}

/* The kept files of an item, a line each: name (size): where it is. */
static void txt_files(struct buf *b, const struct row *r, const char *gsafe, const char *indent)
{
	size_t i;
	json_t *f;
	json_array_foreach(r->files, i, f)
	{
		const char *name = json_string_value(json_object_get(f, "name"));
		char size[32];
		if (!name)
			continue;
		size_text((long long)json_integer_value(json_object_get(f, "size")), size,
			  sizeof size);
		buf_puts(b, "\n");
		buf_puts(b, indent);
		buf_puts(b, "File: ");
		txt_put(b, name, "");
		buf_printf(b, " (%s): %s.files/", size, gsafe);
		txt_put(b, name, "");
	}
	notes_put(b, r, txt_put, indent);
}

static void txt_render(struct buf *b, struct out_file *o, const char *group, const struct row *rows,
		       size_t n)
{
	size_t threads = 0;
	char *gsafe = group_safe(group);
	buf_puts(b, "Group ");
	txt_put(b, group, "");
	buf_puts(b, "\n");
	for (size_t i = n; i-- > 0 && threads < LOCAL_TXT_THREADS;) {
		const struct row *p = &rows[i];
		size_t k;
		json_t *v;
		if (p->parent > 0)
			continue;
		threads++;
		buf_puts(b, "\n== ");
		txt_put(b, p->subject && *p->subject ? p->subject : "(no subject)", "");
		buf_puts(b, "\n   by ");
		txt_author(b, p);
		buf_puts(b, "\n");
		if (json_array_size(p->tags)) {
			buf_puts(b, "   tags:");
			json_array_foreach(p->tags, k, v)
			{
				buf_puts(b, " #");
				txt_put(b, json_string_value(v), "");
			}
			buf_puts(b, "\n");
		}
		buf_puts(b, "\n   ");
		char *text = row_text(p);
		txt_put(b, text, "   ");
		free(text);
		txt_files(b, p, gsafe, "   ");
		buf_puts(b, "\n");
		for (size_t j = i + 1; j < n; j++) {
			const struct row *c = &rows[j];
			if (c->parent != p->id)
				continue;
			buf_puts(b, "\n      -> ");
			txt_author(b, c);
			buf_puts(b, "\n         ");
			char *ctext = row_text(c);
			txt_put(b, ctext, "         ");
			free(ctext);
			txt_files(b, c, gsafe, "         ");
			buf_puts(b, "\n");
		}
		out_drain(o, b, 0);
	}
	free(gsafe);
}

/* Rewrites GROUP.atom and GROUP.txt. 0 or -1 (logged). */
static int local_render(struct local_ctx *c, const char *group)
{
	struct row *rows;
	size_t n;
	struct buf b;
	int rc = 0;
	if (rows_load(c->st, group, 0, LOCAL_ATOM_MAX, 0, &rows, &n) < 0) {
		log_error("local.error group=%s error=%s", group, LOG_Q(store_errmsg(c->st)));
		return -1;
	}
	struct text_window win = {.st = c->st, .rows = rows, .n = n};
	for (size_t i = 0; i < n; i++) {
		rows[i].win = &win;
		rows[i].idx = i;
	}
	buf_init(&b);
	for (int k = 0; k < 2; k++) {
		struct out_file o;
		out_open(&o, group_file(c, group, k == 0 ? "atom" : "txt"));
		if (k == 0)
			atom_render(&b, &o, group, rows, n);
		else
			txt_render(&b, &o, group, rows, n);
		if (out_close(&o, &b) < 0) {
			log_error("local.error file=%s error=%s", o.path, LOG_Q(strerror(errno)));
			rc = -1;
		}
		free(o.path);
	}
	buf_free(&b);
	window_clear(&win);
	rows_free(rows, n);
	return rc;
}

static long long id_of_key(struct store *st, const char *key)
{
	struct db_stmt *s;
	long long id = 0;
	if (!(s = store_stmt(st, "SELECT id FROM local_items WHERE key=?")))
		return -1;
	db_bind_text(s, 1, key, -1);
	if (db_step(s) == DB_ROW)
		id = db_column_int64(s, 0);
	store_stmt_done(st, s);
	return id;
}

static int parent_exists(struct store *st, long long id, const char *group)
{
	struct db_stmt *s;
	int found = 0;
	if (!(s = store_stmt(st,
			     "SELECT 1 FROM local_items WHERE id=? AND grp=? AND parent IS NULL")))
		return 0;
	db_bind_int64(s, 1, id);
	db_bind_text(s, 2, group, -1);
	found = db_step(s) == DB_ROW;
	store_stmt_done(st, s);
	return found;
}

/* The hashtags as a JSON list, written as text: the same bytes as
 * json_dumps of a list of json_string (which leaves out a string that is
 * not UTF-8). */
static char *tags_json(const struct strlist *l)
{
	struct buf b;
	int first = 1;
	buf_init(&b);
	buf_putc(&b, '[');
	for (size_t i = 0; l && i < l->n; i++) {
		if (!utf8_valid(l->v[i], strlen(l->v[i])))
			continue;
		if (!first)
			buf_putc(&b, ',');
		json_put_str(&b, l->v[i]);
		first = 0;
	}
	buf_putc(&b, ']');
	return buf_steal(&b);
}

/* Removes the files named in files (a list being built) from dir. */
static void files_unkeep(const char *dir, json_t *files)
{
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f)
	{
		const char *name = json_string_value(json_object_get(f, "name"));
		if (name) {
			char *path = xasprintf("%s/%s", dir, name);
			unlink(path);
			free(path);
		}
	}
}

/* Keeps the item's attachments in the group's files directory, within
 * [feed] max_file_size and max_files; the others get a note.  The JSON list
 * of them (owned), or NULL with err when a file could not be written (then
 * none of the item's files stays). */
static char *files_keep(struct local_ctx *c, const struct feed_item *it, char **staged, char *err,
			size_t errlen)
{
	if (!it->n_attachments)
		return xstrdup("[]"); /* what json_dumps makes of an empty list */
	json_t *a = json_array();
	char *dir = NULL;
	int kept = 0;
	for (size_t i = 0; i < it->n_attachments; i++) {
		const struct feed_attachment *f = &it->attachments[i];
		char *safe = feed_local_safe_name(f->filename);
		char size[32];
		json_t *o =
		    json_pack("{s:s?, s:s?, s:I, s:s?}", "filename", f->filename, "content_type",
			      f->content_type, "size", (json_int_t)f->size, "sha256", f->sha256);
		const char *why = (long long)f->size > c->max_file_size ? "too large"
				  : kept >= c->max_files		? "too many files"
				  : !f->data				? "its bytes were not kept"
									: NULL;
		size_text((long long)f->size, size, sizeof size);
		if (why) {
			char *note = xasprintf("[file %s (%s) not kept: %s]", safe, size, why);
			json_object_set_new(o, "note", json_string(note));
			free(note);
		} else {
			if (!dir) {
				dir = group_file(c, it->group, "files");
				if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
					snprintf(err, errlen, "cannot create %s: %s", dir,
						 strerror(errno));
					goto fail;
				}
			}
			char *used =
			    file_keep(dir, safe, f->data, f->size, staged ? &staged[i] : NULL);
			if (!used) {
				snprintf(err, errlen, "cannot write %s/%s: %s", dir, safe,
					 strerror(errno));
				goto fail;
			}
			json_object_set_new(o, "name", json_string(used));
			free(used);
			if (!name_listed(&c->unsynced, dir))
				strlist_add(&c->unsynced, dir);
			kept++;
		}
		free(safe);
		json_array_append_new(a, o);
		continue;
	fail:
		free(safe);
		json_decref(o);
		files_unkeep(dir, a);
		json_decref(a);
		free(dir);
		return NULL;
	}
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	free(dir);
	return s;
}

static void local_deliver_one(struct local_ctx *c, const struct feed_item *it, char **staged,
			      struct feed_result *r)
{
	long long parent = 0;
	memset(r, 0, sizeof *r);
	if (it->kind == FEED_COMMENT) {
		parent = local_id(it->parent_remote_id);
		if (!parent || !parent_exists(c->st, parent, it->group)) {
			r->status = FEED_PERMANENT;
			snprintf(r->error, sizeof r->error,
				 "post %s does not exist in local group %s",
				 it->parent_remote_id ? it->parent_remote_id : "(none)", it->group);
			return;
		}
	}
	/* delivered before (the answer was lost): the files are there */
	long long had = it->n_attachments ? id_of_key(c->st, it->key) : 0;
	if (had > 0) {
		r->status = FEED_OK;
		r->remote_id = xasprintf("local-%lld", had);
		return;
	}
	char *files = files_keep(c, it, staged, r->error, sizeof r->error);
	if (!files) {
		log_error("local.error key=%s error=%s", it->key, LOG_Q(r->error));
		r->status = FEED_RETRY;
		return;
	}
	struct db_stmt *s;
	if (!(s = store_stmt(c->st, "INSERT INTO local_items(key, grp, parent,"
				    " author_name, author_email, subject, text, hashtags,"
				    " attachments, created) VALUES(?,?,?,?,?,?,?,?,?,?)"
				    " ON CONFLICT DO NOTHING RETURNING id")))
		goto store_error;
	db_bind_text(s, 1, it->key, -1);
	db_bind_text(s, 2, it->group, -1);
	if (parent)
		db_bind_int64(s, 3, parent);
	db_bind_text(s, 4, it->author_name, -1);
	db_bind_text(s, 5, it->author_email, -1);
	db_bind_text(s, 6, it->subject, -1);
	db_bind_text(s, 7, it->text ? it->text : "", -1);
	char *tags = tags_json(it->hashtags);
	db_bind_text(s, 8, tags, -1);
	free(tags);
	db_bind_text(s, 9, files, -1);
	db_bind_int64(s, 10, (int64_t)time(NULL));
	/* a row: the new item's id; none: it was there already */
	int rc = db_step(s);
	long long id = rc == DB_ROW ? (long long)db_column_int64(s, 0) : 0;
	store_stmt_done(c->st, s);
	if (rc != DB_DONE && rc != DB_ROW)
		goto store_error;
	if (id <= 0)
		id = id_of_key(c->st, it->key);
	if (id <= 0)
		goto store_error;
	r->status = FEED_OK;
	r->remote_id = xasprintf("local-%lld", id);
	free(files);
	return;
store_error:
	/* the item is not there: neither are its files (the retry writes them) */
	if (it->n_attachments) {
		json_t *written = json_loads(files, 0, NULL);
		char *dir = group_file(c, it->group, "files");
		files_unkeep(dir, written);
		json_decref(written);
		free(dir);
	}
	free(files);
	r->status = FEED_RETRY;
	snprintf(r->error, sizeof r->error, "local feed store error: %s", store_errmsg(c->st));
}

/* Removes the staged files no item took and frees the lists. */
static void local_unstage(char ***staged, const struct feed_item *items, size_t n)
{
	for (size_t i = 0; staged && i < n; i++) {
		for (size_t j = 0; staged[i] && j < items[i].n_attachments; j++)
			if (staged[i][j]) {
				unlink(staged[i][j]);
				free(staged[i][j]);
			}
		free(staged[i]);
	}
	free(staged);
}

/* Syncs the k staged files: each on its own when few, else the whole file
 * system at once (one flush rather than one per file).  0 or -1. */
static int staged_sync(struct local_ctx *c, char ***staged, const struct feed_item *items, size_t n,
		       size_t k)
{
	int rc = 0;
	if (k > 4) {
		int fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = fd < 0 || syncfs(fd) < 0 ? -1 : 0;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		for (size_t j = 0; rc == 0 && staged[i] && j < items[i].n_attachments; j++) {
			if (!staged[i][j])
				continue;
			int fd = open(staged[i][j], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			rc = fd < 0 || fsync(fd) < 0 ? -1 : 0;
			if (fd >= 0)
				close(fd);
		}
	return rc;
}

/* The attachments of a batch that files_keep will keep, written ahead as
 * temp files and synced together.  Per item, the temp file of each
 * attachment (NULL where none was staged: files_keep then writes it as
 * before); NULL when nothing was staged. */
static char ***local_stage(struct local_ctx *c, const struct feed_item *items, size_t n)
{
	char ***staged = NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const struct feed_item *it = &items[i];
		char *dir = NULL;
		int kept = 0;
		for (size_t j = 0; j < it->n_attachments; j++) {
			const struct feed_attachment *f = &it->attachments[j];
			if ((long long)f->size > c->max_file_size || kept >= c->max_files ||
			    !f->data)
				continue;
			kept++;
			if (!dir) {
				dir = group_file(c, it->group, "files");
				if (mkdir(dir, 0750) < 0 && errno != EEXIST)
					break;
			}
			char *tmp = xasprintf("%s/.tmp.%d.%zu.%zu", dir, (int)getpid(), i, j);
			if (file_write(tmp, f->data, f->size, 0) < 0) {
				free(tmp);
				continue;
			}
			if (!staged)
				staged = xcalloc(n, sizeof *staged);
			if (!staged[i])
				staged[i] = xcalloc(it->n_attachments, sizeof *staged[i]);
			staged[i][j] = tmp;
			k++;
		}
		free(dir);
	}
	if (staged && staged_sync(c, staged, items, n, k) < 0) {
		local_unstage(staged, items, n);
		return NULL;
	}
	return staged;
}

static void local_deliver(void *ctx, const struct feed_item *items, size_t n,
			  struct feed_result *results)
{
	struct local_ctx *c = ctx;
	/* one transaction (one fsync) for the batch; without it each item
	 * would commit on its own */
	int tx = store_begin(c->st) == 0;
	char ***staged = local_stage(c, items, n);
	for (size_t i = 0; i < n; i++) {
		local_deliver_one(c, &items[i], staged ? staged[i] : NULL, &results[i]);
		if (results[i].status == FEED_OK && !strlist_has_ci(&c->dirty, items[i].group))
			strlist_add(&c->dirty, items[i].group);
		if (!tx)
			dirs_sync(&c->unsynced); /* each row committed on its own */
	}
	local_unstage(staged, items, n);
	dirs_sync(&c->unsynced);
	if (tx && store_commit(c->st) < 0) {
		for (size_t i = 0; i < n; i++) {
			feed_result_clear(&results[i]);
			results[i].status = FEED_RETRY;
			snprintf(results[i].error, sizeof results[i].error,
				 "local feed store error: %s", store_errmsg(c->st));
		}
		return;
	}
	/* The files are a rendering of the table (a failed write is logged and
	 * redone later; the items themselves are safe).  Rendering a big group
	 * costs more than a batch, so during a burst (full batches) the files
	 * are rewritten at most every 2 s, and always when the queue drains. */
	if (n < c->full_batch || now_monotonic() - c->last_render >= 2.0)
		local_flush(c);
}

static int local_reconcile(void *ctx, const struct feed_item *item, char **remote_id)
{
	struct local_ctx *c = ctx;
	long long id = id_of_key(c->st, item->key);
	if (id < 0)
		return -1;
	if (id == 0)
		return 0;
	*remote_id = xasprintf("local-%lld", id);
	return 1;
}

static int local_read_group(void *ctx, const char *group, time_t since, struct feed_entry **entries,
			    size_t *n, char *err, size_t errlen)
{
	struct local_ctx *c = ctx;
	struct row *rows;
	size_t nr;
	*entries = NULL;
	*n = 0;
	if (rows_load(c->st, group, since, 0, 1, &rows, &nr) < 0) {
		snprintf(err, errlen, "cannot read local group %s: %s", group, store_errmsg(c->st));
		return -1;
	}
	if (nr)
		*entries = xcalloc(nr, sizeof **entries);
	char *gsafe = group_safe(group);
	char *fdir = xasprintf("%s.files", gsafe);
	free(gsafe);
	for (size_t i = 0; i < nr; i++) {
		struct feed_entry *e = &(*entries)[i];
		e->remote_id = xasprintf("local-%lld", rows[i].id);
		e->parent_remote_id =
		    rows[i].parent > 0 ? xasprintf("local-%lld", rows[i].parent) : NULL;
		e->group = xstrdup(group);
		e->author_name = rows[i].author_name ? xstrdup(rows[i].author_name) : NULL;
		e->author_email = rows[i].author_email ? xstrdup(rows[i].author_email) : NULL;
		e->subject = rows[i].subject ? xstrdup(rows[i].subject) : NULL;
		e->text = xstrdup(rows[i].text ? rows[i].text : "");
		e->created = rows[i].created;
		size_t k;
		json_t *f;
		json_array_foreach(rows[i].files, k, f)
		{
			const char *name = json_string_value(json_object_get(f, "name"));
			const char *orig = json_string_value(json_object_get(f, "filename"));
			long long size = (long long)json_integer_value(json_object_get(f, "size"));
			char *url = name ? file_url(c->dir, fdir, name) : NULL;
			feed_entry_add_file(e, name ? name : orig, size, url);
			free(url);
		}
	}
	free(fdir);
	*n = nr;
	rows_free(rows, nr);
	return 0;
}

const struct feed_backend_ops feed_local_ops = {
    .name = "local",
    .batch = LOCAL_BATCH,
    .uses_store = 1,
    .open = local_open,
    .deliver = local_deliver,
    .reconcile = local_reconcile,
    .read_group = local_read_group,
    .close = local_close,
};
