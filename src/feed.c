/* feed.c — the registry of feed backends and the helpers every backend
 * shares: what it hands back (results and read entries) and its memory of
 * users looked up by email.  Each backend lives in its own file
 * (feed_local.c, feed_webhook.c, feed_chatter.c, feed_mattermost.c) and
 * exports one const ops table. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
		free(e[i].post_subject);
		for (size_t k = 0; k < e[i].n_files; k++) {
			free(e[i].files[k].name);
			free(e[i].files[k].url);
		}
		free(e[i].files);
	}
	free(e);
}

void feed_entry_add_file(struct feed_entry *e, const char *name, long long size, const char *url)
{
	e->files = xrealloc(e->files, (e->n_files + 1) * sizeof *e->files);
	struct feed_file *f = &e->files[e->n_files++];
	f->name = xstrdup(name && *name ? name : "file");
	f->size = size;
	f->url = url && *url ? xstrdup(url) : NULL;
}

void feed_result_clear(struct feed_result *r)
{
	free(r->remote_id);
	memset(r, 0, sizeof *r);
}

/* --- users by email ------------------------------------------------------- */

struct feed_user {
	char *email;
	char *id; /* NULL: no user */
	char *name;
	int restricted;
	time_t checked;
};

struct feed_user_cache {
	pthread_mutex_t mu;
	long ttl_found, ttl_none;
	struct feed_user *v;
	size_t n;
};

struct feed_user_cache *feed_user_cache_new(long ttl_found, long ttl_none)
{
	struct feed_user_cache *c = xcalloc(1, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	c->ttl_found = ttl_found;
	c->ttl_none = ttl_none;
	return c;
}

static void user_clear(struct feed_user *u)
{
	free(u->email);
	free(u->id);
	free(u->name);
}

void feed_user_cache_free(struct feed_user_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		user_clear(&c->v[i]);
	free(c->v);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static int user_fresh(const struct feed_user_cache *c, const struct feed_user *u, time_t now)
{
	return now - u->checked < (u->id && !u->restricted ? c->ttl_found : c->ttl_none);
}

static struct feed_user *user_find(struct feed_user_cache *c, const char *email)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcasecmp(c->v[i].email, email) == 0)
			return &c->v[i];
	return NULL;
}

int feed_user_cache_get(struct feed_user_cache *c, const char *email, time_t now, char **id,
			char **name, int *restricted)
{
	*id = *name = NULL;
	pthread_mutex_lock(&c->mu);
	struct feed_user *u = user_find(c, email);
	int rc = -1;
	if (u && user_fresh(c, u, now)) {
		rc = u->id != NULL;
		if (rc) {
			*id = xstrdup(u->id);
			*name = u->name ? xstrdup(u->name) : NULL;
			if (restricted)
				*restricted = u->restricted;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void feed_user_cache_put(struct feed_user_cache *c, const char *email, time_t now, const char *id,
			 const char *name)
{
	pthread_mutex_lock(&c->mu);
	struct feed_user *u = user_find(c, email);
	if (!u && c->n >= FEED_USER_CACHE_MAX) {
		size_t k = 0;
		for (size_t i = 0; i < c->n; i++) {
			if (user_fresh(c, &c->v[i], now))
				c->v[k++] = c->v[i];
			else
				user_clear(&c->v[i]);
		}
		c->n = k;
		if (k >= FEED_USER_CACHE_MAX) {
			size_t oldest = 0;
			for (size_t i = 1; i < k; i++)
				if (c->v[i].checked < c->v[oldest].checked)
					oldest = i;
			user_clear(&c->v[oldest]);
			c->v[oldest] = c->v[--c->n];
		}
	}
	if (!u) {
		c->v = xrealloc(c->v, (c->n + 1) * sizeof *c->v);
		u = &c->v[c->n++];
		memset(u, 0, sizeof *u);
		u->email = xstrdup(email);
	}
	free(u->id);
	free(u->name);
	u->id = id ? xstrdup(id) : NULL;
	u->name = id && name ? xstrdup(name) : NULL;
	u->restricted = 0;
	u->checked = now;
	pthread_mutex_unlock(&c->mu);
}

void feed_user_cache_restrict(struct feed_user_cache *c, const char *email, time_t now)
{
	pthread_mutex_lock(&c->mu);
	struct feed_user *u = user_find(c, email);
	if (u) {
		u->restricted = 1;
		u->checked = now;
	}
	pthread_mutex_unlock(&c->mu);
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
