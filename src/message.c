/* message.c — struct mf_message: allocation, its JSON form and its wire
 * form.
 *
 * The JSON form is what `mailfeed inspect --json` prints.  The wire form is
 * how a parsed message crosses from the sandboxed parse worker to the
 * daemon: length-prefixed fields in a fixed order and attachment bytes as
 * they are, so that nothing is escaped, base64-encoded or parsed as text on
 * the way.  The daemon trusts nothing in it: message_decode checks every
 * length against the frame and every string for UTF-8, as a JSON parser
 * would.  Both directions live here next to each other and must stay
 * symmetric. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "mailfeed/message.h"

struct mf_message *message_new(void) { return xcalloc(1, sizeof(struct mf_message)); }

void message_free(struct mf_message *m)
{
	if (!m)
		return;
	free(m->subject);
	free(m->subject_norm);
	free(m->from_name);
	free(m->from_email);
	free(m->reply_to);
	free(m->message_id);
	free(m->in_reply_to);
	strlist_free(&m->references);
	strlist_free(&m->to);
	strlist_free(&m->cc);
	strlist_free(&m->recipients_hint);
	free(m->part);
	free(m->full_text);
	free(m->forwarded);
	free(m->text);
	free(m->removed);
	strlist_free(&m->hashtags);
	free(m->auto_reason);
	free(m->bounce_reason);
	free(m->list_id);
	free(m->auth_results);
	free(m->warnings);
	for (size_t i = 0; i < m->n_attachments; i++) {
		free(m->attachments[i].filename);
		free(m->attachments[i].content_type);
		free(m->attachments[i].data);
	}
	free(m->attachments);
	free(m);
}

/* A JSON string even when s is not valid UTF-8 (bytes above 0x7f become
 * '?'), so that one bad field never drops a key from the object. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	char *copy = xstrdup(s);
	for (char *c = copy; *c; c++)
		if ((unsigned char)*c > 0x7f)
			*c = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

json_t *json_str_or_null(const char *s) { return s ? jstr(s) : json_null(); }

static json_t *list_json(const struct strlist *l)
{
	json_t *a = json_array();
	for (size_t i = 0; i < l->n; i++)
		json_array_append_new(a, jstr(l->v[i]));
	return a;
}

static json_t *attachment_json(const struct mf_attachment *a, int with_data)
{
	json_t *o = json_object();
	json_object_set_new(o, "filename", json_str_or_null(a->filename));
	json_object_set_new(o, "content_type", json_str_or_null(a->content_type));
	json_object_set_new(o, "size", json_integer((json_int_t)a->size));
	json_object_set_new(o, "sha256", json_string(a->sha256));
	json_object_set_new(o, "inline", json_boolean(a->is_inline));
	if (with_data && a->data) {
		char *b64 = base64_encode(a->data, a->size);
		json_object_set_new(o, "data", json_string(b64));
		free(b64);
	}
	return o;
}

json_t *message_to_json(const struct mf_message *m, int with_data)
{
	json_t *o = json_object();
	char when[32];
	json_object_set_new(o, "subject", json_str_or_null(m->subject));
	json_object_set_new(o, "subject_norm", json_str_or_null(m->subject_norm));
	json_object_set_new(o, "from",
			    json_pack("{s:o,s:o}", "name", json_str_or_null(m->from_name), "email",
				      json_str_or_null(m->from_email)));
	json_object_set_new(o, "reply_to", json_str_or_null(m->reply_to));
	json_object_set_new(o, "message_id", json_str_or_null(m->message_id));
	json_object_set_new(o, "in_reply_to", json_str_or_null(m->in_reply_to));
	json_object_set_new(o, "references", list_json(&m->references));
	json_object_set_new(o, "to", list_json(&m->to));
	json_object_set_new(o, "cc", list_json(&m->cc));
	json_object_set_new(o, "recipients_hint", list_json(&m->recipients_hint));
	json_object_set_new(
	    o, "date", m->date ? json_string(time_iso(m->date, when, sizeof when)) : json_null());
	json_object_set_new(o, "part", json_str_or_null(m->part));
	json_object_set_new(o, "full_text", jstr(m->full_text ? m->full_text : ""));
	json_object_set_new(o, "text", jstr(m->text ? m->text : ""));
	json_object_set_new(o, "removed", jstr(m->removed ? m->removed : ""));
	json_object_set_new(o, "hashtags", list_json(&m->hashtags));
	json_object_set_new(o, "auto_reason", json_str_or_null(m->auto_reason));
	json_object_set_new(o, "bounce_reason", json_str_or_null(m->bounce_reason));
	json_object_set_new(o, "bulk", json_boolean(m->bulk));
	json_object_set_new(o, "list_id", json_str_or_null(m->list_id));
	json_object_set_new(o, "own", json_boolean(m->own));
	json_object_set_new(o, "auth_results", json_str_or_null(m->auth_results));
	json_object_set_new(o, "warnings", json_str_or_null(m->warnings));
	json_t *atts = json_array();
	for (size_t i = 0; i < m->n_attachments; i++)
		json_array_append_new(atts, attachment_json(&m->attachments[i], with_data));
	json_object_set_new(o, "attachments", atts);
	return o;
}

/* ---- JSON text ---------------------------------------------------------- */

