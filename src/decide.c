/* decide.c — one decision per message and mapping: post, comment or skip.
 *
 * Order of the checks, as the daemon applies them: classification (loop
 * guard, bounces, auto-replies, bulk, missing sender, allow_senders; see
 * classify.c; with a trusted_authserv, allow_senders admits only a From the
 * receiving server vouched for, see auth.h), then the group's duplicate key, then the thread
 * look-up (thread_find: ids, then subjects within the window).  A message whose thread is known but
 * whose post never became an outbox item starts the post itself. */
#include <stdio.h>
#include <string.h>

#include "mailfeed/classify.h"
#include "mailfeed/decide.h"
#include "mailfeed/messages.h"
#include "mailfeed/outbox.h"
#include "mailfeed/store.h"
#include "mailfeed/thread.h"
#include "mailfeed/util.h"

const char *decide_action_name(enum decide_action a)
{
	return a == DECIDE_POST ? "post" : a == DECIDE_COMMENT ? "comment" : "skipped";
}

void decide_hashtags(const struct strlist *mapping, const struct mf_message *m, struct strlist *out)
{
	const struct strlist *lists[2] = {mapping, m ? &m->hashtags : NULL};
	for (size_t l = 0; l < 2; l++)
		for (size_t i = 0; lists[l] && i < lists[l]->n; i++) {
			const char *t = lists[l]->v[i];
			if (!t || !*t || out->n >= DECIDE_MAX_TAGS || strlist_has_ci(out, t))
				continue;
			strlist_add(out, t);
		}
}

void decide_item_key(const char *group, const struct mf_message *m, const char *raw, size_t len,
		     char out[40])
{
	char h[65];
	struct buf b;
	buf_init(&b);
	buf_puts(&b, group);
	buf_putc(&b, '\n');
	if (thread_id_usable(m->message_id)) {
		buf_puts(&b, m->message_id);
	} else {
		sha256_hex(raw ? raw : "", raw ? len : 0, h);
		buf_puts(&b, h);
	}
	sha256_hex(b.data, b.len, h);
	buf_free(&b);
	snprintf(out, 40, "mf-%.32s", h);
}

/* decide_message on db, or on st's connection with its statements kept
 * prepared when st is given. */
static int decide(struct db *db, struct store *st, const struct mf_config *cfg,
		  const struct mf_mailbox *mb, const struct mf_message *m, const char *raw,
		  size_t len, struct decision *d)
{
	const char *skip;
	memset(d, 0, sizeof *d);
	d->text = m->text ? m->text : "";
	decide_hashtags(mb ? &mb->hashtags : NULL, m, &d->hashtags);
	auth_verify(cfg ? cfg->gateway.trusted_authserv : NULL, raw, raw ? len : 0, m->from_email,
		    &d->auth);
	skip = classify_skip(m, mb, cfg, d->reason, sizeof d->reason);
	if (!skip && mb && mb->allow_senders.n && cfg && cfg->gateway.trusted_authserv &&
	    !d->auth.verified) {
		snprintf(d->reason, sizeof d->reason, "sender not allowed: %.80s is %.160s",
			 m->from_email ? m->from_email : "(none)", d->auth.why);
		skip = d->reason;
	}
	if (skip) {
		if (skip != d->reason)
			snprintf(d->reason, sizeof d->reason, "%s", skip);
		d->action = DECIDE_SKIP;
		return 0;
	}
	d->action = DECIDE_POST;
	if (!mb)
		return 0;
	decide_item_key(mb->group, m, raw, len, d->key);
	if (!db)
		return 0;
	switch (st ? outbox_key_taken(st, d->key) : outbox_key_exists(db, d->key)) {
	case 1:
		/* the same Message-ID with other content is not a duplicate */
		if (store_key_for_content(db, m, d->key, d->note, sizeof d->note) == 0)
			break;
		d->action = DECIDE_SKIP;
		d->duplicate = 1;
		snprintf(d->reason, sizeof d->reason,
			 "duplicate: already posted from another folder");
		return 0;
	case -1:
		/* a state without an outbox yet has nothing to compare */
		return 0;
	}
	long window = cfg ? cfg->gateway.thread_window : 0;
	d->thread_id = st ? thread_find_kept(st, mb->group, mb->name, m, window)
			  : thread_find(db, mb->group, mb->name, m, window);
	if (d->thread_id < 0) {
		d->thread_id = 0;
		return -1;
	}
	if (d->thread_id > 0) {
		d->root_item =
		    st ? thread_root(st, d->thread_id) : thread_root_item(db, d->thread_id);
		if (d->root_item < 0) {
			/* the thread's post could not be read: deciding "post"
			 * would start the thread a second time */
			d->root_item = d->thread_id = 0;
			return -1;
		}
		if (d->root_item > 0)
			d->action = DECIDE_COMMENT;
	}
	return 0;
}

int decide_message(struct db *db, const struct mf_config *cfg, const struct mf_mailbox *mb,
		   const struct mf_message *m, const char *raw, size_t len, struct decision *d)
{
	return decide(db, NULL, cfg, mb, m, raw, len, d);
}

int decide_message_kept(struct store *st, const struct mf_config *cfg, const struct mf_mailbox *mb,
			const struct mf_message *m, const char *raw, size_t len, struct decision *d)
{
	return decide(store_db(st), st, cfg, mb, m, raw, len, d);
}

void decision_free(struct decision *d) { strlist_free(&d->hashtags); }

int decide_route(const struct mf_mailbox *mb, const struct mf_message *m, const struct decision *d,
		 const struct strlist *recipients, struct route_why *w)
{
	if (!mb || !mb->routes.n || d->action == DECIDE_SKIP)
		return 0;
	if (d->action == DECIDE_COMMENT)
		route_explain_comment(w);
	else
		route_explain(&mb->routes, m->subject, m->text, m->from_email, recipients, w);
	return 1;
}
