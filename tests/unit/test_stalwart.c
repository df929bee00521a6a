/* test_stalwart.c — the Stalwart mail-parser corpus (tests/corpus/
 * mime-stalwart): for every message, the decoded Subject, the From name and
 * address and the text body must match upstream's parse.  Bodies are
 * compared with whitespace folded; an HTML-only body is compared after both
 * sides went through html_to_text.  The pass rate is printed; the test
 * fails when it drops below the rate measured when this test was written,
 * or when any message (malformed ones included) cannot be parsed safely. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glob.h>
#include <jansson.h>

#include "mailfeed/convert.h"
#include "mailfeed/html.h"
#include "mailfeed/mime.h"

#define STALWART_SUBJECT_FLOOR 92
#define STALWART_FROM_FLOOR 96
/* 91, not 92: thirdparty/001 is a multipart/alternative of three
 * text/plain parts, which upstream joins and mailfeed shows one of. */
#define STALWART_BODY_FLOOR 91
#define CORPUS "tests/corpus/mime-stalwart/eml"

/* Whitespace runs to one space; trimmed.  Owned. */
static char *fold(const char *s)
{
	struct buf b;
	buf_init(&b);
	int space = 0;
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			space = 1;
			continue;
		}
		/* non-breaking space, as written by html converters */
		if (c == 0xc2 && (unsigned char)s[1] == 0xa0) {
			s++;
			space = 1;
			continue;
		}
		if (space && b.len)
			buf_putc(&b, ' ');
		space = 0;
		buf_putc(&b, (char)c);
	}
	return buf_steal(&b);
}

static const json_t *header(const json_t *part, const char *name)
{
	size_t i;
	const json_t *h;
	json_array_foreach(json_object_get(part, "headers"), i, h)
	{
		const json_t *n = json_object_get(h, "name");
		if (json_is_string(n) && !strcmp(json_string_value(n), name))
			return json_object_get(h, "value");
	}
	return NULL;
}

/* The text a reader sees according to upstream. */
static char *expected_body(const json_t *doc, int *is_html)
{
	struct buf b;
	buf_init(&b);
	const json_t *parts = json_object_get(doc, "parts");
	size_t i;
	const json_t *idx;
	*is_html = 0;
	json_array_foreach(json_object_get(doc, "text_body"), i, idx)
	{
		const json_t *body =
		    json_object_get(json_array_get(parts, (size_t)json_integer_value(idx)), "body");
		const char *t = json_string_value(json_object_get(body, "Text"));
		const char *h = json_string_value(json_object_get(body, "Html"));
		if (h) {
			char *x = html_to_text(h, strlen(h));
			buf_puts(&b, x);
			free(x);
			*is_html = 1;
		} else if (t) {
			buf_puts(&b, t);
		}
		buf_putc(&b, '\n');
	}
	return buf_steal(&b);
}

struct tally {
	int total, subject, from, body;
};

static void check_one(const char *eml, struct tally *t)
{
	char jpath[512];
	snprintf(jpath, sizeof jpath, "%.*s.json", (int)(strlen(eml) - 4), eml);
	json_error_t jerr;
	json_t *doc = json_load_file(jpath, 0, &jerr);
	size_t len;
	char *raw = file_read_all(eml, &len);
	assert_non_null(raw);
	char err[256];
	struct mf_message *m = mime_parse(raw, len, err, sizeof err);
	if (m)
		convert_message(m);
	free(raw);
	t->total++;
	if (!m || !doc) {
		/* Upstream may reject; we must only never crash. */
		message_free(m);
		json_decref(doc);
		return;
	}
	const json_t *root = json_array_get(json_object_get(doc, "parts"), 0);
	const json_t *subj = header(root, "subject");
	const char *es = json_string_value(json_object_get(subj, "Text"));
	char *a = fold(es ? es : ""), *b = fold(m->subject);
	if (!strcmp(a, b))
		t->subject++;
	else if (getenv("STALWART_VERBOSE"))
		fprintf(stderr, "%s: subject %s | %s\n", eml, a, b);
	free(a);
	free(b);

	const json_t *from = header(root, "from");
	const json_t *list = json_object_get(json_object_get(from, "Address"), "List");
	const json_t *first = json_array_get(list, 0);
	const char *fname = json_string_value(json_object_get(first, "name"));
	const char *faddr = json_string_value(json_object_get(first, "address"));
	char *la = faddr ? strdup(faddr) : NULL;
	if (la)
		str_lower(la);
	if (((!fname && !m->from_name) ||
	     (fname && m->from_name && !strcmp(fname, m->from_name))) &&
	    ((!la && !m->from_email) || (la && m->from_email && !strcmp(la, m->from_email))))
		t->from++;
	else if (getenv("STALWART_VERBOSE"))
		fprintf(stderr, "%s: from %s <%s> | %s <%s>\n", eml, fname, faddr, m->from_name,
			m->from_email);
	free(la);

	int is_html;
	char *eb = expected_body(doc, &is_html);
	char *fe = fold(eb), *fo = fold(m->full_text);
	/* A forwarded message is appended after the body. */
	if (!strcmp(fe, fo) || (*fe && !strncmp(fe, fo, strlen(fe))))
		t->body++;
	else if (getenv("STALWART_VERBOSE"))
		fprintf(stderr, "%s: body%s\n  want: %.300s\n  got:  %.300s\n", eml,
			is_html ? " (html)" : "", fe, fo);
	free(eb);
	free(fe);
	free(fo);
	message_free(m);
	json_decref(doc);
}

static void run_suite(const char *pattern, struct tally *t)
{
	glob_t g;
	memset(&g, 0, sizeof g);
	assert_int_equal(glob(pattern, 0, NULL, &g), 0);
	for (size_t i = 0; i < g.gl_pathc; i++)
		check_one(g.gl_pathv[i], t);
	globfree(&g);
}

static void test_corpus(void **state)
{
	(void)state;
	struct tally wellformed = {0}, malformed = {0};
	run_suite(CORPUS "/rfc/*.eml", &wellformed);
	run_suite(CORPUS "/legacy/*.eml", &wellformed);
	run_suite(CORPUS "/thirdparty/*.eml", &wellformed);
	run_suite(CORPUS "/malformed/*.eml", &malformed);
	printf("stalwart well-formed: %d messages; subject %d, from %d, body %d\n",
	       wellformed.total, wellformed.subject, wellformed.from, wellformed.body);
	printf("stalwart malformed: %d messages parsed without crashing; subject %d, from %d, "
	       "body %d\n",
	       malformed.total, malformed.subject, malformed.from, malformed.body);
	assert_int_equal(wellformed.total, 84);
	assert_int_equal(malformed.total, 23);
	/* Floors: the rates measured when this test was written. */
	assert_true(wellformed.subject * 100 >= wellformed.total * STALWART_SUBJECT_FLOOR);
	assert_true(wellformed.from * 100 >= wellformed.total * STALWART_FROM_FLOOR);
	assert_true(wellformed.body * 100 >= wellformed.total * STALWART_BODY_FLOOR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
