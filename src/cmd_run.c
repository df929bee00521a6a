/* cmd_run.c — `mailfeed run`: the gateway's threads and their discipline.
 *
 * The mapped folders of an account (and [replies]) are dealt out to at most
 * its max_connections sessions; each session is a watcher thread owning
 * one IMAP connection: it takes new messages in and applies the
 * after-action to messages that are safe (both in ingest.c), and waits
 * with IDLE on its first folder (or polls); its other folders get a STATUS
 * look at least every poll_interval and are synced when UIDNEXT moved.
 * The main thread is the processor: it handles signals through a
 * signalfd and runs a small table of periodic duties (processing —
 * parse, classify, thread, enqueue — and delivery of the outbox on every
 * pass, due digests every minute, the systemd watchdog and status at the
 * watchdog's pace), each with its period and the time of its last run.
 * Threads talk only through the database and eventfds; each has its own
 * connection to the state.
 *
 * Several daemons may share one state (cmd_run_keeper.h): a lease keeper
 * thread deals the folders and the parse stage out among them, and a
 * session works only on the folders whose lease this instance holds,
 * asking before each fetch and store, never waiting in IDLE past the
 * lease's local deadline, and logging out while none is its own.  The
 * processor parses only while it holds the parse stage's lease; every
 * instance delivers.  A state database that cannot be reached pauses every
 * duty until it answers again.
 *
 * SIGHUP loads the new config; an invalid one is refused (logged, shown by
 * `status`) and the old one kept.  A valid one replaces the watchers: they
 * finish their current step, the new set starts from the stored
 * checkpoints, so nothing is lost or repeated.  SIGTERM/SIGINT stop within
 * a few seconds; whatever was not committed is simply done again later. */
#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "cmd_run_keeper.h"
#include "mailfeed/cli.h"
#include "mailfeed/digest.h"
#include "mailfeed/feed.h"
#include "mailfeed/health.h"
#include "mailfeed/imap.h"
#include "mailfeed/ingest.h"
#include "mailfeed/log.h"
#include "mailfeed/metrics.h"
#include "mailfeed/notes.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/pipeline.h"
#include "mailfeed/replies.h"
#include "mailfeed/retention.h"
#include "mailfeed/state_owner.h"
#include "mailfeed/store.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/token.h"
#include "mailfeed/worker.h"

#define MAX_BACKOFF 300
#define STORE_MAX_BACKOFF 30
#define STORE_AWAY_MAX_BACKOFF 5 /* unreachable: asked again this often at least */
#define SHARED_PROCESS_POLL_MS 1000
#define WATCH_WAIT 60
#define PROCESS_BATCH 50
/* The longest a step of a watcher or of the processor may go without
 * progress (one message fetched, one batch processed) before /healthz
 * calls it stuck. */
#define HEALTH_STEP health_step()
#define AUTH_FAILURES 3	  /* refused logins of an account before ... */
#define AUTH_BACKOFF 3600 /* ... it waits this long (a reload retries at once) */

/* Refused logins are counted per account, not per folder: the watchers of
 * one account share its gate, so a wrong password is not hammered by each
 * of them. */
struct account_gate {
	const char *name;
	pthread_mutex_t mu;
	int failures;
	time_t until;
};

/* One mapped folder (or [replies]) as its session serves it. */
struct watcher {
	const char *key;
	const struct mf_account *acct;
	const char *folder;
	enum after_action after;
	const char *after_folder;
	long long max_size;
	enum start_mode start;
	long start_since;
	const struct mf_config *cfg;
	struct keeper *keeper; /* its lease; NULL: always ours */
	/* what the last look of this session saw */
	int looked;  /* synced since the session connected */
	int refused; /* the server refused the folder (missing, say) */
	uint32_t uidnext, uidvalidity;
};

/* One IMAP session of an account and the folders it serves: a thread.
 * With one folder it waits on it with IDLE; with several it waits on the
 * first and looks at the others with STATUS at least every poll_interval. */
struct session {
	pthread_t thread;
	int running;
	struct watcher **f;
	size_t nf;
	const struct mf_account *acct;
	const char *state_path;
	int wake_fd;
	atomic_int stop; /* set by the processor, read by the session */
	int proc_wake_fd;
	int health;		   /* its slot in the liveness table */
	struct account_gate *gate; /* NULL in run --once */
	struct keeper *keeper;	   /* the leases of its folders; NULL: all ours */
};

/* Seconds until the account may try to log in again, 0 now. */
static long gate_wait(struct account_gate *g)
{
	if (!g)
		return 0;
	pthread_mutex_lock(&g->mu);
	time_t now = time(NULL), until = g->until;
	pthread_mutex_unlock(&g->mu);
	return until > now ? (long)(until - now) : 0;
}

static void gate_result(struct account_gate *g, struct store *st, int refused, const char *err)
{
	if (!g)
		return;
	char key[256];
	snprintf(key, sizeof key, NOTE_AUTH_BACKOFF "%s", g->name);
	pthread_mutex_lock(&g->mu);
	int was = g->failures, failures = g->failures = refused ? g->failures + 1 : 0;
	time_t until = 0;
	if (failures >= AUTH_FAILURES && g->until <= time(NULL))
		until = g->until = time(NULL) + AUTH_BACKOFF;
	pthread_mutex_unlock(&g->mu);
	if (until) {
		log_error("imap.auth_backoff account=%s failures=%d retry_in=%ds error=%s "
			  "note=\"fix the credentials, then reload to try at once\"",
			  g->name, failures, AUTH_BACKOFF, LOG_Q(err));
		note_set(st, key, err, until);
	} else if (!refused && was > 0) {
		note_delete(st, key);
	}
}

static void wake(int fd)
{
	uint64_t one = 1;
	if (fd >= 0 && write(fd, &one, sizeof one) < 0 && errno != EAGAIN)
		log_debug("daemon.wake error=%s", LOG_Q(strerror(errno)));
}

static void drain(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof v) > 0)
		;
}

/* The next delay of a doubling backoff: 1 after none, at most max. */
static long backoff_next(long cur, long max)
{
	long next = cur > 0 ? cur * 2 : 1;
	return next > max ? max : next;
}

static void sleep_or_wake(int fd, long seconds)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	poll(&p, 1, (int)(seconds * 1000));
	drain(fd);
}

/* The check before each fetch and store of a folder: its lease. */
static int watcher_may_store(void *arg)
{
	struct watcher *w = arg;
	return keeper_held(w->keeper, w->key);
}

static struct ingest_folder watcher_target(struct watcher *w)
{
	return (struct ingest_folder){.key = w->key,
				      .acct = w->acct,
				      .folder = w->folder,
				      .max_size = w->max_size,
				      .start = w->start,
				      .start_since = w->start_since,
				      .cfg = w->cfg,
				      .may_work = watcher_may_store,
				      .may_work_arg = w};
}

