/* auth.c — Authentication-Results (RFC 8601) and the verified sender.
 *
 * The header is read from the raw header block, not from anything a mail
 * client shows: only the topmost field whose authserv-id is the trusted
 * receiving server counts (fields further down may have been written by
 * the sender).  The value is tokenised the RFC 8601 way — comments in
 * parentheses (nested, with quoted pairs) vanish, quoted strings are one
 * value — so "dkim=fail (dkim=pass)" or reason="dmarc=pass" pass nothing.
 * A resinfo that does not follow the grammar is dropped as a whole. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailfeed/auth.h"
#include "mailfeed/config.h"
#include "mailfeed/util.h"

enum tok { T_END, T_WORD, T_QSTR, T_SEMI, T_EQ, T_BAD };

struct lex {
	const char *p;
};

/* Whitespace and comments: "(" … ")" nest, "\" quotes the next byte; an
 * unclosed comment runs to the end. */
static void skip_cfws(struct lex *l)
{
	for (;;) {
		while (*l->p == ' ' || *l->p == '\t' || *l->p == '\r' || *l->p == '\n')
			l->p++;
		if (*l->p != '(')
			return;
		int depth = 0;
		while (*l->p) {
			char c = *l->p++;
			if (c == '\\' && *l->p)
				l->p++;
			else if (c == '(')
				depth++;
			else if (c == ')' && --depth == 0)
				break;
		}
	}
}

static int word_char(unsigned char c) { return c > 0x20 && c != 0x7f && !strchr("()\";=\\", c); }

/* The next token; a word or quoted string is copied (lower-cased) into
 * out.  Too long for out, an unclosed quote or a stray byte: T_BAD. */
static enum tok lex_next(struct lex *l, char *out, size_t outlen)
{
	size_t n = 0;
	skip_cfws(l);
	out[0] = 0;
	if (!*l->p)
		return T_END;
	if (*l->p == ';' || *l->p == '=') {
		return *l->p++ == ';' ? T_SEMI : T_EQ;
	}
	if (*l->p == '"') {
		l->p++;
		while (*l->p && *l->p != '"') {
			if (*l->p == '\\' && l->p[1])
				l->p++;
			if (n + 1 >= outlen)
				return T_BAD;
			out[n++] = (char)tolower((unsigned char)*l->p++);
		}
		if (*l->p != '"')
			return T_BAD;
		l->p++;
		out[n] = 0;
		return T_QSTR;
	}
	while (word_char((unsigned char)*l->p)) {
		if (n + 1 >= outlen)
			return T_BAD;
		out[n++] = (char)tolower((unsigned char)*l->p++);
	}
	out[n] = 0;
	if (n == 0) {
		l->p++; /* a byte no token may hold */
		return T_BAD;
	}
	return T_WORD;
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
	snprintf(dst, dstlen, "%s", src);
}

/* A domain as compared: lower case (the lexer did that), no trailing dot. */
static void domain_norm(char *d)
{
	size_t n = strlen(d);
	while (n && d[n - 1] == '.')
		d[--n] = 0;
}

/* method [ "/" version ] "=" result, at the start of a resinfo.  Returns 1
 * when well-formed, with *t the token after it; 0 otherwise, with *t the
 * last token read. */
static int resinfo_method(struct lex *l, char *w, size_t wlen, struct auth_result *r, enum tok *t)
{
	*t = lex_next(l, w, wlen);
	if (*t != T_WORD)
		return 0;
	char *slash = strchr(w, '/');
	if (slash)
		*slash = 0;
	if (!*w || strlen(w) >= sizeof r->method)
		return 0;
	copy_str(r->method, sizeof r->method, w);
	if (lex_next(l, w, wlen) != T_EQ)
		return 0;
	if (lex_next(l, w, wlen) != T_WORD || strlen(w) >= sizeof r->result)
		return 0;
	copy_str(r->result, sizeof r->result, w);
	*t = lex_next(l, w, wlen);
	return 1;
}

