/* health.c — the liveness table behind GET /healthz: one slot per part of
 * the daemon that must make progress, each with the latest time it
 * promised to beat again, or a known wait with its reason. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/health.h"

#define MAX_SLOTS 256
/* The longest a step may go without progress, and the lateness past a
 * promise tolerated (scheduling, a slow disk).  MAILFEED_HEALTH_STEP
 * (seconds) shortens both for tests. */
#define STEP 600.0
#define GRACE 30.0

double health_step(void)
{
	static double step;
	if (step == 0) {
		const char *e = getenv("MAILFEED_HEALTH_STEP");
		double v = e ? strtod(e, NULL) : 0;
		step = v > 0 ? v : STEP;
	}
	return step;
}

static double grace(void)
{
	double g = health_step() / 4;
	return g < GRACE ? g : GRACE;
}

struct slot {
	char *name;
	double last;	   /* the last beat or wait */
	double due;	   /* beat expected by then */
	double wait_until; /* > now: in a known wait */
	enum health_wait kind;
	char *reason;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[MAX_SLOTS];
/* the state database unreachable since (monotonic), and why */
static double away_since;
static char *away_reason;
static __thread int bound = -1;

void health_bind(int slot) { bound = slot; }

void health_beat_current(double within)
{
	if (bound >= 0)
		health_beat(bound, within);
}

int health_register(const char *name)
{
	int id = -1;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_SLOTS; i++) {
		if (!slots[i].name) {
			slots[i].name = xstrdup(name);
			slots[i].last = now_monotonic();
			slots[i].due = slots[i].last + 120;
			slots[i].wait_until = 0;
			id = i;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	return id;
}

static void slot_clear(struct slot *s)
{
	free(s->name);
	free(s->reason);
	memset(s, 0, sizeof *s);
}

void health_unregister(int slot)
{
	if (slot < 0 || slot >= MAX_SLOTS)
		return;
	pthread_mutex_lock(&lock);
	slot_clear(&slots[slot]);
	pthread_mutex_unlock(&lock);
}

void health_reset(void)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_SLOTS; i++)
		slot_clear(&slots[i]);
	free(away_reason);
	away_reason = NULL;
	pthread_mutex_unlock(&lock);
}

void health_beat(int slot, double within)
{
	if (slot < 0 || slot >= MAX_SLOTS)
		return;
	pthread_mutex_lock(&lock);
	if (slots[slot].name) {
		slots[slot].last = now_monotonic();
		slots[slot].due = slots[slot].last + within;
		slots[slot].wait_until = 0;
	}
	pthread_mutex_unlock(&lock);
}

void health_wait(int slot, enum health_wait kind, double seconds, const char *reason)
{
	if (slot < 0 || slot >= MAX_SLOTS)
		return;
	pthread_mutex_lock(&lock);
	struct slot *s = &slots[slot];
	if (s->name) {
		double now = now_monotonic();
		s->last = now;
		s->wait_until = now + seconds;
		s->due = now + seconds;
		s->kind = kind;
		free(s->reason);
		s->reason = xstrdup(reason ? reason : "");
	}
	pthread_mutex_unlock(&lock);
}

void health_set_unavailable(const char *reason)
{
	pthread_mutex_lock(&lock);
	if (reason && !away_reason)
		away_since = now_monotonic();
	free(away_reason);
	away_reason = reason ? xstrdup(reason) : NULL;
	pthread_mutex_unlock(&lock);
}

int health_unavailable(void)
{
	pthread_mutex_lock(&lock);
	int away = away_reason != NULL;
	pthread_mutex_unlock(&lock);
	return away;
}

static const char *wait_text(enum health_wait kind)
{
	switch (kind) {
	case HEALTH_AUTH_BACKOFF:
		return "login refused, waiting";
	case HEALTH_STANDBY:
		return "standing by";
	default:
		return "backing off";
	}
}

int health_report(struct buf *out)
{
	int healthy = 1;
	pthread_mutex_lock(&lock);
	double now = now_monotonic();
	if (away_reason) {
		healthy = 0;
		if (out)
			buf_printf(
			    out, "state database: unreachable for %.0f s, work waits for it: %s\n",
			    now - away_since, away_reason);
	}
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct slot *s = &slots[i];
		if (!s->name)
			continue;
		if (now > s->due + grace()) {
			healthy = 0;
			if (out)
				buf_printf(out, "%s: no progress for %.0f s\n", s->name,
					   now - s->last);
		} else if (s->wait_until > now) {
			if (out)
				buf_printf(out, "%s: %s for %.0f s more: %s\n", s->name,
					   wait_text(s->kind), s->wait_until - now, s->reason);
		} else if (out) {
			buf_printf(out, "%s: ok\n", s->name);
		}
	}
	pthread_mutex_unlock(&lock);
	return healthy;
}
