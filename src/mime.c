/* mime.c — one raw RFC 5322 message into a struct mf_message.
 *
 * libetpan splits the MIME tree and undoes transfer encodings; everything
 * about text is done here: charsets to UTF-8 (with the fallbacks written
 * into m->warnings, never silently), RFC 2047 words, RFC 2231 parameters
 * (absent from libetpan 1.9.4), format=flowed, the choice of the text part,
 * attachment naming, and the facts classification needs.  The top-level
 * headers are read by our own tolerant splitter, not libetpan's strict
 * grammar, so that junk in one header never loses the others.
 *
 * This code runs inside the sandboxed parse worker (worker.c). */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <libetpan/libetpan.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/facts.h"
#include "mailfeed/html.h"
#include "mailfeed/mime.h"

#define HEADER_VALUE_MAX (64 * 1024)
#define HEADERS_MAX 2000
#define REFERENCES_MAX 200
#define FILENAME_MAX_LEN 200
#define INLINE_LOGO_MAX (20 * 1024)
/* More multipart headers than this means a hostile nest, not a mail. */
#define MULTIPART_MAX 1000
#define TEXT_MAX (8u * 1024 * 1024)

/* ---- charsets ---------------------------------------------------------- */

static void warn_add(struct buf *warn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn_add(struct buf *warn, const char *fmt, ...)
{
	if (!warn)
		return;
	char *note = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&note, fmt, ap) < 0)
		note = NULL;
	va_end(ap);
	if (!note)
		return;
	/* The same note twice says nothing new. */
	if (!warn->len || !strstr(warn->data, note)) {
		if (warn->len)
			buf_puts(warn, "; ");
		buf_puts(warn, note);
	}
	free(note);
}

/* Counts valid multi-byte and invalid sequences. */
static void utf8_scan(const char *in, size_t len, size_t *good, size_t *bad)
{
	const unsigned char *s = (const unsigned char *)in;
	*good = *bad = 0;
	for (size_t i = 0; i < len;) {
		i += utf8_ascii_run(s + i, len - i);
		if (i >= len)
			break;
		size_t n = utf8_seq(s + i, len - i);
		if (n == 0) {
			(*bad)++;
			i++;
		} else {
			if (n > 1)
				(*good)++;
			i += n;
		}
	}
}

/* UTF-8 with invalid sequences replaced by U+FFFD and NULs dropped. */
static char *utf8_repair(const char *in, size_t len)
{
	struct buf b;
	buf_init(&b);
	const unsigned char *s = (const unsigned char *)in;
	size_t run = 0; /* start of the valid bytes not yet copied */
	for (size_t i = 0; i < len;) {
		i += utf8_ascii_run(s + i, len - i);
		if (i >= len)
			break;
		size_t n = utf8_seq(s + i, len - i);
		if (n > 0 && s[i]) {
			i += n;
			continue;
		}
		buf_append(&b, s + run, i - run);
		if (n == 0)
			buf_puts(&b, "\xef\xbf\xbd");
		run = ++i;
	}
	buf_append(&b, s + run, len - run);
	return buf_steal(&b);
}

/* The iconv name for a mail charset label, or NULL for utf-8/us-ascii. */
static const char *charset_name(const char *label, char *tmp, size_t tmplen)
{
	static const struct {
		const char *label, *iconv;
	} alias[] = {
	    {"gb2312", "GB18030"},
	    {"gbk", "GB18030"},
	    {"x-gbk", "GB18030"},
	    {"cp936", "GB18030"},
	    {"euc-cn", "GB18030"},
	    {"shift_jis", "CP932"},
	    {"shift-jis", "CP932"},
	    {"sjis", "CP932"},
	    {"x-sjis", "CP932"},
	    {"ms_kanji", "CP932"},
	    {"windows-31j", "CP932"},
	    {"ks_c_5601-1987", "CP949"},
	    {"euc-kr", "CP949"},
	    {"iso-8859-8-i", "ISO-8859-8"},
	    {"big5", "BIG5-HKSCS"},
	    {"x-mac-roman", "MACINTOSH"},
	    {"macintosh", "MACINTOSH"},
	    {"iso-8859-1", "WINDOWS-1252"},
	    {"latin1", "WINDOWS-1252"},
	    {"latin-1", "WINDOWS-1252"},
	    {"iso_8859-1", "WINDOWS-1252"},
	    {"cp1252", "WINDOWS-1252"},
	    {"utf7", "UTF-7"},
	    {"unicode-1-1-utf-7", "UTF-7"},
	    {"x-user-defined", "WINDOWS-1252"},
	    {"tis-620", "CP874"},
	    {"iso-8859-11", "CP874"},
	};
	if (!label)
		return NULL;
	size_t n = 0;
	for (const char *p = label; *p && n + 1 < tmplen; p++) {
		if (*p == '"' || *p == '\'' || isspace((unsigned char)*p))
			continue;
		tmp[n++] = (char)tolower((unsigned char)*p);
	}
	tmp[n] = 0;
	/* A language suffix (RFC 2231 section 5: "utf-8*en") is not part of it. */
	char *star = strchr(tmp, '*');
	if (star)
		*star = 0;
	if (!*tmp || !strcmp(tmp, "utf-8") || !strcmp(tmp, "utf8") || !strcmp(tmp, "us-ascii") ||
	    !strcmp(tmp, "ascii") || !strcmp(tmp, "ansi_x3.4-1968") || !strcmp(tmp, "default") ||
	    !strcmp(tmp, "unknown-8bit") || !strcmp(tmp, "x-unknown"))
		return NULL;
	for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
		if (!strcmp(tmp, alias[i].label))
			return alias[i].iconv;
	return tmp;
}

