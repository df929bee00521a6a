/* config.h — the one INI file, read with libinih into typed structs.
 *
 * config_load() collects every problem as "FILE:LINE: message" so that
 * `mailfeed check-config` can show them all at once.  A config with problems
 * is never half-used: callers get NULL and the list. */
#ifndef MAILFEED_CONFIG_H
#define MAILFEED_CONFIG_H

#include "mailfeed/util.h"

enum tls_mode { TLS_IMPLICIT, TLS_STARTTLS, TLS_NONE };
enum after_action { AFTER_KEEP, AFTER_SEEN, AFTER_MOVE, AFTER_DELETE };
/* What a mapping takes of the mail already in its folder when first seen. */
enum start_mode { START_NEW, START_ALL, START_SINCE };
enum feed_backend { FEED_LOCAL, FEED_CHATTER, FEED_MATTERMOST, FEED_WEBHOOK };
enum post_as { POST_AS_INTEGRATION, POST_AS_AUTHOR };
/* FREQ_MINE: a daily digest of only the threads the subscriber started,
 * commented on or is named in. */
enum frequency { FREQ_DAILY, FREQ_WEEKLY, FREQ_EACH, FREQ_NEVER, FREQ_MINE };
enum imap_auth { AUTH_AUTO, AUTH_LOGIN, AUTH_PLAIN, AUTH_XOAUTH2 };
/* Who gets digests: [subscriber] sections and `subscribe` only, or also the
 * feed service's own group members by their notification setting. */
enum digest_subscribers { SUBSCRIBERS_CONFIG, SUBSCRIBERS_FEED };

struct mf_account {
	char *name;
	char *host;
	int port;	   /* default 993 implicit, 143 otherwise */
	enum tls_mode tls; /* default implicit */
	int tls_verify;	   /* default 1; tls_verify = no is logged loudly */
	char *username;
	char *password_file; /* exactly one of the three secrets */
	char *oauth2_token_file;
	char *oauth2_token_command;
	enum imap_auth auth; /* default auto: XOAUTH2 with a token, else LOGIN */
	char *ca_file;	     /* NULL = system trust store */
	long timeout;	     /* seconds; network stall limit, default 60 */
	long poll_interval;  /* seconds: the longest between two looks at a folder
			      * not waited on with IDLE; default 30 */
	long idle_restart;   /* seconds, default 25 min (< RFC 2177's 29) */
	int max_connections; /* IMAP sessions for all its folders; default 4 */
	int line;
};

struct mf_mailbox {
	char *name; /* section name: [mailbox NAME] */
	char *account;
	struct mf_account *acct; /* resolved, borrowed */
	char *folder;
	char *group;
	struct strlist hashtags;
	enum after_action after;
	char *after_folder;	      /* for move:FOLDER */
	struct strlist allow_senders; /* domains or addresses; empty = all */
	int accept_bulk;
	int attach_original;
	enum start_mode start;	    /* default new */
	long start_since;	    /* seconds back, for since:DURATION */
	int allow_channel_mentions; /* Mattermost: @channel/@all/@here stay live */
	int allow_remote_images;    /* Mattermost: ![](http…) images stay live */
	struct strlist routes;	    /* route = ... lines, in order (route.h) */
	int line;
};

struct mf_replies {
	int present;
	char *account;
	struct mf_account *acct;
	char *folder;		 /* default INBOX */
	enum after_action after; /* default seen */
	char *after_folder;
	int line;
};

struct mf_gateway {
	char *state;	      /* default /var/lib/mailfeed/state.db; or a
			       * postgresql:// DSN (from state_dsn_file too) */
	char *state_dsn_file; /* first line: the DSN, when it holds a password */
	char *reply_address;  /* local@domain */
	char *secret_file;
	long long max_message_size; /* default 25M */
	long thread_window;	    /* subject fallback window, default 14d */
	long token_lifetime;	    /* reply token validity, default 60d */
	long parse_timeout;	    /* seconds per message in the worker, default 20 */
	long long parse_memory;	    /* worker RLIMIT_AS, default 512M */
	char *trusted_authserv;	    /* Authentication-Results authserv-id to trust; NULL = off */
	long keep_raw;		    /* raw mail and files kept after delivery, default 7d */
	int notice_max_per_hour;    /* notices to senders, all addresses together; default 20 */
	char *log_level;	    /* debug|info|notice|warn|error, default info */
	int log_format;	      /* enum log_format: text (default) or json, when not to the journal */
	char *metrics_listen; /* 127.0.0.1:9464, or NULL */
	char *metrics_file;   /* textfile collector path, or NULL */
	long lease_timeout;   /* seconds a dead instance's work waits, default 30 */
};