/* The bytes a JSON string cannot hold as they are: the quote, the
 * backslash and the control characters, which become escapes as jansson
 * writes them. */
static int json_escaped(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

static void put_json_escape(struct buf *b, unsigned char c)
{
	static const char hex[] = "0123456789ABCDEF";
	char e[7] = {'\\', 0};
	size_t n = 2;
	switch (c) {
	case '"':
	case '\\':
		e[1] = (char)c;
		break;
	case '\b':
		e[1] = 'b';
		break;
	case '\f':
		e[1] = 'f';
		break;
	case '\n':
		e[1] = 'n';
		break;
	case '\r':
		e[1] = 'r';
		break;
	case '\t':
		e[1] = 't';
		break;
	default:
		memcpy(e + 1, "u00", 3);
		e[4] = hex[c >> 4];
		e[5] = hex[c & 15];
		n = 6;
	}
	buf_append(b, e, n);
}

#define BYTES_1 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

/* Whether none of the 8 bytes at p is to be escaped (and, ascii_only, none
 * is above 0x7f), eight at a time: (v - 0x01..) & ~v has a high bit set
 * exactly when some byte of v is zero, (x - 0x20..) & ~x when some byte of
 * x is below 0x20 (exact for the word as a whole, not per byte). */
static int plain_word(const unsigned char *p, int ascii_only)
{
	uint64_t x, q, bs;
	memcpy(&x, p, sizeof x);
	q = x ^ (BYTES_1 * '"');
	bs = x ^ (BYTES_1 * '\\');
	uint64_t hit = ((x - BYTES_1 * 0x20) & ~x) | ((q - BYTES_1) & ~q) | ((bs - BYTES_1) & ~bs);
	if (ascii_only)
		hit |= x;
	return !(hit & BYTES_80);
}

/* The first byte from p on (before end) that cannot be copied as it is:
 * one to escape, or (high_ok 0) one above 0x7f.  Sixteen bytes at a time
 * with SSE2 (every x86-64 has it), else eight (plain_word). */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end, int high_ok)
{
#ifdef __SSE2__
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
	const __m128i below = _mm_set1_epi8(0x1f), space = _mm_set1_epi8(0x20);
	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		/* unsigned v <= 0x1f, or signed v < 0x20 (also every byte above 0x7f) */
		__m128i ctl =
		    high_ok ? _mm_cmpeq_epi8(_mm_min_epu8(v, below), v) : _mm_cmplt_epi8(v, space);
		__m128i hit = _mm_or_si128(
		    ctl, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
		int mask = _mm_movemask_epi8(hit);
		if (mask)
			return p + __builtin_ctz((unsigned)mask);
		p += 16;
	}
#endif
	while (end - p >= 8 && plain_word(p, !high_ok))
		p += 8;
	while (p < end && !json_escaped(*p) && (high_ok || *p < 0x80))
		p++;
	return p;
}

