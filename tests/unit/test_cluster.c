/* test_cluster.c — instances and leases on SQLite: one holder at a
 * time, take-over only after expiry with a new epoch, a lost lease is
 * known locally, release frees at once; the leases and the live instances
 * are listed, instances also without joining, and the local checks are
 * safe from another thread. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_file.h"

#include "mailfeed/cluster.h"
#include "mailfeed/db.h"

static char path[64];

struct two {
	struct db *db1, *db2;
	struct cluster *a, *b;
};

static int setup(void **state)
{
	state_file_new(path, sizeof path, "cluster");
	char err[256];
	struct two *t = calloc(1, sizeof *t);
	t->db1 = db_open(path, err, sizeof err, NULL);
	t->db2 = db_open(path, err, sizeof err, NULL);
	assert_non_null(t->db1);
	assert_non_null(t->db2);
	t->a = cluster_open(t->db1, "1.0", 1000, err, sizeof err);
	assert_non_null(t->a);
	t->b = cluster_open(t->db2, "1.1", 1000, err, sizeof err);
	assert_non_null(t->b);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct two *t = *state;
	cluster_close(t->a);
	cluster_close(t->b);
	db_close(t->db1);
	db_close(t->db2);
	free(t);
	state_file_remove(path);
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void test_defaults(void **state)
{
	char err[256];
	struct db *db = db_open(":memory:", err, sizeof err, NULL);
	struct cluster *cl = cluster_open(db, "x", 0, err, sizeof err);
	assert_int_equal(cluster_lease_ms(cl), 30000);
	assert_int_equal(cluster_lease_ms(cl), CLUSTER_LEASE_MS_DEFAULT);
	assert_non_null(strchr(cluster_instance_id(cl), ':'));
	cluster_close(cl);
	db_close(db);
}

/* A daemon of this host killed and started again: the leases of its gone
 * process end when the new one joins, without waiting for their expiry. */
static void test_gone_process_of_this_host(void **state)
{
	char err[256], host[256] = "", sql[1536];
	state_file_new(path, sizeof path, "cluster-gone");
	struct db *db = db_open(path, err, sizeof err, NULL);
	struct cluster *old = cluster_open(db, "1.0", 60000, err, sizeof err);
	assert_int_equal(cluster_lease_acquire(old, "mailbox:team", NULL), 1);
	pid_t child = fork(); /* a pid that surely ran and is gone */
	if (child == 0)
		_exit(0);
	waitpid(child, NULL, 0);
	gethostname(host, sizeof host - 1);
	/* the old instance as the dead process would have named it */
	snprintf(sql, sizeof sql,
		 "UPDATE instances SET id='%s:%ld:dead', pid=%ld WHERE id='%s';"
		 "UPDATE leases SET holder='%s:%ld:dead' WHERE holder='%s'",
		 host, (long)child, (long)child, cluster_instance_id(old), host, (long)child,
		 cluster_instance_id(old));
	assert_int_equal(db_exec(db, sql), 0);
	/* another host's instance with that pid is not judged from here */
	assert_int_equal(db_exec(db, "INSERT INTO instances(id, host, pid, version, started,"
				     " heartbeat) VALUES('elsewhere:1:x', 'elsewhere', 1, '1',"
				     " 0, 9000000000000)"),
			 0);
	struct db *db2 = db_open(path, err, sizeof err, NULL);
	struct cluster *fresh = cluster_open(db2, "1.0", 60000, err, sizeof err);
	assert_non_null(fresh);
	int64_t epoch = 0;
	assert_int_equal(cluster_lease_acquire(fresh, "mailbox:team", &epoch), 1);
	assert_int_equal(epoch, 2); /* a new holder: the fencing number moved on */
	struct db_stmt *s = db_prepare(db2, "SELECT COUNT(*) FROM instances WHERE id<>?1");
	db_bind_text(s, 1, cluster_instance_id(fresh), -1);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int64(s, 0), 1); /* only the other host's */
	db_finalize(s);
	cluster_close(fresh);
	cluster_close(old);
	db_close(db2);
	db_close(db);
	state_file_remove(path);
}

