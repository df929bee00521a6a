/* digest.c — digests and per-post notifications by email: when each
 * subscriber's period is due (in their own time zone), what is new in the
 * groups they follow (read back from the feed service), how it is rendered
 * (multipart/alternative, every piece of feed content escaped) and the
 * record-then-send bookkeeping that keeps a period from going out twice.
 *
 * Order of a send: mails are rendered (reply tokens recorded) and sent
 * in groups of up to SMTP_GROUP_MAX side by side, each over its own
 * connection.  Every transfer goes through MAIL, RCPT, DATA and the
 * message and waits just before its last bytes and the end-of-data mark;
 * then one durable commit records, for each mail of the group,
 * digest_runs(email, period, 'sending'), the Message-ID and the new
 * last_sent, and the transfers are let go.  A relay takes a message only
 * at the end-of-data mark, so a crash before that commit delivered nothing
 * and the period is sent by the next run; from the commit on, the mail
 * counts as sent and is never sent again.  After the relay's 250 the row
 * becomes 'sent' (in the next commit); a 4xx/5xx answer to the data undoes
 * the record.  What remains is the instant between the commit and the
 * last bytes leaving the process: a crash exactly there leaves periods
 * recorded that the relay never got.  One fsync per group, not per mail,
 * is what lets a run send hundreds of digests a second.
 *
 * Subscribers are the subscribers table ([subscriber] sections,
 * `subscribe`, email commands) and, with [digest] subscribers = feed, the
 * members of the mapped groups at the feed service, whose state is kept
 * per (email, frequency); an address with a subscription of its own is
 * not taken from the feed. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/digest.h"
#include "mailfeed/log.h"
#include "mailfeed/outbox.h"
#include "mailfeed/smtp.h"
#include "mailfeed/token.h"
#include "mailfeed/tz.h"
#include "mailfeed/util.h"

#define ITEM_TEXT_MAX 2000 /* bytes of one entry's text in a digest */
#define NOTIFY_TEXT_MAX 20000

/* ------------------------------------------------------------------ */
/* Text helpers                                                        */

/* Feed content as text: keeps \n and \t, drops other controls, cut at max
 * bytes on a UTF-8 boundary with an ellipsis. */
static char *clean_text(const char *s, size_t max)
{
	struct buf b;
	size_t n = 0;
	buf_init(&b);
	const char *p = s ? s : "", *run = p;
	for (; *p; p++, n++) {
		unsigned char c = (unsigned char)*p;
		if (n >= max && (c & 0xc0) != 0x80) {
			buf_append(&b, run, (size_t)(p - run));
			buf_puts(&b, " \xe2\x80\xa6");
			char *out = buf_steal(&b);
			text_strip_bidi(out);
			return out;
		}
		if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
			buf_append(&b, run, (size_t)(p - run));
			run = p + 1;
		}
	}
	buf_append(&b, run, (size_t)(p - run));
	char *out = buf_steal(&b);
	text_strip_bidi(out);
	return out;
}

void digest_mail_free(struct digest_mail *m)
{
	free(m->message_id);
	free(m->subject);
	free(m->text);
	free(m->html);
	free(m->data);
	memset(m, 0, sizeof *m);
}

static void html_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		size_t run = strcspn(s, "&<>\"'\n");
		buf_append(b, s, run);
		s += run;
		if (!*s)
			break;
		switch (*s) {
		case '&':
			buf_puts(b, "&amp;");
			break;
		case '<':
			buf_puts(b, "&lt;");
			break;
		case '>':
			buf_puts(b, "&gt;");
			break;
		case '"':
			buf_puts(b, "&quot;");
			break;
		case '\'':
			buf_puts(b, "&#39;");
			break;
		default: /* '\n' */
			buf_puts(b, "<br>\n");
		}
	}
}

static void pct_encode(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
			buf_putc(b, (char)c);
		else
			buf_printf(b, "%%%02X", c);
	}
}

static char *mailto(const char *addr, const char *subject)
{
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "mailto:%s?subject=", addr);
	pct_encode(&b, subject);
	return buf_steal(&b);
}

static int safe_url(const char *u)
{
	return u && (strncasecmp(u, "https://", 8) == 0 || strncasecmp(u, "http://", 7) == 0) &&
	       !strpbrk(u, " \t\r\n\"'<>");
}

/* "Fri 4 Dec, 14:05" in zone z (UTC when NULL). */
static void fmt_time(time_t t, const struct tz *z, char *out, size_t n)
{
	struct tm tm;
	if (z)
		tz_localtime(z, t, &tm);
	else
		gmtime_r(&t, &tm);
	strftime(out, n, "%a %e %b, %H:%M", &tm);
	/* %e pads one-digit days with a space */
	char *sp = strstr(out, "  ");
	if (sp)
		memmove(sp, sp + 1, strlen(sp));
}

/* The MIME body of a multipart/alternative mail, closing the headers. */
static void put_alternative(struct buf *b, const char *text, const char *html)
{
	unsigned char r[9];
	char hex[19];
	if (random_bytes(r, sizeof r) < 0)
		memset(r, 0x5a, sizeof r);
	hex_encode(r, sizeof r, hex);
	buf_puts(b, "MIME-Version: 1.0\r\n");
	buf_printf(b, "Content-Type: multipart/alternative; boundary=\"=_mf_%s\"\r\n\r\n", hex);
	buf_printf(b,
		   "--=_mf_%s\r\nContent-Type: text/plain; charset=UTF-8\r\n"
		   "Content-Transfer-Encoding: base64\r\n\r\n",
		   hex);
	smtp_put_base64(b, text);
	buf_printf(b,
		   "--=_mf_%s\r\nContent-Type: text/html; charset=UTF-8\r\n"
		   "Content-Transfer-Encoding: base64\r\n\r\n",
		   hex);
	smtp_put_base64(b, html);
	buf_printf(b, "--=_mf_%s--\r\n", hex);
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */

struct thread {
	const char *root;	       /* remote id of the post */
	const struct feed_entry *post; /* NULL when only comments are new */
	const struct feed_entry **comments;
	size_t n_comments;
	time_t latest;
};

/* How a digest shows one entry: a few lines, cut at a word. */
#define EXCERPT_LINES 4
#define EXCERPT_BYTES 320
/* A thread with more new comments than this shows the latest few. */
#define COMMENTS_IN_FULL 3
#define COMMENTS_SHOWN 2

/* What the renderer needs besides the entries. */
struct render {
	const struct tz *zone;
	int full; /* whole texts (a notification), not excerpts */
};

/* The Message-ID of the mails about one post for one reader: the same for
 * every mail about it, so that clients thread them. */
static char *post_message_id(const struct mf_config *cfg, const char *remote_id, const char *to)
{
	char a[65], b[65];
	sha256_hex(remote_id, strlen(remote_id), a);
	sha256_hex(to, strlen(to), b);
	a[32] = b[12] = '\0';
	char *dom = smtp_header_text(cfg->gateway.reply_address && strchr(cfg->gateway.reply_address, '@')
					 ? strchr(cfg->gateway.reply_address, '@') + 1
					 : "mailfeed.invalid");
	char *id = xasprintf("post.%s.%s@%s", a, b, dom);
	free(dom);
	return id;
}

static int thread_cmp(const void *a, const void *b)
{
	const struct thread *x = a, *y = b;
	return x->latest < y->latest ? 1 : x->latest > y->latest ? -1 : strcmp(x->root, y->root);
}

static struct thread *threads_of(const struct digest_group *g, size_t *nt)
{
	struct thread *t = xcalloc(g->n ? g->n : 1, sizeof *t);
	size_t n = 0;
	for (size_t i = 0; i < g->n; i++) {
		const struct feed_entry *e = &g->entries[i];
		const char *root = e->parent_remote_id ? e->parent_remote_id : e->remote_id;
		size_t k;
		if (!root)
			continue;
		for (k = 0; k < n && strcmp(t[k].root, root) != 0; k++)
			;
		if (k == n) {
			t[n].root = root;
			n++;
		}
		if (!e->parent_remote_id) {
			t[k].post = e;
		} else {
			t[k].comments =
			    xrealloc(t[k].comments, (t[k].n_comments + 1) * sizeof *t[k].comments);
			t[k].comments[t[k].n_comments++] = e;
		}
		if (e->created > t[k].latest)
			t[k].latest = e->created;
	}
	qsort(t, n, sizeof *t, thread_cmp);
	*nt = n;
	return t;
}

static void threads_free(struct thread *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].comments);
	free(t);
}

/* The unsubscribe token of a subscriber as a reply address (*addr) and,
 * when [digest] public_url is set, as the one-click https link (*web,
 * PUBLIC_URL/unsubscribe/TOKEN; NULL otherwise).  -1 when no address can
 * be built. */
static int unsubscribe_links(struct store *st, const struct mf_config *cfg,
			     const unsigned char *secret, size_t secretlen, const char *to,
			     time_t now, char **addr, char **web)
{
	long life = cfg->gateway.token_lifetime > 0 ? cfg->gateway.token_lifetime : 60L * 86400;
	char *tok =
	    token_issue(st, secret, secretlen, TOKEN_UNSUBSCRIBE, NULL, NULL, to, now + life);
	*addr = tok ? token_address(cfg, tok) : NULL;
	*web = NULL;
	if (*addr && cfg->digest.public_url) {
		const char *base = cfg->digest.public_url;
		size_t n = strlen(base);
		while (n > 8 && base[n - 1] == '/')
			n--;
		*web = xasprintf("%.*s/unsubscribe/%s", (int)n, base, tok);
	}
	free(tok);
	return *addr ? 0 : -1;
}

