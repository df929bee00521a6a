/* mime_props.h — properties every parsed message must have, whatever the
 * input: checked over every corpus (test_mime_corpus.c) and on every fuzz
 * input (tests/fuzz/fuzz_mime.c).
 *
 * - lost text: the message has a text line a person wrote (found by a
 *   scan of the raw bytes that knows nothing of the parser), yet the text
 *   shown is empty; or the chosen part has a line that is not a quote and
 *   cleaning left nothing;
 * - raw MIME: a line of the message's own structure (`--boundary`,
 *   `Content-Type:`, `Content-Transfer-Encoding:`) appears in the text;
 * - the text, full text, subject and sender name are valid UTF-8 without
 *   NUL. */
#ifndef MIME_PROPS_H
#define MIME_PROPS_H

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/message.h"
#include "mailfeed/util.h"

#define PROP_LOST_TEXT 1
#define PROP_RAW_MIME 2
#define PROP_BAD_UTF8 4

/* Three letters (any 8-bit byte counts as one) outside HTML tags. */
static int props_letters(const char *s, size_t n)
{
	int k = 0, tag = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '<')
			tag = 1;
		else if (c == '>')
			tag = 0;
		else if (!tag && (isalpha(c) || c >= 0x80) && ++k >= 3)
			return 1;
	}
	return 0;
}

static int props_line_is(const char *l, size_t n, const char *word)
{
	size_t w = strlen(word);
	return n >= w && !strncasecmp(l, word, w);
}

/* Whether the raw message has a text/plain part (or no
 * Content-Type at all) that is not an attachment, with a line of letters
 * that is not a quote.  A plain scan: header blocks start the message and
 * follow every line that begins with "--". */
static int props_raw_has_text(const char *raw, size_t len)
{
	const char *p = raw, *end = raw + len;
	int in_headers = 1, is_text = 1, attach = 0, encoded = 0, top = 1, seen_ct = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		size_t n = (size_t)(e - p);
		if (n && p[n - 1] == '\r')
			n--;
		if (top && p == raw && n >= 5 && !strncmp(p, "From ", 5)) {
			p = e + 1;
			continue;
		}
		if (in_headers) {
			if (n == 0) {
				in_headers = 0;
				if (top && !seen_ct)
					is_text = 1;
				top = 0;
			} else if (props_line_is(p, n, "Content-Type:")) {
				seen_ct = 1;
				const char *v = p + 13;
				while (v < p + n && isspace((unsigned char)*v))
					v++;
				size_t vn = (size_t)(p + n - v);
				/* HTML may well hold no visible text: left out */
				is_text = props_line_is(v, vn, "text/plain") ||
					  (vn >= 4 && !strncasecmp(v, "text", 4) &&
					   (vn == 4 || v[4] == ';' || isspace((unsigned char)v[4])));
			} else if (props_line_is(p, n, "Content-Disposition:")) {
				attach = memmem(p, n, "attachment", 10) != NULL;
			} else if (props_line_is(p, n, "Content-Transfer-Encoding:")) {
				encoded = memmem(p, n, "base64", 6) || memmem(p, n, "BASE64", 6) ||
					  memmem(p, n, "Base64", 6);
			}
		} else if (n >= 2 && p[0] == '-' && p[1] == '-') {
			in_headers = 1;
			is_text = 0;
			attach = 0;
			encoded = 0;
			seen_ct = 0;
		} else if (is_text && !attach && !encoded && n && p[0] != '>' &&
			   props_letters(p, n)) {
			return 1;
		}
		p = e + 1;
	}
	return 0;
}

static void props_boundaries(const char *raw, size_t len, struct strlist *out)
{
	const char *p = raw, *end = raw + len;
	while (p < end && (p = memmem(p, (size_t)(end - p), "oundary", 7)) != NULL) {
		p += 7;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p >= end || *p != '=')
			continue;
		p++;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *s = p;
		if (p < end && *p == '"') {
			s = ++p;
			while (p < end && *p != '"' && *p != '\n')
				p++;
		} else {
			while (p < end && *p != ';' && !isspace((unsigned char)*p))
				p++;
		}
		if (p > s && (size_t)(p - s) < 200) {
			char *b = xstrndup(s, (size_t)(p - s));
			strlist_add(out, b);
			free(b);
		}
	}
}

/* A text line is raw MIME structure: a boundary line of bounds, or (when
 * headers) a Content-Type / Content-Transfer-Encoding line. */
static int props_raw_lines(const char *text, const struct strlist *bounds, int headers);

static int props_raw_mime(const char *text, const struct strlist *bounds)
{
	return props_raw_lines(text, bounds, 1);
}

static int props_raw_lines(const char *text, const struct strlist *bounds, int headers)
{
	const char *p = text;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
			n--;
		if (headers && (props_line_is(p, n, "Content-Type:") ||
				props_line_is(p, n, "Content-Transfer-Encoding:")))
			return 1;
		if (n > 2 && p[0] == '-' && p[1] == '-')
			for (size_t i = 0; i < bounds->n; i++) {
				size_t b = strlen(bounds->v[i]);
				if ((n == b + 2 || (n == b + 4 && !strncmp(p + 2 + b, "--", 2))) &&
				    !strncmp(p + 2, bounds->v[i], b))
					return 1;
			}
		p = nl ? nl + 1 : NULL;
	}
	return 0;
}

static int props_has_own_line(const char *t)
{
	const char *p = t;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		const char *s = p;
		while (s < p + n && isspace((unsigned char)*s))
			s++;
		if (s < p + n && *s != '>' && props_letters(s, (size_t)(p + n - s)))
			return 1;
		p = nl ? nl + 1 : NULL;
	}
	return 0;
}

static int props_utf8(const char *s)
{
	return !s || utf8_valid(s, strlen(s));
}

/* PROP_* bits of what is wrong with m, parsed from raw. */
static int props_check(const char *raw, size_t len, const struct mf_message *m)
{
	int bad = 0;
	const char *text = m->text ? m->text : "";
	int empty = !props_has_own_line(text) && !strstr(text, "Forwarded message");
	if (empty && (props_raw_has_text(raw, len) || props_has_own_line(m->full_text)))
		bad |= PROP_LOST_TEXT;
	struct strlist b = {0};
	props_boundaries(raw, len, &b);
	if (props_raw_mime(text, &b))
		bad |= PROP_RAW_MIME;
	strlist_free(&b);
	if (!props_utf8(m->text) || !props_utf8(m->full_text) || !props_utf8(m->subject) ||
	    !props_utf8(m->from_name))
		bad |= PROP_BAD_UTF8;
	return bad;
}

#endif
