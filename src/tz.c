/* tz.c — zoneinfo files read into private tables, local times computed from
 * them, calendar arithmetic on day numbers.
 *
 * glibc's localtime_r/mktime follow the process-wide TZ, so switching zones
 * means setenv + tzset, which races every other thread that reads the
 * environment (OpenSSL, libcurl, getaddrinfo).  Here a zone is a value:
 * the transitions and time types of its TZif file plus the POSIX rule of
 * its footer for later instants.  The file is untrusted input in the sense
 * that every count and index is checked against the bytes present. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailfeed/tz.h"
#include "mailfeed/util.h"

#define TZ_FILE_MAX (256 * 1024)
#define OFFSET_MAX (26L * 3600)

struct tz_type {
	long off;
	int isdst;
};

/* One end of daylight time in a POSIX TZ rule. */
struct tz_when {
	char kind; /* 'M' month.week.day, 'J' Julian 1-365 without Feb 29, 'N' 0-365 */
	int a, b, c;
	long secs; /* local time of day of the change */
};

struct tz_rule {
	long std_off, dst_off; /* seconds east of UTC */
	int has_dst;
	struct tz_when start, end;
};

struct tz {
	size_t n_trans;
	int64_t *trans;
	unsigned char *idx;
	size_t n_types;
	struct tz_type *types;
	int has_rule;
	struct tz_rule rule;
};

/* ------------------------------------------------------------------ */
/* Calendar                                                            */

