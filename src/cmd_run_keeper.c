/* cmd_run_keeper.c — the lease keeper of `mailfeed run`: heartbeat, the
 * folders and the parse stage dealt out among the instances, and the
 * daemon's view of whether the state database answers (rules in
 * cmd_run_keeper.h).
 *
 * Locks: k->mu guards the folder slots and the wakers, never held across
 * a database call (a database that does not answer must not hold up a
 * session's local check); the cluster guards its own list of leases. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cmd_run_keeper.h"
#include "mailfeed/cluster.h"
#include "mailfeed/health.h"
#include "mailfeed/log.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

#ifndef MAILFEED_VERSION
#define MAILFEED_VERSION "0"
#endif

#define MAILBOX_PREFIX "mailbox:"
#define MIN_WAIT_MS 100
/* a lease seen expiring is asked for this long after its expiry */
#define EXPIRY_SLACK_MS 30
#define LEASE_NAME_MAX 512

/* One mapped folder as the keeper deals it. */
struct slot {
	char *mailbox;
	int busy;	   /* sessions working on it now */
	int yielding;	   /* being given up: no new work starts */
	int was_held;	   /* at the last look (changes are logged) */
	double released;   /* monotonic time it was given up; 0 never */
	double free_since; /* seen with no holder since; 0 not */
};

struct keeper {
	struct store *st;
	struct cluster *cl;
	pthread_t thread;
	int running;
	int wake_fd;
	int proc_wake_fd;
	atomic_int stop;
	pthread_mutex_t mu;
	struct slot *slots;
	size_t n;
	int *wakers;
	size_t nwakers;
	int process_was_held;
	int error_logged; /* a failure other than unavailability, once */
};

/* The state database's reachability, for the whole process. */
static pthread_mutex_t away_mu = PTHREAD_MUTEX_INITIALIZER;
static int away;
static double away_since;

static void poke(int fd)
{
	uint64_t one = 1;
	if (fd >= 0 && write(fd, &one, sizeof one) < 0 && errno != EAGAIN)
		log_debug("cluster.wake error=%s", LOG_Q(strerror(errno)));
}

static void pause_ms(int fd, long ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	uint64_t v;
	poll(&p, 1, (int)ms);
	while (read(fd, &v, sizeof v) > 0)
		;
}

static void wake_sessions(struct keeper *k)
{
	pthread_mutex_lock(&k->mu);
	for (size_t i = 0; i < k->nwakers; i++)
		poke(k->wakers[i]);
	pthread_mutex_unlock(&k->mu);
}

static int lease_name(const char *mailbox, char *out, size_t len)
{
	return (size_t)snprintf(out, len, MAILBOX_PREFIX "%s", mailbox) < len;
}

/* The slot of mailbox (k->mu held), or NULL. */
static struct slot *slot_find(struct keeper *k, const char *mailbox)
{
	for (size_t i = 0; i < k->n; i++)
		if (strcmp(k->slots[i].mailbox, mailbox) == 0)
			return &k->slots[i];
	return NULL;
}

/* --- the state database's reachability ------------------------------------ */

void keeper_store_unavailable(struct keeper *k, const char *reason)
{
	pthread_mutex_lock(&away_mu);
	if (!away) {
		away = 1;
		away_since = now_monotonic();
		log_warn("store.unavailable reason=%s note=\"work pauses until the state "
			 "database answers again\"",
			 LOG_Q(reason));
		health_set_unavailable(reason);
	}
	pthread_mutex_unlock(&away_mu);
	(void)k;
}

void keeper_store_available(struct keeper *k)
{
	int back = 0;
	pthread_mutex_lock(&away_mu);
	if (away) {
		away = 0;
		back = 1;
		log_notice("store.resumed waited_s=%.1f", now_monotonic() - away_since);
		health_set_unavailable(NULL);
	}
	pthread_mutex_unlock(&away_mu);
	if (back && k) {
		poke(k->wake_fd); /* the leases are asked for again at once */
		poke(k->proc_wake_fd);
		wake_sessions(k);
	}
}

int keeper_store_away(void)
{
	pthread_mutex_lock(&away_mu);
	int a = away;
	pthread_mutex_unlock(&away_mu);
	return a;
}

/* --- local checks --------------------------------------------------------- */

int keeper_held(struct keeper *k, const char *mailbox)
{
	char lease[LEASE_NAME_MAX];
	if (!k)
		return 1;
	return lease_name(mailbox, lease, sizeof lease) && cluster_lease_held(k->cl, lease);
}

double keeper_left(struct keeper *k, const char *mailbox)
{
	char lease[LEASE_NAME_MAX];
	if (!k)
		return 1e9;
	return lease_name(mailbox, lease, sizeof lease) ? cluster_lease_left(k->cl, lease) : 0;
}

