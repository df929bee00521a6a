/* pipeline.h — from a stored message to an outbox item: parse in the
 * sandboxed worker, classify, thread, enqueue the post or comment. */
#ifndef MAILFEED_PIPELINE_H
#define MAILFEED_PIPELINE_H

#include <stddef.h>

#include "mailfeed/config.h"
#include "mailfeed/store.h"

struct parse_worker;

/* The key the [replies] folder uses in the state. */
#define REPLIES_KEY "[replies]"

/* Processes up to limit messages in state 'new' of the configured
 * mappings.  Returns how many were processed, or -1 on a store error. */
int pipeline_process_new(struct store *st, const struct mf_config *cfg, struct parse_worker *w,
			 int limit);

/* Gives up the batches calls of pipeline_process_new on this thread may
 * have left parsing ahead (their parse attempts, counted through st, are
 * forgotten).  A loop of calls that ends on one returning 0 or -1 leaves
 * none; a caller that stops calling for another reason (its lease of the
 * stage is gone) calls this.  NULL st: freed, nothing forgotten. */
void pipeline_settle(struct store *st);

/* Seconds spent so far in pipeline_process_new reading and parsing the
 * messages (parse_s), and classifying, threading and enqueueing them up to
 * the commit (enqueue_s; enqueue_cpu_s of it on the CPU, which a shared
 * machine does not inflate). */
void pipeline_stage_seconds(double *parse_s, double *enqueue_s, double *enqueue_cpu_s);

#endif
