/* ingest.c — IMAP ingest: from a server folder into the state.
 *
 * Syncs one folder (select, UIDVALIDITY changes, fetch of every new
 * message, stored in batches with its checkpoint) and applies the
 * after-action to the messages whose work is done.  Used by the watcher
 * threads and `run --once` of cmd_run.c; nothing here parses a message. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "mailfeed/auth.h"
#include "mailfeed/health.h"
#include "mailfeed/ingest.h"
#include "mailfeed/log.h"
#include "mailfeed/notice.h"
#include "mailfeed/util.h"

/* One message on its way from the fetch to the store.  Its Message-ID and
 * content hash are found on the fetching side, which waits on the network
 * most of the time. */
struct taken {
	uint32_t uid, size;
	time_t internaldate;
	char *raw; /* owned; NULL: too large, not fetched */
	size_t raw_len;
	char *msgid;
	char sha256[65];
};

/* The hand-over from the thread that fetches to the one that stores: a
 * FIFO bounded in messages and bytes, so that the next bodies arrive while
 * the last ones are stored and committed (a commit that copies the WAL
 * back takes what several MB take to arrive), and memory stays flat. */
#define HAND_MESSAGES 512
#define HAND_BYTES (4 * 1024 * 1024)

enum hand_end {
	HAND_OPEN,   /* more may come */
	HAND_DONE,   /* the fetch is over: store what is queued, commit */
	HAND_BROKEN, /* the fetch failed: the open batch is not committed */
};

struct hand {
	pthread_mutex_t mu;
	pthread_cond_t more; /* a message or the end arrived */
	pthread_cond_t room; /* a message was taken, or the store quit */
	struct taken q[HAND_MESSAGES];
	size_t head, count, bytes;
	enum hand_end end; /* set by the fetching side */
	int quit;	   /* set by the storing side: it stopped early */
};

/* What the storing side owns (the fetching side reads only h and stop):
 * the store connection is used by one thread at a time. */
struct store_ctx {
	struct store *st;
	const struct ingest_folder *f;
	struct hand *h; /* NULL: stored in the fetching thread */
	int lost;	/* the right to work on the folder ended */
	const char *key;
	uint32_t uidvalidity;
	atomic_int *stop;
	int inserted;
	int failed;
	long long max_size;
	enum msg_state state; /* of messages taken in: new, or held by backfill */
	size_t nbig;	      /* too large, newly recorded: described after the fetch */
	size_t nbig_done;     /* of them, committed */
	int in_tx;	      /* a batch transaction is open */
	int tx_count;	      /* messages in it */
	size_t tx_bytes;
};

/* Messages are committed in batches: one fsync per batch instead of one per
 * message.  Each batch holds its messages and the checkpoint after the last
 * of them, so a crash loses at most an uncommitted batch, which is simply
 * fetched again; nothing is acknowledged on the server before its commit.
 * A batch of 2 MB stays within SQLite's page cache until its commit (with
 * 4 MB batches take-in spent a tenth more CPU). */
#define STORE_BATCH_MESSAGES 100
#define STORE_BATCH_BYTES (2 * 1024 * 1024)

static int may_work(const struct ingest_folder *f)
{
	return !f->may_work || f->may_work(f->may_work_arg);
}

/* The open batch is not committed: what it took in is forgotten. */
static void batch_drop(struct store_ctx *c)
{
	if (c->in_tx)
		store_rollback(c->st);
	c->in_tx = 0;
	c->inserted -= c->tx_count;
	c->tx_count = 0;
	c->tx_bytes = 0;
	c->nbig = c->nbig_done;
}

/* The right to work ended: the open batch is not committed. */
static int store_lost(struct store_ctx *c)
{
	batch_drop(c);
	c->lost = 1;
	return 1;
}

static int store_batch_commit(struct store_ctx *c)
{
	if (!c->in_tx)
		return 0;
	if (store_commit(c->st) < 0) {
		batch_drop(c);
		return -1;
	}
	c->in_tx = 0;
	c->tx_count = 0;
	c->tx_bytes = 0;
	c->nbig_done = c->nbig;
	return 0;
}