static char *reply_address_for(struct store *st, const struct mf_config *cfg,
			       const unsigned char *secret, size_t secretlen, enum token_kind kind,
			       const char *gid, const char *root, const char *to, time_t now)
{
	long life = cfg->gateway.token_lifetime > 0 ? cfg->gateway.token_lifetime : 60L * 86400;
	char *tok = token_issue(st, secret, secretlen, kind, gid, root, to, now + life);
	char *addr = tok ? token_address(cfg, tok) : NULL;
	free(tok);
	return addr;
}

/* The first lines of text (at most EXCERPT_LINES, EXCERPT_BYTES), cut at a
 * word; *cut tells whether anything was left out.  Blank lines between
 * paragraphs are kept as one. */
static char *excerpt(const char *text, int *cut)
{
	struct buf b;
	buf_init(&b);
	*cut = 0;
	int lines = 0;
	const char *p = text ? text : "";
	while (*p == '\n')
		p++;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (lines == EXCERPT_LINES || b.len + n > EXCERPT_BYTES) {
			if (lines < EXCERPT_LINES && b.len < EXCERPT_BYTES) {
				/* the last line, cut at a word */
				size_t room = EXCERPT_BYTES - b.len, k = room;
				while (k > 0 && p[k] != ' ')
					k--;
				if (k < room / 2)
					k = room;
				while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
					k--;
				buf_append(&b, p, k);
			}
			*cut = 1;
			break;
		}
		buf_append(&b, p, n);
		lines++;
		p += n;
		if (*p == '\n') {
			int blank = p[1] == '\n';
			while (*p == '\n')
				p++;
			if (*p)
				buf_puts(&b, blank ? "\n\n" : "\n");
			lines += blank;
		}
	}
	while (b.len > 0 && (b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '\n'))
		b.len--;
	if (b.data)
		b.data[b.len] = 0;
	if (*cut)
		buf_puts(&b, " \xe2\x80\xa6");
	return buf_steal(&b);
}

/* A size for people: 812 bytes, 48 KB, 3.2 MB. */
static void size_human(long long n, char *out, size_t outlen)
{
	if (n < 0)
		snprintf(out, outlen, "size unknown");
	else if (n < 1024)
		snprintf(out, outlen, "%lld byte%s", n, n == 1 ? "" : "s");
	else if (n < 1024 * 1024)
		snprintf(out, outlen, "%lld KB", (n + 512) / 1024);
	else if (n < 1024LL * 1024 * 1024)
		snprintf(out, outlen, "%.1f MB", (double)n / (1024.0 * 1024.0));
	else
		snprintf(out, outlen, "%.1f GB", (double)n / (1024.0 * 1024.0 * 1024.0));
}

/* The entry's files: in the text a line each ("Files: name (size) url"),
 * in HTML a list of links (a name without a web link stays plain text). */
#define FILES_LISTED 10
static void entry_files(struct buf *txt, struct buf *html, const struct feed_entry *e,
			const char *indent)
{
	if (!e->n_files)
		return;
	buf_puts(html, "<ul style=\"margin:6px 0 0;padding-left:20px\">\n");
	for (size_t i = 0; i < e->n_files && i < FILES_LISTED; i++) {
		const struct feed_file *f = &e->files[i];
		char size[32];
		char *name = smtp_header_text(f->name ? f->name : "file");
		size_human(f->size, size, sizeof size);
		buf_printf(txt, "%s%s %s (%s)", indent, i == 0 ? "Files:" : "      ", name, size);
		if (f->url && !strpbrk(f->url, " \t\r\n")) {
			buf_puts(txt, " ");
			buf_puts(txt, f->url);
		}
		buf_putc(txt, '\n');
		buf_puts(html, "<li>");
		if (safe_url(f->url)) {
			buf_puts(html, "<a href=\"");
			html_escape(html, f->url);
			buf_puts(html, "\" style=\"color:#0b62a4\">");
			html_escape(html, name);
			buf_puts(html, "</a>");
		} else {
			html_escape(html, name);
		}
		buf_printf(html, " <span style=\"color:#888\">(%s)</span></li>\n", size);
		free(name);
	}
	if (e->n_files > FILES_LISTED) {
		buf_printf(txt, "%s       and %zu more files\n", indent, e->n_files - FILES_LISTED);
		buf_printf(html, "<li>and %zu more files</li>\n", e->n_files - FILES_LISTED);
	}
	buf_puts(html, "</ul>\n");
}

static void entry_text(struct buf *txt, struct buf *html, const struct render *rd,
		       const struct feed_entry *e, int is_comment, const char *more_url)
{
	char when[40];
	char *author = smtp_header_text(e->author_name && *e->author_name ? e->author_name
					: e->author_email		  ? e->author_email
									  : "someone");
	char *clean = clean_text(e->text, rd->full ? NOTIFY_TEXT_MAX : ITEM_TEXT_MAX);
	int cut = 0;
	char *body = rd->full ? xstrdup(clean) : excerpt(clean, &cut);
	free(clean);
	fmt_time(e->created, rd->zone, when, sizeof when);
	if (is_comment) {
		buf_printf(txt, "  - %s (%s):\n", author, when);
		buf_puts(html, "<div style=\"margin:8px 0 8px 8px;padding-left:8px;"
			       "border-left:3px solid #ddd;color:#333\"><b>");
		html_escape(html, author);
		buf_printf(html, "</b> <span style=\"color:#888\">%s</span><br>\n", when);
	} else {
		buf_printf(txt, "  %s, %s\n", author, when);
		buf_puts(html,
			 "<div style=\"margin:4px 0;color:#333\"><span style=\"color:#555\">");
		html_escape(html, author);
		buf_printf(html, ", %s</span><br>\n", when);
	}
	for (const char *p = body; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		buf_puts(txt, is_comment ? "      " : "    ");
		buf_append(txt, p, n);
		buf_putc(txt, '\n');
		p += n + (nl ? 1 : 0);
	}
	html_escape(html, body);
	if (cut && more_url) {
		buf_printf(txt, "%sRead more: %s\n", is_comment ? "      " : "    ", more_url);
		buf_puts(html, " <a href=\"");
		html_escape(html, more_url);
		buf_puts(html, "\" style=\"color:#0b62a4\">Read more</a>");
	}
	entry_files(txt, html, e, is_comment ? "      " : "    ");
	buf_puts(html, "</div>\n");
	free(author);
	free(body);
}

static char *subject_of(const struct feed_entry *e)
{
	if (e && e->subject && *e->subject)
		return smtp_header_text(e->subject);
	if (e && e->text && *e->text) {
		char *s = smtp_header_text(e->text);
		if (strlen(s) > 60) {
			size_t n = 57;
			while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
				n--;
			strcpy(s + n, "...");
		}
		return s;
	}
	return xstrdup("(no subject)");
}

/* The title of a thread: its post's subject, or for new comments on an
 * older post, that post's subject when the gateway made it. */
static char *thread_title(const struct thread *t)
{
	if (t->post)
		return subject_of(t->post);
	for (size_t i = 0; i < t->n_comments; i++)
		if (t->comments[i]->post_subject && *t->comments[i]->post_subject)
			return smtp_header_text(t->comments[i]->post_subject);
	return xstrdup("An earlier post");
}

/* A link to the thread's post at the service, or NULL. */
static const char *thread_url(const struct thread *t)
{
	if (t->post)
		return safe_url(t->post->url) ? t->post->url : NULL;
	for (size_t i = 0; i < t->n_comments; i++)
		if (safe_url(t->comments[i]->url))
			return t->comments[i]->url;
	return NULL;
}

static void start_html(struct buf *html, const char *title)
{
	buf_puts(html, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
		       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		       "<title>");
	html_escape(html, title);
	/* one column that narrows with the screen; long words and links wrap */
	buf_puts(html, "</title></head>\n<body style=\"margin:0;padding:12px;"
		       "font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.45;"
		       "color:#222;background:#fff\">\n<div style=\"max-width:680px;margin:0 auto;"
		       "overflow-wrap:anywhere;word-wrap:break-word\">\n");
}

static void put_footer(struct buf *txt, struct buf *html, const char *unsub, const char *why,
		       const char *zone)
{
	buf_printf(txt, "\n-- \n%s\n", why);
	if (zone)
		buf_printf(txt, "Times are in %s.\n", zone);
	buf_printf(txt, "Unsubscribe: %s\n", unsub);
	buf_puts(html, "<hr style=\"border:0;border-top:1px solid #ddd\">\n"
		       "<p style=\"color:#777;font-size:12px\">");
	html_escape(html, why);
	if (zone) {
		buf_puts(html, " Times are in ");
		html_escape(html, zone);
		buf_puts(html, ".");
	}
	buf_puts(html, " <a href=\"");
	html_escape(html, unsub);
	buf_puts(html, "\" style=\"color:#777\">Unsubscribe</a></p>\n</div>\n</body></html>\n");
}