/* Every status row of the session's folders shows err. */
static void session_folders_error(struct session *ss, struct store *st, const char *err)
{
	for (size_t i = 0; i < ss->nf; i++)
		store_folder_error(st, ss->f[i]->key, err);
}

/* Syncs one folder and applies its after-actions.  A folder the server
 * refuses while the connection stays good (it was deleted, say) is marked
 * in its status row and skipped, so that it does not take the session's
 * other folders down with it; a lone folder reconnects as before. */
static int folder_step(struct session *ss, struct imap_session *s, struct store *st,
		       struct watcher *w, char *err, size_t errlen)
{
	int fresh = 0;
	struct ingest_folder target = watcher_target(w);
	int rc = ingest_sync_folder(s, st, &target, &ss->stop, &fresh, err, errlen);
	if (rc == -1 && ss->nf > 1) {
		char why[512];
		if (imap_noop(s, why, sizeof why) < 0)
			return -1;
		if (!w->refused)
			log_warn("imap.folder_error mailbox=%s folder=%s error=%s", w->key,
				 w->folder, LOG_Q(err));
		store_folder_error(st, w->key, err);
		w->refused = 1;
		return 0;
	}
	if (rc < 0)
		return rc;
	w->refused = 0;
	w->looked = 1;
	if (fresh) {
		wake(ss->proc_wake_fd);
		imap_news_taken(s);
	}
	if (!keeper_held(w->keeper, w->key))
		return INGEST_LEASE_LOST; /* another instance applies them now */
	return ingest_apply_acks(s, st, w->key, w->after, w->after_folder, err, errlen);
}

/* folder_step on a folder whose lease is held, marked busy meanwhile (it
 * is not given up in the middle).  INGEST_LEASE_LOST when it is not ours
 * (any more). */
static int folder_step_held(struct session *ss, struct imap_session *s, struct store *st,
			    struct watcher *w, char *err, size_t errlen)
{
	if (!keeper_begin(ss->keeper, w->key))
		return INGEST_LEASE_LOST;
	int rc = folder_step(ss, s, st, w, err, errlen);
	keeper_end(ss->keeper, w->key);
	return rc;
}

/* The folders but the one waited on, with a session of several: a STATUS each,
 * and a sync of those whose UIDNEXT or UIDVALIDITY moved, or that have
 * after-actions due.  With look = 0 only the after-actions are checked
 * (the processor woke the session after a delivery). */
static int session_sweep(struct session *ss, struct imap_session *s, struct store *st, size_t idle,
			 int look, char *err, size_t errlen)
{
	for (size_t i = 0; i < ss->nf && !atomic_load(&ss->stop); i++) {
		struct watcher *w = ss->f[i];
		if (i == idle || !keeper_may_work(ss->keeper, w->key))
			continue; /* another instance watches it */
		int due = 0;
		if (look) {
			struct imap_folder_info info;
			int rc = imap_status(s, w->folder, &info, err, errlen);
			if (rc == IMAP_REFUSED) {
				if (!w->refused)
					log_warn("imap.folder_error mailbox=%s folder=%s error=%s",
						 w->key, w->folder, LOG_Q(err));
				store_folder_error(st, w->key, err);
				w->refused = 1;
				continue;
			}
			if (rc < 0)
				return -1;
			due = !w->looked || w->refused || info.uidnext != w->uidnext ||
			      info.uidvalidity != w->uidvalidity || info.uidnext == 0;
			w->uidnext = info.uidnext;
			w->uidvalidity = info.uidvalidity;
		} else if (!w->looked || w->refused) {
			continue; /* the next look takes it */
		}
		if (!due && !ingest_acks_pending(st, w->key))
			continue;
		health_beat(ss->health, HEALTH_STEP);
		int rc = folder_step_held(ss, s, st, w, err, errlen);
		if (rc < 0 && rc != INGEST_LEASE_LOST)
			return rc;
	}
	return 0;
}

/* The folder to wait on: the first of this instance's folders the server
 * did not refuse, else the last of them; ss->nf when none is ours. */
static size_t session_idle_folder(struct session *ss)
{
	size_t idle = ss->nf;
	for (size_t i = 0; i < ss->nf; i++) {
		if (!keeper_may_work(ss->keeper, ss->f[i]->key))
			continue;
		idle = i;
		if (!ss->f[i]->refused)
			break;
	}
	return idle;
}

/* Waits for news on w, the folder waited on, never past the local deadline
 * of its lease: a lease that was not renewed ends the wait before it ends
 * (the next look finds it gone).  0, or -1 when the connection failed. */
static int session_wait(struct session *ss, struct imap_session *s, struct watcher *w,
			double next_look, char *err, size_t errlen)
{
	long max_wait = WATCH_WAIT;
	if (ss->nf > 1) {
		double left = next_look - now_monotonic();
		max_wait = left < 1 ? 1 : left < WATCH_WAIT ? (long)(left + 0.999) : WATCH_WAIT;
	}
	double lease_left = keeper_left(ss->keeper, w->key);
	if (lease_left < 2) {
		struct pollfd p = {.fd = ss->wake_fd, .events = POLLIN};
		poll(&p, 1, (int)(lease_left * 1000) + 10);
		drain(ss->wake_fd);
		return 0;
	}
	if ((double)max_wait > lease_left - 1)
		max_wait = (long)(lease_left - 1);
	health_beat(ss->health, (double)max_wait + 60 + 2.0 * (double)ss->acct->timeout);
	int r = imap_wait(s, ss->wake_fd, max_wait, err, errlen);
	health_beat(ss->health, HEALTH_STEP);
	drain(ss->wake_fd);
	return r < 0 ? -1 : 0;
}

/* session_serve's answer when none of the session's folders is this
 * instance's now (another instance watches them, the state database is
 * away). */
#define SERVE_STANDBY 1

/* Serves the session's folders that are this instance's on a connected
 * session until stop, SERVE_STANDBY, or an error (returned as
 * ingest_sync_folder's). */
