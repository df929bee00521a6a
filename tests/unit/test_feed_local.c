/* test_feed_local.c — the built-in local feed: idempotent delivery by key,
 * comments under their post, reading a group back, and the Atom and text
 * files a user opens (escaped, threaded, hashtags as categories). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

struct fx {
	char dir[64];
	char feeds[96];
	struct store *st;
	struct mf_config cfg;
	void *ctx;
	struct strlist tags;
};

static int setup(void **state)
{
	struct fx *x = xcalloc(1, sizeof *x);
	char path[128], err[256];
	snprintf(x->dir, sizeof x->dir, "/tmp/test_feed_local.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(path, sizeof path, "%s/state.db", x->dir);
	snprintf(x->feeds, sizeof x->feeds, "%s/out/feeds", x->dir);
	x->st = store_open(path, err, sizeof err);
	assert_non_null(x->st);
	x->cfg.feed.dir = x->feeds;
	assert_int_equal(feed_local_ops.open(&x->cfg, x->st, &x->ctx, err, sizeof err), 0);
	strlist_add(&x->tags, "fundraising");
	strlist_add(&x->tags, "q3&more");
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;
	char cmd[160];
	feed_local_ops.close(x->ctx);
	store_close(x->st);
	strlist_free(&x->tags);
	snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
	assert_int_equal(system(cmd), 0);
	free(x);
	return 0;
}

static struct feed_item item(struct fx *x, const char *key, enum feed_kind kind, const char *parent,
			     const char *text)
{
	return (struct feed_item){.key = key,
				  .kind = kind,
				  .group = "team/ops",
				  .parent_remote_id = parent,
				  .author_name = "Alice <Admin>",
				  .author_email = "alice@example.org",
				  .subject = "Q3 & Q4 appeal",
				  .text = text,
				  .hashtags = &x->tags};
}

static void deliver_one(struct fx *x, struct feed_item it, struct feed_result *r)
{
	feed_local_ops.deliver(x->ctx, &it, 1, r);
}

static char *read_out(struct fx *x, const char *name)
{
	char path[160];
	snprintf(path, sizeof path, "%s/%s", x->feeds, name);
	char *s = file_read_all(path, NULL);
	assert_non_null(s);
	return s;
}

static void test_deliver_is_idempotent(void **state)
{
	struct fx *x = *state;
	struct feed_result r1, r2;
	deliver_one(x, item(x, "k1", FEED_POST, NULL, "first"), &r1);
	assert_int_equal(r1.status, FEED_OK);
	assert_string_equal(r1.remote_id, "local-1");
	deliver_one(x, item(x, "k1", FEED_POST, NULL, "first"), &r2);
	assert_int_equal(r2.status, FEED_OK);
	assert_string_equal(r2.remote_id, "local-1");
	feed_result_clear(&r1);
	feed_result_clear(&r2);

	struct feed_item it = item(x, "k1", FEED_POST, NULL, "first");
	char *rid = NULL;
	assert_int_equal(feed_local_ops.reconcile(x->ctx, &it, &rid), 1);
	assert_string_equal(rid, "local-1");
	free(rid);
	it.key = "never-sent";
	assert_int_equal(feed_local_ops.reconcile(x->ctx, &it, &rid), 0);

	struct stat sb;
	assert_int_equal(stat(x->feeds, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0750);
}

static void test_comment_needs_existing_post(void **state)
{
	struct fx *x = *state;
	struct feed_result r;
	deliver_one(x, item(x, "c", FEED_COMMENT, "local-42", "orphan"), &r);
	assert_int_equal(r.status, FEED_PERMANENT);
	assert_non_null(strstr(r.error, "local-42"));
	feed_result_clear(&r);
}

static void test_read_group_and_files(void **state)
{
	struct fx *x = *state;
	struct feed_result r;
	deliver_one(x, item(x, "p", FEED_POST, NULL, "Plan <b>bold</b>\nsecond line"), &r);
	assert_int_equal(r.status, FEED_OK);
	char *post = xstrdup(r.remote_id);
	feed_result_clear(&r);
	deliver_one(x, item(x, "c", FEED_COMMENT, post, "Agreed\x01 fully"), &r);
	assert_int_equal(r.status, FEED_OK);
	feed_result_clear(&r);

	struct feed_entry *e;
	size_t n;
	char err[256];
	assert_int_equal(feed_local_ops.read_group(x->ctx, "team/ops", 0, &e, &n, err, sizeof err),
			 0);
	assert_int_equal(n, 2);
	assert_string_equal(e[0].remote_id, post);
	assert_null(e[0].parent_remote_id);
	assert_string_equal(e[1].parent_remote_id, post);
	assert_string_equal(e[1].author_email, "alice@example.org");
	feed_entries_free(e, n);
	assert_int_equal(feed_local_ops.read_group(x->ctx, "other", 0, &e, &n, err, sizeof err), 0);
	assert_int_equal(n, 0);
	feed_entries_free(e, n);

	/* the group name becomes a safe file name */
	char *atom = read_out(x, "team_ops.atom");
	assert_non_null(strstr(atom, "<feed xmlns=\"http://www.w3.org/2005/Atom\""));
	assert_non_null(strstr(atom, "<title>Q3 &amp; Q4 appeal</title>"));
	assert_non_null(strstr(atom, "Plan &lt;b&gt;bold&lt;/b&gt;"));
	assert_non_null(strstr(atom, "<name>Alice &lt;Admin&gt;</name>"));
	assert_non_null(strstr(atom, "<category term=\"q3&amp;more\"/>"));
	assert_non_null(strstr(atom, "<thr:in-reply-to ref=\"urn:mailfeed:local-1\""));
	assert_null(strchr(atom, '\x01'));
	free(atom);

	char *txt = read_out(x, "team_ops.txt");
	assert_non_null(strstr(txt, "== Q3 & Q4 appeal\n"));
	assert_non_null(strstr(txt, "tags: #fundraising #q3&more\n"));
	assert_non_null(strstr(txt, "   Plan <b>bold</b>\n   second line\n"));
	assert_non_null(strstr(txt, "\n      -> Alice <Admin> <alice@example.org>"));
	assert_non_null(strstr(txt, "         Agreed fully\n"));
	free(txt);
	free(post);
}