static void put_thread(struct buf *txt, struct buf *html, const struct render *rd,
		       const struct thread *t, const char *reply, size_t *budget, size_t *skipped)
{
	char *subj = thread_title(t);
	char *re = xasprintf("Re: %s", subj);
	char *link = reply ? mailto(reply, re) : NULL;
	const char *url = thread_url(t);

	buf_printf(txt, "* %s\n", subj);
	buf_puts(html, "<div style=\"margin:12px 0;padding:10px;border:1px solid #e3e3e3;"
		       "border-radius:4px\">\n<div style=\"font-weight:bold;font-size:16px\">");
	if (url) {
		buf_puts(html, "<a href=\"");
		html_escape(html, url);
		buf_puts(html, "\" style=\"color:#222;text-decoration:none\">");
	}
	html_escape(html, subj);
	buf_puts(html, url ? "</a></div>\n" : "</div>\n");
	if (t->post && *budget > 0) {
		entry_text(txt, html, rd, t->post, 0, url);
		(*budget)--;
	} else if (t->post) {
		(*skipped)++;
	}
	/* many new comments: say how many, show the latest */
	size_t from = 0;
	if (t->n_comments > COMMENTS_IN_FULL) {
		from = t->n_comments - COMMENTS_SHOWN;
		buf_printf(txt, "  %zu new comments, the latest %d shown\n", t->n_comments,
			   COMMENTS_SHOWN);
		buf_printf(html,
			   "<div style=\"margin:8px 0 0;color:#555;font-size:13px\">%zu new "
			   "comments, the latest %d shown</div>\n",
			   t->n_comments, COMMENTS_SHOWN);
	}
	for (size_t i = from; i < t->n_comments; i++) {
		if (*budget == 0) {
			(*skipped)++;
			continue;
		}
		entry_text(txt, html, rd, t->comments[i], 1, url);
		(*budget)--;
	}
	if (link) {
		buf_printf(txt, "  Reply by email: %s\n", link);
		buf_puts(html, "<p style=\"margin:8px 0 0\"><a href=\"");
		html_escape(html, link);
		buf_puts(html, "\" style=\"color:#0b62a4\">Reply by email</a>");
	}
	if (url) {
		buf_printf(txt, "  Open in the feed: %s\n", url);
		buf_puts(html, link ? " &middot; " : "<p style=\"margin:8px 0 0\">");
		buf_puts(html, "<a href=\"");
		html_escape(html, url);
		buf_puts(html, "\" style=\"color:#0b62a4\">Open in the feed</a>");
	}
	if (link || url)
		buf_puts(html, "</p>\n");
	buf_puts(html, "</div>\n");
	buf_putc(txt, '\n');
	free(link);
	free(re);
	free(subj);
}

/* unsub is the mailto: link; web, when set, the https one-click link
 * (RFC 8058), named first so that mail clients prefer it. */
static void put_headers(struct buf *b, const struct mf_config *cfg, const char *to,
			const char *subject, const char *msgid, const char *unsub, const char *web,
			time_t now, const char *reply_to, const char *refs)
{
	smtp_put_address(b, "From", cfg->smtp.from ? cfg->smtp.from : cfg->gateway.reply_address);
	smtp_put_address(b, "To", to);
	if (reply_to)
		smtp_put_address(b, "Reply-To", reply_to);
	smtp_put_header(b, "Subject", subject);
	smtp_put_date(b, now);
	buf_printf(b, "Message-ID: <%s>\r\n", msgid);
	if (refs && *refs && !strpbrk(refs, "\r\n<> ") && strchr(refs, '@') && strlen(refs) < 250)
		buf_printf(b, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", refs, refs);
	smtp_put_robot_headers(b, cfg, "auto-generated");
	if (web && strpbrk(web, "\r\n<>, "))
		web = NULL;
	if (unsub && !strpbrk(unsub, "\r\n")) {
		if (web)
			buf_printf(b,
				   "List-Unsubscribe: <%s>,\r\n <%s>\r\n"
				   "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
				   web, unsub);
		else
			buf_printf(b, "List-Unsubscribe: <%s>\r\n", unsub);
	}
}

int digest_render(struct store *st, const struct mf_config *cfg, const unsigned char *secret,
		  size_t secretlen, const char *to, const char *zone, const char *date_label,
		  const struct digest_group *groups, size_t n_groups, time_t now,
		  struct digest_mail *out)
{
	struct tz *z = zone && *zone ? tz_load(zone) : NULL;
	struct render rd = {.zone = z};
	char *only_reply = NULL; /* the reply address when there is one thread */
	char *only_post = NULL;  /* and the Message-ID of mails about its post */
	size_t n_threads = 0;
	struct buf txt, html, labels, mail;
	size_t budget = cfg->digest.max_items > 0 ? (size_t)cfg->digest.max_items : 50;
	size_t skipped = 0;
	char q[300];
	char *unsub_addr, *unsub_web;
	unsubscribe_links(st, cfg, secret, secretlen, to, now, &unsub_addr, &unsub_web);
	char *unsub = unsub_addr ? mailto(unsub_addr, "unsubscribe") : NULL;

	memset(out, 0, sizeof *out);
	if (!unsub) {
		log_error("digest.error to=%s error=\"cannot build a reply address from "
			  "[gateway] reply_address\"",
			  log_quote(to, q, sizeof q));
		free(unsub_addr);
		free(unsub_web);
		return -1;
	}
	buf_init(&txt);
	buf_init(&html);
	buf_init(&labels);
	buf_init(&mail);
	for (size_t i = 0; i < n_groups; i++)
		buf_printf(&labels, "%s%s", i ? ", " : "", groups[i].label);
	char *glabels = smtp_header_text(labels.data ? labels.data : "");
	out->subject = xasprintf("Digest: %s \xe2\x80\x94 %s", glabels, date_label);
	start_html(&html, out->subject);
	buf_printf(&txt, "%s\n\n", out->subject);
	buf_puts(&html, "<h2 style=\"font-size:18px;margin:0 0 12px\">");
	html_escape(&html, out->subject);
	buf_puts(&html, "</h2>\n");

	for (size_t i = 0; i < n_groups; i++) {
		size_t nt;
		struct thread *t = threads_of(&groups[i], &nt);
		if (nt == 0) {
			threads_free(t, nt);
			continue;
		}
		char *label = smtp_header_text(groups[i].label);
		buf_printf(&txt, "== %s ==\n\n", label);
		buf_puts(&html, "<h3 style=\"font-size:16px;margin:18px 0 4px;color:#444\">");
		html_escape(&html, label);
		buf_puts(&html, "</h3>\n");
		free(label);
		for (size_t k = 0; k < nt; k++) {
			if (budget == 0) {
				skipped += (t[k].post ? 1 : 0) + t[k].n_comments;
				continue;
			}
			char *reply = reply_address_for(st, cfg, secret, secretlen, TOKEN_REPLY,
							groups[i].gid, t[k].root, to, now);
			put_thread(&txt, &html, &rd, &t[k], reply, &budget, &skipped);
			if (n_threads++ == 0) {
				only_reply = reply ? xstrdup(reply) : NULL;
				only_post = post_message_id(cfg, t[k].root, to);
			}
			free(reply);
		}
		threads_free(t, nt);
	}
	if (skipped) {
		buf_printf(&txt, "... and %zu more.\n", skipped);
		buf_printf(&html, "<p style=\"color:#555\">&hellip; and %zu more.</p>\n", skipped);
	}
	/* leaving one group: a link per group that has something in this mail */
	for (size_t i = 0; i < n_groups; i++) {
		if (!groups[i].n || strpbrk(groups[i].label, " \t\r\n"))
			continue;
		char *w = xasprintf("unsubscribe %s", groups[i].label);
		char *leave = mailto(unsub_addr, w);
		char *label = smtp_header_text(groups[i].label);
		buf_printf(&txt, "Leave %s: %s\n", label, leave);
		buf_puts(&html, "<p style=\"margin:2px 0;font-size:12px\"><a href=\"");
		html_escape(&html, leave);
		buf_puts(&html, "\" style=\"color:#777\">Leave ");
		html_escape(&html, label);
		buf_puts(&html, "</a></p>\n");
		free(label);
		free(leave);
		free(w);
	}
	/* the footer's link: the page with the button when there is one */
	put_footer(&txt, &html, unsub_web ? unsub_web : unsub,
		   "You receive this digest because you follow these groups.",
		   z ? zone : NULL);

	out->message_id = smtp_new_message_id(cfg);
	/* a digest of one thread is answered like a notification */
	put_headers(&mail, cfg, to, out->subject, out->message_id, unsub, unsub_web, now,
		    n_threads == 1 ? only_reply : NULL, n_threads == 1 ? only_post : NULL);
	put_alternative(&mail, txt.data, html.data);
	out->text = buf_steal(&txt);
	out->html = buf_steal(&html);
	out->len = mail.len;
	out->data = buf_steal(&mail);
	free(glabels);
	buf_free(&labels);
	free(unsub);
	free(unsub_addr);
	free(unsub_web);
	free(only_reply);
	free(only_post);
	tz_free(z);
	return 0;
}

int digest_render_notification(struct store *st, const struct mf_config *cfg,
			       const unsigned char *secret, size_t secretlen, const char *to,
			       const char *zone, const char *group_label,
			       const struct feed_entry *post, time_t now, struct digest_mail *out)
{
	struct buf txt, html, mail;
	struct tz *z = zone && *zone ? tz_load(zone) : NULL;
	struct render rd = {.zone = z, .full = 1};
	char *unsub_addr, *unsub_web;
	unsubscribe_links(st, cfg, secret, secretlen, to, now, &unsub_addr, &unsub_web);
	char *reply = reply_address_for(st, cfg, secret, secretlen, TOKEN_REPLY, post->group,
					post->remote_id, to, now);
	char *unsub = unsub_addr ? mailto(unsub_addr, "unsubscribe") : NULL;
	struct thread t = {.root = post->remote_id, .post = post, .latest = post->created};
	size_t budget = 1, skipped = 0;

	memset(out, 0, sizeof *out);
	if (!unsub || !reply) {
		free(unsub);
		free(unsub_addr);
		free(unsub_web);
		free(reply);
		tz_free(z);
		return -1;
	}
	char *label = smtp_header_text(group_label);
	char *subj = subject_of(post);
	out->subject = xasprintf("[%s] %s", label, subj);
	buf_init(&txt);
	buf_init(&html);
	buf_init(&mail);
	start_html(&html, out->subject);
	buf_printf(&txt, "New post in %s\n\n", label);
	buf_puts(&html, "<p style=\"color:#555\">New post in ");
	html_escape(&html, label);
	buf_puts(&html, "</p>\n");
	put_thread(&txt, &html, &rd, &t, reply, &budget, &skipped);
	buf_puts(&txt, "Reply to this email to comment on the post.\n");
	put_footer(&txt, &html, unsub_web ? unsub_web : unsub,
		   "You receive a notification for each new post in the groups you follow.",
		   z ? zone : NULL);
	out->message_id = post_message_id(cfg, post->remote_id, to);
	put_headers(&mail, cfg, to, out->subject, out->message_id, unsub, unsub_web, now, reply,
		    NULL);
	put_alternative(&mail, txt.data, html.data);
	out->text = buf_steal(&txt);
	out->html = buf_steal(&html);
	out->len = mail.len;
	out->data = buf_steal(&mail);
	free(label);
	free(subj);
	free(unsub);
	free(unsub_addr);
	free(unsub_web);
	free(reply);
	tz_free(z);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Scheduling                                                          */

/* Local times come from tz.c, which reads the zone's file itself: no TZ,
 * no tzset, nothing shared with the IMAP and HTTP threads. */

int digest_zone_valid(const char *zone)
{
	char path[512], magic[4];
	FILE *f;
	int ok;
	if (!zone || !*zone || zone[0] == '/' || strstr(zone, "..") || strlen(zone) > 200)
		return 0;
	for (const char *p = zone; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p))
			return 0;
	snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", zone);
	f = fopen(path, "rb");
	if (!f)
		return 0;
	ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "TZif", 4) == 0;
	fclose(f);
	return ok;
}