static void taken_from(struct taken *t, const struct imap_fetched *f)
{
	*t = (struct taken){.uid = f->uid, .size = f->size, .internaldate = f->internaldate};
	t->raw = imap_fetched_take(f);
	if (!t->raw)
		return;
	t->raw_len = f->raw_len;
	t->msgid = raw_header_message_id(t->raw, t->raw_len);
	sha256_hex(t->raw, t->raw_len, t->sha256);
}

static void taken_free(struct taken *t)
{
	free(t->raw);
	free(t->msgid);
}

/* A message newly recorded without its content: it is described, and its
 * sender told, once its batch is committed and the fetch is over
 * (describe_pending). */
static void big_note(struct store_ctx *c, const struct taken *t, const char *reason)
{
	log_warn("message.skipped mailbox=%s uid=%u reason=%s", c->key, t->uid, LOG_Q(reason));
	c->nbig++;
}

/* Stores one message in the open batch (begun when none is), and commits
 * the batch when it is full.  Returns 1 to stop: a failure (c->failed),
 * the right to work gone (c->lost) or the stop flag. */
static int store_one(struct store_ctx *c, const struct taken *t)
{
	char reason[160];
	struct stored_message m = {
	    .mailbox = c->key,
	    .uidvalidity = c->uidvalidity,
	    .uid = t->uid,
	    .message_id = t->msgid,
	    .size = t->size,
	    .internaldate = t->internaldate,
	    .raw = t->raw,
	    .raw_len = t->raw_len,
	    .state = c->state,
	    .sha256 = t->raw ? t->sha256 : NULL,
	};
	int inserted = 0;
	if (!t->raw) {
		snprintf(reason, sizeof reason,
			 "too large: %u bytes, max_message_size is %lld bytes", t->size,
			 c->max_size);
		m.state = MSG_SKIPPED;
		m.reason = reason;
	}
	if (!may_work(c->f))
		return store_lost(c);
	if (!c->in_tx) {
		if (store_begin(c->st) < 0) {
			c->failed = 1;
			return 1;
		}
		c->in_tx = 1;
	}
	if (store_message_add_tx(c->st, &m, &inserted) < 0) {
		batch_drop(c);
		c->failed = 1;
		return 1;
	}
	c->tx_count += inserted;
	c->inserted += inserted;
	c->tx_bytes += t->raw_len;
	if (inserted && !t->raw)
		big_note(c, t, reason);
	if (c->tx_count >= STORE_BATCH_MESSAGES || c->tx_bytes >= STORE_BATCH_BYTES) {
		if (!may_work(c->f))
			return store_lost(c);
		if (store_batch_commit(c) < 0) {
			c->failed = 1;
			return 1;
		}
	}
	return atomic_load(c->stop) ? 1 : 0;
}

/* The end of the storing side: the open batch committed when the fetch
 * ended well and the right to work holds, else rolled back. */
static void store_finish(struct store_ctx *c, int broken)
{
	if (broken)
		batch_drop(c); /* fetched again */
	else if (!c->failed && !c->lost && !may_work(c->f))
		store_lost(c);
	else if (!c->failed && !c->lost && store_batch_commit(c) < 0)
		c->failed = 1;
	store_rollback(c->st);
}

/* The storing thread: takes messages in the order they were fetched until
 * none is left and the fetch ended, or a store says stop.  What was handed
 * over before a fetch failed is stored as it would have been (full batches
 * committed); only the batch left open is not. */
static void *store_main(void *arg)
{
	struct store_ctx *c = arg;
	struct hand *h = c->h;
	int broken = 0;
	for (;;) {
		pthread_mutex_lock(&h->mu);
		while (h->count == 0 && h->end == HAND_OPEN)
			pthread_cond_wait(&h->more, &h->mu);
		broken = h->end == HAND_BROKEN;
		if (h->count == 0) {
			pthread_mutex_unlock(&h->mu);
			break;
		}
		struct taken t = h->q[h->head];
		h->head = (h->head + 1) % HAND_MESSAGES;
		h->count--;
		h->bytes -= t.raw_len;
		pthread_cond_signal(&h->room);
		pthread_mutex_unlock(&h->mu);
		int stop = store_one(c, &t);
		taken_free(&t);
		if (stop) {
			pthread_mutex_lock(&h->mu);
			h->quit = 1;
			pthread_cond_signal(&h->room);
			pthread_mutex_unlock(&h->mu);
			break;
		}
	}
	store_finish(c, broken);
	return NULL;
}

