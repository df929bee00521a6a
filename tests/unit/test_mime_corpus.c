/* test_mime_corpus.c — every message of every tests/corpus/mime-* set
 * through the parser and the convert step, as the parse worker runs them.
 *
 * Each message must have the properties of mime_props.h (no lost text, no
 * raw MIME structure in the text, valid UTF-8).  A message NAME.eml may
 * have NAME.expect beside it, one expectation a line, written and checked
 * by hand:
 *   text-has: S        the text shown contains S
 *   text-lacks: S      ... does not contain S
 *   count: S=N         ... contains S exactly N times
 *   subject: S / from: ADDR / from-name: S / part: TYPE   exact values
 *   to: ADDR / cc: ADDR                     one of the listed addresses
 *   attachments: N     number of attachments listed
 *   warning: S         the warnings (inspect --json "warnings") contain S
 *   no-warning         there are no warnings
 * Prints per corpus the pass rate, cases with lost text and cases with raw
 * MIME in the text (`make corpus`); fails on any failed case except those
 * a corpus's KNOWN file lists, with the reason they are right as they are
 * (counted apart; an expectation failure is never excused).  Set
 * CORPUS_VERBOSE=1 to see every failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glob.h>

#include "mailfeed/convert.h"
#include "mailfeed/mime.h"
#include "mime_props.h"

static int verbose;

static int count_of(const char *hay, const char *needle)
{
	int n = 0;
	size_t k = strlen(needle);
	for (const char *p = hay; k && (p = strstr(p, needle)) != NULL; p += k)
		n++;
	return n;
}

static int in_list(const struct strlist *l, const char *v)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], v))
			return 1;
	return 0;
}

/* 1 when the expectation line holds. */
static int expect_one(const struct mf_message *m, const char *line)
{
	const char *text = m->text ? m->text : "";
	const char *warn = m->warnings ? m->warnings : "";
	const char *v = strchr(line, ':');
	const char *arg = v ? v + 1 : "";
	while (*arg == ' ')
		arg++;
	size_t kn = v ? (size_t)(v - line) : strlen(line);
#define KEY(k) (kn == strlen(k) && !strncmp(line, k, kn))
	if (KEY("text-has"))
		return strstr(text, arg) != NULL;
	if (KEY("text-lacks"))
		return strstr(text, arg) == NULL;
	if (KEY("text-lacks-nul"))
		return 1; /* strings are NUL-free by construction; kept as a note */
	if (KEY("count")) {
		const char *eq = strrchr(arg, '=');
		if (!eq)
			return 0;
		char *s = xstrndup(arg, (size_t)(eq - arg));
		int ok = count_of(text, s) == atoi(eq + 1);
		free(s);
		return ok;
	}
	if (KEY("subject"))
		return m->subject && !strcmp(m->subject, arg);
	if (KEY("from"))
		return m->from_email && !strcmp(m->from_email, arg);
	if (KEY("from-name"))
		return m->from_name && !strcmp(m->from_name, arg);
	if (KEY("part"))
		return m->part && !strcmp(m->part, arg);
	if (KEY("to"))
		return in_list(&m->to, arg);
	if (KEY("cc"))
		return in_list(&m->cc, arg);
	if (KEY("attachments"))
		return m->n_attachments == (size_t)atoi(arg);
	if (KEY("warning"))
		return strcasestr(warn, arg) != NULL;
	if (KEY("no-warning"))
		return !*warn;
#undef KEY
	return 0; /* an unknown expectation is a failure */
}

struct tally {
	int total, pass, lost, raw_mime, bad_utf8, expect_failed, unparsed, known;
	char *known_list; /* the corpus's KNOWN file: "path-in-corpus reason" lines */
	size_t prefix;    /* length of the corpus directory + '/' */
};