/* The local date `days` days from y-m-d (month 1-12). */
static void add_days(long *year, int *mon, int *mday, int days)
{
	tz_civil_from_days(tz_days_from_civil(*year, *mon, *mday) + days, year, mon, mday);
}

int digest_period(time_t now, enum frequency f, int hour, int weekly_day, const char *tz, char *key,
		  size_t keylen, time_t *sched)
{
	struct tz *zone;
	struct tm lt;
	long y;
	int m, d, rc = 0;

	if (f == FREQ_MINE)
		f = FREQ_DAILY; /* a daily digest, filtered */
	if (f != FREQ_DAILY && f != FREQ_WEEKLY)
		return -1;
	if (tz && *tz && strcmp(tz, "UTC") != 0 && !digest_zone_valid(tz))
		return -1;
	if (hour < 0 || hour > 23)
		hour = 0;
	zone = tz_load(tz);
	if (!zone)
		return -1;
	tz_localtime(zone, now, &lt);
	y = lt.tm_year + 1900L;
	m = lt.tm_mon + 1;
	d = lt.tm_mday;
	if (f == FREQ_WEEKLY) {
		int back = ((lt.tm_wday - weekly_day) % 7 + 7) % 7;
		add_days(&y, &m, &d, -back);
	}
	*sched = tz_moment(zone, (int)y, m, d, hour);
	if (*sched > now) {
		add_days(&y, &m, &d, f == FREQ_WEEKLY ? -7 : -1);
		*sched = tz_moment(zone, (int)y, m, d, hour);
	}
	if (*sched == (time_t)-1) {
		rc = -1;
	} else if (f == FREQ_WEEKLY) {
		long iso_year;
		int week;
		tz_iso_week(tz_days_from_civil(y, m, d), &iso_year, &week);
		snprintf(key, keylen, "w:%04ld-W%02d", iso_year, week);
	} else {
		snprintf(key, keylen, "d:%04ld-%02d-%02d", y, m, d);
	}
	tz_free(zone);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Subscribers and runs                                                */

int digest_set_frequency(struct store *st, const char *email, const char *frequency,
			 const char *source)
{
	static const char *const sql[] = {
	    "UPDATE subscribers SET frequency=?2 WHERE email=lower(?1)",
	    "INSERT INTO subscribers(email, groups, frequency, since, source)"
	    " SELECT lower(?1), group_concat(grp), ?2, ?3, ?4 FROM"
	    " (SELECT DISTINCT grp FROM feed_members WHERE email=lower(?1))"
	    " HAVING count(*) > 0",
	};
	for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
		sqlite3_stmt *s;
		if (sqlite3_prepare_v2(store_db(st), sql[i], -1, &s, NULL) != SQLITE_OK)
			return -1;
		sqlite3_bind_text(s, 1, email, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, frequency, -1, SQLITE_STATIC);
		if (i == 1) {
			sqlite3_bind_int64(s, 3, (sqlite3_int64)time(NULL));
			sqlite3_bind_text(s, 4, source, -1, SQLITE_STATIC);
		}
		int rc = sqlite3_step(s);
		sqlite3_finalize(s);
		if (rc != SQLITE_DONE)
			return -1;
		if (sqlite3_changes(store_db(st)) > 0)
			return 1;
	}
	return 0;
}

