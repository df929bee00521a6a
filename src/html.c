/* html.c — HTML mail bodies to readable plain text, with gumbo.
 *
 * A walk over the parsed tree writes text line by line: blocks and <br>
 * break lines, lists get "- " / "1. " markers, links keep their target as
 * "text (url)", tables become one line per row.  Containers that mail
 * clients use for quoted history are written as "> " lines, which is what
 * the reply cleaner (clean.c) recognises and removes from the new text. */
#include <gumbo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/html.h"
#include "mailfeed/util.h"

/* Deeper nesting is flattened: its text is kept, its structure is not. */
#define HTML_MAX_DEPTH 400
#define LIST_MAX 32

struct render {
	struct buf out;
	int quote;	/* "> " depth */
	int pending_nl; /* line breaks owed before the next text */
	int space;	/* a collapsed space is owed */
	int line_start; /* nothing written on the current line yet */
	int pre;	/* inside <pre>: keep whitespace */
	int lists;	/* list nesting */
	int list_ordered[LIST_MAX];
	int list_count[LIST_MAX];
	int cell;	 /* cells written in the current table row */
	int full;	 /* output cap reached */
	int quote_fresh; /* a quote began and holds no text yet */
};

static void put(struct render *r, const char *s, size_t n)
{
	if (r->full)
		return;
	if (r->out.len + n > HTML_TEXT_MAX) {
		r->full = 1;
		return;
	}
	buf_append(&r->out, s, n);
}

static void quote_prefix(struct render *r, int blank)
{
	for (int i = 0; i < r->quote; i++)
		put(r, blank && i == r->quote - 1 ? ">" : "> ", blank && i == r->quote - 1 ? 1 : 2);
}

/* Writes owed line breaks; inside quotes blank lines keep their ">". */
static void flush_breaks(struct render *r)
{
	if (r->out.len == 0) {
		r->pending_nl = 0;
	}
	for (int i = 0; i < r->pending_nl; i++) {
		if (i > 0)
			quote_prefix(r, 1);
		put(r, "\n", 1);
		r->line_start = 1;
	}
	r->pending_nl = 0;
}

static void text_out(struct render *r, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!r->pre && (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f')) {
			if (!r->line_start || r->pending_nl == 0)
				r->space = 1;
			continue;
		}
		if (r->pre && c == '\n') {
			r->pending_nl++;
			r->space = 0;
			continue;
		}
		if (r->pre && c == '\r')
			continue;
		if (r->pending_nl)
			flush_breaks(r);
		if (r->line_start) {
			quote_prefix(r, 0);
			r->line_start = 0;
			r->space = 0;
		} else if (r->space) {
			put(r, " ", 1);
		}
		r->space = 0;
		r->quote_fresh = 0;
		put(r, (const char *)&s[i], 1);
	}
}

/* Asks for at least n line breaks before the next text (1 = new line,
 * 2 = blank line). */
static void block_break(struct render *r, int n)
{
	if (r->out.len == 0 && !r->pending_nl)
		return;
	if (r->line_start && r->pending_nl == 0)
		n--;
	if (r->quote_fresh && n > 1)
		n = 1;
	if (r->pending_nl < n)
		r->pending_nl = n;
	r->space = 0;
}

static const char *attr(const GumboElement *e, const char *name)
{
	const GumboAttribute *a = gumbo_get_attribute(&e->attributes, name);
	return a ? a->value : NULL;
}

static int has_class(const GumboElement *e, const char *cls)
{
	const char *c = attr(e, "class");
	size_t n = strlen(cls);
	while (c && *c) {
		while (*c == ' ' || *c == '\t')
			c++;
		size_t len = strcspn(c, " \t");
		if (len == n && strncasecmp(c, cls, n) == 0)
			return 1;
		c += len;
	}
	return 0;
}

static int id_is(const GumboElement *e, const char *id)
{
	const char *v = attr(e, "id");
	return v && strcasecmp(v, id) == 0;
}

/* Containers that hold quoted history only. */
static int is_quote_container(const GumboElement *e)
{
	return e->tag == GUMBO_TAG_BLOCKQUOTE || has_class(e, "gmail_quote") ||
	       has_class(e, "yahoo_quoted") || has_class(e, "moz-cite-prefix") ||
	       id_is(e, "OLK_SRC_BODY_SECTION");
}

/* Markers after which everything in the document is quoted history
 * (Outlook on the web puts the header block, then the old message). */
static int starts_quoted_rest(const GumboElement *e)
{
	return id_is(e, "divRplyFwdMsg") || id_is(e, "appendonsend");
}

static int is_paragraph(GumboTag t)
{
	switch (t) {
	case GUMBO_TAG_P:
	case GUMBO_TAG_H1:
	case GUMBO_TAG_H2:
	case GUMBO_TAG_H3:
	case GUMBO_TAG_H4:
	case GUMBO_TAG_H5:
	case GUMBO_TAG_H6:
	case GUMBO_TAG_PRE:
	case GUMBO_TAG_TABLE:
	case GUMBO_TAG_UL:
	case GUMBO_TAG_OL:
	case GUMBO_TAG_DL:
		return 1;
	default:
		return 0;
	}
}