/* The fetching side: each message, in UID order, to the storing thread
 * (waiting for room), or stored here when there is none. */
static int hand_fetched(const struct imap_fetched *f, void *arg)
{
	struct store_ctx *c = arg;
	struct hand *h = c->h;
	struct taken t;
	int quit;
	taken_from(&t, f);
	if (!h) {
		quit = store_one(c, &t);
		taken_free(&t);
		health_beat_current(health_step());
		return quit;
	}
	pthread_mutex_lock(&h->mu);
	while (!h->quit &&
	       (h->count == HAND_MESSAGES || (h->count > 0 && h->bytes + t.raw_len > HAND_BYTES)))
		pthread_cond_wait(&h->room, &h->mu);
	quit = h->quit;
	if (!quit) {
		h->q[(h->head + h->count) % HAND_MESSAGES] = t;
		h->count++;
		h->bytes += t.raw_len;
		pthread_cond_signal(&h->more);
	}
	pthread_mutex_unlock(&h->mu);
	if (quit) {
		taken_free(&t);
		return 1;
	}
	health_beat_current(health_step());
	return atomic_load(c->stop) ? 1 : 0;
}

/* Starts the storing thread of c; 0, or -1 (then c stores in the fetching
 * thread). */
static int hand_start(struct store_ctx *c, pthread_t *thread)
{
	struct hand *h = xcalloc(1, sizeof *h);
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->more, NULL);
	pthread_cond_init(&h->room, NULL);
	c->h = h;
	int rc = pthread_create(thread, NULL, store_main, c);
	if (rc == 0)
		return 0;
	log_warn("ingest.thread error=%s note=\"fetching and storing take turns\"",
		 LOG_Q(strerror(rc)));
	c->h = NULL;
	pthread_cond_destroy(&h->room);
	pthread_cond_destroy(&h->more);
	pthread_mutex_destroy(&h->mu);
	free(h);
	return -1;
}

/* Tells the storing thread how the fetch ended, waits for it, and frees
 * what it left in the queue. */
static void hand_end(struct store_ctx *c, pthread_t thread, int broken)
{
	struct hand *h = c->h;
	pthread_mutex_lock(&h->mu);
	h->end = broken ? HAND_BROKEN : HAND_DONE;
	pthread_cond_signal(&h->more);
	pthread_mutex_unlock(&h->mu);
	pthread_join(thread, NULL);
	for (; h->count > 0; h->count--, h->head = (h->head + 1) % HAND_MESSAGES)
		taken_free(&h->q[h->head]);
	pthread_cond_destroy(&h->room);
	pthread_cond_destroy(&h->more);
	pthread_mutex_destroy(&h->mu);
	free(h);
	c->h = NULL;
}

/* Whether a header block says the mail was sent by a program (no notice
 * goes back to those): Auto-Submitted other than "no", an auto-reply
 * marker, or Precedence bulk, junk or auto_reply. */
static int header_automatic(const char *raw, size_t len)
{
	static const char *const fields[] = {"Auto-Submitted", "X-Autoreply", "X-Autorespond"};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		char *v = raw_header_value(raw, len, fields[i], 100);
		int automatic = v && !(i == 0 && strcasecmp(v, "no") == 0);
		free(v);
		if (automatic)
			return 1;
	}
	char *p = raw_header_value(raw, len, "Precedence", 100);
	int automatic = p && (strcasecmp(p, "bulk") == 0 || strcasecmp(p, "junk") == 0 ||
			      strcasecmp(p, "auto_reply") == 0);
	free(p);
	return automatic;
}

/* The address of a From value: inside the last <...>, else the value. */
static char *from_address(const char *from)
{
	const char *lt = strrchr(from, '<'), *gt = lt ? strchr(lt, '>') : NULL;
	if (lt && gt && gt > lt + 1)
		return xstrndup(lt + 1, (size_t)(gt - lt - 1));
	return strchr(from, '@') && !strchr(from, ' ') ? xstrdup(from) : NULL;
}

