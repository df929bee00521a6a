/* cmd_check_config.c — `mailfeed check-config`, and the config loading that
 * every other sub-command shares (problems printed, exit code 2).
 *
 * Run as root, check-config judges secret files for the user the service
 * runs as (--user, else the owner of the state directory), since a file
 * root can read may still be closed to the daemon. */
#include <errno.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/auth.h"
#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/db.h"
#include "mailfeed/feed.h"
#include "mailfeed/imap.h"
#include "mailfeed/secret.h"
#include "mailfeed/smtp.h"
#include "mailfeed/state_owner.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

static void print_diag(const struct mf_diag *diag)
{
	for (size_t i = 0; i < diag->msgs.n; i++)
		fprintf(stderr, "%s\n", diag->msgs.v[i]);
}

struct mf_config *cli_load_config(const char *path)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg = config_load(path, 0, &diag);
	char err[512];
	if (!cfg)
		print_diag(&diag);
	diag_free(&diag);
	/* root working on the service's state becomes its owner first */
	if (cfg && state_run_as_owner(cfg->gateway.state, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed: %s\n", err);
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct store *cli_open_store(const struct mf_config *cfg)
{
	char err[512];
	struct store *st = store_open(cfg->gateway.state, err, sizeof err);
	if (!st)
		fprintf(stderr, "mailfeed: %s\n", err);
	return st;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: mailfeed [-c FILE] check-config [--online] [--user USER]\n\n"
		"Parses and validates the config, opens every secret file and runs\n"
		"every token command.  Each problem is printed as FILE:LINE: message.\n\n"
		"  --online     then also log in to every account and select every folder,\n"
		"               log in at the feed service and check every group, and log\n"
		"               in to the SMTP relay: one line per check, ok or the error\n"
		"  --user USER  judge secret files for USER (run as root: default the\n"
		"               owner of the state directory, the user the service runs as)\n\n"
		"Exit status: 0 clean, 1 when an online check failed, 2 on a problem in\n"
		"the config.\n");
}

/* Run as root without --user: the owner of the state file's directory (of
 * the DSN file for a PostgreSQL state), when that is not root.  0 with *user set (owned) or NULL,
 * -1 after a message. */
static int service_user(const char *config, char **user)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg = config_load(config, -1, &diag);
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	struct stat st;

	*user = NULL;
	diag_free(&diag);
	if (!cfg)
		return 0; /* the full load below reports the problems */
	/* a PostgreSQL state has no directory: the DSN file, private to the
	 * service's user, tells who that is */
	int pg = is_pg_dsn(cfg->gateway.state);
	char *copy = xstrdup(pg ? (cfg->gateway.state_dsn_file ? cfg->gateway.state_dsn_file : "")
				: cfg->gateway.state);
	const char *dir = pg ? copy : dirname(copy);
	if (*dir && stat(dir, &st) == 0 && st.st_uid != 0) {
		if (getpwuid_r(st.st_uid, &pw, pwbuf, sizeof pwbuf, &res) != 0 || !res) {
			fprintf(stderr,
				"mailfeed check-config: %s belongs to uid %u, which has no user "
				"name; say whom to judge secrets for with --user\n",
				dir, (unsigned)st.st_uid);
			free(copy);
			config_free(cfg);
			return -1;
		}
		*user = xstrdup(pw.pw_name);
		printf("secrets judged for user %s (owner of %s)\n", pw.pw_name, dir);
	}
	free(copy);
	config_free(cfg);
	return 0;
}

/* ------------------------------------------------------------------ */
/* --online                                                            */

/* One result line: "WHAT: ok[, note]" or "WHAT: FAILED: why".  Text from
 * servers is shown with control characters replaced. */
