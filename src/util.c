/* util.c — buffers, string lists, value parsers, hashing and file helpers. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/log.h"
#include "mailfeed/util.h"

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		log_error("fatal error=out-of-memory size=%zu", n);
		abort();
	}
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p) {
		log_error("fatal error=out-of-memory size=%zu", n * m);
		abort();
	}
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		log_error("fatal error=out-of-memory size=%zu", n);
		abort();
	}
	return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p = NULL;
	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0) {
		log_error("fatal error=out-of-memory");
		abort();
	}
	va_end(ap);
	return p;
}

void buf_init(struct buf *b) { memset(b, 0, sizeof *b); }
void buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}
void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = 0;
}

static void buf_grow(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_grow(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
}

void buf_puts(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }
void buf_putc(struct buf *b, char c) { buf_append(b, &c, 1); }

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

char *buf_steal(struct buf *b)
{
	char *p = b->data ? b->data : xstrdup("");
	buf_init(b);
	return p;
}

void strlist_add(struct strlist *l, const char *s)
{
	l->v = xrealloc(l->v, (l->n + 2) * sizeof *l->v);
	l->v[l->n++] = xstrdup(s);
	l->v[l->n] = NULL;
}

int strlist_has_ci(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcasecmp(l->v[i], s) == 0)
			return 1;
	return 0;
}

void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void strlist_split(struct strlist *l, const char *csv)
{
	char *copy = xstrdup(csv), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *t = str_trim(tok);
		if (*t)
			strlist_add(l, t);
	}
	free(copy);
}

static int parse_scaled(const char *s, long long *out, const char *units, const long long *mult)
{
	char *end;
	long long v;
	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0)
		return -1;
	while (*end == ' ')
		end++;
	if (*end) {
		const char *u = strchr(units, tolower((unsigned char)*end));
		if (!u || end[1])
			return -1;
		long long m = mult[u - units];
		if (v > LLONG_MAX / m)
			return -1;
		v *= m;
	}
	*out = v;
	return 0;
}

int parse_duration(const char *s, long *seconds)
{
	static const long long mult[] = {1, 60, 3600, 86400, 604800};
	long long v;
	if (parse_scaled(s, &v, "smhdw", mult) < 0 || v > LONG_MAX)
		return -1;
	*seconds = (long)v;
	return 0;
}

int parse_size(const char *s, long long *bytes)
{
	static const long long mult[] = {1, 1024, 1024 * 1024, 1024LL * 1024 * 1024};
	return parse_scaled(s, bytes, "bkmg", mult);
}

int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

const char *time_iso(time_t t, char *buf, size_t buflen)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, buflen, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

double now_monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec realtime_after(double seconds)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	long long ns = (long long)ts.tv_nsec + (long long)(seconds * 1e9);
	ts.tv_sec += (time_t)(ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return ts;
}

double now_thread_cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
size_t utf8_seq(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t len;
	unsigned int cp;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* Length of the run of ASCII bytes other than NUL at s (at most n),
 * eight bytes at a time: most mail text is ASCII. */
size_t utf8_ascii_run(const unsigned char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	size_t i = 0;
	/* 32 bytes at a time while none is >= 0x80 or zero */
	while (i + 32 <= n) {
		uint64_t v[4];
		memcpy(v, s + i, sizeof v);
		uint64_t zero = 0;
		for (int k = 0; k < 4; k++)
			zero |= (v[k] - ones) & ~v[k];
		if (((v[0] | v[1] | v[2] | v[3]) | zero) & highs)
			break;
		i += 32;
	}
	while (i + 8 <= n) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		if ((v | ((v - ones) & ~v)) & highs)
			break;
		i += 8;
	}
	while (i < n && s[i] && s[i] < 0x80)
		i++;
	return i;
}

int utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		i += utf8_ascii_run(u + i, n - i);
		if (i >= n)
			break;
		size_t k = u[i] ? utf8_seq(u + i, n - i) : 0;
		if (k == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* SHA-256 fetched from OpenSSL's provider once: EVP_sha256() is looked up
 * again on every digest, which for the short inputs hashed per message
 * (keys, ids) cost as much as the hashing. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

void sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	pthread_once(&sha256_once, sha256_fetch);
	EVP_Digest(data, len, md, &mdlen, sha256_md ? sha256_md : EVP_sha256(), NULL);
	hex_encode(md, 32, out);
}

void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
		 unsigned char out[32])
{
	unsigned int outlen = 32;
	HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen);
}

char *file_read_all(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct buf b;
	struct stat st;
	ssize_t n;
	if (fd < 0)
		return NULL;
	buf_init(&b);
	/* room for the whole file at once; one more byte to see the end */
	size_t cap = fstat(fd, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size + 2 : 65536;
	b.data = xmalloc(cap);
	b.cap = cap;
	for (;;) {
		if (b.len + 1 == b.cap) {
			b.cap *= 2;
			b.data = xrealloc(b.data, b.cap);
		}
		n = read(fd, b.data + b.len, b.cap - b.len - 1);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			buf_free(&b);
			errno = e;
			return NULL;
		}
		b.len += (size_t)n;
	}
	close(fd);
	b.data[b.len] = 0;
	if (len)
		*len = b.len;
	return buf_steal(&b);
}

int file_write_atomic(const char *path, const void *data, size_t len, int mode)
{
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	const char *p = data;
	if (fd < 0) {
		free(tmp);
		return -1;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		fd = -1;
		goto fail;
	}
	free(tmp);
	return 0;
fail : {
	int e = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	errno = e;
	return -1;
}
}