static void test_one_holder_and_take_over(void **state)
{
	struct two *t = *state;
	int64_t epoch = 0;
	assert_int_equal(cluster_lease_acquire(t->a, "inbox", &epoch), 1);
	assert_int_equal(epoch, 1);
	assert_true(cluster_lease_held(t->a, "inbox"));
	assert_true(cluster_lease_left(t->a, "inbox") > 0.1);
	/* held and alive: b cannot have it */
	assert_int_equal(cluster_lease_acquire(t->b, "inbox", NULL), 0);
	assert_false(cluster_lease_held(t->b, "inbox"));
	/* acquiring again what is ours keeps the epoch */
	assert_int_equal(cluster_lease_acquire(t->a, "inbox", &epoch), 1);
	assert_int_equal(epoch, 1);
	/* renewals keep it past its first expiry */
	for (int i = 0; i < 4; i++) {
		sleep_ms(100);
		assert_int_equal(cluster_heartbeat(t->a), 0);
		assert_int_equal(cluster_lease_acquire(t->b, "inbox", NULL), 0);
	}
	/* a stops renewing: locally it lets go before the database expires it */
	sleep_ms(920);
	assert_false(cluster_lease_held(t->a, "inbox"));
	sleep_ms(100);
	assert_int_equal(cluster_lease_acquire(t->b, "inbox", &epoch), 1);
	assert_int_equal(epoch, 2);
	/* a's next heartbeat finds it lost, and forgets it */
	assert_int_equal(cluster_heartbeat(t->a), 1);
	assert_int_equal(cluster_heartbeat(t->a), 0);
	assert_int_equal(cluster_lease_renew(t->a, "inbox"), 0);
	assert_false(cluster_lease_held(t->a, "inbox"));
	/* release: free at once for the other, with the next epoch */
	assert_int_equal(cluster_lease_release(t->b, "inbox"), 0);
	assert_false(cluster_lease_held(t->b, "inbox"));
	assert_int_equal(cluster_lease_acquire(t->a, "inbox", &epoch), 1);
	assert_int_equal(epoch, 3);
}

struct seen {
	int n;
	char holds[2][64];
	char version[2][16];
};

static void collect(const struct cluster_instance *in, void *arg)
{
	struct seen *s = arg;
	if (s->n < 2) {
		snprintf(s->holds[s->n], sizeof s->holds[0], "%s", in->holds);
		snprintf(s->version[s->n], sizeof s->version[0], "%s", in->version);
	}
	assert_int_equal(in->pid, getpid());
	assert_true(in->heartbeat_ms >= in->started_ms);
	s->n++;
}

static void test_instances(void **state)
{
	struct two *t = *state;
	assert_int_equal(cluster_lease_acquire(t->a, "m2", NULL), 1);
	assert_int_equal(cluster_lease_acquire(t->a, "m1", NULL), 1);
	assert_int_equal(cluster_lease_acquire(t->b, "m3", NULL), 1);
	struct seen s = {0};
	assert_int_equal(cluster_instances(t->a, collect, &s), 0);
	assert_int_equal(s.n, 2);
	/* started in the same millisecond, maybe: in either order */
	int ia = strcmp(s.version[0], "1.0") == 0 ? 0 : 1;
	assert_string_equal(s.version[ia], "1.0");
	assert_string_equal(s.version[1 - ia], "1.1");
	assert_string_equal(s.holds[ia], "m1,m2");
	assert_string_equal(s.holds[1 - ia], "m3");
}

struct lease_rows {
	int n, mine;
	int64_t max_left;
	char names[4][32];
};

static void lease_row(const struct cluster_lease *l, void *arg)
{
	struct lease_rows *r = arg;
	if (r->n < 4)
		snprintf(r->names[r->n], sizeof r->names[0], "%s", l->name);
	r->n++;
	r->mine += l->mine;
	if (l->left_ms > r->max_left)
		r->max_left = l->left_ms;
}