long tz_days_from_civil(long year, int month, int mday)
{
	long y = year - (month <= 2);
	long era = (y >= 0 ? y : y - 399) / 400;
	long yoe = y - era * 400;
	long doy = (153L * (month + (month > 2 ? -3 : 9)) + 2) / 5 + mday - 1;
	long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void tz_civil_from_days(long days, long *year, int *month, int *mday)
{
	long z = days + 719468;
	long era = (z >= 0 ? z : z - 146096) / 146097;
	long doe = z - era * 146097;
	long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	long mp = (5 * doy + 2) / 153;
	*mday = (int)(doy - (153 * mp + 2) / 5 + 1);
	*month = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = yoe + era * 400 + (*month <= 2);
}

int tz_weekday(long days) { return (int)(((days % 7) + 11) % 7); }

void tz_iso_week(long days, long *iso_year, int *week)
{
	int monday_based = (tz_weekday(days) + 6) % 7; /* Monday 0 */
	long thursday = days - monday_based + 3;
	long y;
	int m, d;
	tz_civil_from_days(thursday, &y, &m, &d);
	*iso_year = y;
	*week = (int)((thursday - tz_days_from_civil(y, 1, 1)) / 7 + 1);
}

static int is_leap(long y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int month_days(long y, int m)
{
	static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

static long floor_div(long a, long b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* ------------------------------------------------------------------ */
/* POSIX TZ rule (the TZif footer)                                     */

/* Zone abbreviation: 3+ letters, or <...> with letters, digits, + and -. */
static const char *rule_name(const char *p)
{
	const char *s = p;
	if (*p == '<') {
		for (p++; *p && *p != '>'; p++)
			if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-')
				return NULL;
		return *p == '>' && p - s >= 4 ? p + 1 : NULL;
	}
	while (isalpha((unsigned char)*p))
		p++;
	return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]], hours up to max_h.  Seconds into *out. */
static const char *rule_time(const char *p, int max_h, long *out)
{
	int sign = 1;
	long v[3] = {0, 0, 0};
	if (*p == '+' || *p == '-')
		sign = *p++ == '-' ? -1 : 1;
	for (int i = 0; i < 3; i++) {
		if (i && *p != ':')
			break;
		if (i)
			p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		for (int n = 0; isdigit((unsigned char)*p); p++)
			if (++n > 3 || (v[i] = v[i] * 10 + (*p - '0')) > (i ? 59 : max_h))
				return NULL;
	}
	*out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
	return p;
}

static const char *rule_num(const char *p, int lo, int hi, int *out)
{
	long v = 0;
	if (!isdigit((unsigned char)*p))
		return NULL;
	for (int n = 0; isdigit((unsigned char)*p); p++)
		if (++n > 3 || (v = v * 10 + (*p - '0')) > hi)
			return NULL;
	if (v < lo)
		return NULL;
	*out = (int)v;
	return p;
}

static const char *rule_when(const char *p, struct tz_when *w)
{
	w->secs = 7200;
	w->b = w->c = 0;
	if (*p == 'M') {
		w->kind = 'M';
		if (!(p = rule_num(p + 1, 1, 12, &w->a)) || *p != '.' ||
		    !(p = rule_num(p + 1, 1, 5, &w->b)) || *p != '.' ||
		    !(p = rule_num(p + 1, 0, 6, &w->c)))
			return NULL;
	} else if (*p == 'J') {
		w->kind = 'J';
		if (!(p = rule_num(p + 1, 1, 365, &w->a)))
			return NULL;
	} else {
		w->kind = 'N';
		if (!(p = rule_num(p, 0, 365, &w->a)))
			return NULL;
	}
	if (*p == '/' && !(p = rule_time(p + 1, 167, &w->secs)))
		return NULL;
	return p;
}

/* "CET-1CEST,M3.5.0,M10.5.0/3".  POSIX offsets count west of UTC. */
static int rule_parse(const char *s, struct tz_rule *r)
{
	const char *p = rule_name(s);
	long off;
	memset(r, 0, sizeof *r);
	if (!p || !(p = rule_time(p, 24, &off)))
		return -1;
	r->std_off = -off;
	if (!*p)
		return 0;
	if (!(p = rule_name(p)))
		return -1;
	r->has_dst = 1;
	r->dst_off = r->std_off + 3600;
	if (*p && *p != ',') {
		if (!(p = rule_time(p, 24, &off)))
			return -1;
		r->dst_off = -off;
	}
	if (!*p) { /* POSIX leaves the default open; US rules, as glibc does */
		r->start = (struct tz_when){'M', 3, 2, 0, 7200};
		r->end = (struct tz_when){'M', 11, 1, 0, 7200};
		return 0;
	}
	if (*p != ',' || !(p = rule_when(p + 1, &r->start)) || *p != ',' ||
	    !(p = rule_when(p + 1, &r->end)) || *p)
		return -1;
	return 0;
}

/* Day number of a rule's day in year y. */
static long when_day(const struct tz_when *w, long y)
{
	long jan1 = tz_days_from_civil(y, 1, 1);
	if (w->kind == 'J')
		return jan1 + w->a - 1 + (is_leap(y) && w->a >= 60);
	if (w->kind == 'N')
		return jan1 + w->a;
	long first = tz_days_from_civil(y, w->a, 1);
	int d = 1 + (w->c - tz_weekday(first) + 7) % 7 + (w->b - 1) * 7;
	while (d > month_days(y, w->a))
		d -= 7;
	return first + d - 1;
}

static const struct tz_type *rule_type(const struct tz_rule *r, int64_t t, struct tz_type *out)
{
	out->off = r->std_off;
	out->isdst = 0;
	if (!r->has_dst)
		return out;
	long y;
	int m, d;
	tz_civil_from_days(floor_div((long)(t + r->std_off), 86400), &y, &m, &d);
	/* the change to daylight time happens in standard time and back */
	int64_t start = (int64_t)when_day(&r->start, y) * 86400 + r->start.secs - r->std_off;
	int64_t end = (int64_t)when_day(&r->end, y) * 86400 + r->end.secs - r->dst_off;
	int dst = start < end ? t >= start && t < end : !(t >= end && t < start);
	if (dst) {
		out->off = r->dst_off;
		out->isdst = 1;
	}
	return out;
}

/* ------------------------------------------------------------------ */
/* TZif                                                                */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_counts {
	size_t isut, isstd, leap, time, type, chars;
};

static int tzif_header(const unsigned char *p, size_t len, struct tzif_counts *c)
{
	if (len < 44 || memcmp(p, "TZif", 4) != 0)
		return -1;
	c->isut = be32(p + 20);
	c->isstd = be32(p + 24);
	c->leap = be32(p + 28);
	c->time = be32(p + 32);
	c->type = be32(p + 36);
	c->chars = be32(p + 40);
	if (c->type == 0 || c->type > 256 || c->time > 100000 || c->leap > 10000 ||
	    c->chars > 10000 || c->isut > c->type || c->isstd > c->type)
		return -1;
	return 0;
}

static size_t tzif_body(const struct tzif_counts *c, size_t tsize)
{
	return c->time * tsize + c->time + c->type * 6 + c->chars + c->leap * (tsize + 4) +
	       c->isstd + c->isut;
}

struct tz *tz_parse(const unsigned char *data, size_t len)
{
	struct tzif_counts c;
	size_t tsize = 4, pos = 44;
	const unsigned char *p;
	char footer[128] = "";

	if (tzif_header(data, len, &c) < 0)
		return NULL;
	if (data[4] >= '2') { /* skip the 32-bit block, use the 64-bit one */
		pos += tzif_body(&c, 4);
		if (pos > len || tzif_header(data + pos, len - pos, &c) < 0)
			return NULL;
		pos += 44;
		tsize = 8;
	}
	if (tzif_body(&c, tsize) > len - pos)
		return NULL;
	p = data + pos;
	if (tsize == 8) {
		const unsigned char *f = p + tzif_body(&c, tsize), *end = data + len;
		if (f < end && *f == '\n') {
			const unsigned char *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
			if (!nl || (size_t)(nl - f - 1) >= sizeof footer)
				return NULL;
			memcpy(footer, f + 1, (size_t)(nl - f - 1));
			footer[nl - f - 1] = 0;
		}
	}

	struct tz *z = xcalloc(1, sizeof *z);
	z->n_trans = c.time;
	z->n_types = c.type;
	z->trans = xcalloc(c.time ? c.time : 1, sizeof *z->trans);
	z->idx = xcalloc(c.time ? c.time : 1, 1);
	z->types = xcalloc(c.type, sizeof *z->types);
	for (size_t i = 0; i < c.time; i++) {
		z->trans[i] = tsize == 8 ? be64(p + i * 8) : (int32_t)be32(p + i * 4);
		if (i && z->trans[i] <= z->trans[i - 1])
			goto bad;
	}
	p += c.time * tsize;
	for (size_t i = 0; i < c.time; i++)
		if ((z->idx[i] = p[i]) >= c.type)
			goto bad;
	p += c.time;
	for (size_t i = 0; i < c.type; i++, p += 6) {
		z->types[i].off = (int32_t)be32(p);
		z->types[i].isdst = p[4] != 0;
		if (z->types[i].off < -OFFSET_MAX || z->types[i].off > OFFSET_MAX ||
		    p[5] >= c.chars)
			goto bad;
	}
	if (*footer) {
		if (rule_parse(footer, &z->rule) < 0)
			goto bad;
		z->has_rule = 1;
	}
	return z;
bad:
	tz_free(z);
	return NULL;
}

static int zone_name_ok(const char *zone)
{
	if (!*zone || zone[0] == '/' || strstr(zone, "..") || strlen(zone) > 200)
		return 0;
	for (const char *p = zone; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p))
			return 0;
	return 1;
}

struct tz *tz_load(const char *zone)
{
	char path[300];
	unsigned char *data;
	struct stat st;
	struct tz *z = NULL;
	int fd;

	if (!zone || !*zone || strcmp(zone, "UTC") == 0) {
		z = xcalloc(1, sizeof *z);
		z->n_types = 1;
		z->types = xcalloc(1, sizeof *z->types);
		return z;
	}
	if (!zone_name_ok(zone))
		return NULL;
	snprintf(path, sizeof path, "%s/%s", TZ_DIR, zone);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TZ_FILE_MAX) {
		close(fd);
		return NULL;
	}
	data = xmalloc((size_t)st.st_size + 1);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got == (size_t)st.st_size)
		z = tz_parse(data, got);
	free(data);
	return z;
}