/* Whether path is listed in the corpus's KNOWN file. */
static int is_known(const struct tally *t, const char *path)
{
	if (!t->known_list)
		return 0;
	const char *rel = path + t->prefix;
	size_t n = strlen(rel);
	for (const char *p = t->known_list; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, rel, n) && (p[n] == ' ' || p[n] == '\t'))
			return 1;
	return 0;
}

static void check_file(const char *path, struct tally *t)
{
	size_t len;
	char *raw = file_read_all(path, &len);
	assert_non_null(raw);
	char err[256] = "";
	struct mf_message *m = mime_parse(raw, len, err, sizeof err);
	t->total++;
	if (!m) {
		t->unparsed++;
		if (verbose)
			fprintf(stderr, "%s: unparsed: %s\n", path, err);
		free(raw);
		return;
	}
	convert_message(m);
	int bad = props_check(raw, len, m);
	if (bad & PROP_LOST_TEXT)
		t->lost++;
	if (bad & PROP_RAW_MIME)
		t->raw_mime++;
	if (bad & PROP_BAD_UTF8)
		t->bad_utf8++;

	char xpath[1024];
	snprintf(xpath, sizeof xpath, "%.*s.expect", (int)(strlen(path) - 4), path);
	size_t xlen;
	char *x = file_read_all(xpath, &xlen);
	int failed = 0;
	for (char *line = x ? strtok(x, "\n") : NULL; line; line = strtok(NULL, "\n")) {
		if (!*line || *line == '#')
			continue;
		if (!expect_one(m, line)) {
			failed = 1;
			if (verbose)
				fprintf(stderr, "%s: expected %s\n", path, line);
		}
	}
	free(x);
	if (failed)
		t->expect_failed++;
	if (!bad && !failed)
		t->pass++;
	else if (!failed && is_known(t, path))
		t->known++;
	else if (verbose)
		fprintf(stderr, "%s: props %d; warnings: %s\n--- text:\n%s\n---\n", path, bad,
			m->warnings ? m->warnings : "", m->text);
	message_free(m);
	free(raw);
}

static void corpus_all(void **state)
{
	(void)state;
	verbose = getenv("CORPUS_VERBOSE") != NULL;
	glob_t dirs;
	assert_int_equal(glob("tests/corpus/mime-*", GLOB_ONLYDIR, NULL, &dirs), 0);
	int failures = 0;
	for (size_t d = 0; d < dirs.gl_pathc; d++) {
		char pat[1024];
		struct tally t = {0};
		char kpath[1024];
		size_t klen;
		snprintf(kpath, sizeof kpath, "%s/KNOWN", dirs.gl_pathv[d]);
		t.known_list = file_read_all(kpath, &klen);
		t.prefix = strlen(dirs.gl_pathv[d]) + 1;
		/* the Stalwart set keeps its messages in subfolders */
		const char *forms[] = {"/*.eml", "/eml/*/*.eml"};
		for (size_t f = 0; f < 2; f++) {
			glob_t files;
			snprintf(pat, sizeof pat, "%s%s", dirs.gl_pathv[d], forms[f]);
			if (glob(pat, 0, NULL, &files) == 0)
				for (size_t i = 0; i < files.gl_pathc; i++)
					check_file(files.gl_pathv[i], &t);
			globfree(&files);
		}
		printf("%-16s %3d/%3d pass (%5.1f %%)  lost text %d  raw MIME in text %d  "
		       "bad UTF-8 %d  expectations failed %d  unparsed %d  (flagged, right as is: %d)\n",
		       dirs.gl_pathv[d] + strlen("tests/corpus/"), t.pass, t.total,
		       t.total ? 100.0 * t.pass / t.total : 0.0, t.lost, t.raw_mime, t.bad_utf8,
		       t.expect_failed, t.unparsed, t.known);
		failures += t.total - t.pass - t.known;
		free(t.known_list);
	}
	globfree(&dirs);
	fflush(stdout);
	assert_int_equal(failures, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(corpus_all),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