/* A group whose files are many times the size of a write piece: both
 * files are complete, every entry in them, and no temporary file is left. */
static void test_big_group_files_are_whole(void **state)
{
	struct fx *x = *state;
	enum { N = 300 };
	char key[64], text[1200];
	struct feed_item items[N];
	struct feed_result res[N];
	char keys[N][32];
	memset(text, 'a', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof keys[i], "big-%03d", i);
		items[i] = item(x, keys[i], FEED_POST, NULL, text);
	}
	feed_local_ops.deliver(x->ctx, items, N, res);
	for (int i = 0; i < N; i++) {
		assert_int_equal(res[i].status, FEED_OK);
		feed_result_clear(&res[i]);
	}
	char *atom = read_out(x, "team_ops.atom");
	char *txt = read_out(x, "team_ops.txt");
	assert_true(strlen(atom) > 4 * 64 * 1024);
	assert_non_null(strstr(atom, "</feed>\n"));
	for (int i = 1; i <= N; i++) {
		snprintf(key, sizeof key, "<id>urn:mailfeed:local-%d</id>", i);
		assert_non_null(strstr(atom, key));
	}
	size_t threads = 0;
	for (const char *p = txt; (p = strstr(p, "\n== ")); p++)
		threads++;
	assert_int_equal(threads, 200); /* the newest LOCAL_TXT_THREADS */
	free(atom);
	free(txt);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", x->feeds);
	assert_int_not_equal(system(cmd), 0);
}

/* Texts are read a window of rows at a time: each item still shows its
 * own text, a comment far from its post (in time) under that post. */
static void test_texts_of_a_big_group_each_in_its_place(void **state)
{
	struct fx *x = *state;
	enum { N = 150 };
	struct feed_item items[N];
	struct feed_result res[N];
	char keys[N][32], texts[N][48];
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof keys[i], "w-%03d", i);
		snprintf(texts[i], sizeof texts[i], "the text of item %03d", i);
		items[i] = item(x, keys[i], FEED_POST, NULL, texts[i]);
	}
	/* the last two: comments on the first post */
	items[N - 2] = item(x, keys[N - 2], FEED_COMMENT, "local-1", texts[N - 2]);
	items[N - 1] = item(x, keys[N - 1], FEED_COMMENT, "local-1", texts[N - 1]);
	feed_local_ops.deliver(x->ctx, items, N, res);
	for (int i = 0; i < N; i++) {
		assert_int_equal(res[i].status, FEED_OK);
		feed_result_clear(&res[i]);
	}
	char *atom = read_out(x, "team_ops.atom");
	char *txt = read_out(x, "team_ops.txt");
	char want[160];
	for (int i = 0; i < N; i++) {
		snprintf(want, sizeof want,
			 "<id>urn:mailfeed:local-%d</id>\n    <title>Q3 &amp; Q4 appeal</title>",
			 i + 1);
		const char *entry = strstr(atom, want);
		assert_non_null(entry);
		const char *content = strstr(entry, "<content type=\"text\">");
		assert_non_null(content);
		assert_true(strncmp(content + 21, texts[i], strlen(texts[i])) == 0);
	}
	/* the first post, then its two comments, are the last thread */
	const char *first = strstr(txt, "   the text of item 000");
	assert_non_null(first);
	const char *c1 = strstr(first, "         the text of item 148");
	const char *c2 = strstr(first, "         the text of item 149");
	assert_non_null(c1);
	assert_non_null(c2);
	assert_true(c1 < c2);
	free(atom);
	free(txt);
}