/* may_work, and with mark the folder marked busy. */
static int check(struct keeper *k, const char *mailbox, int mark)
{
	if (!k)
		return 1;
	if (keeper_store_away() || !keeper_held(k, mailbox))
		return 0;
	pthread_mutex_lock(&k->mu);
	struct slot *s = slot_find(k, mailbox);
	int ok = s && !s->yielding;
	if (ok && mark)
		s->busy++;
	pthread_mutex_unlock(&k->mu);
	return ok;
}

int keeper_may_work(struct keeper *k, const char *mailbox) { return check(k, mailbox, 0); }

int keeper_begin(struct keeper *k, const char *mailbox) { return check(k, mailbox, 1); }

void keeper_end(struct keeper *k, const char *mailbox)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	struct slot *s = slot_find(k, mailbox);
	if (s && s->busy > 0)
		s->busy--;
	pthread_mutex_unlock(&k->mu);
}

int keeper_process_held(struct keeper *k)
{
	if (!k)
		return 1;
	return !keeper_store_away() && cluster_lease_held(k->cl, KEEPER_PROCESS_LEASE);
}

/* --- the deal ------------------------------------------------------------- */

/* One folder as one pass of the keeper sees it. */
struct want {
	char *mailbox;
	char lease[LEASE_NAME_MAX];
	int64_t other_ms; /* held by another instance for this long still */
	int mine_db;	  /* the database says ours */
};

struct pass {
	struct keeper *k;
	struct want *w;
	size_t n;
	struct strlist strays; /* leases of ours no longer mapped */
	int64_t process_other_ms;
	double wait_ms; /* until the next expiry worth a look */
};

static void pass_wait(struct pass *p, double ms)
{
	if (ms < p->wait_ms)
		p->wait_ms = ms;
}

static void seen_lease(const struct cluster_lease *l, void *arg)
{
	struct pass *p = arg;
	if (strcmp(l->name, KEEPER_PROCESS_LEASE) == 0) {
		p->process_other_ms = l->mine ? 0 : l->left_ms;
		return;
	}
	if (strncmp(l->name, MAILBOX_PREFIX, strlen(MAILBOX_PREFIX)) != 0)
		return;
	for (size_t i = 0; i < p->n; i++) {
		if (strcmp(p->w[i].lease, l->name) == 0) {
			p->w[i].other_ms = l->mine ? 0 : l->left_ms;
			p->w[i].mine_db = l->mine;
			return;
		}
	}
	if (l->mine && l->left_ms > 0)
		strlist_add(&p->strays, l->name);
}

static void pass_free(struct pass *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->w[i].mailbox);
	free(p->w);
	strlist_free(&p->strays);
}

/* The folders as they are now (a reload may change them meanwhile). */
static void pass_snapshot(struct keeper *k, struct pass *p)
{
	pthread_mutex_lock(&k->mu);
	p->n = k->n;
	p->w = xcalloc(k->n ? k->n : 1, sizeof *p->w);
	for (size_t i = 0; i < k->n; i++) {
		p->w[i].mailbox = xstrdup(k->slots[i].mailbox);
		if (!lease_name(p->w[i].mailbox, p->w[i].lease, sizeof p->w[i].lease))
			p->w[i].lease[0] = 0; /* a name too long to lease: never watched */
	}
	pthread_mutex_unlock(&k->mu);
}

