# System calls Python's os module lacks: prctl(2) and capset(2) for sensor/privileges.py,
# open_by_handle_at(2) for sensor/containers.py. Here rather than through ctypes, which the
# sensor would import for them alone (~0.4 MiB of RSS; ctypes.util.find_library runs
# `ldconfig -p` in a child process).

cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <stdint.h>
    #include <sys/prctl.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    static int ts_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
                        unsigned long a5) {
        return prctl(option, a2, a3, a4, a5) == 0 ? 0 : -errno;
    }

    /* _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set */
    static int ts_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable) {
        struct { uint32_t version; int pid; } header = {0x20080522, 0};
        struct { uint32_t effective, permitted, inheritable; } data[2];
        for (int i = 0; i < 2; i++) {
            data[i].effective = (uint32_t)(effective >> (32 * i));
            data[i].permitted = (uint32_t)(permitted >> (32 * i));
            data[i].inheritable = (uint32_t)(inheritable >> (32 * i));
        }
        return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
    }

    /* A kernfs node (a cgroup) by its 64-bit id, which is its file handle
       (FILEID_KERNFS), relative to a descriptor of the cgroup2 mount. */
    static int ts_open_kernfs_id(int mount_fd, uint64_t id, int flags) {
        union { struct file_handle fh; char room[sizeof(struct file_handle) + 8]; } handle;
        int fd;
        handle.fh.handle_bytes = sizeof(uint64_t);
        handle.fh.handle_type = 0xFE; /* FILEID_KERNFS */
        memcpy(handle.fh.f_handle, &id, sizeof(id));
        fd = open_by_handle_at(mount_fd, &handle.fh, flags);
        return fd >= 0 ? fd : -errno;
    }
    """
    int ts_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
                 unsigned long a5)
    int ts_capset(uint64_t effective, uint64_t permitted, uint64_t inheritable)
    int ts_open_kernfs_id(int mount_fd, uint64_t id, int flags)


def prctl(int option, unsigned long arg2=0, unsigned long arg3=0, unsigned long arg4=0,
          unsigned long arg5=0):
    """prctl(2): 0, or -errno when the kernel refuses."""
    return ts_prctl(option, arg2, arg3, arg4, arg5)


def capset(uint64_t effective, uint64_t permitted, uint64_t inheritable):
    """capset(2) of this thread's sets (masks of capability bits): 0, or -errno."""
    return ts_capset(effective, permitted, inheritable)


def open_kernfs_id(int mount_fd, uint64_t node_id, int flags):
    """open_by_handle_at(2) of the kernfs node ``node_id`` (a cgroup's id) under the mount
    ``mount_fd``: a file descriptor, or -errno."""
    return ts_open_kernfs_id(mount_fd, node_id, flags)
