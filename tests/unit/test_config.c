/* test_config.c — mailfeed.conf as an admin meets it: the defaults, typed
 * values, every kind of problem reported at the right line, secret files
 * and secret commands.  Each test writes its config into a fresh temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/config.h"
#include "mailfeed/secret.h"

static char tmpdir[256];
static char cfgpath[300];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_config.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(cfgpath, sizeof cfgpath, "%s/mailfeed.conf", tmpdir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *name, const char *text, int mode)
{
	char path[400];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, (mode_t)mode), 0);
}

static struct mf_config *load(const char *text, struct mf_diag *diag)
{
	write_file("mailfeed.conf", text, 0644);
	return config_load(cfgpath, 1, diag);
}

/* Loading text must fail with a problem "CONF:line: ...needle...". */
static void expect_problem(const char *text, int line, const char *needle)
{
	struct mf_diag diag = {0};
	char prefix[400];
	struct mf_config *cfg = load(text, &diag);
	int found = 0;

	assert_null(cfg);
	snprintf(prefix, sizeof prefix, "%s:%d: ", cfgpath, line);
	for (size_t i = 0; i < diag.msgs.n; i++)
		if (strncmp(diag.msgs.v[i], prefix, strlen(prefix)) == 0 &&
		    strstr(diag.msgs.v[i], needle))
			found = 1;
	if (!found) {
		for (size_t i = 0; i < diag.msgs.n; i++)
			print_message("got: %s\n", diag.msgs.v[i]);
		fail_msg("no problem at line %d containing '%s'", line, needle);
	}
	diag_free(&diag);
}

#define ACCOUNT                                                                                    \
	"[account staff]\nhost = imap.example.org\nusername = u\npassword_file = imap.pass\n"

static void test_defaults(void **state)
{
	struct mf_diag diag = {0};
	write_file("imap.pass", "pw\n", 0600);
	struct mf_config *cfg = load(ACCOUNT "[mailbox m]\naccount = staff\nfolder = F\n"
					     "group = G1\n",
				     &diag);
	assert_non_null(cfg);
	assert_int_equal(diag.msgs.n, 0);
	assert_string_equal(cfg->gateway.state, "/var/lib/mailfeed/state.db");
	assert_int_equal(cfg->gateway.max_message_size, 25 * 1024 * 1024);
	assert_int_equal(cfg->gateway.thread_window, 14 * 86400);
	assert_int_equal(cfg->gateway.token_lifetime, 60 * 86400);
	assert_int_equal(cfg->gateway.parse_timeout, 20);
	assert_int_equal(cfg->gateway.parse_memory, 512LL * 1024 * 1024);
	assert_string_equal(cfg->gateway.log_level, "info");
	assert_null(cfg->gateway.metrics_listen);
	assert_int_equal(cfg->feed.backend, FEED_LOCAL);
	assert_string_equal(cfg->feed.dir, "/var/lib/mailfeed/feeds");
	assert_string_equal(cfg->feed.api_version, "62.0");
	assert_string_equal(cfg->feed.login_url, "https://login.salesforce.com");
	assert_int_equal(cfg->feed.concurrency, 4);
	assert_int_equal(cfg->feed.timeout, 30);
	assert_int_equal(cfg->feed.connect_timeout, 10);
	assert_int_equal(cfg->feed.max_retry_delay, 3600);
	assert_int_equal(cfg->feed.dead_after, 2 * 86400);
	assert_int_equal(cfg->feed.max_files, 10);
	assert_int_equal(cfg->feed.tls_verify, 1);
	assert_int_equal(cfg->n_accounts, 1);
	const struct mf_account *a = config_account(cfg, "staff");
	assert_non_null(a);
	assert_int_equal(a->port, 993);
	assert_int_equal(a->tls, TLS_IMPLICIT);
	assert_int_equal(a->tls_verify, 1);
	assert_int_equal(a->auth, AUTH_AUTO);
	assert_int_equal(a->idle_restart, 25 * 60);
	assert_int_equal(a->poll_interval, 30);
	assert_int_equal(a->max_connections, 4);
	assert_int_equal(a->line, 1);
	/* relative secret paths are taken from the config's directory */
	char expect[400];
	snprintf(expect, sizeof expect, "%s/imap.pass", tmpdir);
	assert_string_equal(a->password_file, expect);
	const struct mf_mailbox *m = config_mailbox(cfg, "m");
	assert_non_null(m);
	assert_ptr_equal(m->acct, a);
	assert_int_equal(m->after, AFTER_SEEN);
	assert_int_equal(m->line, 5);
	assert_null(config_mailbox(cfg, "nope"));
	assert_int_equal(cfg->replies.present, 0);
	assert_int_equal(cfg->smtp.present, 0);
	assert_int_equal(cfg->digest.hour, 7);
	assert_string_equal(cfg->digest.timezone, "UTC");
	assert_int_equal(cfg->digest.weekly_day, 1);
	assert_int_equal(cfg->digest.max_items, 50);
	config_free(cfg);
}

