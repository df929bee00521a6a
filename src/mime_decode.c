/* mime_decode.c — bytes of a MIME part into UTF-8 text.
 *
 * Charsets to UTF-8 (every fallback written into the warnings, never
 * silently), line ends, format=flowed (RFC 3676), transfer encodings
 * (base64, quoted-printable) and safe attachment names.  Runs inside the
 * sandboxed parse worker. */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mailfeed/mime.h"
#include "mime_internal.h"

#define FILENAME_MAX_LEN 200

/* ---- charsets ---------------------------------------------------------- */

void mime_warn(struct buf *warn, const char *fmt, ...)
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
			mime_warn(warn, "invalid bytes for charset %s replaced", label);
		return buf_steal_text(&out);
	}
	buf_reset(&out);
	utf8_scan(in, len, &good, &bad);
	if (bad == 0) {
		if (cs && good)
			mime_warn(warn, "text labelled %s is UTF-8; read as UTF-8", label);
		buf_free(&out);
		return utf8_repair(in, len);
	}
	if (!cs && label && *label && good > bad * 9) {
		/* Mostly UTF-8 with a few broken bytes: keep the good text. */
		mime_warn(warn, "invalid UTF-8 bytes replaced");
		buf_free(&out);
		return utf8_repair(in, len);
	}
	if (cs && iconv_to_utf8(cs, in, len, &out, &bad) == 0) {
		if (bad)
			mime_warn(warn, "invalid bytes for charset %s replaced", label);
		return buf_steal_text(&out);
	}
	buf_reset(&out);
	if (!label || !*label)
		mime_warn(warn, "no charset given and text is not UTF-8; read as windows-1252");
	else if (cs)
		mime_warn(warn, "unknown charset %s; read as windows-1252", label);
	else
		mime_warn(warn, "text labelled %s is not valid; read as windows-1252", label);
	if (iconv_to_utf8("WINDOWS-1252", in, len, &out, &bad) < 0) {
		buf_free(&out);
		return utf8_repair(in, len);
	}
	return buf_steal_text(&out);
}

/* Text parts end lines with LF only from here on; a lone CR is a break. */
void mime_crlf_to_lf(char *s)
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

const char *mime_ext_for(const char *type)
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

/* ---- transfer encodings ------------------------------------------------ */

/* Base64 as libetpan reads it: bytes outside the alphabet ('=' included)
 * are skipped, and a last group of one to three characters still gives
 * one or two bytes.  out has room for n / 4 * 3 + 2 bytes. */
size_t mime_base64_decode(const char *in, size_t n, unsigned char *out)
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

/* Quoted-printable (RFC 2045 6.7), tolerant: line ends become CRLF, soft
 * breaks ("=" with only blanks up to the line end) vanish, "=XY" with two
 * hex digits is a byte, and any other '=' is kept as it is written, never
 * turned into a byte nobody wrote.  st counts what was seen.  out has room
 * for 2 * n + 1 bytes. */
size_t mime_qp_decode(const char *in, size_t n, char *out, struct mime_qp_stats *st)
{
	size_t o = 0;
	memset(st, 0, sizeof *st);
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
				return o; /* a CR at the very end is dropped */
			out[o++] = '\r';
			out[o++] = '\n';
			i += in[i] == '\r' && i + 1 < n && in[i + 1] == '\n' ? 2 : 1;
		}
		if (i >= n)
			break;
		/* in[i] == '=' */
		int hi = i + 2 < n ? mime_hexval((unsigned char)in[i + 1]) : -1;
		int lo = hi >= 0 ? mime_hexval((unsigned char)in[i + 2]) : -1;
		if (hi >= 0 && lo >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			st->escapes++;
			i += 3;
			continue;
		}
		size_t j = i + 1;
		while (j < n && (in[j] == ' ' || in[j] == '\t'))
			j++;
		if (j >= n || in[j] == '\n' || in[j] == '\r') {
			/* a soft break: the line goes on */
			st->soft++;
			if (j < n)
				j += in[j] == '\r' && j + 1 < n && in[j + 1] == '\n' ? 2 : 1;
			i = j;
			continue;
		}
		out[o++] = '=';
		st->bare++;
		i++;
	}
	return o;
}
