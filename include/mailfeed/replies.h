/* replies.h — mail that arrives in the [replies] folder: answers to
 * digests and notifications become comments on their post; one-word
 * commands change the sender's subscription. */
#ifndef MAILFEED_REPLIES_H
#define MAILFEED_REPLIES_H

#include <stddef.h>
#include <stdint.h>

#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/store.h"

/* Handles one parsed message (messages row msg_row) whose sender av
 * judged (auth_verify), outside any transaction.  *state becomes "queued" (comment enqueued and the row's
 * state set in the same transaction), "handled" (a subscription command,
 * answered) or "skipped" (refused, reason set; a human sender is told why).
 * Returns 0, or -1 on a store error (reason says what). */
struct auth_verdict;
int replies_process(struct store *st, const struct mf_config *cfg, int64_t msg_row,
		    const struct mf_message *m, const struct auth_verdict *av, const char **state,
		    char *reason, size_t reasonlen);

/* How long a mail mailfeed sent can be answered by In-Reply-To/References
 * alone: token_lifetime.  sent_ids older than that are pruned. */
long replies_id_lifetime(const struct mf_config *cfg);

#endif
