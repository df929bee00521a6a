/* test_message.c — the wire form in which a parsed message crosses from
 * the parse worker to the daemon: every field comes back as it went, NULL
 * apart from "", attachment bytes intact; and the daemon refuses any frame
 * that is cut short, carries extra bytes or strings that are not UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailfeed/message.h"

static struct mf_message *sample(void)
{
	struct mf_message *m = message_new();
	m->subject = xstrdup("Budget \xc3\xa9t\xc3\xa9 [Q3]");
	m->subject_norm = xstrdup("budget été");
	m->from_name = xstrdup("Ann Example");
	m->from_email = xstrdup("ann@example.org");
	m->message_id = xstrdup("a1@example.org");
	m->in_reply_to = xstrdup("");
	strlist_add(&m->references, "r1@example.org");
	strlist_add(&m->references, "r2@example.org");
	strlist_add(&m->to, "team@example.org");
	m->date = 1790000000;
	m->part = xstrdup("text/plain");
	m->full_text = xstrdup("Hi\n\n> old\n");
	m->text = xstrdup("Hi");
	m->removed = xstrdup("> old");
	strlist_add(&m->hashtags, "Q3");
	m->bounce_reason = xstrdup("multipart/report");
	m->bulk = 1;
	m->own = 0;
	m->warnings = xstrdup("invalid UTF-8 bytes replaced");
	m->n_attachments = 2;
	m->attachments = xcalloc(2, sizeof *m->attachments);
	m->attachments[0].filename = xstrdup("a.pdf");
	m->attachments[0].content_type = xstrdup("application/pdf");
	m->attachments[0].size = 5;
	m->attachments[0].data = xmalloc(6);
	memcpy(m->attachments[0].data, "a\0b\nc", 5);
	sha256_hex(m->attachments[0].data, 5, m->attachments[0].sha256);
	m->attachments[0].is_inline = 1;
	/* listed only: too large to keep */
	m->attachments[1].filename = xstrdup("big.bin");
	m->attachments[1].content_type = xstrdup("application/octet-stream");
	m->attachments[1].size = 50u << 20;
	sha256_hex("", 0, m->attachments[1].sha256);
	return m;
}

static void test_round_trip(void **state)
{
	(void)state;
	struct mf_message *m = sample();
	struct buf w;
	buf_init(&w);
	message_encode(m, &w);
	struct mf_message *back = message_decode(w.data, w.len);
	assert_non_null(back);
	assert_string_equal(back->subject, m->subject);
	assert_string_equal(back->in_reply_to, "");
	assert_null(back->reply_to);
	assert_null(back->auto_reason);
	assert_null(back->list_id);
	assert_int_equal(back->references.n, 2);
	assert_string_equal(back->references.v[1], "r2@example.org");
	assert_int_equal(back->cc.n, 0);
	assert_int_equal(back->date, 1790000000);
	assert_string_equal(back->removed, "> old");
	assert_int_equal(back->bulk, 1);
	assert_int_equal(back->n_attachments, 2);
	assert_int_equal(back->attachments[0].size, 5);
	assert_memory_equal(back->attachments[0].data, "a\0b\nc", 5);
	assert_string_equal(back->attachments[0].sha256, m->attachments[0].sha256);
	assert_int_equal(back->attachments[0].is_inline, 1);
	assert_int_equal(back->attachments[1].size, 50u << 20);
	assert_null(back->attachments[1].data);
	/* the JSON of both is the same, byte for byte */
	json_t *a = message_to_json(m, 1), *b = message_to_json(back, 1);
	char *ja = json_dumps(a, JSON_SORT_KEYS), *jb = json_dumps(b, JSON_SORT_KEYS);
	assert_string_equal(ja, jb);
	free(ja);
	free(jb);
	json_decref(a);
	json_decref(b);
	message_free(back);
	message_free(m);
	buf_free(&w);
}

