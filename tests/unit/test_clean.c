/* test_clean.c — reply cleaning: focused cases, and the reply corpora under
 * tests/corpus/reply-* (cases.json as described in their README).
 *
 * The corpus test prints the pass rate per directory and overall and every
 * failing case, and fails when a directory's rate drops below the rate
 * recorded in corpus_dirs or when any case loses new text (a line of the expected reply, or a
 * "contains" string, missing from the cleaned text).  Whole messages (.eml)
 * go through the MIME parser and HTML bodies through the HTML renderer
 * first, as they do in the daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "mailfeed/clean.h"
#include "mailfeed/convert.h"
#include "mailfeed/html.h"
#include "mailfeed/message.h"
#include "mailfeed/mime.h"
#include "mailfeed/util.h"

#define CORPUS "tests/corpus/"
/* Pass rates reached per directory; raise them, never lower them.  The
 * talon HTML cases depend on the HTML renderer's output as well. */
static const struct {
	const char *dir;
	double min_rate;
} corpus_dirs[] = {
    {"reply-github", 1.0}, {"reply-willdurand", 1.0}, {"reply-crisp", 1.0},
    {"reply-talon", 1.0},  {"reply-zapier", 1.0},     {"reply-crafted", 1.0},
};

static void check(const char *in, const char *sender, const char *text, const char *removed)
{
	struct clean_result r;
	clean_reply(in, sender, &r);
	assert_string_equal(r.text, text);
	if (removed)
		assert_string_equal(r.removed, removed);
	clean_result_free(&r);
}

static void test_top_posting(void **state)
{
	check(
	    "Sounds good.\n\nOn Mon, 3 Nov 2025 at 10:00, Ann <ann@example.com> wrote:\n> Lunch?\n",
	    NULL, "Sounds good.",
	    "On Mon, 3 Nov 2025 at 10:00, Ann <ann@example.com> wrote:\n> Lunch?");
	check("Ja.\n\nAm 25.06.2015 um 10:55 schrieb Test user:\n> Mittag?\n", NULL, "Ja.", NULL);
	check("Oui.\n\nLe 19 mars 2014 10:37, Cédric <c@example.com> a écrit :\n> Déjeuner ?\n",
	      NULL, "Oui.", NULL);
	check("好的\n\n在 2016年11月8日，下午2:23，Test user <test@example.com> 写道：\n> 午饭？\n",
	      NULL, "好的", NULL);
}

static void test_wrapped_header(void **state)
{
	check(
	    "Yes.\n\nOn Tue, Mar 1, 2011 at 6:02 PM, Abhishek Kona\n<a@example.com> wrote:\n> q\n",
	    NULL, "Yes.", NULL);
}

static void test_inline_answers_kept(void **state)
{
	/* an answer means nothing without what it answers: the answered quote
	 * stays as quote lines, the attribution goes */
	check("On 1 Jan 2025, Bob <b@example.com> wrote:\n> Question one?\nAnswer one.\n\n> "
	      "Question two?\nAnswer two.\n",
	      NULL, "> Question one?\nAnswer one.\n\n> Question two?\nAnswer two.", NULL);
	/* trailing history that nothing answers goes */
	check("On 1 Jan 2025, Bob <b@example.com> wrote:\n> Can you do Friday at ten?\n\nYes, "
	      "that works.\n\n> The rest of the old message goes on here at length.\n> And "
	      "more of it that nobody answered.\n",
	      NULL, "> Can you do Friday at ten?\n\nYes, that works.", NULL);
	/* a plain bottom-post keeps only the answer */
	check("On 1 Jan 2025, Bob <b@example.com> wrote:\n> Lunch on Friday?\n\nYes, that "
	      "works.\n",
	      NULL, "Yes, that works.", NULL);
}

static void test_outlook_blocks(void **state)
{
	check("Fine.\n\n________________________________\nFrom: Ann <ann@example.com>\nSent: "
	      "Monday\nTo: Bob\nSubject: x\n\nold text\n",
	      NULL, "Fine.", NULL);
	check("Gut.\n\n*Von:* Ann\n*Gesendet:* Montag\n*An:* Bob\n*Betreff:* x\n\nalt\n", NULL,
	      "Gut.", NULL);
	check("OK\n\n-----Original Message-----\nold\n", NULL, "OK", NULL);
	check("OK\n\nFrom: Ann\n", NULL, "OK\n\nFrom: Ann", "");
}

