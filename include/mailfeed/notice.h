/* notice.h — short explanations mailed to a human sender (refused reply,
 * sender not allowed, subscription changed).  At most one per address,
 * reason and UTC day, at most [gateway] notice_max_per_hour in all; never
 * to automatic or no-reply addresses. */
#ifndef MAILFEED_NOTICE_H
#define MAILFEED_NOTICE_H

#include <time.h>

#include "mailfeed/config.h"
#include "mailfeed/store.h"

/* Records (to, reason_key, day) and queues the composed mail for the
 * relay (notice_queue table), inside the caller's open transaction when
 * there is one, so that a notice is kept or lost with the verdict it
 * explains; the daily rule and the hourly cap are decided here.  No
 * network: the notice sender (below) or `run --once` sends it.  subject
 * and body are UTF-8 text (body's lines end in \n).  Returns 0 queued, 1
 * suppressed (already told today, cap reached, unsuitable address, no
 * [smtp]), -1 error (logged). */
int notice_send(struct store *st, const struct mf_config *cfg, const char *to,
		const char *reason_key, const char *subject, const char *body);

/* A refusal ("your email was not posted") to `to`, the From of the mail:
 * sent only when that sender was verified (auth.h) or is a known
 * subscriber, through notice_send.  The body quotes the mail's subject
 * shortened (notice_quote_subject), then says what happened, why and what
 * to do.  Returns as notice_send; 1 when refused here. */
int notice_refusal(struct store *st, const struct mf_config *cfg, const char *to, int verified,
		   const char *subject, const char *reason_key, const char *title, const char *what,
		   const char *why, const char *advice);

/* The subject as a notice quotes it: at most NOTICE_SUBJECT_MAX
 * characters (then "…"), control and bidi control characters as single
 * spaces, invalid UTF-8 left out.  out: >= NOTICE_SUBJECT_MAX * 4 + 16. */
#define NOTICE_SUBJECT_MAX 60
void notice_quote_subject(const char *subject, char *out, size_t outlen);

/* 1 when mail must never be sent to addr (empty, MAILER-DAEMON, postmaster,
 * no-reply look-alikes, mailfeed's own reply address). */
int notice_address_refused(const struct mf_config *cfg, const char *addr);

/* The queue (notice_queue.c, the only module that touches it). */
struct smtp_client;
/* Queues a composed notice (mail: the whole message, CRLF lines) to `to`
 * for reason_key, created at now, as 'pending'; in the caller's
 * transaction when one is open.  0, or -1 on a store error. */
int notice_queue_add(struct store *st, const char *to, const char *reason_key,
		     const struct buf *mail, time_t now);
/* Notices waiting for the relay ('pending'), or -1. */
long notice_waiting(struct store *st);
/* When the next waiting notice is due (epoch seconds), 0 when none. */
long notice_next_due(struct store *st);
/* Sends up to SMTP_GROUP_MAX notices due at `now` over c, recorded as
 * notice_queue.c's banner says.  Returns how many were tried. */
int notice_deliver_due(struct store *st, struct smtp_client *c, const char *from_addr, time_t now);
/* `run --once`: sends every notice due now.  How many were tried, or -1. */
int notice_send_queued(struct store *st, const struct mf_config *cfg);

/* Retention, inside the caller's transaction: notice_prune forgets who
 * was told what before cutoff (notice.c); notice_queue_prune the queued
 * notices sent, being sent or given up that were queued before cutoff
 * (notice_queue.c).  Rows removed, or -1. */
int notice_prune(struct store *st, time_t cutoff);
int notice_queue_prune(struct store *st, time_t cutoff);
/* The daemon's notice sender: a thread with its own copies of the relay
 * settings and its own store connection, sending queued notices as they
 * come and retrying them as they fall due, so that a slow relay never
 * holds up ingestion.  Start after each config (re)load; stop waits up to
 * `seconds` for a transfer under way, then leaves it to end on its own.
 * notice_sender_wake: a notice was queued (no-op without a sender). */
int notice_sender_start(const struct mf_config *cfg);
void notice_sender_stop(double seconds);
void notice_sender_wake(void);

#endif