static int session_serve(struct session *ss, struct imap_session *s, struct store *st,
			 long *backoff, long *store_backoff, char *err, size_t errlen)
{
	double next_look = 0;
	for (size_t i = 0; i < ss->nf; i++)
		ss->f[i]->looked = ss->f[i]->refused = 0;
	while (!atomic_load(&ss->stop)) {
		int rc = 0;
		/* IDLE on the first folder of ours the server did not refuse */
		size_t idle = session_idle_folder(ss);
		if (idle == ss->nf)
			return SERVE_STANDBY;
		if (ss->nf > 1) {
			int look = now_monotonic() >= next_look;
			rc = session_sweep(ss, s, st, idle, look, err, errlen);
			if (rc < 0)
				return rc;
			if (look)
				next_look = now_monotonic() + (double)ss->acct->poll_interval;
		}
		rc = folder_step_held(ss, s, st, ss->f[idle], err, errlen);
		if (rc == INGEST_LEASE_LOST)
			continue; /* the next look finds what is still ours */
		if (rc < 0)
			return rc;
		if (ss->f[idle]->refused && session_idle_folder(ss) != idle)
			continue; /* wait on another folder */
		*backoff = 1;
		*store_backoff = 1;
		if (atomic_load(&ss->stop))
			break;
		if (session_wait(ss, s, ss->f[idle], next_look, err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* Waits while none of the session's folders is this instance's: another
 * instance watches them, or the state database is away.  1 when it waited
 * (look again), 0 when a folder is ours to serve. */
#define STANDBY_WAIT 10
static int session_standby(struct session *ss)
{
	for (size_t i = 0; i < ss->nf; i++)
		if (keeper_may_work(ss->keeper, ss->f[i]->key))
			return 0;
	health_wait(ss->health, HEALTH_STANDBY, STANDBY_WAIT + 5,
		    keeper_store_away() ? "the state database is unreachable"
					: "another instance watches these folders");
	sleep_or_wake(ss->wake_fd, STANDBY_WAIT);
	return 1;
}

static void session_connected(struct session *ss, struct imap_session *s)
{
	if (ss->nf > 1)
		log_info("imap.connected mailbox=%s account=%s folder=%s idle=%s folders=%zu "
			 "poll_interval=%lds",
			 ss->f[0]->key, ss->acct->name, ss->f[0]->folder,
			 imap_has_idle(s) ? "yes" : "no", ss->nf, ss->acct->poll_interval);
	else
		log_info("imap.connected mailbox=%s account=%s folder=%s idle=%s", ss->f[0]->key,
			 ss->acct->name, ss->f[0]->folder, imap_has_idle(s) ? "yes" : "no");
}

static void *session_main(void *arg)
{
	struct session *ss = arg;
	const char *key = ss->f[0]->key;
	char err[512];
	long backoff = 1, store_backoff = 1;
	struct store *st = store_open(ss->state_path, err, sizeof err);
	if (!st) {
		log_error("watcher.error mailbox=%s error=%s", key, LOG_Q(err));
		return NULL;
	}
	health_bind(ss->health);
	while (!atomic_load(&ss->stop)) {
		if (session_standby(ss))
			continue;
		long barred = gate_wait(ss->gate);
		if (barred > 0) {
			health_wait(ss->health, HEALTH_AUTH_BACKOFF, (double)barred,
				    "the account's logins were refused; a reload retries at once");
			sleep_or_wake(ss->wake_fd, barred);
			continue;
		}
		health_beat(ss->health, HEALTH_STEP);
		struct imap_session *s = imap_open(ss->acct, err, sizeof err);
		gate_result(ss->gate, st, !s && imap_login_refused(), err);
		if (!s) {
			long delay = jitter(backoff);
			log_error("imap.error mailbox=%s error=%s retry_in=%lds", key, LOG_Q(err),
				  delay);
			health_wait(ss->health,
				    imap_last_failure() == IMAP_FAIL_AUTH ? HEALTH_AUTH_BACKOFF
									  : HEALTH_BACKOFF,
				    (double)delay, err);
			session_folders_error(ss, st, err);
			sleep_or_wake(ss->wake_fd, delay);
			backoff = backoff_next(backoff, MAX_BACKOFF);
			continue;
		}
		session_connected(ss, s);
		int rc = session_serve(ss, s, st, &backoff, &store_backoff, err, sizeof err);
		if (atomic_load(&ss->stop) || rc == SERVE_STANDBY) {
			if (rc == SERVE_STANDBY)
				log_info("imap.standby mailbox=%s note=\"none of these folders is "
					 "this instance's now: logged out\"",
					 key);
			imap_close(s);
			continue;
		}
		imap_abort(s);
		if (rc == INGEST_STORE_FAILED && db_unavailable(store_db(st))) {
			/* nothing fetched can be stored now: the standby waits */
			keeper_store_unavailable(ss->keeper, store_errmsg(st));
			log_info("watcher.paused mailbox=%s note=\"the state database is "
				 "unreachable: nothing taken in until it answers\"",
				 key);
			sleep_or_wake(ss->wake_fd, 1);
			continue;
		}
		if (rc == INGEST_STORE_FAILED) {
			/* the server is fine: what failed is the state database (a
			 * full disk, say); try again soon, from where it stopped */
			log_warn("watcher.store_failed mailbox=%s error=%s retry_in=%lds", key,
				 LOG_Q(err), store_backoff);
			health_wait(ss->health, HEALTH_BACKOFF, (double)store_backoff, err);
			sleep_or_wake(ss->wake_fd, store_backoff);
			store_backoff = backoff_next(store_backoff, STORE_MAX_BACKOFF);
			continue;
		}
		long delay = jitter(backoff);
		log_warn("imap.disconnected mailbox=%s error=%s retry_in=%lds", key, LOG_Q(err),
			 delay);
		health_wait(ss->health, HEALTH_BACKOFF, (double)delay, err);
		session_folders_error(ss, st, err);
		sleep_or_wake(ss->wake_fd, delay);
		backoff = backoff_next(backoff, MAX_BACKOFF);
	}
	store_close(st);
	return NULL;
}

struct daemon {
	const char *config_path;
	struct mf_config *cfg;
	struct watcher *w;
	size_t nw;
	struct session *ss; /* the threads serving w */
	size_t nss;
	int proc_wake_fd;
	const struct feed_backend_ops *feed;
	void *feed_ctx;
	struct parse_worker *worker;
	struct metrics_server *metrics;
	char *metrics_listen;
	int metrics_unsubscribe;    /* the listener serves /unsubscribe/ */
	struct account_gate *gates; /* one per account, for the watchers */
	size_t ngates;
	struct keeper *keeper; /* the leases among instances; NULL in run --once */
	int abandoned;	       /* a session thread could not be stopped */
};

static size_t watchers_plan(struct daemon *d)
{
	const struct mf_config *cfg = d->cfg;
	size_t n = cfg->n_mailboxes + (cfg->replies.present ? 1 : 0);
	d->w = xcalloc(n ? n : 1, sizeof *d->w);
	for (size_t i = 0; i < cfg->n_mailboxes; i++) {
		const struct mf_mailbox *mb = &cfg->mailboxes[i];
		d->w[i] = (struct watcher){.key = mb->name,
					   .acct = mb->acct,
					   .folder = mb->folder,
					   .after = mb->after,
					   .after_folder = mb->after_folder,
					   .start = mb->start,
					   .start_since = mb->start_since};
	}
	if (cfg->replies.present)
		d->w[n - 1] = (struct watcher){.key = REPLIES_KEY,
					       .acct = cfg->replies.acct,
					       .folder = cfg->replies.folder,
					       .after = cfg->replies.after,
					       .after_folder = cfg->replies.after_folder,
					       .start = START_ALL};
	for (size_t i = 0; i < n; i++) {
		d->w[i].max_size = cfg->gateway.max_message_size;
		d->w[i].cfg = cfg;
		d->w[i].keeper = d->keeper;
	}
	return n;
}

/* Deals the folders of each account out to at most its max_connections
 * sessions, in config order: session k of an account serves its folders
 * k, k + n, k + 2n, ... and waits with IDLE on the first of them. */
static void sessions_plan(struct daemon *d)
{
	d->ss = xcalloc(d->nw ? d->nw : 1, sizeof *d->ss);
	d->nss = 0;
	for (size_t i = 0; i < d->nw; i++) {
		const struct mf_account *a = d->w[i].acct;
		size_t first = 0, count = 0, seen = 0;
		for (size_t j = 0; j < i; j++)
			if (d->w[j].acct == a)
				seen = 1;
		if (seen)
			continue; /* dealt with its account's first folder */
		for (size_t j = 0; j < d->nw; j++)
			count += d->w[j].acct == a;
		size_t n = (size_t)(a->max_connections > 0 ? a->max_connections : 1);
		if (n > count)
			n = count;
		first = d->nss;
		for (size_t k = 0; k < n; k++) {
			struct session *ss = &d->ss[d->nss++];
			*ss = (struct session){.acct = a,
					       .state_path = d->cfg->gateway.state,
					       .wake_fd = -1,
					       .proc_wake_fd = d->proc_wake_fd,
					       .health = -1,
					       .keeper = d->keeper};
			ss->f = xcalloc(count / n + 1, sizeof *ss->f);
		}
		size_t k = 0;
		for (size_t j = 0; j < d->nw; j++) {
			if (d->w[j].acct != a)
				continue;
			struct session *ss = &d->ss[first + k % n];
			ss->f[ss->nf++] = &d->w[j];
			k++;
		}
	}
}

/* "mailbox team", or "mailboxes team, sales, ..." for a shared session. */
static void session_name(const struct session *ss, char *name, size_t len)
{
	size_t used = (size_t)snprintf(name, len, "mailbox%s ", ss->nf > 1 ? "es" : "");
	for (size_t i = 0; i < ss->nf && used < len; i++) {
		if (used + strlen(ss->f[i]->key) + 8 >= len) {
			snprintf(name + used, len - used, "(+%zu)", ss->nf - i);
			break;
		}
		used += (size_t)snprintf(name + used, len - used, "%s%s", ss->f[i]->key,
					 i + 1 < ss->nf ? ", " : "");
	}
}

/* A new set of watchers starts with a clean slate: a reload (after the
 * password was fixed, say) tries every account at once. */
static void gates_start(struct daemon *d, struct store *st)
{
	d->ngates = d->cfg->n_accounts;
	d->gates = xcalloc(d->ngates ? d->ngates : 1, sizeof *d->gates);
	for (size_t i = 0; i < d->ngates; i++) {
		char key[256];
		d->gates[i].name = d->cfg->accounts[i].name;
		pthread_mutex_init(&d->gates[i].mu, NULL);
		snprintf(key, sizeof key, NOTE_AUTH_BACKOFF "%s", d->gates[i].name);
		note_delete(st, key);
	}
}

/* The keeper learns the folders to lease and whom to wake. */
static void watchers_to_keeper(struct daemon *d)
{
	const char **names = xcalloc(d->nw ? d->nw : 1, sizeof *names);
	int *fds = xcalloc(d->nss ? d->nss : 1, sizeof *fds);
	for (size_t i = 0; i < d->nw; i++)
		names[i] = d->w[i].key;
	for (size_t i = 0; i < d->nss; i++)
		fds[i] = d->ss[i].wake_fd;
	keeper_set_mailboxes(d->keeper, names, d->nw);
	keeper_set_wakers(d->keeper, fds, d->nss);
	free(names);
	free(fds);
}

static void watchers_start(struct daemon *d, struct store *st)
{
	gates_start(d, st);
	d->nw = watchers_plan(d);
	sessions_plan(d);
	for (size_t i = 0; i < d->nss; i++)
		d->ss[i].wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	watchers_to_keeper(d);
	for (size_t i = 0; i < d->nss; i++) {
		struct session *ss = &d->ss[i];
		if (ss->acct >= d->cfg->accounts && ss->acct < d->cfg->accounts + d->ngates)
			ss->gate = &d->gates[ss->acct - d->cfg->accounts];
		char name[300];
		session_name(ss, name, sizeof name);
		ss->health = health_register(name);
		if (pthread_create(&ss->thread, NULL, session_main, ss) == 0)
			ss->running = 1;
		else
			log_error("watcher.error mailbox=%s error=\"cannot start thread\"",
				  ss->f[0]->key);
	}
	log_info("run.sessions folders=%zu sessions=%zu", d->nw, d->nss);
}

static void watchers_stop(struct daemon *d, double deadline)
{
	int abandoned = 0;
	keeper_set_wakers(d->keeper, NULL, 0); /* their eventfds close below */
	for (size_t i = 0; i < d->nss; i++) {
		atomic_store(&d->ss[i].stop, 1);
		wake(d->ss[i].wake_fd);
	}
	for (size_t i = 0; i < d->nss; i++) {
		struct session *ss = &d->ss[i];
		health_unregister(ss->health);
		if (!ss->running) {
			free(ss->f);
			continue;
		}
		double left = deadline - now_monotonic();
		struct timespec ts = realtime_after(left < 0.1 ? 0.1 : left);
		if (pthread_timedjoin_np(ss->thread, NULL, &ts) != 0) {
			log_warn("watcher.abandoned mailbox=%s note=\"still in network I/O; its "
				 "uncommitted step will be redone\"",
				 ss->f[0]->key);
			pthread_detach(ss->thread);
			ss->wake_fd = -1; /* the thread may still use it */
			abandoned = 1;
			continue;
		}
		close(ss->wake_fd);
		free(ss->f);
	}
	d->abandoned |= abandoned;
	if (!abandoned) { /* else a thread may still hold its folders and gate */
		free(d->ss);
		free(d->w);
		for (size_t i = 0; i < d->ngates; i++)
			pthread_mutex_destroy(&d->gates[i].mu);
		free(d->gates);
	}
	d->ss = NULL;
	d->nss = 0;
	d->w = NULL;
	d->nw = 0;
	d->gates = NULL;
	d->ngates = 0;
}

static void wake_watchers(struct daemon *d)
{
	for (size_t i = 0; i < d->nss; i++)
		wake(d->ss[i].wake_fd);
}

static int feed_open(struct daemon *d, struct store *st)
{
	char err[512];
	d->feed = feed_backend(d->cfg->feed.backend);
	if (!d->feed) {
		log_error("feed.error error=\"backend not available in this build\"");
		return -1;
	}
	if (d->feed->open(d->cfg, st, &d->feed_ctx, err, sizeof err) < 0) {
		log_error("feed.error backend=%s error=%s", d->feed->name, LOG_Q(err));
		d->feed = NULL;
		return -1;
	}
	return 0;
}

static void feed_close(struct daemon *d)
{
	if (d->feed && d->feed_ctx)
		d->feed->close(d->feed_ctx);
	d->feed = NULL;
	d->feed_ctx = NULL;
}

/* Up to rounds delivery rounds, until nothing is due or nothing moves.
 * Returns items that went dead, or -1 when the state database failed (what
 * is left is redone later); *delivered_any is set when something went out. */
static int deliver_rounds(struct daemon *d, struct store *st, int rounds, int *delivered_any)
{
	int dead = 0;
	if (!d->feed)
		return 0;
	for (int round = 0; round < rounds; round++) {
		long waiting = 0, delivered = 0;
		int r =
		    outbox_deliver_counted(st, d->cfg, d->feed, d->feed_ctx, &waiting, &delivered);
		if (r < 0)
			return -1;
		dead += r;
		if (delivered > 0)
			*delivered_any = 1;
		if (delivered == 0 && r == 0)
			break; /* nothing moved: what is left waits for later */
		if (waiting == 0)
			break;
	}
	return dead;
}

/* Delivers everything that is due now.  Returns items that went dead, or
 * -1 when the state database failed (what is left is redone later). */
static int deliver_all(struct daemon *d, struct store *st, int *delivered_any)
{
	*delivered_any = 0;
	retention_run(st, d->cfg->gateway.keep_raw, replies_id_lifetime(d->cfg), time(NULL));
	return deliver_rounds(d, st, 1000, delivered_any);
}

static void notify_status(struct store *st)
{
	struct outbox_counts c;
	if (outbox_counts(st, &c) < 0)
		return;
	sd_notifyf(0, "STATUS=outbox pending=%ld retrying=%ld delivered=%ld dead=%ld", c.pending,
		   c.retrying, c.delivered, c.dead);
}

/* The open session of w's account in run --once, shared by its folders
 * (one connection per account, however many folders), or a new one. */
static struct imap_session *once_session(struct daemon *d, struct imap_session **sessions, size_t i,
					 char *err, size_t errlen)
{
	for (size_t j = 0; j < i; j++)
		if (d->w[j].acct == d->w[i].acct && sessions[j])
			return sessions[j];
	return imap_open(d->w[i].acct, err, errlen);
}

/* Forgets a session dropped after an error, for every folder sharing it. */
static void once_drop(struct imap_session **sessions, size_t n, struct imap_session *s)
{
	for (size_t j = 0; j < n; j++)
		if (sessions[j] == s)
			sessions[j] = NULL;
	imap_abort(s);
}

/* run --once, first step: every folder synced over one session per account.
 * Returns the folders that failed. */
static int once_fetch(struct daemon *d, struct store *st, struct imap_session **sessions, size_t n)
{
	atomic_int stop = 0;
	int failures = 0;
	char err[512];
	for (size_t i = 0; i < n; i++) {
		struct watcher *w = &d->w[i];
		int fresh = 0;
		struct ingest_folder target = watcher_target(w);
		sessions[i] = once_session(d, sessions, i, err, sizeof err);
		int src = sessions[i] ? ingest_sync_folder(sessions[i], st, &target, &stop, &fresh,
							   err, sizeof err)
				      : -1;
		if (src < 0) {
			if (src == INGEST_STORE_FAILED) {
				log_error("store.error mailbox=%s error=%s", w->key, LOG_Q(err));
			} else {
				log_error("imap.error mailbox=%s error=%s", w->key, LOG_Q(err));
				store_folder_error(st, w->key, err);
			}
			if (sessions[i])
				once_drop(sessions, n, sessions[i]);
			failures++;
		}
	}
	return failures;
}

/* run --once, after delivery: the after-actions of the folders whose
 * session is still open.  Returns the folders that failed or wait. */
static int once_acks(struct daemon *d, struct store *st, struct imap_session **sessions, size_t n)
{
	int failures = 0;
	char err[512];
	for (size_t i = 0; i < n; i++) {
		struct watcher *w = &d->w[i];
		struct imap_folder_info info;
		if (!sessions[i] || !ingest_acks_pending(st, w->key))
			continue;
		int arc = imap_select(sessions[i], w->folder, &info, err, sizeof err);
		if (arc == 0)
			arc = ingest_apply_acks(sessions[i], st, w->key, w->after, w->after_folder,
						err, sizeof err);
		if (arc < 0) {
			log_error("imap.error mailbox=%s error=%s", w->key, LOG_Q(err));
			store_folder_error(st, w->key, err);
			once_drop(sessions, n, sessions[i]);
			failures++;
			continue;
		}
		failures += arc == INGEST_ACKS_WAITING;
	}
	return failures;
}

/* Logs out of every session, each once however many folders share it. */
static void once_close(struct imap_session **sessions, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sessions[i]) {
			struct imap_session *s = sessions[i];
			for (size_t j = i; j < n; j++)
				if (sessions[j] == s)
					sessions[j] = NULL;
			imap_close(s);
		}
}

/* Times of the steps of run --once (monotonic seconds). */
struct once_times {
	double start, fetch, process, deliver, deliver_cpu;
};

static void once_report(struct store *st, int failures, int dead, const struct once_times *t)
{
	struct outbox_counts c;
	outbox_counts(st, &c);
	double parse_s, enqueue_s, enqueue_cpu_s;
	pipeline_stage_seconds(&parse_s, &enqueue_s, &enqueue_cpu_s);
	log_info("run.once done failures=%d dead=%d pending=%ld retrying=%ld delivered=%ld "
		 "fetch_s=%.2f process_s=%.2f deliver_s=%.2f total_s=%.2f parse_s=%.2f "
		 "enqueue_s=%.2f enqueue_cpu_s=%.2f deliver_cpu_s=%.2f",
		 failures, dead, c.pending, c.retrying, c.delivered, t->fetch - t->start,
		 t->process - t->fetch, t->deliver - t->process, now_monotonic() - t->start,
		 parse_s, enqueue_s, enqueue_cpu_s, t->deliver_cpu);
}

/* One full pass: fetch, process, deliver, after-actions, digests and
 * queued notices.  Returns 0 when nothing failed, 1 otherwise. */
static int run_once(struct daemon *d, struct store *st)
{
	struct mf_config *cfg = d->cfg;
	size_t n = watchers_plan(d);
	struct imap_session **sessions = xcalloc(n ? n : 1, sizeof *sessions);
	int delivered_any = 0, done;
	struct once_times t = {.start = now_monotonic()};

	int failures = once_fetch(d, st, sessions, n);
	t.fetch = now_monotonic();
	while ((done = pipeline_process_new(st, cfg, d->worker, PROCESS_BATCH)) > 0)
		;
	if (done < 0)
		failures++; /* the state database took nothing: what is left waits */
	t.process = now_monotonic();
	double cpu_process = now_thread_cpu();
	int dead = deliver_all(d, st, &delivered_any);
	if (dead < 0) {
		failures++;
		dead = 0;
	}
	t.deliver = now_monotonic();
	t.deliver_cpu = now_thread_cpu() - cpu_process;
	failures += once_acks(d, st, sessions, n);
	once_close(sessions, n);
	free(sessions);
	free(d->w);
	d->w = NULL;
	if (cfg->smtp.present && d->feed)
		digest_run(st, cfg, d->feed, d->feed_ctx, time(NULL), 0, NULL);
	if (notice_send_queued(st, cfg) < 0)
		failures++;
	once_report(st, failures, dead, &t);
	return failures || dead ? 1 : 0;
}

/* (Re)starts the loopback metrics listener when its address changed. */
static int metrics_restart(struct daemon *d)
{
	const char *want = d->cfg->gateway.metrics_listen;
	int unsub = d->cfg->digest.public_url != NULL;
	unsigned char *secret = NULL;
	size_t secretlen = 0;
	char err[512];
	if (d->metrics_listen && want && strcmp(d->metrics_listen, want) == 0 &&
	    d->metrics_unsubscribe == unsub)
		return 0;
	metrics_server_stop(d->metrics);
	d->metrics = NULL;
	free(d->metrics_listen);
	d->metrics_listen = NULL;
	if (!want)
		return 0;
	if (unsub && token_secret_load(d->cfg, &secret, &secretlen, err, sizeof err) < 0) {
		log_error("unsubscribe.error error=%s", LOG_Q(err));
		unsub = 0;
	}
	d->metrics = metrics_server_start_unsubscribe(want, d->cfg->gateway.state, secret,
						      secretlen, err, sizeof err);
	if (secret)
		OPENSSL_cleanse(secret, secretlen);
	free(secret);
	d->metrics_unsubscribe = unsub;
	if (!d->metrics) {
		log_error("metrics.error listen=%s error=%s", want, LOG_Q(err));
		return -1;
	}
	d->metrics_listen = xstrdup(want);
	log_info("metrics.listening listen=%s", want);
	return 0;
}

/* While the parse stage works on a batch — slow messages each take up to
 * parse_timeout — the watchdog is fed from the worker's wait loop, which
 * stays alive and bounded however hostile the mail. */
static long parse_wd_interval_ms = 10000;

static void parse_feeds_watchdog(void *arg)
{
	static double last;
	double now = now_monotonic();
	(void)arg;
	health_beat_current(HEALTH_STEP);
	if ((now - last) * 1000 >= (double)parse_wd_interval_ms) {
		sd_notify(0, "WATCHDOG=1");
		last = now;
	}
}

/* The reply-token key, read once per configuration rather than per
 * message or digest run.  A key that cannot be read now is read again
 * where it is needed (and that use logs why it fails). */
static void secrets_preload(struct mf_config *cfg)
{
	char err[512];
	if (cfg->gateway.secret_file && token_secret_preload(cfg, err, sizeof err) < 0)
		log_warn("run.secret_unavailable error=%s", LOG_Q(err));
}

/* The daemon joins the instances sharing its state, on a connection of
 * its own: 0, or -1 (logged). */
static int run_join(struct daemon *d)
{
	char err[512];
	d->keeper =
	    keeper_start(d->cfg->gateway.state, (int64_t)d->cfg->gateway.lease_timeout * 1000,
			 d->proc_wake_fd, err, sizeof err);
	if (!d->keeper) {
		log_error("run.error error=%s", LOG_Q(err));
		return -1;
	}
	/* the claims it takes carry its name; set while no other thread
	 * takes any (at start, or in a reload with the watchers and the
	 * notice sender stopped) */
	store_set_instance_id(keeper_instance_id(d->keeper));
	return 0;
}

/* A reload that changed the state or the lease time joins again with
 * them (the watchers are stopped); the old membership is kept when the
 * new one cannot be had. */
static void reload_rejoin(struct daemon *d, const struct mf_config *old)
{
	if (!d->keeper || (strcmp(old->gateway.state, d->cfg->gateway.state) == 0 &&
			   old->gateway.lease_timeout == d->cfg->gateway.lease_timeout))
		return;
	struct keeper *prev = d->keeper;
	if (run_join(d) < 0) {
		d->keeper = prev;
		log_warn("reload.cluster note=\"keeping the old lease settings\"");
		return;
	}
	if (d->abandoned)
		keeper_leave(prev); /* an abandoned session may still ask it */
	else
		keeper_stop(prev);
}

static int reload(struct daemon *d, struct store **st)
{
	struct mf_diag diag = {0};
	struct mf_config *fresh;
	char err[512];

	sd_notify(0, "RELOADING=1");
	fresh = config_load(d->config_path, 0, &diag);
	if (!fresh) {
		struct buf b;
		buf_init(&b);
		for (size_t i = 0; i < diag.msgs.n; i++) {
			log_error("reload.refused problem=%s", LOG_Q(diag.msgs.v[i]));
			buf_printf(&b, "%s%s", i ? "; " : "", diag.msgs.v[i]);
		}
		note_set(*st, "reload_error", b.data ? b.data : "invalid config", 0);
		buf_free(&b);
		diag_free(&diag);
		sd_notify(0, "READY=1\nSTATUS=reload refused: invalid config, old config kept");
		return -1;
	}
	diag_free(&diag);
	log_notice("reload.start mailboxes=%zu", fresh->n_mailboxes);
	watchers_stop(d, now_monotonic() + 8);
	notice_sender_stop(3);
	feed_close(d);
	worker_free(d->worker);
	if (strcmp(fresh->gateway.state, d->cfg->gateway.state) != 0) {
		struct store *nst = store_open(fresh->gateway.state, err, sizeof err);
		if (nst) {
			store_close(*st);
			*st = nst;
		} else {
			log_error("reload.state error=%s note=\"keeping the old state file\"",
				  LOG_Q(err));
			free(fresh->gateway.state);
			fresh->gateway.state = xstrdup(d->cfg->gateway.state);
		}
	}
	struct mf_config *old = d->cfg;
	d->cfg = fresh;
	reload_rejoin(d, old);
	config_free(old);
	config_apply_logging(d->cfg);
	secrets_preload(d->cfg);
	d->worker = worker_new(&d->cfg->gateway);
	worker_set_tick(d->worker, parse_feeds_watchdog, NULL);
	feed_open(d, *st);
	subscribers_seed(*st, d->cfg);
	note_set(*st, "reload_error", NULL, 0);
	metrics_restart(d);
	watchers_start(d, *st);
	notice_sender_start(d->cfg);
	log_notice("reload.done mailboxes=%zu", d->cfg->n_mailboxes);
	sd_notify(0, "READY=1\nSTATUS=config reloaded");
	return 0;
}

/* Between the subscribers of a long digest run: the watchdog is fed, and
 * a signal waiting on the signalfd ends the run early so that it is
 * handled in time. */
struct digest_pace {
	int sfd;
	long wd_interval_ms;
	double *last_ping;
};

static int digest_keep_going(void *arg)
{
	struct digest_pace *p = arg;
	struct pollfd pf = {.fd = p->sfd, .events = POLLIN};
	double now = now_monotonic();
	health_beat_current(HEALTH_STEP);
	if ((now - *p->last_ping) * 1000 >= (double)p->wd_interval_ms) {
		sd_notify(0, "WATCHDOG=1");
		*p->last_ping = now;
	}
	return poll(&pf, 1, 0) <= 0;
}

/* The processor's loop: it waits on the signalfd, the watchers' eventfd and
 * a timeout, then runs the periodic duties that are due. */
struct processor;

/* A periodic duty of the processor: it runs when it is wanted and at least
 * period seconds (0: on every pass) went by since its last run. */
struct duty {
	double period;
	double last;				  /* monotonic time of the last run */
	int (*wanted)(const struct processor *p); /* NULL: always */
	void (*run)(struct processor *p);
};

enum { DUTY_PROCESS, DUTY_DIGEST, DUTY_WATCHDOG, DUTY_COUNT };

struct processor {
	struct daemon *d;
	struct store **stp;
	int sfd;
	int health;
	long wd_interval_ms;
	double store_retry_at; /* the state database failed: work waits until then */
	long store_backoff;
	struct duty duty[DUTY_COUNT];
};

/* How long a step of the processor may take: a batch may take every
 * message's parse timeout. */
static double processor_step(const struct processor *p)
{
	return HEALTH_STEP + (double)PROCESS_BATCH * (double)p->d->cfg->gateway.parse_timeout;
}

/* The poll timeout of a pass: the first does at once what is due (digests
 * included); the others wait at most the watchdog interval (30 s at most),
 * until the next outbox item is due, or until a store backoff ends. */
static long processor_timeout(const struct processor *p, int first)
{
	long timeout_ms = first ? 0 : p->wd_interval_ms < 30000 ? p->wd_interval_ms : 30000;
	double pause = p->store_retry_at - now_monotonic();
	long next = pause > 0 ? 0 : outbox_next_due(*p->stp);
	if (pause > 0) {
		/* the state database failed: due work waits, no busy loop */
		if (pause * 1000 < timeout_ms)
			timeout_ms = (long)(pause * 1000) + 1;
	} else if (next > 0) {
		long in = (next - (long)time(NULL)) * 1000;
		if (in < timeout_ms)
			timeout_ms = in < 0 ? 0 : in;
	}
	/* on a shared database the mail may come from another instance's
	 * watchers, which cannot wake this processor: the parse stage's holder
	 * looks every second */
	if (pause <= 0 && timeout_ms > SHARED_PROCESS_POLL_MS &&
	    db_engine(store_db(*p->stp)) == DB_POSTGRES && keeper_process_held(p->d->keeper))
		timeout_ms = SHARED_PROCESS_POLL_MS;
	return timeout_ms;
}

/* Takes the signals waiting on the signalfd: HUP reloads, TERM and INT
 * stop.  Returns 1 when the processor is to stop. */
static int processor_signals(struct processor *p)
{
	struct signalfd_siginfo si;
	int stopping = 0;
	while (read(p->sfd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGHUP) {
			reload(p->d, p->stp);
		} else {
			log_notice("run.stopping signal=%s",
				   si.ssi_signo == SIGTERM ? "TERM" : "INT");
			stopping = 1;
		}
	}
	return stopping;
}

/* Waits for a signal, a watcher's wake-up or the timeout.  Returns 0 for
 * a pass of the duties, 1 when the processor is to stop, -1 when poll
 * failed. */
static int processor_wait(struct processor *p, int first)
{
	long timeout_ms = processor_timeout(p, first);
	struct pollfd pf[2] = {{.fd = p->sfd, .events = POLLIN},
			       {.fd = p->d->proc_wake_fd, .events = POLLIN}};
	if (p->store_retry_at <= now_monotonic())
		health_beat(p->health, (double)timeout_ms / 1000 + 60);
	if (poll(pf, 2, (int)timeout_ms) < 0 && errno != EINTR)
		return -1;
	if (p->store_retry_at <= now_monotonic())
		health_beat(p->health, processor_step(p));
	if ((pf[0].revents & POLLIN) && processor_signals(p))
		return 1;
	drain(p->d->proc_wake_fd);
	return 0;
}

/* The state database failed under the processor: its work waits, 1 s
 * doubling to 30 s (5 s while the database cannot be reached at all: it
 * is back soon after it answers again). */
static void processor_store_failed(struct processor *p, struct store *st)
{
	struct db *db = store_db(st);
	int away = db_unavailable(db);
	p->store_backoff =
	    backoff_next(p->store_backoff, away ? STORE_AWAY_MAX_BACKOFF : STORE_MAX_BACKOFF);
	p->store_retry_at = now_monotonic() + (double)p->store_backoff;
	if (away) {
		keeper_store_unavailable(p->d->keeper, db_errmsg(db));
		health_wait(p->health, HEALTH_BACKOFF, (double)p->store_backoff,
			    "the state database is unreachable; processing and delivery wait");
		return;
	}
	log_warn("run.store_failed retry_in=%lds error=%s", p->store_backoff,
		 LOG_Q(store_errmsg(st)));
	health_wait(p->health, HEALTH_BACKOFF, (double)p->store_backoff,
		    "the state database failed; processing and delivery wait");
}

static int duty_process_wanted(const struct processor *p)
{
	return now_monotonic() >= p->store_retry_at;
}

/* Parses, classifies, threads and enqueues what the watchers took in, then
 * delivers what is due.  Through a long backlog a delivery batch goes out
 * whenever a full one was enqueued, so that the first posts (and their
 * after-actions) do not wait for the whole backlog to be parsed.  A failing
 * state database backs the duty off. */
static void duty_process(struct processor *p)
{
	struct store *st = *p->stp;
	int n, delivered_any = 0, early_any = 0, early_dead = 0;
	long enqueued = 0, full = (long)outbox_batch_size(p->d->cfg, p->d->feed);
	do {
		/* one instance at a time parses: the holder of the stage's lease
		 * (a batch parsed ahead is given up with it) */
		n = 0;
		if (keeper_process_held(p->d->keeper))
			n = pipeline_process_new(st, p->d->cfg, p->d->worker, PROCESS_BATCH);
		else
			pipeline_settle(st);
		health_beat(p->health, processor_step(p));
		if (n > 0 && (enqueued += n) >= full && early_dead >= 0) {
			int any = 0, r = deliver_rounds(p->d, st, 1, &any);
			early_dead = r < 0 ? -1 : early_dead + r;
			enqueued = 0;
			if (any || r > 0)
				wake_watchers(p->d); /* after-actions, dead marks */
			early_any |= any;
			health_beat(p->health, processor_step(p));
		}
	} while (n > 0);
	notice_sender_wake(); /* notices queued with the verdicts */
	int dead = deliver_all(p->d, st, &delivered_any);
	delivered_any |= early_any;
	if (dead >= 0 && early_dead != 0)
		dead = early_dead < 0 ? -1 : dead + early_dead;
	if (dead < 0 || n < 0) {
		processor_store_failed(p, st);
	} else {
		keeper_store_available(p->d->keeper);
		p->store_backoff = 0;
		p->store_retry_at = 0;
	}
	if (delivered_any || dead > 0)
		wake_watchers(p->d); /* after-actions, dead marks */
}

static int duty_digest_wanted(const struct processor *p)
{
	return p->d->cfg->smtp.present && p->d->feed && !keeper_store_away();
}

/* Sends the digests that are due; the run feeds the watchdog and ends
 * early when a signal waits. */
static void duty_digest(struct processor *p)
{
	struct digest_pace pace = {p->sfd, p->wd_interval_ms, &p->duty[DUTY_WATCHDOG].last};
	digest_run_paced(*p->stp, p->d->cfg, p->d->feed, p->d->feed_ctx, time(NULL),
			 digest_keep_going, &pace);
	if (db_unavailable(store_db(*p->stp))) /* the next run waits for it */
		processor_store_failed(p, *p->stp);
}

/* The watchdog is fed only while every watcher and the processor make
 * progress or wait for a known reason (see /healthz); the heartbeat note,
 * the systemd status line and the metrics file follow at the same pace. */
static void duty_watchdog(struct processor *p)
{
	struct store *st = *p->stp;
	/* waiting for the state database is no hang: a restart would not help */
	if (health_report(NULL) || keeper_store_away())
		sd_notify(0, "WATCHDOG=1");
	else
		log_warn("run.unhealthy note=\"a part made no progress; the watchdog "
			 "is not fed (GET /healthz names it)\"");
	if (keeper_store_away())
		return; /* nothing to write it to */
	note_set(st, "heartbeat", NULL, 0);
	notify_status(st);
	metrics_write(st, p->d->cfg);
}

/* Runs every duty that is due, in table order. */
static void processor_duties(struct processor *p)
{
	for (size_t i = 0; i < DUTY_COUNT; i++) {
		struct duty *du = &p->duty[i];
		double now = now_monotonic();
		if ((du->wanted && !du->wanted(p)) || now - du->last < du->period)
			continue;
		du->last = now;
		du->run(p);
	}
}

static int run_forever(struct daemon *d, struct store **stp, int sfd)
{
	uint64_t wd_usec = 0;
	struct processor p = {.d = d, .stp = stp, .sfd = sfd, .wd_interval_ms = 10000};

	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0)
		p.wd_interval_ms = (long)(wd_usec / 2000);
	p.duty[DUTY_PROCESS] = (struct duty){0, 0, duty_process_wanted, duty_process};
	p.duty[DUTY_DIGEST] = (struct duty){60, 0, duty_digest_wanted, duty_digest};
	p.duty[DUTY_WATCHDOG] =
	    (struct duty){(double)p.wd_interval_ms / 1000, 0, NULL, duty_watchdog};
	p.health = health_register("processor");
	health_bind(p.health);
	parse_wd_interval_ms = p.wd_interval_ms;
	watchers_start(d, *stp);
	notice_sender_start(d->cfg);
	note_set(*stp, "heartbeat", NULL, 0);
	sd_notify(0, "READY=1\nSTATUS=running");
	log_notice("run.ready mailboxes=%zu backend=%s", d->cfg->n_mailboxes,
		   d->feed ? d->feed->name : "none");
	for (int first = 1; processor_wait(&p, first) == 0; first = 0)
		processor_duties(&p);
	sd_notify(0, "STOPPING=1");
	watchers_stop(d, now_monotonic() + 7);
	notice_sender_stop(3);
	health_unregister(p.health);
	return 0;
}

static void run_usage(FILE *out)
{
	fprintf(out, "usage: mailfeed [-c FILE] run [--once]\n"
		     "  Runs the gateway in the foreground (systemd Type=notify).\n"
		     "  --once  one full pass (fetch, convert, deliver, digests), then exit:\n"
		     "          0 when nothing failed, 1 otherwise.\n"
		     "  Signals: HUP reloads the config, TERM/INT stop.\n");
}

/* Reads run's arguments into *once.  Returns -1 to go on, or the exit
 * status (--help, a wrong argument). */
static int run_args(int argc, char **argv, int *once)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--once") == 0) {
			*once = 1;
		} else if (strcmp(argv[i], "--help") == 0) {
			run_usage(stdout);
			return 0;
		} else {
			run_usage(stderr);
			return 2;
		}
	}
	return -1;
}