void tz_free(struct tz *z)
{
	if (!z)
		return;
	free(z->trans);
	free(z->idx);
	free(z->types);
	free(z);
}

/* ------------------------------------------------------------------ */
/* Conversions                                                         */

static struct tz_type type_at(const struct tz *z, int64_t t)
{
	struct tz_type r;
	if (z->n_trans == 0 || t < z->trans[0]) {
		if (z->n_trans == 0 && z->has_rule)
			return *rule_type(&z->rule, t, &r);
		return z->types[0];
	}
	if (t >= z->trans[z->n_trans - 1] && z->has_rule)
		return *rule_type(&z->rule, t, &r);
	size_t lo = 0, hi = z->n_trans; /* last transition <= t */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (z->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return z->types[z->idx[lo]];
}

long tz_offset(const struct tz *z, time_t t) { return type_at(z, t).off; }

void tz_localtime(const struct tz *z, time_t t, struct tm *out)
{
	struct tz_type ty = type_at(z, t);
	int64_t local = (int64_t)t + ty.off;
	long days = floor_div((long)local, 86400);
	long secs = (long)(local - (int64_t)days * 86400);
	long y;
	int m, d;

	tz_civil_from_days(days, &y, &m, &d);
	memset(out, 0, sizeof *out);
	out->tm_year = (int)(y - 1900);
	out->tm_mon = m - 1;
	out->tm_mday = d;
	out->tm_hour = (int)(secs / 3600);
	out->tm_min = (int)(secs / 60 % 60);
	out->tm_sec = (int)(secs % 60);
	out->tm_wday = tz_weekday(days);
	out->tm_yday = (int)(days - tz_days_from_civil(y, 1, 1));
	out->tm_isdst = ty.isdst;
	out->tm_gmtoff = ty.off;
}

time_t tz_moment(const struct tz *z, int year, int month, int mday, int hour)
{
	int64_t local = (int64_t)tz_days_from_civil(year, month, mday) * 86400 + hour * 3600L;
	/* every offset in force within a day either side; one transition at most */
	long offs[3] = {tz_offset(z, (time_t)(local - 86400)), tz_offset(z, (time_t)local),
			tz_offset(z, (time_t)(local + 86400))};
	int64_t best = INT64_MAX, gap = INT64_MIN;
	for (int i = 0; i < 3; i++) {
		int64_t t = local - offs[i];
		if (tz_offset(z, (time_t)t) == offs[i]) {
			if (t < best)
				best = t;
		} else if (t > gap) {
			gap = t;
		}
	}
	return (time_t)(best != INT64_MAX ? best : gap);
}
