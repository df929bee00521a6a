/* mime.c — one raw RFC 5322 message into a struct mf_message.
 *
 * GMime splits the MIME tree, recovering what broken mail needs (a missing
 * closing boundary, doubled or stray boundaries, damaged parameters), and
 * says what it recovered from: every recovery becomes a note in
 * m->warnings.  Everything about text is done here and in mime_decode.c /
 * mime_header.c: transfer encodings (content labelled base64 or
 * quoted-printable that is not is shown as written), charsets to UTF-8,
 * the choice of the text (one alternative; body or attachment decided by
 * disposition, then type and position), forwarded messages (also encoded
 * ones) as forwarded blocks, attachment naming.  The top-level headers are
 * read by our own tolerant splitter, so that junk in one header never
 * loses the others.
 *
 * This code runs inside the sandboxed parse worker (worker_child.c, under
 * worker.c's supervision). */
#include <ctype.h>
#include <errno.h>
#include <gmime/gmime.h>
#include <iconv.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/facts.h"
#include "mailfeed/html.h"
#include "mailfeed/mime.h"
#include "mime_internal.h"

#define REFERENCES_MAX 200
#define INLINE_LOGO_MAX (20 * 1024)
/* More multipart headers than this means a hostile nest, not a mail. */
#define MULTIPART_MAX 1000
#define TEXT_MAX (8u * 1024 * 1024)

/* ---- the MIME tree ----------------------------------------------------- */

struct walk {
	struct mf_message *m;
	struct buf plain, html, forwards, warn;
	int have_plain, have_html;
	int body_taken; /* a text part became the body */
	int msg_depth;	/* forwarded messages around this walk */
	size_t max_att;
	struct strlist cids; /* Content-ID per attachment, "" when none */
	int att_dropped;
	struct strlist bounds; /* boundaries of every multipart of the message */
	GMimeParserOptions *opts;
};

static void walk_object(struct walk *w, GMimeObject *o, int depth);
static void walk_partless(struct walk *w, GMimeMultipart *mp);

/* What GMime recovered from, in words an admin can act on. */
static void gmime_warning(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer data)
{
	struct walk *w = data;
	(void)offset;
	switch (code) {
	case GMIME_WARN_TRUNCATED_MESSAGE:
		mime_warn(&w->warn, "a multipart ends without its closing boundary (truncated?); "
				    "parts read up to the end of the message");
		break;
	case GMIME_WARN_MALFORMED_MULTIPART:
		mime_warn(&w->warn, "a multipart is not closed before its parent's boundary; "
				    "read up to there");
		break;
	case GMIME_CRIT_INVALID_HEADER_NAME:
		if (item && !strncmp(item, "--", 2))
			mime_warn(&w->warn, "doubled or stray boundary line; skipped");
		else
			mime_warn(&w->warn,
				  "a line among the headers that is not a header; skipped");
		break;
	case GMIME_WARN_PART_WITHOUT_CONTENT:
	case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
		mime_warn(&w->warn, "doubled or stray boundary line; skipped");
		break;
	case GMIME_WARN_INVALID_PARAMETER:
	case GMIME_CRIT_CONFLICTING_PARAMETER:
		mime_warn(&w->warn, "damaged Content-Type or Content-Disposition parameters; "
				    "read tolerantly");
		break;
	case GMIME_WARN_INVALID_CONTENT_TYPE:
		mime_warn(&w->warn, "unreadable Content-Type; the part is read as an attachment");
		break;
	case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
		mime_warn(&w->warn, "a multipart without a boundary; read as one part");
		break;
	case GMIME_CRIT_NESTING_OVERFLOW:
		mime_warn(&w->warn, "MIME nesting too deep; the rest is not read");
		break;
	case GMIME_WARN_MALFORMED_MESSAGE:
		mime_warn(&w->warn, "malformed message structure; recovered what could be read");
		break;
	default: /* duplicated headers, 8-bit or bad encoded words: read anyway */
		break;
	}
}

/* The content of a part as it stands in the message (still transfer
 * encoded), length in *len: the bytes themselves where the part is a
 * window on the message in memory (*copy NULL), else a copy in *copy. */
static const char *part_raw(GMimePart *p, size_t *len, char **copy)
{
	GMimeDataWrapper *dw = g_mime_part_get_content(p);
	GMimeStream *s = dw ? g_mime_data_wrapper_get_stream(dw) : NULL;
	*copy = NULL;
	*len = 0;
	if (!s)
		return "";
	if (GMIME_IS_STREAM_MEM(s)) {
		GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
		gint64 start = s->bound_start, end = s->bound_end;
		if (ba && end < 0)
			end = (gint64)ba->len;
		if (ba && start >= 0 && start <= end && end <= (gint64)ba->len) {
			*len = (size_t)(end - start);
			return (const char *)ba->data + start;
		}
	}
	struct buf b;
	buf_init(&b);
	g_mime_stream_reset(s);
	for (;;) {
		char tmp[16384];
		ssize_t n = g_mime_stream_read(s, tmp, sizeof tmp);
		if (n <= 0)
			break;
		buf_append(&b, tmp, (size_t)n);
	}
	*len = b.len;
	*copy = buf_steal(&b);
	return *copy;
}

