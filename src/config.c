/* config.c — reading and validating mailfeed.conf.
 *
 * libinih does the INI syntax; Debian builds it without line numbers in the
 * handler, so the file is fed through our own line reader, which counts lines,
 * opens sections (also empty ones) and refuses over-long lines instead of
 * letting them be split.  Each section kind has a table of keys; values are
 * checked as they are read, cross-section rules (accounts, duplicate
 * mappings, backend keys, secrets) once the whole file is in.  Every problem
 * is collected as "FILE:LINE: message"; a config with any problem is freed. */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/config.h"
#include "mailfeed/log.h"
#include "mailfeed/loopback.h"
#include "mailfeed/mutf7.h"
#include "mailfeed/route.h"
#include "mailfeed/secret.h"

#define MAX_KEYS 32
/* RFC 5321 local part limit, minus "+" and the longest reply token. */
#define REPLY_LOCAL_MAX (64 - 1 - 40)

enum sect_kind {
	S_GATEWAY,
	S_FEED,
	S_ACCOUNT,
	S_MAILBOX,
	S_REPLIES,
	S_SMTP,
	S_DIGEST,
	S_SUBSCRIBER,
	S_UNKNOWN,
};

enum key_type {
	K_STR,
	K_PATH,	    /* relative paths are taken from the config file's directory */
	K_DURATION, /* long, >= min seconds */
	K_SIZE,	    /* long long, >= min bytes */
	K_BOOL,
	K_INT,	 /* int in [min, max] */
	K_ENUM,	 /* int, index into names */
	K_LIST,	 /* struct strlist; the key may repeat to continue a long list */
	K_ROUTE, /* struct strlist, one route.h rule per line; the key repeats */
	K_TAGS,	 /* like K_LIST, leading '#' dropped */
	K_AFTER, /* enum after_action at off, folder string at off2 */
	K_START, /* enum start_mode at off, seconds of since:DURATION at off2 */
	K_TIMEZONE,
	K_WEEKDAY,
	K_LOGLEVEL,
	K_REPLYADDR,
	K_LISTEN,
	K_EMAIL,
	K_PUBLICURL, /* https://host[:port][/path], no query, fit for a header */
	K_STATE,     /* a postgresql:// DSN as written, else a K_PATH */
};

struct key_def {
	const char *name;
	enum key_type type;
	size_t off;
	long long min, max;
	const char *const *names; /* K_ENUM: NULL-terminated, in enum order */
	size_t off2;
	const char *dflt; /* the default, written as in the file; NULL: none (0) */
};

static const char *const tls_names[] = {"implicit", "starttls", "none", NULL};
static const char *const backend_names[] = {"local", "chatter", "mattermost", "webhook", NULL};
static const char *const post_as_names[] = {"integration", "author", NULL};
static const char *const auth_names[] = {"auto", "login", "plain", "xoauth2", NULL};
static const char *const subscribers_names[] = {"config", "feed", NULL};
static const char *const log_format_names[] = {"text", "json", NULL}; /* enum log_format */
static const char *const freq_names[] = {"daily", "weekly", "each", "never", "mine", NULL};
static const char *const after_names[] = {"keep", "seen", "move", "delete", NULL};
static const char *const day_names[] = {"sunday",   "monday", "tuesday",  "wednesday",
					"thursday", "friday", "saturday", NULL};