/* Keeps the value of the properties the verdict reads. */
static void prop_store(struct auth_result *r, const char *name, const char *value)
{
	if (strcmp(name, "header.d") == 0)
		copy_str(r->header_d, sizeof r->header_d, value);
	else if (strcmp(name, "header.i") == 0)
		copy_str(r->header_i, sizeof r->header_i, value);
	else if (strcmp(name, "header.from") == 0)
		copy_str(r->header_from, sizeof r->header_from, value);
	else if (strcmp(name, "smtp.mailfrom") == 0)
		copy_str(r->smtp_mailfrom, sizeof r->smtp_mailfrom, value);
}

/* [reasonspec] *propspec up to the end of the resinfo, *t its first token.
 * Returns 1 when well-formed, *t then ";" or the end; 0 otherwise, with *t
 * the last token read. */
static int resinfo_props(struct lex *l, char *w, size_t wlen, struct auth_result *r, enum tok *t)
{
	while (*t != T_SEMI && *t != T_END) {
		char name[AUTH_VALUE_MAX];
		if (*t != T_WORD)
			return 0;
		copy_str(name, sizeof name, w);
		if (strcmp(name, "reason") != 0 &&
		    (!strchr(name, '.') || name[0] == '.' || name[strlen(name) - 1] == '.'))
			return 0;
		if (lex_next(l, w, wlen) != T_EQ)
			return 0;
		*t = lex_next(l, w, wlen);
		if (*t != T_WORD && *t != T_QSTR)
			return 0;
		prop_store(r, name, w);
		*t = lex_next(l, w, wlen);
	}
	return 1;
}

int auth_header_parse(const char *value, struct auth_header *out)
{
	struct lex l = {value ? value : ""};
	char w[AUTH_VALUE_MAX];
	enum tok t;

	memset(out, 0, sizeof *out);
	t = lex_next(&l, w, sizeof w);
	if (t != T_WORD && t != T_QSTR)
		return -1;
	copy_str(out->authserv_id, sizeof out->authserv_id, w);
	domain_norm(out->authserv_id);
	t = lex_next(&l, w, sizeof w);
	if (t == T_WORD && strspn(w, "0123456789") == strlen(w))
		t = lex_next(&l, w, sizeof w); /* authres-version */
	while (t != T_END) {
		struct auth_result r;
		memset(&r, 0, sizeof r);
		/* stray text, or a malformed resinfo: skip to the next one */
		if (t != T_SEMI || !resinfo_method(&l, w, sizeof w, &r, &t) ||
		    !resinfo_props(&l, w, sizeof w, &r, &t)) {
			while (t != T_SEMI && t != T_END)
				t = lex_next(&l, w, sizeof w);
			continue;
		}
		if (strcmp(r.method, "none") == 0)
			continue;
		domain_norm(r.header_d);
		domain_norm(r.header_from);
		if (out->n < AUTH_MAX_RESULTS)
			out->results[out->n++] = r;
	}
	return 0;
}

/* Two-level public suffixes common enough to matter; see auth.h. */
static const char *const two_level_suffixes[] = {
    "ac.uk",  "co.uk",	 "gov.uk", "ltd.uk", "me.uk",  "net.uk", "nhs.uk", "org.uk", "plc.uk",
    "sch.uk", "com.au",	 "net.au", "org.au", "edu.au", "gov.au", "id.au",  "co.nz",  "net.nz",
    "org.nz", "govt.nz", "ac.nz",  "co.jp",  "ne.jp",  "or.jp",	 "ac.jp",  "go.jp",  "co.za",
    "org.za", "com.br",	 "net.br", "org.br", "gov.br", "com.cn", "net.cn", "org.cn", "gov.cn",
    "edu.cn", "com.mx",	 "org.mx", "co.in",  "net.in", "org.in", "gen.in", "ac.in",  "co.kr",
    "or.kr",  "com.sg",	 "com.tw", "com.hk", "com.tr", "co.il",	 "org.il", "ac.il",  "com.ar",
    "co.id",  "com.my",	 "com.ua", "co.th",  "com.pl", "com.es", "co.at",  "or.at",  "com.ph",
    "com.vn", "com.pe",	 "com.co", "com.eg", "com.sa", "com.ng", "co.ke",  "com.pk",
};