static int report(const char *what, int ok, const char *text)
{
	char clean[600];
	size_t o = 0;
	for (const char *p = text ? text : ""; *p && o + 1 < sizeof clean; p++)
		clean[o++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
	clean[o] = 0;
	if (ok)
		printf("%s: ok%s%s\n", what, *clean ? ", " : "", clean);
	else
		printf("%s: FAILED: %s\n", what, clean);
	fflush(stdout);
	return ok ? 0 : 1;
}

/* Logs in to acct and selects each of its folders.  Failures counted. */
static int check_account(const struct mf_config *cfg, const struct mf_account *a)
{
	char what[300], err[512];
	int failed = 0;
	struct imap_session *s;

	snprintf(what, sizeof what, "account %s (%s:%d)", a->name, a->host, a->port);
	s = imap_open(a, err, sizeof err);
	failed += report(what, s != NULL, s ? "logged in" : err);
	for (size_t i = 0; i < cfg->n_mailboxes; i++) {
		const struct mf_mailbox *m = &cfg->mailboxes[i];
		struct imap_folder_info info;
		if (m->acct != a)
			continue;
		snprintf(what, sizeof what, "mailbox %s (folder %s of account %s)", m->name,
			 m->folder, a->name);
		if (!s) {
			failed += report(what, 0, "not checked: the account's login failed");
			continue;
		}
		if (imap_select(s, m->folder, &info, err, sizeof err) < 0) {
			failed += report(what, 0, err);
			continue;
		}
		snprintf(err, sizeof err, "%u message%s", info.exists, info.exists == 1 ? "" : "s");
		report(what, 1, err);
	}
	if (cfg->replies.present && cfg->replies.acct == a) {
		struct imap_folder_info info;
		snprintf(what, sizeof what, "replies (folder %s of account %s)",
			 cfg->replies.folder, a->name);
		if (!s)
			failed += report(what, 0, "not checked: the account's login failed");
		else if (imap_select(s, cfg->replies.folder, &info, err, sizeof err) < 0)
			failed += report(what, 0, err);
		else
			report(what, 1, NULL);
	}
	imap_close(s);
	return failed;
}

/* The local feed's directory: writable, or creatable in a writable parent. */
static int check_local_dir(const char *dir)
{
	char what[400], why[512];
	struct stat st;

	snprintf(what, sizeof what, "feed local (directory %s)", dir);
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return report(what, 0, "exists and is not a directory");
		if (access(dir, W_OK | X_OK) < 0) {
			snprintf(why, sizeof why, "not writable: %s", strerror(errno));
			return report(what, 0, why);
		}
		return report(what, 1, "writable");
	}
	char *copy = xstrdup(dir);
	const char *parent = dirname(copy);
	int ok = access(parent, W_OK | X_OK) == 0;
	snprintf(why, sizeof why, ok ? "will be created in %s" : "missing, and %s is not writable",
		 parent);
	free(copy);
	return report(what, ok, why);
}

/* Logs in at the feed service and checks every mapped group once. */
static int check_feed(const struct mf_config *cfg)
{
	const struct feed_backend_ops *ops = feed_backend(cfg->feed.backend);
	char what[400], msg[600];
	struct strlist seen = {0};
	void *ctx = NULL;
	int failed = 0;

	if (cfg->feed.backend == FEED_LOCAL)
		return check_local_dir(cfg->feed.dir ? cfg->feed.dir : "feeds");
	snprintf(what, sizeof what, "feed %s (%s)", ops->name,
		 cfg->feed.backend == FEED_CHATTER ? cfg->feed.instance_url : cfg->feed.url);
	if (!ops->check_login)
		return report(what, 1,
			      "not checked: a webhook cannot be asked without posting to it");
	if (ops->open(cfg, NULL, &ctx, msg, sizeof msg) < 0)
		return report(what, 0, msg);
	int logged_in = ops->check_login(ctx, msg, sizeof msg) == 0;
	failed += report(what, logged_in, msg);
	for (size_t i = 0; i < cfg->n_mailboxes; i++) {
		const struct mf_mailbox *m = &cfg->mailboxes[i];
		if (!m->group || strlist_has_ci(&seen, m->group))
			continue;
		strlist_add(&seen, m->group);
		snprintf(what, sizeof what, "group %s (mailbox %s)", m->group, m->name);
		if (!logged_in)
			failed +=
			    report(what, 0, "not checked: the login at the feed service failed");
		else
			failed += report(
			    what, ops->check_group(ctx, m->group, msg, sizeof msg) == 0, msg);
	}
	/* the objects and fields each route line looks up */
	for (size_t i = 0; ops->check_route && i < cfg->n_mailboxes; i++) {
		const struct mf_mailbox *m = &cfg->mailboxes[i];
		for (size_t k = 0; k < m->routes.n; k++) {
			snprintf(what, sizeof what, "route %s (mailbox %s)", m->routes.v[k],
				 m->name);
			if (!logged_in)
				failed += report(
				    what, 0, "not checked: the login at the feed service failed");
			else
				failed += report(
				    what,
				    ops->check_route(ctx, m->routes.v[k], msg, sizeof msg) == 0,
				    msg);
		}
	}
	strlist_free(&seen);
	ops->close(ctx);
	return failed;
}

