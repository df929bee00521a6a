/* replies.c — mail in the [replies] folder.  The post and the person are
 * found from the signed token in the recipient address (Delivered-To,
 * X-Original-To, To, Cc) or from In-Reply-To/References of a mail mailfeed
 * sent; the sender must be the person the token was issued to.  A one-word
 * subject or first line changes the subscription (unsubscribe [GROUP],
 * daily, weekly, each, mine) or quiets a thread (mute, unmute); anything
 * else becomes a comment on the post.  "unsubscribe" also works sent to
 * the plain feed address by a verified sender.  With
 * [gateway] trusted_authserv the sender must also be verified (auth.h);
 * without it a comment is made in the feed's own name, never the
 * sender's. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/auth.h"
#include "mailfeed/classify.h"
#include "mailfeed/log.h"
#include "mailfeed/messages.h"
#include "mailfeed/notice.h"
#include "mailfeed/outbox.h"
#include "mailfeed/recipients.h"
#include "mailfeed/replies.h"
#include "mailfeed/subscribers.h"
#include "mailfeed/token.h"
#include "mailfeed/util.h"

/* Whom a reply is from and what it answers, however it was found. */
struct reply_target {
	int found; /* 0 none, 1 token, 2 In-Reply-To/References */
	enum token_status status;
	struct token_info ti;
};

static int find_token(const struct mf_config *cfg, const struct mf_message *m, char *tok,
		      size_t toklen)
{
	const struct strlist *lists[] = {&m->recipients_hint, &m->to, &m->cc};
	for (size_t l = 0; l < 3; l++)
		for (size_t i = 0; i < lists[l]->n; i++)
			if (token_from_address(cfg, lists[l]->v[i], tok, toklen))
				return 1;
	return 0;
}

/* A Message-ID mailfeed generated: fills ti from sent_ids, with the
 * lifetime of a token issued with that mail (token_lifetime from when it
 * was sent).  1 found. */
static int find_sent_id(struct store *st, const struct mf_config *cfg, const char *msgid,
			struct token_info *ti)
{
	time_t sent;
	if (!token_sent_id_find(st, msgid, ti, &sent))
		return 0;
	ti->expires = sent + replies_id_lifetime(cfg);
	return 1;
}

static void find_target(struct store *st, const struct mf_config *cfg, const struct mf_message *m,
			struct reply_target *t)
{
	char tok[80], err[256];
	unsigned char *secret = NULL;
	size_t secretlen = 0;

	memset(t, 0, sizeof *t);
	if (find_token(cfg, m, tok, sizeof tok)) {
		t->found = 1;
		if (token_secret_load(cfg, &secret, &secretlen, err, sizeof err) < 0) {
			log_error("reply.error error=%s", LOG_Q(err));
			t->status = TOKEN_FORGED;
			return;
		}
		t->status = token_verify(st, secret, secretlen, tok, time(NULL), &t->ti);
		memset(secret, 0, secretlen);
		free(secret);
		return;
	}
	if (find_sent_id(st, cfg, m->in_reply_to, &t->ti))
		t->found = 2;
	for (size_t i = m->references.n; !t->found && i-- > 0;)
		if (find_sent_id(st, cfg, m->references.v[i], &t->ti))
			t->found = 2;
	if (t->found)
		t->status = t->ti.expires < time(NULL) ? TOKEN_EXPIRED : TOKEN_OK;
}

long replies_id_lifetime(const struct mf_config *cfg)
{
	return cfg->gateway.token_lifetime > 0 ? cfg->gateway.token_lifetime : 60L * 86400;
}

/* A command: one word on the subject or the first non-empty line of the
 * text, "unsubscribe" optionally followed by a group's name. */
struct command {
	const char *word;
	char arg[128]; /* the group of "unsubscribe GROUP", else "" */
};

static int find_command(const struct mf_message *m, struct command *c)
{
	static const char *const words[] = {"unsubscribe", "daily", "weekly", "each",
					    "mine",	   "mute",  "unmute"};
	const char *cands[2] = {m->subject_norm && *m->subject_norm ? m->subject_norm : m->subject,
				m->text};
	memset(c, 0, sizeof *c);
	for (int k = 0; k < 2; k++) {
		const char *s = cands[k];
		if (!s)
			continue;
		while (*s && isspace((unsigned char)*s))
			s++;
		size_t n = strcspn(s, "\r\n");
		while (n && isspace((unsigned char)s[n - 1]))
			n--;
		for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
			size_t wl = strlen(words[i]);
			if (n < wl || strncasecmp(s, words[i], wl) != 0)
				continue;
			if (n == wl) {
				c->word = words[i];
				return 1;
			}
			/* "unsubscribe GROUP" */
			if (i == 0 && s[wl] == ' ' && n - wl - 1 < sizeof c->arg) {
				const char *g = s + wl + 1;
				size_t gl = n - wl - 1;
				while (gl && *g == ' ')
					g++, gl--;
				if (gl && !memchr(g, ' ', gl)) {
					c->word = words[i];
					memcpy(c->arg, g, gl);
					c->arg[gl] = 0;
					return 1;
				}
			}
		}
	}
	return 0;
}

