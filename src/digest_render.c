/* digest_render.c — what a digest or a notification shows: the groups,
 * their conversations (a post and its new comments) newest first, each
 * entry as an excerpt or in full, reply and unsubscribe links, and the
 * multipart/alternative mail (text and HTML) around them.  Every piece of
 * feed content is untrusted: controls and bidi overrides are dropped, HTML
 * is escaped, header values go through compose.c. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/compose.h"
#include "mailfeed/digest.h"
#include "mailfeed/log.h"
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
	compose_put_base64(b, text);
	buf_printf(b,
		   "--=_mf_%s\r\nContent-Type: text/html; charset=UTF-8\r\n"
		   "Content-Transfer-Encoding: base64\r\n\r\n",
		   hex);
	compose_put_base64(b, html);
	buf_printf(b, "--=_mf_%s--\r\n", hex);
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */

/* A post and its new comments as a digest shows them (not thread.c's
 * threading of mail: the feed service already knows which comment belongs
 * to which post). */
struct conversation {
	const char *root;	       /* remote id of the post */
	const struct feed_entry *post; /* NULL when only comments are new */
	const struct feed_entry **comments;
	size_t n_comments;
	time_t latest;
};

/* How a digest shows one entry: a few lines, cut at a word. */
#define EXCERPT_LINES 4
#define EXCERPT_BYTES 320
/* A conversation with more new comments than this shows the latest few. */
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
	char *dom = compose_header_text(cfg->gateway.reply_address &&
						strchr(cfg->gateway.reply_address, '@')
					    ? strchr(cfg->gateway.reply_address, '@') + 1
					    : "mailfeed.invalid");
	char *id = xasprintf("post.%s.%s@%s", a, b, dom);
	free(dom);
	return id;
}

static int conversation_cmp(const void *a, const void *b)
{
	const struct conversation *x = a, *y = b;
	return x->latest < y->latest ? 1 : x->latest > y->latest ? -1 : strcmp(x->root, y->root);
}

static struct conversation *conversations_of(const struct digest_group *g, size_t *nt)
{
	struct conversation *t = xcalloc(g->n ? g->n : 1, sizeof *t);
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
	qsort(t, n, sizeof *t, conversation_cmp);
	*nt = n;
	return t;
}

