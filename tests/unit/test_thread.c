/* test_thread.c — subject normalisation, the JWZ threader against the
 * classic test case (tests/corpus/thread-jwz), and persistent thread
 * assignment over a temporary store.
 *
 * Differences from the corpus' expected tree, on purpose (see its SOURCE.md):
 * the seven messages caught in the two reference loops (Loop1-3, Loop7-10)
 * are missing upstream; here they must each appear exactly once, in trees of
 * their own, and are taken out before the comparison. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/db.h"
#include "mailfeed/mime.h"
#include "mailfeed/thread.h"

#define CORPUS "tests/corpus/thread-jwz/"

static void test_normalise_basic(void **state)
{
	static const char *const cases[][2] = {
	    {"Re: Fwd: AW: [Tag] Hello", "hello"},
	    {"RE[2]: Budget", "budget"},
	    {"Re^2: Budget", "budget"},
	    {"  Fw:   WG: SV:  VS: Antw: Big    news ", "big news"},
	    {"Doorst: RIF: R: TR: Enc: RV: Odp: plan", "plan"},
	    {"ΑΠ: 回复: 转发: 回复：Plan", "plan"},
	    {"[list] Re: [Q3] RE: Report", "report"},
	    {"Re : Réunion", "réunion"},
	    {"Release notes", "release notes"},
	    {"Re:", ""},
	    {"[only-a-tag]", "[only-a-tag]"},
	    {"ÉTÉ Привет", "été привет"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *n = thread_subject_normalise(cases[i][0]);
		assert_string_equal(n, cases[i][1]);
		free(n);
	}
}

static void test_normalise_corpus(void **state)
{
	FILE *f = fopen(CORPUS "subject-normalisation.tsv", "r");
	char line[512];
	int checked = 0;
	assert_non_null(f);
	while (fgets(line, sizeof line, f)) {
		char *subject = line, *expect, *tab, *n;
		if (line[0] == '#')
			continue;
		expect = strchr(line, '\t');
		assert_non_null(expect);
		*expect++ = 0;
		tab = strchr(expect, '\t');
		assert_non_null(tab);
		*tab = 0;
		n = thread_subject_normalise(subject);
		assert_string_equal(n, expect); /* the corpus' subjects are lower-case */
		free(n);
		checked++;
	}
	fclose(f);
	assert_int_equal(checked, 5);
}

struct corpus_msgs {
	struct jwz_msg *msgs;
	char **lines;
	const char ***refs;
	size_t n;
};

static char *strip_brackets(char *id)
{
	size_t len = strlen(id);
	if (id[0] == '<' && len > 1 && id[len - 1] == '>') {
		id[len - 1] = 0;
		return id + 1;
	}
	return id;
}

static void corpus_load(struct corpus_msgs *c)
{
	FILE *f = fopen(CORPUS "references-messages.tsv", "r");
	char line[2048];
	assert_non_null(f);
	memset(c, 0, sizeof *c);
	c->msgs = calloc(128, sizeof *c->msgs);
	c->lines = calloc(128, sizeof *c->lines);
	c->refs = calloc(128, sizeof *c->refs);
	while (fgets(line, sizeof line, f)) {
		char *fields[5], *p, *save = NULL;
		size_t k = 0, i = c->n;
		if (line[0] == '#')
			continue;
		line[strcspn(line, "\r\n")] = 0;
		c->lines[i] = strdup(line);
		p = c->lines[i];
		for (k = 0; k < 5; k++) {
			fields[k] = p;
			p = p ? strchr(p, '\t') : NULL;
			if (p)
				*p++ = 0;
		}
		assert_non_null(fields[4]);
		c->msgs[i].subject = fields[1];
		c->msgs[i].message_id = strip_brackets(fields[2]);
		c->refs[i] = calloc(16, sizeof(char *));
		for (char *t = strtok_r(fields[4], " ", &save); t; t = strtok_r(NULL, " ", &save))
			c->refs[i][c->msgs[i].n_references++] = strip_brackets(t);
		c->msgs[i].references = c->refs[i];
		c->n++;
	}
	fclose(f);
}

static void corpus_free(struct corpus_msgs *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->lines[i]);
		free(c->refs[i]);
	}
	free(c->lines);
	free(c->refs);
	free(c->msgs);
}