int digest_seed_subscribers(struct store *st, const struct mf_config *cfg)
{
	sqlite3_stmt *s;
	int added = 0;
	if (cfg->n_subscribers == 0)
		return 0;
	if (store_begin(st) < 0)
		return -1;
	if (sqlite3_prepare_v2(
		store_db(st),
		"INSERT OR IGNORE INTO subscribers(email, groups, frequency, hour, tz,"
		" since, source) VALUES(lower(?),?,?,?,?,?,'config')",
		-1, &s, NULL) != SQLITE_OK) {
		store_rollback(st);
		return -1;
	}
	for (size_t i = 0; i < cfg->n_subscribers; i++) {
		const struct mf_subscriber *sub = &cfg->subscribers[i];
		struct buf g;
		buf_init(&g);
		for (size_t k = 0; k < sub->groups.n; k++)
			buf_printf(&g, "%s%s", k ? "," : "", sub->groups.v[k]);
		sqlite3_bind_text(s, 1, sub->email, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, g.data ? g.data : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(s, 3, frequency_name(sub->frequency), -1, SQLITE_STATIC);
		if (sub->hour >= 0)
			sqlite3_bind_int(s, 4, sub->hour);
		else
			sqlite3_bind_null(s, 4);
		if (sub->timezone)
			sqlite3_bind_text(s, 5, sub->timezone, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(s, 5);
		sqlite3_bind_int64(s, 6, (sqlite3_int64)time(NULL));
		if (sqlite3_step(s) != SQLITE_DONE) {
			buf_free(&g);
			sqlite3_finalize(s);
			store_rollback(st);
			return -1;
		}
		added += sqlite3_changes(store_db(st));
		sqlite3_reset(s);
		buf_free(&g);
	}
	sqlite3_finalize(s);
	if (store_commit(st) < 0)
		return -1;
	if (added)
		log_info("digest.seeded subscribers=%d", added);
	return added;
}

/* One statement with text parameters ?1..?4 (NULL ones stay NULL) and an
 * integer ?5.  The number of rows changed, or -1. */
static int exec_bind(struct store *st, const char *sql, const char *a, const char *b, const char *c,
		     const char *d, sqlite3_int64 n)
{
	sqlite3_stmt *s;
	int rc;
	if (sqlite3_prepare_v2(store_db(st), sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	const char *v[4] = {a, b, c, d};
	int np = sqlite3_bind_parameter_count(s);
	for (int i = 0; i < 4 && i < np; i++)
		if (v[i])
			sqlite3_bind_text(s, i + 1, v[i], -1, SQLITE_STATIC);
	if (np >= 5)
		sqlite3_bind_int64(s, 5, n);
	rc = sqlite3_step(s) == SQLITE_DONE ? sqlite3_changes(store_db(st)) : -1;
	sqlite3_finalize(s);
	return rc;
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
	sqlite3_stmt *s;
	int due = 1;
	if (sqlite3_prepare_v2(store_db(st), "SELECT at, ok FROM feed_member_reads WHERE grp=?", -1,
			       &s, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(s, 1, gid, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		time_t at = (time_t)sqlite3_column_int64(s, 0);
		long wait = sqlite3_column_int(s, 1) ? MEMBERS_REFRESH : MEMBERS_RETRY;
		due = now < at || now - at >= wait;
	}
	sqlite3_finalize(s);
	return due;
}

static const char orphans_sql[] =
    "DELETE FROM feed_subscribers WHERE NOT EXISTS (SELECT 1 FROM feed_members m"
    " WHERE m.email=feed_subscribers.email AND m.frequency=feed_subscribers.frequency)";

/* Members of groups no longer mapped get no more digests of them. */
static void members_prune(struct store *st, const struct strlist *gids)
{
	sqlite3_stmt *s;
	struct strlist gone = {0};
	if (sqlite3_prepare_v2(store_db(st), "SELECT grp FROM feed_member_reads", -1, &s, NULL) !=
	    SQLITE_OK)
		return;
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *g = (const char *)sqlite3_column_text(s, 0);
		if (g && !gid_listed(gids, g))
			strlist_add(&gone, g);
	}
	sqlite3_finalize(s);
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
	sqlite3_stmt *ins = NULL, *sub = NULL, *rd = NULL;
	int rc = -1;
	if (store_begin(st) < 0)
		return -1;
	if (exec_bind(st, "DELETE FROM feed_members WHERE grp=?1", gid, NULL, NULL, NULL, 0) < 0 ||
	    sqlite3_prepare_v2(store_db(st),
			       "INSERT OR IGNORE INTO feed_members(grp, email, name, frequency)"
			       " VALUES(?1,?2,?3,?4)",
			       -1, &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(store_db(st),
			       "INSERT OR IGNORE INTO feed_subscribers(email, frequency, since)"
			       " VALUES(?1,?2,?3)",
			       -1, &sub, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(
		store_db(st),
		"INSERT OR REPLACE INTO feed_member_reads(grp, at, ok, members, error)"
		" VALUES(?1,?2,1,?3,NULL)",
		-1, &rd, NULL) != SQLITE_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		counts[m[i].frequency]++;
		if (m[i].frequency == FREQ_NEVER)
			continue;
		const char *f = frequency_name(m[i].frequency);
		sqlite3_reset(ins);
		sqlite3_bind_text(ins, 1, gid, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, m[i].email, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 3, m[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 4, f, -1, SQLITE_STATIC);
		sqlite3_reset(sub);
		sqlite3_bind_text(sub, 1, m[i].email, -1, SQLITE_STATIC);
		sqlite3_bind_text(sub, 2, f, -1, SQLITE_STATIC);
		sqlite3_bind_int64(sub, 3, (sqlite3_int64)now);
		if (sqlite3_step(ins) != SQLITE_DONE || sqlite3_step(sub) != SQLITE_DONE)
			goto out;
	}
	sqlite3_bind_text(rd, 1, gid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(rd, 2, (sqlite3_int64)now);
	sqlite3_bind_int64(rd, 3, (sqlite3_int64)n);
	if (sqlite3_step(rd) != SQLITE_DONE ||
	    exec_bind(st, orphans_sql, NULL, NULL, NULL, NULL, 0) < 0)
		goto out;
	rc = 0;
out:
	sqlite3_finalize(ins);
	sqlite3_finalize(sub);
	sqlite3_finalize(rd);
	if (rc == 0)
		return store_commit(st);
	store_rollback(st);
	return -1;
}

int digest_refresh_members(struct store *st, const struct mf_config *cfg,
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
			exec_bind(
			    st,
			    "INSERT INTO feed_member_reads(grp, at, ok, error) VALUES(?1,?5,0,?2)"
			    " ON CONFLICT(grp) DO UPDATE SET at=?5, ok=0, error=?2",
			    gid, err, NULL, NULL, (sqlite3_int64)now);
			failed++;
			continue;
		}
		if (members_store(st, gid, m, n, now, counts) < 0) {
			log_error("digest.error group=%s error=\"cannot record the members: %s\"",
				  gid, store_errmsg(st));
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
/* Runs                                                                */

struct subscriber {
	char *email;
	struct strlist groups; /* as named: [mailbox] names or group ids */
	enum frequency freq;
	int hour;
	char *tz;
	time_t last_sent, since;
	int has_last; /* last_sent is set */
	int feed;     /* a feed member: state in feed_subscribers */
	int each_due; /* `each`: move last_sent once its mails are sent */
	int retry;    /* a mail of this run must be tried again */
};

enum run_query {
	Q_RUN_STATE,
	Q_CLAIM,
	Q_SENT_ID,
	Q_LAST,
	Q_LAST_FEED,
	Q_SET_STATE,
	Q_FORGET,
	Q_SYNC_FULL,
	Q_SYNC_NORMAL,
	Q_SAVEPOINT,
	Q_RELEASE,
	Q_ROLLBACK_TO,
	Q_COUNT
};

static const char *const run_sql[Q_COUNT] = {
    [Q_RUN_STATE] = "SELECT state FROM digest_runs WHERE email=?1 AND period=?2",
    [Q_CLAIM] = "INSERT OR IGNORE INTO digest_runs(email, period, state, at) VALUES(?1,?2,?3,?4)",
    [Q_SENT_ID] = "INSERT OR IGNORE INTO sent_ids(message_id, grp, remote_id, email, created)"
		  " VALUES(?1,?2,?3,?4,?5)",
    [Q_LAST] = "UPDATE subscribers SET last_sent=?3 WHERE email=?1 AND last_sent IS ?2",
    [Q_LAST_FEED] = "UPDATE feed_subscribers SET last_sent=?3 WHERE email=?1 AND"
		    " last_sent IS ?2 AND frequency=?4",
    [Q_SET_STATE] = "UPDATE digest_runs SET state=?3, at=?4 WHERE email=?1 AND period=?2",
    [Q_FORGET] = "DELETE FROM digest_runs WHERE email=?1 AND period=?2",
    [Q_SYNC_FULL] = "PRAGMA synchronous=FULL",
    [Q_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
    [Q_SAVEPOINT] = "SAVEPOINT mail",
    [Q_RELEASE] = "RELEASE mail",
    [Q_ROLLBACK_TO] = "ROLLBACK TO mail",
};

/* Everything one digest_run needs across subscribers. */
struct run {
	struct store *st;
	const struct mf_config *cfg;
	const struct feed_backend_ops *ops;
	void *feed_ctx;
	time_t now;
	unsigned char *secret;
	size_t secretlen;
	struct smtp_client *smtp;
	char *from_addr;
	sqlite3_stmt *q[Q_COUNT];
	struct strlist sent_email, sent_period; /* accepted, still 'sending' */
	struct group_read *reads;
	size_t n_reads;
	struct job *jobs[SMTP_GROUP_MAX]; /* rendered, not yet sent */
	size_t n_jobs;
	int sent;
	int failed;
};

/* A cached statement of run_sql, reset and unbound; NULL on error. */
static sqlite3_stmt *run_stmt(struct run *r, enum run_query id)
{
	if (!r->q[id]) {
		if (sqlite3_prepare_v2(store_db(r->st), run_sql[id], -1, &r->q[id], NULL) !=
		    SQLITE_OK) {
			log_error("digest.error error=\"%s\"", store_errmsg(r->st));
			return NULL;
		}
	} else {
		sqlite3_reset(r->q[id]);
		sqlite3_clear_bindings(r->q[id]);
	}
	return r->q[id];
}

/* Steps a statement without results: rows changed, or -1. */
static int run_exec(struct run *r, sqlite3_stmt *s)
{
	int rc = s && sqlite3_step(s) == SQLITE_DONE ? sqlite3_changes(store_db(r->st)) : -1;
	if (s)
		sqlite3_reset(s);
	return rc;
}

/* The run writes with synchronous=NORMAL (WAL: durable against a crash of
 * the process, not yet of the machine); the record that makes a mail count
 * as sent is committed with FULL, whose fsync of the WAL also makes every
 * earlier write durable, reply tokens included. */
static void run_sync(struct run *r, int full)
{
	run_exec(r, run_stmt(r, full ? Q_SYNC_FULL : Q_SYNC_NORMAL));
}

/* A transaction committed with FULL (the level cannot change inside one). */
static int begin_full(struct run *r)
{
	run_sync(r, 1);
	if (store_begin(r->st) == 0)
		return 0;
	run_sync(r, 0);
	return -1;
}

static int end_full(struct run *r, int commit)
{
	int rc = 0;
	if (commit)
		rc = store_commit(r->st);
	else
		store_rollback(r->st);
	run_sync(r, 0);
	return rc;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	if (s && v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* 1 row exists (state copied into out), 0 none, -1 error. */
static int run_state(struct run *r, const char *email, const char *period, char *out, size_t outlen)
{
	sqlite3_stmt *s = run_stmt(r, Q_RUN_STATE);
	int rc = 0;
	if (!s)
		return -1;
	bind_text(s, 1, email);
	bind_text(s, 2, period);
	if (sqlite3_step(s) == SQLITE_ROW) {
		snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(s, 0));
		rc = 1;
	}
	sqlite3_reset(s);
	return rc;
}

/* Runs statement q of the run with (email, period, state, now). */
static int run_period_stmt(struct run *r, enum run_query q, const char *email, const char *period,
			   const char *state)
{
	sqlite3_stmt *s = run_stmt(r, q);
	bind_text(s, 1, email);
	bind_text(s, 2, period);
	bind_text(s, 3, state);
	if (s)
		sqlite3_bind_int64(s, 4, (sqlite3_int64)r->now);
	return run_exec(r, s);
}

static int set_run_state(struct run *r, const char *email, const char *period, const char *state)
{
	return run_period_stmt(r, Q_SET_STATE, email, period, state);
}

/* Inserts a digest_runs row; 1 inserted, 0 the row was there, -1 error. */
static int claim_period(struct run *r, const char *email, const char *period, const char *state)
{
	return run_period_stmt(r, Q_CLAIM, email, period, state);
}

/* Moves last_sent from what this run read to `to` (0 = none).  1 moved, 0
 * another run moved it meanwhile, -1 error. */
static int move_last_sent(struct run *r, const struct subscriber *sub, time_t from, int from_set,
			  time_t to, int to_set)
{
	sqlite3_stmt *s = run_stmt(r, sub->feed ? Q_LAST_FEED : Q_LAST);
	if (!s)
		return -1;
	bind_text(s, 1, sub->email);
	if (from_set)
		sqlite3_bind_int64(s, 2, (sqlite3_int64)from);
	if (to_set)
		sqlite3_bind_int64(s, 3, (sqlite3_int64)to);
	if (sub->feed)
		bind_text(s, 4, frequency_name(sub->freq));
	return run_exec(r, s);
}

/* Entries are taken up to the second before now: one created later in
 * the current second still counts as new on the next run. */
static time_t window_end(const struct run *r) { return r->now - 1; }

/* Marks the mails the relay accepted as 'sent'; call inside a
 * transaction.  0 or -1. */
static int mark_accepted(struct run *r)
{
	for (size_t i = 0; i < r->sent_email.n; i++)
		if (set_run_state(r, r->sent_email.v[i], r->sent_period.v[i], "sent") < 0)
			return -1;
	return 0;
}

static void forget_accepted(struct run *r)
{
	strlist_free(&r->sent_email);
	strlist_free(&r->sent_period);
}

/* A rendered mail waiting to be sent with its group. */
struct job {
	struct subscriber *sub;
	char period[300];
	char *grp, *remote_id; /* notifications: the post */
	int advance;	       /* digests move last_sent to the window's end */
	enum { NOT_RECORDED, RECORDED, TAKEN, STORE_FAILED } state;
	struct digest_mail mail;
	struct smtp_message m;
};

/* Records one held mail inside the group's transaction: its period
 * becomes 'sending' (counted as sent from now on), its Message-ID is kept
 * for replies, a digest's last_sent moves to the end of its window.  1,
 * 0 when another run recorded this period or moved last_sent since it
 * was read (nothing written), -1 on error. */
static int record_one(struct run *r, struct job *j)
{
	sqlite3_stmt *s;
	int rc = claim_period(r, j->sub->email, j->period, "sending");
	if (rc <= 0)
		return rc;
	if (!(s = run_stmt(r, Q_SENT_ID)))
		return -1;
	bind_text(s, 1, j->mail.message_id);
	bind_text(s, 2, j->grp);
	bind_text(s, 3, j->remote_id);
	bind_text(s, 4, j->sub->email);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)r->now);
	if (run_exec(r, s) < 0)
		return -1;
	if (!j->advance)
		return 1;
	return move_last_sent(r, j->sub, j->sub->last_sent, j->sub->has_last, window_end(r), 1);
}

static struct job *job_of(struct run *r, const struct smtp_message *m)
{
	for (size_t i = 0; i < r->n_jobs; i++)
		if (&r->jobs[i]->m == m)
			return r->jobs[i];
	return NULL;
}

/* Called by smtp_send_group when every mail of the group waits just
 * before the end of its data, the moment from which a relay may take it:
 * one durable commit records them all (and marks the mails accepted
 * earlier as 'sent'); only then are they let go.  A mail another run has
 * sent meanwhile, or every mail when the commit fails, is stopped short,
 * so the relay discards it. */
static void record_group(void *arg, struct smtp_message **held, size_t n)
{
	struct run *r = arg;
	int ok = begin_full(r) == 0;
	if (ok && mark_accepted(r) < 0)
		ok = 0;
	for (size_t i = 0; i < n && ok; i++) {
		struct job *j = job_of(r, held[i]);
		int rc = run_exec(r, run_stmt(r, Q_SAVEPOINT)) < 0 ? -1 : record_one(r, j);
		if (rc == 0 && run_exec(r, run_stmt(r, Q_ROLLBACK_TO)) < 0)
			rc = -1;
		if (rc < 0 || run_exec(r, run_stmt(r, Q_RELEASE)) < 0)
			ok = 0;
		j->state = rc > 0 ? RECORDED : TAKEN;
	}
	if (!ok || end_full(r, 1) < 0) {
		if (ok == 0)
			end_full(r, 0);
		for (size_t i = 0; i < n; i++)
			job_of(r, held[i])->state = STORE_FAILED;
		return;
	}
	forget_accepted(r);
	for (size_t i = 0; i < n; i++)
		held[i]->go = job_of(r, held[i])->state == RECORDED;
}

/* The relay did not take a mail (or could not be reached).  A recorded
 * period is forgotten when the refusal is temporary (tried again on the
 * next run) or kept as 'failed' when it is permanent; a digest's
 * last_sent goes back, so that its content comes in the next mail.  A
 * permanent refusal before the data (an unknown recipient) is recorded as
 * 'failed' too, so that the period is not tried again every minute. */
static void record_refusal(struct run *r, const struct job *j, int res)
{
	const char *email = j->sub->email;
	int rc = 0;
	if (res == SMTP_TEMPORARY && j->state != RECORDED)
		return;
	if (begin_full(r) < 0)
		return;
	if (j->state == RECORDED) {
		sqlite3_stmt *s = run_stmt(r, Q_FORGET);
		if (res == SMTP_TEMPORARY) {
			bind_text(s, 1, email);
			bind_text(s, 2, j->period);
			rc = run_exec(r, s);
		} else {
			rc = set_run_state(r, email, j->period, "failed");
		}
		if (rc >= 0 && j->advance)
			rc = move_last_sent(r, j->sub, window_end(r), 1, j->sub->last_sent,
					    j->sub->has_last);
	} else {
		rc = claim_period(r, email, j->period, "failed");
	}
	end_full(r, rc >= 0);
}

/* What became of one mail of a sent group. */
static void job_finish(struct run *r, struct job *j)
{
	char q[300], q2[600];
	int res = j->m.result;
	if (j->state == TAKEN) {
		log_info("digest.skipped to=%s period=%s reason=\"another run sent it first\"",
			 log_quote(j->sub->email, q, sizeof q), j->period);
		return;
	}
	if (j->state == STORE_FAILED) {
		log_error("digest.error to=%s period=%s error=\"cannot record the send, not sent: "
			  "%s\"",
			  log_quote(j->sub->email, q, sizeof q), j->period, store_errmsg(r->st));
		r->failed++;
		j->sub->retry = 1;
		return;
	}
	if (res == SMTP_SENT) {
		log_info("digest.sent to=%s period=%s", log_quote(j->sub->email, q, sizeof q),
			 j->period);
		strlist_add(&r->sent_email, j->sub->email);
		strlist_add(&r->sent_period, j->period);
		r->sent++;
		return;
	}
	log_warn("digest.not_sent to=%s period=%s result=%s error=%s",
		 log_quote(j->sub->email, q, sizeof q), j->period,
		 res == SMTP_TEMPORARY	 ? "temporary"
		 : res == SMTP_PERMANENT ? "permanent"
					 : "unknown-maybe-sent",
		 log_quote(j->m.err, q2, sizeof q2));
	/* SMTP_UNKNOWN: the data went out and the answer was lost; the
	 * period stays 'sending', counted as sent */
	if (res != SMTP_UNKNOWN)
		record_refusal(r, j, res);
	if (res == SMTP_TEMPORARY)
		j->sub->retry = 1;
	r->failed++;
}

/* Sends the queued mails side by side, recorded as described at the top
 * of this file. */
static void flush_jobs(struct run *r)
{
	struct smtp_message *msgs[SMTP_GROUP_MAX];
	char err[512] = "";
	if (r->n_jobs == 0)
		return;
	if (!r->smtp)
		r->smtp = smtp_new(&r->cfg->smtp, err, sizeof err);
	for (size_t i = 0; i < r->n_jobs; i++) {
		msgs[i] = &r->jobs[i]->m;
		msgs[i]->result = SMTP_TEMPORARY;
		snprintf(msgs[i]->err, sizeof msgs[i]->err, "%s", err);
	}
	if (r->smtp)
		smtp_send_group(r->smtp, r->from_addr, msgs, r->n_jobs, record_group, r);
	for (size_t i = 0; i < r->n_jobs; i++) {
		struct job *j = r->jobs[i];
		job_finish(r, j);
		digest_mail_free(&j->mail);
		free(j->grp);
		free(j->remote_id);
		free(j);
	}
	r->n_jobs = 0;
}

/* Queues a rendered mail (taken over) for sub's period. */
static void queue_mail(struct run *r, struct subscriber *sub, const char *period,
		       struct digest_mail *mail, const char *grp, const char *remote_id,
		       int advance)
{
	struct job *j = xcalloc(1, sizeof *j);
	if (r->n_jobs == SMTP_GROUP_MAX)
		flush_jobs(r);
	j->sub = sub;
	snprintf(j->period, sizeof j->period, "%s", period);
	j->grp = grp ? xstrdup(grp) : NULL;
	j->remote_id = remote_id ? xstrdup(remote_id) : NULL;
	j->advance = advance;
	j->mail = *mail;
	memset(mail, 0, sizeof *mail);
	j->m.to = sub->email;
	j->m.data = j->mail.data;
	j->m.len = j->mail.len;
	r->jobs[r->n_jobs++] = j;
}

static const char *group_id(const struct mf_config *cfg, const char *name)
{
	const struct mf_mailbox *mb = config_mailbox(cfg, name);
	return mb ? mb->group : name;
}

/* What one group holds after `since`, read from the feed once per run
 * and shared by every subscriber whose window starts then or later, so
 * that a run reads each group about once, not once per subscriber. */
struct group_read {
	char *gid;
	time_t since;
	struct feed_entry *entries; /* oldest first */
	size_t n;
	int failed; /* not tried again in this run */
};

/* The gateway's own posts and comments show the person whose mail they
 * carry, and a post its subject: not the integration user, nor the "From"
 * and subject lines written into the text for the feed's readers. */
static void entry_as_mailed(struct feed_entry *e, struct outbox_origin *o)
{
	const char *name = o->author_name && *o->author_name ? o->author_name : NULL;
	const char *email = o->author_email && *o->author_email ? o->author_email : NULL;
	char *t = e->text;
	while (t && *t == '\n')
		t++;
	if (t && strncmp(t, "From ", 5) == 0 && ((email && strstr(t, email) == NULL) ? 0 : 1)) {
		const char *nl = strchr(t, '\n');
		size_t n = nl ? (size_t)(nl - t) : strlen(t);
		int unverified = n >= 12 && memcmp(t + n - 12, "(unverified)", 12) == 0;
		if (name || email) {
			free(e->author_name);
			e->author_name = unverified ? xasprintf("%s (unverified)", name ? name : email)
						    : xstrdup(name ? name : email);
		}
		t = nl ? (char *)nl + 1 : t + n;
		while (*t == '\n')
			t++;
	} else if (name || email) {
		/* posted as the author: the service already names them */
		if (!e->author_name || !*e->author_name) {
			free(e->author_name);
			e->author_name = xstrdup(name ? name : email);
		}
	}
	if (!e->parent_remote_id && o->subject && *o->subject) {
		size_t sl = strlen(o->subject);
		if (t && strncmp(t, o->subject, sl) == 0 && (t[sl] == '\n' || !t[sl])) {
			t += sl;
			while (*t == '\n')
				t++;
		}
		if (!e->subject || !*e->subject) {
			free(e->subject);
			e->subject = xstrdup(o->subject);
		}
	}
	if (t && t != e->text) {
		char *rest = xstrdup(t);
		free(e->text);
		e->text = rest;
	}
	if (!e->author_email && email)
		e->author_email = xstrdup(email);
}

static void entries_as_mailed(struct store *st, struct feed_entry *e, size_t n)
{
	const char *last_parent = NULL;
	char *last_subject = NULL;
	for (size_t i = 0; i < n; i++) {
		struct outbox_origin o;
		if (outbox_origin(st, e[i].remote_id, &o) == 1)
			entry_as_mailed(&e[i], &o);
		outbox_origin_clear(&o);
		const char *p = e[i].parent_remote_id;
		if (!p)
			continue;
		if (!last_parent || strcmp(last_parent, p) != 0) {
			free(last_subject);
			last_subject = NULL;
			last_parent = p;
			if (outbox_origin(st, p, &o) == 1 && o.subject && *o.subject)
				last_subject = xstrdup(o.subject);
			outbox_origin_clear(&o);
		}
		if (last_subject)
			e[i].post_subject = xstrdup(last_subject);
	}
	free(last_subject);
}

static struct group_read *group_read_get(struct run *r, const char *gid, time_t since)
{
	struct group_read *g = NULL;
	char err[256] = "", q[300];
	for (size_t i = 0; i < r->n_reads && !g; i++)
		if (strcmp(r->reads[i].gid, gid) == 0)
			g = &r->reads[i];
	if (g && (g->failed || g->since <= since))
		return g->failed ? NULL : g;
	if (!g) {
		r->reads = xrealloc(r->reads, (r->n_reads + 1) * sizeof *r->reads);
		g = &r->reads[r->n_reads++];
		memset(g, 0, sizeof *g);
		g->gid = xstrdup(gid);
	}
	feed_entries_free(g->entries, g->n);
	g->entries = NULL;
	g->n = 0;
	g->since = since;
	if (outbox_read_group(r->st, r->ops, r->feed_ctx, gid, since, &g->entries, &g->n, err,
			      sizeof err) < 0) {
		log_warn("digest.read_failed group=%s error=%s action=\"its subscribers are tried "
			 "again on the next run\"",
			 gid, log_quote(err, q, sizeof q));
		g->failed = 1;
		return NULL;
	}
	entries_as_mailed(r->st, g->entries, g->n);
	return g;
}

static void group_reads_free(struct run *r)
{
	for (size_t i = 0; i < r->n_reads; i++) {
		free(r->reads[i].gid);
		feed_entries_free(r->reads[i].entries, r->reads[i].n);
	}
	free(r->reads);
}

/* Fills groups[] with what each followed group holds after since, up to
 * the end of the window (borrowed from the run's reads).  0, or -1 when a
 * group could not be read. */
/* The posts (remote ids) whose threads email muted. */
static void muted_of(struct run *r, const char *email, struct strlist *out)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(store_db(r->st), "SELECT remote_id FROM mutes WHERE email=lower(?1)",
			       -1, &s, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_text(s, 1, email, -1, SQLITE_STATIC);
	while (sqlite3_step(s) == SQLITE_ROW)
		strlist_add(out, (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
}

static const char *root_of(const struct feed_entry *e)
{
	return e->parent_remote_id ? e->parent_remote_id : e->remote_id;
}

static int listed(const struct strlist *l, const char *s)
{
	for (size_t i = 0; s && i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

/* Is email's part in e: its author, or named in its text? */
static int concerns(const struct feed_entry *e, const char *email)
{
	if (e->author_email && strcasecmp(e->author_email, email) == 0)
		return 1;
	return e->text && strcasestr(e->text, email) != NULL;
}

/* Leaves out of g the threads sub muted and, with `mine`, those sub has no
 * part in; the kept entries are copied to *kept (owned by the caller). */
static void keep_wanted(const struct subscriber *sub, const struct strlist *muted,
			struct digest_group *g, struct feed_entry **kept)
{
	struct strlist mine = {0};
	if (sub->freq == FREQ_MINE)
		for (size_t i = 0; i < g->n; i++)
			if (concerns(&g->entries[i], sub->email) && root_of(&g->entries[i]))
				strlist_add(&mine, root_of(&g->entries[i]));
	struct feed_entry *k = xcalloc(g->n ? g->n : 1, sizeof *k);
	size_t n = 0;
	for (size_t i = 0; i < g->n; i++) {
		const char *root = root_of(&g->entries[i]);
		if (listed(muted, root) || (sub->freq == FREQ_MINE && !listed(&mine, root)))
			continue;
		k[n++] = g->entries[i];
	}
	strlist_free(&mine);
	g->entries = k;
	g->n = n;
	*kept = k;
}

/* Fills groups (one per group sub follows) with what is new since `since`;
 * kept[] receives arrays the caller frees.  -1 when a group cannot be read. */
static int read_groups(struct run *r, const struct subscriber *sub, time_t since,
		       struct digest_group *groups, size_t *total, struct feed_entry **kept)
{
	struct strlist muted = {0};
	*total = 0;
	muted_of(r, sub->email, &muted);
	for (size_t i = 0; i < sub->groups.n; i++) {
		const char *gid = group_id(r->cfg, sub->groups.v[i]);
		struct group_read *g = group_read_get(r, gid, since);
		size_t lo = 0, hi;
		if (!g) {
			strlist_free(&muted);
			return -1;
		}
		while (lo < g->n && g->entries[lo].created <= since)
			lo++;
		for (hi = lo; hi < g->n && g->entries[hi].created <= window_end(r); hi++)
			;
		groups[i].label = sub->groups.v[i];
		groups[i].gid = gid;
		groups[i].entries = g->entries + lo;
		groups[i].n = hi - lo;
		if (muted.n || sub->freq == FREQ_MINE)
			keep_wanted(sub, &muted, &groups[i], &kept[i]);
		*total += groups[i].n;
	}
	strlist_free(&muted);
	return 0;
}

static void kept_free(struct feed_entry **kept, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(kept[i]);
	free(kept);
}

static void digest_one(struct run *r, struct subscriber *sub, const char *period, const char *label)
{
	size_t ng = sub->groups.n, total;
	struct digest_group *groups = xcalloc(ng ? ng : 1, sizeof *groups);
	/* A first digest also covers the period before the subscription, so a
	 * new reader starts with the current conversations, not an empty mail. */
	time_t since = sub->has_last ? sub->last_sent
				     : sub->since - (sub->freq == FREQ_WEEKLY ? 7 * 86400 : 86400);
	struct digest_mail mail = {0};
	char q[300];
	struct feed_entry **kept = xcalloc(ng ? ng : 1, sizeof *kept);

	if (read_groups(r, sub, since, groups, &total, kept) < 0)
		goto out; /* tried again on the next run */
	if (total == 0) {
		/* nothing new: the period passes without mail */
		if (store_begin(r->st) == 0) {
			if (claim_period(r, sub->email, period, "empty") < 0 ||
			    move_last_sent(r, sub, sub->last_sent, sub->has_last, window_end(r),
					   1) < 0)
				store_rollback(r->st);
			else
				store_commit(r->st);
		}
		log_debug("digest.empty to=%s period=%s", log_quote(sub->email, q, sizeof q),
			  period);
		goto out;
	}
	/* the reply tokens of one mail in one transaction */
	int rc = store_begin(r->st);
	if (rc == 0) {
		rc = digest_render(r->st, r->cfg, r->secret, r->secretlen, sub->email,
				   sub->tz ? sub->tz : r->cfg->digest.timezone, label,
				   groups, ng, r->now, &mail);
		if (rc < 0)
			store_rollback(r->st);
		else
			rc = store_commit(r->st);
	}
	if (rc < 0) {
		r->failed++;
		goto out;
	}
	queue_mail(r, sub, period, &mail, NULL, NULL, 1);
out:
	digest_mail_free(&mail);
	kept_free(kept, ng);
	free(groups);
}

/* `each`: one notification per new post, each its own period. */
static void notify_each(struct run *r, struct subscriber *sub)
{
	size_t ng = sub->groups.n, total;
	struct digest_group *groups = xcalloc(ng ? ng : 1, sizeof *groups);
	time_t since = sub->has_last ? sub->last_sent : sub->since;
	struct feed_entry **kept = xcalloc(ng ? ng : 1, sizeof *kept);

	if (read_groups(r, sub, since, groups, &total, kept) < 0)
		goto out;
	/* last_sent moves once every notification is sent (each_finish) */
	sub->each_due = 1;
	for (size_t i = 0; i < ng; i++) {
		for (size_t k = 0; k < groups[i].n; k++) {
			const struct feed_entry *e = &groups[i].entries[k];
			struct feed_entry copy;
			struct digest_mail mail = {0};
			char period[300], state[32];
			if (e->parent_remote_id || !e->remote_id)
				continue;
			snprintf(period, sizeof period, "e:%s", e->remote_id);
			if (run_state(r, sub->email, period, state, sizeof state) != 0)
				continue;
			copy = *e;
			/* comments by email go to the group the subscriber follows */
			copy.group = (char *)groups[i].gid;
			int rc = store_begin(r->st);
			if (rc == 0) {
				rc = digest_render_notification(
				    r->st, r->cfg, r->secret, r->secretlen, sub->email,
				    sub->tz ? sub->tz : r->cfg->digest.timezone,
				    groups[i].label, &copy, r->now, &mail);
				if (rc < 0)
					store_rollback(r->st);
				else
					rc = store_commit(r->st);
			}
			if (rc < 0) {
				digest_mail_free(&mail);
				r->failed++;
				sub->retry = 1;
				continue;
			}
			queue_mail(r, sub, period, &mail, copy.group, e->remote_id, 0);
		}
	}
out:
	kept_free(kept, ng);
	free(groups);
}

/* After the mails of a batch are sent: an `each` subscriber whose
 * notifications all went out starts its next window now. */
static void each_finish(struct run *r, struct subscriber *sub)
{
	if (sub->each_due && !sub->retry)
		move_last_sent(r, sub, sub->last_sent, sub->has_last, window_end(r), 1);
}

static void subscriber_due(struct run *r, struct subscriber *sub, int force)
{
	char period[96], state[32], q[300], q2[300];
	time_t sched;
	const char *tz = sub->tz ? sub->tz : r->cfg->digest.timezone;
	int hour = sub->hour >= 0 ? sub->hour : r->cfg->digest.hour;

	if (sub->freq == FREQ_NEVER)
		return;
	if (sub->freq == FREQ_EACH) {
		notify_each(r, sub);
		return;
	}
	if (force) {
		char iso[32], label[40];
		time_iso(r->now, iso, sizeof iso);
		/* a feed member may have a daily and a weekly subscription */
		snprintf(period, sizeof period, "n:%s%s%s", iso, sub->feed ? ":" : "",
			 sub->feed ? frequency_name(sub->freq) : "");
		snprintf(label, sizeof label, "%.10s", iso);
		digest_one(r, sub, period, label);
		return;
	}
	if (digest_period(r->now, sub->freq, hour, r->cfg->digest.weekly_day, tz, period,
			  sizeof period, &sched) < 0) {
		log_warn("digest.bad_zone to=%s tz=%s", log_quote(sub->email, q, sizeof q),
			 log_quote(tz, q2, sizeof q2));
		return;
	}
	if (sched < sub->since)
		return; /* subscribed after this period's moment */
	int known = run_state(r, sub->email, period, state, sizeof state);
	if (known != 0) {
		if (known == 1 && strcmp(state, "sending") == 0) {
			log_warn("digest.maybe_sent to=%s period=%s action=\"not sent again; an "
				 "earlier run stopped between recording the send and the relay's "
				 "answer\"",
				 log_quote(sub->email, q, sizeof q), period);
			set_run_state(r, sub->email, period, "maybe-sent");
		}
		return;
	}
	digest_one(r, sub, period, period + 2);
}

static void subscriber_clear(struct subscriber *s)
{
	free(s->email);
	free(s->tz);
	strlist_free(&s->groups);
}

#define BATCH 256 /* subscribers read at a time: memory does not grow with them */

static const char own_sql[] =
    "SELECT email, groups, frequency, hour, tz, last_sent, since, '' FROM subscribers"
    " WHERE (?1 IS NULL OR email=lower(?1)) AND email > ?2 ORDER BY email LIMIT ?4";

/* Feed members with their digest state, without the addresses that have a
 * subscription of their own (config, command line or email: those win). */
static const char feed_sql[] =
    "SELECT m.email, group_concat(m.grp, ','), m.frequency, NULL, NULL, s.last_sent,"
    " s.since, m.frequency FROM feed_members m JOIN feed_subscribers s"
    " ON s.email=m.email AND s.frequency=m.frequency"
    " WHERE NOT EXISTS (SELECT 1 FROM subscribers o WHERE o.email=m.email)"
    " AND (?1 IS NULL OR m.email=lower(?1)) AND (m.email, m.frequency) > (?2, ?3)"
    " GROUP BY m.email, m.frequency ORDER BY m.email, m.frequency LIMIT ?4";

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

/* Up to BATCH subscribers after (after_email, after_freq).  The count, or
 * -1 on a store error. */
static int load_batch(struct run *r, int feed, const char *only, const char *after_email,
		      const char *after_freq, struct subscriber *subs)
{
	sqlite3_stmt *s;
	int n = 0;
	if (sqlite3_prepare_v2(store_db(r->st), feed ? feed_sql : own_sql, -1, &s, NULL) !=
	    SQLITE_OK)
		return -1;
	bind_text(s, 1, only);
	bind_text(s, 2, after_email);
	if (feed)
		bind_text(s, 3, after_freq);
	sqlite3_bind_int(s, 4, BATCH);
	while (n < BATCH && sqlite3_step(s) == SQLITE_ROW) {
		struct subscriber *sub = &subs[n++];
		const char *tz = (const char *)sqlite3_column_text(s, 4);
		memset(sub, 0, sizeof *sub);
		sub->email = xstrdup((const char *)sqlite3_column_text(s, 0));
		strlist_split(&sub->groups, (const char *)sqlite3_column_text(s, 1));
		if (frequency_parse((const char *)sqlite3_column_text(s, 2), &sub->freq) < 0)
			sub->freq = FREQ_DAILY;
		sub->hour =
		    sqlite3_column_type(s, 3) == SQLITE_NULL ? -1 : sqlite3_column_int(s, 3);
		sub->tz = tz ? xstrdup(tz) : NULL;
		sub->has_last = sqlite3_column_type(s, 5) != SQLITE_NULL;
		sub->last_sent = (time_t)sqlite3_column_int64(s, 5);
		sub->since = (time_t)sqlite3_column_int64(s, 6);
		sub->feed = feed;
		if (feed)
			feed_labels(r->cfg, &sub->groups);
	}
	sqlite3_finalize(s);
	return n;
}

/* What sending needs, read once a run has someone to write to. */
static int run_prepare(struct run *r)
{
	char err[512];
	if (token_secret_load(r->cfg, &r->secret, &r->secretlen, err, sizeof err) < 0) {
		log_error("digest.error error=\"%s\"", err);
		return -1;
	}
	r->from_addr = smtp_address_of(r->cfg->smtp.from);
	if (!r->from_addr) {
		log_error("digest.error error=\"[smtp] from holds no address\"");
		return -1;
	}
	return 0;
}

static int run_all(struct store *st, const struct mf_config *cfg,
		   const struct feed_backend_ops *ops, void *feed_ctx, time_t now, int force,
		   const char *only_email, int (*keep_going)(void *arg), void *arg);

int digest_run(struct store *st, const struct mf_config *cfg, const struct feed_backend_ops *ops,
	       void *feed_ctx, time_t now, int force, const char *only_email)
{
	return run_all(st, cfg, ops, feed_ctx, now, force, only_email, NULL, NULL);
}

int digest_run_paced(struct store *st, const struct mf_config *cfg,
		     const struct feed_backend_ops *ops, void *feed_ctx, time_t now,
		     int (*keep_going)(void *arg), void *arg)
{
	return run_all(st, cfg, ops, feed_ctx, now, 0, NULL, keep_going, arg);
}

static int run_all(struct store *st, const struct mf_config *cfg,
		   const struct feed_backend_ops *ops, void *feed_ctx, time_t now, int force,
		   const char *only_email, int (*keep_going)(void *arg), void *arg)
{
	struct run r = {.st = st, .cfg = cfg, .ops = ops, .feed_ctx = feed_ctx, .now = now};
	struct subscriber *subs;
	int feed = cfg->digest.subscribers == SUBSCRIBERS_FEED && ops && ops->read_members;
	int stopped = 0;

	if (!ops) {
		log_error("digest.error error=\"the feed backend cannot read groups\"");
		return -1;
	}
	if (feed)
		digest_refresh_members(st, cfg, ops, feed_ctx, now, 0);
	subs = xcalloc(BATCH, sizeof *subs);
	run_sync(&r, 0);
	for (int pass = 0; pass <= feed && r.failed >= 0 && !stopped; pass++) {
		char *after_email = xstrdup(""), *after_freq = xstrdup("");
		for (;;) {
			int n = load_batch(&r, pass, only_email, after_email, after_freq, subs);
			if (n < 0) {
				log_error("digest.error error=\"cannot read the subscribers: %s\"",
					  store_errmsg(st));
				r.failed = -1;
				break;
			}
			if (n > 0 && !r.from_addr && run_prepare(&r) < 0)
				r.failed = -1;
			for (int i = 0; i < n && r.failed >= 0 && !stopped; i++) {
				if (keep_going && !keep_going(arg))
					stopped = 1;
				else
					subscriber_due(&r, &subs[i], force);
			}
			flush_jobs(&r);
			for (int i = 0; i < n; i++)
				each_finish(&r, &subs[i]);
			if (n > 0) {
				free(after_email);
				free(after_freq);
				after_email = xstrdup(subs[n - 1].email);
				after_freq = xstrdup(frequency_name(subs[n - 1].freq));
			}
			for (int i = 0; i < n; i++)
				subscriber_clear(&subs[i]);
			if (n < BATCH || r.failed < 0 || stopped)
				break;
		}
		free(after_email);
		free(after_freq);
	}
	if (r.sent_email.n && store_begin(st) == 0) {
		if (mark_accepted(&r) < 0)
			store_rollback(st);
		else
			store_commit(st);
	}
	run_sync(&r, 1);
	forget_accepted(&r);
	group_reads_free(&r);
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(r.q[i]);
	free(subs);
	smtp_free(r.smtp);
	free(r.from_addr);
	if (r.secret) {
		memset(r.secret, 0, r.secretlen);
		free(r.secret);
	}
	if (stopped)
		log_info("digest.paused sent=%d reason=\"stopping; the rest goes with the next "
			 "run\"",
			 r.sent);
	return r.failed != 0 ? -1 : r.sent;
}