/* Gives up to excess folders up, those no session works on now. */
static int give_up(struct keeper *k, struct pass *p, int excess, int share, int live)
{
	for (size_t i = p->n; i-- > 0 && excess > 0;) {
		struct want *w = &p->w[i];
		if (!w->lease[0] || !cluster_lease_held(k->cl, w->lease))
			continue;
		pthread_mutex_lock(&k->mu);
		struct slot *s = slot_find(k, w->mailbox);
		int ok = s && s->busy == 0;
		if (ok)
			s->yielding = 1;
		pthread_mutex_unlock(&k->mu);
		if (!ok)
			continue; /* between two fetches, at a later pass */
		int rc = cluster_lease_release(k->cl, w->lease);
		pthread_mutex_lock(&k->mu);
		s = slot_find(k, w->mailbox);
		if (s) {
			s->yielding = 0;
			s->released = now_monotonic();
			s->was_held = 0;
		}
		pthread_mutex_unlock(&k->mu);
		log_info("cluster.lease_given_up mailbox=%s share=%d instances=%d", w->mailbox,
			 share, live);
		excess--;
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* Takes the free folders this instance may have: up to its share, and
 * beyond it those that nobody took for a third of the lease time (and
 * that it did not give up itself within the lease time). */
static int take(struct keeper *k, struct pass *p, int mine, int share, int live)
{
	double now = now_monotonic(), lease_s = (double)cluster_lease_ms(k->cl) / 1000;
	for (size_t i = 0; i < p->n; i++) {
		struct want *w = &p->w[i];
		if (!w->lease[0] || cluster_lease_held(k->cl, w->lease))
			continue;
		pthread_mutex_lock(&k->mu);
		struct slot *s = slot_find(k, w->mailbox);
		double free_since = 0, released = 0;
		if (s) {
			if (w->other_ms > 0)
				s->free_since = 0;
			else if (!s->free_since)
				s->free_since = now;
			free_since = s->free_since;
			released = s->released;
		}
		pthread_mutex_unlock(&k->mu);
		if (!s)
			continue;
		if (w->other_ms > 0) {
			pass_wait(p, (double)(w->other_ms + EXPIRY_SLACK_MS));
			continue;
		}
		if (mine >= share) {
			double after = free_since + lease_s / 3;
			if (released > 0 && released + lease_s > after)
				after = released + lease_s;
			if (now < after) {
				pass_wait(p, (after - now) * 1000);
				continue;
			}
		}
		int64_t epoch = 0;
		int rc = cluster_lease_acquire(k->cl, w->lease, &epoch);
		if (rc < 0)
			return -1;
		if (rc == 1) {
			mine++;
			pthread_mutex_lock(&k->mu);
			s = slot_find(k, w->mailbox);
			if (s)
				s->free_since = 0;
			pthread_mutex_unlock(&k->mu);
			log_info(
			    "cluster.lease_acquired mailbox=%s epoch=%lld share=%d instances=%d",
			    w->mailbox, (long long)epoch, share, live);
		}
	}
	return 0;
}

/* The parse stage: whoever asks first after it is free. */
static int take_process(struct keeper *k, struct pass *p)
{
	if (cluster_lease_held(k->cl, KEEPER_PROCESS_LEASE))
		return 0;
	if (p->process_other_ms > 0) {
		pass_wait(p, (double)(p->process_other_ms + EXPIRY_SLACK_MS));
		return 0;
	}
	int64_t epoch = 0;
	int rc = cluster_lease_acquire(k->cl, KEEPER_PROCESS_LEASE, &epoch);
	return rc < 0 ? -1 : 0;
}

/* One look at the leases and what to take or give up.  0, or -1 when the
 * database failed; *wait_ms: until the next expiry worth a look. */
static int keeper_deal(struct keeper *k, long *wait_ms)
{
	struct pass p = {.k = k, .wait_ms = (double)cluster_lease_ms(k->cl) / 3};
	int rc = -1;
	pass_snapshot(k, &p);
	if (cluster_leases(k->cl, "", seen_lease, &p) < 0)
		goto out;
	for (size_t i = 0; i < p.strays.n; i++)
		if (cluster_lease_release(k->cl, p.strays.v[i]) < 0)
			goto out;
	int live = cluster_live_instances(k->cl);
	if (live < 0)
		goto out;
	if (live < 1)
		live = 1;
	int n = (int)p.n, share = (n + live - 1) / live, mine = 0;
	for (size_t i = 0; i < p.n; i++)
		mine += p.w[i].lease[0] && cluster_lease_held(k->cl, p.w[i].lease);
	if (mine > share ? give_up(k, &p, mine - share, share, live) < 0
			 : take(k, &p, mine, share, live) < 0)
		goto out;
	if (take_process(k, &p) < 0)
		goto out;
	rc = 0;
out:
	*wait_ms = (long)p.wait_ms;
	pass_free(&p);
	return rc;
}

/* Logs what changed since the last look (taken, lost, expired locally)
 * and wakes whom it concerns. */
static void keeper_notice(struct keeper *k)
{
	int changed = 0;
	pthread_mutex_lock(&k->mu);
	for (size_t i = 0; i < k->n; i++) {
		struct slot *s = &k->slots[i];
		char lease[LEASE_NAME_MAX];
		int held =
		    lease_name(s->mailbox, lease, sizeof lease) && cluster_lease_held(k->cl, lease);
		if (held == s->was_held)
			continue;
		if (!held)
			log_warn("cluster.lease_lost mailbox=%s note=\"not renewed in time, or "
				 "another instance holds it: its work here stops\"",
				 s->mailbox);
		s->was_held = held;
		changed = 1;
	}
	pthread_mutex_unlock(&k->mu);
	int process = cluster_lease_held(k->cl, KEEPER_PROCESS_LEASE);
	if (process != k->process_was_held) {
		log_info("cluster.process_%s lease=" KEEPER_PROCESS_LEASE,
			 process ? "acquired" : "lost");
		k->process_was_held = process;
		if (process)
			poke(k->proc_wake_fd);
	}
	if (changed)
		wake_sessions(k);
}

static void keeper_failed(struct keeper *k)
{
	struct db *db = store_db(k->st);
	if (db_unavailable(db)) {
		keeper_store_unavailable(k, db_errmsg(db));
	} else if (!k->error_logged) {
		log_error("cluster.error error=%s", LOG_Q(db_errmsg(db)));
		k->error_logged = 1;
	}
}

static void *keeper_main(void *arg)
{
	struct keeper *k = arg;
	double third_ms = (double)cluster_lease_ms(k->cl) / 3, next_beat = 0;
	long fail_ms = 0;
	while (!atomic_load(&k->stop)) {
		long wait_ms = (long)third_ms;
		int rc = 0;
		if (now_monotonic() >= next_beat) {
			rc = cluster_heartbeat(k->cl) < 0 ? -1 : 0;
			if (rc == 0)
				next_beat = now_monotonic() + third_ms / 1000;
		}
		if (rc == 0)
			rc = keeper_deal(k, &wait_ms);
		if (rc < 0) {
			keeper_failed(k);
			fail_ms = fail_ms ? fail_ms * 2 : 500;
			if (fail_ms > (long)third_ms)
				fail_ms = (long)third_ms;
			wait_ms = fail_ms;
			next_beat = 0; /* the heartbeat first when it answers */
		} else {
			fail_ms = 0;
			k->error_logged = 0;
			keeper_store_available(k);
			double to_beat = (next_beat - now_monotonic()) * 1000;
			if ((double)wait_ms > to_beat)
				wait_ms = (long)to_beat;
		}
		keeper_notice(k);
		pause_ms(k->wake_fd, wait_ms < MIN_WAIT_MS ? MIN_WAIT_MS : wait_ms);
	}
	return NULL;
}

/* --- life ----------------------------------------------------------------- */

struct keeper *keeper_start(const char *state, int64_t lease_ms, int proc_wake_fd, char *err,
			    size_t errlen)
{
	struct store *st = store_open(state, err, errlen);
	if (!st)
		return NULL;
	struct cluster *cl = cluster_open(store_db(st), MAILFEED_VERSION, lease_ms, err, errlen);
	if (!cl) {
		store_close(st);
		return NULL;
	}
	struct keeper *k = xcalloc(1, sizeof *k);
	k->st = st;
	k->cl = cl;
	k->proc_wake_fd = proc_wake_fd;
	k->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&k->mu, NULL);
	if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
		snprintf(err, errlen, "cannot start the lease keeper thread");
		keeper_stop(k);
		return NULL;
	}
	k->running = 1;
	log_info("cluster.joined instance=%s lease_s=%.1f", cluster_instance_id(cl),
		 (double)cluster_lease_ms(cl) / 1000);
	return k;
}