int random_bytes(void *out, size_t n)
{
	unsigned char *p = out;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

long jitter(long base)
{
	unsigned int r = 0;
	if (base <= 1)
		return base;
	random_bytes(&r, sizeof r);
	return base / 2 + (long)(r % (unsigned long)(base / 2 + 1));
}

int str_ends_with_ci(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

char *str_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

void str_lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

size_t raw_header_block_len(const char *raw, size_t len)
{
	size_t n = len < RAW_HEADER_SCAN ? len : RAW_HEADER_SCAN;
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(raw + i, '\n', n - i);
		size_t eol = nl ? (size_t)(nl - raw) : n;
		if (eol == i || (eol == i + 1 && raw[i] == '\r'))
			return i; /* the empty line that ends it */
		i = eol + 1;
	}
	return n;
}

void raw_header_each(const char *raw, size_t len, int (*fn)(void *arg, const struct raw_field *f),
		     void *arg)
{
	size_t n = raw_header_block_len(raw, len);
	size_t i = 0;
	while (i < n) {
		size_t eol = i;
		while (eol < n && raw[eol] != '\n')
			eol++;
		/* folded: the field goes on in the next lines */
		while (eol + 1 < n && (raw[eol + 1] == ' ' || raw[eol + 1] == '\t'))
			for (eol++; eol < n && raw[eol] != '\n';)
				eol++;
		const char *colon = memchr(raw + i, ':', eol - i);
		if (colon && raw[i] != ' ' && raw[i] != '\t') {
			struct raw_field f = {raw + i, (size_t)(colon - (raw + i)), colon + 1,
					      (size_t)(raw + eol - (colon + 1))};
			while (f.namelen &&
			       (f.name[f.namelen - 1] == ' ' || f.name[f.namelen - 1] == '\t'))
				f.namelen--;
			if (fn(arg, &f))
				return;
		}
		i = eol + 1;
	}
}

struct field_find {
	const char *name;
	const struct raw_field *found;
	struct raw_field f;
};

static int field_find_one(void *arg, const struct raw_field *f)
{
	struct field_find *ff = arg;
	if (f->namelen != strlen(ff->name) || strncasecmp(f->name, ff->name, f->namelen) != 0)
		return 0;
	ff->f = *f;
	ff->found = &ff->f;
	return 1;
}

static const struct raw_field *raw_header_find(const char *raw, size_t len, struct field_find *ff)
{
	raw_header_each(raw, len, field_find_one, ff);
	return ff->found;
}

char *raw_header_value(const char *raw, size_t len, const char *name, size_t max)
{
	struct field_find ff = {name, NULL, {0}};
	const struct raw_field *f = raw_header_find(raw, len, &ff);
	if (!f)
		return NULL;
	struct buf b;
	buf_init(&b);
	size_t p = 0;
	while (p < f->valuelen && (f->value[p] == ' ' || f->value[p] == '\t'))
		p++;
	for (; p < f->valuelen && b.len < max; p++) {
		unsigned char c = (unsigned char)f->value[p];
		if (c == '\n')
			continue; /* a folded line goes on after its line end */
		if (c == '\r' || c == '\t')
			c = ' ';
		buf_putc(&b, c < 0x20 || c == 0x7f ? '?' : (char)c);
	}
	char *v = xstrdup(str_trim(b.data ? b.data : ""));
	buf_free(&b);
	return v;
}

char *raw_header_message_id(const char *raw, size_t len)
{
	struct field_find ff = {"Message-ID", NULL, {0}};
	const struct raw_field *f = raw_header_find(raw, len, &ff);
	if (!f)
		return NULL;
	const char *lt = memchr(f->value, '<', f->valuelen);
	if (!lt)
		return NULL;
	const char *gt = memchr(lt, '>', (size_t)(f->value + f->valuelen - lt));
	if (!gt)
		return NULL;
	lt = memrchr(lt, '<', (size_t)(gt - lt)); /* "<<id>": the id is what the last '<' opens */
	if (gt - lt <= 1 || gt - lt >= 1000)
		return NULL;
	char *id = xstrndup(lt + 1, (size_t)(gt - lt - 1));
	for (char *p = id; *p; p++)
		if ((unsigned char)*p < 0x21 || *p == 0x7f)
			*p = '_';
	return id;
}

/* A byte of a local part: RFC 5322's atext, a dot, or UTF-8. */
static int local_byte(unsigned char c)
{
	return c >= 0x80 || isalnum(c) || c == '.' || strchr("!#$%&'*+-/=?^_`{|}~", c);
}

/* A byte of a domain name's labels (and their dots), or of a domain
 * literal's inside ("[192.0.2.1]", "[IPv6:2001:db8::1]"). */
static int domain_byte(unsigned char c, int literal)
{
	if (literal)
		return isalnum(c) || c == '.' || c == ':';
	return c >= 0x80 || isalnum(c) || c == '.' || c == '-' || c == '_';
}

int email_address_valid(const char *s)
{
	const char *at = s ? strchr(s, '@') : NULL;
	if (!at || at == s || !at[1] || strchr(at + 1, '@') || strlen(s) > 254)
		return 0;
	for (const char *p = s; p < at; p++)
		if (!local_byte((unsigned char)*p))
			return 0;
	const char *d = at + 1, *end = d + strlen(d);
	int literal = *d == '[';
	if (literal && (end - d < 3 || end[-1] != ']'))
		return 0;
	if (literal) {
		d++;
		end--;
	} else if (*d == '.' || end[-1] == '.' || strstr(d, "..")) {
		return 0; /* an empty label */
	}
	for (const char *p = d; p < end; p++)
		if (!domain_byte((unsigned char)*p, literal))
			return 0;
	return 1;
}

void buf_put_base64(struct buf *b, const void *in, size_t n)
{
	/* EVP_EncodeBlock takes an int length: encode in large slices */
	const size_t slice = (size_t)3 << 20;
	for (size_t i = 0; i < n; i += slice) {
		size_t k = n - i < slice ? n - i : slice;
		size_t need = 4 * ((k + 2) / 3) + 1;
		if (b->cap - b->len < need) {
			b->cap = b->len + need + b->cap / 2;
			b->data = xrealloc(b->data, b->cap);
		}
		int w = EVP_EncodeBlock((unsigned char *)b->data + b->len,
					(const unsigned char *)in + i, (int)k);
		b->len += (size_t)w;
		b->data[b->len] = '\0';
	}
}

char *base64_encode(const void *in, size_t n)
{
	struct buf b;
	buf_init(&b);
	buf_put_base64(&b, in, n);
	return buf_steal(&b);
}

char *base64url_encode(const void *in, size_t n)
{
	char *s = base64_encode(in, n);
	char *o = s;
	for (const char *p = s; *p && *p != '='; p++)
		*o++ = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	*o = '\0';
	return s;
}

time_t time_from_parts(int year, int month, int day, int hour, int min, int sec, int zone)
{
	if (year < 1970 || year >= 10000 || month < 1 || month > 12 || day < 1 || day > 31 ||
	    hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 60)
		return 0;
	struct tm tm = {0};
	tm.tm_year = year - 1900;
	tm.tm_mon = month - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	int z = zone < 0 ? -zone : zone;
	long off = (long)(z / 100) * 3600 + (long)(z % 100) * 60;
	time_t t = timegm(&tm) - (zone < 0 ? -off : off);
	return t < 0 ? 0 : t;
}

size_t text_bidi_control(const unsigned char *p, size_t n)
{
	if (n < 3 || p[0] != 0xe2)
		return 0;
	if (p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae)
		return 3; /* U+202A..U+202E */
	if (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)
		return 3; /* U+2066..U+2069 */
	return 0;
}

void text_strip_bidi(char *s)
{
	if (!s)
		return;
	size_t len = strlen(s), w = 0;
	for (size_t r = 0; r < len;) {
		size_t k = text_bidi_control((const unsigned char *)s + r, len - r);
		if (k) {
			r += k;
			continue;
		}
		s[w++] = s[r++];
	}
	s[w] = 0;
}

int is_pg_dsn(const char *target)
{
	return target && (strncmp(target, "postgresql://", 13) == 0 ||
			  strncmp(target, "postgres://", 11) == 0);
}

char *dsn_redact(const char *target)
{
	if (!is_pg_dsn(target))
		return xstrdup(target ? target : "");
	struct buf b = {0};
	const char *auth = strstr(target, "://") + 3;
	const char *end = auth + strcspn(auth, "/?#");
	const char *at = NULL;
	for (const char *p = auth; p < end; p++)
		if (*p == '@')
			at = p; /* the last one: a password may hold '@' */
	const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon)
		buf_printf(&b, "%.*s***%s", (int)(colon + 1 - target), target, at);
	else
		buf_printf(&b, "%s", target);
	char *out = buf_steal(&b);
	for (char *p = strstr(out, "password="); p; p = strstr(p + 1, "password=")) {
		if (p != out && p[-1] != '?' && p[-1] != '&')
			continue;
		char *v = p + 9, *stop = v + strcspn(v, "&#");
		memmove(v + 3, stop, strlen(stop) + 1);
		memcpy(v, "***", 3);
	}
	return out;
}

char *dsn_file_read(const char *path, char *err, size_t errlen)
{
	size_t len = 0;
	char *text = file_read_all(path, &len);
	if (!text) {
		snprintf(err, errlen, "cannot read the DSN file %s: %s", path, strerror(errno));
		return NULL;
	}
	text[strcspn(text, "\r\n")] = 0;
	char *dsn = str_trim(text);
	char *out = is_pg_dsn(dsn) ? xstrdup(dsn) : NULL;
	if (!out)
		snprintf(err, errlen, "%s does not hold a postgresql:// DSN on its first line",
			 path);
	explicit_bzero(text, len);
	free(text);
	return out;
}