void auth_org_domain(const char *domain, char *out, size_t outlen)
{
	char d[AUTH_VALUE_MAX];
	snprintf(d, sizeof d, "%s", domain ? domain : "");
	str_lower(d);
	domain_norm(d);
	/* where the last two and the last three labels start */
	const char *two = d, *three = d;
	int dots = 0;
	for (size_t i = strlen(d); i-- > 0 && dots < 3;) {
		if (d[i] != '.')
			continue;
		if (++dots == 2)
			two = d + i + 1;
		else if (dots == 3)
			three = d + i + 1;
	}
	const char *org = two;
	for (size_t i = 0; i < sizeof two_level_suffixes / sizeof *two_level_suffixes; i++)
		if (strcmp(two, two_level_suffixes[i]) == 0)
			org = three;
	snprintf(out, outlen, "%s", org);
}

int auth_aligned(const char *a, const char *b)
{
	char oa[AUTH_VALUE_MAX], ob[AUTH_VALUE_MAX];
	if (!a || !b || !*a || !*b)
		return 0;
	auth_org_domain(a, oa, sizeof oa);
	auth_org_domain(b, ob, sizeof ob);
	return *oa && strcmp(oa, ob) == 0;
}

/* The domain of "local@domain", "@domain" or "domain". */
static const char *domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : addr;
}

/* Visits the header fields of the raw header block, unfolded; stops when
 * fn returns non-zero. */
static void each_field(const char *raw, size_t len,
		       int (*fn)(void *arg, const char *name, size_t namelen, const char *value),
		       void *arg)
{
	size_t n = raw_header_block_len(raw, len);
	size_t i = 0;
	struct buf v;
	buf_init(&v);
	while (i < n) {
		size_t eol = i;
		while (eol < n && raw[eol] != '\n')
			eol++;
		const char *colon = memchr(raw + i, ':', eol - i);
		size_t next = eol + 1;
		buf_reset(&v);
		if (colon) {
			size_t p = (size_t)(colon - raw) + 1;
			for (;;) {
				for (; p < eol; p++) {
					unsigned char c = (unsigned char)raw[p];
					buf_putc(&v, c < 0x20 || c == 0x7f ? ' ' : (char)c);
				}
				if (eol + 1 >= n || (raw[eol + 1] != ' ' && raw[eol + 1] != '\t'))
					break;
				buf_putc(&v, ' ');
				p = eol + 1;
				for (eol = p; eol < n && raw[eol] != '\n';)
					eol++;
			}
			next = eol + 1;
			size_t namelen = (size_t)(colon - (raw + i));
			while (namelen &&
			       (raw[i + namelen - 1] == ' ' || raw[i + namelen - 1] == '\t'))
				namelen--;
			if (fn(arg, raw + i, namelen, v.data ? v.data : ""))
				break;
		}
		i = next;
	}
	buf_free(&v);
}

struct scan {
	const char *authserv;
	int froms;
	int found;
	struct auth_header h;
};

static int scan_field(void *arg, const char *name, size_t namelen, const char *value)
{
	struct scan *s = arg;
	if (namelen == 4 && strncasecmp(name, "From", 4) == 0)
		s->froms++;
	if (!s->found && namelen == 22 && strncasecmp(name, "Authentication-Results", 22) == 0 &&
	    auth_header_parse(value, &s->h) == 0 && strcasecmp(s->h.authserv_id, s->authserv) == 0)
		s->found = 1;
	return 0;
}

