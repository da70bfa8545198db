/* ceiling: the fastest possible consumer of threatseer.bpf.o, for the benchmark.
 *
 * Loads the same BPF object the sensor loads, sets it up the way threatseer.native.Probe
 * does (ring size, batched wakeups, self filter, memory-cgroup hierarchy, sensitive prefixes
 * with the same '*' rule), attaches every program and only COUNTS records for N seconds: no decoding,
 * no Python. Whatever the sensor achieves is measured against this.
 *
 * Build: gcc -O2 -Wall -o bench/ceiling bench/ceiling.c -Inative/include -lbpf -lelf -lz
 * Run:   bench/ceiling native/threatseer.bpf.o SECONDS RING_KIB [PREFIX...]
 *        e.g. bench/ceiling native/threatseer.bpf.o 10 16384 /etc/passwd /etc/shadow
 * Prints one JSON line: {"events":N,"lost":N,"filtered":N,"seconds":S,"events_per_s":R}
 * ("lost" = records the kernel could not reserve in THIS consumer's ring). Starts
 * counting once attached; prints "ready" on stderr at that point.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "records.h"

static unsigned long long n_events;
static volatile sig_atomic_t stop;

static int on_sample(void *ctx, void *data, size_t size)
{
	(void)ctx; (void)data; (void)size;
	n_events++;
	return 0;
}

static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned int memory_hierarchy(void)
{
	char name[64];
	unsigned int hier, num, enabled;
	FILE *f = fopen("/proc/cgroups", "r");
	unsigned int found = TSR_NO_HIERARCHY;
	if (!f)
		return found;
	fscanf(f, "%*[^\n]\n");
	while (fscanf(f, "%63s %u %u %u\n", name, &hier, &num, &enabled) == 4)
		if (!strcmp(name, "memory") && hier > 0 && enabled)
			found = hier;
	fclose(f);
	return found;
}

/* Same rule as probe.compile_prefixes: bit k when component k is exactly '*'. */
static unsigned int wild_bit(const char *prefix)
{
	unsigned int comp = 0;
	for (const char *p = prefix; *p; p++) {
		if (*p == '/')
			comp++;
		else if (*p == '*' && p[-1] == '/' && (p[1] == '/' || !p[1]))
			return comp <= 7 ? 1u << comp : 0;
	}
	return 0;
}

static unsigned long long counter(int fd, __u32 idx, int ncpu)
{
	unsigned long long vals[ncpu], sum = 0;
	if (bpf_map_lookup_elem(fd, &idx, vals))
		return 0;
	for (int i = 0; i < ncpu; i++)
		sum += vals[i];
	return sum;
}

static int map_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
	return m ? bpf_map__fd(m) : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s OBJ SECONDS RING_KIB [PREFIX...]\n", argv[0]);
		return 2;
	}
	double seconds = atof(argv[2]);
	unsigned long ring = 4096;
	while (ring < strtoul(argv[3], NULL, 10) * 1024)
		ring *= 2;

	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "ts_events"), ring);
	if (bpf_object__load(obj)) {
		fprintf(stderr, "load: %s\n", strerror(errno));
		return 1;
	}
	/* same batched wakeups as Probe's default: min(256 KiB, ring / 8) */
	struct tsr_config cfg = {
		.self_tgid = getpid(),
		.memcg_hierarchy = memory_hierarchy(),
		.wakeup_bytes = ring / 8 < 256 * 1024 ? ring / 8 : 256 * 1024,
	};
	for (int i = 4; i < argc; i++) {
		struct tsr_prefix_key key;
		__u8 one = 1;
		size_t n = strlen(argv[i]);
		if (n == 0 || n > TSR_PREFIX_MAX)
			continue;
		memset(&key, 0, sizeof(key));
		key.prefixlen = n * 8;
		memcpy(key.data, argv[i], n);
		if (bpf_map_update_elem(map_fd(obj, "ts_prefixes"), &key, &one, 0))
			fprintf(stderr, "prefix %s: %s\n", argv[i], strerror(errno));
		cfg.wild_mask |= wild_bit(argv[i]);
	}
	__u32 zero = 0, hold = TSR_READER_HOLD;
	bpf_map_update_elem(map_fd(obj, "ts_config"), &zero, &cfg, 0);
	/* the cheapest consumer: woken only at wakeup_bytes, else by its poll timeout */
	bpf_map_update_elem(map_fd(obj, "ts_reader"), &zero, &hold, 0);

	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__attach(prog))
			fprintf(stderr, "attach %s: %s (skipped)\n", bpf_program__name(prog),
				strerror(errno));
	}
	struct ring_buffer *rb = ring_buffer__new(map_fd(obj, "ts_events"), on_sample, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	int ncpu = libbpf_num_possible_cpus();
	int counters = map_fd(obj, "ts_counters");
	fprintf(stderr, "ready\n");

	double t0 = now(), end = t0 + seconds;
	while (!stop && now() < end) {
		ring_buffer__poll(rb, 100);
		ring_buffer__consume(rb);   /* what is pending below the wakeup threshold */
	}
	ring_buffer__consume(rb);
	double took = now() - t0;
	printf("{\"events\":%llu,\"lost\":%llu,\"filtered\":%llu,\"seconds\":%.3f,"
	       "\"events_per_s\":%.1f}\n",
	       n_events, counter(counters, TSR_C_LOST, ncpu), counter(counters, TSR_C_FILTERED, ncpu),
	       took, n_events / took);
	ring_buffer__free(rb);
	bpf_object__close(obj);   /* links go with the process; the object frees the programs */
	return 0;
}