/* Records the refusal; the sender is told (notice_refusal decides
 * whether they may be) unless tell is 0: mail without a token or with a
 * forged one may come from anyone, about anyone. */
static void refuse(struct store *st, const struct mf_config *cfg, const struct mf_message *m,
		   const struct auth_verdict *av, int tell, const char **state, char *reason,
		   size_t reasonlen, const char *key, const char *why, const char *advice)
{
	*state = "skipped";
	snprintf(reason, reasonlen, "reply refused: %s", why);
	if (!tell || classify_is_automatic(m) || !m->from_email)
		return;
	notice_refusal(st, cfg, m->from_email, av->verified, m->subject, key,
		       "Your reply was not posted", "to the group feed was not added as a comment",
		       why, advice);
}

/* Leaves one group of email's own subscription ([subscriber], subscribe,
 * earlier commands); the last group left ends it.  The answer (owned) or
 * NULL on a store error. */
static char *leave_group(struct store *st, const char *email, const char *group)
{
	char *left = NULL, *answer;
	int rc = subscribers_leave_group(st, email, group, &left);
	if (rc < 0)
		return NULL;
	if (rc == 0)
		return xasprintf("This address gets nothing from a group named \"%s\" through "
				 "the digests, so nothing was changed.  The groups are named at "
				 "the bottom of each digest.\n",
				 group);
	answer = left ? xasprintf("You left \"%s\": its posts no longer come in your "
				  "digests or notifications.  You still get: %s.\n",
				  group, left)
		      : xasprintf("You left \"%s\", the last group you followed: no more "
				  "digests or notifications will be sent to this address.\n",
				  group);
	free(left);
	return answer;
}

/* Mutes (or unmutes) the thread of remote_id for email.  The answer (owned)
 * or NULL on a store error. */
static char *mute_thread(struct store *st, const char *email, const char *remote_id, int mute)
{
	if (!remote_id)
		return xstrdup("To mute a thread, reply \"mute\" to the reply address of its post "
			       "(the \"Reply by email\" link in a digest, or a notification).\n");
	if (subscribers_mute(st, email, remote_id, mute) < 0)
		return NULL;
	return xstrdup(mute ? "This thread is muted: its new comments leave your digests and "
			      "notifications.  Reply \"unmute\" to the same address to follow "
			      "it again.\n"
			    : "This thread is no longer muted.\n");
}

/* Changes the sender's frequency; creates the subscription for the post's
 * group when there is none.  Returns the confirmation text (owned) or NULL
 * on a store error. */
static char *apply_command(struct store *st, const char *email, const char *cmd, const char *grp)
{
	const char *freq = strcmp(cmd, "unsubscribe") == 0 ? "never" : cmd;
	int changed;

	if (store_begin(st) < 0)
		return NULL;
	/* a member of feed groups: the command makes the subscription its own,
	 * for the same groups, overriding the membership */
	changed = subscribers_set_frequency(st, email, freq, "email");
	if (changed < 0)
		goto fail;
	if (!changed && grp && strcmp(freq, "never") != 0) {
		if (subscribers_put(st, email, grp, freq, -1, NULL, "email", 0) < 0)
			goto fail;
		changed = 1;
	}
	if (store_commit(st) < 0)
		return NULL;
	if (strcmp(freq, "never") == 0)
		return xstrdup(changed ? "You are unsubscribed: no more digests or notifications "
					 "will be sent to this address.\n"
				       : "This address had no subscription; nothing will be sent "
					 "to it.\n");
	if (!changed)
		return xstrdup("This address has no subscription, so the frequency was not "
			       "changed. Reply with \"daily\" to a notification of a post to "
			       "subscribe to its group.\n");
	return xasprintf("Your subscription now sends %s.\n",
			 strcmp(freq, "daily") == 0    ? "one digest a day"
			 : strcmp(freq, "weekly") == 0 ? "one digest a week"
			 : strcmp(freq, "mine") == 0
			     ? "one digest a day of the threads you started, commented on or "
			       "are named in"
			     : "one notification for each new post");
fail:
	store_rollback(st);
	return NULL;
}

