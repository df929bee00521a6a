/* retention.c — the retention pass (rules in retention.h): when it is
 * due, and which owner forgets what, in one transaction. */
#include <stddef.h>

#include "mailfeed/log.h"
#include "mailfeed/messages.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/retention.h"
#include "mailfeed/token.h"

/* notices, told and queued, are kept this long */
#define NOTICE_KEEP (2 * 86400)

int retention_run(struct store *st, long keep_raw, long id_lifetime, time_t now)
{
	const struct {
		int (*prune)(struct store *st, time_t cutoff);
		time_t cutoff;
	} steps[] = {
	    {messages_prune_raw, now - keep_raw},    {outbox_prune_files, now - keep_raw},
	    {token_prune, now - id_lifetime},	     {notice_prune, now - NOTICE_KEEP},
	    {notice_queue_prune, now - NOTICE_KEEP},
	};
	int changed = 0;
	if (!store_prune_due(st, now))
		return 0;
	if (store_begin(st) < 0)
		return -1;
	for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
		int n = steps[i].prune(st, steps[i].cutoff);
		if (n < 0) {
			store_rollback(st);
			return -1;
		}
		changed += n;
	}
	if (store_commit(st) < 0)
		return -1;
	if (changed)
		log_info("store.pruned rows=%d keep_raw=%lds", changed, keep_raw);
	return changed;
}
