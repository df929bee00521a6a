/* compose.c — the headers and body encoding every mail mailfeed writes
 * shares (digests, notifications, notices): one-line header text,
 * RFC 2047 encoded words and folding, address headers, the RFC 5322 date,
 * the robot headers, base64 bodies and Message-IDs; and the bare address
 * of a From value, which the relay's MAIL FROM also uses.  No network:
 * the transport is smtp.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfeed/compose.h"
#include "mailfeed/util.h"

#define LINE_MAX_HEADER 900 /* an ASCII header value is cut here */

char *compose_address_of(const char *from)
{
	const char *lt, *gt, *s = from;
	size_t n;
	if (!from)
		return NULL;
	lt = strrchr(from, '<');
	if (lt) {
		gt = strchr(lt, '>');
		if (!gt)
			return NULL;
		s = lt + 1;
		n = (size_t)(gt - s);
	} else {
		while (*s == ' ' || *s == '\t')
			s++;
		n = strcspn(s, " \t\r\n");
	}
	if (n == 0 || n > 254 || !memchr(s, '@', n))
		return NULL;
	/* only what an SMTP command and a header can carry unencoded */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f ||
		    strchr("<>()[],;:\\\"", s[i]))
			return NULL;
	return xstrndup(s, n);
}

/* Feed content for one line: controls (CR/LF included) and runs of
 * spaces become one space. */
char *compose_header_text(const char *s)
{
	char *r = xstrdup(s ? s : ""), *o = r;
	for (const char *p = r; *p; p++) {
		char c = ((unsigned char)*p < 0x20 || *p == 0x7f) ? ' ' : *p;
		if (c == ' ' && o > r && o[-1] == ' ')
			continue;
		*o++ = c;
	}
	*o = 0;
	text_strip_bidi(r);
	return r;
}

static int is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

static void put_encoded_words(struct buf *b, const char *v, size_t col)
{
	size_t len = strlen(v), i = 0;
	while (i < len) {
		size_t n = len - i < 45 ? len - i : 45;
		while (i + n < len && n > 1 && ((unsigned char)v[i + n] & 0xc0) == 0x80)
			n--;
		if (i > 0 || col > 60)
			buf_puts(b, "\r\n ");
		buf_puts(b, "=?UTF-8?B?");
		buf_put_base64(b, v + i, n);
		buf_puts(b, "?=");
		i += n;
	}
}

/* ASCII value folded at spaces so no line passes 78 columns when it can. */
static void put_folded(struct buf *b, const char *v, size_t col)
{
	size_t len = strlen(v);
	if (len > LINE_MAX_HEADER)
		len = LINE_MAX_HEADER;
	const char *p = v, *end = v + len;
	while (p < end) {
		size_t room = col < 78 ? 78 - col : 1;
		if ((size_t)(end - p) <= room) {
			buf_append(b, p, (size_t)(end - p));
			break;
		}
		const char *cut = NULL;
		for (const char *q = p + 1; q < end && (size_t)(q - p) <= room; q++)
			if (*q == ' ')
				cut = q;
		if (!cut) {
			cut = p + 1;
			while (cut < end && *cut != ' ')
				cut++;
			if (cut == end) {
				buf_append(b, p, (size_t)(end - p));
				break;
			}
		}
		buf_append(b, p, (size_t)(cut - p));
		buf_puts(b, "\r\n");
		p = cut; /* the space starts the continuation line */
		col = 0;
	}
}

void compose_put_header(struct buf *b, const char *name, const char *value)
{
	char *v = compose_header_text(value);
	buf_printf(b, "%s: ", name);
	if (is_ascii(v))
		put_folded(b, v, strlen(name) + 2);
	else
		put_encoded_words(b, v, strlen(name) + 2);
	buf_puts(b, "\r\n");
	free(v);
}

void compose_put_address(struct buf *b, const char *name, const char *value)
{
	char *v = compose_header_text(value);
	char *lt = strrchr(v, '<');
	char *addr = compose_address_of(v);
	buf_printf(b, "%s: ", name);
	if (lt && addr) {
		*lt = 0;
		char *disp = str_trim(v);
		size_t dl = strlen(disp);
		if (dl >= 2 && disp[0] == '"' && disp[dl - 1] == '"') {
			disp[dl - 1] = 0;
			disp++;
			dl -= 2;
		}
		if (dl > 200) { /* keeps the line far below 998 octets */
			dl = 200;
			while (dl > 0 && ((unsigned char)disp[dl] & 0xc0) == 0x80)
				dl--;
			disp[dl] = 0;
		}
		if (*disp && is_ascii(disp)) {
			buf_putc(b, '"');
			for (const char *p = disp; *p; p++)
				if (*p != '"' && *p != '\\')
					buf_putc(b, *p);
			buf_puts(b, "\" ");
		} else if (*disp) {
			put_encoded_words(b, disp, strlen(name) + 2);
			buf_putc(b, ' ');
		}
		buf_printf(b, "<%s>", addr);
	} else if (addr) {
		buf_puts(b, addr);
	}
	buf_puts(b, "\r\n");
	free(addr);
	free(v);
}

void compose_put_date(struct buf *b, time_t t)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	gmtime_r(&t, &tm);
	buf_printf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
		   tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		   tm.tm_sec);
}

static const char *reply_domain(const struct mf_config *cfg)
{
	const char *ra = cfg->gateway.reply_address;
	const char *at = ra ? strrchr(ra, '@') : NULL;
	return at && at[1] ? at + 1 : "localhost";
}

void compose_put_robot_headers(struct buf *b, const struct mf_config *cfg,
			       const char *auto_submitted)
{
	char *dom = compose_header_text(reply_domain(cfg));
	buf_printf(b, "Auto-Submitted: %s\r\n", auto_submitted);
	buf_puts(b, "X-Auto-Response-Suppress: All\r\n");
	buf_printf(b, "List-Id: <mailfeed.%s>\r\n", dom);
	buf_puts(b, "X-Mailfeed-Loop: yes\r\n");
	free(dom);
}

void compose_put_base64(struct buf *b, const char *text)
{
	struct buf crlf;
	buf_init(&crlf);
	for (const char *p = text; *p;) {
		size_t run = strcspn(p, "\r\n");
		buf_append(&crlf, p, run);
		p += run;
		if (*p == '\n')
			buf_append(&crlf, "\r\n", 2);
		if (*p)
			p++;
	}
	for (size_t i = 0; i < crlf.len; i += 57) {
		size_t n = crlf.len - i < 57 ? crlf.len - i : 57;
		buf_put_base64(b, crlf.data + i, n);
		buf_puts(b, "\r\n");
	}
	buf_free(&crlf);
}

char *compose_new_message_id(const struct mf_config *cfg)
{
	unsigned char r[12];
	char hex[25];
	if (random_bytes(r, sizeof r) < 0)
		memset(r, 0, sizeof r);
	hex_encode(r, sizeof r, hex);
	char *dom = compose_header_text(reply_domain(cfg));
	char *id = xasprintf("mailfeed.%lld.%s@%s", (long long)time(NULL), hex, dom);
	free(dom);
	return id;
}