/* n bytes as an owned NUL-terminated string. */
static char *dup_bytes(const char *p, size_t n)
{
	char *s = xmalloc(n + 1);
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

/* Whether n bytes labelled base64 are base64: text with spaces between
 * words and punctuation is not. */
static int looks_base64(const char *s, size_t n)
{
	size_t odd = 0, chars = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (isalnum(c) || c == '+' || c == '/' || c == '=') {
			chars++;
		} else if (c == ' ' || c == '\t') {
			/* a blank between two base64 characters is a word gap */
			if (i && i + 1 < n && isalnum((unsigned char)s[i - 1]) &&
			    isalnum((unsigned char)s[i + 1]))
				odd++;
		} else if (c != '\r' && c != '\n') {
			odd++;
		}
	}
	return chars && odd * 50 <= chars;
}

/* A part's bytes decoded from their transfer encoding, NUL-terminated,
 * length in *len.  For text, content labelled base64 or quoted-printable
 * that is not is shown as written, and said so in the warnings. */
static char *part_decoded(struct walk *w, GMimePart *p, int is_text, size_t *len)
{
	size_t n;
	char *copy;
	const char *raw = part_raw(p, &n, &copy);
	char *out = NULL;
	GMimeContentEncoding enc = g_mime_part_get_content_encoding(p);
	if (enc == GMIME_CONTENT_ENCODING_BASE64) {
		if (is_text && !looks_base64(raw, n)) {
			mime_warn(&w->warn, "text labelled base64 is not base64; shown as written");
		} else {
			out = xmalloc(n / 4 * 3 + 4);
			*len = mime_base64_decode(raw, n, (unsigned char *)out);
			out[*len] = 0;
		}
	} else if (enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE) {
		out = xmalloc(2 * n + 2);
		struct mime_qp_stats st;
		*len = mime_qp_decode(raw, n, out, &st);
		out[*len] = 0;
		if (is_text && st.bare && !st.escapes && !st.soft) {
			mime_warn(&w->warn,
				  "text labelled quoted-printable is not; shown as written");
			free(out);
			out = NULL;
		} else if (st.bare) {
			mime_warn(&w->warn, "quoted-printable with a bare '='; kept as written");
		}
	}
	if (!out) {
		*len = n;
		out = copy ? copy : dup_bytes(raw, n);
		copy = NULL;
	}
	free(copy);
	return out;
}

/* "type/subtype", lower case, without controls or quotes. */
static char *content_type_str(GMimeContentType *ct)
{
	const char *type = ct ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *sub = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
	char *s = xasprintf("%s/%s", type && *type ? type : "application",
			    sub && *sub ? sub : "octet-stream");
	str_lower(s);
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == '"' || (unsigned char)*c >= 0x7f)
			*c = '_';
	return s;
}

/* A parameter of the part's Content-Type as UTF-8, or NULL. */
static char *ct_param(GMimeObject *o, const char *name)
{
	GMimeContentType *ct = g_mime_object_get_content_type(o);
	const char *v = ct ? g_mime_content_type_get_parameter(ct, name) : NULL;
	return v ? mime_to_utf8(v, strlen(v), NULL, NULL) : NULL;
}

static void add_attachment(struct walk *w, GMimePart *p, const char *ctype, const char *fname,
			   const char *cid, int is_inline)
{
	struct mf_message *m = w->m;
	if (m->n_attachments >= MIME_MAX_ATTACHMENTS) {
		if (!w->att_dropped)
			mime_warn(&w->warn, "more than %d attachments; the rest are not listed",
				  MIME_MAX_ATTACHMENTS);
		w->att_dropped = 1;
		return;
	}
	size_t len;
	char *data = part_decoded(w, p, 0, &len);
	m->attachments = xrealloc(m->attachments, (m->n_attachments + 1) * sizeof *m->attachments);
	struct mf_attachment *a = &m->attachments[m->n_attachments++];
	memset(a, 0, sizeof *a);
	a->content_type = xstrdup(ctype);
	a->filename = mime_safe_filename(fname);
	if (!a->filename)
		a->filename = xasprintf("attachment-%zu.%s", m->n_attachments, mime_ext_for(ctype));
	a->size = len;
	sha256_hex(data, a->size, a->sha256);
	a->is_inline = is_inline;
	if (w->max_att == 0 || len <= w->max_att) {
		a->data = (unsigned char *)data;
		data = NULL;
	}
	free(data);
	strlist_add(&w->cids, cid ? cid : "");
}

/* Where a text holds MIME structure of its own: a "--token" line followed
 * by a Content- header, left there by a boundary that does not match its
 * multipart or by a part with two Content-Type headers.  The token (owned)
 * and the offset of its line, or NULL. */