/* A message too large to take: its header block tells who sent it and
 * what it was, for the dead list; the sender is told why it was not posted
 * (notice_refusal decides whether they may be). */
static int describe_too_large(struct imap_session *s, struct store *st,
			      const struct ingest_folder *f, uint32_t uidvalidity, uint32_t uid,
			      uint32_t size)
{
	char err[512], q[200];
	char *raw = NULL;
	size_t len = 0;
	if (imap_fetch_header(s, uid, &raw, &len, err, sizeof err) < 0) {
		log_warn("message.header_unavailable mailbox=%s uid=%u error=%s", f->key, uid,
			 log_quote(err, q, sizeof q));
		return -1; /* asked again after the next fetch */
	}
	if (!raw) {
		/* gone from the folder: nothing to tell, nor to ask again */
		log_warn("message.header_unavailable mailbox=%s uid=%u error=\"no longer in the "
			 "folder\"",
			 f->key, uid);
		return store_message_describe(st, f->key, uidvalidity, uid, "{}");
	}
	char *from = raw_header_value(raw, len, "From", 300);
	char *subject = raw_header_value(raw, len, "Subject", 300);
	char *addr = from ? from_address(from) : NULL;
	json_t *o = json_pack("{s:{s:s?,s:s?},s:s?}", "from", "name", from, "email", addr,
			      "subject", subject);
	char *parsed = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	store_message_describe(st, f->key, uidvalidity, uid, parsed);
	free(parsed);
	if (f->cfg && addr && !header_automatic(raw, len)) {
		struct auth_verdict av;
		auth_verify(f->cfg->gateway.trusted_authserv, raw, len, addr, &av);
		char *what = xasprintf("to %s was not posted to the group feed", f->folder);
		char *why = xasprintf("it is %.1f MB, and the gateway takes messages of up to "
				      "%.1f MB",
				      size / 1048576.0, f->max_size / 1048576.0);
		notice_refusal(st, f->cfg, addr, av.verified, subject, "too-large",
			       "Your message was not posted", what, why,
			       "Send large files as a link, or ask the feed's administrator.");
		free(what);
		free(why);
	}
	free(from);
	free(subject);
	free(addr);
	free(raw);
	return 0;
}

/* Folders (by key) whose too-large mail is all described, as far as this
 * process knows: the look for undescribed ones runs on a folder's first
 * fetch in the process (the one before may have stopped in between), after
 * a fetch that took some in, and after one that broke once such mail of
 * it was committed; not on every fetch. */
static pthread_mutex_t described_mu = PTHREAD_MUTEX_INITIALIZER;
static struct strlist described;

/* Where key is in described, or described.n; described_mu held. */
static size_t described_at(const char *key)
{
	size_t i = 0;
	while (i < described.n && strcmp(described.v[i], key) != 0)
		i++;
	return i;
}

static int described_all(const char *key)
{
	pthread_mutex_lock(&described_mu);
	int all = described_at(key) < described.n;
	pthread_mutex_unlock(&described_mu);
	return all;
}

static void described_note(const char *key, int all)
{
	pthread_mutex_lock(&described_mu);
	size_t i = described_at(key);
	if (all && i == described.n) {
		strlist_add(&described, key);
	} else if (!all && i < described.n) {
		free(described.v[i]);
		described.v[i] = described.v[--described.n];
	}
	pthread_mutex_unlock(&described_mu);
}

/* Describes the folder's too-large mail not described yet: its sender and
 * subject for the dead list, and a notice to the sender. */
static void describe_pending(struct imap_session *s, struct store *st,
			     const struct ingest_folder *f, uint32_t uidvalidity)
{
	uint32_t *uids, *sizes;
	size_t n;
	if (messages_large_undescribed(st, f->key, uidvalidity, &uids, &sizes, &n) < 0)
		return;
	int all = 1;
	for (size_t i = 0; i < n && all; i++)
		all = describe_too_large(s, st, f, uidvalidity, uids[i], sizes[i]) == 0;
	described_note(f->key, all);
	free(uids);
	free(sizes);
}