/* s as a JSON string, as jstr and json_dumps make it: runs of plain bytes
 * are copied at once; text that is not UTF-8 has its bytes above 0x7f
 * written as '?'.  Whether it is UTF-8 is asked only of text with such a
 * byte (most mail text is ASCII). */
void json_put_str(struct buf *b, const char *s)
{
	if (!s) {
		buf_append(b, "null", 4);
		return;
	}
	size_t n = strlen(s);
	int valid = -1; /* not known yet */
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	buf_putc(b, '"');
	while (p < end) {
		const unsigned char *run = p;
		p = plain_run(p, end, valid == 1);
		buf_append(b, run, (size_t)(p - run));
		if (p == end)
			break;
		if (json_escaped(*p)) {
			put_json_escape(b, *p);
		} else if (valid < 0) {
			valid = utf8_valid(s, n);
			continue; /* this byte again, knowing */
		} else {
			buf_putc(b, '?');
		}
		p++;
	}
	buf_putc(b, '"');
}

void json_put_key(struct buf *b, const char *key)
{
	if (b->data[b->len - 1] != '{')
		buf_putc(b, ',');
	buf_putc(b, '"');
	buf_puts(b, key);
	buf_append(b, "\":", 2);
}

static void put_json_field(struct buf *b, const char *key, const char *s)
{
	json_put_key(b, key);
	json_put_str(b, s);
}

static void put_json_list(struct buf *b, const char *key, const struct strlist *l)
{
	json_put_key(b, key);
	buf_putc(b, '[');
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			buf_putc(b, ',');
		json_put_str(b, l->v[i]);
	}
	buf_putc(b, ']');
}

static void put_json_bool(struct buf *b, const char *key, int v)
{
	json_put_key(b, key);
	buf_puts(b, v ? "true" : "false");
}

static void put_json_attachments(struct buf *b, const struct mf_message *m)
{
	json_put_key(b, "attachments");
	buf_putc(b, '[');
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mf_attachment *a = &m->attachments[i];
		buf_append(b, i ? ",{" : "{", i ? 2 : 1);
		put_json_field(b, "filename", a->filename);
		put_json_field(b, "content_type", a->content_type);
		json_put_key(b, "size");
		buf_printf(b, "%lld", (long long)a->size);
		put_json_field(b, "sha256", a->sha256);
		put_json_bool(b, "inline", a->is_inline);
		buf_putc(b, '}');
	}
	buf_putc(b, ']');
}

/* with_text: the clean text too; content: a hash in place of full_text. */
static char *json_text(const struct mf_message *m, int with_text, const char *content)
{
	struct buf b;
	char when[32];
	buf_init(&b);
	buf_putc(&b, '{');
	put_json_field(&b, "subject", m->subject);
	put_json_field(&b, "subject_norm", m->subject_norm);
	json_put_key(&b, "from");
	buf_putc(&b, '{');
	put_json_field(&b, "name", m->from_name);
	put_json_field(&b, "email", m->from_email);
	buf_putc(&b, '}');
	put_json_field(&b, "reply_to", m->reply_to);
	put_json_field(&b, "message_id", m->message_id);
	put_json_field(&b, "in_reply_to", m->in_reply_to);
	put_json_list(&b, "references", &m->references);
	put_json_list(&b, "to", &m->to);
	put_json_list(&b, "cc", &m->cc);
	put_json_list(&b, "recipients_hint", &m->recipients_hint);
	put_json_field(&b, "date", m->date ? time_iso(m->date, when, sizeof when) : NULL);
	put_json_field(&b, "part", m->part);
	if (content)
		put_json_field(&b, "content_sha256", content);
	else
		put_json_field(&b, "full_text", m->full_text ? m->full_text : "");
	if (with_text)
		put_json_field(&b, "text", m->text ? m->text : "");
	put_json_field(&b, "removed", m->removed ? m->removed : "");
	put_json_list(&b, "hashtags", &m->hashtags);
	put_json_field(&b, "auto_reason", m->auto_reason);
	put_json_field(&b, "bounce_reason", m->bounce_reason);
	put_json_bool(&b, "bulk", m->bulk);
	put_json_field(&b, "list_id", m->list_id);
	put_json_bool(&b, "own", m->own);
	put_json_field(&b, "auth_results", m->auth_results);
	put_json_field(&b, "warnings", m->warnings);
	put_json_attachments(&b, m);
	buf_putc(&b, '}');
	return buf_steal(&b);
}