/* Labels whose bytes may all be ASCII yet still need converting. */
static int charset_needs_label(const char *cs)
{
	return !strncasecmp(cs, "utf-16", 6) || !strncasecmp(cs, "utf-32", 6) ||
	       !strncasecmp(cs, "ucs-", 4) || !strcasecmp(cs, "UTF-7") ||
	       !strncasecmp(cs, "iso-2022", 8) || !strcasecmp(cs, "hz-gb-2312");
}

/* iconv conversion; -1 when the charset is unknown.  Invalid input bytes
 * become U+FFFD and are counted in *bad. */
static int iconv_to_utf8(const char *cs, const char *in, size_t len, struct buf *out, size_t *bad)
{
	iconv_t cd = iconv_open("UTF-8", cs);
	if (cd == (iconv_t)-1)
		return -1;
	*bad = 0;
	char *src = (char *)in;
	size_t left = len;
	char chunk[4096];
	while (left > 0) {
		char *dst = chunk;
		size_t room = sizeof chunk;
		size_t r = iconv(cd, &src, &left, &dst, &room);
		buf_append(out, chunk, sizeof chunk - room);
		if (r == (size_t)-1) {
			if (errno == E2BIG)
				continue;
			/* EILSEQ or a truncated sequence at the end. */
			buf_puts(out, "\xef\xbf\xbd");
			(*bad)++;
			src++;
			left--;
			iconv(cd, NULL, NULL, NULL, NULL);
		}
	}
	char *dst = chunk;
	size_t room = sizeof chunk;
	iconv(cd, NULL, NULL, &dst, &room);
	buf_append(out, chunk, sizeof chunk - room);
	iconv_close(cd);
	return 0;
}

/* Drops NULs that some encodings produce; C strings cannot hold them. */
static char *buf_steal_text(struct buf *b)
{
	size_t j = 0;
	for (size_t i = 0; i < b->len; i++)
		if (b->data[i])
			b->data[j++] = b->data[i];
	if (b->data)
		b->data[j] = 0;
	b->len = j;
	return buf_steal(b);
}

char *mime_to_utf8(const char *in, size_t len, const char *label, struct buf *warn)
{
	char tmp[64];
	const char *cs = charset_name(label, tmp, sizeof tmp);
	struct buf out;
	size_t bad = 0, good = 0;
	buf_init(&out);
	if (cs && charset_needs_label(cs) && iconv_to_utf8(cs, in, len, &out, &bad) == 0) {
		if (bad)
			warn_add(warn, "invalid bytes for charset %s replaced", label);
		return buf_steal_text(&out);
	}
	buf_reset(&out);
	utf8_scan(in, len, &good, &bad);
	if (bad == 0) {
		if (cs && good)
			warn_add(warn, "text labelled %s is UTF-8; read as UTF-8", label);
		buf_free(&out);
		return utf8_repair(in, len);
	}
	if (!cs && label && *label && good > bad * 9) {
		/* Mostly UTF-8 with a few broken bytes: keep the good text. */
		warn_add(warn, "invalid UTF-8 bytes replaced");
		buf_free(&out);
		return utf8_repair(in, len);
	}
	if (cs && iconv_to_utf8(cs, in, len, &out, &bad) == 0) {
		if (bad)
			warn_add(warn, "invalid bytes for charset %s replaced", label);
		return buf_steal_text(&out);
	}
	buf_reset(&out);
	if (!label || !*label)
		warn_add(warn, "no charset given and text is not UTF-8; read as windows-1252");
	else if (cs)
		warn_add(warn, "unknown charset %s; read as windows-1252", label);
	else
		warn_add(warn, "text labelled %s is not valid; read as windows-1252", label);
	if (iconv_to_utf8("WINDOWS-1252", in, len, &out, &bad) < 0) {
		buf_free(&out);
		return utf8_repair(in, len);
	}
	return buf_steal_text(&out);
}

/* ---- RFC 2047 ---------------------------------------------------------- */