static int enqueue_comment(struct store *st, const struct mf_config *cfg, int64_t msg_row,
			   const struct mf_message *m, const struct token_info *ti,
			   const struct auth_verdict *av)
{
	char hash[65], content[65];
	/* Message-ID and content: a forged copy with the genuine reply's
	 * Message-ID, come first, does not take its place */
	json_t *j = message_to_json(m, 0);
	store_content_hash(j, content);
	json_decref(j);
	char *src = m->message_id ? xasprintf("mid:%s\n%s", m->message_id, content)
				  : xasprintf("row:%lld", (long long)msg_row);
	sha256_hex(src, strlen(src), hash);
	free(src);
	char key[48];
	snprintf(key, sizeof key, "reply:%.32s", hash);

	struct strlist recipients = {0};
	recipients_mentionable(cfg, m, ti->email, &recipients);
	struct outbox_new n = {
	    .message = msg_row,
	    .key = key,
	    .kind = "comment",
	    .group = ti->grp,
	    .msg = m,
	    .author_name = m->from_name,
	    .author_email = ti->email,
	    .author_verified = av->verified,
	    .author_check = av->why,
	    .parent_remote_id = ti->remote_id,
	    .recipients = &recipients,
	};
	if (store_begin(st) < 0) {
		strlist_free(&recipients);
		return -1;
	}
	int64_t item = outbox_enqueue(st, &n);
	strlist_free(&recipients);
	if (item < 0)
		goto fail;
	if (messages_set_state(st, msg_row, MSG_QUEUED, NULL, NULL) < 0)
		goto fail;
	return store_commit(st);
fail:
	store_rollback(st);
	return -1;
}

/* "unsubscribe" sent to the feed's own address, not to a reply address:
 * only the verified sender's word counts.  Returns 0, or -1 (store). */
static int reply_feed_unsubscribe(struct store *st, const struct mf_config *cfg,
				  const struct mf_message *m, const struct auth_verdict *av,
				  const struct command *plain, const char **state, char *reason,
				  size_t reasonlen)
{
	char q[300];
	if (!av->verified) {
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "unsubscribe-unverified",
		       "your mail server did not vouch for the sender address, so anyone "
		       "could have sent it",
		       "Use the Unsubscribe link at the bottom of a digest or notification, "
		       "or reply \"unsubscribe\" to one of them.");
		return 0;
	}
	char *answer = plain->arg[0] ? leave_group(st, m->from_email, plain->arg)
				     : apply_command(st, m->from_email, "unsubscribe", NULL);
	if (!answer) {
		snprintf(reason, reasonlen, "store error: %s", store_errmsg(st));
		return -1;
	}
	*state = "handled";
	snprintf(reason, reasonlen, "subscription command: unsubscribe");
	log_info("reply.command from=%s command=unsubscribe via=feed-address",
		 log_quote(m->from_email, q, sizeof q));
	notice_send(st, cfg, m->from_email, "command-unsubscribe", "Your digest subscription",
		    answer);
	free(answer);
	return 0;
}

/* Refuses a reply whose address is missing, forged or expired, or that
 * came from someone else or unauthenticated where that is required.
 * Returns 1 when it was refused. */
static int reply_refuse_target(struct store *st, const struct mf_config *cfg,
			       const struct mf_message *m, const struct auth_verdict *av,
			       const struct reply_target *t, const char **state, char *reason,
			       size_t reasonlen)
{
	char why[256];
	if (!t->found) {
		refuse(st, cfg, m, av, 0, state, reason, reasonlen, "reply-no-token",
		       "it was not sent to the reply address of a post",
		       "Use the \"Reply by email\" link of a post in a digest or notification.");
		return 1;
	}
	if (t->status == TOKEN_FORGED) {
		refuse(st, cfg, m, av, 0, state, reason, reasonlen, "reply-forged",
		       "the reply address is not one this feed issued",
		       "Use the \"Reply by email\" link of a post in a recent digest or "
		       "notification.");
		return 1;
	}
	if (t->status == TOKEN_EXPIRED) {
		char day[32];
		time_iso(t->ti.expires, day, sizeof day);
		day[10] = 0;
		snprintf(why, sizeof why,
			 t->found == 1 ? "the reply address expired on %s"
				       : "the notification it answers could be answered until %s",
			 day);
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "reply-expired", why,
		       "Reply from a more recent digest or notification.");
		return 1;
	}
	if (!m->from_email || strcasecmp(m->from_email, t->ti.email) != 0) {
		snprintf(why, sizeof why,
			 "it was sent from %s, but that reply address belongs to someone else",
			 m->from_email ? m->from_email : "an unknown address");
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "reply-wrong-sender", why,
		       "Reply from the address the digest or notification was sent to.");
		return 1;
	}
	if (cfg->gateway.trusted_authserv && !av->verified) {
		snprintf(why, sizeof why, "the sender is %.230s", av->why);
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "reply-unauthenticated", why,
		       "Ask your mail administrator to sign your outgoing mail (DKIM).");
		return 1;
	}
	return 0;
}

