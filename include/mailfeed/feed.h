/* feed.h — the feed service behind one interface; one file per backend
 * (feed_local.c, feed_webhook.c, feed_chatter.c, feed_mattermost.c), in the
 * way OpenSMTPD's queue.c sits on queue_backend.c. */
#ifndef MAILFEED_FEED_H
#define MAILFEED_FEED_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

enum feed_kind { FEED_POST, FEED_COMMENT };

struct feed_attachment {
	const char *filename;
	const char *content_type;
	size_t size;
	const char *sha256;
	const unsigned char *data;
	int64_t id;	    /* its row in the state database */
	const char *remote; /* the backend's note of an earlier upload, or NULL */
};

/* One post or comment to deliver.  Borrowed pointers, valid for the call. */
struct feed_item {
	int64_t id;                    /* outbox row id */
	const char *key;               /* idempotency key, same on every retry */
	enum feed_kind kind;
	const char *group;
	const char *parent_remote_id;  /* comment: the post's id at the service */
	const char *author_name;
	const char *author_email;
	/* the mail server vouched for author_email (auth.h): only then may a
	 * backend act as that person */
	int author_verified;
	const char *subject;
	const char *text;
	const struct strlist *hashtags;
	/* To/Cc addresses that may become mentions ([feed] mentions), at most
	 * RECIPIENTS_MAX; NULL or empty when none */
	const struct strlist *recipients;
	const char *message_id;
	time_t date;
	const struct feed_attachment *attachments;
	size_t n_attachments;
	/* May be NULL.  A backend that uploads a file before the post that
	 * uses it calls this at once with a note of its own (the file's id):
	 * it is stored durably and comes back as the attachment's remote on
	 * every later attempt, also after a crash, so the file is attached
	 * instead of uploaded a second time.  Safe to call from any thread. */
	void (*uploaded)(void *arg, const struct feed_attachment *a, const char *remote);
	void *uploaded_arg;
	/* When the item was queued: an earlier attempt cannot be older. */
	time_t created;
	/* May be NULL.  Whether remote (an element id at the service) is
	 * already the answer of another item, so that a backend looking for
	 * an earlier attempt by its content never takes another item's
	 * element for it.  Safe to call from any thread. */
	int (*remote_known)(void *arg, const char *remote);
	void *remote_known_arg;
};

enum feed_status {
	FEED_OK,        /* accepted; remote_id set */
	FEED_RETRY,     /* transient: network, timeout, 5xx, 429, token expiry */
	FEED_PERMANENT, /* the service refused it for good; error says why */
};

struct feed_result {
	enum feed_status status;
	char *remote_id;   /* owned; set on FEED_OK */
	long retry_after;  /* seconds asked by the service, 0 = none */
	char error[512];   /* service's code and message */
};

/* A file attached to a post or comment, as the digest lists it. */
struct feed_file {
	char *name;    /* as the service shows it */
	long long size; /* bytes, -1 when the service does not say */
	char *url;     /* where it is read: a link, or for the local feed its path on disk; may be NULL */
};

/* What the digest reads back from a group (posts and their comments). */
struct feed_entry {
	char *remote_id;
	char *parent_remote_id; /* NULL for a post */
	char *group;
	char *author_name;
	char *author_email;
	char *subject;
	char *text;
	char *url;              /* link to the post on the service, may be NULL */
	time_t created;
	/* Filled by the digest from what the gateway made (outbox_origin), NULL
	 * otherwise: a comment's post's subject. */
	char *post_subject;
	/* the entry's files, NULL when none */
	struct feed_file *files;
	size_t n_files;
};

/* A member of a group at the feed service who has an email address, and
 * how often it wants mail from that group (FREQ_NEVER included). */
struct feed_member {
	char *email; /* lower case */
	char *name;  /* may be NULL */
	enum frequency frequency;
};

struct feed_backend_ops {
	const char *name;
	/* Items handed to one deliver call when more are due; 0 means
	 * 4 x [feed] concurrency (right for a network service).  A backend
	 * without a network round trip takes bigger batches: every batch costs
	 * the outbox three commits and one due-item query. */
	size_t batch;
	/* deliver writes to the state database itself, on the connection it
	 * was opened with (the local feed): nothing else may use it
	 * meanwhile, so claims are not renewed during such a delivery (it
	 * has no network round trip and ends well within a claim). */
	int uses_store;
	/* Sets *ctx. 0, or -1 with err. */
	int (*open)(const struct mf_config *cfg, struct store *st, void **ctx, char *err,
		    size_t errlen);
	/* Delivers n items, up to [feed] concurrency at once; fills results[i]. */
	void (*deliver)(void *ctx, const struct feed_item *items, size_t n,
			struct feed_result *results);
	/* After a crash between "sent" and "recorded": is the item already at
	 * the service?  1 = yes (*remote_id set, owned), 0 = no, -1 = cannot
	 * tell now (retry later). */
	int (*reconcile)(void *ctx, const struct feed_item *item, char **remote_id);
	/* Entries of group created after since, oldest first. 0 or -1. */
	int (*read_group)(void *ctx, const char *group, time_t since, struct feed_entry **entries,
			  size_t *n, char *err, size_t errlen);
	/* Every member of group with an email address and its notification
	 * setting ([digest] subscribers = feed); NULL when the service keeps
	 * none.  0, or -1 with err (then *members is NULL). */
	int (*read_members)(void *ctx, const char *group, struct feed_member **members, size_t *n,
			    char *err, size_t errlen);
	void (*close)(void *ctx);
	/* check-config --online.  check_login logs in as the integration user;
	 * check_group asks whether group exists and that user may post there.
	 * Each returns 0 with a short note in msg (who, the group's name), or -1
	 * with what is wrong in msg.  NULL: the service cannot be asked. */
	int (*check_login)(void *ctx, char *msg, size_t msglen);
	int (*check_group)(void *ctx, const char *group, char *msg, size_t msglen);
	/* check-config --online for one route line of a mapping (route.h): the
	 * objects and fields it looks up exist and the feeds are enabled.  As
	 * above; NULL: the backend has no routes. */
	int (*check_route)(void *ctx, const char *spec, char *msg, size_t msglen);
};