static void test_text_is_never_null(void **state)
{
	(void)state;
	struct mf_message *m = message_new();
	struct buf w;
	buf_init(&w);
	message_encode(m, &w);
	struct mf_message *back = message_decode(w.data, w.len);
	assert_non_null(back);
	assert_null(back->subject);
	assert_string_equal(back->full_text, "");
	assert_string_equal(back->text, "");
	assert_string_equal(back->removed, "");
	message_free(back);
	message_free(m);
	buf_free(&w);
}

static void test_bad_utf8_is_replaced(void **state)
{
	(void)state;
	struct mf_message *m = message_new();
	m->subject = xstrdup("caf\xe9 \xc3\xa9");
	struct buf w;
	buf_init(&w);
	message_encode(m, &w);
	struct mf_message *back = message_decode(w.data, w.len);
	assert_non_null(back);
	/* as in the JSON form: every byte above 0x7f of the string becomes '?' */
	assert_string_equal(back->subject, "caf? ??");
	message_free(back);
	message_free(m);
	buf_free(&w);
}

static void test_bad_frames_refused(void **state)
{
	(void)state;
	struct mf_message *m = sample();
	struct buf w;
	buf_init(&w);
	message_encode(m, &w);
	/* every frame cut short */
	for (size_t n = 0; n < w.len; n++)
		assert_null(message_decode(w.data, n));
	/* one byte too many */
	buf_putc(&w, 0);
	assert_null(message_decode(w.data, w.len));
	w.len--;
	/* the subject comes first: a length and its bytes */
	uint32_t len;
	memcpy(&len, w.data, sizeof len);
	assert_int_equal(len, strlen(m->subject));
	w.data[4] = (char)0xff; /* not UTF-8 */
	assert_null(message_decode(w.data, w.len));
	w.data[4] = 0; /* NUL inside a string */
	assert_null(message_decode(w.data, w.len));
	w.data[4] = 'B';
	struct mf_message *ok = message_decode(w.data, w.len);
	assert_non_null(ok);
	message_free(ok);
	/* a length past the end of the frame */
	len = UINT32_MAX - 1;
	memcpy(w.data, &len, sizeof len);
	assert_null(message_decode(w.data, w.len));
	message_free(m);
	buf_free(&w);
}

/* The check the daemon applies to every string of the wire form, at every
 * position of the fast ASCII scan. */
static void test_utf8_valid(void **state)
{
	(void)state;
	char s[80];
	for (size_t n = 1; n < 72; n++) {
		for (size_t at = 0; at < n; at++) {
			memset(s, 'a', n);
			assert_true(utf8_valid(s, n));
			s[at] = 0;
			assert_false(utf8_valid(s, n));
			s[at] = (char)0xff;
			assert_false(utf8_valid(s, n));
			s[at] = (char)0x80;
			assert_false(utf8_valid(s, n));
			if (at + 1 < n) {
				memcpy(s + at, "\xc3\xa9", 2);
				assert_true(utf8_valid(s, n));
			}
		}
	}
	assert_true(utf8_valid("\xf0\x9f\x98\x80 \xe2\x82\xac", 8));
	assert_false(utf8_valid("\xc0\x80", 2));	 /* overlong */
	assert_false(utf8_valid("\xed\xa0\x80", 3));	 /* surrogate */
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* beyond U+10FFFF */
	assert_false(utf8_valid("\xe2\x82", 2));	 /* cut short */
}

/* The parsed form as stored is the JSON form, byte for byte: escapes,
 * control characters, text that is not UTF-8, NULL fields, attachments. */