static int hexval(int c)
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
		} else if (s[i] == '=' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
			   hexval((unsigned char)s[i + 2]) >= 0) {
			buf_putc(out, (char)(hexval((unsigned char)s[i + 1]) * 16 +
					     hexval((unsigned char)s[i + 2])));
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

static char *decode_header_warn(const char *raw, struct buf *warn)
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

char *mime_decode_header(const char *raw) { return decode_header_warn(raw ? raw : "", NULL); }

/* ---- RFC 2231 parameters ----------------------------------------------- */

struct param {
	const char *name;
	const char *value;
};

/* Value of a parameter `name` given as name/value pairs, with RFC 2231
 * continuations and charsets, else the plain parameter (RFC 2047 decoded,
 * as many clients do in violation of the standard). */
static char *param_decode(const struct param *pv, size_t n, const char *name)
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
				if (enc && *c == '%' && hexval((unsigned char)c[1]) >= 0 &&
				    hexval((unsigned char)c[2]) >= 0) {
					buf_putc(&raw, (char)(hexval((unsigned char)c[1]) * 16 +
							      hexval((unsigned char)c[2])));
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
static size_t params_split(const char *v, char ***store, struct param **out)
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

static void params_free(char **store, struct param *pv, size_t n)
{
	for (size_t i = 0; i < 2 * n; i++)
		free(store[i]);
	free(store);
	free(pv);
}

char *mime_param_2231(const char *header_value, const char *name)
{
	char **store;
	struct param *pv;
	size_t n = params_split(header_value, &store, &pv);
	char *s = param_decode(pv, n, name);
	params_free(store, pv, n);
	return s;
}

/* ---- format=flowed ----------------------------------------------------- */

char *mime_unflow(const char *text, int delsp)
{
	struct buf out;
	buf_init(&out);
	int joining = 0, join_depth = 0;
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len && p[len - 1] == '\r')
			len--;
		int depth = 0;
		const char *l = p;
		while ((size_t)(l - p) < len && *l == '>') {
			depth++;
			l++;
		}
		size_t rest = len - (size_t)(l - p);
		if (rest && *l == ' ') { /* space-stuffing */
			l++;
			rest--;
		}
		int sig = rest == 3 && !strncmp(l, "-- ", 3);
		int soft = !sig && rest > 0 && l[rest - 1] == ' ';
		if (joining && depth != join_depth) {
			buf_putc(&out, '\n');
			joining = 0;
		}
		if (!joining && depth) {
			for (int i = 0; i < depth; i++)
				buf_putc(&out, '>');
			buf_putc(&out, ' ');
		}
		size_t take = rest;
		if (soft && delsp)
			take--;
		buf_append(&out, l, take);
		if (soft) {
			joining = 1;
			join_depth = depth;
		} else {
			buf_putc(&out, '\n');
			joining = 0;
		}
		p = nl ? nl + 1 : p + strlen(p);
	}
	if (joining)
		buf_putc(&out, '\n');
	return buf_steal(&out);
}

/* ---- attachment names -------------------------------------------------- */

char *mime_safe_filename(const char *name)
{
	if (!name)
		return NULL;
	const char *base = name;
	for (const char *c = name; *c; c++)
		if (*c == '/' || *c == '\\')
			base = c + 1;
	struct buf b;
	buf_init(&b);
	const unsigned char *s = (const unsigned char *)base;
	size_t n = strlen(base);
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(s + i, n - i);
		if (k == 0) {
			i++;
			continue;
		}
		/* C0/C1 controls and DEL are dropped; so are NUL-like tricks. */
		int control =
		    s[i] < 0x20 || s[i] == 0x7f || (k == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0);
		if (!control) {
			if (b.len + k > FILENAME_MAX_LEN)
				break;
			buf_append(&b, s + i, k);
		}
		i += k;
	}
	char *out = buf_steal(&b);
	char *t = str_trim(out);
	memmove(out, t, strlen(t) + 1);
	while (out[0] == '.') /* no hidden files, no ".." */
		memmove(out, out + 1, strlen(out));
	if (!*out) {
		free(out);
		return NULL;
	}
	return out;
}

static const char *ext_for(const char *type)
{
	static const struct {
		const char *type, *ext;
	} map[] = {
	    {"image/png", "png"},	   {"image/jpeg", "jpg"},      {"image/gif", "gif"},
	    {"image/webp", "webp"},	   {"image/svg+xml", "svg"},   {"application/pdf", "pdf"},
	    {"text/plain", "txt"},	   {"text/html", "html"},      {"text/calendar", "ics"},
	    {"message/rfc822", "eml"},	   {"application/zip", "zip"}, {"text/csv", "csv"},
	    {"application/msword", "doc"}, {"audio/mpeg", "mp3"},      {"video/mp4", "mp4"},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (!strcasecmp(type, map[i].type))
			return map[i].ext;
	return "bin";
}

/* ---- top-level headers ------------------------------------------------- */

static void headers_free(struct mime_headers *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free(h->v[i].name);
		free(h->v[i].value);
	}
	free(h->v);
}

/* Splits the header block; lines without a colon are skipped, folded lines
 * are joined. */
