/* mime_header.c — header fields of a message or a MIME part.
 *
 * The tolerant header splitter (junk in one header never loses the
 * others), RFC 2047 encoded words, RFC 2231 parameters, addresses,
 * message ids and dates.  Runs inside the sandboxed parse worker. */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <libetpan/libetpan.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mailfeed/mime.h"
#include "mime_internal.h"

#define HEADER_VALUE_MAX (64 * 1024)
#define HEADERS_MAX 2000

/* ---- RFC 2047 ---------------------------------------------------------- */

int mime_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static void b64_decode(const char *s, size_t n, struct buf *out)
{
	unsigned int acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i], v;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+' || c == '-')
			v = 62;
		else if (c == '/' || c == '_')
			v = 63;
		else
			continue;
		acc = (acc << 6) | (unsigned int)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_putc(out, (char)((acc >> bits) & 0xff));
		}
	}
}

static void q_decode(const char *s, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '_') {
			buf_putc(out, ' ');
		} else if (s[i] == '=' && i + 2 < n && mime_hexval((unsigned char)s[i + 1]) >= 0 &&
			   mime_hexval((unsigned char)s[i + 2]) >= 0) {
			buf_putc(out, (char)(mime_hexval((unsigned char)s[i + 1]) * 16 +
					     mime_hexval((unsigned char)s[i + 2])));
			i += 2;
		} else if (!isspace((unsigned char)s[i])) {
			/* whitespace here is left over from bad folding */
			buf_putc(out, s[i]);
		}
	}
}

/* Recognises "=?cs?e?text?=" at s; fills the pieces and returns its length,
 * or 0.  Whitespace inside the text (a badly folded word) is tolerated. */
static size_t encoded_word(const char *s, const char **cs, size_t *cslen, char *enc,
			   const char **text, size_t *textlen)
{
	if (s[0] != '=' || s[1] != '?')
		return 0;
	const char *p = s + 2;
	const char *q = strchr(p, '?');
	if (!q || q == p || q - p > 60)
		return 0;
	if (!q[1] || q[2] != '?')
		return 0;
	char e = (char)toupper((unsigned char)q[1]);
	if (e != 'B' && e != 'Q')
		return 0;
	const char *t = q + 3;
	const char *end = strstr(t, "?=");
	if (!end || end - t > 4000)
		return 0;
	for (const char *c = p; c < q; c++)
		if (isspace((unsigned char)*c))
			return 0;
	*cs = p;
	*cslen = (size_t)(q - p);
	*enc = e;
	*text = t;
	*textlen = (size_t)(end - t);
	return (size_t)(end + 2 - s);
}

static void flush_run(struct buf *out, struct buf *run, char *runcs, struct buf *warn)
{
	if (run->len) {
		char *u = mime_to_utf8(run->data, run->len, runcs[0] ? runcs : "utf-8", warn);
		buf_puts(out, u);
		free(u);
	}
	buf_reset(run);
	runcs[0] = 0;
}

char *mime_decode_header_warn(const char *raw, struct buf *warn)
{
	struct buf out, run, lit;
	char runcs[64] = "";
	buf_init(&out);
	buf_init(&run);
	buf_init(&lit);
	const char *p = raw;
	int after_word = 0;
	while (*p) {
		const char *cs, *text;
		size_t cslen, textlen;
		char enc;
		size_t n = encoded_word(p, &cs, &cslen, &enc, &text, &textlen);
		if (n) {
			char wcs[64];
			snprintf(wcs, sizeof wcs, "%.*s", (int)cslen, cs);
			/* Whitespace between two encoded words is not text. */
			int only_ws = 1;
			for (size_t i = 0; i < lit.len; i++)
				if (!isspace((unsigned char)lit.data[i]))
					only_ws = 0;
			if (!(after_word && only_ws)) {
				flush_run(&out, &run, runcs, warn);
				if (lit.len) {
					char *u = mime_to_utf8(lit.data, lit.len, NULL, warn);
					buf_puts(&out, u);
					free(u);
				}
			}
			buf_reset(&lit);
			if (strcasecmp(wcs, runcs) != 0)
				flush_run(&out, &run, runcs, warn);
			snprintf(runcs, sizeof runcs, "%s", wcs);
			if (enc == 'B')
				b64_decode(text, textlen, &run);
			else
				q_decode(text, textlen, &run);
			p += n;
			after_word = 1;
			continue;
		}
		buf_putc(&lit, *p++);
		if (!isspace((unsigned char)p[-1]) && lit.len) {
			/* Real text ends the run of joined words. */
			int only_ws = 1;
			for (size_t i = 0; i < lit.len; i++)
				if (!isspace((unsigned char)lit.data[i]))
					only_ws = 0;
			if (!only_ws)
				after_word = 0;
		}
		if (!after_word && run.len)
			flush_run(&out, &run, runcs, warn);
	}
	flush_run(&out, &run, runcs, warn);
	if (lit.len) {
		char *u = mime_to_utf8(lit.data, lit.len, NULL, warn);
		buf_puts(&out, u);
		free(u);
	}
	buf_free(&run);
	buf_free(&lit);
	/* No control characters (CR/LF above all) survive into a header value. */
	for (size_t i = 0; i < out.len; i++)
		if ((unsigned char)out.data[i] < 0x20 || out.data[i] == 0x7f)
			out.data[i] = ' ';
	char *s = buf_steal(&out);
	char *t = str_trim(s);
	memmove(s, t, strlen(t) + 1);
	return s;
}