static void keeper_halt(struct keeper *k)
{
	atomic_store(&k->stop, 1);
	poke(k->wake_fd);
	if (k->running)
		pthread_join(k->thread, NULL);
	k->running = 0;
}

void keeper_leave(struct keeper *k)
{
	if (!k)
		return;
	keeper_halt(k);
	cluster_leave(k->cl); /* every lease given up at once */
}

void keeper_stop(struct keeper *k)
{
	if (!k)
		return;
	keeper_halt(k);
	cluster_close(k->cl); /* every lease given up at once */
	store_close(k->st);
	for (size_t i = 0; i < k->n; i++)
		free(k->slots[i].mailbox);
	free(k->slots);
	free(k->wakers);
	pthread_mutex_destroy(&k->mu);
	if (k->wake_fd >= 0)
		close(k->wake_fd);
	free(k);
}

const char *keeper_instance_id(const struct keeper *k) { return cluster_instance_id(k->cl); }

int64_t keeper_lease_ms(const struct keeper *k) { return cluster_lease_ms(k->cl); }

void keeper_set_mailboxes(struct keeper *k, const char *const *names, size_t n)
{
	if (!k)
		return;
	struct slot *slots = xcalloc(n ? n : 1, sizeof *slots);
	pthread_mutex_lock(&k->mu);
	for (size_t i = 0; i < n; i++) {
		const struct slot *old = slot_find(k, names[i]);
		if (old) { /* what the keeper saw of it stays known */
			slots[i].was_held = old->was_held;
			slots[i].released = old->released;
			slots[i].free_since = old->free_since;
		}
		slots[i].mailbox = xstrdup(names[i]);
	}
	for (size_t i = 0; i < k->n; i++)
		free(k->slots[i].mailbox);
	free(k->slots);
	k->slots = slots;
	k->n = n;
	pthread_mutex_unlock(&k->mu);
	poke(k->wake_fd);
}

void keeper_set_wakers(struct keeper *k, const int *fds, size_t n)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	free(k->wakers);
	k->wakers = n ? xmalloc(n * sizeof *fds) : NULL;
	if (n)
		memcpy(k->wakers, fds, n * sizeof *fds);
	k->nwakers = n;
	pthread_mutex_unlock(&k->mu);
}