static void same_json_text(const struct mf_message *m)
{
	json_t *j = message_to_json(m, 0);
	char *want = json_dumps(j, JSON_COMPACT);
	char *got = message_json_text(m);
	assert_string_equal(got, want);
	json_t *back = json_loads(got, 0, NULL);
	assert_non_null(back);
	json_decref(back);
	free(got);
	free(want);
	/* as the state keeps it: the same without the clean text */
	json_object_del(j, "text");
	want = json_dumps(j, JSON_COMPACT);
	got = message_stored_json(m, NULL);
	assert_string_equal(got, want);
	free(got);
	free(want);
	/* a queued message's: a hash in place of full_text */
	json_object_del(j, "full_text");
	json_object_set_new(j, "content_sha256", json_string("c0ffee"));
	json_t *stored = json_loads((got = message_stored_json(m, "c0ffee")), 0, NULL);
	assert_non_null(stored);
	assert_true(json_equal(stored, j));
	json_decref(stored);
	free(got);
	json_decref(j);
}

static void test_json_text_is_the_json_form(void **state)
{
	(void)state;
	struct mf_message *m = sample();
	same_json_text(m);
	free(m->text);
	m->text = xstrdup(
	    "quote \" \\ back\\slash \x01\x1f\b\f\n\r\t del\x7f / \xe2\x80\xa8 \xf0\x9f\x98\x80");
	free(m->removed);
	m->removed = xstrdup("bad \xff\xfe utf-8 \xc3\xa9 \"q\"\n"); /* not UTF-8: '?' */
	free(m->subject);
	m->subject = xstrdup("\xc3");
	strlist_add(&m->cc, "a\"b@example.org");
	strlist_add(&m->cc, "\xe9t\xe9@example.org");
	m->date = 0;
	same_json_text(m);
	message_free(m);
	m = message_new(); /* everything absent */
	same_json_text(m);
	/* texts of every length around the 8-byte steps, with a byte to
	 * escape or not UTF-8 anywhere in them */
	static const unsigned char pick[] = {'a',  ' ',	 0x1f, 0x01, '"',  '\\', 0x7f, 0x21,
					     0x5b, 0x5d, 0xc3, 0xa9, 0xff, 0x80, '\n', '/'};
	srand(7);
	for (int k = 0; k < 3000; k++) {
		size_t len = (size_t)(rand() % 40);
		char *t = xmalloc(len + 1);
		for (size_t i = 0; i < len; i++)
			t[i] = (char)(rand() % 4 ? 'a' + rand() % 26 : pick[rand() % sizeof pick]);
		t[len] = 0;
		free(m->text);
		m->text = t;
		same_json_text(m);
	}
	message_free(m);
}

/* Long runs of plain text around the 16-byte steps of the scan, with one
 * byte to escape, or not UTF-8, or a character of two bytes across a step,
 * at every position; and text that turns out not to be UTF-8 only after
 * good characters (those become '?' too, as jansson's form has them). */
static void test_json_text_sixteen_byte_steps(void **state)
{
	(void)state;
	static const char *const odd[] = {"\"",	  "\\",	  "\n",	      "\x01",	      "\x1f",
					  "\xff", "\x80", "\xc3\xa9", "\xe2\x82\xac", "\x7f"};
	struct mf_message *m = message_new();
	char t[96];
	for (size_t n = 1; n < 72; n++)
		for (size_t at = 0; at < n; at++)
			for (size_t k = 0; k < sizeof odd / sizeof *odd; k++) {
				memset(t, 'a', n);
				size_t w = strlen(odd[k]);
				memcpy(t + at, odd[k], w);
				t[at + w > n ? at + w : n] = 0;
				free(m->text);
				m->text = xstrdup(t);
				same_json_text(m);
			}
	free(m->text);
	m->text = xstrdup("caf\xc3\xa9 and more plain text, then \xff at last");
	same_json_text(m);
	char *got = message_json_text(m);
	assert_non_null(strstr(got, "caf?? and more plain text, then ? at last"));
	free(got);
	message_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_text_is_never_null),
	    cmocka_unit_test(test_bad_utf8_is_replaced),
	    cmocka_unit_test(test_bad_frames_refused),
	    cmocka_unit_test(test_utf8_valid),
	    cmocka_unit_test(test_json_text_is_the_json_form),
	    cmocka_unit_test(test_json_text_sixteen_byte_steps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