char *mime_decode_header(const char *raw) { return mime_decode_header_warn(raw ? raw : "", NULL); }

/* ---- RFC 2231 parameters ----------------------------------------------- */

/* Value of a parameter `name` given as name/value pairs, with RFC 2231
 * continuations and charsets, else the plain parameter (RFC 2047 decoded,
 * as many clients do in violation of the standard). */
char *mime_param_decode(const struct mime_param *pv, size_t n, const char *name)
{
	size_t nlen = strlen(name);
	struct buf raw;
	char charset[64] = "";
	int found = 0;
	buf_init(&raw);
	for (int seq = -1; seq < 1000; seq++) {
		int got = 0;
		for (size_t i = 0; i < n; i++) {
			const char *pn = pv[i].name;
			if (strncasecmp(pn, name, nlen) != 0 || pn[nlen] != '*')
				continue;
			const char *rest = pn + nlen + 1;
			int idx = -1, enc = 0;
			if (*rest == 0) {
				enc = 1; /* name*=charset'lang'value */
			} else {
				char *end;
				long v = strtol(rest, &end, 10);
				if (end == rest || v < 0 || v > 999)
					continue;
				idx = (int)v;
				if (*end == '*')
					enc = 1;
				else if (*end)
					continue;
			}
			if (idx != seq)
				continue;
			const char *val = pv[i].value;
			if (enc && seq <= 0) {
				const char *q1 = strchr(val, '\'');
				const char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
				if (q2) {
					snprintf(charset, sizeof charset, "%.*s", (int)(q1 - val),
						 val);
					val = q2 + 1;
				}
			}
			for (const char *c = val; *c; c++) {
				if (enc && *c == '%' && mime_hexval((unsigned char)c[1]) >= 0 &&
				    mime_hexval((unsigned char)c[2]) >= 0) {
					buf_putc(&raw,
						 (char)(mime_hexval((unsigned char)c[1]) * 16 +
							mime_hexval((unsigned char)c[2])));
					c += 2;
				} else {
					buf_putc(&raw, *c);
				}
			}
			found = got = 1;
			break;
		}
		if (!got && seq >= 1)
			break;
		if (seq == -1 && got)
			break;
	}
	if (found) {
		char *s = mime_to_utf8(raw.data, raw.len, charset[0] ? charset : NULL, NULL);
		buf_free(&raw);
		return s;
	}
	buf_free(&raw);
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(pv[i].name, name) == 0)
			return mime_decode_header(pv[i].value);
	return NULL;
}

