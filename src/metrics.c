/* metrics.c — the numbers `status` shows, in Prometheus text format. */
#include <stdio.h>
#include <string.h>

#include "mailfeed/cluster.h"
#include "mailfeed/digest.h"
#include "mailfeed/health.h"
#include "mailfeed/log.h"
#include "mailfeed/messages.h"
#include "mailfeed/metrics.h"
#include "mailfeed/notes.h"
#include "mailfeed/outbox.h"

static void label_escape(struct buf *b, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_putc(b, '\\');
		if (*s == '\n') {
			buf_puts(b, "\\n");
			continue;
		}
		buf_putc(b, *s);
	}
}

/* Totals since the state was created, and what this binary is. */
static void metrics_counters(struct store *st, struct buf *b)
{
	buf_printf(b,
		   "# HELP mailfeed_delivered_total Posts and comments delivered.\n"
		   "# TYPE mailfeed_delivered_total counter\n"
		   "mailfeed_delivered_total %lld\n"
		   "# HELP mailfeed_retried_total Delivery attempts that failed and were retried.\n"
		   "# TYPE mailfeed_retried_total counter\n"
		   "mailfeed_retried_total %lld\n"
		   "# HELP mailfeed_dead_total Items that went to the dead list.\n"
		   "# TYPE mailfeed_dead_total counter\n"
		   "mailfeed_dead_total %lld\n"
		   "# HELP mailfeed_digests_sent_total Digest and notification mails sent.\n"
		   "# TYPE mailfeed_digests_sent_total counter\n"
		   "mailfeed_digests_sent_total %lld\n",
		   (long long)outbox_count(st, OUTBOX_DELIVERED),
		   note_counter(st, NOTE_COUNT_RETRIED), note_counter(st, NOTE_COUNT_DEAD),
		   digest_sent_total(st));
	buf_puts(b, "# HELP mailfeed_build_info The running mailfeed's version.\n"
		    "# TYPE mailfeed_build_info gauge\n"
		    "mailfeed_build_info{version=\"");
	label_escape(b, MAILFEED_VERSION);
	buf_puts(b, "\",sqlite=\"");
	label_escape(b, db_sqlite_version());
	buf_puts(b, "\"} 1\n");
}

/* One line of mailfeed_messages. */
static void put_messages(void *ctx, const char *mailbox, const char *state, long long n)
{
	struct buf *b = ctx;
	buf_puts(b, "mailfeed_messages{mailbox=\"");
	label_escape(b, mailbox);
	buf_puts(b, "\",state=\"");
	label_escape(b, state);
	buf_printf(b, "\"} %lld\n", n);
}

/* The instances sharing the state, live (a heartbeat younger than the
 * lease time) or silent. */
struct instance_counts {
	int64_t lease_ms;
	long live, silent;
};

static void count_instance(const struct cluster_instance *in, void *arg)
{
	struct instance_counts *c = arg;
	if (in->now_ms - in->heartbeat_ms <= c->lease_ms)
		c->live++;
	else
		c->silent++;
}

static void metrics_instances(struct store *st, const struct mf_config *cfg, struct buf *b)
{
	struct instance_counts c = {.lease_ms = (cfg ? cfg->gateway.lease_timeout : 30) * 1000};
	buf_printf(b,
		   "# HELP mailfeed_state_database_up 0 while this instance cannot reach the "
		   "state database.\n"
		   "# TYPE mailfeed_state_database_up gauge\n"
		   "mailfeed_state_database_up %d\n",
		   !health_unavailable());
	if (cluster_instances_db(store_db(st), count_instance, &c) < 0)
		return;
	buf_printf(b,
		   "# HELP mailfeed_instances Instances sharing the state, by whether their "
		   "heartbeat is recent.\n"
		   "# TYPE mailfeed_instances gauge\n"
		   "mailfeed_instances{state=\"live\"} %ld\n"
		   "mailfeed_instances{state=\"silent\"} %ld\n",
		   c.live, c.silent);
}

void metrics_render(struct store *st, const struct mf_config *cfg, struct buf *b)
{
	struct outbox_counts c = {0};

	outbox_counts(st, &c);
	buf_puts(b, "# HELP mailfeed_outbox_items Outbox items by state.\n"
		    "# TYPE mailfeed_outbox_items gauge\n");
	buf_printf(b, "mailfeed_outbox_items{state=\"pending\"} %ld\n", c.pending);
	buf_printf(b, "mailfeed_outbox_items{state=\"retrying\"} %ld\n", c.retrying);
	buf_printf(b, "mailfeed_outbox_items{state=\"inflight\"} %ld\n", c.inflight);
	buf_printf(b, "mailfeed_outbox_items{state=\"delivered\"} %ld\n", c.delivered);
	buf_printf(b, "mailfeed_outbox_items{state=\"dead\"} %ld\n", c.dead);

	buf_puts(b, "# HELP mailfeed_messages Messages taken in, by mailbox and state.\n"
		    "# TYPE mailfeed_messages gauge\n");
	messages_each_count(st, put_messages, b);
	buf_puts(b, "# HELP mailfeed_mailbox_last_ok_timestamp_seconds Last successful sync.\n"
		    "# TYPE mailfeed_mailbox_last_ok_timestamp_seconds gauge\n"
		    "# HELP mailfeed_mailbox_error 1 when the last attempt failed.\n"
		    "# TYPE mailfeed_mailbox_error gauge\n");
	struct folder_status *fs;
	size_t n;
	if (store_folders_list(st, &fs, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			buf_puts(b, "mailfeed_mailbox_last_ok_timestamp_seconds{mailbox=\"");
			label_escape(b, fs[i].mailbox);
			buf_printf(b, "\"} %lld\n", (long long)fs[i].last_ok);
			buf_puts(b, "mailfeed_mailbox_error{mailbox=\"");
			label_escape(b, fs[i].mailbox);
			buf_printf(b, "\"} %d\n", fs[i].last_error != NULL);
		}
		store_folders_free(fs, n);
	}
	metrics_counters(st, b);
	metrics_instances(st, cfg, b);
}

void metrics_write(struct store *st, const struct mf_config *cfg)
{
	struct buf b;
	if (!cfg->gateway.metrics_file)
		return;
	buf_init(&b);
	metrics_render(st, cfg, &b);
	if (file_write_atomic(cfg->gateway.metrics_file, b.data, b.len, 0644) < 0)
		log_warn("metrics.error file=%s error=\"cannot write\"", cfg->gateway.metrics_file);
	buf_free(&b);
}
