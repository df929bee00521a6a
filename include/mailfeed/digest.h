/* digest.h — digests and per-post notifications by email: the run
 * (digest.c), the schedule (digest_schedule.c) and the rendering
 * (digest_render.c).  Who subscribes is subscribers.h's.
 *
 * Scheduling works in each subscriber's IANA zone: the period key of the
 * last scheduled moment not after now ("d:2026-11-23", "w:2026-W48",
 * "e:<remote id>", "n:<time>" for digest --now) is recorded in
 * digest_runs as 'sending' in a durable commit (one per group of mails
 * sent side by side) just before the end of the mail's data goes to the
 * relay, then marked 'sent'.  A period found
 * 'sending' after a crash may have been sent and is never sent again; one
 * killed before that commit was not delivered and is sent again.  With
 * several instances on one state, a period is first claimed ('claimed',
 * claimed_by, claim_until) by the one instance that composes and sends it;
 * the rules of a claim left by a killed instance are digest.c's. */
#ifndef MAILFEED_DIGEST_H
#define MAILFEED_DIGEST_H

#include <stddef.h>
#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/feed.h"
#include "mailfeed/store.h"

/* Sends what is due at now (force = 1: a digest for every subscriber, or
 * only only_email, covering everything since their last one).  Content is
 * what read_group returns after last_sent (or the subscription time) up
 * to the second before now.  Returns the
 * number of emails sent, or -1 when a mail could not be rendered or sent
 * (each failure is logged; the rest were still tried) or on a store or
 * configuration error. */
int digest_run(struct store *st, const struct mf_config *cfg, const struct feed_backend_ops *ops,
	       void *feed_ctx, time_t now, int force, const char *only_email);

/* digest_run for the daemon (force 0, every subscriber): before each
 * subscriber keep_going(arg) is called, where the daemon pings its
 * watchdog and looks for signals; 0 stops the run there, after the mails
 * already rendered are sent.  Whoever was not reached gets their digest
 * from the next run. */
int digest_run_paced(struct store *st, const struct mf_config *cfg,
		     const struct feed_backend_ops *ops, void *feed_ctx, time_t now,
		     int (*keep_going)(void *arg), void *arg);

/* Digest and notification mails the relay accepted ('sent' periods of
 * digest_runs) since the state was created; 0 on a store error. */
long long digest_sent_total(struct store *st);

/* The period due at now for a schedule, in zone tz (IANA name; NULL =
 * UTC).  Writes the period key and sets *sched to its scheduled moment.
 * Daily: the last local `hour`:00 not after now; weekly: the same on
 * weekly_day (0 = Sunday).  On a day when `hour` does not exist (DST gap)
 * the moment is the first instant after the gap; when it exists twice, the
 * first.  0, or -1 for FREQ_EACH/FREQ_NEVER or an unusable zone.
 *
 * Local time comes from tz.h, which reads the zone's file itself: no TZ
 * switch, no tzset, nothing shared with other threads. */
int digest_period(time_t now, enum frequency f, int hour, int weekly_day, const char *tz, char *key,
		  size_t keylen, time_t *sched);

/* 1 when zone names a readable file under /usr/share/zoneinfo (no "..",
 * not absolute). */
int digest_zone_valid(const char *zone);

/* One rendered email.  Owned. */
struct digest_mail {
	char *message_id; /* without <> */
	char *subject;	  /* as shown, before header encoding */
	char *text;	  /* the text/plain part before transfer encoding */
	char *html;	  /* the text/html part before transfer encoding */
	char *data;	  /* headers + body, CRLF line ends */
	size_t len;
};
void digest_mail_free(struct digest_mail *m);

/* One followed group and what it holds since the last digest (borrowed). */
struct digest_group {
	const char *label;		  /* as the subscriber named it */
	const char *gid;		  /* the feed's group id */
	const struct feed_entry *entries; /* oldest first */
	size_t n;
};

/* Renders a digest for `to`: groups in order, threads newest first, each
 * entry as an excerpt of a few lines (with a link to the whole), a thread
 * with many new comments as its latest few, at most max_items entries with
 * "and N more"; times in zone (NULL: UTC).  date_label goes into the
 * subject.  Reply and unsubscribe tokens are issued through the store.
 * A digest of one thread has that thread's reply address as Reply-To and
 * refers to its post's notification (In-Reply-To), so clients thread them.
 * 0, or -1 (store error, reply address unusable). */
int digest_render(struct store *st, const struct mf_config *cfg, const unsigned char *secret,
		  size_t secretlen, const char *to, const char *zone, const char *date_label,
		  const struct digest_group *groups, size_t n_groups, time_t now,
		  struct digest_mail *out);

/* Renders the notification of one post for an `each` subscriber: the
 * whole text, times in zone, a Message-ID made from the post and the
 * reader (the same for every mail about that post). */
int digest_render_notification(struct store *st, const struct mf_config *cfg,
			       const unsigned char *secret, size_t secretlen, const char *to,
			       const char *zone, const char *group_label,
			       const struct feed_entry *post, time_t now, struct digest_mail *out);

#endif
