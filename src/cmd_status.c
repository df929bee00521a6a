/* cmd_status.c — `mailfeed status [--json]`: what is flowing, lagging or
 * failing, read from the state database (works while the daemon runs). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/cluster.h"
#include "mailfeed/config.h"
#include "mailfeed/messages.h"
#include "mailfeed/notes.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/pipeline.h"
#include "mailfeed/state_owner.h"
#include "mailfeed/store.h"
#include "mailfeed/subscribers.h"

static json_t *time_or_null(time_t t)
{
	char buf[32];
	return t ? json_string(time_iso(t, buf, sizeof buf)) : json_null();
}

static json_t *mailbox_status(struct store *st, const char *name, const char *account,
			      const char *folder, const char *group)
{
	json_t *o = json_object();
	struct folder_status fs;
	struct messages_counts c;
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, "account", json_string(account ? account : ""));
	json_object_set_new(o, "folder", json_string(folder ? folder : ""));
	if (group)
		json_object_set_new(o, "group", json_string(group));
	store_folder_status(st, name, &fs); /* zeroes when none */
	json_object_set_new(o, "uidvalidity", json_integer(fs.uidvalidity));
	json_object_set_new(o, "last_uid", json_integer(fs.last_uid));
	json_object_set_new(o, "last_ok", time_or_null(fs.last_ok));
	/* an error older than the last success is history */
	json_object_set_new(o, "last_error",
			    fs.last_error && fs.last_error_at >= fs.last_ok
				? json_string(fs.last_error)
				: json_null());
	json_object_set_new(o, "last_event", time_or_null(fs.last_event));
	store_folder_status_free(&fs);
	messages_counts(st, name, &c); /* zeroes when it cannot be read */
	json_object_set_new(o, "stored", json_integer(c.stored));
	json_object_set_new(o, "skipped", json_integer(c.skipped));
	json_object_set_new(o, "waiting", json_integer(c.fresh + c.queued));
	json_object_set_new(o, "dead", json_integer(c.dead));
	json_object_set_new(o, "oldest_unprocessed",
			    c.oldest_waiting > 0 ? time_or_null(c.oldest_waiting) : json_null());
	json_object_set_new(o, "lag_seconds",
			    json_integer(c.oldest_waiting > 0
					     ? (long long)time(NULL) - (long long)c.oldest_waiting
					     : 0));
	return o;
}

static int by_name(const void *a, const void *b)
{
	const struct mf_mailbox *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* Whether the daemon runs on this state (the holder of its lock), and its
 * last heartbeat; accounts whose logins are refused and wait. */
static void daemon_status(json_t *root, struct store *st, const char *state)
{
	json_t *dm = json_object();
	char when[32], why[512];
	long pid = state_lock_holder(state);
	time_t beat = 0;
	size_t live = 0;
	json_t *list = json_object_get(root, "instances");
	/* a shared database has no lock: its live instances run, and one
	 * alone is shown as the daemon */
	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *in = json_array_get(list, i);
		if (!json_is_true(json_object_get(in, "live")) || !db_is_dsn(state))
			continue;
		pid = ++live == 1 ? (long)json_integer_value(json_object_get(in, "pid")) : 0;
	}
	json_object_set_new(dm, "running", json_boolean(pid > 0 || live > 0));
	json_object_set_new(dm, "instances_live", json_integer((json_int_t)live));
	json_object_set_new(dm, "pid", pid > 0 ? json_integer(pid) : json_null());
	json_object_set_new(dm, "heartbeat",
			    note_get(st, "heartbeat", NULL, &beat) == 1 && beat
				? json_string(time_iso(beat, when, sizeof when))
				: json_null());
	json_object_set_new(root, "daemon", dm);
	json_object_set_new(root, "auth_backoff",
			    notes_auth_backoff(st, time(NULL), why, sizeof why) == 1
				? json_string(why)
				: json_null());
}

/* One registered instance as a row of "instances". */
struct instances_ctx {
	json_t *rows;
	int64_t lease_ms; /* a heartbeat older than this: the instance is silent */
};

static void instance_row(const struct cluster_instance *in, void *arg)
{
	struct instances_ctx *c = arg;
	char when[32], started[32];
	int64_t age_ms = in->now_ms - in->heartbeat_ms;
	json_t *holds = json_array();
	struct strlist names = {0};
	strlist_split(&names, in->holds);
	for (size_t i = 0; i < names.n; i++)
		json_array_append_new(holds, json_string(names.v[i]));
	strlist_free(&names);
	json_array_append_new(
	    c->rows,
	    json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I,s:b,s:o}", "id", in->id ? in->id : "", "host",
		      in->host ? in->host : "", "pid", (json_int_t)in->pid, "version",
		      in->version ? in->version : "", "started",
		      time_iso((time_t)(in->started_ms / 1000), started, sizeof started),
		      "heartbeat", time_iso((time_t)(in->heartbeat_ms / 1000), when, sizeof when),
		      "heartbeat_age_s", (json_int_t)(age_ms > 0 ? age_ms / 1000 : 0), "live",
		      age_ms <= c->lease_ms, "holds", holds));
}