/* Signals are taken synchronously by the main thread only, through the
 * returned signalfd. */
static int run_signals(void)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* Loads the config and applies its log settings and secrets, or NULL. */
static struct mf_config *run_config(const char *config)
{
	struct mf_config *cfg = cli_load_config(config);
	if (!cfg)
		return NULL;
	config_apply_logging(cfg);
	secrets_preload(cfg);
	return cfg;
}

/* With the state locked and open: the worker, the feed, then one pass or
 * the daemon's loop.  Returns the exit status. */
static int run_with_state(struct daemon *d, struct store **stp, int sfd, int once)
{
	d->proc_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	d->worker = worker_new(&d->cfg->gateway); /* spawned on first use */
	worker_set_tick(d->worker, parse_feeds_watchdog, NULL);
	if (feed_open(d, *stp) < 0 && once)
		return 1;
	subscribers_seed(*stp, d->cfg);
	if (once)
		return run_once(d, *stp);
	if (run_join(d) < 0 || metrics_restart(d) < 0)
		return 1;
	return run_forever(d, stp, sfd);
}

int cmd_run(int argc, char **argv, const char *config)
{
	int once = 0, rc, lock_fd = -1;
	char err[512];
	struct daemon d = {.config_path = config, .proc_wake_fd = -1};

	rc = run_args(argc, argv, &once);
	if (rc >= 0)
		return rc;
	/* the daemon holds the account passwords, tokens and keys: no core
	 * file, no ptrace or /proc/PID/mem by other processes of the user */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	int sfd = run_signals();
	d.cfg = run_config(config);
	if (!d.cfg) {
		close(sfd);
		return 2;
	}
	if (state_lock_take(d.cfg->gateway.state, &lock_fd, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
		config_free(d.cfg);
		close(sfd);
		return 1;
	}
	struct store *st = store_open(d.cfg->gateway.state, err, sizeof err);
	if (!st) {
		log_error("run.error error=%s", LOG_Q(err));
		close(lock_fd);
		config_free(d.cfg);
		close(sfd);
		return 1;
	}
	rc = run_with_state(&d, &st, sfd, once);
	if (d.abandoned)
		keeper_leave(d.keeper); /* an abandoned session may still ask it */
	else
		keeper_stop(d.keeper);
	metrics_server_stop(d.metrics);
	free(d.metrics_listen);
	feed_close(&d);
	worker_free(d.worker);
	store_close(st);
	config_free(d.cfg);
	close(d.proc_wake_fd);
	close(sfd);
	close(lock_fd);
	return rc;
}
