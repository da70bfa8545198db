/* loadgen: a load generator for the sensor benchmark.
 *
 * Modes:
 *   open: openat()+close() of a watched path in a loop (default /etc/passwd);
 *   exec: fork()+execve("/bin/true") and wait, in a loop.
 * RATE is operations per second (0 = as fast as possible); pacing is checked every
 * operation against the elapsed time, so short stalls are caught up.
 *
 * Build: gcc -O2 -Wall -o bench/loadgen bench/loadgen.c
 * Run:   bench/loadgen open SECONDS [RATE] [PATH]
 *        bench/loadgen exec SECONDS [RATE]
 * Prints one JSON line: {"mode":"open","ops":N,"seconds":S,"ops_per_s":R}
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one_open(const char *path)
{
	int fd = openat(AT_FDCWD, path, O_RDONLY);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int one_exec(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char *argv[] = {"/bin/true", NULL};
		execv(argv[0], argv);
		_exit(127);
	}
	int status;
	waitpid(pid, &status, 0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[1], "open") && strcmp(argv[1], "exec"))) {
		fprintf(stderr, "usage: %s open|exec SECONDS [RATE] [PATH]\n", argv[0]);
		return 2;
	}
	int is_open = !strcmp(argv[1], "open");
	double seconds = atof(argv[2]);
	double rate = argc > 3 ? atof(argv[3]) : 0;
	const char *path = argc > 4 ? argv[4] : "/etc/passwd";
	unsigned long long ops = 0, failed = 0;
	double t0 = now(), end = t0 + seconds, t;

	while ((t = now()) < end) {
		if (rate > 0 && ops >= (t - t0) * rate) {
			double ahead = ops / rate - (t - t0);
			struct timespec ts = {0, (long)(ahead * 1e9)};
			if (ts.tv_nsec > 999999999)
				ts.tv_nsec = 999999999;
			nanosleep(&ts, NULL);
			continue;
		}
		if ((is_open ? one_open(path) : one_exec()) < 0)
			failed++;
		ops++;
	}
	double took = now() - t0;
	printf("{\"mode\":\"%s\",\"ops\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"ops_per_s\":%.1f}\n",
	       argv[1], ops, failed, took, ops / took);
	return 0;
}