static void test_values(void **state)
{
	struct mf_diag diag = {0};
	unsigned char key[40] = {0};
	write_file("imap.pass", "pw\n", 0600);
	write_file("smtp.pass", "pw\n", 0600);
	write_file("hook.secret", "s3cret\n", 0600);
	char path[400];
	snprintf(path, sizeof path, "%s/secret", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fwrite(key, 1, sizeof key, f);
	fclose(f);
	chmod(path, 0600);
	struct mf_config *cfg =
	    load("; comment\n# another\n[gateway]\nstate = /srv/mf/state.db\n"
		 "reply_address = feed@example.org\nsecret_file = secret\n"
		 "max_message_size = 10M\nthread_window = 2h\n"
		 "metrics_listen = 127.0.0.1:9464\nlog_level = debug\n"
		 "[feed]\nbackend = webhook\nurl = http://127.0.0.1:8080/hook\n"
		 "secret_file = hook.secret\nmax_file_size = 512K\n"
		 "[account staff]\nhost = 127.0.0.1\ntls = none\nusername = u\n"
		 "password_file = imap.pass\n"
		 "[mailbox m]\naccount = staff\nfolder = INBOX\ngroup = G1\n"
		 "hashtags = #One, two ; inline comment\nhashtags = three, one\n"
		 "after = move:Archive/Done\nallow_senders = example.org, bob@partner.org\n"
		 "accept_bulk = yes\n"
		 "[replies]\naccount = staff\nfolder = Replies\nafter = delete\n"
		 "[smtp]\nurl = smtp://127.0.0.1:2525\nfrom = Digest <d@example.org>\n"
		 "username = d\npassword_file = smtp.pass\n"
		 "[digest]\nhour = 18\ntimezone = Europe/Berlin\nweekly_day = Fri\n"
		 "[subscriber Alice@Example.org]\ngroups = m, 0F9000000000009\n"
		 "frequency = weekly\nhour = 6\n",
		 &diag);
	for (size_t i = 0; i < diag.msgs.n; i++)
		print_message("%s\n", diag.msgs.v[i]);
	assert_non_null(cfg);
	assert_int_equal(cfg->gateway.max_message_size, 10 * 1024 * 1024);
	assert_int_equal(cfg->gateway.thread_window, 7200);
	assert_string_equal(cfg->gateway.metrics_listen, "127.0.0.1:9464");
	assert_string_equal(cfg->feed.dir, "/srv/mf/feeds");
	assert_int_equal(cfg->feed.backend, FEED_WEBHOOK);
	assert_int_equal(cfg->feed.max_file_size, 512 * 1024);
	assert_int_equal(cfg->accounts[0].port, 143);
	assert_int_equal(cfg->accounts[0].tls, TLS_NONE);
	const struct mf_mailbox *m = &cfg->mailboxes[0];
	assert_int_equal(m->hashtags.n, 3);
	assert_string_equal(m->hashtags.v[0], "One");
	assert_string_equal(m->hashtags.v[1], "two");
	assert_string_equal(m->hashtags.v[2], "three");
	assert_int_equal(m->after, AFTER_MOVE);
	assert_string_equal(m->after_folder, "Archive/Done");
	assert_int_equal(m->allow_senders.n, 2);
	assert_int_equal(m->accept_bulk, 1);
	assert_int_equal(cfg->replies.present, 1);
	assert_ptr_equal(cfg->replies.acct, &cfg->accounts[0]);
	assert_int_equal(cfg->replies.after, AFTER_DELETE);
	assert_int_equal(cfg->smtp.present, 1);
	assert_int_equal(cfg->digest.hour, 18);
	assert_int_equal(cfg->digest.weekly_day, 5);
	assert_int_equal(cfg->n_subscribers, 1);
	assert_string_equal(cfg->subscribers[0].email, "alice@example.org");
	assert_int_equal(cfg->subscribers[0].frequency, FREQ_WEEKLY);
	assert_int_equal(cfg->subscribers[0].hour, 6);
	assert_null(cfg->subscribers[0].timezone);
	assert_int_equal(cfg->subscribers[0].groups.n, 2);
	config_free(cfg);
}

static void test_syntax_problems(void **state)
{
	expect_problem("[gateway]\nworkers = 2\nbogus = 1\n", 3,
		       "unknown key 'bogus' in [gateway]; valid keys: state,");
	expect_problem("\n[gatewai]\nx = 1\n", 2, "unknown section [gatewai]");
	expect_problem("state = x\n", 1, "outside any section");
	expect_problem("[gateway]\nlog_level = info\nlog_level = warn\n", 3, "set twice");
	expect_problem("[gateway]\n\nworkers\n", 3, "expected 'key = value'");
	expect_problem("[gateway\nworkers = 2\n", 1, "no closing ']'");
	expect_problem("[digest]\n[digest]\n", 2, "duplicate section [digest] (first at line 1)");
	expect_problem("[account]\n", 1, "needs a name");
	expect_problem("[replies x]\n", 1, "takes no name");
	expect_problem("[mailbox a b]\n", 1, "names may only use");
	expect_problem("[subscriber nobody]\n", 1, "not an email address");
	expect_problem("[gateway]\nlog_level =\n", 2, "empty value");

	char longline[400];
	snprintf(longline, sizeof longline, "[gateway]\ntrusted_authserv = %0300d\n", 1);
	expect_problem(longline, 2, "line too long");
}

static void test_value_problems(void **state)
{
	expect_problem("[gateway]\nthread_window = soon\n", 2, "is not a duration");
	expect_problem("[gateway]\nmax_message_size = 12Q\n", 2, "is not a size");
	expect_problem("[gateway]\naccept_bulk = maybe\n", 2, "unknown key");
	expect_problem("[digest]\nmax_items = 0\n", 2, "from 1 to 1000");
	expect_problem("[gateway]\nlog_level = loud\n", 2, "debug, info, notice, warn or error");
	expect_problem("[gateway]\nlog_format = xml\n", 2, "text | json");
	expect_problem("[gateway]\nmetrics_listen = 9464\n", 2, "HOST:PORT");
	expect_problem("[gateway]\nmetrics_listen = 0.0.0.0:9464\n", 2, "not a loopback address");
	expect_problem("[gateway]\nmetrics_listen = ::1:9464\n", 2, "[::1]:9464");
	expect_problem("[feed]\nbackend = slack\n", 2,
		       "must be one of: local | chatter | mattermost | webhook");
	expect_problem("[feed]\npost_as = boss\n", 2, "integration | author");
	expect_problem("\n[account a]\ntls = ssl\n", 3, "implicit | starttls | none");
	expect_problem("[account a]\nidle_restart = 40m\n", 2, "between 60s and 1740s");
	expect_problem("[account a]\nmax_connections = 0\n", 2, "from 1 to 100");
	expect_problem("[mailbox m]\nafter = archive\n", 2, "keep, seen, move:FOLDER or delete");
	expect_problem("[mailbox m]\nafter = move:\n", 2, "move needs a folder");
	expect_problem("[replies]\nafter = trash\n", 2, "keep, seen, move:FOLDER or delete");
	expect_problem("[digest]\nhour = 24\n", 2, "from 0 to 23");
	expect_problem("[digest]\nhour = -1\n", 2, "from 0 to 23");
	expect_problem("[digest]\ntimezone = Mars/Olympus\n", 2, "no time zone");
	expect_problem("[digest]\ntimezone = ../../etc/passwd\n", 2, "no time zone");
	expect_problem("[digest]\nweekly_day = funday\n", 2, "day of the week");
	expect_problem("[subscriber a@example.org]\nfrequency = hourly\n", 2,
		       "daily | weekly | each | never");
	expect_problem("[gateway]\nreply_address = nobody\n", 2, "local@domain");
	expect_problem("[gateway]\nreply_address = feed+x@example.org\n", 2,
		       "must not contain '+'");
	/* 23 characters fit, 24 do not */
	expect_problem("[gateway]\nreply_address = abcdefghijklmnopqrstuvwx@example.org\n", 2,
		       "local part is 24 characters; at most 23");
}

static void test_cross_section_problems(void **state)
{
	write_file("imap.pass", "pw\n", 0600);
	write_file("tok", "t\n", 0600);
	expect_problem("[account a]\nusername = u\npassword_file = imap.pass\n", 1,
		       "[account a] is missing 'host'");
	expect_problem("[account a]\nhost = h\nusername = u\n", 1, "needs a secret");
	expect_problem("[account a]\nhost = h\nusername = u\npassword_file = imap.pass\n"
		       "oauth2_token_file = tok\n",
		       1, "has 2 secrets");
	expect_problem("[account a]\nhost = imap.example.org\ntls = none\nusername = u\n"
		       "password_file = imap.pass\n",
		       3, "only allowed on loopback");
	expect_problem("[account a]\nhost = h\nusername = u\npassword_file = imap.pass\n"
		       "auth = xoauth2\n",
		       5, "xoauth2 needs oauth2_token_file");
	expect_problem(ACCOUNT "[mailbox m]\naccount = other\nfolder = F\ngroup = G\n", 6,
		       "no [account other] section");
	expect_problem(ACCOUNT "[mailbox m]\naccount = staff\ngroup = G\n", 5,
		       "[mailbox m] is missing 'folder'");
	expect_problem(ACCOUNT "[mailbox m]\naccount = staff\nfolder = F\n", 5,
		       "is missing 'group'");
	expect_problem(ACCOUNT "[mailbox m]\naccount = staff\nfolder = inbox\ngroup = G\n"
			       "[mailbox n]\naccount = staff\nfolder = INBOX\ngroup = H\n",
		       11, "already mapped by [mailbox m] at line 7");
	expect_problem(ACCOUNT "[mailbox m]\naccount = staff\nfolder = F\ngroup = G\n"
			       "after = move:F\n",
		       9, "into the folder they come from");
	expect_problem(ACCOUNT "[replies]\naccount = ghost\n", 6, "no [account ghost] section");
	expect_problem(ACCOUNT "[gateway]\nreply_address = f@example.org\n[replies]\n"
			       "account = staff\n[mailbox m]\naccount = staff\nfolder = INBOX\n"
			       "group = G\n",
		       7, "[replies] folder 'INBOX' of account 'staff' is also mapped");
	expect_problem("[replies]\n", 1, "[replies] is missing 'account'");
	expect_problem("[feed]\nbackend = chatter\ninstance_url = https://x.example.org\n", 2,
		       "backend = chatter needs 'client_id'");
	expect_problem("[feed]\nbackend = mattermost\nurl = https://x.example.org\n", 2,
		       "needs 'token_file'");
	expect_problem("[feed]\nbackend = webhook\nurl = ftp://x\n", 3, "must start with https://");
	expect_problem("[feed]\nbackend = webhook\nurl = http://hooks.example.org/\n", 3,
		       "plain http");
	expect_problem("[smtp]\nurl = smtps://smtp.example.org\n", 1, "[smtp] is missing 'from'");
	expect_problem("[subscriber a@example.org]\ngroups = x\n", 1, "no [smtp] section");
	expect_problem("[subscriber a@example.org]\nfrequency = never\n", 1, "missing 'groups'");
	expect_problem("[gateway]\nreply_address = f@example.org\n", 1, "needs secret_file");
}

static void test_secret_files(void **state)
{
	write_file("imap.pass", "pw\n", 0660);
	expect_problem(ACCOUNT, 4, "writable by group or others (mode 0660); run: chmod 600");
	write_file("imap.pass", "pw\n", 0644);
	expect_problem(ACCOUNT, 4, "readable by others (mode 0644); run: chmod 600");
	write_file("imap.pass", "pw\n", 0602);
	expect_problem(ACCOUNT, 4, "writable by group or others (mode 0602)");
	expect_problem("[account staff]\nhost = h\nusername = u\npassword_file = missing\n", 4,
		       "No such file or directory");
	write_file("short", "0123456789", 0600);
	expect_problem("[gateway]\nsecret_file = short\n", 2, "holds 10 bytes, needs at least 32");
	write_file("imap.pass", "", 0600);
	expect_problem(ACCOUNT, 4, "is empty");

	/* the daemon's own check (check_secrets = 0) still refuses a shared file */
	struct mf_diag diag = {0};
	write_file("imap.pass", "pw\n", 0604);
	write_file("mailfeed.conf", ACCOUNT, 0644);
	assert_null(config_load(cfgpath, 0, &diag));
	assert_int_equal(diag.msgs.n, 1);
	assert_non_null(strstr(diag.msgs.v[0], "chmod 600"));
	diag_free(&diag);
}

/* 0640 with the reading user's group is how Debian keeps secrets (root owns
 * the file, the service's group reads it); a group the reader is not in may
 * not read it.  Needs root to give files away. */
static void test_secret_group_modes(void **state)
{
	char path[400], err[512], *out = NULL;
	struct mf_diag diag = {0};

	if (geteuid() != 0)
		skip();
	write_file("imap.pass", "pw\n", 0640);
	snprintf(path, sizeof path, "%s/imap.pass", tmpdir);
	assert_int_equal(chown(path, 0, getegid()), 0);
	struct mf_config *cfg = load(ACCOUNT, &diag);
	assert_non_null(cfg);
	config_free(cfg);
	assert_int_equal(secret_read(path, NULL, &out, err, sizeof err), 0);
	assert_string_equal(out, "pw");
	free(out);

	assert_int_equal(chown(path, 0, 65534), 0); /* nogroup, not root's */
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(secret_read(path, NULL, &out, err, sizeof err), -1);
	assert_non_null(strstr(err, "is readable by group"));
	assert_non_null(strstr(err, "which root is not in (mode 0640)"));
	diag_free(&diag);
}

static void test_secret_read(void **state)
{
	char path[400], err[256], *out = NULL;
	snprintf(path, sizeof path, "%s/pw", tmpdir);

	write_file("pw", "hunter2\n", 0600);
	assert_int_equal(secret_read(path, NULL, &out, err, sizeof err), 0);
	assert_string_equal(out, "hunter2");
	free(out);

	write_file("pw", "hunter2\n", 0644);
	assert_int_equal(secret_read(path, NULL, &out, err, sizeof err), -1);
	assert_null(out);
	assert_non_null(strstr(err, "chmod 600"));

	assert_int_equal(secret_read(NULL, "echo  token-123 ", &out, err, sizeof err), 0);
	assert_string_equal(out, "token-123");
	free(out);

	/* no shell: metacharacters are plain arguments */
	assert_int_equal(secret_read(NULL, "echo a;b $HOME", &out, err, sizeof err), 0);
	assert_string_equal(out, "a;b $HOME");
	free(out);

	assert_int_equal(secret_read(NULL, "ls /nonexistent/mailfeed-test", &out, err, sizeof err),
			 -1);
	assert_non_null(strstr(err, "exited with status"));
	assert_non_null(strstr(err, "/nonexistent/mailfeed-test"));

	assert_int_equal(secret_read(NULL, "/nonexistent/tool", &out, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot run /nonexistent/tool"));

	assert_int_equal(secret_read(path, "echo x", &out, err, sizeof err), -1);
}

static void test_secret_read_raw(void **state)
{
	char path[400], err[256];
	unsigned char *out = NULL;
	size_t len = 0;
	snprintf(path, sizeof path, "%s/key", tmpdir);

	write_file("key", "0123456789abcdef0123456789abcdef\n", 0600);
	assert_int_equal(secret_read_raw(path, &out, &len, err, sizeof err), 0);
	assert_int_equal(len, 33);
	assert_memory_equal(out, "0123456789abcdef", 16);
	free(out);

	write_file("key", "short", 0600);
	assert_int_equal(secret_read_raw(path, &out, &len, err, sizeof err), -1);
	assert_non_null(strstr(err, "head -c 32 /dev/urandom"));
}

static void test_names(void **state)
{
	enum frequency f;
	assert_int_equal(frequency_parse("Weekly", &f), 0);
	assert_int_equal(f, FREQ_WEEKLY);
	assert_string_equal(frequency_name(f), "weekly");
	assert_int_equal(frequency_parse("each", &f), 0);
	assert_string_equal(frequency_name(f), "each");
	assert_int_equal(frequency_parse("hourly", &f), -1);
	assert_string_equal(after_action_name(AFTER_MOVE), "move");
	assert_string_equal(after_action_name(AFTER_KEEP), "keep");
}

static void test_missing_file(void **state)
{
	struct mf_diag diag = {0};
	assert_null(config_load("/nonexistent/mailfeed.conf", 0, &diag));
	assert_int_equal(diag.msgs.n, 1);
	assert_string_equal(diag.msgs.v[0],
			    "/nonexistent/mailfeed.conf: cannot open config: No such file or "
			    "directory");
	diag_free(&diag);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_syntax_problems, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_value_problems, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cross_section_problems, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secret_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secret_group_modes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secret_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_secret_read_raw, setup, teardown),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_missing_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