struct mf_feed {
	enum feed_backend backend;
	/* chatter */
	char *instance_url;
	char *login_url;   /* default https://login.salesforce.com */
	char *api_version; /* default 62.0 */
	char *client_id;
	char *private_key_file;
	char *username;
	enum post_as post_as;
	/* shared by http backends */
	char *ca_file;
	int tls_verify;
	char *url;		 /* mattermost base url / webhook url */
	char *token_file;	 /* mattermost */
	char *secret_file;	 /* webhook */
	char *dir;		 /* local: Atom output dir; default next to state */
	int concurrency;	 /* default 4 */
	long timeout;		 /* per request, default 30s */
	long connect_timeout;	 /* default 10s */
	long max_retry_delay;	 /* default 1h */
	long dead_after;	 /* give up on transient errors after, default 2d */
	long claim_timeout;	 /* an outbox claim lapses after, default 5m (renewed
				  * while a delivery runs) */
	long long max_file_size; /* attachments above are listed, not uploaded; default 25M */
	int max_files;		 /* default 10 */
	int mentions;		 /* To/Cc addresses of known feed users become
				  * mentions (chatter, mattermost); default no */
};

struct mf_smtp {
	int present;
	char *url;
	char *username;
	char *password_file;
	char *from;
	char *ca_file;
	int tls_verify;
	long timeout;
};

struct mf_digest {
	int hour;			     /* default 7 */
	char *timezone;			     /* default UTC */
	int weekly_day;			     /* 0 = sunday .. 6; default 1 (monday) */
	int max_items;			     /* cap per digest, default 50 */
	enum digest_subscribers subscribers; /* default config */
	char *public_url;		     /* https base of the one-click unsubscribe, or NULL */
};

struct mf_subscriber {
	char *email;
	struct strlist groups;
	enum frequency frequency;
	int hour;	/* -1 = [digest] hour */
	char *timezone; /* NULL = [digest] timezone */
	int line;
};

/* A secret kept in memory for the life of one configuration (read by
 * token_secret_preload, wiped by config_free). */
struct mf_secret {
	unsigned char *data;
	size_t len;
};

struct mf_config {
	char *path;
	struct mf_gateway gateway;
	struct mf_feed feed;
	struct mf_account *accounts;
	size_t n_accounts;
	struct mf_mailbox *mailboxes;
	size_t n_mailboxes;
	struct mf_replies replies;
	struct mf_smtp smtp;
	struct mf_digest digest;
	struct mf_subscriber *subscribers;
	size_t n_subscribers;
	struct mf_secret *token_key; /* [gateway] secret_file once read, or NULL */
};

/* Problems found while loading: "FILE:LINE: message" strings. */
struct mf_diag {
	struct strlist msgs;
};

/* Loads and validates path.  Returns the config, or NULL when any problem
 * was found (all of them appended to diag).  check_secrets = 1 also opens
 * every *_file secret (existence, permissions) as check-config does; 0
 * checks existence and permissions only; -1 skips secrets altogether (to
 * learn the state path before deciding whom to judge them for). */
struct mf_config *config_load(const char *path, int check_secrets, struct mf_diag *diag);
/* The settings of a configuration that sets nothing: every key at the
 * default of its row in config.c, no sections.  For commands that run
 * without a configuration file.  Static; never freed. */
const struct mf_config *config_default(void);
void config_free(struct mf_config *cfg);
void diag_free(struct mf_diag *diag);

const struct mf_mailbox *config_mailbox(const struct mf_config *cfg, const char *name);
const struct mf_account *config_account(const struct mf_config *cfg, const char *name);

/* Sets log.c's level and format from [gateway] log_level and log_format:
 * at start and again on every reload. */
void config_apply_logging(const struct mf_config *c);
/* "local", "chatter", "mattermost", "webhook": the names [feed] backend takes. */
const char *feed_backend_name(enum feed_backend b);
const char *after_action_name(enum after_action a);
const char *frequency_name(enum frequency f);
int frequency_parse(const char *s, enum frequency *out);

#endif