/* A subscription command in a reply (mute, unmute, leave a group, ...):
 * applied and answered.  Returns 0, or -1 (store). */
static int reply_command(struct store *st, const struct mf_config *cfg,
			 const struct reply_target *t, const struct command *c, const char **state,
			 char *reason, size_t reasonlen)
{
	char q[300];
	const char *cmd = c->word;
	char *answer =
	    strcmp(cmd, "mute") == 0 || strcmp(cmd, "unmute") == 0
		? mute_thread(st, t->ti.email, t->ti.kind == TOKEN_REPLY ? t->ti.remote_id : NULL,
			      strcmp(cmd, "mute") == 0)
	    : c->arg[0] ? leave_group(st, t->ti.email, c->arg)
			: apply_command(st, t->ti.email, cmd, t->ti.grp);
	if (!answer) {
		snprintf(reason, reasonlen, "store error: %s", store_errmsg(st));
		return -1;
	}
	*state = "handled";
	snprintf(reason, reasonlen, "subscription command: %s", cmd);
	log_info("reply.command from=%s command=%s", log_quote(t->ti.email, q, sizeof q), cmd);
	char *key = xasprintf("command-%s", cmd);
	notice_send(st, cfg, t->ti.email, key, "Your digest subscription", answer);
	free(key);
	free(answer);
	return 0;
}

/* A reply to one post: queued as its comment, unless it answers the digest
 * as a whole or nothing is left after the quote.  Returns 0, or -1. */
static int reply_comment(struct store *st, const struct mf_config *cfg, int64_t msg_row,
			 const struct mf_message *m, const struct auth_verdict *av,
			 const struct reply_target *t, const char **state, char *reason,
			 size_t reasonlen)
{
	char q[300], q2[300];
	if (t->ti.kind != TOKEN_REPLY || !t->ti.remote_id) {
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "reply-no-post",
		       "it answers the digest as a whole, not one post",
		       "Use the \"Reply by email\" link under the post you want to answer.");
		return 0;
	}
	if (!m->text || !*m->text) {
		refuse(st, cfg, m, av, 1, state, reason, reasonlen, "reply-empty",
		       "nothing was left after removing the quoted text",
		       "Write your answer above the quoted message.");
		return 0;
	}
	if (enqueue_comment(st, cfg, msg_row, m, &t->ti, av) < 0) {
		snprintf(reason, reasonlen, "store error: %s", store_errmsg(st));
		return -1;
	}
	*state = "queued";
	log_info("reply.queued id=%lld from=%s post=%s", (long long)msg_row,
		 log_quote(t->ti.email, q, sizeof q), log_quote(t->ti.remote_id, q2, sizeof q2));
	return 0;
}

int replies_process(struct store *st, const struct mf_config *cfg, int64_t msg_row,
		    const struct mf_message *m, const struct auth_verdict *av, const char **state,
		    char *reason, size_t reasonlen)
{
	struct reply_target t;
	struct command plain, c;
	char why[256];
	int rc = 0;

	*state = "skipped";
	reason[0] = 0;
	if (classify_is_automatic(m)) {
		const char *r = classify_skip(m, NULL, cfg, why, sizeof why);
		snprintf(reason, reasonlen, "%s", r ? r : "automatic mail: not answered");
		return 0;
	}
	find_target(st, cfg, m, &t);
	if (!t.found && m->from_email && find_command(m, &plain) &&
	    strcmp(plain.word, "unsubscribe") == 0)
		rc = reply_feed_unsubscribe(st, cfg, m, av, &plain, state, reason, reasonlen);
	else if (reply_refuse_target(st, cfg, m, av, &t, state, reason, reasonlen))
		rc = 0;
	else if (find_command(m, &c) && c.word)
		rc = reply_command(st, cfg, &t, &c, state, reason, reasonlen);
	else
		rc = reply_comment(st, cfg, msg_row, m, av, &t, state, reason, reasonlen);
	token_info_clear(&t.ti);
	return rc;
}