static void test_signatures(void **state)
{
	check("Done.\n\n-- \nAnn\nACME\n", NULL, "Done.", "-- \nAnn\nACME");
	check("Done.\n\nSent from my iPhone\n", NULL, "Done.", "Sent from my iPhone");
	check("I sent from my iPhone yesterday.\n", NULL, "I sent from my iPhone yesterday.", "");
	check("Thanks, will do.\n\nStavros Papa\nvia mobile\n", "Stavros Papa", "Thanks, will do.",
	      "Stavros Papa\nvia mobile");
	/* the name alone is not the whole text */
	check("Stavros Papa\n", "Stavros Papa", "Stavros Papa", "");
}

static void test_forward_kept(void **state)
{
	const char *in = "See below.\n\n---------- Forwarded message ---------\nFrom: Ann "
			 "<ann@example.com>\nDate: Mon\nSubject: x\nTo: Bob\n\n> quoted there\n";
	check(in, NULL,
	      "See below.\n\n---------- Forwarded message ---------\nFrom: Ann "
	      "<ann@example.com>\nDate: Mon\nSubject: x\nTo: Bob\n\n> quoted there",
	      "");
}

static void test_forward_quoted_is_history(void **state)
{
	check("Thanks!\n\nOn 2 Jan 2025, Ann <a@example.com> wrote:\n> ---------- Forwarded "
	      "message ---------\n> From: Bob\n",
	      NULL, "Thanks!", NULL);
	/* a sentence about a forwarded message is not a marker */
	check("Here is the forwarded message:\n\nOn 2 Jan 2025, Ann <a@example.com> wrote:\n> x\n",
	      NULL, "Here is the forwarded message:", NULL);
}

static void test_not_headers(void **state)
{
	const char *in = "On Thursday I will come.\nSomething wrote: nothing\nOn the other hand, "
			 "fine.\n";
	check(in, NULL,
	      "On Thursday I will come.\nSomething wrote: nothing\nOn the other hand, fine.", "");
	check("", NULL, "", "");
	check("\n\n", NULL, "", "");
}

/* Every line of the input ends up in text or in removed. */
static void test_nothing_lost(void **state)
{
	const char *in = "Hi\n\nOn 1 Jan 2025, Bob <b@x> wrote:\n> a\n> b\nmid\n-- \nsig\n";
	struct clean_result r;
	clean_reply(in, NULL, &r);
	assert_non_null(strstr(r.text, "Hi"));
	assert_non_null(strstr(r.text, "mid"));
	assert_non_null(strstr(r.removed, "> a"));
	assert_non_null(strstr(r.removed, "sig"));
	assert_non_null(strstr(r.removed, "wrote:"));
	clean_result_free(&r);
}

/* Large inputs of the shapes that make naive scanners quadratic. */
/* Markers match whatever their case, in Latin and Cyrillic letters; a
 * digit anywhere in a long line counts as a header's date. */
static void test_case_folding(void **state)
{
	check("Sounds good.\n\nOn Monday, November the third 2025, ANN <ann@example.com> "
	      "WROTE:\n> Lunch?\n",
	      NULL, "Sounds good.",
	      "On Monday, November the third 2025, ANN <ann@example.com> WROTE:\n> Lunch?");
	check("Да.\n\n03.11.2025, 10:00, Анна <anna@example.com> НАПИСАЛ:\n> Обед?\n", NULL, "Да.",
	      NULL);
	check("Sure.\n\n-----ORIGINAL MESSAGE-----\nFrom: Ann\nSent: Monday\nTo: Bob\nSubject: "
	      "Lunch\n\nLunch?\n",
	      NULL, "Sure.", NULL);
	check("Sure, noon works.\n\nSENT FROM MY IPHONE\n", NULL, "Sure, noon works.",
	      "SENT FROM MY IPHONE");
	check(
	    "See the figures attached.\n\nBob\n\nTHIS MESSAGE IS CONFIDENTIAL AND INTENDED SOLELY "
	    "FOR THE ADDRESSEE. IF YOU ARE NOT THE INTENDED RECIPIENT, NOTIFY THE SENDER.\n",
	    "Bob", "See the figures attached.\n\nBob", NULL);
	check("Цифры во вложении.\n\nБоб\n\nЭТО СООБЩЕНИЕ КОНФИДЕНЦИАЛЬНО. Disclosure is "
	      "PROHIBITED.\n",
	      NULL, "Цифры во вложении.\n\nБоб", NULL);
	/* one such word is not a notice; a verb without a date is no header */
	check("Done.\n\nThe VIRUS scan of the upload passed.\n", NULL,
	      "Done.\n\nThe VIRUS scan of the upload passed.", "");
	check("Thanks, Ann wrote the summary for café reviews.\n\nLooks fine to me.\n", NULL,
	      "Thanks, Ann wrote the summary for café reviews.\n\nLooks fine to me.", "");
}