int ingest_take(struct imap_session *s, struct store *st, const struct ingest_folder *f,
		uint32_t uidvalidity, const uint32_t *uids, size_t n, enum msg_state state,
		atomic_int *stop, int *inserted, char *err, size_t errlen)
{
	struct store_ctx c = {.st = st,
			      .f = f,
			      .key = f->key,
			      .uidvalidity = uidvalidity,
			      .stop = stop,
			      .max_size = f->max_size,
			      .state = state};
	pthread_t thread;
	*inserted = 0;
	if (n == 0)
		return 0;
	int threaded = hand_start(&c, &thread) == 0;
	int rc = imap_fetch(s, uids, n, f->max_size, hand_fetched, &c, err, errlen);
	if (threaded)
		hand_end(&c, thread, rc < 0);
	else
		store_finish(&c, rc < 0);
	*inserted = c.inserted;
	if (c.nbig_done > 0)
		described_note(f->key, 0);
	if (!c.failed && rc == 0 && !described_all(f->key))
		describe_pending(s, st, f, uidvalidity);
	if (c.lost) {
		snprintf(err, errlen, "the lease on the folder ended");
		return INGEST_LEASE_LOST;
	}
	if (c.failed) {
		snprintf(err, errlen, "state database error: %s", store_errmsg(st));
		return INGEST_STORE_FAILED;
	}
	return rc < 0 ? -1 : 0;
}

/* A mapping seen for the first time: mail already in its folder is not
 * taken (start = new), or only what arrived since a moment (since:), and
 * the checkpoint is set past it together with the folder's UIDVALIDITY, so
 * that a crash here cannot turn into a flood later.  `mailfeed backfill`
 * takes the rest on purpose. */
static int start_point(struct imap_session *s, struct store *st, const struct ingest_folder *f,
		       uint32_t uidvalidity, char *err, size_t errlen)
{
	uint32_t *all = NULL, *recent = NULL;
	size_t n = 0, nrecent = 0;
	int changed = 0, rc = -1;
	if (imap_search_from(s, 1, &all, &n, err, errlen) < 0)
		return -1;
	if (f->start == START_SINCE &&
	    imap_search_since(s, time(NULL) - f->start_since, &recent, &nrecent, err, errlen) < 0)
		goto out;
	/* the checkpoint: past everything, or just before the first recent one
	 * (a few older messages with higher UIDs may then be taken too) */
	uint32_t mark = n ? all[n - 1] : 0;
	if (nrecent)
		mark = recent[0] - 1;
	size_t skipped = 0;
	for (size_t i = 0; i < n; i++)
		skipped += all[i] <= mark;
	if (store_begin(st) < 0 ||
	    store_folder_select(st, f->key, f->acct->name, f->folder, uidvalidity, &changed) < 0 ||
	    store_folder_advance(st, f->key, mark) < 0 || store_commit(st) < 0) {
		store_rollback(st);
		snprintf(err, errlen, "state database error: %s", store_errmsg(st));
		rc = INGEST_STORE_FAILED;
		goto out;
	}
	log_info("imap.start mailbox=%s start=%s existing=%zu not_taken=%zu note=\"mail already "
		 "in the folder is recorded, not posted; mailfeed backfill imports it\"",
		 f->key, f->start == START_SINCE ? "since" : "new", n, skipped);
	rc = 0;
out:
	free(all);
	free(recent);
	return rc;
}

/* A UIDVALIDITY other than the stored one: a real change holds on a second
 * look; a server that reports a new UIDVALIDITY on every SELECT would be
 * rescanned forever, so the stored one is kept (*pinned) and note says
 * why.  info becomes the second look.  0, or -1 with err. */
static int second_look(struct imap_session *s, const char *folder, const struct folder_state *fs,
		       struct imap_folder_info *info, uint32_t *pinned, char *note, size_t notelen,
		       char *err, size_t errlen)
{
	struct imap_folder_info again;
	if (imap_select(s, folder, &again, err, errlen) < 0)
		return -1;
	if (again.uidvalidity != info->uidvalidity) {
		*pinned = fs->uidvalidity;
		snprintf(note, notelen,
			 "the server reports a new UIDVALIDITY on every SELECT (%u, then %u): "
			 "it is ignored, mail is taken by UID above %u",
			 info->uidvalidity, again.uidvalidity, fs->last_uid);
	}
	*info = again;
	return 0;
}

