/* digest_schedule.c — when a subscriber's digest is due: the period
 * (daily or weekly, at their hour) of a moment in their IANA zone, across
 * DST gaps and repeats, and whether a zone name may be used at all. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "mailfeed/digest.h"
#include "mailfeed/tz.h"

/* Local times come from tz.c, which reads the zone's file itself: no TZ,
 * no tzset, nothing shared with the IMAP and HTTP threads. */

int digest_zone_valid(const char *zone)
{
	char path[512], magic[4];
	FILE *f;
	int ok;
	if (!zone || !*zone || zone[0] == '/' || strstr(zone, "..") || strlen(zone) > 200)
		return 0;
	for (const char *p = zone; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p))
			return 0;
	snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", zone);
	f = fopen(path, "rb");
	if (!f)
		return 0;
	ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "TZif", 4) == 0;
	fclose(f);
	return ok;
}

/* The local date `days` days from y-m-d (month 1-12). */
static void add_days(long *year, int *mon, int *mday, int days)
{
	tz_civil_from_days(tz_days_from_civil(*year, *mon, *mday) + days, year, mon, mday);
}

int digest_period(time_t now, enum frequency f, int hour, int weekly_day, const char *tz, char *key,
		  size_t keylen, time_t *sched)
{
	struct tz *zone;
	struct tm lt;
	long y;
	int m, d, rc = 0;

	if (f == FREQ_MINE)
		f = FREQ_DAILY; /* a daily digest, filtered */
	if (f != FREQ_DAILY && f != FREQ_WEEKLY)
		return -1;
	if (tz && *tz && strcmp(tz, "UTC") != 0 && !digest_zone_valid(tz))
		return -1;
	if (hour < 0 || hour > 23)
		hour = 0;
	zone = tz_load(tz);
	if (!zone)
		return -1;
	tz_localtime(zone, now, &lt);
	y = lt.tm_year + 1900L;
	m = lt.tm_mon + 1;
	d = lt.tm_mday;
	if (f == FREQ_WEEKLY) {
		int back = ((lt.tm_wday - weekly_day) % 7 + 7) % 7;
		add_days(&y, &m, &d, -back);
	}
	*sched = tz_moment(zone, (int)y, m, d, hour);
	if (*sched > now) {
		add_days(&y, &m, &d, f == FREQ_WEEKLY ? -7 : -1);
		*sched = tz_moment(zone, (int)y, m, d, hour);
	}
	if (*sched == (time_t)-1) {
		rc = -1;
	} else if (f == FREQ_WEEKLY) {
		long iso_year;
		int week;
		tz_iso_week(tz_days_from_civil(y, m, d), &iso_year, &week);
		snprintf(key, keylen, "w:%04ld-W%02d", iso_year, week);
	} else {
		snprintf(key, keylen, "d:%04ld-%02d-%02d", y, m, d);
	}
	tz_free(zone);
	return rc;
}