static void test_linear_time(void **state)
{
	size_t n = 4 << 20;
	char *big = malloc(n + 1);
	struct clean_result r;
	clock_t t0;
	for (size_t i = 0; i < n; i++)
		big[i] = (i % 1000 == 999) ? '\n' : (i % 7 ? 'a' : ' ');
	big[n] = 0;
	memcpy(big, "On ", 3);
	t0 = clock();
	clean_reply(big, "a a", &r);
	clean_result_free(&r);
	memset(big, '>', n);
	clean_reply(big, NULL, &r);
	clean_result_free(&r);
	for (size_t i = 0; i < n; i++)
		big[i] = i % 2 ? '\n' : '>';
	clean_reply(big, NULL, &r);
	clean_result_free(&r);
	for (size_t i = 0; i < n; i++)
		big[i] = (i % 8 == 7) ? '\n' : "From: x"[i % 8];
	clean_reply(big, NULL, &r);
	clean_result_free(&r);
	free(big);
	/* generous: a quadratic scan of 4 MB takes minutes */
	assert_true((double)(clock() - t0) / CLOCKS_PER_SEC < 10.0);
}

/* --- corpus ----------------------------------------------------------------- */

/* The README's comparison form: LF line ends, trailing spaces stripped,
 * leading and trailing blank lines dropped. */