static char *embedded_boundary(const char *t, size_t *at)
{
	for (const char *p = t; p && *p;) {
		if (p[0] != '-' || p[1] != '-') {
			/* the next line that starts with "--" */
			p = strstr(p, "\n--");
			p = p ? p + 1 : NULL;
			continue;
		}
		size_t n = strcspn(p, "\r\n");
		const char *next = p + n;
		next += *next == '\r';
		next += *next == '\n';
		if (n < 3 || n > 200 || strncasecmp(next, "Content-", 8)) {
			p = next;
			continue;
		}
		while (n > 2 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		*at = (size_t)(p - t);
		return xstrndup(p + 2, n - 2);
	}
	return NULL;
}

static void walk_embedded(struct walk *w, const char *t, size_t at, const char *token,
			  int is_plain);
static void walk_object(struct walk *w, GMimeObject *o, int depth);

/* Every multipart boundary of the tree at o, into out. */
static void collect_bounds(GMimeObject *o, struct strlist *out, int depth)
{
	if (!o || depth > MULTIPART_MAX + MIME_MAX_DEPTH || out->n > MULTIPART_MAX)
		return;
	if (GMIME_IS_MULTIPART(o)) {
		GMimeMultipart *mp = GMIME_MULTIPART(o);
		const char *b = g_mime_multipart_get_boundary(mp);
		if (b && *b && !strlist_has_ci(out, b))
			strlist_add(out, b);
		for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
			collect_bounds(g_mime_multipart_get_part(mp, i), out, depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(o)) {
		GMimeMessage *msg = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
		if (msg)
			collect_bounds(g_mime_message_get_mime_part(msg), out, depth + 1);
	}
}

/* Every boundary= parameter written in raw, into out: also those of
 * multiparts a damaged header block hid from the tree. */
static void scan_bounds(const char *raw, size_t len, struct strlist *out)
{
	const char *p = raw, *end = raw + len;
	while (out->n <= MULTIPART_MAX && p < end &&
	       (p = memmem(p, (size_t)(end - p), "oundary", 7)) != NULL) {
		p += 7;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p >= end || *p != '=')
			continue;
		p++;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *b = p;
		if (p < end && *p == '"') {
			b = ++p;
			while (p < end && *p != '"' && *p != '\n' && *p != '\r')
				p++;
		} else {
			while (p < end && *p != ';' && !isspace((unsigned char)*p))
				p++;
		}
		if (p > b && p - b <= 200) {
			char *t = xstrndup(b, (size_t)(p - b));
			if (!strlist_has_ci(out, t))
				strlist_add(out, t);
			free(t);
		}
	}
}

/* Removes, in place, lines of t that are a boundary line of a multipart of
 * the message ("--b" or "--b--"): a part cut badly keeps them. */
static void drop_boundary_lines(struct walk *w, char *t)
{
	if (!w->bounds.n || (strncmp(t, "--", 2) && !strstr(t, "\n--")))
		return;
	char *o = t, *p = t;
	int dropped = 0;
	while (*p) {
		char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		size_t k = n;
		while (k && (p[k - 1] == ' ' || p[k - 1] == '\t'))
			k--;
		int drop = 0;
		if (k > 2 && p[0] == '-' && p[1] == '-')
			for (size_t i = 0; i < w->bounds.n && !drop; i++) {
				size_t bl = strlen(w->bounds.v[i]);
				drop = bl && !strncmp(p + 2, w->bounds.v[i], bl) &&
				       (k == bl + 2 || (k == bl + 4 && !strncmp(p + 2 + bl, "--", 2)));
			}
		size_t step = n + (nl ? 1 : 0);
		if (drop) {
			dropped = 1;
		} else {
			memmove(o, p, step);
			o += step;
		}
		p += step;
	}
	*o = 0;
	if (dropped)
		mime_warn(&w->warn, "boundary line inside a part's text; removed");
}

static void add_text(struct walk *w, GMimeObject *o, GMimePart *p, int is_plain)
{
	size_t len;
	char *data = part_decoded(w, p, 1, &len);
	char *cs = ct_param(o, "charset");
	char *u = mime_to_utf8(data, len, cs, &w->warn);
	free(data);
	free(cs);
	mime_crlf_to_lf(u);
	size_t at;
	char *token = w->msg_depth < MIME_MAX_DEPTH ? embedded_boundary(u, &at) : NULL;
	if (token) {
		walk_embedded(w, u, at, token, is_plain);
		free(token);
		free(u);
		return;
	}
	drop_boundary_lines(w, u);
	if (is_plain) {
		char *fmt = ct_param(o, "format");
		char *delsp = ct_param(o, "delsp");
		if (fmt && !strcasecmp(fmt, "flowed")) {
			char *j = mime_unflow(u, delsp && !strcasecmp(delsp, "yes"));
			free(u);
			u = j;
		}
		free(fmt);
		free(delsp);
		if (w->plain.len && w->plain.data[w->plain.len - 1] != '\n')
			buf_putc(&w->plain, '\n');
		if (w->plain.len + strlen(u) < TEXT_MAX)
			buf_puts(&w->plain, u);
		w->have_plain = 1;
	} else {
		if (w->html.len + strlen(u) < TEXT_MAX)
			buf_puts(&w->html, u);
		w->have_html = 1;
	}
	free(u);
}

static void walk_forward(struct walk *w, GMimeMessage *msg, int depth);

/* message/rfc822 sent base64 or quoted-printable encoded: decoded, then
 * read as a message of its own. */
static void walk_encoded_message(struct walk *w, GMimePart *p, int depth)
{
	if (w->msg_depth >= MIME_MAX_DEPTH) {
		mime_warn(&w->warn, "MIME nesting deeper than %d; the rest is not read",
			  MIME_MAX_DEPTH);
		return;
	}
	size_t len;
	char *data = part_decoded(w, p, 0, &len);
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(data, len);
	free(data);
	GMimeParser *parser = g_mime_parser_new_with_stream(s);
	GMimeMessage *msg = g_mime_parser_construct_message(parser, w->opts);
	if (msg) {
		walk_forward(w, msg, depth);
		g_object_unref(msg);
	}
	g_object_unref(parser);
	g_object_unref(s);
}

/* Body or attachment, the way mail clients decide: the disposition first
 * (attachment / inline), then type and position: a text part without a
 * name is text; a named one is the text only while no text came before. */
static void walk_leaf(struct walk *w, GMimeObject *o, int depth)
{
	GMimePart *p = GMIME_PART(o);
	char *ctype = content_type_str(g_mime_object_get_content_type(o));
	GMimeContentDisposition *cd = g_mime_object_get_content_disposition(o);
	const char *dsp = cd ? g_mime_content_disposition_get_disposition(cd) : NULL;
	const char *fn = cd ? g_mime_content_disposition_get_parameter(cd, "filename") : NULL;
	if (!fn)
		fn = g_mime_content_type_get_parameter(g_mime_object_get_content_type(o), "name");
	char *fname = fn ? mime_to_utf8(fn, strlen(fn), NULL, NULL) : NULL;
	int attach_dsp = dsp && !strcasecmp(dsp, "attachment");
	int inline_dsp = dsp && !strcasecmp(dsp, "inline");
	if (!strcmp(ctype, "application/octet-stream")) {
		/* "text" without a subtype, "text/" and the like: text/plain,
		 * as mail clients read it */
		const char *v = g_mime_object_get_header(o, "Content-Type");
		while (v && isspace((unsigned char)*v))
			v++;
		if (v && !strncasecmp(v, "text", 4) && !isalnum((unsigned char)v[4]) &&
		    (v[4] != '/' || !isalnum((unsigned char)v[5]))) {
			free(ctype);
			ctype = xstrdup("text/plain");
		}
	}
	int is_plain = !strcmp(ctype, "text/plain"), is_html = !strcmp(ctype, "text/html");
	int named = fname && *fname;
	if (!strcmp(ctype, "message/rfc822") &&
	    g_mime_part_get_content_encoding(p) != GMIME_CONTENT_ENCODING_DEFAULT) {
		walk_encoded_message(w, p, depth);
	} else if ((is_plain || is_html) && !attach_dsp &&
		   (!named || inline_dsp || !w->body_taken)) {
		if (named && !inline_dsp)
			mime_warn(&w->warn,
				  "a named %s part without a disposition is read as the text",
				  ctype);
		add_text(w, o, p, is_plain);
		w->body_taken = 1;
	} else {
		const char *cid = g_mime_object_get_content_id(o);
		char *c = cid ? mime_to_utf8(cid, strlen(cid), NULL, NULL) : NULL;
		add_attachment(w, p, ctype, fname, c, inline_dsp || c != NULL);
		free(c);
	}
	free(fname);
	free(ctype);
}

/* The raw value of a header of o, unfolded, as UTF-8, or NULL. */
static char *raw_header(GMimeObject *o, const char *name)
{
	GMimeHeaderList *hl = g_mime_object_get_header_list(o);
	GMimeHeader *h = hl ? g_mime_header_list_get_header(hl, name) : NULL;
	const char *v = h ? g_mime_header_get_raw_value(h) : NULL;
	if (!v)
		return NULL;
	char *u = mime_to_utf8(v, strlen(v), NULL, NULL);
	char *o2 = u;
	for (const char *c = u; *c; c++)
		if (*c != '\r' && *c != '\n')
			*o2++ = *c == '\t' ? ' ' : *c;
	*o2 = 0;
	char *t = str_trim(u);
	memmove(u, t, strlen(t) + 1);
	return u;
}

/* A message/rfc822 part: rendered after the new text as a block that the
 * cleaner keeps (no "> "), so forwarded content reaches the feed. */
static void walk_forward(struct walk *w, GMimeMessage *msg, int depth)
{
	struct walk sub;
	memset(&sub, 0, sizeof sub);
	sub.m = w->m;
	sub.max_att = w->max_att;
	sub.opts = w->opts;
	sub.msg_depth = w->msg_depth + 1;
	for (size_t i = 0; i < w->bounds.n; i++)
		strlist_add(&sub.bounds, w->bounds.v[i]);
	buf_init(&sub.plain);
	buf_init(&sub.html);
	buf_init(&sub.forwards);
	buf_init(&sub.warn);
	GMimeObject *body = g_mime_message_get_mime_part(msg);
	if (body)
		walk_object(&sub, body, depth + 1);
	/* Attachments of the forwarded message were listed on the outer one. */
	for (size_t i = 0; i < sub.cids.n; i++)
		strlist_add(&w->cids, sub.cids.v[i]);
	strlist_free(&sub.cids);
	w->att_dropped |= sub.att_dropped;
	if (sub.warn.len)
		mime_warn(&w->warn, "%s", sub.warn.data);
	struct buf *f = &w->forwards;
	buf_puts(f, "\n---------- Forwarded message ---------\n");
	static const char *show[] = {"From", "Date", "Subject", "To"};
	for (size_t i = 0; i < sizeof show / sizeof show[0]; i++) {
		char *v = raw_header(GMIME_OBJECT(msg), show[i]);
		if (v) {
			char *d = mime_decode_header(v);
			buf_printf(f, "%s: %s\n", show[i], d);
			free(d);
			free(v);
		}
	}
	buf_putc(f, '\n');
	const char *plain = sub.plain.data ? sub.plain.data : "";
	int plain_blank = 1;
	for (const char *c = plain; *c; c++)
		if (!isspace((unsigned char)*c))
			plain_blank = 0;
	if (!plain_blank || !sub.have_html) {
		buf_puts(f, plain);
	} else {
		char *t = html_to_text(sub.html.data, sub.html.len);
		buf_puts(f, t);
		free(t);
	}
	if (f->len && f->data[f->len - 1] != '\n')
		buf_putc(f, '\n');
	if (sub.forwards.len)
		buf_puts(f, sub.forwards.data);
	strlist_free(&sub.bounds);
	buf_free(&sub.plain);
	buf_free(&sub.html);
	buf_free(&sub.forwards);
	buf_free(&sub.warn);
}

static int blank_from(const struct buf *b, size_t from)
{
	for (size_t i = from; i < b->len; i++)
		if (!isspace((unsigned char)b->data[i]))
			return 0;
	return 1;
}

/* Cuts bytes [from, to) out of b. */
static void buf_cut(struct buf *b, size_t from, size_t to)
{
	memmove(b->data + from, b->data + to, b->len - to + 1);
	b->len -= to - from;
}

/* One alternative's contribution to a text buffer, kept only while no
 * later alternative of the same kind brings text: RFC 2046 orders
 * alternatives from plainest to richest.  *start and *end: the range the
 * kept one holds (none yet while start == end). */
static int keep_last(struct buf *b, size_t before, size_t *start, size_t *end)
{
	if (b->len <= before || blank_from(b, before))
		return 0;
	int dropped = 0;
	if (*end > *start) {
		size_t n = *end - *start;
		buf_cut(b, *start, *end);
		before -= n;
		dropped = 1;
	}
	*start = before;
	*end = b->len;
	return dropped;
}

/* The parts of a multipart in order.  Of multipart/alternative, one plain
 * text and one HTML alternative are kept, each the last of its kind (the
 * choice between them is made later); attachments of every alternative
 * are listed. */
static void walk_multipart(struct walk *w, GMimeMultipart *mp, int alt, int depth)
{
	int n = g_mime_multipart_get_count(mp);
	if (n == 0) {
		walk_partless(w, mp);
		return;
	}
	size_t ps = 0, pe = 0, hs = 0, he = 0;
	int dropped = 0;
	for (int i = 0; i < n; i++) {
		size_t pl = w->plain.len, hl = w->html.len;
		walk_object(w, g_mime_multipart_get_part(mp, i), depth + 1);
		if (!alt)
			continue;
		dropped |= keep_last(&w->plain, pl, &ps, &pe);
		dropped |= keep_last(&w->html, hl, &hs, &he);
	}
	if (dropped)
		mime_warn(&w->warn, "multipart/alternative with several text parts of one kind; "
				    "the last is shown");
}

/* Text holding MIME structure: what comes before the first boundary is
 * text, the rest is read as the multipart it is. */
static void walk_embedded(struct walk *w, const char *t, size_t at, const char *token, int is_plain)
{
	mime_warn(&w->warn, "MIME structure inside a text part (a boundary that does not match "
			    "its multipart?); split into its parts");
	struct buf pre;
	buf_init(&pre);
	buf_append(&pre, t, at);
	buf_putc(&pre, 0);
	drop_boundary_lines(w, pre.data);
	pre.len = strlen(pre.data);
	if (pre.len && !blank_from(&pre, 0)) {
		struct buf *dst = is_plain ? &w->plain : &w->html;
		if (dst->len && dst->data[dst->len - 1] != '\n')
			buf_putc(dst, '\n');
		buf_append(dst, pre.data, pre.len);
		*(is_plain ? &w->have_plain : &w->have_html) = 1;
	}
	buf_free(&pre);
	struct buf raw;
	buf_init(&raw);
	buf_printf(&raw, "Content-Type: multipart/mixed; boundary=\"");
	for (const char *c = token; *c; c++)
		if (*c != '"' && *c != '\\')
			buf_putc(&raw, *c);
	buf_puts(&raw, "\"\n\n");
	buf_puts(&raw, t + at);
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw.data, raw.len);
	GMimeParser *parser = g_mime_parser_new_with_stream(s);
	GMimeObject *o = g_mime_parser_construct_part(parser, w->opts);
	w->msg_depth++;
	if (o) {
		walk_object(w, o, 1);
		g_object_unref(o);
	}
	w->msg_depth--;
	g_object_unref(parser);
	g_object_unref(s);
	buf_free(&raw);
}

