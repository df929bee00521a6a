/* subscribers.h — who gets digests and notifications: the subscribers
 * table (a subscription of its own: [subscriber] sections, `subscribe`,
 * email commands) and, with [digest] subscribers = feed, the members of
 * the mapped groups at the feed service (feed_members, their digest state
 * per (email, frequency) in feed_subscribers, and feed_member_reads).  An
 * address with a subscription of its own is not taken from the feed.
 * Also the threads each person muted (mutes).
 * subscribers.c is the only module that reads or writes these tables;
 * every other one asks through these functions. */
#ifndef MAILFEED_SUBSCRIBERS_H
#define MAILFEED_SUBSCRIBERS_H

#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/store.h"
#include "mailfeed/util.h"

/* Inserts the [subscriber] sections missing from the table (source
 * 'config').  Returns how many were added, or -1. */
int subscribers_seed(struct store *st, const struct mf_config *cfg);

/* A subscription of its own for email (stored lower-cased): groups as a
 * comma-separated list of [mailbox] names or group ids; hour < 0 and tz
 * NULL leave the [digest] section's; source says who asked ('cli',
 * 'email').  With replace, an existing subscription takes these groups,
 * frequency, hour and tz (its since and last_sent stay); without, an
 * existing one makes the call fail.  0, or -1. */
int subscribers_put(struct store *st, const char *email, const char *groups, const char *frequency,
		    int hour, const char *tz, const char *source, int replace);

/* Sets the digest frequency of email: on its own subscription when it has
 * one, else on a subscription of its own (source: who asked, 'cli' or
 * 'email') for every group it is a feed member of, which then overrides the
 * membership.  1 changed, 0 not a subscriber, -1 store error. */
int subscribers_set_frequency(struct store *st, const char *email, const char *frequency,
			      const char *source);

/* Takes group (case-insensitive) out of email's own subscription (source
 * becomes 'email'); the last group taken out sets its frequency to
 * 'never'.  1 left: *left is the groups still followed, comma-separated
 * (owned), or NULL when none is; 0 email has no subscription of its own
 * naming group (nothing changed); -1 store error. */
int subscribers_leave_group(struct store *st, const char *email, const char *group, char **left);

/* 1 when email has a subscription of its own or, with feed, is a recorded
 * member of a mapped group; with wanting_mail only one whose frequency is
 * not 'never' counts.  0 otherwise (also for NULL or on a store error). */
int subscribers_known(struct store *st, const char *email, int feed, int wanting_mail);

/* One row of subscribers_list: the time of the last mail, 0 when none. */
struct subscription_row {
	const char *email, *frequency, *source; /* source 'feed' for members */
	time_t last_sent;
};
/* Calls fn for every subscription by email, then frequency: those of
 * their own and, with feed, the feed members' that have none (a member
 * may have several frequencies).  0, or -1 on a store error. */
int subscribers_list(struct store *st, int feed,
		     void (*fn)(void *arg, const struct subscription_row *row), void *arg);

/* [digest] subscribers = feed: reads the members of every mapped group
 * whose list is older than an hour (every group with force) through
 * read_members and records them as subscribers of the frequency they
 * chose for that group.  A group that cannot be read keeps its last known
 * members (one log line); members of groups no longer mapped are dropped.
 * Returns the number of groups that could not be read or recorded. */
int subscribers_refresh_members(struct store *st, const struct mf_config *cfg,
				const struct feed_backend_ops *ops, void *feed_ctx, time_t now,
				int force);

/* A subscription as a digest run works through it. */
struct subscriber {
	char *email;
	struct strlist groups; /* as named: [mailbox] names or group ids */
	enum frequency freq;
	int hour; /* -1: the [digest] section's */
	char *tz; /* NULL: the [digest] section's */
	time_t last_sent, since;
	int has_last; /* last_sent is set */
	int feed;     /* a feed member: state in feed_subscribers */
	int each_due; /* for the run: `each`, move last_sent once its mails are sent */
	int retry;    /* for the run: a mail of this run must be tried again */
};

/* Subscriptions read at a time: a run's memory does not grow with them. */
#define SUBSCRIBERS_BATCH 256

/* Fills subs (room for SUBSCRIBERS_BATCH) with the subscriptions after
 * (after_email, after_freq) in order: feed 0 those of their own, feed 1
 * the feed members without one (their group ids named by the [mailbox]
 * mapping each, sorted); only_email: that address only (NULL: all).  The
 * count, or -1 on a store error.  subscribers_clear frees each. */
int subscribers_load(struct store *st, const struct mf_config *cfg, int feed,
		     const char *only_email, const char *after_email, const char *after_freq,
		     struct subscriber *subs);
void subscribers_clear(struct subscriber *sub);

/* Moves sub's last_sent from `from` (what the run read; from_set 0: none)
 * to `to` (to_set 0: none again), unless another run moved it meanwhile.
 * 1 moved, 0 moved by someone else, -1 error (logged). */
int subscribers_move_last_sent(struct store *st, const struct subscriber *sub, time_t from,
			       int from_set, time_t to, int to_set);

/* Mutes (mute 1) or unmutes (0) for email the thread whose first post is
 * remote_id: its comments leave email's digests and notifications.
 * Muting twice is one mute.  0, or -1 on a store error. */
int subscribers_mute(struct store *st, const char *email, const char *remote_id, int mute);

/* Adds to out the remote ids of the posts whose threads email muted.  0, or
 * -1 on a store error (out may hold some). */
int subscribers_muted(struct store *st, const char *email, struct strlist *out);

#endif