static char *normalise(const char *s)
{
	struct buf b;
	const char *p = s;
	buf_init(&b);
	while (*p) {
		const char *e = p;
		size_t n;
		while (*e && *e != '\n' && *e != '\r')
			e++;
		n = (size_t)(e - p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (b.len || n) {
			buf_append(&b, p, n);
			buf_putc(&b, '\n');
		}
		p = e;
		if (*p == '\r')
			p++;
		if (*p == '\n')
			p++;
	}
	while (b.len && b.data[b.len - 1] == '\n')
		b.data[--b.len] = 0;
	if (!b.data)
		return xstrdup("");
	return buf_steal(&b);
}

static char *squeeze(const char *s)
{
	struct buf b;
	buf_init(&b);
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			buf_putc(&b, *s);
	return b.data ? buf_steal(&b) : xstrdup("");
}

static int same(const char *got, const char *want, int ignore_ws)
{
	char *w = normalise(want);
	int eq;
	if (ignore_ws) {
		char *a = squeeze(got), *c = squeeze(w);
		eq = strcmp(a, c) == 0;
		free(a);
		free(c);
	} else {
		eq = strcmp(got, w) == 0;
	}
	free(w);
	return eq;
}

/* Whether every non-blank line of want is a line of got. */
static int keeps_lines(const char *got, const char *want)
{
	char *w = normalise(want);
	int ok = 1;
	for (char *line = w, *nl; ok && line && *line; line = nl ? nl + 1 : NULL) {
		size_t n;
		char *needle;
		nl = strchr(line, '\n');
		n = nl ? (size_t)(nl - line) : strlen(line);
		if (n == 0)
			continue;
		needle = xstrndup(line, n);
		ok = 0;
		for (const char *h = strstr(got, needle); h && !ok; h = strstr(h + 1, needle))
			ok = (h == got || h[-1] == '\n') && (h[n] == '\n' || h[n] == 0);
		free(needle);
	}
	free(w);
	return ok;
}

struct tally {
	int pass, fail, lost;
};

static int has_unquoted_line(const char *s)
{
	while (*s) {
		const char *e = strchr(s, '\n');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		size_t i = 0;
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
			i++;
		if (i < n && s[i] != '>')
			return 1;
		if (!e)
			break;
		s = e + 1;
	}
	return 0;
}

/* Runs one input against the expectations; returns 1 when it passes and
 * sets *lost when new text went missing. */
static int run_case(const char *input, const char *sender, json_t *expect, int ignore_ws, int *lost,
		    struct buf *why)
{
	struct clean_result r;
	char *got;
	int ok = 1;
	json_t *v;
	size_t i;
	clean_reply(input, sender, &r);
	got = normalise(r.text);
	*lost = 0;
	/* trimming never leaves nothing when there is an unquoted line */
	if (!*got && has_unquoted_line(input)) {
		ok = 0;
		*lost = 1;
		buf_printf(why, " empty text");
	}
	if ((v = json_object_get(expect, "reply"))) {
		int any = same(got, json_string_value(v), ignore_ws);
		json_t *alt;
		json_array_foreach(json_object_get(expect, "also_acceptable"), i, alt) any |=
		    same(got, json_string_value(alt), ignore_ws);
		if (!any) {
			ok = 0;
			buf_printf(why, "reply differs");
		}
		if (!ignore_ws && !keeps_lines(got, json_string_value(v))) {
			int alt_kept = 0;
			json_array_foreach(json_object_get(expect, "also_acceptable"), i, alt)
			    alt_kept |= keeps_lines(got, json_string_value(alt));
			*lost = !alt_kept;
		}
	}
	if (json_is_true(json_object_get(expect, "unchanged"))) {
		char *in = normalise(input);
		if (strcmp(got, in) != 0) {
			ok = 0;
			*lost = 1;
			buf_printf(why, " not unchanged");
		}
		free(in);
	}
	if ((v = json_object_get(expect, "starts_with")) &&
	    strncmp(got, json_string_value(v), strlen(json_string_value(v))) != 0) {
		ok = 0;
		buf_printf(why, " starts_with");
	}
	if ((v = json_object_get(expect, "ends_with"))) {
		size_t a = strlen(got), b = strlen(json_string_value(v));
		if (a < b || strcmp(got + a - b, json_string_value(v)) != 0) {
			ok = 0;
			buf_printf(why, " ends_with");
		}
	}
	json_array_foreach(json_object_get(expect, "contains"), i,
			   v) if (!strstr(got, json_string_value(v)))
	{
		ok = 0;
		*lost = 1;
		buf_printf(why, " lacks \"%.40s\"", json_string_value(v));
	}
	json_array_foreach(json_object_get(expect, "excludes"), i,
			   v) if (strstr(got, json_string_value(v)))
	{
		ok = 0;
		buf_printf(why, " has \"%.40s\"", json_string_value(v));
	}
	if ((v = json_object_get(expect, "signature")) && *json_string_value(v)) {
		char *sig = normalise(json_string_value(v)), *rem = normalise(r.removed);
		if (!strstr(rem, sig)) {
			ok = 0;
			buf_printf(why, " signature not found");
		}
		free(sig);
		free(rem);
	}
	free(got);
	clean_result_free(&r);
	return ok;
}

static char *read_rel(const char *dir, const char *rel)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	return file_read_all(path, NULL);
}

static char *replace_all(const char *s, const char *what, const char *with)
{
	struct buf b;
	size_t n = strlen(what);
	buf_init(&b);
	for (const char *p = s, *h; *p; p = h + n) {
		h = strstr(p, what);
		if (!h) {
			buf_puts(&b, p);
			break;
		}
		buf_append(&b, p, (size_t)(h - p));
		buf_puts(&b, with);
	}
	return b.data ? buf_steal(&b) : xstrdup("");
}

