/* decide.h — what mailfeed does with one parsed message of one mapping:
 * post it, comment on a thread's post, or skip it (and why), with the text
 * and the hashtags the feed gets.
 *
 * The daemon (pipeline.c), `preview` and `inspect` all ask this module, so
 * that what an administrator previews is what the daemon does.  Deciding
 * changes nothing: the state is only read. */
#ifndef MAILFEED_DECIDE_H
#define MAILFEED_DECIDE_H

#include "mailfeed/db.h"
#include <stddef.h>
#include <stdint.h>

#include "mailfeed/auth.h"
#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/route.h"
#include "mailfeed/store.h"

enum decide_action { DECIDE_POST, DECIDE_COMMENT, DECIDE_SKIP };

struct decision {
	enum decide_action action;
	char reason[300];	  /* why skipped, "" otherwise */
	int duplicate;		  /* skipped because the group already has it */
	const char *text;	  /* the text posted: m->text (borrowed) */
	struct strlist hashtags;  /* the mapping's, then the message's, deduplicated */
	int64_t thread_id;	  /* the thread found (0: none, a post starts one) */
	int64_t root_item;	  /* the outbox item of that thread's post (comments) */
	char key[40];		  /* the idempotency key of the message in the group */
	char note[300];		  /* kept with a message queued anyway, "" mostly */
	struct auth_verdict auth; /* whether the From address is vouched for (auth.h) */
};

/* Decides for m (raw/len: the message as it arrived, for the key of a
 * message without a usable Message-ID).  db may be NULL (no state yet:
 * every message not skipped is a post); mb may be NULL (only the checks
 * that need no mapping, no thread look-up).  0, or -1 when the state could
 * not be read.  Free d with decision_free. */
int decide_message(struct db *db, const struct mf_config *cfg, const struct mf_mailbox *mb,
		   const struct mf_message *m, const char *raw, size_t len, struct decision *d);
/* The same for the daemon: on the store's connection, the look-ups that
 * run for every message kept prepared (store_stmt). */
int decide_message_kept(struct store *st, const struct mf_config *cfg, const struct mf_mailbox *mb,
			const struct mf_message *m, const char *raw, size_t len,
			struct decision *d);
void decision_free(struct decision *d);

/* "post", "comment" or "skipped". */
const char *decide_action_name(enum decide_action a);

/* The hashtags a post carries: mapping's tags first, then the message's,
 * deduplicated case-insensitively, at most DECIDE_MAX_TAGS. */
#define DECIDE_MAX_TAGS 64
void decide_hashtags(const struct strlist *mapping, const struct mf_message *m,
		     struct strlist *out);

/* The idempotency key of m in group: from its Message-ID when that is a
 * real id (thread_id_usable), else from the bytes of the message. */
void decide_item_key(const char *group, const struct mf_message *m, const char *raw, size_t len,
		     char out[40]);

/* Where the mapping's routes (route.h) send m after decision d, offline:
 * 1 with w filled (a post: the rule that applies or none; a comment: its
 * thread), 0 when there is nothing to show (no routes, or skipped).
 * recipients: recipients_mentionable's list, as the daemon enqueues it. */
int decide_route(const struct mf_mailbox *mb, const struct mf_message *m, const struct decision *d,
		 const struct strlist *recipients, struct route_why *w);

#endif