/* A multipart GMime found no parts in: its boundary never appears.  What
 * it holds is read as text (and split where it holds structure). */
static void walk_partless(struct walk *w, GMimeMultipart *mp)
{
	const char *pro = g_mime_multipart_get_prologue(mp);
	if (!pro || blank_from(&(struct buf){(char *)pro, strlen(pro), 0}, 0))
		return;
	mime_warn(&w->warn,
		  "a multipart whose boundary never appears; its content is read as text");
	char *u = mime_to_utf8(pro, strlen(pro), NULL, &w->warn);
	mime_crlf_to_lf(u);
	size_t at;
	char *token = w->msg_depth < MIME_MAX_DEPTH ? embedded_boundary(u, &at) : NULL;
	if (token) {
		walk_embedded(w, u, at, token, 1);
		free(token);
	} else {
		drop_boundary_lines(w, u);
		if (w->plain.len && w->plain.data[w->plain.len - 1] != '\n')
			buf_putc(&w->plain, '\n');
		buf_puts(&w->plain, u);
		w->have_plain = 1;
	}
	free(u);
}

static void walk_object(struct walk *w, GMimeObject *o, int depth)
{
	if (!o)
		return;
	/* multipart nesting is bounded by MULTIPART_MAX; messages inside
	 * messages, each parsed again when encoded, by MIME_MAX_DEPTH */
	if (w->msg_depth > MIME_MAX_DEPTH || depth > MULTIPART_MAX + MIME_MAX_DEPTH) {
		mime_warn(&w->warn, "MIME nesting deeper than %d; the rest is not read",
			  MIME_MAX_DEPTH);
		return;
	}
	if (GMIME_IS_MULTIPART(o)) {
		GMimeContentType *ct = g_mime_object_get_content_type(o);
		const char *sub = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
		walk_multipart(w, GMIME_MULTIPART(o), sub && !strcasecmp(sub, "alternative"),
			       depth);
	} else if (GMIME_IS_MESSAGE_PART(o)) {
		GMimeMessage *msg = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
		if (msg)
			walk_forward(w, msg, depth);
	} else if (GMIME_IS_PART(o)) {
		walk_leaf(w, o, depth);
	}
}

