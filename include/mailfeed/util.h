/* util.h — small helpers shared by every module: growable buffers, string
 * lists, parsing of durations and sizes, time formatting, UTF-8 checks,
 * hashing. */
#ifndef MAILFEED_UTIL_H
#define MAILFEED_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Growable byte buffer; always NUL-terminated.  Owns data. */
struct buf {
	char *data;
	size_t len;
	size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the data to the caller (free()), leaving b empty. */
char *buf_steal(struct buf *b);

/* A NULL-terminated owned list of owned strings. */
struct strlist {
	char **v;
	size_t n;
};
void strlist_add(struct strlist *l, const char *s);
int strlist_has_ci(const struct strlist *l, const char *s);
void strlist_free(struct strlist *l);
/* Splits on commas (and whitespace around items); empty items skipped. */
void strlist_split(struct strlist *l, const char *csv);

/* Allocation that never returns NULL: on exhaustion logs and aborts, since
 * no caller can do anything useful without memory. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
/* Whether target names a PostgreSQL database (a postgresql:// or
 * postgres:// URI) rather than a file path. */
int is_pg_dsn(const char *target);
/* target fit to show or log: a DSN's password (user:PASSWORD@ or a
 * password= parameter) replaced by "***".  Caller frees. */
char *dsn_redact(const char *target);
/* The postgresql:// DSN on the first line of the file at path (a DSN with
 * a password lives in a private file); NULL with the reason in err.  The
 * file's bytes are wiped from memory.  Caller frees (and wipes). */
char *dsn_file_read(const char *path, char *err, size_t errlen);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "30s", "5m", "2h", "1d", plain number = seconds.  0 on success. */
int parse_duration(const char *s, long *seconds);
/* "25M", "512K", "1G", plain number = bytes.  0 on success. */
int parse_size(const char *s, long long *bytes);
/* yes/no/true/false/on/off/1/0.  0 on success. */
int parse_bool(const char *s, int *out);

/* RFC 3339 UTC, e.g. 2026-11-23T07:00:00Z, into buf (>= 21 bytes). */
const char *time_iso(time_t t, char *buf, size_t buflen);
double now_monotonic(void);
/* CPU seconds the calling thread has used (user + system). */
double now_thread_cpu(void);
/* The wall-clock time `seconds` from now, as the absolute deadline that
 * pthread_cond_timedwait and pthread_timedjoin_np take. */
struct timespec realtime_after(double seconds);

/* Length of the valid UTF-8 sequence at s (n > 0 bytes there), 0 if it
 * is invalid (overlong, surrogate, beyond U+10FFFF, truncated). */
size_t utf8_seq(const unsigned char *s, size_t n);
/* Length of the run of ASCII bytes other than NUL at the start of s. */
size_t utf8_ascii_run(const unsigned char *s, size_t n);
/* Whether s (n bytes) is valid UTF-8 without NUL bytes. */
int utf8_valid(const char *s, size_t n);

/* Lower-case hex SHA-256 of data into out (65 bytes). */
void sha256_hex(const void *data, size_t len, char out[65]);
/* HMAC-SHA256 of data with key into out (32 bytes). */
void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
		 unsigned char out[32]);
void hex_encode(const unsigned char *in, size_t n, char *out);

/* Reads a whole file; NULL with errno set on failure.  *len may be NULL. */
char *file_read_all(const char *path, size_t *len);
/* Writes data to path atomically (temp file + fsync + rename). 0 or -1. */
int file_write_atomic(const char *path, const void *data, size_t len, int mode);

/* Random bytes from the kernel. 0 or -1. */
int random_bytes(void *out, size_t n);
/* Uniform-ish jitter: a value in [base/2, base]. */
long jitter(long base);

/* The one bounded scan of a raw message's header block (no MIME parsing,
 * no decoding): at most RAW_HEADER_SCAN bytes, up to the first empty line.
 * raw_header_each visits each field that has a colon, in order, and stops
 * when fn returns non-zero.  A field is its name (blanks before the colon
 * cut) and its raw value: from after the colon to the end of its last
 * folded line, line ends and control characters included. */
#define RAW_HEADER_SCAN (256 * 1024)
struct raw_field {
	const char *name;
	size_t namelen;
	const char *value;
	size_t valuelen;
};
void raw_header_each(const char *raw, size_t len, int (*fn)(void *arg, const struct raw_field *f),
		     void *arg);
/* The length of what that scan reads: the header block up to (not
 * including) its empty line, at most RAW_HEADER_SCAN bytes. */
size_t raw_header_block_len(const char *raw, size_t len);
/* The value of the first header field `name` of a raw message: folded
 * lines joined, control characters shown as '?', at most max bytes.  For
 * showing what a message that cannot be parsed is.  Owned, or NULL. */
char *raw_header_value(const char *raw, size_t len, const char *name, size_t max);
/* The Message-ID of a raw message without <> (from the first Message-ID
 * field; control characters and spaces shown as '_').  Owned, or NULL when
 * that field holds no <id> of 1 to 998 bytes. */
char *raw_header_message_id(const char *raw, size_t len);

/* An e-mail address as mailfeed accepts it everywhere (configuration,
 * `mailfeed subscribe`, mail recipients, feed members): exactly one '@'
 * with something before and after it, at most 254 bytes.  The local part
 * is made of RFC 5322's atext and dots (quoted local parts are refused:
 * they would need quoting in every header); the domain is labels of
 * letters, digits, '-' and '_' joined by single dots ("root@localhost"
 * needs none), or a literal in brackets ("[192.0.2.1]").  UTF-8 is allowed
 * in both (RFC 6531).  So no space, control character or any of
 * < > ( ) , ; : " [ ] \ outside a literal's brackets, which would end or
 * split the address in a header. */
int email_address_valid(const char *s);

/* Base64 (RFC 4648 section 4, with padding) of n bytes; owned string. */
char *base64_encode(const void *in, size_t n);
/* Base64url (RFC 4648 section 5) without padding, as JWTs use it; owned. */
char *base64url_encode(const void *in, size_t n);
/* Appends the base64 of n bytes (padded, no line breaks) to b. */
void buf_put_base64(struct buf *b, const void *in, size_t n);

/* UTC seconds of a calendar date and time at a zone written as +hhmm
 * (e.g. -0130 for 90 minutes behind UTC), as IMAP INTERNALDATE and RFC 5322
 * Date give them; 0 when a date or time field is out of range or the time
 * is before 1970. */
time_t time_from_parts(int year, int month, int day, int hour, int min, int sec, int zone);

/* Bidirectional formatting controls (U+202A-U+202E embeddings and
 * overrides, U+2066-U+2069 isolates) reorder what a reader sees, so
 * hostile text can show one thing and say another.  text_bidi_control
 * returns the length of such a character at p (n bytes there), else 0;
 * text_strip_bidi removes them from s in place.  Marks (LRM, RLM, ALM)
 * stay: they cannot reorder a span of text. */
size_t text_bidi_control(const unsigned char *p, size_t n);
void text_strip_bidi(char *s);

int str_ends_with_ci(const char *s, const char *suffix);
char *str_trim(char *s);
void str_lower(char *s);

#endif