#define G(f) offsetof(struct mf_gateway, f)
static const struct key_def gateway_keys[] = {
    {"state", K_STATE, G(state), 0, 0, NULL, 0, "/var/lib/mailfeed/state.db"},
    {"state_dsn_file", K_PATH, G(state_dsn_file), 0, 0, NULL, 0, NULL},
    {"reply_address", K_REPLYADDR, G(reply_address), 0, 0, NULL, 0, NULL},
    {"secret_file", K_PATH, G(secret_file), 0, 0, NULL, 0, NULL},
    {"max_message_size", K_SIZE, G(max_message_size), 1024, 0, NULL, 0, "25M"},
    {"thread_window", K_DURATION, G(thread_window), 0, 0, NULL, 0, "14d"},
    {"token_lifetime", K_DURATION, G(token_lifetime), 3600, 0, NULL, 0, "60d"},
    {"parse_timeout", K_DURATION, G(parse_timeout), 1, 0, NULL, 0, "20s"},
    {"parse_memory", K_SIZE, G(parse_memory), 32LL * 1024 * 1024, 0, NULL, 0, "512M"},
    {"trusted_authserv", K_STR, G(trusted_authserv), 0, 0, NULL, 0, NULL},
    {"keep_raw", K_DURATION, G(keep_raw), 0, 0, NULL, 0, "7d"},
    {"notice_max_per_hour", K_INT, G(notice_max_per_hour), 0, 100000, NULL, 0, "20"},
    {"log_level", K_LOGLEVEL, G(log_level), 0, 0, NULL, 0, "info"},
    {"log_format", K_ENUM, G(log_format), 0, 0, log_format_names, 0, NULL},
    {"metrics_listen", K_LISTEN, G(metrics_listen), 0, 0, NULL, 0, NULL},
    {"metrics_file", K_PATH, G(metrics_file), 0, 0, NULL, 0, NULL},
    {"lease_timeout", K_DURATION, G(lease_timeout), 2, 0, NULL, 0, "30s"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef G

#define F(f) offsetof(struct mf_feed, f)
static const struct key_def feed_keys[] = {
    {"backend", K_ENUM, F(backend), 0, 0, backend_names, 0, "local"},
    {"instance_url", K_STR, F(instance_url), 0, 0, NULL, 0, NULL},
    {"login_url", K_STR, F(login_url), 0, 0, NULL, 0, "https://login.salesforce.com"},
    {"api_version", K_STR, F(api_version), 0, 0, NULL, 0, "62.0"},
    {"client_id", K_STR, F(client_id), 0, 0, NULL, 0, NULL},
    {"private_key_file", K_PATH, F(private_key_file), 0, 0, NULL, 0, NULL},
    {"username", K_STR, F(username), 0, 0, NULL, 0, NULL},
    {"post_as", K_ENUM, F(post_as), 0, 0, post_as_names, 0, "integration"},
    {"ca_file", K_PATH, F(ca_file), 0, 0, NULL, 0, NULL},
    {"tls_verify", K_BOOL, F(tls_verify), 0, 0, NULL, 0, "yes"},
    {"url", K_STR, F(url), 0, 0, NULL, 0, NULL},
    {"token_file", K_PATH, F(token_file), 0, 0, NULL, 0, NULL},
    {"secret_file", K_PATH, F(secret_file), 0, 0, NULL, 0, NULL},
    {"dir", K_PATH, F(dir), 0, 0, NULL, 0, NULL},
    {"concurrency", K_INT, F(concurrency), 1, 64, NULL, 0, "4"},
    {"timeout", K_DURATION, F(timeout), 1, 0, NULL, 0, "30s"},
    {"connect_timeout", K_DURATION, F(connect_timeout), 1, 0, NULL, 0, "10s"},
    {"max_retry_delay", K_DURATION, F(max_retry_delay), 1, 0, NULL, 0, "1h"},
    {"dead_after", K_DURATION, F(dead_after), 60, 0, NULL, 0, "2d"},
    {"claim_timeout", K_DURATION, F(claim_timeout), 2, 3600, NULL, 0, "5m"},
    {"max_file_size", K_SIZE, F(max_file_size), 0, 0, NULL, 0, "25M"},
    {"max_files", K_INT, F(max_files), 0, 100, NULL, 0, "10"},
    {"mentions", K_BOOL, F(mentions), 0, 0, NULL, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef F

#define A(f) offsetof(struct mf_account, f)
static const struct key_def account_keys[] = {
    {"host", K_STR, A(host), 0, 0, NULL, 0, NULL},
    {"port", K_INT, A(port), 1, 65535, NULL, 0, NULL},
    {"tls", K_ENUM, A(tls), 0, 0, tls_names, 0, "implicit"},
    {"tls_verify", K_BOOL, A(tls_verify), 0, 0, NULL, 0, "yes"},
    {"username", K_STR, A(username), 0, 0, NULL, 0, NULL},
    {"password_file", K_PATH, A(password_file), 0, 0, NULL, 0, NULL},
    {"oauth2_token_file", K_PATH, A(oauth2_token_file), 0, 0, NULL, 0, NULL},
    {"oauth2_token_command", K_STR, A(oauth2_token_command), 0, 0, NULL, 0, NULL},
    {"auth", K_ENUM, A(auth), 0, 0, auth_names, 0, "auto"},
    {"ca_file", K_PATH, A(ca_file), 0, 0, NULL, 0, NULL},
    {"timeout", K_DURATION, A(timeout), 1, 0, NULL, 0, "60s"},
    {"poll_interval", K_DURATION, A(poll_interval), 1, 0, NULL, 0, "30s"},
    {"idle_restart", K_DURATION, A(idle_restart), 60, 29 * 60, NULL, 0, "25m"},
    {"max_connections", K_INT, A(max_connections), 1, 100, NULL, 0, "4"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef A

#define M(f) offsetof(struct mf_mailbox, f)
static const struct key_def mailbox_keys[] = {
    {"account", K_STR, M(account), 0, 0, NULL, 0, NULL},
    {"folder", K_STR, M(folder), 0, 0, NULL, 0, NULL},
    {"group", K_STR, M(group), 0, 0, NULL, 0, NULL},
    {"hashtags", K_TAGS, M(hashtags), 0, 0, NULL, 0, NULL},
    {"after", K_AFTER, M(after), 0, 0, NULL, M(after_folder), "seen"},
    {"allow_senders", K_LIST, M(allow_senders), 0, 0, NULL, 0, NULL},
    {"route", K_ROUTE, M(routes), 0, 0, NULL, 0, NULL},
    {"accept_bulk", K_BOOL, M(accept_bulk), 0, 0, NULL, 0, NULL},
    {"attach_original", K_BOOL, M(attach_original), 0, 0, NULL, 0, NULL},
    {"start", K_START, M(start), 0, 0, NULL, M(start_since), NULL},
    {"allow_channel_mentions", K_BOOL, M(allow_channel_mentions), 0, 0, NULL, 0, NULL},
    {"allow_remote_images", K_BOOL, M(allow_remote_images), 0, 0, NULL, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef M

#define R(f) offsetof(struct mf_replies, f)
static const struct key_def replies_keys[] = {
    {"account", K_STR, R(account), 0, 0, NULL, 0, NULL},
    {"folder", K_STR, R(folder), 0, 0, NULL, 0, NULL},
    {"after", K_AFTER, R(after), 0, 0, NULL, R(after_folder), "seen"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef R

#define SM(f) offsetof(struct mf_smtp, f)
static const struct key_def smtp_keys[] = {
    {"url", K_STR, SM(url), 0, 0, NULL, 0, NULL},
    {"username", K_STR, SM(username), 0, 0, NULL, 0, NULL},
    {"password_file", K_PATH, SM(password_file), 0, 0, NULL, 0, NULL},
    {"from", K_STR, SM(from), 0, 0, NULL, 0, NULL},
    {"ca_file", K_PATH, SM(ca_file), 0, 0, NULL, 0, NULL},
    {"tls_verify", K_BOOL, SM(tls_verify), 0, 0, NULL, 0, "yes"},
    {"timeout", K_DURATION, SM(timeout), 1, 0, NULL, 0, "60s"},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef SM

#define D(f) offsetof(struct mf_digest, f)
static const struct key_def digest_keys[] = {
    {"hour", K_INT, D(hour), 0, 23, NULL, 0, "7"},
    {"timezone", K_TIMEZONE, D(timezone), 0, 0, NULL, 0, "UTC"},
    {"weekly_day", K_WEEKDAY, D(weekly_day), 0, 0, NULL, 0, "monday"},
    {"max_items", K_INT, D(max_items), 1, 1000, NULL, 0, "50"},
    {"subscribers", K_ENUM, D(subscribers), 0, 0, subscribers_names, 0, NULL},
    {"public_url", K_PUBLICURL, D(public_url), 0, 0, NULL, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef D

#define SU(f) offsetof(struct mf_subscriber, f)
static const struct key_def subscriber_keys[] = {
    {"groups", K_LIST, SU(groups), 0, 0, NULL, 0, NULL},
    {"frequency", K_ENUM, SU(frequency), 0, 0, freq_names, 0, "daily"},
    {"hour", K_INT, SU(hour), 0, 23, NULL, 0, NULL},
    {"timezone", K_TIMEZONE, SU(timezone), 0, 0, NULL, 0, NULL},
    {NULL, 0, 0, 0, 0, NULL, 0, NULL},
};
#undef SU

static const struct {
	const char *word;
	int named; /* 1: [word NAME] */
	const struct key_def *keys;
} kinds[] = {
    [S_GATEWAY] = {"gateway", 0, gateway_keys}, [S_FEED] = {"feed", 0, feed_keys},
    [S_ACCOUNT] = {"account", 1, account_keys}, [S_MAILBOX] = {"mailbox", 1, mailbox_keys},
    [S_REPLIES] = {"replies", 0, replies_keys}, [S_SMTP] = {"smtp", 0, smtp_keys},
    [S_DIGEST] = {"digest", 0, digest_keys},	[S_SUBSCRIBER] = {"subscriber", 1, subscriber_keys},
};

struct sect {
	enum sect_kind kind;
	size_t idx; /* into the config's array for named kinds */
	int line;
	char *title; /* "account staff", for messages */
	int key_line[MAX_KEYS];
};

/* A problem waiting to be reported; sorted by line when loading ends. */
struct problem {
	int line;
	size_t seq;
	char *msg;
};

struct loader {
	struct mf_config *cfg;
	struct problem *problems;
	size_t n_problems;
	struct mf_diag *diag;
	const char *path;
	char *dir;
	FILE *fp;
	char *linebuf;
	size_t linecap;
	int lineno;
	struct sect *sects;
	size_t n_sects;
	long cur;		  /* index into sects, -1 before the first section */
	int singleton[S_UNKNOWN]; /* index + 1 of the singleton section seen */
};

static void diag_add(struct loader *l, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void diag_add(struct loader *l, int line, const char *fmt, ...)
{
	struct buf b;
	va_list ap;
	buf_init(&b);
	if (line > 0)
		buf_printf(&b, "%s:%d: ", l->path, line);
	else
		buf_printf(&b, "%s: ", l->path);
	va_start(ap, fmt);
	char *msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	buf_puts(&b, msg ? msg : "out of memory");
	free(msg);
	l->problems = xrealloc(l->problems, (l->n_problems + 1) * sizeof *l->problems);
	l->problems[l->n_problems] =
	    (struct problem){.line = line, .seq = l->n_problems, .msg = buf_steal(&b)};
	l->n_problems++;
}

static int problem_cmp(const void *a, const void *b)
{
	const struct problem *x = a, *y = b;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Moves the problems into diag, in file order. */
static void problems_flush(struct loader *l)
{
	qsort(l->problems, l->n_problems, sizeof *l->problems, problem_cmp);
	for (size_t i = 0; i < l->n_problems; i++) {
		strlist_add(&l->diag->msgs, l->problems[i].msg);
		free(l->problems[i].msg);
	}
	free(l->problems);
	l->problems = NULL;
	l->n_problems = 0;
}

static void *sect_obj(struct loader *l, const struct sect *s)
{
	struct mf_config *c = l->cfg;
	switch (s->kind) {
	case S_GATEWAY:
		return &c->gateway;
	case S_FEED:
		return &c->feed;
	case S_ACCOUNT:
		return &c->accounts[s->idx];
	case S_MAILBOX:
		return &c->mailboxes[s->idx];
	case S_REPLIES:
		return &c->replies;
	case S_SMTP:
		return &c->smtp;
	case S_DIGEST:
		return &c->digest;
	case S_SUBSCRIBER:
		return &c->subscribers[s->idx];
	default:
		return NULL;
	}
}

static int key_index(enum sect_kind kind, const char *name)
{
	const struct key_def *k = kinds[kind].keys;
	for (int i = 0; k[i].name; i++)
		if (strcmp(k[i].name, name) == 0)
			return i;
	return -1;
}

/* Line where KEY was set in section s, or the section's own line. */
static int key_line(const struct sect *s, const char *key)
{
	int i = key_index(s->kind, key);
	return i >= 0 && s->key_line[i] ? s->key_line[i] : s->line;
}

static const struct sect *find_sect(struct loader *l, enum sect_kind kind, size_t idx)
{
	for (size_t i = 0; i < l->n_sects; i++)
		if (l->sects[i].kind == kind && (kinds[kind].named == 0 || l->sects[i].idx == idx))
			return &l->sects[i];
	return NULL;
}

static int valid_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr("._@+-", *s))
			return 0;
	return 1;
}

static int key_set(struct loader *l, const struct key_def *k, void *obj, const char *v, char *err,
		   size_t errlen);

/* Gives each key of a section that has a default in its row that value,
 * through the key's own parser: the defaults live in the rows only. */
static void sect_defaults(struct loader *l, enum sect_kind kind, void *obj)
{
	char err[256];
	for (const struct key_def *k = kinds[kind].keys; k->name; k++) {
		if (k->dflt && key_set(l, k, obj, k->dflt, err, sizeof err) < 0) {
			char q[300];
			log_error("config.bad_default key=%s error=%s", k->name,
				  log_quote(err, q, sizeof q));
			abort(); /* a row its own parser refuses: test_config catches it */
		}
	}
}

static void defaults_config(struct loader *l)
{
	static const enum sect_kind once[] = {S_GATEWAY, S_FEED, S_REPLIES, S_SMTP, S_DIGEST};
	for (size_t i = 0; i < sizeof once / sizeof once[0]; i++) {
		struct sect s = {.kind = once[i]};
		sect_defaults(l, once[i], sect_obj(l, &s));
	}
}

/* The kind of section [word name], or S_UNKNOWN after saying what is
 * wrong with it (unknown, name missing or not allowed, bad name, duplicate). */
static enum sect_kind sect_check(struct loader *l, const char *word, const char *name,
				 const char *title, int line)
{
	enum sect_kind kind = S_UNKNOWN;

	for (int k = 0; k < S_UNKNOWN; k++)
		if (strcmp(word, kinds[k].word) == 0)
			kind = (enum sect_kind)k;
	if (kind == S_UNKNOWN) {
		diag_add(l, line,
			 "unknown section [%s]; valid sections: [gateway], [feed], [account NAME], "
			 "[mailbox NAME], [replies], [smtp], [digest], [subscriber EMAIL]",
			 title);
		return S_UNKNOWN;
	}
	if (kinds[kind].named && !*name) {
		diag_add(l, line, "section [%s] needs a name, e.g. [%s %s]", word, word,
			 kind == S_SUBSCRIBER ? "alice@example.org" : "staff");
		return S_UNKNOWN;
	}
	if (!kinds[kind].named && *name) {
		diag_add(l, line, "section [%s] takes no name; write [%s]", title, word);
		return S_UNKNOWN;
	}
	if (kind == S_SUBSCRIBER && !email_address_valid(name)) {
		diag_add(l, line, "[%s]: '%s' is not an email address", title, name);
		return S_UNKNOWN;
	}
	if (kinds[kind].named && kind != S_SUBSCRIBER && !valid_name(name)) {
		diag_add(l, line,
			 "[%s]: names may only use letters, digits and . _ @ + - (no spaces or "
			 "commas)",
			 title);
		return S_UNKNOWN;
	}
	for (size_t i = 0; i < l->n_sects; i++) {
		if (strcasecmp(l->sects[i].title, title) == 0 && l->sects[i].kind == kind) {
			diag_add(l, line, "duplicate section [%s] (first at line %d)", title,
				 l->sects[i].line);
			return S_UNKNOWN;
		}
	}
	return kind;
}

/* Adds the config entry a new section fills; its index into s->idx. */
static void sect_add_entry(struct loader *l, struct sect *s, const char *name, int line)
{
	struct mf_config *c = l->cfg;
	switch (s->kind) {
	case S_ACCOUNT:
		c->accounts = xrealloc(c->accounts, (c->n_accounts + 1) * sizeof *c->accounts);
		s->idx = c->n_accounts++;
		memset(&c->accounts[s->idx], 0, sizeof c->accounts[s->idx]);
		sect_defaults(l, S_ACCOUNT, &c->accounts[s->idx]);
		c->accounts[s->idx].name = xstrdup(name);
		c->accounts[s->idx].line = line;
		break;
	case S_MAILBOX:
		c->mailboxes = xrealloc(c->mailboxes, (c->n_mailboxes + 1) * sizeof *c->mailboxes);
		s->idx = c->n_mailboxes++;
		memset(&c->mailboxes[s->idx], 0, sizeof c->mailboxes[s->idx]);
		sect_defaults(l, S_MAILBOX, &c->mailboxes[s->idx]);
		c->mailboxes[s->idx].name = xstrdup(name);
		c->mailboxes[s->idx].line = line;
		break;
	case S_SUBSCRIBER:
		c->subscribers =
		    xrealloc(c->subscribers, (c->n_subscribers + 1) * sizeof *c->subscribers);
		s->idx = c->n_subscribers++;
		memset(&c->subscribers[s->idx], 0, sizeof c->subscribers[s->idx]);
		sect_defaults(l, S_SUBSCRIBER, &c->subscribers[s->idx]);
		c->subscribers[s->idx].hour = -1; /* [digest] hour */
		c->subscribers[s->idx].email = xstrdup(name);
		str_lower(c->subscribers[s->idx].email);
		c->subscribers[s->idx].line = line;
		break;
	case S_REPLIES:
		c->replies.present = 1;
		c->replies.line = line;
		break;
	case S_SMTP:
		c->smtp.present = 1;
		break;
	default:
		break;
	}
}

static void sect_open(struct loader *l, char *text, int line)
{
	char *word = str_trim(text), *name = word;
	struct sect s = {.kind = S_UNKNOWN, .line = line};

	while (*name && *name != ' ' && *name != '\t')
		name++;
	if (*name)
		*name++ = 0;
	name = str_trim(name);
	s.title = *name ? xasprintf("%s %s", word, name) : xstrdup(word);
	s.kind = sect_check(l, word, name, s.title, line);
	sect_add_entry(l, &s, name, line);
	l->sects = xrealloc(l->sects, (l->n_sects + 1) * sizeof *l->sects);
	l->sects[l->n_sects] = s;
	l->cur = (long)l->n_sects++;
}

/* fgets-like reader for inih: counts lines and opens sections itself. */
static char *loader_read(char *str, int num, void *stream)
{
	struct loader *l = stream;
	ssize_t n = getline(&l->linebuf, &l->linecap, l->fp);
	char *p;

	if (n < 0)
		return NULL;
	l->lineno++;
	p = l->linebuf;
	if (l->lineno == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
		p += 3;
		n -= 3;
	}
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
		p[--n] = 0;
	if (memchr(p, 0, (size_t)n)) {
		diag_add(l, l->lineno, "line contains a NUL byte");
		p[0] = 0;
		n = 0;
	}
	if (n > num - 3) {
		diag_add(l, l->lineno,
			 "line too long (%zd characters, at most %d); a list key such as "
			 "allow_senders may be repeated to continue its list",
			 n, num - 3);
		p[0] = 0;
		n = 0;
	}
	char *t = p;
	while (*t == ' ' || *t == '\t')
		t++;
	if (*t == '[') {
		char *end = strchr(t, ']');
		if (!end) {
			diag_add(l, l->lineno, "section header has no closing ']'");
			l->cur = -2;
			p[0] = 0;
			n = 0;
		} else {
			char *title = xstrndup(t + 1, (size_t)(end - t - 1));
			sect_open(l, title, l->lineno);
			free(title);
		}
	}
	memcpy(str, p, (size_t)n);
	str[n] = '\n';
	str[n + 1] = 0;
	return str;
}

static char *resolve_path(struct loader *l, const char *v)
{
	if (v[0] == '/' || !l->dir)
		return xstrdup(v);
	return xasprintf("%s/%s", l->dir, v);
}

static int timezone_exists(const char *tz)
{
	struct stat st;
	if (strcmp(tz, "UTC") == 0)
		return 1;
	if (tz[0] == '/' || strstr(tz, "..") || strlen(tz) > 64)
		return 0;
	char *p = xasprintf("/usr/share/zoneinfo/%s", tz);
	int ok = stat(p, &st) == 0 && S_ISREG(st.st_mode);
	free(p);
	return ok;
}

static void list_add_items(struct strlist *list, const char *v, int tags)
{
	struct strlist tmp = {0};
	strlist_split(&tmp, v);
	for (size_t i = 0; i < tmp.n; i++) {
		const char *item = tmp.v[i];
		if (tags)
			while (*item == '#')
				item++;
		if (*item && !strlist_has_ci(list, item))
			strlist_add(list, item);
	}
	strlist_free(&tmp);
}

/* Stores v into the field k of obj.  Returns 0, or -1 with err filled. */
/* The host part (first hlen bytes) of a HOST:PORT listen address: an IPv4
 * or bracketed IPv6 loopback address, or "localhost".  The metrics endpoint
 * has no authentication, so nothing else is accepted.  Pure: no lookup, no
 * socket; the listener itself binds when the daemon starts. */
static int listen_host_check(const char *v, size_t hlen, char *err, size_t errlen)
{
	char host[64];
	unsigned char addr[sizeof(struct in6_addr)];
	int bracket = v[0] == '[';

	if (bracket && (hlen < 2 || v[hlen - 1] != ']')) {
		snprintf(err, errlen, "write an IPv6 address as [::1]:PORT");
		return -1;
	}
	if (!bracket && memchr(v, ':', hlen)) {
		snprintf(err, errlen, "must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464");
		return -1;
	}
	if (bracket) {
		v++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof host) {
		snprintf(err, errlen, "the host part is missing or too long");
		return -1;
	}
	memcpy(host, v, hlen);
	host[hlen] = 0;
	if (!bracket && strcmp(host, "localhost") == 0)
		return 0;
	if (!bracket && inet_pton(AF_INET, host, addr) == 1) {
		if (addr[0] == 127)
			return 0;
	} else if (bracket && inet_pton(AF_INET6, host, addr) == 1) {
		if (IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr))
			return 0;
	} else {
		snprintf(err, errlen, "\"%s\" is not an IP address; use 127.0.0.1 or [::1]", host);
		return -1;
	}
	snprintf(err, errlen,
		 "is not a loopback address: the metrics endpoint has no authentication, so it "
		 "only listens on 127.0.0.0/8 or [::1] (put a proxy in front of it, or use "
		 "metrics_file, to publish the numbers further)");
	return -1;
}

/* One parser per key type, in key_parsers[] below: each reads the text v
 * of key k into its field of obj, or says in err why it cannot (-1). */
#define KEY_PARSER(name)                                                                           \
	static int name(struct loader *l, const struct key_def *k, void *obj, const char *v,       \
			char *err, size_t errlen)
#define FIELD(type) ((type *)(void *)((char *)obj + k->off))

/* K_WEEKDAY: 0 = sunday; a day's name or its first three letters. */
KEY_PARSER(parse_weekday)
{
	for (int i = 0; day_names[i]; i++) {
		if (strcasecmp(v, day_names[i]) == 0 ||
		    (strlen(v) == 3 && strncasecmp(v, day_names[i], 3) == 0)) {
			*FIELD(int) = i;
			return 0;
		}
	}
	snprintf(err, errlen, "must be a day of the week (sunday .. saturday)");
	return -1;
}

/* K_ENUM: the index into k->names. */
KEY_PARSER(parse_enum)
{
	for (int i = 0; k->names[i]; i++) {
		if (strcasecmp(v, k->names[i]) == 0) {
			*FIELD(int) = i;
			return 0;
		}
	}
	struct buf b;
	buf_init(&b);
	for (int i = 0; k->names[i]; i++)
		buf_printf(&b, "%s%s", i ? " | " : "", k->names[i]);
	snprintf(err, errlen, "must be one of: %s", b.data);
	buf_free(&b);
	return -1;
}

/* K_DURATION: seconds in a long, at least min (at most max when set). */
KEY_PARSER(parse_duration_key)
{
	long dur;
	if (parse_duration(v, &dur) < 0) {
		snprintf(err, errlen, "is not a duration (e.g. 30s, 5m, 2h, 1d)");
		return -1;
	}
	if (dur < k->min || (k->max && dur > k->max)) {
		if (k->max)
			snprintf(err, errlen, "must be between %llds and %llds", k->min, k->max);
		else
			snprintf(err, errlen, "must be at least %llds", k->min);
		return -1;
	}
	*FIELD(long) = dur;
	return 0;
}

/* K_SIZE: bytes in a long long, at least min. */
KEY_PARSER(parse_size_key)
{
	long long size;
	if (parse_size(v, &size) < 0) {
		snprintf(err, errlen, "is not a size (e.g. 512K, 25M, 1G)");
		return -1;
	}
	if (size < k->min) {
		snprintf(err, errlen, "must be at least %lld bytes", k->min);
		return -1;
	}
	*FIELD(long long) = size;
	return 0;
}

KEY_PARSER(parse_bool_key)
{
	if (parse_bool(v, FIELD(int)) < 0) {
		snprintf(err, errlen, "must be yes or no");
		return -1;
	}
	return 0;
}

/* K_INT: an int in [min, max]. */
KEY_PARSER(parse_int)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < k->min || n > k->max) {
		snprintf(err, errlen, "must be a whole number from %lld to %lld", k->min, k->max);
		return -1;
	}
	*FIELD(int) = (int)n;
	return 0;
}

/* K_AFTER: the action in field, the folder of move:FOLDER at off2. */
KEY_PARSER(parse_after)
{
	char **folder = (char **)(void *)((char *)obj + k->off2);
	enum after_action a;
	if (strncasecmp(v, "move:", 5) == 0) {
		const char *f = v + 5;
		while (*f == ' ')
			f++;
		if (!*f) {
			snprintf(err, errlen, "move needs a folder: move:Archive");
			return -1;
		}
		free(*folder);
		*folder = xstrdup(f);
		a = AFTER_MOVE;
	} else if (strcasecmp(v, "keep") == 0) {
		a = AFTER_KEEP;
	} else if (strcasecmp(v, "seen") == 0) {
		a = AFTER_SEEN;
	} else if (strcasecmp(v, "delete") == 0) {
		a = AFTER_DELETE;
	} else {
		snprintf(err, errlen, "must be keep, seen, move:FOLDER or delete");
		return -1;
	}
	if (a != AFTER_MOVE) {
		free(*folder);
		*folder = NULL;
	}
	*FIELD(int) = (int)a;
	return 0;
}

/* K_START: new, all or since:DURATION (the duration at off2). */
KEY_PARSER(parse_start)
{
	long *since = (long *)(void *)((char *)obj + k->off2);
	if (strcasecmp(v, "new") == 0) {
		*FIELD(int) = START_NEW;
	} else if (strcasecmp(v, "all") == 0) {
		*FIELD(int) = START_ALL;
	} else if (strncasecmp(v, "since:", 6) == 0 && parse_duration(v + 6, since) == 0 &&
		   *since > 0) {
		*FIELD(int) = START_SINCE;
	} else {
		snprintf(err, errlen, "must be new, all or since:DURATION (e.g. since:7d)");
		return -1;
	}
	return 0;
}

/* K_REPLYADDR: local@domain whose local part leaves room for +TOKEN. */
static int reply_address_check(const char *v, char *err, size_t errlen)
{
	const char *at = strrchr(v, '@');
	if (!email_address_valid(v) || !at) {
		snprintf(err, errlen, "must be an address local@domain, e.g. feed@example.org");
		return -1;
	}
	if (memchr(v, '+', (size_t)(at - v))) {
		snprintf(err, errlen,
			 "must not contain '+': mailfeed adds +TOKEN to the local part");
		return -1;
	}
	if (at - v > REPLY_LOCAL_MAX) {
		snprintf(err, errlen,
			 "local part is %d characters; at most %d leave room for +TOKEN within "
			 "the 64 allowed",
			 (int)(at - v), REPLY_LOCAL_MAX);
		return -1;
	}
	return 0;
}

/* K_LISTEN: HOST:PORT on a loopback address. */
static int listen_check(const char *v, char *err, size_t errlen)
{
	const char *colon = strrchr(v, ':');
	char *end;
	long port = colon ? strtol(colon + 1, &end, 10) : 0;
	if (!colon || colon == v || !colon[1] || *end || port < 1 || port > 65535) {
		snprintf(err, errlen, "must be HOST:PORT, e.g. 127.0.0.1:9464");
		return -1;
	}
	return listen_host_check(v, (size_t)(colon - v), err, errlen);
}

/* [digest] public_url: the https address under which a reverse proxy
 * forwards /unsubscribe/ to the metrics listener.  It goes into a header
 * between angle brackets, so nothing there may end or split it. */
static int public_url_check(const char *v, char *err, size_t errlen)
{
	if (strncasecmp(v, "https://", 8) != 0 || !v[8] || v[8] == '/' || v[8] == ':') {
		snprintf(err, errlen,
			 "must be an https:// address with a host, e.g. "
			 "https://mail.example.org/mailfeed");
		return -1;
	}
	if (strlen(v) > 200) {
		snprintf(err, errlen, "is longer than 200 characters");
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p <= ' ' || *p >= 0x7f || strchr("<>,\\\"?#'`{}|^[]", *p)) {
			snprintf(err, errlen,
				 "may hold only a scheme, host, port and path: no spaces, "
				 "query (?), fragment (#), quotes, commas or angle brackets");
			return -1;
		}
	}
	return 0;
}

/* K_TIMEZONE: a zone under /usr/share/zoneinfo. */
static int timezone_check(const char *v, char *err, size_t errlen)
{
	if (timezone_exists(v))
		return 0;
	snprintf(err, errlen,
		 "names no time zone under /usr/share/zoneinfo (e.g. UTC, Europe/Berlin, "
		 "America/New_York)");
	return -1;
}

static int log_level_check(const char *v, char *err, size_t errlen)
{
	enum log_level lvl;
	if (log_level_parse(v, &lvl) == 0)
		return 0;
	snprintf(err, errlen, "must be debug, info, notice, warn or error");
	return -1;
}

static int email_check(const char *v, char *err, size_t errlen)
{
	if (email_address_valid(v))
		return 0;
	snprintf(err, errlen, "is not an email address");
	return -1;
}

/* The types kept as the text written, once it passed its check. */
static int key_set_text(const struct key_def *k, void *obj, const char *v, char *err, size_t errlen,
			int (*check)(const char *v, char *err, size_t errlen))
{
	if (check && check(v, err, errlen) < 0)
		return -1;
	free(*FIELD(char *));
	*FIELD(char *) = xstrdup(v);
	return 0;
}

KEY_PARSER(parse_str) { return key_set_text(k, obj, v, err, errlen, NULL); }
KEY_PARSER(parse_timezone) { return key_set_text(k, obj, v, err, errlen, timezone_check); }
KEY_PARSER(parse_log_level) { return key_set_text(k, obj, v, err, errlen, log_level_check); }
KEY_PARSER(parse_reply_address)
{
	return key_set_text(k, obj, v, err, errlen, reply_address_check);
}
KEY_PARSER(parse_listen) { return key_set_text(k, obj, v, err, errlen, listen_check); }
KEY_PARSER(parse_email) { return key_set_text(k, obj, v, err, errlen, email_check); }
KEY_PARSER(parse_public_url) { return key_set_text(k, obj, v, err, errlen, public_url_check); }

/* K_PATH: relative to the directory of the configuration file. */
KEY_PARSER(parse_path)
{
	free(*FIELD(char *));
	*FIELD(char *) = resolve_path(l, v);
	return 0;
}

/* K_STATE: a PostgreSQL DSN is kept as written; a path is a K_PATH. */
KEY_PARSER(parse_state)
{
	if (!is_pg_dsn(v))
		return parse_path(l, k, obj, v, err, errlen);
	free(*FIELD(char *));
	*FIELD(char *) = xstrdup(v);
	return 0;
}

/* K_LIST and K_TAGS: comma-separated items; a repeated key adds more. */
KEY_PARSER(parse_list)
{
	struct strlist *list = FIELD(struct strlist);
	size_t before = list->n;
	list_add_items(list, v, k->type == K_TAGS);
	if (list->n == before && before == 0) {
		snprintf(err, errlen, "needs at least one item (comma-separated)");
		return -1;
	}
	return 0;
}

/* K_ROUTE: one rule, checked by route.c, kept as written. */
KEY_PARSER(parse_route)
{
	struct route r;
	if (route_parse(v, &r, err, errlen) < 0)
		return -1;
	route_free(&r);
	strlist_add(FIELD(struct strlist), v);
	return 0;
}

#undef FIELD
#undef KEY_PARSER

typedef int (*key_parser)(struct loader *l, const struct key_def *k, void *obj, const char *v,
			  char *err, size_t errlen);
static const key_parser key_parsers[] = {
    [K_STR] = parse_str,
    [K_PATH] = parse_path,
    [K_STATE] = parse_state,
    [K_DURATION] = parse_duration_key,
    [K_SIZE] = parse_size_key,
    [K_BOOL] = parse_bool_key,
    [K_INT] = parse_int,
    [K_ENUM] = parse_enum,
    [K_LIST] = parse_list,
    [K_ROUTE] = parse_route,
    [K_TAGS] = parse_list,
    [K_AFTER] = parse_after,
    [K_START] = parse_start,
    [K_TIMEZONE] = parse_timezone,
    [K_WEEKDAY] = parse_weekday,
    [K_LOGLEVEL] = parse_log_level,
    [K_REPLYADDR] = parse_reply_address,
    [K_LISTEN] = parse_listen,
    [K_EMAIL] = parse_email,
    [K_PUBLICURL] = parse_public_url,
};

static int key_set(struct loader *l, const struct key_def *k, void *obj, const char *v, char *err,
		   size_t errlen)
{
	if ((size_t)k->type >= sizeof key_parsers / sizeof key_parsers[0] ||
	    !key_parsers[k->type]) {
		snprintf(err, errlen, "cannot be set");
		return -1;
	}
	return key_parsers[k->type](l, k, obj, v, err, errlen);
}

static int loader_handle(void *user, const char *section, const char *name, const char *value)
{
	struct loader *l = user;
	char err[256];

	(void)section;
	if (l->cur == -2)
		return 1; /* keys under a broken header: already reported */
	if (l->cur < 0) {
		diag_add(l, l->lineno,
			 "'%s' is outside any section; put it under [gateway] or "
			 "another section",
			 name);
		return 1;
	}
	struct sect *s = &l->sects[l->cur];
	if (s->kind == S_UNKNOWN)
		return 1;
	if (!value) {
		diag_add(l, l->lineno, "expected 'key = value', found '%s'", name);
		return 1;
	}
	int ki = key_index(s->kind, name);
	if (ki < 0) {
		struct buf b;
		buf_init(&b);
		for (const struct key_def *k = kinds[s->kind].keys; k->name; k++)
			buf_printf(&b, "%s%s", k == kinds[s->kind].keys ? "" : ", ", k->name);
		diag_add(l, l->lineno, "unknown key '%s' in [%s]; valid keys: %s", name, s->title,
			 b.data);
		buf_free(&b);
		return 1;
	}
	const struct key_def *k = &kinds[s->kind].keys[ki];
	int is_list = k->type == K_LIST || k->type == K_TAGS || k->type == K_ROUTE;
	if (s->key_line[ki] && !is_list) {
		diag_add(l, l->lineno, "'%s' is set twice in [%s] (first at line %d)", name,
			 s->title, s->key_line[ki]);
		return 1;
	}
	if (!*value) {
		diag_add(l, l->lineno, "'%s' has an empty value; remove the line or give a value",
			 name);
		return 1;
	}
	size_t vlen = strlen(value);
	if (vlen >= 2 && (value[0] == '"' || value[0] == '\'') && value[vlen - 1] == value[0]) {
		/* INI values are taken as written: the quotes would be part of it */
		diag_add(l, l->lineno, "%s = %s: values are written without quotes (%s = %.*s)",
			 name, value, name, (int)(vlen - 2), value + 1);
		return 1;
	}
	if (key_set(l, k, sect_obj(l, s), value, err, sizeof err) < 0) {
		char q[128];
		diag_add(l, l->lineno, "%s = %s: %s", name, log_quote(value, q, sizeof q), err);
		return 1;
	}
	if (!s->key_line[ki])
		s->key_line[ki] = l->lineno;
	return 1;
}

static int host_is_loopback(const char *h) { return host_loopback_only(h); }

/* Folder names travel as modified UTF-7, which only UTF-8 can become. */
static int utf8_folder_ok(const char *name)
{
	char *wire = mutf7_encode(name);
	int ok = wire != NULL;
	free(wire);
	return ok;
}

/* Host part of an http(s)/smtp(s) URL into out. */
static void url_host(const char *url, char *out, size_t outlen)
{
	const char *p = strstr(url, "://");
	size_t n = 0;
	p = p ? p + 3 : url;
	const char *at = strpbrk(p, "@/");
	if (at && *at == '@')
		p = at + 1;
	if (*p == '[') {
		const char *e = strchr(p, ']');
		n = e ? (size_t)(e - p + 1) : strlen(p);
	} else {
		n = strcspn(p, ":/?#");
	}
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, p, n);
	out[n] = 0;
}

static void check_url(struct loader *l, const struct sect *s, const char *key, const char *url)
{
	char host[256];
	if (!url)
		return;
	int http = strncasecmp(url, "http://", 7) == 0;
	if (!http && strncasecmp(url, "https://", 8) != 0) {
		diag_add(l, key_line(s, key),
			 "%s must start with https:// (or http:// on loopback)", key);
		return;
	}
	url_host(url, host, sizeof host);
	if (!*host)
		diag_add(l, key_line(s, key), "%s has no host", key);
	else if (http && !host_is_loopback(host))
		diag_add(l, key_line(s, key),
			 "%s uses plain http to %s; use https:// (plain http is only for "
			 "loopback)",
			 key, host);
}

static void check_secret(struct loader *l, const struct sect *s, const char *key, const char *path,
			 size_t min_size, int read_it)
{
	struct stat st;
	char err[512];

	if (!path || read_it < 0)
		return;
	int line = key_line(s, key);
	if (stat(path, &st) < 0) {
		diag_add(l, line, "%s: cannot use %s: %s", key, path, strerror(errno));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		diag_add(l, line, "%s: %s is not a regular file", key, path);
		return;
	}
	if (secret_mode_check(path, &st, err, sizeof err) < 0) {
		diag_add(l, line, "%s: %s", key, err);
		return;
	}
	if (min_size && (size_t)st.st_size < min_size) {
		diag_add(l, line,
			 "%s: %s holds %lld bytes, needs at least %zu random bytes; create it "
			 "with: head -c 32 /dev/urandom > %s",
			 key, path, (long long)st.st_size, min_size, path);
		return;
	}
	if (!read_it)
		return;
	if (min_size) {
		unsigned char *raw = NULL;
		size_t len;
		if (secret_read_raw(path, &raw, &len, err, sizeof err) < 0)
			diag_add(l, line, "%s: %s", key, err);
		free(raw);
		return;
	}
	char *out = NULL;
	if (secret_read(path, NULL, &out, err, sizeof err) < 0)
		diag_add(l, line, "%s: %s", key, err);
	else if (!*out)
		diag_add(l, line, "%s: %s is empty", key, path);
	free(out);
}

static void check_readable(struct loader *l, const struct sect *s, const char *key,
			   const char *path)
{
	if (path && access(path, R_OK) < 0)
		diag_add(l, key_line(s, key), "%s: cannot read %s: %s", key, path, strerror(errno));
}

static int folder_eq(const char *a, const char *b)
{
	if (strcasecmp(a, "INBOX") == 0 && strcasecmp(b, "INBOX") == 0)
		return 1;
	return strcmp(a, b) == 0;
}

static void validate_accounts(struct loader *l, int check_secrets)
{
	struct mf_config *c = l->cfg;
	for (size_t i = 0; i < c->n_accounts; i++) {
		struct mf_account *a = &c->accounts[i];
		const struct sect *s = find_sect(l, S_ACCOUNT, i);
		if (!a->host)
			diag_add(l, s->line, "[account %s] is missing 'host'", a->name);
		if (!a->username)
			diag_add(l, s->line, "[account %s] is missing 'username'", a->name);
		int n = !!a->password_file + !!a->oauth2_token_file + !!a->oauth2_token_command;
		if (n == 0)
			diag_add(l, s->line,
				 "[account %s] needs a secret: password_file, oauth2_token_file or "
				 "oauth2_token_command",
				 a->name);
		else if (n > 1)
			diag_add(l, s->line,
				 "[account %s] has %d secrets; keep exactly one of password_file, "
				 "oauth2_token_file, oauth2_token_command",
				 a->name, n);
		if (a->auth == AUTH_XOAUTH2 && !a->oauth2_token_file && !a->oauth2_token_command)
			diag_add(l, key_line(s, "auth"),
				 "auth = xoauth2 needs oauth2_token_file or oauth2_token_command");
		if ((a->auth == AUTH_LOGIN || a->auth == AUTH_PLAIN) && !a->password_file)
			diag_add(l, key_line(s, "auth"), "auth = %s needs password_file",
				 auth_names[a->auth]);
		if (a->tls == TLS_NONE && a->host && !host_is_loopback(a->host))
			diag_add(l, key_line(s, "tls"),
				 "tls = none sends the password in clear to %s; it is only allowed "
				 "on loopback (use implicit or starttls)",
				 a->host);
		if (!a->port)
			a->port = a->tls == TLS_IMPLICIT ? 993 : 143;
		check_secret(l, s, "password_file", a->password_file, 0, check_secrets);
		check_secret(l, s, "oauth2_token_file", a->oauth2_token_file, 0, check_secrets);
		check_readable(l, s, "ca_file", a->ca_file);
		if (check_secrets > 0 && a->oauth2_token_command) {
			char err[512], *out = NULL;
			if (secret_read(NULL, a->oauth2_token_command, &out, err, sizeof err) < 0)
				diag_add(l, key_line(s, "oauth2_token_command"),
					 "oauth2_token_command: %s", err);
			free(out);
		}
	}
}

static void validate_mailboxes(struct loader *l)
{
	struct mf_config *c = l->cfg;
	for (size_t i = 0; i < c->n_mailboxes; i++) {
		struct mf_mailbox *m = &c->mailboxes[i];
		const struct sect *s = find_sect(l, S_MAILBOX, i);
		if (!m->account)
			diag_add(l, s->line, "[mailbox %s] is missing 'account'", m->name);
		if (!m->folder)
			diag_add(l, s->line, "[mailbox %s] is missing 'folder'", m->name);
		else if (!utf8_folder_ok(m->folder))
			diag_add(l, key_line(s, "folder"),
				 "[mailbox %s] folder is not valid UTF-8 (save the file as UTF-8)",
				 m->name);
		if (!m->group)
			diag_add(l, s->line,
				 "[mailbox %s] is missing 'group' (the feed's group id)", m->name);
		if (m->account) {
			m->acct = (struct mf_account *)config_account(c, m->account);
			if (!m->acct)
				diag_add(
				    l, key_line(s, "account"),
				    "[mailbox %s] names account '%s', but there is no [account "
				    "%s] section",
				    m->name, m->account, m->account);
		}
		if (m->after == AFTER_MOVE && m->folder && folder_eq(m->folder, m->after_folder))
			diag_add(l, key_line(s, "after"),
				 "after = move:%s moves messages into the folder they come from",
				 m->after_folder);
		for (size_t j = 0; j < i && m->account && m->folder; j++) {
			const struct mf_mailbox *o = &c->mailboxes[j];
			if (o->account && o->folder && strcmp(o->account, m->account) == 0 &&
			    folder_eq(o->folder, m->folder)) {
				const struct sect *os = find_sect(l, S_MAILBOX, j);
				diag_add(l, key_line(s, "folder"),
					 "[mailbox %s] maps folder '%s' of account '%s', already "
					 "mapped by [mailbox %s] at line %d",
					 m->name, m->folder, m->account, o->name,
					 key_line(os, "folder"));
				break;
			}
		}
	}
}

static void validate_replies(struct loader *l)
{
	struct mf_config *c = l->cfg;
	struct mf_replies *r = &c->replies;
	const struct sect *s = find_sect(l, S_REPLIES, 0);
	if (!r->present)
		return;
	if (!r->folder)
		r->folder = xstrdup("INBOX");
	if (!r->account) {
		diag_add(l, s->line, "[replies] is missing 'account'");
	} else {
		r->acct = (struct mf_account *)config_account(c, r->account);
		if (!r->acct)
			diag_add(l, key_line(s, "account"),
				 "[replies] names account '%s', but there is no [account %s] "
				 "section",
				 r->account, r->account);
	}
	if (!c->gateway.reply_address)
		diag_add(l, s->line, "[replies] needs reply_address in [gateway]");
	for (size_t j = 0; r->account && j < c->n_mailboxes; j++) {
		const struct mf_mailbox *m = &c->mailboxes[j];
		if (m->account && m->folder && strcmp(m->account, r->account) == 0 &&
		    folder_eq(m->folder, r->folder))
			diag_add(l, key_line(s, "folder"),
				 "[replies] folder '%s' of account '%s' is also mapped by [mailbox "
				 "%s] at line %d; give replies their own folder",
				 r->folder, r->account, m->name,
				 key_line(find_sect(l, S_MAILBOX, j), "folder"));
	}
}

static void validate_feed(struct loader *l, int check_secrets)
{
	struct mf_config *c = l->cfg;
	struct mf_feed *f = &c->feed;
	const struct sect *s = find_sect(l, S_FEED, 0);
	struct sect none = {.kind = S_FEED, .line = 0};
	const char *need[5] = {NULL};
	const char *bname = backend_names[f->backend];

	if (!s)
		s = &none;
	switch (f->backend) {
	case FEED_CHATTER:
		need[0] = f->instance_url ? NULL : "instance_url";
		need[1] = f->client_id ? NULL : "client_id";
		need[2] = f->private_key_file ? NULL : "private_key_file";
		need[3] = f->username ? NULL : "username";
		break;
	case FEED_MATTERMOST:
		need[0] = f->url ? NULL : "url";
		need[1] = f->token_file ? NULL : "token_file";
		break;
	case FEED_WEBHOOK:
		need[0] = f->url ? NULL : "url";
		need[1] = f->secret_file ? NULL : "secret_file";
		break;
	case FEED_LOCAL:
		break;
	}
	for (int i = 0; i < 5; i++)
		if (need[i])
			diag_add(l, key_line(s, "backend"), "backend = %s needs '%s' in [feed]",
				 bname, need[i]);
	if (f->backend == FEED_CHATTER) {
		check_url(l, s, "instance_url", f->instance_url);
		check_url(l, s, "login_url", f->login_url);
		check_secret(l, s, "private_key_file", f->private_key_file, 0, check_secrets);
	}
	if (f->backend == FEED_MATTERMOST || f->backend == FEED_WEBHOOK)
		check_url(l, s, "url", f->url);
	if (f->backend == FEED_MATTERMOST)
		check_secret(l, s, "token_file", f->token_file, 0, check_secrets);
	if (f->backend == FEED_WEBHOOK)
		check_secret(l, s, "secret_file", f->secret_file, 0, check_secrets);
	check_readable(l, s, "ca_file", f->ca_file);
	if (f->mentions && f->backend != FEED_CHATTER && f->backend != FEED_MATTERMOST)
		diag_add(l, key_line(s, "mentions"),
			 "mentions = yes needs backend = chatter or mattermost (backend is %s)",
			 bname);
	if (c->digest.subscribers == SUBSCRIBERS_FEED && f->backend != FEED_CHATTER) {
		const struct sect *ds = find_sect(l, S_DIGEST, 0);
		diag_add(l, ds ? key_line(ds, "subscribers") : 0,
			 "subscribers = feed needs backend = chatter (backend is %s)", bname);
	}
	if (!f->dir && is_pg_dsn(c->gateway.state)) {
		f->dir = xstrdup("/var/lib/mailfeed/feeds");
	} else if (!f->dir && c->gateway.state) {
		const char *slash = strrchr(c->gateway.state, '/');
		if (!slash)
			f->dir = xstrdup("feeds");
		else if (slash == c->gateway.state)
			f->dir = xstrdup("/feeds");
		else
			f->dir = xasprintf("%.*s/feeds", (int)(slash - c->gateway.state),
					   c->gateway.state);
	}
}

/* state_dsn_file: a private file whose first line is the DSN (it may
 * hold a password); the DSN becomes the state. */
static void state_from_dsn_file(struct loader *l, const struct sect *gs)
{
	struct mf_gateway *g = &l->cfg->gateway;
	if (!g->state_dsn_file)
		return;
	check_secret(l, gs, "state_dsn_file", g->state_dsn_file, 0, 0);
	char err[512];
	char *dsn = dsn_file_read(g->state_dsn_file, err, sizeof err);
	if (!dsn) {
		diag_add(l, key_line(gs, "state_dsn_file"), "state_dsn_file: %s", err);
		return;
	}
	free(g->state);
	g->state = dsn;
}

static void validate_rest(struct loader *l, int check_secrets)
{
	struct mf_config *c = l->cfg;
	const struct sect *gs = find_sect(l, S_GATEWAY, 0);
	const struct sect *ss = find_sect(l, S_SMTP, 0);
	struct sect none = {.kind = S_GATEWAY, .line = 0};

	if (!gs)
		gs = &none;
	state_from_dsn_file(l, gs);
	if (!c->gateway.secret_file && (c->gateway.reply_address || c->smtp.present))
		diag_add(l, gs->line,
			 "[gateway] needs secret_file (>= 32 random bytes) to sign reply and "
			 "unsubscribe tokens");
	check_secret(l, gs, "secret_file", c->gateway.secret_file, GATEWAY_SECRET_MIN,
		     check_secrets);
	if (c->digest.public_url && !c->gateway.metrics_listen) {
		const struct sect *ds = find_sect(l, S_DIGEST, 0);
		diag_add(l, ds ? ds->line : gs->line,
			 "[digest] public_url needs [gateway] metrics_listen: the listener "
			 "there answers the one-click unsubscribe behind your reverse proxy");
	}

	if (ss) {
		if (!c->smtp.url)
			diag_add(l, ss->line,
				 "[smtp] is missing 'url' (smtps://host:465 or "
				 "smtp://host:587)");
		if (!c->smtp.from)
			diag_add(l, ss->line, "[smtp] is missing 'from'");
		if (c->smtp.url) {
			char host[256];
			int plain = strncasecmp(c->smtp.url, "smtp://", 7) == 0;
			if (!plain && strncasecmp(c->smtp.url, "smtps://", 8) != 0)
				diag_add(l, key_line(ss, "url"),
					 "url must start with smtps:// or smtp://");
			url_host(c->smtp.url, host, sizeof host);
			if (!*host)
				diag_add(l, key_line(ss, "url"), "url has no host");
		}
		if (c->smtp.username && !c->smtp.password_file)
			diag_add(l, key_line(ss, "username"),
				 "[smtp] username needs password_file");
		if (c->smtp.from && (strchr(c->smtp.from, '\r') || strchr(c->smtp.from, '\n') ||
				     !strchr(c->smtp.from, '@')))
			diag_add(l, key_line(ss, "from"),
				 "from must be an address, e.g. Feed digest <digest@example.org>");
		check_secret(l, ss, "password_file", c->smtp.password_file, 0, check_secrets);
		check_readable(l, ss, "ca_file", c->smtp.ca_file);
	}
	for (size_t i = 0; i < c->n_subscribers; i++) {
		const struct mf_subscriber *sub = &c->subscribers[i];
		if (!sub->groups.n)
			diag_add(l, sub->line,
				 "[subscriber %s] is missing 'groups' (mailbox names or group ids)",
				 sub->email);
		if (!c->smtp.present && sub->frequency != FREQ_NEVER)
			diag_add(l, sub->line,
				 "[subscriber %s] gets digests, but there is no [smtp] section to "
				 "send them",
				 sub->email);
	}
}

static void account_clear(struct mf_account *a)
{
	free(a->name);
	free(a->host);
	free(a->username);
	free(a->password_file);
	free(a->oauth2_token_file);
	free(a->oauth2_token_command);
	free(a->ca_file);
}

static void mailbox_clear(struct mf_mailbox *m)
{
	free(m->name);
	free(m->account);
	free(m->folder);
	free(m->group);
	strlist_free(&m->hashtags);
	free(m->after_folder);
	strlist_free(&m->allow_senders);
	strlist_free(&m->routes);
}

void config_free(struct mf_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	struct mf_gateway *g = &cfg->gateway;
	free(g->state);
	free(g->state_dsn_file);
	free(g->reply_address);
	free(g->secret_file);
	free(g->trusted_authserv);
	free(g->log_level);
	free(g->metrics_listen);
	free(g->metrics_file);
	struct mf_feed *f = &cfg->feed;
	free(f->instance_url);
	free(f->login_url);
	free(f->api_version);
	free(f->client_id);
	free(f->private_key_file);
	free(f->username);
	free(f->ca_file);
	free(f->url);
	free(f->token_file);
	free(f->secret_file);
	free(f->dir);
	for (size_t i = 0; i < cfg->n_accounts; i++)
		account_clear(&cfg->accounts[i]);
	free(cfg->accounts);
	for (size_t i = 0; i < cfg->n_mailboxes; i++)
		mailbox_clear(&cfg->mailboxes[i]);
	free(cfg->mailboxes);
	free(cfg->replies.account);
	free(cfg->replies.folder);
	free(cfg->replies.after_folder);
	free(cfg->smtp.url);
	free(cfg->smtp.username);
	free(cfg->smtp.password_file);
	free(cfg->smtp.from);
	free(cfg->smtp.ca_file);
	free(cfg->digest.timezone);
	free(cfg->digest.public_url);
	for (size_t i = 0; i < cfg->n_subscribers; i++) {
		free(cfg->subscribers[i].email);
		strlist_free(&cfg->subscribers[i].groups);
		free(cfg->subscribers[i].timezone);
	}
	free(cfg->subscribers);
	if (cfg->token_key) {
		if (cfg->token_key->data) {
			explicit_bzero(cfg->token_key->data, cfg->token_key->len);
			free(cfg->token_key->data);
		}
		free(cfg->token_key);
	}
	free(cfg);
}

void diag_free(struct mf_diag *diag)
{
	if (diag)
		strlist_free(&diag->msgs);
}

static struct mf_config default_config;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_config_build(void)
{
	struct loader l = {.cur = -1, .cfg = &default_config};
	defaults_config(&l);
}

const struct mf_config *config_default(void)
{
	pthread_once(&default_once, default_config_build);
	return &default_config;
}

struct mf_config *config_load(const char *path, int check_secrets, struct mf_diag *diag)
{
	struct loader l = {.diag = diag, .path = path, .cur = -1};
	l.fp = fopen(path, "r");
	if (!l.fp) {
		diag_add(&l, 0, "cannot open config: %s", strerror(errno));
		problems_flush(&l);
		return NULL;
	}
	l.cfg = xcalloc(1, sizeof *l.cfg);
	l.cfg->path = xstrdup(path);
	defaults_config(&l);
	const char *slash = strrchr(path, '/');
	if (slash)
		l.dir = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));

	/* Debian's inih takes these at run time; indented lines are ordinary
	 * lines and a line without '=' reaches the handler to be reported. */
	ini_allow_multiline = false;
	ini_allow_no_value = true;
	int rc = ini_parse_stream(loader_read, &l, loader_handle, &l);
	if (ferror(l.fp))
		diag_add(&l, l.lineno, "read error: %s", strerror(errno));
	else if (rc > 0 && l.n_problems == 0)
		diag_add(&l, rc, "syntax error; expected [section] or key = value");
	fclose(l.fp);
	free(l.linebuf);

	validate_rest(&l, check_secrets);
	validate_feed(&l, check_secrets);
	validate_accounts(&l, check_secrets);
	validate_mailboxes(&l);
	validate_replies(&l);

	for (size_t i = 0; i < l.n_sects; i++)
		free(l.sects[i].title);
	free(l.sects);
	free(l.dir);
	if (l.n_problems) {
		problems_flush(&l);
		config_free(l.cfg);
		return NULL;
	}
	return l.cfg;
}

const struct mf_mailbox *config_mailbox(const struct mf_config *cfg, const char *name)
{
	for (size_t i = 0; cfg && name && i < cfg->n_mailboxes; i++)
		if (strcmp(cfg->mailboxes[i].name, name) == 0)
			return &cfg->mailboxes[i];
	return NULL;
}

const struct mf_account *config_account(const struct mf_config *cfg, const char *name)
{
	for (size_t i = 0; cfg && name && i < cfg->n_accounts; i++)
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return &cfg->accounts[i];
	return NULL;
}

void config_apply_logging(const struct mf_config *c)
{
	enum log_level lvl;
	if (c->gateway.log_level && log_level_parse(c->gateway.log_level, &lvl) == 0)
		log_set_level(lvl);
	log_set_format((enum log_format)c->gateway.log_format);
}

const char *feed_backend_name(enum feed_backend b)
{
	return (unsigned)b <= FEED_WEBHOOK ? backend_names[b] : "?";
}

const char *after_action_name(enum after_action a)
{
	return (unsigned)a < 4 ? after_names[a] : "?";
}

const char *frequency_name(enum frequency f)
{
	return (unsigned)f <= FREQ_MINE ? freq_names[f] : "?";
}

int frequency_parse(const char *s, enum frequency *out)
{
	for (int i = 0; s && freq_names[i]; i++) {
		if (strcasecmp(s, freq_names[i]) == 0) {
			*out = (enum frequency)i;
			return 0;
		}
	}
	return -1;
}