static int is_line_block(GumboTag t)
{
	switch (t) {
	case GUMBO_TAG_DIV:
	case GUMBO_TAG_LI:
	case GUMBO_TAG_TR:
	case GUMBO_TAG_SECTION:
	case GUMBO_TAG_ARTICLE:
	case GUMBO_TAG_HEADER:
	case GUMBO_TAG_FOOTER:
	case GUMBO_TAG_ADDRESS:
	case GUMBO_TAG_DT:
	case GUMBO_TAG_DD:
	case GUMBO_TAG_CENTER:
	case GUMBO_TAG_FORM:
	case GUMBO_TAG_BLOCKQUOTE:
	case GUMBO_TAG_CAPTION:
	case GUMBO_TAG_FIGURE:
	case GUMBO_TAG_MAIN:
	case GUMBO_TAG_NAV:
	case GUMBO_TAG_ASIDE:
		return 1;
	default:
		return 0;
	}
}

static int is_skipped(GumboTag t)
{
	return t == GUMBO_TAG_SCRIPT || t == GUMBO_TAG_STYLE || t == GUMBO_TAG_HEAD ||
	       t == GUMBO_TAG_TITLE || t == GUMBO_TAG_NOSCRIPT || t == GUMBO_TAG_TEMPLATE;
}

static void walk(struct render *r, const GumboNode *n, int depth);

static void walk_children(struct render *r, const GumboElement *e, int depth)
{
	for (unsigned int i = 0; i < e->children.length; i++)
		walk(r, e->children.data[i], depth + 1);
}

/* "mailto:a@b" shown as "a@b" equals its text; so does a trailing "/". */
static int link_matches_text(const char *href, const char *text, size_t tlen)
{
	if (strncasecmp(href, "mailto:", 7) == 0)
		href += 7;
	size_t hlen = strlen(href);
	while (hlen && href[hlen - 1] == '/')
		hlen--;
	while (tlen && (text[tlen - 1] == '/' || text[tlen - 1] == ' '))
		tlen--;
	while (tlen && *text == ' ') {
		text++;
		tlen--;
	}
	if (hlen == tlen && strncasecmp(href, text, hlen) == 0)
		return 1;
	/* "https://example.org" shown as "example.org" */
	const char *p = strstr(href, "://");
	if (p) {
		p += 3;
		size_t plen = hlen - (size_t)(p - href);
		if (plen == tlen && strncasecmp(p, text, plen) == 0)
			return 1;
	}
	return 0;
}