static int is_loop_subject(const char *line)
{
	static const char *const loops[] = {"Loop1", "Loop2", "Loop3", "Loop7", "Loop8", "Loop10"};
	while (*line == ' ')
		line++;
	for (size_t i = 0; i < sizeof loops / sizeof *loops; i++)
		if (strcmp(line, loops[i]) == 0)
			return 1;
	return 0;
}

static void test_jwz_corpus(void **state)
{
	struct corpus_msgs c;
	char *out = NULL, *expect;
	size_t outlen = 0;
	FILE *mem = open_memstream(&out, &outlen);
	struct buf kept;
	int in_loop_tree = 0, loop_lines = 0, message_lines = 0;

	corpus_load(&c);
	assert_int_equal(c.n, 56);
	thread_jwz_print(c.msgs, c.n, mem);
	fclose(mem);

	buf_init(&kept);
	for (char *line = out, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		assert_non_null(nl);
		*nl = 0;
		if (line[0] != ' ')
			in_loop_tree = is_loop_subject(line);
		if (strcmp(line + strspn(line, " "), "dummy") != 0)
			message_lines++;
		if (in_loop_tree) {
			assert_true(is_loop_subject(line));
			loop_lines++;
			continue;
		}
		buf_puts(&kept, line);
		buf_putc(&kept, '\n');
	}
	/* every message exactly once, the loop ones included */
	assert_int_equal(message_lines, 56);
	assert_int_equal(loop_lines, 7);
	expect = file_read_all(CORPUS "references-expected.txt", NULL);
	assert_non_null(expect);
	assert_string_equal(kept.data, expect);
	free(expect);
	buf_free(&kept);
	free(out);
	corpus_free(&c);
}

static void test_jwz_self_reference_and_empty(void **state)
{
	const char *r1[] = {"a"};
	const char *r2[] = {"b", "b", "a"};
	struct jwz_msg msgs[] = {
	    {"a", "first", r1, 1},
	    {"b", "second", r2, 3},
	    {NULL, "no id", NULL, 0},
	    {"", "empty id", NULL, 0},
	};
	char *out = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&out, &len);
	thread_jwz_print(msgs, 4, mem);
	fclose(mem);
	assert_string_equal(out, "first\n   second\nno id\nempty id\n");
	free(out);
}

/* --- persistent assignment ------------------------------------------- */

struct fixture {
	char path[64];
	struct store *st;
};