int ingest_sync_folder(struct imap_session *s, struct store *st, const struct ingest_folder *f,
		       atomic_int *stop, int *new_messages, char *err, size_t errlen)
{
	struct imap_folder_info info;
	struct folder_state fs;
	uint32_t *uids = NULL;
	size_t n = 0;
	int changed = 0;
	const char *key = f->key, *folder = f->folder;

	char note[300] = "";
	uint32_t pinned = 0;

	*new_messages = 0;
	if (!may_work(f)) {
		snprintf(err, errlen, "the lease on the folder ended");
		return INGEST_LEASE_LOST;
	}
	if (imap_select(s, folder, &info, err, errlen) < 0)
		return -1;
	store_folder_get(st, key, &fs);
	if (fs.uidvalidity == 0 && fs.last_uid == 0 && f->start != START_ALL) {
		int rc = start_point(s, st, f, info.uidvalidity, err, errlen);
		if (rc < 0)
			return rc;
		store_folder_get(st, key, &fs);
	}
	if (fs.uidvalidity && info.uidvalidity != fs.uidvalidity &&
	    second_look(s, folder, &fs, &info, &pinned, note, sizeof note, err, errlen) < 0)
		return -1;
	if (!pinned &&
	    store_folder_select(st, key, f->acct->name, folder, info.uidvalidity, &changed) < 0) {
		snprintf(err, errlen, "state database error: %s", store_errmsg(st));
		return INGEST_STORE_FAILED;
	}
	if (changed)
		log_warn("imap.uidvalidity_changed mailbox=%s folder=%s uidvalidity=%u "
			 "action=rescan note=\"messages already stored are recognised by "
			 "Message-ID and content and not taken again\"",
			 key, folder, info.uidvalidity);
	store_folder_get(st, key, &fs);
	if (fs.last_uid == UINT32_MAX) {
		/* nothing can come after the last possible UID */
		snprintf(note, sizeof note,
			 "the server has given out the last possible UID (4294967295): no newer "
			 "mail can be fetched from this folder until the server renumbers it "
			 "(a new UIDVALIDITY)");
		store_folder_error(st, key, note);
		return 0;
	}
	if (info.uidnext && fs.last_uid + 1 >= info.uidnext && !changed) {
		if (note[0])
			store_folder_error(st, key, note);
		else
			store_folder_ok(st, key);
		return 0;
	}
	if (!may_work(f)) {
		snprintf(err, errlen, "the lease on the folder ended");
		return INGEST_LEASE_LOST;
	}
	if (imap_search_from(s, fs.last_uid + 1, &uids, &n, err, errlen) < 0)
		return -1;
	int rc = ingest_take(s, st, f, pinned ? pinned : info.uidvalidity, uids, n, MSG_NEW, stop,
			     new_messages, err, errlen);
	free(uids);
	if (rc < 0)
		return rc;
	if (*new_messages)
		log_info("imap.fetched mailbox=%s new=%d", key, *new_messages);
	if (note[0])
		store_folder_error(st, key, note);
	else
		store_folder_ok(st, key);
	return 0;
}

/* Shows the after-actions still failing on the mailbox's status line;
 * returns how many messages wait. */
static int acks_show(struct store *st, const char *key, uint32_t uidvalidity, time_t now)
{
	time_t next_at;
	char *error;
	int count = messages_acks_refused(st, key, uidvalidity, &next_at, &error);
	if (count > 0) {
		char line[700];
		long in = (long)(next_at - now);
		snprintf(line, sizeof line,
			 "%d message(s) wait for their after-action, next try in %ld s: %s", count,
			 in > 0 ? in : 0, error ? error : "");
		store_folder_error(st, key, line);
	}
	free(error);
	return count > 0 ? count : 0;
}

#define DEAD_KEYWORD "$MailfeedDead"

/* Marks the dead messages of key with $MailfeedDead (they are not
 * acknowledged while dead), and unmarks those that left the dead list
 * before their after-action.  A server that refuses keywords loses only
 * the mark. */
