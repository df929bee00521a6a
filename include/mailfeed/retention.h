/* retention.h — forgetting what the state no longer needs.
 *
 * One pass forgets the raw mail of messages that are finished (delivered,
 * handled, or dropped from the dead list) and the file bytes of delivered
 * or dropped items, keep_raw seconds after that; the Message-IDs of mail
 * sent older than id_lifetime, and notices (told and queued) older than
 * two days.  Mail still waiting, retrying or on the dead list keeps its
 * bytes.  Each table's owner deletes its own rows; the pass is one
 * transaction. */
#ifndef MAILFEED_RETENTION_H
#define MAILFEED_RETENTION_H

#include <time.h>

#include "mailfeed/store.h"

/* Runs a pass when one is due (at most once per STORE_PRUNE_EVERY seconds
 * per connection).  Returns the rows changed (0 when none was due), or
 * -1. */
int retention_run(struct store *st, long keep_raw, long id_lifetime, time_t now);

#endif