const struct feed_backend_ops *feed_backend(enum feed_backend b);
void feed_entries_free(struct feed_entry *e, size_t n);
/* Appends a file (copies of name and url, either may be NULL) to e. */
void feed_entry_add_file(struct feed_entry *e, const char *name, long long size, const char *url);
void feed_result_clear(struct feed_result *r);
void feed_members_free(struct feed_member *m, size_t n);

/* What a backend learnt about the user behind an email address (post_as =
 * author, mentions): the service's id and name for it, or that there is
 * none.  An answer is believed for ttl_found seconds (a user) or ttl_none
 * (no user, or a user marked restricted); at most FEED_USER_CACHE_MAX
 * addresses are kept, the stale and then the oldest forgotten first.
 * Addresses compare case-insensitively.  Thread-safe. */
#define FEED_USER_CACHE_MAX 4096
struct feed_user_cache;
struct feed_user_cache *feed_user_cache_new(long ttl_found, long ttl_none);
void feed_user_cache_free(struct feed_user_cache *c);
/* 1 a user (*id and *name set, owned; *restricted when not NULL), 0 no
 * user, -1 nothing believed at now: ask the service. */
int feed_user_cache_get(struct feed_user_cache *c, const char *email, time_t now, char **id,
			char **name, int *restricted);
/* Records the answer at now: id and name of the user, or id NULL for none. */
void feed_user_cache_put(struct feed_user_cache *c, const char *email, time_t now,
			 const char *id, const char *name);
/* Marks the user of email restricted (e.g. may not be acted as) from now. */
void feed_user_cache_restrict(struct feed_user_cache *c, const char *email, time_t now);

/* Text of the marker every delivered item carries, so reconcile can find it
 * (backends place it where the service keeps it invisible or unobtrusive). */
#define FEED_MARKER_PREFIX "mailfeed:"

/* The built-in backends (feed_local.c, feed_webhook.c). */
extern const struct feed_backend_ops feed_local_ops;
extern const struct feed_backend_ops feed_webhook_ops;

/* The name an attachment is kept under in the local feed's files directory:
 * the last part of name after any '/' or '\\', controls, bidi controls and
 * characters shells or file systems treat specially replaced by '_', no
 * leading dot, at most FEED_LOCAL_NAME_MAX bytes (cut at a character,
 * keeping a short extension), "attachment" when nothing is left.  Owned. */
#define FEED_LOCAL_NAME_MAX 120
char *feed_local_safe_name(const char *name);

/* The HTTP backends (feed_chatter.c, feed_mattermost.c). */
extern const struct feed_backend_ops feed_chatter_ops;
extern const struct feed_backend_ops feed_mattermost_ops;

/* Their parsers of service answers, exposed for the fuzz targets.  Both
 * append owned entries created after since to *entries / *n. */
/* Chatter Feed Element Page; returns the next page's path (owned) or NULL. */
char *feed_chatter_parse_page(const char *json, size_t len, const char *group, time_t since,
			      const char *instance, struct feed_entry **entries, size_t *n);
/* One page of the answer to the CollaborationGroupMember query: appends the
 * members that have an email and a known NotificationFrequency.  0 with
 * *next set to the nextRecordsUrl path (owned) or NULL on the last page, or
 * -1 when the answer is not a complete query result. */
int feed_chatter_parse_members(const char *json, size_t len, struct feed_member **members,
			       size_t *n, char **next);
/* Mattermost PostList; who (may be NULL) fills in an author from a user id. */
void feed_mattermost_parse_posts(const char *json, size_t len, const char *group, time_t since,
				 const char *base,
				 void (*who)(void *arg, const char *uid, struct feed_entry *e),
				 void *arg, struct feed_entry **entries, size_t *n);

/* Text written in a mail as Mattermost Markdown that shows it as written:
 * Markdown punctuation is backslash-escaped (links written as plain URLs
 * stay links), so nothing a sender writes becomes a heading, a link with a
 * hidden target or an image fetched from their server when the post is
 * read.  @channel, @all and @here get a zero-width space after the "@",
 * which keeps their look but not their notification to the whole channel,
 * unless allow_mentions; ![alt](https://…) images stay images only with
 * allow_images.  Owned. */
char *feed_mattermost_escape(const char *text, int allow_mentions, int allow_images);

#endif