/* Every instance that joined on this state (host, pid, version, last
 * heartbeat and its age, the leases it holds); an empty list when none
 * ever did, null when they cannot be read. */
static json_t *instances_status(struct store *st, const struct mf_config *cfg)
{
	struct instances_ctx c = {
	    .rows = json_array(),
	    .lease_ms = (cfg ? cfg->gateway.lease_timeout : 30) * (int64_t)1000,
	};
	if (cluster_instances_db(store_db(st), instance_row, &c) < 0) {
		json_decref(c.rows);
		return json_null();
	}
	return c.rows;
}

/* Every mailbox, in a stable order: by name, whatever the config's order;
 * those the state knows when the config does not load; [replies] last. */
static json_t *mailboxes_status(struct store *st, const struct mf_config *cfg)
{
	json_t *mbs = json_array();
	/* rows in a stable order: by mailbox name, whatever the config's order */
	const struct mf_mailbox **sorted =
	    xcalloc(cfg && cfg->n_mailboxes ? cfg->n_mailboxes : 1, sizeof *sorted);
	for (size_t i = 0; cfg && i < cfg->n_mailboxes; i++)
		sorted[i] = &cfg->mailboxes[i];
	if (cfg && cfg->n_mailboxes > 1)
		qsort(sorted, cfg->n_mailboxes, sizeof *sorted, by_name);
	for (size_t i = 0; cfg && i < cfg->n_mailboxes; i++) {
		const struct mf_mailbox *mb = sorted[i];
		json_array_append_new(
		    mbs, mailbox_status(st, mb->name, mb->account, mb->folder, mb->group));
	}
	free(sorted);
	struct folder_status *known;
	size_t n_known;
	if (!cfg && store_folders_list(st, &known, &n_known) == 0) {
		for (size_t i = 0; i < n_known; i++)
			json_array_append_new(mbs,
					      mailbox_status(st, known[i].mailbox, known[i].account,
							     known[i].folder, NULL));
		store_folders_free(known, n_known);
	}
	if (cfg && cfg->replies.present)
		json_array_append_new(mbs, mailbox_status(st, REPLIES_KEY, cfg->replies.account,
							  cfg->replies.folder, NULL));
	return mbs;
}

/* One subscription as a row of "digests". */
static void digest_row(void *arg, const struct subscription_row *row)
{
	char when[32];
	json_array_append_new(
	    arg, json_pack("{s:s?,s:s?,s:o,s:s?}", "subscriber", row->email, "frequency",
			   row->frequency, "last_sent",
			   row->last_sent ? json_string(time_iso(row->last_sent, when, sizeof when))
					  : json_null(),
			   "source", row->source));
}

/* cfg NULL: the config on disk is broken (e.g. a refused reload); the
 * mailboxes are then those the state knows. */
static json_t *status_build(struct store *st, const struct mf_config *cfg, const char *state)
{
	json_t *root = json_object(), *digests = json_array();
	struct outbox_counts c = {0};

	json_object_set_new(root, "mailboxes", mailboxes_status(st, cfg));

	outbox_counts(st, &c);
	json_t *ob =
	    json_pack("{s:I,s:I,s:I,s:I,s:I}", "pending", (json_int_t)c.pending, "retrying",
		      (json_int_t)c.retrying, "inflight", (json_int_t)c.inflight, "delivered",
		      (json_int_t)c.delivered, "dead", (json_int_t)c.dead);
	/* why items wait: the error of the oldest retrying one, and when the
	 * next attempt is due */
	json_object_set_new(ob, "retry_error", json_null());
	json_object_set_new(ob, "next_retry", json_null());
	char *retry_error = NULL;
	time_t next_retry = 0;
	if (c.retrying > 0 && outbox_retry_status(st, &retry_error, &next_retry) == 1) {
		json_object_set_new(ob, "retry_error",
				    retry_error ? json_string(retry_error) : json_null());
		json_object_set_new(ob, "next_retry", time_or_null(next_retry));
	}
	free(retry_error);
	json_object_set_new(root, "outbox", ob);
	long nw = notice_waiting(st);
	json_object_set_new(root, "notices_waiting", json_integer(nw > 0 ? nw : 0));
	/* feed members ([digest] subscribers = feed) unless they have a
	 * subscription of their own */
	subscribers_list(st, cfg && cfg->digest.subscribers == SUBSCRIBERS_FEED, digest_row,
			 digests);
	json_object_set_new(root, "digests", digests);
	json_object_set_new(root, "instances", instances_status(st, cfg));
	daemon_status(root, st, state);
	char *reload_error = NULL;
	note_get(st, NOTE_RELOAD_ERROR, &reload_error, NULL);
	json_object_set_new(root, "reload_error",
			    reload_error ? json_string(reload_error) : json_null());
	free(reload_error);
	return root;
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : dflt;
}

