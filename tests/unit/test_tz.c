/* test_tz.c — local times from zoneinfo files agree with the C library's
 * (which reads the same files), across DST changes, before the first and
 * after the last transition (the POSIX rule of the file's footer), and a
 * damaged zone file is refused rather than misread. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "mailfeed/tz.h"
#include "mailfeed/util.h"

static const char *const zones[] = {
    "Europe/Berlin",	"America/New_York",  "Australia/Sydney", "Asia/Kolkata",
    "Asia/Tehran",	"Pacific/Chatham",   "America/St_Johns", "Europe/Dublin",
    "America/Santiago", "Africa/Casablanca", "Pacific/Apia",	 "UTC",
};

static void setzone(const char *zone)
{
	char v[128];
	snprintf(v, sizeof v, ":%s", zone);
	setenv("TZ", v, 1); /* single-threaded test: the reference */
	tzset();
}

static void test_agrees_with_libc(void **state)
{
	for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
		struct tz *z = tz_load(zones[i]);
		assert_non_null(z);
		setzone(zones[i]);
		/* 1900 .. 2100 in steps of a prime number of seconds (about 9 h) */
		for (time_t t = -2208988800LL; t < 4102444800LL; t += 32401) {
			struct tm a, b;
			tz_localtime(z, t, &a);
			localtime_r(&t, &b);
			if (a.tm_gmtoff != b.tm_gmtoff || a.tm_hour != b.tm_hour ||
			    a.tm_mday != b.tm_mday || a.tm_isdst != b.tm_isdst ||
			    a.tm_yday != b.tm_yday || a.tm_wday != b.tm_wday)
				fail_msg("%s at %lld: %ld/%d vs libc %ld/%d", zones[i],
					 (long long)t, a.tm_gmtoff, a.tm_isdst, b.tm_gmtoff,
					 b.tm_isdst);
		}
		tz_free(z);
	}
	unsetenv("TZ");
	tzset();
}

static void test_moment(void **state)
{
	struct tz *ny = tz_load("America/New_York");
	struct tz *sy = tz_load("Australia/Sydney");
	assert_non_null(ny);
	assert_non_null(sy);
	/* an ordinary hour, the gap (end of it), the repeated hour (first) */
	assert_int_equal(tz_moment(ny, 2026, 3, 7, 7), 1772884800);  /* 12:00Z */
	assert_int_equal(tz_moment(ny, 2026, 3, 8, 2), 1772953200);  /* 07:00Z */
	assert_int_equal(tz_moment(ny, 2026, 11, 1, 1), 1793509200); /* 05:00Z */
	/* far beyond the file's transitions: the footer rule */
	assert_int_equal(tz_moment(ny, 2080, 7, 1, 12), 3487075200); /* 16:00Z */
	/* the southern hemisphere: daylight time over new year */
	assert_int_equal(tz_offset(sy, 1767225600), 11 * 3600); /* 2026-01-01 */
	assert_int_equal(tz_offset(sy, 1782864000), 10 * 3600); /* 2026-07-01 */
	tz_free(ny);
	tz_free(sy);
}

static void test_calendar(void **state)
{
	long y;
	int m, d, w;
	assert_int_equal(tz_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(tz_days_from_civil(2000, 3, 1), 11017);
	tz_civil_from_days(-1, &y, &m, &d);
	assert_true(y == 1969 && m == 12 && d == 31);
	assert_int_equal(tz_weekday(0), 4); /* Thursday */
	tz_iso_week(tz_days_from_civil(2027, 1, 1), &y, &w);
	assert_true(y == 2026 && w == 53);
	tz_iso_week(tz_days_from_civil(2026, 10, 26), &y, &w);
	assert_true(y == 2026 && w == 44);
	tz_iso_week(tz_days_from_civil(2024, 12, 30), &y, &w);
	assert_true(y == 2025 && w == 1);
}

static void test_bad_zones(void **state)
{
	assert_null(tz_load("Not/AZone"));
	assert_null(tz_load("../../etc/passwd"));
	assert_null(tz_load("/etc/localtime"));
	assert_null(tz_load("Europe/Berlin\n"));
	struct tz *u = tz_load("UTC");
	assert_int_equal(tz_offset(u, 1767225600), 0);
	tz_free(u);

	/* every truncation and a byte flipped anywhere: refused or parsed, never misread */
	FILE *f = fopen(TZ_DIR "/Europe/Berlin", "rb");
	assert_non_null(f);
	unsigned char buf[8192];
	size_t len = fread(buf, 1, sizeof buf, f);
	fclose(f);
	for (size_t n = 0; n < len; n++)
		tz_free(tz_parse(buf, n));
	for (size_t i = 0; i < len; i++) {
		unsigned char save = buf[i];
		buf[i] ^= 0xff;
		struct tz *z = tz_parse(buf, len);
		if (z) {
			struct tm tm;
			tz_localtime(z, 1767225600, &tm);
			assert_true(tm.tm_gmtoff >= -26 * 3600 && tm.tm_gmtoff <= 26 * 3600);
		}
		tz_free(z);
		buf[i] = save;
	}
}

struct worker_arg {
	const char *zone;
	int hour;
	time_t expect;
	int wrong;
};

static void *worker(void *p)
{
	struct worker_arg *a = p;
	for (int i = 0; i < 2000; i++) {
		struct tz *z = tz_load(a->zone);
		if (!z || tz_moment(z, 2026, 3, 29, a->hour) != a->expect)
			a->wrong++;
		tz_free(z);
	}
	return NULL;
}

/* Zones in use by several threads at once never see each other, and the
 * process environment is left alone. */
static void test_threads(void **state)
{
	struct worker_arg args[] = {{"Europe/Berlin", 2, 1774746000, 0},
				    {"America/New_York", 7, 1774782000, 0},
				    {"Asia/Kolkata", 9, 1774755000, 0}};
	pthread_t th[3];
	unsetenv("TZ");
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].wrong, 0);
	}
	assert_null(getenv("TZ"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_agrees_with_libc), cmocka_unit_test(test_moment),
	    cmocka_unit_test(test_calendar),	     cmocka_unit_test(test_bad_zones),
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