/* ---- signature images -------------------------------------------------- */

static const char *strcasestr_n(const char *hay, const char *needle)
{
	return hay ? strcasestr(hay, needle) : NULL;
}

/* Where the signature area of the HTML starts, or NULL. */
static const char *html_signature_start(const char *html)
{
	static const char *marks[] = {"signature", "-- <br", "--&nbsp;<br", ">-- <", ">--&nbsp;<"};
	const char *best = NULL;
	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
		const char *p = strcasestr_n(html, marks[i]);
		if (i == 0) {
			/* only as an attribute value inside a tag */
			while (p) {
				const char *lt = p, *gt = p;
				while (lt > html && *lt != '<' && *lt != '>')
					lt--;
				while (*gt && *gt != '>' && *gt != '<')
					gt++;
				if (*lt == '<' && *gt == '>')
					break;
				p = strcasestr(p + 1, marks[i]);
			}
		}
		if (p && (!best || p < best))
			best = p;
	}
	return best;
}

/* image001.png (Outlook), Outlook-abc.png, anything named like a logo. */
static int logo_name(const char *name)
{
	if (!name)
		return 0;
	if (!strncasecmp(name, "image", 5)) {
		const char *p = name + 5;
		int digits = 0;
		while (isdigit((unsigned char)*p)) {
			p++;
			digits++;
		}
		if (digits && *p == '.')
			return 1;
	}
	return !strncasecmp(name, "outlook-", 8) || strcasestr(name, "logo") ||
	       strcasestr(name, "signature") || strcasestr(name, "banner");
}