static void conversations_free(struct conversation *t, size_t n)
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
		char *name = compose_header_text(f->name ? f->name : "file");
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
	char *author = compose_header_text(e->author_name && *e->author_name ? e->author_name
					   : e->author_email		     ? e->author_email
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
		return compose_header_text(e->subject);
	if (e && e->text && *e->text) {
		char *s = compose_header_text(e->text);
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

/* The title of a conversation: its post's subject, or for new comments on an
 * older post, that post's subject when the gateway made it. */
static char *conversation_title(const struct conversation *t)
{
	if (t->post)
		return subject_of(t->post);
	for (size_t i = 0; i < t->n_comments; i++)
		if (t->comments[i]->post_subject && *t->comments[i]->post_subject)
			return compose_header_text(t->comments[i]->post_subject);
	return xstrdup("An earlier post");
}

/* A link to the conversation's post at the service, or NULL. */
static const char *conversation_url(const struct conversation *t)
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

static void put_conversation(struct buf *txt, struct buf *html, const struct render *rd,
			     const struct conversation *t, const char *reply, size_t *budget,
			     size_t *skipped)
{
	char *subj = conversation_title(t);
	char *re = xasprintf("Re: %s", subj);
	char *link = reply ? mailto(reply, re) : NULL;
	const char *url = conversation_url(t);

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
	compose_put_address(b, "From",
			    cfg->smtp.from ? cfg->smtp.from : cfg->gateway.reply_address);
	compose_put_address(b, "To", to);
	if (reply_to)
		compose_put_address(b, "Reply-To", reply_to);
	compose_put_header(b, "Subject", subject);
	compose_put_date(b, now);
	buf_printf(b, "Message-ID: <%s>\r\n", msgid);
	if (refs && *refs && !strpbrk(refs, "\r\n<> ") && strchr(refs, '@') && strlen(refs) < 250)
		buf_printf(b, "In-Reply-To: <%s>\r\nReferences: <%s>\r\n", refs, refs);
	compose_put_robot_headers(b, cfg, "auto-generated");
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

/* Who a mail is for, and what issuing its tokens needs. */
struct reader {
	struct store *st;
	const struct mf_config *cfg;
	const unsigned char *secret;
	size_t secretlen;
	const char *to;
	time_t now;
};

/* What the groups of a digest add up to, for its end and its headers. */
struct digest_body {
	size_t budget;		/* entries that may still be shown */
	size_t skipped;		/* entries left out for the budget */
	size_t n_conversations; /* shown */
	char *only_reply;	/* the reply address when there is one conversation */
	char *only_post;	/* and the Message-ID of mails about its post */
};

/* "Digest: team, fundraising — 2026-12-04" (before header encoding). */
static char *digest_subject(const struct digest_group *groups, size_t n, const char *date_label)
{
	struct buf labels;
	buf_init(&labels);
	for (size_t i = 0; i < n; i++)
		buf_printf(&labels, "%s%s", i ? ", " : "", groups[i].label);
	char *glabels = compose_header_text(labels.data ? labels.data : "");
	char *subject = xasprintf("Digest: %s \xe2\x80\x94 %s", glabels, date_label);
	free(glabels);
	buf_free(&labels);
	return subject;
}

/* One group's heading and conversations, newest first, while the budget
 * lasts. */
static void put_group(const struct reader *rc, const struct render *rd,
		      const struct digest_group *g, struct buf *txt, struct buf *html,
		      struct digest_body *db)
{
	size_t nt;
	struct conversation *t = conversations_of(g, &nt);
	if (nt == 0) {
		conversations_free(t, nt);
		return;
	}
	char *label = compose_header_text(g->label);
	buf_printf(txt, "== %s ==\n\n", label);
	buf_puts(html, "<h3 style=\"font-size:16px;margin:18px 0 4px;color:#444\">");
	html_escape(html, label);
	buf_puts(html, "</h3>\n");
	free(label);
	for (size_t k = 0; k < nt; k++) {
		if (db->budget == 0) {
			db->skipped += (t[k].post ? 1 : 0) + t[k].n_comments;
			continue;
		}
		char *reply = reply_address_for(rc->st, rc->cfg, rc->secret, rc->secretlen,
						TOKEN_REPLY, g->gid, t[k].root, rc->to, rc->now);
		put_conversation(txt, html, rd, &t[k], reply, &db->budget, &db->skipped);
		if (db->n_conversations++ == 0) {
			db->only_reply = reply ? xstrdup(reply) : NULL;
			db->only_post = post_message_id(rc->cfg, t[k].root, rc->to);
		}
		free(reply);
	}
	conversations_free(t, nt);
}

/* Leaving one group: a link per group that has something in this mail. */
static void put_leave_links(struct buf *txt, struct buf *html, const struct digest_group *groups,
			    size_t n, const char *unsub_addr)
{
	for (size_t i = 0; i < n; i++) {
		if (!groups[i].n || strpbrk(groups[i].label, " \t\r\n"))
			continue;
		char *w = xasprintf("unsubscribe %s", groups[i].label);
		char *leave = mailto(unsub_addr, w);
		char *label = compose_header_text(groups[i].label);
		buf_printf(txt, "Leave %s: %s\n", label, leave);
		buf_puts(html, "<p style=\"margin:2px 0;font-size:12px\"><a href=\"");
		html_escape(html, leave);
		buf_puts(html, "\" style=\"color:#777\">Leave ");
		html_escape(html, label);
		buf_puts(html, "</a></p>\n");
		free(label);
		free(leave);
		free(w);
	}
}

/* The body after the headers in mail, and the texts, into out. */
static void finish_mail(struct digest_mail *out, struct buf *mail, struct buf *txt,
			struct buf *html)
{
	put_alternative(mail, txt->data, html->data);
	out->text = buf_steal(txt);
	out->html = buf_steal(html);
	out->len = mail->len;
	out->data = buf_steal(mail);
}

int digest_render(struct store *st, const struct mf_config *cfg, const unsigned char *secret,
		  size_t secretlen, const char *to, const char *zone, const char *date_label,
		  const struct digest_group *groups, size_t n_groups, time_t now,
		  struct digest_mail *out)
{
	struct tz *z = zone && *zone ? tz_load(zone) : NULL;
	struct render rd = {.zone = z};
	struct reader rc = {st, cfg, secret, secretlen, to, now};
	struct digest_body db = {.budget = cfg->digest.max_items > 0 ? (size_t)cfg->digest.max_items
								     : 50};
	struct buf txt, html, mail;
	char q[300], *unsub_addr, *unsub_web;
	unsubscribe_links(st, cfg, secret, secretlen, to, now, &unsub_addr, &unsub_web);
	char *unsub = unsub_addr ? mailto(unsub_addr, "unsubscribe") : NULL;

	memset(out, 0, sizeof *out);
	if (!unsub) {
		log_error("digest.error to=%s error=\"cannot build a reply address from "
			  "[gateway] reply_address\"",
			  log_quote(to, q, sizeof q));
		free(unsub_addr);
		free(unsub_web);
		tz_free(z);
		return -1;
	}
	buf_init(&txt);
	buf_init(&html);
	buf_init(&mail);
	out->subject = digest_subject(groups, n_groups, date_label);
	start_html(&html, out->subject);
	buf_printf(&txt, "%s\n\n", out->subject);
	buf_puts(&html, "<h2 style=\"font-size:18px;margin:0 0 12px\">");
	html_escape(&html, out->subject);
	buf_puts(&html, "</h2>\n");
	for (size_t i = 0; i < n_groups; i++)
		put_group(&rc, &rd, &groups[i], &txt, &html, &db);
	if (db.skipped) {
		buf_printf(&txt, "... and %zu more.\n", db.skipped);
		buf_printf(&html, "<p style=\"color:#555\">&hellip; and %zu more.</p>\n",
			   db.skipped);
	}
	put_leave_links(&txt, &html, groups, n_groups, unsub_addr);
	/* the footer's link: the page with the button when there is one */
	put_footer(&txt, &html, unsub_web ? unsub_web : unsub,
		   "You receive this digest because you follow these groups.", z ? zone : NULL);

	out->message_id = compose_new_message_id(cfg);
	/* a digest of one conversation is answered like a notification */
	put_headers(&mail, cfg, to, out->subject, out->message_id, unsub, unsub_web, now,
		    db.n_conversations == 1 ? db.only_reply : NULL,
		    db.n_conversations == 1 ? db.only_post : NULL);
	finish_mail(out, &mail, &txt, &html);
	free(unsub);
	free(unsub_addr);
	free(unsub_web);
	free(db.only_reply);
	free(db.only_post);
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
	struct conversation t = {.root = post->remote_id, .post = post, .latest = post->created};
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
	char *label = compose_header_text(group_label);
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
	put_conversation(&txt, &html, &rd, &t, reply, &budget, &skipped);
	buf_puts(&txt, "Reply to this email to comment on the post.\n");
	put_footer(&txt, &html, unsub_web ? unsub_web : unsub,
		   "You receive a notification for each new post in the groups you follow.",
		   z ? zone : NULL);
	out->message_id = post_message_id(cfg, post->remote_id, to);
	put_headers(&mail, cfg, to, out->subject, out->message_id, unsub, unsub_web, now, reply,
		    NULL);
	finish_mail(out, &mail, &txt, &html);
	free(label);
	free(subj);
	free(unsub);
	free(unsub_addr);
	free(unsub_web);
	free(reply);
	tz_free(z);
	return 0;
}