static void test_safe_names(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"q3.pdf", "q3.pdf"},
	    {"../../etc/passwd", "passwd"},
	    {"C:\\Users\\bob\\report.docx", "report.docx"},
	    {".bashrc", "bashrc"},
	    {"..", "attachment"},
	    {"", "attachment"},
	    {"a\tb\x01.txt", "a_b_.txt"},
	    {"what?:*<>|.txt", "what______.txt"},
	    {"Pr\xc3\xa9sentation \xc3\xa9t\xc3\xa9.pptx",
	     "Pr\xc3\xa9sentation \xc3\xa9t\xc3\xa9.pptx"},
	    {"invoice\xe2\x80\xae"
	     "fdp.exe",
	     "invoicefdp.exe"},
	    {"bad\xff\xfe"
	     "utf8.txt",
	     "bad__utf8.txt"},
	    {"-rf.txt", "rf.txt"},
	    {"trailing. . ", "trailing"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *s = feed_local_safe_name(cases[i][0]);
		assert_string_equal(s, cases[i][1]);
		free(s);
	}
	char *n = feed_local_safe_name(NULL);
	assert_string_equal(n, "attachment");
	free(n);
	/* long names are cut, keeping the extension, at a character */
	char longname[400];
	memset(longname, 0, sizeof longname);
	for (int i = 0; i < 150; i++)
		strcat(longname, "\xc3\xa9");
	strcat(longname, ".pdf");
	n = feed_local_safe_name(longname);
	assert_true(strlen(n) <= FEED_LOCAL_NAME_MAX);
	assert_string_equal(n + strlen(n) - 4, ".pdf");
	assert_int_equal(utf8_valid(n, strlen(n)), 1);
	free(n);
}

static void test_files_kept_and_linked(void **state)
{
	struct fx *x = *state;
	static const unsigned char pdf[] = "%PDF-1.4 tiny";
	static const unsigned char big[4096] = {0};
	struct feed_attachment att[] = {
	    {.filename = "../q3 plan.pdf",
	     .content_type = "application/pdf",
	     .size = sizeof pdf - 1,
	     .data = pdf},
	    {.filename = "q3 plan.pdf",
	     .content_type = "application/pdf",
	     .size = sizeof pdf - 1,
	     .data = pdf},
	    {.filename = "huge.bin",
	     .content_type = "application/octet-stream",
	     .size = sizeof big,
	     .data = big},
	    {.filename = "gone.txt", .content_type = "text/plain", .size = 10, .data = NULL},
	};
	x->cfg.feed.max_file_size = 1000;
	x->cfg.feed.max_files = 10;
	feed_local_ops.close(x->ctx);
	char err[256];
	assert_int_equal(feed_local_ops.open(&x->cfg, x->st, &x->ctx, err, sizeof err), 0);
	struct feed_item it = item(x, "f1", FEED_POST, NULL, "see attached");
	it.attachments = att;
	it.n_attachments = 4;
	struct feed_result r;
	deliver_one(x, it, &r);
	assert_int_equal(r.status, FEED_OK);
	feed_result_clear(&r);
	/* a repeated delivery writes nothing twice */
	deliver_one(x, it, &r);
	assert_int_equal(r.status, FEED_OK);
	feed_result_clear(&r);

	char path[256];
	struct stat sb;
	snprintf(path, sizeof path, "%s/team_ops.files/q3 plan.pdf", x->feeds);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);
	assert_int_equal(sb.st_size, sizeof pdf - 1);
	snprintf(path, sizeof path, "%s/team_ops.files/q3 plan-2.pdf", x->feeds);
	assert_int_equal(stat(path, &sb), 0);
	snprintf(path, sizeof path, "%s/team_ops.files/q3 plan-3.pdf", x->feeds);
	assert_int_not_equal(stat(path, &sb), 0);
	snprintf(path, sizeof path, "%s/team_ops.files/huge.bin", x->feeds);
	assert_int_not_equal(stat(path, &sb), 0);

	char *atom = read_out(x, "team_ops.atom");
	assert_non_null(strstr(atom,
			       "<link rel=\"enclosure\" href=\"team_ops.files/q3%20plan.pdf\" "
			       "length=\"13\" type=\"application/pdf\""));
	assert_non_null(strstr(atom, "href=\"team_ops.files/q3%20plan-2.pdf\""));
	assert_null(strstr(atom, "huge.bin\" length"));
	assert_non_null(strstr(atom, "[file huge.bin (4 KB) not kept: too large]"));
	assert_non_null(
	    strstr(atom, "[file gone.txt (10 bytes) not kept: its bytes were not kept]"));
	free(atom);
	char *txt = read_out(x, "team_ops.txt");
	assert_non_null(strstr(txt, "File: q3 plan.pdf (13 bytes): team_ops.files/q3 plan.pdf"));
	assert_non_null(strstr(txt, "[file huge.bin (4 KB) not kept: too large]"));
	free(txt);

	struct feed_entry *e;
	size_t n;
	assert_int_equal(feed_local_ops.read_group(x->ctx, "team/ops", 0, &e, &n, err, sizeof err),
			 0);
	assert_int_equal(n, 1);
	assert_int_equal(e[0].n_files, 4);
	assert_string_equal(e[0].files[1].name, "q3 plan-2.pdf");
	assert_int_equal(e[0].files[1].size, 13);
	assert_memory_equal(e[0].files[1].url, "file:///", 8);
	assert_non_null(strstr(e[0].files[1].url, "/team_ops.files/q3%20plan-2.pdf"));
	assert_null(e[0].files[2].url);
	feed_entries_free(e, n);
}