/* Small inline images that are only part of a signature are not content:
 * those referenced from the HTML only inside the signature area, and those
 * named like generated logo files. */
static void drop_signature_images(struct walk *w, const char *html)
{
	struct mf_message *m = w->m;
	const char *sig = NULL;
	int sig_known = 0; /* found only when an image needs it */
	size_t j = 0;
	for (size_t i = 0; i < m->n_attachments; i++) {
		struct mf_attachment *a = &m->attachments[i];
		const char *cid = i < w->cids.n ? w->cids.v[i] : "";
		int drop = 0;
		if (a->is_inline && a->size < INLINE_LOGO_MAX &&
		    !strncmp(a->content_type, "image/", 6)) {
			int refs = 0, refs_in_sig = 0;
			if (*cid && html) {
				if (!sig_known) {
					sig = html_signature_start(html);
					sig_known = 1;
				}
				char *needle = xasprintf("cid:%s", cid);
				for (const char *p = strcasestr(html, needle); p;
				     p = strcasestr(p + 1, needle)) {
					refs++;
					if (sig && p > sig)
						refs_in_sig++;
				}
				free(needle);
			}
			drop = (refs && refs == refs_in_sig) || logo_name(a->filename);
		}
		if (drop) {
			free(a->filename);
			free(a->content_type);
			free(a->data);
			continue;
		}
		m->attachments[j++] = *a;
	}
	m->n_attachments = j;
}