static void walk_link(struct render *r, const GumboElement *e, int depth)
{
	const char *href = attr(e, "href");
	size_t start = r->out.len;
	walk_children(r, e, depth);
	if (!href || !*href || href[0] == '#' || strncasecmp(href, "javascript:", 11) == 0 ||
	    strncasecmp(href, "data:", 5) == 0 || strncasecmp(href, "cid:", 4) == 0)
		return;
	size_t tlen = r->out.len - start;
	if (tlen && link_matches_text(href, r->out.data + start, tlen))
		return;
	char *clean = xstrdup(href);
	for (char *c = clean; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';
	if (tlen) {
		text_out(r, " (", 2);
		r->space = 0;
		text_out(r, clean, strlen(clean));
		text_out(r, ")", 1);
	} else {
		text_out(r, clean, strlen(clean));
	}
	free(clean);
}

static void walk_list_item(struct render *r, const GumboElement *e, int depth)
{
	block_break(r, 1);
	char mark[32] = "- ";
	int level = r->lists > 0 ? r->lists : 1;
	if (r->lists > 0 && r->lists <= LIST_MAX && r->list_ordered[r->lists - 1])
		snprintf(mark, sizeof mark, "%d. ", ++r->list_count[r->lists - 1]);
	for (int i = 1; i < level; i++)
		text_out(r, "\xc2\xa0\xc2\xa0", 4);
	text_out(r, mark, strlen(mark));
	walk_children(r, e, depth);
	block_break(r, 1);
}

/* The elements with a rendering of their own: line breaks, rules, images
 * (their alt text), links, list items and table cells.  Returns 1 when e
 * was one of them. */
static int walk_special(struct render *r, const GumboElement *e, int depth)
{
	switch (e->tag) {
	case GUMBO_TAG_BR:
		r->pending_nl++;
		if (r->pending_nl > 2 && r->line_start)
			r->pending_nl = 2;
		r->space = 0;
		if (r->out.len == 0)
			r->pending_nl = 0;
		return 1;
	case GUMBO_TAG_HR:
		block_break(r, 1);
		text_out(r, "---", 3);
		block_break(r, 1);
		return 1;
	case GUMBO_TAG_IMG: {
		const char *alt = attr(e, "alt");
		if (alt && *alt) {
			text_out(r, " ", 1);
			text_out(r, alt, strlen(alt));
			text_out(r, " ", 1);
		}
		return 1;
	}
	case GUMBO_TAG_A:
		walk_link(r, e, depth);
		return 1;
	case GUMBO_TAG_LI:
		walk_list_item(r, e, depth);
		return 1;
	case GUMBO_TAG_TD:
	case GUMBO_TAG_TH:
		if (r->cell++ > 0)
			text_out(r, " | ", 3);
		walk_children(r, e, depth);
		return 1;
	default:
		return 0;
	}
}

/* Any other element: its children, between the breaks of a paragraph or a
 * line block, one quote level deeper when it is a quote container, and in
 * the list, row or preformatted state it opens. */
static void walk_block(struct render *r, const GumboElement *e, int depth, int quoted)
{
	GumboTag t = e->tag;
	int para = is_paragraph(t);
	int line = is_line_block(t) || quoted;
	if (para)
		block_break(r, r->lists ? 1 : 2);
	else if (line)
		block_break(r, 1);
	if (quoted) {
		r->quote++;
		r->quote_fresh = 1;
		r->pending_nl = r->pending_nl ? 1 : 0;
	}
	int saved_cell = r->cell;
	if (t == GUMBO_TAG_TR)
		r->cell = 0;
	int list = t == GUMBO_TAG_UL || t == GUMBO_TAG_OL;
	if (list) {
		if (r->lists < LIST_MAX) {
			r->list_ordered[r->lists] = t == GUMBO_TAG_OL;
			r->list_count[r->lists] = 0;
		}
		r->lists++;
	}
	if (t == GUMBO_TAG_PRE)
		r->pre++;
	walk_children(r, e, depth);
	if (t == GUMBO_TAG_PRE)
		r->pre--;
	if (list)
		r->lists--;
	if (t == GUMBO_TAG_TR)
		r->cell = saved_cell;
	if (quoted) {
		block_break(r, 1);
		if (r->pending_nl > 1)
			r->pending_nl = 1;
		r->quote--;
	}
	if (para)
		block_break(r, r->lists || r->quote ? 1 : 2);
	else if (line)
		block_break(r, 1);
}

static void walk_element(struct render *r, const GumboElement *e, int depth)
{
	if (is_skipped(e->tag))
		return;
	if (starts_quoted_rest(e)) {
		/* From here to the end of the document: quoted, never closed. */
		block_break(r, 1);
		r->quote++;
		r->quote_fresh = 1;
		walk_children(r, e, depth);
		block_break(r, 1);
		return;
	}
	int quoted = is_quote_container(e);
	if (!walk_special(r, e, depth))
		walk_block(r, e, depth, quoted);
}

static void walk(struct render *r, const GumboNode *n, int depth)
{
	if (r->full)
		return;
	switch (n->type) {
	case GUMBO_NODE_DOCUMENT:
		for (unsigned int i = 0; i < n->v.document.children.length; i++)
			walk(r, n->v.document.children.data[i], depth + 1);
		break;
	case GUMBO_NODE_ELEMENT:
	case GUMBO_NODE_TEMPLATE:
		if (depth > HTML_MAX_DEPTH)
			walk_children(r, &n->v.element, depth);
		else
			walk_element(r, &n->v.element, depth);
		break;
	case GUMBO_NODE_TEXT:
	case GUMBO_NODE_WHITESPACE:
	case GUMBO_NODE_CDATA:
		text_out(r, n->v.text.text, strlen(n->v.text.text));
		break;
	default:
		break;
	}
}

/* Trailing spaces on each line and blank lines at both ends go; non-breaking
 * spaces used for layout become plain spaces. */
static char *tidy(const char *s)
{
	struct buf b;
	buf_init(&b);
	const char *p = s;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		struct buf line;
		buf_init(&line);
		for (size_t i = 0; i < len; i++) {
			if ((unsigned char)p[i] == 0xc2 && i + 1 < len &&
			    (unsigned char)p[i + 1] == 0xa0) {
				buf_putc(&line, ' ');
				i++;
			} else {
				buf_putc(&line, p[i]);
			}
		}
		while (line.len && line.data[line.len - 1] == ' ')
			line.data[--line.len] = 0;
		if (line.len || b.len) {
			buf_append(&b, line.data ? line.data : "", line.len);
			buf_putc(&b, '\n');
		}
		buf_free(&line);
		p += len;
		if (*p == '\n')
			p++;
	}
	while (b.len && b.data[b.len - 1] == '\n')
		b.data[--b.len] = 0;
	if (b.len) {
		buf_putc(&b, '\n');
	}
	char *out = buf_steal(&b);
	return out ? out : xstrdup("");
}

char *html_to_text(const char *html, size_t len)
{
	struct render r;
	memset(&r, 0, sizeof r);
	buf_init(&r.out);
	r.line_start = 1;
	GumboOutput *doc = gumbo_parse_with_options(&kGumboDefaultOptions, html, len);
	if (doc) {
		walk(&r, doc->document, 0);
		gumbo_destroy_output(&kGumboDefaultOptions, doc);
	}
	char *raw = buf_steal(&r.out);
	char *out = tidy(raw ? raw : "");
	free(raw);
	return out;
}