/* Like `postfix status`: 1 when a mailbox is failing, an account waits
 * after refused logins, or anything is dead. */
static int status_failing(json_t *root)
{
	size_t i;
	json_t *m;
	int failing =
	    json_integer_value(json_object_get(json_object_get(root, "outbox"), "dead")) > 0 ||
	    json_is_string(json_object_get(root, "auth_backoff"));
	json_array_foreach(json_object_get(root, "mailboxes"), i, m)
	{
		if (json_is_string(json_object_get(m, "last_error")) ||
		    json_integer_value(json_object_get(m, "dead")) > 0)
			failing = 1;
	}
	return failing;
}

static void instances_print(json_t *list)
{
	size_t i;
	json_t *in;
	if (json_array_size(list) == 0)
		return;
	printf("\ninstances:\n");
	json_array_foreach(list, i, in)
	{
		json_t *holds = json_object_get(in, "holds");
		printf("  %s pid %lld version %s, last heartbeat %lld s ago%s",
		       str_or(in, "host", ""),
		       (long long)json_integer_value(json_object_get(in, "pid")),
		       str_or(in, "version", "?"),
		       (long long)json_integer_value(json_object_get(in, "heartbeat_age_s")),
		       json_is_true(json_object_get(in, "live")) ? ""
								 : " (silent: stopped or cut off)");
		size_t j;
		json_t *h;
		printf(json_array_size(holds) ? ", holds " : ", holds nothing");
		json_array_foreach(holds, j, h) printf("%s%s", j ? ", " : "", json_string_value(h));
		printf("\n");
	}
}

static void status_print(json_t *root)
{
	size_t i;
	json_t *m;
	json_t *dm = json_object_get(root, "daemon");
	if (json_is_true(json_object_get(dm, "running")) &&
	    json_is_null(json_object_get(dm, "pid")))
		printf("daemon: running, %lld live instance(s) (below), last heartbeat %s\n\n",
		       (long long)json_integer_value(json_object_get(dm, "instances_live")),
		       str_or(dm, "heartbeat", "none yet"));
	else if (json_is_true(json_object_get(dm, "running")))
		printf("daemon: running, pid %lld, last heartbeat %s\n\n",
		       (long long)json_integer_value(json_object_get(dm, "pid")),
		       str_or(dm, "heartbeat", "none yet"));
	else
		printf("daemon: not running (last heartbeat %s)\n\n",
		       str_or(dm, "heartbeat", "never"));
	printf("MAILBOX              FOLDER               LAST UID   STORED  SKIPPED WAITING  "
	       "LAST OK               LAST ERROR\n");
	json_array_foreach(json_object_get(root, "mailboxes"), i, m)
	{
		printf("%-20s %-20s %8lld %8lld %8lld %7lld  %-20s  %s\n", str_or(m, "name", ""),
		       str_or(m, "folder", ""),
		       (long long)json_integer_value(json_object_get(m, "last_uid")),
		       (long long)json_integer_value(json_object_get(m, "stored")),
		       (long long)json_integer_value(json_object_get(m, "skipped")),
		       (long long)json_integer_value(json_object_get(m, "waiting")),
		       str_or(m, "last_ok", "never"), str_or(m, "last_error", "-"));
	}
	json_t *o = json_object_get(root, "outbox");
	printf("\noutbox: %lld pending, %lld retrying, %lld in flight, %lld delivered, %lld dead\n",
	       (long long)json_integer_value(json_object_get(o, "pending")),
	       (long long)json_integer_value(json_object_get(o, "retrying")),
	       (long long)json_integer_value(json_object_get(o, "inflight")),
	       (long long)json_integer_value(json_object_get(o, "delivered")),
	       (long long)json_integer_value(json_object_get(o, "dead")));
	if (str_or(o, "retry_error", NULL))
		printf("retrying: %s (next attempt %s)\n", str_or(o, "retry_error", ""),
		       str_or(o, "next_retry", "now"));
	json_int_t nw = json_integer_value(json_object_get(root, "notices_waiting"));
	if (nw > 0)
		printf("notices: %lld waiting for the mail relay\n", (long long)nw);
	json_t *d = json_object_get(root, "digests");
	if (json_array_size(d) > 0) {
		printf("\ndigests:\n");
		json_array_foreach(d, i, m)
		{
			printf("  %-32s %-7s last sent %-20s (%s)\n", str_or(m, "subscriber", ""),
			       str_or(m, "frequency", ""), str_or(m, "last_sent", "never"),
			       str_or(m, "source", ""));
		}
	}
	instances_print(json_object_get(root, "instances"));
	const char *re = str_or(root, "reload_error", NULL);
	if (re)
		printf("\nlast reload refused: %s\n", re);
	const char *ab = str_or(root, "auth_backoff", NULL);
	if (ab)
		printf("\n%s; fix the credentials and reload to try at once\n", ab);
}