static int dead_marks(struct imap_session *s, struct store *st, const char *key,
		      uint32_t uidvalidity, char *err, size_t errlen)
{
	static const struct {
		enum ack_query q;
		int add, acked;
	} steps[] = {{ACK_TO_MARK, 1, 2}, {ACK_TO_UNMARK, 0, 0}};
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		uint32_t *uids = NULL;
		size_t n = 0;
		if (store_acks_select(st, key, uidvalidity, steps[i].q, &uids, &n) < 0) {
			snprintf(err, errlen, "state database error: %s", store_errmsg(st));
			return INGEST_STORE_FAILED;
		}
		if (n && imap_keyword(s, DEAD_KEYWORD, steps[i].add, uids, n, err, errlen) < 0)
			/* a lost connection shows at the next command */
			log_warn("imap.keyword_failed mailbox=%s error=%s", key, LOG_Q(err));
		if (n) {
			store_acks_set(st, key, uidvalidity, uids, n, steps[i].acked);
			log_info("imap.%s mailbox=%s keyword=%s count=%zu",
				 steps[i].add ? "marked" : "unmarked", key, DEAD_KEYWORD, n);
		}
		free(uids);
	}
	return 0;
}

int ingest_apply_acks(struct imap_session *s, struct store *st, const char *key,
		      enum after_action a, const char *after_folder, char *err, size_t errlen)
{
	struct folder_state fs;
	uint32_t *uids = NULL;
	size_t n = 0;
	time_t now = time(NULL);
	if (messages_acks_table(st) < 0) {
		snprintf(err, errlen, "state database error: %s", store_errmsg(st));
		return INGEST_STORE_FAILED;
	}
	store_folder_get(st, key, &fs);
	int rc = dead_marks(s, st, key, fs.uidvalidity, err, errlen);
	if (rc < 0)
		return rc;
	for (int round = 0; round < 1000; round++) {
		if (store_acks_due(st, key, fs.uidvalidity, &uids, &n) < 0) {
			snprintf(err, errlen, "state database error: %s", store_errmsg(st));
			return INGEST_STORE_FAILED;
		}
		messages_acks_not_waiting(st, key, fs.uidvalidity, uids, &n, now);
		if (n == 0) {
			free(uids);
			break;
		}
		int arc =
		    a != AFTER_KEEP ? imap_after(s, a, after_folder, uids, n, err, errlen) : 0;
		if (arc == IMAP_REFUSED) {
			/* the server is fine, these messages are not: they wait,
			 * the rest of the work goes on */
			log_warn("imap.after_refused mailbox=%s action=%s count=%zu error=%s", key,
				 after_action_name(a), n, LOG_Q(err));
			messages_acks_note(st, key, fs.uidvalidity, uids, n, err, now);
			free(uids);
			uids = NULL;
			continue;
		}
		if (arc < 0) {
			free(uids);
			return -1;
		}
		store_acks_done(st, key, fs.uidvalidity, uids, n);
		messages_acks_note(st, key, fs.uidvalidity, uids, n, NULL, now);
		log_info("imap.after mailbox=%s action=%s count=%zu", key, after_action_name(a), n);
		free(uids);
		uids = NULL;
	}
	return acks_show(st, key, fs.uidvalidity, now) > 0 ? INGEST_ACKS_WAITING : 0;
}

int ingest_acks_pending(struct store *st, const char *key)
{
	struct folder_state fs;
	static const enum ack_query marks[] = {ACK_TO_MARK, ACK_TO_UNMARK};
	uint32_t *uids = NULL;
	size_t n = 0;
	if (messages_acks_table(st) < 0)
		return 1; /* let the after-action step report it */
	store_folder_get(st, key, &fs);
	for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
		if (store_acks_select(st, key, fs.uidvalidity, marks[i], &uids, &n) < 0)
			return 1;
		free(uids);
		uids = NULL;
		if (n)
			return 1;
	}
	if (store_acks_due(st, key, fs.uidvalidity, &uids, &n) < 0)
		return 1;
	messages_acks_not_waiting(st, key, fs.uidvalidity, uids, &n, time(NULL));
	free(uids);
	return n > 0;
}