void auth_verify(const char *authserv, const char *raw, size_t len, const char *from_email,
		 struct auth_verdict *v)
{
	memset(v, 0, sizeof *v);
	if (!authserv || !*authserv) {
		copy_str(v->why, sizeof v->why,
			 "unverified: [gateway] trusted_authserv is not set");
		return;
	}
	if (!from_email || !strchr(from_email, '@') || !domain_of(from_email)[0]) {
		copy_str(v->why, sizeof v->why, "unverified: no sender address");
		return;
	}
	char from_dom[AUTH_VALUE_MAX];
	copy_str(from_dom, sizeof from_dom, domain_of(from_email));
	str_lower(from_dom);
	domain_norm(from_dom);

	struct scan *s = xcalloc(1, sizeof *s);
	s->authserv = authserv;
	each_field(raw ? raw : "", raw ? len : 0, scan_field, s);
	if (s->froms > 1) {
		copy_str(v->why, sizeof v->why,
			 "unverified: several From headers, so no check can vouch for one");
		goto out;
	}
	if (!s->found) {
		snprintf(v->why, sizeof v->why, "unverified: no Authentication-Results of %s",
			 authserv);
		goto out;
	}
	struct buf seen;
	buf_init(&seen);
	for (size_t i = 0; i < s->h.n && !v->verified; i++) {
		const struct auth_result *r = &s->h.results[i];
		int pass = strcmp(r->result, "pass") == 0;
		if (seen.len < 120)
			buf_printf(&seen, "%s%s=%s", seen.len ? ", " : "", r->method, r->result);
		if (!pass)
			continue;
		if (strcmp(r->method, "dmarc") == 0) {
			/* the policy check is about the From domain itself */
			if (r->header_from[0] && strcmp(r->header_from, from_dom) != 0) {
				buf_printf(&seen, " header.from=%.60s", r->header_from);
				continue;
			}
			v->verified = 1;
			snprintf(v->why, sizeof v->why, "verified: dmarc=pass by %s", authserv);
		} else if (strcmp(r->method, "dkim") == 0) {
			const char *d = r->header_d[0]	 ? r->header_d
					: r->header_i[0] ? domain_of(r->header_i)
							 : "";
			if (auth_aligned(d, from_dom)) {
				v->verified = 1;
				snprintf(v->why, sizeof v->why,
					 "verified: dkim=pass header.d=%.80s by %s", d, authserv);
			} else {
				buf_printf(&seen, " header.d=%.60s", *d ? d : "(none)");
			}
		} else if (strcmp(r->method, "spf") == 0) {
			const char *mf = r->smtp_mailfrom[0] ? domain_of(r->smtp_mailfrom) : "";
			if (auth_aligned(mf, from_dom)) {
				v->verified = 1;
				snprintf(v->why, sizeof v->why,
					 "verified: spf=pass smtp.mailfrom=%.80s by %s", mf,
					 authserv);
			} else {
				buf_printf(&seen, " smtp.mailfrom=%.60s", *mf ? mf : "(none)");
			}
		}
	}
	if (!v->verified)
		snprintf(v->why, sizeof v->why,
			 "unverified: %s found no pass aligned with %.80s (%s)", authserv, from_dom,
			 seen.len ? seen.data : "no results");
	buf_free(&seen);
out:
	free(s);
}

void auth_config_warnings(const struct mf_config *cfg, struct strlist *out)
{
	if (cfg->gateway.trusted_authserv && *cfg->gateway.trusted_authserv)
		return;
	if (cfg->feed.backend == FEED_CHATTER && cfg->feed.post_as == POST_AS_AUTHOR)
		strlist_add(out, "post_as = author, but [gateway] trusted_authserv is not set: no "
				 "sender can be verified, so every post and comment is made by the "
				 "integration user");
	if (cfg->replies.present)
		strlist_add(out, "[replies] is set, but [gateway] trusted_authserv is not: replies "
				 "and email commands are taken on the reply token and the From "
				 "address alone, which anyone holding a forwarded notification can "
				 "forge; their comments are made in the feed's name");
}