static void test_max_files(void **state)
{
	struct fx *x = *state;
	static const unsigned char d[] = "x";
	struct feed_attachment att[3];
	for (int i = 0; i < 3; i++)
		att[i] = (struct feed_attachment){.filename = "a.txt", .size = 1, .data = d};
	x->cfg.feed.max_files = 2;
	x->cfg.feed.max_file_size = 1000;
	feed_local_ops.close(x->ctx);
	char err[256];
	assert_int_equal(feed_local_ops.open(&x->cfg, x->st, &x->ctx, err, sizeof err), 0);
	struct feed_item it = item(x, "m1", FEED_POST, NULL, "three");
	it.attachments = att;
	it.n_attachments = 3;
	struct feed_result r;
	deliver_one(x, it, &r);
	assert_int_equal(r.status, FEED_OK);
	feed_result_clear(&r);
	char *atom = read_out(x, "team_ops.atom");
	assert_non_null(strstr(atom, "team_ops.files/a-2.txt"));
	assert_null(strstr(atom, "team_ops.files/a-3.txt"));
	assert_non_null(strstr(atom, "[file a.txt (1 byte) not kept: too many files]"));
	free(atom);
}

/* Both renderings of a text mixing plain ASCII runs with markup, controls,
 * DEL, UTF-8, broken UTF-8 and bidi controls: each character lands as the
 * reader should see it, in a batch of several items whose texts are read
 * back one row at a time. */
static void test_text_rendered_character_by_character(void **state)
{
	struct fx *x = *state;
	struct feed_item its[3] = {
	    item(x, "p1", FEED_POST, NULL, "caf\xc3\xa9 & \"tea\"\x7f<x>\xff end"),
	    item(x, "p2", FEED_POST, NULL, "left\xe2\x80\xaeright\ttab\x02"),
	    item(x, "p3", FEED_POST, NULL, "plain line one\nplain line two"),
	};
	struct feed_result r[3];
	feed_local_ops.deliver(x->ctx, its, 3, r);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].status, FEED_OK);
		feed_result_clear(&r[i]);
	}
	char *atom = read_out(x, "team_ops.atom");
	assert_non_null(strstr(atom, "caf\xc3\xa9 &amp; &quot;tea&quot;\xef\xbf\xbd&lt;x&gt;"
				     "\xef\xbf\xbd end</content>"));
	assert_non_null(strstr(atom, "leftright\ttab\xef\xbf\xbd</content>"));
	assert_non_null(strstr(atom, "plain line one\nplain line two</content>"));
	free(atom);
	char *txt = read_out(x, "team_ops.txt");
	assert_non_null(strstr(txt, "   caf\xc3\xa9 & \"tea\"<x>\xff end\n"));
	assert_non_null(strstr(txt, "   leftright\ttab\n"));
	assert_non_null(strstr(txt, "   plain line one\n   plain line two\n"));
	free(txt);
}