static int check_smtp(const struct mf_config *cfg)
{
	char what[400], err[512];
	snprintf(what, sizeof what, "smtp (%s)", cfg->smtp.url);
	struct smtp_client *c = smtp_new(&cfg->smtp, err, sizeof err);
	if (!c)
		return report(what, 0, err);
	int ok = smtp_check(c, err, sizeof err) == 0;
	smtp_free(c);
	return report(what, ok, ok ? (cfg->smtp.username ? "logged in" : "connected") : err);
}

/* A PostgreSQL state: reached, its server's version, how far its schema
 * is (nothing is created or changed: the daemon does that). */
static int check_state(const char *state)
{
	char what[600], why[600], err[512];
	char *shown = dsn_redact(state);
	snprintf(what, sizeof what, "state (%s)", shown);
	free(shown);
	struct db *db = db_open(state, err, sizeof err, NULL);
	if (!db)
		return report(what, 0, err);
	struct db_stmt *s = db_prepare(db, "SELECT current_setting('server_version'),"
					   " to_regclass('schema_versions') IS NOT NULL");
	int ok = s && db_step(s) == DB_ROW, v = 0;
	snprintf(why, sizeof why, "PostgreSQL %s", ok ? db_column_text(s, 0) : "?");
	int versions = ok && db_column_int64(s, 1);
	db_finalize(s);
	s = versions ? db_prepare(db, "SELECT version FROM schema_versions WHERE name='store'")
		     : NULL;
	if (s && db_step(s) == DB_ROW)
		v = (int)db_column_int64(s, 0);
	db_finalize(s);
	if (!ok)
		snprintf(why, sizeof why, "%s", db_errmsg(db));
	else if (v > 0)
		snprintf(why + strlen(why), sizeof why - strlen(why), ", schema version %d", v);
	else
		snprintf(why + strlen(why), sizeof why - strlen(why),
			 ", empty (the daemon creates the schema)");
	db_close(db);
	return report(what, ok, why);
}

static int check_online(const struct mf_config *cfg)
{
	int failed = 0;
	if (is_pg_dsn(cfg->gateway.state))
		failed += check_state(cfg->gateway.state);
	for (size_t i = 0; i < cfg->n_accounts; i++)
		failed += check_account(cfg, &cfg->accounts[i]);
	failed += check_feed(cfg);
	if (cfg->smtp.present)
		failed += check_smtp(cfg);
	printf("%d check%s failed\n", failed, failed == 1 ? "" : "s");
	return failed ? 1 : 0;
}

int cmd_check_config(int argc, char **argv, const char *config)
{
	struct mf_diag diag = {0};

	char *user = NULL, err[256];
	int online = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			free(user);
			return 0;
		}
		if (strcmp(argv[i], "--online") == 0) {
			online = 1;
			continue;
		}
		if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
			free(user);
			user = xstrdup(argv[++i]);
			continue;
		}
		fprintf(stderr, "mailfeed check-config: unexpected argument '%s'\n", argv[i]);
		usage(stderr);
		free(user);
		return 2;
	}
	if (!user && geteuid() == 0 && service_user(config, &user) < 0)
		return 2;
	if (user && secret_judge_for(user, err, sizeof err) < 0) {
		fprintf(stderr, "mailfeed check-config: --user %s: %s\n", user, err);
		free(user);
		return 2;
	}
	free(user);
	struct mf_config *cfg = config_load(config, 1, &diag);
	if (!cfg) {
		print_diag(&diag);
		diag_free(&diag);
		return 2;
	}
	if (state_dir_check(cfg->gateway.state, err, sizeof err) < 0) {
		fprintf(stderr, "%s: %s\n", config, err);
		diag_free(&diag);
		config_free(cfg);
		return 2;
	}
	printf("%s: ok: %zu account%s, %zu mailbox%s, backend %s\n", config, cfg->n_accounts,
	       cfg->n_accounts == 1 ? "" : "s", cfg->n_mailboxes, cfg->n_mailboxes == 1 ? "" : "es",
	       feed_backend_name(cfg->feed.backend));
	struct strlist warn = {0};
	auth_config_warnings(cfg, &warn);
	for (size_t i = 0; i < warn.n; i++)
		printf("%s: warning: %s\n", config, warn.v[i]);
	strlist_free(&warn);
	diag_free(&diag);
	int rc = online ? check_online(cfg) : 0;
	config_free(cfg);
	return rc;
}
