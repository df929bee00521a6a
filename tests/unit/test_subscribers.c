/* test_subscribers.c — who gets digests, as the rest of mailfeed asks
 * subscribers.c: subscriptions of their own (config, command line, email
 * commands) and members of the mapped feed groups, the one not shadowing
 * the other; who counts as a subscriber; the list `status` shows; the
 * batches a digest run reads; last_sent moved only from what a run
 * read; leaving one group by email; muted threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/subscribers.h"

struct fixture {
	char dir[64];
	char path[128];
	struct store *st;
	struct mf_config cfg;
	struct mf_mailbox mailboxes[2];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[256];
	strcpy(f->dir, "/tmp/mf-subs-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/state.db", f->dir);
	f->st = store_open(f->path, err, sizeof err);
	assert_non_null(f->st);
	f->mailboxes[0].name = "fundraising";
	f->mailboxes[0].group = "0F9g1";
	f->mailboxes[1].name = "board";
	f->mailboxes[1].group = "0F9g2";
	f->cfg.mailboxes = f->mailboxes;
	f->cfg.n_mailboxes = 2;
	f->cfg.digest.subscribers = SUBSCRIBERS_FEED;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	store_close(f->st);
	state_file_remove(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The rows of subscribers_list as "email frequency source last;..." */
static void row_text(void *arg, const struct subscription_row *row)
{
	buf_printf(arg, "%s %s %s %lld;", row->email, row->frequency, row->source,
		   (long long)row->last_sent);
}

static char *listed(struct store *st, int feed)
{
	struct buf b;
	buf_init(&b);
	assert_int_equal(subscribers_list(st, feed, row_text, &b), 0);
	return b.data ? buf_steal(&b) : xstrdup("");
}

static void assert_list(struct store *st, int feed, const char *want)
{
	char *got = listed(st, feed);
	assert_string_equal(got, want);
	free(got);
}

static void test_own_subscriptions(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(subscribers_put(f->st, "Ann@Example.org", "fundraising", "daily", 7,
					 "Europe/Berlin", "cli", 0),
			 0);
	/* without replace an existing subscription is not overwritten */
	assert_int_equal(
	    subscribers_put(f->st, "ann@example.org", "board", "weekly", -1, NULL, "email", 0), -1);
	assert_list(f->st, 0, "ann@example.org daily cli 0;");
	assert_int_equal(subscribers_put(f->st, "ann@example.org", "fundraising,board", "weekly",
					 -1, NULL, "cli", 1),
			 0);
	assert_list(f->st, 0, "ann@example.org weekly cli 0;");

	assert_int_equal(subscribers_known(f->st, "ANN@example.org", 0, 1), 1);
	assert_int_equal(subscribers_known(f->st, "bob@example.org", 1, 0), 0);
	assert_int_equal(subscribers_known(f->st, NULL, 1, 0), 0);

	/* unsubscribed: still known (digest --to), no longer wanting mail */
	assert_int_equal(subscribers_set_frequency(f->st, "ann@example.org", "never", "cli"), 1);
	assert_int_equal(subscribers_known(f->st, "ann@example.org", 0, 0), 1);
	assert_int_equal(subscribers_known(f->st, "ann@example.org", 0, 1), 0);
	assert_int_equal(subscribers_set_frequency(f->st, "bob@example.org", "never", "cli"), 0);
}

static void test_seed_from_config(void **state)
{
	struct fixture *f = *state;
	struct mf_subscriber sub = {
	    .email = "carol@example.org", .frequency = FREQ_WEEKLY, .hour = -1};
	strlist_add(&sub.groups, "board");
	f->cfg.subscribers = &sub;
	f->cfg.n_subscribers = 1;
	assert_int_equal(subscribers_seed(f->st, &f->cfg), 1);
	/* the table wins from then on: a second seed adds nothing */
	assert_int_equal(subscribers_set_frequency(f->st, "carol@example.org", "daily", "cli"), 1);
	assert_int_equal(subscribers_seed(f->st, &f->cfg), 0);
	assert_list(f->st, 0, "carol@example.org daily config 0;");
	strlist_free(&sub.groups);
}

