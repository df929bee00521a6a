/* feed.c — the registry of feed backends and the helpers every backend
 * shares for what it hands back (results and read entries).  Each backend
 * lives in its own file (feed_local.c, feed_webhook.c, feed_chatter.c,
 * feed_mattermost.c) and exports one const ops table. */
#include <stdlib.h>
#include <string.h>

#include "mailfeed/feed.h"

const struct feed_backend_ops *feed_backend(enum feed_backend b)
{
	switch (b) {
	case FEED_LOCAL:
		return &feed_local_ops;
	case FEED_CHATTER:
		return &feed_chatter_ops;
	case FEED_MATTERMOST:
		return &feed_mattermost_ops;
	case FEED_WEBHOOK:
		return &feed_webhook_ops;
	}
	return NULL;
}

void feed_entries_free(struct feed_entry *e, size_t n)
{
	if (!e)
		return;
	for (size_t i = 0; i < n; i++) {
		free(e[i].remote_id);
		free(e[i].parent_remote_id);
		free(e[i].group);
		free(e[i].author_name);
		free(e[i].author_email);
		free(e[i].subject);
		free(e[i].text);
		free(e[i].url);
	}
	free(e);
}

void feed_result_clear(struct feed_result *r)
{
	free(r->remote_id);
	memset(r, 0, sizeof *r);
}

void feed_members_free(struct feed_member *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].email);
		free(m[i].name);
	}
	free(m);
}