/* Splits "type/sub; a=1; b*0*=x; c=\"q;t\"" into pairs (strings in store). */
static size_t params_split(const char *v, char ***store, struct mime_param **out)
{
	size_t n = 0, cap = 0, sn = 0;
	*out = NULL;
	*store = NULL;
	const char *p = strchr(v, ';');
	while (p && *p) {
		p++;
		while (isspace((unsigned char)*p) || *p == ';')
			p++;
		const char *eq = p;
		while (*eq && *eq != '=' && *eq != ';')
			eq++;
		if (*eq != '=')
			break;
		const char *ne = eq;
		while (ne > p && isspace((unsigned char)ne[-1]))
			ne--;
		char *name = xstrndup(p, (size_t)(ne - p));
		const char *s = eq + 1;
		while (isspace((unsigned char)*s))
			s++;
		struct buf val;
		buf_init(&val);
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				if (*s == '\\' && s[1])
					s++;
				buf_putc(&val, *s++);
			}
			if (*s == '"')
				s++;
			while (*s && *s != ';')
				s++;
		} else {
			while (*s && *s != ';')
				buf_putc(&val, *s++);
			char *t = val.data ? str_trim(val.data) : NULL;
			if (t && t != val.data)
				memmove(val.data, t, strlen(t) + 1);
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			*out = xrealloc(*out, cap * sizeof **out);
			*store = xrealloc(*store, 2 * cap * sizeof **store);
		}
		(*store)[sn++] = name;
		(*store)[sn++] = buf_steal(&val);
		(*out)[n].name = (*store)[sn - 2];
		(*out)[n].value = (*store)[sn - 1];
		n++;
		p = s;
		if (n >= 200)
			break;
	}
	return n;
}

static void params_free(char **store, struct mime_param *pv, size_t n)
{
	for (size_t i = 0; i < 2 * n; i++)
		free(store[i]);
	free(store);
	free(pv);
}

char *mime_param_2231(const char *header_value, const char *name)
{
	char **store;
	struct mime_param *pv;
	size_t n = params_split(header_value, &store, &pv);
	char *s = mime_param_decode(pv, n, name);
	params_free(store, pv, n);
	return s;
}

/* ---- top-level headers ------------------------------------------------- */

void mime_headers_free(struct mime_headers *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free(h->v[i].name);
		free(h->v[i].value);
	}
	free(h->v);
}

/* The charset the message declares for its text: the first charset=
 * parameter in the first 64 KB (the top-level Content-Type or the first
 * part's).  Empty when none or when it says nothing about 8-bit bytes. */
static void declared_charset(const char *raw, size_t len, char *cs, size_t cslen)
{
	cs[0] = 0;
	size_t n = len < 65536 ? len : 65536;
	for (const char *p = raw; p + 8 < raw + n; p++) {
		if ((*p | 0x20) != 'c' || strncasecmp(p, "charset", 7))
			continue;
		const char *v = p + 7;
		while (v < raw + n && (*v == ' ' || *v == '\t'))
			v++;
		if (v >= raw + n || *v != '=')
			continue;
		v++;
		while (v < raw + n && (*v == ' ' || *v == '\t' || *v == '"' || *v == '\''))
			v++;
		size_t k = 0;
		while (v + k < raw + n && k + 1 < cslen &&
		       (isalnum((unsigned char)v[k]) || strchr("-_.:", v[k])))
			k++;
		memcpy(cs, v, k);
		cs[k] = 0;
		break;
	}
	if (!strcasecmp(cs, "us-ascii") || !strcasecmp(cs, "utf-8") || !strcasecmp(cs, "utf8") ||
	    !strncasecmp(cs, "utf-16", 6) || !strncasecmp(cs, "utf-32", 6) ||
	    !strcasecmp(cs, "utf-7"))
		cs[0] = 0;
}

/* A charset for 8-bit bytes nobody labelled, from the bytes themselves:
 * Cyrillic words are runs of 8-bit letters, where Western European text
 * has single accented letters between ASCII ones; KOI8-R puts lower-case
 * letters at 0xC0-0xDF, windows-1251 at 0xE0-0xFF. */
static const char *guess_8bit(const unsigned char *s, size_t n)
{
	size_t high = 0, in_runs = 0, koi = 0, cp = 0, run = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] >= 0x80) {
			high++;
			run++;
			if (s[i] >= 0xc0 && s[i] <= 0xdf)
				koi++;
			else if (s[i] >= 0xe0)
				cp++;
			continue;
		}
		if (run >= 3)
			in_runs += run;
		run = 0;
	}
	if (high >= 3 && in_runs * 10 >= high * 7)
		return koi > cp ? "koi8-r" : "windows-1251";
	return "windows-1252";
}