static int setup_store(void **state)
{
	struct fixture *fx = calloc(1, sizeof *fx);
	char err[256];
	int fd;
	strcpy(fx->path, "/tmp/test_thread_XXXXXX");
	fd = mkstemp(fx->path);
	if (fd < 0)
		return -1;
	close(fd);
	fx->st = store_open(fx->path, err, sizeof err);
	if (!fx->st) {
		fprintf(stderr, "store_open: %s\n", err);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown_store(void **state)
{
	struct fixture *fx = *state;
	store_close(fx->st);
	state_file_remove(fx->path);
	free(fx);
	return 0;
}

/* Short test ids ("p1") become real ones ("p1@example.org"). */
static char *full_id(const char *id)
{
	return strchr(id, '@') ? xstrdup(id) : xasprintf("%s@example.org", id);
}

static struct mf_message *msg(const char *id, const char *subject, time_t date,
			      const char *in_reply_to, const char *refs)
{
	struct mf_message *m = message_new();
	m->message_id = full_id(id);
	m->subject = xstrdup(subject);
	m->date = date;
	if (in_reply_to)
		m->in_reply_to = full_id(in_reply_to);
	if (refs) {
		struct strlist l = {0};
		strlist_split(&l, refs);
		for (size_t i = 0; i < l.n; i++) {
			char *f = full_id(l.v[i]);
			strlist_add(&m->references, f);
			free(f);
		}
		strlist_free(&l);
	}
	return m;
}

static int64_t assign(struct fixture *fx, const char *grp, const char *mailbox,
		      struct mf_message *m, long window, int *is_new)
{
	int64_t tid = 0;
	assert_int_equal(store_begin(fx->st), 0);
	assert_int_equal(thread_assign(fx->st, grp, mailbox, m, window, &tid, is_new), 0);
	assert_int_equal(store_commit(fx->st), 0);
	assert_true(tid > 0);
	message_free(m);
	return tid;
}

#define DAY 86400L
#define T0 1795000000L

static void test_assign_reply_before_parent(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t reply =
	    assign(fx, "g", "inbox", msg("r1", "Re: Plan", T0 + 60, "p1", "p1"), DAY, &is_new);
	assert_int_equal(is_new, 1);
	int64_t parent = assign(fx, "g", "inbox", msg("p1", "Plan", T0, NULL, NULL), DAY, &is_new);
	assert_int_equal(is_new, 0);
	assert_int_equal(parent, reply);
}

static void test_assign_reply_days_later_and_chain(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign(fx, "g", "inbox", msg("a", "Budget", T0, NULL, NULL), DAY, &is_new);
	assert_int_equal(is_new, 1);
	/* ten days later, outside the subject window, found by its references */
	assert_int_equal(
	    assign(fx, "g", "inbox", msg("b", "Re: Budget", T0 + 10 * DAY, "a", "a"), DAY, &is_new),
	    t);
	assert_int_equal(is_new, 0);
	/* a reply to the reply that only names b */
	assert_int_equal(assign(fx, "g", "inbox", msg("c", "Re: Budget", T0 + 11 * DAY, "b", NULL),
				DAY, &is_new),
			 t);
	assert_int_equal(is_new, 0);
}

static void test_assign_two_mailboxes_same_group(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t1 = assign(fx, "g", "sales", msg("x1", "Offer", T0, NULL, NULL), DAY, &is_new);
	int64_t t2 = assign(fx, "g", "support", msg("x1", "Offer", T0, NULL, NULL), DAY, &is_new);
	assert_int_equal(t1, t2);
	assert_int_equal(is_new, 0);
}

static void test_assign_different_groups(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t1 = assign(fx, "g1", "inbox", msg("y1", "Hi", T0, NULL, NULL), DAY, &is_new);
	int64_t t2 = assign(fx, "g2", "inbox", msg("y1", "Hi", T0, NULL, NULL), DAY, &is_new);
	assert_int_not_equal(t1, t2);
	assert_int_equal(is_new, 1);
	int64_t t3 =
	    assign(fx, "g2", "inbox", msg("y2", "Re: Hi", T0 + 5, "y1", NULL), DAY, &is_new);
	assert_int_equal(t3, t2);
}

/* A thread moved to another group is found there by its ids and subject,
 * no longer in the old one; an id the new group already gives to a thread
 * of its own stays with that thread. */
static void test_move_to_another_group(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t moved = assign(fx, "old", "inbox", msg("m1", "Move", T0, NULL, NULL), DAY, &is_new);
	assign(fx, "old", "inbox", msg("m2", "Re: Move", T0 + 5, "m1", "m1 s1"), DAY, &is_new);
	int64_t there =
	    assign(fx, "new", "inbox", msg("s1", "Stays", T0, NULL, NULL), DAY, &is_new);
	assert_int_equal(store_begin(fx->st), 0);
	assert_int_equal(thread_move(fx->st, moved, "new"), 0);
	assert_int_equal(store_commit(fx->st), 0);
	assert_int_equal(
	    assign(fx, "new", "inbox", msg("m3", "Re: Move", T0 + 9, "m2", "m1 m2"), DAY, &is_new),
	    moved);
	assert_int_equal(is_new, 0);
	assert_int_equal(
	    assign(fx, "new", "inbox", msg("s2", "Re: Stays", T0 + 9, "s1", "s1"), DAY, &is_new),
	    there);
	assert_int_not_equal(
	    assign(fx, "old", "inbox", msg("m4", "Re: Move", T0 + 9, "m1", "m1"), DAY, &is_new),
	    moved);
	assert_int_equal(is_new, 1);
}

static void test_assign_subject_window(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign(fx, "g", "inbox", msg("s1", "Lunch?", T0, NULL, NULL), DAY, &is_new);
	/* a reply whose client dropped the references, within the window */
	assert_int_equal(
	    assign(fx, "g", "inbox", msg("s2", "RE: lunch?", T0 + 3600, NULL, NULL), DAY, &is_new),
	    t);
	assert_int_equal(is_new, 0);
	/* same subject without a reply prefix: a new thread */
	assert_int_not_equal(
	    assign(fx, "g", "inbox", msg("s3", "Lunch?", T0 + 7200, NULL, NULL), DAY, &is_new), t);
	assert_int_equal(is_new, 1);
	/* outside the window (measured from the thread's last message) */
	assign(fx, "g", "inbox", msg("s4", "Re: Lunch?", T0 + 3 * DAY, NULL, NULL), DAY, &is_new);
	assert_int_equal(is_new, 1);
	/* another mailbox of the same group does not match by subject */
	assert_int_not_equal(
	    assign(fx, "g", "other", msg("s5", "Re: Lunch?", T0 + 60, NULL, NULL), DAY, &is_new),
	    t);
	assert_int_equal(is_new, 1);
	/* empty normalised subjects never match */
	int64_t e = assign(fx, "g", "inbox", msg("e1", "Re:", T0, NULL, NULL), DAY, &is_new);
	assert_int_not_equal(
	    assign(fx, "g", "inbox", msg("e2", "Re: ", T0 + 1, NULL, NULL), DAY, &is_new), e);
	assert_int_equal(is_new, 1);
}

/* A thread spans the dates of its messages, whatever order they come in:
 * an older one taken in late moves the start back, never the end. */
static void test_thread_dates_only_widen(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign(fx, "g", "inbox", msg("w1", "Plan", T0, NULL, NULL), DAY, &is_new);
	assign(fx, "g", "inbox", msg("w2", "Re: Plan", T0 + 3600, "w1", NULL), DAY, &is_new);
	assign(fx, "g", "inbox", msg("w3", "Re: Plan", T0 - 7200, "w1", NULL), DAY, &is_new);
	assert_int_equal(is_new, 0);
	struct db_stmt *s = db_prepare(store_db(fx->st), "SELECT first_date, last_date FROM threads"
							 " WHERE id=?");
	assert_non_null(s);
	db_bind_int64(s, 1, t);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int64(s, 0), T0 - 7200);
	assert_int_equal(db_column_int64(s, 1), T0 + 3600);
	db_finalize(s);
}

/* Mailing-list mail as it arrives, parsed like the daemon parses it. */
static struct mf_message *parse(const char *raw)
{
	char err[256];
	struct mf_message *m = mime_parse(raw, strlen(raw), err, sizeof err);
	assert_non_null(m);
	return m;
}

static int64_t assign_raw(struct fixture *fx, const char *raw, int *is_new)
{
	return assign(fx, "g", "list", parse(raw), DAY, is_new);
}

/* "<yes>" (answered to git send-email's In-Reply-To prompt), ids without an
 * '@', empty brackets: unrelated threads must stay apart. */
static void test_assign_ids_that_are_not_ids(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t a = assign_raw(fx,
			       "From: Ann <ann@example.org>\r\nSubject: [PATCH] net: fix a leak\r\n"
			       "Message-ID: <20260301.1@example.org>\r\nIn-Reply-To: <yes>\r\n"
			       "References: <yes>\r\nDate: Sun, 1 Mar 2026 10:00:00 +0000\r\n\r\n"
			       "Patch one.\r\n",
			       &is_new);
	assert_int_equal(is_new, 1);
	int64_t b = assign_raw(fx,
			       "From: Bob <bob@example.org>\r\nSubject: [PATCH] fs: tidy up\r\n"
			       "Message-ID: <20260301.2@example.org>\r\nIn-Reply-To: <yes>\r\n"
			       "Date: Sun, 1 Mar 2026 11:00:00 +0000\r\n\r\nPatch two.\r\n",
			       &is_new);
	assert_int_equal(is_new, 1);
	assert_int_not_equal(a, b);
	int64_t c =
	    assign_raw(fx,
		       "From: Cy <cy@example.org>\r\nSubject: [PATCH] mm: one more\r\n"
		       "Message-ID: <>\r\nIn-Reply-To: <12345>\r\nReferences: <> <12345>\r\n"
		       "Date: Sun, 1 Mar 2026 12:00:00 +0000\r\n\r\nPatch three.\r\n",
		       &is_new);
	assert_int_equal(is_new, 1);
	int64_t d = assign_raw(fx,
			       "From: Di <di@example.org>\r\nSubject: [PATCH] io: last\r\n"
			       "Message-ID: <>\r\nIn-Reply-To: <12345>\r\n"
			       "Date: Sun, 1 Mar 2026 13:00:00 +0000\r\n\r\nPatch four.\r\n",
			       &is_new);
	assert_int_equal(is_new, 1);
	assert_int_not_equal(c, d);
	/* a real reference still joins */
	assert_int_equal(
	    assign_raw(fx,
		       "From: Ed <ed@example.org>\r\nSubject: Re: [PATCH] net: fix a leak"
		       "\r\nMessage-ID: <r1@example.org>\r\n"
		       "In-Reply-To: <20260301.1@example.org>\r\n"
		       "Date: Sun, 1 Mar 2026 14:00:00 +0000\r\n\r\nAcked.\r\n",
		       &is_new),
	    a);
	assert_false(thread_id_usable("yes"));
	assert_false(thread_id_usable(""));
	assert_false(thread_id_usable(NULL));
	assert_false(thread_id_usable("@example.org"));
	assert_false(thread_id_usable("a b@example.org"));
	assert_true(thread_id_usable("20260301.1@example.org"));
}

/* A reply whose headers were lost finds the patch of a series or the
 * renamed sub-thread it answers, not only the thread's first subject. */
static void test_assign_subject_of_any_message(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign_raw(fx,
			       "From: Ann <ann@example.org>\r\nSubject: [PATCH 0/44] mm: rework "
			       "reclaim\r\nMessage-ID: <cover@example.org>\r\n"
			       "Date: Sun, 1 Mar 2026 10:00:00 +0000\r\n\r\nCover letter.\r\n",
			       &is_new);
	assign_raw(fx,
		   "From: Ann <ann@example.org>\r\nSubject: [PATCH 44/44] mm: drop the old "
		   "path\r\nMessage-ID: <p44@example.org>\r\nIn-Reply-To: <cover@example.org>\r\n"
		   "References: <cover@example.org>\r\nDate: Sun, 1 Mar 2026 10:00:44 +0000\r\n"
		   "\r\nPatch 44.\r\n",
		   &is_new);
	assert_int_equal(is_new, 0);
	/* the reply lost In-Reply-To and References on the way */
	assert_int_equal(
	    assign_raw(fx,
		       "From: Bob <bob@example.org>\r\nSubject: Re: [PATCH 44/44] mm: drop "
		       "the old path\r\nMessage-ID: <r44@example.org>\r\n"
		       "Date: Mon, 2 Mar 2026 09:00:00 +0000\r\n\r\nLooks fine.\r\n",
		       &is_new),
	    t);
	assert_int_equal(is_new, 0);
	/* a v2 of the same patch, also answered without headers */
	assert_int_equal(
	    assign_raw(fx,
		       "From: Cy <cy@example.org>\r\nSubject: Re: [PATCH v2 44/44] mm: "
		       "drop the old path\r\nMessage-ID: <r44b@example.org>\r\n"
		       "Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\nAgreed.\r\n",
		       &is_new),
	    t);
	/* a renamed sub-thread */
	assign_raw(fx,
		   "From: Di <di@example.org>\r\nSubject: Re: Locking order (was: [PATCH 0/44] mm: "
		   "rework reclaim)\r\nMessage-ID: <sub@example.org>\r\n"
		   "In-Reply-To: <cover@example.org>\r\nDate: Mon, 2 Mar 2026 11:00:00 +0000\r\n"
		   "\r\nA side question.\r\n",
		   &is_new);
	assert_int_equal(is_new, 0);
	assert_int_equal(assign_raw(fx,
				    "From: Ed <ed@example.org>\r\nSubject: Re: Locking order\r\n"
				    "Message-ID: <sub2@example.org>\r\n"
				    "Date: Mon, 2 Mar 2026 12:00:00 +0000\r\n\r\nAnswer.\r\n",
				    &is_new),
			 t);
	/* outside the window: a new thread */
	assign_raw(fx,
		   "From: Fay <fay@example.org>\r\nSubject: Re: Locking order\r\n"
		   "Message-ID: <late@example.org>\r\nDate: Fri, 20 Mar 2026 12:00:00 +0000\r\n"
		   "\r\nMuch later.\r\n",
		   &is_new);
	assert_int_equal(is_new, 1);
	/* another mailbox does not match by subject */
	assert_int_not_equal(
	    assign(fx, "g", "other", msg("o1", "Re: Locking order", T0, NULL, NULL), DAY, &is_new),
	    t);
	char *n = thread_subject_normalise("Re: [PATCH v3 12/20] Locking order (was: old)");
	assert_string_equal(n, "locking order");
	free(n);
}

static void test_root_item(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign(fx, "g", "inbox", msg("z", "Root", T0, NULL, NULL), DAY, &is_new);
	assert_int_equal(thread_root(fx->st, t), 0);
	assert_int_equal(thread_set_root(fx->st, t, 42), 0);
	assert_int_equal(thread_root(fx->st, t), 42);
}

/* A read of the post's item that fails is an error, not "no post yet",
 * which would start the thread a second time. */
static void test_root_item_read_fails(void **state)
{
	(void)state;
	char err[256];
	struct db *db = db_open(":memory:", err, sizeof err, NULL);
	assert_non_null(db);
	/* a row whose root_item cannot be computed: the step fails */
	assert_int_equal(db_exec(db, "CREATE VIEW threads AS SELECT 1 AS id,"
				     " abs(-9223372036854775807 - 1) AS root_item"),
			 0);
	assert_int_equal(thread_root_item(db, 1), -1);
	db_close(db);
}

/* The daemon's look-ups run on statements kept prepared: asked again and
 * again (by id, by reference, by subject, the post's item), they answer as
 * the bare connection's do, bindings of one call never left for the next. */
static void test_kept_lookups_agree(void **state)
{
	struct fixture *fx = *state;
	int is_new;
	int64_t t = assign(fx, "g", "inbox", msg("k1", "Kept plan", T0, NULL, NULL), DAY, &is_new);
	int64_t u = assign(fx, "g", "inbox", msg("k2", "Other plan", T0, NULL, NULL), DAY, &is_new);
	assert_int_not_equal(t, u);
	assert_int_equal(thread_set_root(fx->st, t, 7), 0);
	struct mf_message *probes[] = {
	    msg("k1", "whatever", T0, NULL, NULL),	      /* its own id */
	    msg("n1", "Re: Kept plan", T0 + 60, NULL, NULL),  /* subject only */
	    msg("n2", "Re: x", T0 + 60, "k2", "k1 k2"),	      /* In-Reply-To */
	    msg("n3", "Re: Other plan", T0 + 60, NULL, NULL), /* the other subject */
	    msg("n4", "Re: Unknown", T0 + 60, NULL, NULL),    /* nothing */
	    msg("n5", "Fresh", T0, NULL, NULL),		      /* no reply: no subject look-up */
	};
	const int64_t expect[] = {t, t, u, u, 0, 0};
	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
			int64_t bare = thread_find(store_db(fx->st), "g", "inbox", probes[i], DAY);
			int64_t kept = thread_find_kept(fx->st, "g", "inbox", probes[i], DAY);
			assert_int_equal(bare, expect[i]);
			assert_int_equal(kept, expect[i]);
			assert_int_equal(thread_find_kept(fx->st, "h", "inbox", probes[i], DAY), 0);
		}
	assert_int_equal(thread_root(fx->st, t), 7);
	assert_int_equal(thread_root_item(store_db(fx->st), t), 7);
	assert_int_equal(thread_root(fx->st, u), 0);
	assert_int_equal(thread_root(fx->st, t), 7);
	for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
		message_free(probes[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_normalise_basic),
	    cmocka_unit_test(test_normalise_corpus),
	    cmocka_unit_test(test_jwz_corpus),
	    cmocka_unit_test(test_jwz_self_reference_and_empty),
	    cmocka_unit_test_setup_teardown(test_assign_reply_before_parent, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_reply_days_later_and_chain, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_two_mailboxes_same_group, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_different_groups, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_move_to_another_group, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_subject_window, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_thread_dates_only_widen, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_ids_that_are_not_ids, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_assign_subject_of_any_message, setup_store,
					    teardown_store),
	    cmocka_unit_test_setup_teardown(test_root_item, setup_store, teardown_store),
	    cmocka_unit_test(test_root_item_read_fails),
	    cmocka_unit_test_setup_teardown(test_kept_lookups_agree, setup_store, teardown_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