/* The state path of a config that does not load: [gateway] state, taken
 * relative to the config's directory as config.c does, if the file has
 * one that exists. */
static char *state_path_fallback(const char *config)
{
	FILE *f = fopen(config, "r");
	char line[1024], section[64] = "";
	char *path = NULL;
	int dsn_file = 0;
	if (!f)
		return NULL;
	while (fgets(line, sizeof line, f)) {
		char *l = str_trim(line);
		if (*l == '[') {
			snprintf(section, sizeof section, "%s", l);
			continue;
		}
		char *eq = strchr(l, '=');
		if (strncmp(section, "[gateway]", 9) != 0 || !eq)
			continue;
		*eq = 0;
		char *key = str_trim(l), *v = str_trim(eq + 1);
		int is_file = strcmp(key, "state_dsn_file") == 0;
		if (!is_file && strcmp(key, "state") != 0)
			continue;
		char *semi = strchr(v, ';');
		if (semi)
			*semi = 0;
		v = str_trim(v);
		if (dsn_file && !is_file)
			continue; /* the DSN file wins, as in config.c */
		free(path);
		dsn_file = is_file;
		if (*v == '/' || db_is_dsn(v)) {
			path = xstrdup(v);
		} else {
			const char *slash = strrchr(config, '/');
			path = slash ? xasprintf("%.*s/%s", (int)(slash - config), config, v)
				     : xstrdup(v);
		}
	}
	fclose(f);
	if (path && dsn_file) { /* its first line is the DSN */
		char err[512];
		char *dsn = dsn_file_read(path, err, sizeof err);
		free(path);
		return dsn;
	}
	if (!path)
		path = xstrdup("/var/lib/mailfeed/state.db");
	if (!db_is_dsn(path) && access(path, R_OK) != 0) {
		free(path);
		return NULL;
	}
	return path;
}

int cmd_status(int argc, char **argv, const char *config)
{
	int as_json = 0;
	char err[512];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			as_json = 1;
		} else if (strcmp(argv[i], "--help") == 0) {
			printf(
			    "usage: mailfeed [-c FILE] status [--json]\n"
			    "  Whether the daemon runs (pid, heartbeat); per mailbox: last UID,\n"
			    "  messages stored/skipped/waiting, last success and error; outbox\n"
			    "  counts; digests per subscriber; the instances sharing the state\n"
			    "  (host, pid, version, last heartbeat, the leases they hold).  Exit "
			    "1\n"
			    "  when a mailbox is failing, an account waits after refused logins,\n"
			    "  or anything is dead, or the state database cannot be reached.\n");
			return 0;
		} else {
			fprintf(stderr, "usage: mailfeed [-c FILE] status [--json]\n");
			return 2;
		}
	}
	struct mf_config *cfg = cli_load_config(config);
	char *fallback = NULL;
	if (!cfg) {
		fallback = state_path_fallback(config);
		if (!fallback)
			return 2;
		char *shown = dsn_redact(fallback);
		fprintf(stderr, "mailfeed: %s has problems; showing the state in %s\n", config,
			shown);
		free(shown);
	}
	const char *state = cfg ? cfg->gateway.state : fallback;
	int away = 0;
	struct store *st = store_open_why(state, err, sizeof err, &away);
	if (!st) {
		fprintf(stderr, "mailfeed: %s%s\n", away ? "state database unreachable: " : "",
			err);
		free(fallback);
		config_free(cfg);
		return 1;
	}
	json_t *root = status_build(st, cfg, state);
	free(fallback);
	int rc = status_failing(root) ? 1 : 0;
	if (as_json) {
		char *s = json_dumps(root, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
	} else {
		status_print(root);
	}
	json_decref(root);
	store_close(st);
	config_free(cfg);
	return rc;
}