/* Header bytes as UTF-8: valid UTF-8 as it is; other 8-bit bytes in the
 * charset the message declares for its text, else one guessed from the
 * bytes; noted in warn. */
static char *header_text(const char *p, size_t n, const char *hint, struct buf *warn)
{
	size_t i = 0;
	while (i < n && !((unsigned char)p[i] & 0x80))
		i++;
	if (i == n || utf8_valid(p, n))
		return mime_to_utf8(p, n, NULL, NULL);
	if (*hint) {
		struct buf w;
		buf_init(&w);
		char *u = mime_to_utf8(p, n, hint, &w);
		int known = !w.len || !strstr(w.data, "unknown charset");
		buf_free(&w);
		if (known) {
			mime_warn(warn, "raw 8-bit header bytes read as %s, the charset of the text",
				  hint);
			return u;
		}
		free(u);
	}
	const char *cs = guess_8bit((const unsigned char *)p, n);
	mime_warn(warn, "raw 8-bit header bytes read as %s (guessed from the bytes)", cs);
	return mime_to_utf8(p, n, cs, NULL);
}

/* Splits the header block; lines without a colon are skipped, folded lines
 * are joined. */
void mime_headers_parse(const char *raw, size_t len, struct mime_headers *h, struct buf *warn)
{
	size_t cap = 0, i = 0;
	char hint[40];
	declared_charset(raw, len, hint, sizeof hint);
	memset(h, 0, sizeof *h);
	while (i < len) {
		size_t e = i;
		while (e < len && raw[e] != '\n')
			e++;
		size_t le = e;
		if (le > i && raw[le - 1] == '\r')
			le--;
		if (le == i) { /* blank line: the body starts */
			i = e + 1;
			break;
		}
		if ((raw[i] == ' ' || raw[i] == '\t') && h->n) {
			struct mime_header *last = &h->v[h->n - 1];
			size_t have = strlen(last->value);
			if (have + (le - i) < HEADER_VALUE_MAX) {
				char *more = header_text(raw + i, le - i, hint, warn);
				size_t n = strlen(more);
				last->value = xrealloc(last->value, have + n + 1);
				memcpy(last->value + have, more, n + 1);
				free(more);
			}
		} else {
			const char *colon = memchr(raw + i, ':', le - i);
			if (colon && colon > raw + i && h->n < HEADERS_MAX) {
				size_t nl = (size_t)(colon - (raw + i));
				while (nl && isspace((unsigned char)raw[i + nl - 1]))
					nl--;
				size_t vs = (size_t)(colon + 1 - raw);
				size_t vl = le - vs;
				if (vl >= HEADER_VALUE_MAX)
					vl = HEADER_VALUE_MAX - 1;
				if (h->n == cap) {
					cap = cap ? cap * 2 : 32;
					h->v = xrealloc(h->v, cap * sizeof *h->v);
				}
				h->v[h->n].name = mime_to_utf8(raw + i, nl, NULL, NULL);
				h->v[h->n].value = header_text(raw + vs, vl, hint, warn);
				h->n++;
			}
		}
		i = e + 1;
	}
	h->body = i < len ? i : len;
}

/* Trims the value in place on the first look-up. */
const char *mime_header_get(const struct mime_headers *h, const char *name)
{
	for (size_t i = 0; i < h->n; i++)
		if (!strcasecmp(h->v[i].name, name)) {
			char *v = h->v[i].value;
			char *t = str_trim(v);
			if (t != v)
				memmove(v, t, strlen(t) + 1);
			return v;
		}
	return NULL;
}

/* ---- addresses and ids ------------------------------------------------- */

/* Removes RFC 5322 comments "(...)" (nested, with \\-escapes) outside
 * quotes from v into out.  A comment inside a word ("john(x)@y") just
 * vanishes; one standing between words leaves a space, and the text of
 * the last such comment is put into *comment (may be NULL). */
