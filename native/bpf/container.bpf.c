/* Container lifecycle: cgroup mkdir/rmdir in the unified (v2) hierarchy and, on v1/v2
 * hybrid hosts, in the v1 memory hierarchy (its id comes from userspace's config), reported
 * as container created/destroyed; userspace keeps those whose name is a container's and
 * learns which v2 cgroup id is which container. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline int cgroup_event(struct trace_event_raw_cgroup *ctx, __u16 kind)
{
	struct tsr_config *cfg = get_config();
	struct scratch *s;
	struct tsr_cgroup *c;

	/* hierarchy 0 is the unified (v2) one */
	if (!cfg || (ctx->root != 0 && ctx->root != cfg->memcg_hierarchy))
		return 0;
	if (is_self(current_tgid()))
		return 0;
	s = get_scratch();
	if (!s)
		return 0;
	c = &s->rec.cg;
	fill_task(&c->h, (struct task_struct *)bpf_get_current_task());
	c->h.kind = kind;
	c->id = ctx->id;
	c->root = ctx->root;
	long n = bpf_probe_read_kernel_str(c->path, TSR_PATH_MAX,
					   (void *)ctx + (ctx->__data_loc_path & 0xffff));
	__u32 len = n > 0 ? n : 0;
	c->path_len = len;
	emit(s, offsetof(struct tsr_cgroup, path) + (len & (2 * TSR_PATH_MAX - 1)));
	return 0;
}

SEC("tp/cgroup/cgroup_mkdir")
int ts_cgroup_mkdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_event(ctx, TSR_CGROUP_MKDIR);
}

SEC("tp/cgroup/cgroup_rmdir")
int ts_cgroup_rmdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_event(ctx, TSR_CGROUP_RMDIR);
}