/* A batch of items with many files (synced together, not one by one):
 * every file is in place with its bytes under its own name, the item that
 * was there already keeps its files, and no temporary file is left. */
static void test_batch_of_files(void **state)
{
	struct fx *x = *state;
	char err[256], path[256], want[32];
	x->cfg.feed.max_files = 10;
	x->cfg.feed.max_file_size = 1000;
	feed_local_ops.close(x->ctx);
	assert_int_equal(feed_local_ops.open(&x->cfg, x->st, &x->ctx, err, sizeof err), 0);
	static const char *const keys[] = {"b0", "b1", "b2", "b3", "b4", "b5"};
	static const char *const data[] = {"zero", "one", "two", "three", "four", "five"};
	struct feed_attachment att[6][2];
	struct feed_item its[6];
	struct feed_result r[6];
	for (int i = 0; i < 6; i++) {
		att[i][0] = (struct feed_attachment){.filename = "notes.txt",
						     .size = strlen(data[i]),
						     .data = (const unsigned char *)data[i]};
		att[i][1] = (struct feed_attachment){
		    .filename = "big.bin", .size = 5000, .data = (const unsigned char *)data[i]};
		its[i] = item(x, keys[i], FEED_POST, NULL, "with files");
		its[i].attachments = att[i];
		its[i].n_attachments = 2;
	}
	feed_local_ops.deliver(x->ctx, its, 1, r); /* b0 first: delivered again below */
	assert_int_equal(r[0].status, FEED_OK);
	feed_result_clear(&r[0]);
	feed_local_ops.deliver(x->ctx, its, 6, r);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(r[i].status, FEED_OK);
		feed_result_clear(&r[i]);
	}
	for (int i = 0; i < 6; i++) {
		if (i == 0)
			snprintf(path, sizeof path, "%s/team_ops.files/notes.txt", x->feeds);
		else
			snprintf(path, sizeof path, "%s/team_ops.files/notes-%d.txt", x->feeds,
				 i + 1);
		char *got = file_read_all(path, NULL);
		assert_non_null(got);
		snprintf(want, sizeof want, "%s", data[i]);
		assert_string_equal(got, want);
		free(got);
	}
	snprintf(path, sizeof path, "%s/team_ops.files/notes-7.txt", x->feeds);
	struct stat sb;
	assert_int_not_equal(stat(path, &sb), 0);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "ls -A %s/team_ops.files | grep -q tmp", x->feeds);
	assert_int_not_equal(system(cmd), 0);
}

/* The hashtags and files stored with an item are what json_dumps made of
 * them: escapes, multibyte text, a tag that is not UTF-8 left out, no
 * tags, no files. */
static void test_stored_lists_are_jansson_s(void **state)
{
	struct fx *x = *state;
	static const char *const tags[] = {"plain",	"q\"uote", "back\\slash",
					   "tab\there", "\x01",	   "\xc3\xa9t\xc3\xa9",
					   "bad\xff",	"/",	   "\xe2\x82"};
	char key[16];
	for (size_t k = 0; k <= sizeof tags / sizeof tags[0]; k++) {
		struct strlist l = {0};
		json_t *a = json_array();
		for (size_t i = 0; i < k; i++) {
			strlist_add(&l, tags[i]);
			json_array_append_new(a, json_string(tags[i]));
		}
		char *want = json_dumps(a, JSON_COMPACT);
		json_decref(a);
		struct feed_item it = item(x, key, FEED_POST, NULL, "text");
		snprintf(key, sizeof key, "t%zu", k);
		it.key = key;
		it.hashtags = &l;
		struct feed_result r;
		deliver_one(x, it, &r);
		assert_int_equal(r.status, FEED_OK);
		feed_result_clear(&r);
		struct db_stmt *s =
		    db_prepare(store_db(x->st), "SELECT hashtags, attachments FROM local_items"
						" WHERE key=?");
		assert_non_null(s);
		db_bind_text(s, 1, key, -1);
		assert_int_equal(db_step(s), DB_ROW);
		assert_string_equal(db_column_text(s, 0), want);
		assert_string_equal(db_column_text(s, 1), "[]");
		db_finalize(s);
		free(want);
		strlist_free(&l);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_deliver_is_idempotent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_comment_needs_existing_post, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_group_and_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_group_files_are_whole, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_texts_of_a_big_group_each_in_its_place, setup,
					    teardown),
	    cmocka_unit_test(test_safe_names),
	    cmocka_unit_test_setup_teardown(test_files_kept_and_linked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_of_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stored_lists_are_jansson_s, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_text_rendered_character_by_character, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