char *message_json_text(const struct mf_message *m) { return json_text(m, 1, NULL); }

char *message_stored_json(const struct mf_message *m, const char *content_sha256)
{
	return json_text(m, 0, content_sha256);
}

/* ---- wire form --------------------------------------------------------- */

#define WIRE_NULL UINT32_MAX
/* No list the parser makes comes near this; a larger count is garbage. */
#define WIRE_LIST_MAX 100000

static void put_u32(struct buf *b, uint32_t v) { buf_append(b, &v, sizeof v); }
static void put_u64(struct buf *b, uint64_t v) { buf_append(b, &v, sizeof v); }

/* A string, NULL kept apart from "".  Bytes that are not UTF-8 become '?',
 * as in the JSON form, so that the reader may insist on UTF-8. */
static void put_str(struct buf *b, const char *s)
{
	if (!s) {
		put_u32(b, WIRE_NULL);
		return;
	}
	size_t n = strlen(s);
	put_u32(b, (uint32_t)n);
	if (utf8_valid(s, n)) {
		buf_append(b, s, n);
		return;
	}
	size_t at = b->len;
	buf_append(b, s, n);
	for (size_t i = at; i < b->len; i++)
		if ((unsigned char)b->data[i] > 0x7f)
			b->data[i] = '?';
}

static void put_list(struct buf *b, const struct strlist *l)
{
	put_u32(b, (uint32_t)l->n);
	for (size_t i = 0; i < l->n; i++)
		put_str(b, l->v[i]);
}

void message_encode(const struct mf_message *m, struct buf *out)
{
	put_str(out, m->subject);
	put_str(out, m->subject_norm);
	put_str(out, m->from_name);
	put_str(out, m->from_email);
	put_str(out, m->reply_to);
	put_str(out, m->message_id);
	put_str(out, m->in_reply_to);
	put_list(out, &m->references);
	put_list(out, &m->to);
	put_list(out, &m->cc);
	put_list(out, &m->recipients_hint);
	put_u64(out, (uint64_t)(int64_t)m->date);
	put_str(out, m->part);
	put_str(out, m->full_text ? m->full_text : "");
	put_str(out, m->text ? m->text : "");
	put_str(out, m->removed ? m->removed : "");
	put_list(out, &m->hashtags);
	put_str(out, m->auto_reason);
	put_str(out, m->bounce_reason);
	put_u32(out, (uint32_t)m->bulk);
	put_str(out, m->list_id);
	put_u32(out, (uint32_t)m->own);
	put_str(out, m->auth_results);
	put_str(out, m->warnings);
	put_u32(out, (uint32_t)m->n_attachments);
	for (size_t i = 0; i < m->n_attachments; i++) {
		const struct mf_attachment *a = &m->attachments[i];
		put_str(out, a->filename);
		put_str(out, a->content_type);
		put_str(out, a->sha256);
		put_u32(out, (uint32_t)a->is_inline);
		put_u64(out, (uint64_t)a->size);
		put_u32(out, a->data != NULL);
		if (a->data)
			buf_append(out, a->data, a->size);
	}
}

struct reader {
	const char *p;
	size_t left;
	int bad;
};

