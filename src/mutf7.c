/* mutf7.c — modified UTF-7 for IMAP mailbox names (RFC 3501 5.1.3):
 * printable ASCII stands for itself, "&" is "&-", anything else is UTF-16
 * in base64 with "," for "/", between "&" and "-", without padding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/mutf7.h"
#include "mailfeed/util.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* One code point from UTF-8 at *p (advanced), or -1 when malformed. */
static long utf8_next(const unsigned char **p)
{
	const unsigned char *s = *p;
	long cp;
	int len;
	if (s[0] < 0x80) {
		cp = s[0];
		len = 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		len = 2;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		len = 3;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		len = 4;
	} else {
		return -1;
	}
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	static const long min[] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*p = s + len;
	return cp;
}

char *mutf7_encode(const char *utf8)
{
	struct buf b;
	const unsigned char *p = (const unsigned char *)utf8;
	buf_init(&b);
	buf_puts(&b, "");
	while (*p) {
		if (*p >= 0x20 && *p <= 0x7e) {
			if (*p == '&')
				buf_puts(&b, "&-");
			else
				buf_putc(&b, (char)*p);
			p++;
			continue;
		}
		/* a run of characters outside printable ASCII */
		uint32_t bits = 0;
		int nbits = 0;
		buf_putc(&b, '&');
		while (*p && !(*p >= 0x20 && *p <= 0x7e)) {
			long cp = utf8_next(&p);
			if (cp < 0) {
				buf_free(&b);
				return NULL;
			}
			uint16_t units[2];
			int nu = 1;
			if (cp >= 0x10000) {
				cp -= 0x10000;
				units[0] = (uint16_t)(0xd800 | (cp >> 10));
				units[1] = (uint16_t)(0xdc00 | (cp & 0x3ff));
				nu = 2;
			} else {
				units[0] = (uint16_t)cp;
			}
			for (int u = 0; u < nu; u++) {
				bits = (bits << 16) | units[u];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					buf_putc(&b, b64[(bits >> nbits) & 0x3f]);
				}
			}
		}
		if (nbits > 0)
			buf_putc(&b, b64[(bits << (6 - nbits)) & 0x3f]);
		buf_putc(&b, '-');
	}
	return buf_steal(&b);
}

static int b64_value(char c)
{
	const char *q = c ? strchr(b64, c) : NULL;
	return q ? (int)(q - b64) : -1;
}

static void put_utf8(struct buf *b, uint32_t cp)
{
	char o[4];
	if (cp < 0x80) {
		buf_putc(b, (char)cp);
		return;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, o, 2);
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, o, 3);
	} else {
		o[0] = (char)(0xf0 | (cp >> 18));
		o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (char)(0x80 | (cp & 0x3f));
		buf_append(b, o, 4);
	}
}

char *mutf7_decode(const char *s)
{
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "");
	while (*s) {
		if (*s != '&') {
			if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
				goto bad;
			buf_putc(&b, *s++);
			continue;
		}
		s++;
		if (*s == '-') {
			buf_putc(&b, '&');
			s++;
			continue;
		}
		uint32_t bits = 0, high = 0;
		int nbits = 0, any = 0;
		for (; *s && *s != '-'; s++) {
			int v = b64_value(*s);
			if (v < 0)
				goto bad;
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			if (nbits >= 16) {
				nbits -= 16;
				uint32_t unit = (bits >> nbits) & 0xffff;
				any = 1;
				if (unit >= 0xd800 && unit <= 0xdbff) {
					if (high)
						goto bad;
					high = unit;
				} else if (unit >= 0xdc00 && unit <= 0xdfff) {
					if (!high)
						goto bad;
					put_utf8(&b, 0x10000 + ((high - 0xd800) << 10) +
							 (unit - 0xdc00));
					high = 0;
				} else {
					/* printable ASCII must not be encoded */
					if (high || (unit >= 0x20 && unit <= 0x7e))
						goto bad;
					put_utf8(&b, unit);
				}
			}
		}
		if (*s != '-' || !any || high || (bits & ((1u << nbits) - 1)))
			goto bad;
		s++;
	}
	return buf_steal(&b);
bad:
	buf_free(&b);
	return NULL;
}