/* The feed's members: dave wants each post of fundraising and a weekly
 * digest of board; erin a daily digest of board; frank nothing. */
static int read_members(void *ctx, const char *group, struct feed_member **members, size_t *n,
			char *err, size_t errlen)
{
	int *calls = ctx;
	(*calls)++;
	*members = xcalloc(2, sizeof **members);
	if (strcmp(group, "0F9g1") == 0) {
		(*members)[0] = (struct feed_member){xstrdup("dave@example.org"), NULL, FREQ_EACH};
		(*members)[1] =
		    (struct feed_member){xstrdup("frank@example.org"), NULL, FREQ_NEVER};
	} else {
		(*members)[0] =
		    (struct feed_member){xstrdup("dave@example.org"), NULL, FREQ_WEEKLY};
		(*members)[1] =
		    (struct feed_member){xstrdup("erin@example.org"), xstrdup("Erin"), FREQ_DAILY};
	}
	*n = 2;
	return 0;
}

static void test_feed_members(void **state)
{
	struct fixture *f = *state;
	int calls = 0;
	struct feed_backend_ops ops = {.name = "test", .read_members = read_members};
	assert_int_equal(subscribers_refresh_members(f->st, &f->cfg, &ops, &calls, 1000, 0), 0);
	assert_int_equal(calls, 2);
	/* read at most hourly unless forced */
	assert_int_equal(subscribers_refresh_members(f->st, &f->cfg, &ops, &calls, 2000, 0), 0);
	assert_int_equal(calls, 2);
	assert_list(f->st, 1,
		    "dave@example.org each feed 0;dave@example.org weekly feed 0;"
		    "erin@example.org daily feed 0;");
	assert_list(f->st, 0, "");
	assert_int_equal(subscribers_known(f->st, "erin@example.org", 1, 1), 1);
	assert_int_equal(subscribers_known(f->st, "erin@example.org", 0, 0), 0);
	assert_int_equal(subscribers_known(f->st, "frank@example.org", 1, 1), 0);

	/* a run's batch of members: group ids named by their [mailbox] */
	struct subscriber subs[SUBSCRIBERS_BATCH];
	int n = subscribers_load(f->st, &f->cfg, 1, NULL, "", "", subs);
	assert_int_equal(n, 3);
	assert_string_equal(subs[0].email, "dave@example.org");
	assert_int_equal(subs[0].freq, FREQ_EACH);
	assert_int_equal(subs[0].groups.n, 1);
	assert_string_equal(subs[0].groups.v[0], "fundraising");
	assert_int_equal(subs[0].feed, 1);
	assert_int_equal(subs[0].has_last, 0);
	assert_int_equal(subs[0].since, 1000);
	assert_int_equal(subs[1].freq, FREQ_WEEKLY);
	assert_string_equal(subs[1].groups.v[0], "board");
	/* the next batch starts after the last one read */
	struct subscriber more[SUBSCRIBERS_BATCH];
	assert_int_equal(subscribers_load(f->st, &f->cfg, 1, NULL, subs[1].email, "weekly", more),
			 1);
	assert_string_equal(more[0].email, "erin@example.org");
	subscribers_clear(&more[0]);
	for (int i = 0; i < n; i++)
		subscribers_clear(&subs[i]);

	/* a command of a member's makes the subscription their own, which
	 * then shadows the membership */
	assert_int_equal(subscribers_set_frequency(f->st, "erin@example.org", "weekly", "email"),
			 1);
	assert_list(f->st, 1,
		    "dave@example.org each feed 0;dave@example.org weekly feed 0;"
		    "erin@example.org weekly email 0;");
	assert_int_equal(subscribers_load(f->st, &f->cfg, 1, "erin@example.org", "", "", subs), 0);
	assert_int_equal(subscribers_load(f->st, &f->cfg, 0, "ERIN@example.org", "", "", subs), 1);
	assert_string_equal(subs[0].groups.v[0], "0F9g2");
	subscribers_clear(&subs[0]);
}