static void strip_comments(const char *v, const char *end, struct buf *out, char **comment)
{
	int inq = 0;
	for (const char *c = v; c < end; c++) {
		if (*c == '\\' && c + 1 < end) {
			buf_putc(out, *c++);
			buf_putc(out, *c);
			continue;
		}
		if (*c == '"')
			inq = !inq;
		if (inq || *c != '(') {
			buf_putc(out, *c);
			continue;
		}
		const char *s = c + 1;
		int depth = 1;
		for (c++; c < end && depth; c++) {
			if (*c == '\\' && c + 1 < end)
				c++;
			else if (*c == '(')
				depth++;
			else if (*c == ')')
				depth--;
		}
		const char *e = depth ? c : c - 1; /* the closing ')' or the end */
		int before = out->len && !isspace((unsigned char)out->data[out->len - 1]);
		int after = c < end && !isspace((unsigned char)*c) && *c != ',';
		c--;
		if (before && after)
			continue; /* inside a word */
		buf_putc(out, ' ');
		if (comment) {
			free(*comment);
			*comment = xstrndup(s, (size_t)(e - s));
		}
	}
	if (!out->data)
		buf_puts(out, "");
}

/* The "<" and ">" of the address, outside quotes and comments (NULL when
 * there are none). */
static void mailbox_angles(const char *v, const char **lt, const char **gt)
{
	int inq = 0, paren = 0;
	*lt = *gt = NULL;
	for (const char *c = v; *c; c++) {
		if (*c == '\\' && c[1]) {
			c++;
			continue;
		}
		if (*c == '"')
			inq = !inq;
		else if (!inq && *c == '(')
			paren++;
		else if (!inq && *c == ')' && paren)
			paren--;
		else if (!inq && !paren && *c == '<')
			*lt = c;
		else if (!inq && !paren && *c == '>' && *lt && !*gt)
			*gt = c;
	}
}

/* "Name <addr>" or "(Name) <addr>": the address between lt and gt, the
 * display name (unquoted) into nb. */
static void mailbox_angled(const char *v, const char *lt, const char *gt, struct buf *nb,
			   char **addr)
{
	struct buf a;
	buf_init(&a);
	strip_comments(lt + 1, gt, &a, NULL);
	*addr = buf_steal(&a);
	struct buf pre;
	buf_init(&pre);
	char *comment = NULL;
	strip_comments(v, lt, &pre, &comment);
	const char *src = pre.data;
	char *t = str_trim(pre.data);
	if (!*t && comment)
		src = comment; /* "(Name) <addr>" */
	for (const char *c = src; *c; c++) {
		if (*c == '\\' && c[1]) {
			buf_putc(nb, *++c);
			continue;
		}
		if (*c != '"')
			buf_putc(nb, *c);
	}
	free(comment);
	buf_free(&pre);
}

/* "addr (Name)" or a bare address: the first word with an "@" (or a lone
 * word such as "MAILER-DAEMON"), the comment as the name into nb. */
static void mailbox_bare(const char *v, struct buf *nb, char **addr)
{
	struct buf clean;
	buf_init(&clean);
	char *comment = NULL;
	strip_comments(v, v + strlen(v), &clean, &comment);
	if (comment)
		buf_puts(nb, comment);
	free(comment);
	const char *c = clean.data;
	while (*c) {
		size_t n = strcspn(c, " \t");
		if (n && memchr(c, '@', n) && !*addr)
			*addr = xstrndup(c, n);
		c += n ? n : 1;
	}
	if (!*addr) {
		/* "MAILER-DAEMON" with no domain still names the sender. */
		char *s2 = str_trim(clean.data);
		if (*s2 && !strpbrk(s2, " \t\"<>()"))
			*addr = xstrdup(s2);
	}
	buf_free(&clean);
}

/* The address trimmed, without controls, quotes or angles, in lower case;
 * freed and NULL when nothing or too much is left. */
static void mailbox_addr_clean(char **addr)
{
	char *t = str_trim(*addr);
	memmove(*addr, t, strlen(t) + 1);
	for (char *c = *addr; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == '"' || *c == '<' || *c == '>')
			memmove(c, c + 1, strlen(c));
	str_lower(*addr);
	if (!**addr || strlen(*addr) > 320) {
		free(*addr);
		*addr = NULL;
	}
}

/* One "Name <addr>" / "addr (Name)" / "addr" into name and lower-cased
 * address (NULL when there is none).  Comments anywhere are not part of
 * the address. */
