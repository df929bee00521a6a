/* imap.h — one IMAP session with libetpan: connect (TLS with our own
 * certificate and host-name check, since Debian's libetpan checks nothing),
 * authenticate, select, find and fetch new messages, wait with IDLE or a
 * poll, and apply the after-action (seen/move/delete).
 *
 * A session is used by one thread at a time.  Every command must end within
 * the account's timeout plus the time to receive what arrived at 64 KiB/s;
 * one answer may hold at most max_message_size (the last imap_fetch's,
 * 25 MiB before) plus 256 KiB, and a larger literal is refused before it is
 * read.  Any error means "drop the session and reconnect with backoff". */
#ifndef MAILFEED_IMAP_H
#define MAILFEED_IMAP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailfeed/config.h"

struct imap_session;

/* Connects and logs in.  On failure returns NULL and a one-line message
 * naming the account and what to do (wrong password, unreachable host,
 * untrusted certificate, host name mismatch, ...). */
struct imap_session *imap_open(const struct mf_account *acct, char *err, size_t errlen);
/* Why the calling thread's last imap_open() failed. */
enum imap_failure {
	IMAP_FAIL_NONE,
	IMAP_FAIL_NETWORK, /* resolve, connect, greeting, stall */
	IMAP_FAIL_TLS,	   /* handshake or certificate */
	IMAP_FAIL_AUTH,	   /* the server refused the login */
};
enum imap_failure imap_last_failure(void);

/* The same on a socket already connected, without TLS and without a way
 * to reconnect (tests and the fuzzer).  The session owns fd. */
struct imap_session *imap_open_fd(const struct mf_account *acct, int fd, long long max_size,
				  char *err, size_t errlen);
/* After a failed imap_open() in this thread: 1 when the server refused the
 * credentials (a wrong password or token), 0 for any other failure. */
int imap_login_refused(void);
/* Logs out (bounded by the timeout) and frees.  NULL is fine. */
void imap_close(struct imap_session *s);
/* Drops the connection at once without LOGOUT (after an error). */
void imap_abort(struct imap_session *s);

struct imap_folder_info {
	uint32_t uidvalidity;
	uint32_t uidnext; /* 0 when the server did not say */
	uint32_t exists;
};
int imap_select(struct imap_session *s, const char *folder, struct imap_folder_info *info,
		char *err, size_t errlen);

/* STATUS (UIDNEXT UIDVALIDITY) of a folder that need not be selected: a
 * cheap look for new mail.  A field the server did not give is 0.  The
 * selected folder, if any, stays selected.  Returns 0, -1 (reconnect) or
 * IMAP_REFUSED (defined below) when the server said NO to this folder. */
int imap_status(struct imap_session *s, const char *folder, struct imap_folder_info *info,
		char *err, size_t errlen);

/* UIDs >= from_uid in the selected folder, ascending (the "n:*" quirk
 * filtered).  *uids owned by the caller (free). */
int imap_search_from(struct imap_session *s, uint32_t from_uid, uint32_t **uids, size_t *n,
		     char *err, size_t errlen);

/* UIDs of messages whose internal date is on or after the day of since
 * (UTC), ascending. */
int imap_search_since(struct imap_session *s, time_t since, uint32_t **uids, size_t *n, char *err,
		      size_t errlen);

struct imap_fetched {
	uint32_t uid;
	uint32_t size; /* RFC822.SIZE */
	time_t internaldate;
	const char *raw; /* NULL when not fetched (too big) */
	size_t raw_len;
	char **owner; /* where imap_fetch keeps raw (imap_fetched_take) */
};
/* Called once per message in UID order; return non-zero to stop.  raw is
 * freed when cb returns, unless cb took it. */
typedef int (*imap_fetch_cb)(const struct imap_fetched *m, void *arg);
/* In cb: raw handed over to the caller (NUL-terminated, free() it), so that
 * a message can be kept past cb without a copy.  NULL when not fetched. */
char *imap_fetched_take(const struct imap_fetched *m);

/* Fetches uids in batches: first RFC822.SIZE + INTERNALDATE, then
 * BODY.PEEK[] (never sets \Seen) of those not larger than max_size; the
 * larger ones reach cb with raw = NULL.  What arrives is measured too: a
 * body larger than max_size, whatever size was claimed, also reaches cb
 * with raw = NULL and size = what the server sent or announced (an answer
 * cut off by the limit is asked for again message by message on a new
 * connection).  Each message reaches cb as soon as it and those before it
 * are in, while the rest of the answer is still being read: cb must not
 * use the session, and the time it takes does not count against the
 * command's deadline.  Memory stays bounded by the largest message and
 * what cb keeps. */
int imap_fetch(struct imap_session *s, const uint32_t *uids, size_t n, long long max_size,
	       imap_fetch_cb cb, void *arg, char *err, size_t errlen);

/* The header block of one message (at most IMAP_HEADER_MAX bytes, never
 * sets \\Seen): for a message too large to fetch whole, so that its sender
 * can be told and the dead list can show it.  *raw owned (NULL when the
 * message is gone). */
#define IMAP_HEADER_MAX (64 * 1024)
int imap_fetch_header(struct imap_session *s, uint32_t uid, char **raw, size_t *len, char *err,
		      size_t errlen);

/* Marks seen, moves to folder (MOVE, else COPY + \Deleted + UID EXPUNGE),
 * or deletes (\Deleted + UID EXPUNGE), as the mapping says.  Returns 0,
 * -1 when the connection failed, or IMAP_REFUSED when the server said NO
 * (a missing target folder, no permission): the session is still usable
 * and the failure belongs to these messages.  Folder names, here and in
 * imap_select, are UTF-8 and sent as modified UTF-7. */
#define IMAP_REFUSED (-3)
int imap_after(struct imap_session *s, enum after_action a, const char *folder,
	       const uint32_t *uids, size_t n, char *err, size_t errlen);

/* Adds (add = 1) or removes a keyword such as $MailfeedDead on uids. */
int imap_keyword(struct imap_session *s, const char *keyword, int add, const uint32_t *uids,
		 size_t n, char *err, size_t errlen);

int imap_has_idle(struct imap_session *s);
/* Waits for news on the selected folder: IDLE when the server has it
 * (re-issued before idle_restart), else sleeps poll_interval.  Also wakes
 * when wake_fd becomes readable (the caller drains it).  Returns 1 = maybe
 * news, 0 = timeout/keepalive, -1 = error (reconnect).  News that cost no
 * wait (an EXISTS with an answer) is reported at once the first time, then
 * spaced from 1 s doubling to 60 s while it keeps coming that way without
 * new mail (see imap_news_taken). */
int imap_wait(struct imap_session *s, int wake_fd, long max_wait, char *err, size_t errlen);
/* The last wake-up brought new mail: the next one is not spaced (only
 * wake-ups that keep bringing nothing are). */
void imap_news_taken(struct imap_session *s);
/* NOOP as a liveness check. */
int imap_noop(struct imap_session *s, char *err, size_t errlen);

#endif