static void test_leases_listed_and_live_instances(void **state)
{
	struct two *t = *state;
	assert_int_equal(cluster_lease_acquire(t->a, "mailbox:x", NULL), 1);
	assert_int_equal(cluster_lease_acquire(t->b, "mailbox:y", NULL), 1);
	assert_int_equal(cluster_lease_acquire(t->a, "stage:process", NULL), 1);
	struct lease_rows r = {0};
	assert_int_equal(cluster_leases(t->a, "mailbox:", lease_row, &r), 0);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.names[0], "mailbox:x");
	assert_string_equal(r.names[1], "mailbox:y");
	assert_int_equal(r.mine, 1);
	assert_true(r.max_left > 0 && r.max_left <= 1000);
	memset(&r, 0, sizeof r);
	assert_int_equal(cluster_leases(t->a, "", lease_row, &r), 0);
	assert_int_equal(r.n, 3);
	assert_int_equal(r.mine, 2);
	assert_int_equal(cluster_leases_held(t->a, "mailbox:"), 1);
	assert_int_equal(cluster_leases_held(t->a, ""), 2);
	assert_int_equal(cluster_leases_held(t->b, "stage:"), 0);
	assert_int_equal(cluster_live_instances(t->a), 2);
	/* b falls silent for longer than the lease: no longer live, and its
	 * lease reads as expired (0 left) */
	for (int i = 0; i < 4; i++) {
		sleep_ms(300);
		assert_int_equal(cluster_heartbeat(t->a), 0);
	}
	assert_int_equal(cluster_live_instances(t->a), 1);
	assert_int_equal(cluster_leases_held(t->b, "mailbox:"), 0);
	memset(&r, 0, sizeof r);
	assert_int_equal(cluster_leases(t->a, "mailbox:y", lease_row, &r), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.max_left, 0);
}

static void count_instance(const struct cluster_instance *in, void *arg)
{
	(*(int *)arg)++;
	assert_true(in->now_ms >= in->heartbeat_ms);
}

static void test_instances_read_without_joining(void **state)
{
	char err[256];
	char other[64];
	state_file_new(other, sizeof other, "cluster-none");
	struct db *db = db_open(other, err, sizeof err, NULL);
	int n = 0;
	/* never joined: nothing to show, not an error */
	assert_int_equal(cluster_instances_db(db, count_instance, &n), 0);
	assert_int_equal(n, 0);
	struct cluster *cl = cluster_open(db, "2.0", 1000, err, sizeof err);
	assert_non_null(cl);
	assert_int_equal(cluster_instances_db(db, count_instance, &n), 0);
	assert_int_equal(n, 1);
	cluster_close(cl);
	n = 0;
	assert_int_equal(cluster_instances_db(db, count_instance, &n), 0);
	assert_int_equal(n, 0); /* a closed instance left */
	db_close(db);
	state_file_remove(other);
}

struct checker {
	const struct cluster *cl;
	volatile int stop;
	long checks;
};

static void *check_loop(void *arg)
{
	struct checker *c = arg;
	while (!c->stop) {
		cluster_lease_held(c->cl, "mailbox:z");
		cluster_lease_left(c->cl, "mailbox:w");
		cluster_leases_held(c->cl, "mailbox:");
		c->checks++;
	}
	return NULL;
}

/* Local checks from another thread while the leases change. */
static void test_local_checks_from_another_thread(void **state)
{
	struct two *t = *state;
	struct checker c = {.cl = t->a};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, check_loop, &c), 0);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(cluster_lease_acquire(t->a, "mailbox:z", NULL), 1);
		assert_int_equal(cluster_lease_acquire(t->a, "mailbox:w", NULL), 1);
		assert_true(cluster_heartbeat(t->a) >= 0);
		assert_int_equal(cluster_lease_release(t->a, "mailbox:z"), 0);
		assert_int_equal(cluster_lease_release(t->a, "mailbox:w"), 0);
	}
	c.stop = 1;
	pthread_join(th, NULL);
	assert_true(c.checks > 0);
	assert_int_equal(cluster_leases_held(t->a, ""), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_gone_process_of_this_host),
	    cmocka_unit_test_setup_teardown(test_one_holder_and_take_over, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_instances, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_leases_listed_and_live_instances, setup, teardown),
	    cmocka_unit_test(test_instances_read_without_joining),
	    cmocka_unit_test_setup_teardown(test_local_checks_from_another_thread, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
