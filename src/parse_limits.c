/* parse_limits.c — the cost of a message to the parser, bounded before the
 * parse worker sees it (see parse_limits.h).
 *
 * One pass over the lines.  A Content-Type field (at the start of a line,
 * wherever it is: the check errs on the side of counting) of type
 * multipart or message opens a container; a multipart one remembers its
 * boundary.  A delimiter line ("--" boundary, optional "--", optional
 * white space) of an open multipart closes every container opened inside
 * it, and a closing delimiter closes the multipart itself.  The nesting is
 * the number of containers open at once.  Both the nesting and the number
 * of containers are bounded, so that a delimiter the parser would read
 * differently cannot hide depth: the count alone bounds it. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/parse_limits.h"

/* A container: its boundary (blen 0 for a message part, or a multipart
 * without one). */
struct frame {
	const char *b;
	size_t blen;
};

struct reader {
	const char *p, *end;
};

/* Is the line end at p followed by a folded continuation?  Returns the
 * continuation's start, else NULL. */
static const char *fold_at(const char *p, const char *end)
{
	if (*p == '\r')
		p++;
	if (p < end && *p == '\n')
		p++;
	return p < end && (*p == ' ' || *p == '\t') ? p : NULL;
}

/* Skips white space, folds and (nested) comments; stops at anything else
 * or where the field ends (a line end not followed by white space). */
static void skip_cfws(struct reader *r)
{
	int depth = 0;
	while (r->p < r->end) {
		char c = *r->p;
		if (c == '\r' || c == '\n') {
			const char *next = fold_at(r->p, r->end);
			if (!next)
				return;
			r->p = next;
		} else if (depth > 0) {
			if (c == '\\' && r->p + 1 < r->end && r->p[1] != '\r' && r->p[1] != '\n')
				r->p++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			r->p++;
		} else if (c == ' ' || c == '\t') {
			r->p++;
		} else if (c == '(') {
			depth = 1;
			r->p++;
		} else {
			return;
		}
	}
}

/* RFC 2045 token characters. */
static int token_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

static size_t read_token(struct reader *r, const char **start)
{
	*start = r->p;
	while (r->p < r->end && token_char((unsigned char)*r->p))
		r->p++;
	return (size_t)(r->p - *start);
}

/* A parameter value: a quoted string (whose inside is returned, escapes
 * and all) or a token. */
static size_t read_value(struct reader *r, const char **start)
{
	if (r->p >= r->end || *r->p != '"')
		return read_token(r, start);
	*start = ++r->p;
	while (r->p < r->end && *r->p != '"') {
		if (*r->p == '\\' && r->p + 1 < r->end)
			r->p++;
		else if (*r->p == '\r' || *r->p == '\n') {
			const char *next = fold_at(r->p, r->end);
			if (!next)
				break;
			r->p = next - 1;
		}
		r->p++;
	}
	size_t n = (size_t)(r->p - *start);
	if (r->p < r->end && *r->p == '"')
		r->p++;
	return n;
}

enum kind { OTHER, MULTIPART, MESSAGE };

/* Reads a Content-Type field starting at the line p: its kind and, for a
 * multipart, its boundary (NULL when it has none). */
static enum kind content_type(const char *p, const char *end, const char **b, size_t *blen)
{
	static const char name[] = "content-type";
	const size_t n = sizeof name - 1;
	*b = NULL;
	*blen = 0;
	if ((size_t)(end - p) <= n || strncasecmp(p, name, n) != 0)
		return OTHER;
	struct reader r = {p + n, end};
	skip_cfws(&r);
	if (r.p >= r.end || *r.p != ':')
		return OTHER;
	r.p++;
	skip_cfws(&r);
	const char *t;
	size_t tlen = read_token(&r, &t);
	enum kind k = tlen == 9 && !strncasecmp(t, "multipart", 9) ? MULTIPART
		      : tlen == 7 && !strncasecmp(t, "message", 7) ? MESSAGE
								   : OTHER;
	if (k != MULTIPART)
		return k;
	/* the subtype does not matter; the parameters follow it */
	skip_cfws(&r);
	if (r.p < r.end && *r.p == '/') {
		r.p++;
		skip_cfws(&r);
		read_token(&r, &t);
	}
	for (;;) {
		skip_cfws(&r);
		if (r.p >= r.end || *r.p != ';')
			return k;
		r.p++;
		skip_cfws(&r);
		const char *a, *v;
		size_t alen = read_token(&r, &a);
		skip_cfws(&r);
		if (r.p >= r.end || *r.p != '=')
			return k;
		r.p++;
		skip_cfws(&r);
		size_t vlen = read_value(&r, &v);
		if (alen == 8 && !strncasecmp(a, "boundary", 8) && vlen > 0 && !*b) {
			*b = v;
			*blen = vlen;
		}
	}
}

/* The line [p, eol) is a delimiter of f: 0 no, 1 a part starts, 2 the
 * closing one. */
static int delimiter(const struct frame *f, const char *p, const char *eol)
{
	if (!f->blen || (size_t)(eol - p) < 2 + f->blen || memcmp(p + 2, f->b, f->blen) != 0)
		return 0;
	const char *q = p + 2 + f->blen;
	int closing = eol - q >= 2 && q[0] == '-' && q[1] == '-';
	if (closing)
		q += 2;
	while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r'))
		q++;
	return q == eol ? 1 + closing : 0;
}

int parse_limits_check(const char *raw, size_t len, size_t max_bytes, struct parse_cost *cost,
		       char *reason, size_t reasonlen)
{
	struct frame stack[PARSE_MAX_DEPTH + 1];
	size_t depth = 0;
	struct parse_cost c = {0, 0, 0};
	int rc = 0;
	if (max_bytes && len > max_bytes) {
		snprintf(reason, reasonlen, "too large: %zu bytes, more than max_message_size",
			 len);
		rc = -1;
	}
	const char *end = raw + len;
	for (const char *p = raw; rc == 0 && p < end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		if ((*p == 'c' || *p == 'C')) {
			const char *b;
			size_t blen;
			enum kind k = content_type(p, end, &b, &blen);
			if (k != OTHER) {
				if (++c.containers > PARSE_MAX_CONTAINERS) {
					snprintf(
					    reason, reasonlen,
					    "unparseable: more than %d multipart or message parts",
					    PARSE_MAX_CONTAINERS);
					rc = -1;
				} else if (depth == PARSE_MAX_DEPTH) {
					snprintf(reason, reasonlen,
						 "unparseable: MIME nesting deeper than %d levels",
						 PARSE_MAX_DEPTH);
					rc = -1;
				} else {
					stack[depth++] =
					    (struct frame){b, k == MULTIPART ? blen : 0};
					if (depth > c.depth)
						c.depth = depth;
				}
			}
		} else if (eol - p >= 2 && p[0] == '-' && p[1] == '-') {
			for (size_t i = depth; i-- > 0;) {
				int d = delimiter(&stack[i], p, eol);
				if (!d)
					continue;
				depth = d == 2 ? i : i + 1;
				if (d == 1 && ++c.parts > PARSE_MAX_PARTS) {
					snprintf(reason, reasonlen,
						 "unparseable: more than %d parts",
						 PARSE_MAX_PARTS);
					rc = -1;
				}
				break;
			}
		}
		p = eol < end ? eol + 1 : end;
	}
	if (cost)
		*cost = c;
	return rc;
}