static const char *take(struct reader *r, size_t n)
{
	if (r->bad || n > r->left) {
		r->bad = 1;
		return NULL;
	}
	const char *at = r->p;
	r->p += n;
	r->left -= n;
	return at;
}

static uint32_t get_u32(struct reader *r)
{
	uint32_t v = 0;
	const char *at = take(r, sizeof v);
	if (at)
		memcpy(&v, at, sizeof v);
	return v;
}

static uint64_t get_u64(struct reader *r)
{
	uint64_t v = 0;
	const char *at = take(r, sizeof v);
	if (at)
		memcpy(&v, at, sizeof v);
	return v;
}

/* 0 or 1; anything else spoils the frame. */
static int get_flag(struct reader *r)
{
	uint32_t v = get_u32(r);
	if (v > 1)
		r->bad = 1;
	return (int)v;
}

static char *get_str(struct reader *r)
{
	uint32_t n = get_u32(r);
	if (r->bad || n == WIRE_NULL)
		return NULL;
	const char *at = take(r, n);
	if (!at || !utf8_valid(at, n)) {
		r->bad = 1;
		return NULL;
	}
	return xstrndup(at, n);
}

static void get_list(struct reader *r, struct strlist *l)
{
	uint32_t n = get_u32(r);
	if (n > WIRE_LIST_MAX || n > r->left / sizeof(uint32_t))
		r->bad = 1;
	for (uint32_t i = 0; i < n && !r->bad; i++) {
		char *s = get_str(r);
		if (!s) {
			r->bad = 1;
			break;
		}
		strlist_add(l, s);
		free(s);
	}
}

struct mf_message *message_decode(const char *p, size_t n)
{
	struct reader r = {p, n, 0};
	struct mf_message *m = message_new();
	m->subject = get_str(&r);
	m->subject_norm = get_str(&r);
	m->from_name = get_str(&r);
	m->from_email = get_str(&r);
	m->reply_to = get_str(&r);
	m->message_id = get_str(&r);
	m->in_reply_to = get_str(&r);
	get_list(&r, &m->references);
	get_list(&r, &m->to);
	get_list(&r, &m->cc);
	get_list(&r, &m->recipients_hint);
	int64_t date = (int64_t)get_u64(&r);
	if (date < 0)
		r.bad = 1;
	m->date = (time_t)date;
	m->part = get_str(&r);
	m->full_text = get_str(&r);
	m->text = get_str(&r);
	m->removed = get_str(&r);
	if (!m->full_text || !m->text || !m->removed)
		r.bad = 1;
	get_list(&r, &m->hashtags);
	m->auto_reason = get_str(&r);
	m->bounce_reason = get_str(&r);
	m->bulk = get_flag(&r);
	m->list_id = get_str(&r);
	m->own = get_flag(&r);
	m->auth_results = get_str(&r);
	m->warnings = get_str(&r);
	uint32_t na = get_u32(&r);
	/* each attachment takes at least 28 bytes of the frame */
	if (na > r.left / 28)
		r.bad = 1;
	if (!r.bad && na) {
		m->attachments = xcalloc(na, sizeof *m->attachments);
		for (uint32_t i = 0; i < na && !r.bad; i++) {
			struct mf_attachment *a = &m->attachments[m->n_attachments++];
			a->filename = get_str(&r);
			a->content_type = get_str(&r);
			char *sha = get_str(&r);
			if (sha && strlen(sha) == 64)
				memcpy(a->sha256, sha, 65);
			else
				r.bad = 1;
			free(sha);
			a->is_inline = get_flag(&r);
			a->size = (size_t)get_u64(&r);
			/* the bytes of an attachment too large to keep are not sent */
			if (get_flag(&r)) {
				const char *data = take(&r, a->size);
				if (data) {
					a->data = xmalloc(a->size + 1);
					memcpy(a->data, data, a->size);
				}
			}
		}
	}
	if (r.bad || r.left) {
		message_free(m);
		return NULL;
	}
	return m;
}