void mime_mailbox_parse(const char *v, char **name, char **addr)
{
	const char *lt, *gt;
	struct buf nb;
	*name = *addr = NULL;
	mailbox_angles(v, &lt, &gt);
	buf_init(&nb);
	if (lt && gt && gt > lt)
		mailbox_angled(v, lt, gt, &nb, addr);
	else
		mailbox_bare(v, &nb, addr);
	if (*addr)
		mailbox_addr_clean(addr);
	if (nb.len) {
		char *d = mime_decode_header(nb.data);
		char *t = str_trim(d);
		memmove(d, t, strlen(t) + 1);
		if (*d)
			*name = d;
		else
			free(d);
	}
	buf_free(&nb);
}

/* Splits an address list on commas outside quotes, <> and (); group
 * syntax ("team: a@b, c@d;") is flattened. */
void mime_address_list(const char *v, struct strlist *out, int want_names, char **first_name)
{
	struct buf cur;
	buf_init(&cur);
	int inq = 0, angle = 0, paren = 0;
	for (const char *c = v;; c++) {
		int end = !*c;
		if (!end) {
			if (*c == '\\' && c[1]) {
				buf_putc(&cur, *c++);
				buf_putc(&cur, *c);
				continue;
			}
			if (*c == '"')
				inq = !inq;
			else if (!inq && *c == '<')
				angle = 1;
			else if (!inq && *c == '>')
				angle = 0;
			else if (!inq && *c == '(')
				paren++;
			else if (!inq && *c == ')' && paren)
				paren--;
		}
		int split = end || (!inq && !angle && !paren && (*c == ',' || *c == ';'));
		if (!split && !inq && !angle && !paren && *c == ':') {
			buf_reset(&cur); /* group name */
			continue;
		}
		if (!split) {
			buf_putc(&cur, *c);
			continue;
		}
		if (cur.len) {
			char *name, *addr;
			mime_mailbox_parse(cur.data, &name, &addr);
			if (addr && strchr(addr, '@') && !strlist_has_ci(out, addr)) {
				strlist_add(out, addr);
				if (want_names && first_name && !*first_name && name) {
					*first_name = name;
					name = NULL;
				}
			}
			free(name);
			free(addr);
		}
		buf_reset(&cur);
		if (end || out->n >= 500)
			break;
	}
	buf_free(&cur);
}

/* Message ids: every <...> in v, or the bare value when it has none. */
void mime_id_list(const char *v, struct strlist *out, size_t max)
{
	if (!v)
		return;
	int any = 0;
	for (const char *c = v; *c;) {
		const char *lt = strchr(c, '<');
		if (!lt)
			break;
		const char *gt = strchr(lt + 1, '>');
		if (!gt)
			break;
		const char *nlt = memchr(lt + 1, '<', (size_t)(gt - lt - 1));
		if (nlt) {
			c = nlt;
			continue;
		}
		char *id = xstrndup(lt + 1, (size_t)(gt - lt - 1));
		char *t = str_trim(id);
		int ok = *t && strlen(t) < 998 && !strpbrk(t, " \t\r\n");
		if (ok && !strlist_has_ci(out, t)) {
			if (out->n >= max) {
				/* keep the root and the nearest ancestors */
				free(out->v[1]);
				memmove(out->v + 1, out->v + 2, (out->n - 2) * sizeof *out->v);
				out->n--;
				out->v[out->n] = NULL;
			}
			strlist_add(out, t);
		}
		any = 1;
		free(id);
		c = gt + 1;
	}
	if (!any) {
		char *t0 = xstrdup(v);
		char *t = str_trim(t0);
		if (*t && strlen(t) < 998 && !strpbrk(t, " \t\r\n<>"))
			strlist_add(out, t);
		free(t0);
	}
}

char *mime_first_id(const char *v)
{
	struct strlist l = {0};
	mime_id_list(v, &l, 10);
	char *s = l.n ? xstrdup(l.v[0]) : NULL;
	strlist_free(&l);
	return s;
}

time_t mime_date_parse(const char *v)
{
	if (!v)
		return 0;
	size_t idx = 0;
	struct mailimf_date_time *dt = NULL;
	if (mailimf_date_time_parse(v, strlen(v), &idx, &dt) != MAILIMF_NO_ERROR || !dt)
		return 0;
	time_t t = time_from_parts(dt->dt_year, dt->dt_month, dt->dt_day, dt->dt_hour, dt->dt_min,
				   dt->dt_sec, dt->dt_zone);
	mailimf_date_time_free(dt);
	return t;
}