static void test_move_last_sent(void **state)
{
	struct fixture *f = *state;
	struct subscriber subs[SUBSCRIBERS_BATCH];
	assert_int_equal(
	    subscribers_put(f->st, "gina@example.org", "board", "daily", -1, NULL, "cli", 0), 0);
	assert_int_equal(subscribers_load(f->st, &f->cfg, 0, NULL, "", "", subs), 1);
	assert_int_equal(subscribers_move_last_sent(f->st, &subs[0], 0, 0, 5000, 1), 1);
	/* a second run that read the same (unset) value finds it moved */
	assert_int_equal(subscribers_move_last_sent(f->st, &subs[0], 0, 0, 6000, 1), 0);
	subscribers_clear(&subs[0]);
	assert_int_equal(subscribers_load(f->st, &f->cfg, 0, NULL, "", "", subs), 1);
	assert_int_equal(subs[0].has_last, 1);
	assert_int_equal(subs[0].last_sent, 5000);
	assert_int_equal(subs[0].hour, -1);
	assert_null(subs[0].tz);
	/* a refusal puts it back */
	assert_int_equal(subscribers_move_last_sent(f->st, &subs[0], 5000, 1, 0, 0), 1);
	assert_list(f->st, 0, "gina@example.org daily cli 0;");
	subscribers_clear(&subs[0]);
}

/* "unsubscribe GROUP" by email: one group goes, the last one ends the
 * subscription; a group not followed changes nothing. */
static void test_leave_group(void **state)
{
	struct fixture *f = *state;
	char *left = (char *)"unset";
	assert_int_equal(subscribers_put(f->st, "hana@example.org", "fundraising,Board", "daily",
					 -1, NULL, "cli", 0),
			 0);
	assert_int_equal(subscribers_leave_group(f->st, "HANA@example.org", "board", &left), 1);
	assert_string_equal(left, "fundraising");
	free(left);
	assert_list(f->st, 0, "hana@example.org daily email 0;");
	assert_int_equal(subscribers_leave_group(f->st, "hana@example.org", "board", &left), 0);
	assert_null(left);
	assert_int_equal(subscribers_leave_group(f->st, "ivan@example.org", "board", &left), 0);
	assert_int_equal(subscribers_leave_group(f->st, "hana@example.org", "Fundraising", &left),
			 1);
	assert_null(left);
	assert_list(f->st, 0, "hana@example.org never email 0;");
	assert_int_equal(subscribers_known(f->st, "hana@example.org", 0, 1), 0);
}

/* Muted threads: per address (case-insensitive), muting twice is one
 * mute, unmuting takes it back. */
static void test_mutes(void **state)
{
	struct fixture *f = *state;
	struct strlist muted = {0};
	assert_int_equal(subscribers_mute(f->st, "Jo@example.org", "post-1", 1), 0);
	assert_int_equal(subscribers_mute(f->st, "jo@example.org", "post-1", 1), 0);
	assert_int_equal(subscribers_mute(f->st, "jo@example.org", "post-2", 1), 0);
	assert_int_equal(subscribers_mute(f->st, "kim@example.org", "post-3", 1), 0);
	assert_int_equal(subscribers_muted(f->st, "JO@example.org", &muted), 0);
	assert_int_equal(muted.n, 2);
	strlist_free(&muted);
	assert_int_equal(subscribers_mute(f->st, "jo@example.org", "post-1", 0), 0);
	assert_int_equal(subscribers_muted(f->st, "jo@example.org", &muted), 0);
	assert_int_equal(muted.n, 1);
	assert_string_equal(muted.v[0], "post-2");
	strlist_free(&muted);
	assert_int_equal(subscribers_muted(f->st, "lee@example.org", &muted), 0);
	assert_int_equal(muted.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_own_subscriptions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seed_from_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_feed_members, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_move_last_sent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_leave_group, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mutes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