/* ---- the message ------------------------------------------------------- */

static int is_blank(const char *s)
{
	for (; s && *s; s++)
		if (!isspace((unsigned char)*s))
			return 0;
	return 1;
}

/* Occurrences of "multipart/" in any case, found from each '/'. */
static size_t count_multipart(const char *raw, size_t len)
{
	static const char word[] = "multipart";
	const size_t n = sizeof word - 1;
	size_t count = 0;
	for (const char *p = raw + n, *end = raw + len;
	     p < end && (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
		if (!strncasecmp(p - n, word, n))
			count++;
	return count;
}

static void fill_headers(struct mf_message *m, const struct mime_headers *h, struct buf *warn)
{
	const char *v;
	m->subject = mime_decode_header_warn(
	    mime_header_get(h, "Subject") ? mime_header_get(h, "Subject") : "", warn);
	if ((v = mime_header_get(h, "From"))) {
		struct strlist l = {0};
		char *name = NULL;
		mime_address_list(v, &l, 1, &name);
		if (l.n) {
			m->from_email = xstrdup(l.v[0]);
			m->from_name = name;
		} else {
			free(name);
			mime_mailbox_parse(v, &m->from_name, &m->from_email);
		}
		strlist_free(&l);
	}
	if ((v = mime_header_get(h, "Reply-To"))) {
		struct strlist l = {0};
		mime_address_list(v, &l, 0, NULL);
		if (l.n)
			m->reply_to = xstrdup(l.v[0]);
		strlist_free(&l);
	}
	m->message_id = mime_first_id(mime_header_get(h, "Message-ID"));
	m->in_reply_to = mime_first_id(mime_header_get(h, "In-Reply-To"));
	mime_id_list(mime_header_get(h, "References"), &m->references, REFERENCES_MAX);
	for (size_t i = 0; i < h->n; i++) {
		const char *n = h->v[i].name;
		if (!strcasecmp(n, "To"))
			mime_address_list(h->v[i].value, &m->to, 0, NULL);
		else if (!strcasecmp(n, "Cc"))
			mime_address_list(h->v[i].value, &m->cc, 0, NULL);
		else if (!strcasecmp(n, "Delivered-To") || !strcasecmp(n, "X-Original-To"))
			mime_address_list(h->v[i].value, &m->recipients_hint, 0, NULL);
	}
	m->date = mime_date_parse(mime_header_get(h, "Date"));
	if ((v = mime_header_get(h, "Authentication-Results")))
		m->auth_results = xstrdup(v);
}

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_start(void)
{
	g_mime_init();
	/* Register GMime's types and fill its tables now, not on the first
	 * message: a parse inside the sandbox then only reads memory. */
	static const char sample[] =
	    "From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
	    "Content-Type: text/plain\r\n\r\nx\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n"
	    "Subject: s\r\n\r\nx\r\n--x--\r\n";
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(sample, sizeof sample - 1);
	GMimeParser *p = g_mime_parser_new_with_stream(s);
	GMimeParserOptions *o = g_mime_parser_options_new();
	GMimeMessage *m = g_mime_parser_construct_message(p, o);
	if (m)
		g_object_unref(m);
	g_mime_parser_options_free(o);
	g_object_unref(p);
	g_object_unref(s);
}

void mime_init(void) { pthread_once(&gmime_once, gmime_start); }

size_t mime_mbox_from_len(const char *raw, size_t len)
{
	if (len < 5 || memcmp(raw, "From ", 5))
		return 0;
	const char *nl = memchr(raw, '\n', len);
	return nl ? (size_t)(nl - raw) + 1 : len;
}

/* A header name GMime accepts: printable ASCII without blanks or colons. */
static int header_name_ok(const char *n)
{
	if (!*n)
		return 0;
	for (; *n; n++)
		if ((unsigned char)*n <= 0x20 || (unsigned char)*n >= 0x7f || *n == ':')
			return 0;
	return 1;
}

/* The MIME tree of a whole message, read as one entity: the top-level
 * headers are mailfeed's own reading (mime_header.c), so GMime is not
 * asked to parse addresses and dates nobody uses. */
static GMimeObject *construct(const char *raw, size_t len, GMimeParserOptions *opts)
{
	GMimeStream *stream = g_mime_stream_mem_new_with_buffer(raw, len);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	/* parts are windows on the message, not copies of it */
	g_mime_parser_set_persist_stream(parser, TRUE);
	GMimeObject *top = g_mime_parser_construct_part(parser, opts);
	g_object_unref(parser);
	g_object_unref(stream);
	return top;
}

static void choose_text(struct walk *w)
{
	struct mf_message *m = w->m;
	struct buf text;
	buf_init(&text);
	if (w->have_plain && !is_blank(w->plain.data)) {
		m->part = xstrdup("text/plain");
		buf_puts(&text, w->plain.data);
	} else if (w->have_html) {
		m->part = xstrdup("text/html");
		char *t = html_to_text(w->html.data, w->html.len);
		buf_puts(&text, t);
		free(t);
	} else {
		m->part = xstrdup(w->have_plain ? "text/plain" : "none");
	}
	m->full_text = buf_steal(&text);
}

struct mf_message *mime_parse_ex(const char *raw, size_t len, size_t max_attachment, char *err,
				 size_t errlen)
{
	mime_init();
	if (count_multipart(raw, len) > MULTIPART_MAX) {
		snprintf(err, errlen, "unparseable: more than %d multipart parts", MULTIPART_MAX);
		return NULL;
	}
	struct walk w;
	memset(&w, 0, sizeof w);
	buf_init(&w.warn);
	size_t skip = mime_mbox_from_len(raw, len);
	if (skip)
		mime_warn(&w.warn, "mbox \"From \" line before the headers; skipped");
	raw += skip;
	len -= skip;
	w.opts = g_mime_parser_options_new();
	g_mime_parser_options_set_warning_callback(w.opts, gmime_warning, &w);
	struct mime_headers h;
	mime_headers_parse(raw, len, &h, &w.warn);
	GMimeObject *msg = construct(raw, len, w.opts);
	if (!msg) {
		/* GMime gives up on a line in the header block that is not a
		 * header; rebuilt from what our own splitter kept. */
		struct buf fixed;
		buf_init(&fixed);
		for (size_t i = 0; i < h.n; i++)
			if (header_name_ok(h.v[i].name))
				buf_printf(&fixed, "%s: %s\n", h.v[i].name, h.v[i].value);
		buf_putc(&fixed, '\n');
		size_t body = h.n ? h.body : 0;
		buf_append(&fixed, raw + body, len - body);
		msg = construct(fixed.data, fixed.len, w.opts);
		buf_free(&fixed);
	}
	if (!msg) {
		g_mime_parser_options_free(w.opts);
		mime_headers_free(&h);
		buf_free(&w.warn);
		snprintf(err, errlen, "unparseable: not a MIME message");
		return NULL;
	}
	w.m = message_new();
	w.max_att = max_attachment;
	buf_init(&w.plain);
	buf_init(&w.html);
	buf_init(&w.forwards);
	struct mf_message *m = w.m;
	fill_headers(m, &h, &w.warn);
	collect_bounds(msg, &w.bounds, 0);
	scan_bounds(raw, len, &w.bounds);
	walk_object(&w, msg, 1);
	g_object_unref(msg);
	g_mime_parser_options_free(w.opts);

	choose_text(&w);
	drop_signature_images(&w, w.have_html ? w.html.data : NULL);
	strlist_free(&w.cids);
	strlist_free(&w.bounds);
	if (w.forwards.len)
		m->forwarded = buf_steal(&w.forwards);
	/* the text a feed shows is convert_message's (convert.c) */
	m->text = xstrdup("");
	m->removed = xstrdup("");
	facts_gather(m, &h);
	if (w.warn.len)
		m->warnings = buf_steal(&w.warn);
	mime_headers_free(&h);
	buf_free(&w.plain);
	buf_free(&w.html);
	buf_free(&w.forwards);
	buf_free(&w.warn);
	return m;
}

struct mf_message *mime_parse(const char *raw, size_t len, char *err, size_t errlen)
{
	return mime_parse_ex(raw, len, 0, err, errlen);
}