static void headers_parse(const char *raw, size_t len, struct mime_headers *h)
{
	size_t cap = 0, i = 0;
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
				char *more = mime_to_utf8(raw + i, le - i, NULL, NULL);
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
				/* 8-bit header bytes that are not UTF-8 are read as
				 * windows-1252, like the body without a charset. */
				h->v[h->n].value = mime_to_utf8(raw + vs, vl, NULL, NULL);
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

/* One "Name <addr>" / "addr (Name)" / "addr" into name and lower-cased
 * address (NULL when there is none). */
static void mailbox_parse(const char *v, char **name, char **addr)
{
	*name = *addr = NULL;
	const char *lt = NULL, *gt = NULL;
	int inq = 0;
	for (const char *c = v; *c; c++) {
		if (*c == '\\' && c[1]) {
			c++;
			continue;
		}
		if (*c == '"')
			inq = !inq;
		else if (!inq && *c == '<')
			lt = c;
		else if (!inq && *c == '>' && lt && !gt)
			gt = c;
	}
	struct buf nb;
	buf_init(&nb);
	if (lt && gt && gt > lt) {
		*addr = xstrndup(lt + 1, (size_t)(gt - lt - 1));
		for (const char *c = v; c < lt; c++) {
			if (*c == '\\' && c + 1 < lt) {
				buf_putc(&nb, *++c);
				continue;
			}
			if (*c != '"')
				buf_putc(&nb, *c);
		}
	} else {
		const char *c = v;
		while (*c) {
			if (*c == '(') {
				const char *e = strchr(c, ')');
				size_t n = e ? (size_t)(e - c - 1) : strlen(c + 1);
				buf_append(&nb, c + 1, n);
				c = e ? e + 1 : c + 1 + n;
				continue;
			}
			size_t n = strcspn(c, " \t(");
			if (n && memchr(c, '@', n) && !*addr)
				*addr = xstrndup(c, n);
			c += n ? n : 1;
		}
		if (!*addr) {
			/* "MAILER-DAEMON" with no domain still names the sender. */
			char *t = xstrdup(v);
			char *s = str_trim(t);
			if (*s && !strpbrk(s, " \t\"<>()"))
				*addr = xstrdup(s);
			free(t);
		}
	}
	if (*addr) {
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
	if (nb.len) {
		char *d = mime_decode_header(nb.data);
		if (*d)
			*name = d;
		else
			free(d);
	}
	buf_free(&nb);
}

/* Splits an address list on commas outside quotes, <> and (); group
 * syntax ("team: a@b, c@d;") is flattened. */
static void address_list(const char *v, struct strlist *out, int want_names, char **first_name)
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
			mailbox_parse(cur.data, &name, &addr);
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
static void id_list(const char *v, struct strlist *out, size_t max)
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

static char *first_id(const char *v)
{
	struct strlist l = {0};
	id_list(v, &l, 10);
	char *s = l.n ? xstrdup(l.v[0]) : NULL;
	strlist_free(&l);
	return s;
}

static time_t date_parse(const char *v)
{
	if (!v)
		return 0;
	size_t idx = 0;
	struct mailimf_date_time *dt = NULL;
	if (mailimf_date_time_parse(v, strlen(v), &idx, &dt) != MAILIMF_NO_ERROR || !dt)
		return 0;
	time_t t = 0;
	if (dt->dt_year >= 1970 && dt->dt_year < 10000 && dt->dt_month >= 1 && dt->dt_month <= 12 &&
	    dt->dt_day >= 1 && dt->dt_day <= 31 && dt->dt_hour < 24 && dt->dt_min < 60 &&
	    dt->dt_sec <= 60) {
		struct tm tm;
		memset(&tm, 0, sizeof tm);
		tm.tm_year = dt->dt_year - 1900;
		tm.tm_mon = dt->dt_month - 1;
		tm.tm_mday = dt->dt_day;
		tm.tm_hour = dt->dt_hour;
		tm.tm_min = dt->dt_min;
		tm.tm_sec = dt->dt_sec;
		int z = dt->dt_zone < 0 ? -dt->dt_zone : dt->dt_zone;
		long off = (long)(z / 100) * 3600 + (long)(z % 100) * 60;
		t = timegm(&tm) - (dt->dt_zone < 0 ? -off : off);
		if (t < 0)
			t = 0;
	}
	mailimf_date_time_free(dt);
	return t;
}

/* ---- the MIME tree ----------------------------------------------------- */

struct walk {
	struct mf_message *m;
	struct buf plain, html, forwards, warn;
	int have_plain, have_html;
	size_t max_att;
	struct strlist cids; /* Content-ID per attachment, "" when none */
	int att_dropped;
};

static void walk_part(struct walk *w, struct mailmime *mime, int depth);

/* Text parts end lines with LF only from here on; a lone CR is a break. */
static void crlf_to_lf(char *s)
{
	char *o = strchr(s, '\r');
	if (!o)
		return;
	const char *c = o;
	while (*c) {
		/* *c is a CR: one LF for it and an LF after it */
		*o++ = '\n';
		c += c[1] == '\n' ? 2 : 1;
		const char *cr = strchr(c, '\r');
		size_t run = cr ? (size_t)(cr - c) : strlen(c);
		memmove(o, c, run);
		o += run;
		c += run;
	}
	*o = 0;
}

/* ---- transfer encodings ------------------------------------------------ */

/* Base64 as libetpan reads it: bytes outside the alphabet ('=' included)
 * are skipped, and a last group of one to three characters still gives
 * one or two bytes.  out has room for n / 4 * 3 + 2 bytes. */
static size_t base64_decode(const char *in, size_t n, unsigned char *out)
{
	/* one more than the value of each character; 0 is not in the alphabet */
	static const signed char value1[256] = {
	    ['A'] = 1,	['B'] = 2,  ['C'] = 3,	['D'] = 4,  ['E'] = 5,	['F'] = 6,  ['G'] = 7,
	    ['H'] = 8,	['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
	    ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
	    ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
	    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
	    ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
	    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
	    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
	    ['/'] = 64,
	};
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, i = 0;
	uint32_t acc = 0;
	int k = 0;
	for (;;) {
		/* four alphabet characters in a row: the common case */
		while (k == 0 && i + 4 <= n) {
			int a = value1[s[i]] - 1, b = value1[s[i + 1]] - 1,
			    c = value1[s[i + 2]] - 1, d = value1[s[i + 3]] - 1;
			if ((a | b | c | d) < 0)
				break;
			uint32_t v =
			    (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
			out[o++] = (unsigned char)v;
			i += 4;
		}
		if (i >= n)
			break;
		int v = value1[s[i++]] - 1;
		if (v < 0)
			continue;
		acc = acc << 6 | (uint32_t)v;
		if (++k == 4) {
			out[o++] = (unsigned char)(acc >> 16);
			out[o++] = (unsigned char)(acc >> 8);
			out[o++] = (unsigned char)acc;
			acc = 0;
			k = 0;
		}
	}
	if (k > 0) {
		acc <<= 6 * (4 - k);
		out[o++] = (unsigned char)(acc >> 16);
		if (k == 3)
			out[o++] = (unsigned char)(acc >> 8);
	}
	return o;
}

/* Length of the start of s (n bytes) without CR or LF, eight bytes at a
 * time. */
static size_t span_no_crlf(const char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	size_t i = 0;
	while (i + 8 <= n) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		uint64_t lf = v ^ (ones * '\n'), cr = v ^ (ones * '\r');
		/* a byte of lf or cr is zero */
		if (((lf - ones) & ~lf & highs) | ((cr - ones) & ~cr & highs))
			break;
		i += 8;
	}
	while (i < n && s[i] != '\n' && s[i] != '\r')
		i++;
	return i;
}

static int qp_hex(int c)
{
	int v = hexval(c);
	return v < 0 ? 0 : v;
}

/* Quoted-printable as libetpan reads it: line ends become CRLF, soft
 * breaks ("=" at a line end) vanish, "=XY" is a byte even with bad hex
 * digits (read as 0), a lone CR is a line end and one at the very end is
 * dropped.  out has room for 2 * n + 1 bytes.  -1 for an '=' followed by
 * one last character, which libetpan reads past the end of the part for:
 * that case is left to libetpan. */
static ssize_t qp_decode(const char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		const char *eq = memchr(in + i, '=', n - i);
		size_t lit = eq ? (size_t)(eq - in) : n;
		/* plain text up to the next '=', with its line ends */
		while (i < lit) {
			const char *e = in + i;
			size_t run = span_no_crlf(e, lit - i);
			memcpy(out + o, e, run);
			o += run;
			i += run;
			if (i >= lit)
				break;
			if (in[i] == '\r' && i + 1 >= n)
				return (ssize_t)o; /* a CR at the very end is dropped */
			out[o++] = '\r';
			out[o++] = '\n';
			i += in[i] == '\r' && in[i + 1] == '\n' ? 2 : 1;
		}
		if (i >= n)
			break;
		/* in[i] == '=' */
		if (i + 1 >= n) {
			out[o++] = '=';
			i++;
		} else if (in[i + 1] == '\n') {
			i += 2;
		} else if (in[i + 1] == '\r') {
			if (i + 2 >= n)
				return (ssize_t)o; /* "=\r" at the very end */
			i += in[i + 2] == '\n' ? 3 : 2;
		} else if (i + 2 >= n) {
			return -1;
		} else {
			out[o++] = (char)(qp_hex((unsigned char)in[i + 1]) << 4 |
					  qp_hex((unsigned char)in[i + 2]));
			i += 3;
		}
	}
	return (ssize_t)o;
}

/* Decoded bytes of a leaf, in *len.  *owned says whether they were
 * allocated (n + 1 bytes at least) or lie in the message itself. */
static char *leaf_data(struct mailmime *mime, size_t *len, int *owned)
{
	struct mailmime_data *d = mime->mm_data.mm_single;
	*len = 0;
	*owned = 0;
	if (!d || d->dt_type != MAILMIME_DATA_TEXT)
		return NULL;
	const char *p = d->dt_data.dt_text.dt_data;
	size_t n = d->dt_data.dt_text.dt_length;
	int enc = d->dt_encoding;
	if (enc == MAILMIME_MECHANISM_BASE64) {
		char *out = xmalloc(n / 4 * 3 + 4);
		*len = base64_decode(p, n, (unsigned char *)out);
		*owned = 1;
		return out;
	}
	if (enc == MAILMIME_MECHANISM_QUOTED_PRINTABLE) {
		char *out = xmalloc(2 * n + 2);
		ssize_t got = qp_decode(p, n, out);
		if (got >= 0) {
			*len = (size_t)got;
			*owned = 1;
			return out;
		}
		free(out);
		size_t idx = 0, outlen = 0;
		char *lib = NULL;
		if (mailmime_part_parse(p, n, &idx, enc, &lib, &outlen) == MAILIMF_NO_ERROR &&
		    lib) {
			out = xmalloc(outlen + 1);
			memcpy(out, lib, outlen);
			mailmime_decoded_part_free(lib);
			*len = outlen;
			*owned = 1;
			return out;
		}
	}
	*len = n;
	return (char *)p;
}

static void leaf_data_free(char *p, int owned)
{
	if (owned)
		free(p);
}

static size_t content_params(struct mailmime_content *ct, struct param **pv)
{
	size_t n = 0;
	*pv = NULL;
	if (!ct || !ct->ct_parameters)
		return 0;
	*pv = xcalloc((size_t)clist_count(ct->ct_parameters) + 1, sizeof **pv);
	for (clistiter *it = clist_begin(ct->ct_parameters); it; it = clist_next(it)) {
		struct mailmime_parameter *p = clist_content(it);
		if (p && p->pa_name && p->pa_value) {
			(*pv)[n].name = p->pa_name;
			(*pv)[n].value = p->pa_value;
			n++;
		}
	}
	return n;
}

static size_t disposition_params(struct mailmime_disposition *dsp, struct param **pv)
{
	size_t n = 0;
	*pv = NULL;
	if (!dsp || !dsp->dsp_parms)
		return 0;
	*pv = xcalloc((size_t)clist_count(dsp->dsp_parms) + 1, sizeof **pv);
	for (clistiter *it = clist_begin(dsp->dsp_parms); it; it = clist_next(it)) {
		struct mailmime_disposition_parm *p = clist_content(it);
		if (!p)
			continue;
		if (p->pa_type == MAILMIME_DISPOSITION_PARM_FILENAME && p->pa_data.pa_filename) {
			(*pv)[n].name = "filename";
			(*pv)[n].value = p->pa_data.pa_filename;
			n++;
		} else if (p->pa_type == MAILMIME_DISPOSITION_PARM_PARAMETER &&
			   p->pa_data.pa_parameter && p->pa_data.pa_parameter->pa_name &&
			   p->pa_data.pa_parameter->pa_value) {
			(*pv)[n].name = p->pa_data.pa_parameter->pa_name;
			(*pv)[n].value = p->pa_data.pa_parameter->pa_value;
			n++;
		}
	}
	return n;
}

static char *content_type_str(struct mailmime_content *ct)
{
	const char *type = "application", *sub = "octet-stream";
	if (ct && ct->ct_type) {
		if (ct->ct_type->tp_type == MAILMIME_TYPE_DISCRETE_TYPE &&
		    ct->ct_type->tp_data.tp_discrete_type) {
			static const char *names[] = {"",      "text",	"image",
						      "audio", "video", "application"};
			int t = ct->ct_type->tp_data.tp_discrete_type->dt_type;
			if (t >= MAILMIME_DISCRETE_TYPE_TEXT &&
			    t <= MAILMIME_DISCRETE_TYPE_APPLICATION)
				type = names[t];
			else if (ct->ct_type->tp_data.tp_discrete_type->dt_extension)
				type = ct->ct_type->tp_data.tp_discrete_type->dt_extension;
		} else if (ct->ct_type->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE &&
			   ct->ct_type->tp_data.tp_composite_type) {
			int t = ct->ct_type->tp_data.tp_composite_type->ct_type;
			type = t == MAILMIME_COMPOSITE_TYPE_MESSAGE	? "message"
			       : t == MAILMIME_COMPOSITE_TYPE_MULTIPART ? "multipart"
			       : ct->ct_type->tp_data.tp_composite_type->ct_token
				   ? ct->ct_type->tp_data.tp_composite_type->ct_token
				   : "application";
		}
		if (ct->ct_subtype)
			sub = ct->ct_subtype;
	}
	char *s = xasprintf("%s/%s", type, sub);
	str_lower(s);
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == '"')
			*c = '_';
	return s;
}

static void add_attachment(struct walk *w, struct mailmime *mime, const char *ctype,
			   const char *fname, const char *cid, int is_inline)
{
	struct mf_message *m = w->m;
	if (m->n_attachments >= MIME_MAX_ATTACHMENTS) {
		if (!w->att_dropped)
			warn_add(&w->warn, "more than %d attachments; the rest are not listed",
				 MIME_MAX_ATTACHMENTS);
		w->att_dropped = 1;
		return;
	}
	size_t len;
	int owned;
	char *data = leaf_data(mime, &len, &owned);
	m->attachments = xrealloc(m->attachments, (m->n_attachments + 1) * sizeof *m->attachments);
	struct mf_attachment *a = &m->attachments[m->n_attachments++];
	memset(a, 0, sizeof *a);
	a->content_type = xstrdup(ctype);
	a->filename = mime_safe_filename(fname);
	if (!a->filename)
		a->filename = xasprintf("attachment-%zu.%s", m->n_attachments, ext_for(ctype));
	a->size = data ? len : 0;
	sha256_hex(data ? data : "", a->size, a->sha256);
	a->is_inline = is_inline;
	if (data && (w->max_att == 0 || len <= w->max_att)) {
		if (owned) {
			a->data = (unsigned char *)data;
			data = NULL;
		} else {
			a->data = xmalloc(len + 1);
			memcpy(a->data, data, len);
		}
	}
	leaf_data_free(data, owned);
	strlist_add(&w->cids, cid ? cid : "");
}

static void walk_leaf(struct walk *w, struct mailmime *mime)
{
	struct mailmime_single_fields sf;
	memset(&sf, 0, sizeof sf);
	mailmime_single_fields_init(&sf, mime->mm_mime_fields, mime->mm_content_type);
	char *ctype = content_type_str(mime->mm_content_type);
	struct param *cpv, *dpv;
	size_t cn = content_params(mime->mm_content_type, &cpv);
	size_t dn = disposition_params(sf.fld_disposition, &dpv);
	char *fname = param_decode(dpv, dn, "filename");
	if (!fname)
		fname = param_decode(cpv, cn, "name");
	int attach_dsp =
	    sf.fld_disposition && sf.fld_disposition->dsp_type &&
	    sf.fld_disposition->dsp_type->dsp_type == MAILMIME_DISPOSITION_TYPE_ATTACHMENT;
	int inline_dsp = sf.fld_disposition && sf.fld_disposition->dsp_type &&
			 sf.fld_disposition->dsp_type->dsp_type == MAILMIME_DISPOSITION_TYPE_INLINE;
	int is_plain = !strcmp(ctype, "text/plain"), is_html = !strcmp(ctype, "text/html");
	if ((is_plain || is_html) && !attach_dsp && !(fname && *fname)) {
		size_t len;
		int owned;
		char *data = leaf_data(mime, &len, &owned);
		char *cs = param_decode(cpv, cn, "charset");
		char *u = mime_to_utf8(data ? data : "", data ? len : 0, cs, &w->warn);
		leaf_data_free(data, owned);
		crlf_to_lf(u);
		if (is_plain) {
			char *fmt = param_decode(cpv, cn, "format");
			char *delsp = param_decode(cpv, cn, "delsp");
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
		free(cs);
	} else {
		add_attachment(w, mime, ctype, fname, sf.fld_id, inline_dsp || sf.fld_id != NULL);
	}
	free(fname);
	free(cpv);
	free(dpv);
	free(ctype);
}

/* A message/rfc822 part: rendered after the new text as a block that the
 * cleaner keeps (no "> "), so forwarded content reaches the feed. */
static void walk_forward(struct walk *w, struct mailmime *mime, int depth)
{
	struct walk sub;
	memset(&sub, 0, sizeof sub);
	sub.m = w->m;
	sub.max_att = w->max_att;
	buf_init(&sub.plain);
	buf_init(&sub.html);
	buf_init(&sub.forwards);
	buf_init(&sub.warn);
	struct mime_headers h;
	memset(&h, 0, sizeof h);
	struct mailmime_data *body = mime->mm_body;
	if (body && body->dt_type == MAILMIME_DATA_TEXT)
		headers_parse(body->dt_data.dt_text.dt_data, body->dt_data.dt_text.dt_length, &h);
	if (mime->mm_data.mm_message.mm_msg_mime)
		walk_part(&sub, mime->mm_data.mm_message.mm_msg_mime, depth + 1);
	/* Attachments of the forwarded message were listed on the outer one. */
	for (size_t i = 0; i < sub.cids.n; i++)
		strlist_add(&w->cids, sub.cids.v[i]);
	strlist_free(&sub.cids);
	w->att_dropped |= sub.att_dropped;
	if (sub.warn.len)
		warn_add(&w->warn, "%s", sub.warn.data);
	struct buf *f = &w->forwards;
	buf_puts(f, "\n---------- Forwarded message ---------\n");
	static const char *show[] = {"From", "Date", "Subject", "To"};
	for (size_t i = 0; i < sizeof show / sizeof show[0]; i++) {
		const char *v = mime_header_get(&h, show[i]);
		if (v) {
			char *d = mime_decode_header(v);
			buf_printf(f, "%s: %s\n", show[i], d);
			free(d);
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
	headers_free(&h);
	buf_free(&sub.plain);
	buf_free(&sub.html);
	buf_free(&sub.forwards);
	buf_free(&sub.warn);
}

static void walk_part(struct walk *w, struct mailmime *mime, int depth)
{
	if (!mime)
		return;
	if (depth > MIME_MAX_DEPTH) {
		warn_add(&w->warn, "MIME nesting deeper than %d; the rest is not read",
			 MIME_MAX_DEPTH);
		return;
	}
	switch (mime->mm_type) {
	case MAILMIME_SINGLE:
		walk_leaf(w, mime);
		break;
	case MAILMIME_MULTIPLE:
		for (clistiter *it = mime->mm_data.mm_multipart.mm_mp_list
					 ? clist_begin(mime->mm_data.mm_multipart.mm_mp_list)
					 : NULL;
		     it; it = clist_next(it))
			walk_part(w, clist_content(it), depth + 1);
		break;
	case MAILMIME_MESSAGE:
		if (depth == 0)
			walk_part(w, mime->mm_data.mm_message.mm_msg_mime, depth + 1);
		else
			walk_forward(w, mime, depth);
		break;
	default:
		break;
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
	m->subject = decode_header_warn(
	    mime_header_get(h, "Subject") ? mime_header_get(h, "Subject") : "", warn);
	if ((v = mime_header_get(h, "From"))) {
		struct strlist l = {0};
		char *name = NULL;
		address_list(v, &l, 1, &name);
		if (l.n) {
			m->from_email = xstrdup(l.v[0]);
			m->from_name = name;
		} else {
			free(name);
			mailbox_parse(v, &m->from_name, &m->from_email);
		}
		strlist_free(&l);
	}
	if ((v = mime_header_get(h, "Reply-To"))) {
		struct strlist l = {0};
		address_list(v, &l, 0, NULL);
		if (l.n)
			m->reply_to = xstrdup(l.v[0]);
		strlist_free(&l);
	}
	m->message_id = first_id(mime_header_get(h, "Message-ID"));
	m->in_reply_to = first_id(mime_header_get(h, "In-Reply-To"));
	id_list(mime_header_get(h, "References"), &m->references, REFERENCES_MAX);
	for (size_t i = 0; i < h->n; i++) {
		const char *n = h->v[i].name;
		if (!strcasecmp(n, "To"))
			address_list(h->v[i].value, &m->to, 0, NULL);
		else if (!strcasecmp(n, "Cc"))
			address_list(h->v[i].value, &m->cc, 0, NULL);
		else if (!strcasecmp(n, "Delivered-To") || !strcasecmp(n, "X-Original-To"))
			address_list(h->v[i].value, &m->recipients_hint, 0, NULL);
	}
	m->date = date_parse(mime_header_get(h, "Date"));
	if ((v = mime_header_get(h, "Authentication-Results")))
		m->auth_results = xstrdup(v);
}

struct mf_message *mime_parse_ex(const char *raw, size_t len, size_t max_attachment, char *err,
				 size_t errlen)
{
	if (count_multipart(raw, len) > MULTIPART_MAX) {
		snprintf(err, errlen, "unparseable: more than %d multipart parts", MULTIPART_MAX);
		return NULL;
	}
	size_t idx = 0;
	struct mailmime *mime = NULL;
	if (mailmime_parse(raw, len, &idx, &mime) != MAILIMF_NO_ERROR || !mime) {
		snprintf(err, errlen, "unparseable: not a MIME message");
		return NULL;
	}
	struct walk w;
	memset(&w, 0, sizeof w);
	w.m = message_new();
	w.max_att = max_attachment;
	buf_init(&w.plain);
	buf_init(&w.html);
	buf_init(&w.forwards);
	buf_init(&w.warn);
	struct mime_headers h;
	headers_parse(raw, len, &h);
	struct mf_message *m = w.m;
	fill_headers(m, &h, &w.warn);
	walk_part(&w, mime, 0);
	mailmime_free(mime);

	struct buf text;
	buf_init(&text);
	if (w.have_plain && !is_blank(w.plain.data)) {
		m->part = xstrdup("text/plain");
		buf_puts(&text, w.plain.data);
	} else if (w.have_html) {
		m->part = xstrdup("text/html");
		char *t = html_to_text(w.html.data, w.html.len);
		buf_puts(&text, t);
		free(t);
	} else {
		m->part = xstrdup(w.have_plain ? "text/plain" : "none");
	}
	drop_signature_images(&w, w.have_html ? w.html.data : NULL);
	strlist_free(&w.cids);

	m->full_text = buf_steal(&text);
	if (w.forwards.len)
		m->forwarded = buf_steal(&w.forwards);
	/* the text a feed shows is convert_message's (convert.c) */
	m->text = xstrdup("");
	m->removed = xstrdup("");
	facts_gather(m, &h);
	if (w.warn.len)
		m->warnings = buf_steal(&w.warn);
	headers_free(&h);
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