static void corpus_dir(const char *dir, struct tally *t)
{
	char path[512];
	json_error_t err;
	json_t *cases, *c;
	size_t i;
	snprintf(path, sizeof path, "%s/cases.json", dir);
	cases = json_load_file(path, 0, &err);
	assert_non_null(cases);
	json_array_foreach(cases, i, c)
	{
		const char *input = json_string_value(json_object_get(c, "input"));
		const char *tmpl = json_string_value(json_object_get(c, "template"));
		const char *cmp = json_string_value(json_object_get(c, "compare"));
		const char *sender_file = json_string_value(json_object_get(c, "sender"));
		json_t *expect = json_object_get(c, "expect");
		char *body, *sender = NULL;
		int ok = 1, lost = 0;
		struct buf why;
		body = read_rel(dir, input);
		assert_non_null(body);
		if (str_ends_with_ci(input, ".eml")) {
			/* a whole message: what the user sees is the parser's text */
			char perr[256];
			struct mf_message *m = mime_parse(body, strlen(body), perr, sizeof perr);
			if (m)
				convert_message(m);
			assert_non_null(m);
			free(body);
			body = xstrdup(m->full_text ? m->full_text : "");
			if (!sender_file && m->from_name)
				sender = xstrdup(m->from_name);
			message_free(m);
		} else if (str_ends_with_ci(input, ".html")) {
			char *text = html_to_text(body, strlen(body));
			free(body);
			body = text;
		}
		if (sender_file) {
			free(sender);
			sender = read_rel(dir, sender_file);
			assert_non_null(sender);
			str_trim(sender);
		}
		buf_init(&why);
		if (tmpl) {
			char *variants =
			    read_rel(dir, json_string_value(json_object_get(c, "variants")));
			char *save = NULL;
			assert_non_null(variants);
			for (char *v = strtok_r(variants, "\n", &save); v;
			     v = strtok_r(NULL, "\n", &save)) {
				char *in = replace_all(body, tmpl, v);
				int l = 0;
				if (!run_case(in, sender, expect, cmp != NULL, &l, &why)) {
					ok = 0;
					buf_printf(&why, " [variant %.60s]", v);
				}
				lost |= l;
				free(in);
			}
			free(variants);
		} else {
			ok = run_case(body, sender, expect, cmp != NULL, &lost, &why);
		}
		if (ok)
			t->pass++;
		else
			t->fail++;
		if (lost)
			t->lost++;
		if (!ok || lost)
			printf("corpus: FAIL %s/%s:%s%s\n", dir, input, why.data ? why.data : "",
			       lost ? " NEW TEXT LOST" : "");
		buf_free(&why);
		free(body);
		free(sender);
	}
	json_decref(cases);
}

static void test_corpus(void **state)
{
	struct tally all = {0};
	int below = 0;
	for (size_t i = 0; i < sizeof corpus_dirs / sizeof *corpus_dirs; i++) {
		struct tally t = {0};
		char dir[256];
		double rate;
		snprintf(dir, sizeof dir, CORPUS "%s", corpus_dirs[i].dir);
		corpus_dir(dir, &t);
		rate = (double)t.pass / (t.pass + t.fail);
		printf("corpus: %-18s %d/%d passed (%.1f%%), %d lost new text\n",
		       corpus_dirs[i].dir, t.pass, t.pass + t.fail, 100.0 * rate, t.lost);
		if (rate + 1e-9 < corpus_dirs[i].min_rate) {
			printf("corpus: %s below its recorded rate %.1f%%\n", corpus_dirs[i].dir,
			       100.0 * corpus_dirs[i].min_rate);
			below = 1;
		}
		all.pass += t.pass;
		all.fail += t.fail;
		all.lost += t.lost;
	}
	printf("corpus: overall %d/%d passed (%.1f%%), %d lost new text\n", all.pass,
	       all.pass + all.fail, 100.0 * all.pass / (all.pass + all.fail), all.lost);
	assert_int_equal(all.lost, 0);
	assert_false(below);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_top_posting),
	    cmocka_unit_test(test_wrapped_header),
	    cmocka_unit_test(test_inline_answers_kept),
	    cmocka_unit_test(test_outlook_blocks),
	    cmocka_unit_test(test_signatures),
	    cmocka_unit_test(test_forward_kept),
	    cmocka_unit_test(test_forward_quoted_is_history),
	    cmocka_unit_test(test_not_headers),
	    cmocka_unit_test(test_nothing_lost),
	    cmocka_unit_test(test_case_folding),
	    cmocka_unit_test(test_linear_time),
	    cmocka_unit_test(test_corpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
