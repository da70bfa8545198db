# The libbpf C API the reader uses (system libbpf >= 1.0: NULL + errno / -errno returns).
# Declarations only, like pyzmq's libzmq.pxd: one place names what we link against.

cdef extern from "bpf/libbpf.h" nogil:
    struct bpf_object:
        pass
    struct bpf_program:
        pass
    struct bpf_map:
        pass
    struct bpf_link:
        pass
    struct ring_buffer:
        pass
    ctypedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size) noexcept

    bpf_object *bpf_object__open_file(const char *path, const void *opts)
    int bpf_object__load(bpf_object *obj)
    void bpf_object__close(bpf_object *obj)
    bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)
    bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prog)

    bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)
    int bpf_map__type(const bpf_map *map)
    unsigned int bpf_map__max_entries(const bpf_map *map)
    int bpf_map__set_max_entries(bpf_map *map, unsigned int max_entries)
    int bpf_map__fd(const bpf_map *map)

    const char *bpf_program__name(const bpf_program *prog)
    bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)
    bint bpf_program__autoload(const bpf_program *prog)
    int bpf_program__set_autoload(bpf_program *prog, bint autoload)
    bpf_link *bpf_program__attach(const bpf_program *prog)
    int bpf_link__destroy(bpf_link *link)

    ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx,
                                  const void *opts)
    void ring_buffer__free(ring_buffer *rb)
    int ring_buffer__consume(ring_buffer *rb)
    int ring_buffer__epoll_fd(const ring_buffer *rb)

    int libbpf_num_possible_cpus()

cdef extern from "bpf/bpf.h" nogil:
    int bpf_map_update_elem(int fd, const void *key, const void *value, unsigned long long flags)
    int bpf_map_lookup_elem(int fd, const void *key, void *value)
    int bpf_map_delete_elem(int fd, const void *key)
