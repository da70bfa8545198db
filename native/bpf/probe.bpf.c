#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tp/sched/sched_process_exec")
int probe_exec(void *ctx) { return 0; }
